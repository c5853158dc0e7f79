/**
 * Small host helpers shared by `scripts/setup.ts` and `scripts/guest_rootfs.ts`: running a
 * command, apt-get with one `apt-get update` retry, finding executables, timing a step, and the
 * cache and project directories.
 *
 * @module
 */

import { statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Where a step reports "name: what (123 ms)"; `undefined` keeps it quiet. */
export type StepLogger = ((line: string) => void) | undefined;

/** Options shared by the ensure* functions. */
export interface EnsureOptions {
  /** Receives one line per step done (default: quiet). */
  log?: StepLogger;
}

/** What {@linkcode run} returns. */
export interface RunResult {
  /** Exit status. */
  code: number;
  /** stdout, decoded. */
  stdout: string;
  /** stderr, decoded. */
  stderr: string;
}

/** The project's root directory (the parent of `scripts/`). */
export function projectDir(): string {
  return dirname(dirname(fileURLToPath(import.meta.url)));
}

/** The cache directory: `$VIRTIOFSD_CACHE`, else `<project>/.cache`. */
export function cacheDir(): string {
  return Deno.env.get("VIRTIOFSD_CACHE") || join(projectDir(), ".cache");
}

/**
 * Runs `cmd args` and returns its status and output; throws (with stderr) on a non-zero status
 * unless `check` is false.
 */
export async function run(
  cmd: string,
  args: readonly string[],
  opts: { cwd?: string; env?: Record<string, string>; check?: boolean } = {},
): Promise<RunResult> {
  const out = await new Deno.Command(cmd, {
    args: [...args],
    cwd: opts.cwd,
    env: opts.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  const result = { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  if (opts.check !== false && out.code !== 0) {
    throw new Error(
      `Cannot run ${cmd} ${args.join(" ")}: exit status ${out.code}\n${
        result.stderr.trim().slice(-4000)
      }`,
    );
  }
  return result;
}

/** Finds an executable on `$PATH` (plus the sbin directories), without spawning anything. */
export function which(name: string): string | undefined {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").filter((d) => d !== "");
  for (const d of ["/usr/local/sbin", "/usr/sbin", "/sbin"]) if (!dirs.includes(d)) dirs.push(d);
  for (const d of dirs) {
    const p = join(d, name);
    try {
      const st = statSync(p);
      if (st.isFile() && (st.mode & 0o111) !== 0) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** True if `path` exists (following symlinks). */
export function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Runs one step and logs "name: what (N ms)", where `fn` returns `[value, what]`. */
export async function timed<T>(
  log: StepLogger,
  name: string,
  fn: () => Promise<[T, string]>,
): Promise<T> {
  const t0 = performance.now();
  const [value, what] = await fn();
  log?.(`${name}: ${what} (${Math.round(performance.now() - t0)} ms)`);
  return value;
}

/** Runs apt-get non-interactively as root (no sandbox user, so it may write anywhere). */
export async function aptGet(
  args: readonly string[],
  opts: { cwd?: string } = {},
): Promise<RunResult> {
  return await run("apt-get", ["-q", "-o", "APT::Sandbox::User=root", ...args], {
    cwd: opts.cwd,
    env: { DEBIAN_FRONTEND: "noninteractive" },
  });
}

/** Runs an apt-get command; if it fails, runs `apt-get update` once and tries again. */
export async function aptGetWithUpdate(
  args: readonly string[],
  opts: { cwd?: string } = {},
): Promise<RunResult> {
  try {
    return await aptGet(args, opts);
  } catch {
    await aptGet(["update"]);
    return await aptGet(args, opts);
  }
}
