/**
 * The FUSE wire format from Linux's include/uapi/linux/fuse.h (7.38): opcodes, INIT flags and
 * struct layouts as byte offsets. All fields are little-endian on x86-64.
 *
 * @module
 */

/** The protocol major version we speak. */
export const FUSE_KERNEL_VERSION = 7;
/** The highest minor version we speak; the session uses min(ours, the client's). */
export const FUSE_KERNEL_MINOR_VERSION = 38;
/** The lowest client minor version we serve (virtio-fs needs 7.27+ semantics). */
export const FUSE_MIN_MINOR_VERSION = 27;

/** FUSE opcodes. */
export const FUSE_LOOKUP = 1;
/** Opcode (no reply). */
export const FUSE_FORGET = 2;
/** Opcode. */
export const FUSE_GETATTR = 3;
/** Opcode. */
export const FUSE_SETATTR = 4;
/** Opcode. */
export const FUSE_READLINK = 5;
/** Opcode. */
export const FUSE_SYMLINK = 6;
/** Opcode. */
export const FUSE_MKNOD = 8;
/** Opcode. */
export const FUSE_MKDIR = 9;
/** Opcode. */
export const FUSE_UNLINK = 10;
/** Opcode. */
export const FUSE_RMDIR = 11;
/** Opcode. */
export const FUSE_RENAME = 12;
/** Opcode. */
export const FUSE_LINK = 13;
/** Opcode. */
export const FUSE_OPEN = 14;
/** Opcode. */
export const FUSE_READ = 15;
/** Opcode. */
export const FUSE_WRITE = 16;
/** Opcode. */
export const FUSE_STATFS = 17;
/** Opcode. */
export const FUSE_RELEASE = 18;
/** Opcode. */
export const FUSE_FSYNC = 20;
/** Opcode. */
export const FUSE_SETXATTR = 21;
/** Opcode. */
export const FUSE_GETXATTR = 22;
/** Opcode. */
export const FUSE_LISTXATTR = 23;
/** Opcode. */
export const FUSE_REMOVEXATTR = 24;
/** Opcode. */
export const FUSE_FLUSH = 25;
/** Opcode. */
export const FUSE_INIT = 26;
/** Opcode. */
export const FUSE_OPENDIR = 27;
/** Opcode. */
export const FUSE_READDIR = 28;
/** Opcode. */
export const FUSE_RELEASEDIR = 29;
/** Opcode. */
export const FUSE_FSYNCDIR = 30;
/** Opcode. */
export const FUSE_GETLK = 31;
/** Opcode. */
export const FUSE_SETLK = 32;
/** Opcode. */
export const FUSE_SETLKW = 33;
/** Opcode. */
export const FUSE_ACCESS = 34;
/** Opcode. */
export const FUSE_CREATE = 35;
/** Opcode (no reply). */
export const FUSE_INTERRUPT = 36;
/** Opcode. */
export const FUSE_BMAP = 37;
/** Opcode. */
export const FUSE_DESTROY = 38;
/** Opcode. */
export const FUSE_IOCTL = 39;
/** Opcode. */
export const FUSE_POLL = 40;
/** Opcode. */
export const FUSE_NOTIFY_REPLY = 41;
/** Opcode (no reply). */
export const FUSE_BATCH_FORGET = 42;
/** Opcode. */
export const FUSE_FALLOCATE = 43;
/** Opcode. */
export const FUSE_READDIRPLUS = 44;
/** Opcode. */
export const FUSE_RENAME2 = 45;
/** Opcode. */
export const FUSE_LSEEK = 46;
/** Opcode. */
export const FUSE_COPY_FILE_RANGE = 47;
/** Opcode (DAX). */
export const FUSE_SETUPMAPPING = 48;
/** Opcode (DAX). */
export const FUSE_REMOVEMAPPING = 49;
/** Opcode. */
export const FUSE_SYNCFS = 50;
/** Opcode (7.37). */
export const FUSE_TMPFILE = 51;

/** Opcode names, for logs. */
export const OPCODE_NAMES: Readonly<Record<number, string>> = {
  1: "LOOKUP",
  2: "FORGET",
  3: "GETATTR",
  4: "SETATTR",
  5: "READLINK",
  6: "SYMLINK",
  8: "MKNOD",
  9: "MKDIR",
  10: "UNLINK",
  11: "RMDIR",
  12: "RENAME",
  13: "LINK",
  14: "OPEN",
  15: "READ",
  16: "WRITE",
  17: "STATFS",
  18: "RELEASE",
  20: "FSYNC",
  21: "SETXATTR",
  22: "GETXATTR",
  23: "LISTXATTR",
  24: "REMOVEXATTR",
  25: "FLUSH",
  26: "INIT",
  27: "OPENDIR",
  28: "READDIR",
  29: "RELEASEDIR",
  30: "FSYNCDIR",
  31: "GETLK",
  32: "SETLK",
  33: "SETLKW",
  34: "ACCESS",
  35: "CREATE",
  36: "INTERRUPT",
  37: "BMAP",
  38: "DESTROY",
  39: "IOCTL",
  40: "POLL",
  41: "NOTIFY_REPLY",
  42: "BATCH_FORGET",
  43: "FALLOCATE",
  44: "READDIRPLUS",
  45: "RENAME2",
  46: "LSEEK",
  47: "COPY_FILE_RANGE",
  48: "SETUPMAPPING",
  49: "REMOVEMAPPING",
  50: "SYNCFS",
  51: "TMPFILE",
};

/** `NAME(code)` of an opcode, for logs. */
export function opcodeName(opcode: number): string {
  return `${OPCODE_NAMES[opcode] ?? "UNKNOWN"}(${opcode})`;
}

/**
 * `struct fuse_in_header { u32 len; u32 opcode; u64 unique; u64 nodeid; u32 uid, gid, pid;
 * u16 total_extlen; u16 padding; }`
 */
export const IN_HEADER = {
  size: 40,
  len: 0,
  opcode: 4,
  unique: 8,
  nodeid: 16,
  uid: 24,
  gid: 28,
  pid: 32,
  totalExtlen: 36,
} as const;

/** `struct fuse_out_header { u32 len; i32 error; u64 unique; }` */
export const OUT_HEADER = { size: 16, len: 0, error: 4, unique: 8 } as const;

/**
 * `struct fuse_init_in { u32 major, minor, max_readahead, flags, flags2, unused[11]; }`
 * (before 7.36 only the first 16 bytes).
 */
export const INIT_IN = {
  size: 64,
  compatSize: 16,
  major: 0,
  minor: 4,
  maxReadahead: 8,
  flags: 12,
  flags2: 16,
} as const;

/**
 * `struct fuse_init_out { u32 major, minor, max_readahead, flags; u16 max_background,
 * congestion_threshold; u32 max_write, time_gran; u16 max_pages, map_alignment; u32 flags2,
 * unused[7]; }` (clients before 7.23 take 24 bytes, before 7.5 only 8).
 */
export const INIT_OUT = {
  size: 64,
  major: 0,
  minor: 4,
  maxReadahead: 8,
  flags: 12,
  maxBackground: 16,
  congestionThreshold: 18,
  maxWrite: 20,
  timeGran: 24,
  maxPages: 28,
  mapAlignment: 30,
  flags2: 32,
} as const;

/** INIT flag bits (`flags`, bits 0–31; bits 32–63 travel in `flags2` under FUSE_INIT_EXT). */
export const FUSE_ASYNC_READ = 1n << 0n;
/** INIT flag. */
export const FUSE_POSIX_LOCKS = 1n << 1n;
/** INIT flag. */
export const FUSE_FILE_OPS = 1n << 2n;
/** INIT flag. */
export const FUSE_ATOMIC_O_TRUNC = 1n << 3n;
/** INIT flag. */
export const FUSE_EXPORT_SUPPORT = 1n << 4n;
/** INIT flag. */
export const FUSE_BIG_WRITES = 1n << 5n;
/** INIT flag. */
export const FUSE_DONT_MASK = 1n << 6n;
/** INIT flag. */
export const FUSE_SPLICE_WRITE = 1n << 7n;
/** INIT flag. */
export const FUSE_SPLICE_MOVE = 1n << 8n;
/** INIT flag. */
export const FUSE_SPLICE_READ = 1n << 9n;
/** INIT flag. */
export const FUSE_FLOCK_LOCKS = 1n << 10n;
/** INIT flag. */
export const FUSE_HAS_IOCTL_DIR = 1n << 11n;
/** INIT flag. */
export const FUSE_AUTO_INVAL_DATA = 1n << 12n;
/** INIT flag. */
export const FUSE_DO_READDIRPLUS = 1n << 13n;
/** INIT flag. */
export const FUSE_READDIRPLUS_AUTO = 1n << 14n;
/** INIT flag. */
export const FUSE_ASYNC_DIO = 1n << 15n;
/** INIT flag. */
export const FUSE_WRITEBACK_CACHE = 1n << 16n;
/** INIT flag. */
export const FUSE_NO_OPEN_SUPPORT = 1n << 17n;
/** INIT flag. */
export const FUSE_PARALLEL_DIROPS = 1n << 18n;
/** INIT flag. */
export const FUSE_HANDLE_KILLPRIV = 1n << 19n;
/** INIT flag. */
export const FUSE_POSIX_ACL = 1n << 20n;
/** INIT flag. */
export const FUSE_ABORT_ERROR = 1n << 21n;
/** INIT flag. */
export const FUSE_MAX_PAGES = 1n << 22n;
/** INIT flag. */
export const FUSE_CACHE_SYMLINKS = 1n << 23n;
/** INIT flag. */
export const FUSE_NO_OPENDIR_SUPPORT = 1n << 24n;
/** INIT flag. */
export const FUSE_EXPLICIT_INVAL_DATA = 1n << 25n;
/** INIT flag. */
export const FUSE_MAP_ALIGNMENT = 1n << 26n;
/** INIT flag. */
export const FUSE_SUBMOUNTS = 1n << 27n;
/** INIT flag. */
export const FUSE_HANDLE_KILLPRIV_V2 = 1n << 28n;
/** INIT flag. */
export const FUSE_SETXATTR_EXT = 1n << 29n;
/** INIT flag: `flags2` is valid. */
export const FUSE_INIT_EXT = 1n << 30n;
/** INIT flag. */
export const FUSE_INIT_RESERVED = 1n << 31n;
/** INIT flag (flags2 bit 0). */
export const FUSE_SECURITY_CTX = 1n << 32n;
/** INIT flag (flags2 bit 1). */
export const FUSE_HAS_INODE_DAX = 1n << 33n;
/** INIT flag (flags2 bit 2). */
export const FUSE_CREATE_SUPP_GROUP = 1n << 34n;
/** INIT flag (flags2 bit 3). */
export const FUSE_HAS_EXPIRE_ONLY = 1n << 35n;
/** INIT flag (flags2 bit 4; Linux 6.6, 7.39): mmap(MAP_SHARED) allowed on FOPEN_DIRECT_IO files. */
export const FUSE_DIRECT_IO_ALLOW_MMAP = 1n << 36n;

/** The largest WRITE (and READ) payload we negotiate: 1 MiB. */
export const MAX_WRITE = 1 << 20;
/** The most pages per request we negotiate (1 MiB in 4 KiB pages). */
export const MAX_PAGES = 256;

/** The nodeid of the root directory. */
export const FUSE_ROOT_ID = 1n;

/**
 * `fuse_attr.flags`: the directory is the root of another file system of the server's (a mount
 * below the share); a client granted FUSE_SUBMOUNTS mounts it as a submount, with a superblock and
 * device number of its own.
 */
export const FUSE_ATTR_SUBMOUNT = 1 << 0;

/**
 * `fuse_attr.flags`: a client granted FUSE_HAS_INODE_DAX (and mounted with `dax=inode`, or with
 * no dax option on a device with a cache window) reads and writes this file through its window
 * (FUSE_SETUPMAPPING) instead of FUSE_READ/WRITE. A change takes effect once the client's inode
 * is evicted.
 */
export const FUSE_ATTR_DAX = 1 << 1;

/**
 * `struct fuse_attr { u64 ino, size, blocks, atime, mtime, ctime; u32 atimensec, mtimensec,
 * ctimensec, mode, nlink, uid, gid, rdev, blksize, flags; }`
 */
export const ATTR = {
  size: 88,
  ino: 0,
  sizeField: 8,
  blocks: 16,
  atime: 24,
  mtime: 32,
  ctime: 40,
  atimensec: 48,
  mtimensec: 52,
  ctimensec: 56,
  mode: 60,
  nlink: 64,
  uid: 68,
  gid: 72,
  rdev: 76,
  blksize: 80,
  flags: 84,
} as const;

/** `struct fuse_attr_out { u64 attr_valid; u32 attr_valid_nsec, dummy; struct fuse_attr attr; }` */
export const ATTR_OUT = { size: 104, attrValid: 0, attrValidNsec: 8, attr: 16 } as const;

/**
 * `struct fuse_entry_out { u64 nodeid, generation, entry_valid, attr_valid; u32
 * entry_valid_nsec, attr_valid_nsec; struct fuse_attr attr; }`
 */
export const ENTRY_OUT = {
  size: 128,
  nodeid: 0,
  generation: 8,
  entryValid: 16,
  attrValid: 24,
  entryValidNsec: 32,
  attrValidNsec: 36,
  attr: 40,
} as const;

/** `struct fuse_getattr_in { u32 getattr_flags, dummy; u64 fh; }` */
export const GETATTR_IN = { size: 16, getattrFlags: 0, fh: 8 } as const;
/** getattr_flags: `fh` is valid. */
export const FUSE_GETATTR_FH = 1;
/** `struct fuse_forget_in { u64 nlookup; }` */
export const FORGET_IN = { size: 8, nlookup: 0 } as const;
/** `struct fuse_batch_forget_in { u32 count, dummy; }` then `count` forget_one entries. */
export const BATCH_FORGET_IN = { size: 8, count: 0 } as const;
/** `struct fuse_forget_one { u64 nodeid, nlookup; }` */
export const FORGET_ONE = { size: 16, nodeid: 0, nlookup: 8 } as const;
/**
 * `struct fuse_kstatfs { u64 blocks, bfree, bavail, files, ffree; u32 bsize, namelen, frsize,
 * padding, spare[6]; }` (the whole of `fuse_statfs_out`).
 */
export const KSTATFS = {
  size: 80,
  blocks: 0,
  bfree: 8,
  bavail: 16,
  files: 24,
  ffree: 32,
  bsize: 40,
  namelen: 44,
  frsize: 48,
} as const;

/** SETATTR `valid` bits. */
export const FATTR_MODE = 1 << 0;
/** SETATTR valid bit. */
export const FATTR_UID = 1 << 1;
/** SETATTR valid bit. */
export const FATTR_GID = 1 << 2;
/** SETATTR valid bit. */
export const FATTR_SIZE = 1 << 3;
/** SETATTR valid bit. */
export const FATTR_ATIME = 1 << 4;
/** SETATTR valid bit. */
export const FATTR_MTIME = 1 << 5;
/** SETATTR valid bit. */
export const FATTR_FH = 1 << 6;
/** SETATTR valid bit. */
export const FATTR_ATIME_NOW = 1 << 7;
/** SETATTR valid bit. */
export const FATTR_MTIME_NOW = 1 << 8;
/** SETATTR valid bit. */
export const FATTR_LOCKOWNER = 1 << 9;
/** SETATTR valid bit. */
export const FATTR_CTIME = 1 << 10;
/** SETATTR valid bit. */
export const FATTR_KILL_SUIDGID = 1 << 11;

/**
 * `struct fuse_setattr_in { u32 valid, padding; u64 fh, size, lock_owner, atime, mtime, ctime;
 * u32 atimensec, mtimensec, ctimensec, mode, unused4, uid, gid, unused5; }`
 */
export const SETATTR_IN = {
  size: 88,
  valid: 0,
  fh: 8,
  sizeField: 16,
  lockOwner: 24,
  atime: 32,
  mtime: 40,
  ctime: 48,
  atimensec: 56,
  mtimensec: 60,
  ctimensec: 64,
  mode: 68,
  uid: 76,
  gid: 80,
} as const;
/** `struct fuse_mknod_in { u32 mode, rdev, umask, padding; }` then the name. */
export const MKNOD_IN = { size: 16, mode: 0, rdev: 4, umask: 8 } as const;
/** `struct fuse_mkdir_in { u32 mode, umask; }` then the name. */
export const MKDIR_IN = { size: 8, mode: 0, umask: 4 } as const;
/** `struct fuse_rename_in { u64 newdir; }` then old name, new name. */
export const RENAME_IN = { size: 8, newdir: 0 } as const;
/**
 * `struct fuse_rename2_in { u64 newdir; u32 flags, padding; }` then old name, new name; `flags`
 * are renameat2(2)'s RENAME_NOREPLACE / RENAME_EXCHANGE / RENAME_WHITEOUT (in `src/ffi`).
 */
export const RENAME2_IN = { size: 16, newdir: 0, flags: 8 } as const;
/** `struct fuse_link_in { u64 oldnodeid; }` then the new name. */
export const LINK_IN = { size: 8, oldnodeid: 0 } as const;
/** `struct fuse_open_in { u32 flags, open_flags; }` */
export const OPEN_IN = { size: 8, flags: 0, openFlags: 4 } as const;
/** `struct fuse_create_in { u32 flags, mode, umask, open_flags; }` then the name. */
export const CREATE_IN = { size: 16, flags: 0, mode: 4, umask: 8, openFlags: 12 } as const;
/** `struct fuse_open_out { u64 fh; u32 open_flags, padding; }` */
export const OPEN_OUT = { size: 16, fh: 0, openFlags: 8 } as const;
/** `struct fuse_release_in { u64 fh; u32 flags, release_flags; u64 lock_owner; }` */
export const RELEASE_IN = { size: 24, fh: 0, flags: 8, releaseFlags: 12, lockOwner: 16 } as const;
/** `struct fuse_flush_in { u64 fh; u32 unused, padding; u64 lock_owner; }` */
export const FLUSH_IN = { size: 24, fh: 0, lockOwner: 16 } as const;
/**
 * `struct fuse_read_in { u64 fh, offset; u32 size, read_flags; u64 lock_owner; u32 flags,
 * padding; }` (READ, READDIR, READDIRPLUS).
 */
export const READ_IN = {
  size: 40,
  fh: 0,
  offset: 8,
  sizeField: 16,
  readFlags: 20,
  lockOwner: 24,
  flags: 32,
} as const;
/**
 * `struct fuse_write_in { u64 fh, offset; u32 size, write_flags; u64 lock_owner; u32 flags,
 * padding; }` then the data.
 */
export const WRITE_IN = {
  size: 40,
  fh: 0,
  offset: 8,
  sizeField: 16,
  writeFlags: 20,
  lockOwner: 24,
  flags: 32,
} as const;
/** `struct fuse_write_out { u32 size, padding; }` */
export const WRITE_OUT = { size: 8, sizeField: 0 } as const;
/** write_flags: the write comes from the page cache (writeback), `fh` may be a guess. */
export const FUSE_WRITE_CACHE = 1 << 0;
/** write_flags: `lock_owner` is valid. */
export const FUSE_WRITE_LOCKOWNER = 1 << 1;
/** write_flags: clear suid/sgid (HANDLE_KILLPRIV_V2). */
export const FUSE_WRITE_KILL_SUIDGID = 1 << 2;
/** `struct fuse_fsync_in { u64 fh; u32 fsync_flags, padding; }` */
export const FSYNC_IN = { size: 16, fh: 0, fsyncFlags: 8 } as const;
/** fsync_flags: only the data (fdatasync). */
export const FUSE_FSYNC_FDATASYNC = 1 << 0;
/** `struct fuse_setxattr_in { u32 size, flags, setxattr_flags, padding; }` (8 bytes without SETXATTR_EXT). */
export const SETXATTR_IN = {
  size: 16,
  compatSize: 8,
  sizeField: 0,
  flags: 4,
  setxattrFlags: 8,
} as const;
/** `struct fuse_getxattr_in { u32 size, padding; }` then the name (GETXATTR) or nothing (LISTXATTR). */
export const GETXATTR_IN = { size: 8, sizeField: 0 } as const;
/** `struct fuse_getxattr_out { u32 size, padding; }` (the size a buffer needs, when asked with size 0). */
export const GETXATTR_OUT = { size: 8, sizeField: 0 } as const;
/** `struct fuse_access_in { u32 mask, padding; }` */
export const ACCESS_IN = { size: 8, mask: 0 } as const;
/** `struct fuse_interrupt_in { u64 unique; }` */
export const INTERRUPT_IN = { size: 8, unique: 0 } as const;
/** `struct fuse_lseek_in { u64 fh, offset; u32 whence, padding; }` */
export const LSEEK_IN = { size: 24, fh: 0, offset: 8, whence: 16 } as const;
/** `struct fuse_lseek_out { u64 offset; }` */
export const LSEEK_OUT = { size: 8, offset: 0 } as const;
/** `struct fuse_fallocate_in { u64 fh, offset, length; u32 mode, padding; }` */
export const FALLOCATE_IN = { size: 32, fh: 0, offset: 8, length: 16, mode: 24 } as const;
/**
 * `struct fuse_copy_file_range_in { u64 fh_in, off_in, nodeid_out, fh_out, off_out, len, flags; }`
 */
export const COPY_FILE_RANGE_IN = {
  size: 56,
  fhIn: 0,
  offIn: 8,
  nodeidOut: 16,
  fhOut: 24,
  offOut: 32,
  len: 40,
  flags: 48,
} as const;
/** `struct fuse_syncfs_in { u64 padding; }` */
export const SYNCFS_IN = { size: 8 } as const;
/** `struct fuse_dirent { u64 ino, off; u32 namelen, type; char name[]; }`, padded to 8 bytes. */
export const DIRENT = { size: 24, ino: 0, off: 8, namelen: 16, type: 20, name: 24 } as const;
/** `struct fuse_direntplus { struct fuse_entry_out entry_out; struct fuse_dirent dirent; }` */
export const DIRENTPLUS = { size: 128 + 24, entry: 0, dirent: 128 } as const;
/** `FUSE_DIRENT_ALIGN(x)`: records are padded to 8 bytes. */
export function direntAlign(n: number): number {
  return (n + 7) & ~7;
}
/** open_out flags: bypass the page cache. */
export const FOPEN_DIRECT_IO = 1 << 0;
/** open_out flags: keep the page cache across opens. */
export const FOPEN_KEEP_CACHE = 1 << 1;
/** open_out flags: the file is not seekable. */
export const FOPEN_NONSEEKABLE = 1 << 2;
/** open_out flags: cache directory contents. */
export const FOPEN_CACHE_DIR = 1 << 3;
/** open_out flags: the file is a stream. */
export const FOPEN_STREAM = 1 << 4;
/** open_in open_flags (7.38): kill suid/sgid on open with O_TRUNC. */
export const FUSE_OPEN_KILL_SUIDGID = 1 << 0;

/**
 * FUSE_SETUPMAPPING argument (7.31, DAX): `u64 fh; u64 foffset; u64 len; u64 flags; u64 moffset;`
 * — map `len` bytes of the file at `foffset` to offset `moffset` of the DAX window. Linux sends
 * `fh` = -1 (the nodeid names the file), 2 MiB ranges, and READ (plus WRITE when writable).
 */
export const SETUPMAPPING_IN = {
  size: 40,
  fh: 0,
  foffset: 8,
  len: 16,
  flags: 24,
  moffset: 32,
} as const;
/** SETUPMAPPING flag: the mapping is written through. */
export const FUSE_SETUPMAPPING_FLAG_WRITE = 1n << 0n;
/** SETUPMAPPING flag: the mapping is read through. */
export const FUSE_SETUPMAPPING_FLAG_READ = 1n << 1n;
/** FUSE_REMOVEMAPPING argument: `u32 count;` then `count` × REMOVEMAPPING_ONE. */
export const REMOVEMAPPING_IN = { size: 4, count: 0 } as const;
/** One range of REMOVEMAPPING: `u64 moffset; u64 len;`. */
export const REMOVEMAPPING_ONE = { size: 16, moffset: 0, len: 8 } as const;
/** Linux's REMOVEMAPPING batch: at most PAGE_SIZE / 16 ranges per request. */
export const FUSE_REMOVEMAPPING_MAX_ENTRY = 256;
/** Linux's DAX range: every SETUPMAPPING maps 2 MiB (FUSE_DAX_SZ; `1 << FUSE_DAX_SHIFT`). */
export const FUSE_DAX_SHIFT = 21;
