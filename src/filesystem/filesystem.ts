/**
 * The `FileSystem` interface: what the FUSE session asks of a file system, one method per FUSE
 * operation. Implement it to serve your own file system to a VM; `PassthroughFs` serves a host
 * directory. The session knows nothing of host paths, and a file system knows nothing of queues.
 *
 See {@linkcode FileSystem} for the contract every method follows.
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
  /** `fuse_attr.flags` (FUSE_ATTR_SUBMOUNT); absent: 0. */
  flags?: number;
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
   * bytes read (fewer only at end of file); throws `ErrnoError` when preadv fails, or EIO when
   * the request has ended (its queue was reset while an async method awaited).
   */
  preadv(fd: number, offset: bigint, size: number): number;
  /** Copies `data` (a file system producing bytes in JS). Returns the bytes copied. */
  write(data: Uint8Array): number;
}

/** Where WRITE data comes from: the request's device-readable guest memory. */
export interface WriteSource {
  /** The bytes the guest wrote. */
  readonly size: number;
  /**
   * `pwritev(fd, ..., offset)` straight from guest memory. Returns the bytes written; throws
   * `ErrnoError` when pwritev fails (EIO when the request has ended).
   */
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

/** A method's result: the value, or a Promise of it (an async file system). */
export type MaybePromise<T> = T | Promise<T>;

/**
 * A file system the device serves: one method per FUSE operation, each optional.
 *
 * The contract, for every method:
 * - **Sync or async.** A method returns its reply, or a Promise of it. While a Promise is
 *   pending the device serves other requests (up to 64 pending at once; more wait in the
 *   queue). A reply that settles after the guest reset its queues or the front end went away
 *   is dropped, and the `ReadDestination` / `WriteSource` of that request refuse every call
 *   (EIO): nothing is written into guest memory that may have been reused.
 * - **Errors.** Throw (or reject with) `ErrnoError` and its errno reaches the guest unchanged;
 *   any other exception is answered EIO and logged. A method the file system does not have is
 *   answered ENOSYS.
 * - **Untrusted ids.** Every nodeid and fh comes from the guest: check that it is one you
 *   handed out (answer ENOENT or EBADF otherwise). Names are bytes without "/" or NUL, already
 *   checked against the request's length.
 * - **Object reuse.** Arguments (`Context`, names, `SetattrIn`, sinks) belong to the request:
 *   they stay valid until its reply, also across an `await`, and are reused afterwards, so keep
 *   a copy of anything you need later. Returned objects are copied into the reply when the
 *   method returns (or its Promise settles), so one object may be reused for every reply.
 *
 * @example A directory holding one read-only file (`examples/hello_fs.ts`)
 * ```ts ignore
 * // A file system written in TypeScript, served to a VM: a directory holding one read-only file.
 * //   deno run -A examples/hello_fs.ts /tmp/hello.sock   (guest: mount -t virtiofs TAG /mnt)
 * import * as vfs from "./mod.ts";
 * import type { Context, DirentSink, FileSystem, ReadDestination } from "./mod.ts";
 *
 * const text = new TextEncoder().encode("Hello from TypeScript!\n");
 * const name = new TextEncoder().encode("hello");
 * const root = vfs.attr({ ino: 1n, mode: vfs.S_IFDIR | 0o755 });
 * const hello = vfs.attr({ ino: 2n, mode: vfs.S_IFREG | 0o444, size: text.length });
 * const enoent = () => new vfs.ErrnoError(vfs.Errno.ENOENT);
 *
 * class HelloFs implements FileSystem {
 *   lookup(_ctx: Context, parent: bigint, n: Uint8Array) {
 *     if (parent !== 1n || n.length !== name.length || !n.every((b, i) => b === name[i])) {
 *       throw enoent();
 *     }
 *     return vfs.entry(2n, hello);
 *   }
 *   getattr(_ctx: Context, nodeid: bigint) {
 *     if (nodeid !== 1n && nodeid !== 2n) throw enoent();
 *     return { attr: nodeid === 1n ? root : hello, timeout: 1 };
 *   }
 *   open(_ctx: Context, nodeid: bigint) {
 *     if (nodeid !== 2n) throw enoent();
 *     return { fh: 0n, openFlags: 0 };
 *   }
 *   read(_c: Context, _n: bigint, _fh: bigint, offset: bigint, size: number, dst: ReadDestination) {
 *     return dst.write(text.subarray(Number(offset), Number(offset) + size));
 *   }
 *   opendir = (_ctx: Context, nodeid: bigint) => ({ fh: nodeid, openFlags: 0 });
 *   readdir(_c: Context, _n: bigint, _fh: bigint, offset: bigint, sink: DirentSink) {
 *     if (offset === 0n) sink.add(2n, 1n, vfs.DT_REG, name);
 *   }
 * }
 *
 * const daemon = await vfs.serve({
 *   socketPath: Deno.args[0] ?? "/tmp/hello.sock",
 *   fileSystem: new HelloFs(),
 * });
 * await daemon.exited;
 * ```
 */
export interface FileSystem {
  /**
   * The session starts (FUSE_INIT). `capable` are the INIT flags the client offered and the
   * session supports; return the subset this file system wants. Without `init`, all of them
   * but those that change what the file system must do: FUSE_WRITEBACK_CACHE,
   * FUSE_DIRECT_IO_ALLOW_MMAP and FUSE_HANDLE_KILLPRIV_V2 (return it only if you clear setuid
   * and setgid on FUSE_WRITE_KILL_SUIDGID, FATTR_KILL_SUIDGID and FUSE_OPEN_KILL_SUIDGID).
   */
  init?(capable: bigint): MaybePromise<bigint>;
  /**
   * The session ends (FUSE_DESTROY, a new INIT, or the front end going away): forget every
   * node. A Promise returned here is not waited for.
   */
  destroy?(): MaybePromise<void>;
  /** Looks `name` up in directory `parent`; +1 lookup count. */
  lookup?(ctx: Context, parent: bigint, name: Uint8Array): MaybePromise<Entry>;
  /**
   * Drops `nlookup` from the node's lookup count; at 0 the node may be released. No reply (a
   * Promise is not waited for; its rejection is logged).
   */
  forget?(ctx: Context, nodeid: bigint, nlookup: bigint): MaybePromise<void>;
  /** Several FORGETs at once (default: `forget` for each). No reply. */
  batchForget?(ctx: Context, items: readonly ForgetOne[]): MaybePromise<void>;
  /** The node's attributes; `fh` is set when the guest asks through an open handle. */
  getattr?(ctx: Context, nodeid: bigint, fh: bigint | undefined): MaybePromise<AttrReply>;
  /** Changes what `set.valid` names; returns the attributes after the change. */
  setattr?(ctx: Context, nodeid: bigint, set: Readonly<SetattrIn>): MaybePromise<AttrReply>;
  /** A symlink's target. */
  readlink?(ctx: Context, nodeid: bigint): MaybePromise<Uint8Array>;
  /** Creates symlink `name` → `target` in `parent`. */
  symlink?(ctx: Context, parent: bigint, name: Uint8Array, target: Uint8Array): MaybePromise<Entry>;
  /** Creates a file, device, fifo or socket node. */
  mknod?(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    mode: number,
    rdev: number,
    umask: number,
  ): MaybePromise<Entry>;
  /** Creates a directory. */
  mkdir?(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    mode: number,
    umask: number,
  ): MaybePromise<Entry>;
  /** Removes a non-directory. */
  unlink?(ctx: Context, parent: bigint, name: Uint8Array): MaybePromise<void>;
  /** Removes an empty directory. */
  rmdir?(ctx: Context, parent: bigint, name: Uint8Array): MaybePromise<void>;
  /** Renames; `flags` are RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT (0 for RENAME). */
  rename?(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    newParent: bigint,
    newName: Uint8Array,
    flags: number,
  ): MaybePromise<void>;
  /** A new hard link `newName` in `newParent` to `nodeid`. */
  link?(ctx: Context, nodeid: bigint, newParent: bigint, newName: Uint8Array): MaybePromise<Entry>;
  /** Opens a file; `flags` are the guest's open(2) flags. */
  open?(ctx: Context, nodeid: bigint, flags: number, openFlags: number): MaybePromise<OpenReply>;
  /** Reads up to `size` bytes at `offset` into `dst`; returns the count (short only at EOF). */
  read?(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    size: number,
    dst: ReadDestination,
  ): MaybePromise<number>;
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
  ): MaybePromise<number>;
  /** close(2) of one descriptor of the open file. */
  flush?(ctx: Context, nodeid: bigint, fh: bigint, lockOwner: bigint): MaybePromise<void>;
  /** The last reference to the open file is gone: release `fh`. */
  release?(ctx: Context, nodeid: bigint, fh: bigint, flags: number): MaybePromise<void>;
  /** fsync(2) (or fdatasync(2) when `datasync`). */
  fsync?(ctx: Context, nodeid: bigint, fh: bigint, datasync: boolean): MaybePromise<void>;
  /** Sets extended attribute `name`. */
  setxattr?(
    ctx: Context,
    nodeid: bigint,
    name: Uint8Array,
    value: Uint8Array,
    flags: number,
  ): MaybePromise<void>;
  /**
   * Extended attribute `name`: its value, or (when `size` is 0) just its length. A value longer
   * than `size` is ERANGE.
   */
  getxattr?(
    ctx: Context,
    nodeid: bigint,
    name: Uint8Array,
    size: number,
  ): MaybePromise<Uint8Array | number>;
  /** The NUL-separated attribute names, or (when `size` is 0) their total length. */
  listxattr?(ctx: Context, nodeid: bigint, size: number): MaybePromise<Uint8Array | number>;
  /** Removes extended attribute `name`. */
  removexattr?(ctx: Context, nodeid: bigint, name: Uint8Array): MaybePromise<void>;
  /** Opens a directory for reading. */
  opendir?(ctx: Context, nodeid: bigint, flags: number): MaybePromise<OpenReply>;
  /** Lists entries from `offset` (0: the start, else a cookie given to `add`). */
  readdir?(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    sink: DirentSink,
  ): MaybePromise<void>;
  /** Lists entries with their attributes (each a lookup). */
  readdirplus?(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    sink: DirentPlusSink,
  ): MaybePromise<void>;
  /** Releases a directory handle. */
  releasedir?(ctx: Context, nodeid: bigint, fh: bigint): MaybePromise<void>;
  /** fsync(2) of a directory. */
  fsyncdir?(ctx: Context, nodeid: bigint, fh: bigint, datasync: boolean): MaybePromise<void>;
  /** access(2): MaybePromise<may the caller do `mask` (R_OK, W_OK, X_OK>; 0: exists)? */
  access?(ctx: Context, nodeid: bigint, mask: number): MaybePromise<void>;
  /** Creates and opens a file. */
  create?(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    mode: number,
    flags: number,
    umask: number,
  ): MaybePromise<CreateReply>;
  /** fallocate(2). */
  fallocate?(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    length: bigint,
    mode: number,
  ): MaybePromise<void>;
  /** lseek(2) with SEEK_DATA / SEEK_HOLE (and SEEK_SET/CUR/END); returns the new offset. */
  lseek?(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    whence: number,
  ): MaybePromise<bigint>;
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
  ): MaybePromise<number>;
  /** syncfs(2) of the file system holding `nodeid`. */
  syncfs?(ctx: Context, nodeid: bigint): MaybePromise<void>;
  /** An unnamed file in directory `parent` (O_TMPFILE), opened. */
  tmpfile?(
    ctx: Context,
    parent: bigint,
    mode: number,
    flags: number,
    umask: number,
  ): MaybePromise<CreateReply>;
  /** File system statistics for the file system holding `nodeid`. */
  statfs?(ctx: Context, nodeid: bigint): MaybePromise<StatFs>;
  /**
   * DAX (FUSE_SETUPMAPPING): a descriptor of regular file `nodeid` for the front end to map into
   * the guest's cache window, and the file's size now. It must be open O_RDWR even when the guest
   * asks a read-only mapping, because QEMU maps every range read-write; so a file this file
   * system would only open read-only (a read-only share, a running executable: ETXTBSY) must be
   * refused with an errno instead. `fh` is the handle the guest named, or undefined when it named
   * none (Linux names the file by nodeid). The caller owns the descriptor and closes it. Without
   * this method the guest gets ENOSYS and no mapping.
   */
  mappable?(ctx: Context, nodeid: bigint, fh: bigint | undefined): MaybePromise<MappableFile>;
}

/** What `FileSystem.mappable` returns. */
export interface MappableFile {
  /** An O_RDWR descriptor of the file (the caller's to close). */
  fd: number;
  /** The file's size in bytes: the front end cannot map past it. */
  size: bigint;
}
