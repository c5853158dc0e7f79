/**
 * What the guest asked and what it cost: a count per opcode of every request, and a latency
 * histogram per opcode from a sample of them (the device times one request in
 * {@linkcode SAMPLE_EVERY}, so the clock costs a few nanoseconds per request on average). The
 * daemon logs the summary when it stops; `deno task bench:guest` and the issue-17 probes read it
 * to compare what a workload sends to us and to other daemons.
 *
 * @module
 */
import { opcodeName } from "../wire/fuse.ts";

/** Opcodes 0–62 have a slot of their own; every other opcode shares the last one. */
const SLOTS = 64;
/** Histogram buckets per octave of microseconds. */
const PER_OCTAVE = 4;
/** Buckets: from 1 µs (and below) to 2^24 µs (17 s) and above. */
const BUCKETS = 24 * PER_OCTAVE + 1;
/** One request in this many is timed (a power of 2). */
export const SAMPLE_EVERY = 64;

/** One opcode's line of the summary. */
export interface OpcodeSummary {
  /** The opcode (63 stands for every opcode above 62). */
  opcode: number;
  /** Requests counted. */
  count: number;
  /** Requests timed. */
  sampled: number;
  /** Median service time of the timed ones, µs (the bucket's upper edge), or NaN. */
  p50: number;
  /** 99th percentile, µs, or NaN. */
  p99: number;
  /** Longest, µs (the bucket's upper edge), or NaN. */
  max: number;
}

/** Per-opcode counts and sampled latency histograms. */
export class RequestStats {
  readonly #counts = new Float64Array(SLOTS);
  readonly #hist = new Float64Array(SLOTS * BUCKETS);
  #seq = 0;

  /** Counts one request of `opcode`. */
  count(opcode: number): void {
    const slot = opcode < SLOTS - 1 ? opcode : SLOTS - 1;
    this.#counts[slot] = (this.#counts[slot] as number) + 1;
  }

  /** Whether the next request should be timed (true once every {@linkcode SAMPLE_EVERY}). */
  timeNext(): boolean {
    return ((++this.#seq) & (SAMPLE_EVERY - 1)) === 0;
  }

  /** Adds a timed request of `opcode` that took `us` microseconds. */
  sample(opcode: number, us: number): void {
    const slot = opcode < SLOTS - 1 ? opcode : SLOTS - 1;
    let b = us <= 1 ? 0 : Math.ceil(Math.log2(us) * PER_OCTAVE);
    if (b >= BUCKETS) b = BUCKETS - 1;
    const at = slot * BUCKETS + b;
    this.#hist[at] = (this.#hist[at] as number) + 1;
  }

  /** Every opcode seen, most requested first. */
  summary(): OpcodeSummary[] {
    const out: OpcodeSummary[] = [];
    for (let slot = 0; slot < SLOTS; slot++) {
      const count = this.#counts[slot] ?? 0;
      if (count === 0) continue;
      let sampled = 0;
      for (let b = 0; b < BUCKETS; b++) sampled += this.#hist[slot * BUCKETS + b] ?? 0;
      out.push({
        opcode: slot,
        count,
        sampled,
        p50: this.#quantile(slot, sampled, 0.5),
        p99: this.#quantile(slot, sampled, 0.99),
        max: this.#quantile(slot, sampled, 1),
      });
    }
    return out.sort((a, b) => b.count - a.count);
  }

  /** The summary as one log line: `GETATTR 707 (p50 6 µs, p99 40 µs), ...`. */
  line(): string {
    const parts = this.summary().map((s) => {
      const name = s.opcode === SLOTS - 1 ? "OTHER" : opcodeName(s.opcode).replace(/\(\d+\)$/, "");
      const t = s.sampled === 0
        ? ""
        : ` (p50 ${round(s.p50)} µs, p99 ${round(s.p99)} µs, max ${round(s.max)} µs)`;
      return `${name} ${s.count}${t}`;
    });
    return parts.length === 0 ? "none" : parts.join(", ");
  }

  /** Forgets everything. */
  clear(): void {
    this.#counts.fill(0);
    this.#hist.fill(0);
  }

  #quantile(slot: number, sampled: number, q: number): number {
    if (sampled === 0) return NaN;
    const rank = Math.max(1, Math.ceil(q * sampled));
    let seen = 0;
    for (let b = 0; b < BUCKETS; b++) {
      seen += this.#hist[slot * BUCKETS + b] ?? 0;
      if (seen >= rank) return 2 ** (b / PER_OCTAVE);
    }
    return Infinity;
  }
}

function round(us: number): string {
  return us >= 100 ? us.toFixed(0) : us >= 10 ? us.toFixed(0) : us.toFixed(1);
}
