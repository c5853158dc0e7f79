/**
 * CPython's file-system test modules as a suite run in the guest (`spec/guest_python_suite_test.ts`,
 * `spec/guest_library_test.ts`): which modules, the guest command, and the parser of regrtest's
 * verbose output.
 *
 * @module
 */
import type { SuiteCounts } from "./guest_expectations.ts";

/** The CPython test modules that make up the suite. */
export const PYTHON_SUITE_MODULES: readonly string[] = [
  "test_os",
  "test_posix",
  "test_shutil",
  "test_tempfile",
  "test_fileio",
  "test_glob",
];

/** How long the whole suite may take in the guest before it is killed. */
export const SUITE_TIMEOUT_MS = 600_000;

/** The suite's result, parsed from regrtest's verbose output. */
export interface SuiteResult {
  /** Totals over all modules. */
  counts: SuiteCounts;
  /** Failed test ids → the error's last line. */
  failures: Record<string, string>;
  /** Modules that did not report a unittest summary (crashed, timed out, not found). */
  broken: string[];
  /** Skipped test ids → the reason regrtest printed. */
  skips: Record<string, string>;
}

/**
 * Parses `python3 -m test -v` output: each module's "Ran N tests" and its "OK (...)" or
 * "FAILED (...)" line for the counts, and each "FAIL: / ERROR: name (test.module.Class.name)"
 * block for the failures.
 */
export function parseRegrtest(log: string, modules: readonly string[]): SuiteResult {
  const counts: SuiteCounts = { passed: 0, failed: 0, skipped: 0 };
  const lines = log.replaceAll("\r", "").split("\n");
  const summarized = new Set<string>();
  let current: string | undefined;
  let ran: number | undefined;
  for (const line of lines) {
    const start = line.match(/^\d+:\d+:\d+ .*\[\s*\d+\/\d+[^\]]*\] (test_\w+)/);
    if (start !== null) {
      current = start[1];
      ran = undefined;
      continue;
    }
    const r = line.match(/^Ran (\d+) tests? in /);
    if (r !== null) {
      ran = Number(r[1]);
      continue;
    }
    const verdict = line.match(/^(OK|FAILED)(?: \((.*)\))?$/);
    if (verdict !== null && ran !== undefined) {
      const fields = new Map<string, number>();
      for (const kv of (verdict[2] ?? "").split(",")) {
        const [k, v] = kv.trim().split("=");
        if (k !== undefined && v !== undefined) fields.set(k, Number(v));
      }
      const failed = (fields.get("failures") ?? 0) + (fields.get("errors") ?? 0) +
        (fields.get("unexpected successes") ?? 0);
      const skipped = fields.get("skipped") ?? 0;
      counts.failed += failed;
      counts.skipped += skipped;
      counts.passed += ran - failed - skipped;
      if (current !== undefined) summarized.add(current);
      ran = undefined;
    }
  }
  const failures: Record<string, string> = {};
  for (let i = 0; i < lines.length; i++) {
    const m = (lines[i] ?? "").match(/^(FAIL|ERROR): \S+ \(([\w.]+)\)/);
    if (m === null || m[2] === undefined) continue;
    let last = "";
    for (let j = i + 2; j < lines.length; j++) {
      const l = lines[j] ?? "";
      if (/^(=+|-+)$/.test(l)) break;
      if (l.trim() !== "") last = l.trim();
    }
    failures[m[2]] = `${m[1]}: ${last}`.slice(0, 300);
  }
  const skips: Record<string, string> = {};
  for (const m of log.matchAll(/^\S+ \(([\w.]+)\)(?:\n[^\n]*?)? \.\.\. skipped (.*)$/gm)) {
    if (m[1] !== undefined) skips[m[1]] = (m[2] ?? "").slice(0, 200);
  }
  const broken = modules.filter((m) => !summarized.has(m));
  counts.failed += broken.length;
  for (const m of broken) failures[`test.${m}`] ??= "the module reported no unittest summary";
  return { counts, failures, broken, skips };
}

/** The guest command that runs the suite with its working directory and TMPDIR under `dir`. */
export function suiteCommand(dir: string): string {
  return `mkdir -p ${dir}/tmp ${dir}/cwd && cd ${dir}/cwd && TMPDIR=${dir}/tmp python3 -m test ` +
    `--tempdir ${dir}/cwd -v ${PYTHON_SUITE_MODULES.join(" ")} >/tmp/suite.log 2>&1; echo $?`;
}
