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

/** Bytes of entries read per getdents64 call (each open directory has its own buffer). */
const BUFFER_SIZE = 16 * 1024;

/**
 * One open directory's entries read ahead: the guest's buffer holds far fewer entries than one
 * getdents64 returns, and reading the directory again for every request would cost a seek and
 * a whole read each time. Made at the handle's first listing, dropped with the handle (as
 * glibc's `DIR`).
 */
class DirStream {
  readonly buf = stableBytes(BUFFER_SIZE);
  readonly view = new DataView(this.buf.buffer);
  /** Bytes of entries in `buf`. */
  len = 0;
  /** Where the next unsent entry starts. */
  at = 0;
  /** The guest's cookie that resumes at `at`; -1 when `buf` holds nothing to resume. */
  resumeOff = -1n;
}

/** The reader of every listing (the file system serves one request at a time). */
export class DirReader {
  readonly #streams = new WeakMap<Handle, DirStream>();
  #s: DirStream | undefined;
  #buf: Uint8Array = new Uint8Array(0);
  #view: DataView = new DataView(new ArrayBuffer(0));
  #filled = false;
  #handle: Handle | undefined;
  /** The current entry's DT_* type. */
  type = 0;
  #nameAt = 0;
  #nameLen = 0;
  /** Where the current entry starts in the buffer. */
  #entryAt = 0;
  /**
   * The cookie resuming after the current entry, and the one of the entry before it: where it
   * stands in the buffer (read as a BigInt only when asked), or -1 and its value (set by
   * `start`, or kept when the buffer is refilled).
   */
  #offAt = -1;
  #offValue = 0n;
  #prevOffAt = -1;
  #prevOffValue = 0n;

  /** The current entry's inode number. */
  get ino(): bigint {
    return this.#view.getBigUint64(this.#entryAt + DIRENT64.ino, true);
  }

  /** The cookie resuming after the current entry. */
  get off(): bigint {
    return this.#offAt < 0
      ? this.#offValue
      : BigInt.asUintN(64, this.#view.getBigInt64(this.#offAt, true));
  }

  #setOff(value: bigint): void {
    this.#offAt = -1;
    this.#offValue = value;
  }

  get #prevOff(): bigint {
    return this.#prevOffAt < 0
      ? this.#prevOffValue
      : BigInt.asUintN(64, this.#view.getBigInt64(this.#prevOffAt, true));
  }

  /** Starts reading `h` at cookie `offset` (0: the beginning). */
  start(h: Handle, offset: bigint): void {
    let s = this.#streams.get(h);
    if (s === undefined) {
      s = new DirStream();
      this.#streams.set(h, s);
    }
    this.#s = s;
    this.#buf = s.buf;
    this.#view = s.view;
    this.#handle = h;
    if (s.resumeOff === offset && offset !== 0n && s.at < s.len) {
      // The entries after `offset` are still in the buffer, and the descriptor stands after them.
      s.resumeOff = -1n;
      this.#filled = true;
      this.#setOff(offset);
      return;
    }
    s.resumeOff = -1n;
    if (h.dirPos !== offset) {
      const r = lseekRaw(h.fd, BigInt.asIntN(64, offset), SEEK_SET);
      if (r < 0n) throw new ErrnoError(Number(-r), "lseek");
      h.dirPos = offset;
    }
    s.len = 0;
    s.at = 0;
    this.#filled = false;
    this.#setOff(offset);
  }

  /** Moves to the next entry; false at the end of the directory. */
  next(): boolean {
    const h = this.#handle;
    const s = this.#s;
    if (h === undefined || s === undefined) return false;
    if (s.at >= s.len) {
      // The current cookie outlives the buffer's contents.
      if (this.#offAt >= 0) this.#setOff(this.off);
      const n = getdents64Raw(h.fd, s.buf);
      if (n < 0) throw new ErrnoError(-n, "getdents64");
      if (n === 0) return false;
      // The descriptor is now past entries the caller has not taken yet.
      h.dirPos = -1n;
      this.#filled = true;
      s.len = n;
      s.at = 0;
    }
    const b = this.#buf;
    const at = s.at;
    this.#entryAt = at;
    this.#prevOffAt = this.#offAt;
    this.#prevOffValue = this.#offValue;
    this.#offAt = at + DIRENT64.off;
    const reclen = (b[at + DIRENT64.reclen] as number) |
      ((b[at + DIRENT64.reclen + 1] as number) << 8);
    this.type = b[at + DIRENT64.type] as number;
    const nameAt = at + DIRENT64.name;
    const end = at + reclen;
    // reclen is the name, its NUL and the header rounded up to 8 bytes: the NUL is in the
    // record's last 8 (the padding after it holds whatever the buffer held).
    let nul = Math.max(nameAt, end - 8);
    while (nul < end && b[nul] !== 0) nul++;
    this.#nameAt = nameAt;
    this.#nameLen = nul - nameAt;
    s.at = end;
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
   * buffer was full): the handle's next listing resumes at it, from the buffer.
   */
  finish(taken: boolean): void {
    const h = this.#handle;
    const s = this.#s;
    this.#handle = undefined;
    this.#s = undefined;
    if (h === undefined || s === undefined || !this.#filled) return;
    // Every entry read was passed on: the descriptor stands right after the last one.
    if (taken && s.at >= s.len) h.dirPos = this.off;
    // The current entry was not sent: the guest resumes at the cookie before it.
    if (!taken) {
      s.at = this.#entryAt;
      s.resumeOff = this.#prevOff;
    }
  }

  /**
   * READDIR: `h`'s entries from `offset` into `sink` until it is full or the end. `ino` maps
   * the host's inode numbers to the guest's (default: as they are).
   */
  list(h: Handle, offset: bigint, sink: DirentSink, ino?: (ino: bigint) => bigint): void {
    this.start(h, offset);
    let taken = true;
    try {
      if (ino !== undefined) {
        while (this.next()) {
          if (!sink.add(ino(this.ino), this.off, this.type, this.name())) {
            taken = false;
            break;
          }
        }
      } else if (sink.addRaw !== undefined) {
        while (this.next()) {
          const at = this.#entryAt;
          const raw = sink.addRaw(
            this.#buf,
            at + DIRENT64.ino,
            at + DIRENT64.off,
            this.type,
            this.#nameAt,
            this.#nameLen,
          );
          if (!raw) {
            taken = false;
            break;
          }
        }
      } else {
        while (this.next()) {
          if (!sink.add(this.ino, this.off, this.type, this.name())) {
            taken = false;
            break;
          }
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
   * failure ends the listing, and is thrown only when nothing was sent. `ino` maps the inode
   * numbers of "." and ".." as `list`'s.
   */
  listPlus(
    h: Handle,
    offset: bigint,
    sink: DirentPlusSink,
    dot: Entry,
    lookup: (cname: Uint8Array) => Entry,
    ino?: (ino: bigint) => bigint,
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
          dot.attr.ino = ino === undefined ? this.ino : ino(this.ino);
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
