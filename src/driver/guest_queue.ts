/**
 * The DRIVER side of a split virtqueue (virtio 1.2 §2.7) in {@linkcode GuestRam}: what the
 * guest kernel's virtio_ring does. It places descriptor chains (device-readable buffers first,
 * then device-writable ones) directly or through one indirect table, publishes them on the avail
 * ring, harvests the used ring, and honours VIRTIO_RING_F_EVENT_IDX on the driver side
 * (`used_event` written, `avail_event` read to decide whether to kick).
 *
 * Layout (virtio 1.2 §2.7, "Virtqueue Part Alignment"): descriptor table aligned to 16, avail
 * ring to 2, used ring to 4, each allocated separately in guest memory.
 *
 * Memory ordering: the avail and used indices and the event words are accessed with `Atomics`
 * (sequentially consistent, so a full barrier on x86-64), which gives the write barrier before
 * publishing `avail.idx` and the full barrier between publishing and reading `avail_event` that
 * §2.7.13 requires; the other fields are plain typed-array stores, written before the index.
 *
 * For hostile tests there is raw access to every descriptor, avail ring slot and index.
 *
 * @module
 */
import type { GuestRam } from "./guest_ram.ts";
import {
  DESCRIPTOR_SIZE,
  MAX_QUEUE_SIZE,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_USED_F_NO_NOTIFY,
} from "../wire/virtio.ts";

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

interface OutstandingChain {
  descriptors: number[];
  indirectTable: GuestBuffer | undefined;
  writableBytes: number;
}

/** `vring_need_event(event_idx, new_idx, old_idx)` from the virtio spec, in u16 arithmetic. */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

/** The driver side of one split virtqueue. */
export class GuestQueue {
  readonly #mem: GuestRam;
  readonly #size: number;
  readonly #eventIdx: boolean;
  readonly #desc: number;
  readonly #avail: number;
  readonly #used: number;
  readonly #u16: Uint16Array;
  #free: number[] = [];
  #chains = new Map<number, OutstandingChain>();
  #nextAvail = 0;
  #publishedAvail = 0;
  #lastUsed = 0;
  #kicksSent = 0;
  #kicksSuppressed = 0;

  /** Allocates and zeroes the three rings in `mem`. */
  constructor(mem: GuestRam, opts: GuestQueueOptions) {
    const n = opts.size;
    if (n < 1 || n > MAX_QUEUE_SIZE || (n & (n - 1)) !== 0) {
      throw new RangeError(`Cannot create a queue of size ${n}: not a power of two up to 32768`);
    }
    this.#mem = mem;
    this.#size = n;
    this.#eventIdx = opts.eventIdx;
    this.#desc = mem.alloc(DESCRIPTOR_SIZE * n, 16, opts.region);
    this.#avail = mem.alloc(6 + 2 * n, 2, opts.region);
    this.#used = mem.alloc(6 + 8 * n, 4, opts.region);
    const bytes = mem.bytes;
    this.#u16 = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 1);
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
    return this.#free.length;
  }

  /** Chains handed to the device and not yet returned. */
  get outstanding(): number {
    return this.#chains.size;
  }

  /** The driver's notification decision counters. */
  get stats(): DriverNotifyStats {
    return { kicksSent: this.#kicksSent, kicksSuppressed: this.#kicksSuppressed };
  }

  #idx(gpa: number): number {
    return this.#mem.offsetOf(gpa, 2) >>> 1;
  }

  /**
   * Zeroes the rings and forgets every outstanding chain (their indirect tables are freed; the
   * buffers are the caller's). Indices restart at 0, as after a device reset.
   */
  reset(): void {
    for (const c of this.#chains.values()) {
      if (c.indirectTable) this.#mem.free(c.indirectTable.gpa, c.indirectTable.len);
    }
    this.#chains.clear();
    this.#mem.slice(this.#desc, DESCRIPTOR_SIZE * this.#size).fill(0);
    this.#mem.slice(this.#avail, 6 + 2 * this.#size).fill(0);
    this.#mem.slice(this.#used, 6 + 8 * this.#size).fill(0);
    this.#free = [];
    for (let i = this.#size - 1; i >= 0; i--) this.#free.push(i);
    this.#nextAvail = 0;
    this.#publishedAvail = 0;
    this.#lastUsed = 0;
  }

  // ---- raw access (hostile tests) -------------------------------------------------------------

  /** Writes descriptor `i` of the ring's table. */
  writeDescriptor(i: number, d: Descriptor): void {
    this.#writeDescriptorAt(this.#desc + DESCRIPTOR_SIZE * (i % this.#size), d);
  }

  /** Reads descriptor `i` of the ring's table. */
  readDescriptor(i: number): Descriptor {
    const v = this.#mem.dataView(this.#desc + DESCRIPTOR_SIZE * (i % this.#size), DESCRIPTOR_SIZE);
    return {
      addr: v.getUint32(4, true) * 0x1_0000_0000 + v.getUint32(0, true),
      len: v.getUint32(8, true),
      flags: v.getUint16(12, true),
      next: v.getUint16(14, true),
    };
  }

  #writeDescriptorAt(gpa: number, d: Descriptor): void {
    const v = this.#mem.dataView(gpa, DESCRIPTOR_SIZE);
    v.setUint32(0, d.addr >>> 0, true);
    v.setUint32(4, Math.floor(d.addr / 0x1_0000_0000), true);
    v.setUint32(8, d.len >>> 0, true);
    v.setUint16(12, d.flags, true);
    v.setUint16(14, d.next, true);
  }

  /** Writes `head` into avail ring slot `slot` (taken modulo the size). */
  writeAvailRing(slot: number, head: number): void {
    this.#mem.setU16(this.#avail + 4 + 2 * (slot % this.#size), head);
  }

  /** Stores avail.idx (with a barrier), bypassing the driver's own bookkeeping. */
  setAvailIdx(idx: number): void {
    Atomics.store(this.#u16, this.#idx(this.#avail + 2), idx & 0xffff);
  }

  /** Writes avail.flags. */
  setAvailFlags(flags: number): void {
    this.#mem.setU16(this.#avail, flags);
  }

  /** The avail.idx currently in memory. */
  get availIdx(): number {
    return Atomics.load(this.#u16, this.#idx(this.#avail + 2));
  }

  /** The used.idx currently in memory (loaded with a barrier). */
  get usedIdx(): number {
    return Atomics.load(this.#u16, this.#idx(this.#used + 2));
  }

  /** The used.flags the device wrote. */
  get usedFlags(): number {
    return this.#mem.getU16(this.#used);
  }

  /** `avail_event` (after used.ring[size]): the device asks for a kick when avail.idx passes it. */
  get availEvent(): number {
    return Atomics.load(this.#u16, this.#idx(this.#used + 4 + 8 * this.#size));
  }

  /** `used_event` (after avail.ring[size]): the driver's request for an interrupt. */
  get usedEvent(): number {
    return Atomics.load(this.#u16, this.#idx(this.#avail + 4 + 2 * this.#size));
  }

  /** Stores `used_event` (with a barrier). */
  setUsedEvent(idx: number): void {
    Atomics.store(this.#u16, this.#idx(this.#avail + 4 + 2 * this.#size), idx & 0xffff);
  }

  /** Reads used ring slot `slot` as the device wrote it. */
  readUsedElement(slot: number): { id: number; len: number } {
    const gpa = this.#used + 4 + 8 * (slot % this.#size);
    return { id: this.#mem.getU32(gpa), len: this.#mem.getU32(gpa + 4) };
  }

  /** The next used index the driver will harvest. */
  get lastUsedIdx(): number {
    return this.#lastUsed;
  }

  // ---- the driver -----------------------------------------------------------------------------

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
    const pieces: Descriptor[] = [];
    const max = opts.maxDescriptorLen ?? Infinity;
    if (max <= 0) throw new RangeError(`Cannot split buffers into ${max}-byte descriptors`);
    const push = (b: GuestBuffer, flags: number): void => {
      if (b.len === 0) {
        pieces.push({ addr: b.gpa, len: 0, flags, next: 0 });
        return;
      }
      for (let off = 0; off < b.len; off += max) {
        pieces.push({ addr: b.gpa + off, len: Math.min(max, b.len - off), flags, next: 0 });
      }
    };
    for (const b of readable) push(b, 0);
    for (const b of writable) push(b, VIRTQ_DESC_F_WRITE);
    if (pieces.length === 0) throw new RangeError("Cannot add an empty descriptor chain");
    const writableBytes = writable.reduce((n, b) => n + b.len, 0);

    let head: number;
    let chain: OutstandingChain;
    if (opts.indirect) {
      const d = this.#free.pop();
      if (d === undefined) throw new Error(this.#fullMessage(1));
      const len = DESCRIPTOR_SIZE * pieces.length;
      const table = this.#mem.alloc(len, 16);
      pieces.forEach((p, i) => {
        const last = i === pieces.length - 1;
        this.#writeDescriptorAt(table + DESCRIPTOR_SIZE * i, {
          ...p,
          flags: p.flags | (last ? 0 : VIRTQ_DESC_F_NEXT),
          next: last ? 0 : i + 1,
        });
      });
      this.writeDescriptor(d, { addr: table, len, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      head = d;
      chain = { descriptors: [d], indirectTable: { gpa: table, len }, writableBytes };
    } else {
      if (pieces.length > this.#free.length) throw new Error(this.#fullMessage(pieces.length));
      const ids = pieces.map(() => this.#free.pop() ?? -1);
      pieces.forEach((p, i) => {
        const last = i === pieces.length - 1;
        this.writeDescriptor(ids[i] ?? 0, {
          ...p,
          flags: p.flags | (last ? 0 : VIRTQ_DESC_F_NEXT),
          next: last ? 0 : ids[i + 1] ?? 0,
        });
      });
      head = ids[0] ?? 0;
      chain = { descriptors: ids, indirectTable: undefined, writableBytes };
    }
    this.#chains.set(head, chain);
    this.writeAvailRing(this.#nextAvail, head);
    this.#nextAvail = (this.#nextAvail + 1) & 0xffff;
    return head;
  }

  #fullMessage(need: number): string {
    return `Cannot add a descriptor chain of ${need} descriptors: ${this.#free.length} of ` +
      `${this.#size} free (${this.#chains.size} chains outstanding)`;
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
      : (Atomics.load(this.#u16, this.#idx(this.#used)) & VRING_USED_F_NO_NOTIFY) === 0;
    if (kick) this.#kicksSent++;
    else this.#kicksSuppressed++;
    return kick;
  }

  /** True when the used ring holds elements not yet harvested. */
  hasUsed(): boolean {
    return this.usedIdx !== this.#lastUsed;
  }

  /**
   * Takes every new used element, returning its chain's descriptors (and indirect table) to the
   * free lists. Throws when the device returns an id that is not an outstanding head, or moves
   * used.idx further than there are chains outstanding.
   */
  harvest(): UsedElement[] {
    const usedIdx = this.usedIdx;
    const count = (usedIdx - this.#lastUsed) & 0xffff;
    if (count > this.#chains.size) {
      throw new Error(
        `Device moved used.idx from ${this.#lastUsed} to ${usedIdx} (${count} elements) ` +
          `with only ${this.#chains.size} chains outstanding`,
      );
    }
    const out: UsedElement[] = [];
    for (let k = 0; k < count; k++) {
      const { id, len } = this.readUsedElement(this.#lastUsed);
      const chain = this.#chains.get(id);
      if (chain === undefined) {
        throw new Error(
          `Device returned used element id ${id} (len ${len}) at used index ${this.#lastUsed}, ` +
            "which is not the head of an outstanding descriptor chain",
        );
      }
      this.#chains.delete(id);
      if (chain.indirectTable) this.#mem.free(chain.indirectTable.gpa, chain.indirectTable.len);
      for (let i = chain.descriptors.length - 1; i >= 0; i--) {
        this.#free.push(chain.descriptors[i] ?? 0);
      }
      out.push({ id, len, writableBytes: chain.writableBytes });
      this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    }
    return out;
  }

  /**
   * Takes every new used element WITHOUT matching it to a chain this driver placed: for hostile
   * tests that wrote descriptors and avail entries raw. No descriptor goes back to the free list
   * (`writableBytes` is reported as 0); `reset()` the queue afterwards.
   */
  harvestRaw(): UsedElement[] {
    const out: UsedElement[] = [];
    const usedIdx = this.usedIdx;
    while (this.#lastUsed !== usedIdx) {
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
    else {
      Atomics.store(
        this.#u16,
        this.#idx(this.#avail),
        this.#mem.getU16(this.#avail) & ~VRING_AVAIL_F_NO_INTERRUPT,
      );
    }
    return this.hasUsed();
  }

  /**
   * Asks the device not to interrupt: sets avail.flags NO_INTERRUPT (without EVENT_IDX), or
   * moves `used_event` half a ring behind (with EVENT_IDX), as virtqueue_disable_cb does.
   */
  disableInterrupts(): void {
    if (this.#eventIdx) this.setUsedEvent((this.#lastUsed - 0x8000) & 0xffff);
    else this.setAvailFlags(this.#mem.getU16(this.#avail) | VRING_AVAIL_F_NO_INTERRUPT);
  }
}
