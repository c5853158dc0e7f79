/**
 * The sandbox, as virtiofsd's. `--sandbox namespace`: the process that serves the guest runs in
 * new mount, PID, IPC, UTS and network namespaces, its root is the shared directory (pivot_root,
 * the old root detached), it holds only the capabilities a file server needs (Rust virtiofsd's
 * list, `--modcaps` changes it) and cannot gain others (no_new_privs); without root, or with id
 * maps (`--uid-map`, `--gid-map`), in a user namespace too. `--sandbox chroot`: no namespaces,
 * the shared directory as the root. `--seccomp`: a system call filter (`confine`).
 *
 * Deno starts threads before any of our code runs, so the daemon cannot fork into namespaces
 * itself, and a capability dropped by one thread stays with the others. So the process started
 * by the user becomes a **supervisor**: it takes the pid file and the socket, then starts the
 * daemon again under util-linux's `unshare` (the namespaces) and `setpriv` (the capability
 * bounding set, no_new_privs, no supplementary groups), handing it the listening socket and a
 * control socket. The daemon says "start" before it opens anything (the supervisor bind-mounts
 * the share in its mount namespace, so that what it opens belongs to the mount that becomes the
 * root), opens all it needs (the shared directory, /proc/self/fd, its code, the warm-up's
 * directory) and says "ready"; the supervisor then makes the shared directory the root of that
 * namespace from a Worker thread of its own that joined it; every thread of the daemon moves
 * with it. In a user namespace (which a multithreaded process cannot join) and in chroot mode the
 * daemon switches itself, with CAP_SYS_ADMIN / CAP_SYS_CHROOT that its main and device threads
 * drop afterwards. The daemon checks that "/" is now the shared directory, and serves.
 *
 * At stop the supervisor passes SIGTERM on, and removes the socket file, the pid file and the
 * warm-up's directory (the daemon cannot name them any more). Its exit status is the daemon's.
 *
 * @module
 */
import {
  bindOnItself,
  chdir,
  chroot,
  close,
  closeQuietly,
  dropCapability,
  getegid,
  geteuid,
  getrlimit,
  inheritOnExec,
  installSeccomp,
  personalityQuery,
  pivotRootHere,
  poll,
  POLLHUP,
  POLLIN,
  read,
  RLIMIT_CORE,
  type SeccompAction,
  seccompProgram,
  setrlimit,
  socketPair,
  write,
} from "../ffi/mod.ts";
import type { Logger } from "../log.ts";
import { type Daemon, openListener, raiseNofile, shareProblem, type WorkerExit } from "./serve.ts";
import { ListenError } from "../vhost_user/listener.ts";
import type { PivotStep } from "./pivot_worker.ts";
import { ALLOWED_SYSCALLS, REFUSED_SYSCALLS } from "./syscalls.ts";

/** Whether this process runs as root (the sandbox is then the default, as in virtiofsd). */
export function runningAsRoot(): boolean {
  return geteuid() === 0;
}

/** The environment variable that tells a daemon it was started inside the sandbox. */
export const SANDBOX_ENV = "DENO_VIRTIOFSD_SANDBOX";

/** How long the daemon may take to start and open everything. */
const READY_TIMEOUT_MS = 60_000;
/** How long `stop()` waits for the daemon after SIGTERM before killing it. */
const STOP_GRACE_MS = 5_000;

/** The capabilities the daemon keeps by default (Rust virtiofsd's; the file system's needs). */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  "chown",
  "dac_override",
  "fowner",
  "fsetid",
  "setgid",
  "setuid",
  "mknod",
  "setfcap",
];

/** Linux's capability names (capability(7)), in number order. */
const CAPABILITY_NAMES: readonly string[] = [
  "chown",
  "dac_override",
  "dac_read_search",
  "fowner",
  "fsetid",
  "kill",
  "setgid",
  "setuid",
  "setpcap",
  "linux_immutable",
  "net_bind_service",
  "net_broadcast",
  "net_admin",
  "net_raw",
  "ipc_lock",
  "ipc_owner",
  "sys_module",
  "sys_rawio",
  "sys_chroot",
  "sys_ptrace",
  "sys_pacct",
  "sys_admin",
  "sys_boot",
  "sys_nice",
  "sys_resource",
  "sys_time",
  "sys_tty_config",
  "mknod",
  "lease",
  "audit_write",
  "audit_control",
  "setfcap",
  "mac_override",
  "mac_admin",
  "syslog",
  "wake_alarm",
  "block_suspend",
  "audit_read",
  "perfmon",
  "bpf",
  "checkpoint_restore",
];

/** The number of capability `name` (capability(7)). */
function capabilityNumber(name: string): number {
  const i = CAPABILITY_NAMES.indexOf(name);
  if (i < 0) throw new Error(`unknown capability ${name}`);
  return i;
}

/** The bit of capability `name` (as CapEff shows it in /proc/PID/status). */
export function capabilityBit(name: string): bigint {
  return 1n << BigInt(capabilityNumber(name));
}

/**
 * The capabilities kept by default: Rust virtiofsd's list, with dac_read_search when inodes may
 * be file handles (open_by_handle_at needs it).
 */
export function defaultCapabilities(fileHandles: boolean): string[] {
  return CAPABILITY_NAMES.filter((c) =>
    DEFAULT_CAPABILITIES.includes(c) || (fileHandles && c === "dac_read_search")
  );
}

/**
 * `caps` changed by `modcaps`, virtiofsd's `--modcaps` syntax: `+cap` or `-cap` items separated
 * by `:` (or `,`), names with or without `cap_`, any case. Throws an Error naming a bad item.
 */
export function applyModcaps(caps: readonly string[], modcaps: string): string[] {
  const set = new Set(caps);
  for (const item of modcaps.split(/[:,]/)) {
    if (item === "") continue;
    const sign = item[0];
    const name = item.slice(1).toLowerCase().replace(/^cap_/, "");
    if ((sign !== "+" && sign !== "-") || !CAPABILITY_NAMES.includes(name)) {
      throw new Error(
        `'${item}' is not +cap or -cap with a capability name (chown, sys_admin, ...)`,
      );
    }
    if (sign === "+") set.add(name);
    else set.delete(name);
  }
  return CAPABILITY_NAMES.filter((c) => set.has(c));
}

/** The sandboxes: `namespace` (pivot_root in new namespaces) or `chroot` (no namespaces). */
export type SandboxMode = "namespace" | "chroot";

/** One range of an id map: `count` ids from `inner` in the namespace are `outer` on the host. */
export interface IdMap {
  inner: number;
  outer: number;
  count: number;
}

/**
 * The capabilities a daemon switches its root with, by sandbox (it starts with them, and drops
 * them from its main and device threads once the root is the share).
 */
const SWITCH_CAPABILITIES: Record<SandboxMode | "userns", readonly number[]> = {
  namespace: [], // the supervisor switches it
  chroot: [capabilityNumber("sys_chroot")],
  userns: [capabilityNumber("sys_admin"), capabilityNumber("sys_chroot")],
};

/** What the supervisor tells the daemon it starts (JSON in `SANDBOX_ENV`). */
interface InnerStart {
  /** "userns": the namespace sandbox in a user namespace, where the daemon switches itself. */
  mode: SandboxMode | "userns";
  /** The shared directory (absolute, symbolic links resolved). */
  root: string;
  /** The control socket: "ready" goes out, "ok" or a reason comes back. */
  control: number;
  /** The listening socket. */
  listen: number;
  /** The warm-up's directory (made and removed by the supervisor). */
  warmupDir?: string;
  /** The supervisor's pid, the one the host knows (the pid file's, syslog's). */
  pid: number;
  /** With `--syslog`: the supervisor reached syslog (else it said so, and logs to stderr). */
  syslog?: boolean;
}

/** The daemon's side of the sandbox: what it was handed, and the step into it. */
export interface SandboxedDaemon {
  /** The listening socket handed over. */
  readonly listenFd: number;
  /** The warm-up's directory, if the supervisor made one. */
  readonly warmupDir: string | undefined;
  /** The pid the host knows this daemon by (the supervisor's). */
  readonly hostPid: number;
  /** Which sandbox ("userns": namespace, in a user namespace). */
  readonly mode: SandboxMode | "userns";
  /** False when the supervisor could not reach syslog (the daemon then logs to stderr, quietly). */
  readonly syslog: boolean;
  /** The capabilities `enter()` drops from this thread, for the device thread to drop too. */
  readonly switchCapabilities: readonly number[];
  /**
   * First thing, before anything is opened: asks the supervisor to make the shared directory a
   * mount of its own in our namespace (what is opened afterwards belongs to the mount that will
   * be the root). Throws an Error saying why not.
   */
  prepare(): void;
  /**
   * Once everything is open: asks the supervisor to make the shared directory the root and waits
   * until it has (namespace), or makes it the root itself (chroot, user namespace) and drops
   * `switchCapabilities` from this thread; then checks that "/" is that directory. Throws an
   * Error saying why not.
   */
  enter(): void;
}

/** Says `what` on the control socket and waits for "ok"; throws with the other answer. */
function ask(control: number, what: string): void {
  write(control, new TextEncoder().encode(what));
  const [events] = poll([control], POLLIN, READY_TIMEOUT_MS);
  if (((events ?? 0) & (POLLIN | POLLHUP)) === 0) {
    throw new Error(`sandbox: the supervisor did not answer '${what}'`);
  }
  const buf = new Uint8Array(4096);
  const answer = new TextDecoder().decode(buf.subarray(0, read(control, buf)));
  if (answer !== "ok") {
    throw new Error(`sandbox: ${answer === "" ? "the supervisor went away" : answer}`);
  }
}

/**
 * When this process was started by a sandbox supervisor, what it was handed (and the variable
 * is removed from the environment); otherwise undefined.
 */
export function sandboxedDaemon(): SandboxedDaemon | undefined {
  const raw = Deno.env.get(SANDBOX_ENV);
  if (raw === undefined) return undefined;
  Deno.env.delete(SANDBOX_ENV);
  const start = JSON.parse(raw) as InnerStart;
  const fd = (n: unknown): number => {
    if (!Number.isSafeInteger(n) || (n as number) < 0) {
      throw new Error(`${SANDBOX_ENV}: bad ${raw}`);
    }
    return n as number;
  };
  const control = fd(start.control);
  const mode = start.mode === "chroot" || start.mode === "userns" ? start.mode : "namespace";
  const root = String(start.root);
  return {
    listenFd: fd(start.listen),
    warmupDir: typeof start.warmupDir === "string" ? start.warmupDir : undefined,
    hostPid: fd(start.pid),
    mode,
    syslog: start.syslog !== false,
    switchCapabilities: SWITCH_CAPABILITIES[mode],
    prepare(): void {
      try {
        ask(control, "start");
        // In a user namespace of its own the daemon holds CAP_SYS_ADMIN there: it makes the share
        // a mount of its own itself (nobody outside may enter the namespace: Deno has threads).
        if (mode === "userns") bindOnItself(root);
      } catch (e) {
        closeQuietly(control);
        throw e;
      }
    },
    enter(): void {
      const before = Deno.statSync(root);
      try {
        ask(control, "ready");
      } finally {
        closeQuietly(control);
      }
      // Every thread shares this one's root until it takes a working directory of its own,
      // which none has done yet (the device thread does at its first creating request).
      if (mode === "chroot") {
        chroot(root);
      } else if (mode === "userns") {
        chdir(root);
        pivotRootHere();
      }
      for (const cap of SWITCH_CAPABILITIES[mode]) dropCapability(cap);
      chdir("/");
      const now = Deno.statSync("/");
      if (now.dev !== before.dev || now.ino !== before.ino) {
        throw new Error(`sandbox: the root is not ${root} after the switch`);
      }
    },
  };
}

/** The supervisor's options. */
export interface SandboxOptions {
  mode: SandboxMode;
  /** `--uid-map`: a user namespace with these uids (namespace mode). */
  uidMap?: readonly IdMap[];
  /** `--gid-map`: and these gids. */
  gidMap?: readonly IdMap[];
  /** The command line, given again to the daemon. */
  args: readonly string[];
  sharedDir: string;
  socketPath?: string;
  fd?: number;
  socketGroup?: string;
  /** Keep `<socketPath>.pid` (the command line's). */
  pidFile?: boolean;
  rlimitNofile?: number;
  /** The daemon warms up (it gets a directory for it). */
  warmup: boolean;
  /** With `--syslog`: whether this process reached syslog (the daemon does not try again). */
  syslogReached?: boolean;
  /** The capabilities the daemon keeps (`defaultCapabilities`, `applyModcaps`). */
  capabilities: readonly string[];
  log: Logger;
}

/**
 * The command that starts the daemon in the sandbox: `setpriv` (die with the supervisor),
 * `unshare` (the namespaces, a private /proc; SIGTERM to the daemon if unshare dies), `setpriv`
 * (the capability bounding set, nothing inheritable, no supplementary groups, no_new_privs),
 * then this program again.
 */
export function sandboxCommand(
  mode: SandboxMode | "userns",
  capabilities: readonly string[],
  args: readonly string[],
  userns: { mapRoot: boolean; gateFd?: number; runAs?: { uid: number; gid: number } } = {
    mapRoot: false,
  },
): string[] {
  const main = new URL("../../mod.ts", import.meta.url);
  const entry = main.protocol === "file:" ? decodeURIComponent(main.pathname) : main.href;
  const deno = [
    Deno.execPath(),
    "run",
    "--allow-all",
    "--no-config",
    "--no-lock",
    "--no-code-cache",
    entry,
    ...args,
  ];
  const caps = `--bounding-set=-all${capabilities.map((c) => `,+${c}`).join("")}`;
  const privileges = ["--no-new-privs", "--inh-caps=-all"];
  if (mode === "chroot") {
    // No namespaces: the daemon chroots itself (CAP_SYS_CHROOT, dropped afterwards where it can)
    // and gets SIGTERM when the supervisor dies.
    return [
      "setpriv",
      "--pdeathsig",
      "TERM",
      ...privileges,
      "--clear-groups",
      `${caps},+sys_chroot`,
      "--",
      ...deno,
    ];
  }
  const inner = mode === "userns"
    // In its user namespace the daemon pivots itself: CAP_SYS_ADMIN and CAP_SYS_CHROOT there,
    // dropped afterwards where it can. Its groups are its user's (setgroups may be denied).
    ? ["setpriv", ...privileges, `${caps},+sys_chroot,+sys_admin`, "--", ...deno]
    : ["setpriv", ...privileges, "--clear-groups", caps, "--", ...deno];
  // With maps the supervisor writes, the first exec in the namespace waits for them: capabilities
  // are computed at exec, from the uid the namespace maps then.
  const gated = userns.gateFd === undefined
    ? inner
    : ["/bin/bash", "-c", `read -r _ <&${userns.gateFd} && exec "$@"`, "bash", ...inner];
  // Root with id maps runs the namespace as the host user its 0 is (libvirt's session mode).
  const runAs = userns.runAs === undefined ? [] : [
    `--reuid=${userns.runAs.uid}`,
    `--regid=${userns.runAs.gid}`,
    "--clear-groups",
  ];
  return [
    "setpriv",
    "--pdeathsig",
    "KILL",
    ...runAs,
    "--",
    "unshare",
    ...(mode === "userns" ? ["--user", ...(userns.mapRoot ? ["--map-root-user"] : [])] : []),
    "--mount",
    "--pid",
    "--ipc",
    "--uts",
    "--net",
    "--fork",
    "--kill-child=SIGTERM",
    "--mount-proc",
    // Mounts made on the host later (below the share) reach the daemon, not the other way.
    "--propagation",
    "slave",
    "--",
    ...gated,
  ];
}

/**
 * Starts the daemon in the sandbox and supervises it. Throws (ListenError and the like) naming
 * the shared directory or the socket before anything is started; resolves once the daemon
 * serves inside the sandbox, or has stopped.
 */
export async function startSandbox(opts: SandboxOptions): Promise<Daemon> {
  const log = opts.log;
  const root = geteuid() === 0;
  if (opts.mode === "chroot" && !root) {
    throw new ListenError(
      "--sandbox chroot needs root (chroot); as another user, --sandbox namespace",
    );
  }
  const maps = (opts.uidMap?.length ?? 0) + (opts.gidMap?.length ?? 0) > 0;
  if (maps) hostIdsOfZero(opts);
  // Not root, or id maps: the namespace sandbox in a user namespace of its own.
  const mode = opts.mode === "namespace" && (!root || maps) ? "userns" : opts.mode;
  const bad = shareProblem(opts.sharedDir);
  if (bad !== undefined) throw new ListenError(bad);
  const share = Deno.realPathSync(opts.sharedDir);
  raiseNofile(opts.rlimitNofile, log);
  const listening = openListener(opts, log);
  let control: number[] | undefined;
  let warmupDir: string | undefined;
  const cleanUp = (): void => {
    listening.release();
    if (control !== undefined) { for (const fd of control) closeQuietly(fd); }
    control = undefined;
    if (warmupDir !== undefined) {
      try {
        Deno.removeSync(warmupDir, { recursive: true });
      } catch { /* already gone */ }
    }
  };
  let child: Deno.ChildProcess;
  try {
    const pair = socketPair();
    control = pair;
    inheritOnExec(pair[1]);
    inheritOnExec(listening.fd);
    if (opts.warmup) warmupDir = Deno.makeTempDirSync({ prefix: "deno-virtiofsd-warmup-" });
    const inner: InnerStart = {
      mode,
      root: share,
      control: pair[1],
      listen: listening.fd,
      pid: Deno.pid,
      ...(warmupDir !== undefined ? { warmupDir } : {}),
      ...(opts.syslogReached === false ? { syslog: false } : {}),
    };
    const runAs = mode === "userns" && maps && root ? hostIdsOfZero(opts) : undefined;
    // The warm-up's directory is the daemon's, whoever it runs as.
    if (runAs !== undefined && warmupDir !== undefined) {
      Deno.chownSync(warmupDir, runAs.uid, runAs.gid);
    }
    const [program, ...args] = sandboxCommand(mode, opts.capabilities, opts.args, {
      mapRoot: mode === "userns" && !maps,
      ...(mode === "userns" && maps ? { gateFd: pair[1] } : {}),
      ...(runAs !== undefined ? { runAs } : {}),
    });
    // No core dump from the daemon: its working directory is the share, the guest would read it.
    const core = getrlimit(RLIMIT_CORE);
    setrlimit(RLIMIT_CORE, { cur: 0, max: core.max });
    try {
      child = new Deno.Command(program ?? "setpriv", {
        args,
        // Ours: relative paths on the command line mean the same to the daemon (it leaves this
        // directory for its new root's "/" when it enters the sandbox).
        cwd: workingDirectory(),
        stdin: "null",
        env: {
          [SANDBOX_ENV]: JSON.stringify(inner),
          // Nothing read by path once the root has changed: the time zone by name (ICU's own
          // data), no Deno cache on disk (an unusable DENO_DIR keeps its databases in memory),
          // no update check.
          TZ: Intl.DateTimeFormat().resolvedOptions().timeZone,
          DENO_DIR: "/dev/null/deno-virtiofsd",
          DENO_EMIT_CACHE_MODE: "disable",
          DENO_NO_UPDATE_CHECK: "1",
        },
      }).spawn();
    } finally {
      setrlimit(RLIMIT_CORE, core);
    }
  } catch (e) {
    cleanUp();
    if (e instanceof Deno.errors.NotFound) {
      throw new ListenError(
        `--sandbox ${opts.mode} needs setpriv and unshare (util-linux) on PATH: ` +
          (e as Error).message,
      );
    }
    throw e;
  }
  // The daemon holds its end now.
  const [ctl = -1, theirs = -1] = control ?? [];
  closeQuietly(theirs);
  control = [ctl];
  let status: Deno.CommandStatus | undefined;
  const statusP = child.status.then((s) => (status = s));
  // Deno reports a death by signal as 128 + its number, as a shell does.
  const exitOf = (s: Deno.CommandStatus): WorkerExit => ({
    status: s.code,
    reason: s.signal !== null
      ? `the sandboxed daemon got ${s.signal}`
      : `the sandboxed daemon exited with status ${s.code}`,
  });

  // "start": the share becomes a mount of its own; "ready": it becomes the root.
  const buf = new Uint8Array(256);
  const hear = async (): Promise<string> => {
    const deadline = performance.now() + READY_TIMEOUT_MS;
    while (status === undefined && performance.now() < deadline) {
      const [ev] = poll([ctl], POLLIN, 0);
      if (((ev ?? 0) & (POLLIN | POLLHUP)) !== 0) {
        return new TextDecoder().decode(buf.subarray(0, read(ctl, buf)));
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    return "";
  };
  const answer = (text: string): void => {
    try {
      write(ctl, new TextEncoder().encode(text));
    } catch { /* it is gone: its status says why */ }
  };
  // In chroot mode the daemon is our child itself (setpriv execs it), and it switches alone, as
  // it does in a user namespace; as root in namespaces, a thread of ours joins them to switch.
  const pivot = mode === "namespace" ? new PivotThread() : undefined;
  let daemonPid = mode === "chroot" ? child.pid : 0;
  try {
    if (mode === "userns" && maps) {
      await writeIdMaps(child.pid, opts.uidMap ?? [], opts.gidMap ?? [], root);
      write(ctl, new TextEncoder().encode("mapped\n"));
    }
    if ((await hear()) !== "start") throw new Error("the daemon did not start");
    if (mode !== "chroot") daemonPid = childOf(child.pid);
    if (pivot !== undefined) {
      try {
        await pivot.step({ step: "bind", nsPath: `/proc/${child.pid}/ns/mnt`, share });
      } catch (e) {
        throw new Error(
          `cannot bind-mount ${share} in the daemon's namespace: ${(e as Error).message}`,
        );
      }
    }
    answer("ok");
    if ((await hear()) !== "ready") throw new Error("the daemon stopped before serving");
    try {
      await pivot?.step({ step: "pivot" });
    } catch (e) {
      throw new Error(`cannot make ${share} the root: ${(e as Error).message}`);
    }
    answer("ok");
    const kind = mode === "userns" ? "namespace (in a user namespace)" : mode;
    log.info(`sandbox: ${kind}; the daemon (pid ${daemonPid}) has ${share} as its root`);
  } catch (e) {
    const why = (e as Error).message;
    answer(why);
    if (status === undefined) {
      log.error(`sandbox: ${why}; stopping it`);
      signal(child.pid, "SIGKILL");
    }
  } finally {
    pivot?.close();
  }
  close(ctl);
  control = undefined;
  log.info(`${listening.where}, sharing ${share} from the sandbox`);

  let stopping: ReturnType<typeof setTimeout> | undefined;
  const exited = statusP.then((s) => {
    if (stopping !== undefined) clearTimeout(stopping);
    cleanUp();
    return exitOf(s);
  });
  return {
    socketPath: opts.socketPath,
    exited,
    stop: () => {
      if (status === undefined && stopping === undefined) {
        signal(daemonPid || child.pid, "SIGTERM");
        stopping = setTimeout(() => {
          log.error(`sandbox: the daemon did not stop within ${STOP_GRACE_MS} ms; killing it`);
          signal(daemonPid || child.pid, "SIGKILL");
        }, STOP_GRACE_MS);
      }
      return exited;
    },
  };
}

/** This process's working directory, or "/" when it has none any more. */
function workingDirectory(): string {
  try {
    return Deno.cwd();
  } catch {
    return "/";
  }
}

function signal(pid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(pid, sig);
  } catch { /* already gone */ }
}

/** The one child of `pid` (unshare's forked daemon), or 0. */
function childOf(pid: number): number {
  try {
    const kids = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim().split(" ");
    return Number(kids[0]) || 0;
  } catch {
    return 0;
  }
}

/**
 * The host uid and gid that `opts`' maps make 0 in the namespace (the daemon is 0 there: its
 * capabilities in the namespace are 0's). Throws when a map leaves 0 out.
 */
function hostIdsOfZero(opts: SandboxOptions): { uid: number; gid: number } {
  const zero = (maps: readonly IdMap[] | undefined, own: number, flag: string): number => {
    if (maps === undefined || maps.length === 0) return own;
    const r = maps.find((m) => m.inner === 0);
    if (r === undefined) {
      throw new ListenError(`${flag} must map 0: the daemon is 0 in its namespace`);
    }
    return r.outer;
  };
  return {
    uid: zero(opts.uidMap, geteuid(), "--uid-map"),
    gid: zero(opts.gidMap, getegid(), "--gid-map"),
  };
}

/**
 * Writes the id maps of the user namespace process `pid` is in (once it is in one of its own):
 * as root directly, else through newuidmap / newgidmap, which check /etc/subuid and /etc/subgid.
 * A missing map is the supervisor's own id as 0.
 */
async function writeIdMaps(
  pid: number,
  uidMap: readonly IdMap[],
  gidMap: readonly IdMap[],
  root: boolean,
): Promise<void> {
  const ours = Deno.readLinkSync("/proc/self/ns/user");
  const end = performance.now() + READY_TIMEOUT_MS;
  while (Deno.readLinkSync(`/proc/${pid}/ns/user`) === ours) {
    if (performance.now() > end) throw new Error("no user namespace appeared");
    await new Promise((r) => setTimeout(r, 5));
  }
  const uids = uidMap.length > 0 ? uidMap : [{ inner: 0, outer: geteuid(), count: 1 }];
  const gids = gidMap.length > 0 ? gidMap : [{ inner: 0, outer: getegid(), count: 1 }];
  for (const [kind, ranges] of [["uid", uids], ["gid", gids]] as const) {
    if (root) {
      const text = ranges.map((r) => `${r.inner} ${r.outer} ${r.count}\n`).join("");
      Deno.writeTextFileSync(`/proc/${pid}/${kind}_map`, text);
      continue;
    }
    const tool = `new${kind}map`;
    const out = await new Deno.Command(tool, {
      args: [String(pid), ...ranges.flatMap((r) => [r.inner, r.outer, r.count].map(String))],
      stdout: "piped",
      stderr: "piped",
    }).output().catch((e: Error) => {
      throw new Error(`${tool}: ${e.message} (Debian's uidmap package has it)`);
    });
    if (!out.success) {
      throw new Error(`${tool} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
    }
  }
}

/**
 * The supervisor's thread in the daemon's mount namespace (setns moves one thread, and this one
 * must not be the main thread): `pivot_worker.ts`, one step at a time.
 */
class PivotThread {
  readonly #worker = new Worker(new URL("./pivot_worker.ts", import.meta.url), {
    type: "module",
  });

  /** Runs `s`; rejects with why it failed. */
  step(s: PivotStep): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#worker.onmessage = (e: MessageEvent<string>) => {
        if (e.data === "") resolve();
        else reject(new Error(e.data));
      };
      this.#worker.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        reject(new Error(e.message));
      };
      this.#worker.postMessage(s);
    });
  }

  close(): void {
    this.#worker.terminate();
  }
}

/**
 * The environment variable that makes a daemon with `--seccomp` answer SIGUSR2 by calling
 * `personality()`, which its filter does not allow: the sandbox spec's probe. Not for users.
 */
export const SECCOMP_PROBE_ENV = "DENO_VIRTIOFSD_TEST_SECCOMP_PROBE";

/**
 * Installs the seccomp filter (`ALLOWED_SYSCALLS`, `REFUSED_SYSCALLS` failing; `action` for the rest) on every thread of this
 * process, and, when `SECCOMP_PROBE_ENV` is set, the probe. Call it once everything is open.
 */
export function confine(action: SeccompAction, log: Logger): void {
  installSeccomp(seccompProgram(ALLOWED_SYSCALLS, action, REFUSED_SYSCALLS));
  log.info(
    `seccomp: ${ALLOWED_SYSCALLS.length} system calls allowed, ${REFUSED_SYSCALLS.join(", ")} ` +
      `refused (EACCES); any other: ${action}`,
  );
  if (Deno.env.get(SECCOMP_PROBE_ENV) !== undefined) {
    Deno.addSignalListener("SIGUSR2", () => {
      log.warn(`seccomp probe: personality() answered ${personalityQuery()}`);
    });
  }
}
