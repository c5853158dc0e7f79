/**
 * The FUSE session: decodes each request of a descriptor chain, answers it in the chain's
 * device-writable buffers, and keeps the session's state (INIT negotiation).
 *
 * Every request is checked against the chain's real lengths before it is used: a request shorter
 * than its header, or whose header claims more bytes than the chain holds, gets EINVAL; an opcode
 * we do not know gets ENOSYS; a chain with no room for a reply header is dropped and counted.
 *
 * @module
 */
import { Errno, ErrnoError } from "../ffi/errno.ts";
import type { FileSystem, ForgetOne } from "../filesystem/filesystem.ts";
import type { DescriptorChain } from "../virtqueue/descriptor_chain.ts";
import { type Logger, Throttle } from "../log.ts";
import * as A from "../wire/fuse.ts";
import { RequestStats } from "./request_stats.ts";
import { type BodyLength, FuseRequest, Operations, SCRATCH_SIZE } from "./dispatch.ts";
import { DAX_PAGE, type DaxWindow } from "./dax.ts";

/** Counters for logs and tests. */
export interface SessionStats {
  /** Requests answered (error replies included). */
  replies: number;
  /** Requests that take no reply (FORGET, BATCH_FORGET, INTERRUPT). */
  noReply: number;
  /** Chains dropped: too short for a header, or no room for the reply header. */
  dropped: number;
  /** Requests whose file-system call returned a Promise. */
  pending: number;
  /** Of those, replies dropped because their queue was reset before they settled. */
  late: number;
}

/** INIT flags the session grants when the client asks for them. */
export const SUPPORTED_INIT_FLAGS: bigint = A.FUSE_ASYNC_READ | A.FUSE_BIG_WRITES |
  A.FUSE_MAX_PAGES | A.FUSE_PARALLEL_DIROPS | A.FUSE_AUTO_INVAL_DATA | A.FUSE_DO_READDIRPLUS |
  A.FUSE_READDIRPLUS_AUTO | A.FUSE_ATOMIC_O_TRUNC | A.FUSE_EXPORT_SUPPORT | A.FUSE_SUBMOUNTS |
  A.FUSE_ASYNC_DIO | A.FUSE_WRITEBACK_CACHE | A.FUSE_DIRECT_IO_ALLOW_MMAP |
  A.FUSE_HANDLE_KILLPRIV_V2 | A.FUSE_INIT_EXT;

/**
 * INIT flags that change what the file system must do, granted only to one whose `init` returns
 * them: the writeback cache (WRITE from any handle, the guest's own i_size), mmap under direct
 * I/O, and HANDLE_KILLPRIV_V2 (the file system clears setuid/setgid on FUSE_WRITE_KILL_SUIDGID,
 * FATTR_KILL_SUIDGID and FUSE_OPEN_KILL_SUIDGID, instead of the guest sending a GETXATTR of
 * security.capability before every write and a SETATTR to clear the bits).
 */
const OPT_IN_INIT_FLAGS: bigint = A.FUSE_WRITEBACK_CACHE | A.FUSE_DIRECT_IO_ALLOW_MMAP |
  A.FUSE_HANDLE_KILLPRIV_V2;

/** What INIT negotiated. */
export interface Negotiated {
  /** The session's minor version: min(ours, the client's). */
  minor: number;
  /** Flags granted (bits 32–63 included). */
  flags: bigint;
  /** The client's max_readahead, echoed. */
  maxReadahead: number;
}

/** Nodeids whose BigInt is kept (a power of 2; direct-mapped by the low bits). */
const NODEID_CACHE = 256;
/** What `handle` returns for a request whose file-system call went async. */
export const PENDING = -1;
/** Requests whose file-system call may be pending at once (more wait in their queue). */
export const MAX_PENDING = 64;

/**
 * Where the replies of async requests go: `tag` is what `handle` was given, `chain` the
 * request's chain (the device took it out of its queue when `handle` returned PENDING), `used`
 * the bytes written into it. `live` false: the queue was reset meanwhile, nothing was written,
 * and the chain must not go on a used ring.
 */
export type AsyncReplySink = (
  tag: number,
  chain: DescriptorChain,
  used: number,
  live: boolean,
) => void;

/** One FUSE session (one mount). */
export class FuseSession {
  /** Counters. */
  readonly stats: SessionStats = { replies: 0, noReply: 0, dropped: 0, pending: 0, late: 0 };
  /** Requests by opcode, with sampled service times. */
  readonly requests: RequestStats = new RequestStats();
  /** The opcode of the request `handle` took last (0 when the chain had no header). */
  lastOpcode = 0;
  /** Set by INIT, cleared by DESTROY and `reset()`. */
  negotiated: Negotiated | undefined;
  /** Receives the replies of requests that went async (set by the device). */
  onAsyncReply: AsyncReplySink = () => {};
  readonly #log: Logger;
  /** Throttles what a guest can make us log at will. */
  readonly #noisy = new Throttle();
  readonly #fs: FileSystem;
  readonly #ops: Operations;
  /** The request object `handle` fills next; replaced when one goes async. */
  #request: FuseRequest | undefined = new FuseRequest();
  /** FUSE_HAS_INODE_DAX was granted: attributes mark the files the window serves. */
  #inodeDax = false;
  /** Request objects free for reuse, and those whose call is pending. */
  readonly #free: FuseRequest[] = [];
  readonly #pending = new Set<FuseRequest>();
  readonly #nodeLo = new Uint32Array(NODEID_CACHE);
  readonly #nodeHi = new Uint32Array(NODEID_CACHE);
  readonly #nodeBig: (bigint | undefined)[] = new Array(NODEID_CACHE).fill(undefined);

  /** A session serving `fs`. */
  constructor(log: Logger, fs: FileSystem) {
    this.#log = log;
    this.#fs = fs;
    this.#ops = new Operations(fs);
  }

  /**
   * False while MAX_PENDING requests are pending: take no chain until one settles (the
   * `onAsyncReply` of that one says so).
   */
  get ready(): boolean {
    return this.#request !== undefined;
  }

  /** Requests whose file-system call is pending. */
  get pending(): number {
    return this.#pending.size;
  }

  /** The DAX cache window SETUPMAPPING and REMOVEMAPPING change (none: they get ENOSYS). */
  get dax(): DaxWindow | undefined {
    return this.#ops.dax;
  }

  set dax(window: DaxWindow | undefined) {
    this.#ops.dax = window;
  }

  /**
   * Forgets everything INIT set up (a new mount, a guest reboot, a disconnect); the file system
   * forgets every node it handed out. Pending requests are dropped (`invalidate`).
   */
  reset(): void {
    this.invalidate();
    // The front end drops its window's mappings itself when its device resets.
    this.#ops.dax?.reset();
    this.#endSession();
  }

  /** Ends the session (INIT again, DESTROY): requests in flight still get their replies. */
  #endSession(): void {
    if (this.negotiated !== undefined) this.#background(this.#fs.destroy?.(), "destroy");
    this.negotiated = undefined;
    this.#inodeDax = false;
  }

  /**
   * The chains of pending requests are no longer the device's (their queue stopped or guest
   * memory was remapped): they touch guest memory no more, and their replies are dropped.
   */
  invalidate(): void {
    for (const r of this.#pending) r.live = false;
  }

  /** Logs the rejection of a call whose result nobody waits for (FORGET, destroy). */
  #background(result: unknown, what: string): void {
    if (result instanceof Promise) {
      result.catch((e) => {
        if (this.#noisy.pass()) {
          this.#log.warn(`${what} failed: ${e instanceof Error ? e.message : e}`);
        }
      });
    }
  }

  /**
   * The nodeid `hi:lo` as a bigint, from a small cache so that a node in use does not cost a
   * BigInt per request (BigInts are immutable, so sharing one is safe).
   */
  #nodeid(lo: number, hi: number): bigint {
    const slot = lo & (NODEID_CACHE - 1);
    const cached = this.#nodeBig[slot];
    if (cached !== undefined && this.#nodeLo[slot] === lo && this.#nodeHi[slot] === hi) {
      return cached;
    }
    const n = hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) | BigInt(lo);
    this.#nodeLo[slot] = lo;
    this.#nodeHi[slot] = hi;
    this.#nodeBig[slot] = n;
    return n;
  }

  /**
   * Handles the request in `chain`. Returns the number of bytes written into its device-writable
   * buffers (the used length to put on the used ring; 0 for requests with no reply), or PENDING
   * when the file system's call went async: the chain then belongs to the request until its
   * reply goes to `onAsyncReply` with `tag`. Call only while `ready`.
   *
   * The in header is read where it lies in guest memory (each field once) when its first buffer
   * holds all of it, else from a copy; the arguments are always copied, so what is checked is
   * what is used even if the guest changes its memory meanwhile.
   */
  handle(chain: DescriptorChain, tag = 0): number {
    const r = this.#request;
    if (r === undefined) throw new Error("FuseSession.handle() while not ready");
    if (chain.readableLength < A.IN_HEADER.size) {
      this.lastOpcode = 0;
      this.stats.dropped++;
      if (this.#noisy.pass()) {
        this.#log.warn(
          `dropped a chain of ${chain.readableLength} readable bytes: no FUSE header (${this.#noisy.count} guest faults so far)`,
        );
      }
      return 0;
    }
    let hv: DataView;
    let h: number;
    if (chain.segmentLength(0) >= A.IN_HEADER.size) {
      hv = chain.segmentRegion(0).view;
      h = chain.segmentOffset(0);
    } else {
      chain.readInto(r.inBytes, 0, 0, A.IN_HEADER.size);
      hv = r.in;
      h = 0;
    }
    const len = hv.getUint32(h + A.IN_HEADER.len, true);
    const opcode = hv.getUint32(h + A.IN_HEADER.opcode, true);
    this.lastOpcode = opcode;
    this.requests.count(opcode);
    r.chain = chain;
    r.opcode = opcode;
    r.uniqueLo = hv.getUint32(h + A.IN_HEADER.unique, true);
    r.uniqueHi = hv.getUint32(h + A.IN_HEADER.unique + 4, true);
    const nodeLo = hv.getUint32(h + A.IN_HEADER.nodeid, true);
    const nodeHi = hv.getUint32(h + A.IN_HEADER.nodeid + 4, true);
    const ctx = r.ctx;
    ctx.uid = hv.getUint32(h + A.IN_HEADER.uid, true);
    ctx.gid = hv.getUint32(h + A.IN_HEADER.gid, true);
    ctx.pid = hv.getUint32(h + A.IN_HEADER.pid, true);
    if (this.#log.enabled("trace")) {
      const nodeid = this.#nodeid(nodeLo, nodeHi);
      this.#log.trace(
        `${A.opcodeName(opcode)} unique ${r.uniqueText()} nodeid ${nodeid} len ${len}`,
      );
    }
    if (opcode === A.FUSE_FORGET || opcode === A.FUSE_BATCH_FORGET || opcode === A.FUSE_INTERRUPT) {
      this.stats.noReply++;
      if (opcode !== A.FUSE_INTERRUPT && this.negotiated !== undefined) {
        this.#forget(r, opcode, len, this.#nodeid(nodeLo, nodeHi));
      }
      return 0;
    }
    if (chain.writableLength < A.OUT_HEADER.size) {
      this.stats.dropped++;
      if (this.#noisy.pass()) {
        this.#log.warn(
          `dropped ${
            A.opcodeName(opcode)
          } unique ${r.uniqueText()}: ${chain.writableLength} writable bytes, no room for a reply (${this.#noisy.count} guest faults so far)`,
        );
      }
      return 0;
    }
    if (len < A.IN_HEADER.size || len > chain.readableLength) {
      return this.#error(r, Errno.EINVAL);
    }
    const argLen = Math.min(len - A.IN_HEADER.size, SCRATCH_SIZE - A.IN_HEADER.size);
    // WRITE data stays in guest memory (it goes to the file with pwritev); only write_in is copied.
    chain.readInto(
      r.inBytes,
      A.IN_HEADER.size,
      A.IN_HEADER.size,
      opcode === A.FUSE_WRITE ? Math.min(argLen, A.WRITE_IN.size) : argLen,
    );
    r.argLen = argLen;
    r.bodyInChain = false;
    r.live = true;
    let body: BodyLength;
    try {
      if (opcode === A.FUSE_INIT) body = this.#init(r);
      else if (opcode === A.FUSE_DESTROY) {
        this.#log.info("FUSE session destroyed by the client");
        this.#endSession();
        // The device stays, with whatever the guest left mapped in its window.
        this.#ops.dax?.unmapAll();
        body = 0;
      } else if (this.negotiated === undefined) return this.#error(r, Errno.EIO);
      else {
        r.nodeid = this.#nodeid(nodeLo, nodeHi);
        r.inodeDax = this.#inodeDax;
        body = this.#ops.run(opcode, r);
      }
    } catch (e) {
      return this.#failed(r, e);
    }
    if (typeof body === "number") return this.#finish(r, body);
    this.#wait(r, tag, body);
    return PENDING;
  }

  /** The reply of a served request: its header (and its body unless already in the chain). */
  #finish(r: FuseRequest, body: number): number {
    return r.bodyInChain ? this.#replyHeader(r, body) : this.#reply(r, body);
  }

  /** The error reply of a request whose call threw (or rejected with) `e`. */
  #failed(r: FuseRequest, e: unknown): number {
    if (e instanceof ErrnoError) return this.#error(r, e.errno);
    if (this.#noisy.pass()) {
      this.#log.error(
        `${A.opcodeName(r.opcode)} unique ${r.uniqueText()} failed: ${
          e instanceof Error ? e.stack : e
        }`,
      );
    }
    return this.#error(r, Errno.EIO);
  }

  /** Parks `r` until `body` settles; the next request gets another object. */
  #wait(r: FuseRequest, tag: number, body: Promise<number>): void {
    r.tag = tag;
    this.#pending.add(r);
    this.stats.pending++;
    this.#request = this.#free.pop() ??
      (this.#pending.size < MAX_PENDING ? new FuseRequest() : undefined);
    body.then(
      (n) => this.#settle(r, n, undefined),
      (e) => this.#settle(r, 0, e ?? new Error("rejected")),
    );
  }

  #settle(r: FuseRequest, body: number, error: unknown): void {
    this.#pending.delete(r);
    let used = 0;
    if (r.live) {
      try {
        used = error === undefined ? this.#finish(r, body) : this.#failed(r, error);
      } catch (e) {
        // Writing the reply failed (the encoder refused the result): EIO instead.
        used = this.#failed(r, e);
      }
    } else {
      this.stats.late++;
    }
    const chain = r.chain;
    r.chain = undefined as unknown as DescriptorChain;
    if (this.#request === undefined) this.#request = r;
    else this.#free.push(r);
    this.onAsyncReply(r.tag, chain, used, r.live);
  }

  /** FORGET and BATCH_FORGET: no reply; what does not fit the request is ignored. */
  #forget(r: FuseRequest, opcode: number, len: number, nodeid: bigint): void {
    const fs = this.#fs;
    const chain = r.chain;
    const argLen = Math.min(len, chain.readableLength, SCRATCH_SIZE) - A.IN_HEADER.size;
    if (argLen <= 0) return;
    chain.readInto(r.inBytes, A.IN_HEADER.size, A.IN_HEADER.size, argLen);
    const v = r.in;
    const at = A.IN_HEADER.size;
    try {
      if (opcode === A.FUSE_FORGET) {
        if (argLen < A.FORGET_IN.size) return;
        const nlookup = v.getBigUint64(at + A.FORGET_IN.nlookup, true);
        this.#ops.dax?.forget(nodeid);
        this.#background(fs.forget?.(r.ctx, nodeid, nlookup), "FORGET");
        return;
      }
      if (argLen < A.BATCH_FORGET_IN.size) return;
      const count = Math.min(
        v.getUint32(at + A.BATCH_FORGET_IN.count, true),
        Math.floor((argLen - A.BATCH_FORGET_IN.size) / A.FORGET_ONE.size),
      );
      const items: ForgetOne[] = [];
      for (let i = 0; i < count; i++) {
        const one = at + A.BATCH_FORGET_IN.size + i * A.FORGET_ONE.size;
        items.push({
          nodeid: v.getBigUint64(one + A.FORGET_ONE.nodeid, true),
          nlookup: v.getBigUint64(one + A.FORGET_ONE.nlookup, true),
        });
      }
      if (this.#ops.dax !== undefined) {
        for (const item of items) this.#ops.dax.forget(item.nodeid);
      }
      if (fs.batchForget !== undefined) {
        this.#background(fs.batchForget(r.ctx, items), "BATCH_FORGET");
      } else {
        for (const item of items) {
          this.#background(fs.forget?.(r.ctx, item.nodeid, item.nlookup), "FORGET");
        }
      }
    } catch (e) {
      if (this.#noisy.pass()) {
        this.#log.warn(`${A.opcodeName(opcode)} failed: ${e instanceof Error ? e.message : e}`);
      }
    }
  }

  /** Writes the out header (length `total`, `error`, the request's unique) into `r.out`. */
  #header(r: FuseRequest, total: number, error: number): void {
    const o = r.out;
    o.setUint32(A.OUT_HEADER.len, total, true);
    o.setInt32(A.OUT_HEADER.error, error, true);
    o.setUint32(A.OUT_HEADER.unique, r.uniqueLo, true);
    o.setUint32(A.OUT_HEADER.unique + 4, r.uniqueHi, true);
    this.stats.replies++;
  }

  #reply(r: FuseRequest, bodyLength: number): number {
    const total = A.OUT_HEADER.size + bodyLength;
    this.#header(r, total, 0);
    return r.chain.writeFrom(r.outBytes, 0, total, 0);
  }

  /** Writes only the out header: the body (`bodyLength` bytes) is already in the chain. */
  #replyHeader(r: FuseRequest, bodyLength: number): number {
    this.#header(r, A.OUT_HEADER.size + bodyLength, 0);
    return r.chain.writeFrom(r.outBytes, 0, A.OUT_HEADER.size, 0) + bodyLength;
  }

  #error(r: FuseRequest, errno: number): number {
    this.#header(r, A.OUT_HEADER.size, -errno);
    return r.chain.writeFrom(r.outBytes, 0, A.OUT_HEADER.size, 0);
  }

  /** INIT: the session's terms; the file system's `init` (sync or async) picks its flags. */
  #init(r: FuseRequest): BodyLength {
    const v = r.in;
    const at = A.IN_HEADER.size;
    const argLen = r.argLen;
    if (argLen < A.INIT_IN.compatSize) throw new ErrnoError(Errno.EINVAL, "FUSE_INIT");
    const major = v.getUint32(at + A.INIT_IN.major, true);
    const minor = v.getUint32(at + A.INIT_IN.minor, true);
    const maxReadahead = v.getUint32(at + A.INIT_IN.maxReadahead, true);
    let flags = BigInt(v.getUint32(at + A.INIT_IN.flags, true));
    if ((flags & A.FUSE_INIT_EXT) !== 0n && argLen >= A.INIT_IN.flags2 + 4) {
      flags |= BigInt(v.getUint32(at + A.INIT_IN.flags2, true)) << 32n;
    }
    const o = r.out;
    const body = A.OUT_HEADER.size;
    r.outBytes.fill(0, body, body + A.INIT_OUT.size);
    if (major > A.FUSE_KERNEL_VERSION) {
      // The client retries with our major when we answer with just the version.
      o.setUint32(body + A.INIT_OUT.major, A.FUSE_KERNEL_VERSION, true);
      o.setUint32(body + A.INIT_OUT.minor, A.FUSE_KERNEL_MINOR_VERSION, true);
      return A.INIT_OUT.size;
    }
    if (major < A.FUSE_KERNEL_VERSION || minor < A.FUSE_MIN_MINOR_VERSION) {
      if (this.#noisy.pass()) {
        this.#log.error(
          `FUSE_INIT from a client speaking ${major}.${minor}: too old (need 7.${A.FUSE_MIN_MINOR_VERSION})`,
        );
      }
      throw new ErrnoError(Errno.EPROTO, "FUSE_INIT");
    }
    if (this.negotiated !== undefined) {
      this.#log.info("FUSE_INIT on a live session: starting afresh");
      this.#ops.dax?.unmapAll();
    }
    this.#endSession();
    // With a cache window, mappings are page-aligned (the guest's 2 MiB ranges are).
    const dax = this.#ops.dax?.available === true && (flags & A.FUSE_MAP_ALIGNMENT) !== 0n;
    const capable = flags & SUPPORTED_INIT_FLAGS;
    // A guest granted READDIRPLUS sends nothing else to list a directory: a file system without
    // readdirplus (but with readdir) would leave it unable to list any.
    const listable = this.#fs.readdirplus === undefined
      ? capable & ~(A.FUSE_DO_READDIRPLUS | A.FUSE_READDIRPLUS_AUTO)
      : capable;
    const accept = (wanted: bigint): number => {
      const granted = wanted & listable;
      const sessionMinor = Math.min(minor, A.FUSE_KERNEL_MINOR_VERSION);
      this.negotiated = { minor: sessionMinor, flags: granted, maxReadahead };
      o.setUint32(body + A.INIT_OUT.major, A.FUSE_KERNEL_VERSION, true);
      o.setUint32(body + A.INIT_OUT.minor, sessionMinor, true);
      o.setUint32(body + A.INIT_OUT.maxReadahead, maxReadahead, true);
      o.setUint32(body + A.INIT_OUT.flags, Number(granted & 0xffffffffn), true);
      o.setUint16(body + A.INIT_OUT.maxBackground, 512, true);
      o.setUint16(body + A.INIT_OUT.congestionThreshold, 384, true);
      o.setUint32(body + A.INIT_OUT.maxWrite, A.MAX_WRITE, true);
      o.setUint32(body + A.INIT_OUT.timeGran, 1, true);
      o.setUint16(body + A.INIT_OUT.maxPages, A.MAX_PAGES, true);
      o.setUint32(body + A.INIT_OUT.flags2, Number(granted >> 32n), true);
      if (dax) {
        // Inode mode: the file system marks the files the window serves (FUSE_ATTR_DAX).
        const inodeDax = (flags & granted & A.FUSE_INIT_EXT) !== 0n &&
            (flags & A.FUSE_HAS_INODE_DAX) !== 0n && this.#fs.mappable !== undefined
          ? A.FUSE_HAS_INODE_DAX
          : 0n;
        const all = granted | A.FUSE_MAP_ALIGNMENT | inodeDax;
        o.setUint32(body + A.INIT_OUT.flags, Number(all & 0xffffffffn), true);
        o.setUint32(body + A.INIT_OUT.flags2, Number(all >> 32n), true);
        o.setUint16(body + A.INIT_OUT.mapAlignment, Math.log2(DAX_PAGE), true);
        this.negotiated.flags = all;
        this.#inodeDax = inodeDax !== 0n;
      }
      this.#log.info(
        `FUSE_INIT: client ${major}.${minor} flags 0x${
          flags.toString(16)
        }; session 7.${sessionMinor} flags 0x${granted.toString(16)}`,
      );
      return A.INIT_OUT.size;
    };
    if (this.#fs.init === undefined) return accept(listable & ~OPT_IN_INIT_FLAGS);
    const wanted = this.#fs.init(listable);
    return wanted instanceof Promise ? wanted.then(accept) : accept(wanted);
  }
}
