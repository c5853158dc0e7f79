/**
 * The passthrough file system's inode table: nodeid ↔ an O_PATH descriptor of the host file,
 * keyed by the host's (st_dev, st_ino) so one host file has one nodeid, with the lookup counts
 * the guest's LOOKUP and FORGET move.
 *
 * @module
 */
import { closeQuietly } from "../../ffi/mod.ts";

/** One host file the guest knows. */
export interface Inode {
  readonly nodeid: bigint;
  /** An O_PATH descriptor of the host file, owned by the store. */
  readonly fd: number;
  readonly dev: bigint;
  readonly ino: bigint;
  /** The guest's lookup count. */
  refcount: bigint;
}

function key(dev: bigint, ino: bigint): string {
  return `${dev}:${ino}`;
}

/** nodeid → inode, and (dev, ino) → inode. The root is nodeid 1 and is never forgotten. */
export class InodeStore {
  readonly #byId = new Map<bigint, Inode>();
  readonly #byKey = new Map<string, Inode>();
  #next = 2n;

  /** Puts the root (nodeid 1) in the store. */
  constructor(rootFd: number, dev: bigint, ino: bigint) {
    const root: Inode = { nodeid: 1n, fd: rootFd, dev, ino, refcount: 2n ** 62n };
    this.#byId.set(1n, root);
    this.#byKey.set(key(dev, ino), root);
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
   * The inode of host file (dev, ino) with one more lookup: the existing one (and `fd` is
   * closed), or a new one owning `fd`.
   */
  lookedUp(fd: number, dev: bigint, ino: bigint): Inode {
    const k = key(dev, ino);
    const known = this.#byKey.get(k);
    if (known !== undefined) {
      closeQuietly(fd);
      if (known.nodeid !== 1n) known.refcount++;
      return known;
    }
    const inode: Inode = { nodeid: this.#next++, fd, dev, ino, refcount: 1n };
    this.#byId.set(inode.nodeid, inode);
    this.#byKey.set(k, inode);
    return inode;
  }

  /** Drops `nlookup` lookups of `nodeid`; at 0 the inode is removed and its fd closed. */
  forget(nodeid: bigint, nlookup: bigint): void {
    const inode = this.#byId.get(nodeid);
    if (inode === undefined || nodeid === 1n) return;
    inode.refcount = nlookup >= inode.refcount ? 0n : inode.refcount - nlookup;
    if (inode.refcount === 0n) {
      this.#byId.delete(nodeid);
      this.#byKey.delete(key(inode.dev, inode.ino));
      closeQuietly(inode.fd);
    }
  }

  /** Forgets every inode but the root (a session ends). */
  clear(): void {
    for (const inode of this.#byId.values()) {
      if (inode.nodeid !== 1n) this.forget(inode.nodeid, inode.refcount);
    }
  }

  /** Closes everything, the root included. */
  close(): void {
    this.clear();
    closeQuietly(this.#byId.get(1n)?.fd);
    this.#byId.clear();
    this.#byKey.clear();
  }
}
