/**
 * Reading a directory handle with getdents64(2), entry by entry, resuming at the guest's
 * offset. Offsets are the host file system's own `d_off` cookies: the guest hands one back and
 * the reader `lseek`s there, so a listing split over many READDIRs neither skips nor repeats an
 * entry while the directory does not change.
 *
 * @module
 */
import type { DirentPlusSink, DirentSink, Entry } from "../filesystem.ts";
import {
  DIRENT64,
  Errno,
  ErrnoError,
  getdents64Raw,
  lseekRaw,
  SEEK_SET,
  stableBytes,
} from "../../ffi/mod.ts";
import type { Handle } from "./handle_table.ts";

/** Bytes of entries read per getdents64 call. */
const BUFFER_SIZE = 32 * 1024;

/** One reader, reused for every listing (the file system serves one request at a time). */
export class DirReader {
  readonly #buf = stableBytes(BUFFER_SIZE);
  readonly #view = new DataView(this.#buf.buffer);
  #len = 0;
  #at = 0;
  #filled = false;
  #handle: Handle | undefined;
  /** The current entry's inode number. */
  ino = 0n;
  /** The cookie resuming after the current entry. */
  off = 0n;
  /** The current entry's DT_* type. */
  type = 0;
  #nameAt = 0;
  #nameLen = 0;
  /** Where the current entry starts in the buffer, and the cookie of the entry before it. */
  #entryAt = 0;
  #prevOff = 0n;
  /**
   * Entries read ahead and not sent, kept for the next request of the same handle: the guest's
   * buffer holds far fewer entries than one getdents64 returns, and reading the directory again
   * for every request would cost a seek and a whole read each time.
   */
  #resume: { handle: Handle; offset: bigint; at: number } | undefined;
  /**
   * The same for handles whose listing was interrupted by another handle's: their unsent
   * entries, copied out of the shared buffer (at most one buffer's worth per open directory,
   * dropped with the handle).
   */
  readonly #parked = new WeakMap<Handle, { offset: bigint; bytes: Uint8Array }>();

  /** Starts reading `h` at cookie `offset` (0: the beginning). */
  start(h: Handle, offset: bigint): void {
    const r = this.#resume;
    this.#resume = undefined;
    if (r !== undefined && r.handle !== h && r.at < this.#len) {
      // Another handle's listing takes the buffer: park the first one's unsent entries.
      this.#parked.set(r.handle, {
        offset: r.offset,
        bytes: this.#buf.slice(r.at, this.#len),
      });
    }
    const parked = this.#parked.get(h);
    if (parked !== undefined) {
      this.#parked.delete(h);
      if (parked.offset === offset && offset !== 0n) {
        this.#buf.set(parked.bytes);
        this.#len = parked.bytes.length;
        this.#handle = h;
        this.#at = 0;
        this.#filled = true;
        this.off = offset;
        return;
      }
    }
    if (r !== undefined && r.handle === h && r.offset === offset && offset !== 0n) {
      // The entries after `offset` are still in the buffer, and the descriptor stands after them.
      this.#handle = h;
      this.#at = r.at;
      this.#filled = true;
      this.off = offset;
      return;
    }
    if (h.dirPos !== offset) {
      const r = lseekRaw(h.fd, BigInt.asIntN(64, offset), SEEK_SET);
      if (r < 0n) throw new ErrnoError(Number(-r), "lseek");
      h.dirPos = offset;
    }
    this.#handle = h;
    this.#len = 0;
    this.#at = 0;
    this.#filled = false;
  }

  /** Moves to the next entry; false at the end of the directory. */
  next(): boolean {
    const h = this.#handle;
    if (h === undefined) return false;
    if (this.#at >= this.#len) {
      const n = getdents64Raw(h.fd, this.#buf);
      if (n < 0) throw new ErrnoError(-n, "getdents64");
      if (n === 0) return false;
      // The descriptor is now past entries the caller has not taken yet.
      h.dirPos = -1n;
      this.#filled = true;
      this.#len = n;
      this.#at = 0;
    }
    const v = this.#view;
    const at = this.#at;
    this.#entryAt = at;
    this.#prevOff = this.off;
    const reclen = v.getUint16(at + DIRENT64.reclen, true);
    this.ino = v.getBigUint64(at + DIRENT64.ino, true);
    this.off = BigInt.asUintN(64, v.getBigInt64(at + DIRENT64.off, true));
    this.type = v.getUint8(at + DIRENT64.type);
    this.#nameAt = at + DIRENT64.name;
    const nul = this.#buf.indexOf(0, this.#nameAt);
    this.#nameLen = (nul < 0 || nul > at + reclen ? at + reclen : nul) - this.#nameAt;
    this.#at = at + reclen;
    return true;
  }

  /** The current entry's name (a view, valid until the next call). */
  name(): Uint8Array {
    return this.#buf.subarray(this.#nameAt, this.#nameAt + this.#nameLen);
  }

  /** The current entry's name with its NUL, for *at calls (a view). */
  cName(): Uint8Array {
    return this.#buf.subarray(this.#nameAt, this.#nameAt + this.#nameLen + 1);
  }

  /** Whether the current entry is "." or "..". */
  isDot(): boolean {
    const b = this.#buf;
    const at = this.#nameAt;
    return b[at] === 0x2e && (this.#nameLen === 1 || (this.#nameLen === 2 && b[at + 1] === 0x2e));
  }

  /**
   * Ends the listing. `taken` is false when the current entry was not passed on (the guest's
   * buffer was full): the next listing then seeks back to the guest's offset.
   */
  finish(taken: boolean): void {
    const h = this.#handle;
    this.#handle = undefined;
    if (h === undefined || !this.#filled) return;
    // Every entry read was passed on: the descriptor stands right after the last one.
    if (taken && this.#at >= this.#len) h.dirPos = this.off;
    // The current entry was not sent: the guest resumes at the cookie before it.
    if (!taken) this.#resume = { handle: h, offset: this.#prevOff, at: this.#entryAt };
  }

  /** READDIR: `h`'s entries from `offset` into `sink` until it is full or the end. */
  list(h: Handle, offset: bigint, sink: DirentSink): void {
    this.start(h, offset);
    let taken = true;
    try {
      while (this.next()) {
        if (!sink.add(this.ino, this.off, this.type, this.name())) {
          taken = false;
          break;
        }
      }
    } finally {
      this.finish(taken);
    }
  }

  /**
   * READDIRPLUS: as `list`, each entry but "." and ".." with `lookup(cname)`'s reply (a lookup
   * count the sink passes on). Room is checked before the lookup, so no count is taken for an
   * entry that is not sent; an entry removed since it was listed (ENOENT) is skipped; another
   * failure ends the listing, and is thrown only when nothing was sent.
   */
  listPlus(
    h: Handle,
    offset: bigint,
    sink: DirentPlusSink,
    dot: Entry,
    lookup: (cname: Uint8Array) => Entry,
  ): void {
    this.start(h, offset);
    let taken = true;
    let added = 0;
    try {
      while (this.next()) {
        const name = this.name();
        if (!sink.fits(name.length)) {
          taken = false;
          break;
        }
        if (this.isDot()) {
          dot.attr.ino = this.ino;
          sink.add(dot, this.off, this.type, name);
          added++;
          continue;
        }
        let entry: Entry;
        try {
          entry = lookup(this.cName());
        } catch (err) {
          if (err instanceof ErrnoError && err.errno === Errno.ENOENT) continue;
          if (added === 0) throw err;
          taken = false;
          break;
        }
        sink.add(entry, this.off, this.type, name);
        added++;
      }
    } finally {
      this.finish(taken);
    }
  }
}
