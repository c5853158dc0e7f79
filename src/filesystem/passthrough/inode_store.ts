/**
 * The passthrough file system's inode table: nodeid ↔ an O_PATH descriptor of the host file,
 * keyed by the host's (st_dev, st_ino, mount id) so one host file seen through one mount has one
 * nodeid, with the lookup counts the guest's LOOKUP (and every call that creates a node) and
 * FORGET move. Nodeids are never reused within the store's life.
 *
 * @module
 */
import { closeQuietly, cString, type StatxBuffer } from "../../ffi/mod.ts";

/** One host file the guest knows. */
export interface Inode {
  /** The guest's name for it. */
  readonly nodeid: bigint;
  /** An O_PATH descriptor of the host file, owned by the store. */
  readonly fd: number;
  /** `fd` as a NUL-terminated decimal name, to reopen it relative to /proc/self/fd. */
  readonly procName: Uint8Array;
  /** (dev, ino, mount id) as a string. */
  readonly key: string;
  /** The file type bits of `st_mode` (S_IFREG, S_IFDIR, ...); a file's type never changes. */
  readonly type: number;
  /** The guest's lookup count. */
  refcount: bigint;
}

/** The key of the file a statx buffer describes: device, inode number and mount id. */
export function inodeKey(sx: StatxBuffer): string {
  return `${sx.devMajor}:${sx.devMinor}:${sx.ino}:${sx.mntId}`;
}

/** nodeid → inode, and key → inode. The root is nodeid 1 and is never forgotten. */
export class InodeStore {
  readonly #byId = new Map<bigint, Inode>();
  readonly #byKey = new Map<string, Inode>();
  readonly #root: Inode;
  #next = 2n;

  /** Puts the root (nodeid 1, owning `rootFd`) in the store. */
  constructor(rootFd: number, key: string, type: number) {
    this.#root = {
      nodeid: 1n,
      fd: rootFd,
      procName: cString(String(rootFd)),
      key,
      type,
      refcount: 2n ** 62n,
    };
    this.#byId.set(1n, this.#root);
    this.#byKey.set(key, this.#root);
  }

  /** The root inode (nodeid 1). */
  get root(): Inode {
    return this.#root;
  }

  /** Inodes known (the root included). */
  get size(): number {
    return this.#byId.size;
  }

  /** The inode of `nodeid`, or undefined (an id the guest should not have). */
  get(nodeid: bigint): Inode | undefined {
    return this.#byId.get(nodeid);
  }

  /**
   * The inode of host file `key` with one more lookup: the existing one (and `fd` is closed),
   * or a new one owning `fd`.
   */
  lookedUp(fd: number, key: string, type: number): Inode {
    const known = this.#byKey.get(key);
    if (known !== undefined) {
      closeQuietly(fd);
      this.ref(known);
      return known;
    }
    const inode: Inode = {
      nodeid: this.#next++,
      fd,
      procName: cString(String(fd)),
      key,
      type,
      refcount: 1n,
    };
    this.#byId.set(inode.nodeid, inode);
    this.#byKey.set(key, inode);
    return inode;
  }

  /** One more lookup of a known inode (a LINK to it). */
  ref(inode: Inode): void {
    if (inode.nodeid !== 1n) inode.refcount++;
  }

  /** Drops `nlookup` lookups of `nodeid`; at 0 the inode is removed and its fd closed. */
  forget(nodeid: bigint, nlookup: bigint): void {
    const inode = this.#byId.get(nodeid);
    if (inode === undefined || nodeid === 1n) return;
    inode.refcount = nlookup >= inode.refcount ? 0n : inode.refcount - nlookup;
    if (inode.refcount === 0n) {
      this.#byId.delete(nodeid);
      if (this.#byKey.get(inode.key) === inode) this.#byKey.delete(inode.key);
      closeQuietly(inode.fd);
    }
  }

  /** Forgets every inode but the root (a session ends). */
  clear(): void {
    for (const inode of [...this.#byId.values()]) {
      if (inode.nodeid !== 1n) this.forget(inode.nodeid, inode.refcount);
    }
  }

  /** Closes everything, the root included. */
  close(): void {
    this.clear();
    closeQuietly(this.#root.fd);
    this.#byId.clear();
    this.#byKey.clear();
  }
}
