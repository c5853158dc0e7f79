/**
 * `MemoryFs`: a whole POSIX file system held in the daemon's memory, served as a `FileSystem`.
 * Directories, regular files (sparse: data lives in 64 KiB chunks allocated when first written,
 * and which 4 KiB pages of a chunk hold data is kept, so that `st_blocks`, SEEK_DATA / SEEK_HOLE
 * and punched holes are page by page, as on tmpfs),
 * symlinks, device, FIFO and socket nodes, hard links, extended attributes, timestamps with
 * nanoseconds, owners and permission bits. Everything is bounded: total bytes (`maxBytes`) and
 * inodes (`maxNodes`), as tmpfs bounds them, so a guest cannot take the host's memory.
 *
 * Linux mounts virtio-fs with `default_permissions`: the guest's kernel checks permission bits
 * itself, so the calls here never refuse for lack of permission (ACCESS aside); they keep mode,
 * owner and times as a local file system does, and every nodeid and fh from the guest is checked.
 *
 * Nodes are released when they have no name, no lookup the guest holds (FORGET) and no open
 * handle; nodeids count up from 2 and are never reused, so generation is always 0. A session's
 * end (`destroy`) drops every lookup and handle, but the tree stays: a guest that reboots and
 * mounts again finds its files.
 *
 * @module
 */
import { Errno, ErrnoError } from "../ffi/errno.ts";
import {
  F_OK,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  O_ACCMODE,
  O_APPEND,
  O_EXCL,
  O_RDONLY,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  RENAME_WHITEOUT,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  S_ISGID,
  S_ISUID,
  S_IXGRP,
  SEEK_DATA,
  SEEK_END,
  SEEK_HOLE,
  SEEK_SET,
  XATTR_CREATE,
  XATTR_REPLACE,
} from "../ffi/constants.ts";
import {
  FATTR_ATIME,
  FATTR_ATIME_NOW,
  FATTR_FH,
  FATTR_GID,
  FATTR_KILL_SUIDGID,
  FATTR_MODE,
  FATTR_MTIME,
  FATTR_MTIME_NOW,
  FATTR_SIZE,
  FATTR_UID,
  FUSE_OPEN_KILL_SUIDGID,
  FUSE_ROOT_ID,
  FUSE_WRITE_CACHE,
  FUSE_WRITE_KILL_SUIDGID,
  FUSE_WRITEBACK_CACHE,
} from "../wire/fuse.ts";
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
  OpenReply,
  ReadDestination,
  SetattrIn,
  StatFs,
  WriteSource,
} from "./filesystem.ts";

/** Options of {@linkcode MemoryFs}. */
export interface MemoryFsOptions {
  /**
   * The most bytes the file system holds: file data (in 64 KiB chunks), symlink targets and
   * extended attributes (default 1 GiB). A write that needs more is ENOSPC (or short).
   */
  maxBytes?: number;
  /**
   * The most inodes (default `maxBytes / 4096`, at least 1024). As in tmpfs, every name beyond
   * a node's first (a hard link) takes one too. Creating more is ENOSPC.
   */
  maxNodes?: number;
  /** How long the guest may cache names and attributes, in seconds (default 1). */
  timeout?: number;
  /** The root directory's permission bits (default 0o755). */
  rootMode?: number;
  /** The root directory's owner (default 0). */
  rootUid?: number;
  /** The root directory's group (default 0). */
  rootGid?: number;
}

/** What a {@linkcode MemoryFs} holds now, and its limits. */
export interface MemoryFsUsage {
  /** Bytes in use: allocated chunks, symlink targets, extended attributes. */
  bytes: number;
  /** The limit on `bytes`. */
  maxBytes: number;
  /** Inodes in use (nodes, and hard links beyond each node's first name). */
  inodes: number;
  /** The limit on `inodes`. */
  maxNodes: number;
  /** Nodes alive (the root included): named, looked up or open. */
  nodes: number;
  /** Open file and directory handles. */
  handles: number;
}

/** Bytes per data chunk: the unit of allocation (and of `maxBytes`). */
const CHUNK = 64 * 1024;
/**
 * Bytes per page: the unit of `blocks`, of SEEK_DATA / SEEK_HOLE and of punched holes, as on
 * tmpfs (a page of a chunk holds data once written or allocated; punched, it is a hole again).
 */
const PAGE = 4096;
/** 512-byte blocks per page. */
const PAGE_BLOCKS = PAGE / 512;
/** The page mask of a chunk whose pages all hold data. */
const ALL_PAGES = (1 << (CHUNK / PAGE)) - 1;
/** The largest file (4 PiB: every offset and size stays an exact JS number). */
const FILE_SIZE_LIMIT = 2 ** 52;
/** The largest offset the guest may name (off_t). */
const I64_MAX = (1n << 63n) - 1n;
/** The longest name. */
const NAME_LIMIT = 255;
/** The longest symlink target (PATH_MAX without its NUL). */
const TARGET_LIMIT = 4095;
/** The largest extended attribute value (XATTR_SIZE_MAX), and the longest list of names. */
const XATTR_VALUE_LIMIT = 65536;
/** The most links one node may have. */
const LINK_LIMIT = 0xffff_fff0;
/** The most open handles at once (more: ENFILE). */
const HANDLE_LIMIT = 1 << 20;
/** The block size statfs reports. */
const STATFS_BLOCK = 4096;
const ZEROS = new Uint8Array(CHUNK);
const DOT = new Uint8Array([0x2e]);
const DOTDOT = new Uint8Array([0x2e, 0x2e]);
const CAPABILITY = "security.capability";
const XATTR_PREFIXES = ["user.", "trusted.", "security."];
/** A missing name (the commonest error, thrown without a new stack each time). */
const LOOKUP_ENOENT = new ErrnoError(Errno.ENOENT, "lookup");
const RENAME_FLAGS = RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT;
const FALLOC_FLAGS = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;

/** 64 KiB of a file's data. */
interface Chunk {
  readonly bytes: Uint8Array;
  /** Bit i: page i holds data. A page that does not reads as zeros (its bytes are zero). */
  pages: number;
}

/** The page mask of the pages of a chunk that its bytes `[from, to)` touch (`from < to`). */
function pagesTouched(from: number, to: number): number {
  const first = Math.floor(from / PAGE);
  const last = Math.floor((to - 1) / PAGE);
  return ((2 << last) - 1) & ~((1 << first) - 1);
}

/** The page mask of the pages of a chunk wholly inside its bytes `[from, to)`. */
function pagesInside(from: number, to: number): number {
  const first = Math.ceil(from / PAGE);
  const end = Math.floor(to / PAGE);
  return end <= first ? 0 : ((1 << end) - 1) & ~((1 << first) - 1);
}

/** The number of bits set in a page mask. */
function pageCount(mask: number): number {
  let m = mask - ((mask >>> 1) & 0x5555);
  m = (m & 0x3333) + ((m >>> 2) & 0x3333);
  m = (m + (m >>> 4)) & 0x0f0f;
  return (m + (m >>> 8)) & 0x1f;
}

/** The index of the lowest bit set in a non-zero page mask. */
function firstPage(mask: number): number {
  return 31 - Math.clz32(mask & -mask);
}

/** One extended attribute. */
interface Xattr {
  name: Uint8Array;
  value: Uint8Array;
}

/** An inode. */
class Node {
  readonly id: bigint;
  mode: number;
  uid: number;
  gid: number;
  rdev = 0;
  nlink = 1;
  /** Lookups the guest holds (FORGET subtracts). */
  lookups = 0;
  /** Open handles. */
  opens = 0;
  atime = 0;
  atimeNsec = 0;
  mtime = 0;
  mtimeNsec = 0;
  ctime = 0;
  ctimeNsec = 0;
  /** Regular file: its size, its allocated chunks by index, and how many pages hold data. */
  size = 0;
  chunks: Map<number, Chunk> | undefined;
  pages = 0;
  /** Directory: its entries, and its parent (the root's is itself). */
  dir: Directory | undefined;
  parent: Node | undefined;
  /** Symlink: its target. */
  target: Uint8Array | undefined;
  xattrs: Map<string, Xattr> | undefined;
  /** Bytes of the xattr name list (each name and its NUL). */
  xattrListLength = 0;
  /** An O_TMPFILE file made without O_EXCL: it may get a name (LINK) while it has none. */
  linkable = false;

  constructor(id: bigint, mode: number, uid: number, gid: number) {
    this.id = id;
    this.mode = mode;
    this.uid = uid;
    this.gid = gid;
  }

  get type(): number {
    return this.mode & S_IFMT;
  }

  get isDir(): boolean {
    return (this.mode & S_IFMT) === S_IFDIR;
  }
}

/** One name in a directory; `cookie` (its READDIR offset) never changes while it exists. */
class DirEntry {
  removed = false;
  constructor(
    readonly key: string,
    readonly name: Uint8Array,
    public node: Node,
    readonly cookie: number,
  ) {}
}

/**
 * A directory's names. Each new name takes the next cookie, and the listing order is cookie
 * order, so a listing resumed at any cookie returns exactly the names added after it or still
 * there from after it: an entry that exists throughout is neither skipped nor repeated.
 */
class Directory {
  readonly byName = new Map<string, DirEntry>();
  /** Entries in cookie order; removed ones stay (marked) until compaction. */
  order: DirEntry[] = [];
  #removed = 0;
  /** 1 and 2 are "." and "..". */
  #next = 3;

  get size(): number {
    return this.byName.size;
  }

  add(key: string, name: Uint8Array, node: Node): DirEntry {
    const e = new DirEntry(key, name, node, this.#next++);
    this.byName.set(key, e);
    this.order.push(e);
    return e;
  }

  remove(e: DirEntry): void {
    this.byName.delete(e.key);
    e.removed = true;
    if (++this.#removed > 64 && this.#removed * 2 > this.order.length) {
      this.order = this.order.filter((x) => !x.removed);
      this.#removed = 0;
    }
  }

  /** The index in `order` of the first entry whose cookie is above `cookie`. */
  after(cookie: number): number {
    let lo = 0;
    let hi = this.order.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.order[mid] as DirEntry).cookie <= cookie) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** An open file or directory. */
interface Handle {
  readonly node: Node;
  readonly dir: boolean;
  readonly readable: boolean;
  readonly writable: boolean;
  readonly append: boolean;
}

function fail(errno: number, call: string, detail?: string): never {
  throw new ErrnoError(errno, call, detail);
}

/** A name's bytes as a string key (one char per byte). */
function keyOf(name: Uint8Array): string {
  return String.fromCharCode(...name);
}

/** 0: a normal name; 1: "."; 2: "..". */
function dots(name: Uint8Array): 0 | 1 | 2 {
  if (name[0] !== 0x2e) return 0;
  if (name.length === 1) return 1;
  return name.length === 2 && name[1] === 0x2e ? 2 : 0;
}

/** Checks one path component: EINVAL when empty or holding "/" or NUL, ENAMETOOLONG when long. */
function checkName(name: Uint8Array, call: string): void {
  if (name.length === 0) fail(Errno.EINVAL, call, "empty name");
  if (name.length > NAME_LIMIT) fail(Errno.ENAMETOOLONG, call);
  for (let i = 0; i < name.length; i++) {
    const b = name[i];
    if (b === 0 || b === 0x2f) fail(Errno.EINVAL, call, "name holds '/' or NUL");
  }
}

/** `d_type` of a mode (DT_* is the S_IF* type shifted down). */
function dtype(mode: number): number {
  return (mode & S_IFMT) >>> 12;
}

/** The guest's u64 offset as a number, EINVAL past off_t. */
function offsetOf(offset: bigint, call: string): number {
  if (offset > I64_MAX) fail(Errno.EINVAL, call, "offset past 2^63");
  return Number(offset);
}

/** A file system in memory. */
export class MemoryFs implements FileSystem {
  readonly #nodes = new Map<bigint, Node>();
  readonly #handles = new Map<bigint, Handle>();
  readonly #root: Node;
  readonly #maxBytes: number;
  readonly #maxNodes: number;
  readonly #timeout: number;
  #nextId = 2n;
  #nextFh = 1n;
  #bytes = 0;
  #inodes = 1;
  #scratch = new Uint8Array(0);
  #sec = 0;
  #nsec = 0;

  /** An empty file system: the root directory alone. */
  constructor(options: MemoryFsOptions = {}) {
    const maxBytes = options.maxBytes ?? 1024 * 1024 * 1024;
    if (!(maxBytes >= 0) || !Number.isSafeInteger(maxBytes)) {
      throw new RangeError(`maxBytes must be a non-negative integer, not ${maxBytes}`);
    }
    const maxNodes = options.maxNodes ?? Math.max(1024, Math.floor(maxBytes / 4096));
    if (!(maxNodes >= 1) || !Number.isSafeInteger(maxNodes)) {
      throw new RangeError(`maxNodes must be a positive integer, not ${maxNodes}`);
    }
    this.#maxBytes = maxBytes;
    this.#maxNodes = maxNodes;
    this.#timeout = options.timeout ?? 1;
    const root = new Node(
      FUSE_ROOT_ID,
      S_IFDIR | ((options.rootMode ?? 0o755) & 0o7777),
      options.rootUid ?? 0,
      options.rootGid ?? 0,
    );
    root.nlink = 2;
    root.dir = new Directory();
    root.parent = root;
    this.#stampAll(root);
    this.#root = root;
    this.#nodes.set(root.id, root);
  }

  /** What the file system holds now, and its limits. */
  get usage(): MemoryFsUsage {
    return {
      bytes: this.#bytes,
      maxBytes: this.#maxBytes,
      inodes: this.#inodes,
      maxNodes: this.#maxNodes,
      nodes: this.#nodes.size,
      handles: this.#handles.size,
    };
  }

  // ---------------------------------------------------------------- time

  /** Sets `#sec`/`#nsec` to now; each call returns a later time than the one before. */
  #now(): void {
    const ms = performance.timeOrigin + performance.now();
    let sec = Math.floor(ms / 1000);
    let nsec = Math.floor((ms - sec * 1000) * 1e6);
    if (nsec > 999_999_999) nsec = 999_999_999;
    if (sec < this.#sec || (sec === this.#sec && nsec <= this.#nsec)) {
      sec = this.#sec;
      nsec = this.#nsec + 1;
      if (nsec > 999_999_999) {
        sec++;
        nsec = 0;
      }
    }
    this.#sec = sec;
    this.#nsec = nsec;
  }

  #stampAll(n: Node): void {
    this.#now();
    n.atime = n.mtime = n.ctime = this.#sec;
    n.atimeNsec = n.mtimeNsec = n.ctimeNsec = this.#nsec;
  }

  /** ctime = now (the inode changed). */
  #changed(n: Node): void {
    this.#now();
    n.ctime = this.#sec;
    n.ctimeNsec = this.#nsec;
  }

  /** mtime = ctime = now (the contents changed). */
  #modified(n: Node): void {
    this.#now();
    n.mtime = n.ctime = this.#sec;
    n.mtimeNsec = n.ctimeNsec = this.#nsec;
  }

  /** relatime: atime = now when it is not after mtime or ctime, or is a day old. */
  #accessed(n: Node): void {
    const a = n.atime;
    const an = n.atimeNsec;
    const stale = a < n.mtime || (a === n.mtime && an <= n.mtimeNsec) || a < n.ctime ||
      (a === n.ctime && an <= n.ctimeNsec) || Date.now() / 1000 - a >= 86400;
    if (!stale) return;
    this.#now();
    n.atime = this.#sec;
    n.atimeNsec = this.#nsec;
  }

  // ---------------------------------------------------------------- replies

  #attr(n: Node): Attr {
    let size = n.size;
    if (n.dir !== undefined) size = (n.dir.size + 2) * 20;
    else if (n.target !== undefined) size = n.target.length;
    return {
      ino: n.id,
      size,
      blocks: n.pages * PAGE_BLOCKS,
      atime: n.atime,
      atimeNsec: n.atimeNsec,
      mtime: n.mtime,
      mtimeNsec: n.mtimeNsec,
      ctime: n.ctime,
      ctimeNsec: n.ctimeNsec,
      mode: n.mode,
      nlink: n.nlink,
      uid: n.uid,
      gid: n.gid,
      rdev: n.rdev,
      blksize: CHUNK,
    };
  }

  /** The lookup reply for `n`: +1 lookup. */
  #entry(n: Node): Entry {
    n.lookups++;
    return {
      nodeid: n.id,
      generation: 0n,
      attr: this.#attr(n),
      entryTimeout: this.#timeout,
      attrTimeout: this.#timeout,
    };
  }

  #attrReply(n: Node): AttrReply {
    return { attr: this.#attr(n), timeout: this.#timeout };
  }

  // ---------------------------------------------------------------- lookups of ids

  #node(nodeid: bigint, call: string): Node {
    const n = this.#nodes.get(nodeid);
    if (n === undefined) fail(Errno.ENOENT, call, `nodeid ${nodeid} is unknown`);
    return n;
  }

  /** Directory `nodeid` (ENOTDIR for another node). */
  #dir(nodeid: bigint, call: string): Node & { dir: Directory; parent: Node } {
    const n = this.#node(nodeid, call);
    if (n.dir === undefined) fail(Errno.ENOTDIR, call);
    return n as Node & { dir: Directory; parent: Node };
  }

  /** A directory that may get new names: not removed (ENOENT). */
  #liveDir(nodeid: bigint, call: string): Node & { dir: Directory; parent: Node } {
    const d = this.#dir(nodeid, call);
    if (d.nlink === 0) fail(Errno.ENOENT, call, "directory removed");
    return d;
  }

  #handle(fh: bigint, nodeid: bigint, dir: boolean, call: string): Handle {
    const h = this.#handles.get(fh);
    if (h === undefined || h.node.id !== nodeid || h.dir !== dir) {
      fail(Errno.EBADF, call, `fh ${fh} is not an open ${dir ? "directory" : "file"}`);
    }
    return h;
  }

  /** A name that must not exist yet in `d` (`dotErrno` for "." and ".."): its key. */
  #freeName(d: Node & { dir: Directory }, name: Uint8Array, call: string, dotErrno: number) {
    checkName(name, call);
    if (dots(name) !== 0) fail(dotErrno, call, "name is '.' or '..'");
    const key = keyOf(name);
    if (d.dir.byName.has(key)) fail(Errno.EEXIST, call);
    return key;
  }

  // ---------------------------------------------------------------- accounting

  /** Takes `n` bytes (ENOSPC when they are not there). */
  #charge(n: number, call: string): void {
    if (this.#bytes + n > this.#maxBytes) fail(Errno.ENOSPC, call, "maxBytes reached");
    this.#bytes += n;
  }

  /** Takes one inode (ENOSPC). */
  #takeInode(call: string): void {
    if (this.#inodes >= this.#maxNodes) fail(Errno.ENOSPC, call, "maxNodes reached");
    this.#inodes++;
  }

  /**
   * Chunk `idx` of `n`, allocated (zeroed, no page holding data) when absent; undefined when no
   * room is left. The caller marks the pages it fills (`#mark`).
   */
  #chunk(n: Node, idx: number): Chunk | undefined {
    const chunks = n.chunks ??= new Map();
    let c = chunks.get(idx);
    if (c === undefined) {
      if (this.#bytes + CHUNK > this.#maxBytes) return undefined;
      this.#bytes += CHUNK;
      c = { bytes: new Uint8Array(CHUNK), pages: 0 };
      chunks.set(idx, c);
    }
    return c;
  }

  /** The pages `mask` of chunk `c` of `n` hold data now. */
  static #mark(n: Node, c: Chunk, mask: number): void {
    const added = mask & ~c.pages;
    if (added === 0) return;
    c.pages |= added;
    n.pages += pageCount(added);
  }

  /**
   * The pages `mask` of chunk `idx` of `n` are holes again (their bytes must be zero already);
   * a chunk left with no page of data goes.
   */
  #unmark(n: Node, idx: number, c: Chunk, mask: number): void {
    const gone = c.pages & mask;
    c.pages &= ~gone;
    n.pages -= pageCount(gone);
    if (c.pages === 0) {
      n.chunks?.delete(idx);
      this.#bytes -= CHUNK;
    }
  }

  #scratchOf(n: number): Uint8Array {
    if (this.#scratch.length < n) this.#scratch = new Uint8Array(Math.max(n, CHUNK));
    return this.#scratch.subarray(0, n);
  }

  /** Releases `n` when nothing holds it: no name, no lookup, no handle. */
  #release(n: Node): void {
    if (n.nlink > 0 || n.lookups > 0 || n.opens > 0 || n === this.#root) return;
    if (!this.#nodes.delete(n.id)) return;
    this.#inodes--;
    let bytes = (n.chunks?.size ?? 0) * CHUNK + (n.target?.length ?? 0);
    if (n.xattrs !== undefined) {
      for (const x of n.xattrs.values()) bytes += x.name.length + x.value.length;
    }
    this.#bytes -= bytes;
    n.chunks = undefined;
    n.pages = 0;
    n.xattrs = undefined;
  }

  /** A new node of `mode` for `ctx` in `parent` (its set-gid bit passes its group on). */
  #newNode(ctx: Context, parent: Node, mode: number, call: string): Node {
    this.#takeInode(call);
    let gid = ctx.gid;
    let m = mode;
    if ((parent.mode & S_ISGID) !== 0) {
      gid = parent.gid;
      if ((m & S_IFMT) === S_IFDIR) m |= S_ISGID;
    }
    const n = new Node(this.#nextId++, m, ctx.uid, gid);
    this.#stampAll(n);
    this.#nodes.set(n.id, n);
    return n;
  }

  /** Adds name `key` for `n` in `d`; the directory's mtime and ctime move. */
  #insert(d: Node & { dir: Directory }, key: string, name: Uint8Array, n: Node): void {
    d.dir.add(key, name.slice(), n);
    this.#modified(d);
  }

  /** `n` lost one name (unlink, rmdir, rename over it); `d` was the directory holding it. */
  #unnamed(n: Node, d: Node): void {
    if (n.isDir) {
      n.nlink = 0;
      d.nlink--;
    } else {
      if (n.nlink > 1) this.#inodes--;
      n.nlink--;
    }
    this.#changed(n);
    this.#release(n);
  }

  /** Clears set-uid, and set-gid when group-executable, and drops security.capability. */
  #killSuidgid(n: Node): void {
    let mode = n.mode & ~S_ISUID;
    if ((mode & S_IXGRP) !== 0) mode &= ~S_ISGID;
    n.mode = mode;
    const cap = n.xattrs?.get(CAPABILITY);
    if (cap !== undefined) this.#dropXattr(n, CAPABILITY, cap);
  }

  // ---------------------------------------------------------------- session

  /** Takes every flag offered but the writeback cache (the guest then keeps no dirty pages). */
  init(capable: bigint): bigint {
    return capable & ~FUSE_WRITEBACK_CACHE;
  }

  /** Forgets every lookup and closes every handle; nodes with no name go. The tree stays. */
  destroy(): void {
    this.#handles.clear();
    for (const n of this.#nodes.values()) {
      n.lookups = 0;
      n.opens = 0;
      this.#release(n);
    }
  }

  // ---------------------------------------------------------------- nodes

  lookup(_ctx: Context, parent: bigint, name: Uint8Array): Entry {
    const d = this.#dir(parent, "lookup");
    checkName(name, "lookup");
    switch (dots(name)) {
      case 1:
        return this.#entry(d);
      case 2:
        return this.#entry(d.parent);
    }
    const e = d.dir.byName.get(keyOf(name));
    if (e === undefined) throw LOOKUP_ENOENT;
    return this.#entry(e.node);
  }

  forget(_ctx: Context, nodeid: bigint, nlookup: bigint): void {
    const n = this.#nodes.get(nodeid);
    if (n === undefined || n === this.#root) return;
    const k = Number(nlookup);
    n.lookups = k >= n.lookups ? 0 : n.lookups - k;
    this.#release(n);
  }

  batchForget(ctx: Context, items: readonly ForgetOne[]): void {
    for (const f of items) this.forget(ctx, f.nodeid, f.nlookup);
  }

  getattr(_ctx: Context, nodeid: bigint, fh: bigint | undefined): AttrReply {
    const n = this.#node(nodeid, "getattr");
    if (fh !== undefined) {
      const h = this.#handles.get(fh);
      if (h === undefined || h.node !== n) fail(Errno.EBADF, "getattr", `fh ${fh}`);
    }
    return this.#attrReply(n);
  }

  setattr(_ctx: Context, nodeid: bigint, set: Readonly<SetattrIn>): AttrReply {
    const n = this.#node(nodeid, "setattr");
    const valid = set.valid;
    if ((valid & FATTR_FH) !== 0) {
      const h = this.#handles.get(set.fh);
      if (h === undefined || h.node !== n) fail(Errno.EBADF, "setattr", `fh ${set.fh}`);
    }
    // Every check before any change: a failed SETATTR changes nothing.
    if ((valid & FATTR_SIZE) !== 0) {
      if (n.isDir) fail(Errno.EISDIR, "truncate");
      if (n.type !== S_IFREG) fail(Errno.EINVAL, "truncate");
      // A size past off_t is a negative one to Linux (EINVAL), never wrapped.
      if (!(set.size >= 0 && set.size < 2 ** 63)) fail(Errno.EINVAL, "truncate");
      if (set.size > FILE_SIZE_LIMIT) fail(Errno.EFBIG, "truncate");
    }
    const changes = FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_SIZE | FATTR_ATIME | FATTR_MTIME |
      FATTR_ATIME_NOW | FATTR_MTIME_NOW | FATTR_KILL_SUIDGID;
    if ((valid & changes) === 0) return this.#attrReply(n);
    if ((valid & FATTR_MODE) !== 0) n.mode = (n.mode & S_IFMT) | (set.mode & 0o7777);
    if ((valid & (FATTR_UID | FATTR_GID)) !== 0) {
      if ((valid & FATTR_UID) !== 0) n.uid = set.uid;
      if ((valid & FATTR_GID) !== 0) n.gid = set.gid;
      // chown(2) clears set-uid and (group-executable) set-gid of a non-directory, unless the
      // same request sets the mode (the guest's kernel computed it).
      if (!n.isDir && (valid & FATTR_MODE) === 0) this.#killSuidgid(n);
    }
    if ((valid & FATTR_KILL_SUIDGID) !== 0 && !n.isDir) this.#killSuidgid(n);
    this.#now();
    const sec = this.#sec;
    const nsec = this.#nsec;
    if ((valid & FATTR_SIZE) !== 0 && this.#truncate(n, set.size)) {
      n.mtime = sec;
      n.mtimeNsec = nsec;
    }
    if ((valid & FATTR_ATIME_NOW) !== 0) {
      n.atime = sec;
      n.atimeNsec = nsec;
    } else if ((valid & FATTR_ATIME) !== 0) {
      n.atime = set.atime;
      n.atimeNsec = set.atimeNsec;
    }
    if ((valid & FATTR_MTIME_NOW) !== 0) {
      n.mtime = sec;
      n.mtimeNsec = nsec;
    } else if ((valid & FATTR_MTIME) !== 0) {
      n.mtime = set.mtime;
      n.mtimeNsec = set.mtimeNsec;
    }
    n.ctime = sec;
    n.ctimeNsec = nsec;
    return this.#attrReply(n);
  }

  /** Sets a regular file's size; pages past it go, the tail of the last is zeroed. */
  #truncate(n: Node, size: number): boolean {
    const old = n.size;
    const chunks = n.chunks;
    if (chunks !== undefined && size <= old) {
      // Chunks past the new end go, those allocated past the old one (KEEP_SIZE) too.
      for (const [idx, c] of chunks) {
        if (idx * CHUNK >= size) this.#unmark(n, idx, c, ALL_PAGES);
      }
      // Bytes past the end stay zero, so that a later extension reads zeros there; the pages
      // wholly past it are holes.
      const tail = size % CHUNK;
      const idx = Math.floor(size / CHUNK);
      const c = tail === 0 ? undefined : chunks.get(idx);
      if (c !== undefined) {
        c.bytes.fill(0, tail);
        this.#unmark(n, idx, c, pagesInside(tail, CHUNK));
      }
    }
    n.size = size;
    return size !== old;
  }

  readlink(_ctx: Context, nodeid: bigint): Uint8Array {
    const n = this.#node(nodeid, "readlink");
    if (n.target === undefined) fail(Errno.EINVAL, "readlink", "not a symlink");
    return n.target;
  }

  symlink(ctx: Context, parent: bigint, name: Uint8Array, target: Uint8Array): Entry {
    const d = this.#liveDir(parent, "symlink");
    const key = this.#freeName(d, name, "symlink", Errno.EEXIST);
    if (target.length === 0) fail(Errno.ENOENT, "symlink", "empty target");
    if (target.length > TARGET_LIMIT) fail(Errno.ENAMETOOLONG, "symlink");
    if (target.includes(0)) fail(Errno.EINVAL, "symlink", "target holds NUL");
    this.#charge(target.length, "symlink");
    let n: Node;
    try {
      n = this.#newNode(ctx, d, S_IFLNK | 0o777, "symlink");
    } catch (err) {
      this.#bytes -= target.length;
      throw err;
    }
    n.target = target.slice();
    this.#insert(d, key, name, n);
    return this.#entry(n);
  }

  mknod(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    mode: number,
    rdev: number,
    _umask: number,
  ): Entry {
    const d = this.#liveDir(parent, "mknod");
    const key = this.#freeName(d, name, "mknod", Errno.EEXIST);
    let type = mode & S_IFMT;
    if (type === 0) type = S_IFREG;
    if (
      type !== S_IFREG && type !== S_IFCHR && type !== S_IFBLK && type !== S_IFIFO &&
      type !== S_IFSOCK
    ) {
      fail(Errno.EINVAL, "mknod", "not a file, device, FIFO or socket");
    }
    // The guest's kernel applied the umask already (FUSE_DONT_MASK is not granted).
    const n = this.#newNode(ctx, d, type | (mode & 0o7777), "mknod");
    if (type === S_IFCHR || type === S_IFBLK) n.rdev = rdev >>> 0;
    this.#insert(d, key, name, n);
    return this.#entry(n);
  }

  mkdir(ctx: Context, parent: bigint, name: Uint8Array, mode: number, _umask: number): Entry {
    const d = this.#liveDir(parent, "mkdir");
    const key = this.#freeName(d, name, "mkdir", Errno.EEXIST);
    const n = this.#newNode(ctx, d, S_IFDIR | (mode & 0o7777), "mkdir");
    n.nlink = 2;
    n.dir = new Directory();
    n.parent = d;
    d.nlink++;
    this.#insert(d, key, name, n);
    return this.#entry(n);
  }

  unlink(_ctx: Context, parent: bigint, name: Uint8Array): void {
    const d = this.#dir(parent, "unlink");
    checkName(name, "unlink");
    if (dots(name) !== 0) fail(Errno.EISDIR, "unlink");
    const e = d.dir.byName.get(keyOf(name));
    if (e === undefined) fail(Errno.ENOENT, "unlink");
    if (e.node.isDir) fail(Errno.EISDIR, "unlink");
    d.dir.remove(e);
    this.#modified(d);
    this.#unnamed(e.node, d);
  }

  rmdir(_ctx: Context, parent: bigint, name: Uint8Array): void {
    const d = this.#dir(parent, "rmdir");
    checkName(name, "rmdir");
    const dd = dots(name);
    if (dd !== 0) fail(dd === 1 ? Errno.EINVAL : Errno.ENOTEMPTY, "rmdir");
    const e = d.dir.byName.get(keyOf(name));
    if (e === undefined) fail(Errno.ENOENT, "rmdir");
    const n = e.node;
    if (n.dir === undefined) fail(Errno.ENOTDIR, "rmdir");
    if (n.dir.size > 0) fail(Errno.ENOTEMPTY, "rmdir");
    d.dir.remove(e);
    this.#modified(d);
    this.#unnamed(n, d);
  }

  /** Whether `a` is `d` or one of its ancestors. */
  #isAncestor(a: Node, d: Node): boolean {
    for (let x = d;; x = x.parent as Node) {
      if (x === a) return true;
      if (x === this.#root || x.parent === undefined || x.parent === x) return false;
    }
  }

  rename(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    newParent: bigint,
    newName: Uint8Array,
    flags: number,
  ): void {
    const call = "rename";
    const pd = this.#dir(parent, call);
    const nd = this.#dir(newParent, call);
    if ((flags & ~RENAME_FLAGS) !== 0) fail(Errno.EINVAL, call, `flags ${flags}`);
    const exchange = (flags & RENAME_EXCHANGE) !== 0;
    if (exchange && (flags & (RENAME_NOREPLACE | RENAME_WHITEOUT)) !== 0) {
      fail(Errno.EINVAL, call, "RENAME_EXCHANGE with another flag");
    }
    checkName(name, call);
    checkName(newName, call);
    if (dots(name) !== 0) fail(Errno.EBUSY, call);
    if (dots(newName) !== 0) {
      fail((flags & RENAME_NOREPLACE) !== 0 ? Errno.EEXIST : Errno.EBUSY, call);
    }
    const se = pd.dir.byName.get(keyOf(name));
    if (se === undefined) fail(Errno.ENOENT, call);
    const newKey = keyOf(newName);
    const te = nd.dir.byName.get(newKey);
    const s = se.node;
    if (exchange) {
      if (te === undefined) fail(Errno.ENOENT, call);
      const t = te.node;
      if (s === t) return;
      if (s.isDir && this.#isAncestor(s, nd)) fail(Errno.EINVAL, call, "into itself");
      if (t.isDir && this.#isAncestor(t, pd)) fail(Errno.EINVAL, call, "into itself");
      se.node = t;
      te.node = s;
      if (pd !== nd) {
        if (s.isDir) {
          s.parent = nd;
          pd.nlink--;
          nd.nlink++;
        }
        if (t.isDir) {
          t.parent = pd;
          nd.nlink--;
          pd.nlink++;
        }
      }
      this.#changed(s);
      this.#changed(t);
      this.#modified(pd);
      this.#modified(nd);
      return;
    }
    if (te !== undefined && (flags & RENAME_NOREPLACE) !== 0) fail(Errno.EEXIST, call);
    if (nd.nlink === 0) fail(Errno.ENOENT, call, "target directory removed");
    if (s.isDir && this.#isAncestor(s, nd)) fail(Errno.EINVAL, call, "into itself");
    const t = te?.node;
    if (t === s) {
      // Two names of one file: POSIX says rename does nothing (and RENAME_WHITEOUT too).
      return;
    }
    if (t !== undefined) {
      if (s.isDir) {
        if (t.dir === undefined) fail(Errno.ENOTDIR, call);
        if (t.dir.size > 0) fail(Errno.ENOTEMPTY, call);
      } else if (t.isDir) {
        fail(Errno.EISDIR, call);
      }
    }
    const whiteout = (flags & RENAME_WHITEOUT) !== 0;
    if (whiteout) this.#takeInode(call);
    if (te !== undefined && t !== undefined) {
      // The target name stays, with its cookie: a listing in progress sees it once.
      te.node = s;
      pd.dir.remove(se);
      this.#unnamed(t, nd);
    } else {
      pd.dir.remove(se);
      nd.dir.add(newKey, newName.slice(), s);
    }
    if (s.isDir && pd !== nd) {
      s.parent = nd;
      pd.nlink--;
      nd.nlink++;
    }
    this.#changed(s);
    this.#modified(pd);
    if (nd !== pd) this.#modified(nd);
    if (whiteout) {
      // A 0/0 character device where the source was (overlayfs's whiteout).
      this.#inodes--;
      const w = this.#newNode(ctx, pd, S_IFCHR, call);
      pd.dir.add(keyOf(name), name.slice(), w);
    }
  }

  link(_ctx: Context, nodeid: bigint, newParent: bigint, newName: Uint8Array): Entry {
    const n = this.#node(nodeid, "link");
    const d = this.#liveDir(newParent, "link");
    const key = this.#freeName(d, newName, "link", Errno.EEXIST);
    if (n.isDir) fail(Errno.EPERM, "link", "a directory");
    if (n.nlink === 0 && !n.linkable) fail(Errno.ENOENT, "link", "the file has no name");
    if (n.nlink >= LINK_LIMIT) fail(Errno.EMLINK, "link");
    // As tmpfs: a name beyond the first takes an inode.
    if (n.nlink > 0) this.#takeInode("link");
    n.linkable = false;
    n.nlink++;
    this.#insert(d, key, newName, n);
    this.#changed(n);
    return this.#entry(n);
  }

  access(ctx: Context, nodeid: bigint, mask: number): void {
    const n = this.#node(nodeid, "access");
    const want = mask & 7;
    if (want === F_OK) return;
    if (ctx.uid === 0) {
      // root may read and write anything, and execute what anyone may (or search a directory).
      if ((want & 1) !== 0 && !n.isDir && (n.mode & 0o111) === 0) fail(Errno.EACCES, "access");
      return;
    }
    let bits = n.mode & 7;
    if (ctx.uid === n.uid) bits = (n.mode >>> 6) & 7;
    else if (ctx.gid === n.gid) bits = (n.mode >>> 3) & 7;
    if ((want & ~bits) !== 0) fail(Errno.EACCES, "access");
  }

  statfs(_ctx: Context, nodeid: bigint): StatFs {
    this.#node(nodeid, "statfs");
    const blocks = Math.floor(this.#maxBytes / STATFS_BLOCK);
    const free = Math.max(0, Math.floor((this.#maxBytes - this.#bytes) / STATFS_BLOCK));
    return {
      blocks,
      bfree: free,
      bavail: free,
      files: this.#maxNodes,
      ffree: Math.max(0, this.#maxNodes - this.#inodes),
      bsize: STATFS_BLOCK,
      namelen: NAME_LIMIT,
      frsize: STATFS_BLOCK,
    };
  }

  syncfs(_ctx: Context, nodeid: bigint): void {
    this.#node(nodeid, "syncfs");
  }

  // ---------------------------------------------------------------- files

  /** A new handle of `n` for open(2) `flags`. */
  #open(n: Node, dir: boolean, flags: number): OpenReply {
    if (this.#handles.size >= HANDLE_LIMIT) fail(Errno.ENFILE, "open", "too many open handles");
    const acc = flags & O_ACCMODE;
    const fh = this.#nextFh++;
    this.#handles.set(fh, {
      node: n,
      dir,
      readable: acc === O_RDONLY || acc === O_RDWR,
      writable: acc === O_WRONLY || acc === O_RDWR,
      append: (flags & O_APPEND) !== 0,
    });
    n.opens++;
    return { fh, openFlags: 0 };
  }

  /** OPEN of an existing node: a regular file (else EISDIR, ELOOP, EACCES, ENXIO). */
  #openFile(n: Node, flags: number, openFlags: number, call: string): OpenReply {
    switch (n.type) {
      case S_IFREG:
        break;
      case S_IFDIR:
        fail(Errno.EISDIR, call);
        break;
      case S_IFLNK:
        fail(Errno.ELOOP, call);
        break;
      case S_IFSOCK:
        fail(Errno.ENXIO, call);
        break;
      default:
        // Devices and FIFOs are opened by the guest's kernel itself, never here.
        fail(Errno.EACCES, call, "not a regular file");
    }
    const o = this.#open(n, false, flags);
    if ((flags & O_TRUNC) !== 0) {
      // O_TRUNC marks mtime and ctime even when the file was empty already.
      this.#truncate(n, 0);
      if ((openFlags & FUSE_OPEN_KILL_SUIDGID) !== 0) this.#killSuidgid(n);
      this.#modified(n);
    }
    return o;
  }

  open(_ctx: Context, nodeid: bigint, flags: number, openFlags: number): OpenReply {
    return this.#openFile(this.#node(nodeid, "open"), flags, openFlags, "open");
  }

  create(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    mode: number,
    flags: number,
    _umask: number,
  ): CreateReply {
    const d = this.#liveDir(parent, "create");
    checkName(name, "create");
    if (dots(name) !== 0) fail(Errno.EISDIR, "create");
    const key = keyOf(name);
    const existing = d.dir.byName.get(key);
    if (existing !== undefined) {
      if ((flags & O_EXCL) !== 0) fail(Errno.EEXIST, "create");
      const open = this.#openFile(existing.node, flags, 0, "create");
      return { entry: this.#entry(existing.node), open };
    }
    if (this.#handles.size >= HANDLE_LIMIT) fail(Errno.ENFILE, "create", "too many open handles");
    const n = this.#newNode(ctx, d, S_IFREG | (mode & 0o7777), "create");
    this.#insert(d, key, name, n);
    const open = this.#open(n, false, flags);
    return { entry: this.#entry(n), open };
  }

  tmpfile(ctx: Context, parent: bigint, mode: number, flags: number, _umask: number): CreateReply {
    const d = this.#liveDir(parent, "tmpfile");
    if (this.#handles.size >= HANDLE_LIMIT) fail(Errno.ENFILE, "tmpfile", "too many open handles");
    const n = this.#newNode(ctx, d, S_IFREG | (mode & 0o7777), "tmpfile");
    n.nlink = 0;
    n.linkable = (flags & O_EXCL) === 0;
    const open = this.#open(n, false, flags);
    return { entry: this.#entry(n), open };
  }

  read(
    _ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    size: number,
    dst: ReadDestination,
  ): number {
    const h = this.#handle(fh, nodeid, false, "read");
    if (!h.readable) fail(Errno.EBADF, "read", "not open for reading");
    const at = offsetOf(offset, "read");
    const n = h.node;
    const len = Math.min(size, dst.capacity, n.size - at);
    if (!(len > 0)) return 0;
    this.#accessed(n);
    const idx = Math.floor(at / CHUNK);
    const off = at - idx * CHUNK;
    if (off + len <= CHUNK) {
      const c = n.chunks?.get(idx);
      return dst.write(c === undefined ? ZEROS.subarray(0, len) : c.bytes.subarray(off, off + len));
    }
    const buf = this.#scratchOf(len);
    for (let done = 0; done < len;) {
      const pos = at + done;
      const i = Math.floor(pos / CHUNK);
      const o = pos - i * CHUNK;
      const k = Math.min(CHUNK - o, len - done);
      const c = n.chunks?.get(i);
      if (c === undefined) buf.fill(0, done, done + k);
      else buf.set(c.bytes.subarray(o, o + k), done);
      done += k;
    }
    return dst.write(buf);
  }

  write(
    _ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    src: WriteSource,
    writeFlags: number,
  ): number {
    const h = this.#handle(fh, nodeid, false, "write");
    if (!h.writable) fail(Errno.EBADF, "write", "not open for writing");
    const n = h.node;
    // O_APPEND: at the end, whatever offset the guest computed (unless its page cache wrote back
    // a page it placed itself, FUSE_WRITE_CACHE).
    const at = h.append && (writeFlags & FUSE_WRITE_CACHE) === 0
      ? n.size
      : offsetOf(offset, "write");
    let len = src.size;
    if (len === 0) return 0;
    if (at >= FILE_SIZE_LIMIT) fail(Errno.EFBIG, "write");
    len = Math.min(len, FILE_SIZE_LIMIT - at);
    const idx = Math.floor(at / CHUNK);
    const off = at - idx * CHUNK;
    let done = 0;
    if (off + len <= CHUNK) {
      const c = this.#chunk(n, idx);
      if (c === undefined) fail(Errno.ENOSPC, "write", "maxBytes reached");
      done = src.read(c.bytes.subarray(off, off + len));
      if (done > 0) MemoryFs.#mark(n, c, pagesTouched(off, off + done));
    } else {
      const data = this.#scratchOf(len);
      len = src.read(data);
      while (done < len) {
        const pos = at + done;
        const i = Math.floor(pos / CHUNK);
        const o = pos - i * CHUNK;
        const k = Math.min(CHUNK - o, len - done);
        const c = this.#chunk(n, i);
        if (c === undefined) break;
        c.bytes.set(data.subarray(done, done + k), o);
        MemoryFs.#mark(n, c, pagesTouched(o, o + k));
        done += k;
      }
      if (done === 0 && len > 0) fail(Errno.ENOSPC, "write", "maxBytes reached");
    }
    if (done === 0) return 0;
    if (at + done > n.size) n.size = at + done;
    this.#modified(n);
    if ((writeFlags & FUSE_WRITE_KILL_SUIDGID) !== 0) this.#killSuidgid(n);
    return done;
  }

  flush(_ctx: Context, nodeid: bigint, fh: bigint, _lockOwner: bigint): void {
    this.#handle(fh, nodeid, false, "flush");
  }

  release(_ctx: Context, nodeid: bigint, fh: bigint, _flags: number): void {
    const h = this.#handle(fh, nodeid, false, "release");
    this.#handles.delete(fh);
    h.node.opens--;
    this.#release(h.node);
  }

  fsync(_ctx: Context, nodeid: bigint, fh: bigint, _datasync: boolean): void {
    this.#handle(fh, nodeid, false, "fsync");
  }

  fallocate(
    _ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    length: bigint,
    mode: number,
  ): void {
    const call = "fallocate";
    const h = this.#handle(fh, nodeid, false, call);
    const o = BigInt.asIntN(64, offset);
    const l = BigInt.asIntN(64, length);
    if (o < 0n || l <= 0n) fail(Errno.EINVAL, call);
    if ((mode & ~FALLOC_FLAGS) !== 0) fail(Errno.EOPNOTSUPP, call, `mode ${mode}`);
    const punch = (mode & FALLOC_FL_PUNCH_HOLE) !== 0;
    const zero = (mode & FALLOC_FL_ZERO_RANGE) !== 0;
    const keep = (mode & FALLOC_FL_KEEP_SIZE) !== 0;
    if (punch && (zero || !keep)) fail(Errno.EOPNOTSUPP, call, `mode ${mode}`);
    if (!h.writable) fail(Errno.EBADF, call, "not open for writing");
    if (o + l > BigInt(FILE_SIZE_LIMIT)) fail(Errno.EFBIG, call);
    const n = h.node;
    const start = Number(o);
    const end = Number(o + l);
    if (punch) {
      this.#clear(n, start, end, true);
      this.#modified(n);
      return;
    }
    // Mode 0, KEEP_SIZE, ZERO_RANGE: every page of the range allocated, or none (ENOSPC).
    const first = Math.floor(start / CHUNK);
    const last = Math.floor((end - 1) / CHUNK);
    let have = 0;
    if (n.chunks !== undefined) {
      for (const idx of n.chunks.keys()) if (idx >= first && idx <= last) have++;
    }
    const missing = last - first + 1 - have;
    if (this.#bytes + missing * CHUNK > this.#maxBytes) fail(Errno.ENOSPC, call);
    for (let idx = first; idx <= last; idx++) {
      const c = this.#chunk(n, idx) as Chunk;
      const cs = idx * CHUNK;
      MemoryFs.#mark(n, c, pagesTouched(Math.max(start, cs) - cs, Math.min(end, cs + CHUNK) - cs));
    }
    if (zero) this.#clear(n, start, end, false);
    const grows = !keep && end > n.size;
    if (grows) n.size = end;
    if (zero || grows) this.#modified(n);
  }

  /** Zeroes `[start, end)` of `n`; with `free`, pages wholly inside are holes again. */
  #clear(n: Node, start: number, end: number, free: boolean): void {
    const chunks = n.chunks;
    if (chunks === undefined) return;
    for (const [idx, c] of chunks) {
      const cs = idx * CHUNK;
      const ce = cs + CHUNK;
      if (ce <= start || cs >= end) continue;
      const from = Math.max(start, cs) - cs;
      const to = Math.min(end, ce) - cs;
      if (free && from === 0 && to === CHUNK) {
        this.#unmark(n, idx, c, ALL_PAGES);
        continue;
      }
      c.bytes.fill(0, from, to);
      if (free) this.#unmark(n, idx, c, pagesInside(from, to));
    }
  }

  lseek(_ctx: Context, nodeid: bigint, fh: bigint, offset: bigint, whence: number): bigint {
    const h = this.#handle(fh, nodeid, false, "lseek");
    const n = h.node;
    const signed = BigInt.asIntN(64, offset);
    switch (whence) {
      case SEEK_SET:
        if (signed < 0n) fail(Errno.EINVAL, "lseek");
        return signed;
      case SEEK_END: {
        const at = BigInt(n.size) + signed;
        if (at < 0n) fail(Errno.EINVAL, "lseek");
        if (at > I64_MAX) fail(Errno.EOVERFLOW, "lseek");
        return at;
      }
      case SEEK_DATA:
      case SEEK_HOLE:
        break;
      default:
        // SEEK_CUR needs a file position, which only the guest keeps.
        fail(Errno.EINVAL, "lseek", `whence ${whence}`);
    }
    if (offset >= BigInt(n.size)) fail(Errno.ENXIO, "lseek");
    // Page by page: a page holds data once written or allocated; the end of the file is a hole.
    const at = Number(offset);
    const idx = Math.floor(at / CHUNK);
    const page = Math.floor((at - idx * CHUNK) / PAGE);
    const from = ALL_PAGES & ~((1 << page) - 1);
    const chunks = n.chunks;
    if (whence === SEEK_HOLE) {
      let mask = from;
      for (let i = idx; i * CHUNK < n.size; i++) {
        const holes = ~(chunks?.get(i)?.pages ?? 0) & mask;
        if (holes !== 0) {
          return BigInt(Math.min(Math.max(at, i * CHUNK + firstPage(holes) * PAGE), n.size));
        }
        mask = ALL_PAGES;
      }
      return BigInt(n.size);
    }
    const here = chunks?.get(idx);
    if (here !== undefined && (here.pages & (1 << page)) !== 0) return offset;
    let best = Infinity;
    if (chunks !== undefined) {
      for (const [i, c] of chunks) {
        if (i < idx) continue;
        const m = i === idx ? c.pages & from : c.pages;
        if (m === 0) continue;
        const p = i * CHUNK + firstPage(m) * PAGE;
        if (p < best) best = p;
      }
    }
    const data = Math.max(at, best);
    if (data >= n.size) fail(Errno.ENXIO, "lseek");
    return BigInt(data);
  }

  copyFileRange(
    _ctx: Context,
    nodeidIn: bigint,
    fhIn: bigint,
    offsetIn: bigint,
    nodeidOut: bigint,
    fhOut: bigint,
    offsetOut: bigint,
    length: number,
    flags: number,
  ): number {
    const call = "copy_file_range";
    const hi = this.#handle(fhIn, nodeidIn, false, call);
    const ho = this.#handle(fhOut, nodeidOut, false, call);
    if (flags !== 0) fail(Errno.EINVAL, call, `flags ${flags}`);
    if (!hi.readable || !ho.writable || ho.append) fail(Errno.EBADF, call);
    const inAt = offsetOf(offsetIn, call);
    const outAt = offsetOf(offsetOut, call);
    const src = hi.node;
    const dst = ho.node;
    let len = Math.min(length, src.size - inAt);
    if (!(len > 0)) return 0;
    if (outAt >= FILE_SIZE_LIMIT) fail(Errno.EFBIG, call);
    len = Math.min(len, FILE_SIZE_LIMIT - outAt);
    if (src === dst && inAt < outAt + len && outAt < inAt + len) {
      fail(Errno.EINVAL, call, "overlapping ranges of one file");
    }
    let done = 0;
    while (done < len) {
      const sp = inAt + done;
      const dp = outAt + done;
      const si = Math.floor(sp / CHUNK);
      const so = sp - si * CHUNK;
      const di = Math.floor(dp / CHUNK);
      const dOff = dp - di * CHUNK;
      const sc = src.chunks?.get(si);
      if (sc === undefined) {
        // A hole stays a hole where the target has none allocated.
        const k = Math.min(CHUNK - so, CHUNK - dOff, len - done);
        dst.chunks?.get(di)?.bytes.fill(0, dOff, dOff + k);
        done += k;
        continue;
      }
      // Page by page within a chunk: a page of the source that holds no data is a hole.
      const k = Math.min(PAGE - (so % PAGE), PAGE - (dOff % PAGE), len - done);
      if ((sc.pages & (1 << Math.floor(so / PAGE))) === 0) {
        dst.chunks?.get(di)?.bytes.fill(0, dOff, dOff + k);
      } else {
        const dc = this.#chunk(dst, di);
        if (dc === undefined) break;
        dc.bytes.set(sc.bytes.subarray(so, so + k), dOff);
        MemoryFs.#mark(dst, dc, pagesTouched(dOff, dOff + k));
      }
      done += k;
    }
    if (done === 0) fail(Errno.ENOSPC, call, "maxBytes reached");
    if (outAt + done > dst.size) dst.size = outAt + done;
    this.#accessed(src);
    this.#modified(dst);
    return done;
  }

  // ---------------------------------------------------------------- directories

  opendir(_ctx: Context, nodeid: bigint, flags: number): OpenReply {
    const d = this.#dir(nodeid, "opendir");
    return this.#open(d, true, flags & ~O_ACCMODE);
  }

  /** The directory of handle `fh`, and where its listing resumes (undefined: nothing left). */
  #listing(
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    call: string,
  ): [Node & { dir: Directory; parent: Node }, number] | undefined {
    const d = this.#handle(fh, nodeid, true, call).node as Node & {
      dir: Directory;
      parent: Node;
    };
    // A removed directory lists nothing (Linux: not even "." and "..").
    if (d.nlink === 0 || offset > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
    this.#accessed(d);
    return [d, Number(offset)];
  }

  readdir(_ctx: Context, nodeid: bigint, fh: bigint, offset: bigint, sink: DirentSink): void {
    const l = this.#listing(nodeid, fh, offset, "readdir");
    if (l === undefined) return;
    const [d, off] = l;
    if (off < 1 && !sink.add(d.id, 1n, dtype(S_IFDIR), DOT)) return;
    if (off < 2 && !sink.add(d.parent.id, 2n, dtype(S_IFDIR), DOTDOT)) return;
    const order = d.dir.order;
    for (let i = d.dir.after(off); i < order.length; i++) {
      const e = order[i] as DirEntry;
      if (e.removed) continue;
      if (!sink.add(e.node.id, BigInt(e.cookie), dtype(e.node.mode), e.name)) return;
    }
  }

  readdirplus(
    _ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    sink: DirentPlusSink,
  ): void {
    const l = this.#listing(nodeid, fh, offset, "readdirplus");
    if (l === undefined) return;
    const [d, off] = l;
    if (off < 1) {
      if (!sink.fits(1)) return;
      sink.add(this.#dotEntry(d), 1n, dtype(S_IFDIR), DOT);
    }
    if (off < 2) {
      if (!sink.fits(2)) return;
      sink.add(this.#dotEntry(d.parent), 2n, dtype(S_IFDIR), DOTDOT);
    }
    const order = d.dir.order;
    for (let i = d.dir.after(off); i < order.length; i++) {
      const e = order[i] as DirEntry;
      if (e.removed) continue;
      if (!sink.fits(e.name.length)) return;
      sink.add(this.#entry(e.node), BigInt(e.cookie), dtype(e.node.mode), e.name);
    }
  }

  /** The READDIRPLUS entry of "." and "..": nodeid 0 (no lookup), only the inode number. */
  #dotEntry(n: Node): Entry {
    return {
      nodeid: 0n,
      generation: 0n,
      attr: this.#attr(n),
      entryTimeout: 0,
      attrTimeout: 0,
    };
  }

  releasedir(_ctx: Context, nodeid: bigint, fh: bigint): void {
    const h = this.#handle(fh, nodeid, true, "releasedir");
    this.#handles.delete(fh);
    h.node.opens--;
    this.#release(h.node);
  }

  fsyncdir(_ctx: Context, nodeid: bigint, fh: bigint, _datasync: boolean): void {
    this.#handle(fh, nodeid, true, "fsyncdir");
  }

  // ---------------------------------------------------------------- extended attributes

  /** The key of xattr `name`: ERANGE for a bad length, EOPNOTSUPP outside user/trusted/security. */
  #xattrKey(name: Uint8Array, call: string): string {
    if (name.length === 0 || name.length > NAME_LIMIT) fail(Errno.ERANGE, call);
    if (name.includes(0)) fail(Errno.EINVAL, call);
    const key = keyOf(name);
    const prefix = XATTR_PREFIXES.find((p) => key.startsWith(p));
    if (prefix === undefined) fail(Errno.EOPNOTSUPP, call, "not a user, trusted or security name");
    if (key.length === prefix.length) fail(Errno.EINVAL, call, "empty name after the prefix");
    return key;
  }

  /** user.* lives only on regular files and directories (as Linux). */
  static #userless(n: Node, key: string): boolean {
    return key.startsWith("user.") && n.type !== S_IFREG && n.type !== S_IFDIR;
  }

  #dropXattr(n: Node, key: string, x: Xattr): void {
    n.xattrs?.delete(key);
    n.xattrListLength -= x.name.length + 1;
    this.#bytes -= x.name.length + x.value.length;
  }

  setxattr(
    _ctx: Context,
    nodeid: bigint,
    name: Uint8Array,
    value: Uint8Array,
    flags: number,
  ): void {
    const call = "setxattr";
    const n = this.#node(nodeid, call);
    const key = this.#xattrKey(name, call);
    if ((flags & ~(XATTR_CREATE | XATTR_REPLACE)) !== 0) fail(Errno.EINVAL, call);
    if (value.length > XATTR_VALUE_LIMIT) fail(Errno.E2BIG, call);
    if (MemoryFs.#userless(n, key)) fail(Errno.EPERM, call, "user.* on a special file");
    const old = n.xattrs?.get(key);
    if (old !== undefined && (flags & XATTR_CREATE) !== 0) fail(Errno.EEXIST, call);
    if (old === undefined && (flags & XATTR_REPLACE) !== 0) fail(Errno.ENODATA, call);
    if (old === undefined && n.xattrListLength + name.length + 1 > XATTR_VALUE_LIMIT) {
      fail(Errno.ENOSPC, call, "the list of names is full");
    }
    const delta = old === undefined ? name.length + value.length : value.length - old.value.length;
    if (delta > 0) this.#charge(delta, call);
    else this.#bytes += delta;
    if (old === undefined) n.xattrListLength += name.length + 1;
    (n.xattrs ??= new Map()).set(key, { name: name.slice(), value: value.slice() });
    this.#changed(n);
  }

  getxattr(_ctx: Context, nodeid: bigint, name: Uint8Array, size: number): Uint8Array | number {
    const n = this.#node(nodeid, "getxattr");
    const key = this.#xattrKey(name, "getxattr");
    const x = MemoryFs.#userless(n, key) ? undefined : n.xattrs?.get(key);
    if (x === undefined) fail(Errno.ENODATA, "getxattr");
    if (size === 0) return x.value.length;
    if (x.value.length > size) fail(Errno.ERANGE, "getxattr");
    return x.value;
  }

  listxattr(ctx: Context, nodeid: bigint, size: number): Uint8Array | number {
    const n = this.#node(nodeid, "listxattr");
    // trusted.* is listed to the privileged only (uid 0 stands for CAP_SYS_ADMIN here).
    const shown: Xattr[] = [];
    let total = 0;
    for (const [key, x] of n.xattrs ?? []) {
      if (ctx.uid !== 0 && key.startsWith("trusted.")) continue;
      shown.push(x);
      total += x.name.length + 1;
    }
    if (size === 0) return total;
    if (total > size) fail(Errno.ERANGE, "listxattr");
    const out = new Uint8Array(total);
    let at = 0;
    for (const x of shown) {
      out.set(x.name, at);
      at += x.name.length + 1;
    }
    return out;
  }

  removexattr(_ctx: Context, nodeid: bigint, name: Uint8Array): void {
    const n = this.#node(nodeid, "removexattr");
    const key = this.#xattrKey(name, "removexattr");
    const x = n.xattrs?.get(key);
    if (x === undefined) fail(Errno.ENODATA, "removexattr");
    this.#dropXattr(n, key, x);
    this.#changed(n);
  }
}
