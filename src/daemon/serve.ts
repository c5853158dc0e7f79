/**
 * Starting and stopping a daemon: the listening socket and the stop eventfd on this thread; the
 * device in a Worker of its own when it serves a host directory (it then owns its thread and
 * blocks in `epoll_wait`), or in this isolate when it serves a `FileSystem` object (an object
 * cannot cross into a Worker): it then waits on another thread between batches of requests, and
 * the caller's code, timers and Promises run meanwhile.
 *
 * @module
 */
import {
  closeQuietly,
  eventfd,
  eventfdSignal,
  getrlimit,
  RLIMIT_NOFILE,
  setrlimit,
} from "../ffi/mod.ts";
import type { Logger, LogLevel } from "../log.ts";
import type { CacheMode, PassthroughOptions } from "../filesystem/passthrough/passthrough_fs.ts";
import type { FileSystem } from "../filesystem/filesystem.ts";
import { cacheSizeProblem, tagProblem, VirtioFsDevice } from "./device.ts";
import { PidFile } from "./pid_file.ts";
import { daemonLogger, type SyslogOptions, type SyslogSink } from "./syslog.ts";
import {
  checkListeningFd,
  ListenError,
  listenOnPath,
  setSocketGroup,
} from "../vhost_user/listener.ts";

// How the command line ends its process (it may not import the FFI layer).
export { exitNow } from "../ffi/mod.ts";

// The cache modes, for the command line (which may not import the file-system layer).
export type { CacheMode };

/** How long `stop()` waits for the device thread before terminating it. */
const STOP_GRACE_MS = 3000;

/** What the main thread hands the worker. */
export interface WorkerStart {
  listenFd: number;
  stopFd: number;
  requestQueues: number;
  keepServing: boolean;
  logLevel: LogLevel;
  /** The passthrough file system's options. */
  fs: PassthroughOptions;
  /** Serve it through `ReadOnlyFs`. */
  readonly: boolean;
  /** Warm the JIT up while idle (see `warmup.ts`; default true). */
  warmup?: boolean;
  /** The configuration space's tag (GET_CONFIG), if any. */
  tag?: string;
  /** The DAX cache window's size (0: none). */
  cacheSize: number;
  /** Log to syslog through this datagram socket (else stderr). */
  syslogSocket?: string;
  /** How that socket behaves. */
  syslogOptions?: SyslogOptions;
  /** Post `WORKER_OPENED` once everything is open, then wait for a message before serving. */
  hold: boolean;
  /** The warm-up's directory, made (and removed) by the caller. */
  warmupDir?: string;
  /** Capability numbers the device thread drops from its own sets before it serves. */
  dropCapabilities?: number[];
}

/** What the worker posts, with `hold`, once it has opened all it needs. */
export const WORKER_OPENED = "opened";

/** What the worker reports when its device stops. */
export interface WorkerExit {
  /** The exit status a daemon should use (0 clean, 1 protocol or internal error). */
  status: number;
  /** Why, in one line. */
  reason: string;
}

/**
 * Options of `serve`: where to listen, and what to serve — a host directory (`sharedDir` and the
 * passthrough options, the command line's) or a `fileSystem` object.
 */
export interface ServeOptions extends Partial<PassthroughOptions> {
  /** Listen here (a stale socket is replaced; the file is removed at stop). */
  socketPath?: string;
  /** Or accept on this already-listening socket. */
  fd?: number;
  /** Give the socket file to this group. */
  socketGroup?: string;
  /**
   * Serve this file system instead of a directory (the passthrough options do not apply). Its
   * methods run in this isolate, synchronous or async: see {@linkcode FileSystem}.
   */
  fileSystem?: FileSystem;
  /** Serve through `ReadOnlyFs`: every change fails with EROFS (default false). */
  readonly?: boolean;
  /** Request queues offered besides hiprio (default 2). */
  requestQueues?: number;
  /** Serve the next front end after one disconnects (default false: stop). */
  keepServing?: boolean;
  /** Default "info". */
  logLevel?: LogLevel;
  /** Where log lines go (default: stderr at `logLevel`, or syslog with `syslogSocket`). */
  log?: Logger;
  /**
   * Log to syslog through this datagram socket (`/dev/log`; the command line's `--syslog`),
   * from every thread: the device's Worker opens its own. Without `log`, this thread's lines go
   * there too (or to stderr, with one warning, when nobody listens on it).
   */
  syslogSocket?: string;
  /**
   * With `socketPath`: keep `<socketPath>.pid`, holding our pid and a lock, as Rust virtiofsd
   * does; a second daemon on the same socket path then refuses to start, naming it. Removed at
   * stop. Default false (the command line sets it).
   */
  pidFile?: boolean;
  /**
   * RLIMIT_NOFILE: by default raised to min(1,000,000, fs.nr_open) (or the hard limit, without
   * CAP_SYS_RESOURCE); a number given here is set as the soft limit, even a lower one; 0 leaves it.
   */
  rlimitNofile?: number;
  /**
   * While idle at start, serve a private file system requests of our own so that the JIT has
   * compiled the request path before the guest's first requests (default true; see
   * `src/daemon/warmup.ts`).
   */
  warmup?: boolean;
  /**
   * The tag the device's configuration space holds, read by front ends that ask the back end
   * (vhost-user GET_CONFIG, offered only with a tag): QEMU's generic `vhost-user-test-device`.
   * `vhost-user-fs-pci` takes its tag from QEMU's command line instead.
   */
  tag?: string;
  /**
   * The DAX cache window, in bytes: a power of two from 2 MiB to 512 MiB, offered to front ends
   * that have one (vhost-user SHMEM, QEMU 11.1's generic device); it needs `tag`. Default 0: no
   * window, and FUSE_SETUPMAPPING gets ENOSYS.
   */
  cacheSize?: number;
  /**
   * With `sharedDir`: called on this thread once the device thread has loaded its code and
   * opened everything it needs (the shared directory, /proc/self/fd, the warm-up's directory),
   * before it serves: the sandbox changes the root there, and the seccomp filter is installed. A
   * rejection stops the daemon (status 1, its message logged). Not called with `fileSystem`.
   */
  beforeServing?: () => Promise<void> | void;
  /** The warm-up's directory, empty, made by the caller, who removes it after the daemon stops. */
  warmupDir?: string;
  /** How the syslog sockets this opens (the device thread's, and this thread's) behave. */
  syslogOptions?: SyslogOptions;
  /**
   * Capability numbers the device thread drops from its own sets (Linux keeps them per thread)
   * before it serves: the chroot sandbox's CAP_SYS_CHROOT.
   */
  dropCapabilities?: number[];
}

/**
 * Why `opts`' tag and cache window cannot be served (undefined when they can); the message
 * names the option as the command line spells it.
 */
export function windowProblem(opts: Pick<ServeOptions, "tag" | "cacheSize">): string | undefined {
  const tagBad = opts.tag === undefined ? undefined : tagProblem(opts.tag);
  if (tagBad !== undefined) return `--tag: ${tagBad}`;
  const size = opts.cacheSize ?? 0;
  const problem = cacheSizeProblem(size);
  if (problem !== undefined) return `--cache-size: ${problem}`;
  if (size > 0 && opts.tag === undefined) {
    return "--cache-size needs --tag: the front ends with a window read the tag from the back end";
  }
  return undefined;
}

/** A running daemon. */
export interface Daemon {
  /** The socket path, when it listens on one. */
  readonly socketPath: string | undefined;
  /** Settles when the device stops, with its exit status. */
  readonly exited: Promise<WorkerExit>;
  /** Stops the device (as SIGTERM does) and waits for it. */
  stop(): Promise<WorkerExit>;
}

/** Raises RLIMIT_NOFILE as `ServeOptions.rlimitNofile` says. */
export function raiseNofile(target: number | undefined, log: Logger): void {
  if (target === 0) return;
  let want = target;
  if (want !== undefined) {
    // An explicit limit is what the operator wants, lower or higher.
    try {
      const cur = getrlimit(RLIMIT_NOFILE);
      setrlimit(RLIMIT_NOFILE, { cur: Math.min(want, cur.max), max: cur.max });
      if (want > cur.max) log.warn(`RLIMIT_NOFILE ${want} is over the hard limit ${cur.max}`);
    } catch (e) {
      log.warn(`cannot set RLIMIT_NOFILE to ${want}: ${(e as Error).message}`);
    }
    return;
  }
  if (want === undefined) {
    let nrOpen = 1_000_000;
    try {
      nrOpen = Number(Deno.readTextFileSync("/proc/sys/fs/nr_open").trim());
    } catch { /* keep the default */ }
    want = Math.min(1_000_000, nrOpen);
  }
  try {
    const cur = getrlimit(RLIMIT_NOFILE);
    if (cur.cur >= want) return;
    try {
      setrlimit(RLIMIT_NOFILE, { cur: want, max: Math.max(want, cur.max) });
    } catch {
      // Without CAP_SYS_RESOURCE the hard limit is the ceiling.
      want = Math.min(want, cur.max);
      if (cur.cur >= want) return;
      setrlimit(RLIMIT_NOFILE, { cur: want, max: cur.max });
    }
    log.debug(`RLIMIT_NOFILE raised from ${cur.cur} to ${want}`);
  } catch (e) {
    log.warn(`cannot raise RLIMIT_NOFILE to ${want}: ${(e as Error).message}`);
  }
}

/** Why `dir` cannot be shared (a line naming it), or undefined. */
export function shareProblem(dir: string): string | undefined {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(dir);
  } catch (e) {
    return `Cannot share ${dir}: ${(e as Error).message}`;
  }
  return info.isDirectory ? undefined : `Cannot share ${dir}: not a directory`;
}

/** A listening socket, with what taking it took (pid file, socket file). */
export interface Listening {
  /** The listening descriptor. */
  readonly fd: number;
  /** "listening on PATH" or "accepting on fd N", for the log. */
  readonly where: string;
  /** Closes what it opened and removes the socket file and the pid file it made. */
  release(): void;
}

/**
 * The socket of `opts`: the given `fd`, or a new one on `socketPath` (with its pid file, first,
 * when `pidFile` is set, and its group). Throws ListenError naming what failed.
 */
export function openListener(
  opts: Pick<ServeOptions, "fd" | "socketPath" | "socketGroup" | "pidFile">,
  log: Logger,
): Listening {
  if (opts.fd !== undefined) {
    checkListeningFd(opts.fd);
    return { fd: opts.fd, where: `accepting on fd ${opts.fd}`, release: () => {} };
  }
  const path = opts.socketPath;
  if (path === undefined) {
    throw new ListenError("Cannot serve: give a socket path or a listening fd");
  }
  // The pid file first, as Rust virtiofsd: a second daemon on this path stops here.
  const pidFile = opts.pidFile === true ? PidFile.take(`${path}.pid`) : undefined;
  let fd: number;
  try {
    fd = listenOnPath(path, log);
  } catch (e) {
    pidFile?.release();
    throw e;
  }
  const release = (): void => {
    closeQuietly(fd);
    try {
      Deno.removeSync(path);
    } catch { /* already gone */ }
    pidFile?.release();
  };
  if (opts.socketGroup !== undefined) {
    try {
      setSocketGroup(path, opts.socketGroup);
    } catch (e) {
      release();
      throw e;
    }
  }
  return { fd, where: `listening on ${path}`, release };
}

/**
 * Starts a daemon: checks the shared directory, listens, and runs the device in a Worker.
 * Throws `ListenError` (socket) or `Deno.errors.NotFound`-style errors naming the shared
 * directory before anything is started.
 */
export function serve(opts: ServeOptions): Promise<Daemon> {
  let syslog: SyslogSink | undefined;
  let log: Logger;
  let syslogSocket = opts.syslogSocket;
  if (opts.log !== undefined) log = opts.log;
  else {
    ({ log, syslog } = daemonLogger(opts.logLevel ?? "info", syslogSocket, opts.syslogOptions));
    if (syslogSocket !== undefined && syslog === undefined) syslogSocket = undefined;
  }
  const closeLog = (): void => syslog?.close();
  try {
    return serveWith(opts, log, syslogSocket, closeLog);
  } catch (e) {
    closeLog();
    throw e;
  }
}

function serveWith(
  opts: ServeOptions,
  log: Logger,
  syslogSocket: string | undefined,
  closeLog: () => void,
): Promise<Daemon> {
  const fail = (e: unknown): Promise<never> => {
    closeLog();
    return Promise.reject(e);
  };
  const sharedDir = opts.sharedDir;
  if ((sharedDir === undefined) === (opts.fileSystem === undefined)) {
    return fail(
      new ListenError("Cannot serve: give either sharedDir or fileSystem (one of them)"),
    );
  }
  const windowBad = windowProblem(opts);
  if (windowBad !== undefined) return fail(new ListenError(`Cannot serve: ${windowBad}`));
  if (sharedDir !== undefined) {
    const bad = shareProblem(sharedDir);
    if (bad !== undefined) return fail(new ListenError(bad));
    raiseNofile(opts.rlimitNofile, log);
  }
  let listening: Listening;
  try {
    listening = openListener(opts, log);
  } catch (e) {
    return fail(e);
  }
  const listenFd = listening.fd;
  const stopFd = eventfd();
  const release = (): void => {
    listening.release();
    closeQuietly(stopFd);
  };
  const where = listening.where;
  if (opts.fileSystem !== undefined) {
    return Promise.resolve(
      serveHere(opts, opts.fileSystem, log, listenFd, stopFd, release, where, closeLog),
    );
  }
  const worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
  let finish: (exit: WorkerExit) => void = () => {};
  const exited = new Promise<WorkerExit>((resolve) => {
    finish = (exit) => {
      worker.terminate();
      release();
      log.info(`stopped: ${exit.reason}`);
      closeLog();
      resolve(exit);
    };
  });
  let done = false;
  const once = (exit: WorkerExit): void => {
    if (!done) {
      done = true;
      finish(exit);
    }
  };
  const proceed = async (): Promise<void> => {
    try {
      await opts.beforeServing?.();
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      log.error(why);
      once({ status: 1, reason: why });
      return;
    }
    if (!done) worker.postMessage(WORKER_OPENED);
  };
  worker.onmessage = (e: MessageEvent<WorkerExit | typeof WORKER_OPENED>) => {
    if (e.data === WORKER_OPENED) void proceed();
    else once(e.data);
  };
  worker.onerror = (e: ErrorEvent) => {
    e.preventDefault();
    log.error(`the device thread failed: ${e.message}`);
    once({ status: 1, reason: `internal error: ${e.message}` });
  };
  const start: WorkerStart = {
    listenFd,
    stopFd,
    requestQueues: opts.requestQueues ?? 2,
    keepServing: opts.keepServing ?? false,
    logLevel: opts.logLevel ?? "info",
    warmup: opts.warmup ?? true,
    hold: opts.beforeServing !== undefined,
    ...(opts.warmupDir !== undefined ? { warmupDir: opts.warmupDir } : {}),
    ...(opts.dropCapabilities !== undefined ? { dropCapabilities: opts.dropCapabilities } : {}),
    readonly: opts.readonly ?? false,
    cacheSize: opts.cacheSize ?? 0,
    ...(opts.tag !== undefined ? { tag: opts.tag } : {}),
    ...(syslogSocket !== undefined ? { syslogSocket } : {}),
    ...(opts.syslogOptions !== undefined ? { syslogOptions: opts.syslogOptions } : {}),
    fs: passthroughOptions(opts, sharedDir ?? ""),
  };
  worker.postMessage(start);
  log.info(`${where}, sharing ${sharedDir}`);
  return Promise.resolve({
    socketPath: opts.socketPath,
    exited,
    stop: () => {
      if (!done) {
        eventfdSignal(stopFd);
        // A device thread that does not come back to epoll_wait is stopped by force.
        const timer = setTimeout(() => {
          log.error(`the device thread did not stop within ${STOP_GRACE_MS} ms; terminating it`);
          once({ status: 1, reason: "the device thread did not stop; terminated" });
        }, STOP_GRACE_MS);
        exited.then(() => clearTimeout(timer));
      }
      return exited;
    },
  });
}

/** The device in this isolate, serving `fileSystem` (it waits on another thread when idle). */
function serveHere(
  opts: ServeOptions,
  fileSystem: FileSystem,
  log: Logger,
  listenFd: number,
  stopFd: number,
  release: () => void,
  where: string,
  closeLog: () => void,
): Daemon {
  const device = new VirtioFsDevice({
    listenFd,
    stopFd,
    requestQueues: opts.requestQueues ?? 2,
    keepServing: opts.keepServing ?? false,
    log,
    fileSystem,
    cacheSize: opts.cacheSize ?? 0,
    ...(opts.tag !== undefined ? { tag: opts.tag } : {}),
  });
  log.info(`${where}, serving a ${fileSystem.constructor?.name ?? "file system"}`);
  let done = false;
  const exited = device.run().then(
    (exit) => exit,
    (e: unknown) => {
      log.error(`the device failed: ${e instanceof Error ? e.stack ?? e.message : e}`);
      return { status: 1, reason: `internal error: ${e instanceof Error ? e.message : e}` };
    },
  ).then((exit) => {
    done = true;
    release();
    log.info(`stopped: ${exit.reason}`);
    closeLog();
    return exit;
  });
  return {
    socketPath: opts.socketPath,
    exited,
    stop: () => {
      if (!done) eventfdSignal(stopFd);
      return exited;
    },
  };
}

/** The passthrough options of `opts` (what can cross into the Worker). */
function passthroughOptions(opts: ServeOptions, sharedDir: string): PassthroughOptions {
  const {
    fileSystem: _fs,
    log: _log,
    tag: _tag,
    cacheSize: _cacheSize,
    syslogSocket: _syslog,
    pidFile: _pidFile,
    beforeServing: _beforeServing,
    warmupDir: _warmupDir,
    syslogOptions: _syslogOptions,
    dropCapabilities: _dropCapabilities,
    ...rest
  } = opts;
  return { ...rest, sharedDir };
}
