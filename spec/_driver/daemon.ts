/**
 * Starts the daemon under test on a fresh socket in a temporary directory and tears it down.
 *
 * Kinds: `ours` (this project's `mod.ts` under the running Deno, or another checkout's with
 * `root`, to compare before and after a change), `c` (QEMU 7.2's C virtiofsd,
 * `/usr/lib/qemu/virtiofsd`), `rust` (Rust virtiofsd 1.13 through `scripts/rust_virtiofsd.sh`).
 * stdout and stderr go to a log file in the temporary directory, so a chatty daemon never blocks
 * on a full pipe while a test waits synchronously; read it with `stderrText()`.
 *
 * Readiness is "the socket file exists": C virtiofsd serves exactly one connection, so probing
 * it with a connect would use it up. The front end's `connect` retries a refused connect.
 *
 * @example
 * ```ts ignore
 * await using d = await startDaemon("c", { sharedDir: "/tmp/share" });
 * using fe = await VhostUserFrontend.connect(d.socketPath);
 * ```
 *
 * @module
 */
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The daemons a spec can run against. */
export type DaemonKind = "ours" | "c" | "rust";

/** Every kind, in report order. */
export const DAEMON_KINDS: readonly DaemonKind[] = ["ours", "c", "rust"];

/** Options of {@linkcode startDaemon}. */
export interface StartDaemonOptions {
  /** The directory the daemon shares. */
  sharedDir: string;
  /** Arguments appended after the defaults (e.g. `["--cache", "none"]`, `["-o", "cache=none"]`). */
  extraArgs?: readonly string[];
  /** Extra environment variables. */
  env?: Readonly<Record<string, string>>;
  /** How long to wait for the socket file, in ms. Default 30000. */
  readyTimeoutMs?: number;
  /** Replace the default arguments entirely (the socket path is still chosen here). */
  args?: (socketPath: string, sharedDir: string) => string[];
  /**
   * `ours` only: another checkout of this project (e.g. a `git worktree` of an earlier commit)
   * whose `mod.ts` runs instead of this one's, with that checkout as the working directory.
   */
  root?: string;
}

/** How a daemon ended. */
export interface DaemonExit {
  /** Exit code (128 + signal when killed by one, as Deno reports it). */
  code: number;
  /** The signal that killed it, or null. */
  signal: Deno.Signal | null;
}

/** A running daemon. `await using` it, or call `stop()`. */
export interface DaemonHandle extends AsyncDisposable {
  /** Which daemon. */
  readonly kind: DaemonKind;
  /** The vhost-user socket it listens on. */
  readonly socketPath: string;
  /** Its process id. */
  readonly pid: number;
  /** The command line it was started with. */
  readonly argv: readonly string[];
  /** Everything it wrote to stdout and stderr so far. */
  stderrText(): string;
  /** Settles when it exits. */
  readonly exited: Promise<DaemonExit>;
  /** True once it has exited. */
  hasExited(): boolean;
  /**
   * Stops it: SIGTERM, then SIGKILL if it is still running after `graceMs` (default 3000);
   * then removes the temporary directory (`stderrText()` keeps the log). Returns how it ended.
   * Safe to call twice.
   */
  stop(graceMs?: number): Promise<DaemonExit>;
}

/** The project's root directory. */
export const PROJECT_ROOT: string = fileURLToPath(new URL("../../", import.meta.url));

/** The C reference daemon's path. */
export const C_VIRTIOFSD = "/usr/lib/qemu/virtiofsd";
/** The Rust virtiofsd wrapper script's path. */
export const RUST_VIRTIOFSD_SCRIPT: string = join(PROJECT_ROOT, "scripts", "rust_virtiofsd.sh");
/** Our daemon's entry point. */
export const OUR_ENTRY: string = join(PROJECT_ROOT, "mod.ts");

/** The sandbox every daemon of ours is started in (`SPEC_SANDBOX`), if any. */
export const SPEC_SANDBOX: string | undefined = Deno.env.get("SPEC_SANDBOX") || undefined;
/**
 * Whether our daemons serve from a sandbox: `SPEC_SANDBOX`'s, else the default (namespace as
 * root). There trusted.* xattrs fail with EPERM (no CAP_SYS_ADMIN, as with Rust virtiofsd).
 */
export const OURS_SANDBOXED: boolean =
  (SPEC_SANDBOX ?? (Deno.uid() === 0 ? "namespace" : "none")) !==
    "none";

/** The seccomp action every daemon of ours is started with (`SPEC_SECCOMP`), if any. */
export const SPEC_SECCOMP: string | undefined = Deno.env.get("SPEC_SECCOMP") || undefined;

/**
 * The default command line of `kind`, without the program itself resolved yet; `ours` runs
 * `entry` (default this checkout's `mod.ts`).
 */
export function daemonArgv(
  kind: DaemonKind,
  socketPath: string,
  sharedDir: string,
  entry: string = OUR_ENTRY,
): string[] {
  switch (kind) {
    case "ours":
      return [
        Deno.execPath(),
        "run",
        "-A",
        entry,
        "--socket-path",
        socketPath,
        "--shared-dir",
        sharedDir,
        // SPEC_SANDBOX=namespace: every daemon of ours runs in that sandbox.
        ...(SPEC_SANDBOX !== undefined ? ["--sandbox", SPEC_SANDBOX] : []),
        ...(SPEC_SECCOMP !== undefined ? ["--seccomp", SPEC_SECCOMP] : []),
      ];
    case "c":
      return [
        C_VIRTIOFSD,
        `--socket-path=${socketPath}`,
        "-o",
        `source=${sharedDir}`,
        "-o",
        "cache=auto",
      ];
    case "rust":
      return [
        RUST_VIRTIOFSD_SCRIPT,
        "--socket-path",
        socketPath,
        "--shared-dir",
        sharedDir,
        "--sandbox",
        "none",
        "--cache",
        "auto",
      ];
  }
}

/**
 * The daemons a spec runs against: env `DAEMONS` (comma list of ours, c, rust; default
 * "ours,c,rust": every spec runs against the references too, which is how a claim is compared).
 * Unknown names throw, naming them.
 */
export function daemonsUnderTest(): DaemonKind[] {
  const raw = Deno.env.get("DAEMONS") ?? "ours,c,rust";
  const kinds = raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
  const bad = kinds.filter((k) => !(DAEMON_KINDS as readonly string[]).includes(k));
  if (bad.length > 0) {
    throw new Error(`DAEMONS names unknown daemons: ${bad.join(", ")} (known: ours, c, rust)`);
  }
  return [...new Set(kinds)] as DaemonKind[];
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Makes sure Rust virtiofsd is unpacked (it may be fetched once with apt), outside any timing. */
async function prepareRust(): Promise<void> {
  const out = await new Deno.Command(RUST_VIRTIOFSD_SCRIPT, {
    args: ["--fetch-only"],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `${RUST_VIRTIOFSD_SCRIPT} --fetch-only failed (code ${out.code}): ` +
        new TextDecoder().decode(out.stderr).slice(-2000),
    );
  }
}

/**
 * Starts `kind` sharing `opts.sharedDir` on a new socket and waits until the socket file
 * exists. Throws (with the daemon's output) when it exits first or the wait times out.
 */
export async function startDaemon(
  kind: DaemonKind,
  opts: StartDaemonOptions,
): Promise<DaemonHandle> {
  if (kind === "rust") await prepareRust();
  const root = kind === "ours" && opts.root !== undefined ? resolve(opts.root) : undefined;
  const entry = root === undefined ? OUR_ENTRY : join(root, "mod.ts");
  if (kind === "ours" && !exists(entry)) {
    throw new Error(`Cannot start our daemon: ${entry} does not exist yet`);
  }
  const dir = await Deno.makeTempDir({ prefix: `vfsd-${kind}-` });
  const socketPath = join(dir, "vhost-user.sock");
  const logPath = join(dir, "daemon.log");
  const argv = opts.args
    ? opts.args(socketPath, opts.sharedDir)
    : [...daemonArgv(kind, socketPath, opts.sharedDir, entry), ...(opts.extraArgs ?? [])];
  // exec keeps the pid; the shell only redirects both streams to the log file.
  const child = new Deno.Command("/bin/sh", {
    args: ["-c", 'exec "$@" >"$VFSD_LOG" 2>&1', "sh", ...argv],
    env: { ...opts.env, VFSD_LOG: logPath },
    ...(root === undefined ? {} : { cwd: root }),
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let done = false;
  const exited: Promise<DaemonExit> = child.status.then((s) => {
    done = true;
    return { code: s.code, signal: s.signal };
  });
  /** The log as it was at exit, kept when `stop()` removes the temporary directory. */
  let finalText: string | undefined;
  const stderrText = (): string => {
    if (finalText !== undefined) return finalText;
    try {
      return Deno.readTextFileSync(logPath);
    } catch {
      return "";
    }
  };
  let stopped: Promise<DaemonExit> | undefined;
  const stop = (graceMs = 3000): Promise<DaemonExit> => {
    stopped ??= (async () => {
      if (!done) {
        try {
          child.kill("SIGTERM");
        } catch { /* already gone */ }
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), graceMs));
        const first = await Promise.race([exited, late]);
        clearTimeout(timer);
        if (first === "late") {
          try {
            child.kill("SIGKILL");
          } catch { /* already gone */ }
        }
      }
      const result = await exited;
      finalText = stderrText();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      return result;
    })();
    return stopped;
  };
  const handle: DaemonHandle = {
    kind,
    socketPath,
    pid: child.pid,
    argv,
    stderrText,
    exited,
    hasExited: () => done,
    stop,
    [Symbol.asyncDispose]: async () => {
      await stop();
    },
  };

  const timeoutMs = opts.readyTimeoutMs ?? 30000;
  const deadline = Date.now() + timeoutMs;
  while (!exists(socketPath)) {
    if (done) {
      const e = await exited;
      const text = stderrText();
      await stop();
      throw new Error(
        `${kind} daemon exited (code ${e.code}, signal ${e.signal}) before creating ` +
          `${socketPath}; command: ${argv.join(" ")}\n${text}`,
      );
    }
    if (Date.now() > deadline) {
      const text = stderrText();
      await stop();
      throw new Error(
        `Timed out after ${timeoutMs} ms waiting for the ${kind} daemon to create ` +
          `${socketPath}; command: ${argv.join(" ")}\n${text}`,
      );
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return handle;
}
