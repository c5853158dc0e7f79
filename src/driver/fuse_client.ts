/**
 * A FUSE client over a {@linkcode VhostUserFrontend}: the guest kernel's virtio-fs driver in
 * miniature, with a typed call for every request our device serves (every request a Linux 6.1
 * guest sends), built from the byte layouts of `src/wire/fuse.ts`, with parsed replies. An error
 * reply throws {@linkcode FuseError} carrying the (positive) errno.
 *
 * Transport: each request is one descriptor chain (device-readable `fuse_in_header` + arguments,
 * then device-writable `fuse_out_header` + reply area), direct or through one indirect table
 * (Linux 6.1 uses an indirect table for every request of more than one buffer), optionally split
 * into many small descriptors. `unique` starts at 2 and advances by 2, as Linux's does.
 * Pipelining: `submit()` any number of requests (`publish: false` defers them to `publish()`),
 * then `collect()` their replies.
 *
 * Data is laid out as Linux's virtio-fs driver lays it out: READ/WRITE payloads and READDIR
 * areas travel in page-sized guest buffers (one descriptor each, through an indirect table), so
 * a 1 MiB READ is 256 device-writable buffers. Every buffer goes back to guest memory as soon as
 * its reply is in, so memory use stays bounded by one request.
 *
 * @example
 * ```ts ignore
 * const fuse = new FuseClient(frontend);
 * fuse.init();
 * const { entry, open } = fuse.create(FUSE_ROOT_ID, "a.txt", O_RDWR, 0o644);
 * fuse.write(entry.nodeid, open.fh, 0, new TextEncoder().encode("hello"));
 * const bytes = fuse.read(entry.nodeid, open.fh, 0, 4096);
 * fuse.release(entry.nodeid, open.fh);
 * ```
 *
 * @module
 */
import * as A from "../wire/fuse.ts";
import { HIPRIO_QUEUE } from "../wire/virtio.ts";
import { O_CREAT, O_DIRECTORY, O_RDONLY, S_IFMT, S_IFREG } from "../ffi/constants.ts";
import type { VhostUserFrontend } from "./frontend.ts";
import type { ChainOptions, GuestBuffer, UsedElement } from "./guest_queue.ts";
import { PAGE_SIZE } from "./guest_ram.ts";

// The wire layouts are the daemon's own (src/wire/fuse.ts), re-exported for the driver's users.
export { FUSE_ROOT_ID } from "../wire/fuse.ts";

// Linux's own constants (x86-64 values), as the FFI layer defines them, for the driver's users.
export {
  F_OK,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  O_APPEND,
  O_CREAT,
  O_DIRECTORY,
  O_EXCL,
  O_RDONLY,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
  R_OK,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  SEEK_CUR,
  SEEK_DATA,
  SEEK_END,
  SEEK_HOLE,
  SEEK_SET,
  W_OK,
  X_OK,
  XATTR_CREATE,
  XATTR_REPLACE,
} from "../ffi/constants.ts";
export { DT_DIR, DT_LNK, DT_REG, FALLOC_FL_ZERO_RANGE } from "../ffi/constants.ts";

/** The INIT flag word the Linux 6.1.192 virtio-fs client sends (flags2 = 0xb, flags = 0x7bfffffb). */
export const LINUX_6_1_INIT_FLAGS = 0x0000000b_7bfffffbn;

/** A FUSE error reply, as an exception. */
export class FuseError extends Error {
  /** The positive errno (the reply carries its negative). */
  readonly errno: number;
  /** The request's opcode. */
  readonly opcode: number;
  /** The request's unique. */
  readonly unique: bigint;

  /** Builds the message from the opcode and the errno. */
  constructor(opcode: number, unique: bigint, errno: number) {
    super(`${A.opcodeName(opcode)} unique ${unique} failed with errno ${errno}`);
    this.name = "FuseError";
    this.errno = errno;
    this.opcode = opcode;
    this.unique = unique;
  }
}

/** How one request is laid out and sent. */
export interface FuseRequestOptions extends ChainOptions {
  /** The target nodeid (default 0 for INIT, else FUSE_ROOT_ID). */
  nodeid?: bigint;
  /** Caller uid (default 0). */
  uid?: number;
  /** Caller gid (default 0). */
  gid?: number;
  /** Caller pid (default this process's). */
  pid?: number;
  /** `total_extlen` (8-byte units of extensions after the arguments). Default 0. */
  totalExtlen?: number;
  /** Put the in header and all arguments in one buffer (default: one buffer each). */
  contiguous?: boolean;
  /** Override the in header's `len` (default: the true length). */
  len?: number;
  /** Override `unique` (default: the next one). */
  unique?: bigint;
  /** The virtqueue (default: the client's request queue). */
  queue?: number;
  /** Publish (and kick if needed) right away. Default true; false defers to `publish()`. */
  publish?: boolean;
}

/** A reply, matched to its request through the used element's descriptor chain head. */
export interface FuseReply {
  /** The queue it came back on. */
  queue: number;
  /** The request's opcode. */
  opcode: number;
  /** The unique the request carried. */
  requestUnique: bigint;
  /** `fuse_out_header.unique` as the daemon wrote it (0 when nothing was written). */
  unique: bigint;
  /** `fuse_out_header.error`: 0 or a negative errno. */
  error: number;
  /** `fuse_out_header.len`. */
  len: number;
  /** The used element's `len`. */
  usedLen: number;
  /** The chain's device-writable capacity. */
  writableBytes: number;
  /** The reply after the out header: `len - 16` bytes, bounded by the writable capacity. */
  body: Uint8Array;
}

/** The parsed `fuse_init_out`. */
export interface InitOut {
  /** Major version (7). */
  major: number;
  /** Minor version the daemon speaks. */
  minor: number;
  /** Its max_readahead. */
  maxReadahead: number;
  /** All 64 flag bits: `flags`, plus `flags2 << 32` when FUSE_INIT_EXT is set. */
  flags: bigint;
  /** The raw 32-bit `flags` field. */
  flagsWord: number;
  /** The raw `flags2` field. */
  flags2: number;
  /** max_background. */
  maxBackground: number;
  /** congestion_threshold. */
  congestionThreshold: number;
  /** max_write. */
  maxWrite: number;
  /** time_gran. */
  timeGran: number;
  /** max_pages. */
  maxPages: number;
  /** map_alignment. */
  mapAlignment: number;
  /** The whole reply. */
  reply: FuseReply;
}

/** Options of {@linkcode FuseClient.init}; defaults are what Linux 6.1.192 sends. */
export interface InitOptions extends FuseRequestOptions {
  /** Default 7. */
  major?: number;
  /** Default 38. */
  minor?: number;
  /** Default 0x20000. */
  maxReadahead?: number;
  /** All 64 flag bits; bits 32–63 go in flags2. Default 0x0000000b7bfffffb. */
  flags?: bigint;
}

/** The parsed `fuse_attr`, every field. */
export interface FileAttr {
  /** Inode number. */
  ino: bigint;
  /** Size in bytes. */
  size: bigint;
  /** 512-byte blocks. */
  blocks: bigint;
  /** Access time, seconds. */
  atime: bigint;
  /** Modification time, seconds. */
  mtime: bigint;
  /** Change time, seconds. */
  ctime: bigint;
  /** Access time, nanoseconds. */
  atimensec: number;
  /** Modification time, nanoseconds. */
  mtimensec: number;
  /** Change time, nanoseconds. */
  ctimensec: number;
  /** `st_mode`. */
  mode: number;
  /** Link count. */
  nlink: number;
  /** Owner. */
  uid: number;
  /** Group. */
  gid: number;
  /** Device. */
  rdev: number;
  /** Block size. */
  blksize: number;
  /** `fuse_attr.flags` (FUSE_ATTR_SUBMOUNT, FUSE_ATTR_DAX). */
  flags: number;
}

/** The parsed `fuse_entry_out`. */
export interface EntryOut {
  /** The nodeid (its lookup count went up by one, unless it is 0). */
  nodeid: bigint;
  /** Generation. */
  generation: bigint;
  /** Entry validity, seconds. */
  entryValid: bigint;
  /** Attribute validity, seconds. */
  attrValid: bigint;
  /** Entry validity, nanoseconds. */
  entryValidNsec: number;
  /** Attribute validity, nanoseconds. */
  attrValidNsec: number;
  /** Attributes. */
  attr: FileAttr;
}

/** The parsed `fuse_attr_out`. */
export interface AttrOut {
  /** Attribute validity, seconds. */
  attrValid: bigint;
  /** Attribute validity, nanoseconds. */
  attrValidNsec: number;
  /** Attributes. */
  attr: FileAttr;
}

/** The parsed `fuse_open_out`. */
export interface OpenOut {
  /** The file handle. */
  fh: bigint;
  /** FOPEN_* flags. */
  openFlags: number;
}

/** The reply of CREATE and TMPFILE. */
export interface CreateOut {
  /** The new entry (lookup count +1). */
  entry: EntryOut;
  /** The open file. */
  open: OpenOut;
}

/** The parsed `fuse_kstatfs`. */
export interface StatfsOut {
  /** Total blocks (of `frsize`). */
  blocks: bigint;
  /** Free blocks. */
  bfree: bigint;
  /** Free blocks for unprivileged users. */
  bavail: bigint;
  /** Total inodes. */
  files: bigint;
  /** Free inodes. */
  ffree: bigint;
  /** Block size. */
  bsize: number;
  /** Longest name. */
  namelen: number;
  /** Fragment size. */
  frsize: number;
}

/** One `fuse_dirent`. */
export interface Dirent {
  /** Inode number. */
  ino: bigint;
  /** The offset to resume after this entry. */
  off: bigint;
  /** `d_type`. */
  type: number;
  /** The name. */
  name: string;
}

/** One `fuse_direntplus`: a dirent and its entry (nodeid 0 for "." and ".." in the references). */
export interface DirentPlus extends Dirent {
  /** The entry; a non-zero nodeid took a lookup reference. */
  entry: EntryOut;
}

/** A time for SETATTR: seconds and nanoseconds, or "now" (FATTR_ATIME_NOW / FATTR_MTIME_NOW). */
export type SetTime = { sec: bigint | number; nsec?: number } | "now";

/** What SETATTR changes; absent fields are not sent (their `valid` bit stays clear). */
export interface SetattrArgs {
  /** New permission bits (FATTR_MODE). */
  mode?: number;
  /** New owner (FATTR_UID). */
  uid?: number;
  /** New group (FATTR_GID). */
  gid?: number;
  /** New size (FATTR_SIZE). */
  size?: bigint | number;
  /** New access time (FATTR_ATIME, plus FATTR_ATIME_NOW for "now"). */
  atime?: SetTime;
  /** New modification time (FATTR_MTIME, plus FATTR_MTIME_NOW for "now"). */
  mtime?: SetTime;
  /** New change time (FATTR_CTIME). */
  ctime?: { sec: bigint | number; nsec?: number };
  /** An open file handle to act through (FATTR_FH), as ftruncate/fchmod send. */
  fh?: bigint;
  /** Lock owner (FATTR_LOCKOWNER). */
  lockOwner?: bigint;
  /** FATTR_KILL_SUIDGID. */
  killSuidgid?: boolean;
}

/** Everything a directory listing took. */
export interface Listing<T extends Dirent> {
  /** The entries in the order they came. */
  entries: T[];
  /** How many READDIR(PLUS) requests it took (the last one answered empty). */
  requests: number;
}

/** Options of the {@linkcode FuseClient} constructor. */
export interface FuseClientOptions {
  /** The request queue (default 1, the first request queue). */
  queue?: number;
  /** Default caller uid. */
  uid?: number;
  /** Default caller gid. */
  gid?: number;
  /** Default caller pid. */
  pid?: number;
  /** Default chain layout for every request. */
  chain?: ChainOptions;
  /** Timeout of each wait for replies, in ms (default: the front end's). */
  timeoutMs?: number;
  /** Bytes per guest buffer of READ/WRITE data (default PAGE_SIZE, as Linux lays out pages). */
  bufferSize?: number;
  /** Bytes asked per READDIR/READDIRPLUS request (default PAGE_SIZE, as Linux 6.1). */
  readdirSize?: number;
}

interface Pending {
  opcode: number;
  unique: bigint;
  queue: number;
  buffers: GuestBuffer[];
  writable: GuestBuffer[];
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** `s` as a NUL-terminated byte string. */
export function cstr(s: string): Uint8Array {
  return enc.encode(s + "\0");
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function need(r: FuseReply, size: number, what: string): DataView {
  if (r.body.byteLength < size) {
    throw new Error(`${what} reply body is ${r.body.byteLength} bytes, expected ${size}`);
  }
  return view(r.body);
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}

/** Parses a `fuse_attr` at byte `at` of `v`. */
export function parseFileAttr(v: DataView, at: number): FileAttr {
  return {
    ino: v.getBigUint64(at + A.ATTR.ino, true),
    size: v.getBigUint64(at + A.ATTR.sizeField, true),
    blocks: v.getBigUint64(at + A.ATTR.blocks, true),
    atime: v.getBigUint64(at + A.ATTR.atime, true),
    mtime: v.getBigUint64(at + A.ATTR.mtime, true),
    ctime: v.getBigUint64(at + A.ATTR.ctime, true),
    atimensec: v.getUint32(at + A.ATTR.atimensec, true),
    mtimensec: v.getUint32(at + A.ATTR.mtimensec, true),
    ctimensec: v.getUint32(at + A.ATTR.ctimensec, true),
    mode: v.getUint32(at + A.ATTR.mode, true),
    nlink: v.getUint32(at + A.ATTR.nlink, true),
    uid: v.getUint32(at + A.ATTR.uid, true),
    gid: v.getUint32(at + A.ATTR.gid, true),
    rdev: v.getUint32(at + A.ATTR.rdev, true),
    blksize: v.getUint32(at + A.ATTR.blksize, true),
    flags: v.getUint32(at + A.ATTR.flags, true),
  };
}

/** Parses a `fuse_entry_out` at byte `at` of `v`. */
export function parseEntry(v: DataView, at = 0): EntryOut {
  return {
    nodeid: v.getBigUint64(at + A.ENTRY_OUT.nodeid, true),
    generation: v.getBigUint64(at + A.ENTRY_OUT.generation, true),
    entryValid: v.getBigUint64(at + A.ENTRY_OUT.entryValid, true),
    attrValid: v.getBigUint64(at + A.ENTRY_OUT.attrValid, true),
    entryValidNsec: v.getUint32(at + A.ENTRY_OUT.entryValidNsec, true),
    attrValidNsec: v.getUint32(at + A.ENTRY_OUT.attrValidNsec, true),
    attr: parseFileAttr(v, at + A.ENTRY_OUT.attr),
  };
}

/** Parses the `fuse_attr_out` body of a GETATTR or SETATTR reply; throws when it is short. */
export function parseAttrOut(r: FuseReply): AttrOut {
  const v = need(r, A.ATTR_OUT.size, "attr");
  return {
    attrValid: v.getBigUint64(A.ATTR_OUT.attrValid, true),
    attrValidNsec: v.getUint32(A.ATTR_OUT.attrValidNsec, true),
    attr: parseFileAttr(v, A.ATTR_OUT.attr),
  };
}

function parseOpen(v: DataView, at = 0): OpenOut {
  return {
    fh: v.getBigUint64(at + A.OPEN_OUT.fh, true),
    openFlags: v.getUint32(at + A.OPEN_OUT.openFlags, true),
  };
}

/**
 * Parses the records of a READDIR reply (`fuse_dirent`, each padded to 8 bytes). Throws on a
 * record that runs past the body.
 */
export function parseDirents(body: Uint8Array): Dirent[] {
  const v = view(body);
  const out: Dirent[] = [];
  let at = 0;
  while (at < body.byteLength) {
    if (at + A.DIRENT.size > body.byteLength) {
      throw new Error(`READDIR reply: a ${body.byteLength - at}-byte tail at ${at} is no dirent`);
    }
    const namelen = v.getUint32(at + A.DIRENT.namelen, true);
    const end = at + A.DIRENT.name + namelen;
    if (end > body.byteLength || namelen === 0) {
      throw new Error(`READDIR reply: dirent at ${at} has bad namelen ${namelen}`);
    }
    out.push({
      ino: v.getBigUint64(at + A.DIRENT.ino, true),
      off: v.getBigUint64(at + A.DIRENT.off, true),
      type: v.getUint32(at + A.DIRENT.type, true),
      name: dec.decode(body.subarray(at + A.DIRENT.name, end)),
    });
    at += A.direntAlign(A.DIRENT.name + namelen);
  }
  return out;
}

/** Parses the records of a READDIRPLUS reply (`fuse_direntplus`, each padded to 8 bytes). */
export function parseDirentPlus(body: Uint8Array): DirentPlus[] {
  const v = view(body);
  const out: DirentPlus[] = [];
  let at = 0;
  while (at < body.byteLength) {
    if (at + A.DIRENTPLUS.size > body.byteLength) {
      throw new Error(
        `READDIRPLUS reply: a ${body.byteLength - at}-byte tail at ${at} is no direntplus`,
      );
    }
    const d = at + A.DIRENTPLUS.dirent;
    const namelen = v.getUint32(d + A.DIRENT.namelen, true);
    const end = d + A.DIRENT.name + namelen;
    if (end > body.byteLength || namelen === 0) {
      throw new Error(`READDIRPLUS reply: direntplus at ${at} has bad namelen ${namelen}`);
    }
    out.push({
      entry: parseEntry(v, at + A.DIRENTPLUS.entry),
      ino: v.getBigUint64(d + A.DIRENT.ino, true),
      off: v.getBigUint64(d + A.DIRENT.off, true),
      type: v.getUint32(d + A.DIRENT.type, true),
      name: dec.decode(body.subarray(d + A.DIRENT.name, end)),
    });
    at += A.direntAlign(A.DIRENTPLUS.size + namelen);
  }
  return out;
}

/** `n` bytes as guest buffers of at most `unit` bytes each. */
function split(n: number, unit: number): number[] {
  const out: number[] = [];
  for (let left = n; left > 0; left -= unit) out.push(Math.min(unit, left));
  return out;
}

function u32(n: number): number {
  return n >>> 0;
}

/** A FUSE client speaking over one front end's virtqueues: the transport and a typed call per opcode. */
export class FuseClient {
  readonly #fe: VhostUserFrontend;
  readonly #queue: number;
  readonly #uid: number;
  readonly #gid: number;
  readonly #pid: number;
  readonly #chain: ChainOptions;
  readonly #timeoutMs: number | undefined;
  readonly #bufferSize: number;
  readonly #readdirSize: number;
  #nextUnique = 2n;
  /** Pending requests by queue, then by descriptor chain head. */
  readonly #pending = new Map<number, Map<number, Pending>>();
  /** Replies harvested but not yet collected, in arrival order. */
  readonly #ready: FuseReply[] = [];
  #init: InitOut | undefined;

  /** A client of `frontend`'s request queue `opts.queue` (default 1). */
  constructor(frontend: VhostUserFrontend, opts: FuseClientOptions = {}) {
    this.#fe = frontend;
    this.#queue = opts.queue ?? 1;
    this.#uid = opts.uid ?? 0;
    this.#gid = opts.gid ?? 0;
    this.#pid = opts.pid ?? Deno.pid;
    this.#chain = opts.chain ?? {};
    this.#timeoutMs = opts.timeoutMs;
    this.#bufferSize = opts.bufferSize ?? PAGE_SIZE;
    this.#readdirSize = opts.readdirSize ?? PAGE_SIZE;
  }

  // ---- the transport ------------------------------------------------------------------------

  /** The front end. */
  get frontend(): VhostUserFrontend {
    return this.#fe;
  }

  /** The request queue index. */
  get queue(): number {
    return this.#queue;
  }

  /** Requests submitted on queue `q` (default: the request queue) whose replies are not in. */
  inFlight(q: number = this.#queue): number {
    return this.#pending.get(q)?.size ?? 0;
  }

  /** The unique the next request will carry. */
  get nextUnique(): bigint {
    return this.#nextUnique;
  }

  #pendingOf(q: number): Map<number, Pending> {
    let m = this.#pending.get(q);
    if (m === undefined) {
      m = new Map();
      this.#pending.set(q, m);
    }
    return m;
  }

  /**
   * Places one request as one descriptor chain and (unless `opts.publish` is false) publishes
   * it, kicking if the device asked. `replySizes` are the device-writable areas after the
   * 16-byte out header (`[]`: header only; `null`: no writable part at all, as FORGET).
   * Returns the request's unique.
   */
  submit(
    opcode: number,
    args: readonly Uint8Array[],
    replySizes: readonly number[] | null,
    opts: FuseRequestOptions = {},
  ): bigint {
    const q = opts.queue ?? this.#queue;
    const mem = this.#fe.memory;
    const unique = opts.unique ?? this.#nextUnique;
    if (opts.unique === undefined) this.#nextUnique += 2n;
    const argLen = args.reduce((n, a) => n + a.byteLength, 0);
    const header = new Uint8Array(A.IN_HEADER.size);
    const hv = new DataView(header.buffer);
    hv.setUint32(A.IN_HEADER.len, opts.len ?? A.IN_HEADER.size + argLen, true);
    hv.setUint32(A.IN_HEADER.opcode, opcode, true);
    hv.setBigUint64(A.IN_HEADER.unique, unique, true);
    hv.setBigUint64(
      A.IN_HEADER.nodeid,
      opts.nodeid ?? (opcode === A.FUSE_INIT ? 0n : A.FUSE_ROOT_ID),
      true,
    );
    hv.setUint32(A.IN_HEADER.uid, opts.uid ?? this.#uid, true);
    hv.setUint32(A.IN_HEADER.gid, opts.gid ?? this.#gid, true);
    hv.setUint32(A.IN_HEADER.pid, opts.pid ?? this.#pid, true);
    hv.setUint16(A.IN_HEADER.totalExtlen, opts.totalExtlen ?? 0, true);

    const readableData = opts.contiguous
      ? [concat([header, ...args])]
      : [header, ...args.filter((a) => a.byteLength > 0)];
    const readable = readableData.map((d) => ({ gpa: mem.place(d), len: d.byteLength }));
    const writable: GuestBuffer[] = [];
    if (replySizes !== null) {
      for (const size of [A.OUT_HEADER.size, ...replySizes]) {
        if (size > 0) writable.push({ gpa: mem.alloc(size), len: size });
      }
    }
    const chain: ChainOptions = { ...this.#chain };
    if (opts.maxDescriptorLen !== undefined) chain.maxDescriptorLen = opts.maxDescriptorLen;
    chain.indirect = opts.indirect ?? this.#chain.indirect ??
      (this.#fe.indirectDesc && readable.length + writable.length > 1);
    let head: number;
    try {
      head = this.#fe.queue(q).add(readable, writable, chain);
    } catch (e) {
      for (const b of [...readable, ...writable]) mem.free(b.gpa, b.len);
      throw e;
    }
    this.#pendingOf(q).set(head, {
      opcode,
      unique,
      queue: q,
      buffers: [...readable, ...writable],
      writable,
    });
    if (opts.publish ?? true) this.#fe.publish(q);
    return unique;
  }

  /**
   * Publishes the requests of queue `q` submitted with `publish: false` (kicking if the device
   * asked). Returns whether it kicked.
   */
  publish(q: number = this.#queue): boolean {
    return this.#fe.publish(q);
  }

  #complete(q: number, used: UsedElement): FuseReply {
    const p = this.#pendingOf(q).get(used.id);
    if (p === undefined) {
      throw new Error(`Queue ${q} returned chain head ${used.id}, which carries no request`);
    }
    this.#pendingOf(q).delete(used.id);
    const mem = this.#fe.memory;
    const raw = concat(p.writable.map((b) => mem.read(b.gpa, b.len)));
    let unique = 0n, error = 0, len = 0;
    if (raw.byteLength >= A.OUT_HEADER.size) {
      const v = new DataView(raw.buffer);
      len = v.getUint32(A.OUT_HEADER.len, true);
      error = v.getInt32(A.OUT_HEADER.error, true);
      unique = v.getBigUint64(A.OUT_HEADER.unique, true);
    }
    for (const b of p.buffers) mem.free(b.gpa, b.len);
    const end = Math.min(Math.max(len, A.OUT_HEADER.size), raw.byteLength);
    return {
      queue: q,
      opcode: p.opcode,
      requestUnique: p.unique,
      unique,
      error,
      len,
      usedLen: used.len,
      writableBytes: used.writableBytes,
      body: raw.byteLength >= A.OUT_HEADER.size
        ? raw.slice(A.OUT_HEADER.size, end)
        : new Uint8Array(0),
    };
  }

  #harvest(q: number, min: number, timeoutMs?: number): void {
    const t = timeoutMs ?? this.#timeoutMs;
    const used = this.#fe.waitUsed(q, t === undefined ? { min } : { min, timeoutMs: t });
    for (const u of used) this.#ready.push(this.#complete(q, u));
  }

  /**
   * Waits for `count` replies on queue `q` (default: every request in flight there plus those
   * already harvested) and returns them in used-ring order.
   */
  collect(opts: { count?: number; queue?: number; timeoutMs?: number } = {}): FuseReply[] {
    const q = opts.queue ?? this.#queue;
    const readyHere = (): number => this.#ready.filter((r) => r.queue === q).length;
    const count = opts.count ?? this.inFlight(q) + readyHere();
    while (readyHere() < count) {
      if (this.inFlight(q) === 0) {
        throw new Error(`Cannot collect ${count} replies on queue ${q}: only ${readyHere()} exist`);
      }
      this.#harvest(q, Math.min(count - readyHere(), this.inFlight(q)), opts.timeoutMs);
    }
    const out: FuseReply[] = [];
    for (let i = 0; i < this.#ready.length && out.length < count;) {
      const r = this.#ready[i];
      if (r !== undefined && r.queue === q) {
        out.push(r);
        this.#ready.splice(i, 1);
      } else i++;
    }
    return out;
  }

  /** Waits for the reply to `unique` (others harvested meanwhile stay for `collect`). */
  wait(unique: bigint, opts: { queue?: number; timeoutMs?: number } = {}): FuseReply {
    const q = opts.queue ?? this.#queue;
    for (;;) {
      const i = this.#ready.findIndex((r) => r.queue === q && r.requestUnique === unique);
      const r = this.#ready[i];
      if (r !== undefined) {
        this.#ready.splice(i, 1);
        return r;
      }
      const known = [...this.#pendingOf(q).values()].some((p) => p.unique === unique);
      if (!known) throw new Error(`No request with unique ${unique} is in flight on queue ${q}`);
      this.#harvest(q, 1, opts.timeoutMs);
    }
  }

  /** Submits one request and waits for its reply (error replies are returned, not thrown). */
  request(
    opcode: number,
    args: readonly Uint8Array[],
    replySizes: readonly number[] | null,
    opts: FuseRequestOptions = {},
  ): FuseReply {
    const unique = this.submit(opcode, args, replySizes, { ...opts, publish: true });
    return this.wait(unique, opts.queue === undefined ? {} : { queue: opts.queue });
  }

  /** Sends one request to `nodeid`, throws FuseError on an error reply, returns the reply. */
  call(
    opcode: number,
    nodeid: bigint,
    args: readonly Uint8Array[],
    replySizes: readonly number[],
    opts: FuseRequestOptions = {},
  ): FuseReply {
    return FuseClient.check(this.request(opcode, args, replySizes, { ...opts, nodeid }));
  }

  /**
   * Sends a request that gets no reply (FORGET, INTERRUPT): one device-readable buffer, nothing
   * writable, on the hiprio queue unless `opts.queue` says otherwise.
   * Waits for the chain to come back and returns its used element (whose `len` should be 0).
   */
  #noReply(
    opcode: number,
    nodeid: bigint,
    arg: Uint8Array,
    opts: FuseRequestOptions,
  ): UsedElement {
    const q = opts.queue ?? HIPRIO_QUEUE;
    this.submit(opcode, [arg], null, { contiguous: true, ...opts, nodeid, queue: q });
    const pending = this.#pendingOf(q);
    const t = this.#timeoutMs;
    const used = this.#fe.waitUsed(q, t === undefined ? {} : { timeoutMs: t });
    let mine: UsedElement | undefined;
    for (const u of used) {
      const p = pending.get(u.id);
      if (p === undefined) {
        throw new Error(`Queue ${q} returned chain head ${u.id}, which carries no request`);
      }
      pending.delete(u.id);
      for (const b of p.buffers) this.#fe.memory.free(b.gpa, b.len);
      mine = u;
    }
    if (mine === undefined) {
      throw new Error(`${A.OPCODE_NAMES[opcode]} on queue ${q} came back empty`);
    }
    return mine;
  }

  /** Throws FuseError for an error reply; checks the out header's unique. */
  static check(r: FuseReply): FuseReply {
    if (r.unique !== r.requestUnique) {
      throw new Error(
        `${
          A.opcodeName(r.opcode)
        } reply carries unique ${r.unique}, the request ${r.requestUnique}`,
      );
    }
    if (r.error !== 0) throw new FuseError(r.opcode, r.requestUnique, -r.error);
    return r;
  }

  // ---- the session --------------------------------------------------------------------------

  /** The `fuse_init_in` bytes for `opts`. */
  static initIn(opts: InitOptions = {}): Uint8Array {
    const b = new Uint8Array(A.INIT_IN.size);
    const v = new DataView(b.buffer);
    const flags = opts.flags ?? LINUX_6_1_INIT_FLAGS;
    v.setUint32(A.INIT_IN.major, opts.major ?? 7, true);
    v.setUint32(A.INIT_IN.minor, opts.minor ?? 38, true);
    v.setUint32(A.INIT_IN.maxReadahead, opts.maxReadahead ?? 0x20000, true);
    v.setUint32(A.INIT_IN.flags, Number(flags & 0xffff_ffffn), true);
    v.setUint32(A.INIT_IN.flags2, Number(flags >> 32n), true);
    return b;
  }

  /** Parses a `fuse_init_out` (shorter replies of old versions leave the rest 0). */
  static parseInitOut(reply: FuseReply): InitOut {
    const body = new Uint8Array(A.INIT_OUT.size);
    body.set(reply.body.subarray(0, A.INIT_OUT.size));
    const v = new DataView(body.buffer);
    const flagsWord = v.getUint32(A.INIT_OUT.flags, true);
    const flags2 = v.getUint32(A.INIT_OUT.flags2, true);
    let flags = BigInt(flagsWord);
    if ((flags & A.FUSE_INIT_EXT) !== 0n) flags |= BigInt(flags2) << 32n;
    return {
      major: v.getUint32(A.INIT_OUT.major, true),
      minor: v.getUint32(A.INIT_OUT.minor, true),
      maxReadahead: v.getUint32(A.INIT_OUT.maxReadahead, true),
      flags,
      flagsWord,
      flags2,
      maxBackground: v.getUint16(A.INIT_OUT.maxBackground, true),
      congestionThreshold: v.getUint16(A.INIT_OUT.congestionThreshold, true),
      maxWrite: v.getUint32(A.INIT_OUT.maxWrite, true),
      timeGran: v.getUint32(A.INIT_OUT.timeGran, true),
      maxPages: v.getUint16(A.INIT_OUT.maxPages, true),
      mapAlignment: v.getUint16(A.INIT_OUT.mapAlignment, true),
      reply,
    };
  }

  /**
   * FUSE_INIT as Linux 6.1.192 sends it (7.38, max_readahead 0x20000, flags
   * 0x0000000b7bfffffb), as 2 readable buffers (40 + 64) and 2 writable (16 + 64); remembers
   * the reply. Throws FuseError on an error reply.
   */
  init(opts: InitOptions = {}): InitOut {
    const r = this.request(A.FUSE_INIT, [FuseClient.initIn(opts)], [A.INIT_OUT.size], {
      nodeid: 0n,
      ...opts,
    });
    this.#init = FuseClient.parseInitOut(FuseClient.check(r));
    return this.#init;
  }

  /** The INIT reply, once `init()` ran (and until `destroy()`). */
  get initOut(): InitOut | undefined {
    return this.#init;
  }

  /** The largest READ/WRITE payload the daemon accepts (its max_write; 128 KiB before INIT). */
  get maxIo(): number {
    const m = this.#init?.maxWrite ?? 0;
    return m > 0 ? Math.min(m, A.MAX_WRITE) : 128 << 10;
  }

  /** FUSE_DESTROY (nodeid 0, as Linux at unmount): the daemon ends the session. */
  destroy(opts: FuseRequestOptions = {}): void {
    this.call(A.FUSE_DESTROY, 0n, [], [], opts);
    this.#init = undefined;
  }

  /**
   * FUSE_INTERRUPT of the request `unique` (`fuse_interrupt_in`) on the hiprio queue: no reply;
   * waits for the chain to come back and returns its used element.
   */
  interrupt(unique: bigint, opts: FuseRequestOptions = {}): UsedElement {
    const b = new Uint8Array(A.INTERRUPT_IN.size);
    view(b).setBigUint64(A.INTERRUPT_IN.unique, unique, true);
    return this.#noReply(A.FUSE_INTERRUPT, 0n, b, opts);
  }

  // ---- names and attributes -----------------------------------------------------------------

  /** FUSE_LOOKUP of `name` in `parent` (lookup count +1). */
  lookup(parent: bigint, name: string, opts: FuseRequestOptions = {}): EntryOut {
    const r = this.call(A.FUSE_LOOKUP, parent, [cstr(name)], [A.ENTRY_OUT.size], opts);
    return parseEntry(need(r, A.ENTRY_OUT.size, "LOOKUP"));
  }

  /**
   * FUSE_FORGET of `nlookup` references to `nodeid` on the hiprio queue (queue 0), as Linux
   * 6.1 sends it: one 48-byte device-readable buffer, nothing writable, no reply. Waits for the
   * chain to come back and returns its used element (whose `len` should be 0).
   */
  forget(nodeid: bigint, nlookup: bigint | number, opts: FuseRequestOptions = {}): UsedElement {
    const arg = new Uint8Array(A.FORGET_IN.size);
    view(arg).setBigUint64(A.FORGET_IN.nlookup, BigInt(nlookup), true);
    return this.#noReply(A.FUSE_FORGET, nodeid, arg, opts);
  }

  /**
   * FUSE_BATCH_FORGET of `[nodeid, nlookup]` pairs on the hiprio queue (no reply; waits for the
   * chain to come back). Linux sends at most a page of them; larger lists go in several.
   */
  batchForget(
    items: readonly (readonly [bigint, bigint | number])[],
    opts: FuseRequestOptions = {},
  ): void {
    const perRequest = Math.floor((PAGE_SIZE - A.BATCH_FORGET_IN.size) / A.FORGET_ONE.size);
    for (let i = 0; i < items.length; i += perRequest) {
      const part = items.slice(i, i + perRequest);
      const b = new Uint8Array(A.BATCH_FORGET_IN.size + part.length * A.FORGET_ONE.size);
      const v = view(b);
      v.setUint32(A.BATCH_FORGET_IN.count, part.length, true);
      part.forEach(([nodeid, n], k) => {
        const at = A.BATCH_FORGET_IN.size + k * A.FORGET_ONE.size;
        v.setBigUint64(at + A.FORGET_ONE.nodeid, nodeid, true);
        v.setBigUint64(at + A.FORGET_ONE.nlookup, BigInt(n), true);
      });
      const q = opts.queue ?? HIPRIO_QUEUE;
      this.submit(A.FUSE_BATCH_FORGET, [b], null, {
        contiguous: true,
        ...opts,
        nodeid: 0n,
        queue: q,
      });
      this.collect({ queue: q, count: 1 });
    }
  }

  /** The `fuse_getattr_in` bytes (through `fh` when given: FUSE_GETATTR_FH). */
  static getattrIn(fh?: bigint): Uint8Array {
    const b = new Uint8Array(A.GETATTR_IN.size);
    if (fh !== undefined) {
      const v = view(b);
      v.setUint32(A.GETATTR_IN.getattrFlags, A.FUSE_GETATTR_FH, true);
      v.setBigUint64(A.GETATTR_IN.fh, fh, true);
    }
    return b;
  }

  /** FUSE_GETATTR of `nodeid` (through `fh` when given: FUSE_GETATTR_FH). */
  getattr(nodeid: bigint, fh?: bigint, opts: FuseRequestOptions = {}): AttrOut {
    const r = this.call(
      A.FUSE_GETATTR,
      nodeid,
      [FuseClient.getattrIn(fh)],
      [A.ATTR_OUT.size],
      opts,
    );
    return parseAttrOut(r);
  }

  /** The `fuse_setattr_in` bytes for `a`. */
  static setattrIn(a: SetattrArgs): Uint8Array {
    const b = new Uint8Array(A.SETATTR_IN.size);
    const v = view(b);
    let valid = 0;
    if (a.mode !== undefined) {
      valid |= A.FATTR_MODE;
      v.setUint32(A.SETATTR_IN.mode, a.mode, true);
    }
    if (a.uid !== undefined) {
      valid |= A.FATTR_UID;
      v.setUint32(A.SETATTR_IN.uid, u32(a.uid), true);
    }
    if (a.gid !== undefined) {
      valid |= A.FATTR_GID;
      v.setUint32(A.SETATTR_IN.gid, u32(a.gid), true);
    }
    if (a.size !== undefined) {
      valid |= A.FATTR_SIZE;
      v.setBigUint64(A.SETATTR_IN.sizeField, BigInt(a.size), true);
    }
    const time = (t: SetTime, bit: number, nowBit: number, secAt: number, nsecAt: number) => {
      valid |= bit;
      if (t === "now") valid |= nowBit;
      else {
        v.setBigUint64(secAt, BigInt(t.sec), true);
        v.setUint32(nsecAt, t.nsec ?? 0, true);
      }
    };
    if (a.atime !== undefined) {
      time(a.atime, A.FATTR_ATIME, A.FATTR_ATIME_NOW, A.SETATTR_IN.atime, A.SETATTR_IN.atimensec);
    }
    if (a.mtime !== undefined) {
      time(a.mtime, A.FATTR_MTIME, A.FATTR_MTIME_NOW, A.SETATTR_IN.mtime, A.SETATTR_IN.mtimensec);
    }
    if (a.ctime !== undefined) {
      time(a.ctime, A.FATTR_CTIME, 0, A.SETATTR_IN.ctime, A.SETATTR_IN.ctimensec);
    }
    if (a.fh !== undefined) {
      valid |= A.FATTR_FH;
      v.setBigUint64(A.SETATTR_IN.fh, a.fh, true);
    }
    if (a.lockOwner !== undefined) {
      valid |= A.FATTR_LOCKOWNER;
      v.setBigUint64(A.SETATTR_IN.lockOwner, a.lockOwner, true);
    }
    if (a.killSuidgid) valid |= A.FATTR_KILL_SUIDGID;
    v.setUint32(A.SETATTR_IN.valid, valid, true);
    return b;
  }

  /** FUSE_SETATTR of `nodeid`; returns the new attributes. */
  setattr(nodeid: bigint, a: SetattrArgs, opts: FuseRequestOptions = {}): AttrOut {
    const r = this.call(A.FUSE_SETATTR, nodeid, [FuseClient.setattrIn(a)], [A.ATTR_OUT.size], opts);
    return parseAttrOut(r);
  }

  /** FUSE_READLINK of `nodeid` (a page of reply room, as Linux). */
  readlink(nodeid: bigint, opts: FuseRequestOptions = {}): string {
    return dec.decode(this.call(A.FUSE_READLINK, nodeid, [], [PAGE_SIZE], opts).body);
  }

  #entry(r: FuseReply, what: string): EntryOut {
    return parseEntry(need(r, A.ENTRY_OUT.size, what));
  }

  /** FUSE_SYMLINK: `name` in `parent` pointing at `target`. */
  symlink(parent: bigint, name: string, target: string, opts: FuseRequestOptions = {}): EntryOut {
    const r = this.call(A.FUSE_SYMLINK, parent, [cstr(name), cstr(target)], [
      A.ENTRY_OUT.size,
    ], opts);
    return this.#entry(r, "SYMLINK");
  }

  /** FUSE_MKNOD of `name` in `parent` (`mode` includes the file type bits). */
  mknod(
    parent: bigint,
    name: string,
    mode: number,
    rdev = 0,
    umask = 0,
    opts: FuseRequestOptions = {},
  ): EntryOut {
    const b = new Uint8Array(A.MKNOD_IN.size);
    const v = view(b);
    v.setUint32(A.MKNOD_IN.mode, mode, true);
    v.setUint32(A.MKNOD_IN.rdev, rdev, true);
    v.setUint32(A.MKNOD_IN.umask, umask, true);
    const r = this.call(A.FUSE_MKNOD, parent, [b, cstr(name)], [A.ENTRY_OUT.size], opts);
    return this.#entry(r, "MKNOD");
  }

  /** FUSE_MKDIR of `name` in `parent`. */
  mkdir(
    parent: bigint,
    name: string,
    mode = 0o755,
    umask = 0,
    opts: FuseRequestOptions = {},
  ): EntryOut {
    const b = new Uint8Array(A.MKDIR_IN.size);
    const v = view(b);
    v.setUint32(A.MKDIR_IN.mode, mode, true);
    v.setUint32(A.MKDIR_IN.umask, umask, true);
    const r = this.call(A.FUSE_MKDIR, parent, [b, cstr(name)], [A.ENTRY_OUT.size], opts);
    return this.#entry(r, "MKDIR");
  }

  /** FUSE_UNLINK of `name` in `parent`. */
  unlink(parent: bigint, name: string, opts: FuseRequestOptions = {}): void {
    this.call(A.FUSE_UNLINK, parent, [cstr(name)], [], opts);
  }

  /** FUSE_RMDIR of `name` in `parent`. */
  rmdir(parent: bigint, name: string, opts: FuseRequestOptions = {}): void {
    this.call(A.FUSE_RMDIR, parent, [cstr(name)], [], opts);
  }

  /** FUSE_RENAME of `olddir/oldname` to `newdir/newname`. */
  rename(
    olddir: bigint,
    oldname: string,
    newdir: bigint,
    newname: string,
    opts: FuseRequestOptions = {},
  ): void {
    const b = new Uint8Array(A.RENAME_IN.size);
    view(b).setBigUint64(A.RENAME_IN.newdir, newdir, true);
    this.call(A.FUSE_RENAME, olddir, [b, cstr(oldname), cstr(newname)], [], opts);
  }

  /** FUSE_RENAME2 with `flags` (RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT). */
  rename2(
    olddir: bigint,
    oldname: string,
    newdir: bigint,
    newname: string,
    flags: number,
    opts: FuseRequestOptions = {},
  ): void {
    const b = new Uint8Array(A.RENAME2_IN.size);
    const v = view(b);
    v.setBigUint64(A.RENAME2_IN.newdir, newdir, true);
    v.setUint32(A.RENAME2_IN.flags, flags, true);
    this.call(A.FUSE_RENAME2, olddir, [b, cstr(oldname), cstr(newname)], [], opts);
  }

  /** FUSE_LINK: a new name `newname` in `newparent` for `nodeid`. */
  link(
    nodeid: bigint,
    newparent: bigint,
    newname: string,
    opts: FuseRequestOptions = {},
  ): EntryOut {
    const b = new Uint8Array(A.LINK_IN.size);
    view(b).setBigUint64(A.LINK_IN.oldnodeid, nodeid, true);
    const r = this.call(A.FUSE_LINK, newparent, [b, cstr(newname)], [A.ENTRY_OUT.size], opts);
    return this.#entry(r, "LINK");
  }

  // ---- files --------------------------------------------------------------------------------

  #open(
    opcode: number,
    nodeid: bigint,
    flags: number,
    openFlags: number,
    o: FuseRequestOptions,
  ): OpenOut {
    const b = new Uint8Array(A.OPEN_IN.size);
    const v = view(b);
    v.setUint32(A.OPEN_IN.flags, flags, true);
    v.setUint32(A.OPEN_IN.openFlags, openFlags, true);
    const r = this.call(opcode, nodeid, [b], [A.OPEN_OUT.size], o);
    return parseOpen(need(r, A.OPEN_OUT.size, "OPEN"));
  }

  /** FUSE_OPEN of `nodeid` with open(2) `flags` (no O_CREAT/O_EXCL/O_NOCTTY, as Linux). */
  open(nodeid: bigint, flags: number, openFlags = 0, opts: FuseRequestOptions = {}): OpenOut {
    return this.#open(A.FUSE_OPEN, nodeid, flags, openFlags, opts);
  }

  #createLike(
    opcode: number,
    parent: bigint,
    name: string,
    flags: number,
    mode: number,
    umask: number,
    opts: FuseRequestOptions,
  ): CreateOut {
    const b = new Uint8Array(A.CREATE_IN.size);
    const v = view(b);
    v.setUint32(A.CREATE_IN.flags, flags, true);
    v.setUint32(A.CREATE_IN.mode, mode, true);
    v.setUint32(A.CREATE_IN.umask, umask, true);
    const r = this.call(opcode, parent, [b, cstr(name)], [A.ENTRY_OUT.size, A.OPEN_OUT.size], opts);
    const rv = need(r, A.ENTRY_OUT.size + A.OPEN_OUT.size, A.opcodeName(opcode));
    return { entry: parseEntry(rv, 0), open: parseOpen(rv, A.ENTRY_OUT.size) };
  }

  /**
   * FUSE_CREATE of `name` in `parent`: `flags` as open(2) (Linux adds O_CREAT), `mode` the
   * permission bits (S_IFREG is added when absent).
   */
  create(
    parent: bigint,
    name: string,
    flags: number,
    mode = 0o644,
    umask = 0,
    opts: FuseRequestOptions = {},
  ): CreateOut {
    const m = (mode & S_IFMT) === 0 ? mode | S_IFREG : mode;
    return this.#createLike(A.FUSE_CREATE, parent, name, flags | O_CREAT, m, umask, opts);
  }

  /**
   * FUSE_TMPFILE (7.37) in directory `parent`: an unnamed file, open. Linux names the dentry
   * "/" and sends that name.
   */
  tmpfile(
    parent: bigint,
    flags: number,
    mode = 0o600,
    umask = 0,
    opts: FuseRequestOptions & { name?: string } = {},
  ): CreateOut {
    const m = (mode & S_IFMT) === 0 ? mode | S_IFREG : mode;
    return this.#createLike(A.FUSE_TMPFILE, parent, opts.name ?? "/", flags, m, umask, opts);
  }

  /** The `fuse_read_in` bytes (READ, READDIR, READDIRPLUS). */
  static readIn(fh: bigint, offset: bigint | number, size: number, flags = 0): Uint8Array {
    const b = new Uint8Array(A.READ_IN.size);
    const v = view(b);
    v.setBigUint64(A.READ_IN.fh, fh, true);
    v.setBigUint64(A.READ_IN.offset, BigInt(offset), true);
    v.setUint32(A.READ_IN.sizeField, size, true);
    v.setUint32(A.READ_IN.flags, flags, true);
    return b;
  }

  /**
   * FUSE_READ of up to `size` bytes at `offset` (one request; the reply area is split into
   * buffers of `bufferSize`). Returns what came back (short at end of file).
   */
  read(
    nodeid: bigint,
    fh: bigint,
    offset: bigint | number,
    size: number,
    opts: FuseRequestOptions & { flags?: number } = {},
  ): Uint8Array {
    const r = this.call(
      A.FUSE_READ,
      nodeid,
      [FuseClient.readIn(fh, offset, size, opts.flags ?? 0)],
      split(size, this.#bufferSize),
      opts,
    );
    if (r.body.byteLength > size) {
      throw new Error(`READ of ${size} bytes returned ${r.body.byteLength}`);
    }
    return r.body;
  }

  /** Reads `size` bytes at `offset` in requests of at most `maxIo`, stopping at end of file. */
  readAll(nodeid: bigint, fh: bigint, offset: bigint | number, size: number): Uint8Array {
    const out = new Uint8Array(size);
    let done = 0;
    while (done < size) {
      const want = Math.min(this.maxIo, size - done);
      const got = this.read(nodeid, fh, BigInt(offset) + BigInt(done), want);
      out.set(got, done);
      done += got.byteLength;
      if (got.byteLength < want) break;
    }
    return out.slice(0, done);
  }

  /**
   * FUSE_WRITE of `data` at `offset` (one request; the data travels in buffers of
   * `bufferSize`). Returns the count the daemon wrote.
   */
  write(
    nodeid: bigint,
    fh: bigint,
    offset: bigint | number,
    data: Uint8Array,
    opts: FuseRequestOptions & { writeFlags?: number; flags?: number; lockOwner?: bigint } = {},
  ): number {
    const b = new Uint8Array(A.WRITE_IN.size);
    const v = view(b);
    v.setBigUint64(A.WRITE_IN.fh, fh, true);
    v.setBigUint64(A.WRITE_IN.offset, BigInt(offset), true);
    v.setUint32(A.WRITE_IN.sizeField, data.byteLength, true);
    v.setUint32(A.WRITE_IN.writeFlags, opts.writeFlags ?? 0, true);
    v.setBigUint64(A.WRITE_IN.lockOwner, opts.lockOwner ?? 0n, true);
    v.setUint32(A.WRITE_IN.flags, opts.flags ?? 0, true);
    const chunks: Uint8Array[] = [b];
    for (let at = 0; at < data.byteLength; at += this.#bufferSize) {
      chunks.push(data.subarray(at, Math.min(at + this.#bufferSize, data.byteLength)));
    }
    const r = this.call(A.FUSE_WRITE, nodeid, chunks, [A.WRITE_OUT.size], opts);
    return need(r, A.WRITE_OUT.size, "WRITE").getUint32(A.WRITE_OUT.sizeField, true);
  }

  /** Writes all of `data` at `offset` in requests of at most `maxIo`; throws on a short write. */
  writeAll(nodeid: bigint, fh: bigint, offset: bigint | number, data: Uint8Array): void {
    for (let at = 0; at < data.byteLength;) {
      const part = data.subarray(at, Math.min(at + this.maxIo, data.byteLength));
      const n = this.write(nodeid, fh, BigInt(offset) + BigInt(at), part);
      if (n <= 0) throw new Error(`WRITE at ${at} wrote ${n} of ${part.byteLength}`);
      at += n;
    }
  }

  /**
   * FUSE_FLUSH (close(2) of one descriptor). Not to be confused with `publish()`, which
   * publishes deferred requests.
   */
  flush(nodeid: bigint, fh: bigint, lockOwner = 0n, opts: FuseRequestOptions = {}): void {
    const b = new Uint8Array(A.FLUSH_IN.size);
    const v = view(b);
    v.setBigUint64(A.FLUSH_IN.fh, fh, true);
    v.setBigUint64(A.FLUSH_IN.lockOwner, lockOwner, true);
    this.call(A.FUSE_FLUSH, nodeid, [b], [], opts);
  }

  #release(opcode: number, nodeid: bigint, fh: bigint, flags: number, o: FuseRequestOptions) {
    const b = new Uint8Array(A.RELEASE_IN.size);
    const v = view(b);
    v.setBigUint64(A.RELEASE_IN.fh, fh, true);
    v.setUint32(A.RELEASE_IN.flags, flags, true);
    this.call(opcode, nodeid, [b], [], o);
  }

  /** FUSE_RELEASE of `fh` (`flags`: the open flags). */
  release(nodeid: bigint, fh: bigint, flags = 0, opts: FuseRequestOptions = {}): void {
    this.#release(A.FUSE_RELEASE, nodeid, fh, flags, opts);
  }

  #fsync(opcode: number, nodeid: bigint, fh: bigint, datasync: boolean, o: FuseRequestOptions) {
    const b = new Uint8Array(A.FSYNC_IN.size);
    const v = view(b);
    v.setBigUint64(A.FSYNC_IN.fh, fh, true);
    v.setUint32(A.FSYNC_IN.fsyncFlags, datasync ? A.FUSE_FSYNC_FDATASYNC : 0, true);
    this.call(opcode, nodeid, [b], [], o);
  }

  /** FUSE_FSYNC of `fh` (`datasync`: fdatasync). */
  fsync(nodeid: bigint, fh: bigint, datasync = false, opts: FuseRequestOptions = {}): void {
    this.#fsync(A.FUSE_FSYNC, nodeid, fh, datasync, opts);
  }

  // ---- directories --------------------------------------------------------------------------

  /** FUSE_OPENDIR of `nodeid`. */
  opendir(
    nodeid: bigint,
    flags = O_RDONLY | O_DIRECTORY,
    opts: FuseRequestOptions = {},
  ): OpenOut {
    return this.#open(A.FUSE_OPENDIR, nodeid, flags, 0, opts);
  }

  /** One FUSE_READDIR from `offset`; `size` bytes of reply room (default `readdirSize`). */
  readdir(
    nodeid: bigint,
    fh: bigint,
    offset: bigint | number,
    size: number = this.#readdirSize,
    opts: FuseRequestOptions = {},
  ): Dirent[] {
    const r = this.call(A.FUSE_READDIR, nodeid, [FuseClient.readIn(fh, offset, size)], [
      size,
    ], opts);
    return parseDirents(r.body);
  }

  /** One FUSE_READDIRPLUS from `offset` (every non-zero nodeid took a lookup reference). */
  readdirplus(
    nodeid: bigint,
    fh: bigint,
    offset: bigint | number,
    size: number = this.#readdirSize,
    opts: FuseRequestOptions = {},
  ): DirentPlus[] {
    const r = this.call(A.FUSE_READDIRPLUS, nodeid, [FuseClient.readIn(fh, offset, size)], [
      size,
    ], opts);
    return parseDirentPlus(r.body);
  }

  /**
   * The whole directory from `offset`: READDIR requests, each resuming at the last entry's
   * `off`, until one answers empty. Throws after `maxRequests` (default 1e6) requests.
   */
  readdirAll(
    nodeid: bigint,
    fh: bigint,
    offset: bigint | number = 0,
    maxRequests = 1e6,
  ): Listing<Dirent> {
    return this.#listAll((off) => this.readdir(nodeid, fh, off), BigInt(offset), maxRequests);
  }

  /** As {@linkcode readdirAll}, with READDIRPLUS. */
  readdirplusAll(
    nodeid: bigint,
    fh: bigint,
    offset: bigint | number = 0,
    maxRequests = 1e6,
  ): Listing<DirentPlus> {
    return this.#listAll((off) => this.readdirplus(nodeid, fh, off), BigInt(offset), maxRequests);
  }

  #listAll<T extends Dirent>(
    one: (off: bigint) => T[],
    offset: bigint,
    maxRequests: number,
  ): Listing<T> {
    const entries: T[] = [];
    let off = offset;
    for (let requests = 1; requests <= maxRequests; requests++) {
      const got = one(off);
      if (got.length === 0) return { entries, requests };
      entries.push(...got);
      const last = got[got.length - 1];
      if (last !== undefined) off = last.off;
    }
    throw new Error(`Directory listing did not end after ${maxRequests} requests`);
  }

  /** FUSE_RELEASEDIR of `fh`. */
  releasedir(nodeid: bigint, fh: bigint, flags = 0, opts: FuseRequestOptions = {}): void {
    this.#release(A.FUSE_RELEASEDIR, nodeid, fh, flags, opts);
  }

  /** FUSE_FSYNCDIR of `fh`. */
  fsyncdir(nodeid: bigint, fh: bigint, datasync = false, opts: FuseRequestOptions = {}): void {
    this.#fsync(A.FUSE_FSYNCDIR, nodeid, fh, datasync, opts);
  }

  // ---- the file system ----------------------------------------------------------------------

  /** FUSE_STATFS (of the file system `nodeid` lives on). */
  statfs(nodeid: bigint = A.FUSE_ROOT_ID, opts: FuseRequestOptions = {}): StatfsOut {
    const r = this.call(A.FUSE_STATFS, nodeid, [], [A.KSTATFS.size], opts);
    const v = need(r, A.KSTATFS.size, "STATFS");
    return {
      blocks: v.getBigUint64(A.KSTATFS.blocks, true),
      bfree: v.getBigUint64(A.KSTATFS.bfree, true),
      bavail: v.getBigUint64(A.KSTATFS.bavail, true),
      files: v.getBigUint64(A.KSTATFS.files, true),
      ffree: v.getBigUint64(A.KSTATFS.ffree, true),
      bsize: v.getUint32(A.KSTATFS.bsize, true),
      namelen: v.getUint32(A.KSTATFS.namelen, true),
      frsize: v.getUint32(A.KSTATFS.frsize, true),
    };
  }

  /** FUSE_ACCESS of `nodeid` with `mask` (R_OK | W_OK | X_OK, or F_OK). */
  access(nodeid: bigint, mask: number, opts: FuseRequestOptions = {}): void {
    const b = new Uint8Array(A.ACCESS_IN.size);
    view(b).setUint32(A.ACCESS_IN.mask, mask, true);
    this.call(A.FUSE_ACCESS, nodeid, [b], [], opts);
  }

  /** FUSE_SYNCFS (Linux sends it on the root). */
  syncfs(nodeid: bigint = A.FUSE_ROOT_ID, opts: FuseRequestOptions = {}): void {
    this.call(A.FUSE_SYNCFS, nodeid, [new Uint8Array(A.SYNCFS_IN.size)], [], opts);
  }

  // ---- extended attributes ------------------------------------------------------------------

  /** Whether the daemon granted FUSE_SETXATTR_EXT (then `fuse_setxattr_in` is 16 bytes). */
  get setxattrExt(): boolean {
    return ((this.#init?.flags ?? 0n) & A.FUSE_SETXATTR_EXT) !== 0n;
  }

  /** FUSE_SETXATTR of `name` = `value` (`flags`: XATTR_CREATE / XATTR_REPLACE). */
  setxattr(
    nodeid: bigint,
    name: string,
    value: Uint8Array | string,
    flags = 0,
    opts: FuseRequestOptions = {},
  ): void {
    const data = typeof value === "string" ? enc.encode(value) : value;
    const b = new Uint8Array(this.setxattrExt ? A.SETXATTR_IN.size : A.SETXATTR_IN.compatSize);
    const v = view(b);
    v.setUint32(A.SETXATTR_IN.sizeField, data.byteLength, true);
    v.setUint32(A.SETXATTR_IN.flags, flags, true);
    this.call(A.FUSE_SETXATTR, nodeid, [b, cstr(name), data], [], opts);
  }

  #getxattrIn(size: number): Uint8Array {
    const b = new Uint8Array(A.GETXATTR_IN.size);
    view(b).setUint32(A.GETXATTR_IN.sizeField, size, true);
    return b;
  }

  /** FUSE_GETXATTR with size 0: the size the value needs (`fuse_getxattr_out`). */
  getxattrSize(nodeid: bigint, name: string, opts: FuseRequestOptions = {}): number {
    const r = this.call(A.FUSE_GETXATTR, nodeid, [this.#getxattrIn(0), cstr(name)], [
      A.GETXATTR_OUT.size,
    ], opts);
    return need(r, A.GETXATTR_OUT.size, "GETXATTR").getUint32(A.GETXATTR_OUT.sizeField, true);
  }

  /** FUSE_GETXATTR into a `size`-byte buffer (ERANGE when it is too small). */
  getxattr(nodeid: bigint, name: string, size: number, opts: FuseRequestOptions = {}): Uint8Array {
    if (size === 0) throw new RangeError("getxattr size 0 is getxattrSize()");
    const r = this.call(
      A.FUSE_GETXATTR,
      nodeid,
      [this.#getxattrIn(size), cstr(name)],
      [size],
      opts,
    );
    return r.body;
  }

  /** FUSE_LISTXATTR with size 0: the size the list needs. */
  listxattrSize(nodeid: bigint, opts: FuseRequestOptions = {}): number {
    const r = this.call(A.FUSE_LISTXATTR, nodeid, [this.#getxattrIn(0)], [
      A.GETXATTR_OUT.size,
    ], opts);
    return need(r, A.GETXATTR_OUT.size, "LISTXATTR").getUint32(A.GETXATTR_OUT.sizeField, true);
  }

  /** FUSE_LISTXATTR into a `size`-byte buffer: the names (ERANGE when it is too small). */
  listxattr(nodeid: bigint, size: number, opts: FuseRequestOptions = {}): string[] {
    if (size === 0) throw new RangeError("listxattr size 0 is listxattrSize()");
    const r = this.call(A.FUSE_LISTXATTR, nodeid, [this.#getxattrIn(size)], [size], opts);
    return dec.decode(r.body).split("\0").filter((s) => s !== "");
  }

  /** FUSE_REMOVEXATTR of `name`. */
  removexattr(nodeid: bigint, name: string, opts: FuseRequestOptions = {}): void {
    this.call(A.FUSE_REMOVEXATTR, nodeid, [cstr(name)], [], opts);
  }

  // ---- ranges -------------------------------------------------------------------------------

  /** FUSE_FALLOCATE of `length` bytes at `offset` with `mode` (FALLOC_FL_*). */
  fallocate(
    nodeid: bigint,
    fh: bigint,
    offset: bigint | number,
    length: bigint | number,
    mode = 0,
    opts: FuseRequestOptions = {},
  ): void {
    const b = new Uint8Array(A.FALLOCATE_IN.size);
    const v = view(b);
    v.setBigUint64(A.FALLOCATE_IN.fh, fh, true);
    v.setBigUint64(A.FALLOCATE_IN.offset, BigInt(offset), true);
    v.setBigUint64(A.FALLOCATE_IN.length, BigInt(length), true);
    v.setUint32(A.FALLOCATE_IN.mode, mode, true);
    this.call(A.FUSE_FALLOCATE, nodeid, [b], [], opts);
  }

  /** FUSE_LSEEK: the resulting offset (SEEK_DATA / SEEK_HOLE; ENXIO past the data). */
  lseek(
    nodeid: bigint,
    fh: bigint,
    offset: bigint | number,
    whence: number,
    opts: FuseRequestOptions = {},
  ): bigint {
    const b = new Uint8Array(A.LSEEK_IN.size);
    const v = view(b);
    v.setBigUint64(A.LSEEK_IN.fh, fh, true);
    v.setBigUint64(A.LSEEK_IN.offset, BigInt(offset), true);
    v.setUint32(A.LSEEK_IN.whence, whence, true);
    const r = this.call(A.FUSE_LSEEK, nodeid, [b], [A.LSEEK_OUT.size], opts);
    return need(r, A.LSEEK_OUT.size, "LSEEK").getBigUint64(A.LSEEK_OUT.offset, true);
  }

  /** FUSE_COPY_FILE_RANGE; returns the bytes copied. */
  copyFileRange(
    a: {
      nodeidIn: bigint;
      fhIn: bigint;
      offIn: bigint | number;
      nodeidOut: bigint;
      fhOut: bigint;
      offOut: bigint | number;
      len: bigint | number;
      flags?: bigint;
    },
    opts: FuseRequestOptions = {},
  ): number {
    const b = new Uint8Array(A.COPY_FILE_RANGE_IN.size);
    const v = view(b);
    v.setBigUint64(A.COPY_FILE_RANGE_IN.fhIn, a.fhIn, true);
    v.setBigUint64(A.COPY_FILE_RANGE_IN.offIn, BigInt(a.offIn), true);
    v.setBigUint64(A.COPY_FILE_RANGE_IN.nodeidOut, a.nodeidOut, true);
    v.setBigUint64(A.COPY_FILE_RANGE_IN.fhOut, a.fhOut, true);
    v.setBigUint64(A.COPY_FILE_RANGE_IN.offOut, BigInt(a.offOut), true);
    v.setBigUint64(A.COPY_FILE_RANGE_IN.len, BigInt(a.len), true);
    v.setBigUint64(A.COPY_FILE_RANGE_IN.flags, a.flags ?? 0n, true);
    const r = this.call(A.FUSE_COPY_FILE_RANGE, a.nodeidIn, [b], [A.WRITE_OUT.size], opts);
    return need(r, A.WRITE_OUT.size, "COPY_FILE_RANGE").getUint32(A.WRITE_OUT.sizeField, true);
  }

  /** The FUSE_SETUPMAPPING argument (Linux sends `fh` = -1: the nodeid names the file). */
  static setupmappingIn(a: {
    fh?: bigint;
    foffset: bigint | number;
    len: bigint | number;
    flags: bigint;
    moffset: bigint | number;
  }): Uint8Array {
    const b = new Uint8Array(A.SETUPMAPPING_IN.size);
    const v = view(b);
    v.setBigUint64(A.SETUPMAPPING_IN.fh, a.fh ?? 0xffff_ffff_ffff_ffffn, true);
    v.setBigUint64(A.SETUPMAPPING_IN.foffset, BigInt(a.foffset), true);
    v.setBigUint64(A.SETUPMAPPING_IN.len, BigInt(a.len), true);
    v.setBigUint64(A.SETUPMAPPING_IN.flags, a.flags, true);
    v.setBigUint64(A.SETUPMAPPING_IN.moffset, BigInt(a.moffset), true);
    return b;
  }

  /**
   * FUSE_SETUPMAPPING (DAX): `len` bytes of `nodeid`'s file at `foffset` to window offset
   * `moffset`. Throws FuseError on an error reply. The front end (with a cache window) maps the
   * range while this waits.
   */
  setupmapping(
    nodeid: bigint,
    a: Parameters<typeof FuseClient.setupmappingIn>[0],
    opts: FuseRequestOptions = {},
  ): void {
    this.call(A.FUSE_SETUPMAPPING, nodeid, [FuseClient.setupmappingIn(a)], [], opts);
  }

  /** The FUSE_REMOVEMAPPING argument: `count` (default: the ranges given), then the ranges. */
  static removemappingIn(
    ranges: readonly { moffset: bigint | number; len: bigint | number }[],
    count: number = ranges.length,
  ): Uint8Array {
    const b = new Uint8Array(A.REMOVEMAPPING_IN.size + ranges.length * A.REMOVEMAPPING_ONE.size);
    const v = view(b);
    v.setUint32(A.REMOVEMAPPING_IN.count, count >>> 0, true);
    ranges.forEach((r, i) => {
      const at = A.REMOVEMAPPING_IN.size + i * A.REMOVEMAPPING_ONE.size;
      v.setBigUint64(at + A.REMOVEMAPPING_ONE.moffset, BigInt(r.moffset), true);
      v.setBigUint64(at + A.REMOVEMAPPING_ONE.len, BigInt(r.len), true);
    });
    return b;
  }

  /** FUSE_REMOVEMAPPING (DAX) of window ranges. Throws FuseError on an error reply. */
  removemapping(
    ranges: readonly { moffset: bigint | number; len: bigint | number }[],
    opts: FuseRequestOptions = {},
  ): void {
    this.call(A.FUSE_REMOVEMAPPING, A.FUSE_ROOT_ID, [FuseClient.removemappingIn(ranges)], [], opts);
  }
}
