/**
 * Spec: a drop-in for every launcher. The README claims:
 *
 * > `npx deno task install` puts an executable `deno-virtiofsd` on PATH (`/usr/local/bin`, or
 * > `--prefix DIR`) and a vhost-user description beside it
 * > (`../share/qemu/vhost-user/50-deno-virtiofsd.json`) naming it; the command lines libvirt
 * > (both forms, and session mode), kata containers 2.x and 3.x, runcvm and virtiofsd's own
 * > documentation give virtiofsd start it, and it serves a guest.
 *
 * The fifteen command lines are in `fixtures/launchers.json`. Each runs through the installed
 * wrapper with an inherited listening socket as fd 3, as libvirt and kata pass it: the test binds
 * and listens itself (our FFI), clears the socket's close-on-exec flag just for the spawn, and
 * `bash -c 'exec 3<&N N<&-; exec "$@"'` moves it to fd 3 before exec'ing the wrapper, which execs
 * Deno (one pid throughout). Only bash is needed, which every Debian has (it is Essential);
 * not python3 nor systemd-socket-activate, which a fresh machine may lack.
 *
 * Every line that serves gets its own `vhost-user-fs-pci` device (tag = the line's id,
 * `queue-size=1024`) on ONE QEMU 7.2 guest: the guest mounts each tag, reads a file the host
 * wrote and writes one the host reads, and sets an extended attribute where the line serves
 * them (where it does not, the guest gets EOPNOTSUPP). The `--syslog` lines log to the test's own
 * datagram socket (`DENO_VIRTIOFSD_SYSLOG_SOCKET`), not to stderr. When the guest powers off,
 * every daemon exits 0. Six of them serve from a sandbox: `--sandbox namespace` (two), `--sandbox
 * chroot` (three), and libvirt's session mode, whose id maps (`--uid-map`, `--gid-map`) put it in a
 * user namespace as host uid 1000, who owns its directory. A table of bad values runs end to end
 * through the executable too (the parser's own cases are `src/cli/options_test.ts`).
 *
 * CI time: one guest boot serves all fifteen lines; the guest test takes 17-20 s here (2 cores,
 * TCG; the boot with fifteen devices 11-13 s of it), the others about 4 s together.
 *
 * Test names start with `LAUNCHERS-`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { libc } from "../src/ffi/_libc.ts";
import {
  bindAndListen,
  closeQuietly,
  ErrnoError,
  F_GETFD,
  F_SETFD,
  FD_CLOEXEC,
  read,
  unixDatagramBind,
  unixSocket,
} from "../src/ffi/mod.ts";
import { CAPABILITIES } from "../src/cli/options.ts";
import { SYSLOG_SOCKET_ENV } from "../src/daemon/syslog.ts";
import { DESCRIPTION_FILE, install, type Installed } from "../scripts/install.ts";
import { PROJECT_ROOT } from "./_driver/daemon.ts";
import { type FsDeviceOptions, QemuGuest } from "./_driver/qemu_guest.ts";

// ---- the fixture --------------------------------------------------------------------------------

/** One launcher's command line (`fixtures/launchers.json`). */
interface Line {
  id: string;
  launcher: string;
  args: string[];
  /**
   * It serves: what the guest should see. `owner`: the host uid the daemon serves as (libvirt's
   * session mode: the user whose uid the namespace's 0 maps to), who owns the shared directory.
   */
  serves?: { xattr: boolean; syslog?: boolean; quiet?: boolean; owner?: number };
}

/** A command line with one bad value. */
interface BadValue {
  args: string[];
  names: string;
  says?: string;
}

const FIXTURE = join(PROJECT_ROOT, "fixtures", "launchers.json");
const { lines: LINES, badValues: BAD_VALUES } = JSON.parse(
  Deno.readTextFileSync(FIXTURE),
) as { lines: Line[]; badValues: BadValue[] };

/** QEMU's list of vhost-user-fs features (docs/interop/vhost-user.json, virtiofsd's). */
const KNOWN_FS_FEATURES = ["migrate-precopy", "separate-options"];

/** The line's arguments with `{DIR}` replaced. */
function argsFor(args: readonly string[], dir: string): string[] {
  return args.map((a) => a.replaceAll("{DIR}", dir));
}

// ---- helpers ------------------------------------------------------------------------------------

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(what: string, probe: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** A temporary directory; removed with everything in it on dispose. */
async function tempDir(prefix: string): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix });
  return {
    dir,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }).catch(() => {}),
  };
}

/** Installs into `<dir>/bin` (the description goes to `<dir>/share/qemu/vhost-user`). */
function installInto(dir: string): Promise<Installed> {
  return install({ prefix: join(dir, "bin") });
}

/** What a finished command printed and how it exited. */
interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

async function runExecutable(executable: string, args: readonly string[]): Promise<Output> {
  const out = await new Deno.Command(executable, {
    args: [...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(20_000),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A daemon started with a listening socket as fd 3. */
interface Launched {
  readonly line: Line;
  readonly pid: number;
  readonly socket: string;
  readonly dir: string;
  readonly exited: Promise<Deno.CommandStatus>;
  hasExited(): boolean;
  /** Its stdout and stderr so far. */
  log(): string;
  /** SIGTERM, then SIGKILL after 3 s; waits for the exit. */
  stop(): Promise<void>;
}

/**
 * Binds and listens on `socket`, then starts `argv` with that socket as fd 3 (bash moves it
 * there, then execs `argv`), stdout and stderr to `logPath`. The test's own copy is closed.
 */
function launchWithFd3(
  line: Line,
  argv: readonly string[],
  socket: string,
  dir: string,
  logPath: string,
  env: Record<string, string> = {},
): Launched {
  const fd = unixSocket();
  let child: Deno.ChildProcess;
  try {
    bindAndListen(fd, socket, 16);
    // Inherited only by this one spawn: close-on-exec is cleared and set again around it, with
    // no await in between (nothing else in this process spawns meanwhile).
    const flags = libc.fcntl(fd, F_GETFD, 0);
    if (flags < 0 || libc.fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) < 0) {
      throw new Error(`Cannot clear close-on-exec on fd ${fd}`);
    }
    try {
      child = new Deno.Command("bash", {
        args: ["-c", `exec 3<&${fd} ${fd}<&- >"$VFSD_LOG" 2>&1 && exec "$@"`, "bash", ...argv],
        env: { ...env, VFSD_LOG: logPath },
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
    } finally {
      libc.fcntl(fd, F_SETFD, flags);
    }
  } finally {
    closeQuietly(fd);
  }
  let done = false;
  const exited = child.status.then((s) => {
    done = true;
    return s;
  });
  const log = (): string => {
    try {
      return Deno.readTextFileSync(logPath);
    } catch {
      return "";
    }
  };
  return {
    line,
    pid: child.pid,
    socket,
    dir,
    exited,
    hasExited: () => done,
    log,
    async stop() {
      if (done) return;
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      const late = await Promise.race([exited.then(() => false), sleep(3000).then(() => true)]);
      if (late) {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }
      await exited;
    },
  };
}

/** A syslog daemon of our own: a bound datagram socket, read without blocking. */
class FakeSyslog implements Disposable {
  readonly fd: number;
  readonly lines: string[] = [];
  readonly #buf = new Uint8Array(65536);

  constructor(readonly path: string) {
    this.fd = unixDatagramBind(path);
  }

  /** Takes every datagram waiting. */
  drain(): string[] {
    for (;;) {
      try {
        const n = read(this.fd, this.#buf);
        this.lines.push(new TextDecoder().decode(this.#buf.subarray(0, n)));
      } catch (e) {
        if (e instanceof ErrnoError && e.code === "EAGAIN") return this.lines;
        throw e;
      }
    }
  }

  [Symbol.dispose](): void {
    closeQuietly(this.fd);
  }
}

/** Runs `fn`; on failure adds every daemon's log to the error. */
async function withLogs<T>(daemons: readonly Launched[], fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    for (const d of daemons) {
      err.message += `\n--- ${d.line.id} (pid ${d.pid}) log ---\n${d.log().slice(-3000)}`;
    }
    throw err;
  }
}

/** Asserts a refusal: exit 2, nothing on stdout, one stderr line naming `names` (and `says`). */
function assertRefused(o: Output, names: string, says: string | undefined, what: string): void {
  const text = o.stderr.trimEnd();
  assert.equal(o.code, 2, `${what}: exit 2, got ${o.code}:\n${o.stderr}`);
  assert.equal(o.stdout, "", `${what}: nothing on stdout`);
  assert.equal(text.split("\n").length, 1, `${what}: one line:\n${o.stderr}`);
  assert.match(text, /^deno-virtiofsd: /, what);
  assert.ok(text.includes(names), `${what}: the line names ${names}:\n${text}`);
  if (says !== undefined) assert.ok(text.includes(says), `${what}: says "${says}":\n${text}`);
}

// ---- the fixture itself -------------------------------------------------------------------------

Deno.test("LAUNCHERS-FIXTURE fifteen command lines, each served", () => {
  assert.equal(LINES.length, 15);
  assert.equal(new Set(LINES.map((l) => l.id)).size, 15, "distinct ids (they are the tags)");
  for (const l of LINES) {
    assert.ok(l.serves !== undefined, `${l.id}: serves`);
    assert.ok(l.args.includes("--fd=3"), `${l.id}: socket activation with fd 3`);
    assert.ok(l.args.some((a) => a.includes("{DIR}")), `${l.id}: shares {DIR}`);
    assert.ok(l.id.length <= 36, `${l.id}: a virtio-fs tag is at most 36 bytes`);
    assert.equal(l.serves?.syslog ?? false, l.args.includes("--syslog"), `${l.id}: syslog`);
  }
});

// ---- installation -------------------------------------------------------------------------------

Deno.test("LAUNCHERS-INSTALL deno task install: an executable and its vhost-user description", async () => {
  await using tmp = await tempDir("vfsd-install-");
  const prefix = join(tmp.dir, "bin");
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "install", "--prefix", prefix],
    cwd: PROJECT_ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, `deno task install failed:\n${dec.decode(out.stderr)}`);
  const executable = join(prefix, "deno-virtiofsd");
  assert.ok(dec.decode(out.stdout).includes(`installed ${executable}`), dec.decode(out.stdout));

  // The description: where QEMU's convention puts it, the schema's members, an absolute
  // executable binary.
  const jsonPath = join(tmp.dir, "share", "qemu", "vhost-user", DESCRIPTION_FILE);
  const desc = JSON.parse(await Deno.readTextFile(jsonPath)) as Record<string, unknown>;
  assert.deepEqual(Object.keys(desc).sort(), ["binary", "description", "type"]);
  assert.equal(desc.type, "fs");
  assert.equal(typeof desc.description, "string");
  const binary = desc.binary as string;
  assert.equal(binary, executable);
  assert.ok(binary.startsWith("/"), "absolute");
  const st = await Deno.stat(binary);
  assert.ok(st.isFile && ((st.mode ?? 0) & 0o111) === 0o111, "executable by everyone");

  // What management software does with it: run the binary with --print-capabilities.
  const caps = await runExecutable(binary, ["--print-capabilities"]);
  assert.equal(caps.code, 0, caps.stderr);
  const parsed = JSON.parse(caps.stdout) as { type: string; features?: string[] };
  assert.equal(parsed.type, desc.type, "the description's type is what the binary reports");
  assert.ok(Array.isArray(parsed.features));
  for (const f of parsed.features ?? []) {
    assert.ok(KNOWN_FS_FEATURES.includes(f), `${f} is a vhost-user-fs feature`);
  }
  assert.deepEqual(parsed, CAPABILITIES, "the daemon's own capabilities");
  assert.ok(
    parsed.features?.includes("separate-options"),
    "libvirt passes --shared-dir, --cache, ... only to a binary listing separate-options",
  );

  // The wrapper runs from any directory (a deno.json there is not ours), passes arguments
  // through, and keeps the exit status.
  await Deno.writeTextFile(join(tmp.dir, "deno.json"), '{"imports": {"node:util": "./nope"}}');
  const version = await new Deno.Command(binary, {
    args: ["--version"],
    cwd: tmp.dir,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(version.code, 0, dec.decode(version.stderr));
  assert.match(dec.decode(version.stdout), /^deno-virtiofsd \d+\.\d+\.\d+ \(Deno /);
  const bad = await runExecutable(binary, ["--frobnicate"]);
  assert.equal(bad.code, 2, "the daemon's exit status");
  assert.ok(bad.stderr.includes("--frobnicate: unknown option"), bad.stderr);

  // Installing again replaces both files in place.
  const again = await installInto(tmp.dir);
  assert.equal(again.executable, executable);
  assert.equal(again.json, jsonPath);
});

Deno.test("LAUNCHERS-INSTALL an unwritable prefix is named, with what to do", async () => {
  await using tmp = await tempDir("vfsd-install-");
  const file = join(tmp.dir, "not-a-dir");
  await Deno.writeTextFile(file, "");
  await assert.rejects(() => install({ prefix: join(file, "bin") }), (e: unknown) => {
    assert.ok(e instanceof Error);
    assert.ok(e.message.includes(join(file, "bin")), e.message);
    assert.ok(e.message.includes("--prefix"), e.message);
    return true;
  });
});

// ---- bad values -----------------------------------------------------------------

Deno.test("LAUNCHERS-BAD-VALUES a bad value of a flag exits 2 with one line naming it", async (t) => {
  await using tmp = await tempDir("vfsd-launch-");
  const { executable } = await installInto(tmp.dir);
  for (const bad of BAD_VALUES) {
    const args = argsFor(bad.args, tmp.dir);
    await t.step(bad.args.join(" "), async () => {
      assertRefused(await runExecutable(executable, args), bad.names, bad.says, args.join(" "));
    });
  }
});

Deno.test({
  name: "LAUNCHERS-SIGNAL SIGTERM to the launched pid reaches the daemon through the wrapper",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using tmp = await tempDir("vfsd-launch-");
    const { executable } = await installInto(tmp.dir);
    const line = LINES.find((l) => l.id === "libvirt-new-1");
    assert.ok(line !== undefined);
    const dir = join(tmp.dir, "shared");
    await Deno.mkdir(dir);
    const d = launchWithFd3(
      line,
      [executable, ...argsFor(line.args, dir)],
      join(tmp.dir, "vhost.sock"),
      dir,
      join(tmp.dir, "daemon.log"),
    );
    try {
      await withLogs([d], async () => {
        await waitFor("the daemon to accept on fd 3", () => {
          if (d.hasExited()) throw new Error("the daemon exited early");
          return d.log().includes("accepting on fd 3");
        });
        Deno.kill(d.pid, "SIGTERM");
        const s = await d.exited;
        assert.equal(s.code, 0, "a clean stop: exit 0");
        assert.match(d.log(), /stopped: /);
      });
    } finally {
      await d.stop();
    }
  },
});

// ---- the lines that serve, in one guest -----------------------------------------------------------

Deno.test({
  name:
    "LAUNCHERS-GUEST [guest] every line that serves: one guest mounts them all, files both ways",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using tmp = await tempDir("vfsd-launch-");
    const { executable } = await installInto(tmp.dir);
    const serving = LINES.filter((l) => l.serves !== undefined);
    const daemons: Launched[] = [];
    const syslogs = new Map<string, FakeSyslog>();
    try {
      for (const line of serving) {
        const dir = join(tmp.dir, line.id);
        await Deno.mkdir(dir);
        await Deno.writeTextFile(join(dir, "from-host.txt"), `host wrote this for ${line.id}\n`);
        const owner = line.serves?.owner;
        if (owner !== undefined) {
          await Deno.chmod(tmp.dir, 0o755);
          await Deno.chown(dir, owner, owner);
          await Deno.chown(join(dir, "from-host.txt"), owner, owner);
        }
        const env: Record<string, string> = {};
        if (line.serves?.syslog === true) {
          const log = new FakeSyslog(join(tmp.dir, `${line.id}.syslog`));
          syslogs.set(line.id, log);
          env[SYSLOG_SOCKET_ENV] = log.path;
        }
        daemons.push(launchWithFd3(
          line,
          [executable, ...argsFor(line.args, dir)],
          join(tmp.dir, `${line.id}.sock`),
          dir,
          join(tmp.dir, `${line.id}.log`),
          env,
        ));
      }

      await withLogs(daemons, async () => {
        // Ready: the line saying so, on syslog or stderr (a quiet daemon says nothing: the
        // listening socket's backlog holds QEMU's connection until it accepts).
        for (const d of daemons) {
          const sys = syslogs.get(d.line.id);
          await waitFor(`${d.line.id} to accept on fd 3`, () => {
            if (d.hasExited()) throw new Error(`${d.line.id} exited early`);
            if (d.line.serves?.quiet === true) return true;
            const text = sys !== undefined ? sys.drain().join("\n") : d.log();
            return text.includes(`accepting on fd 3, sharing ${d.dir}`);
          });
        }
        const [first, ...rest] = daemons;
        assert.ok(first !== undefined);
        const more: FsDeviceOptions[] = rest.map((d) => ({ socketPath: d.socket, tag: d.line.id }));
        const t0 = performance.now();
        await using guest = await QemuGuest.boot({
          socketPath: first.socket,
          tag: first.line.id,
          moreDevices: more,
        });
        console.log(
          `${daemons.length} vhost-user-fs-pci devices: boot ${Math.round(guest.bootMs)} ms`,
        );

        for (const d of daemons) {
          const tag = d.line.id;
          await t.step(`${tag} (${d.line.launcher}): ${d.line.args.join(" ")}`, async () => {
            const mnt = `/mnt/${tag}`;
            await guest.shOk(`mkdir -p ${mnt} && mount -t virtiofs ${tag} ${mnt}`);
            assert.equal(
              await guest.shOk(`cat ${mnt}/from-host.txt`),
              `host wrote this for ${tag}\n`,
              "the guest reads what the host wrote",
            );
            await guest.shOk(`echo 'guest wrote this on ${tag}' > ${mnt}/from-guest.txt`);
            assert.equal(
              await Deno.readTextFile(join(d.dir, "from-guest.txt")),
              `guest wrote this on ${tag}\n`,
              "the host reads what the guest wrote",
            );
            const x = await guest.sh(
              `setfattr -n user.launcher -v ${tag} ${mnt}/from-guest.txt 2>&1 && ` +
                `cd ${mnt} && getfattr --only-values -n user.launcher from-guest.txt 2>&1`,
            );
            if (d.line.serves?.xattr === true) {
              assert.equal(x.status, 0, `extended attributes are served:\n${x.out}`);
              assert.equal(x.out, tag);
            } else {
              assert.notEqual(x.status, 0, "extended attributes are not served");
              assert.match(x.out, /Operation not supported/);
            }
          });
        }

        await guest.shutdown();
        console.log(`guest up to shutdown: ${Math.round(performance.now() - t0)} ms`);

        await t.step("when the guest powers off, every daemon exits 0", async () => {
          for (const d of daemons) {
            let timer: ReturnType<typeof setTimeout> | undefined;
            const s = await Promise.race([
              d.exited,
              new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), 15_000)),
            ]);
            clearTimeout(timer);
            assert.ok(s !== undefined, `${d.line.id} still runs 15 s after the guest left`);
            assert.equal(s.code, 0, `${d.line.id} exits 0:\n${d.log()}`);
          }
        });

        await t.step("--syslog: the lines go to syslog, not to stderr", () => {
          for (const d of daemons.filter((d) => d.line.serves?.syslog === true)) {
            const sys = syslogs.get(d.line.id);
            assert.ok(sys !== undefined);
            const got = sys.drain();
            const tagged = new RegExp(
              `^<\\d+>\\w{3} [ \\d]\\d [\\d:]{8} deno-virtiofsd\\[${d.pid}\\]: `,
            );
            const has = (text: string): boolean =>
              got.some((l) => tagged.test(l) && l.includes(text));
            assert.ok(
              has("accepting on fd 3"),
              `${d.line.id}: start on syslog:\n${got.join("\n")}`,
            );
            assert.ok(
              has("accepted without effect: --thread-pool-size 1"),
              `${d.line.id}: the warning on syslog:\n${got.join("\n")}`,
            );
            assert.ok(has("stopped: "), `${d.line.id}: the stop on syslog:\n${got.join("\n")}`);
            assert.ok(!d.log().includes("accepting on fd 3"), `${d.line.id}: not on stderr`);
          }
        });

        await t.step("--log-level off: nothing on stderr", () => {
          for (const d of daemons.filter((d) => d.line.serves?.quiet === true)) {
            assert.equal(d.log(), "", `${d.line.id} wrote:\n${d.log()}`);
          }
        });
      });
    } finally {
      await Promise.all(daemons.map((d) => d.stop()));
      for (const s of syslogs.values()) s[Symbol.dispose]();
    }
  },
});
