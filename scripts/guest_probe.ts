/**
 * A guest workload probe (issue 17): boots the project's guest against one daemon, optionally runs
 * some CPython test modules first (`--pre`, the "after the daemon has served a while" case), then
 * runs CPython's `test_largefile` (or `--match` of it) on the share, and prints for each phase the
 * wall time, the CPU time of the daemon's process tree and of QEMU, and where the daemon's threads
 * were in the kernel (sampled /proc stacks, every 20 ms: blocking calls show up there). `--dirty
 * MiB` writes that much to the host disk first (dirty page cache, to provoke write throttling).
 *
 *     deno run -A scripts/guest_probe.ts --kind ours --smp 2 \
 *       --pre "test_os test_shutil test_tempfile test_posix test_fileio test_glob" \
 *       --match '*TestSocketSendfile*'
 *
 * Ours runs with `--log-level info`, so its exit lines (requests by opcode with service times)
 * are printed at the end. Not a test: a tool to compare daemons on a workload.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { type DaemonKind, startDaemon } from "../spec/_driver/daemon.ts";
import { QemuGuest } from "../spec/_driver/qemu_guest.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    kind: { type: "string", default: "ours" },
    pre: { type: "string", default: "" },
    "pre-sh": { type: "string", default: "" },
    smp: { type: "string", default: "1" },
    match: { type: "string", default: "" },
    extra: { type: "string", default: "" },
    repeat: { type: "string", default: "1" },
    dirty: { type: "string", default: "0" },
  },
});
const kind = values.kind as DaemonKind;
function cpu(pid: number): number {
  return cpuOne(pid) + childPids(pid).reduce((a, c) => a + cpu(c), 0);
}
function cpuOne(pid: number): number {
  try {
    const f = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]?.split(" ") ?? [];
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}
function qemuPid(): number {
  const out = new TextDecoder().decode(
    new Deno.Command("pgrep", { args: ["-n", "qemu-system"] }).outputSync().stdout,
  ).trim();
  return Number(out);
}
const work = await Deno.makeTempDir({ prefix: `probe-${kind}-` });
const shared = join(work, "shared");
await Deno.mkdir(shared);
const extra = values.extra ? values.extra.split(" ") : [];
const daemon = await startDaemon(kind, {
  sharedDir: shared,
  extraArgs: [...(kind === "c" ? ["-o", "xattr"] : ["--xattr", "--log-level", "info"]), ...extra],
});
const g = await QemuGuest.boot({
  socketPath: daemon.socketPath,
  tag: "share",
  memoryMiB: 2048,
  extraQemuArgs: ["-smp", values.smp ?? "1"],
});
const qpid = qemuPid();
await g.shOk("mount -t virtiofs share /mnt && mkdir -p /mnt/py/tmp /mnt/py/cwd");
// Kernel stacks of the daemon's threads, sampled while a command runs: which waits dominate.
const stacks = new Map<string, number>();
let sampling = false;
async function sample() {
  sampling = true;
  while (sampling) {
    for (const pid of [daemon.pid, ...childPids(daemon.pid)]) {
      let tids: string[] = [];
      try {
        tids = [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => e.name);
      } catch {
        continue;
      }
      for (const t of tids) {
        let st = "";
        try {
          st = Deno.readTextFileSync(`/proc/${pid}/task/${t}/stack`);
        } catch {
          continue;
        }
        const fr = st.split("\n").map((l) =>
          l.replace(/^\[<[0-9a-f]+>\] /, "").replace(/\+0x.*$/, "")
        ).filter(Boolean);
        let comm = "";
        try {
          comm = Deno.readTextFileSync(`/proc/${pid}/task/${t}/comm`).trim();
        } catch { /* gone */ }
        const key = `[${comm}] ` + (fr.slice(0, 4).join("<") || "running");
        if (key.includes("do_epoll_wait") || key.includes("futex") || key.includes("ep_poll")) {
          continue;
        }
        stacks.set(key, (stacks.get(key) ?? 0) + 1);
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
function childPids(pid: number): number[] {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/).filter(
      Boolean,
    ).map(Number);
  } catch {
    return [];
  }
}
const run = async (label: string, cmd: string) => {
  if (Number(values.dirty) > 0) {
    new Deno.Command("dd", {
      args: ["if=/dev/zero", `of=${work}/dirty`, "bs=1M", `count=${values.dirty}`],
      stderr: "null",
    }).outputSync();
    console.log(
      `dirtied ${values.dirty} MiB; ` +
        Deno.readTextFileSync("/proc/meminfo").split("\n").filter((l) =>
          /^(Dirty|Writeback):/.test(l)
        ).join(" "),
    );
  }
  stacks.clear();
  const sampler = sample();
  const d0 = cpu(daemon.pid), q0 = cpu(qpid), t0 = performance.now();
  const r = await g.sh(
    `head -1 /proc/stat > /tmp/stat0; grep -E 'virtio|LOC|RES' /proc/interrupts > /tmp/irq0; ` +
      `${cmd}; head -1 /proc/stat; cat /tmp/stat0; grep -E 'virtio|LOC|RES' /proc/interrupts; cat /tmp/irq0`,
    { timeoutMs: 1_800_000 },
  );
  sampling = false;
  {
    // The guest's CPU time by kind (USER_HZ ticks) and its interrupt counts, after minus before.
    const lines = r.out.trim().split("\n");
    const stat = lines.filter((l) => l.startsWith("cpu ")).map((l) =>
      l.split(/\s+/).slice(1).map(Number)
    );
    if (stat.length === 2) {
      const names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];
      console.log(
        "   guest cpu s: " +
          names.map((n, i) =>
            `${n} ${(((stat[0]?.[i] ?? 0) - (stat[1]?.[i] ?? 0)) / 100).toFixed(1)}`
          ).join(
            ", ",
          ),
      );
    }
    const irq = lines.filter((l) => /^\s*\w+:\s+\d/.test(l));
    const half = irq.length / 2;
    const diffs: string[] = [];
    for (let i = 0; i < half; i++) {
      const a = (irq[i] ?? "").trim().split(/\s+/), b = (irq[i + half] ?? "").trim().split(/\s+/);
      // Per-CPU count columns follow the IRQ number: their sum.
      const sum = (f: string[]) =>
        f.slice(1).filter((x) => /^\d+$/.test(x)).reduce((n, x) => n + Number(x), 0);
      const d = sum(a) - sum(b);
      if (d > 0) diffs.push(`${a.slice(-1)[0]} ${d}`);
    }
    console.log("   guest interrupts: " + diffs.join(", "));
  }
  await sampler;
  const top = [...stacks.entries()].sort((a, b) => b[1] - a[1]).slice(0, 6);
  for (const [k, n] of top) console.log(`   ${n} samples: ${k}`);
  const s = (performance.now() - t0) / 1000;
  console.log(
    `${kind} ${label}: ${s.toFixed(1)} s wall, daemon cpu ${
      (cpu(daemon.pid) - d0).toFixed(1)
    } s, qemu cpu ${(cpu(qpid) - q0).toFixed(1)} s; exit ${r.out.trim().split("\n").pop()}`,
  );
};
const py = "cd /mnt/py/cwd && TMPDIR=/mnt/py/tmp python3 -m test --tempdir /mnt/py/cwd";
if (values.pre) {
  await run(`pre(${values.pre})`, `${py} ${values.pre} >/tmp/pre.log 2>&1; echo $?`);
  // regrtest's progress lines (elapsed time at each module's start), its verdict and total.
  console.log(
    await g.shOk(
      "grep -aE '^[0-9]+:[0-9]+:[0-9]+ .*\\[ *[0-9]+/[0-9]+\\]|Tests result|Total duration|Total tests|failed|crashed' /tmp/pre.log | tail -40",
    ),
  );
}
if (values["pre-sh"]) await run(`pre-sh(${values["pre-sh"]})`, `${values["pre-sh"]}; echo $?`);
const m = values.match ? ` -m '${values.match}'` : "";
for (let i = 0; i < Number(values.repeat); i++) {
  await run(
    `test_largefile${m}#${i}`,
    `${py} -v -u largefile test_largefile${m} >/tmp/lf.log 2>&1; echo $?`,
  );
}
if (Number(values.repeat) > 0) {
  console.log(await g.shOk("grep -E '^(test_|Ran|OK|FAIL)' /tmp/lf.log | tail -30"));
}
await g.shutdown().catch(() => g.kill());
// The exit lines (requests by opcode with service times) are written when the daemon stops: read
// them before stop() removes its log.
if (kind === "ours") {
  await daemon.exited;
  console.log(
    daemon.stderrText().split("\n").filter((l) => /requests:|served/.test(l)).join("\n"),
  );
}
await daemon.stop();
