/**
 * Guest-side probing for the cache-mode and writeback specs: the `vfsprobe` tool
 * (`fixtures/guest-tools/vfsprobe.c`, compiled statically on the host and copied into the guest
 * through the share), parsers of its output, a wait for its console marks while it runs, and a
 * counter of the FUSE requests a daemon logged (ours with `--log-level trace`, C virtiofsd with
 * `-d`, Rust virtiofsd with `--log-level debug`).
 *
 * The host acts while a guest command runs: `vfsprobe` prints `@@MARK <text>` on the serial
 * console at a known point, {@linkcode waitMark} sees it, the host changes files, then creates a
 * signal file the tool polls for. Every time the tool reports is its own monotonic clock
 * (microseconds since its first round), so bounds are measured in the guest, never assumed.
 *
 * @example
 * ```ts ignore
 * const probe = await installVfsprobe(sharedDir);          // in the share, before boot
 * await guest.shOk(probe.copyCmd("/mnt"));               // to the guest's /tmp
 * const run = guest.sh(`${VFSPROBE} watch -m m1 -s /mnt/go stat:/mnt/f`);
 * await waitMark(guest, "m1");
 * Deno.chmodSync(join(sharedDir, "f"), 0o600);
 * Deno.writeFileSync(join(sharedDir, "go"), new Uint8Array());
 * const w = parseWatch((await run).out);
 * ```
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { DaemonKind } from "./daemon.ts";
import type { QemuGuest } from "./qemu_guest.ts";

const PROJECT_ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** The tool's C source. */
export const VFSPROBE_SOURCE: string = join(PROJECT_ROOT, "fixtures", "guest-tools", "vfsprobe.c");
/** Where the tool runs from in the guest (a tmpfs, so running it costs the share nothing). */
export const VFSPROBE = "/tmp/vfsprobe";
/** The directory of the share the tool is put in. */
export const TOOLS_DIR = ".guest-tools";

/** The tool as installed in a share. */
export interface InstalledProbe {
  /** Its path on the host. */
  hostPath: string;
  /** The guest command copying it from the share mounted at `mountPoint` to {@linkcode VFSPROBE}. */
  copyCmd(mountPoint: string): string;
}

/**
 * Compiles `vfsprobe.c` statically (cached under `.cache/guest-tools/` by the source's hash)
 * and returns the binary's path. Throws with the compiler's output when `cc` fails.
 */
export async function buildVfsprobe(): Promise<string> {
  const src = await Deno.readFile(VFSPROBE_SOURCE);
  const hash = createHash("sha256").update(src).digest("hex").slice(0, 16);
  const dir = join(PROJECT_ROOT, ".cache", "guest-tools");
  const bin = join(dir, `vfsprobe-${hash}`);
  try {
    await Deno.stat(bin);
    return bin;
  } catch {
    // not built yet
  }
  await Deno.mkdir(dir, { recursive: true });
  const tmp = `${bin}.tmp${Deno.pid}`;
  const out = await new Deno.Command("cc", {
    args: ["-static", "-O2", "-Wall", "-o", tmp, VFSPROBE_SOURCE],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `cc -static ${VFSPROBE_SOURCE} failed (code ${out.code}):\n` +
        new TextDecoder().decode(out.stderr),
    );
  }
  await Deno.rename(tmp, bin);
  return bin;
}

/** Builds the tool and copies it into `sharedDir/.guest-tools/`. */
export async function installVfsprobe(sharedDir: string): Promise<InstalledProbe> {
  const bin = await buildVfsprobe();
  const dir = join(sharedDir, TOOLS_DIR);
  await Deno.mkdir(dir, { recursive: true });
  const hostPath = join(dir, "vfsprobe");
  await Deno.copyFile(bin, hostPath);
  await Deno.chmod(hostPath, 0o755);
  return {
    hostPath,
    copyCmd: (mountPoint) =>
      `cp ${mountPoint}/${TOOLS_DIR}/vfsprobe ${VFSPROBE} && chmod 755 ${VFSPROBE}`,
  };
}

// ---- vfsprobe watch ---------------------------------------------------------------------------

/** One observation `vfsprobe watch` printed (round 0, or a change). */
export interface Observation {
  /** The round it was made in. */
  round: number;
  /** When it began, in ms since round 0 began. */
  tMs: number;
  /** What was seen. */
  value: string;
}

/** The parsed output of `vfsprobe watch`. */
export interface WatchResult {
  /** Per probe (in command-line order), its round-0 observation and every change. */
  probes: Observation[][];
  /** When the signal file was first seen: its round and time (ms); undefined if never. */
  signal?: { round: number; tMs: number };
  /** Rounds made. */
  rounds: number;
  /** When the tool ended (ms). */
  endMs: number;
  /** The raw output. */
  raw: string;
}

/** Parses the output of `vfsprobe watch`; throws (with the output) if it did not end. */
export function parseWatch(out: string): WatchResult {
  const probes: Observation[][] = [];
  let signal: WatchResult["signal"];
  let rounds = -1;
  let endMs = 0;
  for (const line of out.split("\n")) {
    let m = /^O (\d+) (\d+) (\d+) (.*)$/.exec(line);
    if (m !== null) {
      const i = Number(m[3]);
      (probes[i] ??= []).push({ round: Number(m[1]), tMs: Number(m[2]) / 1000, value: m[4] ?? "" });
      continue;
    }
    m = /^S (\d+) (\d+)$/.exec(line);
    if (m !== null) {
      signal = { round: Number(m[1]), tMs: Number(m[2]) / 1000 };
      continue;
    }
    m = /^E (\d+) (\d+)$/.exec(line);
    if (m !== null) {
      rounds = Number(m[1]);
      endMs = Number(m[2]) / 1000;
    }
  }
  if (rounds < 0) throw new Error(`vfsprobe watch did not finish:\n${out}`);
  return { probes, ...(signal !== undefined ? { signal } : {}), rounds, endMs, raw: out };
}

/** What one probe showed over a watch, relative to the signal. */
export interface Flip {
  /** Its round-0 observation (the cached view). */
  before: string;
  /** The first observation that differs from `before`, or undefined if none did. */
  first?: Observation;
  /** Whether a round after the signal was seen still showed `before`. */
  staleAfterSignal: boolean;
}

/** Summarises probe `i` of `w`: its first change, and whether it was stale after the signal. */
export function flipOf(w: WatchResult, i: number): Flip {
  const obs = w.probes[i];
  if (obs === undefined || obs.length === 0) throw new Error(`probe ${i} has no observation`);
  const before = obs[0]?.value ?? "";
  const first = obs.find((o) => o.value !== before);
  const s = w.signal;
  const staleAfterSignal = s !== undefined && (first === undefined || first.round > s.round);
  return { before, ...(first !== undefined ? { first } : {}), staleAfterSignal };
}

// ---- vfsprobe do ------------------------------------------------------------------------------

/** One action `vfsprobe do` reported. */
export interface ActionResult {
  /** Its position on the command line (from 1). */
  index: number;
  /** When it ended, ms since the first action began. */
  tMs: number;
  /** The action's name (open, write, ...). */
  name: string;
  /** "ok", "ok n=4096", "err=ENODEV", ... */
  result: string;
}

/** Parses the output of `vfsprobe do`. */
export function parseDo(out: string): ActionResult[] {
  const actions: ActionResult[] = [];
  for (const line of out.split("\n")) {
    const m = /^A (\d+) (\d+) (\S+) (.*)$/.exec(line);
    if (m === null) continue;
    actions.push({
      index: Number(m[1]),
      tMs: Number(m[2]) / 1000,
      name: m[3] ?? "",
      result: m[4] ?? "",
    });
  }
  return actions;
}

// ---- marks on the console ---------------------------------------------------------------------

/**
 * Waits until the guest's console shows `@@MARK <text>` (printed by a `vfsprobe` still running
 * in `guest.sh`), polling every millisecond or two. Throws after `timeoutMs` (default 30000).
 * Marks must be unique within a guest's life.
 */
export async function waitMark(guest: QemuGuest, text: string, timeoutMs = 30_000): Promise<void> {
  const line = `@@MARK ${text}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (guest.consoleTail(40).split("\n").some((l) => l.trim() === line)) return;
    if (Date.now() > deadline) {
      throw new Error(
        `No "${line}" on the guest console after ${timeoutMs} ms; last lines:\n` +
          guest.consoleTail(20),
      );
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}

// ---- the daemon's request log -----------------------------------------------------------------

/** One FUSE request a daemon logged. */
export interface LoggedRequest {
  /** FUSE opcode. */
  opcode: number;
  /** Its nodeid, when the daemon logs it (C and Rust do). */
  nodeid?: bigint;
}

/** The arguments that make `kind` log every FUSE request it receives. */
export function requestLogArgs(kind: DaemonKind): string[] {
  switch (kind) {
    case "ours":
      return ["--log-level", "trace"];
    case "c":
      return ["-d"];
    case "rust":
      return ["--log-level", "debug"];
  }
}

const OURS_RE = /\b[A-Z_0-9]+\((\d+)\) unique (\d+)(?: nodeid (\d+))?/;
const C_RE = /unique: \d+, opcode: [A-Z_0-9]+ \((\d+)\), nodeid: (\d+)/;
const RUST_RE = /Received request: opcode=\w+ \((\d+)\), inode=(\d+)/;

/** The requests in a log text of `kind` (see {@linkcode requestLogArgs}). */
export function parseRequests(kind: DaemonKind, text: string): LoggedRequest[] {
  const out: LoggedRequest[] = [];
  for (const line of text.split("\n")) {
    let m: RegExpExecArray | null;
    switch (kind) {
      case "ours":
        m = OURS_RE.exec(line);
        if (m !== null) {
          out.push({
            opcode: Number(m[1]),
            ...(m[3] !== undefined ? { nodeid: BigInt(m[3]) } : {}),
          });
        }
        break;
      case "c":
        m = C_RE.exec(line);
        if (m !== null) out.push({ opcode: Number(m[1]), nodeid: BigInt(m[2] ?? "0") });
        break;
      case "rust":
        m = RUST_RE.exec(line);
        if (m !== null) out.push({ opcode: Number(m[1]), nodeid: BigInt(m[2] ?? "0") });
        break;
    }
  }
  return out;
}

/**
 * A position in a daemon's log: `since()` returns the requests logged after it. Take it only
 * when the guest is idle on the share (every earlier request answered, so logged).
 */
export class RequestLog {
  readonly #kind: DaemonKind;
  readonly #text: () => string;
  #offset: number;

  /** A position at the current end of `text()`, a log of daemon `kind`. */
  constructor(kind: DaemonKind, text: () => string) {
    this.#kind = kind;
    this.#text = text;
    this.#offset = text().length;
  }

  /** Moves the position to the current end of the log. */
  mark(): void {
    this.#offset = this.#text().length;
  }

  /** The requests logged since the position. */
  since(): LoggedRequest[] {
    return parseRequests(this.#kind, this.#text().slice(this.#offset));
  }

  /** How many requests of each opcode were logged since the position. */
  counts(): Map<number, number> {
    const m = new Map<number, number>();
    for (const r of this.since()) m.set(r.opcode, (m.get(r.opcode) ?? 0) + 1);
    return m;
  }
}
