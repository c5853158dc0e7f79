/**
 * The guest level of the benchmark (issue 7): boots the project's guest against each back end in
 * turn, interleaved per round, and runs fio and a metadata workload on the share, for cache=none
 * and cache=auto.
 *
 * Back ends: `ours` (mod.ts), `c` (QEMU 7.2's C virtiofsd), `rust` (Rust virtiofsd 1.13), and
 * `9p` (QEMU's own virtio-9p, `-fsdev local,...,security_model=passthrough`, mounted with
 * `cache=none` / `cache=loose`), for the design's claim OV-PERF-1. The cloud kernel has no 9p,
 * so every boot uses Debian's generic kernel (`scripts/guest_generic.ts`) and the benchmark's
 * root image with fio (`BENCH_ROOTFS` of `scripts/guest_rootfs.ts`). Guest: 1 vCPU, TCG, 2 GiB.
 *
 * Workloads (`fixtures/guest-bench/`): fio 1 MiB seqwrite/seqread (psync), 4 KiB
 * randread/randwrite psync and libaio QD16, all `direct=1` (the daemons get their allow-direct-io
 * option), time based; then create, stat, readdir (5 passes) and unlink of FILES empty files
 * (python3). Every figure is "higher is better": IOPS, MiB/s, operations/s.
 *
 * Output: `<out>.json` (every sample, per round) and `<out>.md` (per cache mode, a table: each
 * back end's median and min–max over rounds, and the per-round ratios ours/C, ours/Rust and
 * ours/9p as median (min–max)). Target: median ours/C ≥ 0.97 on every row; a row whose C
 * samples spread more than ±10 % around their median is reported as noise-limited, not a miss.
 *
 * A full run boots the guest once per back end and cache mode (one device, mounted alone) and
 * starts fio once per job.
 *
 * `--quick` (CI's one iteration, issue 7: "tiny sizes, one round [...] no assertion on times;
 * budget 2 minutes") covers the same code paths and every combination, so none of it rots: every
 * back end (ours, C, Rust, 9p) in both cache modes, all six fio jobs and all four metadata phases
 * on each, through the summary script, the tables and the JSON. To fit the budget on a 2-core
 * machine (about 50 s instead of 180 s) it is `--one-boot`: one boot per round serves all eight
 * targets at once, each from its own daemon (or 9p export) on its own device (`-device
 * vhost-user-fs-pci` per daemon, `virtio-9p-pci` per 9p cache mode) and mounted at
 * `/mnt/<backend>-<mode>` in turn, and each target's six jobs run in one fio (the job file's
 * `stonewall` keeps them in sequence), which saves a boot (about 7 s under TCG) per target and
 * fio's start-up (about 0.7 s) per job; plus one round, a 4 MiB file, 0.2 s per job and 20 files.
 * Its figures are not comparable with a full run's. `--prepare` does the setup only (QEMU, Rust
 * virtiofsd, the generic kernel and the fio image, fetched with apt the first time), which CI runs
 * and times as its own part, before the quick run.
 *
 * ```sh
 * deno run -A scripts/bench_guest.ts                 # 5 rounds, 256 MiB file, 3 s per fio job
 * deno run -A scripts/bench_guest.ts --quick         # CI: 1 round, one boot, no timing claims
 * deno run -A scripts/bench_guest.ts --prepare       # setup only (apt, kernel, image)
 * deno run -A scripts/bench_guest.ts --rounds 2 --runtime 2 --backends ours,c --modes none
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { cpus, tmpdir } from "node:os";
import { ensureHostTools, ensureRustVirtiofsd, projectDir } from "./setup.ts";
import { BENCH_ROOTFS, ensureGuestRootfs } from "./guest_rootfs.ts";
import { ensureGenericKernel } from "./guest_generic.ts";
import { daemonArgv, type DaemonHandle, startDaemon } from "../spec/_driver/daemon.ts";
import { QemuGuest } from "../spec/_driver/qemu_guest.ts";
import type { CacheMode as DaemonCacheMode } from "../src/daemon/serve.ts";

/** What serves the share. */
export type Backend = "ours" | "c" | "rust" | "9p";
/** The cache modes the guest benchmark runs (of the daemon's {@linkcode DaemonCacheMode}). */
export type CacheMode = Extract<DaemonCacheMode, "none" | "auto">;

const ALL_BACKENDS: readonly Backend[] = ["ours", "c", "rust", "9p"];
const ALL_MODES: readonly CacheMode[] = ["none", "auto"];

/** The fio sections of `fixtures/guest-bench/fio.job`, in run order, with the figure reported. */
const FIO_ROWS: readonly { section: string; metric: "iops" | "mibs" }[] = [
  { section: "seqwrite-1m", metric: "mibs" },
  { section: "seqread-1m", metric: "mibs" },
  { section: "randread-4k-psync", metric: "iops" },
  { section: "randwrite-4k-psync", metric: "iops" },
  { section: "randread-4k-libaio-qd16", metric: "iops" },
  { section: "randwrite-4k-libaio-qd16", metric: "iops" },
];
const META_ROWS = ["create", "stat", "readdir", "unlink"] as const;

/** Every row: name and unit. */
export const ROWS: readonly { name: string; unit: string }[] = [
  ...FIO_ROWS.map((r) => ({ name: r.section, unit: r.metric === "iops" ? "IOPS" : "MiB/s" })),
  ...META_ROWS.map((m) => ({ name: `meta-${m}`, unit: "ops/s" })),
];

const FIXTURES = join(projectDir(), "fixtures", "guest-bench");
const GUEST_TOOLS = ["fio.job", "meta.py", "fio_summary.py"];

/** Parameters of one run. */
export interface BenchParams {
  rounds: number;
  /** fio file size, fio syntax (`256m`). */
  size: string;
  /** Seconds per fio job (fractions allowed: fio gets milliseconds). */
  runtime: number;
  /** Files of the metadata workload. */
  files: number;
  backends: Backend[];
  modes: CacheMode[];
  /**
   * One boot per round for every back end and cache mode (each on its own device and mount),
   * and one fio run for all of a target's jobs: the `--quick` smoke test. Off: one boot per
   * back end and cache mode, one fio run per job (what the figures are measured with).
   */
  oneBoot?: boolean;
}

/** samples[mode][row][backend] = one figure per round. */
export type Samples = Record<string, Record<string, Partial<Record<Backend, number[]>>>>;

/** The daemon's command line for a cache mode, with its allow-direct-io option. */
function argvFor(kind: "ours" | "c" | "rust", mode: CacheMode) {
  return (socketPath: string, sharedDir: string): string[] => {
    const argv = daemonArgv(kind, socketPath, sharedDir);
    switch (kind) {
      case "ours":
        return [...argv, "--cache", mode, "--allow-direct-io"];
      case "c":
        return [
          ...argv.map((a) => a.startsWith("cache=") ? `cache=${mode}` : a),
          "-o",
          "allow_direct_io",
        ];
      case "rust": {
        const i = argv.indexOf("--cache");
        const out = [...argv];
        if (i >= 0) out.splice(i, 2);
        return [...out, "--cache", mode === "none" ? "never" : "auto", "--allow-direct-io"];
      }
    }
  };
}

/** One share under test: a back end serving in one cache mode. */
export interface Target {
  backend: Backend;
  mode: CacheMode;
}

/** `ours-none`: the target's name in tags, mount points and temporary directories. */
function targetName(t: Target): string {
  return `${t.backend}-${t.mode}`;
}

/**
 * The fio runs of one target: one run per section (each job gets a fresh fio), or with `oneBoot`
 * one run of every section (the job file's `stonewall` keeps them one after another), which
 * saves fio's start-up (about 0.7 s under TCG) per job.
 */
function fioRuns(p: BenchParams): string[][] {
  const sections = FIO_ROWS.map((r) => r.section);
  return p.oneBoot ? [sections] : sections.map((s) => [s]);
}

/**
 * One boot serving every target of `targets`, each from its own daemon (or 9p export) and
 * device, mounted at `/mnt/<backend>-<mode>`; the workloads run on one target after the other
 * (one vCPU), each target's mount made just before and unmounted right after. The full benchmark
 * passes one target per boot; `--one-boot` (`--quick`) passes all of them.
 */
async function runBoot(
  targets: readonly Target[],
  p: BenchParams,
  boot: { kernel: string; initrd: string; rootfs: string },
  log: (line: string) => void,
): Promise<Record<string, number>[]> {
  const dirs: string[] = [];
  const daemons: DaemonHandle[] = [];
  let guest: QemuGuest | undefined;
  try {
    for (const t of targets) {
      dirs.push(await mkdtemp(join(tmpdir(), `bench-guest-${targetName(t)}-`)));
    }
    // The virtio-fs targets: the first is QemuGuest's own device, the others get extra ones.
    const vfs = targets.map((t, i) => ({ t, dir: dirs[i] ?? "" })).filter((x) =>
      x.t.backend !== "9p"
    );
    // Started together: ours takes a second or so to load before its socket appears.
    const started = await Promise.allSettled(vfs.map(({ t, dir }) => {
      const kind = t.backend as "ours" | "c" | "rust";
      return startDaemon(kind, { sharedDir: dir, args: argvFor(kind, t.mode) });
    }));
    for (const s of started) if (s.status === "fulfilled") daemons.push(s.value);
    for (const s of started) if (s.status === "rejected") throw s.reason;
    // QemuGuest always attaches one vhost-user-fs device: with 9p targets only, an idle C daemon.
    let primaryTag = vfs[0] === undefined ? "idle" : targetName(vfs[0].t);
    if (daemons.length === 0) {
      const idle = await mkdtemp(join(tmpdir(), "bench-guest-idle-"));
      dirs.push(idle);
      daemons.push(await startDaemon("c", { sharedDir: idle, args: argvFor("c", "none") }));
      primaryTag = "idle";
    }
    const extraQemuArgs: string[] = [];
    vfs.slice(1).forEach(({ t }, i) => {
      // The same device properties as QemuGuest's own device (queue-size 1024).
      const id = `vfs${i + 1}`;
      extraQemuArgs.push(
        ...["-chardev", `socket,id=${id},path=${daemons[i + 1]?.socketPath}`],
        ...["-device", `vhost-user-fs-pci,chardev=${id},tag=${targetName(t)},queue-size=1024`],
      );
    });
    targets.forEach((t, i) => {
      if (t.backend !== "9p") return;
      // A 9p channel serves one mount at a time: one device per target.
      const id = `p9-${t.mode}`;
      extraQemuArgs.push(
        ...["-fsdev", `local,id=${id},path=${dirs[i]},security_model=passthrough`],
        ...["-device", `virtio-9p-pci,fsdev=${id},mount_tag=${targetName(t)}`],
      );
    });
    const t0 = performance.now();
    guest = await QemuGuest.boot({
      socketPath: daemons[0]?.socketPath ?? "",
      tag: primaryTag,
      memoryMiB: 2048,
      kernel: boot.kernel,
      initrd: boot.initrd,
      rootfs: boot.rootfs,
      timeoutMs: 180_000,
      extraQemuArgs,
    });
    const bootMs = performance.now() - t0;
    await guest.shOk("mkdir -p /tmp/bt");
    for (const f of GUEST_TOOLS) {
      const b64 = btoa(String.fromCharCode(...await readFile(join(FIXTURES, f))));
      await guest.shOk(`printf %s '${b64}' | base64 -d >/tmp/bt/${f}`);
    }
    const results: Record<string, number>[] = [];
    for (const t of targets) {
      const name = targetName(t);
      const mnt = `/mnt/${name}`;
      const t1 = performance.now();
      const mount = t.backend === "9p"
        ? `mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=${
          t.mode === "none" ? "none" : "loose"
        } ${name} ${mnt}`
        : `mount -t virtiofs ${name} ${mnt}`;
      await guest.shOk(`mkdir -p ${mnt} && ${mount}`);
      const result: Record<string, number> = {};
      for (const sections of fioRuns(p)) {
        const json = `/tmp/fio-${name}-${sections.length === 1 ? sections[0] : "all"}.json`;
        const out = await guest.shOk(
          `FILE=${mnt}/fio.dat SIZE=${p.size} RUNTIME=${Math.round(p.runtime * 1000)}ms ` +
            `fio ${sections.map((s) => `--section=${s}`).join(" ")} ` +
            `--output-format=json --output=${json} /tmp/bt/fio.job >/dev/null && ` +
            `python3 /tmp/bt/fio_summary.py ${json}`,
          { timeoutMs: (sections.length * p.runtime + 120) * 1000 },
        );
        const parsed = JSON.parse(out.trim()) as Record<string, { iops: number; mibs: number }>;
        for (const section of sections) {
          const job = parsed[section];
          if (job === undefined) throw new Error(`fio printed no job ${section}: ${out}`);
          const row = FIO_ROWS.find((r) => r.section === section);
          result[section] = job[row?.metric ?? "iops"];
        }
      }
      await guest.shOk(`rm -f ${mnt}/fio.dat`);
      const meta = JSON.parse(
        (await guest.shOk(`python3 /tmp/bt/meta.py ${mnt} ${p.files}`, { timeoutMs: 600_000 }))
          .trim(),
      ) as Record<string, number>;
      for (const m of META_ROWS) {
        const v = meta[m];
        if (v === undefined) throw new Error(`meta.py printed no ${m}`);
        result[`meta-${m}`] = v;
      }
      await guest.shOk(`umount ${mnt}`);
      const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
      const took = targets.length === 1
        ? `boot ${seconds(bootMs)}`
        : `boot ${seconds(bootMs)} (shared), workloads ${seconds(performance.now() - t1)}`;
      log(
        `${t.backend.padEnd(4)} cache=${t.mode}: ${took}; ` +
          ROWS.map((r) => `${r.name} ${fmt(result[r.name] ?? NaN)}`).join(", "),
      );
      results.push(result);
    }
    return results;
  } finally {
    await guest?.shutdown();
    await Promise.all(daemons.map((d) => d.stop()));
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  }
}

function median(xs: readonly number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 === 1 ? s[(n - 1) / 2] ?? NaN : ((s[n / 2 - 1] ?? NaN) + (s[n / 2] ?? NaN)) / 2;
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return "–";
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

/** The finite samples (a failed boot leaves NaN). */
function finite(xs: readonly number[] | undefined): number[] {
  return (xs ?? []).filter((x) => Number.isFinite(x));
}

function cell(all: readonly number[] | undefined): string {
  const xs = finite(all);
  if (xs.length === 0) return "–";
  if (xs.length === 1) return fmt(xs[0] ?? NaN);
  return `${fmt(median(xs))} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})`;
}

function ratioCell(a: readonly number[] | undefined, b: readonly number[] | undefined): string {
  if (a === undefined || b === undefined) return "–";
  const r = a.map((x, i) => x / (b[i] ?? NaN)).filter((x) => Number.isFinite(x));
  if (r.length === 0) return "–";
  const f = (x: number): string => x.toFixed(2);
  return r.length === 1
    ? f(r[0] ?? NaN)
    : `${f(median(r))} (${f(Math.min(...r))}–${f(Math.max(...r))})`;
}

/** Verdict of one row: target met, missed, or noise-limited (C's own spread > ±10 %). */
function verdict(ours: number[] | undefined, allC: number[] | undefined): string {
  const c = finite(allC);
  if (ours === undefined || allC === undefined || c.length === 0) return "–";
  const m = median(c);
  const spread = Math.max(Math.max(...c) / m - 1, 1 - Math.min(...c) / m);
  const ratio = median(ours.map((x, i) => x / (allC[i] ?? NaN)));
  if (ratio >= 0.97) return "ok";
  if (c.length < 2) return "miss (1 round: spread unknown)";
  return spread > 0.1
    ? `noise-limited (C ±${(spread * 100).toFixed(0)} %)`
    : `**miss** (C ±${(spread * 100).toFixed(0)} %)`;
}

/** The Markdown report. */
export function renderMarkdown(
  samples: Samples,
  p: BenchParams,
  roundsDone: number,
  machine: string,
  kernel: string,
  failures: readonly string[] = [],
): string {
  const lines: string[] = [];
  lines.push(`# Guest benchmark (issue 7)`, "");
  lines.push(
    `${roundsDone} round(s), ` +
      (p.oneBoot === true
        ? "every back end and cache mode in one boot per round (--one-boot: a smoke test, " +
          "not comparable with a full run)"
        : "interleaved") +
      `; guest: ${kernel}, TCG, 1 vCPU, 2 GiB; fio file ` +
      `${p.size}, ${p.runtime} s per job, direct=1; metadata: ${p.files} files. ` +
      `Machine: ${machine}. Cells: median (min–max) over rounds; ratios are per round, then ` +
      `median (min–max). Higher is better everywhere. Target: ours/C ≥ 0.97.`,
    "",
  );
  for (const mode of p.modes) {
    lines.push(`## cache=${mode}${mode === "auto" ? " (9p: cache=loose)" : ""}`, "");
    const heads = [
      "row",
      "unit",
      ...p.backends.map((b) => b === "c" ? "C" : b === "rust" ? "Rust" : b),
    ];
    const ratios: [Backend, string][] = [["c", "ours/C"], ["rust", "ours/Rust"], ["9p", "ours/9p"]];
    const shown = ratios.filter(([b]) => p.backends.includes(b) && p.backends.includes("ours"));
    heads.push(...shown.map(([, h]) => h));
    if (p.backends.includes("c") && p.backends.includes("ours")) heads.push("verdict");
    lines.push(`| ${heads.join(" | ")} |`, `|${heads.map(() => "---").join("|")}|`);
    for (const row of ROWS) {
      const s = samples[mode]?.[row.name] ?? {};
      const cells = [row.name, row.unit, ...p.backends.map((b) => cell(s[b]))];
      cells.push(...shown.map(([b]) => ratioCell(s.ours, s[b])));
      if (heads.at(-1) === "verdict") cells.push(verdict(s.ours, s.c));
      lines.push(`| ${cells.join(" | ")} |`);
    }
    lines.push("");
  }
  if (failures.length > 0) {
    lines.push(
      "Boots that failed (their cells are left out of that round; NaN in the JSON):",
      "",
      ...failures.map((f) => `- ${f}`),
      "",
    );
  }
  return lines.join("\n");
}

function machineLine(): string {
  const c = cpus();
  return `${c[0]?.model ?? "unknown CPU"} (${c.length} cores), Deno ${Deno.version.deno}`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      prepare: { type: "boolean", default: false },
      "one-boot": { type: "boolean" },
      rounds: { type: "string" },
      size: { type: "string" },
      runtime: { type: "string" },
      files: { type: "string" },
      backends: { type: "string" },
      modes: { type: "string" },
      out: { type: "string" },
    },
  });
  const quick = values.quick === true;
  const p: BenchParams = {
    rounds: Number(values.rounds ?? (quick ? 1 : 5)),
    size: values.size ?? (quick ? "4m" : "256m"),
    runtime: Number(values.runtime ?? (quick ? 0.2 : 3)),
    files: Number(values.files ?? (quick ? 20 : 2000)),
    backends: (values.backends ?? ALL_BACKENDS.join(",")).split(",") as Backend[],
    modes: (values.modes ?? ALL_MODES.join(",")).split(",") as CacheMode[],
    oneBoot: values["one-boot"] ?? quick,
  };
  for (const b of p.backends) {
    if (!ALL_BACKENDS.includes(b)) throw new Error(`Unknown back end ${b}`);
  }
  for (const m of p.modes) if (!ALL_MODES.includes(m)) throw new Error(`Unknown mode ${m}`);
  const log = (line: string): void => console.log(`bench:guest: ${line}`);

  // Setup (the first time: QEMU, Rust virtiofsd, the generic kernel and the fio image, with
  // apt); `--prepare` stops here, so CI can time it apart from the run.
  await ensureHostTools({ log });
  if (p.backends.includes("rust")) await ensureRustVirtiofsd({ log });
  const kernel = await ensureGenericKernel({ log });
  const { image } = await ensureGuestRootfs({ variant: BENCH_ROOTFS, log });
  if (values.prepare === true) return;
  const stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
  const out = values.out ??
    (quick
      ? join(await Deno.makeTempDir({ prefix: "bench-guest-" }), "guest-quick")
      : join(projectDir(), "bench-results", `guest-${stamp}`));
  const boot = { kernel: kernel.kernel, initrd: kernel.initrd, rootfs: image };
  const machine = machineLine();

  const samples: Samples = {};
  const failures: string[] = [];
  const save = async (roundsDone: number): Promise<void> => {
    await Deno.mkdir(join(out, ".."), { recursive: true });
    const json = {
      params: p,
      roundsDone,
      machine,
      kernel: kernel.kernelPackage,
      units: Object.fromEntries(ROWS.map((r) => [r.name, r.unit])),
      samples,
      failures,
    };
    await writeFile(`${out}.json`, JSON.stringify(json, null, 2) + "\n");
    await writeFile(
      `${out}.md`,
      renderMarkdown(samples, p, roundsDone, machine, kernel.kernelPackage, failures),
    );
  };
  const record = (t: Target, r: Record<string, number>): void => {
    for (const [row, v] of Object.entries(r)) {
      ((samples[t.mode] ??= {})[row] ??= {})[t.backend] = [
        ...samples[t.mode]?.[row]?.[t.backend] ?? [],
        v,
      ];
    }
  };
  for (let round = 0; round < p.rounds; round++) {
    const targets: Target[] = [];
    for (const mode of p.modes) {
      // Rotate the order each round so no back end always runs first (or after the same one).
      const order = p.backends.map((_, i, a) => a[(i + round) % a.length] ?? "ours");
      for (const backend of order) targets.push({ backend, mode });
    }
    if (p.oneBoot === true) {
      log(`round ${round + 1}/${p.rounds}, one boot: ${targets.map(targetName).join(", ")}`);
      const rs = await runBoot(targets, p, boot, log);
      targets.forEach((t, i) => record(t, rs[i] ?? {}));
    } else {
      for (const t of targets) {
        log(`round ${round + 1}/${p.rounds}, cache=${t.mode}, ${t.backend}`);
        let r: Record<string, number> | undefined;
        try {
          [r] = await runBoot([t], p, boot, log);
        } catch (e) {
          // A back end that hangs or fails (it happens to the references too) loses its cell for
          // this round; the run goes on, and the report says so.
          const why = (e instanceof Error ? e.message : String(e)).split("\n")[0] ?? "";
          log(`round ${round + 1}: ${t.backend} cache=${t.mode} failed: ${why}`);
          failures.push(`round ${round + 1}: ${t.backend} cache=${t.mode} failed: ${why}`);
          r = Object.fromEntries(ROWS.map((row) => [row.name, NaN]));
        }
        record(t, r ?? {});
      }
    }
    await save(round + 1);
    log(`round ${round + 1} done: ${out}.md`);
  }
  console.log(await readFile(`${out}.md`, "utf8"));
}

if (import.meta.main) await main();
