/**
 * Extended attributes of a node through its O_PATH descriptor. The f*xattr calls refuse O_PATH
 * descriptors, and reopening a FIFO or a device to read its attributes would block or touch the
 * device, so every call names the descriptor's /proc/self/fd entry with the *following* calls
 * (getxattr, not lgetxattr): the kernel resolves that magic link to the node itself, whatever its
 * type, a symlink included (lgetxattr would act on the /proc link instead).
 *
 * The entry is named relative to /proc/self/fd, never by the absolute path: in the sandbox the
 * root is the shared directory, where "/proc" is the guest's. On Linux 6.13 and later one call
 * does it: getxattrat(2) and its siblings take the /proc/self/fd descriptor and "N". Before, the
 * serving thread takes a working directory of its own (`unshare(CLONE_FS)`, as for the guest's
 * umask), steps into /proc/self/fd (`fchdir`) for the call, and back to where it was (an O_PATH
 * descriptor held from the first call on): three calls instead of one. No other path is walked.
 *
 * @module
 */
import {
  addressOf,
  AT_FDCWD,
  closeQuietly,
  cString,
  Errno,
  ErrnoError,
  fchdirRaw,
  getxattratRaw,
  getxattrRaw,
  listxattratRaw,
  listxattrRaw,
  O_CLOEXEC,
  O_DIRECTORY,
  O_PATH,
  openatRaw,
  removexattratRaw,
  removexattrRaw,
  setU64,
  setxattratRaw,
  setxattrRaw,
  stableBytes,
  unshareFsRaw,
  XATTR_ARGS,
} from "../../ffi/mod.ts";
import { NameBuffer, XATTR_NAME_MAX } from "./names.ts";

/** The largest value or name list Linux handles (XATTR_SIZE_MAX). */
const XATTR_SIZE_MAX = 65536;

const DOT = cString(".");
/** A name for asking whether the *xattrat calls exist. */
const PROBE_NAME = cString("user.virtiofsd-probe");

// "No such attribute" is the answer a guest gets most (security.capability, ACLs, SELinux
// labels of unlabelled files): one error per call, made once.
const ENODATA_ERRORS: Readonly<Record<string, ErrnoError>> = {
  getxattr: new ErrnoError(Errno.ENODATA, "getxattr"),
  removexattr: new ErrnoError(Errno.ENODATA, "removexattr"),
};

/** The error for `errno` from `call`. */
function errnoError(errno: number, call: string): ErrnoError {
  return (errno === Errno.ENODATA ? ENODATA_ERRORS[call] : undefined) ??
    new ErrnoError(errno, call);
}

/** The four xattr calls on nodes named by their /proc/self/fd entry. */
export class Xattrs {
  readonly #procFd: number;
  readonly #name = new NameBuffer(XATTR_NAME_MAX);
  /** Values and name lists, both ways (stable: its address is in `#args`). */
  readonly #value = stableBytes(XATTR_SIZE_MAX);
  /** A `struct xattr_args` whose value pointer is `#value`'s. */
  readonly #args = stableBytes(XATTR_ARGS.size);
  readonly #argsView = new DataView(this.#args.buffer, this.#args.byteOffset, XATTR_ARGS.size);
  /** Whether the *xattrat calls exist (Linux 6.13); undefined until the first call asks. */
  #at: boolean | undefined;
  /** The working directory to come back to (O_PATH), once this thread has its own. */
  #home = -1;

  /**
   * Calls through `procFd`, an O_PATH descriptor of /proc/self/fd (borrowed). `useAt` false
   * keeps to the calls older kernels have (tests of that path); by default the kernel decides.
   */
  constructor(procFd: number, useAt?: boolean) {
    this.#procFd = procFd;
    this.#at = useAt === false ? false : undefined;
    setU64(this.#argsView, XATTR_ARGS.value, addressOf(this.#value));
  }

  /** Whether this kernel has the *xattrat calls: asked once (ENOSYS before Linux 6.13). */
  #hasAt(): boolean {
    if (this.#at === undefined) {
      // /proc/self/fd itself ("."): procfs answers EOPNOTSUPP for a user.* name. Anything else
      // is a kernel without the call (ENOSYS) or a container's seccomp profile refusing calls it
      // does not know (ENOSYS or EPERM): the old calls then.
      this.#setArgs(0, 0);
      const r = getxattratRaw(this.#procFd, DOT, PROBE_NAME, this.#args);
      this.#at = r >= 0 || r === -Errno.EOPNOTSUPP || r === -Errno.ENODATA;
    }
    return this.#at;
  }

  /** Whether the *xattrat calls serve (after the first call; for tests and logs). */
  get usesAt(): boolean {
    return this.#hasAt();
  }

  #setArgs(size: number, flags: number): void {
    this.#argsView.setUint32(XATTR_ARGS.valueSize, size, true);
    this.#argsView.setUint32(XATTR_ARGS.flags, flags, true);
  }

  /**
   * Steps into /proc/self/fd and returns `procName`, a node's name there (`Inode.procName`);
   * pair with `#leave()`. Only without the *xattrat calls.
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
    let r: number;
    if (this.#hasAt()) {
      this.#value.set(value);
      this.#setArgs(value.length, flags);
      r = setxattratRaw(this.#procFd, procName, n, this.#args);
    } else {
      r = setxattrRaw(this.#enter(procName, "setxattr"), n, value, flags);
      this.#leave();
    }
    if (r < 0) throw errnoError(-r, "setxattr");
  }

  /**
   * The value of `name` (a view, valid until the next call), or its length when `size` is 0.
   * ERANGE when it is longer than `size`.
   */
  get(procName: Uint8Array, name: Uint8Array, size: number): Uint8Array | number {
    const n = this.#name.bytes(name, "getxattr", Errno.ERANGE);
    const max = Math.min(size, XATTR_SIZE_MAX);
    let r: number;
    if (this.#hasAt()) {
      this.#setArgs(max, 0);
      r = getxattratRaw(this.#procFd, procName, n, this.#args);
    } else {
      r = getxattrRaw(
        this.#enter(procName, "getxattr"),
        n,
        max === 0 ? null : this.#value.subarray(0, max),
      );
      this.#leave();
    }
    if (r < 0) throw errnoError(-r, "getxattr");
    return size === 0 ? r : this.#value.subarray(0, r);
  }

  /** The NUL-separated names (a view), or their total length when `size` is 0. */
  list(procName: Uint8Array, size: number): Uint8Array | number {
    const max = Math.min(size, XATTR_SIZE_MAX);
    const buf = max === 0 ? null : this.#value.subarray(0, max);
    let r: number;
    if (this.#hasAt()) {
      r = listxattratRaw(this.#procFd, procName, buf);
    } else {
      r = listxattrRaw(this.#enter(procName, "listxattr"), buf);
      this.#leave();
    }
    if (r < 0) throw errnoError(-r, "listxattr");
    return size === 0 ? r : this.#value.subarray(0, r);
  }

  /** Removes `name`. */
  remove(procName: Uint8Array, name: Uint8Array): void {
    const n = this.#name.bytes(name, "removexattr", Errno.ERANGE);
    let r: number;
    if (this.#hasAt()) {
      r = removexattratRaw(this.#procFd, procName, n);
    } else {
      r = removexattrRaw(this.#enter(procName, "removexattr"), n);
      this.#leave();
    }
    if (r < 0) throw errnoError(-r, "removexattr");
  }
}
