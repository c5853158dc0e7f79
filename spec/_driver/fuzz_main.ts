/**
 * `deno task fuzz -- --cases N --seed S [--daemon ours] [--break-share P]`: seeded random-ring
 * fuzzing of our daemon (started with {@linkcode FUZZ_DAEMON_ARGS}: `--keep-serving` and a 16 MiB
 * cache window, the share holding the one 8 MiB file DAX requests map) through
 * {@linkcode runFuzz}. `P` is the share of cases that break the ring on purpose (default 0.004;
 * 0 leaves them out).
 *
 * Prints progress every 10,000 cases with the daemon's resident memory, the memory after the
 * first 100 cases and at the end, and the malformed-chain count from the daemon's log next to the
 * count the model expects. Exits 1 when a check failed, a case took over 1 s (plus
 * {@linkcode DAX_ALLOWANCE_MS} per window change in its batch), the daemon died or
 * hung, its anonymous memory (RssAnon) grew by more than {@linkcode MEMORY_GROWTH_LIMIT_KIB}
 * (32 MiB), it still holds a descriptor of the mapped file after the run (a mapping leaked),
 * the window was missing, the daemon asked the front end for a map QEMU refuses, or the
 * counts differ; 2 for a bad command line.
 *
 * The memory check is about what a guest can make the daemon keep, so it measures what the daemon
 * allocated (RssAnon: not the binary's code paged in, nor guest RAM it maps) and runs the daemon
 * with {@linkcode FUZZ_DAEMON_V8_FLAGS}, which pins V8's young generation: left to itself V8
 * grows it with the allocation rate to 64 MiB per isolate, which made 500,000 cases "grow" 41 MiB
 * and 1.5 million 80 MiB although the live heap stayed at 5 MiB (see there). The fuzz leaves no
 * inode or handle behind (it creates nothing; the one file it maps is looked up once per FUSE
 * session), so none of the allowed growth is guest-held state.
 * `DENO_V8_FLAGS` set for this command is passed on after ours (e.g. `--trace-gc`; its lines go
 * to the daemon's log).
 *
 * @module
 */
import { join } from "node:path";
import { startDaemon } from "./daemon.ts";
import {
  daemonRefusedChains,
  DAX_ALLOWANCE_MS,
  FUZZ_DAEMON_ARGS,
  FUZZ_DAEMON_V8_FLAGS,
  FUZZ_DAX_FILE,
  fuzzDaemonEnv,
  type FuzzStats,
  type MemKiB,
  MEMORY_GROWTH_LIMIT_KIB,
  prepareFuzzShare,
  readMemKiB,
  runFuzz,
} from "./hostile.ts";

/** The parsed command line. */
export interface FuzzArgs {
  /** Cases to run. */
  cases: number;
  /** PRNG seed. */
  seed: number;
  /** The daemon (only ours serves `--keep-serving`). */
  daemon: "ours";
  /** The share of cases that break the ring on purpose (`--break-share`, default 0.004). */
  breakShare: number;
}

/** Parses the command line; throws a message for a bad one. */
export function parseFuzzArgs(args: readonly string[]): FuzzArgs {
  const out: FuzzArgs = {
    cases: 10_000,
    seed: Date.now() % 0x1_0000_0000,
    daemon: "ours",
    breakShare: 0.004,
  };
  const rest = args.filter((a) => a !== "--");
  for (let i = 0; i < rest.length; i++) {
    const flag = rest[i] ?? "";
    const [name, inline] = flag.includes("=") ? flag.split("=", 2) : [flag, undefined];
    const value = (): string => {
      const v = inline ?? rest[++i];
      if (v === undefined) throw new Error(`${name} needs a value`);
      return v;
    };
    switch (name) {
      case "--cases": {
        const n = Number(value());
        if (!Number.isSafeInteger(n) || n < 1) {
          throw new Error("--cases must be a positive integer");
        }
        out.cases = n;
        break;
      }
      case "--seed": {
        const n = Number(value());
        if (!Number.isSafeInteger(n) || n < 0) throw new Error("--seed must be an integer ≥ 0");
        out.seed = n;
        break;
      }
      case "--daemon": {
        const d = value();
        if (d !== "ours") {
          throw new Error(
            `--daemon ${d}: only "ours" can be fuzzed (the cases need --keep-serving and ` +
              "a device that refuses malformed chains one by one)",
          );
        }
        out.daemon = d;
        break;
      }
      case "--break-share": {
        const n = Number(value());
        if (!(n >= 0 && n <= 1)) throw new Error("--break-share must be in [0, 1]");
        out.breakShare = n;
        break;
      }
      default:
        throw new Error(`unknown argument ${flag}`);
    }
  }
  return out;
}

function mib(kib: number | undefined): string {
  return kib === undefined ? "?" : `${(kib / 1024).toFixed(1)} MiB`;
}

function mem(m: MemKiB | undefined): string {
  return m === undefined
    ? "?"
    : `${mib(m.anon)} anon (VmRSS ${mib(m.rss)}, file ${mib(m.file)}, shmem ${mib(m.shmem)})`;
}

function count(text: string, re: RegExp): number {
  return [...text.matchAll(re)].length;
}

/** The descriptors of `pid` open on `path` (undefined if the process is gone). */
function fdsOn(pid: number, path: string): number | undefined {
  let n = 0;
  try {
    for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
      try {
        if (Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`) === path) n++;
      } catch { /* closed meanwhile */ }
    }
  } catch {
    return undefined;
  }
  return n;
}

/**
 * The daemon's descriptors of `path` once it has let go of the closed connection (polled up to
 * 2 s for 0).
 */
async function settledFdsOn(pid: number, path: string): Promise<number | undefined> {
  const until = performance.now() + 2000;
  for (;;) {
    const n = fdsOn(pid, path);
    if (n === undefined || n === 0 || performance.now() > until) return n;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The share of one CPU that `pid` used over `ms` (utime + stime from /proc/PID/stat). */
async function cpuShare(pid: number, ms: number): Promise<number | undefined> {
  const ticks = (): number | undefined => {
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      return Number(f[11]) + Number(f[12]);
    } catch {
      return undefined;
    }
  };
  const a = ticks();
  await new Promise((r) => setTimeout(r, ms));
  const b = ticks();
  return a === undefined || b === undefined ? undefined : (b - a) / 100 / (ms / 1000);
}

/** Runs the fuzzer; resolves to the exit status. */
export async function fuzzMain(args: readonly string[]): Promise<number> {
  let a: FuzzArgs;
  try {
    a = parseFuzzArgs(args);
  } catch (e) {
    console.error(`fuzz: ${(e as Error).message}`);
    console.error(
      "usage: deno task fuzz -- --cases N --seed S [--daemon ours] [--break-share 0.004]",
    );
    return 2;
  }
  const shared = await Deno.makeTempDir({ prefix: "fuzz-share-" });
  prepareFuzzShare(shared);
  const daemon = await startDaemon(a.daemon, {
    sharedDir: shared,
    extraArgs: [...FUZZ_DAEMON_ARGS],
    env: fuzzDaemonEnv(),
  });
  const problems: string[] = [];
  let mem100: MemKiB | undefined;
  let stats: FuzzStats | undefined;
  console.log(
    `fuzz: seed ${a.seed}, ${a.cases} cases, daemon ${a.daemon} (pid ${daemon.pid}, ` +
      `${daemon.socketPath}, ${
        FUZZ_DAEMON_ARGS.join(" ")
      }, DENO_V8_FLAGS ${fuzzDaemonEnv().DENO_V8_FLAGS})`,
  );
  const t0 = performance.now();
  try {
    stats = await runFuzz({
      socketPath: daemon.socketPath,
      seed: a.seed,
      cases: a.cases,
      breakShare: a.breakShare,
      onProgress: (done, s) => {
        if (done === 100) {
          mem100 = readMemKiB(daemon.pid);
          console.log(`memory after the first 100 cases: ${mem(mem100)}`);
        }
        if (done % 10_000 === 0 || done === a.cases) {
          const secs = s.elapsedMs / 1000;
          console.log(
            `[${done}/${a.cases}] ${secs.toFixed(1)} s, ${Math.round(done / secs)} cases/s; ` +
              `sentinel max ${s.sentinelMaxMs.toFixed(1)} ms; case max ${
                s.caseMaxMs.toFixed(1)
              } ms; ` +
              `${s.expectedRefused} refusals expected; ${s.failures} failures; ${
                mem(readMemKiB(daemon.pid))
              }`,
          );
        }
      },
    });
  } catch (e) {
    problems.push(`the run stopped: ${(e as Error).message}`);
  }
  const elapsed = (performance.now() - t0) / 1000;
  const memEnd = readMemKiB(daemon.pid);
  // Each mapping holds a descriptor of the file: none may outlive the connection.
  const daxFile = join(await Deno.realPath(shared), FUZZ_DAX_FILE);
  const daxFds = await settledFdsOn(daemon.pid, daxFile);
  console.log(`descriptors of the mapped file the daemon holds after the run: ${daxFds ?? "?"}`);
  if (daxFds !== undefined && daxFds > 0) {
    problems.push(`the daemon still holds ${daxFds} descriptors of ${daxFile} after the run`);
  }
  console.log(`memory at the end: ${mem(memEnd)}; after the first 100 cases: ${mem(mem100)}`);
  if (memEnd === undefined) problems.push("the daemon died");
  else if (mem100 !== undefined && memEnd.anon - mem100.anon > MEMORY_GROWTH_LIMIT_KIB) {
    problems.push(
      `RssAnon grew by ${mib(memEnd.anon - mem100.anon)} (limit ${
        mib(MEMORY_GROWTH_LIMIT_KIB)
      }, V8 flags ${FUZZ_DAEMON_V8_FLAGS}): the daemon keeps memory the guest made it allocate`,
    );
  }

  if (problems.length > 0 && memEnd !== undefined) {
    const cpu = await cpuShare(daemon.pid, 500);
    if (cpu !== undefined) console.log(`daemon CPU over 0.5 s: ${Math.round(cpu * 100)}%`);
  }
  // Stop it with SIGTERM to get its statistics line; a hung daemon is killed.
  let exitText = "";
  if (!daemon.hasExited()) {
    try {
      Deno.kill(daemon.pid, "SIGTERM");
    } catch { /* gone */ }
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const exit = await Promise.race([
    daemon.exited,
    new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), 5000)),
  ]);
  clearTimeout(timer);
  if (exit === undefined) problems.push("the daemon did not stop within 5 s of SIGTERM (hung?)");
  else {
    exitText = `exit code ${exit.code}${exit.signal ? ` (signal ${exit.signal})` : ""}`;
    if (memEnd !== undefined && exit.code !== 0) {
      problems.push(`the daemon ended with ${exitText} at SIGTERM`);
    }
  }
  const log = daemon.stderrText();
  await daemon.stop(100);
  await Deno.remove(shared, { recursive: true }).catch(() => {});

  const refused = daemonRefusedChains(log);
  console.log(
    `daemon ${exitText || "killed"}; log ${(log.length / 1024 / 1024).toFixed(1)} MiB: ` +
      `${count(log, /\bWARN\]/g)} WARN lines, ${count(log, /\bERROR\]/g)} ERROR lines`,
  );
  if (stats !== undefined) {
    const s = stats;
    console.log(
      `${s.cases} cases in ${elapsed.toFixed(1)} s; ${s.chains} chains published: ` +
        `${s.malformed} malformed (${s.headOutOfRange} with the head out of range), ` +
        `${s.answered} answered, ${s.repliesChecked} replies checked; ${s.ringsBroken} rings ` +
        `broken on purpose, ${s.ringResets} ring resets, ${s.reconnects} reconnects`,
    );
    console.log(
      `sentinel latency: max ${s.sentinelMaxMs.toFixed(2)} ms, mean ${
        s.sentinelMeanMs.toFixed(3)
      } ms; slowest case ${s.caseMaxMs.toFixed(2)} ms`,
    );
    console.log(
      `refused chains: daemon log ${refused.count}${refused.exact ? "" : " (at least)"}, ` +
        `model ${s.expectedRefused}`,
    );
    const d = s.dax;
    console.log(
      `DAX: ${d.setups} SETUPMAPPING (${d.validSetups} with valid fields), ${d.removals} ` +
        `REMOVEMAPPING; window: ${d.maps} maps, ${d.unmaps} unmaps, ${d.dropped} dropped at ` +
        `resets, ${d.refused} refused, at most ${d.maxMappings} live; ${d.windowChecks} ` +
        `whole-window checks; ${d.lookups} LOOKUPs of the file (${d.lookupFailures} failed, ` +
        `${d.reinits} INITs first)`,
    );
    const daxLine = /DAX: .*/.exec(log)?.[0];
    if (daxLine !== undefined) console.log(`daemon: ${daxLine}`);
    console.log(`kinds: ${JSON.stringify(s.kinds)}`);
    if (s.failures > 0) {
      problems.push(`${s.failures} failed checks:\n  ${s.failureSamples.join("\n  ")}`);
    }
    if (s.slowCases > 0) {
      problems.push(
        `${s.slowCases} cases took over 1 s (plus ${DAX_ALLOWANCE_MS} ms per window change)`,
      );
    }
    if (!d.window) problems.push("the front end got no cache window (no DAX was fuzzed)");
    if (d.refused > 0) {
      problems.push(`the daemon asked the front end for ${d.refused} maps QEMU refuses`);
    }
    if (d.window && d.windowChecks === 0) problems.push("no whole-window check passed");
    if (s.reconnects > 0) problems.push(`the daemon closed the connection ${s.reconnects} times`);
    if (refused.exact && refused.count !== s.expectedRefused) {
      problems.push(
        `the daemon refused ${refused.count} chains, the model expected ${s.expectedRefused}`,
      );
    }
  }
  if (problems.length > 0) {
    console.log(`FAILED (seed ${a.seed}):\n- ${problems.join("\n- ")}`);
    return 1;
  }
  console.log(`ok (seed ${a.seed})`);
  return 0;
}

if (import.meta.main) Deno.exit(await fuzzMain(Deno.args));
