/**
 * A FUSE client over a {@linkcode VhostUserFrontend}: the guest kernel's virtio-fs driver in
 * miniature. Each request is one descriptor chain (device-readable `fuse_in_header` + arguments,
 * then device-writable `fuse_out_header` + reply area), direct or through one indirect table
 * (Linux 6.1 uses an indirect table for every request of more than one buffer), optionally split
 * into many small descriptors. `unique` starts at 2 and advances by 2, as Linux's does.
 *
 * Pipelining: `submit()` any number of requests, then `collect()` their replies.
 *
 * @example
 * ```ts ignore
 * const fuse = new FuseClient(frontend);
 * const init = fuse.init();
 * const attr = fuse.getattr(FUSE_ROOT_ID);
 * ```
 *
 * @module
 */
import {
  FUSE_FORGET,
  FUSE_GETATTR,
  FUSE_INIT,
  FUSE_INIT_EXT,
  FUSE_LOOKUP,
  IN_HEADER,
  INIT_IN,
  INIT_OUT,
  opcodeName,
  OUT_HEADER,
} from "../wire/fuse.ts";
import { HIPRIO_QUEUE } from "../wire/virtio.ts";
import type { VhostUserFrontend } from "./frontend.ts";
import type { ChainOptions, GuestBuffer, UsedElement } from "./guest_queue.ts";

/** The root directory's nodeid. */
export const FUSE_ROOT_ID = 1n;

/** The INIT flag word the Linux 6.1.192 virtio-fs client sends (flags2 = 0xb, flags = 0x7bfffffb). */
export const LINUX_6_1_INIT_FLAGS = 0x0000000b_7bfffffbn;

// The wire layouts are the daemon's own (src/fuse/abi.ts), re-exported for the driver's users.
export { ATTR, ATTR_OUT, ENTRY_OUT, FORGET_IN, GETATTR_IN } from "../wire/fuse.ts";
import { ATTR, ATTR_OUT, ENTRY_OUT, FORGET_IN, GETATTR_IN } from "../wire/fuse.ts";

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
    super(`${opcodeName(opcode)} unique ${unique} failed with errno ${errno}`);
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
  /** Publish (and kick if needed) right away. Default true; false defers to `flush()`. */
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

/** The parsed `fuse_attr`. */
export interface Attr {
  /** Inode number. */
  ino: bigint;
  /** Size in bytes. */
  size: bigint;
  /** 512-byte blocks. */
  blocks: bigint;
  /** Seconds. */
  atime: bigint;
  /** Seconds. */
  mtime: bigint;
  /** Seconds. */
  ctime: bigint;
  /** st_mode. */
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
}

/** The parsed `fuse_entry_out`. */
export interface EntryOut {
  /** The new nodeid (the lookup count went up by one). */
  nodeid: bigint;
  /** Generation. */
  generation: bigint;
  /** Entry validity, seconds. */
  entryValid: bigint;
  /** Attribute validity, seconds. */
  attrValid: bigint;
  /** Attributes. */
  attr: Attr;
}

/** The parsed `fuse_attr_out`. */
export interface AttrOut {
  /** Attribute validity, seconds. */
  attrValid: bigint;
  /** Attribute validity, nanoseconds. */
  attrValidNsec: number;
  /** Attributes. */
  attr: Attr;
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
}

interface Pending {
  opcode: number;
  unique: bigint;
  queue: number;
  buffers: GuestBuffer[];
  writable: GuestBuffer[];
}

function parseAttr(v: DataView, at: number): Attr {
  return {
    ino: v.getBigUint64(at + ATTR.ino, true),
    size: v.getBigUint64(at + ATTR.sizeField, true),
    blocks: v.getBigUint64(at + ATTR.blocks, true),
    atime: v.getBigUint64(at + ATTR.atime, true),
    mtime: v.getBigUint64(at + ATTR.mtime, true),
    ctime: v.getBigUint64(at + ATTR.ctime, true),
    mode: v.getUint32(at + ATTR.mode, true),
    nlink: v.getUint32(at + ATTR.nlink, true),
    uid: v.getUint32(at + ATTR.uid, true),
    gid: v.getUint32(at + ATTR.gid, true),
    rdev: v.getUint32(at + ATTR.rdev, true),
    blksize: v.getUint32(at + ATTR.blksize, true),
  };
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

/** A FUSE client speaking over one front end's virtqueues. */
export class FuseClient {
  readonly #fe: VhostUserFrontend;
  readonly #queue: number;
  readonly #uid: number;
  readonly #gid: number;
  readonly #pid: number;
  readonly #chain: ChainOptions;
  readonly #timeoutMs: number | undefined;
  #nextUnique = 2n;
  /** Pending requests by queue, then by descriptor chain head. */
  readonly #pending = new Map<number, Map<number, Pending>>();
  /** Replies harvested but not yet collected, in arrival order. */
  readonly #ready: FuseReply[] = [];

  /** A client of `frontend`'s request queue `opts.queue` (default 1). */
  constructor(frontend: VhostUserFrontend, opts: FuseClientOptions = {}) {
    this.#fe = frontend;
    this.#queue = opts.queue ?? 1;
    this.#uid = opts.uid ?? 0;
    this.#gid = opts.gid ?? 0;
    this.#pid = opts.pid ?? Deno.pid;
    this.#chain = opts.chain ?? {};
    this.#timeoutMs = opts.timeoutMs;
  }

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
    const header = new Uint8Array(IN_HEADER.size);
    const hv = new DataView(header.buffer);
    hv.setUint32(IN_HEADER.len, opts.len ?? IN_HEADER.size + argLen, true);
    hv.setUint32(IN_HEADER.opcode, opcode, true);
    hv.setBigUint64(IN_HEADER.unique, unique, true);
    hv.setBigUint64(
      IN_HEADER.nodeid,
      opts.nodeid ?? (opcode === FUSE_INIT ? 0n : FUSE_ROOT_ID),
      true,
    );
    hv.setUint32(IN_HEADER.uid, opts.uid ?? this.#uid, true);
    hv.setUint32(IN_HEADER.gid, opts.gid ?? this.#gid, true);
    hv.setUint32(IN_HEADER.pid, opts.pid ?? this.#pid, true);
    hv.setUint16(IN_HEADER.totalExtlen, opts.totalExtlen ?? 0, true);

    const readableData = opts.contiguous
      ? [concat([header, ...args])]
      : [header, ...args.filter((a) => a.byteLength > 0)];
    const readable = readableData.map((d) => ({ gpa: mem.place(d), len: d.byteLength }));
    const writable: GuestBuffer[] = [];
    if (replySizes !== null) {
      for (const size of [OUT_HEADER.size, ...replySizes]) {
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

  /** Publishes deferred requests of queue `q` (kicking if the device asked). Returns kicked. */
  flush(q: number = this.#queue): boolean {
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
    if (raw.byteLength >= OUT_HEADER.size) {
      const v = new DataView(raw.buffer);
      len = v.getUint32(OUT_HEADER.len, true);
      error = v.getInt32(OUT_HEADER.error, true);
      unique = v.getBigUint64(OUT_HEADER.unique, true);
    }
    for (const b of p.buffers) mem.free(b.gpa, b.len);
    const end = Math.min(Math.max(len, OUT_HEADER.size), raw.byteLength);
    return {
      queue: q,
      opcode: p.opcode,
      requestUnique: p.unique,
      unique,
      error,
      len,
      usedLen: used.len,
      writableBytes: used.writableBytes,
      body: raw.byteLength >= OUT_HEADER.size ? raw.slice(OUT_HEADER.size, end) : new Uint8Array(0),
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

  /** Throws FuseError for an error reply; checks the out header's unique. */
  static check(r: FuseReply): FuseReply {
    if (r.unique !== r.requestUnique) {
      throw new Error(
        `${opcodeName(r.opcode)} reply carries unique ${r.unique}, the request ${r.requestUnique}`,
      );
    }
    if (r.error !== 0) throw new FuseError(r.opcode, r.requestUnique, -r.error);
    return r;
  }

  /** The `fuse_init_in` bytes for `opts`. */
  static initIn(opts: InitOptions = {}): Uint8Array {
    const b = new Uint8Array(INIT_IN.size);
    const v = new DataView(b.buffer);
    const flags = opts.flags ?? LINUX_6_1_INIT_FLAGS;
    v.setUint32(INIT_IN.major, opts.major ?? 7, true);
    v.setUint32(INIT_IN.minor, opts.minor ?? 38, true);
    v.setUint32(INIT_IN.maxReadahead, opts.maxReadahead ?? 0x20000, true);
    v.setUint32(INIT_IN.flags, Number(flags & 0xffff_ffffn), true);
    v.setUint32(INIT_IN.flags2, Number(flags >> 32n), true);
    return b;
  }

  /** Parses a `fuse_init_out` (shorter replies of old versions leave the rest 0). */
  static parseInitOut(reply: FuseReply): InitOut {
    const body = new Uint8Array(INIT_OUT.size);
    body.set(reply.body.subarray(0, INIT_OUT.size));
    const v = new DataView(body.buffer);
    const flagsWord = v.getUint32(INIT_OUT.flags, true);
    const flags2 = v.getUint32(INIT_OUT.flags2, true);
    let flags = BigInt(flagsWord);
    if ((flags & FUSE_INIT_EXT) !== 0n) flags |= BigInt(flags2) << 32n;
    return {
      major: v.getUint32(INIT_OUT.major, true),
      minor: v.getUint32(INIT_OUT.minor, true),
      maxReadahead: v.getUint32(INIT_OUT.maxReadahead, true),
      flags,
      flagsWord,
      flags2,
      maxBackground: v.getUint16(INIT_OUT.maxBackground, true),
      congestionThreshold: v.getUint16(INIT_OUT.congestionThreshold, true),
      maxWrite: v.getUint32(INIT_OUT.maxWrite, true),
      timeGran: v.getUint32(INIT_OUT.timeGran, true),
      maxPages: v.getUint16(INIT_OUT.maxPages, true),
      mapAlignment: v.getUint16(INIT_OUT.mapAlignment, true),
      reply,
    };
  }

  /**
   * FUSE_INIT as Linux 6.1.192 sends it (7.38, max_readahead 0x20000, flags
   * 0x0000000b7bfffffb), as 2 readable buffers (40 + 64) and 2 writable (16 + 64). Throws
   * FuseError on an error reply.
   */
  init(opts: InitOptions = {}): InitOut {
    const r = this.request(FUSE_INIT, [FuseClient.initIn(opts)], [INIT_OUT.size], {
      nodeid: 0n,
      ...opts,
    });
    return FuseClient.parseInitOut(FuseClient.check(r));
  }

  /** The `fuse_getattr_in` bytes (no fh). */
  static getattrIn(): Uint8Array {
    return new Uint8Array(GETATTR_IN.size);
  }

  /** Parses a `fuse_attr_out`. */
  static parseAttrOut(reply: FuseReply): AttrOut {
    if (reply.body.byteLength < ATTR_OUT.size) {
      throw new Error(`GETATTR reply body is ${reply.body.byteLength} bytes, not ${ATTR_OUT.size}`);
    }
    const v = new DataView(reply.body.buffer, reply.body.byteOffset, reply.body.byteLength);
    return {
      attrValid: v.getBigUint64(ATTR_OUT.attrValid, true),
      attrValidNsec: v.getUint32(ATTR_OUT.attrValidNsec, true),
      attr: parseAttr(v, ATTR_OUT.attr),
    };
  }

  /** FUSE_GETATTR of `nodeid`; throws FuseError on an error reply. */
  getattr(nodeid: bigint, opts: FuseRequestOptions = {}): AttrOut {
    const r = this.request(FUSE_GETATTR, [FuseClient.getattrIn()], [ATTR_OUT.size], {
      ...opts,
      nodeid,
    });
    return FuseClient.parseAttrOut(FuseClient.check(r));
  }

  /** FUSE_LOOKUP of `name` in directory `parent`; throws FuseError on an error reply. */
  lookup(parent: bigint, name: string, opts: FuseRequestOptions = {}): EntryOut {
    const nameBytes = new TextEncoder().encode(name + "\0");
    const r = FuseClient.check(
      this.request(FUSE_LOOKUP, [nameBytes], [ENTRY_OUT.size], { ...opts, nodeid: parent }),
    );
    if (r.body.byteLength < ENTRY_OUT.size) {
      throw new Error(`LOOKUP reply body is ${r.body.byteLength} bytes, not ${ENTRY_OUT.size}`);
    }
    const v = new DataView(r.body.buffer, r.body.byteOffset, r.body.byteLength);
    return {
      nodeid: v.getBigUint64(ENTRY_OUT.nodeid, true),
      generation: v.getBigUint64(ENTRY_OUT.generation, true),
      entryValid: v.getBigUint64(ENTRY_OUT.entryValid, true),
      attrValid: v.getBigUint64(ENTRY_OUT.attrValid, true),
      attr: parseAttr(v, ENTRY_OUT.attr),
    };
  }

  /**
   * FUSE_FORGET of `nlookup` references to `nodeid` on the hiprio queue (queue 0), as Linux
   * 6.1 sends it: one 48-byte device-readable buffer, nothing writable, no reply. Waits for the
   * chain to come back and returns its used element (whose `len` should be 0).
   */
  forget(nodeid: bigint, nlookup: bigint, opts: FuseRequestOptions = {}): UsedElement {
    const arg = new Uint8Array(FORGET_IN.size);
    new DataView(arg.buffer).setBigUint64(FORGET_IN.nlookup, nlookup, true);
    const q = opts.queue ?? HIPRIO_QUEUE;
    this.submit(FUSE_FORGET, [arg], null, { contiguous: true, ...opts, nodeid, queue: q });
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
    if (mine === undefined) throw new Error(`FORGET on queue ${q} came back empty`);
    return mine;
  }
}
