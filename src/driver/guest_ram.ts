/**
 * Guest RAM for the test driver: one memfd, mapped shared into this process, carved into one or
 * more regions. Each region has a guest-physical base (what descriptors hold) and a made-up
 * "front-end virtual address" base (what SET_VRING_ADDR holds, as QEMU sends its own user
 * addresses), distinct from the guest-physical one so that a back end that mixes them up fails.
 *
 * A first-fit free-list allocator hands out buffers for rings, indirect tables and FUSE messages.
 *
 * @module
 */
import { close, dupCloexecRaw, ErrnoError, Mapping, memfdCreate } from "../ffi/mod.ts";

/** A page: the unit of guest memory regions, and of the buffers Linux hands the device. */
export const PAGE_SIZE = 4096;

/** The layout of one region as the caller asks for it. */
export interface GuestRegionSpec {
  /** Guest-physical address of the region's first byte (page-aligned). */
  guestPhysAddr: number;
  /** Size in bytes (page-aligned, > 0). */
  size: number;
}

/** One region of guest RAM, as it goes into ADD_MEM_REG / SET_MEM_TABLE. */
export interface GuestRegion {
  /** Guest-physical address of the first byte. */
  readonly guestPhysAddr: number;
  /** Size in bytes. */
  readonly memorySize: number;
  /** The front end's made-up virtual address of the first byte (`userspace_addr`). */
  readonly userspaceAddr: number;
  /** Offset of the first byte in the memfd (`mmap_offset`). */
  readonly mmapOffset: number;
}

/** Options of {@linkcode GuestRam.create}. */
export interface GuestRamOptions {
  /** The regions; default one region of 16 MiB at guest-physical 0x100000. */
  regions?: readonly GuestRegionSpec[];
  /**
   * Where the front-end virtual addresses start; region `i` gets `base + its memfd offset`.
   * Default 0x7f3a_0000_0000, far from any guest-physical address used here.
   */
  userspaceBase?: number;
  /** The memfd's name, as seen in /proc/PID/maps. */
  name?: string;
}

interface FreeRange {
  gpa: number;
  len: number;
}

/** Default: one 16 MiB region at 1 MiB. */
export const DEFAULT_GUEST_REGIONS: readonly GuestRegionSpec[] = [
  { guestPhysAddr: 0x10_0000, size: 16 << 20 },
];

/**
 * Guest RAM: a memfd mapped into this process, regions addressed by guest-physical address.
 * Dispose it (or `close()`) to unmap and close the memfd.
 */
export class GuestRam {
  readonly #fd: number;
  readonly #mapping: Mapping;
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  readonly #regions: readonly GuestRegion[];
  #free: FreeRange[];
  #closed = false;

  private constructor(fd: number, mapping: Mapping, regions: GuestRegion[]) {
    this.#fd = fd;
    this.#mapping = mapping;
    this.#bytes = mapping.bytes;
    this.#view = new DataView(this.#bytes.buffer, this.#bytes.byteOffset, this.#bytes.byteLength);
    this.#regions = regions;
    this.#free = regions.map((r) => ({ gpa: r.guestPhysAddr, len: r.memorySize }));
  }

  /** Creates the memfd, sizes it to hold every region, and maps it. */
  static create(opts: GuestRamOptions = {}): GuestRam {
    const specs = opts.regions ?? DEFAULT_GUEST_REGIONS;
    if (specs.length === 0) throw new RangeError("Cannot create guest memory with no region");
    const userspaceBase = opts.userspaceBase ?? 0x7f3a_0000_0000;
    const regions: GuestRegion[] = [];
    let offset = 0;
    for (const s of specs) {
      if (s.size <= 0 || s.size % PAGE_SIZE !== 0 || s.guestPhysAddr % PAGE_SIZE !== 0) {
        throw new RangeError(
          `Cannot create region at 0x${s.guestPhysAddr.toString(16)} (+${s.size}): ` +
            "base and size must be page-aligned and size positive",
        );
      }
      for (const r of regions) {
        if (
          s.guestPhysAddr < r.guestPhysAddr + r.memorySize &&
          r.guestPhysAddr < s.guestPhysAddr + s.size
        ) {
          throw new RangeError(
            `Cannot create region at 0x${s.guestPhysAddr.toString(16)}: ` +
              `overlaps the region at 0x${r.guestPhysAddr.toString(16)}`,
          );
        }
      }
      regions.push({
        guestPhysAddr: s.guestPhysAddr,
        memorySize: s.size,
        userspaceAddr: userspaceBase + offset,
        mmapOffset: offset,
      });
      offset += s.size;
    }
    const fd = memfdCreate(opts.name ?? "guest-ram", offset);
    try {
      return new GuestRam(fd, Mapping.map(fd, offset), regions);
    } catch (e) {
      close(fd);
      throw e;
    }
  }

  /** The memfd (owned by this object; send it, do not close it). */
  get fd(): number {
    return this.#fd;
  }

  /**
   * A new descriptor of the memfd, owned by the caller: for mapping this memory a second time in
   * this process, as a device side in the same process does (`GuestMemory.add` takes and closes
   * the descriptor it is given; each of {@linkcode regions} is a region description of this
   * file: guest-physical address, size, front-end virtual address and `mmapOffset`). It is made
   * close-on-exec (`F_DUPFD_CLOEXEC`): hand it on or close it at once.
   */
  dupFd(): number {
    if (this.#closed) throw new Error("Cannot duplicate the memfd of closed guest memory");
    const fd = dupCloexecRaw(this.#fd);
    if (fd < 0) throw new ErrnoError(-fd, "fcntl(F_DUPFD_CLOEXEC)", `guest memory fd ${this.#fd}`);
    return fd;
  }

  /** The regions, in creation order. */
  get regions(): readonly GuestRegion[] {
    return this.#regions;
  }

  /** The whole memfd's mapping in this process (all regions, back to back). */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  /** Bytes still free for allocation, summed over regions. */
  get freeBytes(): number {
    return this.#free.reduce((n, r) => n + r.len, 0);
  }

  #region(gpa: number, len: number): GuestRegion {
    for (const r of this.#regions) {
      if (gpa >= r.guestPhysAddr && gpa + len <= r.guestPhysAddr + r.memorySize) return r;
    }
    throw new RangeError(
      `Cannot map guest address 0x${gpa.toString(16)} (+${len}): outside every memory region`,
    );
  }

  /** The offset of guest-physical `gpa` in {@linkcode bytes}; the range must lie in one region. */
  offsetOf(gpa: number, len = 1): number {
    const r = this.#region(gpa, len);
    return r.mmapOffset + (gpa - r.guestPhysAddr);
  }

  /** Translates a guest-physical address into the front end's made-up virtual address. */
  gpaToUserspace(gpa: number): number {
    const r = this.#region(gpa, 1);
    return r.userspaceAddr + (gpa - r.guestPhysAddr);
  }

  /** Translates a front-end virtual address back into a guest-physical address. */
  userspaceToGpa(va: number): number {
    for (const r of this.#regions) {
      if (va >= r.userspaceAddr && va < r.userspaceAddr + r.memorySize) {
        return r.guestPhysAddr + (va - r.userspaceAddr);
      }
    }
    throw new RangeError(`Cannot translate front-end address 0x${va.toString(16)}: no region`);
  }

  /** A zero-copy view of `len` bytes at guest-physical `gpa`. */
  slice(gpa: number, len: number): Uint8Array {
    const off = this.offsetOf(gpa, Math.max(len, 1));
    return this.#bytes.subarray(off, off + len);
  }

  /** A DataView of `len` bytes at `gpa` (little-endian accessors are the caller's choice). */
  dataView(gpa: number, len: number): DataView {
    const off = this.offsetOf(gpa, Math.max(len, 1));
    return new DataView(this.#bytes.buffer, this.#bytes.byteOffset + off, len);
  }

  /** Copies `data` into guest memory at `gpa`. */
  write(gpa: number, data: Uint8Array): void {
    this.#bytes.set(data, this.offsetOf(gpa, Math.max(data.byteLength, 1)));
  }

  /** A copy of `len` bytes at `gpa`. */
  read(gpa: number, len: number): Uint8Array {
    return this.slice(gpa, len).slice();
  }

  /** Reads a little-endian u16 at `gpa`. */
  getU16(gpa: number): number {
    return this.#view.getUint16(this.offsetOf(gpa, 2), true);
  }

  /** Writes a little-endian u16 at `gpa`. */
  setU16(gpa: number, value: number): void {
    this.#view.setUint16(this.offsetOf(gpa, 2), value, true);
  }

  /** Reads a little-endian u32 at `gpa`. */
  getU32(gpa: number): number {
    return this.#view.getUint32(this.offsetOf(gpa, 4), true);
  }

  /** Writes a little-endian u32 at `gpa`. */
  setU32(gpa: number, value: number): void {
    this.#view.setUint32(this.offsetOf(gpa, 4), value, true);
  }

  /**
   * Allocates `size` bytes aligned to `align` (a power of two) and zeroes them. First fit over
   * the regions in order, or only in region `region` when given. Throws when nothing fits.
   */
  alloc(size: number, align = 8, region?: number): number {
    if (size <= 0 || !Number.isSafeInteger(size)) {
      throw new RangeError(`Cannot allocate ${size} bytes of guest memory`);
    }
    if (align <= 0 || (align & (align - 1)) !== 0) {
      throw new RangeError(`Cannot allocate with alignment ${align}: not a power of two`);
    }
    const limit = region === undefined ? undefined : this.#regions[region];
    if (region !== undefined && limit === undefined) {
      throw new RangeError(
        `Cannot allocate in region ${region}: there are ${this.#regions.length}`,
      );
    }
    for (let i = 0; i < this.#free.length; i++) {
      const f = this.#free[i];
      if (f === undefined) continue;
      if (
        limit !== undefined &&
        (f.gpa < limit.guestPhysAddr || f.gpa >= limit.guestPhysAddr + limit.memorySize)
      ) continue;
      const start = Math.ceil(f.gpa / align) * align;
      const pad = start - f.gpa;
      if (pad + size > f.len) continue;
      const rest: FreeRange[] = [];
      if (pad > 0) rest.push({ gpa: f.gpa, len: pad });
      if (pad + size < f.len) rest.push({ gpa: start + size, len: f.len - pad - size });
      this.#free.splice(i, 1, ...rest);
      this.slice(start, size).fill(0);
      return start;
    }
    throw new RangeError(
      `Cannot allocate ${size} bytes (align ${align}) of guest memory: ` +
        `${this.freeBytes} bytes free, too fragmented or too few`,
    );
  }

  /** Returns `size` bytes at `gpa` (from {@linkcode alloc}) to the free list. */
  free(gpa: number, size: number): void {
    this.#region(gpa, size);
    let i = 0;
    while (i < this.#free.length && (this.#free[i]?.gpa ?? Infinity) < gpa) i++;
    const prev = this.#free[i - 1];
    const next = this.#free[i];
    if (
      (prev !== undefined && prev.gpa + prev.len > gpa) ||
      (next !== undefined && gpa + size > next.gpa)
    ) {
      throw new RangeError(
        `Cannot free guest memory 0x${gpa.toString(16)} (+${size}): overlaps free memory`,
      );
    }
    const sameRegion = (a: number, b: number): boolean =>
      this.#regions.some((r) =>
        a >= r.guestPhysAddr && a < r.guestPhysAddr + r.memorySize &&
        b >= r.guestPhysAddr && b < r.guestPhysAddr + r.memorySize
      );
    const range: FreeRange = { gpa, len: size };
    if (next !== undefined && gpa + size === next.gpa && sameRegion(gpa, next.gpa)) {
      range.len += next.len;
      this.#free.splice(i, 1);
    }
    if (prev !== undefined && prev.gpa + prev.len === gpa && sameRegion(prev.gpa, gpa)) {
      prev.len += range.len;
    } else {
      this.#free.splice(i, 0, range);
    }
  }

  /** Allocates room for `data`, copies it in, and returns its guest-physical address. */
  place(data: Uint8Array, align = 8): number {
    const gpa = this.alloc(Math.max(data.byteLength, 1), align);
    this.write(gpa, data);
    return gpa;
  }

  /** Unmaps and closes the memfd (once). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#mapping.unmap();
    close(this.#fd);
  }

  /** Releases the memory (as `close()`). */
  [Symbol.dispose](): void {
    this.close();
  }
}
