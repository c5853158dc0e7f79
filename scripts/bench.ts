/**
 * `deno task bench`: the wire benchmark of issue 7. The same driver, the same host directory and
 * the same scenario against our daemon, C virtiofsd 7.2 and Rust virtiofsd 1.13 (each with
 * cache=auto and one request queue), plus the driver's own ceiling (`scripts/canned_backend.ts`,
 * a back end answering canned replies), in one run, interleaved round by round: in round r each
 * back end (in an order rotated by r) is started fresh, runs every row, and is stopped.
 *
 * Rows: LOOKUP and GETATTR of a warm inode; READ 4 KiB and 1 MiB of a cached file; WRITE 4 KiB
 * and 1 MiB; CREATE + RELEASE + UNLINK (then FORGET on the hiprio queue, as Linux sends it);
 * READDIRPLUS walking a whole directory (OPENDIR, READDIRPLUS from each reply's last offset until
 * an empty reply, RELEASEDIR). Each at depth 1 (latency of one iteration: median and p99 µs) and
 * at depth 64 (requests/s, MiB/s). Requests are laid out as Linux 6.1 lays them out (see
 * `scripts/bench_driver.ts`); the hot loops allocate nothing.
 *
 * The DAX row ("dax"; `--dax-mib 256`): in each round, after the rows, each daemon is started again
 * for it (ours with `--tag bench --cache-size 256M`, a 256 MiB window: 128 ranges of 2 MiB) and the
 * front end connects playing QEMU 11.1's cache window. On ours: SETUPMAPPING of the 256 MiB file
 * `dax`, 2 MiB at a time, one at a time (maps/s); two passes reading the whole window by copying
 * it, 2 MiB at a time, into a buffer in guest memory (a guest's read(2) of a DAX file: a memcpy
 * out of the window), the first touching every page for the first time (page faults) and the
 * second warm; REMOVEMAPPING of every range. Then, on every daemon, FUSE_READ of the same
 * 256 MiB in 1 MiB requests from offset 0 up, at depth 1 and at the bench's depth; and the ratios
 * window / FUSE_READ of the same run. C and Rust virtiofsd offer no window ("no window"). Here the
 * window is the driver's own mapping of the file: a guest's first touch costs more (EPT faults).
 *
 * Then, per daemon: RSS after the run, and RSS before and after LOOKUP of 100,000 distinct files
 * (on /dev/shm) — bytes per live inode.
 *
 * Output: a Markdown table on stdout and in `bench-results/wire-<date>.md`, the raw per-round
 * results in `bench-results/wire-<date>.json`.
 *
 * Flags: `--rounds 5` `--seconds 1` (per measured phase) `--depth 64` `--daemons ours,c,rust`
 * (also `unconfined`: ours with `--sandbox none --seccomp none`, and an ours/unconfined column)
 * `--no-ceiling` `--rows lookup,getattr,...,dax` `--entries 10000` `--files 100000` `--file-mib 64`
 * `--dax-mib 256` (the DAX file and window: a power of two, 2 to 512)
 * `--dir DIR` (where the shared directory is made; default the temp dir) `--out DIR` `--verbose`
 * (print each back end's pid as it starts, to attach `perf record -p`)
 * `--baseline DIR` (DIR: another checkout of this project, e.g. a `git worktree` of an earlier
 * commit with its own `node_modules` or a symlink to ours: its daemon runs as one more back end,
 * "ours@COMMIT", started as "ours" is and in the same rounds, with an ours/base ratio column)
 * `--ci` (one round, tiny sizes, a few iterations, results to a temp dir: keeps it from rotting).
 *
 * Run it pinned to one CPU as `deno task bench` does (`taskset -c 0`): driver and daemon then
 * share that CPU, and depth 64 measures the CPU each request costs end to end.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { getrlimit, RLIMIT_NOFILE } from "../src/ffi/mod.ts";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type DaemonHandle, type DaemonKind, startDaemon } from "../spec/_driver/daemon.ts";
import { VhostUserFrontend } from "../src/driver/frontend.ts";
import { FuseClient, O_RDONLY, O_RDWR } from "../src/driver/fuse_client.ts";
import { FUSE_MAP_ALIGNMENT } from "../src/wire/fuse.ts";
import {
  type DaxWindowRun,
  fillDaxChunk,
  type Handles,
  type LatencyRun,
  LeanQueue,
  MANY_LOOKUPS,
  type Row,
  ROWS,
  runDaxWindow,
  runLatency,
  runReadSweep,
  runThroughput,
  type SweepRun,
  type ThroughputRun,
} from "./bench_driver.ts";

export type { DaemonKind, DaxWindowRun, LatencyRun, Row, SweepRun, ThroughputRun };

/** The `--rows` id of the DAX row (not one of `ROWS`: it runs on daemons of its own). */
const DAX_ROW = "dax";
/** The READ size of the DAX row's FUSE_READ sweeps. */
const DAX_READ_CHUNK = 1 << 20;

/**
 * A back end of the benchmark: the three daemons, ours without its sandbox and seccomp filter
 * ("unconfined": `--sandbox none --seccomp none`; "ours" is as it starts by default, confined
 * when root), our daemon from the `--baseline` checkout ("base"), and the canned ceiling.
 */
export type Backend = DaemonKind | "unconfined" | "base" | "ceiling";

/** What the "unconfined" back end adds to ours' command line. */
export const UNCONFINED_ARGS: readonly string[] = ["--sandbox", "none", "--seccomp", "none"];

/** The back ends that are daemons (everything but the ceiling). */
export type Daemon = Exclude<Backend, "ceiling">;

/** Column labels (the baseline's is set from its commit: `ours@abc1234`). */
const LABEL: Record<Backend, string> = {
  ceiling: "ceiling",
  ours: "ours",
  unconfined: "ours unconfined",
  base: "ours@base",
  c: "C 7.2",
  rust: "Rust 1.13",
};

const CANNED = fileURLToPath(new URL("./canned_backend.ts", import.meta.url));
const GUEST_MEMORY = 256 << 20;
const TICKS_PER_SECOND = 100;

/** The benchmark's settings. */
export interface Settings {
  /** Rounds (each back end started fresh once per round). */
  rounds: number;
  /** Seconds measured per phase (depth 1, depth N). */
  seconds: number;
  /** Unmeasured seconds before each phase. */
  warmSeconds: number;
  /** Depth-1 iterations at least, however long they take. */
  minLatencyIters: number;
  /** Requests (iterations) in flight in the throughput phase. */
  depth: number;
  /** Back ends, in round 0's order. */
  backends: Backend[];
  /** Rows, in order. */
  rows: Row[];
  /** Entries of the READDIRPLUS directory. */
  entries: number;
  /** Files looked up in the inode phase (0: no inode phase). */
  files: number;
  /** Size of the READ and WRITE files. */
  fileSize: number;
  /** The DAX row: the size of its file and window (0: no DAX row). */
  dax: number;
  /** Where the shared directory is made (default: the temp dir). */
  dir: string | undefined;
  /** Where results go (default bench-results/; a temp dir with --ci). */
  out: string | undefined;
  /** The one-iteration CI run. */
  ci: boolean;
  /** Print each back end's pid when it starts (to attach perf). */
  verbose: boolean;
  /** `--baseline`: the other checkout whose daemon runs as "base", and its column label. */
  baseline?: { dir: string; label: string };
}

/** One daemon's DAX row in one round. */
export interface DaxRun {
  /** Which daemon. */
  backend: Daemon;
  /** Round, from 0. */
  round: number;
  /** Whether it offered a cache window. */
  window: boolean;
  /** The window half (daemons with a window). */
  windowRun?: DaxWindowRun;
  /** FUSE_READ of the same bytes, 1 MiB requests, depth 1. */
  readD1: SweepRun;
  /** The same at the bench's depth. */
  readDn: SweepRun;
  /** Error replies and problems. */
  faults: string[];
  /** How long the daemon took to go idle after the connection (our JIT warm-up), ms. */
  idleWaitMs: number;
  /** /proc/loadavg when it ended. */
  loadavg: string;
}

/** One back end's results for one row in one round. */
export interface RowResult {
  /** Depth 1. */
  latency: LatencyRun;
  /** Depth N. */
  throughput: ThroughputRun;
  /** Daemon CPU (utime+stime of its process tree) per request at depth N, µs. */
  cpuUsPerReq: number;
  /** Daemon CPU per iteration at depth 1, µs. */
  cpuUsPerIterD1: number;
  /** Error replies by errno, wrong uniques, and row-specific problems. */
  faults: string[];
}

/** Memory of a process tree, bytes. */
export interface Rss {
  /** VmRSS. */
  vmRss: number;
  /** RssAnon. */
  rssAnon: number;
  /** RssFile. */
  rssFile: number;
  /** RssShmem (guest memory pages the daemon touched). */
  rssShmem: number;
}

/** One back end's run in one round. */
export interface BackendRun {
  /** Which back end. */
  backend: Backend;
  /** Round, from 0. */
  round: number;
  /** Position in the round's order. */
  position: number;
  /** By row id. */
  rows: Record<string, RowResult>;
  /** After every row. */
  rss: Rss;
  /** What INIT granted (max_write, flags). */
  init: { maxWrite: number; maxPages: number; flags: string };
  /** /proc/loadavg when it ended (other work on the machine shows here). */
  loadavg: string;
}

/** The inode-count phase of one daemon. */
export interface InodeRun {
  /** Which daemon. */
  backend: Daemon;
  /** LOOKUPs sent (distinct files). */
  files: number;
  /** Lookups that succeeded: the live inodes the daemon holds. */
  live: number;
  /** After INIT. */
  before: Rss;
  /** After the LOOKUPs. */
  after: Rss;
  /** ΔRssAnon / live. */
  anonBytesPerInode: number;
  /** ΔVmRSS / live. */
  rssBytesPerInode: number;
  /** LOOKUPs answered per second (64 in flight). */
  lookupsPerS: number;
  /** Open descriptors of the daemon's process tree before and after. */
  fds: [number, number];
  /** Error replies. */
  faults: string[];
}

/** Open descriptors of a process tree. */
function fdCount(pid: number): number {
  let n = 0;
  try {
    for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  } catch { /* gone */ }
  for (const c of children(pid)) n += fdCount(c);
  return n;
}

function rssOf(pid: number): Rss {
  const out: Rss = { vmRss: 0, rssAnon: 0, rssFile: 0, rssShmem: 0 };
  const visit = (p: number): void => {
    try {
      const status = Deno.readTextFileSync(`/proc/${p}/status`);
      const kb = (key: string): number =>
        Number(status.match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"))?.[1] ?? 0) * 1024;
      out.vmRss += kb("VmRSS");
      out.rssAnon += kb("RssAnon");
      out.rssFile += kb("RssFile");
      out.rssShmem += kb("RssShmem");
      for (const child of children(p)) visit(child);
    } catch { /* gone */ }
  };
  visit(pid);
  return out;
}

function children(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
      const text = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/children`).trim();
      for (const c of text.split(" ")) if (c !== "") out.push(Number(c));
    }
  } catch { /* gone */ }
  return out;
}

/** utime + stime of `pid` and all its descendants, in clock ticks. */
function cpuTicks(pid: number): number {
  let ticks = 0;
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    ticks = Number(fields[11]) + Number(fields[12]);
    for (const c of children(pid)) ticks += cpuTicks(c);
  } catch { /* gone */ }
  return ticks;
}

function sh(script: string, args: string[] = []): void {
  const out = new Deno.Command("/bin/sh", { args: ["-c", script, "sh", ...args] }).outputSync();
  if (!out.success) {
    throw new Error(`${script} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Creates `n` empty files `prefix000000`... in `dir` (perl: fast). */
function makeFiles(dir: string, n: number, format: string): void {
  sh(
    `perl -e 'my ($d, $n, $f) = @ARGV; for my $i (0 .. $n - 1) { ` +
      `open(my $h, ">", sprintf("%s/$f", $d, $i)) or die "$!"; close $h }' "$@"`,
    [dir, String(n), format],
  );
}

/** The shared directory: warm, data, wfile, cru/, dir/ (with `entries` files). */
function prepareShare(s: Settings): string {
  const root = Deno.makeTempDirSync({ prefix: "vfsd-bench-", ...(s.dir ? { dir: s.dir } : {}) });
  Deno.writeFileSync(join(root, "warm"), new Uint8Array(4096).fill(0x61));
  const chunk = new Uint8Array(1 << 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 2654435761) >>> 24;
  for (const name of ["data", "wfile"]) {
    const f = Deno.openSync(join(root, name), { write: true, create: true, truncate: true });
    for (let at = 0; at < s.fileSize; at += chunk.length) {
      f.writeSync(chunk.subarray(0, Math.min(chunk.length, s.fileSize - at)));
    }
    f.close();
  }
  Deno.mkdirSync(join(root, "cru"));
  Deno.mkdirSync(join(root, "dir"));
  makeFiles(join(root, "dir"), s.entries, "entry-%05d");
  const cached = [join(root, "data"), join(root, "wfile")];
  if (s.dax > 0) {
    // The DAX row's file: each page stamped with its number (see fillDaxChunk).
    const f = Deno.openSync(join(root, "dax"), { write: true, create: true, truncate: true });
    for (let at = 0; at < s.dax; at += chunk.length) {
      const part = chunk.subarray(0, Math.min(chunk.length, s.dax - at));
      fillDaxChunk(part, at);
      f.writeSync(part);
    }
    f.close();
    cached.push(join(root, "dax"));
  }
  sh('sync; cat "$@" >/dev/null', cached);
  return root;
}

function start(
  kind: Backend,
  sharedDir: string,
  s: Settings,
  oursExtra: string[] = [],
): Promise<DaemonHandle> {
  if (kind === "ceiling") {
    return startDaemon("ours", {
      sharedDir,
      args: (sock) => [
        Deno.execPath(),
        "run",
        "-A",
        CANNED,
        "--socket-path",
        sock,
        "--entries",
        String(s.entries),
      ],
    });
  }
  const ours = ["--cache", "auto", "--request-queues", "1", "--log-level", "warn", ...oursExtra];
  if (kind === "base") {
    // Started exactly as "ours", from the baseline checkout's mod.ts.
    if (s.baseline === undefined) throw new Error("no --baseline checkout");
    return startDaemon("ours", { sharedDir, extraArgs: ours, root: s.baseline.dir });
  }
  if (kind === "unconfined") {
    return startDaemon("ours", { sharedDir, extraArgs: [...ours, ...UNCONFINED_ARGS] });
  }
  const extra: Record<DaemonKind, string[]> = { ours, c: [], rust: [] };
  return startDaemon(kind, { sharedDir, extraArgs: extra[kind] });
}

async function connect(d: DaemonHandle, cacheWindow = false) {
  const fe = await VhostUserFrontend.connect(d.socketPath, {
    queueSize: 1024,
    regions: [{ guestPhysAddr: 0x10_0000, size: GUEST_MEMORY }],
    timeoutMs: 30000,
    cacheWindow,
  });
  const client = new FuseClient(fe);
  const ops = client;
  // With a window, INIT asks for map_alignment as Linux mounting with DAX does.
  const init = cacheWindow && fe.hasWindow ? ops.init({ flags: FUSE_MAP_ALIGNMENT }) : ops.init();
  return { fe, client, ops, init };
}

function faultList(q: LeanQueue, extra: string[]): string[] {
  const out = [...q.faults.errors].map(([e, n]) => `${e} ×${n}`);
  if (q.faults.badUnique > 0) out.push(`wrong unique ×${q.faults.badUnique}`);
  q.faults.errors.clear();
  q.faults.badUnique = 0;
  return [...out, ...extra];
}

async function runBackend(
  kind: Backend,
  round: number,
  position: number,
  share: string,
  s: Settings,
): Promise<BackendRun> {
  const d = await start(kind, share, s);
  if (s.verbose) console.error(`  ${LABEL[kind]} started: pid ${d.pid}`);
  try {
    const { fe, client, ops, init } = await connect(d);
    const look = (parent: bigint, name: string): bigint => ops.lookup(parent, name).nodeid;
    const data = look(1n, "data");
    const wfile = look(1n, "wfile");
    const h: Handles = {
      warm: look(1n, "warm"),
      data,
      dataFh: ops.open(data, O_RDONLY).fh,
      wfile,
      wfileFh: ops.open(wfile, O_RDWR).fh,
      fileSize: s.fileSize,
      cru: look(1n, "cru"),
      dir: look(1n, "dir"),
      dirEntries: s.entries,
    };
    const q = new LeanQueue(fe, client.queue);
    const hi = new LeanQueue(fe, 0);
    const rows: Record<string, RowResult> = {};
    for (const row of s.rows) {
      const run = row.build(q, hi, h, s.depth);
      let l0 = 0, l1 = 0;
      const latency = runLatency(q, run, s.seconds, s.minLatencyIters, s.warmSeconds, (begin) => {
        if (begin) l0 = cpuTicks(d.pid);
        else l1 = cpuTicks(d.pid);
      });
      let c0 = 0, c1 = 0;
      const throughput = runThroughput(q, run, s.depth, s.seconds, s.warmSeconds, {
        onWindow: (begin) => {
          if (begin) c0 = cpuTicks(d.pid);
          else c1 = cpuTicks(d.pid);
        },
      });
      const problems = run.problems();
      rows[row.id] = {
        latency,
        throughput,
        cpuUsPerReq: (c1 - c0) / TICKS_PER_SECOND * 1e6 / Math.max(1, throughput.requests),
        cpuUsPerIterD1: (l1 - l0) / TICKS_PER_SECOND * 1e6 / Math.max(1, latency.n),
        faults: faultList(q, [...faultList(hi, []), ...problems]),
      };
      q.freeAll();
      hi.freeAll();
    }
    const rss = rssOf(d.pid);
    q.close();
    hi.close();
    fe.close();
    return {
      backend: kind,
      round,
      position,
      rows,
      rss,
      init: {
        maxWrite: init.maxWrite,
        maxPages: init.maxPages,
        flags: `0x${init.flags.toString(16)}`,
      },
      loadavg: loadavg(),
    };
  } finally {
    // (Rust virtiofsd exits 1 when its front end goes away; how a daemon ends is not measured.)
    await d.stop();
  }
}

async function runInodes(kind: Daemon, share: string, s: Settings): Promise<InodeRun> {
  const d = await start(kind, share, s);
  try {
    const { fe, client } = await connect(d);
    const h: Handles = {
      warm: 0n,
      data: 0n,
      dataFh: 0n,
      wfile: 0n,
      wfileFh: 0n,
      fileSize: 0,
      cru: 0n,
      dir: 0n,
      dirEntries: 0,
      many: 1n,
    };
    const q = new LeanQueue(fe, client.queue);
    const hi = new LeanQueue(fe, 0);
    const run = MANY_LOOKUPS.build(q, hi, h, s.depth);
    const before = rssOf(d.pid);
    const fds0 = fdCount(d.pid);
    const tp = runThroughput(q, run, s.depth, 3600, 0, { maxIters: s.files });
    const after = rssOf(d.pid);
    const fds1 = fdCount(d.pid);
    // Lookups that failed (EMFILE/ENFILE under a low descriptor limit) hold no inode.
    let failed = 0;
    for (const n of q.faults.errors.values()) failed += n;
    const live = s.files - failed;
    const faults = faultList(q, run.problems());
    q.close();
    hi.close();
    fe.close();
    return {
      backend: kind,
      files: s.files,
      before,
      after,
      live,
      anonBytesPerInode: (after.rssAnon - before.rssAnon) / Math.max(1, live),
      rssBytesPerInode: (after.vmRss - before.vmRss) / Math.max(1, live),
      lookupsPerS: tp.reqPerS,
      fds: [fds0, fds1],
      faults,
    };
  } finally {
    await d.stop();
  }
}

/**
 * The DAX row on daemon `kind`, started for it (ours with a window of `s.dax` bytes): the window
 * half when it offers a window, then FUSE_READ of the same file at depth 1 and `s.depth`.
 */
async function runDax(kind: Daemon, round: number, share: string, s: Settings): Promise<DaxRun> {
  const mib = s.dax / (1 << 20);
  const d = await start(kind, share, s, ["--tag", "bench", "--cache-size", `${mib}M`]);
  if (s.verbose) console.error(`  ${LABEL[kind]} (DAX) started: pid ${d.pid}`);
  try {
    const { fe, client, ops } = await connect(d, true);
    const nodeid = ops.lookup(1n, "dax").nodeid;
    const fh = ops.open(nodeid, O_RDONLY).fh;
    // Our daemon warms its JIT up whenever it is idle (src/daemon/warmup.ts): the window passes
    // leave it idle, and on the one CPU of `deno task bench` its warm-up would take CPU from the
    // copies. Let it finish first.
    // (Not with --ci: its numbers mean nothing, and the wait would double its time.)
    const idleWaitMs = s.ci ? 0 : await untilIdle(d.pid);
    const q = new LeanQueue(fe, client.queue);
    let windowRun: DaxWindowRun | undefined;
    if (fe.hasWindow) {
      if (fe.window.size < s.dax) {
        throw new Error(`${LABEL[kind]} offered a ${fe.window.size}-byte window, not ${s.dax}`);
      }
      windowRun = runDaxWindow(q, fe, nodeid, s.dax);
    }
    const windowFaults = faultList(q, windowRun?.problems ?? []);
    const readD1 = runReadSweep(q, nodeid, fh, s.dax, DAX_READ_CHUNK, 1, 0);
    const readDn = runReadSweep(q, nodeid, fh, s.dax, DAX_READ_CHUNK, s.depth, 0);
    const faults = [...windowFaults, ...faultList(q, [...readD1.problems, ...readDn.problems])];
    q.close();
    fe.close();
    return {
      backend: kind,
      round,
      window: windowRun !== undefined,
      ...(windowRun ? { windowRun } : {}),
      readD1,
      readDn,
      faults,
      idleWaitMs,
      loadavg: loadavg(),
    };
  } finally {
    await d.stop();
  }
}

/**
 * Waits until the process tree of `pid` used no CPU over 200 ms (at most 20 s); returns how long
 * that took, ms.
 */
async function untilIdle(pid: number): Promise<number> {
  const t0 = performance.now();
  let last = cpuTicks(pid);
  while (performance.now() - t0 < 20_000) {
    await new Promise((r) => setTimeout(r, 200));
    const now = cpuTicks(pid);
    if (now === last) break;
    last = now;
  }
  return performance.now() - t0;
}

// ---- report ------------------------------------------------------------------------------------

function median(xs: readonly number[]): number {
  const a = [...xs].sort((x, y) => x - y);
  const n = a.length;
  if (n === 0) return NaN;
  return n % 2 === 1 ? a[(n - 1) / 2] ?? NaN : ((a[n / 2 - 1] ?? 0) + (a[n / 2] ?? 0)) / 2;
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return "–";
  const a = Math.abs(x);
  if (a >= 100_000) return `${(x / 1000).toFixed(0)}k`;
  if (a >= 10_000) return `${(x / 1000).toFixed(1)}k`;
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

interface Metric {
  key: string;
  label: string;
  get: (r: RowResult) => number;
  /** Higher is better. */
  higher: boolean;
}

const METRICS: readonly Metric[] = [
  { key: "p50", label: "d1 median µs", get: (r) => r.latency.p50, higher: false },
  { key: "p99", label: "d1 p99 µs", get: (r) => r.latency.p99, higher: false },
  { key: "req", label: "d64 req/s", get: (r) => r.throughput.reqPerS, higher: true },
  { key: "mib", label: "d64 MiB/s", get: (r) => r.throughput.mibPerS, higher: true },
];

/** Targets of issue 7 for one row and metric, as [min ours/C, min ours/Rust] in "speed" terms. */
function target(row: Row, m: Metric): { c: number; rust: number } | undefined {
  if (m.key === "p99") return undefined;
  if (m.key === "mib" && !row.moves) return undefined;
  if (row.kind === "fixed") {
    if (m.key === "p50") return { c: 1 / 1.1, rust: 0 };
    if (m.key === "req") return { c: 1.2, rust: 1.0 };
    return undefined;
  }
  return { c: 0.95, rust: 0.95 };
}

/** The report's parts. */
export interface Report {
  /** The main Markdown table. */
  table: string;
  /** The memory table. */
  memory: string;
  /** The daemon CPU table. */
  cpu: string;
  /** "row metric" of every missed target. */
  misses: string[];
  /** "row metric" where a daemon is within 70 % of the ceiling. */
  driverBound: string[];
  /** Error replies and problems, one line per run and row. */
  faults: string[];
  /** Medians and ratios by `row.metric`. */
  summary: Record<string, unknown>;
  /** The DAX row's table ("" without it). */
  dax: string;
}

/** The DAX row's table: one line per measure, one column per daemon; medians over rounds. */
function daxTable(
  dax: readonly DaxRun[],
  s: Settings,
  summary: Record<string, unknown>,
  faults: string[],
): string {
  if (dax.length === 0) return "";
  const daemons = s.backends.filter((b): b is Daemon =>
    b !== "ceiling" && dax.some((r) => r.backend === b)
  );
  const MiB = 1 << 20;
  const mibs = (bytes: number, seconds: number) => bytes / MiB / seconds;
  const w = (r: DaxRun) => r.windowRun;
  type Measure = {
    key: string;
    label: string;
    window: boolean;
    get: (r: DaxRun) => number | undefined;
    ratio?: boolean;
  };
  const readDn = (r: DaxRun) => mibs(r.readDn.bytes, r.readDn.seconds);
  const readD1 = (r: DaxRun) => mibs(r.readD1.bytes, r.readD1.seconds);
  const cold = (r: DaxRun) => {
    const x = w(r);
    return x && mibs(x.bytes, x.coldSeconds);
  };
  const warm = (r: DaxRun) => {
    const x = w(r);
    return x && mibs(x.bytes, x.warmSeconds);
  };
  const withMaps = (r: DaxRun) => {
    const x = w(r);
    return x && mibs(x.bytes, x.setupSeconds + x.coldSeconds);
  };
  const measures: Measure[] = [
    {
      key: "maps",
      label: "SETUPMAPPING of 2 MiB, one at a time (maps/s)",
      window: true,
      get: (r) => {
        const x = w(r);
        return x && x.ranges / x.setupSeconds;
      },
    },
    {
      key: "cold",
      label: "window read, cold: first touch after the maps (MiB/s)",
      window: true,
      get: cold,
    },
    { key: "warm", label: "window read, warm: second pass (MiB/s)", window: true, get: warm },
    {
      key: "withMaps",
      label: "window read with its SETUPMAPPINGs: maps + cold pass (MiB/s)",
      window: true,
      get: withMaps,
    },
    {
      key: "unmap",
      label: "REMOVEMAPPING of every range (ms)",
      window: true,
      get: (r) => {
        const x = w(r);
        return x && x.removeSeconds * 1000;
      },
    },
    { key: "readD1", label: "FUSE_READ 1 MiB, d1 (MiB/s)", window: false, get: readD1 },
    { key: "readDn", label: `FUSE_READ 1 MiB, d${s.depth} (MiB/s)`, window: false, get: readDn },
    {
      key: "warmOverRead",
      label: `window warm ÷ FUSE_READ d${s.depth}`,
      window: true,
      ratio: true,
      get: (r) => {
        const x = warm(r);
        return x === undefined ? undefined : x / readDn(r);
      },
    },
    {
      key: "coldOverRead",
      label: `window cold ÷ FUSE_READ d${s.depth}`,
      window: true,
      ratio: true,
      get: (r) => {
        const x = cold(r);
        return x === undefined ? undefined : x / readDn(r);
      },
    },
    {
      key: "withMapsOverRead",
      label: `window with its maps ÷ FUSE_READ d${s.depth}`,
      window: true,
      ratio: true,
      get: (r) => {
        const x = withMaps(r);
        return x === undefined ? undefined : x / readDn(r);
      },
    },
  ];
  const head = [`DAX: a ${s.dax / MiB} MiB file`, ...daemons.map((b) => LABEL[b])];
  const lines = [`| ${head.join(" | ")} |`, `|---|${daemons.map(() => "--:").join("|")}|`];
  for (const m of measures) {
    const cells = [m.label];
    const med: Partial<Record<Daemon, number>> = {};
    for (const b of daemons) {
      const rs = dax.filter((r) => r.backend === b);
      if (m.window && !rs.some((r) => r.window)) {
        cells.push("no window");
        continue;
      }
      const xs = rs.map((r) => m.get(r)).filter((x): x is number => Number.isFinite(x));
      med[b] = median(xs);
      const show = (x: number) => m.ratio ? `${x.toFixed(2)}×` : fmt(x);
      cells.push(
        xs.length > 1
          ? `${show(median(xs))} (${show(Math.min(...xs))}–${show(Math.max(...xs))})`
          : xs.length === 1
          ? show(median(xs))
          : "–",
      );
    }
    lines.push(`| ${cells.join(" | ")} |`);
    summary[`dax.${m.key}`] = { median: med };
  }
  for (const r of dax) {
    if (r.faults.length > 0) {
      faults.push(`${LABEL[r.backend]} round ${r.round} dax: ${r.faults.join(", ")}`);
    }
  }
  return lines.join("\n");
}

/** Table and verdicts from the runs. */
export function report(
  runs: readonly BackendRun[],
  inodes: readonly InodeRun[],
  s: Settings,
  dax: readonly DaxRun[] = [],
): Report {
  const backends = s.backends;
  const rounds = [...new Set(runs.map((r) => r.round))].sort((a, b) => a - b);
  const val = (b: Backend, row: Row, m: Metric, round: number): number => {
    const r = runs.find((x) => x.backend === b && x.round === round)?.rows[row.id];
    return r === undefined ? NaN : m.get(r);
  };
  const lines: string[] = [];
  const misses: string[] = [];
  const driverBound: string[] = [];
  const has = (b: Backend) => backends.includes(b);
  const head = ["row", "metric", ...backends.map((b) => LABEL[b])];
  if (has("ours") && has("c")) head.push("ours/C");
  if (has("ours") && has("rust")) head.push("ours/Rust");
  if (has("ours") && has("base")) head.push("ours/base");
  if (has("ours") && has("unconfined")) head.push("ours/unconfined");
  head.push("target", "");
  lines.push(`| ${head.join(" | ")} |`);
  lines.push(`|${head.map((_, i) => i < 2 ? "---" : "--:").join("|")}|`);
  const summary: Record<string, unknown> = {};
  for (const row of s.rows) {
    for (const m of METRICS) {
      if (m.key === "mib" && !row.moves) continue;
      const cells: string[] = [
        row.label + (row.unit === "request" ? "" : ` (per ${row.unit})`),
        m.label,
      ];
      const med: Partial<Record<Backend, number>> = {};
      for (const b of backends) {
        const xs = rounds.map((r) => val(b, row, m, r)).filter(Number.isFinite);
        med[b] = median(xs);
        const lo = Math.min(...xs), hi = Math.max(...xs);
        cells.push(xs.length > 1 ? `${fmt(median(xs))} (${fmt(lo)}–${fmt(hi)})` : fmt(median(xs)));
      }
      // Ratios ours/X per round, then the median: rounds pair the daemons under the same drift.
      const ratio = (x: Backend): number =>
        median(
          rounds.map((r) => val("ours", row, m, r) / val(x, row, m, r)).filter(Number.isFinite),
        );
      const rc = has("ours") && has("c") ? ratio("c") : NaN;
      const rr = has("ours") && has("rust") ? ratio("rust") : NaN;
      const rb = has("ours") && has("base") ? ratio("base") : NaN;
      const rs = has("ours") && has("unconfined") ? ratio("unconfined") : NaN;
      if (has("ours") && has("c")) cells.push(`${rc.toFixed(2)}×`);
      if (has("ours") && has("rust")) cells.push(`${rr.toFixed(2)}×`);
      if (has("ours") && has("base")) cells.push(`${rb.toFixed(2)}×`);
      if (has("ours") && has("unconfined")) cells.push(`${rs.toFixed(2)}×`);
      const t = target(row, m);
      const verdict: string[] = [];
      let tText = "";
      if (t !== undefined) {
        // In "speed" terms: for latency a ratio ours/C of 1.1 is a speed of 1/1.1.
        const speed = (x: number) => m.higher ? x : 1 / x;
        const parts: string[] = [];
        if (t.c > 0) {
          parts.push(m.higher ? `≥ ${t.c.toFixed(2)}× C` : `≤ ${(1 / t.c).toFixed(2)}× C`);
        }
        if (t.rust > 0) {
          parts.push(
            m.higher ? `≥ ${t.rust.toFixed(2)}× Rust` : `≤ ${(1 / t.rust).toFixed(2)}× Rust`,
          );
        }
        tText = parts.join(", ");
        const missC = t.c > 0 && Number.isFinite(rc) && speed(rc) < t.c - 1e-9;
        const missR = t.rust > 0 && Number.isFinite(rr) && speed(rr) < t.rust - 1e-9;
        if (Number.isFinite(rc) || Number.isFinite(rr)) {
          verdict.push(missC || missR ? "**miss**" : "ok");
        }
        if (missC || missR) misses.push(`${row.label} ${m.label}`);
      }
      // Driver-bound: a daemon reaches 70 % of the ceiling (speed terms).
      if (has("ceiling") && (m.key === "p50" || m.key === "req")) {
        const ceil = med.ceiling ?? NaN;
        const bound = backends.filter((b) => {
          if (b === "ceiling") return false;
          const x = med[b] ?? NaN;
          const frac = m.higher ? x / ceil : ceil / x;
          return Number.isFinite(frac) && frac >= 0.7;
        });
        if (bound.length > 0) {
          verdict.push(`driver-bound (${bound.map((b) => LABEL[b]).join(", ")})`);
          driverBound.push(`${row.label} ${m.label}`);
        }
      }
      cells.push(tText, verdict.join(" "));
      lines.push(`| ${cells.join(" | ")} |`);
      summary[`${row.id}.${m.key}`] = {
        median: med,
        oursOverC: rc,
        oursOverRust: rr,
        ...(has("base") ? { oursOverBase: rb } : {}),
      };
    }
  }
  const faults: string[] = [];
  for (const r of runs) {
    for (const [id, rr] of Object.entries(r.rows)) {
      if (rr.faults.length > 0) {
        faults.push(`${LABEL[r.backend]} round ${r.round} ${id}: ${rr.faults.join(", ")}`);
      }
    }
  }
  // Memory.
  const mem: string[] = [];
  const daemons = backends.filter((b): b is Daemon => b !== "ceiling");
  if (daemons.length > 0) {
    const mib = (x: number) => Number.isFinite(x) ? (x / (1 << 20)).toFixed(1) : "–";
    mem.push(
      "| daemon | RSS after the run (MiB) | of which anon | RSS before / after " +
        `${
          s.files.toLocaleString("en")
        } LOOKUPs (MiB) | live inodes | anon bytes per live inode | RSS bytes per live inode | open fds after | cold LOOKUP/s (all held) |`,
    );
    mem.push("|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for (const b of daemons) {
      const after = runs.filter((r) => r.backend === b).map((r) => r.rss);
      const i = inodes.find((x) => x.backend === b);
      mem.push(
        `| ${LABEL[b]} | ${mib(median(after.map((x) => x.vmRss)))} | ${
          mib(median(after.map((x) => x.rssAnon)))
        } | ${i ? `${mib(i.before.vmRss)} / ${mib(i.after.vmRss)}` : "–"} | ${
          i ? i.live.toLocaleString("en") : "–"
        } | ${i ? fmt(i.anonBytesPerInode) : "–"} | ${i ? fmt(i.rssBytesPerInode) : "–"} | ${
          i ? String(i.fds[1]) : "–"
        } | ${i && i.live === i.files ? fmt(i.lookupsPerS) : "–"} |`,
      );
    }
  }
  // Daemon CPU per iteration at depth 1 and per request at depth N.
  const cpu: string[] = [];
  if (daemons.length > 0 && s.rows.length > 0) {
    const cell = (b: Backend, row: Row, get: (r: RowResult) => number): string =>
      fmt(median(
        runs.filter((r) => r.backend === b).map((r) => {
          const x = r.rows[row.id];
          return x === undefined ? NaN : get(x);
        }),
      ));
    cpu.push(`| row | ${backends.map((b) => `${LABEL[b]} d1 / d${s.depth}`).join(" | ")} |`);
    cpu.push(`|---|${backends.map(() => "--:").join("|")}|`);
    for (const row of s.rows) {
      cpu.push(
        `| ${row.label} | ${
          backends.map((b) =>
            `${cell(b, row, (r) => r.cpuUsPerIterD1)} / ${cell(b, row, (r) => r.cpuUsPerReq)}`
          ).join(" | ")
        } |`,
      );
    }
  }
  const daxText = daxTable(dax, s, summary, faults);
  return {
    // (`--rows dax` alone: no row table.)
    table: s.rows.length > 0 ? lines.join("\n") : "",
    memory: mem.join("\n"),
    cpu: cpu.join("\n"),
    misses,
    driverBound,
    faults,
    summary,
    dax: daxText,
  };
}

function machine(): Record<string, string> {
  const cpuinfo = Deno.readTextFileSync("/proc/cpuinfo");
  const model = cpuinfo.match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
  const mhz = cpuinfo.match(/cpu MHz\s*:\s*(.*)/)?.[1] ?? "?";
  const mem = Deno.readTextFileSync("/proc/meminfo").match(/MemTotal:\s*(\d+)/)?.[1] ?? "0";
  const allowed = Deno.readTextFileSync("/proc/self/status").match(/Cpus_allowed_list:\s*(\S+)/)
    ?.[1];
  const uname = new TextDecoder().decode(
    new Deno.Command("uname", { args: ["-srm"] }).outputSync().stdout,
  ).trim();
  return {
    cpu: `${model} @ ${Number(mhz).toFixed(0)} MHz, ${
      (cpuinfo.match(/^processor\s*:/gm) ?? []).length
    } CPUs`,
    memory: `${(Number(mem) / (1 << 20)).toFixed(1)} GiB`,
    kernel: uname,
    deno: `${Deno.version.deno} (V8 ${Deno.version.v8})`,
    pinnedTo: allowed ?? "?",
  };
}

const PING_PONG_C = `#include <sys/eventfd.h>
#include <sys/epoll.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
int main(void) {
  int a = eventfd(0, EFD_NONBLOCK), b = eventfd(0, EFD_NONBLOCK), n = 100000;
  uint64_t one = 1;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLET}, out;
  if (fork() == 0) {
    int ep = epoll_create1(0);
    epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev);
    for (int i = 0; i < n; i++) { epoll_wait(ep, &out, 1, -1); if (write(b, &one, 8) != 8) return 1; }
    _exit(0);
  }
  int ep = epoll_create1(0);
  epoll_ctl(ep, EPOLL_CTL_ADD, b, &ev);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < n; i++) { if (write(a, &one, 8) != 8) return 1; epoll_wait(ep, &out, 1, -1); }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  wait(NULL);
  printf("%.3f\\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n / 1000.0);
  return 0;
}
`;

/**
 * The kernel's floor under every depth-1 row: two processes waking each other through eventfds
 * (as a driver and a back end do), in C, on the CPUs this process may use. Compiled once; each
 * call runs it and returns µs per round trip (NaN when there is no C compiler).
 */
class PingPong {
  readonly #dir = Deno.makeTempDirSync({ prefix: "vfsd-bench-floor-" });
  readonly #ok: boolean;
  constructor() {
    try {
      Deno.writeTextFileSync(join(this.#dir, "pp.c"), PING_PONG_C);
      this.#ok = new Deno.Command("cc", {
        args: ["-O2", "-o", join(this.#dir, "pp"), join(this.#dir, "pp.c")],
        stderr: "null",
      }).outputSync().success;
    } catch {
      this.#ok = false;
    }
  }
  run(): number {
    if (!this.#ok) return NaN;
    const out = new Deno.Command(join(this.#dir, "pp")).outputSync();
    return out.success ? Number(new TextDecoder().decode(out.stdout)) : NaN;
  }
  close(): void {
    Deno.removeSync(this.#dir, { recursive: true });
  }
}

function ceilingGetattr(runs: readonly BackendRun[]): number {
  return median(
    runs.filter((r) => r.backend === "ceiling").map((r) => r.rows.getattr?.latency.p50 ?? NaN)
      .filter(Number.isFinite),
  );
}

function nofile(): string {
  const { cur, max } = getrlimit(RLIMIT_NOFILE);
  return `${cur} soft, ${max} hard`;
}

function loadavg(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

function fsType(path: string): string {
  const out = new Deno.Command("findmnt", { args: ["-no", "FSTYPE", "-T", path] }).outputSync();
  return new TextDecoder().decode(out.stdout).trim() || "?";
}

function parse(args: string[]): Settings {
  const { values } = parseArgs({
    args,
    options: {
      rounds: { type: "string", default: "5" },
      seconds: { type: "string", default: "1" },
      depth: { type: "string", default: "64" },
      daemons: { type: "string", default: "ours,c,rust" },
      "no-ceiling": { type: "boolean", default: false },
      rows: { type: "string" },
      entries: { type: "string", default: "10000" },
      files: { type: "string", default: "100000" },
      "file-mib": { type: "string", default: "64" },
      "dax-mib": { type: "string", default: "256" },
      dir: { type: "string" },
      out: { type: "string" },
      ci: { type: "boolean", default: false },
      verbose: { type: "boolean", default: false },
      baseline: { type: "string" },
    },
  });
  const ci = values.ci ?? false;
  const baseline = values.baseline === undefined ? undefined : baselineOf(values.baseline);
  const daemons = (values.daemons ?? "").split(",").filter(Boolean);
  for (const d of daemons) {
    if (!["ours", "unconfined", "c", "rust"].includes(d)) {
      throw new Error(`--daemons: unknown daemon ${d} (ours, unconfined, c, rust)`);
    }
  }
  const backends: Backend[] = [
    ...(values["no-ceiling"] ? [] : ["ceiling" as const]),
    ...(daemons as (DaemonKind | "unconfined")[]),
  ];
  // The baseline's column goes beside ours.
  if (baseline !== undefined) {
    backends.splice(backends.indexOf("ours") + 1 || backends.length, 0, "base");
  }
  const rowIds = values.rows?.split(",").filter(Boolean);
  const rows = rowIds === undefined
    ? [...ROWS]
    : rowIds.filter((id) => id !== DAX_ROW).map((id) => {
      const r = ROWS.find((x) => x.id === id);
      if (r === undefined) {
        throw new Error(
          `--rows: unknown row ${id} (known: ${[...ROWS.map((x) => x.id), DAX_ROW].join(", ")})`,
        );
      }
      return r;
    });
  const withDax = rowIds === undefined || rowIds.includes(DAX_ROW);
  const num = (name: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name}: ${v} is not a number ≥ ${min}`);
    return n;
  };
  const daxMib = num("dax-mib", values["dax-mib"], 2);
  if (!(daxMib <= 512 && Number.isInteger(Math.log2(daxMib)))) {
    throw new Error(`--dax-mib: ${daxMib} is not a power of two from 2 to 512 (a cache window)`);
  }
  if (ci) {
    return {
      rounds: 1,
      seconds: 0.02,
      warmSeconds: 0,
      minLatencyIters: 1,
      depth: 64,
      backends,
      rows,
      entries: 100,
      files: 1000,
      fileSize: 2 << 20,
      // 8 MiB: four ranges, enough to map, read, unmap and FUSE_READ at depth 64.
      dax: withDax ? 8 << 20 : 0,
      dir: values.dir,
      out: values.out,
      ci,
      verbose: values.verbose ?? false,
      baseline,
    };
  }
  const seconds = num("seconds", values.seconds, 0.001);
  return {
    rounds: num("rounds", values.rounds, 1),
    seconds,
    warmSeconds: Math.min(0.3, seconds / 4),
    minLatencyIters: 5,
    depth: num("depth", values.depth, 1),
    backends,
    rows,
    entries: num("entries", values.entries, 1),
    files: num("files", values.files, 0),
    fileSize: num("file-mib", values["file-mib"], 1) * (1 << 20),
    dax: withDax ? daxMib * (1 << 20) : 0,
    dir: values.dir,
    out: values.out,
    ci,
    verbose: values.verbose ?? false,
    baseline,
  };
}

/**
 * `--baseline DIR`: the checkout (absolute), and its column label from its commit
 * (`ours@abc1234`; `ours@DIRNAME` when DIR is not a git checkout). Sets the label.
 */
function baselineOf(dir: string): { dir: string; label: string } {
  let root: string;
  try {
    root = Deno.realPathSync(dir);
  } catch {
    throw new Error(`--baseline: ${dir} does not exist`);
  }
  if (!existsFile(join(root, "mod.ts"))) {
    throw new Error(`--baseline: ${root} is not a checkout of this project (no mod.ts)`);
  }
  let commit = "";
  try {
    const out = new Deno.Command("git", {
      args: ["-C", root, "rev-parse", "--short", "HEAD"],
      stderr: "null",
    }).outputSync();
    if (out.success) commit = new TextDecoder().decode(out.stdout).trim();
  } catch { /* no git */ }
  const label = `ours@${commit || root.slice(root.lastIndexOf("/") + 1)}`;
  LABEL.base = label;
  return { dir: root, label };
}

function existsFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** How and where a run was made (kept in the JSON, to render its Markdown again). */
export interface RunMeta {
  /** When it ended (ISO). */
  date: string;
  /** The command line. */
  command: string;
  /** CPU, memory, kernel, Deno, CPUs pinned to. */
  machine: Record<string, string>;
  /** File system of the shared directory. */
  shareFs: string;
  /** Duration. */
  minutes: number;
  /** /proc/loadavg before. */
  loadBefore: string;
  /** /proc/loadavg after. */
  loadAfter: string;
  /** RLIMIT_NOFILE. */
  nofile: string;
  /** The C eventfd ping-pong of each round, µs. */
  floors: number[];
}

/** The Markdown report of a run. */
export function renderMarkdown(
  runs: readonly BackendRun[],
  inodes: readonly InodeRun[],
  s: Settings,
  meta: RunMeta,
  rep: Report,
): string {
  const m = meta.machine;
  const floor = median(meta.floors.filter(Number.isFinite));
  return [
    `## Wire benchmark, ${meta.date.slice(0, 10)}`,
    "",
    `Machine: ${m.cpu}, ${m.memory}; ${m.kernel}; Deno ${m.deno}; pinned to CPU ${m.pinnedTo}; ` +
    `shared directory on ${meta.shareFs}.`,
    "",
    `Command: \`${meta.command}\` (${s.rounds} rounds, ${s.seconds} s per phase, depth ${s.depth}, ` +
    `${s.entries.toLocaleString("en")}-entry directory; ${meta.minutes.toFixed(1)} min; ` +
    `load average ${meta.loadBefore} before, ${meta.loadAfter} after).`,
    "",
    "Each cell: median over rounds (min–max). d1: one request in flight, latency of one iteration; " +
    `d${s.depth}: ${s.depth} in flight. Ratios: median over rounds of ours/C and ours/Rust ` +
    `${s.baseline ? "(and ours/base) " : ""}in the same round ` +
    "(for latency, lower is better). " +
    (s.baseline
      ? `${LABEL.base} is our daemon from the checkout \`${s.baseline.dir}\`, started as ours is ` +
        "and interleaved in the same rounds. "
      : "") +
    "Target: issue 7's (latency targets as ratios of latencies; " +
    "the 0.95× of the copy-bound rows applied to d1 latency too). The ceiling answers READ without " +
    "copying data and ignores WRITE data: its MiB/s is its request rate times the size.",
    "",
    rep.table,
    "",
    ...(rep.dax === "" ? [] : [
      `DAX at the wire: reading the ${s.dax / (1 << 20)} MiB file \`dax\` through the cache ` +
      "window against FUSE_READ of the same bytes, same daemon, same round (each daemon started " +
      `again for it; ours with \`--cache-size ${s.dax / (1 << 20)}M\`, the front end playing ` +
      "QEMU 11.1's window). SETUPMAPPING maps 2 MiB ranges one at a time (`fh` -1, FLAG_READ, " +
      "as Linux), each answered once the front end has mapped it. Window reads copy the whole " +
      "window, 2 MiB at a time, into one 2 MiB buffer in guest memory (a guest's read(2) of a DAX " +
      "file: one memcpy from the window into the user's buffer); cold is the first pass after the " +
      "maps (every page faulted into the driver's mapping), warm the second. FUSE_READ sweeps the " +
      `file from offset 0 in 1 MiB requests into the depth × 1 MiB request buffers (in a guest, ` +
      "its page cache, from which read(2) copies once more: not counted here). The window here is " +
      "the driver's own mapping of the file: in a guest, first touches cost EPT faults on top. " +
      "Each daemon is left to go idle after the connection (ours finishes its JIT warm-up, which " +
      "would share the CPU with the copies). Median over rounds (min–max).",
      "",
      rep.dax,
      "",
    ]),
    rep.driverBound.length > 0
      ? `- Driver-bound (a daemon within 70 % of the ceiling): ${rep.driverBound.join("; ")}.`
      : "- No row is driver-bound (every daemon stays under 70 % of the ceiling).",
    Number.isFinite(floor)
      ? `- Floor of every d1 row: two C processes waking each other through eventfds on this CPU ` +
        `take ${fmt(floor)} µs per round trip (median of one run per round; the ceiling's ` +
        `GETATTR: ${fmt(ceilingGetattr(runs))} µs): at d1 the ceiling is the kernel's wake-up ` +
        "path, not the driver."
      : "",
    rep.misses.length > 0
      ? `- Targets missed: ${rep.misses.join("; ")}.`
      : "- Every target is met.",
    rep.faults.length > 0 ? `- Faults: ${rep.faults.join("; ")}.` : "- No error replies.",
    "",
    "Memory (process tree; RSS includes the guest memory pages the daemon touched, RssShmem; " +
    "anon is RssAnon):",
    "",
    rep.memory,
    "",
    ...inodes.filter((i) => i.live < i.files).map((i) =>
      `- ${LABEL[i.backend]} held ${i.live.toLocaleString("en")} of ${
        i.files.toLocaleString("en")
      } inodes (one descriptor per inode; RLIMIT_NOFILE here: ${meta.nofile}): ${
        i.faults.join(", ")
      }.`
    ),
    "",
    `Daemon CPU (µs, utime+stime of the process tree) per iteration at depth 1 / per request at ` +
    `depth ${s.depth}:`,
    "",
    rep.cpu,
    "",
  ].join("\n");
}

/** `--render FILE.json`: the Markdown of a saved run, written beside it. */
function renderSaved(path: string): void {
  const j = JSON.parse(Deno.readTextFileSync(path));
  const rows = (j.settings.rows as string[]).map((id) => {
    const r = ROWS.find((x) => x.id === id);
    if (r === undefined) throw new Error(`${path}: unknown row ${id}`);
    return r;
  });
  const s: Settings = { dax: 0, ...j.settings, rows };
  if (s.baseline !== undefined) LABEL.base = s.baseline.label;
  const rep = report(j.runs, j.inodes, s, j.dax ?? []);
  const md = renderMarkdown(j.runs, j.inodes, s, j.meta, rep);
  console.log(md);
  const out = path.replace(/\.json$/, ".md");
  Deno.writeTextFileSync(out, md);
  formatFiles([out]);
}

/** `deno fmt` the files written (the project's `deno fmt --check` covers bench-results/). */
function formatFiles(paths: string[]): void {
  new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", ...paths], stderr: "null" })
    .outputSync();
}

if (import.meta.main && Deno.args[0] === "--render") {
  renderSaved(Deno.args[1] ?? "");
} else if (import.meta.main) {
  const s = parse(Deno.args);
  const command = `deno task bench ${Deno.args.join(" ")}`.trim();
  const share = prepareShare(s);
  const many = s.files > 0
    ? Deno.makeTempDirSync({ dir: "/dev/shm", prefix: "vfsd-bench-many-" })
    : "";
  const runs: BackendRun[] = [];
  const inodes: InodeRun[] = [];
  const daxRuns: DaxRun[] = [];
  const t0 = Date.now();
  const loadBefore = loadavg();
  const pingPong = new PingPong();
  const floors: number[] = [];
  try {
    if (many !== "") makeFiles(many, s.files, "f%06d");
    const m = machine();
    console.error(
      `wire benchmark: ${s.rounds} round(s), ${s.seconds} s per phase, depth ${s.depth}, ` +
        `${s.backends.map((b) => LABEL[b]).join(", ")}; CPUs ${m.pinnedTo}; share ${share} (${
          fsType(share)
        })`,
    );
    for (let round = 0; round < s.rounds; round++) {
      floors.push(pingPong.run());
      const order = s.backends.map((_, i) =>
        s.backends[(i + round) % s.backends.length] as Backend
      );
      for (const [position, b] of order.entries()) {
        if (s.rows.length === 0) break;
        const t = Date.now();
        const r = await runBackend(b, round, position, share, s);
        runs.push(r);
        const g = r.rows.getattr;
        console.error(
          `  round ${round + 1}/${s.rounds} ${LABEL[b].padEnd(9)} ${
            ((Date.now() - t) / 1000).toFixed(1)
          } s` +
            (g ? ` (GETATTR ${fmt(g.latency.p50)} µs, ${fmt(g.throughput.reqPerS)} req/s)` : ""),
        );
      }
      // The DAX row: each daemon again (not the ceiling, nor the baseline: it may predate DAX).
      for (const b of s.dax > 0 ? order : []) {
        if (b === "ceiling" || b === "base") continue;
        const t = Date.now();
        const r = await runDax(b, round, share, s);
        daxRuns.push(r);
        const x = r.windowRun;
        const MiB = 1 << 20;
        console.error(
          `  round ${round + 1}/${s.rounds} ${LABEL[b].padEnd(9)} DAX ${
            ((Date.now() - t) / 1000).toFixed(1)
          } s (` +
            (x
              ? `window cold ${fmt(x.bytes / MiB / x.coldSeconds)}, warm ${
                fmt(x.bytes / MiB / x.warmSeconds)
              } MiB/s; `
              : "no window; ") +
            `FUSE_READ d1 ${fmt(r.readD1.bytes / MiB / r.readD1.seconds)}, d${s.depth} ${
              fmt(r.readDn.bytes / MiB / r.readDn.seconds)
            } MiB/s)`,
        );
      }
    }
    if (many !== "") {
      for (const b of s.backends) {
        if (b === "ceiling") continue;
        const i = await runInodes(b, many, s);
        inodes.push(i);
        console.error(
          `  ${s.files} LOOKUPs: ${LABEL[b]} ${fmt(i.anonBytesPerInode)} anon bytes per inode`,
        );
      }
    }
  } finally {
    pingPong.close();
    Deno.removeSync(share, { recursive: true });
    if (many !== "") Deno.removeSync(many, { recursive: true });
  }
  const meta: RunMeta = {
    date: new Date().toISOString(),
    command,
    machine: machine(),
    shareFs: fsType(s.dir ?? Deno.env.get("TMPDIR") ?? "/tmp"),
    minutes: (Date.now() - t0) / 60000,
    loadBefore,
    loadAfter: loadavg(),
    nofile: nofile(),
    floors,
  };
  const rep = report(runs, inodes, s, daxRuns);
  const md = renderMarkdown(runs, inodes, s, meta, rep);
  const date = meta.date.replace(/\.\d+Z$/, "").replaceAll(":", "-");
  console.log(md);
  const outDir = s.out ??
    (s.ci ? Deno.makeTempDirSync({ prefix: "vfsd-bench-out-" }) : "bench-results");
  Deno.mkdirSync(outDir, { recursive: true });
  const base = join(outDir, `wire-${date}`);
  Deno.writeTextFileSync(`${base}.md`, md);
  Deno.writeTextFileSync(
    `${base}.json`,
    JSON.stringify(
      {
        date: meta.date,
        command,
        machine: meta.machine,
        meta,
        settings: { ...s, rows: s.rows.map((r) => r.id) },
        summary: rep.summary,
        misses: rep.misses,
        driverBound: rep.driverBound,
        pingPongFloorUs: floors,
        faults: rep.faults,
        runs,
        inodes,
        dax: daxRuns,
      },
      null,
      1,
    ),
  );
  formatFiles([`${base}.md`, `${base}.json`]);
  console.error(`wrote ${base}.md and ${base}.json`);
  if (s.ci) Deno.removeSync(outDir, { recursive: true });
}
