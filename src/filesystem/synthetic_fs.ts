/**
 * `SyntheticFs`: read-only files whose contents a function computes, laid over any other
 * `FileSystem` at paths from its root ("status", "proc/info"). The files, and the read-only
 * directories their paths need (synthetic too: a wrapped directory of the same name is hidden,
 * not merged), appear in LOOKUP and GETATTR, and the root's READDIR(PLUS) lists ".", "..", the
 * synthetic names, then the wrapped file system's names (those the synthetic ones cover left
 * out). Contents are computed at OPEN (and, by default, at LOOKUP and GETATTR, for the size) and
 * stay what that handle reads until RELEASE; the files are opened direct-I/O so the guest never
 * trusts a stale size. Every change to them is EROFS; every other call goes to the wrapped file
 * system unchanged (its replies, sync or async, are passed on as they are).
 *
 * Synthetic nodeids and handles are taken from the top of the u64 range (at and above
 * 0xFFFF_FFFF_0000_0000), and the root's READDIR cookies of ".", ".." and the synthetic names
 * just above 0x7FFF_FFFF_FF00_0000: the wrapped file system must not hand those out (ext4's
 * hash cookies stay clear of them but for a chance of about one in 2^39 per entry).
 *
 * @module
 */
import { Errno, ErrnoError } from "../ffi/errno.ts";
import {
  DT_DIR,
  DT_REG,
  O_ACCMODE,
  O_EXCL,
  O_TRUNC,
  RENAME_NOREPLACE,
  S_IFDIR,
  S_IFMT,
  S_IFREG,
  SEEK_DATA,
  SEEK_END,
  SEEK_HOLE,
  SEEK_SET,
  W_OK,
} from "../ffi/constants.ts";
import { FOPEN_DIRECT_IO, FUSE_ROOT_ID } from "../wire/fuse.ts";
import type {
  Attr,
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

/**
 * A synthetic file's contents, computed for the caller `ctx` (a string is sent as UTF-8). It may
 * be async; an `ErrnoError` it throws reaches the guest, any other error is EIO.
 */
export type SyntheticContent = (ctx: Context) => MaybePromise<Uint8Array | string>;

/** Synthetic files by path from the root ("status", "dir/file"); directories are implied. */
export type SyntheticFiles = Record<string, SyntheticContent>;

/** Options of {@linkcode SyntheticFs}. */
export interface SyntheticFsOptions {
  /**
   * Compute a file's contents at LOOKUP and GETATTR too, so that `stat` shows its size (default
   * true). When false, the size shown is that of the contents last computed (0 before the
   * first OPEN); reads are not bounded by it either way (the files are opened direct-I/O).
   */
  sizeOnStat?: boolean;
  /** Owner of the synthetic nodes (default 0). */
  uid?: number;
  /** Group of the synthetic nodes (default 0). */
  gid?: number;
  /** Permission bits of the synthetic files (default 0o444; write bits are dropped). */
  fileMode?: number;
  /** Seconds the guest may cache a synthetic name (default 1; their attributes: never). */
  timeout?: number;
}

/** The first synthetic nodeid, fh and root READDIR cookie. */
const SYNTHETIC_BASE = 0xffff_ffff_0000_0000n;
/**
 * The root's READDIR cookies: `COOKIE_BASE + 1` and up. Positive as a 64-bit off_t (the guest's
 * kernel keeps them in its signed file position), and below 0x7FFF_FFFF_FFFF_FFFF, the cookie
 * ext4 gives a directory's last entry.
 */
const COOKIE_BASE = 0x7fff_ffff_ff00_0000n;
/** The most synthetic handles open at once (more: ENFILE). */
const HANDLE_LIMIT = 1 << 20;
/** The most hidden-only rounds of the wrapped listing in one READDIR of the root. */
const HIDDEN_ROUNDS = 1024;
const encoder = new TextEncoder();
const DOT = new Uint8Array([0x2e]);
const DOTDOT = new Uint8Array([0x2e, 0x2e]);

function fail(errno: number, call: string, detail?: string): never {
  throw new ErrnoError(errno, call, detail);
}

function erofs(call: string): never {
  throw new ErrnoError(Errno.EROFS, call, "a synthetic file");
}

function keyOf(name: Uint8Array): string {
  return name.length > 255 ? "" : String.fromCharCode(...name);
}

/** `f(value)` now, or when `value` (a Promise) settles. */
function then<T, U>(value: MaybePromise<T>, f: (v: T) => MaybePromise<U>): MaybePromise<U> {
  return value instanceof Promise ? value.then(f) : f(value);
}

function nowTimes(a: Attr): void {
  const ms = Date.now();
  a.atime = a.mtime = a.ctime = Math.floor(ms / 1000);
  a.atimeNsec = a.mtimeNsec = a.ctimeNsec = (ms % 1000) * 1_000_000;
}

/** A synthetic directory (the root's overlay has id 1 and no attributes of its own). */
class SynDir {
  readonly children = new Map<string, SynDir | SynFile>();
  /** Children in listing order. */
  readonly order: (SynDir | SynFile)[] = [];
  constructor(
    readonly id: bigint,
    readonly name: Uint8Array,
    readonly parent: SynDir | undefined,
    readonly attr: Attr,
  ) {}
}

/** A synthetic file: its function and the contents it last computed. */
class SynFile {
  content: Uint8Array = new Uint8Array(0);
  constructor(
    readonly id: bigint,
    readonly name: Uint8Array,
    readonly parent: SynDir,
    readonly fn: SyntheticContent,
    readonly attr: Attr,
  ) {}
}

/** An open synthetic file or directory: a file's contents as computed at OPEN. */
interface SynHandle {
  node: SynDir | SynFile;
  content: Uint8Array;
}

/** Counts what the wrapped file system put in a listing, passing on the names not hidden. */
class Filter {
  added = 0;
  visible = 0;
  refused = false;
  lastOff = 0n;
  constructor(readonly hidden: Map<string, unknown>) {}

  /** A synthetic name, or "." or ".." (the merged listing gives those itself, first). */
  hides(name: Uint8Array): boolean {
    if (name[0] === 0x2e && (name.length === 1 || (name.length === 2 && name[1] === 0x2e))) {
      return true;
    }
    return this.hidden.has(keyOf(name));
  }
}

class FilterSink extends Filter implements DirentSink {
  constructor(hidden: Map<string, unknown>, readonly out: DirentSink) {
    super(hidden);
  }

  add(ino: bigint, offset: bigint, type: number, name: Uint8Array): boolean {
    if (!this.hides(name)) {
      if (!this.out.add(ino, offset, type, name)) {
        this.refused = true;
        return false;
      }
      this.visible++;
    }
    this.added++;
    this.lastOff = offset;
    return true;
  }
}

class FilterPlusSink extends Filter implements DirentPlusSink {
  constructor(
    hidden: Map<string, unknown>,
    readonly out: DirentPlusSink,
    readonly forget: (nodeid: bigint) => void,
  ) {
    super(hidden);
  }

  fits(nameLength: number): boolean {
    const ok = this.out.fits(nameLength);
    if (!ok) this.refused = true;
    return ok;
  }

  add(entry: Entry, offset: bigint, type: number, name: Uint8Array): void {
    if (this.hides(name)) {
      // The guest never sees it: give back the lookup the wrapped file system took.
      if (entry.nodeid !== 0n) this.forget(entry.nodeid);
    } else {
      this.out.add(entry, offset, type, name);
      this.visible++;
    }
    this.added++;
    this.lastOff = offset;
  }
}

/** Read-only synthetic files over another file system. */
export class SyntheticFs implements FileSystem {
  readonly #fs: FileSystem;
  /** The root's overlay: the top-level synthetic names. */
  readonly #top: SynDir;
  readonly #nodes = new Map<bigint, SynDir | SynFile>();
  readonly #handles = new Map<bigint, SynHandle>();
  readonly #sizeOnStat: boolean;
  readonly #timeout: number;
  #nextFh = SYNTHETIC_BASE;

  /**
   * Lays `files` over `fs`. Throws TypeError for a path with an empty, "." or ".." component,
   * a component longer than 255 bytes, or one that is both a file and a directory.
   */
  constructor(fs: FileSystem, files: SyntheticFiles, options: SyntheticFsOptions = {}) {
    this.#fs = fs;
    this.#sizeOnStat = options.sizeOnStat ?? true;
    this.#timeout = options.timeout ?? 1;
    const uid = options.uid ?? 0;
    const gid = options.gid ?? 0;
    const fileMode = S_IFREG | ((options.fileMode ?? 0o444) & 0o7555);
    let next = SYNTHETIC_BASE;
    const attrOf = (id: bigint, mode: number): Attr => {
      const a: Attr = {
        ino: id,
        size: 0,
        blocks: 0,
        atime: 0,
        atimeNsec: 0,
        mtime: 0,
        mtimeNsec: 0,
        ctime: 0,
        ctimeNsec: 0,
        mode,
        nlink: (mode & S_IFMT) === S_IFDIR ? 2 : 1,
        uid,
        gid,
        rdev: 0,
        blksize: 4096,
      };
      nowTimes(a);
      return a;
    };
    this.#top = new SynDir(FUSE_ROOT_ID, new Uint8Array(0), undefined, attrOf(FUSE_ROOT_ID, 0));
    for (const [path, fn] of Object.entries(files)) {
      const parts = path.split("/");
      let dir = this.#top;
      parts.forEach((part, i) => {
        const name = encoder.encode(part);
        if (name.length === 0 || part === "." || part === ".." || name.length > 255) {
          throw new TypeError(`Synthetic path "${path}": bad component "${part}"`);
        }
        if (name.includes(0)) throw new TypeError(`Synthetic path "${path}" holds NUL`);
        const key = keyOf(name);
        const existing = dir.children.get(key);
        const last = i === parts.length - 1;
        if (existing !== undefined) {
          if (last || existing instanceof SynFile) {
            throw new TypeError(`Synthetic path "${path}" is both a file and a directory`);
          }
          dir = existing;
          return;
        }
        const id = next++;
        let node: SynDir | SynFile;
        if (last) {
          node = new SynFile(id, name, dir, fn, attrOf(id, fileMode));
        } else {
          node = new SynDir(id, name, dir, attrOf(id, S_IFDIR | 0o555));
          dir.attr.nlink++;
        }
        dir.children.set(key, node);
        dir.order.push(node);
        this.#nodes.set(id, node);
        if (node instanceof SynDir) dir = node;
      });
    }
  }

  // ---------------------------------------------------------------- helpers

  /** The wrapped file system's method `k`, bound (ENOSYS when it has none). */
  #inner<K extends keyof FileSystem>(k: K): NonNullable<FileSystem[K]> {
    const m = this.#fs[k];
    if (m === undefined) fail(Errno.ENOSYS, k);
    return (m as (...args: unknown[]) => unknown).bind(this.#fs) as NonNullable<FileSystem[K]>;
  }

  /** The synthetic node `nodeid`, or undefined for one of the wrapped file system's. */
  #syn(nodeid: bigint): SynDir | SynFile | undefined {
    return nodeid >= SYNTHETIC_BASE ? this.#nodes.get(nodeid) : undefined;
  }

  /** Whether `nodeid` is in the synthetic range (ENOENT when it is not one handed out). */
  #isSyn(nodeid: bigint, call: string): boolean {
    if (nodeid < SYNTHETIC_BASE) return false;
    if (!this.#nodes.has(nodeid)) fail(Errno.ENOENT, call, `nodeid ${nodeid} is unknown`);
    return true;
  }

  /** The synthetic child `name` of directory `parent` (the root's overlay for nodeid 1). */
  #child(parent: bigint, name: Uint8Array): SynDir | SynFile | undefined {
    const dir = parent === FUSE_ROOT_ID ? this.#top : this.#nodes.get(parent);
    return dir instanceof SynDir ? dir.children.get(keyOf(name)) : undefined;
  }

  /** A call that makes a name in `parent`: EROFS in a synthetic directory, EEXIST over a name. */
  #checkNew(parent: bigint, name: Uint8Array, call: string): void {
    if (this.#isSyn(parent, call)) erofs(call);
    if (parent === FUSE_ROOT_ID && this.#top.children.has(keyOf(name))) {
      fail(Errno.EEXIST, call);
    }
  }

  /** A call that changes a name in `parent`: EROFS when it, or the name, is synthetic. */
  #checkChange(parent: bigint, name: Uint8Array, call: string): void {
    if (this.#isSyn(parent, call)) erofs(call);
    if (parent === FUSE_ROOT_ID && this.#top.children.has(keyOf(name))) erofs(call);
  }

  /** Computes `f`'s contents for `ctx`; its attributes follow (mtime moves when they change). */
  #compute(f: SynFile, ctx: Context): MaybePromise<Uint8Array> {
    return then(f.fn(ctx), (v) => {
      const bytes = typeof v === "string" ? encoder.encode(v) : v.slice();
      const old = f.content;
      // Unchanged contents are shared by the handles that read them.
      if (old.length === bytes.length && old.every((b, i) => b === bytes[i])) return old;
      nowTimes(f.attr);
      f.content = bytes;
      f.attr.size = bytes.length;
      return bytes;
    });
  }

  #attr(n: SynDir | SynFile): Attr {
    return { ...n.attr };
  }

  #entry(n: SynDir | SynFile): Entry {
    return {
      nodeid: n.id,
      generation: 0n,
      attr: this.#attr(n),
      entryTimeout: this.#timeout,
      attrTimeout: 0,
    };
  }

  /** The entry of `n`, a file's contents computed first when sizes are shown. */
  #entryOf(n: SynDir | SynFile, ctx: Context): MaybePromise<Entry> {
    if (n instanceof SynFile && this.#sizeOnStat) {
      return then(this.#compute(n, ctx), () => this.#entry(n));
    }
    return this.#entry(n);
  }

  #handle(fh: bigint, nodeid: bigint, dir: boolean, call: string): SynHandle {
    const h = this.#handles.get(fh);
    if (h === undefined || h.node.id !== nodeid || (h.node instanceof SynDir) !== dir) {
      fail(Errno.EBADF, call, `fh ${fh}`);
    }
    return h;
  }

  #newHandle(node: SynDir | SynFile, content: Uint8Array, openFlags: number): OpenReply {
    if (this.#handles.size >= HANDLE_LIMIT) fail(Errno.ENFILE, "open", "too many open handles");
    const fh = this.#nextFh++;
    this.#handles.set(fh, { node, content });
    return { fh, openFlags };
  }

  // ---------------------------------------------------------------- session

  init(capable: bigint): MaybePromise<bigint> {
    return this.#fs.init?.(capable) ?? capable;
  }

  destroy(): MaybePromise<void> {
    this.#handles.clear();
    return this.#fs.destroy?.();
  }

  // ---------------------------------------------------------------- nodes

  lookup(ctx: Context, parent: bigint, name: Uint8Array): MaybePromise<Entry> {
    const n = this.#syn(parent);
    if (n !== undefined) {
      if (n instanceof SynFile) fail(Errno.ENOTDIR, "lookup");
      if (name.length === 1 && name[0] === 0x2e) return this.#entry(n);
      if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) {
        const up = n.parent;
        if (up === undefined || up === this.#top) {
          return this.#inner("lookup")(ctx, FUSE_ROOT_ID, DOT);
        }
        return this.#entry(up);
      }
      const child = n.children.get(keyOf(name));
      if (child === undefined) fail(Errno.ENOENT, "lookup");
      return this.#entryOf(child, ctx);
    }
    if (this.#isSyn(parent, "lookup")) fail(Errno.ENOENT, "lookup");
    const child = parent === FUSE_ROOT_ID ? this.#top.children.get(keyOf(name)) : undefined;
    if (child !== undefined) return this.#entryOf(child, ctx);
    return this.#inner("lookup")(ctx, parent, name);
  }

  forget(ctx: Context, nodeid: bigint, nlookup: bigint): MaybePromise<void> {
    if (nodeid >= SYNTHETIC_BASE) return;
    return this.#fs.forget?.(ctx, nodeid, nlookup);
  }

  batchForget(ctx: Context, items: readonly ForgetOne[]): MaybePromise<void> {
    const inner = items.filter((f) => f.nodeid < SYNTHETIC_BASE);
    if (inner.length === 0) return;
    if (this.#fs.batchForget !== undefined) return this.#fs.batchForget(ctx, inner);
    const pending: Promise<void>[] = [];
    for (const f of inner) {
      const r = this.#fs.forget?.(ctx, f.nodeid, f.nlookup);
      if (r instanceof Promise) pending.push(r);
    }
    if (pending.length > 0) return Promise.all(pending).then(() => {});
  }

  getattr(ctx: Context, nodeid: bigint, fh: bigint | undefined): MaybePromise<AttrReply> {
    if (!this.#isSyn(nodeid, "getattr")) return this.#inner("getattr")(ctx, nodeid, fh);
    const n = this.#nodes.get(nodeid) as SynDir | SynFile;
    if (fh !== undefined) {
      const h = this.#handles.get(fh);
      if (h === undefined || h.node !== n) fail(Errno.EBADF, "getattr", `fh ${fh}`);
      return { attr: { ...this.#attr(n), size: h.content.length }, timeout: 0 };
    }
    if (n instanceof SynFile && this.#sizeOnStat) {
      return then(this.#compute(n, ctx), () => ({ attr: this.#attr(n), timeout: 0 }));
    }
    return { attr: this.#attr(n), timeout: 0 };
  }

  setattr(ctx: Context, nodeid: bigint, set: Readonly<SetattrIn>): MaybePromise<AttrReply> {
    if (this.#isSyn(nodeid, "setattr")) erofs("setattr");
    return this.#inner("setattr")(ctx, nodeid, set);
  }

  readlink(ctx: Context, nodeid: bigint): MaybePromise<Uint8Array> {
    if (this.#isSyn(nodeid, "readlink")) fail(Errno.EINVAL, "readlink", "not a symlink");
    return this.#inner("readlink")(ctx, nodeid);
  }

  symlink(ctx: Context, parent: bigint, name: Uint8Array, target: Uint8Array): MaybePromise<Entry> {
    this.#checkNew(parent, name, "symlink");
    return this.#inner("symlink")(ctx, parent, name, target);
  }

  mknod(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    mode: number,
    rdev: number,
    umask: number,
  ): MaybePromise<Entry> {
    this.#checkNew(parent, name, "mknod");
    return this.#inner("mknod")(ctx, parent, name, mode, rdev, umask);
  }

  mkdir(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    mode: number,
    umask: number,
  ): MaybePromise<Entry> {
    this.#checkNew(parent, name, "mkdir");
    return this.#inner("mkdir")(ctx, parent, name, mode, umask);
  }

  unlink(ctx: Context, parent: bigint, name: Uint8Array): MaybePromise<void> {
    this.#checkChange(parent, name, "unlink");
    return this.#inner("unlink")(ctx, parent, name);
  }

  rmdir(ctx: Context, parent: bigint, name: Uint8Array): MaybePromise<void> {
    this.#checkChange(parent, name, "rmdir");
    return this.#inner("rmdir")(ctx, parent, name);
  }

  rename(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    newParent: bigint,
    newName: Uint8Array,
    flags: number,
  ): MaybePromise<void> {
    this.#checkChange(parent, name, "rename");
    if (this.#isSyn(newParent, "rename")) erofs("rename");
    if (newParent === FUSE_ROOT_ID && this.#top.children.has(keyOf(newName))) {
      // RENAME_NOREPLACE: the name exists; otherwise it cannot be replaced.
      if ((flags & RENAME_NOREPLACE) !== 0) fail(Errno.EEXIST, "rename");
      erofs("rename");
    }
    return this.#inner("rename")(ctx, parent, name, newParent, newName, flags);
  }

  link(ctx: Context, nodeid: bigint, newParent: bigint, newName: Uint8Array): MaybePromise<Entry> {
    if (this.#isSyn(nodeid, "link")) erofs("link");
    this.#checkNew(newParent, newName, "link");
    return this.#inner("link")(ctx, nodeid, newParent, newName);
  }

  access(ctx: Context, nodeid: bigint, mask: number): MaybePromise<void> {
    if (!this.#isSyn(nodeid, "access")) return this.#inner("access")(ctx, nodeid, mask);
    if ((mask & W_OK) !== 0) erofs("access");
    const n = this.#nodes.get(nodeid) as SynDir | SynFile;
    const want = mask & 5;
    const mode = n.attr.mode;
    let bits = mode & 7;
    if (ctx.uid === 0) bits = 4 | ((mode & 0o111) !== 0 ? 1 : 0);
    else if (ctx.uid === n.attr.uid) bits = (mode >>> 6) & 7;
    else if (ctx.gid === n.attr.gid) bits = (mode >>> 3) & 7;
    if ((want & ~bits) !== 0) fail(Errno.EACCES, "access");
  }

  statfs(ctx: Context, nodeid: bigint): MaybePromise<StatFs> {
    const at = this.#isSyn(nodeid, "statfs") ? FUSE_ROOT_ID : nodeid;
    return this.#inner("statfs")(ctx, at);
  }

  syncfs(ctx: Context, nodeid: bigint): MaybePromise<void> {
    if (this.#isSyn(nodeid, "syncfs")) return;
    return this.#inner("syncfs")(ctx, nodeid);
  }

  // ---------------------------------------------------------------- files

  open(ctx: Context, nodeid: bigint, flags: number, openFlags: number): MaybePromise<OpenReply> {
    if (!this.#isSyn(nodeid, "open")) return this.#inner("open")(ctx, nodeid, flags, openFlags);
    const n = this.#nodes.get(nodeid) as SynDir | SynFile;
    if (n instanceof SynDir) fail(Errno.EISDIR, "open");
    if ((flags & O_ACCMODE) !== 0 || (flags & O_TRUNC) !== 0) erofs("open");
    // Direct I/O: reads reach the file system whatever size the guest last saw.
    return then(this.#compute(n, ctx), (content) => this.#newHandle(n, content, FOPEN_DIRECT_IO));
  }

  create(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    mode: number,
    flags: number,
    umask: number,
  ): MaybePromise<CreateReply> {
    if (this.#isSyn(parent, "create")) erofs("create");
    if (parent === FUSE_ROOT_ID && this.#top.children.has(keyOf(name))) {
      // open(O_CREAT) of an existing read-only file: EEXIST with O_EXCL, else EROFS.
      if ((flags & O_EXCL) !== 0) fail(Errno.EEXIST, "create");
      erofs("create");
    }
    return this.#inner("create")(ctx, parent, name, mode, flags, umask);
  }

  tmpfile(
    ctx: Context,
    parent: bigint,
    mode: number,
    flags: number,
    umask: number,
  ): MaybePromise<CreateReply> {
    if (this.#isSyn(parent, "tmpfile")) erofs("tmpfile");
    return this.#inner("tmpfile")(ctx, parent, mode, flags, umask);
  }

  read(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    size: number,
    dst: ReadDestination,
  ): MaybePromise<number> {
    if (!this.#isSyn(nodeid, "read")) {
      return this.#inner("read")(ctx, nodeid, fh, offset, size, dst);
    }
    const c = this.#handle(fh, nodeid, false, "read").content;
    if (offset >= BigInt(c.length)) return 0;
    const at = Number(offset);
    return dst.write(c.subarray(at, at + Math.min(size, dst.capacity)));
  }

  write(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    src: WriteSource,
    writeFlags: number,
  ): MaybePromise<number> {
    if (!this.#isSyn(nodeid, "write")) {
      return this.#inner("write")(ctx, nodeid, fh, offset, src, writeFlags);
    }
    this.#handle(fh, nodeid, false, "write");
    return erofs("write");
  }

  flush(ctx: Context, nodeid: bigint, fh: bigint, lockOwner: bigint): MaybePromise<void> {
    if (!this.#isSyn(nodeid, "flush")) return this.#inner("flush")(ctx, nodeid, fh, lockOwner);
    this.#handle(fh, nodeid, false, "flush");
  }

  release(ctx: Context, nodeid: bigint, fh: bigint, flags: number): MaybePromise<void> {
    if (!this.#isSyn(nodeid, "release")) return this.#inner("release")(ctx, nodeid, fh, flags);
    this.#handle(fh, nodeid, false, "release");
    this.#handles.delete(fh);
  }

  fsync(ctx: Context, nodeid: bigint, fh: bigint, datasync: boolean): MaybePromise<void> {
    if (!this.#isSyn(nodeid, "fsync")) return this.#inner("fsync")(ctx, nodeid, fh, datasync);
    this.#handle(fh, nodeid, false, "fsync");
  }

  fallocate(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    length: bigint,
    mode: number,
  ): MaybePromise<void> {
    if (!this.#isSyn(nodeid, "fallocate")) {
      return this.#inner("fallocate")(ctx, nodeid, fh, offset, length, mode);
    }
    this.#handle(fh, nodeid, false, "fallocate");
    erofs("fallocate");
  }

  lseek(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    whence: number,
  ): MaybePromise<bigint> {
    if (!this.#isSyn(nodeid, "lseek")) {
      return this.#inner("lseek")(ctx, nodeid, fh, offset, whence);
    }
    const size = BigInt(this.#handle(fh, nodeid, false, "lseek").content.length);
    const signed = BigInt.asIntN(64, offset);
    switch (whence) {
      case SEEK_SET:
        if (signed < 0n) fail(Errno.EINVAL, "lseek");
        return signed;
      case SEEK_END:
        if (size + signed < 0n) fail(Errno.EINVAL, "lseek");
        return size + signed;
      case SEEK_DATA: // all data, no holes
      case SEEK_HOLE: // the end
        if (offset >= size) fail(Errno.ENXIO, "lseek");
        return whence === SEEK_DATA ? offset : size;
    }
    return fail(Errno.EINVAL, "lseek", `whence ${whence}`);
  }

  copyFileRange(
    ctx: Context,
    nodeidIn: bigint,
    fhIn: bigint,
    offsetIn: bigint,
    nodeidOut: bigint,
    fhOut: bigint,
    offsetOut: bigint,
    length: number,
    flags: number,
  ): MaybePromise<number> {
    const synIn = this.#isSyn(nodeidIn, "copy_file_range");
    const synOut = this.#isSyn(nodeidOut, "copy_file_range");
    if (synOut) {
      this.#handle(fhOut, nodeidOut, false, "copy_file_range");
      erofs("copy_file_range");
    }
    if (synIn) {
      this.#handle(fhIn, nodeidIn, false, "copy_file_range");
      // Another "file system": the guest's kernel falls back to copying through its memory.
      fail(Errno.EXDEV, "copy_file_range");
    }
    return this.#inner("copyFileRange")(
      ctx,
      nodeidIn,
      fhIn,
      offsetIn,
      nodeidOut,
      fhOut,
      offsetOut,
      length,
      flags,
    );
  }

  // ---------------------------------------------------------------- extended attributes

  setxattr(
    ctx: Context,
    nodeid: bigint,
    name: Uint8Array,
    value: Uint8Array,
    flags: number,
  ): MaybePromise<void> {
    if (this.#isSyn(nodeid, "setxattr")) erofs("setxattr");
    return this.#inner("setxattr")(ctx, nodeid, name, value, flags);
  }

  getxattr(
    ctx: Context,
    nodeid: bigint,
    name: Uint8Array,
    size: number,
  ): MaybePromise<Uint8Array | number> {
    if (this.#isSyn(nodeid, "getxattr")) fail(Errno.ENODATA, "getxattr");
    return this.#inner("getxattr")(ctx, nodeid, name, size);
  }

  listxattr(ctx: Context, nodeid: bigint, size: number): MaybePromise<Uint8Array | number> {
    if (this.#isSyn(nodeid, "listxattr")) return size === 0 ? 0 : new Uint8Array(0);
    return this.#inner("listxattr")(ctx, nodeid, size);
  }

  removexattr(ctx: Context, nodeid: bigint, name: Uint8Array): MaybePromise<void> {
    if (this.#isSyn(nodeid, "removexattr")) erofs("removexattr");
    return this.#inner("removexattr")(ctx, nodeid, name);
  }

  // ---------------------------------------------------------------- directories

  opendir(ctx: Context, nodeid: bigint, flags: number): MaybePromise<OpenReply> {
    if (!this.#isSyn(nodeid, "opendir")) return this.#inner("opendir")(ctx, nodeid, flags);
    const n = this.#nodes.get(nodeid) as SynDir | SynFile;
    if (n instanceof SynFile) fail(Errno.ENOTDIR, "opendir");
    return this.#newHandle(n, new Uint8Array(0), 0);
  }

  releasedir(ctx: Context, nodeid: bigint, fh: bigint): MaybePromise<void> {
    if (!this.#isSyn(nodeid, "releasedir")) return this.#inner("releasedir")(ctx, nodeid, fh);
    this.#handle(fh, nodeid, true, "releasedir");
    this.#handles.delete(fh);
  }

  fsyncdir(ctx: Context, nodeid: bigint, fh: bigint, datasync: boolean): MaybePromise<void> {
    if (!this.#isSyn(nodeid, "fsyncdir")) {
      return this.#inner("fsyncdir")(ctx, nodeid, fh, datasync);
    }
    this.#handle(fh, nodeid, true, "fsyncdir");
  }

  readdir(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    sink: DirentSink,
  ): MaybePromise<void> {
    if (this.#isSyn(nodeid, "readdir")) {
      const d = this.#handle(fh, nodeid, true, "readdir").node as SynDir;
      this.#listSyn(d, offset, (n, off, type, name) => sink.add(n.id, off, type, name));
      return;
    }
    const inner = this.#inner("readdir");
    if (nodeid !== FUSE_ROOT_ID || this.#top.order.length === 0) {
      return inner(ctx, nodeid, fh, offset, sink);
    }
    return this.#merged(
      ctx,
      offset,
      (off) => {
        const f = new FilterSink(this.#top.children, sink);
        return then(inner(ctx, nodeid, fh, off, f), () => f);
      },
      (first, root) =>
        this.#listTop(
          first,
          (n, off, type, name) => sink.add(n?.id ?? root?.ino ?? FUSE_ROOT_ID, off, type, name),
        ),
    );
  }

  readdirplus(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    sink: DirentPlusSink,
  ): MaybePromise<void> {
    const add = (e: Entry, off: bigint, type: number, name: Uint8Array): boolean => {
      if (!sink.fits(name.length)) return false;
      sink.add(e, off, type, name);
      return true;
    };
    /** An entry for `n`; "." and ".." have nodeid 0 (no lookup), as the interface asks. */
    const entryOf = (n: SynDir | SynFile, name: Uint8Array): Entry => {
      const e = this.#entry(n);
      if (name === DOT || name === DOTDOT) e.nodeid = 0n;
      return e;
    };
    if (this.#isSyn(nodeid, "readdirplus")) {
      const d = this.#handle(fh, nodeid, true, "readdirplus").node as SynDir;
      this.#listSyn(d, offset, (n, off, type, name) => add(entryOf(n, name), off, type, name));
      return;
    }
    const inner = this.#inner("readdirplus");
    if (nodeid !== FUSE_ROOT_ID || this.#top.order.length === 0) {
      return inner(ctx, nodeid, fh, offset, sink);
    }
    const forget = (id: bigint): void => {
      const r = this.#fs.forget?.(ctx, id, 1n);
      if (r instanceof Promise) r.catch(() => {});
    };
    return this.#merged(
      ctx,
      offset,
      (off) => {
        const f = new FilterPlusSink(this.#top.children, sink, forget);
        return then(inner(ctx, nodeid, fh, off, f), () => f);
      },
      (first, root) =>
        this.#listTop(first, (n, off, type, name) => {
          if (n !== undefined) return add(this.#entry(n), off, type, name);
          // "." and "..": the wrapped root's attributes, nodeid 0.
          const attr = root === undefined ? { ...this.#top.attr } : { ...root };
          return add({ ...this.#entry(this.#top), nodeid: 0n, attr }, off, type, name);
        }),
    );
  }

  /**
   * A listing of the root: first ".", ".." and the synthetic names (cookies COOKIE_BASE + 1
   * and up), then the wrapped file system's listing from its start, without its "." and ".."
   * and the names the synthetic ones hide. A wrapped round that added only hidden names goes
   * on from the last of them, so the guest never gets an empty reply before the end.
   */
  #merged(
    ctx: Context,
    offset: bigint,
    listInner: (off: bigint) => MaybePromise<Filter>,
    listTop: (first: number, root: Attr | undefined) => boolean,
  ): MaybePromise<void> {
    const round = (off: bigint, rounds: number): MaybePromise<void> =>
      then(listInner(off), (f) => {
        if (f.refused || f.added === 0 || f.visible > 0) return;
        if (rounds < HIDDEN_ROUNDS && f.lastOff !== off) return round(f.lastOff, rounds + 1);
      });
    const last = COOKIE_BASE + BigInt(this.#top.order.length + 2);
    let first: number;
    if (offset === 0n) first = 0;
    else if (offset > COOKIE_BASE && offset <= last) first = Number(offset - COOKIE_BASE);
    else return round(offset, 0);
    const go = (root: Attr | undefined): MaybePromise<void> =>
      listTop(first, root) ? round(0n, 0) : undefined;
    return first >= 2 ? go(undefined) : then(this.#rootAttr(ctx), go);
  }

  /** The wrapped root's attributes (for "." and ".." of its listing), if it gives them. */
  #rootAttr(ctx: Context): MaybePromise<Attr | undefined> {
    const getattr = this.#fs.getattr;
    if (getattr === undefined) return undefined;
    try {
      const r = getattr.call(this.#fs, ctx, FUSE_ROOT_ID, undefined);
      // A copy: the reply object may be reused by the wrapped file system's next call.
      return r instanceof Promise ? r.then((a) => ({ ...a.attr }), () => undefined) : { ...r.attr };
    } catch {
      return undefined;
    }
  }

  /**
   * The root's "." and ".." (`n` undefined) and synthetic entries from index `first` (entry i
   * resumes at COOKIE_BASE + i + 1); false when the sink filled up.
   */
  #listTop(
    first: number,
    add: (n: SynDir | SynFile | undefined, off: bigint, type: number, name: Uint8Array) => boolean,
  ): boolean {
    const order = this.#top.order;
    for (let i = first; i < order.length + 2; i++) {
      const off = COOKIE_BASE + BigInt(i + 1);
      const n = order[i - 2];
      const ok = n === undefined
        ? add(undefined, off, DT_DIR, i === 0 ? DOT : DOTDOT)
        : add(n, off, SyntheticFs.#dtype(n), n.name);
      if (!ok) return false;
    }
    return true;
  }

  /** A synthetic directory's listing: "." (cookie 1), ".." (2), then child i at i + 3. */
  #listSyn(
    d: SynDir,
    offset: bigint,
    add: (n: SynDir | SynFile, off: bigint, type: number, name: Uint8Array) => boolean,
  ): void {
    if (offset < 1n && !add(d, 1n, DT_DIR, DOT)) return;
    // The parent of a top-level directory is the wrapped root (shown with inode number 1).
    const up = d.parent === undefined || d.parent === this.#top ? this.#top : d.parent;
    if (offset < 2n && !add(up, 2n, DT_DIR, DOTDOT)) return;
    const start = offset < 2n ? 0 : Number(offset - 2n);
    for (let i = start; i < d.order.length; i++) {
      const n = d.order[i] as SynDir | SynFile;
      if (!add(n, BigInt(i + 3), SyntheticFs.#dtype(n), n.name)) return;
    }
  }

  static #dtype(n: SynDir | SynFile): number {
    return n instanceof SynDir ? DT_DIR : DT_REG;
  }
}
