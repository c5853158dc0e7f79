/**
 * The DAX cache window of the test front end: one virtio shared memory region (shmid 0,
 * VIRTIO_FS_SHMCAP_ID_CACHE) as QEMU 11.1 keeps it for a vhost-user device. The window is an
 * inaccessible reservation of
 * address space; the back end's SHMEM_MAP requests map ranges of its files into it and its
 * SHMEM_UNMAP requests put inaccessible memory back.
 *
 * This class holds the reservation, the table of live mappings and QEMU's rules for accepting a
 * request; it sends nothing (the front end answers the back end and sends ADD_MEM_REG /
 * REM_MEM_REG). The rules, as QEMU 11.1 applies them:
 *
 * - the shmid must name a region (here only the window, region 0);
 * - `len` must not be 0; `fd_offset`, `shm_offset` and `len` must be page-aligned;
 * - the range must lie inside the window, and must not overlap a live mapping (unmap first);
 * - each live mapping takes one memory slot: RAM regions + mappings may not exceed the back end's
 *   GET_MAX_MEM_SLOTS answer ({@linkcode CacheWindowOptions.maxMappings});
 * - the descriptor must be open O_RDWR, even for a read-only map: every range is mapped
 *   `MAP_SHARED`, `PROT_READ | PROT_WRITE`;
 * - the file must hold the whole range (`st_size >= fd_offset + len`);
 * - SHMEM_UNMAP must name exactly a live mapping (same `shm_offset` and `len`).
 *
 * A refused request is counted with its reason ({@linkcode CacheWindow.stats}).
 *
 * @module
 */
import {
  AddressReservation,
  closeQuietly,
  ErrnoError,
  fileSize,
  getFlRaw,
  O_ACCMODE,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
} from "../ffi/mod.ts";
import { SHMEM_MAP_MSG, VHOST_USER_FLAG_MAP_RW } from "../wire/vhost_user.ts";
import { VIRTIO_FS_SHMCAP_ID_CACHE } from "../wire/virtio.ts";
import { type GuestRegion, PAGE_SIZE } from "./guest_ram.ts";

/** A SHMEM_MAP / SHMEM_UNMAP request, as the back end sent it (u64 fields exact as bigint). */
export interface ShmemRequest {
  /** The shared memory region's id. */
  shmid: number;
  /** Offset in the file (SHMEM_MAP; ignored by SHMEM_UNMAP). */
  fdOffset: number | bigint;
  /** Offset in the region. */
  shmOffset: number | bigint;
  /** Length in bytes. */
  len: number | bigint;
  /** Flags (bit 0: VHOST_USER_FLAG_MAP_RW). */
  flags?: number | bigint;
}

/** One live mapping of the window. */
export interface WindowMapping {
  /** The region's id (always the window's). */
  readonly shmid: number;
  /** Offset in the window. */
  readonly shmOffset: number;
  /** Length in bytes. */
  readonly len: number;
  /** Offset in the file. */
  readonly fdOffset: number;
  /** The request's flags (QEMU maps read-write whatever they say). */
  readonly flags: number;
  /** Whether the back end asked for a writable map (flags bit 0). */
  readonly writable: boolean;
}

/** Why a request was refused: one word per rule. */
export type RefusalKind =
  | "message" // malformed: payload size, missing descriptor, not SHMEM_MAP/UNMAP
  | "shmid" // no such shared memory region
  | "length" // len 0
  | "alignment" // fd_offset, shm_offset or len not page-aligned
  | "bounds" // outside the window
  | "overlap" // overlaps a live mapping
  | "slots" // no memory slot left
  | "access" // descriptor not open O_RDWR
  | "eof" // the range runs past the end of the file
  | "mmap" // mmap itself failed
  | "no-mapping"; // SHMEM_UNMAP names no live mapping exactly

/** What happened to a request. */
export type WindowResult =
  | { ok: true; mapping: WindowMapping }
  | { ok: false; kind: RefusalKind; reason: string };

/** Counters of the window's traffic. */
export interface CacheWindowStats {
  /** Maps done. */
  maps: number;
  /** Unmaps done (SHMEM_UNMAP). */
  unmaps: number;
  /** Mappings dropped by a device reset or close (no SHMEM_UNMAP). */
  dropped: number;
  /** Requests refused. */
  refused: number;
  /** The last refusal's reason. */
  lastRefusal?: string;
  /** The last refusal's rule. */
  lastRefusalKind?: RefusalKind;
}

/** Options of {@linkcode CacheWindow.reserve}. */
export interface CacheWindowOptions {
  /** Size in bytes (a positive multiple of a page; the front end insists on a power of two). */
  size: number;
  /** The window's guest-physical address (what ADD_MEM_REG's `guest_phys_addr` is based on). */
  guestAddress: number;
  /** The most live mappings (memory slots left after RAM). Default: no limit. */
  maxMappings?: number;
  /** The region's shmid. Default 0 (VIRTIO_FS_SHMCAP_ID_CACHE). */
  shmid?: number;
  /**
   * Host address ranges the reservation must not overlap (`[start, end)`): the made-up
   * `userspace_addr` ranges of guest RAM, so that a back end translating front-end addresses
   * never finds two regions at one address.
   */
  avoid?: readonly { start: number; end: number }[];
}

interface Entry {
  mapping: WindowMapping;
  fd: number;
}

function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}

function accessModeName(mode: number): string {
  return mode === O_RDONLY ? "O_RDONLY" : mode === O_WRONLY ? "O_WRONLY" : `access mode ${mode}`;
}

function u64(v: number | bigint | undefined): bigint {
  if (v === undefined) return 0n;
  return typeof v === "bigint" ? v : BigInt(v);
}

/** Reads a SHMEM_MAP / SHMEM_UNMAP payload (undefined when it is not SHMEM_MAP_MSG.size bytes). */
export function parseShmemRequest(payload: Uint8Array): ShmemRequest | undefined {
  if (payload.byteLength !== SHMEM_MAP_MSG.size) return undefined;
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return {
    shmid: v.getUint8(SHMEM_MAP_MSG.shmid),
    fdOffset: v.getBigUint64(SHMEM_MAP_MSG.fdOffset, true),
    shmOffset: v.getBigUint64(SHMEM_MAP_MSG.shmOffset, true),
    len: v.getBigUint64(SHMEM_MAP_MSG.len, true),
    flags: v.getBigUint64(SHMEM_MAP_MSG.flags, true),
  };
}

/** Builds a SHMEM_MAP / SHMEM_UNMAP payload (for tests playing the back end). */
export function shmemRequestPayload(req: ShmemRequest): Uint8Array {
  const p = new Uint8Array(SHMEM_MAP_MSG.size);
  const v = new DataView(p.buffer);
  v.setUint8(SHMEM_MAP_MSG.shmid, req.shmid);
  v.setBigUint64(SHMEM_MAP_MSG.fdOffset, u64(req.fdOffset), true);
  v.setBigUint64(SHMEM_MAP_MSG.shmOffset, u64(req.shmOffset), true);
  v.setBigUint64(SHMEM_MAP_MSG.len, u64(req.len), true);
  v.setBigUint64(SHMEM_MAP_MSG.flags, u64(req.flags), true);
  return p;
}

/**
 * The cache window: reservation, live mappings, QEMU 11.1's rules. Dispose it (or `close()`) to
 * drop every mapping, close the descriptors kept and release the address space.
 */
export class CacheWindow {
  readonly #res: AddressReservation;
  readonly #guestAddress: number;
  readonly #shmid: number;
  /** Live mappings, sorted by shmOffset. */
  readonly #entries: Entry[] = [];
  #maxMappings: number;
  readonly #stats: CacheWindowStats = { maps: 0, unmaps: 0, dropped: 0, refused: 0 };

  private constructor(res: AddressReservation, opts: CacheWindowOptions) {
    this.#res = res;
    this.#guestAddress = opts.guestAddress;
    this.#shmid = opts.shmid ?? VIRTIO_FS_SHMCAP_ID_CACHE;
    this.#maxMappings = opts.maxMappings ?? Infinity;
  }

  /** Reserves the window's address space (inaccessible until something is mapped). */
  static reserve(opts: CacheWindowOptions): CacheWindow {
    const { size } = opts;
    if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE_SIZE !== 0) {
      throw new RangeError(`Cannot reserve a cache window of ${size} bytes: not whole pages`);
    }
    if (opts.guestAddress % PAGE_SIZE !== 0) {
      throw new RangeError(`Cannot put a cache window at ${hex(opts.guestAddress)}: unaligned`);
    }
    const clashes = (r: AddressReservation): boolean =>
      (opts.avoid ?? []).some((a) => r.address < a.end && a.start < r.address + r.length);
    // Keep each clashing reservation until a good one is found, so the kernel picks elsewhere.
    const held: AddressReservation[] = [];
    try {
      for (let tries = 0; tries < 8; tries++) {
        const r = AddressReservation.reserve(size, PAGE_SIZE);
        if (!clashes(r)) return new CacheWindow(r, opts);
        held.push(r);
      }
    } finally {
      for (const r of held) r.release();
    }
    throw new Error("Cannot reserve a cache window away from guest RAM's front-end addresses");
  }

  /** The window's size in bytes. */
  get size(): number {
    return this.#res.length;
  }

  /** The window's guest-physical address. */
  get guestAddress(): number {
    return this.#guestAddress;
  }

  /** The window's address in this process (what ADD_MEM_REG's `userspace_addr` is based on). */
  get hostAddress(): number {
    return this.#res.address;
  }

  /** The region's shmid. */
  get shmid(): number {
    return this.#shmid;
  }

  /**
   * A view of the whole reservation, with no copy. Only mapped ranges may be touched (see
   * {@linkcode isMapped}): reading or writing anywhere else kills the process with SIGSEGV. Prefer
   * {@linkcode read} / {@linkcode view}, which check.
   */
  get bytes(): Uint8Array {
    return this.#res.bytes;
  }

  /** The most live mappings allowed (memory slots left after RAM). */
  get maxMappings(): number {
    return this.#maxMappings;
  }

  set maxMappings(n: number) {
    this.#maxMappings = n;
  }

  /** Live mappings, by window offset. */
  mappings(): WindowMapping[] {
    return this.#entries.map((e) => e.mapping);
  }

  /** Traffic counters (a copy). */
  get stats(): CacheWindowStats {
    return { ...this.#stats };
  }

  /** True when every byte of `[offset, offset + len)` lies in a live mapping (len > 0). */
  isMapped(offset: number, len: number): boolean {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(len) || offset < 0 || len <= 0) {
      return false;
    }
    let at = offset;
    const end = offset + len;
    for (const { mapping: m } of this.#entries) {
      if (m.shmOffset + m.len <= at) continue;
      if (m.shmOffset > at) return false;
      at = m.shmOffset + m.len;
      if (at >= end) return true;
    }
    return false;
  }

  #checkMapped(offset: number, len: number, what: string): void {
    if (!this.isMapped(offset, len)) {
      throw new RangeError(
        `Cannot ${what} cache window bytes ${hex(offset)} (+${len}): not wholly mapped ` +
          `(mappings: ${this.#describe()})`,
      );
    }
  }

  #describe(): string {
    if (this.#entries.length === 0) return "none";
    return this.#entries.map(({ mapping: m }) => `${hex(m.shmOffset)}+${hex(m.len)}`).join(", ");
  }

  /** A copy of `len` bytes at window offset `offset`; throws unless the range is wholly mapped. */
  read(offset: number, len: number): Uint8Array {
    this.#checkMapped(offset, len, "read");
    return this.#res.bytes.slice(offset, offset + len);
  }

  /**
   * A zero-copy view of `len` bytes at `offset`; throws unless the range is wholly mapped. The
   * view must not be touched once the range is unmapped (SIGSEGV).
   */
  view(offset: number, len: number): Uint8Array {
    this.#checkMapped(offset, len, "view");
    return this.#res.bytes.subarray(offset, offset + len);
  }

  /** Stores `data` at window offset `offset` (it reaches the file); throws unless mapped. */
  write(offset: number, data: Uint8Array): void {
    this.#checkMapped(offset, Math.max(data.byteLength, 1), "write");
    this.#res.bytes.set(data, offset);
  }

  /** The memory region of a live mapping, as ADD_MEM_REG / REM_MEM_REG describe it. */
  regionOf(m: WindowMapping): GuestRegion {
    return {
      guestPhysAddr: this.#guestAddress + m.shmOffset,
      memorySize: m.len,
      userspaceAddr: this.#res.address + m.shmOffset,
      mmapOffset: m.fdOffset,
    };
  }

  /** The descriptor kept for a live mapping (owned by the window: send it, do not close it). */
  fdOf(m: WindowMapping): number {
    const e = this.#entries.find((x) => x.mapping === m);
    if (e === undefined) throw new Error(`No live mapping at ${hex(m.shmOffset)}`);
    return e.fd;
  }

  /** Counts a refusal and returns it. */
  refuse(kind: RefusalKind, reason: string): WindowResult {
    this.#stats.refused++;
    this.#stats.lastRefusal = reason;
    this.#stats.lastRefusalKind = kind;
    return { ok: false, kind, reason };
  }

  /** Checks the region and range rules shared by map and unmap; undefined when they hold. */
  #checkRange(
    what: string,
    req: ShmemRequest,
    checkFdOffset: boolean,
  ): { kind: RefusalKind; reason: string } | undefined {
    const shmOffset = u64(req.shmOffset);
    const len = u64(req.len);
    const fdOffset = u64(req.fdOffset);
    const range = `shm_offset ${hex(shmOffset)} len ${hex(len)}`;
    if (req.shmid !== this.#shmid) {
      return {
        kind: "shmid",
        reason: `${what}: unknown shmid ${req.shmid} (the cache window is ${this.#shmid})`,
      };
    }
    if (len === 0n) return { kind: "length", reason: `${what}: zero length at ${hex(shmOffset)}` };
    const page = BigInt(PAGE_SIZE);
    if (
      shmOffset % page !== 0n || len % page !== 0n || (checkFdOffset && fdOffset % page !== 0n)
    ) {
      return {
        kind: "alignment",
        reason: `${what}: ${range}${checkFdOffset ? ` fd_offset ${hex(fdOffset)}` : ""} ` +
          `not page aligned`,
      };
    }
    if (shmOffset + len > BigInt(this.size)) {
      return {
        kind: "bounds",
        reason: `${what}: ${range} outside the window (${hex(this.size)} bytes)`,
      };
    }
    return undefined;
  }

  /**
   * SHMEM_MAP: checks the rules and maps `fd` (owned: kept while the mapping lives, closed on a
   * refusal; `undefined` when the message carried none) read-write over the range.
   */
  map(req: ShmemRequest, fd: number | undefined): WindowResult {
    const what = "SHMEM_MAP";
    const bad = this.#checkRange(what, req, true);
    const refuse = (kind: RefusalKind, reason: string): WindowResult => {
      closeQuietly(fd);
      return this.refuse(kind, reason);
    };
    if (bad !== undefined) return refuse(bad.kind, bad.reason);
    const shmOffset = Number(u64(req.shmOffset));
    const len = Number(u64(req.len));
    const fdOffset = u64(req.fdOffset);
    for (const { mapping: m } of this.#entries) {
      if (shmOffset < m.shmOffset + m.len && m.shmOffset < shmOffset + len) {
        return refuse(
          "overlap",
          `${what}: ${hex(shmOffset)} (+${hex(len)}) overlaps the mapping at ` +
            `${hex(m.shmOffset)} (+${hex(m.len)}); unmap it first`,
        );
      }
    }
    if (this.#entries.length + 1 > this.#maxMappings) {
      return refuse(
        "slots",
        `${what}: no memory slot left (${this.#entries.length} mappings live, ` +
          `at most ${this.#maxMappings} beside guest RAM)`,
      );
    }
    if (fd === undefined) return refuse("message", `${what}: no descriptor attached`);
    const fl = getFlRaw(fd);
    if (fl < 0) return refuse("access", `${what}: descriptor ${fd} unusable (errno ${-fl})`);
    if ((fl & O_ACCMODE) !== O_RDWR) {
      return refuse(
        "access",
        `${what}: the descriptor is open ${accessModeName(fl & O_ACCMODE)}; ` +
          "QEMU maps every range read-write and needs O_RDWR",
      );
    }
    let size: number;
    try {
      size = fileSize(fd);
    } catch (e) {
      return refuse("eof", `${what}: cannot fstat the descriptor: ${(e as Error).message}`);
    }
    if (BigInt(size) < fdOffset + BigInt(len)) {
      return refuse(
        "eof",
        `${what}: fd_offset ${hex(fdOffset)} + len ${hex(len)} runs past the end of the file ` +
          `(${size} bytes)`,
      );
    }
    try {
      this.#res.mapFile(shmOffset, len, fd, Number(fdOffset));
    } catch (e) {
      const why = e instanceof ErrnoError ? e.code : String(e);
      return refuse("mmap", `${what}: mmap of ${hex(shmOffset)} (+${hex(len)}) failed: ${why}`);
    }
    const flags = Number(u64(req.flags) & 0xffff_ffffn);
    const mapping: WindowMapping = {
      shmid: req.shmid,
      shmOffset,
      len,
      fdOffset: Number(fdOffset),
      flags,
      writable: (flags & VHOST_USER_FLAG_MAP_RW) !== 0,
    };
    const i = this.#entries.findIndex((e) => e.mapping.shmOffset > shmOffset);
    this.#entries.splice(i < 0 ? this.#entries.length : i, 0, { mapping, fd });
    this.#stats.maps++;
    return { ok: true, mapping };
  }

  /**
   * SHMEM_UNMAP's check: the live mapping the request names exactly (same `shm_offset` and
   * `len`), or the refusal. Nothing is unmapped: {@linkcode drop} does that.
   */
  checkUnmap(req: ShmemRequest): WindowResult {
    const what = "SHMEM_UNMAP";
    const bad = this.#checkRange(what, req, false);
    if (bad !== undefined) return this.refuse(bad.kind, bad.reason);
    const shmOffset = Number(u64(req.shmOffset));
    const len = Number(u64(req.len));
    const e = this.#entries.find((x) => x.mapping.shmOffset === shmOffset);
    if (e === undefined || e.mapping.len !== len) {
      return this.refuse(
        "no-mapping",
        `${what}: no mapping is exactly ${hex(shmOffset)} (+${hex(len)}) ` +
          `(mappings: ${this.#describe()})`,
      );
    }
    return { ok: true, mapping: e.mapping };
  }

  /**
   * Ends a live mapping: inaccessible memory goes back over its range and its descriptor is
   * closed. `unmapped` counts it as a SHMEM_UNMAP (else as dropped by a reset).
   */
  drop(m: WindowMapping, unmapped = true): void {
    const i = this.#entries.findIndex((x) => x.mapping === m);
    if (i < 0) throw new Error(`No live mapping at ${hex(m.shmOffset)}`);
    const [e] = this.#entries.splice(i, 1);
    try {
      this.#res.clear(m.shmOffset, m.len);
    } finally {
      closeQuietly(e?.fd);
    }
    if (unmapped) this.#stats.unmaps++;
    else this.#stats.dropped++;
  }

  /** SHMEM_UNMAP in one step: {@linkcode checkUnmap}, then {@linkcode drop}. */
  unmap(req: ShmemRequest): WindowResult {
    const r = this.checkUnmap(req);
    if (r.ok) this.drop(r.mapping);
    return r;
  }

  /**
   * A device reset: every mapping is dropped (no SHMEM_UNMAP). Returns them, highest offset
   * first (the order QEMU removes regions in), for the front end's REM_MEM_REG.
   */
  reset(): WindowMapping[] {
    const gone = this.mappings().reverse();
    for (const m of gone) this.drop(m, false);
    return gone;
  }

  /** Drops every mapping and releases the address space (once). */
  close(): void {
    if (!this.#res.reserved) return;
    try {
      this.reset();
    } finally {
      this.#res.release();
    }
  }

  /** As `close()`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
