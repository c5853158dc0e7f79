/**
 * File system calls relative to directory descriptors (openat, statx, mkdirat, renameat2, ...),
 * on open files (fallocate, lseek, fsync, copy_file_range, getdents64), extended attributes, and
 * the calling thread's file system credentials.
 *
 * Every `...Raw` call returns its result or `-errno` and never throws: the passthrough file
 * system turns the errno into the reply. EINTR is retried where a call can return it.
 *
 * @module
 */
import { libc } from "./_libc.ts";
import { Errno, errno, ErrnoError } from "./errno.ts";
import {
  AT_EMPTY_PATH,
  AT_SYMLINK_NOFOLLOW,
  CLONE_FS,
  F_DUPFD_CLOEXEC,
  STATX_BASIC_STATS,
  STATX_MNT_ID,
} from "./constants.ts";
import { FILE_HANDLE, MAX_HANDLE_SZ, STAT, STATFS, STATX, XATTR_ARGS } from "./layout.ts";
import { SYSCALL_NUMBERS } from "./seccomp.ts";

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

/** `ret` when it is not -1, else `-errno`. */
function neg(ret: number): number {
  return ret === -1 ? -errno() : ret;
}

/** A reusable `struct statx` buffer with typed field access. */
export class StatxBuffer {
  /** The raw bytes. */
  readonly bytes: Uint8Array = new Uint8Array(new ArrayBuffer(STATX.size));
  /** A view of them. */
  readonly view: DataView = new DataView(this.bytes.buffer);

  /** `stx_mask`: which fields the kernel filled. */
  get mask(): number {
    return this.view.getUint32(STATX.mask, true);
  }
  /** `stx_mode` (type and permission bits). */
  get mode(): number {
    return this.view.getUint16(STATX.mode, true);
  }
  /** `stx_ino`. */
  get ino(): bigint {
    return this.view.getBigUint64(STATX.ino, true);
  }
  /** `stx_dev_major`. */
  get devMajor(): number {
    return this.view.getUint32(STATX.devMajor, true);
  }
  /** `stx_dev_minor`. */
  get devMinor(): number {
    return this.view.getUint32(STATX.devMinor, true);
  }
  /** `stx_mnt_id`, or 0 when the kernel did not report it (before Linux 5.8). */
  get mntId(): bigint {
    return (this.mask & STATX_MNT_ID) !== 0 ? this.view.getBigUint64(STATX.mntId, true) : 0n;
  }
  /** `stx_size`. */
  get size(): bigint {
    return this.view.getBigUint64(STATX.sizeField, true);
  }

  get nlink(): number {
    return this.view.getUint32(STATX.nlink, true);
  }
}

/** `statx(dirfd, path, flags, mask, buf)`. Returns 0 or `-errno`. */
export function statxRaw(
  dirfd: number,
  path: Uint8Array,
  flags: number,
  mask: number,
  buf: StatxBuffer,
): number {
  return neg(libc.statx(dirfd, path, flags, mask, buf.bytes));
}

/**
 * `statx(dirfd, name, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_MNT_ID)`: the file `name`
 * (NUL-terminated) in directory `dirfd`, a symlink itself. Returns 0 or `-errno`.
 */
export function statxAtRaw(dirfd: number, name: Uint8Array, buf: StatxBuffer): number {
  return neg(
    libc.statx(dirfd, name, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_MNT_ID, buf.bytes),
  );
}

/**
 * `statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_MNT_ID)`: the
 * descriptor's own file (O_PATH descriptors included). Returns 0 or `-errno`.
 */
export function statxFdRaw(fd: number, buf: StatxBuffer): number {
  return neg(
    libc.statx(
      fd,
      EMPTY,
      AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW,
      STATX_BASIC_STATS | STATX_MNT_ID,
      buf.bytes,
    ),
  );
}

/**
 * A reusable `struct file_handle` with room for `MAX_HANDLE_SZ` bytes of handle, and the mount
 * id name_to_handle_at(2) reports beside it.
 */
export class FileHandleBuffer {
  /** The raw `struct file_handle` bytes. */
  readonly bytes: Uint8Array = new Uint8Array(new ArrayBuffer(FILE_HANDLE.size + MAX_HANDLE_SZ));
  /** A view of them. */
  readonly view: DataView = new DataView(this.bytes.buffer);
  /** The `int` mount id. */
  readonly mountIdBytes: Uint8Array = new Uint8Array(new ArrayBuffer(4));

  /** `handle_bytes`: the length of `f_handle`. */
  get handleBytes(): number {
    return this.view.getUint32(FILE_HANDLE.bytes, true);
  }
  /** `handle_type`. */
  get handleType(): number {
    return this.view.getInt32(FILE_HANDLE.type, true);
  }
  /** The mount id of the last name_to_handle_at. */
  get mountId(): number {
    return new DataView(this.mountIdBytes.buffer).getInt32(0, true);
  }
  /** The filled struct, header and handle (a view, valid until the next call). */
  filled(): Uint8Array {
    return this.bytes.subarray(0, FILE_HANDLE.size + Math.min(this.handleBytes, MAX_HANDLE_SZ));
  }
}

/**
 * `name_to_handle_at(dirfd, name, handle, &mount_id, flags)` into `buf` (`flags`:
 * AT_EMPTY_PATH, AT_SYMLINK_FOLLOW). Returns 0 or `-errno` (EOPNOTSUPP: the file system has no
 * file handles; EOVERFLOW: the handle is longer than `MAX_HANDLE_SZ`).
 */
export function nameToHandleAtRaw(
  dirfd: number,
  name: Uint8Array,
  buf: FileHandleBuffer,
  flags: number,
): number {
  buf.view.setUint32(FILE_HANDLE.bytes, MAX_HANDLE_SZ, true);
  return neg(libc.name_to_handle_at(dirfd, name, buf.bytes, buf.mountIdBytes, flags));
}

/**
 * `open_by_handle_at(mountFd, handle, flags)`: opens the file a `struct file_handle` (header and
 * `f_handle`, as `FileHandleBuffer.filled()`) names on the file system of `mountFd` (an open
 * descriptor, not O_PATH), retrying EINTR. Needs CAP_DAC_READ_SEARCH (EPERM otherwise); ESTALE
 * when the file no longer exists. Returns the fd or `-errno`.
 */
export function openByHandleAtRaw(mountFd: number, handle: Uint8Array, flags: number): number {
  if (handle.byteLength < FILE_HANDLE.size) return -Errno.EINVAL;
  for (;;) {
    const fd = libc.open_by_handle_at(mountFd, handle, flags);
    if (fd >= 0) return fd;
    const e = errno();
    if (e !== Errno.EINTR) return -e;
  }
}

/** `close(2)`. Returns 0 or `-errno` (EINTR included: the fd is gone either way). */
export function closeRaw(fd: number): number {
  return neg(libc.close(fd));
}

/** `dup(fd)` (without close-on-exec). Returns the new fd or `-errno`. */
export function dupRaw(fd: number): number {
  return neg(libc.dup(fd));
}

/** `fcntl(fd, F_DUPFD_CLOEXEC, 0)`: a close-on-exec duplicate. Returns the new fd or `-errno`. */
export function dupCloexecRaw(fd: number): number {
  return neg(libc.fcntl(fd, F_DUPFD_CLOEXEC, 0));
}

/** `mkdirat(2)`. Returns 0 or `-errno`. */
export function mkdiratRaw(dirfd: number, name: Uint8Array, mode: number): number {
  return neg(libc.mkdirat(dirfd, name, mode));
}

/** `mknodat(2)`; `dev` is a glibc `dev_t` (see `makedev`). Returns 0 or `-errno`. */
export function mknodatRaw(dirfd: number, name: Uint8Array, mode: number, dev: bigint): number {
  return neg(libc.mknodat(dirfd, name, mode, dev));
}

/** `symlinkat(target, dirfd, name)`. Returns 0 or `-errno`. */
export function symlinkatRaw(target: Uint8Array, dirfd: number, name: Uint8Array): number {
  return neg(libc.symlinkat(target, dirfd, name));
}

/** `readlinkat(2)` into `buf` (no NUL added). Returns the length or `-errno`. */
export function readlinkatRaw(dirfd: number, name: Uint8Array, buf: Uint8Array): number {
  return neg(libc.readlinkat(dirfd, name, buf, BigInt(buf.byteLength)));
}

/** `unlinkat(2)` (`flags`: 0 or AT_REMOVEDIR). Returns 0 or `-errno`. */
export function unlinkatRaw(dirfd: number, name: Uint8Array, flags: number): number {
  return neg(libc.unlinkat(dirfd, name, flags));
}

/** `renameat2(2)` (`flags`: RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT). 0 or `-errno`. */
export function renameat2Raw(
  olddirfd: number,
  oldName: Uint8Array,
  newdirfd: number,
  newName: Uint8Array,
  flags: number,
): number {
  return neg(libc.renameat2(olddirfd, oldName, newdirfd, newName, flags));
}

/** `linkat(2)` (`flags`: AT_EMPTY_PATH, AT_SYMLINK_FOLLOW). Returns 0 or `-errno`. */
export function linkatRaw(
  olddirfd: number,
  oldName: Uint8Array,
  newdirfd: number,
  newName: Uint8Array,
  flags: number,
): number {
  return neg(libc.linkat(olddirfd, oldName, newdirfd, newName, flags));
}

/** `fchmod(2)` of an open (not O_PATH) descriptor. Returns 0 or `-errno`. */
export function fchmodRaw(fd: number, mode: number): number {
  return neg(libc.fchmod(fd, mode));
}

/** `fchmodat(2)`. Returns 0 or `-errno`. */
export function fchmodatRaw(dirfd: number, name: Uint8Array, mode: number, flags: number): number {
  return neg(libc.fchmodat(dirfd, name, mode, flags));
}

/** `fchownat(2)`; `uid`/`gid` 0xffffffff leave that id alone. Returns 0 or `-errno`. */
export function fchownatRaw(
  dirfd: number,
  name: Uint8Array,
  uid: number,
  gid: number,
  flags: number,
): number {
  return neg(libc.fchownat(dirfd, name, uid >>> 0, gid >>> 0, flags));
}

/** `utimensat(2)`; `times` holds two `struct timespec` (see `TIMESPEC`). 0 or `-errno`. */
export function utimensatRaw(
  dirfd: number,
  name: Uint8Array,
  times: Uint8Array,
  flags: number,
): number {
  return neg(libc.utimensat(dirfd, name, times, flags));
}

/** `faccessat(2)` (glibc uses faccessat2 for `flags`). Returns 0 or `-errno`. */
export function faccessatRaw(dirfd: number, name: Uint8Array, mode: number, flags: number): number {
  return neg(libc.faccessat(dirfd, name, mode, flags));
}

/** `ftruncate(2)`, retrying EINTR. Returns 0 or `-errno`. */
export function ftruncateRaw(fd: number, length: bigint): number {
  for (;;) {
    if (libc.ftruncate(fd, length) === 0) return 0;
    const e = errno();
    if (e !== Errno.EINTR) return -e;
  }
}

/** `fallocate(2)`, retrying EINTR. Returns 0 or `-errno`. */
export function fallocateRaw(fd: number, mode: number, offset: bigint, length: bigint): number {
  for (;;) {
    if (libc.fallocate(fd, mode, offset, length) === 0) return 0;
    const e = errno();
    if (e !== Errno.EINTR) return -e;
  }
}

/** `lseek(2)`. Returns the new offset, or `-errno` (as a negative bigint). */
export function lseekRaw(fd: number, offset: bigint, whence: number): bigint {
  const r = BigInt(libc.lseek(fd, offset, whence));
  return r === -1n ? BigInt(-errno()) : r;
}

/** `fsync(2)`, or `fdatasync(2)` when `datasync`, retrying EINTR. Returns 0 or `-errno`. */
export function fsyncRaw(fd: number, datasync: boolean): number {
  for (;;) {
    if ((datasync ? libc.fdatasync(fd) : libc.fsync(fd)) === 0) return 0;
    const e = errno();
    if (e !== Errno.EINTR) return -e;
  }
}

/** `syncfs(2)` of the file system holding `fd` (not an O_PATH descriptor). 0 or `-errno`. */
export function syncfsRaw(fd: number): number {
  return neg(libc.syncfs(fd));
}

const cfrOffsets = new BigInt64Array(new ArrayBuffer(16));
const cfrIn = new Uint8Array(cfrOffsets.buffer, 0, 8);
const cfrOut = new Uint8Array(cfrOffsets.buffer, 8, 8);

/**
 * `copy_file_range(2)` of up to `length` bytes (below 2 GiB) from `fdIn` at `offIn` to `fdOut`
 * at `offOut` (explicit offsets: the descriptors' positions do not move), retrying EINTR.
 * Returns the bytes copied or `-errno`.
 */
export function copyFileRangeRaw(
  fdIn: number,
  offIn: bigint,
  fdOut: number,
  offOut: bigint,
  length: number,
  flags: number,
): number {
  for (;;) {
    cfrOffsets[0] = offIn;
    cfrOffsets[1] = offOut;
    const n = libc.copy_file_range(fdIn, cfrIn, fdOut, cfrOut, BigInt(length), flags);
    if (n >= 0) return n;
    const e = errno();
    if (e !== Errno.EINTR) return -e;
  }
}

/**
 * `getdents64(2)`: directory entries (see `DIRENT64`) from `fd`'s position into `buf`. Returns
 * the bytes filled (0 at the end) or `-errno`.
 */
export function getdents64Raw(fd: number, buf: Uint8Array): number {
  return neg(libc.getdents64(fd, buf, BigInt(buf.byteLength)));
}

/**
 * `getxattr(2)` (following a final symlink: point it at `/proc/self/fd/N` to reach the file of
 * an O_PATH descriptor, whatever its type). `value` null with `size` 0 asks for the length.
 * Returns the value's length or `-errno`.
 */
export function getxattrRaw(path: Uint8Array, name: Uint8Array, value: Uint8Array | null): number {
  return neg(libc.getxattr(path, name, value, BigInt(value?.byteLength ?? 0)));
}

/** `setxattr(2)` (`flags`: XATTR_CREATE, XATTR_REPLACE). Returns 0 or `-errno`. */
export function setxattrRaw(
  path: Uint8Array,
  name: Uint8Array,
  value: Uint8Array,
  flags: number,
): number {
  return neg(libc.setxattr(path, name, value, BigInt(value.byteLength), flags));
}

/** `listxattr(2)`: NUL-separated names into `list` (null: the length). Length or `-errno`. */
export function listxattrRaw(path: Uint8Array, list: Uint8Array | null): number {
  return neg(libc.listxattr(path, list, BigInt(list?.byteLength ?? 0)));
}

/** `removexattr(2)`. Returns 0 or `-errno`. */
export function removexattrRaw(path: Uint8Array, name: Uint8Array): number {
  return neg(libc.removexattr(path, name));
}

// The *xattrat calls (Linux 6.13; 464 was never another call, so getxattrat is the probe).
const NR_SETXATTRAT = BigInt(SYSCALL_NUMBERS.setxattrat ?? -1);
const NR_GETXATTRAT = BigInt(SYSCALL_NUMBERS.getxattrat ?? -1);
const NR_LISTXATTRAT = BigInt(SYSCALL_NUMBERS.listxattrat ?? -1);
const NR_REMOVEXATTRAT = BigInt(SYSCALL_NUMBERS.removexattrat ?? -1);
const XATTR_ARGS_SIZE = BigInt(XATTR_ARGS.size);

/** One of getxattrat/setxattrat: the same arguments, a different number. */
function xattrat(
  nr: bigint,
  dirfd: number,
  path: Uint8Array,
  name: Uint8Array,
  args: Uint8Array,
): number {
  return neg(Number(libc.syscall_xattrat(nr, dirfd, path, 0, name, args, XATTR_ARGS_SIZE)));
}

/**
 * `getxattrat(2)` (Linux 6.13) of `path` relative to `dirfd`, following a final symlink (so
 * `dirfd` /proc/self/fd and `path` "N" reach the node of descriptor N, whatever its type).
 * `args` is a `struct xattr_args` naming the value buffer and its size (0: ask for the length).
 * Returns the value's length or `-errno` (`-ENOSYS` before Linux 6.13).
 */
export function getxattratRaw(
  dirfd: number,
  path: Uint8Array,
  name: Uint8Array,
  args: Uint8Array,
): number {
  return xattrat(NR_GETXATTRAT, dirfd, path, name, args);
}

/** `setxattrat(2)` (Linux 6.13), as {@linkcode getxattratRaw}; `args` carries the flags too. */
export function setxattratRaw(
  dirfd: number,
  path: Uint8Array,
  name: Uint8Array,
  args: Uint8Array,
): number {
  return xattrat(NR_SETXATTRAT, dirfd, path, name, args);
}

/** `listxattrat(2)` (Linux 6.13): NUL-separated names into `list` (null: the length). */
export function listxattratRaw(dirfd: number, path: Uint8Array, list: Uint8Array | null): number {
  return neg(
    Number(
      libc.syscall_listxattrat(NR_LISTXATTRAT, dirfd, path, 0, list, BigInt(list?.byteLength ?? 0)),
    ),
  );
}

/** `removexattrat(2)` (Linux 6.13). Returns 0 or `-errno`. */
export function removexattratRaw(dirfd: number, path: Uint8Array, name: Uint8Array): number {
  return neg(Number(libc.syscall_removexattrat(NR_REMOVEXATTRAT, dirfd, path, 0, name)));
}

/** This process's effective uid. */
export function geteuid(): number {
  return libc.geteuid();
}

/** This process's effective gid. */
export function getegid(): number {
  return libc.getegid();
}

/**
 * `setfsuid(2)`: the uid the calling thread's file system accesses use (and new files get).
 * Returns the previous one. Only the calling thread changes.
 */
export function setfsuid(uid: number): number {
  return libc.setfsuid(uid >>> 0);
}

/** `setfsgid(2)`: as `setfsuid`, for the gid. Returns the previous one. */
export function setfsgid(gid: number): number {
  return libc.setfsgid(gid >>> 0);
}

/**
 * `unshare(CLONE_FS)`: gives the calling thread its own cwd, root and umask, so that `umask()`
 * no longer changes the other threads'. Returns 0 or `-errno`.
 */
export function unshareFsRaw(): number {
  return neg(libc.unshare(CLONE_FS));
}

/** `flock(2)` (LOCK_EX, LOCK_NB, LOCK_UN), retrying EINTR. Returns 0 or `-errno`. */
export function flockRaw(fd: number, operation: number): number {
  for (;;) {
    if (libc.flock(fd, operation) === 0) return 0;
    const e = errno();
    if (e !== Errno.EINTR) return -e;
  }
}

/** `umask(2)`: sets the file mode creation mask, returns the previous one. */
export function umask(mask: number): number {
  return libc.umask(mask);
}

/**
 * glibc's `makedev(major, minor)` as a 64-bit `dev_t`.
 */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0);
  const mi = BigInt(minor >>> 0);
  return ((ma & 0xfffn) << 8n) | ((ma & ~0xfffn) << 32n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n);
}
