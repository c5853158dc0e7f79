/**
 * `ReadOnlyFs`: any FileSystem served read-only. Every change (SETATTR, the calls that create,
 * remove or rename a node, WRITE, FALLOCATE, COPY_FILE_RANGE, SETXATTR, REMOVEXATTR) and every
 * OPEN that could change the file (write access or O_TRUNC) fails with EROFS, as on a read-only
 * mount; so does ACCESS for W_OK. The writeback cache is never taken. Everything else goes to
 * the wrapped file system unchanged, and what it lacks stays ENOSYS.
 *
 * @module
 */
import { Errno, ErrnoError, O_ACCMODE, O_TRUNC, W_OK } from "../ffi/mod.ts";
import type {
  AttrReply,
  Context,
  CreateReply,
  DirentPlusSink,
  DirentSink,
  Entry,
  FileSystem,
  ForgetOne,
  MaybePromise,
  OpenReply,
  ReadDestination,
  SetattrIn,
  StatFs,
  WriteSource,
} from "./filesystem.ts";
import { FUSE_WRITEBACK_CACHE } from "../wire/fuse.ts";

function erofs(call: string): never {
  throw new ErrnoError(Errno.EROFS, call, "read-only file system");
}

function enosys(call: string): never {
  throw new ErrnoError(Errno.ENOSYS, call);
}

/** Wraps a FileSystem so that nothing changes through it. */
export class ReadOnlyFs implements FileSystem {
  readonly #fs: FileSystem;

  /** Serves `fs` read-only. */
  constructor(fs: FileSystem) {
    this.#fs = fs;
  }

  init(capable: bigint): MaybePromise<bigint> {
    const wanted = this.#fs.init?.(capable) ?? capable;
    return wanted instanceof Promise
      ? wanted.then((w) => w & ~FUSE_WRITEBACK_CACHE)
      : wanted & ~FUSE_WRITEBACK_CACHE;
  }

  destroy(): MaybePromise<void> {
    return this.#fs.destroy?.();
  }

  lookup(ctx: Context, parent: bigint, name: Uint8Array): MaybePromise<Entry> {
    return this.#fs.lookup?.(ctx, parent, name) ?? enosys("lookup");
  }

  forget(ctx: Context, nodeid: bigint, nlookup: bigint): MaybePromise<void> {
    return this.#fs.forget?.(ctx, nodeid, nlookup);
  }

  batchForget(ctx: Context, items: readonly ForgetOne[]): MaybePromise<void> {
    if (this.#fs.batchForget !== undefined) return this.#fs.batchForget(ctx, items);
    for (const f of items) this.#fs.forget?.(ctx, f.nodeid, f.nlookup);
  }

  getattr(ctx: Context, nodeid: bigint, fh: bigint | undefined): MaybePromise<AttrReply> {
    return this.#fs.getattr?.(ctx, nodeid, fh) ?? enosys("getattr");
  }

  setattr(_ctx: Context, _nodeid: bigint, _set: Readonly<SetattrIn>): MaybePromise<AttrReply> {
    return erofs("setattr");
  }

  readlink(ctx: Context, nodeid: bigint): MaybePromise<Uint8Array> {
    return this.#fs.readlink?.(ctx, nodeid) ?? enosys("readlink");
  }

  symlink(
    _ctx: Context,
    _parent: bigint,
    _name: Uint8Array,
    _target: Uint8Array,
  ): MaybePromise<Entry> {
    return erofs("symlink");
  }

  mknod(
    _ctx: Context,
    _parent: bigint,
    _name: Uint8Array,
    _mode: number,
    _rdev: number,
    _umask: number,
  ): MaybePromise<Entry> {
    return erofs("mknod");
  }

  mkdir(
    _ctx: Context,
    _parent: bigint,
    _name: Uint8Array,
    _mode: number,
    _umask: number,
  ): MaybePromise<Entry> {
    return erofs("mkdir");
  }

  unlink(_ctx: Context, _parent: bigint, _name: Uint8Array): MaybePromise<void> {
    erofs("unlink");
  }

  rmdir(_ctx: Context, _parent: bigint, _name: Uint8Array): MaybePromise<void> {
    erofs("rmdir");
  }

  rename(
    _ctx: Context,
    _parent: bigint,
    _name: Uint8Array,
    _newParent: bigint,
    _newName: Uint8Array,
    _flags: number,
  ): MaybePromise<void> {
    erofs("rename");
  }

  link(
    _ctx: Context,
    _nodeid: bigint,
    _newParent: bigint,
    _newName: Uint8Array,
  ): MaybePromise<Entry> {
    return erofs("link");
  }

  open(ctx: Context, nodeid: bigint, flags: number, openFlags: number): MaybePromise<OpenReply> {
    if ((flags & O_ACCMODE) !== 0 || (flags & O_TRUNC) !== 0) erofs("open");
    return this.#fs.open?.(ctx, nodeid, flags, openFlags) ?? enosys("open");
  }

  read(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    size: number,
    dst: ReadDestination,
  ): MaybePromise<number> {
    return this.#fs.read?.(ctx, nodeid, fh, offset, size, dst) ?? enosys("read");
  }

  write(
    _ctx: Context,
    _nodeid: bigint,
    _fh: bigint,
    _offset: bigint,
    _src: WriteSource,
    _writeFlags: number,
  ): MaybePromise<number> {
    return erofs("write");
  }

  flush(ctx: Context, nodeid: bigint, fh: bigint, lockOwner: bigint): MaybePromise<void> {
    if (this.#fs.flush === undefined) enosys("flush");
    return this.#fs.flush(ctx, nodeid, fh, lockOwner);
  }

  release(ctx: Context, nodeid: bigint, fh: bigint, flags: number): MaybePromise<void> {
    if (this.#fs.release === undefined) enosys("release");
    return this.#fs.release(ctx, nodeid, fh, flags);
  }

  fsync(ctx: Context, nodeid: bigint, fh: bigint, datasync: boolean): MaybePromise<void> {
    if (this.#fs.fsync === undefined) enosys("fsync");
    return this.#fs.fsync(ctx, nodeid, fh, datasync);
  }

  setxattr(
    _ctx: Context,
    _nodeid: bigint,
    _name: Uint8Array,
    _value: Uint8Array,
    _flags: number,
  ): MaybePromise<void> {
    if (this.#fs.setxattr === undefined) enosys("setxattr");
    erofs("setxattr");
  }

  getxattr(
    ctx: Context,
    nodeid: bigint,
    name: Uint8Array,
    size: number,
  ): MaybePromise<Uint8Array | number> {
    return this.#fs.getxattr?.(ctx, nodeid, name, size) ?? enosys("getxattr");
  }

  listxattr(ctx: Context, nodeid: bigint, size: number): MaybePromise<Uint8Array | number> {
    return this.#fs.listxattr?.(ctx, nodeid, size) ?? enosys("listxattr");
  }

  removexattr(_ctx: Context, _nodeid: bigint, _name: Uint8Array): MaybePromise<void> {
    if (this.#fs.removexattr === undefined) enosys("removexattr");
    erofs("removexattr");
  }

  opendir(ctx: Context, nodeid: bigint, flags: number): MaybePromise<OpenReply> {
    return this.#fs.opendir?.(ctx, nodeid, flags) ?? enosys("opendir");
  }

  readdir(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    sink: DirentSink,
  ): MaybePromise<void> {
    if (this.#fs.readdir === undefined) enosys("readdir");
    return this.#fs.readdir(ctx, nodeid, fh, offset, sink);
  }

  readdirplus(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    sink: DirentPlusSink,
  ): MaybePromise<void> {
    if (this.#fs.readdirplus === undefined) enosys("readdirplus");
    return this.#fs.readdirplus(ctx, nodeid, fh, offset, sink);
  }

  releasedir(ctx: Context, nodeid: bigint, fh: bigint): MaybePromise<void> {
    if (this.#fs.releasedir === undefined) enosys("releasedir");
    return this.#fs.releasedir(ctx, nodeid, fh);
  }

  fsyncdir(ctx: Context, nodeid: bigint, fh: bigint, datasync: boolean): MaybePromise<void> {
    if (this.#fs.fsyncdir === undefined) enosys("fsyncdir");
    return this.#fs.fsyncdir(ctx, nodeid, fh, datasync);
  }

  access(ctx: Context, nodeid: bigint, mask: number): MaybePromise<void> {
    if (this.#fs.access === undefined) enosys("access");
    if ((mask & W_OK) !== 0) erofs("access");
    return this.#fs.access(ctx, nodeid, mask);
  }

  create(
    _ctx: Context,
    _parent: bigint,
    _name: Uint8Array,
    _mode: number,
    _flags: number,
    _umask: number,
  ): MaybePromise<CreateReply> {
    return erofs("create");
  }

  fallocate(
    _ctx: Context,
    _nodeid: bigint,
    _fh: bigint,
    _offset: bigint,
    _length: bigint,
    _mode: number,
  ): MaybePromise<void> {
    erofs("fallocate");
  }

  lseek(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    whence: number,
  ): MaybePromise<bigint> {
    return this.#fs.lseek?.(ctx, nodeid, fh, offset, whence) ?? enosys("lseek");
  }

  copyFileRange(
    _ctx: Context,
    _nodeidIn: bigint,
    _fhIn: bigint,
    _offsetIn: bigint,
    _nodeidOut: bigint,
    _fhOut: bigint,
    _offsetOut: bigint,
    _length: number,
    _flags: number,
  ): MaybePromise<number> {
    return erofs("copy_file_range");
  }

  syncfs(ctx: Context, nodeid: bigint): MaybePromise<void> {
    if (this.#fs.syncfs === undefined) enosys("syncfs");
    return this.#fs.syncfs(ctx, nodeid);
  }

  tmpfile(
    _ctx: Context,
    _parent: bigint,
    _mode: number,
    _flags: number,
    _umask: number,
  ): MaybePromise<CreateReply> {
    return erofs("tmpfile");
  }

  statfs(ctx: Context, nodeid: bigint): MaybePromise<StatFs> {
    return this.#fs.statfs?.(ctx, nodeid) ?? enosys("statfs");
  }
}
