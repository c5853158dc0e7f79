/**
 * The DRIVER side of a split virtqueue (virtio 1.2 §2.7) in {@linkcode GuestRam}: what the
 * guest kernel's virtio_ring does. It places descriptor chains (device-readable buffers first,
 * then device-writable ones) directly or through one indirect table, publishes them on the avail
 * ring, harvests the used ring, and honours VIRTIO_RING_F_EVENT_IDX on the driver side
 * (`used_event` written, `avail_event` read to decide whether to kick).
 *
 * Layout (virtio 1.2 §2.7, "Virtqueue Part Alignment"): descriptor table aligned to 16, avail
 * ring to 2, used ring to 4, each allocated separately in guest memory. Every byte offset comes
 * from src/wire/virtio.ts.
 *
 * Memory ordering: the avail and used indices and the event words are accessed with `Atomics`
 * (sequentially consistent, so a full barrier on x86-64), which gives the write barrier before
 * publishing `avail.idx` and the full barrier between publishing and reading `avail_event` that
 * §2.7.13 requires; the other fields are plain typed-array stores, written before the index.
 *
 * Two ways to place a chain: {@linkcode GuestQueue.add} (buffers in arrays, optionally split or
 * through an indirect table), and, allocating nothing, {@linkcode GuestQueue.beginChain} /
 * {@linkcode GuestQueue.appendBuffer} / {@linkcode GuestQueue.endChain} with
 * {@linkcode GuestQueue.harvestNext} to take used elements back one at a time (for a driver on
 * a hot path, such as the daemon's JIT warm-up). The driver's bookkeeping (free descriptors,
 * outstanding chains, each chain's links) lives in typed arrays.
 *
 * For hostile tests there is raw access to every descriptor (also with any 64-bit address, see
 * {@linkcode RawDescriptor}), avail ring slot, index, flag and event word.
 *
 * @module
 */
import type { GuestRam } from "./guest_ram.ts";
import {
  availEventOffset,
  availRingBytes,
  DESCRIPTOR_SIZE,
  descTableBytes,
  queueSizeProblem,
  usedEventOffset,
  usedRingBytes,
  VIRTQ_AVAIL,
  VIRTQ_DESC,
  VIRTQ_DESC_ALIGN,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "../wire/virtio.ts";

// (Re-exported as before, for the driver entry's users; defined once, in src/wire.)

/** One descriptor as it sits in a table. */
export interface Descriptor {
  /** Guest-physical address of the buffer. */
  addr: number;
  /** Length in bytes. */
  len: number;
  /** VIRTQ_DESC_F_* bits. */
  flags: number;
  /** Index of the next descriptor when F_NEXT is set. */
  next: number;
}

/**
 * A descriptor with its 64-bit address in two 32-bit halves, so that any bit pattern can be
 * written and read back exactly (addresses near 2^64, past 2^53): for hostile tests.
 */
export interface RawDescriptor {
  /** Low 32 bits of the address. */
  lo: number;
  /** High 32 bits of the address. */
  hi: number;
  /** Length in bytes (u32). */
  len: number;
  /** Flags (u16; unknown bits allowed). */
  flags: number;
  /** Next index (u16). */
  next: number;
}

/** A buffer in guest memory. */
export interface GuestBuffer {
  /** Guest-physical address. */
  gpa: number;
  /** Length in bytes. */
  len: number;
}

/** How {@linkcode GuestQueue.add} lays out one descriptor chain. */
export interface ChainOptions {
  /** Put the chain in one indirect table (one ring descriptor). Default false. */
  indirect?: boolean;
  /** Split every buffer into descriptors of at most this many bytes. Default: no split. */
  maxDescriptorLen?: number;
}

/** One harvested used ring element. */
export interface UsedElement {
  /** The head descriptor index the device returned. */
  id: number;
  /** The bytes the device says it wrote into the chain's writable buffers. */
  len: number;
  /** The chain's device-writable capacity, for checking `len`. */
  writableBytes: number;
}

/** Counters of the driver's notification decisions. */
export interface DriverNotifyStats {
  /** Publishes after which the driver had to kick the device. */
  kicksSent: number;
  /** Publishes after which the device had said it needs no kick. */
  kicksSuppressed: number;
}

/** Options of the {@linkcode GuestQueue} constructor. */
export interface GuestQueueOptions {
  /** Queue size (a power of two, at most 32768). */
  size: number;
  /** VIRTIO_RING_F_EVENT_IDX was negotiated. */
  eventIdx: boolean;
  /** Allocate the rings in this memory region only. */
  region?: number;
}

const U32 = 0x1_0000_0000;

function putDescriptor(
  v: DataView,
  at: number,
  lo: number,
  hi: number,
  len: number,
  flags: number,
  next: number,
): void {
  v.setUint32(at + VIRTQ_DESC.addr, lo >>> 0, true);
  v.setUint32(at + VIRTQ_DESC.addr + 4, hi >>> 0, true);
  v.setUint32(at + VIRTQ_DESC.len, len >>> 0, true);
  v.setUint16(at + VIRTQ_DESC.flags, flags & 0xffff, true);
  v.setUint16(at + VIRTQ_DESC.next, next & 0xffff, true);
}

function getRawDescriptor(v: DataView, at: number): RawDescriptor {
  return {
    lo: v.getUint32(at + VIRTQ_DESC.addr, true),
    hi: v.getUint32(at + VIRTQ_DESC.addr + 4, true),
    len: v.getUint32(at + VIRTQ_DESC.len, true),
    flags: v.getUint16(at + VIRTQ_DESC.flags, true),
    next: v.getUint16(at + VIRTQ_DESC.next, true),
  };
}

/**
 * Writes descriptor `d` at guest-physical `gpa` of `mem` (an entry of an indirect table, or of
 * any table a test lays out). The address is split into its 32-bit halves.
 */
export function writeDescriptorAt(mem: GuestRam, gpa: number, d: Descriptor): void {
  putDescriptor(
    mem.dataView(gpa, DESCRIPTOR_SIZE),
    0,
    d.addr >>> 0,
    Math.floor(d.addr / U32),
    d.len,
    d.flags,
    d.next,
  );
}

/** Writes the raw descriptor `d` (address halves as given) at guest-physical `gpa` of `mem`. */
export function writeRawDescriptorAt(mem: GuestRam, gpa: number, d: RawDescriptor): void {
  putDescriptor(mem.dataView(gpa, DESCRIPTOR_SIZE), 0, d.lo, d.hi, d.len, d.flags, d.next);
}

/** Reads the descriptor at guest-physical `gpa` of `mem`, its address in two halves. */
export function readRawDescriptorAt(mem: GuestRam, gpa: number): RawDescriptor {
  return getRawDescriptor(mem.dataView(gpa, DESCRIPTOR_SIZE), 0);
}

/** The driver side of one split virtqueue. */
export class GuestQueue {
  readonly #mem: GuestRam;
  readonly #size: number;
  readonly #eventIdx: boolean;
  readonly #desc: number;
  readonly #avail: number;
  readonly #used: number;
  /** All of guest memory, as words and as a DataView (the rings at the offsets below). */
  readonly #u16: Uint16Array;
  readonly #view: DataView;
  /** Offsets in guest memory's bytes of the descriptor table, avail ring and used ring. */
  readonly #descAt: number;
  readonly #availAt: number;
  readonly #usedAt: number;
  /** `#u16` indices of the index, flag and event words. */
  readonly #availIdxWord: number;
  readonly #availFlagsWord: number;
  readonly #usedEventWord: number;
  readonly #usedIdxWord: number;
  readonly #usedFlagsWord: number;
  readonly #availEventWord: number;
  /** Free descriptors of the ring's table, a stack (the top is taken first). */
  readonly #freeStack: Uint16Array;
  #freeCount = 0;
  /** The driver's own copy of each descriptor's `next` (the device may not rewrite it here). */
  readonly #next: Uint16Array;
  /** Per head: ring descriptors of its outstanding chain (0: not an outstanding head). */
  readonly #chainLen: Uint16Array;
  /** Per head: the chain's device-writable bytes. */
  readonly #chainWritable: Float64Array;
  /** Per head: its indirect table (length 0: none). */
  readonly #indirectGpa: Float64Array;
  readonly #indirectLen: Float64Array;
  #outstanding = 0;
  // The chain being built (beginChain .. endChain).
  #building = false;
  #buildHead = 0;
  #buildTail = 0;
  #buildTailFlags = 0;
  #buildCount = 0;
  #buildWritable = 0;
  #buildSeenWritable = false;
  #nextAvail = 0;
  #publishedAvail = 0;
  #lastUsed = 0;
  #harvestedLen = 0;
  #harvestedWritable = 0;
  #kicksSent = 0;
  #kicksSuppressed = 0;

  /** Allocates and zeroes the three rings in `mem`. */
  constructor(mem: GuestRam, opts: GuestQueueOptions) {
    const n = opts.size;
    const problem = queueSizeProblem(n);
    if (problem !== undefined) throw new RangeError(`Cannot create a queue: ${problem}`);
    this.#mem = mem;
    this.#size = n;
    this.#eventIdx = opts.eventIdx;
    this.#desc = mem.alloc(descTableBytes(n), VIRTQ_DESC_ALIGN, opts.region);
    this.#avail = mem.alloc(availRingBytes(n), VIRTQ_AVAIL.align, opts.region);
    this.#used = mem.alloc(usedRingBytes(n), VIRTQ_USED.align, opts.region);
    const bytes = mem.bytes;
    this.#u16 = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 1);
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#descAt = mem.offsetOf(this.#desc, descTableBytes(n));
    this.#availAt = mem.offsetOf(this.#avail, availRingBytes(n));
    this.#usedAt = mem.offsetOf(this.#used, usedRingBytes(n));
    this.#availIdxWord = (this.#availAt + VIRTQ_AVAIL.idx) >>> 1;
    this.#availFlagsWord = (this.#availAt + VIRTQ_AVAIL.flags) >>> 1;
    this.#usedEventWord = (this.#availAt + usedEventOffset(n)) >>> 1;
    this.#usedIdxWord = (this.#usedAt + VIRTQ_USED.idx) >>> 1;
    this.#usedFlagsWord = (this.#usedAt + VIRTQ_USED.flags) >>> 1;
    this.#availEventWord = (this.#usedAt + availEventOffset(n)) >>> 1;
    this.#freeStack = new Uint16Array(n);
    this.#next = new Uint16Array(n);
    this.#chainLen = new Uint16Array(n);
    this.#chainWritable = new Float64Array(n);
    this.#indirectGpa = new Float64Array(n);
    this.#indirectLen = new Float64Array(n);
    this.reset();
  }

  /** Queue size (number of descriptors). */
  get size(): number {
    return this.#size;
  }

  /** Whether the driver honours EVENT_IDX. */
  get eventIdx(): boolean {
    return this.#eventIdx;
  }

  /** Guest-physical address of the descriptor table. */
  get descGpa(): number {
    return this.#desc;
  }

  /** Guest-physical address of the avail ring. */
  get availGpa(): number {
    return this.#avail;
  }

  /** Guest-physical address of the used ring. */
  get usedGpa(): number {
    return this.#used;
  }

  /** Free descriptors in the ring's own table. */
  get numFree(): number {
    return this.#freeCount;
  }

  /** Chains handed to the device and not yet returned. */
  get outstanding(): number {
    return this.#outstanding;
  }

  /** The driver's notification decision counters. */
  get stats(): DriverNotifyStats {
    return { kicksSent: this.#kicksSent, kicksSuppressed: this.#kicksSuppressed };
  }

  /**
   * Zeroes the rings and forgets every outstanding chain (their indirect tables are freed; the
   * buffers are the caller's) and any chain being built. Indices restart at 0, as after a
   * device reset.
   */
  reset(): void {
    const n = this.#size;
    for (let head = 0; head < n; head++) {
      const len = this.#indirectLen[head] ?? 0;
      if ((this.#chainLen[head] ?? 0) > 0 && len > 0) {
        this.#mem.free(this.#indirectGpa[head] ?? 0, len);
      }
    }
    this.#chainLen.fill(0);
    this.#indirectLen.fill(0);
    this.#outstanding = 0;
    this.#building = false;
    const bytes = this.#mem.bytes;
    bytes.fill(0, this.#descAt, this.#descAt + descTableBytes(n));
    bytes.fill(0, this.#availAt, this.#availAt + availRingBytes(n));
    bytes.fill(0, this.#usedAt, this.#usedAt + usedRingBytes(n));
    // Descriptor 0 on top: chains take 0, 1, 2, ... on a fresh ring.
    for (let k = 0; k < n; k++) this.#freeStack[k] = n - 1 - k;
    this.#freeCount = n;
    this.#nextAvail = 0;
    this.#publishedAvail = 0;
    this.#lastUsed = 0;
  }

  // ---- raw access (hostile tests) -------------------------------------------------------------

  /** Offset in guest memory's bytes of descriptor `i` of the ring's table (modulo the size). */
  #descriptorAt(i: number): number {
    return this.#descAt + DESCRIPTOR_SIZE * (i % this.#size);
  }

  /** Offset in guest memory's bytes of avail ring slot `slot` (modulo the size). */
  #availSlotAt(slot: number): number {
    return this.#availAt + VIRTQ_AVAIL.ring + VIRTQ_AVAIL.entrySize * (slot % this.#size);
  }

  /** Offset in guest memory's bytes of used ring element `slot` (modulo the size). */
  #usedSlotAt(slot: number): number {
    return this.#usedAt + VIRTQ_USED.ring + VIRTQ_USED.entrySize * (slot % this.#size);
  }

  /** Writes descriptor `i` of the ring's table (taken modulo the size). */
  writeDescriptor(i: number, d: Descriptor): void {
    putDescriptor(
      this.#view,
      this.#descriptorAt(i),
      d.addr >>> 0,
      Math.floor(d.addr / U32),
      d.len,
      d.flags,
      d.next,
    );
  }

  /** Reads descriptor `i` of the ring's table. */
  readDescriptor(i: number): Descriptor {
    const r = getRawDescriptor(this.#view, this.#descriptorAt(i));
    return { addr: r.hi * U32 + r.lo, len: r.len, flags: r.flags, next: r.next };
  }

  /** Writes descriptor `i` of the ring's table with its address halves exactly as given. */
  writeRawDescriptor(i: number, d: RawDescriptor): void {
    putDescriptor(this.#view, this.#descriptorAt(i), d.lo, d.hi, d.len, d.flags, d.next);
  }

  /** Reads descriptor `i` of the ring's table, its address in two halves. */
  readRawDescriptor(i: number): RawDescriptor {
    return getRawDescriptor(this.#view, this.#descriptorAt(i));
  }

  /** Writes `head` into avail ring slot `slot` (taken modulo the size). */
  writeAvailRing(slot: number, head: number): void {
    this.#view.setUint16(this.#availSlotAt(slot), head, true);
  }

  /** The head in avail ring slot `slot` (taken modulo the size). */
  readAvailRing(slot: number): number {
    return this.#view.getUint16(this.#availSlotAt(slot), true);
  }

  /** Stores avail.idx (with a barrier), bypassing the driver's own bookkeeping. */
  setAvailIdx(idx: number): void {
    Atomics.store(this.#u16, this.#availIdxWord, idx & 0xffff);
  }

  /** Writes avail.flags. */
  setAvailFlags(flags: number): void {
    Atomics.store(this.#u16, this.#availFlagsWord, flags & 0xffff);
  }

  /** The avail.flags currently in memory. */
  get availFlags(): number {
    return Atomics.load(this.#u16, this.#availFlagsWord);
  }

  /** The avail.idx currently in memory. */
  get availIdx(): number {
    return Atomics.load(this.#u16, this.#availIdxWord);
  }

  /** The used.idx currently in memory (loaded with a barrier). */
  get usedIdx(): number {
    return Atomics.load(this.#u16, this.#usedIdxWord);
  }

  /**
   * Stores used.idx, a field the device owns: for tests that play a device (one that had
   * returned elements before a restart). The driver's own harvest position is not moved.
   */
  setUsedIdx(idx: number): void {
    Atomics.store(this.#u16, this.#usedIdxWord, idx & 0xffff);
  }

  /** The used.flags the device wrote. */
  get usedFlags(): number {
    return Atomics.load(this.#u16, this.#usedFlagsWord);
  }

  /** Stores used.flags, a field the device owns (for tests that play a device). */
  setUsedFlags(flags: number): void {
    Atomics.store(this.#u16, this.#usedFlagsWord, flags & 0xffff);
  }

  /** `avail_event` (after used.ring[size]): the device asks for a kick when avail.idx passes it. */
  get availEvent(): number {
    return Atomics.load(this.#u16, this.#availEventWord);
  }

  /** Stores `avail_event`, a field the device owns (for tests that play a device). */
  setAvailEvent(idx: number): void {
    Atomics.store(this.#u16, this.#availEventWord, idx & 0xffff);
  }

  /** `used_event` (after avail.ring[size]): the driver's request for an interrupt. */
  get usedEvent(): number {
    return Atomics.load(this.#u16, this.#usedEventWord);
  }

  /** Stores `used_event` (with a barrier). */
  setUsedEvent(idx: number): void {
    Atomics.store(this.#u16, this.#usedEventWord, idx & 0xffff);
  }

  /** Reads used ring slot `slot` as the device wrote it. */
  readUsedElement(slot: number): { id: number; len: number } {
    const at = this.#usedSlotAt(slot);
    return {
      id: this.#view.getUint32(at + VIRTQ_USED.id, true),
      len: this.#view.getUint32(at + VIRTQ_USED.len, true),
    };
  }

  /** The next used index the driver will harvest. */
  get lastUsedIdx(): number {
    return this.#lastUsed;
  }

  // ---- the driver -----------------------------------------------------------------------------

  /**
   * Starts placing a descriptor chain in the ring's table, allocating nothing: append its
   * buffers with {@linkcode appendBuffer}, then {@linkcode endChain}. A chain begun and not
   * ended is given up (its descriptors freed) by the next `beginChain` or by `reset`.
   */
  beginChain(): void {
    if (this.#building) this.#giveUpChain();
    this.#building = true;
    this.#buildCount = 0;
    this.#buildWritable = 0;
    this.#buildSeenWritable = false;
  }

  /**
   * Appends one buffer to the chain begun with {@linkcode beginChain}: one descriptor of the
   * ring's table, device-writable when `writable`. Device-readable buffers come first (virtio
   * 1.2 §2.7.4.2). Throws when no chain is begun, on a readable buffer after a writable one, or
   * when no descriptor is free (the chain stays begun; begin another to give it up).
   */
  appendBuffer(gpa: number, len: number, writable: boolean): void {
    if (!this.#building) throw new Error("Cannot append a buffer: no chain begun (beginChain)");
    if (!writable && this.#buildSeenWritable) {
      throw new RangeError(
        "Cannot append a device-readable buffer after a device-writable one (virtio 1.2 §2.7.4.2)",
      );
    }
    if (this.#freeCount === 0) {
      throw new Error(this.#fullMessage(this.#buildCount + 1, this.#buildCount));
    }
    const d = this.#freeStack[--this.#freeCount] ?? 0;
    const flags = writable ? VIRTQ_DESC_F_WRITE : 0;
    const v = this.#view;
    putDescriptor(v, this.#descriptorAt(d), gpa >>> 0, Math.floor(gpa / U32), len, flags, 0);
    if (this.#buildCount === 0) this.#buildHead = d;
    else {
      const tail = this.#descriptorAt(this.#buildTail);
      v.setUint16(tail + VIRTQ_DESC.flags, this.#buildTailFlags | VIRTQ_DESC_F_NEXT, true);
      v.setUint16(tail + VIRTQ_DESC.next, d, true);
      this.#next[this.#buildTail] = d;
    }
    this.#next[d] = 0;
    this.#buildTail = d;
    this.#buildTailFlags = flags;
    this.#buildCount++;
    if (writable) {
      this.#buildWritable += len;
      this.#buildSeenWritable = true;
    }
  }

  /**
   * Ends the chain begun with {@linkcode beginChain} and writes its head into the next avail
   * ring slot. Nothing is visible to the device until {@linkcode publish}. Returns the head
   * descriptor index (the used element's `id`). Throws when no chain with a buffer is begun.
   */
  endChain(): number {
    if (!this.#building || this.#buildCount === 0) {
      throw new RangeError(
        "Cannot end a descriptor chain with no buffer (beginChain, appendBuffer)",
      );
    }
    this.#building = false;
    const head = this.#buildHead;
    this.#track(head, this.#buildCount, this.#buildWritable, 0, 0);
    return head;
  }

  /** Returns the descriptors of the chain being built to the free stack, in order. */
  #giveUpChain(): void {
    this.#building = false;
    const count = this.#buildCount;
    let d = this.#buildHead;
    for (let k = 0; k < count; k++) {
      this.#freeStack[this.#freeCount + count - 1 - k] = d;
      d = this.#next[d] ?? 0;
    }
    this.#freeCount += count;
  }

  /** Records chain `head` as outstanding and puts it in the next avail ring slot. */
  #track(head: number, count: number, writable: number, tableGpa: number, tableLen: number): void {
    this.#chainLen[head] = count;
    this.#chainWritable[head] = writable;
    this.#indirectGpa[head] = tableGpa;
    this.#indirectLen[head] = tableLen;
    this.#outstanding++;
    this.writeAvailRing(this.#nextAvail, head);
    this.#nextAvail = (this.#nextAvail + 1) & 0xffff;
  }

  /**
   * Places one descriptor chain: `readable` buffers (device reads) then `writable` ones (device
   * writes), and writes its head into the next avail ring slot. Nothing is visible to the device
   * until {@linkcode publish}. Returns the head descriptor index (the used element's `id`).
   */
  add(
    readable: readonly GuestBuffer[],
    writable: readonly GuestBuffer[],
    opts: ChainOptions = {},
  ): number {
    if (this.#building) throw new Error("Cannot add a chain while one is begun (endChain first)");
    const max = opts.maxDescriptorLen ?? Infinity;
    if (!(max > 0)) throw new RangeError(`Cannot split buffers into ${max}-byte descriptors`);
    const pieces = (b: GuestBuffer): number =>
      b.len === 0 || max === Infinity ? 1 : Math.ceil(b.len / max);
    let need = 0;
    for (const b of readable) need += pieces(b);
    for (const b of writable) need += pieces(b);
    if (need === 0) throw new RangeError("Cannot add an empty descriptor chain");
    if (opts.indirect) return this.#addIndirect(readable, writable, max, need);
    if (need > this.#freeCount) throw new Error(this.#fullMessage(need, 0));
    this.beginChain();
    for (const b of readable) this.#appendSplit(b, false, max);
    for (const b of writable) this.#appendSplit(b, true, max);
    return this.endChain();
  }

  #appendSplit(b: GuestBuffer, writable: boolean, max: number): void {
    if (b.len === 0) {
      this.appendBuffer(b.gpa, 0, writable);
      return;
    }
    for (let off = 0; off < b.len; off += max) {
      this.appendBuffer(b.gpa + off, Math.min(max, b.len - off), writable);
    }
  }

  /** A chain of `need` descriptors in one indirect table, behind one ring descriptor. */
  #addIndirect(
    readable: readonly GuestBuffer[],
    writable: readonly GuestBuffer[],
    max: number,
    need: number,
  ): number {
    if (this.#freeCount === 0) throw new Error(this.#fullMessage(1, 0));
    const len = DESCRIPTOR_SIZE * need;
    const table = this.#mem.alloc(len, VIRTQ_DESC_ALIGN);
    const base = this.#mem.offsetOf(table, len);
    const v = this.#view;
    let i = 0;
    let writableBytes = 0;
    const put = (gpa: number, n: number, flags: number): void => {
      const last = i === need - 1;
      putDescriptor(
        v,
        base + DESCRIPTOR_SIZE * i,
        gpa >>> 0,
        Math.floor(gpa / U32),
        n,
        flags | (last ? 0 : VIRTQ_DESC_F_NEXT),
        last ? 0 : i + 1,
      );
      i++;
    };
    const split = (b: GuestBuffer, flags: number): void => {
      if (b.len === 0) put(b.gpa, 0, flags);
      for (let off = 0; off < b.len; off += max) {
        put(b.gpa + off, Math.min(max, b.len - off), flags);
      }
    };
    for (const b of readable) split(b, 0);
    for (const b of writable) {
      split(b, VIRTQ_DESC_F_WRITE);
      writableBytes += b.len;
    }
    const d = this.#freeStack[--this.#freeCount] ?? 0;
    this.writeDescriptor(d, { addr: table, len, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    this.#next[d] = 0;
    this.#track(d, 1, writableBytes, table, len);
    return d;
  }

  #fullMessage(need: number, building: number): string {
    return `Cannot add a descriptor chain of ${need} descriptors: ` +
      `${
        this.#freeCount + building
      } of ${this.#size} free (${this.#outstanding} chains outstanding)`;
  }

  /**
   * Publishes every added chain by storing avail.idx (after the ring entries), then decides
   * whether the device must be kicked: under EVENT_IDX `vring_need_event(avail_event, new, old)`,
   * otherwise unless used.flags has NO_NOTIFY. Returns true when the caller must kick.
   */
  publish(): boolean {
    const oldIdx = this.#publishedAvail;
    const newIdx = this.#nextAvail;
    if (oldIdx === newIdx) return false;
    this.setAvailIdx(newIdx);
    this.#publishedAvail = newIdx;
    const kick = this.#eventIdx
      ? vringNeedEvent(this.availEvent, newIdx, oldIdx)
      : (this.usedFlags & VRING_USED_F_NO_NOTIFY) === 0;
    if (kick) this.#kicksSent++;
    else this.#kicksSuppressed++;
    return kick;
  }

  /** True when the used ring holds elements not yet harvested. */
  hasUsed(): boolean {
    return this.usedIdx !== this.#lastUsed;
  }

  /**
   * Takes the next used element, if any, without allocating: returns its id (then
   * {@linkcode harvestedLen} and {@linkcode harvestedWritableBytes} describe it) and returns its
   * chain's descriptors (and indirect table) to the free lists; returns -1 when the used ring
   * holds nothing new. Throws when the device returns an id that is not an outstanding head.
   */
  harvestNext(): number {
    if (this.usedIdx === this.#lastUsed) return -1;
    const at = this.#usedSlotAt(this.#lastUsed);
    const id = this.#view.getUint32(at + VIRTQ_USED.id, true);
    const len = this.#view.getUint32(at + VIRTQ_USED.len, true);
    const count = id < this.#size ? this.#chainLen[id] ?? 0 : 0;
    if (count === 0) {
      throw new Error(
        `Device returned used element id ${id} (len ${len}) at used index ${this.#lastUsed}, ` +
          "which is not the head of an outstanding descriptor chain",
      );
    }
    const tableLen = this.#indirectLen[id] ?? 0;
    if (tableLen > 0) this.#mem.free(this.#indirectGpa[id] ?? 0, tableLen);
    // Back on the stack in reverse, so that the head is on top again.
    let d = id;
    for (let k = 0; k < count; k++) {
      this.#freeStack[this.#freeCount + count - 1 - k] = d;
      d = this.#next[d] ?? 0;
    }
    this.#freeCount += count;
    this.#chainLen[id] = 0;
    this.#indirectLen[id] = 0;
    this.#outstanding--;
    this.#harvestedLen = len;
    this.#harvestedWritable = this.#chainWritable[id] ?? 0;
    this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    return id;
  }

  /** The bytes the device wrote, as the last element {@linkcode harvestNext} took says. */
  get harvestedLen(): number {
    return this.#harvestedLen;
  }

  /** The device-writable capacity of the chain {@linkcode harvestNext} took last. */
  get harvestedWritableBytes(): number {
    return this.#harvestedWritable;
  }

  /**
   * Takes every new used element, returning its chain's descriptors (and indirect table) to the
   * free lists. Throws when the device returns an id that is not an outstanding head, or moves
   * used.idx further than there are chains outstanding.
   */
  harvest(): UsedElement[] {
    const usedIdx = this.usedIdx;
    const count = (usedIdx - this.#lastUsed) & 0xffff;
    if (count > this.#outstanding) {
      throw new Error(
        `Device moved used.idx from ${this.#lastUsed} to ${usedIdx} (${count} elements) ` +
          `with only ${this.#outstanding} chains outstanding`,
      );
    }
    const out: UsedElement[] = [];
    for (let k = 0; k < count; k++) {
      const id = this.harvestNext();
      out.push({ id, len: this.#harvestedLen, writableBytes: this.#harvestedWritable });
    }
    return out;
  }

  /**
   * Takes every new used element (at most `max`) WITHOUT matching it to a chain this driver
   * placed: for hostile tests that wrote descriptors and avail entries raw. No descriptor goes
   * back to the free list (`writableBytes` is reported as 0); `reset()` the queue afterwards.
   */
  harvestRaw(max = Infinity): UsedElement[] {
    const out: UsedElement[] = [];
    const usedIdx = this.usedIdx;
    while (this.#lastUsed !== usedIdx && out.length < max) {
      const { id, len } = this.readUsedElement(this.#lastUsed);
      out.push({ id, len, writableBytes: 0 });
      this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    }
    return out;
  }

  /**
   * Asks for an interrupt at the next used element (EVENT_IDX: `used_event = last used index`;
   * otherwise clears avail.flags NO_INTERRUPT), then re-checks the used ring with a barrier, as
   * virtqueue_enable_cb_prepare + virtqueue_poll do. Returns true if elements arrived meanwhile
   * (the device may not interrupt for them: harvest before waiting).
   */
  enableInterrupts(): boolean {
    if (this.#eventIdx) this.setUsedEvent(this.#lastUsed);
    else this.setAvailFlags(this.availFlags & ~VRING_AVAIL_F_NO_INTERRUPT);
    return this.hasUsed();
  }

  /**
   * Asks the device not to interrupt: sets avail.flags NO_INTERRUPT (without EVENT_IDX), or
   * moves `used_event` half a ring behind (with EVENT_IDX), as virtqueue_disable_cb does.
   */
  disableInterrupts(): void {
    if (this.#eventIdx) this.setUsedEvent((this.#lastUsed - 0x8000) & 0xffff);
    else this.setAvailFlags(this.availFlags | VRING_AVAIL_F_NO_INTERRUPT);
  }
}
