/**
 * The passthrough file system's inode table: nodeid ↔ the host file, keyed by the host's
 * (st_dev, st_ino, mount id) so one host file seen through one mount has one nodeid, with the
 * lookup counts the guest's LOOKUP (and every call that creates a node) and FORGET move.
 * Nodeids are never reused within the store's life.
 *
 * Descriptors: with file handles (see `file_handles.ts`) an inode keeps its handle, and its
 * O_PATH descriptor lives in a bounded least-recently-used cache: the descriptor of an inode
 * not used for a while is closed, and reopened from the handle when the inode is used again. So
 * the guest may hold far more inodes than the process may open descriptors. An inode whose
 * handle cannot be taken (and every inode, without handles) keeps its descriptor ("pinned").
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
  S_IFMT,
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
  readonly refcount: bigint;
}

/** The key of the file a statx buffer describes: device, inode number and mount id. */
export function inodeKey(sx: StatxBuffer): string {
  return `${sx.devMajor}:${sx.devMinor}:${sx.ino}:${sx.mntId}`;
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
}

/** The fewest cached descriptors (an operation uses at most three inodes). */
const MIN_CACHE = 8;
/** The most cached descriptors by default. */
const MAX_DEFAULT_CACHE = 65536;

/** The store's record of one inode; the `Inode` the rest of the file system sees. */
class Node implements Inode {
  readonly nodeid: bigint;
  readonly key: string;
  readonly type: number;
  refcount: bigint;
  /** The file handle (see FileHandles.handleOf), or undefined: the descriptor is pinned. */
  readonly handle: string | undefined;
  readonly mountId: number;
  /** The open O_PATH descriptor, or -1. */
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

  constructor(
    cache: FdCache,
    nodeid: bigint,
    fd: number,
    key: string,
    type: number,
    handle: string | undefined,
    mountId: number,
  ) {
    this.#cache = cache;
    this.nodeid = nodeid;
    this.cfd = fd;
    this.key = key;
    this.type = type;
    this.refcount = 1n;
    this.handle = handle;
    this.mountId = mountId;
  }

  get fd(): number {
    return this.handle === undefined ? this.cfd : this.#cache.borrow(this);
  }

  get procName(): Uint8Array {
    const fd = this.fd;
    this.cname ??= cString(String(fd));
    return this.cname;
  }
}

/** The open descriptors of inodes with handles, most recently used first. */
class FdCache {
  readonly handles: FileHandles;
  readonly limit: number;
  /** Bumped by every `InodeStore.get()`: descriptors borrowed in this epoch are never shed. */
  epoch = 0;
  size = 0;
  reopened = 0;
  shed = 0;
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
      if (o.borrowed !== this.epoch) this.close(o);
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

  /** Closes `n`'s descriptor (it keeps its handle). */
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
      if (o.borrowed !== this.epoch) {
        this.close(o);
        closed++;
        want--;
      }
      o = next;
    }
    this.shed += closed;
    return closed;
  }
}

/** nodeid → inode, and key → inode. The root is nodeid 1 and is never forgotten. */
export class InodeStore {
  readonly #byId = new Map<bigint, Node>();
  readonly #byKey = new Map<string, Node>();
  readonly #root: Node;
  readonly #handles: FileHandles;
  readonly #cache: FdCache;
  #pinned = 0;
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
    this.#root = new Node(this.#cache, 1n, rootFd, key, sx.mode & S_IFMT, undefined, 0);
    this.#root.refcount = 2n ** 62n;
    this.#pinned = 1;
    this.#byId.set(1n, this.#root);
    this.#byKey.set(key, this.#root);
    const probeSx = new StatxBuffer();
    this.#handles.probe(rootFd, (fd) => statxFdRaw(fd, probeSx) === 0 && inodeKey(probeSx) === key);
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
      pinned: this.#pinned,
      mounts: this.#handles.mountCount,
      reopened: this.#cache.reopened,
      shed: this.#cache.shed,
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

  /**
   * The inode of the file O_PATH descriptor `fd` names (`sx`: its statx) with one more lookup:
   * the existing one (and `fd` is closed, or kept as its descriptor when it had none), or a new
   * one owning `fd`. Closes `fd` when it throws (mode `mandatory`: the file has no handle).
   */
  lookedUp(fd: number, sx: StatxBuffer): Inode {
    const key = inodeKey(sx);
    const known = this.#byKey.get(key);
    if (known !== undefined) {
      if (known.handle === undefined || known.cfd >= 0) {
        closeQuietly(fd);
        this.#cache.touch(known);
        this.ref(known);
        return known;
      }
      // Its descriptor was closed: the inode number may have been reused by another file
      // since (a handle carries the generation, a key does not).
      if (this.#handles.handleOf(fd) === known.handle) {
        known.cfd = fd;
        this.#cache.add(known);
        this.ref(known);
        return known;
      }
      this.#byKey.delete(key);
    }
    const node = this.#newNode(fd, key, sx);
    this.#byId.set(node.nodeid, node);
    this.#byKey.set(key, node);
    return node;
  }

  #newNode(fd: number, key: string, sx: StatxBuffer): Node {
    const type = sx.mode & S_IFMT;
    const handles = this.#handles;
    let handle: string | undefined;
    let mountId = 0;
    if (handles.active) {
      const h = handles.handleOf(fd);
      let r = typeof h === "number" ? h : 0;
      if (typeof h === "string") {
        mountId = handles.lastMountId;
        // A key names its mount by statx's id: the handle must be of that mount.
        if (sx.mntId !== 0n && BigInt(mountId) !== sx.mntId) r = -Errno.ESTALE;
        else r = this.withFds(() => handles.acquireMount(mountId, fd, type));
        if (r === 0) handle = h;
      }
      if (r < 0 && handles.mandatory) {
        closeQuietly(fd);
        throw new ErrnoError(-r, "name_to_handle_at", "the file has no usable handle");
      }
    }
    const node = new Node(this.#cache, this.#next++, fd, key, type, handle, mountId);
    if (handle === undefined) this.#pinned++;
    else this.#cache.add(node);
    return node;
  }

  /** One more lookup of a known inode (a LINK to it). */
  ref(inode: Inode): void {
    const node = this.#byId.get(inode.nodeid);
    if (node !== undefined && node.nodeid !== 1n) node.refcount++;
  }

  /** Drops `nlookup` lookups of `nodeid`; at 0 the inode is removed and its fd closed. */
  forget(nodeid: bigint, nlookup: bigint): void {
    const node = this.#byId.get(nodeid);
    if (node === undefined || nodeid === 1n) return;
    node.refcount = nlookup >= node.refcount ? 0n : node.refcount - nlookup;
    if (node.refcount !== 0n) return;
    this.#byId.delete(nodeid);
    if (this.#byKey.get(node.key) === node) this.#byKey.delete(node.key);
    if (node.handle === undefined) {
      closeQuietly(node.cfd);
      this.#pinned--;
    } else {
      this.#cache.close(node);
      this.#handles.releaseMount(node.mountId);
    }
  }

  /** Forgets every inode but the root (a session ends). */
  clear(): void {
    for (const node of [...this.#byId.values()]) {
      if (node.nodeid !== 1n) this.forget(node.nodeid, node.refcount);
    }
  }

  /** Closes everything, the root included. */
  close(): void {
    this.clear();
    closeQuietly(this.#root.cfd);
    this.#handles.close();
    this.#byId.clear();
    this.#byKey.clear();
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
