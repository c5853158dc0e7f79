/**
 * DAX: the guest's cache window, as FUSE_SETUPMAPPING and FUSE_REMOVEMAPPING change it. Each
 * mapping puts a file range at an offset of the window; the front end maps it (vhost-user
 * SHMEM_MAP / SHMEM_UNMAP, through a `WindowMapper`) and the guest loads and stores the file's
 * pages there with no message.
 *
 * Every field is checked before anything is asked of the front end: the flags, the alignment of
 * offsets and lengths to pages, the window's bounds (no wrap-around), the file (a regular file the
 * file system can open read-write: the front end maps every range read-write) and its size (the
 * front end refuses a range past the end of the file, and extends an empty one). The front end
 * refuses overlapping maps and unmaps only whole mappings, so a request that overlaps existing
 * mappings first unmaps them and maps back the parts it does not cover (FUSE's split semantics).
 * Live mappings are bounded by the window's 2 MiB ranges (each one is a memory slot of the
 * front end); a request that would pass that gets ENOSPC.
 *
 * Changes run one at a time, in the order the requests came, each as a sequence of answered
 * front-end requests; the mapping table always says what the front end has mapped.
 *
 * @module
 */
import { closeQuietly, dupCloexecRaw } from "../ffi/mod.ts";
import { Errno, ErrnoError } from "../ffi/errno.ts";
import type { Context, FileSystem } from "../filesystem/filesystem.ts";
import type { Logger } from "../log.ts";
import {
  FUSE_DAX_SHIFT,
  FUSE_SETUPMAPPING_FLAG_READ,
  FUSE_SETUPMAPPING_FLAG_WRITE,
} from "../wire/fuse.ts";

/** The page size mappings are aligned to. */
export const DAX_PAGE = 4096;
/** One DAX range (Linux maps 2 MiB at a time): the window holds size / DAX_RANGE mappings. */
export const DAX_RANGE = 1 << FUSE_DAX_SHIFT;

/** What maps ranges of the window (the front end, through the back-end channel). */
export interface WindowMapper {
  /** Whether the front end negotiated a window and a channel to map it now. */
  readonly available: boolean;
  /** Maps `len` bytes of `fd` at `fdOffset` to window offset `shmOffset` (fd stays the caller's). */
  map(
    fd: number,
    fdOffset: number,
    shmOffset: number,
    len: number,
    writable: boolean,
  ): Promise<void>;
  /** Unmaps exactly a range `map` mapped. */
  unmap(shmOffset: number, len: number): Promise<void>;
}

/** One live mapping of the window. */
export interface DaxMapping {
  /** Window offset and length. */
  moffset: number;
  len: number;
  /** File offset. */
  foffset: number;
  /** The node it maps. */
  nodeid: bigint;
  /** Whether the guest asked for writes. */
  writable: boolean;
  /** Our O_RDWR descriptor of the file (to map a split part back). */
  fd: number;
}

/** Counters. */
export interface DaxStats {
  /** SETUPMAPPING requests served, and refused with an errno. */
  setups: number;
  setupErrors: number;
  /** REMOVEMAPPING requests served, and refused. */
  removals: number;
  removalErrors: number;
  /** Front-end maps and unmaps done. */
  maps: number;
  unmaps: number;
  /** Mappings dropped when the session ended (the front end drops its own at a reset). */
  dropped: number;
}

const EINVAL = (what: string) => new ErrnoError(Errno.EINVAL, "SETUPMAPPING", what);
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const PAGE_MASK = BigInt(DAX_PAGE - 1);
const U64_MAX = (1n << 64n) - 1n;

/** The cache window of one device. */
export class DaxWindow {
  /** The window's size in bytes. */
  readonly size: number;
  /** The most live mappings (the window's 2 MiB ranges). */
  readonly maxMappings: number;
  readonly stats: DaxStats = {
    setups: 0,
    setupErrors: 0,
    removals: 0,
    removalErrors: 0,
    maps: 0,
    unmaps: 0,
    dropped: 0,
  };
  readonly #mapper: WindowMapper;
  readonly #log: Logger;
  /** Live mappings, by window offset. */
  #mappings: DaxMapping[] = [];
  /** The last change queued: the next one runs after it. */
  #tail: Promise<void> = Promise.resolve();
  /** Bumped when the session ends: changes queued before do nothing after. */
  #generation = 0;
  /** Changes queued and not finished. */
  #busy = 0;

  constructor(size: number, mapper: WindowMapper, log: Logger) {
    this.size = size;
    this.maxMappings = Math.floor(size / DAX_RANGE);
    this.#mapper = mapper;
    this.#log = log;
  }

  /** The live mappings, by window offset (a copy). */
  get mappings(): readonly Readonly<DaxMapping>[] {
    return this.#mappings.map((m) => ({ ...m }));
  }

  /** How many mappings are live. */
  get count(): number {
    return this.#mappings.length;
  }

  /** Why window range `moffset`+`len` is bad (empty, unaligned, outside), or undefined. */
  #rangeProblem(moffset: bigint, len: bigint): string | undefined {
    if (len === 0n || ((len | moffset) & PAGE_MASK) !== 0n) {
      return `range ${moffset}+${len} is empty or not in whole ${DAX_PAGE}-byte pages`;
    }
    if (moffset >= BigInt(this.size) || len > BigInt(this.size) - moffset) {
      return `range ${moffset}+${len} is outside the ${this.size}-byte window`;
    }
    return undefined;
  }

  /**
   * Whether changes are queued or running: they advance in Promise reactions, so the device
   * must let its isolate's event loop run until this is false.
   */
  get busy(): boolean {
    return this.#busy > 0;
  }

  /** Whether the front end can map now. */
  get available(): boolean {
    return this.size > 0 && this.#mapper.available;
  }

  /**
   * FUSE_SETUPMAPPING: `len` bytes of `nodeid`'s file at `foffset` to window offset `moffset`.
   * Fields are checked now (ErrnoError thrown); the change is queued and the Promise settles when
   * the front end has mapped it (or rejects with the errno).
   */
  setup(
    fs: FileSystem,
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    foffset: bigint,
    len: bigint,
    flags: bigint,
    moffset: bigint,
  ): Promise<void> {
    this.stats.setups++;
    try {
      if (!this.available) {
        throw new ErrnoError(Errno.ENOSYS, "SETUPMAPPING", "no cache window was negotiated");
      }
      const known = FUSE_SETUPMAPPING_FLAG_READ | FUSE_SETUPMAPPING_FLAG_WRITE;
      if ((flags & ~known) !== 0n || flags === 0n) throw EINVAL(`flags 0x${flags.toString(16)}`);
      const bad = this.#rangeProblem(moffset, len);
      if (bad !== undefined) throw EINVAL(bad);
      if ((foffset & PAGE_MASK) !== 0n) throw EINVAL(`file offset ${foffset} is not page-aligned`);
      if (foffset > MAX_SAFE - len) throw EINVAL(`file offset ${foffset} is too large`);
      if (fs.mappable === undefined) {
        throw new ErrnoError(Errno.ENOSYS, "SETUPMAPPING", "the file system maps nothing");
      }
    } catch (e) {
      this.stats.setupErrors++;
      this.#log.debug(`SETUPMAPPING of node ${nodeid}: ${errText(e)}`);
      return Promise.reject(e);
    }
    const m = {
      moffset: Number(moffset),
      len: Number(len),
      foffset: Number(foffset),
      nodeid,
      writable: (flags & FUSE_SETUPMAPPING_FLAG_WRITE) !== 0n,
      fd: -1,
    };
    const mappable = fs.mappable as NonNullable<FileSystem["mappable"]>;
    return this.#queue(async () => {
      const file = await mappable.call(fs, ctx, nodeid, fh === U64_MAX ? undefined : fh);
      m.fd = file.fd;
      try {
        if (file.size < BigInt(m.foffset + m.len)) {
          // The front end refuses to map past the end of the file (and QEMU would extend an
          // empty one to fit): the guest asks whole 2 MiB ranges, so a file's last partial range
          // cannot be served through the window (EIO: the guest's read or write fails, never
          // shows zeros). The file system marks DAX only files of whole ranges.
          throw new ErrnoError(
            Errno.EIO,
            "SETUPMAPPING",
            `${m.foffset}+${m.len} runs past the end of the file (${file.size} bytes)`,
          );
        }
        await this.#replace(m.moffset, m.len, m);
      } catch (e) {
        if (m.fd >= 0 && !this.#mappings.includes(m)) closeQuietly(m.fd);
        throw e;
      }
    }).catch((e) => {
      this.stats.setupErrors++;
      this.#log.debug(
        `SETUPMAPPING of node ${nodeid} ${m.foffset}+${m.len} at ${m.moffset}: ${errText(e)}`,
      );
      throw e;
    });
  }

  /**
   * FUSE_REMOVEMAPPING: unmaps exactly the ranges named (parts of mappings outside them stay).
   * All ranges are checked first (page-aligned, non-zero, inside the window, not overlapping each
   * other): one bad range refuses the whole request with EINVAL. A range where nothing is mapped
   * is no error.
   */
  remove(ranges: readonly { moffset: bigint; len: bigint }[]): Promise<void> {
    this.stats.removals++;
    const checked: { moffset: number; len: number }[] = [];
    try {
      if (!this.available) {
        throw new ErrnoError(Errno.ENOSYS, "REMOVEMAPPING", "no cache window was negotiated");
      }
      for (const { moffset, len } of ranges) {
        const bad = this.#rangeProblem(moffset, len);
        if (bad !== undefined) throw new ErrnoError(Errno.EINVAL, "REMOVEMAPPING", bad);
        checked.push({ moffset: Number(moffset), len: Number(len) });
      }
      checked.sort((a, b) => a.moffset - b.moffset);
      for (let i = 1; i < checked.length; i++) {
        const a = checked[i - 1] as { moffset: number; len: number };
        const b = checked[i] as { moffset: number; len: number };
        if (a.moffset + a.len > b.moffset) {
          throw new ErrnoError(Errno.EINVAL, "REMOVEMAPPING", "ranges overlap each other");
        }
      }
    } catch (e) {
      this.stats.removalErrors++;
      return Promise.reject(e);
    }
    return this.#queue(async () => {
      for (const r of checked) await this.#replace(r.moffset, r.len, undefined);
    }).catch((e) => {
      this.stats.removalErrors++;
      throw e;
    });
  }

  /**
   * The guest forgot `nodeid` (FORGET): a guest drops its mappings of a file before it forgets
   * it, so any left are unmapped now (queued; failures are logged).
   */
  forget(nodeid: bigint): void {
    if (!this.#mappings.some((m) => m.nodeid === nodeid)) return;
    this.#queue(async () => {
      for (const m of this.#mappings.filter((x) => x.nodeid === nodeid)) {
        await this.#replace(m.moffset, m.len, undefined);
      }
    }).catch((e) => this.#log.warn(`unmapping forgotten node ${nodeid}: ${errText(e)}`));
  }

  /**
   * Unmaps every mapping (the daemon stops while the front end stays). Settles when done; never
   * rejects.
   */
  unmapAll(): Promise<void> {
    return this.#queue(async () => {
      for (const m of [...this.#mappings]) await this.#replace(m.moffset, m.len, undefined);
    }).catch((e) => this.#log.warn(`unmapping the window: ${errText(e)}`));
  }

  /**
   * The session ended with the front end's device (a reset, a disconnect): the front end drops
   * its mappings itself, so the table is only forgotten, and changes still queued do nothing.
   */
  reset(): void {
    this.#generation++;
    this.stats.dropped += this.#mappings.length;
    this.#forgetAll();
  }

  /** Closes every descriptor and forgets every mapping. */
  #forgetAll(): void {
    for (const m of this.#mappings.splice(0)) closeQuietly(m.fd);
  }

  /** Runs `change` after every change queued before, unless the session ends first. */
  #queue(change: () => Promise<void>): Promise<void> {
    const generation = this.#generation;
    this.#busy++;
    const run = this.#tail.then(() => {
      if (generation !== this.#generation) {
        throw new ErrnoError(Errno.EIO, "DAX", "the session ended");
      }
      return change();
    }).finally(() => this.#busy--);
    this.#tail = run.catch(() => {});
    return run;
  }

  /**
   * Makes window range [at, at + len) hold `next` (or nothing): every mapping overlapping it is
   * unmapped, the parts of them outside the range are mapped back, then `next` is mapped.
   */
  async #replace(at: number, len: number, next: DaxMapping | undefined): Promise<void> {
    const end = at + len;
    const hit = this.#mappings.filter((m) => m.moffset < end && at < m.moffset + m.len);
    const parts = (m: DaxMapping): DaxMapping[] => {
      const out: DaxMapping[] = [];
      if (m.moffset < at) out.push({ ...m, len: at - m.moffset, fd: -1 });
      if (m.moffset + m.len > end) {
        const cut = end - m.moffset;
        out.push({ ...m, moffset: end, len: m.len - cut, foffset: m.foffset + cut, fd: -1 });
      }
      return out;
    };
    const kept = hit.reduce((n, m) => n + parts(m).length, 0);
    const after = this.#mappings.length - hit.length + kept + (next ? 1 : 0);
    if (after > this.maxMappings) {
      throw new ErrnoError(
        Errno.ENOSPC,
        "SETUPMAPPING",
        `${after} mappings would pass the window's ${this.maxMappings}`,
      );
    }
    const generation = this.#generation;
    for (const m of hit) {
      await this.#mapper.unmap(m.moffset, m.len);
      this.stats.unmaps++;
      if (generation !== this.#generation) return;
      const i = this.#mappings.indexOf(m);
      if (i >= 0) this.#mappings.splice(i, 1);
      try {
        // The parts outside the range go back, each from a descriptor of its own.
        for (const part of parts(m)) {
          const fd = dupCloexecRaw(m.fd);
          if (fd < 0) throw new ErrnoError(-fd, "dup");
          part.fd = fd;
          await this.#map(part, generation);
        }
      } finally {
        closeQuietly(m.fd);
      }
    }
    if (next !== undefined) await this.#map(next, generation);
  }

  async #map(m: DaxMapping, generation: number): Promise<void> {
    try {
      await this.#mapper.map(m.fd, m.foffset, m.moffset, m.len, m.writable);
    } catch (e) {
      if (m.fd >= 0) closeQuietly(m.fd);
      m.fd = -1;
      throw e;
    }
    this.stats.maps++;
    if (generation !== this.#generation) {
      // The session ended meanwhile: the front end dropped its mappings (or is gone).
      closeQuietly(m.fd);
      m.fd = -1;
      return;
    }
    const i = this.#mappings.findIndex((x) => x.moffset > m.moffset);
    this.#mappings.splice(i < 0 ? this.#mappings.length : i, 0, m);
  }
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
