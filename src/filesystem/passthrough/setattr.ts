/**
 * SETATTR on the host, each field through a call that takes a descriptor and never follows a
 * symlink: the mode by fchmod (the open handle) or fchmodat on /proc/self/fd/N, the owner by
 * fchownat(AT_EMPTY_PATH), the size by ftruncate on the handle or on a write-only reopen, the
 * times by utimensat(AT_EMPTY_PATH) with UTIME_NOW / UTIME_OMIT.
 *
 * @module
 */
import {
  AT_EMPTY_PATH,
  AT_SYMLINK_NOFOLLOW,
  closeQuietly,
  Errno,
  ErrnoError,
  fchmodatRaw,
  fchmodRaw,
  fchownatRaw,
  ftruncateRaw,
  O_CLOEXEC,
  O_WRONLY,
  openatRaw,
  S_IFDIR,
  S_IFREG,
  TIMESPEC,
  UTIME_NOW,
  UTIME_OMIT,
  utimensatRaw,
} from "../../ffi/mod.ts";
import type { SetattrIn } from "../filesystem.ts";
import type { Inode } from "./inode_store.ts";
import {
  FATTR_ATIME,
  FATTR_ATIME_NOW,
  FATTR_GID,
  FATTR_MODE,
  FATTR_MTIME,
  FATTR_MTIME_NOW,
  FATTR_SIZE,
  FATTR_UID,
} from "../../wire/fuse.ts";

/** Every bit that changes the file. */
export const VALID_CHANGES = FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_SIZE | FATTR_ATIME |
  FATTR_MTIME | FATTR_ATIME_NOW | FATTR_MTIME_NOW;
const VALID_TIMES = FATTR_ATIME | FATTR_MTIME | FATTR_ATIME_NOW | FATTR_MTIME_NOW;

const EMPTY = new Uint8Array(new ArrayBuffer(1));
const INT64_MAX = (1n << 63n) - 1n;

function fail(r: number, call: string): void {
  if (r < 0) throw new ErrnoError(-r, call);
}

/** Applies SETATTRs; `procFd` is an O_PATH descriptor of /proc/self/fd. */
export class AttrSetter {
  readonly #procFd: number;
  readonly #times = new Uint8Array(new ArrayBuffer(2 * TIMESPEC.size));
  readonly #view = new DataView(this.#times.buffer);

  /** Reopens descriptors through `procFd`. */
  constructor(procFd: number) {
    this.#procFd = procFd;
  }

  /**
   * Changes what `set.valid` names on `inode`, in virtiofsd's order (mode, owner, size, times);
   * `fd` is the open handle's descriptor when FATTR_FH named one.
   */
  apply(inode: Inode, fd: number | undefined, set: Readonly<SetattrIn>): void {
    const valid = set.valid;
    if ((valid & FATTR_MODE) !== 0) {
      const mode = set.mode & 0o7777;
      fail(
        fd !== undefined ? fchmodRaw(fd, mode) : fchmodatRaw(this.#procFd, inode.procName, mode, 0),
        "fchmod",
      );
    }
    if ((valid & (FATTR_UID | FATTR_GID)) !== 0) {
      const uid = (valid & FATTR_UID) !== 0 ? set.uid : -1;
      const gid = (valid & FATTR_GID) !== 0 ? set.gid : -1;
      fail(
        fchownatRaw(inode.fd, EMPTY, uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW),
        "fchownat",
      );
    }
    if ((valid & FATTR_SIZE) !== 0) {
      // A size past off_t (the guest sent a u64) is refused, never wrapped.
      const size = BigInt(set.size);
      if (set.size < 0 || size > INT64_MAX) throw new ErrnoError(Errno.EINVAL, "truncate");
      this.#truncate(inode, fd, size);
    }
    if ((valid & VALID_TIMES) !== 0) {
      if ((valid & FATTR_ATIME_NOW) !== 0) this.#put(0, 0, UTIME_NOW);
      else if ((valid & FATTR_ATIME) !== 0) this.#put(0, set.atime, set.atimeNsec);
      else this.#put(0, 0, UTIME_OMIT);
      if ((valid & FATTR_MTIME_NOW) !== 0) this.#put(TIMESPEC.size, 0, UTIME_NOW);
      else if ((valid & FATTR_MTIME) !== 0) this.#put(TIMESPEC.size, set.mtime, set.mtimeNsec);
      else this.#put(TIMESPEC.size, 0, UTIME_OMIT);
      fail(
        utimensatRaw(inode.fd, EMPTY, this.#times, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW),
        "utimensat",
      );
    }
  }

  #truncate(inode: Inode, fd: number | undefined, size: bigint): void {
    if (fd !== undefined) return fail(ftruncateRaw(fd, size), "ftruncate");
    if (inode.type === S_IFDIR) throw new ErrnoError(Errno.EISDIR, "truncate");
    // Only a regular file is reopened: never a device or a FIFO.
    if (inode.type !== S_IFREG) throw new ErrnoError(Errno.EINVAL, "truncate");
    const wfd = openatRaw(this.#procFd, inode.procName, O_WRONLY | O_CLOEXEC);
    if (wfd < 0) throw new ErrnoError(-wfd, "open");
    const r = ftruncateRaw(wfd, size);
    closeQuietly(wfd);
    fail(r, "ftruncate");
  }

  #put(at: number, sec: number, nsec: number): void {
    this.#view.setBigInt64(at + TIMESPEC.sec, BigInt(sec), true);
    this.#view.setBigInt64(at + TIMESPEC.nsec, BigInt(nsec), true);
  }
}
