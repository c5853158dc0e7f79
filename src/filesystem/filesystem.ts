/**
 * The `FileSystem` interface: what the FUSE session asks of a file system, one method per FUSE
 * operation. Implement it to serve your own file system to a VM; `PassthroughFs` serves a host
 * directory. The session knows nothing of host paths, and a file system knows nothing of queues.
 *
 * Contract, for every method:
 * - It runs synchronously on the device's thread; while it runs, no other request is served.
 * - It returns the reply, or throws `ErrnoError` (from `mod.ts`) whose errno goes back to the
 *   guest unchanged. Any other exception becomes EIO, with a log line.
 * - A method the file system does not have is answered ENOSYS.
 * - Every nodeid and fh comes from an untrusted guest: check that it is one you handed out.
 * - Returned objects are copied into the reply before the next call, so an implementation may
 *   reuse one object for every reply.
 *
 * @module
 */

/** Who is asking: the credentials in the request header (the guest's ids). */
export interface Context {
  /** The caller's uid in the guest. */
  uid: number;
  /** The caller's gid in the guest. */
  gid: number;
  /** The caller's pid in the guest (0 for requests the kernel makes itself). */
  pid: number;
}

/** File attributes, as `struct fuse_attr` carries them. */
export interface Attr {
  /** Inode number shown to the guest. */
  ino: bigint;
  /** Size in bytes. */
  size: number;
  /** 512-byte blocks allocated. */
  blocks: number;
  /** Access time, seconds. */
  atime: number;
  /** Access time, nanoseconds. */
  atimeNsec: number;
  /** Modification time, seconds. */
  mtime: number;
  /** Modification time, nanoseconds. */
  mtimeNsec: number;
  /** Status change time, seconds. */
  ctime: number;
  /** Status change time, nanoseconds. */
  ctimeNsec: number;
  /** File type and permission bits (`st_mode`). */
  mode: number;
  /** Hard links. */
  nlink: number;
  /** Owner (as the guest should see it). */
  uid: number;
  /** Group (as the guest should see it). */
  gid: number;
  /** Device number for device files. */
  rdev: number;
  /** Preferred I/O size. */
  blksize: number;
}

/** The reply to LOOKUP (and, later, to every call that creates a node). */
export interface Entry {
  /**
   * The node's id, which the guest uses until it FORGETs it. Each successful reply adds 1 to
   * the node's lookup count; FORGET subtracts what it names. Never 0; 1 is the root.
   */
  nodeid: bigint;
  /** Distinguishes a reused nodeid (0 when nodeids are never reused). */
  generation: bigint;
  /** The node's attributes. */
  attr: Attr;
  /** How long the guest may cache the name → node mapping, in seconds (0: not at all). */
  entryTimeout: number;
  /** How long the guest may cache `attr`, in seconds. */
  attrTimeout: number;
}

/** The reply to GETATTR. */
export interface AttrReply {
  /** The node's attributes. */
  attr: Attr;
  /** How long the guest may cache `attr`, in seconds. */
  timeout: number;
}

/** The reply to STATFS (`struct fuse_kstatfs`). */
export interface StatFs {
  /** Blocks in the file system (of `frsize` bytes). */
  blocks: number;
  /** Free blocks. */
  bfree: number;
  /** Free blocks an unprivileged user may use. */
  bavail: number;
  /** Inodes. */
  files: number;
  /** Free inodes. */
  ffree: number;
  /** Preferred block size. */
  bsize: number;
  /** Longest name. */
  namelen: number;
  /** Fragment size. */
  frsize: number;
}

/** One FORGET of a BATCH_FORGET. */
export interface ForgetOne {
  /** The node. */
  nodeid: bigint;
  /** Lookups to drop. */
  nlookup: bigint;
}

/** SETATTR's request: set what `valid` (FATTR_* bits) names, leave the rest. */
export interface SetattrIn {
  /** Which fields to set (FATTR_MODE, FATTR_UID, FATTR_SIZE, FATTR_ATIME_NOW, ...). */
  valid: number;
  /** The open handle the change comes through (FATTR_FH). */
  fh: bigint;
  /** New size (FATTR_SIZE). */
  size: number;
  /** New access time (FATTR_ATIME; FATTR_ATIME_NOW: now). */
  atime: number;
  /** Its nanoseconds. */
  atimeNsec: number;
  /** New modification time (FATTR_MTIME; FATTR_MTIME_NOW: now). */
  mtime: number;
  /** Its nanoseconds. */
  mtimeNsec: number;
  /** New permission bits (FATTR_MODE). */
  mode: number;
  /** New owner (FATTR_UID). */
  uid: number;
  /** New group (FATTR_GID). */
  gid: number;
}

/** The reply to OPEN, OPENDIR (and the open half of CREATE). */
export interface OpenReply {
  /** The handle the guest passes back with every request on this open file. */
  fh: bigint;
  /** FOPEN_* flags (DIRECT_IO, KEEP_CACHE, CACHE_DIR, ...). */
  openFlags: number;
}

/** The reply to CREATE and TMPFILE: the new node and its open handle. */
export interface CreateReply {
  /** The new node (+1 lookup count). */
  entry: Entry;
  /** Its handle. */
  open: OpenReply;
}

/**
 * Where READ data goes: the request's device-writable guest memory after the reply header.
 * Nothing is copied through JS when the data comes from a descriptor.
 */
export interface ReadDestination {
  /** Room for data, in bytes (the guest's `size`, bounded by its buffers). */
  readonly capacity: number;
  /**
   * `preadv(fd, ..., offset)` straight into guest memory, up to `capacity` bytes. Returns the
   * bytes read (fewer only at end of file) or -errno.
   */
  preadv(fd: number, offset: bigint, size: number): number;
  /** Copies `data` (a file system producing bytes in JS). Returns the bytes copied. */
  write(data: Uint8Array): number;
}

/** Where WRITE data comes from: the request's device-readable guest memory. */
export interface WriteSource {
  /** The bytes the guest wrote. */
  readonly size: number;
  /** `pwritev(fd, ..., offset)` straight from guest memory. Returns the bytes written or -errno. */
  pwritev(fd: number, offset: bigint): number;
  /** Copies the data into `dst` (a file system consuming bytes in JS). Returns the count. */
  read(dst: Uint8Array): number;
}

/** READDIR's collector: the session packs what fits in the guest's buffer. */
export interface DirentSink {
  /**
   * Adds one entry; `offset` is the cookie that resumes *after* it. Returns false (and adds
   * nothing) when the buffer is full: stop there.
   */
  add(ino: bigint, offset: bigint, type: number, name: Uint8Array): boolean;
  /**
   * Optional, the same as `add` without BigInts: the inode number and the cookie are the 8
   * little-endian bytes at `inoAt` and `offAt` of `src`, the name the `nameLength` bytes at
   * `nameAt` (a file system reading the host's `linux_dirent64` records passes them on as they
   * are).
   */
  addRaw?(
    src: Uint8Array,
    inoAt: number,
    offAt: number,
    type: number,
    nameAt: number,
    nameLength: number,
  ): boolean;
}

/** READDIRPLUS's collector: an entry with its lookup reply. */
export interface DirentPlusSink {
  /** Whether an entry named with `nameLength` bytes still fits (check before looking it up). */
  fits(nameLength: number): boolean;
  /**
   * Adds an entry that fits; `entry` counts as a lookup (+1) unless its nodeid is 0 (the guest
   * then ignores the attributes, as for "." and "..").
   */
  add(entry: Entry, offset: bigint, type: number, name: Uint8Array): void;
}

/**
 * A file system the session serves. Every method is optional (missing: ENOSYS). Names are bytes
 * without "/" or NUL; the session has checked that they fit the request.
 */
export interface FileSystem {
  /**
   * The session starts (FUSE_INIT). `capable` are the INIT flags the client offered and the
   * session supports; return the subset this file system wants (default: all of them).
   */
  init?(capable: bigint): bigint;
  /** The session ends (FUSE_DESTROY, a new INIT, or the front end going away): forget every node. */
  destroy?(): void;
  /** Looks `name` up in directory `parent`; +1 lookup count. */
  lookup?(ctx: Context, parent: bigint, name: Uint8Array): Entry;
  /** Drops `nlookup` from the node's lookup count; at 0 the node may be released. No reply. */
  forget?(ctx: Context, nodeid: bigint, nlookup: bigint): void;
  /** Several FORGETs at once (default: `forget` for each). No reply. */
  batchForget?(ctx: Context, items: readonly ForgetOne[]): void;
  /** The node's attributes; `fh` is set when the guest asks through an open handle. */
  getattr?(ctx: Context, nodeid: bigint, fh: bigint | undefined): AttrReply;
  /** Changes what `set.valid` names; returns the attributes after the change. */
  setattr?(ctx: Context, nodeid: bigint, set: Readonly<SetattrIn>): AttrReply;
  /** A symlink's target. */
  readlink?(ctx: Context, nodeid: bigint): Uint8Array;
  /** Creates symlink `name` → `target` in `parent`. */
  symlink?(ctx: Context, parent: bigint, name: Uint8Array, target: Uint8Array): Entry;
  /** Creates a file, device, fifo or socket node. */
  mknod?(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    mode: number,
    rdev: number,
    umask: number,
  ): Entry;
  /** Creates a directory. */
  mkdir?(ctx: Context, parent: bigint, name: Uint8Array, mode: number, umask: number): Entry;
  /** Removes a non-directory. */
  unlink?(ctx: Context, parent: bigint, name: Uint8Array): void;
  /** Removes an empty directory. */
  rmdir?(ctx: Context, parent: bigint, name: Uint8Array): void;
  /** Renames; `flags` are RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT (0 for RENAME). */
  rename?(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    newParent: bigint,
    newName: Uint8Array,
    flags: number,
  ): void;
  /** A new hard link `newName` in `newParent` to `nodeid`. */
  link?(ctx: Context, nodeid: bigint, newParent: bigint, newName: Uint8Array): Entry;
  /** Opens a file; `flags` are the guest's open(2) flags. */
  open?(ctx: Context, nodeid: bigint, flags: number, openFlags: number): OpenReply;
  /** Reads up to `size` bytes at `offset` into `dst`; returns the count (short only at EOF). */
  read?(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    size: number,
    dst: ReadDestination,
  ): number;
  /**
   * Writes `src` at `offset`; returns the count written. With the writeback cache
   * (`FUSE_WRITE_CACHE` in `writeFlags`) the fh may be any of the node's handles.
   */
  write?(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    src: WriteSource,
    writeFlags: number,
  ): number;
  /** close(2) of one descriptor of the open file. */
  flush?(ctx: Context, nodeid: bigint, fh: bigint, lockOwner: bigint): void;
  /** The last reference to the open file is gone: release `fh`. */
  release?(ctx: Context, nodeid: bigint, fh: bigint, flags: number): void;
  /** fsync(2) (or fdatasync(2) when `datasync`). */
  fsync?(ctx: Context, nodeid: bigint, fh: bigint, datasync: boolean): void;
  /** Sets extended attribute `name`. */
  setxattr?(ctx: Context, nodeid: bigint, name: Uint8Array, value: Uint8Array, flags: number): void;
  /**
   * Extended attribute `name`: its value, or (when `size` is 0) just its length. A value longer
   * than `size` is ERANGE.
   */
  getxattr?(ctx: Context, nodeid: bigint, name: Uint8Array, size: number): Uint8Array | number;
  /** The NUL-separated attribute names, or (when `size` is 0) their total length. */
  listxattr?(ctx: Context, nodeid: bigint, size: number): Uint8Array | number;
  /** Removes extended attribute `name`. */
  removexattr?(ctx: Context, nodeid: bigint, name: Uint8Array): void;
  /** Opens a directory for reading. */
  opendir?(ctx: Context, nodeid: bigint, flags: number): OpenReply;
  /** Lists entries from `offset` (0: the start, else a cookie given to `add`). */
  readdir?(ctx: Context, nodeid: bigint, fh: bigint, offset: bigint, sink: DirentSink): void;
  /** Lists entries with their attributes (each a lookup). */
  readdirplus?(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    sink: DirentPlusSink,
  ): void;
  /** Releases a directory handle. */
  releasedir?(ctx: Context, nodeid: bigint, fh: bigint): void;
  /** fsync(2) of a directory. */
  fsyncdir?(ctx: Context, nodeid: bigint, fh: bigint, datasync: boolean): void;
  /** access(2): may the caller do `mask` (R_OK, W_OK, X_OK; 0: exists)? */
  access?(ctx: Context, nodeid: bigint, mask: number): void;
  /** Creates and opens a file. */
  create?(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    mode: number,
    flags: number,
    umask: number,
  ): CreateReply;
  /** fallocate(2). */
  fallocate?(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    length: bigint,
    mode: number,
  ): void;
  /** lseek(2) with SEEK_DATA / SEEK_HOLE (and SEEK_SET/CUR/END); returns the new offset. */
  lseek?(ctx: Context, nodeid: bigint, fh: bigint, offset: bigint, whence: number): bigint;
  /** copy_file_range(2) between two open files; returns the bytes copied. */
  copyFileRange?(
    ctx: Context,
    nodeidIn: bigint,
    fhIn: bigint,
    offsetIn: bigint,
    nodeidOut: bigint,
    fhOut: bigint,
    offsetOut: bigint,
    length: number,
    flags: number,
  ): number;
  /** syncfs(2) of the file system holding `nodeid`. */
  syncfs?(ctx: Context, nodeid: bigint): void;
  /** An unnamed file in directory `parent` (O_TMPFILE), opened. */
  tmpfile?(ctx: Context, parent: bigint, mode: number, flags: number, umask: number): CreateReply;
  /** File system statistics for the file system holding `nodeid`. */
  statfs?(ctx: Context, nodeid: bigint): StatFs;
}
