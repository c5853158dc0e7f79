/**
 * File system calls relative to directory descriptors: openat, fstatat, fstatfs.
 *
 * @module
 */
import { libc } from "./_libc.ts";
import { Errno, errno, ErrnoError } from "./errno.ts";
import { AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW } from "./constants.ts";
import { STAT, STATFS } from "./layout.ts";

const EMPTY = new Uint8Array(new ArrayBuffer(1));

/**
 * `openat(dirfd, name, flags, mode)`; `name` is a NUL-terminated byte string. Returns the fd,
 * or `-errno` (a hot-path call that never throws).
 */
export function openatRaw(dirfd: number, name: Uint8Array, flags: number, mode = 0): number {
  for (;;) {
    const fd = libc.openat(dirfd, name, flags, mode);
    if (fd >= 0) return fd;
    const e = errno();
    if (e !== Errno.EINTR) return -e;
  }
}

/** `openat` that throws `ErrnoError`. */
export function openat(dirfd: number, name: Uint8Array, flags: number, mode = 0): number {
  const fd = openatRaw(dirfd, name, flags, mode);
  if (fd < 0) throw new ErrnoError(-fd, "openat");
  return fd;
}

/** A reusable `struct stat` buffer with typed field access. */
export class StatBuffer {
  /** The raw bytes. */
  readonly bytes: Uint8Array = new Uint8Array(new ArrayBuffer(STAT.size));
  /** A view of them. */
  readonly view: DataView = new DataView(this.bytes.buffer);

  /** `st_dev`. */
  get dev(): bigint {
    return this.view.getBigUint64(STAT.dev, true);
  }
  /** `st_ino`. */
  get ino(): bigint {
    return this.view.getBigUint64(STAT.ino, true);
  }
  /** `st_mode`. */
  get mode(): number {
    return this.view.getUint32(STAT.mode, true);
  }
}

/**
 * `fstatat(fd, "", buf, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)`: the stat of the descriptor
 * itself (O_PATH descriptors included). Returns 0 or `-errno`.
 */
export function fstatRaw(fd: number, buf: StatBuffer): number {
  const r = libc.fstatat(fd, EMPTY, buf.bytes, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
  return r === 0 ? 0 : -errno();
}

/** `fstatfs(2)` into a `struct statfs` buffer (see `STATFS`). Returns 0 or `-errno`. */
export function fstatfsRaw(fd: number, buf: Uint8Array): number {
  if (buf.byteLength < STATFS.size) return -Errno.EINVAL;
  return libc.fstatfs(fd, buf) === 0 ? 0 : -errno();
}
