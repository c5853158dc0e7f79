/**
 * Spec: a foreign POSIX test suite, which none of us wrote, passes on the share as well as it
 * does on C virtiofsd (OV-LOCAL-1).
 *
 * The suite is CPython 3.11's own file-system tests from Debian's `libpython3.11-testsuite`
 * (test_os, test_posix, test_shutil, test_tempfile, test_fileio, test_glob), run by CPython's
 * regrtest in a Linux 6.1 guest under QEMU 7.2 with the working directory and `TMPDIR` on the
 * share (`--tempdir /mnt/...`): every file those tests make, rename, link, chmod, lock or
 * remove goes through the daemon.
 *
 * The bar: our daemon has no failure that C virtiofsd does not also have. C's failures come
 * from the same run when C is among `DAEMONS` and the run is full (`SPEC_FULL=1`), else from
 * `spec/expectations/guest.json` (`pythonSuite.results.c`, written by a recording run). Each
 * daemon's pass/fail/skip counts are printed; a recording run (`GUEST_RECORD=1`) writes them,
 * with every failing test and its error, into the expectations file.
 *
 * In the default (CI) run only our daemon runs the suite (about 2 minutes under TCG); with
 * `SPEC_FULL=1` every daemon in `DAEMONS` does.
 *
 * DAX window: in a full run (`SPEC_FULL=1`, `deno task spec:guest:all`) with ours in `DAEMONS`, the
 * suite runs once more on ours started with a cache window (`--tag share --cache-size 64M --request-queues 1`), in the
 * guest booted under QEMU 11.1 on its generic vhost-user device, which takes the tag, the queues
 * and the window from the daemon: the plain mount is then DAX inode mode (a regular file whose size
 * is a whole number of 2 MiB ranges at the guest's first look goes through the window). It is held
 * to the same bar as ours. The daemon's SETUPMAPPING count is printed, not required: the suite
 * makes its files in the guest, empty at first, so none of them is DAX (measured: 0 SETUPMAPPING,
 * 741 passed, 0 failed). That is why the default (CI) run leaves it out: it would add 1.5 minutes to
 * CI's budget and test the FUSE path a second time; the local-file-system spec's DAX variant, which
 * maps files through the window, runs in CI.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type DaemonKind, daemonsUnderTest, startDaemon } from "./_driver/daemon.ts";
import {
  fullRun,
  readExpectations,
  recording,
  type SuiteRecord,
  writeExpectations,
} from "./_driver/guest_expectations.ts";
import { WINDOW_BOOT, windowArgs } from "./_driver/dax_guest.ts";
import { QemuGuest } from "./_driver/qemu_guest.ts";
import { cacheDir } from "../scripts/setup.ts";
import {
  parseRegrtest,
  PYTHON_SUITE_MODULES,
  SUITE_TIMEOUT_MS,
  type SuiteResult,
} from "./_driver/python_suite.ts";

const TAG = "share";

/**
 * Ours' cache window for the DAX run; the generic device takes the tag (still {@linkcode TAG})
 * and the request queues from the daemon.
 */
const DAX_ARGS = windowArgs(TAG);

/** What a run is: a daemon, or ours with a DAX window (`ours-dax`). */
type RunKind = DaemonKind | "ours-dax";

/**
 * The daemon's `DAX: N SETUPMAPPING (...) ...` line, which ours logs when it stops (only when the
 * guest mapped or unmapped anything), and its SETUPMAPPING count (0 without the line).
 */
function daxLine(log: string): { line: string | undefined; setups: number } {
  const line = log.split("\n").map((l) => l.match(/DAX: \d+ SETUPMAPPING.*/)?.[0]).find((l) =>
    l !== undefined
  );
  return { line, setups: Number(line?.match(/^DAX: (\d+)/)?.[1] ?? 0) };
}

/** Boots a guest against `run`, runs the suite on the share, and returns its result. */
async function runSuite(
  run: RunKind,
): Promise<SuiteResult & { log: string; ms: number; daemonLog: () => string }> {
  const dax = run === "ours-dax";
  const kind: DaemonKind = dax ? "ours" : run;
  const work = await Deno.makeTempDir({ prefix: `guest-pysuite-${run}-` });
  const shared = join(work, "shared");
  await Deno.mkdir(shared);
  const daemon = await startDaemon(kind, {
    sharedDir: shared,
    extraArgs: kind === "c" ? ["-o", "xattr"] : ["--xattr", ...dax ? DAX_ARGS : []],
  });
  let g: QemuGuest | undefined;
  try {
    g = await QemuGuest.boot({
      socketPath: daemon.socketPath,
      tag: TAG,
      memoryMiB: 2048,
      ...dax ? WINDOW_BOOT : {},
    });
    if (dax) {
      const window = (await g.shOk("dmesg | grep -i 'cache len' || true")).trim();
      console.log(`${run}: the guest's virtiofs: ${window || "(no Cache len line)"}`);
      assert.match(window, /Cache len: 0x4000000 /, "the guest has the 64 MiB window");
    }
    await g.shOk(`mount -t virtiofs ${TAG} /mnt && mkdir -p /mnt/pysuite/tmp /mnt/pysuite/cwd`);
    const t0 = performance.now();
    const suite = await g.sh(
      "cd /mnt/pysuite/cwd && TMPDIR=/mnt/pysuite/tmp python3 -m test " +
        `--tempdir /mnt/pysuite/cwd -v ${PYTHON_SUITE_MODULES.join(" ")} >/tmp/suite.log 2>&1; ` +
        "echo $?",
      { timeoutMs: SUITE_TIMEOUT_MS },
    );
    const ms = performance.now() - t0;
    const log = await g.shOk("cat /tmp/suite.log", { timeoutMs: 120_000 });
    const logDir = join(cacheDir(), "guest-logs");
    await Deno.mkdir(logDir, { recursive: true });
    await Deno.writeTextFile(join(logDir, `python-suite-${run}.log`), log);
    const result = parseRegrtest(log, PYTHON_SUITE_MODULES);
    console.log(
      `${run}: CPython ${PYTHON_SUITE_MODULES.join(", ")} on the share: ` +
        `${result.counts.passed} passed, ${result.counts.failed} failed, ` +
        `${result.counts.skipped} skipped in ${
          Math.round(ms / 1000)
        } s (regrtest exit ${suite.out.trim()})`,
    );
    for (const [id, why] of Object.entries(result.failures)) console.log(`  ${run} ${id}: ${why}`);
    console.log(`  (the whole log: ${join(logDir, `python-suite-${run}.log`)})`);
    // The daemon's log, read once it has stopped (stderrText() keeps it).
    return { ...result, log, ms, daemonLog: () => daemon.stderrText() };
  } finally {
    await g?.shutdown();
    if (dax) {
      // Ours exits by itself when QEMU disconnects, logging its DAX line as it ends.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([daemon.exited, new Promise((r) => timer = setTimeout(r, 5_000))]);
      clearTimeout(timer);
    }
    await daemon.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** Results of this run, per daemon (C's is the bar for ours when it ran). */
const results = new Map<DaemonKind, SuiteResult>();

const kinds = daemonsUnderTest().filter((k) => k === "ours" || fullRun());
// C first, so that ours is held to C's failures from the same run.
kinds.sort((a, b) => (a === "c" ? -1 : b === "c" ? 1 : 0));
// Ours with a DAX window last, in a full run.
const runs: RunKind[] = [
  ...kinds,
  ...kinds.includes("ours") && fullRun() ? ["ours-dax" as const] : [],
];

for (const run of runs) {
  const oursBar = run === "ours" || run === "ours-dax";
  Deno.test({
    name: run === "ours-dax"
      ? "OV-LOCAL-1 DAX-2 [guest, ours, DAX window] CPython's own file-system tests pass on a DAX " +
        "mount (QEMU 11.1's generic device; no failure C virtiofsd does not also have)"
      : `OV-LOCAL-1 [guest, ${run}] CPython's own file-system tests pass on the share` +
        (oursBar ? " (no failure C virtiofsd does not also have)" : ""),
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const r = await runSuite(run);
      if (run === "ours-dax") {
        const daemonLog = r.daemonLog();
        const { line, setups } = daxLine(daemonLog);
        // The `requests: OP N, ...` line is logged at the same time, DAX or not: that it is there
        // shows that a missing DAX line means no mapping, not an end the test did not see.
        const requests = daemonLog.match(/requests: (.*)/)?.[1];
        const count = (op: string): string =>
          requests === undefined ? "?" : requests.match(new RegExp(`\\b${op} (\\d+)`))?.[1] ?? "0";
        console.log(
          `ours-dax: ${setups} SETUPMAPPING through the window (${
            line ?? "the daemon logged no DAX line: the guest mapped nothing"
          }); the daemon's request counts: READ ${count("READ")}, WRITE ${count("WRITE")}, ` +
            `SETUPMAPPING ${count("SETUPMAPPING")}, REMOVEMAPPING ${count("REMOVEMAPPING")}`,
        );
        if (requests === undefined) console.log("  (the daemon logged no requests: line either)");
        const plain = results.get("ours");
        if (plain !== undefined) {
          const onlyDax = Object.keys(r.failures).filter((id) => !(id in plain.failures));
          const onlyPlain = Object.keys(plain.failures).filter((id) => !(id in r.failures));
          console.log(`  failing with the window only: ${onlyDax.join(", ") || "none"}`);
          console.log(`  failing without the window only: ${onlyPlain.join(", ") || "none"}`);
        }
      } else {
        results.set(run, r);
      }
      if (recording() && run !== "ours-dax") {
        const x = readExpectations();
        x.pythonSuite.modules = [...PYTHON_SUITE_MODULES];
        const rec: SuiteRecord = {
          measured: new Date().toISOString().slice(0, 10),
          counts: r.counts,
          failures: r.failures,
        };
        x.pythonSuite.results[run] = rec;
        writeExpectations(x);
      }
      assert.ok(r.counts.passed > 500, `the suite ran (${r.counts.passed} passed)`);
      const c0 = results.get("c");
      if (run !== "c" && c0 !== undefined) {
        const onlyHere = Object.keys(c0.skips).filter((id) => !(id in r.skips));
        const onlyC = Object.keys(r.skips).filter((id) => !(id in c0.skips));
        if (onlyHere.length + onlyC.length > 0) {
          console.log(`  skipped with C but run with ${run}: ${onlyHere.join(", ") || "none"}`);
          console.log(`  skipped with ${run} but run with C: ${onlyC.join(", ") || "none"}`);
        }
      }
      if (!oursBar) return;
      const c = results.get("c")?.failures ?? readExpectations().pythonSuite.results.c?.failures;
      assert.ok(
        c !== undefined,
        "C virtiofsd's failures are recorded (GUEST_RECORD=1 SPEC_FULL=1)",
      );
      const oursOnly = Object.entries(r.failures).filter(([id]) => !(id in c));
      assert.deepEqual(
        Object.fromEntries(oursOnly),
        {},
        `failures of ${run} that C virtiofsd does not have`,
      );
    },
  });
}
