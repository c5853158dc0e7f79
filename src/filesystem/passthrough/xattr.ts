/**
 * Extended attributes of a node through its O_PATH descriptor. The f*xattr calls refuse O_PATH
 * descriptors, and reopening a FIFO or a device to read its attributes would block or touch the
 * device, so every call goes through the path `/proc/self/fd/N` with the *following* calls
 * (getxattr, not lgetxattr): the kernel resolves that magic link to the node itself, whatever its
 * type, a symlink included (lgetxattr would act on the /proc link instead). No other path is
 * walked.
 *
 * @module
 */
import {
  Errno,
  ErrnoError,
  getxattrRaw,
  listxattrRaw,
  removexattrRaw,
  setxattrRaw,
} from "../../ffi/mod.ts";
import { NameBuffer, XATTR_NAME_MAX } from "./names.ts";

/** The largest value or name list Linux handles (XATTR_SIZE_MAX). */
const XATTR_SIZE_MAX = 65536;
const PREFIX = new TextEncoder().encode("/proc/self/fd/");

/** The four xattr calls on nodes named by their O_PATH descriptor. */
export class Xattrs {
  readonly #path = new Uint8Array(new ArrayBuffer(PREFIX.length + 12));
  readonly #name = new NameBuffer(XATTR_NAME_MAX);
  readonly #value = new Uint8Array(new ArrayBuffer(XATTR_SIZE_MAX));

  constructor() {
    this.#path.set(PREFIX);
  }

  /** "/proc/self/fd/<fd>" with its NUL. */
  #procPath(fd: number): Uint8Array {
    const digits = String(fd);
    let at = PREFIX.length;
    for (let i = 0; i < digits.length; i++) this.#path[at++] = digits.charCodeAt(i);
    this.#path[at] = 0;
    return this.#path.subarray(0, at + 1);
  }

  /** Sets `name` to `value` (`flags`: XATTR_CREATE, XATTR_REPLACE). */
  set(fd: number, name: Uint8Array, value: Uint8Array, flags: number): void {
    const n = this.#name.bytes(name, "setxattr", Errno.ERANGE);
    if (value.length > XATTR_SIZE_MAX) throw new ErrnoError(Errno.E2BIG, "setxattr");
    const r = setxattrRaw(this.#procPath(fd), n, value, flags);
    if (r < 0) throw new ErrnoError(-r, "setxattr");
  }

  /**
   * The value of `name` (a view, valid until the next call), or its length when `size` is 0.
   * ERANGE when it is longer than `size`.
   */
  get(fd: number, name: Uint8Array, size: number): Uint8Array | number {
    const n = this.#name.bytes(name, "getxattr", Errno.ERANGE);
    const buf = size === 0 ? null : this.#value.subarray(0, Math.min(size, XATTR_SIZE_MAX));
    const r = getxattrRaw(this.#procPath(fd), n, buf);
    if (r < 0) throw new ErrnoError(-r, "getxattr");
    return buf === null ? r : buf.subarray(0, r);
  }

  /** The NUL-separated names (a view), or their total length when `size` is 0. */
  list(fd: number, size: number): Uint8Array | number {
    const buf = size === 0 ? null : this.#value.subarray(0, Math.min(size, XATTR_SIZE_MAX));
    const r = listxattrRaw(this.#procPath(fd), buf);
    if (r < 0) throw new ErrnoError(-r, "listxattr");
    return buf === null ? r : buf.subarray(0, r);
  }

  /** Removes `name`. */
  remove(fd: number, name: Uint8Array): void {
    const n = this.#name.bytes(name, "removexattr", Errno.ERANGE);
    const r = removexattrRaw(this.#procPath(fd), n);
    if (r < 0) throw new ErrnoError(-r, "removexattr");
  }
}
