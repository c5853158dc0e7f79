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
 * ```sh
 * deno run -A scripts/bench_guest.ts                 # 5 rounds, 256 MiB file, 3 s per fio job
 * deno run -A scripts/bench_guest.ts --quick         # CI: 1 round, tiny sizes, no timing claims
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

/** What serves the share. */
export type Backend = "ours" | "c" | "rust" | "9p";
/** The cache mode under test. */
export type CacheMode = "none" | "auto";

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

const TAG = "benchfs";
const TAG_9P = "bench9p";
const FIXTURES = join(projectDir(), "fixtures", "guest-bench");
const GUEST_TOOLS = ["fio.job", "meta.py", "fio_summary.py"];

/** Parameters of one run. */
export interface BenchParams {
  rounds: number;
  /** fio file size, fio syntax (`256m`). */
  size: string;
  /** Seconds per fio job. */
  runtime: number;
  /** Files of the metadata workload. */
  files: number;
  backends: Backend[];
  modes: CacheMode[];
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

/** One boot: start the back end, boot, mount, run every workload, tear down. */
async function runOne(
  backend: Backend,
  mode: CacheMode,
  p: BenchParams,
  boot: { kernel: string; initrd: string; rootfs: string },
  log: (line: string) => void,
): Promise<Record<string, number>> {
  const shared = await mkdtemp(join(tmpdir(), `bench-guest-${backend}-`));
  let daemon: DaemonHandle | undefined;
  let guest: QemuGuest | undefined;
  try {
    // 9p needs a vhost-user-fs device anyway (QemuGuest always attaches one): an idle C daemon.
    const kind = backend === "9p" ? "c" : backend;
    const idleDir = backend === "9p" ? await mkdtemp(join(tmpdir(), "bench-guest-idle-")) : shared;
    daemon = await startDaemon(kind, { sharedDir: idleDir, args: argvFor(kind, mode) });
    const t0 = performance.now();
    guest = await QemuGuest.boot({
      socketPath: daemon.socketPath,
      tag: TAG,
      memoryMiB: 2048,
      kernel: boot.kernel,
      initrd: boot.initrd,
      rootfs: boot.rootfs,
      timeoutMs: 180_000,
      extraQemuArgs: backend === "9p"
        ? [
          ...["-fsdev", `local,id=p9,path=${shared},security_model=passthrough`],
          ...["-device", `virtio-9p-pci,fsdev=p9,mount_tag=${TAG_9P}`],
        ]
        : [],
    });
    const bootMs = performance.now() - t0;
    const mount = backend === "9p"
      ? `mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=${
        mode === "none" ? "none" : "loose"
      } ${TAG_9P} /mnt`
      : `mount -t virtiofs ${TAG} /mnt`;
    await guest.shOk(mount);
    await guest.shOk("mkdir -p /tmp/bt");
    for (const f of GUEST_TOOLS) {
      const b64 = btoa(String.fromCharCode(...await readFile(join(FIXTURES, f))));
      await guest.shOk(`printf %s '${b64}' | base64 -d >/tmp/bt/${f}`);
    }
    const result: Record<string, number> = {};
    const fioTimeout = (p.runtime + 120) * 1000;
    for (const row of FIO_ROWS) {
      const out = await guest.shOk(
        `FILE=/mnt/fio.dat SIZE=${p.size} RUNTIME=${p.runtime} fio --section=${row.section} ` +
          `--output-format=json --output=/tmp/${row.section}.json /tmp/bt/fio.job >/dev/null && ` +
          `python3 /tmp/bt/fio_summary.py /tmp/${row.section}.json`,
        { timeoutMs: fioTimeout },
      );
      const parsed = JSON.parse(out.trim()) as Record<string, { iops: number; mibs: number }>;
      const job = parsed[row.section];
      if (job === undefined) throw new Error(`fio printed no job ${row.section}: ${out}`);
      result[row.section] = job[row.metric];
    }
    await guest.shOk("rm -f /mnt/fio.dat");
    const meta = JSON.parse(
      (await guest.shOk(`python3 /tmp/bt/meta.py /mnt ${p.files}`, { timeoutMs: 600_000 }))
        .trim(),
    ) as Record<string, number>;
    for (const m of META_ROWS) {
      const v = meta[m];
      if (v === undefined) throw new Error(`meta.py printed no ${m}`);
      result[`meta-${m}`] = v;
    }
    await guest.shOk("umount /mnt");
    log(
      `${backend.padEnd(4)} cache=${mode}: boot ${(bootMs / 1000).toFixed(1)} s; ` +
        ROWS.map((r) => `${r.name} ${fmt(result[r.name] ?? NaN)}`).join(", "),
    );
    if (backend === "9p") await rm(idleDir, { recursive: true, force: true });
    return result;
  } finally {
    await guest?.shutdown();
    await daemon?.stop();
    await rm(shared, { recursive: true, force: true });
  }
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
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

function cell(xs: readonly number[] | undefined): string {
  if (xs === undefined || xs.length === 0) return "–";
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
function verdict(ours: number[] | undefined, c: number[] | undefined): string {
  if (ours === undefined || c === undefined || c.length === 0) return "–";
  const m = median(c);
  const spread = Math.max(Math.max(...c) / m - 1, 1 - Math.min(...c) / m);
  const ratio = median(ours.map((x, i) => x / (c[i] ?? NaN)));
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
): string {
  const lines: string[] = [];
  lines.push(`# Guest benchmark (issue 7)`, "");
  lines.push(
    `${roundsDone} round(s), interleaved; guest: ${kernel}, TCG, 1 vCPU, 2 GiB; fio file ` +
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
    runtime: Number(values.runtime ?? (quick ? 1 : 3)),
    files: Number(values.files ?? (quick ? 50 : 2000)),
    backends: (values.backends ?? ALL_BACKENDS.join(",")).split(",") as Backend[],
    modes: (values.modes ?? ALL_MODES.join(",")).split(",") as CacheMode[],
  };
  for (const b of p.backends) {
    if (!ALL_BACKENDS.includes(b)) throw new Error(`Unknown back end ${b}`);
  }
  for (const m of p.modes) if (!ALL_MODES.includes(m)) throw new Error(`Unknown mode ${m}`);
  const stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
  const out = values.out ??
    (quick
      ? join(await Deno.makeTempDir({ prefix: "bench-guest-" }), "guest-quick")
      : join(projectDir(), "bench-results", `guest-${stamp}`));
  const log = (line: string): void => console.log(`bench:guest: ${line}`);

  await ensureHostTools({ log });
  if (p.backends.includes("rust")) await ensureRustVirtiofsd({ log });
  const kernel = await ensureGenericKernel({ log });
  const { image } = await ensureGuestRootfs({ variant: BENCH_ROOTFS, log });
  const boot = { kernel: kernel.kernel, initrd: kernel.initrd, rootfs: image };
  const machine = machineLine();

  const samples: Samples = {};
  const save = async (roundsDone: number): Promise<void> => {
    await Deno.mkdir(join(out, ".."), { recursive: true });
    const json = {
      params: p,
      roundsDone,
      machine,
      kernel: kernel.kernelPackage,
      units: Object.fromEntries(ROWS.map((r) => [r.name, r.unit])),
      samples,
    };
    await writeFile(`${out}.json`, JSON.stringify(json, null, 2) + "\n");
    await writeFile(
      `${out}.md`,
      renderMarkdown(samples, p, roundsDone, machine, kernel.kernelPackage),
    );
  };
  for (let round = 0; round < p.rounds; round++) {
    for (const mode of p.modes) {
      // Rotate the order each round so no back end always runs first (or after the same one).
      const order = p.backends.map((_, i, a) => a[(i + round) % a.length] ?? "ours");
      for (const backend of order) {
        log(`round ${round + 1}/${p.rounds}, cache=${mode}, ${backend}`);
        const r = await runOne(backend, mode, p, boot, log);
        for (const [row, v] of Object.entries(r)) {
          ((samples[mode] ??= {})[row] ??= {})[backend] = [
            ...samples[mode]?.[row]?.[backend] ?? [],
            v,
          ];
        }
      }
    }
    await save(round + 1);
    log(`round ${round + 1} done: ${out}.md`);
  }
  console.log(await readFile(`${out}.md`, "utf8"));
}

if (import.meta.main) await main();
