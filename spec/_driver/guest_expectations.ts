/**
 * Known departures of the reference daemons in the guest specs, kept in
 * `spec/expectations/guest.json`, and the switches that choose how much of the guest specs runs.
 *
 * A departure is a step (a `t.step` name) where C or Rust virtiofsd behaves unlike a local file
 * system, with the reason. Such a step still runs against that daemon; its failure is reported as
 * known and does not fail the test. Our daemon never has departures: its failures fail. Nor has
 * `memory` (the library's `MemoryFs`, served by `examples/memory_fs.ts`), held to ours' bar.
 *
 * Environment:
 * - `SPEC_FULL=1` (or `GUEST_FULL=1`): every step against every daemon in `DAEMONS`, and the
 *   whole foreign suite against each. Without it (CI's default), our daemon gets every step and the references only
 *   the steps marked `ref` (a fixed subset that keeps CI within its budget).
 * - `GUEST_STEPS=REGEX`: only the steps whose names match (for working on a few).
 * - `GUEST_RECORD=1`: after each spec file, write what the references did into the expectations
 *   file: a failing step is added (its reason kept if it had one, else the error's first line
 *   marked "observed:"), a passing one removed. Unknown reference departures do not fail then.
 *
 * @module
 */
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { DaemonKind } from "./daemon.ts";

/** The expectations file's path. */
export const EXPECTATIONS_PATH: string = fileURLToPath(
  new URL("../expectations/guest.json", import.meta.url),
);

/** Step name → reason, per reference daemon. */
export type Departures = Partial<Record<"c" | "rust", Record<string, string>>>;

/** Counts of a unittest run. */
export interface SuiteCounts {
  /** Tests that ran and passed (expected failures included). */
  passed: number;
  /** Failures and errors. */
  failed: number;
  /** Skipped tests. */
  skipped: number;
}

/** What one daemon did in the foreign suite. */
export interface SuiteRecord {
  /** When it was measured (ISO date). */
  measured: string;
  /** Totals over all modules. */
  counts: SuiteCounts;
  /** Failed test ids (`test.test_os.Class.test_x`) → reason (the error's last line). */
  failures: Record<string, string>;
}

/** The whole file. */
export interface GuestExpectations {
  /** What the file is; kept as it is. */
  $comment?: string;
  /** Departures per spec file (`local_fs`, `reboot`, ...). */
  steps: Record<string, Departures>;
  /** The foreign suite, per daemon, from the last full run. */
  pythonSuite: {
    /** The modules the full run covers. */
    modules: string[];
    /** Per daemon. */
    results: Partial<Record<DaemonKind, SuiteRecord>>;
  };
}

/** Reads the expectations file (an empty one if it is missing). */
export function readExpectations(): GuestExpectations {
  try {
    return JSON.parse(readFileSync(EXPECTATIONS_PATH, "utf8")) as GuestExpectations;
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") {
      return { steps: {}, pythonSuite: { modules: [], results: {} } };
    }
    throw e;
  }
}

/** Writes the expectations file (sorted keys for steps, two-space JSON). */
export function writeExpectations(x: GuestExpectations): void {
  writeFileSync(EXPECTATIONS_PATH, JSON.stringify(x, null, 2) + "\n");
}

/** True when `SPEC_FULL` or `GUEST_FULL` asks for every step against every daemon. */
export function fullRun(): boolean {
  return ["SPEC_FULL", "GUEST_FULL"].some((v) => /^(1|true|yes)$/i.test(Deno.env.get(v) ?? ""));
}

/** True when `GUEST_RECORD` asks for the expectations file to be rewritten. */
export function recording(): boolean {
  return /^(1|true|yes)$/i.test(Deno.env.get("GUEST_RECORD") ?? "");
}

/** What the steps run against: a daemon, or `memory` (examples/memory_fs.ts), held to ours' bar. */
export type GuestKind = DaemonKind | "memory";

/** A step of a guest spec. */
export interface GuestStep<C> {
  /** The step's name, starting with its claim id. */
  name: string;
  /** Also run against C and Rust virtiofsd in the default (CI) run. */
  ref?: boolean;
  /** The step; throws on failure. */
  fn: (ctx: C) => Promise<void>;
}

/**
 * Runs `steps` against `kind` as `t.step`s: every step for ours and memory or in a full run, else
 * only the `ref` ones; a reference's known departure is logged instead of failing (and an
 * unexpected pass is logged too). In a recording run, the references' outcomes go into the
 * expectations file under `file` when all steps are done.
 */
export async function runGuestSteps<C>(
  t: Deno.TestContext,
  file: string,
  kind: GuestKind,
  ctx: C,
  steps: readonly GuestStep<C>[],
): Promise<void> {
  const reference = kind === "c" || kind === "rust" ? kind : undefined;
  const known = reference === undefined ? {} : readExpectations().steps[file]?.[reference] ?? {};
  const outcomes = new Map<string, string | undefined>();
  const only = Deno.env.get("GUEST_STEPS");
  for (const step of steps) {
    if (reference !== undefined && !fullRun() && !step.ref) continue;
    if (only !== undefined && !new RegExp(only).test(step.name)) continue;
    const reason = known[step.name];
    await t.step(step.name, async () => {
      try {
        await step.fn(ctx);
        outcomes.set(step.name, undefined);
        if (reason !== undefined) {
          console.log(`${kind}: known departure did not happen (${reason}): ${step.name}`);
        }
      } catch (e) {
        const message = e instanceof Error ? e.message : String(e);
        outcomes.set(step.name, message);
        if (reference !== undefined && (reason !== undefined || recording())) {
          console.log(
            `${kind}: ${reason !== undefined ? "known departure" : "departure recorded"}: ${
              reason ?? firstLine(message)
            }\n${message.slice(0, 2000)}`,
          );
          return;
        }
        throw e;
      }
    });
  }
  if (recording() && reference !== undefined) {
    const x = readExpectations();
    const perFile = x.steps[file] ??= {};
    const mine = perFile[reference] ??= {};
    for (const [name, error] of outcomes) {
      if (error === undefined) delete mine[name];
      else mine[name] = mine[name] ?? `observed: ${firstLine(error)}`;
    }
    perFile[reference] = Object.fromEntries(
      Object.entries(mine).sort(([a], [b]) => a < b ? -1 : 1),
    );
    writeExpectations(x);
  }
}

function firstLine(s: string): string {
  return (s.split("\n").find((l) => l.trim() !== "") ?? s).trim().slice(0, 300);
}
