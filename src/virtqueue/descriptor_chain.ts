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
import { IOVEC } from "../ffi/mod.ts";
import {
  DESCRIPTOR_SIZE,
  MAX_INDIRECT_DESCRIPTORS,
  VIRTQ_DESC,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../wire/virtio.ts";

/** Word indexes of a descriptor's fields (the addr's low word is word 0). */
const ADDR_HIGH_WORD = (VIRTQ_DESC.addr + 4) / 4;
const LEN_WORD = VIRTQ_DESC.len / 4;
const FLAGS_NEXT_WORD = VIRTQ_DESC.flags / 4;

/** A descriptor table as resolved in guest memory. */
interface Table {
  region: MemoryRegion;
  /** Offset of entry 0 in `region.buffer`. */
  offset: number;
  entries: number;
}

/** Segment arrays start this long and double as longer chains are seen. */
const INITIAL_SEGMENTS = 64;
/** The most segments one chain may have (each descriptor may cross into one more region). */
const MAX_SEGMENTS = 2 * MAX_INDIRECT_DESCRIPTORS;
/** Whether this host stores words little-endian, as virtio's rings are laid out. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** Copies up to this many bytes go byte by byte (no view is made); longer ones use `set`. */
const SMALL_COPY = 128;

/** What `#walkFast` tells `walk`. */
const WALK_DONE = 0;
const WALK_SLOW = 1;
const WALK_PROBLEM = 2;

/** A walk's state, handed between `walk` and its fast loop. */
class Walker {
  index = 0;
  count = 0;
  limit = 0;
  seenWritable = false;
  /** The table being read: words (when aligned) or its DataView, and where it starts. */
  words: Uint32Array = new Uint32Array(0);
  view: DataView = new DataView(new ArrayBuffer(0));
  aligned = false;
  tableWord = 0;
  tableOffset = 0;
  entries = 0;
  /** The region the next buffer is first looked for in. */
  region: MemoryRegion | undefined;
  regionGpa = 0;
  regionSize = -1;
  regionBase = 0;
  /** The descriptor the fast loop stopped at. */
  addr = 0;
  len = 0;
  flags = 0;
  next = 0;
  problem: string | undefined;

  setTable(table: Readonly<Table>, words: Uint32Array): void {
    this.words = words;
    this.view = table.region.view;
    this.aligned = LITTLE_ENDIAN && (table.offset & 3) === 0;
    this.tableWord = table.offset / 4;
    this.tableOffset = table.offset;
    this.entries = table.entries;
  }

  setRegion(region: MemoryRegion): void {
    this.region = region;
    this.regionGpa = region.guestPhysAddr;
    this.regionSize = region.memorySize;
    this.regionBase = region.base;
  }
}

/**
 * The buffers of one chain. Segments `0 .. readableCount-1` are device-readable, the rest
 * device-writable; a buffer crossing from one region into an adjacent one takes one segment per
 * region.
 *
 * Segments live in typed arrays (offset and length as numbers, the region by reference), so
 * walking a chain and copying in or out of it makes no garbage.
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
  #region: MemoryRegion[] = [];
  /** Offset of each segment in its region's `buffer`. */
  #offset = new Float64Array(INITIAL_SEGMENTS);
  #length = new Uint32Array(INITIAL_SEGMENTS);
  readonly #table: Table = { region: undefined as unknown as MemoryRegion, offset: 0, entries: 0 };
  readonly #walker = new Walker();
  /** The iovec array last filled, and a view of it (made once, not per call). */
  #iovBytes: Uint8Array | undefined;
  #iovView: DataView = new DataView(new ArrayBuffer(0));

  /**
   * 32-bit word views of the last buffers used, one slot per use so that a request's copies in
   * and out do not remake them: 0 what `readInto` fills, 1 the guest's copied from or to, 2 the
   * guest's holding the descriptor table, 3 what `writeFrom` copies, 4 the iovecs filled.
   */
  readonly #wordBuffer: (ArrayBuffer | undefined)[] = [
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
  ];
  readonly #wordView: Uint32Array[] = [0, 1, 2, 3, 4].map(() => new Uint32Array(0));

  /** A Uint32Array over all of `buffer` (its whole words), kept while `buffer` stays the same. */
  #words(buffer: ArrayBuffer, slot: number): Uint32Array {
    if (this.#wordBuffer[slot] !== buffer) {
      this.#wordBuffer[slot] = buffer;
      this.#wordView[slot] = new Uint32Array(buffer, 0, Math.floor(buffer.byteLength / 4));
    }
    return this.#wordView[slot] as Uint32Array;
  }

  #reset(head: number): void {
    this.head = head;
    this.descriptorCount = 0;
    this.segmentCount = 0;
    this.readableCount = 0;
    this.readableLength = 0;
    this.writableLength = 0;
    this.indirect = false;
  }

  #grow(): void {
    const n = Math.min(this.#length.length * 2, MAX_SEGMENTS);
    const offset = new Float64Array(n);
    offset.set(this.#offset);
    const length = new Uint32Array(n);
    length.set(this.#length);
    this.#offset = offset;
    this.#length = length;
  }

  #addBuffer(
    memory: GuestMemory,
    addr: number,
    len: number,
    writable: boolean,
  ): string | undefined {
    let gpa = addr;
    let left = len;
    // Consecutive buffers are nearly always in the region of the one before.
    let region = this.segmentCount > 0 ? this.#region[this.segmentCount - 1] : undefined;
    while (left > 0) {
      if (
        region === undefined || gpa < region.guestPhysAddr ||
        gpa - region.guestPhysAddr >= region.memorySize
      ) {
        region = memory.regionOfGpa(gpa);
        if (region === undefined) {
          return `buffer 0x${addr.toString(16)}+${len} is outside guest memory at 0x${
            gpa.toString(16)
          }`;
        }
      }
      const inRegion = gpa - region.guestPhysAddr;
      const n = Math.min(left, region.memorySize - inRegion);
      const i = this.segmentCount;
      if (i >= MAX_SEGMENTS) return "chain has too many segments";
      if (i >= this.#length.length) this.#grow();
      this.segmentCount = i + 1;
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
    const w = this.#walker;
    w.index = head;
    w.limit = maxDescriptors;
    w.count = 0;
    w.seenWritable = false;
    w.setTable(direct, this.#words(direct.region.buffer, 2));
    // The first buffer is most likely in the region holding the table.
    w.setRegion(direct.region);
    for (;;) {
      const stop = this.#walkFast(w);
      if (stop === WALK_DONE) break;
      if (stop === WALK_PROBLEM) return w.problem;
      // The descriptor the fast loop stopped at (counted, its order checked).
      if ((w.flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        const problem = this.#enterIndirect(memory, w);
        if (problem !== undefined) return problem;
        continue;
      }
      // A buffer in another region, across regions, empty, or past the arrays' room.
      const problem = this.#addBuffer(memory, w.addr, w.len, (w.flags & VIRTQ_DESC_F_WRITE) !== 0);
      if (problem !== undefined) return problem;
      const last = this.segmentCount > 0 ? this.#region[this.segmentCount - 1] : undefined;
      if (last !== undefined) w.setRegion(last);
      if ((w.flags & VIRTQ_DESC_F_NEXT) === 0) break;
      w.index = w.next;
    }
    this.descriptorCount += w.count;
    return undefined;
  }

  /**
   * The fast loop: follows the chain while each buffer lies wholly inside the region of the
   * segment before (nearly all of them), adding a segment for each. Stops at the end of the
   * chain, at a problem (`w.problem`), or at a descriptor it leaves to `walk` (an indirect one,
   * or a buffer elsewhere: `w.addr`, `w.len`, `w.flags`, `w.next`). A method of its own, with
   * no calls inside, so that the loop compiles small.
   */
  #walkFast(w: Walker): number {
    const words = w.words;
    const view = w.view;
    const aligned = w.aligned;
    const tableWord = w.tableWord;
    const tableOffset = w.tableOffset;
    const entries = w.entries;
    const limit = w.limit;
    const lastRegion = w.region as MemoryRegion;
    const lastGpa = w.regionGpa;
    const lastSize = w.regionSize;
    const lastBase = w.regionBase;
    const offsets = this.#offset;
    const lengths = this.#length;
    const regions = this.#region;
    const capacity = offsets.length;
    let index = w.index;
    let count = w.count;
    let seenWritable = w.seenWritable;
    let segments = this.segmentCount;
    let readableCount = this.readableCount;
    let readableLength = this.readableLength;
    let writableLength = this.writableLength;
    let stop = WALK_DONE;
    let addr = 0;
    let len = 0;
    let flags = 0;
    let next = 0;
    for (;;) {
      if (index >= entries) {
        w.problem = `descriptor index ${index} is out of range (table of ${entries})`;
        stop = WALK_PROBLEM;
        break;
      }
      if (++count > limit) {
        w.problem = `chain is longer than ${limit} descriptors or loops`;
        stop = WALK_PROBLEM;
        break;
      }
      if (aligned) {
        // One descriptor as four u32 words: addr low, addr high, len, flags | next << 16.
        const at = tableWord + index * (DESCRIPTOR_SIZE / 4);
        addr = (words[at + ADDR_HIGH_WORD] as number) * 0x1_0000_0000 + (words[at] as number);
        len = words[at + LEN_WORD] as number;
        const flagsNext = words[at + FLAGS_NEXT_WORD] as number;
        flags = flagsNext & 0xffff;
        next = flagsNext >>> 16;
      } else {
        const at = tableOffset + index * DESCRIPTOR_SIZE;
        addr = view.getUint32(at + VIRTQ_DESC.addr + 4, true) * 0x1_0000_0000 +
          view.getUint32(at + VIRTQ_DESC.addr, true);
        len = view.getUint32(at + VIRTQ_DESC.len, true);
        flags = view.getUint16(at + VIRTQ_DESC.flags, true);
        next = view.getUint16(at + VIRTQ_DESC.next, true);
      }
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        stop = WALK_SLOW;
        break;
      }
      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (writable) seenWritable = true;
      else if (seenWritable) {
        w.problem = "readable buffer after a writable one";
        stop = WALK_PROBLEM;
        break;
      }
      const inRegion = addr - lastGpa;
      if (!(len > 0 && inRegion >= 0 && inRegion + len <= lastSize && segments < capacity)) {
        stop = WALK_SLOW;
        break;
      }
      regions[segments] = lastRegion;
      offsets[segments] = lastBase + inRegion;
      lengths[segments] = len;
      segments++;
      if (writable) writableLength += len;
      else {
        readableLength += len;
        readableCount = segments;
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      index = next;
    }
    w.index = index;
    w.count = count;
    w.seenWritable = seenWritable;
    w.addr = addr;
    w.len = len;
    w.flags = flags;
    w.next = next;
    this.segmentCount = segments;
    this.readableCount = readableCount;
    this.readableLength = readableLength;
    this.writableLength = writableLength;
    return stop;
  }

  /** Switches the walk to the indirect table descriptor `w.addr`/`w.len` names. */
  #enterIndirect(memory: GuestMemory, w: Walker): string | undefined {
    const { addr, len } = w;
    if (this.indirect) return "indirect table inside an indirect table";
    if ((w.flags & VIRTQ_DESC_F_NEXT) !== 0) return "INDIRECT descriptor also has NEXT";
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
    w.setTable(this.#table, this.#words(region.buffer, 2));
    w.index = 0;
    w.limit = entries;
    this.descriptorCount += w.count;
    w.count = 0;
    return undefined;
  }

  /** Segment `i`'s region (valid for `i < segmentCount`). */
  segmentRegion(i: number): MemoryRegion {
    return this.#region[i] as MemoryRegion;
  }

  /** Segment `i`'s offset in its region's `buffer` (and `view`). */
  segmentOffset(i: number): number {
    return this.#offset[i] ?? 0;
  }

  /** Segment `i`'s length in bytes. */
  segmentLength(i: number): number {
    return this.#length[i] ?? 0;
  }

  /**
   * Copies device-readable bytes starting at byte `from` of the readable part into `dst`, as
   * many as fit or remain. Returns the count copied.
   */
  read(dst: Uint8Array, from: number): number {
    return this.readInto(dst, 0, from, dst.length);
  }

  /**
   * Copies up to `length` device-readable bytes starting at byte `from` of the readable part into
   * `dst` at `dstAt` (bounded by `dst`'s end). Returns the count copied. Makes no view for short
   * copies.
   */
  readInto(dst: Uint8Array, dstAt: number, from: number, length: number): number {
    const want = Math.max(0, Math.min(length, dst.length - dstAt));
    let skip = from;
    let done = 0;
    for (let i = 0; i < this.readableCount && done < want; i++) {
      const len = this.#length[i] ?? 0;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const n = Math.min(len - skip, want - done);
      const region = this.#region[i] as MemoryRegion;
      const bytes = region.bytes;
      const start = (this.#offset[i] ?? 0) - region.base + skip;
      this.#copy(bytes, start, 1, dst, dstAt + done, 0, n);
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
    return this.writeFrom(src, 0, src.length, to);
  }

  /**
   * Copies `length` bytes of `src` from `srcAt` (bounded by `src`'s end) into the device-writable
   * part starting at its byte `to`, as much as fits. Returns the count copied. Makes no view for
   * short copies.
   */
  writeFrom(src: Uint8Array, srcAt: number, length: number, to: number): number {
    const want = Math.max(0, Math.min(length, src.length - srcAt));
    let skip = to;
    let done = 0;
    for (let i = this.readableCount; i < this.segmentCount && done < want; i++) {
      const len = this.#length[i] ?? 0;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const n = Math.min(len - skip, want - done);
      const region = this.#region[i] as MemoryRegion;
      const bytes = region.bytes;
      const start = (this.#offset[i] ?? 0) - region.base + skip;
      this.#copy(src, srcAt + done, 3, bytes, start, 1, n);
      done += n;
      skip = 0;
    }
    return done;
  }

  /**
   * Copies `n` bytes from `src` at `from` to `dst` at `to`. Long runs with `set`; short ones
   * without making a view, a word at a time when both ends are 4-byte aligned in their buffers
   * (through the word views of slots `srcSlot` and `dstSlot`).
   */
  #copy(
    src: Uint8Array,
    from: number,
    srcSlot: number,
    dst: Uint8Array,
    to: number,
    dstSlot: number,
    n: number,
  ): void {
    if (n > SMALL_COPY) {
      dst.set(src.subarray(from, from + n), to);
      return;
    }
    let k = 0;
    const wordFrom = src.byteOffset + from;
    const wordTo = dst.byteOffset + to;
    if (((wordFrom | wordTo) & 3) === 0) {
      // Both ends 4-byte aligned (the usual case): a word at a time.
      const s32 = this.#words(src.buffer as ArrayBuffer, srcSlot);
      const d32 = this.#words(dst.buffer as ArrayBuffer, dstSlot);
      const s0 = wordFrom / 4;
      const d0 = wordTo / 4;
      const words = n >> 2;
      for (let w = 0; w < words; w++) d32[d0 + w] = s32[s0 + w] as number;
      k = words << 2;
    }
    for (; k < n; k++) dst[to + k] = src[from + k] as number;
  }

  #iovecs(first: number, end: number, from: number, length: number, iov: Uint8Array): number {
    if (iov !== this.#iovBytes) {
      this.#iovBytes = iov;
      this.#iovView = new DataView(iov.buffer, iov.byteOffset, iov.byteLength);
    }
    const view = this.#iovView;
    const max = Math.floor(iov.byteLength / IOVEC.size);
    // A word at a time when `iov` is 4-byte aligned on a little-endian host (as iovecs are).
    const words = LITTLE_ENDIAN && (iov.byteOffset & 3) === 0
      ? this.#words(iov.buffer as ArrayBuffer, 4)
      : undefined;
    const wordAt = iov.byteOffset / 4;
    const lengths = this.#length;
    const offsets = this.#offset;
    const regions = this.#region;
    let skip = from;
    let left = length;
    let count = 0;
    let i = first;
    // Segments wholly before `from`.
    for (; i < end; i++) {
      const len = lengths[i] as number;
      if (skip < len) break;
      skip -= len;
    }
    for (; i < end && left > 0 && count < max; i++) {
      const n = Math.min((lengths[i] as number) - skip, left);
      const region = regions[i] as MemoryRegion;
      const addr = region.hostAddress - region.base + (offsets[i] as number) + skip;
      if (words !== undefined) {
        const w = wordAt + count * (IOVEC.size / 4);
        words[w + IOVEC.base / 4] = addr >>> 0;
        words[w + IOVEC.base / 4 + 1] = Math.floor(addr / 0x1_0000_0000);
        words[w + IOVEC.len / 4] = n;
        words[w + IOVEC.len / 4 + 1] = 0;
      } else {
        const at = count * IOVEC.size;
        view.setUint32(at + IOVEC.base, addr >>> 0, true);
        view.setUint32(at + IOVEC.base + 4, Math.floor(addr / 0x1_0000_0000), true);
        view.setUint32(at + IOVEC.len, n, true);
        view.setUint32(at + IOVEC.len + 4, 0, true);
      }
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
