/**
 * memfd and shared mappings, viewed zero-copy as one ArrayBuffer each.
 *
 * @module
 */
import { libc } from "./_libc.ts";
import { check, errno, ErrnoError } from "./errno.ts";
import { MAP_SHARED, MFD_CLOEXEC, PROT_READ, PROT_WRITE } from "./constants.ts";
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
