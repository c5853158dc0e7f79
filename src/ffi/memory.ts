/**
 * memfd and shared mappings, viewed zero-copy as one ArrayBuffer each; address-space
 * reservations that descriptors are mapped into piece by piece (a virtio shared memory region).
 *
 * @module
 */
import { libc } from "./_libc.ts";
import { check, Errno, errno, ErrnoError } from "./errno.ts";
import {
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_NORESERVE,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_CLOEXEC,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
} from "./constants.ts";
import { fstatRaw, StatBuffer } from "./fs.ts";
import { STAT } from "./layout.ts";
import { cString, pointerValue } from "./pointers.ts";

/** A new memfd of `size` bytes (close-on-exec). */
export function memfdCreate(name: string, size: number): number {
  const fd = check(libc.memfd_create(cString(name), MFD_CLOEXEC), "memfd_create", name);
  if (size > 0) {
    if (libc.ftruncate(fd, BigInt(size)) === -1) {
      const e = errno();
      libc.close(fd);
      throw new ErrnoError(e, "ftruncate", `memfd ${name} to ${size}`);
    }
  }
  return fd;
}

/** `ftruncate(2)`. */
export function ftruncate(fd: number, size: number): void {
  check(libc.ftruncate(fd, BigInt(size)), "ftruncate", `fd ${fd}`);
}

const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

/** The size of the file `fd` refers to (`st_size` of `fstat`; the file position is untouched). */
export function fileSize(fd: number): number {
  const sb = new StatBuffer();
  const r = fstatRaw(fd, sb);
  if (r < 0) throw new ErrnoError(-r, "fstat", `fd ${fd}`);
  return Number(sb.view.getBigInt64(STAT.sizeField, true));
}

function failed(ptr: Deno.PointerValue): boolean {
  return ptr === null || Deno.UnsafePointer.value(ptr) === MAP_FAILED;
}

/**
 * One `mmap` of a descriptor, owned: `unmap()` (or `using`) releases it. `bytes` views all of it
 * with no copy; after `unmap()` the view must not be touched (the memory is gone).
 */
export class Mapping {
  readonly #ptr: Deno.PointerObject;
  readonly #length: number;
  readonly #address: number;
  #bytes: Uint8Array | undefined;

  private constructor(ptr: Deno.PointerObject, length: number) {
    this.#ptr = ptr;
    this.#length = length;
    this.#address = pointerValue(ptr);
    this.#bytes = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr, length));
  }

  /**
   * Maps `length` bytes of `fd` from file offset `offset`, shared, readable and writable
   * (`prot` may narrow it).
   */
  static map(fd: number, length: number, offset = 0, prot = PROT_READ | PROT_WRITE): Mapping {
    if (!Number.isSafeInteger(length) || length <= 0) {
      throw new RangeError(`Cannot map ${length} bytes of fd ${fd}: length must be positive`);
    }
    const ptr = libc.mmap(null, BigInt(length), prot, MAP_SHARED, fd, BigInt(offset));
    if (ptr === null || Deno.UnsafePointer.value(ptr) === MAP_FAILED) {
      throw new ErrnoError(errno(), "mmap", `fd ${fd} (${length} bytes at ${offset})`);
    }
    return new Mapping(ptr, length);
  }

  /** The mapping's address in this process. */
  get address(): number {
    return this.#address;
  }

  /** Its length in bytes. */
  get length(): number {
    return this.#length;
  }

  /** The mapped bytes; throws once unmapped. */
  get bytes(): Uint8Array {
    if (this.#bytes === undefined) throw new Error("Cannot use a mapping after unmap");
    return this.#bytes;
  }

  /** True until `unmap()`. */
  get mapped(): boolean {
    return this.#bytes !== undefined;
  }

  /** Releases the mapping (once; later calls do nothing). */
  unmap(): void {
    if (this.#bytes === undefined) return;
    this.#bytes = undefined;
    check(libc.munmap(this.#ptr, BigInt(this.#length)), "munmap");
  }

  [Symbol.dispose](): void {
    this.unmap();
  }
}

/** The flags of a reservation's inaccessible pages: private, anonymous, no swap reserved. */
const RESERVE_FLAGS = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;

/**
 * A span of address space reserved inaccessible (`PROT_NONE` anonymous memory, no swap), into
 * which ranges of descriptors are mapped with `MAP_FIXED` and taken out again: what a VMM does
 * for a virtio shared memory region. `bytes` views the whole span with no copy, but only the
 * pages mapped with {@linkcode mapFile} may be touched: any other access kills the process with
 * SIGSEGV. `release()` (or `using`) unmaps everything.
 */
export class AddressReservation {
  readonly #ptr: Deno.PointerObject;
  readonly #length: number;
  readonly #address: number;
  #bytes: Uint8Array | undefined;

  private constructor(ptr: Deno.PointerObject, length: number) {
    this.#ptr = ptr;
    this.#length = length;
    this.#address = pointerValue(ptr);
    this.#bytes = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr, length));
  }

  /** Reserves `length` bytes (a positive multiple of `pageSize`) where the kernel chooses. */
  static reserve(length: number, pageSize = 4096): AddressReservation {
    if (!Number.isSafeInteger(length) || length <= 0 || length % pageSize !== 0) {
      throw new RangeError(`Cannot reserve ${length} bytes: not a positive multiple of a page`);
    }
    const ptr = libc.mmap(null, BigInt(length), PROT_NONE, RESERVE_FLAGS, -1, 0n);
    if (failed(ptr) || ptr === null) {
      throw new ErrnoError(errno(), "mmap", `reservation of ${length} bytes`);
    }
    return new AddressReservation(ptr, length);
  }

  /** The first byte's address in this process. */
  get address(): number {
    return this.#address;
  }

  /** Its length in bytes. */
  get length(): number {
    return this.#length;
  }

  /** A view of the whole span (touch only mapped pages); throws once released. */
  get bytes(): Uint8Array {
    if (this.#bytes === undefined) throw new Error("Cannot use a reservation after release");
    return this.#bytes;
  }

  /** True until `release()`. */
  get reserved(): boolean {
    return this.#bytes !== undefined;
  }

  #fixed(offset: number, length: number, what: string): Deno.PointerObject {
    if (this.#bytes === undefined) throw new Error(`Cannot ${what} in a released reservation`);
    if (
      !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 ||
      length <= 0 || offset + length > this.#length
    ) {
      throw new ErrnoError(
        Errno.EINVAL,
        "mmap",
        `${what} at offset ${offset} (+${length}) of a ${this.#length}-byte reservation`,
      );
    }
    const at = Deno.UnsafePointer.create(BigInt(this.#address + offset));
    if (at === null) throw new Error("Cannot address a reservation at 0");
    return at;
  }

  /**
   * Maps `length` bytes of `fd` from file offset `fdOffset` at `offset` in the span
   * (`MAP_FIXED | MAP_SHARED`, `prot` default read-write), replacing what was there. Throws
   * `ErrnoError` as mmap fails (EACCES: the descriptor's access mode does not allow `prot`;
   * EINVAL: unaligned). On failure the range's previous mapping stays.
   */
  mapFile(
    offset: number,
    length: number,
    fd: number,
    fdOffset: number,
    prot: number = PROT_READ | PROT_WRITE,
  ): void {
    const at = this.#fixed(offset, length, `map fd ${fd}`);
    const ptr = libc.mmap(at, BigInt(length), prot, MAP_FIXED | MAP_SHARED, fd, BigInt(fdOffset));
    if (failed(ptr)) {
      throw new ErrnoError(
        errno(),
        "mmap",
        `fd ${fd} (${length} bytes at ${fdOffset}) at reservation offset ${offset}`,
      );
    }
  }

  /** Puts inaccessible anonymous memory back over `length` bytes at `offset` (`MAP_FIXED`). */
  clear(offset: number, length: number): void {
    const at = this.#fixed(offset, length, "clear");
    const ptr = libc.mmap(
      at,
      BigInt(length),
      PROT_NONE,
      MAP_FIXED | RESERVE_FLAGS,
      -1,
      0n,
    );
    if (failed(ptr)) {
      throw new ErrnoError(errno(), "mmap", `PROT_NONE at reservation offset ${offset}`);
    }
  }

  /** Unmaps the whole span (once; later calls do nothing). */
  release(): void {
    if (this.#bytes === undefined) return;
    this.#bytes = undefined;
    check(libc.munmap(this.#ptr, BigInt(this.#length)), "munmap");
  }

  [Symbol.dispose](): void {
    this.release();
  }
}
