/**
 * Spec: SANDBOX — the daemon in a sandbox, as virtiofsd's (`--sandbox namespace`), proved from
 * outside the process. The README's "Sandbox" section:
 *
 * > With `--sandbox namespace` the process that serves the guest runs in new mount, PID, IPC,
 * > UTS and network namespaces; its root is the shared directory (every thread's root and
 * > working directory); it keeps only the capabilities a file server needs (CHOWN,
 * > DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER, FSETID, SETGID, SETUID, MKNOD, SETFCAP; `--modcaps`
 * > changes the set) and can gain none (no_new_privs). The process you started supervises it:
 * > it keeps the pid file and the socket file, passes SIGTERM and SIGINT on, removes both at
 * > stop, and exits with the daemon's status.
 *
 * - SANDBOX-ROOT: every task of the serving process has the shared directory as its root and
 *   working directory, and the guest's files are served (xattrs too: they name the node through
 *   /proc/self/fd relative to a descriptor, never by a path the guest could plant in the share).
 * - SANDBOX-SUBMOUNT: a file system mounted below the share before the start is served (the
 *   daemon's descriptors belong to the mount that becomes its root).
 * - SANDBOX-RELATIVE: a shared directory named relative to the working directory is served (the
 *   daemon starts where the supervisor was started, and leaves it for its new root).
 * - SANDBOX-NS: its mount, PID, network, IPC and UTS namespaces are not the host's.
 * - SANDBOX-CAPS: its capability sets are the list and no more, no_new_privs is set, and the
 *   list is what the kernel enforces (`--modcaps=-mknod` makes a device node EPERM); it dumps
 *   no core (RLIMIT_CORE 0: a core would land in the share).
 * - SANDBOX-FDS: once the warm-up is over, no directory it holds is outside the share, but
 *   its /proc/self/fd.
 * - SANDBOX-SECCOMP: with `--seccomp kill|log|trap` every task shows `Seccomp: 2` and the daemon
 *   serves; a call off its list (`personality()`, made on SIGUSR2 when the test-only
 *   `DENO_VIRTIOFSD_TEST_SECCOMP_PROBE` is set) kills it (`kill`, `trap`: SIGSYS, the supervisor
 *   exits 159) or is logged while it serves on (`log`). The record is read from the kernel log
 *   (`dmesg`: `audit: type=1326 ... pid=PID ... syscall=135`), where Linux prints audit records
 *   when no audit daemon runs; with auditd they are in /var/log/audit/audit.log (type=SECCOMP).
 *   Also without the sandbox.
 * - SANDBOX-CHROOT: with `--sandbox chroot`, every task's root and working directory is the share,
 *   in the host's namespaces; the main thread and the device thread hold the list (Deno's own
 *   threads keep CAP_SYS_CHROOT too: Linux changes capabilities per thread), and it serves.
 * - SANDBOX-USERNS: not root (ours as 65534 under setpriv), `--sandbox namespace` adds a user
 *   namespace: by default 65534 is its 0; with `--uid-map=:0:65534:1: --gid-map=:0:65534:1:` the
 *   maps go through newuidmap / newgidmap. Every task's root is the share, the main and device
 *   threads hold the list (in the user namespace), new files are 65534's. As root, libvirt's
 *   session-mode maps (`:0:1000:1:` and `:1:100000:65536:`) run it as host uid 1000, and a guest
 *   uid 5 creates as 100004.
 * - SANDBOX-STOP: SIGTERM to the supervisor stops the daemon (status 0) and removes the socket
 *   file, the pid file and the warm-up's directory; SIGKILL to the supervisor takes the daemon
 *   with it.
 *
 * Needs root (namespaces, pivot_root) and util-linux's `unshare` and `setpriv`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { daemonArgv, type DaemonHandle, OUR_ENTRY, startDaemon } from "./_driver/daemon.ts";
import { VhostUserFrontend } from "../src/driver/frontend.ts";
import { FUSE_ROOT_ID, FuseClient, FuseError, O_RDWR, S_IFDIR } from "../src/driver/fuse_client.ts";
import { cString, getxattrRaw, S_IFCHR, setxattrRaw } from "../src/ffi/mod.ts";
import { capabilityBit } from "../src/daemon/sandbox.ts";
import { Errno } from "../src/ffi/errno.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The capabilities kept by default (file handles on), as CapEff shows them. */
const DEFAULT_CAPS = [
  "chown",
  "dac_override",
  "dac_read_search",
  "fowner",
  "fsetid",
  "setgid",
  "setuid",
  "mknod",
  "setfcap",
].reduce((m, c) => m | capabilityBit(c), 0n);

interface Sandboxed {
  daemon: DaemonHandle;
  share: string;
  fe: VhostUserFrontend;
  ops: FuseClient;
  /** The serving process's host pid. */
  pid: number;
  [Symbol.asyncDispose](): Promise<void>;
}

/** The children of `pid` (its main thread's). */
function children(pid: number): number[] {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/)
      .filter((s) => s !== "").map(Number);
  } catch {
    return [];
  }
}

/** The serving process under supervisor `pid`: supervisor -> unshare -> daemon. */
function servingPid(supervisor: number): number {
  const unshare = children(supervisor)[0];
  const daemon = unshare === undefined ? undefined : children(unshare)[0];
  if (daemon === undefined) throw new Error(`no sandboxed daemon under ${supervisor}`);
  return daemon;
}

function devIno(path: string): string {
  const s = Deno.statSync(path);
  return `${s.dev}:${s.ino}`;
}

function status(pid: number): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of Deno.readTextFileSync(`/proc/${pid}/status`).split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}

async function sandboxed(
  extraArgs: string[] = [],
  debug = false,
  prepare?: (share: string) => void,
  opts: { env?: Record<string, string>; sandbox?: boolean; chroot?: boolean } = {},
): Promise<Sandboxed> {
  const share = await Deno.makeTempDir({ prefix: "vfsd-sandbox-share-" });
  prepare?.(share);
  const daemon = await startDaemon("ours", {
    sharedDir: share,
    extraArgs: [
      "--sandbox",
      opts.sandbox === false ? "none" : opts.chroot === true ? "chroot" : "namespace",
      ...(debug ? ["--log-level", "debug"] : []),
      ...extraArgs,
    ],
    ...(opts.env !== undefined ? { env: opts.env } : {}),
  });
  let fe: VhostUserFrontend | undefined;
  try {
    fe = await VhostUserFrontend.connect(daemon.socketPath, {
      queueSize: 256,
      timeoutMs: 20_000,
      connectTimeoutMs: 20_000,
    });
    const ops = new FuseClient(fe);
    ops.init();
    const pid = opts.sandbox === false
      ? daemon.pid
      : opts.chroot === true
      ? children(daemon.pid)[0] ?? 0
      : servingPid(daemon.pid);
    const f = fe;
    return {
      daemon,
      share,
      fe: f,
      ops,
      pid,
      async [Symbol.asyncDispose]() {
        f.close();
        await daemon.stop();
        await Deno.remove(share, { recursive: true }).catch(() => {});
      },
    };
  } catch (e) {
    fe?.close();
    const log = daemon.stderrText();
    await daemon.stop();
    await Deno.remove(share, { recursive: true }).catch(() => {});
    throw new Error(`${(e as Error).message}\n--- daemon log ---\n${log}`, { cause: e });
  }
}

async function waitFor(what: string, ok: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test("SANDBOX-ROOT every task's root and working directory is the share; files and xattrs are served", async () => {
  await using s = await sandboxed(["--xattr"]);
  const share = devIno(s.share);
  const tasks = [...Deno.readDirSync(`/proc/${s.pid}/task`)].map((t) => t.name);
  assert.ok(tasks.length >= 4, `tasks ${tasks}`);
  for (const t of tasks) {
    assert.equal(devIno(`/proc/${s.pid}/task/${t}/root`), share, `task ${t} root`);
    assert.equal(devIno(`/proc/${s.pid}/task/${t}/cwd`), share, `task ${t} cwd`);
  }
  // A trap: what "/proc/self/fd/N" would name if the daemon walked that path from its root.
  for (const d of ["proc", "proc/self", "proc/self/fd"]) Deno.mkdirSync(join(s.share, d));
  for (let n = 0; n < 128; n++) {
    const trap = join(s.share, "proc/self/fd", String(n));
    Deno.writeTextFileSync(trap, "trap");
    assert.equal(setxattrRaw(cString(trap), cString("user.k"), enc.encode("trap"), 0), 0);
  }
  const { entry, open } = s.ops.create(FUSE_ROOT_ID, "f", O_RDWR, 0o644);
  s.ops.write(entry.nodeid, open.fh, 0, enc.encode("inside"));
  assert.equal(dec.decode(s.ops.read(entry.nodeid, open.fh, 0, 100)), "inside");
  s.ops.setxattr(entry.nodeid, "user.k", "ours");
  assert.equal(dec.decode(s.ops.getxattr(entry.nodeid, "user.k", 100)), "ours");
  assert.deepEqual(s.ops.listxattr(entry.nodeid, 1000), ["user.k"]);
  s.ops.removexattr(entry.nodeid, "user.k");
  s.ops.release(entry.nodeid, open.fh);
  assert.equal(Deno.readTextFileSync(join(s.share, "f")), "inside");
  // The traps are untouched (removexattr would have removed one).
  for (let n = 0; n < 128; n++) {
    const value = new Uint8Array(16);
    const trap = cString(join(s.share, "proc/self/fd", String(n)));
    const len = getxattrRaw(trap, cString("user.k"), value);
    assert.equal(dec.decode(value.subarray(0, len)), "trap", `trap ${n}`);
  }
  // Still there after serving: no task has left.
  for (const t of Deno.readDirSync(`/proc/${s.pid}/task`)) {
    assert.equal(devIno(`/proc/${s.pid}/task/${t.name}/root`), share, `task ${t.name} root`);
    assert.equal(devIno(`/proc/${s.pid}/task/${t.name}/cwd`), share, `task ${t.name} cwd`);
  }
});

Deno.test("SANDBOX-SUBMOUNT a file system mounted below the share before the start is served from the sandbox", async () => {
  let mounted = "";
  try {
    await using s = await sandboxed([], false, (share) => {
      mounted = join(share, "tmpfs");
      Deno.mkdirSync(mounted);
      const m = new Deno.Command("mount", {
        args: ["-t", "tmpfs", "-o", "size=1m", "none", mounted],
      }).outputSync();
      assert.ok(m.success, dec.decode(m.stderr));
      Deno.writeTextFileSync(join(mounted, "f"), "on the tmpfs");
    });
    const dir = s.ops.lookup(FUSE_ROOT_ID, "tmpfs");
    assert.equal(dir.attr.ino, BigInt(Deno.statSync(mounted).ino ?? 0));
    const f = s.ops.lookup(dir.nodeid, "f");
    const o = s.ops.open(f.nodeid, O_RDWR);
    assert.equal(dec.decode(s.ops.read(f.nodeid, o.fh, 0, 100)), "on the tmpfs");
  } finally {
    if (mounted !== "") {
      new Deno.Command("umount", { args: [mounted] }).outputSync();
      await Deno.remove(dirname(mounted), { recursive: true }).catch(() => {});
    }
  }
});

Deno.test("SANDBOX-RELATIVE a shared directory named relative to the working directory (the README's first command) is served", async () => {
  const parent = await Deno.makeTempDir({ prefix: "vfsd-sandbox-rel-" });
  Deno.mkdirSync(join(parent, "share"));
  Deno.writeTextFileSync(join(parent, "share", "hello"), "relative");
  const socketPath = join(parent, "s.sock");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", OUR_ENTRY, "--socket-path", "s.sock", "--shared-dir", "./share"],
    cwd: parent,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    await waitFor("the socket", () => {
      try {
        return Deno.statSync(socketPath).isSocket === true;
      } catch {
        return false;
      }
    });
    const fe = await VhostUserFrontend.connect(socketPath, {
      queueSize: 64,
      timeoutMs: 20_000,
      connectTimeoutMs: 20_000,
    });
    try {
      const ops = new FuseClient(fe);
      ops.init();
      const e = ops.lookup(FUSE_ROOT_ID, "hello");
      const o = ops.open(e.nodeid, O_RDWR);
      assert.equal(dec.decode(ops.read(e.nodeid, o.fh, 0, 100)), "relative");
    } finally {
      fe.close();
    }
  } finally {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    const out = await child.output();
    assert.equal(out.code, 0, dec.decode(out.stderr));
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("SANDBOX-NS its mount, PID, network, IPC and UTS namespaces are its own", async () => {
  await using s = await sandboxed();
  for (const ns of ["mnt", "pid", "net", "ipc", "uts"]) {
    const ours = Deno.readLinkSync(`/proc/${s.daemon.pid}/ns/${ns}`);
    const its = Deno.readLinkSync(`/proc/${s.pid}/ns/${ns}`);
    assert.notEqual(its, ours, `${ns} namespace`);
  }
  // It is PID 1 of its namespace, and its network has no interface up but loopback's.
  assert.match(status(s.pid).get("NSpid") ?? "", /\s1$/);
});

Deno.test("SANDBOX-CAPS the capability sets are the list, no_new_privs; --modcaps changes what the kernel allows", async (t) => {
  await t.step("the default list", async () => {
    await using s = await sandboxed();
    for (const task of Deno.readDirSync(`/proc/${s.pid}/task`)) {
      const st = status(Number(task.name));
      for (const set of ["CapEff", "CapPrm", "CapBnd"]) {
        assert.equal(BigInt(`0x${st.get(set)}`), DEFAULT_CAPS, `task ${task.name} ${set}`);
      }
      assert.equal(BigInt(`0x${st.get("CapInh")}`), 0n);
      assert.equal(BigInt(`0x${st.get("CapAmb")}`), 0n);
      assert.equal(st.get("NoNewPrivs"), "1");
      assert.equal(st.get("Groups"), "");
    }
    // No core dump (it would land in the share, its working directory).
    assert.match(Deno.readTextFileSync(`/proc/${s.pid}/limits`), /Max core file size\s+0\s/);
    // MKNOD is kept: a device node is made.
    s.ops.mknod(FUSE_ROOT_ID, "null", S_IFCHR | 0o600, (1 << 8) | 3);
    assert.ok(Deno.statSync(join(s.share, "null")).isCharDevice);
  });
  await t.step("--modcaps=-mknod:+sys_admin", async () => {
    await using s = await sandboxed(["--modcaps=-mknod:+sys_admin"]);
    const want = (DEFAULT_CAPS & ~capabilityBit("mknod")) | capabilityBit("sys_admin");
    assert.equal(BigInt(`0x${status(s.pid).get("CapEff")}`), want);
    assert.throws(
      () => s.ops.mknod(FUSE_ROOT_ID, "null", S_IFCHR | 0o600, (1 << 8) | 3),
      (e: unknown) => e instanceof FuseError && e.errno === Errno.EPERM,
    );
    // A directory needs no capability.
    s.ops.mkdir(FUSE_ROOT_ID, "d", S_IFDIR | 0o755);
  });
});

Deno.test("SANDBOX-FDS once warmed up, it holds no directory outside the share but /proc/self/fd", async () => {
  await using s = await sandboxed([], true);
  await waitFor(
    "the end of the warm-up",
    () => /warm-up: \d+ requests/.test(s.daemon.stderrText()),
  );
  let dirs = 0;
  for (const e of Deno.readDirSync(`/proc/${s.pid}/fd`)) {
    const fd = `/proc/${s.pid}/fd/${e.name}`;
    let st: Deno.FileInfo;
    let target: string;
    try {
      st = Deno.statSync(fd);
      target = Deno.readLinkSync(fd);
    } catch {
      continue; // closed meanwhile
    }
    if (!st.isDirectory) continue;
    dirs++;
    // Inside: the directory its path names from its root (the share) is this very one.
    let inside: Deno.FileInfo | undefined;
    try {
      inside = Deno.statSync(`/proc/${s.pid}/root${target}`);
    } catch { /* not there */ }
    if (inside?.dev === st.dev && inside.ino === st.ino) continue;
    // Or /proc/self/fd of its own /proc, which shows as "/1/fd" (PID 1, its mount detached).
    assert.match(target, /^\/1\/fd$/, `fd ${e.name} -> ${target}: outside the share`);
  }
  assert.ok(dirs >= 2, `${dirs} directories`);
});

Deno.test("SANDBOX-CHROOT --sandbox chroot: every task's root is the share, no namespaces; the threads that run our code drop CAP_SYS_CHROOT", async () => {
  await using s = await sandboxed(["--xattr", "--seccomp", "kill"], false, undefined, {
    chroot: true,
  });
  const share = devIno(s.share);
  for (const t of Deno.readDirSync(`/proc/${s.pid}/task`)) {
    assert.equal(devIno(`/proc/${s.pid}/task/${t.name}/root`), share, `task ${t.name} root`);
    assert.equal(devIno(`/proc/${s.pid}/task/${t.name}/cwd`), share, `task ${t.name} cwd`);
  }
  for (const ns of ["mnt", "pid", "net"]) {
    assert.equal(
      Deno.readLinkSync(`/proc/${s.pid}/ns/${ns}`),
      Deno.readLinkSync(`/proc/self/ns/${ns}`),
      `${ns} namespace: the host's`,
    );
  }
  // The main thread and the device thread: the list. Deno's own threads (V8's, tokio's), which
  // Linux lets no other thread change, keep CAP_SYS_CHROOT besides (seccomp refuses chroot).
  const chroot = capabilityBit("sys_chroot");
  const main = status(s.pid);
  assert.equal(BigInt(`0x${main.get("CapEff")}`), DEFAULT_CAPS);
  assert.equal(BigInt(`0x${main.get("CapPrm")}`), DEFAULT_CAPS);
  let device = 0;
  for (const t of Deno.readDirSync(`/proc/${s.pid}/task`)) {
    const st = status(Number(t.name));
    const eff = BigInt(`0x${st.get("CapEff")}`);
    if (st.get("Name") === "worker-1") {
      device++;
      assert.equal(eff, DEFAULT_CAPS, "the device thread");
    } else assert.ok(eff === DEFAULT_CAPS || eff === (DEFAULT_CAPS | chroot), `task ${t.name}`);
    assert.equal(st.get("NoNewPrivs"), "1");
    assert.equal(st.get("Seccomp"), "2");
  }
  assert.equal(device, 1, "one device thread");
  exercise(s.ops, "f");
  assert.equal(Deno.readTextFileSync(join(s.share, "f")), "data");
});

const NOBODY = 65534;

/**
 * Ours with `args` after the usual ones, as `NOBODY` when `asNobody` (its DENO_DIR in a directory
 * of its own), serving a new share owned by `owner`; the front end connected and INIT done.
 */
async function started(
  args: string[],
  owner: number,
  asNobody: boolean,
): Promise<Sandboxed> {
  const share = await Deno.makeTempDir({ prefix: "vfsd-sandbox-share-" });
  Deno.chownSync(share, owner, owner);
  const denoDir = await Deno.makeTempDir({ prefix: "vfsd-sandbox-deno-" });
  Deno.chownSync(denoDir, NOBODY, NOBODY);
  const daemon = await startDaemon("ours", {
    sharedDir: share,
    env: { DENO_DIR: denoDir, HOME: denoDir },
    args: (socketPath, sharedDir) => {
      Deno.chmodSync(dirname(socketPath), 0o777);
      const own = [...daemonArgv("ours", socketPath, sharedDir), ...args];
      return asNobody
        ? ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "--", ...own]
        : own;
    },
  });
  const cleanUp = async () => {
    await daemon.stop();
    await Deno.remove(share, { recursive: true }).catch(() => {});
    await Deno.remove(denoDir, { recursive: true }).catch(() => {});
  };
  try {
    const fe = await VhostUserFrontend.connect(daemon.socketPath, {
      queueSize: 256,
      timeoutMs: 20_000,
      connectTimeoutMs: 20_000,
    });
    const ops = new FuseClient(fe);
    ops.init();
    return {
      daemon,
      share,
      fe,
      ops,
      pid: servingPid(daemon.pid),
      async [Symbol.asyncDispose]() {
        fe.close();
        await cleanUp();
      },
    };
  } catch (e) {
    const log = daemon.stderrText();
    await cleanUp();
    throw new Error(`${(e as Error).message}\n--- daemon log ---\n${log}`, { cause: e });
  }
}

/** Checks the user-namespace sandbox of `s`: roots, namespaces, maps, capabilities. */
function assertUserns(s: Sandboxed, uidMap: string): void {
  const share = devIno(s.share);
  for (const t of Deno.readDirSync(`/proc/${s.pid}/task`)) {
    assert.equal(devIno(`/proc/${s.pid}/task/${t.name}/root`), share, `task ${t.name} root`);
    assert.equal(devIno(`/proc/${s.pid}/task/${t.name}/cwd`), share, `task ${t.name} cwd`);
  }
  for (const ns of ["user", "mnt", "pid", "net", "ipc", "uts"]) {
    assert.notEqual(
      Deno.readLinkSync(`/proc/${s.pid}/ns/${ns}`),
      Deno.readLinkSync(`/proc/self/ns/${ns}`),
      `${ns} namespace`,
    );
  }
  assert.equal(
    Deno.readTextFileSync(`/proc/${s.pid}/uid_map`).trim().split(/\s+/).join(" "),
    uidMap,
  );
  // The main thread and the device thread: the list (capabilities of the user namespace only);
  // Deno's other threads keep the CAP_SYS_ADMIN and CAP_SYS_CHROOT it pivoted with.
  const extra = capabilityBit("sys_admin") | capabilityBit("sys_chroot");
  let device = 0;
  for (const t of Deno.readDirSync(`/proc/${s.pid}/task`)) {
    const st = status(Number(t.name));
    const eff = BigInt(`0x${st.get("CapEff")}`);
    if (Number(t.name) === s.pid || st.get("Name") === "worker-1") {
      if (st.get("Name") === "worker-1") device++;
      assert.equal(eff, DEFAULT_CAPS, `task ${t.name} (${st.get("Name")})`);
    } else assert.equal(eff & ~(DEFAULT_CAPS | extra), 0n, `task ${t.name}`);
    assert.equal(st.get("NoNewPrivs"), "1");
  }
  assert.equal(device, 1, "one device thread");
}

Deno.test("SANDBOX-USERNS without root, a user namespace: 65534 is its 0, or the maps say; libvirt's session maps as root", async (t) => {
  await t.step("not root, --sandbox namespace", async () => {
    await using s = await started(["--sandbox", "namespace", "--xattr"], NOBODY, true);
    assertUserns(s, `0 ${NOBODY} 1`);
    exercise(s.ops, "f");
    assert.equal(Deno.statSync(join(s.share, "f")).uid, NOBODY);
  });
  await t.step("not root, --uid-map=:0:65534:1: --gid-map=:0:65534:1: (newuidmap)", async () => {
    await using s = await started(
      [`--uid-map=:0:${NOBODY}:1:`, `--gid-map=:0:${NOBODY}:1:`, "--xattr"],
      NOBODY,
      true,
    );
    assertUserns(s, `0 ${NOBODY} 1`);
    exercise(s.ops, "f");
    assert.equal(Deno.statSync(join(s.share, "f")).uid, NOBODY);
  });
  await t.step("root, libvirt's session maps: host uid 1000, guest uid 5 is 100004", async () => {
    await using s = await started(
      [
        "--uid-map=:0:1000:1:",
        "--uid-map=:1:100000:65536:",
        "--gid-map=:0:1000:1:",
        "--gid-map=:1:100000:65536:",
        "--xattr",
      ],
      1000,
      false,
    );
    assertUserns(s, "0 1000 1 1 100000 65536");
    assert.match(status(s.pid).get("Uid") ?? "", /^1000\s+1000\s+1000\s+1000$/);
    Deno.chmodSync(s.share, 0o777); // uid 5 may create in it
    s.ops.mkdir(FUSE_ROOT_ID, "by5", S_IFDIR | 0o755, 0, { uid: 5, gid: 5 });
    const st = Deno.statSync(join(s.share, "by5"));
    assert.deepEqual([st.uid, st.gid], [100004, 100004]);
    exercise(s.ops, "f");
    assert.equal(Deno.statSync(join(s.share, "f")).uid, 1000);
  });
});

/** The kernel log's seccomp records of process `pid` (audit type 1326). */
function seccompRecords(pid: number): string[] {
  const out = new Deno.Command("dmesg", { stdout: "piped", stderr: "null" }).outputSync();
  return dec.decode(out.stdout).split("\n").filter((l) =>
    l.includes("type=1326") && l.includes(` pid=${pid} `)
  );
}

/** Serves a little of everything: files, a directory, xattrs. */
function exercise(ops: FuseClient, name: string): void {
  const { entry, open } = ops.create(FUSE_ROOT_ID, name, O_RDWR, 0o644);
  ops.write(entry.nodeid, open.fh, 0, enc.encode("data"));
  assert.equal(dec.decode(ops.read(entry.nodeid, open.fh, 0, 100)), "data");
  ops.setxattr(entry.nodeid, "user.k", "v");
  assert.equal(dec.decode(ops.getxattr(entry.nodeid, "user.k", 10)), "v");
  ops.fsync(entry.nodeid, open.fh);
  ops.release(entry.nodeid, open.fh);
  ops.mkdir(FUSE_ROOT_ID, `${name}.d`, S_IFDIR | 0o755);
  const d = ops.opendir(FUSE_ROOT_ID);
  ops.readdirplusAll(FUSE_ROOT_ID, d.fh);
  ops.releasedir(FUSE_ROOT_ID, d.fh);
  ops.statfs();
}

const PROBE = { DENO_VIRTIOFSD_TEST_SECCOMP_PROBE: "1" };

Deno.test("SANDBOX-SECCOMP kill, trap and log: every task filtered; an off-list call kills it or is logged", async (t) => {
  for (const action of ["kill", "trap"]) {
    await t.step(
      `--seccomp ${action}: it serves, and personality() kills it (SIGSYS)`,
      async () => {
        await using s = await sandboxed(["--xattr", "--seccomp", action], false, undefined, {
          env: PROBE,
        });
        for (const task of Deno.readDirSync(`/proc/${s.pid}/task`)) {
          assert.equal(status(Number(task.name)).get("Seccomp"), "2", `task ${task.name}`);
        }
        exercise(s.ops, "f");
        Deno.kill(s.pid, "SIGUSR2");
        const exit = await s.daemon.exited;
        assert.deepEqual(exit, { code: 128 + 31, signal: null }, s.daemon.stderrText());
        if (action === "kill") {
          await waitFor(
            "the kill's record",
            () => seccompRecords(s.pid).some((l) => / sig=31 .*syscall=135 /.test(l)),
          );
        }
      },
    );
  }
  await t.step("--seccomp log: personality() is logged and it serves on", async () => {
    await using s = await sandboxed(["--xattr", "--seccomp", "log"], false, undefined, {
      env: PROBE,
    });
    exercise(s.ops, "f");
    Deno.kill(s.pid, "SIGUSR2");
    await waitFor(
      "the probe",
      () => /seccomp probe: personality\(\) answered/.test(s.daemon.stderrText()),
    );
    await waitFor(
      "the log's record",
      () => seccompRecords(s.pid).some((l) => / sig=0 .*syscall=135 .*code=0x7ffc0000/.test(l)),
    );
    exercise(s.ops, "g");
    assert.ok(!s.daemon.hasExited());
  });
  await t.step("--seccomp kill without the sandbox", async () => {
    await using s = await sandboxed(["--xattr", "--seccomp", "kill"], false, undefined, {
      env: PROBE,
      sandbox: false,
    });
    for (const task of Deno.readDirSync(`/proc/${s.pid}/task`)) {
      assert.equal(status(Number(task.name)).get("Seccomp"), "2", `task ${task.name}`);
    }
    exercise(s.ops, "f");
    Deno.kill(s.pid, "SIGUSR2");
    const exit = await s.daemon.exited;
    assert.equal(exit.signal, "SIGSYS", s.daemon.stderrText());
  });
});

Deno.test("SANDBOX-STOP SIGTERM stops it and removes the socket, pid file and warm-up directory; SIGKILL takes the daemon along", async (t) => {
  await t.step("SIGTERM", async () => {
    const share = await Deno.makeTempDir({ prefix: "vfsd-sandbox-share-" });
    // Its own temporary directory, where the supervisor makes the warm-up's.
    const tmp = await Deno.makeTempDir({ prefix: "vfsd-sandbox-tmp-" });
    const daemon = await startDaemon("ours", {
      sharedDir: share,
      extraArgs: ["--sandbox", "namespace"],
      env: { TMPDIR: tmp },
    });
    try {
      const inner = await innerPid(daemon);
      assert.equal(warmupDirs(tmp).length, 1, "a warm-up directory");
      assert.equal(Deno.readTextFileSync(`${daemon.socketPath}.pid`).trim(), String(daemon.pid));
      const exit = await daemon.stop(10_000);
      assert.deepEqual(exit, { code: 0, signal: null }, daemon.stderrText());
      assert.throws(() => Deno.statSync(`/proc/${inner}/status`), "the daemon is gone");
      assert.throws(() => Deno.lstatSync(daemon.socketPath), Deno.errors.NotFound);
      assert.throws(() => Deno.lstatSync(`${daemon.socketPath}.pid`), Deno.errors.NotFound);
      assert.deepEqual(warmupDirs(tmp), []);
    } finally {
      await daemon.stop();
      await Deno.remove(share, { recursive: true });
      await Deno.remove(tmp, { recursive: true });
    }
  });
  await t.step("SIGKILL to the supervisor", async () => {
    const share = await Deno.makeTempDir({ prefix: "vfsd-sandbox-share-" });
    const daemon = await startDaemon("ours", {
      sharedDir: share,
      extraArgs: ["--sandbox", "namespace"],
    });
    try {
      const inner = await innerPid(daemon);
      Deno.kill(daemon.pid, "SIGKILL");
      await waitFor("the daemon to go", () => {
        try {
          return status(inner).get("State")?.startsWith("Z") ?? true;
        } catch {
          return true;
        }
      }, 10_000);
    } finally {
      await daemon.stop();
      await Deno.remove(share, { recursive: true });
    }
  });
});

/** The serving process under `daemon`'s supervisor, once it exists. */
async function innerPid(daemon: DaemonHandle): Promise<number> {
  let pid = 0;
  await waitFor("the sandboxed daemon", () => {
    try {
      pid = servingPid(daemon.pid);
    } catch { /* not yet */ }
    return pid > 0;
  });
  return pid;
}

/** The warm-up directories in `tmp`. */
function warmupDirs(tmp: string): string[] {
  return [...Deno.readDirSync(tmp)].filter((e) => e.name.startsWith("deno-virtiofsd-warmup-"))
    .map((e) => join(tmp, e.name));
}
