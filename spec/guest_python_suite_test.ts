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
import { QemuGuest } from "./_driver/qemu_guest.ts";
import { cacheDir } from "../scripts/setup.ts";
import {
  parseRegrtest,
  PYTHON_SUITE_MODULES,
  SUITE_TIMEOUT_MS,
  type SuiteResult,
} from "./_driver/python_suite.ts";

const TAG = "share";

/** Boots a guest against `kind`, runs the suite on the share, and returns its result. */
async function runSuite(kind: DaemonKind): Promise<SuiteResult & { log: string; ms: number }> {
  const work = await Deno.makeTempDir({ prefix: `guest-pysuite-${kind}-` });
  const shared = join(work, "shared");
  await Deno.mkdir(shared);
  const daemon = await startDaemon(kind, {
    sharedDir: shared,
    extraArgs: kind === "c" ? ["-o", "xattr"] : ["--xattr"],
  });
  let g: QemuGuest | undefined;
  try {
    g = await QemuGuest.boot({ socketPath: daemon.socketPath, tag: TAG, memoryMiB: 2048 });
    await g.shOk(`mount -t virtiofs ${TAG} /mnt && mkdir -p /mnt/pysuite/tmp /mnt/pysuite/cwd`);
    const t0 = performance.now();
    const run = await g.sh(
      "cd /mnt/pysuite/cwd && TMPDIR=/mnt/pysuite/tmp python3 -m test " +
        `--tempdir /mnt/pysuite/cwd -v ${PYTHON_SUITE_MODULES.join(" ")} >/tmp/suite.log 2>&1; ` +
        "echo $?",
      { timeoutMs: SUITE_TIMEOUT_MS },
    );
    const ms = performance.now() - t0;
    const log = await g.shOk("cat /tmp/suite.log", { timeoutMs: 120_000 });
    const logDir = join(cacheDir(), "guest-logs");
    await Deno.mkdir(logDir, { recursive: true });
    await Deno.writeTextFile(join(logDir, `python-suite-${kind}.log`), log);
    const result = parseRegrtest(log, PYTHON_SUITE_MODULES);
    console.log(
      `${kind}: CPython ${PYTHON_SUITE_MODULES.join(", ")} on the share: ` +
        `${result.counts.passed} passed, ${result.counts.failed} failed, ` +
        `${result.counts.skipped} skipped in ${
          Math.round(ms / 1000)
        } s (regrtest exit ${run.out.trim()})`,
    );
    for (const [id, why] of Object.entries(result.failures)) console.log(`  ${kind} ${id}: ${why}`);
    console.log(`  (the whole log: ${join(logDir, `python-suite-${kind}.log`)})`);
    return { ...result, log, ms };
  } finally {
    await g?.shutdown();
    await daemon.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** Results of this run, per daemon (C's is the bar for ours when it ran). */
const results = new Map<DaemonKind, SuiteResult>();

const kinds = daemonsUnderTest().filter((k) => k === "ours" || fullRun());
// C first, so that ours is held to C's failures from the same run.
kinds.sort((a, b) => (a === "c" ? -1 : b === "c" ? 1 : 0));

for (const kind of kinds) {
  Deno.test({
    name: `OV-LOCAL-1 [guest, ${kind}] CPython's own file-system tests pass on the share` +
      (kind === "ours" ? " (no failure C virtiofsd does not also have)" : ""),
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const r = await runSuite(kind);
      results.set(kind, r);
      if (recording()) {
        const x = readExpectations();
        x.pythonSuite.modules = [...PYTHON_SUITE_MODULES];
        const rec: SuiteRecord = {
          measured: new Date().toISOString().slice(0, 10),
          counts: r.counts,
          failures: r.failures,
        };
        x.pythonSuite.results[kind] = rec;
        writeExpectations(x);
      }
      assert.ok(r.counts.passed > 500, `the suite ran (${r.counts.passed} passed)`);
      const c0 = results.get("c");
      if (kind !== "c" && c0 !== undefined) {
        const onlyHere = Object.keys(c0.skips).filter((id) => !(id in r.skips));
        const onlyC = Object.keys(r.skips).filter((id) => !(id in c0.skips));
        if (onlyHere.length + onlyC.length > 0) {
          console.log(`  skipped with C but run with ${kind}: ${onlyHere.join(", ") || "none"}`);
          console.log(`  skipped with ${kind} but run with C: ${onlyC.join(", ") || "none"}`);
        }
      }
      if (kind !== "ours") return;
      const c = results.get("c")?.failures ?? readExpectations().pythonSuite.results.c?.failures;
      assert.ok(
        c !== undefined,
        "C virtiofsd's failures are recorded (GUEST_RECORD=1 SPEC_FULL=1)",
      );
      const oursOnly = Object.entries(r.failures).filter(([id]) => !(id in c));
      assert.deepEqual(
        Object.fromEntries(oursOnly),
        {},
        "failures of ours that C virtiofsd does not have",
      );
    },
  });
}
