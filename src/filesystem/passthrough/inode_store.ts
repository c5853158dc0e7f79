/**
 * The passthrough file system's inode table: nodeid ↔ the host file, keyed by the host's
 * (st_dev, st_ino, mount id) so one host file seen through one mount has one nodeid, with the
 * lookup counts the guest's LOOKUP (and every call that creates a node) and FORGET move.
 * Nodeids are never reused within the store's life.
 *
 * Descriptors: with file handles (see `file_handles.ts`) an inode's O_PATH descriptor lives in
 * a bounded least-recently-used cache: the descriptor of an inode not used for a while is
 * closed, and reopened from the inode's handle when the inode is used again. So the guest may
 * hold far more inodes than the process may open descriptors. The handle is taken when the
 * descriptor is first closed, not at the lookup (mode `mandatory`: at the lookup, which fails
 * without one): while the cache has room an inode costs no name_to_handle_at. An inode whose
 * handle cannot be taken (and every inode, without handles) keeps its descriptor ("pinned").
 * A directory that is the first inode seen on its mount takes its handle at once, so that the
 * mount has a descriptor to reopen handles through (a regular file cannot give one).
 *
 * Identity: a host file is (st_dev, st_ino, mount id), kept as numbers; the index is keyed by the
 * inode number, files of other devices or mounts with the same number chained behind.
 *
 * Out of descriptors: when an open fails with EMFILE or ENFILE, `withFds` and the reopen close
 * cached descriptors (the least recently used first) and try once more; what still fails
 * answers the guest with that errno.
 *
 * Borrowing: `Inode.fd` hands out a descriptor that stays open until the next `get()` (the
 * start of another operation's node resolution): shedding never closes a descriptor handed out
 * since then. An operation therefore resolves its nodes (`get`) before it uses their
 * descriptors, and uses them within the operation only.
 *
 * @module
 */
import {
  closeQuietly,
  cString,
  Errno,
  ErrnoError,
  getrlimit,
  RLIMIT_NOFILE,
  S_IFDIR,
  S_IFMT,
  S_IFREG,
  STATX,
  STATX_MNT_ID,
  StatxBuffer,
  statxFdRaw,
} from "../../ffi/mod.ts";
import {
  FileHandles,
  type FileHandleStatus,
  type InodeFileHandles,
  outOfFds,
} from "./file_handles.ts";

/** One host file the guest knows. */
export interface Inode {
  /** The guest's name for it. */
  readonly nodeid: bigint;
  /**
   * An O_PATH descriptor of the host file, owned by the store: reopened from the inode's file
   * handle when the store closed it to save descriptors. Valid until the store's next `get()`.
   * Throws ErrnoError: EMFILE/ENFILE (out of descriptors), ESTALE (the file was deleted
   * meanwhile).
   */
  readonly fd: number;
  /** `fd` as a NUL-terminated decimal name, to reopen it relative to /proc/self/fd. */
  readonly procName: Uint8Array;
  /** (dev, ino, mount id) as a string. */
  readonly key: string;
  /** The file type bits of `st_mode` (S_IFREG, S_IFDIR, ...); a file's type never changes. */
  readonly type: number;
  /** The guest's lookup count. */
  readonly refcount: number;
  /** The host device's major number. */
  readonly devMajor: number;
  /** The host device's minor number. */
  readonly devMinor: number;
  /** statx's mount id of the file (0: not reported). */
  readonly mntId: number;
  /**
   * The root of a host mount below the share: looked up by name in a directory of another
   * device or mount (see `markMountRoot`). Never the share's root.
   */
  readonly mountRoot: boolean;
  /**
   * Whether the guest was told to use this file through its DAX window (FUSE_ATTR_DAX): decided
   * once, at the first attributes the guest got, and kept while the guest knows the node (see
   * `PassthroughFs` #present). Undefined until decided.
   */
  dax: boolean | undefined;
}

/** The key of the file a statx buffer describes: device, inode number and mount id. */
export function inodeKey(sx: StatxBuffer): string {
  return `${sx.devMajor}:${sx.devMinor}:${sx.ino}:${sx.mntId}`;
}

/** 2^32. */
const U32 = 0x1_0000_0000;

/**
 * The identity a statx buffer describes, as numbers (read without BigInts): the index key is
 * the inode number (exact below 2^53; above, equal numbers only share a chain).
 */
class Identity {
  inoLo = 0;
  inoHi = 0;
  devMajor = 0;
  devMinor = 0;
  mntLo = 0;
  mntHi = 0;

  /** Reads `sx`'s identity; returns the index key. */
  read(sx: StatxBuffer): number {
    const v = sx.view;
    this.inoLo = v.getUint32(STATX.ino, true);
    this.inoHi = v.getUint32(STATX.ino + 4, true);
    this.devMajor = v.getUint32(STATX.devMajor, true);
    this.devMinor = v.getUint32(STATX.devMinor, true);
    const mnt = (v.getUint32(STATX.mask, true) & STATX_MNT_ID) !== 0;
    this.mntLo = mnt ? v.getUint32(STATX.mntId, true) : 0;
    this.mntHi = mnt ? v.getUint32(STATX.mntId + 4, true) : 0;
    return this.inoHi * U32 + this.inoLo;
  }
}

/** Options of an InodeStore. */
export interface InodeStoreOptions {
  /** An O_PATH descriptor of /proc/self/fd (borrowed, not closed by the store). */
  procFd: number;
  /** File handles or a descriptor per inode (default `prefer`). */
  fileHandles?: InodeFileHandles;
  /**
   * How many O_PATH descriptors of inodes with handles stay open (default
   * min(RLIMIT_NOFILE soft limit / 2, 65536); at least 8).
   */
  fdCache?: number;
}

/** Counters of the store's descriptors. */
export interface InodeFdStats {
  /** Inodes known (the root included). */
  inodes: number;
  /** Descriptors of inodes with handles that are open now. */
  cached: number;
  /** The most of those kept open. */
  cacheLimit: number;
  /** Inodes that keep their descriptor (no handle; the root). */
  pinned: number;
  /** Mount descriptors held for open_by_handle_at. */
  mounts: number;
  /** Descriptors reopened from a handle so far. */
  reopened: number;
  /** Descriptors closed to make room after EMFILE/ENFILE so far. */
  shed: number;
  /** File handles taken so far. */
  handlesTaken: number;
}

/** The fewest cached descriptors (an operation uses at most three inodes). */
const MIN_CACHE = 8;
/** The most cached descriptors by default. */
const MAX_DEFAULT_CACHE = 65536;

/** The store's record of one inode; the `Inode` the rest of the file system sees. */
class Node implements Inode {
  readonly nodeid: bigint;
  readonly type: number;
  refcount = 1;
  mountRoot = false;
  dax: boolean | undefined = undefined;
  readonly inoLo: number;
  readonly inoHi: number;
  readonly devMajor: number;
  readonly devMinor: number;
  readonly mntLo: number;
  readonly mntHi: number;
  /** The next inode in the index with the same key (same inode number, other device/mount). */
  chain: Node | null = null;
  /** Keeps its descriptor for its life: no handle (the root; mode `never`; none to take). */
  pinned: boolean;
  /** The file handle (see FileHandles.handleOf), once taken. */
  handle: string | undefined = undefined;
  /** The mount of `handle` (a reference on its descriptor is held while `handle` is set). */
  mountId = 0;
  /** The open O_PATH descriptor, or -1 (then `handle` is set). */
  cfd: number;
  /** `cfd` as a /proc/self/fd name, made on demand. */
  cname: Uint8Array | undefined = undefined;
  /** Neighbours in the cache's recency list (newer, older). */
  newer: Node | null = null;
  older: Node | null = null;
  /** In the cache's list. */
  cached = false;
  /** The borrowing epoch its descriptor was last handed out in. */
  borrowed = -1;
  readonly #cache: FdCache;

  constructor(cache: FdCache, nodeid: bigint, fd: number, id: Identity, type: number) {
    this.#cache = cache;
    this.nodeid = nodeid;
    this.cfd = fd;
    this.type = type;
    this.inoLo = id.inoLo;
    this.inoHi = id.inoHi;
    this.devMajor = id.devMajor;
    this.devMinor = id.devMinor;
    this.mntLo = id.mntLo;
    this.mntHi = id.mntHi;
    this.pinned = !cache.handles.active;
  }

  /** Whether `id` is this file. */
  is(id: Identity): boolean {
    return this.inoLo === id.inoLo && this.inoHi === id.inoHi && this.devMajor === id.devMajor &&
      this.devMinor === id.devMinor && this.mntLo === id.mntLo && this.mntHi === id.mntHi;
  }

  /** statx's mount id of the file (0: not reported). */
  get mntId(): number {
    return this.mntHi * U32 + this.mntLo;
  }

  /** (dev, ino, mount id) as `inodeKey` writes it. */
  get key(): string {
    const ino = (BigInt(this.inoHi) << 32n) | BigInt(this.inoLo);
    const mnt = (BigInt(this.mntHi) << 32n) | BigInt(this.mntLo);
    return `${this.devMajor}:${this.devMinor}:${ino}:${mnt}`;
  }

  get fd(): number {
    return this.pinned ? this.cfd : this.#cache.borrow(this);
  }

  get procName(): Uint8Array {
    const fd = this.fd;
    this.cname ??= cString(String(fd));
    return this.cname;
  }
}

/** The open descriptors of inodes that are not pinned, most recently used first. */
class FdCache {
  readonly handles: FileHandles;
  readonly limit: number;
  /** Bumped by every `InodeStore.get()`: descriptors borrowed in this epoch are never shed. */
  epoch = 0;
  size = 0;
  reopened = 0;
  shed = 0;
  /** Inodes that keep their descriptor. */
  pinned = 0;
  handlesTaken = 0;
  #newest: Node | null = null;
  #oldest: Node | null = null;

  constructor(handles: FileHandles, limit: number) {
    this.handles = handles;
    this.limit = limit;
  }

  /** `n`'s descriptor, reopened from its handle if it was closed; marks it in use. */
  borrow(n: Node): number {
    if (n.cfd < 0) {
      let fd = this.handles.open(n.handle ?? "", n.mountId);
      if (outOfFds(fd) && this.shedSome() > 0) fd = this.handles.open(n.handle ?? "", n.mountId);
      if (fd < 0) throw new ErrnoError(-fd, "open_by_handle_at");
      this.reopened++;
      n.cfd = fd;
      n.cname = undefined;
      n.borrowed = this.epoch;
      this.add(n);
    } else {
      n.borrowed = this.epoch;
      this.touch(n);
    }
    return n.cfd;
  }

  /**
   * Takes `n`'s handle (from its open descriptor) and a reference on its mount's descriptor.
   * Returns 0 or -errno (ESTALE: the handle is of another mount than statx reported).
   */
  takeHandle(n: Node, withFds: (open: () => number) => number): number {
    const handles = this.handles;
    const h = handles.handleOf(n.cfd);
    if (typeof h === "number") return h;
    const mountId = handles.lastMountId;
    // The identity names its mount by statx's id: the handle must be of that mount.
    const statxMount = n.mntId;
    if (statxMount !== 0 && mountId !== statxMount) return -Errno.ESTALE;
    const r = withFds(() => handles.acquireMount(mountId, n.cfd, n.type));
    if (r < 0) return r;
    n.handle = h;
    n.mountId = mountId;
    this.handlesTaken++;
    return 0;
  }

  /** Puts `n` (with an open descriptor) first, closing the oldest ones over the limit. */
  add(n: Node): void {
    n.older = this.#newest;
    n.newer = null;
    if (this.#newest !== null) this.#newest.newer = n;
    this.#newest = n;
    this.#oldest ??= n;
    n.cached = true;
    this.size++;
    for (let o: Node | null = this.#oldest; this.size > this.limit && o !== null && o !== n;) {
      const next: Node | null = o.newer;
      if (o.borrowed !== this.epoch) this.evict(o);
      o = next;
    }
  }

  /** Moves `n` first. */
  touch(n: Node): void {
    if (!n.cached || this.#newest === n) return;
    this.#unlink(n);
    this.add(n);
  }

  #unlink(n: Node): void {
    if (n.newer !== null) n.newer.older = n.older;
    else this.#newest = n.older;
    if (n.older !== null) n.older.newer = n.newer;
    else this.#oldest = n.newer;
    n.newer = n.older = null;
    n.cached = false;
    this.size--;
  }

  /**
   * Closes `n`'s descriptor to make room, taking its handle first; an inode whose handle
   * cannot be taken leaves the cache and keeps its descriptor (pinned). Returns whether a
   * descriptor was closed.
   */
  evict(n: Node): boolean {
    if (n.handle === undefined && this.takeHandle(n, (open) => open()) < 0) {
      if (n.cached) this.#unlink(n);
      n.pinned = true;
      this.pinned++;
      return false;
    }
    this.close(n);
    return true;
  }

  /** Closes `n`'s descriptor (an inode the guest forgot, or one with its handle). */
  close(n: Node): void {
    if (n.cached) this.#unlink(n);
    if (n.cfd >= 0) closeQuietly(n.cfd);
    n.cfd = -1;
    n.cname = undefined;
  }

  /**
   * Out of descriptors: closes the oldest quarter of the cache (at least 16), never one
   * borrowed in this epoch. Returns how many were closed.
   */
  shedSome(): number {
    let want = Math.max(16, Math.ceil(this.size / 4));
    let closed = 0;
    for (let o: Node | null = this.#oldest; o !== null && want > 0;) {
      const next: Node | null = o.newer;
      if (o.borrowed !== this.epoch && this.evict(o)) {
        closed++;
        want--;
      }
      o = next;
    }
    this.shed += closed;
    return closed;
  }
}

/** nodeid → inode, and identity → inode. The root is nodeid 1 and is never forgotten. */
export class InodeStore {
  readonly #byId = new Map<bigint, Node>();
  /** Inode number → the inodes with that number (chained by `Node.chain`). */
  readonly #byIno = new Map<number, Node>();
  readonly #id = new Identity();
  readonly #root: Node;
  readonly #handles: FileHandles;
  readonly #cache: FdCache;
  #next = 2n;

  /**
   * Puts the root (nodeid 1, owning O_PATH descriptor `rootFd`, which `sx` describes) in the
   * store, and probes file handles on it (mode `mandatory` throws ErrnoError when they cannot
   * be used; the caller still owns `rootFd` then).
   */
  constructor(rootFd: number, sx: StatxBuffer, opts: InodeStoreOptions) {
    this.#handles = new FileHandles(opts.fileHandles ?? "prefer", opts.procFd);
    this.#cache = new FdCache(this.#handles, cacheLimit(opts.fdCache));
    const key = inodeKey(sx);
    const probeSx = new StatxBuffer();
    this.#handles.probe(rootFd, (fd) => statxFdRaw(fd, probeSx) === 0 && inodeKey(probeSx) === key);
    const ino = this.#id.read(sx);
    this.#root = new Node(this.#cache, 1n, rootFd, this.#id, sx.mode & S_IFMT);
    this.#root.pinned = true;
    this.#root.refcount = Infinity;
    this.#cache.pinned = 1;
    this.#byId.set(1n, this.#root);
    this.#byIno.set(ino, this.#root);
  }

  /** The root inode (nodeid 1). */
  get root(): Inode {
    return this.#root;
  }

  /** Inodes known (the root included). */
  get size(): number {
    return this.#byId.size;
  }

  /** Whether file handles are used, and why not. */
  get fileHandles(): FileHandleStatus {
    return this.#handles.status;
  }

  /** Counters of the descriptors the store holds. */
  get stats(): InodeFdStats {
    return {
      inodes: this.#byId.size,
      cached: this.#cache.size,
      cacheLimit: this.#cache.limit,
      pinned: this.#cache.pinned,
      mounts: this.#handles.mountCount,
      reopened: this.#cache.reopened,
      shed: this.#cache.shed,
      handlesTaken: this.#cache.handlesTaken,
    };
  }

  /**
   * The inode of `nodeid`, or undefined (an id the guest should not have). Starts a new
   * borrowing epoch: descriptors handed out before may be closed by later opens.
   */
  get(nodeid: bigint): Inode | undefined {
    this.#cache.epoch++;
    return this.#byId.get(nodeid);
  }

  /**
   * Runs `open` (which returns a descriptor or -errno); when it fails with EMFILE or ENFILE,
   * closes cached descriptors and runs it once more. Returns what `open` last returned.
   */
  withFds(open: () => number): number {
    const r = open();
    if (!outOfFds(r) || this.#cache.shedSome() === 0) return r;
    return open();
  }

  /** The inode `id` (read by `#id.read`, whose result is `ino`) names, or undefined. */
  #find(ino: number, id: Identity): Node | undefined {
    for (let n = this.#byIno.get(ino) ?? null; n !== null; n = n.chain) {
      if (n.is(id)) return n;
    }
    return undefined;
  }

  #index(node: Node, ino: number): void {
    node.chain = this.#byIno.get(ino) ?? null;
    this.#byIno.set(ino, node);
  }

  #unindex(node: Node): void {
    const ino = node.inoHi * U32 + node.inoLo;
    let prev: Node | null = null;
    for (let n = this.#byIno.get(ino) ?? null; n !== null; prev = n, n = n.chain) {
      if (n !== node) continue;
      if (prev !== null) prev.chain = n.chain;
      else if (n.chain !== null) this.#byIno.set(ino, n.chain);
      else this.#byIno.delete(ino);
      node.chain = null;
      return;
    }
  }

  /** The known inode the statx buffer `sx` describes, if any (no lookup is counted). */
  known(sx: StatxBuffer): Inode | undefined {
    return this.#find(this.#id.read(sx), this.#id);
  }

  /**
   * A known inode the statx buffer `sx` of name `cname` in directory `dirfd` describes, with
   * one more lookup: when that inode holds an open descriptor (which keeps the host file alive,
   * so its inode number cannot have passed to another file: the name is that file), or when the
   * name's file handle is the inode's. Undefined otherwise: open the name then.
   */
  lookedUpByName(sx: StatxBuffer, dirfd: number, cname: Uint8Array): Inode | undefined {
    const known = this.#find(this.#id.read(sx), this.#id);
    if (known === undefined) return undefined;
    if (known.cfd >= 0) {
      this.#cache.touch(known);
    } else if (
      // Its descriptor was closed: the name's handle tells whether it is still that file (a
      // directory larger than the cache, listed again, then costs no open and no eviction).
      this.#handles.sameFileAt(dirfd, cname, known.handle ?? "", known.mountId) !== true
    ) {
      return undefined;
    }
    this.#ref(known);
    return known;
  }

  /**
   * The inode of the file O_PATH descriptor `fd` names (`sx`: its statx) with one more lookup:
   * the existing one (and `fd` is closed, or kept as its descriptor when it had none), or a new
   * one owning `fd`. Closes `fd` when it throws (mode `mandatory`: the file has no handle).
   */
  lookedUp(fd: number, sx: StatxBuffer): Inode {
    const id = this.#id;
    const ino = id.read(sx);
    const known = this.#find(ino, id);
    if (known !== undefined) {
      if (known.cfd >= 0) {
        closeQuietly(fd);
        this.#cache.touch(known);
        this.#ref(known);
        return known;
      }
      // Its descriptor was closed: the inode number may have been reused by another file
      // since (a handle carries the generation, an identity does not).
      if (this.#handles.handleOf(fd) === known.handle) {
        known.cfd = fd;
        this.#cache.add(known);
        this.#ref(known);
        return known;
      }
      this.#unindex(known);
    }
    const node = this.#newNode(fd, id, sx.mode & S_IFMT);
    this.#byId.set(node.nodeid, node);
    this.#index(node, ino);
    return node;
  }

  #newNode(fd: number, id: Identity, type: number): Node {
    const cache = this.#cache;
    const node = new Node(cache, this.#next, fd, id, type);
    if (node.pinned) {
      this.#next++;
      cache.pinned++;
      return node;
    }
    const handles = this.#handles;
    // The handle now: in mode `mandatory` (no handle, no inode), and for a directory on a mount
    // without a descriptor yet (it can give the mount one; a later regular file could not).
    if (handles.mandatory || (type === S_IFDIR && !handles.hasMount(node.mntId))) {
      const r = cache.takeHandle(node, (open) => this.withFds(open));
      if (r < 0 && handles.mandatory) {
        closeQuietly(fd);
        throw new ErrnoError(-r, "name_to_handle_at", "the file has no usable handle");
      }
      if (r < 0) {
        node.pinned = true;
        cache.pinned++;
        this.#next++;
        return node;
      }
    }
    this.#next++;
    cache.add(node);
    return node;
  }

  #ref(node: Node): void {
    if (node !== this.#root) node.refcount++;
  }

  /**
   * Marks `inode` as the root of a host mount below the share: it was looked up by name in a
   * directory of another device or mount. The share's root is never marked.
   */
  markMountRoot(inode: Inode): void {
    const node = this.#byId.get(inode.nodeid);
    if (node !== undefined && node !== this.#root) node.mountRoot = true;
  }

  /**
   * One inode of each host device the guest knows files of, the share's own excepted: a
   * directory or regular file (one that can be opened to reach its file system), preferring one
   * whose descriptor is open. For SYNCFS of a share that is one guest file system.
   */
  otherDevices(): Inode[] {
    const root = this.#root;
    const found = new Map<number, Node>();
    for (const n of this.#byId.values()) {
      if (n.devMajor === root.devMajor && n.devMinor === root.devMinor) continue;
      if (n.type !== S_IFDIR && n.type !== S_IFREG) continue;
      const dev = n.devMajor * U32 + n.devMinor;
      const had = found.get(dev);
      if (had === undefined || (had.cfd < 0 && n.cfd >= 0)) found.set(dev, n);
    }
    return [...found.values()];
  }

  /** One more lookup of a known inode (a LINK to it). */
  ref(inode: Inode): void {
    const node = this.#byId.get(inode.nodeid);
    if (node !== undefined) this.#ref(node);
  }

  /** Drops `nlookup` lookups of `nodeid`; at 0 the inode is removed and its fd closed. */
  forget(nodeid: bigint, nlookup: bigint): void {
    const node = this.#byId.get(nodeid);
    if (node === undefined || node === this.#root) return;
    node.refcount = nlookup >= BigInt(node.refcount) ? 0 : node.refcount - Number(nlookup);
    if (node.refcount !== 0) return;
    this.#byId.delete(nodeid);
    this.#unindex(node);
    if (node.pinned) {
      closeQuietly(node.cfd);
      this.#cache.pinned--;
    } else {
      this.#cache.close(node);
      if (node.handle !== undefined) this.#handles.releaseMount(node.mountId);
    }
  }

  /** Forgets every inode but the root (a session ends). */
  clear(): void {
    for (const node of [...this.#byId.values()]) {
      if (node !== this.#root) this.forget(node.nodeid, BigInt(node.refcount));
    }
  }

  /** Closes everything, the root included. */
  close(): void {
    this.clear();
    closeQuietly(this.#root.cfd);
    this.#handles.close();
    this.#byId.clear();
    this.#byIno.clear();
  }
}

/** The cache limit: `asked`, or half the soft RLIMIT_NOFILE up to 65536; at least 8. */
function cacheLimit(asked: number | undefined): number {
  if (asked !== undefined) return Math.max(MIN_CACHE, Math.floor(asked));
  let soft = MAX_DEFAULT_CACHE * 2;
  try {
    soft = getrlimit(RLIMIT_NOFILE).cur;
  } catch { /* keep the default */ }
  return Math.max(MIN_CACHE, Math.min(Math.floor(soft / 2), MAX_DEFAULT_CACHE));
}
