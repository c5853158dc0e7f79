/**
 * Guest memory as the front end hands it over: regions of a file descriptor, each with a
 * guest-physical base (what descriptors hold) and a front-end virtual base (what SET_VRING_ADDR
 * holds). Each region is mapped once and viewed with no copy.
 *
 * @module
 */
import { close, fstatRaw, Mapping, STAT, StatBuffer } from "../ffi/mod.ts";

/** The highest address we accept in a region (end exclusive): numbers stay exact below 2^53. */
export const MAX_GUEST_ADDRESS = 2 ** 53;

/** A region as the front end describes it (MEMORY_REGION payload). */
export interface RegionDescription {
  /** Guest-physical address of the first byte. */
  guestPhysAddr: number;
  /** Length in bytes. */
  memorySize: number;
  /** The front end's virtual address of the first byte. */
  userspaceAddr: number;
  /** Offset of the first byte in the fd. */
  mmapOffset: number;
}

/** One mapped region. `bytes[i]` is guest-physical address `guestPhysAddr + i`. */
/** mmap offsets are multiples of the page size. */
const PAGE_SIZE = 4096;

export class MemoryRegion implements RegionDescription {
  readonly guestPhysAddr: number;
  readonly memorySize: number;
  readonly userspaceAddr: number;
  readonly mmapOffset: number;
  /** The region's bytes (a view into the mapping, from `mmapOffset`). */
  readonly bytes: Uint8Array;
  /** The whole mapping's bytes; `bytes` starts at `base` in it. */
  readonly buffer: ArrayBuffer;
  /** Offset of the region's first byte in `buffer`. */
  readonly base: number;
  /** This process's address of the region's first byte (for iovecs). */
  readonly hostAddress: number;
  /** A DataView over all of `buffer` (offsets are `base + guest offset`). */
  readonly view: DataView;
  /** 16-bit words over all of `buffer`, for atomic ring index loads and stores. */
  readonly u16: Uint16Array;
  readonly #mapping: Mapping;

  /**
   * Maps `memorySize` bytes of `fd` from `mmapOffset` (from the page holding it: a cache
   * window's range is a file's, at any offset). The fd is not kept.
   */
  constructor(desc: RegionDescription, fd: number) {
    this.guestPhysAddr = desc.guestPhysAddr;
    this.memorySize = desc.memorySize;
    this.userspaceAddr = desc.userspaceAddr;
    this.mmapOffset = desc.mmapOffset;
    const inPage = desc.mmapOffset % PAGE_SIZE;
    this.#mapping = Mapping.map(fd, desc.memorySize + inPage, desc.mmapOffset - inPage);
    this.buffer = this.#mapping.bytes.buffer as ArrayBuffer;
    this.base = inPage;
    this.bytes = new Uint8Array(this.buffer, this.base, desc.memorySize);
    this.hostAddress = this.#mapping.address + inPage;
    this.view = new DataView(this.buffer);
    this.u16 = new Uint16Array(this.buffer, 0, Math.floor(this.buffer.byteLength / 2));
  }

  /** Releases the mapping. The views must not be touched afterwards. */
  unmap(): void {
    this.#mapping.unmap();
  }
}

/**
 * Why a region description is refused, or undefined when it is acceptable next to `existing`
 * regions: zero size, an address range that wraps or passes 2^53, or an overlap (in
 * guest-physical or front-end virtual space) with a region already present.
 */
export function regionProblem(
  d: RegionDescription,
  existing: readonly RegionDescription[],
): string | undefined {
  if (d.memorySize <= 0) return "size is 0";
  for (
    const [name, start] of [["guest address", d.guestPhysAddr], [
      "user address",
      d.userspaceAddr,
    ]] as const
  ) {
    if (start + d.memorySize > MAX_GUEST_ADDRESS) return `${name} range wraps or passes 2^53`;
  }
  if (d.mmapOffset + d.memorySize > MAX_GUEST_ADDRESS) return "mmap offset range passes 2^53";
  for (const r of existing) {
    if (
      d.guestPhysAddr < r.guestPhysAddr + r.memorySize &&
      r.guestPhysAddr < d.guestPhysAddr + d.memorySize
    ) {
      return `guest address range overlaps the region at 0x${r.guestPhysAddr.toString(16)}`;
    }
    if (
      d.userspaceAddr < r.userspaceAddr + r.memorySize &&
      r.userspaceAddr < d.userspaceAddr + d.memorySize
    ) {
      return `user address range overlaps the region at 0x${r.userspaceAddr.toString(16)}`;
    }
  }
  return undefined;
}

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const stat = new StatBuffer();

/**
 * Why `fd` cannot back the region, or undefined: it must be a regular file (a memfd, a file on
 * tmpfs or hugetlbfs) holding all of `[mmapOffset, mmapOffset + memorySize)`. A mapping past the
 * end of its file would kill the daemon with SIGBUS at the first touch.
 */
export function fileProblem(d: RegionDescription, fd: number): string | undefined {
  const r = fstatRaw(fd, stat);
  if (r < 0) return `its descriptor cannot be examined (errno ${-r})`;
  if ((stat.mode & S_IFMT) !== S_IFREG) return "its descriptor is not a regular file or memfd";
  const size = Number(stat.view.getBigInt64(STAT.sizeField, true));
  if (d.mmapOffset + d.memorySize > size) {
    return `it ends at offset ${d.mmapOffset + d.memorySize} of a file of ${size} bytes`;
  }
  return undefined;
}

/** The set of mapped regions, with address translation. */
export class GuestMemory {
  readonly #regions: MemoryRegion[] = [];
  /** Removed regions still mapped until `releaseRetired()`. */
  readonly #retired: MemoryRegion[] = [];

  /** The regions, in the order they were added. */
  get regions(): readonly MemoryRegion[] {
    return this.#regions;
  }

  /**
   * Maps and adds a region, closing `fd` either way. Throws (with the reason) if the description is
   * refused by `regionProblem` or the mmap fails.
   */
  add(desc: RegionDescription, fd: number): MemoryRegion {
    try {
      const problem = regionProblem(desc, this.#regions) ?? fileProblem(desc, fd);
      if (problem !== undefined) {
        throw new RangeError(
          `Cannot add memory region at guest address 0x${
            desc.guestPhysAddr.toString(16)
          } (+${desc.memorySize}): ${problem}`,
        );
      }
      const region = new MemoryRegion(desc, fd);
      this.#regions.push(region);
      return region;
    } finally {
      close(fd);
    }
  }

  /**
   * Removes the region matching `desc` (guest address and size) from the table: no address
   * resolves into it any more, but its mapping stays until `releaseRetired()`, so views taken
   * before stay safe to touch. False if no region matches.
   */
  remove(desc: Pick<RegionDescription, "guestPhysAddr" | "memorySize">): boolean {
    const i = this.#regions.findIndex((r) =>
      r.guestPhysAddr === desc.guestPhysAddr && r.memorySize === desc.memorySize
    );
    if (i < 0) return false;
    const [region] = this.#regions.splice(i, 1);
    if (region !== undefined) this.#retired.push(region);
    return true;
  }

  /** Regions removed but still mapped. */
  get retired(): number {
    return this.#retired.length;
  }

  /** Unmaps the removed regions: call when no view taken before their removal is in use. */
  releaseRetired(): void {
    for (const r of this.#retired.splice(0)) r.unmap();
  }

  /** Unmaps every region, removed ones included. */
  clear(): void {
    for (const r of this.#regions.splice(0)) r.unmap();
    this.releaseRetired();
  }

  /** The region holding guest-physical `gpa`, or undefined. */
  regionOfGpa(gpa: number): MemoryRegion | undefined {
    for (const r of this.#regions) {
      if (gpa >= r.guestPhysAddr && gpa - r.guestPhysAddr < r.memorySize) return r;
    }
    return undefined;
  }

  /**
   * The region holding all of `[uva, uva + len)` in front-end virtual addresses, and the offset
   * of `uva` in its `bytes`; undefined if no single region holds the range.
   */
  translateUva(uva: number, len: number): { region: MemoryRegion; offset: number } | undefined {
    for (const r of this.#regions) {
      if (uva >= r.userspaceAddr && uva - r.userspaceAddr + len <= r.memorySize) {
        return { region: r, offset: uva - r.userspaceAddr };
      }
    }
    return undefined;
  }
}
