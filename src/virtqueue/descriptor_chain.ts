/**
 * A descriptor chain taken from the avail ring: its buffers resolved to guest memory, checked,
 * and split into the device-readable part and the device-writable part.
 *
 * One `DescriptorChain` object is reused for every chain a queue pops, so the hot path allocates
 * nothing once its arrays have grown to the largest chain seen.
 *
 * @module
 */
import type { GuestMemory, MemoryRegion } from "../memory/guest_memory.ts";
import { IOVEC, setU64 } from "../ffi/mod.ts";

/** Descriptor flag: the chain continues with `next`. */
export const VIRTQ_DESC_F_NEXT = 1;
/** Descriptor flag: the buffer is device-writable. */
export const VIRTQ_DESC_F_WRITE = 2;
/** Descriptor flag: the buffer is a table of descriptors. */
export const VIRTQ_DESC_F_INDIRECT = 4;
/** Bytes per descriptor: `le64 addr; le32 len; le16 flags; le16 next;` */
export const DESCRIPTOR_SIZE = 16;
/** The largest indirect table we walk (the largest queue a split ring may have). */
export const MAX_INDIRECT_DESCRIPTORS = 32768;

/** A descriptor table as resolved in guest memory. */
interface Table {
  region: MemoryRegion;
  /** Offset of entry 0 in `region.buffer`. */
  offset: number;
  entries: number;
}

/**
 * The buffers of one chain. Segments `0 .. readableCount-1` are device-readable, the rest
 * device-writable; a buffer crossing from one region into an adjacent one takes one segment per
 * region.
 */
export class DescriptorChain {
  /** The head descriptor index (what goes back on the used ring). */
  head = 0;
  /** Descriptors walked, indirect table entries included. */
  descriptorCount = 0;
  /** Segments in use. */
  segmentCount = 0;
  /** How many of the segments (from the first) are device-readable. */
  readableCount = 0;
  /** Total device-readable bytes. */
  readableLength = 0;
  /** Total device-writable bytes. */
  writableLength = 0;
  /** Whether the chain came through an indirect table. */
  indirect = false;
  readonly #region: MemoryRegion[] = [];
  /** Offset of each segment in its region's `buffer`. */
  readonly #offset: number[] = [];
  readonly #length: number[] = [];
  readonly #table: Table = { region: undefined as unknown as MemoryRegion, offset: 0, entries: 0 };

  #reset(head: number): void {
    this.head = head;
    this.descriptorCount = 0;
    this.segmentCount = 0;
    this.readableCount = 0;
    this.readableLength = 0;
    this.writableLength = 0;
    this.indirect = false;
  }

  #addBuffer(
    memory: GuestMemory,
    addr: number,
    len: number,
    writable: boolean,
  ): string | undefined {
    let gpa = addr;
    let left = len;
    while (left > 0) {
      const region = memory.regionOfGpa(gpa);
      if (region === undefined) {
        return `buffer 0x${addr.toString(16)}+${len} is outside guest memory at 0x${
          gpa.toString(16)
        }`;
      }
      const inRegion = gpa - region.guestPhysAddr;
      const n = Math.min(left, region.memorySize - inRegion);
      const i = this.segmentCount++;
      if (i >= 2 * MAX_INDIRECT_DESCRIPTORS) return "chain has too many segments";
      this.#region[i] = region;
      this.#offset[i] = region.base + inRegion;
      this.#length[i] = n;
      gpa += n;
      left -= n;
    }
    if (writable) this.writableLength += len;
    else {
      this.readableLength += len;
      this.readableCount = this.segmentCount;
    }
    return undefined;
  }

  /**
   * Walks the chain starting at `head` in the queue's descriptor table. Returns undefined when
   * the chain is well formed, or what is wrong with it: an index out of range, a loop or a chain
   * longer than `maxDescriptors`, a buffer outside guest memory, a readable buffer after a
   * writable one, or a malformed indirect table (empty, not a multiple of 16 bytes, nested, or
   * combined with NEXT).
   */
  walk(
    memory: GuestMemory,
    direct: Readonly<Table>,
    head: number,
    maxDescriptors: number,
  ): string | undefined {
    this.#reset(head);
    let table: Readonly<Table> = direct;
    let index = head;
    let limit = maxDescriptors;
    let count = 0;
    let seenWritable = false;
    for (;;) {
      if (index >= table.entries) {
        return `descriptor index ${index} is out of range (table of ${table.entries})`;
      }
      if (++count > limit) return `chain is longer than ${limit} descriptors or loops`;
      const view = table.region.view;
      const at = table.offset + index * DESCRIPTOR_SIZE;
      const addr = view.getUint32(at + 4, true) * 0x1_0000_0000 + view.getUint32(at, true);
      const len = view.getUint32(at + 8, true);
      const flags = view.getUint16(at + 12, true);
      const next = view.getUint16(at + 14, true);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        if (this.indirect) return "indirect table inside an indirect table";
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0) return "INDIRECT descriptor also has NEXT";
        if (len === 0 || len % DESCRIPTOR_SIZE !== 0) {
          return `indirect table length ${len} is not a positive multiple of ${DESCRIPTOR_SIZE}`;
        }
        const entries = len / DESCRIPTOR_SIZE;
        if (entries > MAX_INDIRECT_DESCRIPTORS) return `indirect table of ${entries} descriptors`;
        const region = memory.regionOfGpa(addr);
        if (region === undefined || addr - region.guestPhysAddr + len > region.memorySize) {
          return `indirect table 0x${addr.toString(16)}+${len} is outside guest memory`;
        }
        this.indirect = true;
        this.#table.region = region;
        this.#table.offset = region.base + (addr - region.guestPhysAddr);
        this.#table.entries = entries;
        table = this.#table;
        index = 0;
        limit = entries;
        this.descriptorCount += count;
        count = 0;
        continue;
      }
      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (writable) seenWritable = true;
      else if (seenWritable) return "readable buffer after a writable one";
      const problem = this.#addBuffer(memory, addr, len, writable);
      if (problem !== undefined) return problem;
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      index = next;
    }
    this.descriptorCount += count;
    return undefined;
  }

  /**
   * Copies device-readable bytes starting at byte `from` of the readable part into `dst`, as
   * many as fit or remain. Returns the count copied.
   */
  read(dst: Uint8Array, from: number): number {
    let skip = from;
    let done = 0;
    for (let i = 0; i < this.readableCount && done < dst.length; i++) {
      const len = this.#length[i] ?? 0;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const n = Math.min(len - skip, dst.length - done);
      const region = this.#region[i] as MemoryRegion;
      const start = (this.#offset[i] ?? 0) + skip;
      dst.set(new Uint8Array(region.buffer, start, n), done);
      done += n;
      skip = 0;
    }
    return done;
  }

  /**
   * Copies `src` into the device-writable part starting at its byte `to`, as much as fits.
   * Returns the count copied.
   */
  write(src: Uint8Array, to: number): number {
    let skip = to;
    let done = 0;
    for (let i = this.readableCount; i < this.segmentCount && done < src.length; i++) {
      const len = this.#length[i] ?? 0;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const n = Math.min(len - skip, src.length - done);
      const region = this.#region[i] as MemoryRegion;
      new Uint8Array(region.buffer, (this.#offset[i] ?? 0) + skip, n).set(
        src.subarray(done, done + n),
      );
      done += n;
      skip = 0;
    }
    return done;
  }

  #iovecs(first: number, end: number, from: number, length: number, iov: Uint8Array): number {
    const view = new DataView(iov.buffer, iov.byteOffset, iov.byteLength);
    const max = Math.floor(iov.byteLength / IOVEC.size);
    let skip = from;
    let left = length;
    let count = 0;
    for (let i = first; i < end && left > 0 && count < max; i++) {
      const len = this.#length[i] ?? 0;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const n = Math.min(len - skip, left);
      const region = this.#region[i] as MemoryRegion;
      const addr = region.hostAddress - region.base + (this.#offset[i] ?? 0) + skip;
      setU64(view, count * IOVEC.size + IOVEC.base, addr);
      setU64(view, count * IOVEC.size + IOVEC.len, n);
      count++;
      left -= n;
      skip = 0;
    }
    return count;
  }

  /**
   * Fills `iov` with iovecs for `length` device-readable bytes from byte `from`, pointing straight
   * into guest memory (for `pwritev`). Returns the iovec count (limited by the room in `iov`).
   */
  readableIovecs(from: number, length: number, iov: Uint8Array): number {
    return this.#iovecs(0, this.readableCount, from, length, iov);
  }

  /** Like `readableIovecs`, over the device-writable part (for `preadv`). */
  writableIovecs(from: number, length: number, iov: Uint8Array): number {
    return this.#iovecs(this.readableCount, this.segmentCount, from, length, iov);
  }
}
