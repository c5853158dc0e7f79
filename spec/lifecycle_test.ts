/**
 * Spec: the daemon as an operator sees it — the command line, the socket path, socket
 * activation, signals, front ends coming and going, protocol errors, and the log levels.
 *
 * Every case runs `deno run -A mod.ts ...` as a separate process (the Deno running this test),
 * its stdout and stderr going to a log file so that a chatty daemon never blocks on a pipe while
 * the test waits synchronously in the front end. The claims are the README's "Options" section:
 *
 * > SIGTERM or SIGINT stops the daemon: the socket file it created is removed and it exits 0. A
 * > bad command line exits 2 with one line naming the flag; a missing directory or unusable
 * > socket path exits 1 naming it; a front end that sends a malformed message is disconnected
 * > with a log line naming the message, and the daemon exits 1 (or, with `--keep-serving`,
 * > waits for the next one).
 *
 * Test names start with `LIFECYCLE-`. These are about our daemon only (C and Rust virtiofsd
 * have other command lines and other exit rules).
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { bindAndListen, close, unixSocket } from "../src/ffi/mod.ts";
import { VHOST_USER_SET_VRING_NUM, VHOST_USER_VERSION } from "../src/wire/vhost_user.ts";
import { OUR_ENTRY } from "./_driver/daemon.ts";
import { type FrontendOptions, VhostUserFrontend } from "../src/driver/frontend.ts";
import { FUSE_ROOT_ID, FuseClient } from "../src/driver/fuse_client.ts";

const DENO = Deno.execPath();
const OURS = [DENO, "run", "-A", OUR_ENTRY];
const FE_OPTS: FrontendOptions = { queueSize: 256, timeoutMs: 10_000, connectTimeoutMs: 10_000 };

// ---- helpers ------------------------------------------------------------------------------------

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(what: string, probe: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** A temporary directory with `share/` in it; removed (with everything inside) on dispose. */
interface Workdir extends AsyncDisposable {
  dir: string;
  share: string;
  socket: string;
}

async function workdir(): Promise<Workdir> {
  const dir = await Deno.makeTempDir({ prefix: "vfsd-lc-" });
  const share = join(dir, "share");
  await Deno.mkdir(share);
  await Deno.writeTextFile(join(share, "hello.txt"), "hello\n");
  return {
    dir,
    share,
    socket: join(dir, "vhost.sock"),
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }).catch(() => {}),
  };
}

/** What a finished one-shot command printed and how it exited. */
interface Output {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

/** Runs our daemon's command line to its end (killed after `timeoutMs`). */
async function runOnce(args: readonly string[], timeoutMs = 15_000): Promise<Output> {
  const out = await new Deno.Command(OURS[0] ?? DENO, {
    args: [...OURS.slice(1), ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    signal: out.signal,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

/** A process running in the background with its stdout+stderr in a log file. */
interface Proc extends AsyncDisposable {
  readonly pid: number;
  readonly argv: readonly string[];
  readonly exited: Promise<Deno.CommandStatus>;
  hasExited(): boolean;
  log(): string;
  kill(signal: Deno.Signal): void;
  /** Waits for the exit (failing after `ms`, naming the log). */
  waitExit(ms?: number): Promise<Deno.CommandStatus>;
}

/** Starts `argv` with stdout and stderr going to `logPath` (the shell execs it: same pid). */
function spawnLogged(argv: readonly string[], logPath: string): Proc {
  const child = new Deno.Command("/bin/sh", {
    args: ["-c", 'exec "$@" >"$VFSD_LOG" 2>&1', "sh", ...argv],
    env: { VFSD_LOG: logPath },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
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
  const kill = (signal: Deno.Signal): void => {
    if (done) return;
    try {
      child.kill(signal);
    } catch { /* already gone */ }
  };
  return {
    pid: child.pid,
    argv,
    exited,
    hasExited: () => done,
    log,
    kill,
    async waitExit(ms = 10_000) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), ms));
      const first = await Promise.race([exited, late]);
      clearTimeout(timer);
      if (first === "late") {
        throw new Error(`${argv.join(" ")} did not exit within ${ms} ms; log:\n${log()}`);
      }
      return first;
    },
    async [Symbol.asyncDispose]() {
      if (!done) {
        kill("SIGTERM");
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), 3000));
        const first = await Promise.race([exited, late]);
        clearTimeout(timer);
        if (first === "late") kill("SIGKILL");
      }
      await exited;
    },
  };
}

/** Starts our daemon on `w.socket` sharing `w.share` and waits for the socket file. */
async function startOurs(
  w: Workdir,
  extra: readonly string[] = [],
  opts: { socket?: string; log?: string; waitSocket?: boolean } = {},
): Promise<Proc> {
  const socket = opts.socket ?? w.socket;
  const p = spawnLogged(
    [...OURS, "--socket-path", socket, "--shared-dir", w.share, ...extra],
    opts.log ?? join(w.dir, "daemon.log"),
  );
  if (opts.waitSocket ?? true) {
    try {
      await waitFor(
        `the daemon to listen on ${socket}`,
        () => {
          if (p.hasExited()) throw new Error(`the daemon exited early; log:\n${p.log()}`);
          // A replaced stale socket exists before the daemon starts: wait for its log line.
          return exists(socket) && /listening on /.test(p.log());
        },
      );
    } catch (e) {
      await p[Symbol.asyncDispose]();
      throw e;
    }
  }
  return p;
}

/** Connects a front end, sends FUSE_INIT on the first request queue, checks the answer. */
async function connectAndInit(
  socket: string,
  opts: FrontendOptions = {},
): Promise<{ fe: VhostUserFrontend; fuse: FuseClient }> {
  const fe = await VhostUserFrontend.connect(socket, { ...FE_OPTS, ...opts });
  try {
    const fuse = new FuseClient(fe);
    const init = fuse.init();
    assert.equal(init.major, 7, "FUSE_INIT answered with major 7");
    return { fe, fuse };
  } catch (e) {
    fe.close();
    throw e;
  }
}

/** Runs `fn`; a failure carries the last lines of the daemon's log. */
async function withLog(p: Proc, fn: () => void | Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    const tail = p.log().split("\n").slice(-30).join("\n");
    if (e instanceof Error) e.message += `\n--- daemon log (last 30 lines) ---\n${tail}`;
    throw e;
  }
}

function stderrLines(o: Output): string[] {
  return o.stderr.split("\n").filter((l) => l.trim() !== "");
}

// ---- the command line ---------------------------------------------------------------------------

Deno.test("LIFECYCLE-CLI informational flags and a bad command line", async (t) => {
  await t.step("--help exits 0 and lists --socket-path and --shared-dir", async () => {
    const o = await runOnce(["--help"]);
    assert.equal(o.code, 0, o.stderr);
    assert.match(o.stdout, /--socket-path/);
    assert.match(o.stdout, /--shared-dir/);
  });

  await t.step("-h is --help", async () => {
    const o = await runOnce(["-h"]);
    assert.equal(o.code, 0, o.stderr);
    assert.match(o.stdout, /--socket-path/);
  });

  await t.step("--version exits 0 and prints a version", async () => {
    const o = await runOnce(["--version"]);
    assert.equal(o.code, 0, o.stderr);
    assert.match(o.stdout, /^deno-virtiofsd \d+\.\d+\.\d+/);
  });

  await t.step('--print-capabilities prints JSON with "type": "fs"', async () => {
    const o = await runOnce(["--print-capabilities"]);
    assert.equal(o.code, 0, o.stderr);
    const caps = JSON.parse(o.stdout) as Record<string, unknown>;
    assert.equal(caps.type, "fs");
  });

  await t.step("an unknown flag exits 2 with one stderr line naming it", async () => {
    await using w = await workdir();
    const o = await runOnce([
      "--socket-path",
      w.socket,
      "--shared-dir",
      w.share,
      "--no-such-flag",
    ]);
    assert.equal(o.code, 2, `exit code; stderr: ${o.stderr}`);
    const lines = stderrLines(o);
    assert.equal(lines.length, 1, `one stderr line, got:\n${o.stderr}`);
    assert.match(lines[0] ?? "", /--no-such-flag/);
    assert.equal(o.stdout, "", "nothing on stdout");
    assert.ok(!exists(w.socket), "no socket created");
  });

  await t.step("--shared-dir A -o source=B exits 2 naming both", async () => {
    await using w = await workdir();
    const a = join(w.dir, "dir-a");
    const b = join(w.dir, "dir-b");
    await Deno.mkdir(a);
    await Deno.mkdir(b);
    const o = await runOnce(["--socket-path", w.socket, "--shared-dir", a, "-o", `source=${b}`]);
    assert.equal(o.code, 2, `exit code; stderr: ${o.stderr}`);
    const lines = stderrLines(o);
    assert.equal(lines.length, 1, `one stderr line, got:\n${o.stderr}`);
    assert.ok(lines[0]?.includes(a), `names ${a}: ${lines[0]}`);
    assert.ok(lines[0]?.includes(b), `names ${b}: ${lines[0]}`);
    assert.ok(!exists(w.socket), "no socket created");
  });

  await t.step("a missing shared directory exits 1 naming the path", async () => {
    await using w = await workdir();
    const missing = join(w.dir, "no-such-dir");
    const o = await runOnce(["--socket-path", w.socket, "--shared-dir", missing]);
    assert.equal(o.code, 1, `exit code; stderr: ${o.stderr}`);
    assert.ok(o.stderr.includes(missing), `stderr names ${missing}:\n${o.stderr}`);
    assert.ok(!exists(w.socket), "no socket created for a daemon that cannot share anything");
  });
});

// ---- the socket path ----------------------------------------------------------------------------

Deno.test("LIFECYCLE-SOCKET the socket path: stale, live, not a socket, --fd", async (t) => {
  await t.step("a stale socket file (nobody listening) is replaced and served", async () => {
    await using w = await workdir();
    const fd = unixSocket();
    try {
      bindAndListen(fd, w.socket, 1);
    } finally {
      close(fd);
    }
    assert.ok(Deno.lstatSync(w.socket).isSocket, "the stale socket file is left behind");
    await using d = await startOurs(w);
    await withLog(d, async () => {
      const { fe } = await connectAndInit(w.socket);
      fe.close();
      const s = await d.waitExit();
      assert.equal(s.code, 0, "exit 0 when the front end leaves");
      assert.match(d.log(), /replaced the stale socket/);
    });
  });

  await t.step("--socket-group gives the socket file to a group, mode 0660", async () => {
    await using w = await workdir();
    const line = Deno.readTextFileSync("/etc/group").split("\n").find((l) => l.startsWith("disk:"));
    const gid = Number(line?.split(":")[2]);
    assert.ok(Number.isInteger(gid), "the host has a 'disk' group");
    await using d = await startOurs(w, ["--socket-group", "disk"]);
    await withLog(d, () => {
      const st = Deno.lstatSync(w.socket);
      assert.equal(st.gid, gid);
      assert.equal((st.mode ?? 0) & 0o777, 0o660);
    });
    const bad = await runOnce([
      "--socket-path",
      join(w.dir, "other.sock"),
      "--shared-dir",
      w.share,
      "--socket-group",
      "no-such-group-here",
    ]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /no-such-group-here/);
    assert.equal(exists(join(w.dir, "other.sock")), false, "no socket left behind");
  });

  await t.step(
    "a live socket (another of our daemons) exits 1 naming the path; the live one is unaffected",
    async () => {
      await using w = await workdir();
      await using live = await startOurs(w, [], { log: join(w.dir, "live.log") });
      await withLog(live, async () => {
        const o = await runOnce(["--socket-path", w.socket, "--shared-dir", w.share]);
        assert.equal(o.code, 1, `second daemon's exit code; stderr: ${o.stderr}`);
        assert.ok(o.stderr.includes(w.socket), `stderr names ${w.socket}:\n${o.stderr}`);
        await sleep(200);
        assert.ok(!live.hasExited(), "the live daemon is still running after the probe");
        assert.ok(Deno.lstatSync(w.socket).isSocket, "the live socket file is still there");
        const { fe, fuse } = await connectAndInit(w.socket);
        try {
          fuse.getattr(FUSE_ROOT_ID);
        } finally {
          fe.close();
        }
        const s = await live.waitExit();
        assert.equal(s.code, 0, "the live daemon exits 0 when its front end leaves");
      });
    },
  );

  await t.step("a regular file at the path exits 1 naming it; the file is untouched", async () => {
    await using w = await workdir();
    const content = "not a socket\n";
    await Deno.writeTextFile(w.socket, content);
    const before = Deno.statSync(w.socket);
    const o = await runOnce(["--socket-path", w.socket, "--shared-dir", w.share]);
    assert.equal(o.code, 1, `exit code; stderr: ${o.stderr}`);
    assert.ok(o.stderr.includes(w.socket), `stderr names ${w.socket}:\n${o.stderr}`);
    const after = Deno.statSync(w.socket);
    assert.ok(after.isFile, "still a regular file");
    assert.equal(await Deno.readTextFile(w.socket), content, "content untouched");
    assert.equal(after.ino, before.ino, "same inode");
    assert.equal(after.mtime?.getTime(), before.mtime?.getTime(), "mtime untouched");
  });

  await t.step(
    "--fd 3: an inherited listening socket is served, and its path is not unlinked at exit",
    async () => {
      await using w = await workdir();
      // python3 creates, binds and listens, puts the socket at fd 3, then execs the daemon.
      const script = [
        "import os, socket, sys",
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)",
        "s.bind(sys.argv[1])",
        "s.listen(16)",
        "fd = s.detach()",
        "if fd != 3:",
        "    os.dup2(fd, 3)",
        "    os.close(fd)",
        "os.set_inheritable(3, True)",
        "os.execvp(sys.argv[2], sys.argv[2:])",
      ].join("\n");
      await using d = spawnLogged(
        ["python3", "-c", script, w.socket, ...OURS, "--fd", "3", "--shared-dir", w.share],
        join(w.dir, "daemon.log"),
      );
      await withLog(d, async () => {
        await waitFor("the daemon to accept on fd 3", () => {
          if (d.hasExited()) throw new Error("the daemon exited early");
          return /accepting on fd 3/.test(d.log());
        });
        const { fe, fuse } = await connectAndInit(w.socket);
        try {
          fuse.getattr(FUSE_ROOT_ID);
        } finally {
          fe.close();
        }
        const s = await d.waitExit();
        assert.equal(s.code, 0, "exit 0 when the front end leaves");
        assert.ok(exists(w.socket), "the socket file it did not create is left in place");
        assert.ok(Deno.lstatSync(w.socket).isSocket);
      });
    },
  );
});

// ---- stopping -----------------------------------------------------------------------------------

Deno.test("LIFECYCLE-STOP signals and front ends leaving", async (t) => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    await t.step(`${signal} while idle: exit 0, the socket file removed`, async () => {
      await using w = await workdir();
      await using d = await startOurs(w);
      await withLog(d, async () => {
        // The signal listeners are installed right after the socket appears: give them a moment.
        await sleep(300);
        d.kill(signal);
        const s = await d.waitExit();
        assert.equal(s.signal, null, `killed by ${s.signal} instead of stopping cleanly`);
        assert.equal(s.code, 0, "exit code");
        assert.ok(!exists(w.socket), "socket file removed");
      });
    });

    await t.step(`${signal} with a front end connected: exit 0, socket removed`, async () => {
      await using w = await workdir();
      await using d = await startOurs(w);
      await withLog(d, async () => {
        const { fe } = await connectAndInit(w.socket);
        try {
          d.kill(signal);
          const s = await d.waitExit();
          assert.equal(s.signal, null, `killed by ${s.signal} instead of stopping cleanly`);
          assert.equal(s.code, 0, "exit code");
          assert.ok(!exists(w.socket), "socket file removed");
          assert.ok(fe.peerClosed(2000), "the front end's connection was closed");
        } finally {
          fe.close();
        }
      });
    });
  }

  await t.step(
    "SIGTERM as soon as the socket file exists (an operator's readiness signal): exit 0, " +
      "the socket file removed",
    async () => {
      await using w = await workdir();
      await using d = await startOurs(w, [], { waitSocket: false });
      await withLog(d, async () => {
        const deadline = Date.now() + 10_000;
        while (!exists(w.socket)) {
          if (d.hasExited() || Date.now() > deadline) throw new Error("no socket appeared");
          await sleep(1);
        }
        d.kill("SIGTERM");
        const s = await d.waitExit();
        assert.ok(
          s.signal === null && s.code === 0,
          `exit code ${s.code}, signal ${s.signal}: killed by the signal instead of stopping ` +
            `cleanly (socket file ${exists(w.socket) ? "left behind" : "removed"})`,
        );
        assert.ok(!exists(w.socket), "socket file removed");
      });
    },
  );

  await t.step("the front end disconnects: exit 0 (default), the socket file removed", async () => {
    await using w = await workdir();
    await using d = await startOurs(w);
    await withLog(d, async () => {
      const { fe } = await connectAndInit(w.socket);
      fe.close();
      const s = await d.waitExit();
      assert.equal(s.code, 0, "exit code");
      assert.ok(!exists(w.socket), "socket file removed");
    });
  });

  await t.step(
    "--keep-serving: a second front end is refused while one is connected; the next one is served",
    async () => {
      await using w = await workdir();
      await using d = await startOurs(w, ["--keep-serving"]);
      await withLog(d, async () => {
        const first = await connectAndInit(w.socket);
        try {
          const second = await VhostUserFrontend.connectOnly(w.socket, FE_OPTS);
          try {
            assert.ok(second.peerClosed(5000), "the second front end's connection is closed");
          } finally {
            second.close();
          }
          const attr = first.fuse.getattr(FUSE_ROOT_ID);
          assert.ok(attr.attr.ino !== 0n, "the first front end is still served");
          assert.match(d.log(), /refused a second front end/);
        } finally {
          first.fe.close();
        }
        await sleep(300);
        assert.ok(!d.hasExited(), "still running after the first front end left");
        assert.ok(exists(w.socket), "socket file kept");
        const third = await connectAndInit(w.socket);
        try {
          third.fuse.getattr(FUSE_ROOT_ID);
        } finally {
          third.fe.close();
        }
        await sleep(100);
        assert.ok(!d.hasExited(), "still running after the second served front end left");
        d.kill("SIGTERM");
        const s = await d.waitExit();
        assert.equal(s.code, 0, "SIGTERM: exit 0");
        assert.ok(!exists(w.socket), "socket file removed");
      });
    },
  );

  await t.step(
    "a protocol error without --keep-serving: exit 1, an ERROR line naming the request",
    async () => {
      await using w = await workdir();
      await using d = await startOurs(w);
      await withLog(d, async () => {
        const fe = await VhostUserFrontend.connectOnly(w.socket, FE_OPTS);
        try {
          // SET_VRING_NUM carries 8 bytes (index, num); send 4.
          fe.sendRaw(VHOST_USER_SET_VRING_NUM, VHOST_USER_VERSION, new Uint8Array(4));
          assert.ok(fe.peerClosed(5000), "the connection is closed");
        } finally {
          fe.close();
        }
        const s = await d.waitExit();
        assert.equal(s.code, 1, "exit code");
        assert.match(d.log(), /ERROR\][^\n]*SET_VRING_NUM\(8\)/);
        assert.ok(!exists(w.socket), "socket file removed");
      });
    },
  );

  await t.step(
    "a protocol error with --keep-serving: the next front end is served",
    async () => {
      await using w = await workdir();
      await using d = await startOurs(w, ["--keep-serving"]);
      await withLog(d, async () => {
        const bad = await VhostUserFrontend.connectOnly(w.socket, FE_OPTS);
        try {
          bad.sendRaw(VHOST_USER_SET_VRING_NUM, VHOST_USER_VERSION, new Uint8Array(4));
          assert.ok(bad.peerClosed(5000), "the connection is closed");
        } finally {
          bad.close();
        }
        const good = await connectAndInit(w.socket);
        good.fe.close();
        assert.ok(!d.hasExited(), "still running");
        assert.match(d.log(), /ERROR\][^\n]*SET_VRING_NUM\(8\)/);
      });
    },
  );
});

// ---- log levels ---------------------------------------------------------------------------------

Deno.test("LIFECYCLE-LOG log levels", async (t) => {
  await t.step("--log-level debug logs each control message by name", async () => {
    await using w = await workdir();
    await using d = await startOurs(w, ["--log-level", "debug"]);
    await withLog(d, async () => {
      const { fe } = await connectAndInit(w.socket);
      fe.close();
      const s = await d.waitExit();
      assert.equal(s.code, 0);
      const log = d.log();
      for (
        const name of [
          "GET_FEATURES(1)",
          "SET_FEATURES(2)",
          "SET_OWNER(3)",
          "SET_VRING_NUM(8)",
          "SET_VRING_ADDR(9)",
          "SET_VRING_BASE(10)",
          "SET_VRING_KICK(12)",
          "SET_VRING_CALL(13)",
          "SET_VRING_ENABLE(18)",
          "ADD_MEM_REG(37)",
        ]
      ) {
        assert.ok(
          new RegExp(`DEBUG\\][^\\n]*${name.replace(/[()]/g, "\\$&")}`).test(log),
          `a DEBUG line names ${name}`,
        );
      }
    });
  });

  await t.step(
    "--log-level error logs nothing at info (a clean session prints nothing)",
    async () => {
      await using w = await workdir();
      await using d = await startOurs(w, ["--log-level", "error"], { waitSocket: false });
      await withLog(d, async () => {
        await waitFor("the socket", () => exists(w.socket));
        const { fe } = await connectAndInit(w.socket);
        fe.close();
        const s = await d.waitExit();
        assert.equal(s.code, 0);
        const log = d.log();
        assert.doesNotMatch(log, /(INFO|DEBUG|TRACE|WARN)\]/);
        assert.equal(log.trim(), "", "nothing logged");
      });
    },
  );

  await t.step("-o log_level=debug is --log-level debug", async () => {
    await using w = await workdir();
    await using d = await startOurs(w, ["-o", "log_level=debug"]);
    await withLog(d, async () => {
      const { fe } = await connectAndInit(w.socket);
      fe.close();
      await d.waitExit();
      assert.match(d.log(), /DEBUG\][^\n]*SET_VRING_KICK\(12\)/);
    });
  });
});
