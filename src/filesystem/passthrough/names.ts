/**
 * Names from the guest, checked and NUL-terminated for the *at calls, and the errno Linux gives
 * each operation for "." and "..".
 *
 * @module
 */
import { Errno, ErrnoError } from "../../ffi/mod.ts";

/** The longest name of one path component. */
export const NAME_MAX = 255;
/** The longest symlink target (PATH_MAX without the NUL). */
export const TARGET_MAX = 4095;
/** The longest extended attribute name. */
export const XATTR_NAME_MAX = 255;

/** 0: a normal name; 1: "."; 2: "..". */
export function dots(name: Uint8Array): 0 | 1 | 2 {
  if (name[0] !== 0x2e) return 0;
  if (name.length === 1) return 1;
  return name.length === 2 && name[1] === 0x2e ? 2 : 0;
}

/** A reusable NUL-terminated copy of guest names. */
export class NameBuffer {
  readonly #bytes: Uint8Array;
  readonly #max: number;

  /** Room for names of up to `max` bytes. */
  constructor(max: number) {
    this.#max = max;
    this.#bytes = new Uint8Array(new ArrayBuffer(max + 1));
  }

  /**
   * `name` as one path component with its NUL (a view of this buffer, valid until the next
   * call). Empty, "/" or NUL → EINVAL; too long → ENAMETOOLONG; "." or ".." → `dotErrno`
   * unless it is 0 (then they pass).
   */
  component(name: Uint8Array, call: string, dotErrno: number): Uint8Array {
    if (name.length === 0 || name.includes(0x2f) || name.includes(0)) {
      throw new ErrnoError(Errno.EINVAL, call, "name is empty or holds '/' or NUL");
    }
    if (name.length > this.#max) throw new ErrnoError(Errno.ENAMETOOLONG, call);
    if (dotErrno !== 0 && dots(name) !== 0) {
      throw new ErrnoError(dotErrno, call, "name is '.' or '..'");
    }
    return this.#copy(name);
  }

  /** Any NUL-free bytes (a symlink target, an xattr name) with a NUL; `tooLong` errno else. */
  bytes(value: Uint8Array, call: string, tooLong: number): Uint8Array {
    if (value.length === 0 || value.includes(0)) {
      throw new ErrnoError(tooLong === Errno.ERANGE ? Errno.ERANGE : Errno.ENOENT, call);
    }
    if (value.length > this.#max) throw new ErrnoError(tooLong, call);
    return this.#copy(value);
  }

  #copy(value: Uint8Array): Uint8Array {
    this.#bytes.set(value);
    this.#bytes[value.length] = 0;
    return this.#bytes.subarray(0, value.length + 1);
  }
}
