/**
 * Extended attributes of a node through its O_PATH descriptor. The f*xattr calls refuse O_PATH
 * descriptors, and reopening a FIFO or a device to read its attributes would block or touch the
 * device, so every call goes through the descriptor's /proc/self/fd entry with the *following*
 * calls (getxattr, not lgetxattr): the kernel resolves that magic link to the node itself,
 * whatever its type, a symlink included (lgetxattr would act on the /proc link instead).
 *
 * The entry is named relative to /proc/self/fd, never by the absolute path: in the sandbox the
 * root is the shared directory, where "/proc" is the guest's. The serving thread takes a working
 * directory of its own (`unshare(CLONE_FS)`, as for the guest's umask), steps into /proc/self/fd
 * (`fchdir`) for the call, and back to where it was (an O_PATH descriptor held from the first
 * call on). No other path is walked.
 *
 * @module
 */
import {
  AT_FDCWD,
  closeQuietly,
  cString,
  Errno,
  ErrnoError,
  fchdirRaw,
  getxattrRaw,
  listxattrRaw,
  O_CLOEXEC,
  O_DIRECTORY,
  O_PATH,
  openatRaw,
  removexattrRaw,
  setxattrRaw,
  unshareFsRaw,
} from "../../ffi/mod.ts";
import { NameBuffer, XATTR_NAME_MAX } from "./names.ts";

/** The largest value or name list Linux handles (XATTR_SIZE_MAX). */
const XATTR_SIZE_MAX = 65536;

const DOT = cString(".");

/** The four xattr calls on nodes named by their /proc/self/fd entry. */
export class Xattrs {
  readonly #procFd: number;
  readonly #name = new NameBuffer(XATTR_NAME_MAX);
  readonly #value = new Uint8Array(new ArrayBuffer(XATTR_SIZE_MAX));
  /** The working directory to come back to (O_PATH), once this thread has its own. */
  #home = -1;

  /** Calls through `procFd`, an O_PATH descriptor of /proc/self/fd (borrowed). */
  constructor(procFd: number) {
    this.#procFd = procFd;
  }

  /**
   * Steps into /proc/self/fd and returns `procName`, a node's name there (`Inode.procName`);
   * pair with `#leave()`.
   */
  #enter(procName: Uint8Array, call: string): Uint8Array {
    if (this.#home < 0) {
      // A working directory of this thread's own, so that fchdir moves no other thread.
      const r = unshareFsRaw();
      if (r < 0) throw new ErrnoError(-r, call, "unshare(CLONE_FS)");
      const home = openatRaw(AT_FDCWD, DOT, O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (home < 0) throw new ErrnoError(-home, call, "cannot hold the working directory");
      this.#home = home;
    }
    const r = fchdirRaw(this.#procFd);
    if (r < 0) throw new ErrnoError(-r, call, "fchdir(/proc/self/fd)");
    return procName;
  }

  #leave(): void {
    fchdirRaw(this.#home);
  }

  /** Closes the held working directory. */
  close(): void {
    if (this.#home >= 0) closeQuietly(this.#home);
    this.#home = -1;
  }

  /** Sets `name` to `value` (`flags`: XATTR_CREATE, XATTR_REPLACE). */
  set(procName: Uint8Array, name: Uint8Array, value: Uint8Array, flags: number): void {
    const n = this.#name.bytes(name, "setxattr", Errno.ERANGE);
    if (value.length > XATTR_SIZE_MAX) throw new ErrnoError(Errno.E2BIG, "setxattr");
    const r = setxattrRaw(this.#enter(procName, "setxattr"), n, value, flags);
    this.#leave();
    if (r < 0) throw new ErrnoError(-r, "setxattr");
  }

  /**
   * The value of `name` (a view, valid until the next call), or its length when `size` is 0.
   * ERANGE when it is longer than `size`.
   */
  get(procName: Uint8Array, name: Uint8Array, size: number): Uint8Array | number {
    const n = this.#name.bytes(name, "getxattr", Errno.ERANGE);
    const buf = size === 0 ? null : this.#value.subarray(0, Math.min(size, XATTR_SIZE_MAX));
    const r = getxattrRaw(this.#enter(procName, "getxattr"), n, buf);
    this.#leave();
    if (r < 0) throw new ErrnoError(-r, "getxattr");
    return buf === null ? r : buf.subarray(0, r);
  }

  /** The NUL-separated names (a view), or their total length when `size` is 0. */
  list(procName: Uint8Array, size: number): Uint8Array | number {
    const buf = size === 0 ? null : this.#value.subarray(0, Math.min(size, XATTR_SIZE_MAX));
    const r = listxattrRaw(this.#enter(procName, "listxattr"), buf);
    this.#leave();
    if (r < 0) throw new ErrnoError(-r, "listxattr");
    return buf === null ? r : buf.subarray(0, r);
  }

  /** Removes `name`. */
  remove(procName: Uint8Array, name: Uint8Array): void {
    const n = this.#name.bytes(name, "removexattr", Errno.ERANGE);
    const r = removexattrRaw(this.#enter(procName, "removexattr"), n);
    this.#leave();
    if (r < 0) throw new ErrnoError(-r, "removexattr");
  }
}
