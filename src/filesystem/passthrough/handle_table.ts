/**
 * Open files and directories of the passthrough file system: fh → the host descriptor the
 * guest's OPEN, CREATE, TMPFILE or OPENDIR made. fh values count up from 1 and are never reused
 * within the table's life, so a stale fh from the guest can only miss.
 *
 * @module
 */
import { closeQuietly } from "../../ffi/mod.ts";

/** One open file or directory. */
export interface Handle {
  /** The guest's name for it. */
  readonly fh: bigint;
  /** The node it was opened on. */
  readonly nodeid: bigint;
  /** The host descriptor (a real open file, never O_PATH), owned by the table. */
  readonly fd: number;
  /** Opened by OPENDIR (served by READDIR, FSYNCDIR, RELEASEDIR only). */
  readonly dir: boolean;
  /**
   * For a directory: the readdir cookie the descriptor's position stands at, or -1 when
   * unknown (entries were read ahead and not all passed on).
   */
  dirPos: bigint;
}

/** fh → handle. */
export class HandleTable {
  readonly #byFh = new Map<bigint, Handle>();
  /** Open handles per node. */
  readonly #byNode = new Map<bigint, number>();
  #next = 1n;

  /** Open handles. */
  get size(): number {
    return this.#byFh.size;
  }

  /** A new handle owning `fd`. */
  add(nodeid: bigint, fd: number, dir: boolean): Handle {
    const h: Handle = { fh: this.#next++, nodeid, fd, dir, dirPos: 0n };
    this.#byFh.set(h.fh, h);
    this.#byNode.set(nodeid, (this.#byNode.get(nodeid) ?? 0) + 1);
    return h;
  }

  /** Whether a handle of `nodeid` is open. */
  isOpen(nodeid: bigint): boolean {
    return this.#byNode.has(nodeid);
  }

  /** The handle `fh`, or undefined. */
  get(fh: bigint): Handle | undefined {
    return this.#byFh.get(fh);
  }

  /** Removes `h` and closes its descriptor. */
  release(h: Handle): void {
    if (this.#byFh.get(h.fh) !== h) return;
    this.#byFh.delete(h.fh);
    const open = (this.#byNode.get(h.nodeid) ?? 1) - 1;
    if (open > 0) this.#byNode.set(h.nodeid, open);
    else this.#byNode.delete(h.nodeid);
    closeQuietly(h.fd);
  }

  /** Closes every handle (fh values keep counting up). */
  clear(): void {
    for (const h of this.#byFh.values()) closeQuietly(h.fd);
    this.#byFh.clear();
    this.#byNode.clear();
  }
}
