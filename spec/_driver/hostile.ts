/**
 * A hostile guest driver for random-ring fuzzing: a seeded PRNG, generators of random descriptor
 * tables, indirect tables, avail ring entries and FUSE requests, a reference model of what a
 * virtio-fs device must do with each chain, and {@linkcode runFuzz}, which plays seeded cases
 * against a live back end over one {@linkcode VhostUserFrontend} connection.
 *
 * Each case writes its descriptors and avail entries straight into the live ring of the first
 * request queue (queue 1), publishes and kicks, then sends a SENTINEL (FUSE_GETATTR of nodeid 1,
 * after FUSE_INIT) whose reply must come within 1 s (plus 10 ms for each request of the batch
 * that changes the cache window: {@linkcode DAX_ALLOWANCE_MS}). A case that breaks the ring on
 * purpose (avail idx moved more than the queue size) expects the sentinel to be ignored, then sets
 * the rings up again (stopQueue + restartQueues) and sends it again.
 *
 * The model (`modelChain`) walks each published chain the way virtio 1.2 §2.7.5 describes it
 * and predicts the device's answer: a malformed chain (head or next out of range, a loop or a
 * chain longer than the queue, a buffer outside guest memory, a device-readable buffer after a
 * device-writable one, an indirect table that is empty, not a multiple of 16 bytes, nested,
 * combined with NEXT, or not inside one memory region) comes back on the used ring with length 0
 * (or not at all when its head is out of range); a well-formed one whose request has a header
 * and room for a reply is answered with `fuse_out_header.unique` equal to the request's. Every
 * used element of every case is checked against it. Used elements may come back in any order
 * (the daemon answers a SETUPMAPPING once the front end has mapped the range): each is matched to
 * a published entry with its head, and a reply is checked only when no other chain of the batch
 * that may be answered after it could write over it.
 *
 * Guest memory (fixed per connection, reused by every case):
 *
 * | region | guest-physical | use |
 * | --- | --- | --- |
 * | A | 0x100000, 2 MiB | rings, sentinel buffers |
 * | B | 0x400000, 256 KiB | read zones: random bytes and indirect tables, structured requests; last 64 KiB a border |
 * | C | 0x440000, 256 KiB (adjacent to B) | first 64 KiB a border; write zones of structured and random chains |
 *
 * The device only ever writes into write zones, the borders and the sentinel's reply buffer, so
 * what the model read before publishing is what the device reads.
 *
 * DAX: the daemon under fuzz runs with a 16 MiB cache window ({@linkcode FUZZ_DAEMON_ARGS}: at
 * most 8 live mappings) and the share holds one 8 MiB file ({@linkcode prepareFuzzShare}); the
 * front end plays QEMU 11.1's window (`cacheWindow`) and services the daemon's SHMEM_MAP /
 * SHMEM_UNMAP whenever the driver waits. "dax" units are FUSE_SETUPMAPPING and
 * FUSE_REMOVEMAPPING requests laid out as the structured ones, their fields random but biased
 * towards what maps (page-aligned offsets inside the file and the window, the file's nodeid,
 * `fh` = -1) and towards the edges (unaligned, zero, huge and wrapping values, unknown flags, the
 * root directory, bogus handles, REMOVEMAPPING counts of 0, 256, 257 and more than the payload
 * holds). After every case the window may hold at most 8 mappings and the daemon may never have
 * asked the front end for what QEMU refuses (`windowStats.refused` stays 0); every
 * {@linkcode WINDOW_CHECK_EVERY} cases and at the end a REMOVEMAPPING of the whole window must
 * leave the front end's window empty, its counters adding up (maps = unmaps + dropped).
 *
 * The driver learns the file's nodeid with one LOOKUP round trip per FUSE session: when it
 * connects, and again after anything that may have ended the session or forgotten the node (a
 * ring reset, or a structured INIT, DESTROY, FORGET or BATCH_FORGET it published), after an
 * INIT round trip when there is no session (a DESTROY and no INIT since: a guest mounting
 * again). Each LOOKUP adds one to the node's lookup count in the daemon, and each session reset
 * forgets every node, so what the driver makes the daemon hold stays one inode (and a counter).
 *
 * The model knows guest RAM only: a descriptor pointing into the window (above 4 GiB) would be
 * called "outside guest memory" although the daemon may have the range mapped. Random addresses
 * reach it only through the "wild" class (a fully random 64-bit address: about one in 2^40), so
 * no case in millions does.
 *
 * @module
 */
import { join } from "node:path";
import { eventfdConsume, poll, POLLERR, POLLHUP, POLLIN, POLLNVAL } from "../../src/ffi/mod.ts";
import {
  ATTR_OUT,
  ENTRY_OUT,
  FUSE_ACCESS,
  FUSE_BATCH_FORGET,
  FUSE_DAX_SHIFT,
  FUSE_DESTROY,
  FUSE_FLUSH,
  FUSE_FORGET,
  FUSE_GETATTR,
  FUSE_GETXATTR,
  FUSE_INIT,
  FUSE_INTERRUPT,
  FUSE_LISTXATTR,
  FUSE_LOOKUP,
  FUSE_MAP_ALIGNMENT,
  FUSE_NOTIFY_REPLY,
  FUSE_READLINK,
  FUSE_REMOVEMAPPING,
  FUSE_REMOVEMAPPING_MAX_ENTRY,
  FUSE_SETUPMAPPING,
  FUSE_SETUPMAPPING_FLAG_READ,
  FUSE_SETUPMAPPING_FLAG_WRITE,
  FUSE_STATFS,
  GETATTR_IN,
  IN_HEADER,
  INIT_IN,
  INIT_OUT,
  OUT_HEADER,
  REMOVEMAPPING_IN,
  REMOVEMAPPING_ONE,
  SETUPMAPPING_IN,
} from "../../src/wire/fuse.ts";
import { VHOST_USER_GET_FEATURES, VHOST_USER_VERSION } from "../../src/wire/vhost_user.ts";
import { PEER_CLOSED, REPLY_FLAGS, VhostUserFrontend } from "../../src/driver/frontend.ts";
import type { GuestRam, GuestRegionSpec } from "../../src/driver/guest_ram.ts";
import {
  type GuestQueue,
  type RawDescriptor,
  readRawDescriptorAt,
  writeRawDescriptorAt,
} from "../../src/driver/guest_queue.ts";
import {
  DESCRIPTOR_SIZE,
  MAX_INDIRECT_DESCRIPTORS as MAX_INDIRECT,
  VIRTQ_DESC_ALIGN,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../../src/wire/virtio.ts";

// ---- PRNG ---------------------------------------------------------------------------------------

/** A deterministic PRNG (mulberry32): the same seed gives the same sequence, on any machine. */
export class Rng {
  #state: number;

  /** Seeds with the low 32 bits of `seed` (any integer; fractions are truncated). */
  constructor(seed: number) {
    this.#state = Math.trunc(seed) >>> 0;
  }

  /** The next 32-bit unsigned value. */
  u32(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in [0, n) (n ≥ 1, up to 2^32). */
  int(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  /** An integer in [lo, hi] inclusive. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    const v = items[this.int(items.length)];
    if (v === undefined) throw new RangeError("Cannot pick from an empty array");
    return v;
  }

  /** A key of `weights` chosen with probability proportional to its weight. */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K {
    const entries = Object.entries(weights) as [K, number][];
    const total = entries.reduce((n, [, w]) => n + w, 0);
    let x = (this.u32() / 0x1_0000_0000) * total;
    for (const [k, w] of entries) {
      if (x < w) return k;
      x -= w;
    }
    const last = entries[entries.length - 1];
    if (last === undefined) throw new RangeError("Cannot choose from no weights");
    return last[0];
  }

  /** Fills `bytes` with random data. */
  fill(bytes: Uint8Array): void {
    let i = 0;
    for (; i + 4 <= bytes.length; i += 4) {
      const v = this.u32();
      bytes[i] = v & 0xff;
      bytes[i + 1] = (v >>> 8) & 0xff;
      bytes[i + 2] = (v >>> 16) & 0xff;
      bytes[i + 3] = v >>> 24;
    }
    for (; i < bytes.length; i++) bytes[i] = this.u32() & 0xff;
  }
}

// ---- guest memory layout -----------------------------------------------------------------------

const KIB = 1024;
const A_GPA = 0x10_0000;
const A_SIZE = 2 << 20;
const B_GPA = 0x40_0000;
const B_SIZE = 256 * KIB;
const C_GPA = B_GPA + B_SIZE;
const C_SIZE = 256 * KIB;

/** The regions of a fuzzing connection's guest memory (see the module doc). */
export const FUZZ_REGIONS: readonly GuestRegionSpec[] = [
  { guestPhysAddr: A_GPA, size: A_SIZE },
  { guestPhysAddr: B_GPA, size: B_SIZE },
  { guestPhysAddr: C_GPA, size: C_SIZE },
];

/** A half-open guest-physical range. */
interface Zone {
  start: number;
  end: number;
}

const R_RANDOM: Zone = { start: B_GPA, end: B_GPA + 96 * KIB };
const R_STRUCT: Zone = { start: B_GPA + 96 * KIB, end: B_GPA + 192 * KIB };
const W_STRUCT: Zone = { start: C_GPA + 64 * KIB, end: C_GPA + 160 * KIB };
const W_RANDOM: Zone = { start: C_GPA + 160 * KIB, end: C_GPA + C_SIZE };
/** Bytes the device never writes: where the model may trust a FUSE header it read. */
const STABLE: Zone = { start: R_RANDOM.start, end: R_STRUCT.end };

/** The queue fuzzed: the first request queue. */
export const FUZZ_QUEUE = 1;
/** Its size. */
export const FUZZ_QUEUE_SIZE = 256;
/** Opcodes that take no reply. */
const NO_REPLY = new Set([FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_INTERRUPT]);

// ---- DAX ----------------------------------------------------------------------------------------

const MIB = 1 << 20;
/** Page size: what DAX offsets and lengths must be multiples of. */
const PAGE = 4096;
/** One DAX range (Linux's FUSE_DAX_SZ, 2 MiB): the window holds size / range live mappings. */
const DAX_RANGE = 1 << FUSE_DAX_SHIFT;
/** The fuzz daemon's cache window (`--cache-size 16M`). */
export const FUZZ_WINDOW_SIZE = 16 * MIB;
/** The most live mappings the daemon may keep in it (one per 2 MiB range). */
export const FUZZ_MAX_MAPPINGS = FUZZ_WINDOW_SIZE / DAX_RANGE;
/** The regular file of the share that DAX requests map (name in the root directory). */
export const FUZZ_DAX_FILE = "dax";
/** Its size: half the window, so that maps past its end and window ranges past it both occur. */
export const FUZZ_DAX_FILE_SIZE = 8 * MIB;
/** The arguments a daemon under fuzz runs with (after the socket and the shared directory). */
export const FUZZ_DAEMON_ARGS: readonly string[] = [
  "--keep-serving",
  "--tag",
  "fuzz",
  "--cache-size",
  `${FUZZ_WINDOW_SIZE / MIB}M`,
];
/**
 * The deadline's allowance per request that changes the window (SETUPMAPPING, REMOVEMAPPING, and
 * INIT or DESTROY, which unmap everything), in a batch: each waits on the front end's maps, one at
 * a time, so a batch that publishes one valid SETUPMAPPING 256 times (a "full" avail ring of a
 * zeroed ring names head 0 throughout) takes 256 map round trips, about 1 ms each here.
 */
export const DAX_ALLOWANCE_MS = 10;
/** Opcodes that earn {@linkcode DAX_ALLOWANCE_MS}. */
const WINDOW_OPCODES = new Set([FUSE_SETUPMAPPING, FUSE_REMOVEMAPPING, FUSE_INIT, FUSE_DESTROY]);
/** Every this many cases (and at the end), the whole window is unmapped and checked empty. */
export const WINDOW_CHECK_EVERY = 2000;

/** Puts the file DAX requests map into the (empty) shared directory `dir`: sparse, 8 MiB. */
export function prepareFuzzShare(dir: string): void {
  const f = Deno.openSync(join(dir, FUZZ_DAX_FILE), { write: true, create: true });
  try {
    f.truncateSync(FUZZ_DAX_FILE_SIZE);
  } finally {
    f.close();
  }
}

const U64_MAX = 0xffff_ffff_ffff_ffffn;
const SETUP_FLAGS_KNOWN = FUSE_SETUPMAPPING_FLAG_READ | FUSE_SETUPMAPPING_FLAG_WRITE;

/** A descriptor as written, with its 64-bit address in two 32-bit halves (the driver's type). */
export type { RawDescriptor };

/** Splits a guest-physical address below 2^53 into a descriptor's address halves. */
function at(gpa: number): { lo: number; hi: number } {
  return { lo: gpa >>> 0, hi: Math.floor(gpa / 0x1_0000_0000) >>> 0 };
}

function desc(gpa: number, len: number, flags: number, next = 0): RawDescriptor {
  return { ...at(gpa), len: len >>> 0, flags: flags & 0xffff, next: next & 0xffff };
}

/**
 * The end of the memory region holding guest-physical `gpa`, or undefined when none does. The
 * model's own question, over the driver's regions: a buffer may run on from one region into an
 * adjacent one (see {@linkcode covered}), an indirect table may not.
 */
function regionEnd(mem: GuestRam, gpa: number): number | undefined {
  for (const r of mem.regions) {
    const end = r.guestPhysAddr + r.memorySize;
    if (gpa >= r.guestPhysAddr && gpa < end) return end;
  }
  return undefined;
}

/** True when one region holds all of `[gpa, gpa+len)`. */
function inOneRegion(mem: GuestRam, gpa: number, len: number): boolean {
  const end = regionEnd(mem, gpa);
  return end !== undefined && gpa + len <= end;
}

/** True when every byte of `[gpa, gpa+len)` is guest memory (adjacent regions chain). */
function covered(mem: GuestRam, gpa: number, len: number): boolean {
  let at = gpa;
  let left = len;
  while (left > 0) {
    const end = regionEnd(mem, at);
    if (end === undefined) return false;
    const n = Math.min(left, end - at);
    at += n;
    left -= n;
  }
  return true;
}

/**
 * Copies up to `out.length` bytes gathered from `segments` (which may run on across adjacent
 * regions) into `out`; returns the count.
 */
function gather(mem: GuestRam, segments: readonly Segment[], out: Uint8Array): number {
  let done = 0;
  for (const [gpa, len] of segments) {
    let at = gpa;
    let left = len;
    while (left > 0 && done < out.length) {
      const end = regionEnd(mem, at);
      if (end === undefined) return done;
      const n = Math.min(left, end - at, out.length - done);
      out.set(mem.slice(at, n), done);
      done += n;
      at += n;
      left -= n;
    }
    if (done >= out.length) break;
  }
  return done;
}

/** A buffer: [guest-physical address, length]. */
type Segment = readonly [number, number];

// ---- the reference model -------------------------------------------------------------------------

/** What the model predicts for one published avail entry. */
export interface ChainModel {
  /** The head index read from the avail ring. */
  head: number;
  /** Why the chain is malformed, or undefined when it is well formed. */
  bad: string | undefined;
  /** Device-readable buffers, in order (well-formed chains only). */
  readable: Segment[];
  /** Device-writable buffers, in order (well-formed chains only). */
  writable: Segment[];
  /** Total device-readable bytes. */
  readableBytes: number;
  /** Total device-writable bytes. */
  writableBytes: number;
}

function addrOf(d: RawDescriptor): number {
  return d.hi * 0x1_0000_0000 + d.lo;
}

/**
 * Walks chain `head` of the descriptor table at `descGpa` (queue `size`) as memory holds it now,
 * and says whether a device must refuse it.
 */
function modelChain(mem: GuestRam, descGpa: number, size: number, head: number): ChainModel {
  const m: ChainModel = {
    head,
    bad: undefined,
    readable: [],
    writable: [],
    readableBytes: 0,
    writableBytes: 0,
  };
  const fail = (why: string): ChainModel => {
    m.bad = why;
    m.readable = [];
    m.writable = [];
    return m;
  };
  let tableGpa = descGpa;
  let entries = size;
  let limit = size;
  let indirect = false;
  let index = head;
  let count = 0;
  let seenWritable = false;
  for (;;) {
    if (index >= entries) return fail(`index ${index} out of a table of ${entries}`);
    if (++count > limit) return fail(`longer than ${limit} descriptors or loops`);
    const d = readRawDescriptorAt(mem, tableGpa + DESCRIPTOR_SIZE * index);
    const addr = addrOf(d);
    if ((d.flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
      if (indirect) return fail("nested indirect table");
      if ((d.flags & VIRTQ_DESC_F_NEXT) !== 0) return fail("INDIRECT with NEXT");
      if (d.len === 0 || d.len % DESCRIPTOR_SIZE !== 0) return fail(`indirect length ${d.len}`);
      if (d.len / DESCRIPTOR_SIZE > MAX_INDIRECT) return fail("indirect table too large");
      if (d.hi !== 0 || !inOneRegion(mem, addr, d.len)) {
        return fail("indirect table not inside one region");
      }
      indirect = true;
      tableGpa = addr;
      entries = d.len / DESCRIPTOR_SIZE;
      limit = entries;
      index = 0;
      count = 0;
      continue;
    }
    const writable = (d.flags & VIRTQ_DESC_F_WRITE) !== 0;
    if (writable) seenWritable = true;
    else if (seenWritable) return fail("readable after writable");
    if (d.len > 0) {
      if (d.hi !== 0 || !covered(mem, addr, d.len)) return fail("buffer outside guest memory");
      if (writable) m.writable.push([addr, d.len]);
      else m.readable.push([addr, d.len]);
    }
    if (writable) m.writableBytes += d.len;
    else m.readableBytes += d.len;
    if ((d.flags & VIRTQ_DESC_F_NEXT) === 0) return m;
    index = d.next;
  }
}

function within(segs: readonly Segment[], bytes: number, zone: Zone): boolean {
  let left = bytes;
  for (const [gpa, len] of segs) {
    if (left <= 0) break;
    const n = Math.min(len, left);
    if (gpa < zone.start || gpa + n > zone.end) return false;
    left -= n;
  }
  return true;
}

function overlaps(a: readonly Segment[], b: readonly Segment[]): boolean {
  for (const [x, xl] of a) {
    for (const [y, yl] of b) if (x < y + yl && y < x + xl) return true;
  }
  return false;
}

function selfOverlaps(segs: readonly Segment[]): boolean {
  for (let i = 0; i < segs.length; i++) {
    for (let j = i + 1; j < segs.length; j++) {
      const a = segs[i];
      const b = segs[j];
      if (a !== undefined && b !== undefined && overlaps([a], [b])) return true;
    }
  }
  return false;
}

// ---- statistics ---------------------------------------------------------------------------------

/** What {@linkcode runFuzz} counted. */
export interface FuzzStats {
  /** The seed. */
  seed: number;
  /** Cases run. */
  cases: number;
  /** Avail entries published by the cases (sentinels, INITs excluded). */
  chains: number;
  /** Chains the model calls malformed (each must come back with length 0, or not at all). */
  malformed: number;
  /** Of those, with a head out of range (no used element is possible). */
  headOutOfRange: number;
  /** Well-formed chains answered with a FUSE reply. */
  answered: number;
  /** Replies whose out header was checked against the request (unique, len). */
  repliesChecked: number;
  /** Chains the device must refuse as the daemon counts them: malformed + rings broken. */
  expectedRefused: number;
  /** Cases that broke the ring on purpose (avail idx jump). */
  ringsBroken: number;
  /** Times the rings were set up again (after a break or a failure). */
  ringResets: number;
  /** Times a new connection was needed because the daemon closed one. */
  reconnects: number;
  /** Sentinels answered. */
  sentinels: number;
  /** The slowest sentinel, ms from publish to its used element. */
  sentinelMaxMs: number;
  /** Mean sentinel latency, ms. */
  sentinelMeanMs: number;
  /** The slowest case, ms from its first write to its last check. */
  caseMaxMs: number;
  /** Cases over 1 s. */
  slowCases: number;
  /** Checks that failed (model mismatches, timeouts, lost connections). */
  failures: number;
  /** The first failures, described. */
  failureSamples: string[];
  /** Cases per kind. */
  kinds: Record<string, number>;
  /** The DAX requests and what the window saw. */
  dax: DaxFuzzStats;
  /** Wall time, ms. */
  elapsedMs: number;
}

/** The DAX part of {@linkcode FuzzStats}. */
export interface DaxFuzzStats {
  /** Whether the front end had a cache window (the daemon offered one). */
  window: boolean;
  /** SETUPMAPPING requests published. */
  setups: number;
  /** Of those, with every field valid for a map (the daemon may still refuse: ENOSPC). */
  validSetups: number;
  /** REMOVEMAPPING requests published. */
  removals: number;
  /** LOOKUP round trips for the file's nodeid, and those that failed. */
  lookups: number;
  lookupFailures: number;
  /** INIT round trips before a LOOKUP because there was no FUSE session (after a DESTROY). */
  reinits: number;
  /** Whole-window checks passed. */
  windowChecks: number;
  /** The most live mappings the window held after a case. */
  maxMappings: number;
  /** The front end's SHMEM_MAP / SHMEM_UNMAP done, mappings dropped at resets, refusals. */
  maps: number;
  unmaps: number;
  dropped: number;
  refused: number;
}

/** Called by {@linkcode runFuzz} after case 100, every `progressEvery` cases, and at the end. */
export type FuzzProgress = (done: number, stats: Readonly<FuzzStats>) => void;

/** Options of {@linkcode runFuzz}. */
export interface FuzzOptions {
  /** The back end's vhost-user socket (it must accept a new connection after one closes). */
  socketPath: string;
  /** The PRNG seed. */
  seed: number;
  /** How many cases. */
  cases: number;
  /** Progress callback. */
  onProgress?: FuzzProgress;
  /** Call `onProgress` every this many cases (default 10,000). */
  progressEvery?: number;
  /** The per-case and per-sentinel deadline, ms (default 1000). */
  deadlineMs?: number;
  /** Give up after this many failures (default 50). */
  maxFailures?: number;
  /** The share of cases that break the ring on purpose (default 0.004). */
  breakShare?: number;
}

class ConnectionLost extends Error {}

// ---- the driver ---------------------------------------------------------------------------------

/** One expected used element. */
interface Expect {
  model: ChainModel;
  /** The FUSE header's unique (when the header is stable and complete). */
  unique: bigint | undefined;
  /** Whether the device must answer: true, false, or undefined (cannot say). */
  answers: boolean | undefined;
  /** The FUSE opcode (when the header is stable and complete). */
  opcode: number | undefined;
  /** Check the reply header against the request. */
  checkReply: boolean;
  sentinel: boolean;
}

/**
 * Opcodes the daemon may answer after requests published later (a map waits for the front end):
 * used elements come back out of order, and such a request's reply may land after theirs.
 */
const LATE_OPCODES = new Set([FUSE_SETUPMAPPING, FUSE_REMOVEMAPPING]);

const SENTINEL_READ_BYTES = 128;
/** Room for the largest round-trip reply: LOOKUP's out header and entry_out (144 bytes). */
const SENTINEL_WRITE_BYTES = 256;
/** A round-trip request in the sentinel slots. */
type RoundTrip = "getattr" | "init" | "lookup" | "unmapAll";
const EIO = 5;

/** Opcodes structured requests use: harmless on any file system, plus the odd ones. */
const STRUCT_OPCODES = [
  FUSE_LOOKUP,
  FUSE_GETATTR,
  FUSE_GETATTR,
  FUSE_STATFS,
  FUSE_READLINK,
  FUSE_GETXATTR,
  FUSE_LISTXATTR,
  FUSE_ACCESS,
  FUSE_FLUSH,
  FUSE_INIT,
  FUSE_DESTROY,
  FUSE_FORGET,
  FUSE_BATCH_FORGET,
  FUSE_INTERRUPT,
  0,
  99,
  4096,
  0xffff_ffff,
];

/** Drives queue 1 of one connection by hand. */
class HostileDriver {
  readonly fe: VhostUserFrontend;
  /** Guest memory: the front end's. */
  readonly mem: GuestRam;
  readonly q: GuestQueue;
  readonly size: number;
  readonly rng: Rng;
  readonly stats: FuzzStats;
  readonly deadlineMs: number;
  breakShare = 0.004;
  readonly sentinelRead: number;
  readonly sentinelWrite: number;
  readonly slots: Int32Array;
  /** The next avail slot this driver writes (its own: cases publish stale or jumped indices). */
  nextAvail = 0;
  unique = 0x1_0000_0000n;
  /** The DAX file's nodeid in the current FUSE session (0: unknown). */
  daxNodeid = 0n;
  /** The current case's allowance over the deadline (see DAX_ALLOWANCE_MS), ms. */
  extraMs = 0;
  /** Set when the session may have ended or forgotten the node: LOOKUP again before a case. */
  relookup = true;
  /** Window refusals already reported (the count is the connection's). */
  #refusalsSeen = 0;
  #structRead = R_STRUCT.start;
  #structWrite = W_STRUCT.start;
  readonly #scratch = new Uint8Array(64);

  constructor(fe: VhostUserFrontend, rng: Rng, stats: FuzzStats, deadlineMs: number) {
    this.fe = fe;
    this.rng = rng;
    this.stats = stats;
    this.deadlineMs = deadlineMs;
    this.q = fe.queue(FUZZ_QUEUE);
    this.size = this.q.size;
    const mem = fe.memory;
    this.mem = mem;
    // The arena: all of B and C, so nothing else is ever allocated there.
    if (mem.alloc(B_SIZE, 4096, 1) !== B_GPA || mem.alloc(C_SIZE, 4096, 2) !== C_GPA) {
      throw new Error("Cannot reserve the fuzzing arena in regions B and C");
    }
    this.sentinelRead = mem.alloc(SENTINEL_READ_BYTES, 64, 0);
    this.sentinelWrite = mem.alloc(SENTINEL_WRITE_BYTES, 64, 0);
    rng.fill(mem.slice(B_GPA, B_SIZE));
    rng.fill(mem.slice(C_GPA, C_SIZE));
    this.slots = Int32Array.from({ length: this.size - 2 }, (_, i) => i);
    stats.dax.window = fe.hasWindow;
  }

  /** Closes the connection, adding its window's counters to the statistics. */
  close(): void {
    this.fe.close();
    const w = this.fe.windowStats;
    const d = this.stats.dax;
    d.maps += w.maps;
    d.unmaps += w.unmaps;
    d.dropped += w.dropped;
    d.refused += w.refused;
  }

  get sentinelHead(): number {
    return this.size - 2;
  }

  fail(what: string): void {
    this.stats.failures++;
    if (this.stats.failureSamples.length < 20) this.stats.failureSamples.push(what);
  }

  // ---- ring primitives ----

  writeRingDescriptor(i: number, d: RawDescriptor): void {
    this.q.writeRawDescriptor(i, d);
  }

  readAvailHead(slot: number): number {
    return this.q.readAvailRing(slot);
  }

  /** The next used index to check (the queue's harvest position). */
  get lastUsed(): number {
    return this.q.lastUsedIdx;
  }

  /** Takes the next used element (waitUsed said it is there). */
  takeUsed(): { id: number; len: number } {
    const [e] = this.q.harvestRaw(1);
    if (e === undefined) throw new Error(`no used element at used index ${this.lastUsed}`);
    return e;
  }

  pushAvail(head: number): void {
    this.q.writeAvailRing(this.nextAvail, head & 0xffff);
    this.nextAvail = (this.nextAvail + 1) & 0xffff;
  }

  /** Takes `n` distinct ring slots (not the sentinel's) for this case. */
  takeSlots(n: number, taken: { used: number }): number[] {
    const out: number[] = [];
    const s = this.slots;
    for (let k = 0; k < n && taken.used < s.length; k++) {
      const j = taken.used + this.rng.int(s.length - taken.used);
      const a = s[taken.used] ?? 0;
      const b = s[j] ?? 0;
      s[taken.used] = b;
      s[j] = a;
      taken.used++;
      out.push(b);
    }
    return out;
  }

  /**
   * Two GET_FEATURES round trips: every kick sent before has been served afterwards. With a
   * cache window, two GET_CONFIG round trips instead: the front end may service a SHMEM request
   * while it waits, and the REM_MEM_REG it sends then awaits its ack; a checked request's reply is
   * kept for it meanwhile, where a raw GET_FEATURES reply would be taken for that ack.
   */
  barrier(): void {
    for (let i = 0; i < 2; i++) {
      if (this.fe.hasWindow) {
        try {
          this.fe.getConfig(0, 4);
        } catch (e) {
          if (this.fe.peerClosed()) throw new ConnectionLost("the daemon closed the connection");
          throw e;
        }
        continue;
      }
      this.fe.sendRaw(VHOST_USER_GET_FEATURES, VHOST_USER_VERSION);
      const m = this.fe.recvReply(this.deadlineMs);
      if (m === PEER_CLOSED) throw new ConnectionLost("the daemon closed the connection");
      if (m === null) throw new Error(`no GET_FEATURES reply within ${this.deadlineMs} ms`);
      if (m.request !== VHOST_USER_GET_FEATURES || m.flags !== REPLY_FLAGS) {
        throw new Error(`GET_FEATURES barrier got request ${m.request} flags ${m.flags}`);
      }
    }
  }

  /**
   * Waits until `count` used elements past `this.lastUsed` are in; false at the deadline. The
   * back-end channel is serviced meanwhile (the daemon's SHMEM_MAP / SHMEM_UNMAP answered, as
   * QEMU does), or a SETUPMAPPING could never be answered.
   */
  waitUsed(count: number, deadline: number): boolean {
    const call = this.fe.callFd(FUZZ_QUEUE);
    const sock = this.fe.socketFd;
    const fds = [call, sock];
    const base = this.lastUsed;
    const done = (): boolean => ((this.q.usedIdx - base) & 0xffff) >= count;
    this.q.setUsedEvent((base + count - 1) & 0xffff);
    for (;;) {
      if (done()) return true;
      const left = deadline - performance.now();
      if (left <= 0) return done();
      const channel = this.fe.backendChannelFd;
      fds.length = 2;
      if (channel !== undefined && this.fe.hasWindow) fds.push(channel);
      const [c = 0, s = 0, b = 0] = poll(fds, POLLIN, Math.max(1, Math.min(5, Math.ceil(left))));
      if ((c & POLLIN) !== 0) eventfdConsume(call);
      if (b !== 0) this.fe.serviceBackendChannel(0);
      if ((s & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) !== 0 && this.fe.peerClosed()) {
        throw new ConnectionLost("the daemon closed the connection");
      }
    }
  }

  // ---- FUSE requests in the sentinel slots ----

  #putHeader(
    gpa: number,
    len: number,
    opcode: number,
    unique: bigint,
    nodeid: bigint,
  ): void {
    this.mem.slice(gpa, IN_HEADER.size).fill(0);
    const v = this.mem.dataView(gpa, IN_HEADER.size);
    v.setUint32(IN_HEADER.len, len >>> 0, true);
    v.setUint32(IN_HEADER.opcode, opcode >>> 0, true);
    v.setBigUint64(IN_HEADER.unique, unique, true);
    v.setBigUint64(IN_HEADER.nodeid, nodeid, true);
    v.setUint32(IN_HEADER.pid, 1, true);
  }

  /**
   * Writes a request into the sentinel's slots and buffers: the sentinel (GETATTR of nodeid 1),
   * or a round trip's (INIT; LOOKUP of the DAX file; REMOVEMAPPING of the whole window).
   */
  writeSentinel(kind: RoundTrip): bigint {
    const unique = this.unique;
    this.unique += 2n;
    const mem = this.mem;
    mem.slice(this.sentinelRead, SENTINEL_READ_BYTES).fill(0);
    mem.slice(this.sentinelWrite, SENTINEL_WRITE_BYTES).fill(0);
    let readLen: number;
    let writeLen: number;
    if (kind === "init") {
      readLen = IN_HEADER.size + INIT_IN.size;
      writeLen = OUT_HEADER.size + INIT_OUT.size;
      this.#putHeader(this.sentinelRead, readLen, FUSE_INIT, unique, 0n);
      const v = mem.dataView(this.sentinelRead + IN_HEADER.size, INIT_IN.size);
      v.setUint32(INIT_IN.major, 7, true);
      v.setUint32(INIT_IN.minor, 38, true);
      v.setUint32(INIT_IN.maxReadahead, 0x20000, true);
      // As Linux mounting with DAX asks (the daemon grants it with a window).
      if (this.fe.hasWindow) v.setUint32(INIT_IN.flags, Number(FUSE_MAP_ALIGNMENT), true);
    } else if (kind === "lookup") {
      const name = new TextEncoder().encode(`${FUZZ_DAX_FILE}\0`);
      readLen = IN_HEADER.size + name.length;
      writeLen = OUT_HEADER.size + ENTRY_OUT.size;
      this.#putHeader(this.sentinelRead, readLen, FUSE_LOOKUP, unique, 1n);
      mem.slice(this.sentinelRead + IN_HEADER.size, name.length).set(name);
    } else if (kind === "unmapAll") {
      readLen = IN_HEADER.size + REMOVEMAPPING_IN.size + REMOVEMAPPING_ONE.size;
      writeLen = OUT_HEADER.size;
      this.#putHeader(this.sentinelRead, readLen, FUSE_REMOVEMAPPING, unique, 1n);
      const at = this.sentinelRead + IN_HEADER.size;
      const v = mem.dataView(at, readLen - IN_HEADER.size);
      v.setUint32(REMOVEMAPPING_IN.count, 1, true);
      const one = REMOVEMAPPING_IN.size;
      v.setBigUint64(one + REMOVEMAPPING_ONE.moffset, 0n, true);
      v.setBigUint64(one + REMOVEMAPPING_ONE.len, BigInt(this.fe.window.size), true);
    } else {
      readLen = IN_HEADER.size + GETATTR_IN.size;
      writeLen = OUT_HEADER.size + ATTR_OUT.size;
      this.#putHeader(this.sentinelRead, readLen, FUSE_GETATTR, unique, 1n);
    }
    this.writeRingDescriptor(
      this.sentinelHead,
      desc(this.sentinelRead, readLen, VIRTQ_DESC_F_NEXT, this.sentinelHead + 1),
    );
    this.writeRingDescriptor(
      this.sentinelHead + 1,
      desc(this.sentinelWrite, writeLen, VIRTQ_DESC_F_WRITE),
    );
    return unique;
  }

  /** Reads the sentinel's reply header. */
  sentinelReply(): { len: number; error: number; unique: bigint } {
    const v = this.mem.dataView(this.sentinelWrite, OUT_HEADER.size);
    return {
      len: v.getUint32(OUT_HEADER.len, true),
      error: v.getInt32(OUT_HEADER.error, true),
      unique: v.getBigUint64(OUT_HEADER.unique, true),
    };
  }

  /**
   * Publishes one request in the sentinel slots on an idle ring and waits for its answer.
   * Returns the latency in ms; throws when it does not come.
   */
  roundTrip(kind: RoundTrip): number {
    const unique = this.writeSentinel(kind);
    const start = performance.now();
    this.pushAvail(this.sentinelHead);
    this.q.setAvailIdx(this.nextAvail);
    this.fe.kick(FUZZ_QUEUE);
    if (!this.waitUsed(1, start + this.deadlineMs)) {
      throw new Error(`${kind} sentinel unanswered within ${this.deadlineMs} ms`);
    }
    const ms = performance.now() - start;
    const e = this.takeUsed();
    const r = this.sentinelReply();
    if (e.id !== this.sentinelHead || r.unique !== unique || e.len < OUT_HEADER.size) {
      throw new Error(
        `${kind} sentinel came back as id ${e.id} len ${e.len}, reply unique ${r.unique} ` +
          `(sent ${unique})`,
      );
    }
    if (kind === "init" && r.error !== 0) throw new Error(`FUSE_INIT failed with ${r.error}`);
    return ms;
  }

  /** Stops and sets the rings up again, then INIT on the fresh ring. */
  resetRings(): void {
    // (The queue is reset too: its harvest position is back at 0.)
    this.fe.restartQueues();
    this.nextAvail = 0;
    this.stats.ringResets++;
    this.roundTrip("init");
    this.relookup = true;
  }

  // ---- DAX ----

  /**
   * LOOKUP of the DAX file (a round trip in the sentinel slots): its nodeid for this session.
   * Without a session (a DESTROY published, no INIT since) the driver mounts again as a guest
   * would (an INIT round trip) and looks up once more. A failure leaves the nodeid unknown and
   * `relookup` set.
   */
  lookupDaxFile(): void {
    this.stats.dax.lookups++;
    this.roundTrip("lookup");
    let r = this.sentinelReply();
    if (r.error === -EIO) {
      this.stats.dax.reinits++;
      this.roundTrip("init");
      this.stats.dax.lookups++;
      this.roundTrip("lookup");
      r = this.sentinelReply();
    }
    if (r.error !== 0) {
      this.stats.dax.lookupFailures++;
      this.daxNodeid = 0n;
      return;
    }
    const v = this.mem.dataView(this.sentinelWrite + OUT_HEADER.size, ENTRY_OUT.size);
    this.daxNodeid = v.getBigUint64(ENTRY_OUT.nodeid, true);
    this.relookup = false;
  }

  /**
   * After a case: the window holds at most {@linkcode FUZZ_MAX_MAPPINGS} mappings, and the
   * daemon asked the front end for nothing QEMU refuses.
   */
  checkWindowBounds(label: string): void {
    if (!this.fe.hasWindow) return;
    const live = this.fe.window.mappings().length;
    const d = this.stats.dax;
    d.maxMappings = Math.max(d.maxMappings, live);
    if (live > FUZZ_MAX_MAPPINGS) {
      this.fail(`${label}: the window holds ${live} mappings, over ${FUZZ_MAX_MAPPINGS}`);
    }
    const w = this.fe.windowStats;
    if (w.refused > this.#refusalsSeen) {
      this.fail(
        `${label}: the daemon asked the front end for ${w.refused - this.#refusalsSeen} ` +
          `SHMEM request(s) QEMU refuses; the last: ${w.lastRefusal}`,
      );
      this.#refusalsSeen = w.refused;
    }
  }

  /**
   * REMOVEMAPPING of the whole window (INIT first when there is no session, after a DESTROY):
   * it must be answered with 0 and leave the front end's window empty, every map undone
   * (maps = unmaps + dropped).
   */
  checkWindowEmpty(label: string): void {
    if (!this.fe.hasWindow) return;
    this.roundTrip("unmapAll");
    let error = this.sentinelReply().error;
    if (error === -EIO) {
      // No FUSE session (a DESTROY without an INIT since): start one, then unmap.
      this.roundTrip("init");
      this.relookup = true;
      this.roundTrip("unmapAll");
      error = this.sentinelReply().error;
    }
    const w = this.fe.window;
    const left = w.mappings();
    const st = this.fe.windowStats;
    if (error !== 0) {
      this.fail(`${label}: REMOVEMAPPING of the whole window answered ${error}`);
    } else if (left.length > 0) {
      this.fail(
        `${label}: ${left.length} mapping(s) left after REMOVEMAPPING of the whole window: ` +
          left.map((m) => `0x${m.shmOffset.toString(16)}+0x${m.len.toString(16)}`).join(", "),
      );
    } else if (st.maps !== st.unmaps + st.dropped) {
      this.fail(
        `${label}: the window is empty but ${st.maps} maps != ${st.unmaps} unmaps + ` +
          `${st.dropped} dropped`,
      );
    } else this.stats.dax.windowChecks++;
    this.checkWindowBounds(label);
  }

  // ---- generators ----

  randomLen(): number {
    const r = this.rng;
    switch (r.weighted({ zero: 8, small: 40, medium: 30, large: 12, huge: 10 })) {
      case "zero":
        return 0;
      case "small":
        return r.range(1, 64);
      case "medium":
        return r.range(65, 4096);
      case "large":
        return r.range(4097, 128 * KIB);
      default:
        return r.pick([0xffff_ffff, 0x8000_0000, 0x8000_0000 + r.u32() % 0x8000_0000, 1 << 20]);
    }
  }

  /** An address for a buffer of `len` bytes with role `role`: mostly inside, often not. */
  randomAddr(role: "read" | "write" | "table", len: number): { lo: number; hi: number } {
    const r = this.rng;
    const zone = role === "write" ? W_RANDOM : R_RANDOM;
    const cls = r.weighted({
      inside: 62,
      straddleBC: role === "table" ? 2 : 8,
      straddleCEnd: 5,
      straddleBStart: 3,
      straddleAEnd: 2,
      gap: 4,
      low: 3,
      high: 3,
      near2e64: 4,
      near2e53: 2,
      wild: 2,
    });
    const small = Math.max(1, Math.min(len, 4096));
    switch (cls) {
      case "inside": {
        const room = zone.end - zone.start;
        if (len <= room) return at(zone.start + r.int(room - len + 1));
        // Too long for the zone: reads run on (harmlessly) into later regions or out of memory;
        // writes and tables start high enough to run out of memory.
        if (role === "read") return at(zone.start + r.int(room));
        return at(C_GPA + C_SIZE - r.range(1, small));
      }
      case "straddleBC":
        // Across the boundary of the adjacent regions B and C: a buffer in two regions.
        return at(C_GPA - r.range(1, Math.min(small, 32 * KIB)));
      case "straddleCEnd":
        return at(C_GPA + C_SIZE - r.range(1, small));
      case "straddleBStart":
        return at(B_GPA - r.range(1, small));
      case "straddleAEnd":
        return at(A_GPA + A_SIZE - r.range(1, small));
      case "gap":
        return at(A_GPA + A_SIZE + r.int(B_GPA - A_GPA - A_SIZE));
      case "low":
        return at(r.int(A_GPA));
      case "high":
        return at(C_GPA + C_SIZE + r.int(0x1000_0000));
      case "near2e64":
        return { lo: (0x1_0000_0000 - r.range(1, 8192)) >>> 0, hi: 0xffff_ffff };
      case "near2e53":
        return { lo: (0x1_0000_0000 - r.range(0, 8192)) >>> 0, hi: 0x1f_ffff + r.int(2) };
      default:
        return { lo: r.u32(), hi: r.u32() };
    }
  }

  randomFlags(): number {
    const r = this.rng;
    let f = r.pick([
      0,
      VIRTQ_DESC_F_NEXT,
      VIRTQ_DESC_F_WRITE,
      VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
      VIRTQ_DESC_F_NEXT,
      VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
      VIRTQ_DESC_F_INDIRECT,
      VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT,
      VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE,
      VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
    ]);
    if (r.chance(0.05)) f |= r.pick([0x8, 0x10, 0x80, 0x8000, 0xfff8]);
    return f;
  }

  randomNext(self: number, written: readonly number[], entries: number): number {
    const r = this.rng;
    switch (r.weighted({ written: 50, self: 5, any: 15, out: 12, sentinel: 5, max: 3 })) {
      case "written":
        return written.length > 0 ? r.pick(written) : r.int(entries);
      case "self":
        return self;
      case "any":
        return r.int(entries);
      case "out":
        return entries + r.int(0x1_0000 - entries);
      case "sentinel":
        return entries === this.size ? this.sentinelHead + r.int(2) : r.int(entries);
      default:
        return 0xffff;
    }
  }

  /** One fully random descriptor. */
  randomDescriptor(self: number, written: readonly number[], entries: number): RawDescriptor {
    const flags = this.randomFlags();
    const indirect = (flags & VIRTQ_DESC_F_INDIRECT) !== 0;
    let len = this.randomLen();
    if (indirect && this.rng.chance(0.6)) len = DESCRIPTOR_SIZE * this.rng.range(1, 16);
    const role = indirect ? "table" : (flags & VIRTQ_DESC_F_WRITE) !== 0 ? "write" : "read";
    const a = this.randomAddr(role, len);
    return { ...a, len: len >>> 0, flags, next: this.randomNext(self, written, entries) };
  }

  /** Soup: random descriptors at random slots, random heads. */
  genSoup(heads: number[], taken: { used: number }): void {
    const r = this.rng;
    const slots = this.takeSlots(r.range(1, 8), taken);
    for (const s of slots) this.writeRingDescriptor(s, this.randomDescriptor(s, slots, this.size));
    // Some random indirect tables pointed at R_RANDOM get random entries too.
    if (r.chance(0.3)) {
      this.writeRandomTable(R_RANDOM.start + DESCRIPTOR_SIZE * r.int(64), r.range(1, 16));
    }
    const n = r.range(1, 4);
    for (let i = 0; i < n; i++) {
      const k = r.weighted({ written: 80, any: 10, out: 10 });
      heads.push(
        k === "written" && slots.length > 0
          ? r.pick(slots)
          : k === "any"
          ? r.int(this.size)
          : this.size + r.int(0x1_0000 - this.size),
      );
    }
  }

  writeRandomTable(gpa: number, entries: number): void {
    const idx = Array.from({ length: entries }, (_, i) => i);
    for (let i = 0; i < entries; i++) {
      writeRawDescriptorAt(
        this.mem,
        gpa + DESCRIPTOR_SIZE * i,
        this.randomDescriptor(i, idx, entries),
      );
    }
  }

  /** A plain buffer descriptor for a well-formed chain. */
  goodBuffer(role: "read" | "write"): RawDescriptor {
    const r = this.rng;
    const len = r.chance(0.15) ? 0 : r.chance(0.7) ? r.range(1, 256) : r.range(257, 8192);
    const zone = role === "write" ? W_RANDOM : R_RANDOM;
    let gpa = zone.start + r.int(zone.end - zone.start - len + 1);
    if (r.chance(0.08)) gpa = C_GPA - r.range(1, Math.max(1, Math.min(len, 4096)));
    return desc(gpa, len, role === "write" ? VIRTQ_DESC_F_WRITE : 0);
  }

  /** Mutates one descriptor of a chain into something hostile. */
  mutate(list: RawDescriptor[], slots: readonly number[]): string {
    const r = this.rng;
    const i = r.int(list.length);
    const d = list[i];
    if (d === undefined) return "none";
    const m = r.pick(
      [
        "readAfterWrite",
        "loop",
        "nextOut",
        "addr",
        "zeroLen",
        "hugeLen",
        "flags",
        "toSentinel",
        "dropNext",
      ] as const,
    );
    switch (m) {
      case "readAfterWrite": {
        const last = list[list.length - 1];
        if (last !== undefined) last.flags &= ~VIRTQ_DESC_F_WRITE;
        if (list[0] !== undefined) list[0].flags |= VIRTQ_DESC_F_WRITE;
        break;
      }
      case "loop": {
        const last = list[list.length - 1];
        if (last !== undefined) {
          last.flags |= VIRTQ_DESC_F_NEXT;
          last.next = slots[r.int(slots.length)] ?? 0;
        }
        break;
      }
      case "nextOut":
        d.flags |= VIRTQ_DESC_F_NEXT;
        d.next = r.range(this.size, 0xffff);
        break;
      case "addr": {
        const role = (d.flags & VIRTQ_DESC_F_WRITE) !== 0 ? "write" : "read";
        const len = d.len === 0 ? r.range(1, 64) : d.len;
        Object.assign(d, this.randomAddr(role, len), { len });
        break;
      }
      case "zeroLen":
        d.len = 0;
        break;
      case "hugeLen":
        d.len = r.pick([0xffff_ffff, 0x8000_0000, 1 << 24]);
        break;
      case "flags":
        d.flags = (d.flags & ~VIRTQ_DESC_F_INDIRECT) | r.pick([0x8, 0x8000, VIRTQ_DESC_F_INDIRECT]);
        break;
      case "toSentinel":
        d.flags |= VIRTQ_DESC_F_NEXT;
        d.next = this.sentinelHead + r.int(2);
        break;
      case "dropNext":
        d.flags &= ~VIRTQ_DESC_F_NEXT;
        break;
    }
    return m;
  }

  /** A direct chain, well formed or mutated. */
  genChain(heads: number[], taken: { used: number }): void {
    const r = this.rng;
    const nr = r.range(0, 3);
    const nw = r.range(nr === 0 ? 1 : 0, 3);
    const slots = this.takeSlots(nr + nw, taken);
    if (slots.length === 0) return;
    const list: RawDescriptor[] = slots.map((_, i) => this.goodBuffer(i < nr ? "read" : "write"));
    if (r.chance(0.5)) {
      const k = r.range(1, 2);
      for (let i = 0; i < k; i++) this.mutate(list, slots);
    }
    this.linkAndWrite(list, slots);
    heads.push(slots[0] ?? 0);
  }

  /** Links `list` through `slots` (NEXT on all but the last, unless mutated) and writes it. */
  linkAndWrite(list: RawDescriptor[], slots: readonly number[]): void {
    list.forEach((d, i) => {
      const last = i === list.length - 1;
      const s = slots[i] ?? 0;
      if (!last && (d.flags & VIRTQ_DESC_F_NEXT) === 0 && d.next === 0) {
        d.flags |= VIRTQ_DESC_F_NEXT;
        d.next = slots[i + 1] ?? 0;
      }
      this.writeRingDescriptor(s, d);
    });
  }

  /** An indirect table chain, well formed or broken in one of the ways indirect tables break. */
  genIndirect(heads: number[], taken: { used: number }): void {
    const r = this.rng;
    const entries = r.range(1, 12);
    const nr = r.range(0, Math.min(3, entries));
    const table = R_RANDOM.start +
      DESCRIPTOR_SIZE * r.int((R_RANDOM.end - R_RANDOM.start) / DESCRIPTOR_SIZE - entries);
    const list: RawDescriptor[] = [];
    for (let i = 0; i < entries; i++) {
      const d = this.goodBuffer(i < nr ? "read" : "write");
      if (i < entries - 1) {
        d.flags |= VIRTQ_DESC_F_NEXT;
        d.next = i + 1;
      }
      list.push(d);
    }
    let headFlags = VIRTQ_DESC_F_INDIRECT;
    let len = entries * DESCRIPTOR_SIZE;
    let addr = at(table);
    const prefix = r.chance(0.15) ? r.range(1, 2) : 0;
    if (r.chance(0.6)) {
      const m = r.pick(
        [
          "lenZero",
          "lenOdd",
          "nested",
          "withNext",
          "withWrite",
          "tableAddr",
          "nextOut",
          "loop",
          "tooLarge",
          "readAfterWrite",
          "entryMutate",
        ] as const,
      );
      switch (m) {
        case "lenZero":
          len = 0;
          break;
        case "lenOdd":
          len = len + r.pick([-15, -1, 1, 8, 15]);
          break;
        case "nested": {
          const d = list[r.int(list.length)];
          if (d !== undefined) {
            d.flags |= VIRTQ_DESC_F_INDIRECT;
            Object.assign(d, at(table), { len: entries * DESCRIPTOR_SIZE });
          }
          break;
        }
        case "withNext":
          headFlags |= VIRTQ_DESC_F_NEXT;
          break;
        case "withWrite":
          headFlags |= VIRTQ_DESC_F_WRITE;
          break;
        case "tableAddr":
          addr = this.randomAddr("table", len);
          break;
        case "nextOut": {
          const d = list[r.int(list.length)];
          if (d !== undefined) {
            d.flags |= VIRTQ_DESC_F_NEXT;
            d.next = entries + r.int(0x1_0000 - entries);
          }
          break;
        }
        case "loop": {
          const last = list[list.length - 1];
          if (last !== undefined) {
            last.flags |= VIRTQ_DESC_F_NEXT;
            last.next = r.int(entries);
          }
          break;
        }
        case "tooLarge":
          len = DESCRIPTOR_SIZE * r.pick([32769, 65536, 0x0fff_ffff]);
          break;
        case "readAfterWrite": {
          const d = list[list.length - 1];
          if (d !== undefined) d.flags &= ~VIRTQ_DESC_F_WRITE;
          if (list[0] !== undefined) list[0].flags |= VIRTQ_DESC_F_WRITE;
          break;
        }
        case "entryMutate":
          this.mutate(list, Array.from({ length: entries }, (_, i) => i));
          break;
      }
    }
    list.forEach((d, i) => writeRawDescriptorAt(this.mem, table + DESCRIPTOR_SIZE * i, d));
    const slots = this.takeSlots(prefix + 1, taken);
    if (slots.length === 0) return;
    // Zero or more readable direct descriptors, then the INDIRECT one (virtio 1.2 §2.7.5.3.2).
    const direct: RawDescriptor[] = [];
    for (let i = 0; i < slots.length - 1; i++) direct.push(this.goodBuffer("read"));
    direct.push({ ...addr, len: len >>> 0, flags: headFlags, next: 0 });
    this.linkAndWrite(direct, slots);
    heads.push(slots[0] ?? 0);
  }

  /**
   * A FUSE request laid out as a driver would, with random truncations and len fields. With
   * `dax`, a SETUPMAPPING or REMOVEMAPPING whose arguments come from {@linkcode setupmappingArgs}
   * or {@linkcode removemappingArgs}, truncated and cut short less often (so that most reach the
   * window's code).
   */
  genFuse(heads: number[], taken: { used: number }, dax = false): void {
    const r = this.rng;
    const opcode = dax
      ? (r.chance(0.6) ? FUSE_SETUPMAPPING : FUSE_REMOVEMAPPING)
      : r.pick(STRUCT_OPCODES);
    // A request that may end the FUSE session or make it forget the file: LOOKUP it again.
    if (
      opcode === FUSE_INIT || opcode === FUSE_DESTROY || opcode === FUSE_FORGET ||
      opcode === FUSE_BATCH_FORGET
    ) this.relookup = true;
    let daxArgs: Uint8Array | undefined;
    if (opcode === FUSE_SETUPMAPPING) {
      daxArgs = this.setupmappingArgs();
      this.stats.dax.setups++;
    } else if (opcode === FUSE_REMOVEMAPPING) {
      daxArgs = this.removemappingArgs();
      this.stats.dax.removals++;
    }
    const argLen = daxArgs !== undefined
      ? daxArgs.length
      : opcode === FUSE_INIT
      ? INIT_IN.size
      : r.pick([0, 8, 16, 24, 64, 300]);
    const total = IN_HEADER.size + argLen;
    const lenField = r.weighted(
      dax
        ? { true: 88, zero: 2, short: 3, long: 3, huge: 2, random: 2 }
        : { true: 60, zero: 5, short: 10, long: 10, huge: 5, random: 10 },
    );
    const len = lenField === "true"
      ? total
      : lenField === "zero"
      ? 0
      : lenField === "short"
      ? r.range(1, IN_HEADER.size - 1)
      : lenField === "long"
      ? total + r.range(1, 4096)
      : lenField === "huge"
      ? 0xffff_ffff
      : r.u32();
    const readBytes = r.chance(dax ? 0.04 : 0.2) ? r.int(total + 1) : total;
    if (this.#structRead + total + 64 > R_STRUCT.end) return;
    const rgpa = this.#structRead;
    this.#structRead += (total + 15) & ~15;
    const nodeid = dax ? this.daxNodeidField() : r.pick([0n, 1n, 1n, 2n, 0xffff_ffff_ffff_ffffn]);
    this.#putHeader(rgpa, len, opcode, this.unique, nodeid);
    this.unique += 2n;
    const args = this.mem.slice(rgpa + IN_HEADER.size, argLen);
    if (daxArgs !== undefined) args.set(daxArgs);
    else if (opcode === FUSE_INIT) {
      args.fill(0);
      const v = this.mem.dataView(rgpa + IN_HEADER.size, argLen);
      v.setUint32(INIT_IN.major, r.pick([7, 7, 6, 8]), true);
      v.setUint32(INIT_IN.minor, r.pick([38, 31, 26, 99]), true);
    } else r.fill(args);
    const replyBytes = dax
      ? r.pick([16, 16, 16, 16, 17, 120, 4096, 0, 8, 15])
      : r.pick([0, 8, 15, 16, 17, 120, 4096]);
    if (this.#structWrite + replyBytes + 64 > W_STRUCT.end) return;
    const wgpa = this.#structWrite;
    this.#structWrite += (replyBytes + 63) & ~63;
    // Split into pieces as a driver might (header and args apart, small descriptors).
    const pieces: RawDescriptor[] = [];
    const maxPiece = dax
      ? r.pick([Infinity, Infinity, Infinity, Infinity, IN_HEADER.size, 16, 7])
      : r.pick([Infinity, Infinity, IN_HEADER.size, 7, 1]);
    const split = (gpa: number, n: number, flags: number): void => {
      if (n === 0) {
        if (r.chance(0.3)) pieces.push(desc(gpa, 0, flags));
        return;
      }
      for (let off = 0; off < n && pieces.length < 64; off += maxPiece) {
        pieces.push(desc(gpa + off, Math.min(maxPiece, n - off), flags));
      }
    };
    split(rgpa, readBytes, 0);
    if (replyBytes > 0 || r.chance(0.5)) split(wgpa, replyBytes, VIRTQ_DESC_F_WRITE);
    if (pieces.length === 0) pieces.push(desc(rgpa, 0, 0));
    const tableLen = DESCRIPTOR_SIZE * pieces.length;
    if (r.chance(0.5) && this.#structRead + tableLen <= R_STRUCT.end) {
      // Through one indirect table, as Linux sends multi-buffer requests.
      const table = Math.ceil(this.#structRead / VIRTQ_DESC_ALIGN) * VIRTQ_DESC_ALIGN;
      this.#structRead = table + tableLen;
      pieces.forEach((p, i) => {
        if (i < pieces.length - 1) {
          p.flags |= VIRTQ_DESC_F_NEXT;
          p.next = i + 1;
        }
        writeRawDescriptorAt(this.mem, table + DESCRIPTOR_SIZE * i, p);
      });
      const [slot] = this.takeSlots(1, taken);
      if (slot === undefined) return;
      this.writeRingDescriptor(slot, desc(table, tableLen, VIRTQ_DESC_F_INDIRECT));
      heads.push(slot);
      return;
    }
    const slots = this.takeSlots(pieces.length, taken);
    if (slots.length < pieces.length) return;
    this.linkAndWrite(pieces, slots);
    heads.push(slots[0] ?? 0);
  }

  // ---- DAX arguments ----

  /** The nodeid of a DAX request: mostly the file's, else the root (a directory) or bogus. */
  daxNodeidField(): bigint {
    const r = this.rng;
    switch (r.weighted({ file: 80, root: 7, zero: 3, next: 4, max: 3, random: 3 })) {
      case "file":
        return this.daxNodeid;
      case "root":
        return 1n;
      case "zero":
        return 0n;
      case "next":
        return this.daxNodeid + 1n;
      case "max":
        return U64_MAX;
      default:
        return this.randomU64();
    }
  }

  randomU64(): bigint {
    return (BigInt(this.rng.u32()) << 32n) | BigInt(this.rng.u32());
  }

  /** A huge or wrapping u64: near 2^64, 2^63, 2^53, 2^32. */
  hugeU64(): bigint {
    const r = this.rng;
    const base = r.pick([1n << 64n, 1n << 63n, 1n << 53n, 1n << 32n]);
    const v = base - BigInt(r.pick([PAGE, PAGE, 1, 2 * MIB, 0])) +
      (r.chance(0.3) ? BigInt(PAGE) : 0n);
    return v & U64_MAX;
  }

  /** A window offset: mostly page- or range-aligned inside, sometimes at or past the edges. */
  daxWindowOffset(len: number): bigint {
    const r = this.rng;
    const W = FUZZ_WINDOW_SIZE;
    switch (
      r.weighted({ range: 40, page: 30, end: 8, unaligned: 7, outside: 6, huge: 6, random: 3 })
    ) {
      case "range":
        return BigInt(DAX_RANGE * r.int(W / DAX_RANGE));
      case "page":
        return BigInt(PAGE * r.int(W / PAGE));
      case "end": // the last bytes: fits exactly, or runs past by a page
        return BigInt(Math.max(0, W - len + r.pick([0, 0, PAGE])));
      case "unaligned":
        return BigInt(PAGE * r.int(W / PAGE) + r.range(1, PAGE - 1));
      case "outside":
        return BigInt(W + PAGE * r.int(1024));
      case "huge":
        return this.hugeU64();
      default:
        return this.randomU64();
    }
  }

  /** A mapping length: mostly 2 MiB or whole pages, sometimes zero, unaligned or huge. */
  daxLength(): bigint {
    const r = this.rng;
    switch (
      r.weighted({ range: 35, pages: 35, zero: 5, unaligned: 7, window: 5, over: 4, huge: 9 })
    ) {
      case "range":
        return BigInt(DAX_RANGE);
      case "pages":
        return BigInt(PAGE * r.range(1, 2 * DAX_RANGE / PAGE));
      case "zero":
        return 0n;
      case "unaligned":
        return BigInt(r.range(1, 4 * DAX_RANGE));
      case "window":
        return BigInt(r.chance(0.5) ? FUZZ_WINDOW_SIZE : FUZZ_DAX_FILE_SIZE);
      case "over":
        return BigInt(FUZZ_WINDOW_SIZE + PAGE * r.range(1, 1024));
      default:
        return r.chance(0.7) ? this.hugeU64() : this.randomU64();
    }
  }

  /**
   * FUSE_SETUPMAPPING's argument: fh, foffset, len, flags, moffset. A valid map (every field
   * right for the file and the window) about a third of the time.
   */
  setupmappingArgs(): Uint8Array {
    const r = this.rng;
    const b = new Uint8Array(SETUPMAPPING_IN.size);
    const v = new DataView(b.buffer);
    const valid = r.chance(0.35);
    let fh: bigint, foffset: bigint, len: bigint, flags: bigint, moffset: bigint;
    if (valid) {
      const pages = r.chance(0.6) ? DAX_RANGE / PAGE : r.range(1, DAX_RANGE / PAGE);
      const n = pages * PAGE;
      len = BigInt(n);
      fh = U64_MAX;
      foffset = BigInt(PAGE * r.int((FUZZ_DAX_FILE_SIZE - n) / PAGE + 1));
      moffset = r.chance(0.5)
        ? BigInt(DAX_RANGE * r.int(FUZZ_WINDOW_SIZE / DAX_RANGE))
        : BigInt(PAGE * r.int((FUZZ_WINDOW_SIZE - n) / PAGE + 1));
      if (moffset + len > BigInt(FUZZ_WINDOW_SIZE)) moffset = BigInt(FUZZ_WINDOW_SIZE) - len;
      flags = r.pick([
        FUSE_SETUPMAPPING_FLAG_READ,
        FUSE_SETUPMAPPING_FLAG_READ,
        SETUP_FLAGS_KNOWN,
        FUSE_SETUPMAPPING_FLAG_WRITE,
      ]);
      this.stats.dax.validSetups++;
    } else {
      fh = r.weighted({ none: 70, zero: 6, small: 12, random: 12 }) === "none"
        ? U64_MAX
        : r.chance(0.5)
        ? BigInt(r.range(0, 16))
        : this.randomU64();
      len = this.daxLength();
      const n = len > BigInt(FUZZ_WINDOW_SIZE) ? FUZZ_WINDOW_SIZE : Number(len);
      switch (
        r.weighted({ inFile: 55, pastEnd: 12, zero: 10, unaligned: 8, huge: 10, random: 5 })
      ) {
        case "inFile":
          foffset = BigInt(PAGE * r.int(Math.max(1, (FUZZ_DAX_FILE_SIZE - n) / PAGE + 1)));
          break;
        case "pastEnd":
          foffset = BigInt(FUZZ_DAX_FILE_SIZE - PAGE * r.range(0, 4));
          break;
        case "zero":
          foffset = 0n;
          break;
        case "unaligned":
          foffset = BigInt(r.range(1, FUZZ_DAX_FILE_SIZE));
          break;
        case "huge":
          foffset = this.hugeU64();
          break;
        default:
          foffset = this.randomU64();
      }
      switch (r.weighted({ read: 30, rw: 25, write: 10, zero: 10, unknown: 15, random: 10 })) {
        case "read":
          flags = FUSE_SETUPMAPPING_FLAG_READ;
          break;
        case "rw":
          flags = SETUP_FLAGS_KNOWN;
          break;
        case "write":
          flags = FUSE_SETUPMAPPING_FLAG_WRITE;
          break;
        case "zero":
          flags = 0n;
          break;
        case "unknown":
          flags = r.pick([4n, 8n, 1n << 63n, 1n << 32n]) |
            (r.chance(0.5) ? FUSE_SETUPMAPPING_FLAG_READ : 0n);
          break;
        default:
          flags = this.randomU64();
      }
      moffset = this.daxWindowOffset(n);
    }
    v.setBigUint64(SETUPMAPPING_IN.fh, fh, true);
    v.setBigUint64(SETUPMAPPING_IN.foffset, foffset, true);
    v.setBigUint64(SETUPMAPPING_IN.len, len, true);
    v.setBigUint64(SETUPMAPPING_IN.flags, flags, true);
    v.setBigUint64(SETUPMAPPING_IN.moffset, moffset, true);
    return b;
  }

  /**
   * FUSE_REMOVEMAPPING's argument: `count`, then the ranges the payload holds (which may be fewer
   * than `count` says, or more). Ranges: the whole window, 2 MiB ranges, pages, and bad ones
   * (unaligned, zero, outside, wrapping, overlapping another).
   */
  removemappingArgs(): Uint8Array {
    const r = this.rng;
    const W = FUZZ_WINDOW_SIZE;
    let ranges: { moffset: bigint; len: bigint }[] = [];
    let count: number;
    const shape = r.weighted({
      few: 60,
      whole: 8,
      many: 5,
      zero: 5,
      max: 4,
      over: 4,
      huge: 3,
      short: 11,
    });
    const oneRange = (): { moffset: bigint; len: bigint } => {
      switch (r.weighted({ range: 40, pages: 25, whole: 5, bad: 30 })) {
        case "range":
          return { moffset: BigInt(DAX_RANGE * r.int(W / DAX_RANGE)), len: BigInt(DAX_RANGE) };
        case "pages": {
          const n = PAGE * r.range(1, 2 * DAX_RANGE / PAGE);
          return { moffset: BigInt(PAGE * r.int((W - n) / PAGE + 1)), len: BigInt(n) };
        }
        case "whole":
          return { moffset: 0n, len: BigInt(W) };
        default: {
          const len = this.daxLength();
          return { moffset: this.daxWindowOffset(len > BigInt(W) ? W : Number(len)), len };
        }
      }
    };
    switch (shape) {
      case "whole":
        ranges = [{ moffset: 0n, len: BigInt(W) }];
        count = 1;
        break;
      case "many": {
        // FUSE_REMOVEMAPPING_MAX_ENTRY distinct pages (valid), or one more.
        const n = r.chance(0.7) ? FUSE_REMOVEMAPPING_MAX_ENTRY : FUSE_REMOVEMAPPING_MAX_ENTRY + 1;
        const step = Math.floor(W / n / PAGE) * PAGE;
        for (let i = 0; i < n; i++) {
          ranges.push({ moffset: BigInt(i * step), len: BigInt(PAGE) });
        }
        count = n;
        break;
      }
      case "zero":
        ranges = [oneRange()];
        count = 0;
        break;
      case "max":
        ranges = [oneRange(), oneRange()];
        count = FUSE_REMOVEMAPPING_MAX_ENTRY;
        break;
      case "over":
        ranges = [oneRange()];
        count = FUSE_REMOVEMAPPING_MAX_ENTRY + 1;
        break;
      case "huge":
        ranges = [oneRange()];
        count = r.pick([0xffff_ffff, 0x8000_0000, 0x1000_0000 + r.int(0x1000)]);
        break;
      case "short": // count says more ranges than the payload holds
        ranges = Array.from({ length: r.range(0, 2) }, oneRange);
        count = ranges.length + r.range(1, 3);
        break;
      default: {
        ranges = Array.from({ length: r.pick([1, 1, 1, 2, 2, 3, 4]) }, oneRange);
        // Sometimes one range twice (overlapping itself).
        const first = ranges[0];
        if (first !== undefined && ranges.length > 1 && r.chance(0.1)) ranges[1] = { ...first };
        count = ranges.length;
      }
    }
    const b = new Uint8Array(REMOVEMAPPING_IN.size + ranges.length * REMOVEMAPPING_ONE.size);
    const v = new DataView(b.buffer);
    v.setUint32(REMOVEMAPPING_IN.count, count >>> 0, true);
    ranges.forEach((x, i) => {
      const at = REMOVEMAPPING_IN.size + i * REMOVEMAPPING_ONE.size;
      v.setBigUint64(at + REMOVEMAPPING_ONE.moffset, x.moffset & U64_MAX, true);
      v.setBigUint64(at + REMOVEMAPPING_ONE.len, x.len & U64_MAX, true);
    });
    return b;
  }

  /** The deadline's allowance for the window changes among `expects` (DAX_ALLOWANCE_MS each). */
  allowance(expects: readonly Expect[]): number {
    let n = 0;
    for (const e of expects) {
      if (
        e.model.head < this.size && e.model.bad === undefined && e.opcode !== undefined &&
        WINDOW_OPCODES.has(e.opcode)
      ) n++;
    }
    return n * DAX_ALLOWANCE_MS;
  }

  /**
   * For a failure message: the awaited entries whose head has not come back (with their opcode),
   * and the window's state.
   */
  missing(expects: readonly Expect[]): string {
    const pending = expects.filter((e) => e.model.head < this.size);
    const n = (this.q.usedIdx - this.lastUsed) & 0xffff;
    for (let k = 0; k < n; k++) {
      const u = this.q.readUsedElement((this.lastUsed + k) & 0xffff);
      const i = pending.findIndex((e) => e.model.head === u.id);
      if (i >= 0) pending.splice(i, 1);
    }
    const what = pending.map((e) =>
      `head ${e.model.head} (${
        e.sentinel ? "sentinel" : e.opcode === undefined ? "opcode ?" : `opcode ${e.opcode}`
      }${e.model.bad !== undefined ? `, malformed: ${e.model.bad}` : ""})`
    );
    let w = "";
    if (this.fe.hasWindow) {
      const channel = this.fe.backendChannelFd;
      const [c = 0] = channel === undefined ? [] : poll([channel], POLLIN, 0);
      const [m = 0] = poll([this.fe.socketFd], POLLIN, 0);
      w = `; window: ${this.fe.window.mappings().length} live, ` +
        `${JSON.stringify(this.fe.windowStats)}; back-end channel ${
          channel === undefined ? "closed" : c !== 0 ? `readable (0x${c.toString(16)})` : "idle"
        }, main socket ${m !== 0 ? `readable (0x${m.toString(16)})` : "idle"}`;
    }
    return `missing: ${what.join(", ") || "none"}${w}`;
  }

  // ---- one case ----

  /** Predicts every published entry from `fromIdx` (count `n`) as memory holds it now. */
  expectations(fromIdx: number, n: number, sentinelLast: boolean): Expect[] {
    const out: Expect[] = [];
    const mem = this.mem;
    const hdr = this.#scratch.subarray(0, IN_HEADER.size);
    const hv = new DataView(hdr.buffer, hdr.byteOffset, hdr.byteLength);
    for (let k = 0; k < n; k++) {
      const slot = (fromIdx + k) & 0xffff;
      const head = this.readAvailHead(slot);
      const model = modelChain(mem, this.q.descGpa, this.size, head);
      const sentinel = sentinelLast && k === n - 1;
      let answers: boolean | undefined = false;
      let unique: bigint | undefined;
      let opcode: number | undefined;
      if (model.bad === undefined) {
        if (model.readableBytes < IN_HEADER.size || model.writableBytes < OUT_HEADER.size) {
          answers = false;
        } else {
          const stable = within(model.readable, IN_HEADER.size, STABLE) ||
            within(model.readable, IN_HEADER.size, {
              start: this.sentinelRead,
              end: this.sentinelRead + SENTINEL_READ_BYTES,
            });
          if (!stable) answers = undefined;
          else {
            gather(mem, model.readable, hdr);
            opcode = hv.getUint32(IN_HEADER.opcode, true);
            unique = hv.getBigUint64(IN_HEADER.unique, true);
            answers = NO_REPLY.has(opcode)
              ? false
              : opcode === FUSE_NOTIFY_REPLY
              ? undefined
              : true;
          }
        }
      }
      out.push({ model, unique, answers, opcode, checkReply: false, sentinel });
    }
    // A reply can be checked when no other chain of the batch may write over it: a later one,
    // or an earlier one the daemon may answer late (LATE_OPCODES, or an opcode unknown).
    for (let i = 0; i < out.length; i++) {
      const e = out[i];
      if (e === undefined || e.answers !== true || e.unique === undefined) continue;
      // Nor an earlier buffer of its own: a chain may name overlapping buffers.
      let clear = !selfOverlaps(e.model.writable);
      for (let j = 0; j < out.length && clear; j++) {
        const other = out[j];
        if (
          j === i || other === undefined || other.model.bad !== undefined ||
          other.answers === false
        ) continue;
        if (j < i && other.opcode !== undefined && !LATE_OPCODES.has(other.opcode)) continue;
        if (overlaps(e.model.writable, other.model.writable)) clear = false;
      }
      e.checkReply = clear;
    }
    return out;
  }

  /**
   * Checks the used elements of `expects`, published from used index `this.lastUsed`. They may
   * come back in any order (a SETUPMAPPING is answered after the front end mapped): each is
   * matched to the first published entry with its head not yet matched (entries with one head
   * are one chain, so which one does not matter). Returns the sentinel's used element, if it
   * came back.
   */
  verify(expects: readonly Expect[], label: string): { id: number; len: number } | undefined {
    const mem = this.mem;
    const out = this.#scratch.subarray(0, OUT_HEADER.size);
    const ov = new DataView(out.buffer, out.byteOffset, out.byteLength);
    // Nothing comes back for an out-of-range head.
    const pending = expects.filter((e) => e.model.head < this.size);
    const used = pending.map(() => this.takeUsed());
    let sentinelUsed: { id: number; len: number } | undefined;
    for (const u of used) {
      const i = pending.findIndex((e) => e.model.head === u.id);
      const e = pending[i];
      if (e === undefined) {
        this.fail(
          `${label}: used element id ${u.id} is no chain published (heads ${
            pending.map((x) => x.model.head).join(", ")
          } awaited)`,
        );
        continue;
      }
      pending.splice(i, 1);
      if (e.sentinel) sentinelUsed = u;
      const m = e.model;
      const where = `${label}: head ${m.head}`;
      if (m.bad !== undefined) {
        if (u.len !== 0) {
          this.fail(`${where} is malformed (${m.bad}) but came back with len ${u.len}`);
        }
        continue;
      }
      if (u.len > m.writableBytes) {
        this.fail(`${where}: used len ${u.len} over the ${m.writableBytes} writable bytes`);
        continue;
      }
      if (e.answers === false && u.len !== 0) {
        this.fail(`${where}: needs no reply (or has no room) but used len is ${u.len}`);
      } else if (e.answers === true) {
        if (u.len < OUT_HEADER.size) {
          this.fail(
            `${where}: well formed, ${m.readableBytes}/${m.writableBytes} bytes, got len ${u.len}`,
          );
          continue;
        }
        this.stats.answered++;
        if (e.checkReply && !e.sentinel) {
          gather(mem, m.writable, out);
          const len = ov.getUint32(OUT_HEADER.len, true);
          const unique = ov.getBigUint64(OUT_HEADER.unique, true);
          const error = ov.getInt32(OUT_HEADER.error, true);
          if (unique !== e.unique) {
            this.fail(`${where}: reply unique ${unique}, request ${e.unique}`);
          } else if (error > 0 || error < -4095) {
            this.fail(`${where}: reply error ${error} is not 0 or a negative errno`);
          } else if (u.len !== Math.min(len, m.writableBytes)) {
            this.fail(`${where}: used len ${u.len} but the reply header says ${len}`);
          } else this.stats.repliesChecked++;
        }
      }
    }
    return sentinelUsed;
  }

  /**
   * Runs case `n` (after a LOOKUP of the DAX file when the session may have changed), then
   * checks the window's bounds, and every {@linkcode WINDOW_CHECK_EVERY} cases that the whole
   * window can be unmapped. Returns its duration in ms.
   */
  runCase(n: number): number {
    const start = performance.now();
    const label = `case ${n}`;
    this.extraMs = 0;
    if (this.relookup && this.fe.hasWindow) this.lookupDaxFile();
    this.#runCase(label, start);
    this.checkWindowBounds(label);
    if (n % WINDOW_CHECK_EVERY === 0) this.checkWindowEmpty(label);
    return performance.now() - start;
  }

  #runCase(label: string, start: number): void {
    const r = this.rng;
    if (r.chance(this.breakShare)) {
      this.stats.kinds.break = (this.stats.kinds.break ?? 0) + 1;
      this.breakCase(label);
      return;
    }
    this.#structRead = R_STRUCT.start;
    this.#structWrite = W_STRUCT.start;
    const heads: number[] = [];
    const taken = { used: 0 };
    const units = r.range(1, 3);
    for (let u = 0; u < units; u++) {
      const kind = r.weighted({ soup: 30, chain: 25, indirect: 20, fuse: 25, dax: 15 });
      this.stats.kinds[kind] = (this.stats.kinds[kind] ?? 0) + 1;
      if (kind === "soup") this.genSoup(heads, taken);
      else if (kind === "chain") this.genChain(heads, taken);
      else if (kind === "indirect") this.genIndirect(heads, taken);
      else this.genFuse(heads, taken, kind === "dax");
    }
    const avail = r.weighted({ plain: 85, full: 3, spurious: 4, dup: 4, events: 4 });
    this.stats.kinds[`avail-${avail}`] = (this.stats.kinds[`avail-${avail}`] ?? 0) + 1;
    if (avail === "spurious") heads.length = 0;
    if (avail === "dup" && heads.length > 0) heads.push(...heads);
    for (const h of heads) this.pushAvail(h);
    // "full": publish exactly a ring's worth, stale entries of earlier laps included.
    const batch = avail === "full" ? this.size : heads.length;
    const from = (this.nextAvail - heads.length) & 0xffff;
    if (avail === "full") this.nextAvail = (from + batch) & 0xffff;
    if (avail === "events") {
      this.q.setUsedEvent(r.u32() & 0xffff);
      this.q.setAvailFlags(r.u32() & 0xffff);
    }
    const twoPhase = batch + 1 > this.size || r.chance(0.5);
    let expects: Expect[];
    const usedBefore = this.lastUsed;
    if (twoPhase) {
      expects = this.expectations(from, batch, false);
      this.q.setAvailIdx(this.nextAvail);
      this.fe.kick(FUZZ_QUEUE);
      const returned = expects.filter((e) => e.model.head < this.size).length;
      this.extraMs = this.allowance(expects);
      if (!this.waitUsed(returned, start + this.deadlineMs + this.extraMs)) {
        this.fail(
          `${label}: ${returned} used elements expected, used.idx went ` +
            `${usedBefore} -> ${this.q.usedIdx} within ${this.deadlineMs + this.extraMs} ms; ` +
            this.missing(expects),
        );
        this.recover();
        return;
      }
      this.verify(expects, label);
      const unique = this.writeSentinel("getattr");
      this.sentinel(unique, label, [], performance.now());
    } else {
      const unique = this.writeSentinel("getattr");
      this.pushAvail(this.sentinelHead);
      expects = this.expectations(from, batch + 1, true);
      this.sentinel(unique, label, expects, performance.now());
    }
    this.stats.chains += batch;
    for (const e of expects) {
      if (e.sentinel) continue;
      if (e.model.bad !== undefined) {
        this.stats.malformed++;
        this.stats.expectedRefused++;
        if (e.model.head >= this.size) this.stats.headOutOfRange++;
      }
    }
    if (avail === "events") this.q.setAvailFlags(0);
  }

  /**
   * Publishes the sentinel (already in its slots; with `expects` when it rides with the batch),
   * waits for it and checks every element.
   */
  sentinel(unique: bigint, label: string, expects: Expect[], t0: number): void {
    if (expects.length === 0) {
      this.pushAvail(this.sentinelHead);
      expects.push(...this.expectations((this.nextAvail - 1) & 0xffff, 1, true));
    }
    this.q.setAvailIdx(this.nextAvail);
    this.fe.kick(FUZZ_QUEUE);
    const returned = expects.filter((e) => e.model.head < this.size).length;
    const extra = this.allowance(expects);
    this.extraMs = Math.max(this.extraMs, extra);
    if (!this.waitUsed(returned, t0 + this.deadlineMs + extra)) {
      this.fail(
        `${label}: sentinel (unique ${unique}) unanswered within ${this.deadlineMs + extra} ms; ` +
          `used.idx ${this.lastUsed} -> ${this.q.usedIdx}, ${returned} elements expected; ` +
          this.missing(expects),
      );
      this.recover();
      return;
    }
    const ms = performance.now() - t0;
    const got = this.verify(expects, label);
    const reply = this.sentinelReply();
    // An earlier chain of the batch answered late (a SETUPMAPPING) may have written its reply
    // over the sentinel's, when its buffers run on into the sentinel's (a chain linked to the
    // sentinel's descriptors): then only the used element says the sentinel was answered.
    const checkable = expects.find((e) => e.sentinel)?.checkReply ?? true;
    if (got === undefined || (checkable && reply.unique !== unique)) {
      this.fail(
        `${label}: sentinel ${got === undefined ? "did not come back" : "came back"}, reply ` +
          `unique ${reply.unique} (sent ${unique})`,
      );
      return;
    }
    this.stats.sentinels++;
    this.stats.sentinelMaxMs = Math.max(this.stats.sentinelMaxMs, ms);
    this.stats.sentinelMeanMs += (ms - this.stats.sentinelMeanMs) / this.stats.sentinels;
  }

  /**
   * Breaks the ring (avail idx more than the queue size ahead, or behind), checks the device
   * ignores the sentinel, then sets the rings up again and checks the sentinel is answered.
   */
  breakCase(label: string): void {
    const r = this.rng;
    const jump = r.chance(0.5)
      ? this.size + 1 + r.int(0x1_0000 - 2 * this.size - 2)
      : -(1 + r.int(1000));
    const broken = (this.nextAvail + jump) & 0xffff;
    this.q.setAvailIdx(broken);
    this.fe.kick(FUZZ_QUEUE);
    try {
      this.barrier();
    } catch (e) {
      throw new Error(
        `after avail.idx moved from ${this.nextAvail} to ${broken} (more than the ` +
          `queue size ${this.size} ahead) and a kick, the daemon stopped answering: ` +
          (e instanceof Error ? e.message : String(e)),
      );
    }
    const usedBefore = this.lastUsed;
    // The sentinel, published on the broken ring, must be ignored.
    const unique = this.writeSentinel("getattr");
    this.q.writeAvailRing(broken, this.sentinelHead);
    this.q.setAvailIdx((broken + 1) & 0xffff);
    this.fe.kick(FUZZ_QUEUE);
    this.barrier();
    this.stats.ringsBroken++;
    this.stats.expectedRefused++;
    if (this.q.usedIdx !== usedBefore || this.sentinelReply().unique === unique) {
      this.fail(
        `${label}: avail idx moved by ${jump} (to ${broken}), yet the device used ` +
          `the ring (used.idx ${usedBefore} -> ${this.q.usedIdx})`,
      );
    }
    this.resetRings();
    const ms = this.roundTrip("getattr");
    this.stats.sentinels++;
    this.stats.sentinelMaxMs = Math.max(this.stats.sentinelMaxMs, ms);
    this.stats.sentinelMeanMs += (ms - this.stats.sentinelMeanMs) / this.stats.sentinels;
  }

  /** After a failed check: a barrier, then the rings set up again. */
  recover(): void {
    this.barrier();
    this.resetRings();
  }
}

/**
 * The V8 flags a daemon under fuzz runs with: `--max-semi-space-size=1` pins each isolate's
 * young generation to 1 MiB semi-spaces.
 *
 * Without it V8 grows the young generation with the allocation rate, in doublings, up to its
 * default maximum (32 MiB semi-spaces, two of them, per isolate). Under the fuzz the daemon's
 * worker isolate allocates a few KiB per case, so its young generation doubles at about case
 * 150,000, 350,000 and 750,000 (seed 12345): VmRSS went 70 → 86 (100k) → 96 (300k) → 115
 * (400k) → 148 MiB (800k), then stayed at 149 MiB up to 1.5 million cases, while the heap
 * left after each mark-compact stayed at 5.3 MiB and no inode, handle or descriptor was added.
 * That is bounded memory chosen by the allocation rate, not memory the guest makes the daemon
 * keep, and it would hide a real leak of the same size. With the young generation pinned the
 * same run grows RssAnon by 10 MiB (JIT code, the old generation's garbage until the first
 * mark-compact near case 350,000) and then stays flat to 1.5 million cases, so what is left to
 * grow under {@linkcode MEMORY_GROWTH_LIMIT_KIB} is what the daemon retains.
 */
export const FUZZ_DAEMON_V8_FLAGS = "--max-semi-space-size=1";

/**
 * The environment for a daemon under fuzz: {@linkcode FUZZ_DAEMON_V8_FLAGS} ahead of any
 * `DENO_V8_FLAGS` of ours (those win, e.g. `--trace-gc` to watch the heap).
 */
export function fuzzDaemonEnv(): Record<string, string> {
  const mine = Deno.env.get("DENO_V8_FLAGS");
  return { DENO_V8_FLAGS: mine ? `${FUZZ_DAEMON_V8_FLAGS},${mine}` : FUZZ_DAEMON_V8_FLAGS };
}

/**
 * The growth of the daemon's anonymous memory (RssAnon, see {@linkcode readMemKiB}) allowed
 * between case 100 and the end of a fuzz run, the daemon running with
 * {@linkcode FUZZ_DAEMON_V8_FLAGS}. The fuzz creates no files (structured requests only LOOKUP
 * random names in a directory holding the one DAX file, random chains carry random opcodes; over
 * 1.5 million cases the shared directory stayed as it was and the daemon's descriptor count stayed
 * put; the DAX file is looked up once per session, at most 8 of its ranges mapped), so no growth
 * is owed to inodes or handles the guest holds: about 10 MiB is V8 settling
 * (measured over 1.5 million cases; 500,000 cases of seed 12345: +10.4 MiB); the rest of the
 * margin is for a busier machine. A daemon that keeps one number (8 bytes) for each FUSE request
 * it handles, about 6 a case, fails it at 500,000 cases of seed 12345 (+40.2 MiB).
 */
export const MEMORY_GROWTH_LIMIT_KIB = 32 * 1024;

/** The resident memory of a process, KiB, from /proc/PID/status. */
export interface MemKiB {
  /** VmRSS: everything resident. */
  rss: number;
  /**
   * RssAnon: anonymous pages, i.e. what the process allocated (the V8 heaps, malloc). The only
   * part a guest could make grow without bound.
   */
  anon: number;
  /** RssFile: file pages (the deno binary's code as it is first run; bounded by its size). */
  file: number;
  /** RssShmem: shared memory (guest RAM mapped from the front end; bounded by its regions). */
  shmem: number;
}

/** The resident memory of `pid` (undefined if it is gone). */
export function readMemKiB(pid: number): MemKiB | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return undefined;
  }
  const field = (name: string): number | undefined => {
    const m = new RegExp(`^${name}:\\s+(\\d+)\\s+kB`, "m").exec(text);
    return m?.[1] === undefined ? undefined : Number(m[1]);
  };
  const rss = field("VmRSS");
  const anon = field("RssAnon");
  if (rss === undefined || anon === undefined) return undefined;
  return { rss, anon, file: field("RssFile") ?? 0, shmem: field("RssShmem") ?? 0 };
}

/** The highest VmRSS of `pid` in KiB, read from /proc/PID/status (undefined if gone). */
export function readRssKiB(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m?.[1] === undefined ? undefined : Number(m[1]);
  } catch {
    return undefined;
  }
}

/**
 * The malformed-chain count our daemon reported: its exit statistics line ("N malformed chains")
 * when present, else the highest "refused a malformed chain (N so far)" line (exact up to 100,
 * then every 1000th), else 0.
 */
export function daemonRefusedChains(log: string): { count: number; exact: boolean } {
  const stats = [...log.matchAll(/; (\d+) malformed chains,/g)].pop();
  if (stats?.[1] !== undefined) return { count: Number(stats[1]), exact: true };
  let max = 0;
  for (const m of log.matchAll(/refused a malformed chain \((\d+) so far\)/g)) {
    max = Math.max(max, Number(m[1]));
  }
  return { count: max, exact: max <= 100 };
}

function newStats(seed: number): FuzzStats {
  return {
    seed,
    cases: 0,
    chains: 0,
    malformed: 0,
    headOutOfRange: 0,
    answered: 0,
    repliesChecked: 0,
    expectedRefused: 0,
    ringsBroken: 0,
    ringResets: 0,
    reconnects: 0,
    sentinels: 0,
    sentinelMaxMs: 0,
    sentinelMeanMs: 0,
    caseMaxMs: 0,
    slowCases: 0,
    failures: 0,
    failureSamples: [],
    kinds: {},
    dax: {
      window: false,
      setups: 0,
      validSetups: 0,
      removals: 0,
      lookups: 0,
      lookupFailures: 0,
      reinits: 0,
      windowChecks: 0,
      maxMappings: 0,
      maps: 0,
      unmaps: 0,
      dropped: 0,
      refused: 0,
    },
    elapsedMs: 0,
  };
}

async function connect(
  socketPath: string,
  rng: Rng,
  stats: FuzzStats,
  deadlineMs: number,
): Promise<HostileDriver> {
  const fe = await VhostUserFrontend.connect(socketPath, {
    queueSize: FUZZ_QUEUE_SIZE,
    requestQueues: 1,
    regions: FUZZ_REGIONS,
    timeoutMs: 5000,
    // A new connection is a new window (the daemon runs with --keep-serving).
    cacheWindow: true,
  });
  try {
    const d = new HostileDriver(fe, rng, stats, deadlineMs);
    d.roundTrip("init");
    if (fe.hasWindow) d.lookupDaxFile();
    return d;
  } catch (e) {
    fe.close();
    throw e;
  }
}

/**
 * Runs `cases` seeded random-ring cases against the back end at `socketPath` over as few
 * connections as possible (a new one only when the daemon closes one). Every case ends with a
 * sentinel request that must be answered within `deadlineMs` (1 s; plus
 * {@linkcode DAX_ALLOWANCE_MS} per request of the batch that changes the window). Throws only
 * when no connection can be had (the daemon is gone) or after `maxFailures` failures; otherwise
 * returns the statistics, failures included. A case over its deadline counts as slow
 * (`slowCases`).
 */
export async function runFuzz(opts: FuzzOptions): Promise<FuzzStats> {
  const stats = newStats(opts.seed);
  const rng = new Rng(opts.seed);
  const every = opts.progressEvery ?? 10_000;
  const deadlineMs = opts.deadlineMs ?? 1000;
  const maxFailures = opts.maxFailures ?? 50;
  const t0 = performance.now();
  let driver: HostileDriver | undefined;
  try {
    for (let n = 1; n <= opts.cases; n++) {
      if (driver === undefined) {
        try {
          driver = await connect(opts.socketPath, rng, stats, deadlineMs);
        } catch (e) {
          throw new Error(
            `Cannot connect to the back end before case ${n} (is it alive?): ` +
              `${e instanceof Error ? e.message : e}; failures so far:\n  ` +
              stats.failureSamples.join("\n  "),
          );
        }
        driver.breakShare = opts.breakShare ?? driver.breakShare;
      }
      let ms: number;
      const caseStart = performance.now();
      const d = driver;
      try {
        ms = driver.runCase(n);
      } catch (e) {
        ms = performance.now() - caseStart;
        const why = e instanceof Error ? e.message : String(e);
        if (e instanceof ConnectionLost || driver.fe.peerClosed()) {
          stats.failures++;
          if (stats.failureSamples.length < 20) {
            stats.failureSamples.push(`case ${n}: ${why} (reconnecting)`);
          }
          stats.reconnects++;
          driver.close();
          driver = undefined;
        } else {
          stats.failures++;
          if (stats.failureSamples.length < 20) stats.failureSamples.push(`case ${n}: ${why}`);
          try {
            driver.recover();
          } catch {
            stats.reconnects++;
            driver.close();
            driver = undefined;
          }
        }
      }
      stats.cases = n;
      stats.caseMaxMs = Math.max(stats.caseMaxMs, ms);
      if (ms > deadlineMs + d.extraMs) stats.slowCases++;
      if (stats.failures >= maxFailures) {
        throw new Error(
          `Giving up after ${stats.failures} failures (case ${n}):\n  ` +
            stats.failureSamples.join("\n  "),
        );
      }
      if (n === opts.cases && driver !== undefined) {
        // The end: nothing may stay mapped (a REMOVEMAPPING of the whole window empties it).
        try {
          driver.checkWindowEmpty("the end");
        } catch (e) {
          stats.failures++;
          stats.failureSamples.push(`the end: ${e instanceof Error ? e.message : e}`);
        }
      }
      if (n === 100 || n % every === 0 || n === opts.cases) {
        stats.elapsedMs = performance.now() - t0;
        opts.onProgress?.(n, stats);
      }
    }
  } finally {
    driver?.close();
  }
  stats.elapsedMs = performance.now() - t0;
  return stats;
}
