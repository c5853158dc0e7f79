/**
 * The harness of the cache-mode and writeback specs (`spec/cache_*_test.ts`,
 * `spec/writeback_test.ts`): one daemon started in a given cache mode with the same options for
 * every kind (ours, C virtiofsd, Rust virtiofsd, each in its own spelling), seen either through
 * the test driver ({@linkcode WireSession}: the replies' timeouts and open flags) or by a real
 * guest ({@linkcode GuestSession}: the share mounted at `/mnt`, `vfsprobe` in `/tmp`, the host
 * changing files while the guest looks), and the per-daemon departures recorded in
 * `spec/expectations/cache.json`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as A from "../../src/wire/fuse.ts";
import { daemonArgv, type DaemonHandle, type DaemonKind, startDaemon } from "./daemon.ts";
import { VhostUserFrontend } from "../../src/driver/frontend.ts";
import {
  type EntryOut,
  FuseClient,
  type InitOut,
  LINUX_6_1_INIT_FLAGS,
  O_RDONLY,
  O_RDWR,
  S_IFIFO,
} from "../../src/driver/fuse_client.ts";
import {
  type ActionResult,
  installVfsprobe,
  parseDo,
  parseWatch,
  RequestLog,
  requestLogArgs,
  VFSPROBE,
  waitMark,
  type WatchResult,
} from "./guest_tools.ts";
import { QemuGuest } from "./qemu_guest.ts";

/** The cache modes (the design's names; Rust's `never` is `none`). */
export type { CacheMode } from "../../src/daemon/serve.ts";
import type { CacheMode } from "../../src/daemon/serve.ts";

/** How a daemon is started: the same choices for every kind. */
export interface ModeOptions {
  /** The cache mode; undefined starts the daemon without one (its default, auto). */
  cache?: CacheMode;
  /** The cache mode's word as given on the command line, when not the design's (`never`). */
  cacheWord?: string;
  /** cache=auto's timeout in seconds (ours and C: `-o timeout=`). */
  timeout?: number;
  /** Our own spelling of the timeout (`--cache-timeout SECONDS`), for ours only. */
  cacheTimeoutFlag?: number;
  /** Enable the writeback cache. */
  writeback?: boolean;
  /** Allow mmap(MAP_SHARED) under FOPEN_DIRECT_IO where the kernel offers it (`--allow-mmap`). */
  allowMmap?: boolean;
  /** Log every FUSE request (see `requestLogArgs`). */
  logRequests?: boolean;
}

/** An option a daemon kind has no spelling for. */
export class UnsupportedOption extends Error {
  /** The daemon kind. */
  readonly kind: DaemonKind;
  /** The option. */
  readonly option: string;

  /** `kind` has no way to say `option`. */
  constructor(kind: DaemonKind, option: string) {
    super(`${kind} has no option for ${option}`);
    this.name = "UnsupportedOption";
    this.kind = kind;
    this.option = option;
  }
}

/**
 * The command line of `kind` in mode `m`: the default command line without its cache option,
 * then the mode in the kind's own spelling. Throws {@linkcode UnsupportedOption} when the kind
 * cannot say one of the choices.
 */
export function modeArgv(
  kind: DaemonKind,
  socketPath: string,
  sharedDir: string,
  m: ModeOptions,
): string[] {
  const argv = daemonArgv(kind, socketPath, sharedDir);
  // The defaults carry "-o cache=auto" (C) and "--cache auto" (Rust): drop them.
  for (let i = 0; i < argv.length; i++) {
    if (kind === "c" && argv[i] === "-o" && argv[i + 1] === "cache=auto") argv.splice(i--, 2);
    else if (kind === "rust" && argv[i] === "--cache") argv.splice(i--, 2);
  }
  const add: string[] = [];
  if (m.cache !== undefined) {
    if (kind === "c") {
      if (m.cache === "metadata") throw new UnsupportedOption(kind, "cache=metadata");
      add.push("-o", `cache=${m.cacheWord ?? m.cache}`);
    } else {
      add.push(
        "--cache",
        m.cacheWord ?? (kind === "rust" && m.cache === "none" ? "never" : m.cache),
      );
    }
  }
  if (m.timeout !== undefined) {
    if (kind === "rust") throw new UnsupportedOption(kind, "the cache timeout");
    add.push("-o", `timeout=${m.timeout}`);
  }
  if (m.cacheTimeoutFlag !== undefined) {
    if (kind !== "ours") throw new UnsupportedOption(kind, "--cache-timeout");
    add.push("--cache-timeout", String(m.cacheTimeoutFlag));
  }
  if (m.writeback === true) add.push(...(kind === "c" ? ["-o", "writeback"] : ["--writeback"]));
  if (m.allowMmap === true) {
    if (kind === "c") throw new UnsupportedOption(kind, "--allow-mmap");
    add.push("--allow-mmap");
  }
  if (m.logRequests === true) add.push(...requestLogArgs(kind));
  return [...argv, ...add];
}

/** Starts `kind` in mode `m` sharing `sharedDir`. */
export function startInMode(
  kind: DaemonKind,
  sharedDir: string,
  m: ModeOptions,
): Promise<DaemonHandle> {
  // Throws UnsupportedOption before anything starts.
  modeArgv(kind, "/nonexistent", sharedDir, m);
  return startDaemon(kind, {
    sharedDir,
    args: (socketPath, dir) => modeArgv(kind, socketPath, dir, m),
  });
}

/** A human-readable name of a mode, for test names. */
export function modeName(m: ModeOptions): string {
  const parts = [`cache=${m.cacheWord ?? m.cache ?? "default"}`];
  if (m.timeout !== undefined) parts.push(`timeout=${m.timeout}`);
  if (m.cacheTimeoutFlag !== undefined) parts.push(`--cache-timeout ${m.cacheTimeoutFlag}`);
  if (m.writeback !== undefined) parts.push(m.writeback ? "writeback" : "no_writeback");
  if (m.allowMmap === true) parts.push("allow-mmap");
  return parts.join(",");
}

// ---- expectations -----------------------------------------------------------------------------

/** A reference daemon's recorded departure from a check. */
export interface Departure {
  /** Why, with what was observed. */
  reason: string;
  /** The check cannot be made for this daemon (no such option, ...); it is skipped. */
  skip?: boolean;
  /** The value this daemon gives instead, when the check compares values. */
  value?: unknown;
}

const EXPECTATIONS_PATH = fileURLToPath(new URL("../expectations/cache.json", import.meta.url));
let expectationsCache: Record<string, Record<string, Departure>> | undefined;

/**
 * The recorded departure of `kind` from the check `key` (an ID plus a short name), or
 * undefined. Ours never has one: a departure of ours is a failing test. Throws if the file
 * records one for ours.
 */
export function departure(kind: DaemonKind, key: string): Departure | undefined {
  expectationsCache ??= JSON.parse(Deno.readTextFileSync(EXPECTATIONS_PATH)) as Record<
    string,
    Record<string, Departure>
  >;
  if (kind === "ours" && expectationsCache.ours !== undefined) {
    throw new Error("spec/expectations/cache.json must not record departures of ours");
  }
  return expectationsCache[kind]?.[key];
}

// ---- the wire ---------------------------------------------------------------------------------

/** A daemon in one mode and our front end talking to it. */
export class WireSession implements AsyncDisposable {
  /** The daemon. */
  readonly daemon: DaemonHandle;
  /** The front end. */
  readonly fe: VhostUserFrontend;
  /** FUSE operations over it. */
  readonly ops: FuseClient;
  /** The INIT reply. */
  readonly init: InitOut;
  /** The shared directory (removed at dispose). */
  readonly shared: string;

  private constructor(
    daemon: DaemonHandle,
    fe: VhostUserFrontend,
    ops: FuseClient,
    init: InitOut,
    shared: string,
  ) {
    this.daemon = daemon;
    this.fe = fe;
    this.ops = ops;
    this.init = init;
    this.shared = shared;
  }

  /**
   * Starts `kind` in mode `m` on a fresh shared directory (`setup` fills it first), connects,
   * and sends INIT with `initFlags` (default: what Linux 6.1 sends).
   */
  static async open(
    kind: DaemonKind,
    m: ModeOptions,
    opts: { setup?: (dir: string) => void; initFlags?: bigint } = {},
  ): Promise<WireSession> {
    const shared = await Deno.makeTempDir({ prefix: `cache-wire-${kind}-` });
    let daemon: DaemonHandle | undefined;
    try {
      opts.setup?.(shared);
      daemon = await startInMode(kind, shared, m);
      const fe = await VhostUserFrontend.connect(daemon.socketPath, {
        queueSize: 1024,
        timeoutMs: 10_000,
      });
      const ops = new FuseClient(fe);
      const init = ops.init({ flags: opts.initFlags ?? LINUX_6_1_INIT_FLAGS });
      return new WireSession(daemon, fe, ops, init, shared);
    } catch (e) {
      const log = daemon?.stderrText() ?? "";
      await daemon?.stop();
      await Deno.remove(shared, { recursive: true }).catch(() => {});
      if (e instanceof UnsupportedOption) throw e;
      throw new Error(`${(e as Error).message}\n--- ${kind} daemon log ---\n${log}`, { cause: e });
    }
  }

  /** Closes the connection, stops the daemon, removes the directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.fe.close();
    await this.daemon.stop();
    await Deno.remove(this.shared, { recursive: true }).catch(() => {});
  }
}

/** A timeout as the reply carries it, in seconds. */
export function seconds(sec: bigint, nsec: number): number {
  return Number(sec) + nsec / 1e9;
}

/** The entry and attribute timeouts of an entry reply, in seconds. */
export function entryTimeouts(e: EntryOut): { entry: number; attr: number } {
  return {
    entry: seconds(e.entryValid, e.entryValidNsec),
    attr: seconds(e.attrValid, e.attrValidNsec),
  };
}

/** Every reply of a mode the guest's caching depends on. */
export interface ReplySurvey {
  /** The INIT reply's flags. */
  initFlags: bigint;
  /** Entry and attribute timeouts per operation that makes an entry (LOOKUP, CREATE, ...). */
  entries: Record<string, { entry: number; attr: number }>;
  /** GETATTR's attribute timeout. */
  getattr: number;
  /** FOPEN_* flags per open kind (OPEN O_RDONLY, OPEN O_RDWR, CREATE, OPENDIR). */
  openFlags: Record<string, number>;
}

/**
 * Makes every kind of reply once on a share holding `file` (4 bytes) and `dir/inner`: LOOKUP,
 * GETATTR, CREATE, MKNOD (a FIFO), MKDIR, SYMLINK, LINK, READDIRPLUS (each entry but "." and
 * ".."; only when INIT granted it, as a guest sends it only then), OPEN read-only and read-write,
 * CREATE's open, OPENDIR.
 */
export function surveyReplies(w: WireSession): ReplySurvey {
  const ops = w.ops;
  const root = A.FUSE_ROOT_ID;
  const entries: ReplySurvey["entries"] = {};
  const file = ops.lookup(root, "file");
  entries.LOOKUP = entryTimeouts(file);
  const getattr = ops.getattr(file.nodeid);
  const created = ops.create(root, "created", O_RDWR, 0o644);
  entries.CREATE = entryTimeouts(created.entry);
  entries.MKNOD = entryTimeouts(ops.mknod(root, "fifo", S_IFIFO | 0o644));
  entries.MKDIR = entryTimeouts(ops.mkdir(root, "newdir", 0o755));
  entries.SYMLINK = entryTimeouts(ops.symlink(root, "link", "file"));
  entries.LINK = entryTimeouts(ops.link(file.nodeid, root, "hardlink"));
  if ((w.init.flags & A.FUSE_DO_READDIRPLUS) !== 0n) {
    const dir = ops.lookup(root, "dir");
    const dh = ops.opendir(dir.nodeid);
    const listing = ops.readdirplusAll(dir.nodeid, dh.fh);
    ops.releasedir(dir.nodeid, dh.fh);
    for (const d of listing.entries) {
      if (d.name === "." || d.name === "..") continue;
      entries[`READDIRPLUS ${d.name}`] = entryTimeouts(d.entry);
    }
  }
  const ro = ops.open(file.nodeid, O_RDONLY);
  const rw = ops.open(file.nodeid, O_RDWR);
  const dh = ops.opendir(root);
  const openFlags = {
    "OPEN O_RDONLY": ro.openFlags,
    "OPEN O_RDWR": rw.openFlags,
    CREATE: created.open.openFlags,
    OPENDIR: dh.openFlags,
  };
  ops.release(file.nodeid, ro.fh);
  ops.release(file.nodeid, rw.fh);
  ops.release(created.entry.nodeid, created.open.fh);
  ops.releasedir(root, dh.fh);
  return {
    initFlags: w.init.flags,
    entries,
    getattr: seconds(getattr.attrValid, getattr.attrValidNsec),
    openFlags,
  };
}

/** The share `surveyReplies` expects. */
export function surveySetup(dir: string): void {
  Deno.writeTextFileSync(join(dir, "file"), "data");
  Deno.mkdirSync(join(dir, "dir"));
  Deno.writeTextFileSync(join(dir, "dir", "inner"), "x");
}

// ---- the guest --------------------------------------------------------------------------------

/** The tag the guest mounts. */
export const TAG = "share";
/** Where the guest mounts the share. */
export const MNT = "/mnt";

/** A daemon in one mode, a guest with the share mounted at /mnt, and vfsprobe in its /tmp. */
export class GuestSession implements AsyncDisposable {
  /** Which daemon. */
  readonly kind: DaemonKind;
  /** The daemon (logging every request). */
  readonly daemon: DaemonHandle;
  /** The guest. */
  readonly guest: QemuGuest;
  /** The shared directory on the host. */
  readonly shared: string;
  #seq = 0;

  private constructor(kind: DaemonKind, daemon: DaemonHandle, guest: QemuGuest, shared: string) {
    this.kind = kind;
    this.daemon = daemon;
    this.guest = guest;
    this.shared = shared;
  }

  /**
   * Starts `kind` in mode `m` (logging every request) on a fresh share that `setup` fills,
   * boots a guest, mounts the share and copies vfsprobe to the guest's /tmp.
   */
  static async start(
    kind: DaemonKind,
    m: ModeOptions,
    setup: (dir: string) => void = () => {},
  ): Promise<GuestSession> {
    const shared = await Deno.makeTempDir({ prefix: `cache-guest-${kind}-` });
    let daemon: DaemonHandle | undefined;
    let guest: QemuGuest | undefined;
    try {
      const probe = await installVfsprobe(shared);
      setup(shared);
      daemon = await startInMode(kind, shared, { ...m, logRequests: true });
      guest = await QemuGuest.boot({ socketPath: daemon.socketPath, tag: TAG });
      const r = await guest.sh(`mount -t virtiofs ${TAG} ${MNT} && ${probe.copyCmd(MNT)}`);
      if (r.status !== 0) throw new Error(`mounting the share failed: ${r.out}`);
      return new GuestSession(kind, daemon, guest, shared);
    } catch (e) {
      const log = daemon?.stderrText().split("\n").slice(-40).join("\n") ?? "";
      await guest?.kill();
      await guest?.shutdown();
      await daemon?.stop();
      await Deno.remove(shared, { recursive: true }).catch(() => {});
      if (e instanceof UnsupportedOption) throw e;
      throw new Error(`${(e as Error).message}\n--- ${kind} daemon log (tail) ---\n${log}`, {
        cause: e,
      });
    }
  }

  /** The host path of `rel` in the share. */
  host(rel: string): string {
    return join(this.shared, rel);
  }

  /** A new name, unique in this session (marks and signal files). */
  unique(prefix: string): string {
    return `${prefix}${++this.#seq}`;
  }

  /** A position at the end of the daemon's request log. */
  requestLog(): RequestLog {
    return new RequestLog(this.kind, () => this.daemon.stderrText());
  }

  /**
   * Runs `cmd` in the guest while `host` runs on the host, and returns its output. If `host`
   * throws, the guest is killed (its command may be waiting for a signal file) and the error
   * rethrown; a non-zero exit status throws too.
   */
  async during(cmd: string, host: () => Promise<void>, timeoutMs = 120_000): Promise<string> {
    const run = this.guest.sh(cmd, { timeoutMs });
    try {
      await host();
    } catch (e) {
      await this.guest.kill();
      await run.catch(() => undefined);
      throw e;
    }
    const r = await run;
    if (r.status !== 0) throw new Error(`guest command failed (${r.status}): ${cmd}\n${r.out}`);
    return r.out;
  }

  /**
   * `vfsprobe watch` with `probes` (guest paths under /mnt): after round 0 it marks, `change`
   * runs on the host, then the signal file is created; the guest reports what it saw. `args`
   * are more watch options (-i, -d, -w).
   */
  async watch(
    probes: readonly string[],
    change: () => void | Promise<void>,
    args: string,
  ): Promise<WatchResult> {
    const mark = this.unique("w");
    const signal = this.unique(".signal-");
    const out = await this.during(
      `${VFSPROBE} watch -m ${mark} -s ${MNT}/${signal} ${args} ${probes.join(" ")}`,
      async () => {
        await waitMark(this.guest, mark);
        await change();
        Deno.writeFileSync(this.host(signal), new Uint8Array());
      },
    );
    return parseWatch(out);
  }

  /**
   * `vfsprobe do` with `actions`, where an action `{host: fn}` becomes `mark:M wait:SIGNAL`:
   * the guest stops there, `fn` runs on the host, then the signal file lets it go on. Returns
   * the actions' results (marks and waits included).
   */
  async act(actions: readonly (string | { host: () => void | Promise<void> })[]): Promise<
    ActionResult[]
  > {
    const words: string[] = [];
    const steps: { mark: string; signal: string; fn: () => void | Promise<void> }[] = [];
    for (const a of actions) {
      if (typeof a === "string") {
        words.push(a);
        continue;
      }
      const mark = this.unique("a");
      const signal = this.unique(".signal-");
      words.push(`mark:${mark}`, `wait:${MNT}/${signal}`);
      steps.push({ mark, signal, fn: a.host });
    }
    const out = await this.during(`${VFSPROBE} do ${words.join(" ")}`, async () => {
      for (const s of steps) {
        await waitMark(this.guest, s.mark);
        await s.fn();
        Deno.writeFileSync(this.host(s.signal), new Uint8Array());
      }
    });
    return parseDo(out);
  }

  /** Unmounts, powers the guest off, stops the daemon, removes the share. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.guest.shutdown();
    await this.daemon.stop();
    await Deno.remove(this.shared, { recursive: true }).catch(() => {});
  }
}

// ---- the kill-suid rule ----------------------------------------------------------------------

/** The guest user of the kill-suid steps. */
const SUID_USER = 1000;

/**
 * Two setuid+setgid files for the guest user to write: its own (06755) and root's, world
 * writable (06777); the share's root is opened to it.
 */
export function suidSetup(dir: string): void {
  Deno.chmodSync(dir, 0o755);
  Deno.writeFileSync(join(dir, "suid-own"), new TextEncoder().encode("x".repeat(100)));
  Deno.chownSync(join(dir, "suid-own"), SUID_USER, SUID_USER);
  Deno.chmodSync(join(dir, "suid-own"), 0o6755);
  Deno.writeFileSync(join(dir, "suid-other"), new TextEncoder().encode("x".repeat(100)));
  Deno.chmodSync(join(dir, "suid-other"), 0o6777);
}

/**
 * The guest user writes both files of `suidSetup`; as on a local file system the write succeeds
 * and clears setuid and setgid (`known`: the modes a reference daemon leaves instead).
 */
export async function suidWrite(s: GuestSession, known?: unknown): Promise<void> {
  const r = await s.act([
    `as:${SUID_USER}:${SUID_USER}`,
    `open:${MNT}/suid-own:w`,
    "write:10:y",
    "close",
    `open:${MNT}/suid-other:w`,
    "write:10:y",
    "close",
  ]);
  assert.deepEqual(r.map((a) => `${a.name} ${a.result}`), [
    "as ok",
    "open ok",
    "write ok n=10",
    "close ok",
    "open ok",
    "write ok n=10",
    "close ok",
  ]);
  const modes = ["suid-own", "suid-other"].map((n) =>
    (Deno.statSync(s.host(n)).mode ?? 0) & 0o7777
  );
  assert.deepEqual(
    modes.map((x) => x.toString(8)),
    Array.isArray(known) ? known : ["755", "777"],
    "the host modes of the user's own file and of root's",
  );
}

/**
 * Polls `probe` every `everyMs` for `forMs` and returns every distinct value it returned with
 * when it first did (ms since the call): `[{tMs: 0, value}]` means it never changed.
 */
export async function pollHost<T>(
  probe: () => T,
  forMs: number,
  everyMs = 5,
): Promise<{ tMs: number; value: T }[]> {
  const t0 = performance.now();
  const seen: { tMs: number; value: T }[] = [];
  let last = "";
  for (;;) {
    const t = performance.now() - t0;
    const value = probe();
    const key = JSON.stringify(value);
    if (seen.length === 0 || key !== last) {
      seen.push({ tMs: t, value });
      last = key;
    }
    if (t >= forMs) return seen;
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
