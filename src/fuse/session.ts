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
import type { Context, FileSystem, ForgetOne } from "../filesystem/filesystem.ts";
import type { DescriptorChain } from "../virtqueue/descriptor_chain.ts";
import { type Logger, Throttle } from "../log.ts";
import * as A from "../wire/fuse.ts";
import { RequestStats } from "./request_stats.ts";
import { Operations, OUT_BODY_MAX, type Request } from "./dispatch.ts";

/** Counters for logs and tests. */
export interface SessionStats {
  /** Requests answered (error replies included). */
  replies: number;
  /** Requests that take no reply (FORGET, BATCH_FORGET, INTERRUPT). */
  noReply: number;
  /** Chains dropped: too short for a header, or no room for the reply header. */
  dropped: number;
}

/** INIT flags the session grants when the client asks for them. */
export const SUPPORTED_INIT_FLAGS: bigint = A.FUSE_ASYNC_READ | A.FUSE_BIG_WRITES |
  A.FUSE_MAX_PAGES | A.FUSE_PARALLEL_DIROPS | A.FUSE_AUTO_INVAL_DATA | A.FUSE_DO_READDIRPLUS |
  A.FUSE_READDIRPLUS_AUTO | A.FUSE_ATOMIC_O_TRUNC | A.FUSE_EXPORT_SUPPORT | A.FUSE_SUBMOUNTS |
  A.FUSE_ASYNC_DIO | A.FUSE_WRITEBACK_CACHE | A.FUSE_DIRECT_IO_ALLOW_MMAP |
  A.FUSE_INIT_EXT;

/** What INIT negotiated. */
export interface Negotiated {
  /** The session's minor version: min(ours, the client's). */
  minor: number;
  /** Flags granted (bits 32–63 included). */
  flags: bigint;
  /** The client's max_readahead, echoed. */
  maxReadahead: number;
}

const SCRATCH_SIZE = A.IN_HEADER.size + 64 * 1024 + 4096;
/** Nodeids whose BigInt is kept (a power of 2; direct-mapped by the low bits). */
const NODEID_CACHE = 256;

/** One FUSE session (one mount). */
export class FuseSession {
  /** Counters. */
  readonly stats: SessionStats = { replies: 0, noReply: 0, dropped: 0 };
  /** Requests by opcode, with sampled service times. */
  readonly requests: RequestStats = new RequestStats();
  /** The opcode of the request `handle` took last (0 when the chain had no header). */
  lastOpcode = 0;
  /** Set by INIT, cleared by DESTROY and `reset()`. */
  negotiated: Negotiated | undefined;
  readonly #log: Logger;
  /** Throttles what a guest can make us log at will. */
  readonly #noisy = new Throttle();
  readonly #fs: FileSystem;
  readonly #ctx: Context = { uid: 0, gid: 0, pid: 0 };
  readonly #in = new Uint8Array(new ArrayBuffer(SCRATCH_SIZE));
  readonly #inView = new DataView(this.#in.buffer);
  readonly #out = new Uint8Array(new ArrayBuffer(A.OUT_HEADER.size + OUT_BODY_MAX));
  readonly #outView = new DataView(this.#out.buffer);
  readonly #ops: Operations;
  readonly #request: Request;
  /** The current request's `unique`, as two u32 (echoed into the reply as read). */
  #uniqueLo = 0;
  #uniqueHi = 0;
  readonly #nodeLo = new Uint32Array(NODEID_CACHE);
  readonly #nodeHi = new Uint32Array(NODEID_CACHE);
  readonly #nodeBig: (bigint | undefined)[] = new Array(NODEID_CACHE).fill(undefined);

  /** A session serving `fs`. */
  constructor(log: Logger, fs: FileSystem) {
    this.#log = log;
    this.#fs = fs;
    this.#ops = new Operations(fs);
    this.#request = {
      chain: undefined as unknown as DescriptorChain,
      ctx: this.#ctx,
      nodeid: 0n,
      in: this.#inView,
      inBytes: this.#in,
      argLen: 0,
      out: this.#outView,
      outBytes: this.#out,
      bodyInChain: false,
    };
  }

  /**
   * Forgets everything INIT set up (a new mount, a guest reboot, a disconnect); the file system
   * forgets every node it handed out.
   */
  reset(): void {
    if (this.negotiated !== undefined) this.#fs.destroy?.();
    this.negotiated = undefined;
  }

  /** The request's `unique` as text (for logs). */
  #uniqueText(): string {
    return String(BigInt(this.#uniqueHi) * 0x1_0000_0000n + BigInt(this.#uniqueLo));
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
   * buffers: the used length to put on the used ring (0 for requests with no reply).
   *
   * The in header is read where it lies in guest memory (each field once) when its first buffer
   * holds all of it, else from a copy; the arguments are always copied, so what is checked is
   * what is used even if the guest changes its memory meanwhile.
   */
  handle(chain: DescriptorChain): number {
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
      chain.readInto(this.#in, 0, 0, A.IN_HEADER.size);
      hv = this.#inView;
      h = 0;
    }
    const len = hv.getUint32(h + A.IN_HEADER.len, true);
    const opcode = hv.getUint32(h + A.IN_HEADER.opcode, true);
    this.lastOpcode = opcode;
    this.requests.count(opcode);
    this.#uniqueLo = hv.getUint32(h + A.IN_HEADER.unique, true);
    this.#uniqueHi = hv.getUint32(h + A.IN_HEADER.unique + 4, true);
    const nodeLo = hv.getUint32(h + A.IN_HEADER.nodeid, true);
    const nodeHi = hv.getUint32(h + A.IN_HEADER.nodeid + 4, true);
    const uid = hv.getUint32(h + A.IN_HEADER.uid, true);
    const gid = hv.getUint32(h + A.IN_HEADER.gid, true);
    const pid = hv.getUint32(h + A.IN_HEADER.pid, true);
    if (this.#log.enabled("trace")) {
      const nodeid = this.#nodeid(nodeLo, nodeHi);
      this.#log.trace(
        `${A.opcodeName(opcode)} unique ${this.#uniqueText()} nodeid ${nodeid} len ${len}`,
      );
    }
    if (opcode === A.FUSE_FORGET || opcode === A.FUSE_BATCH_FORGET || opcode === A.FUSE_INTERRUPT) {
      this.stats.noReply++;
      if (opcode !== A.FUSE_INTERRUPT && this.negotiated !== undefined) {
        this.#forget(chain, opcode, len, this.#nodeid(nodeLo, nodeHi));
      }
      return 0;
    }
    if (chain.writableLength < A.OUT_HEADER.size) {
      this.stats.dropped++;
      if (this.#noisy.pass()) {
        this.#log.warn(
          `dropped ${
            A.opcodeName(opcode)
          } unique ${this.#uniqueText()}: ${chain.writableLength} writable bytes, no room for a reply (${this.#noisy.count} guest faults so far)`,
        );
      }
      return 0;
    }
    if (len < A.IN_HEADER.size || len > chain.readableLength) {
      return this.#error(chain, Errno.EINVAL);
    }
    const argLen = Math.min(len - A.IN_HEADER.size, SCRATCH_SIZE - A.IN_HEADER.size);
    // WRITE data stays in guest memory (it goes to the file with pwritev); only write_in is copied.
    chain.readInto(
      this.#in,
      A.IN_HEADER.size,
      A.IN_HEADER.size,
      opcode === A.FUSE_WRITE ? Math.min(argLen, A.WRITE_IN.size) : argLen,
    );
    switch (opcode) {
      case A.FUSE_INIT:
        return this.#init(chain, argLen);
      case A.FUSE_DESTROY:
        this.#log.info("FUSE session destroyed by the client");
        this.reset();
        return this.#reply(chain, 0);
    }
    if (this.negotiated === undefined) return this.#error(chain, Errno.EIO);
    const ctx = this.#ctx;
    ctx.uid = uid;
    ctx.gid = gid;
    ctx.pid = pid;
    const r = this.#request;
    r.chain = chain;
    r.nodeid = this.#nodeid(nodeLo, nodeHi);
    r.argLen = argLen;
    r.bodyInChain = false;
    try {
      const n = this.#ops.run(opcode, r);
      if (n < 0) return this.#error(chain, -n);
      return r.bodyInChain ? this.#replyHeader(chain, n) : this.#reply(chain, n);
    } catch (e) {
      if (e instanceof ErrnoError) return this.#error(chain, e.errno);
      if (this.#noisy.pass()) {
        this.#log.error(
          `${A.opcodeName(opcode)} unique ${this.#uniqueText()} failed: ${
            e instanceof Error ? e.stack : e
          }`,
        );
      }
      return this.#error(chain, Errno.EIO);
    }
  }

  /** FORGET and BATCH_FORGET: no reply; what does not fit the request is ignored. */
  #forget(chain: DescriptorChain, opcode: number, len: number, nodeid: bigint): void {
    const fs = this.#fs;
    const argLen = Math.min(len, chain.readableLength, SCRATCH_SIZE) - A.IN_HEADER.size;
    if (argLen <= 0) return;
    chain.readInto(this.#in, A.IN_HEADER.size, A.IN_HEADER.size, argLen);
    const v = this.#inView;
    const at = A.IN_HEADER.size;
    try {
      if (opcode === A.FUSE_FORGET) {
        if (argLen < A.FORGET_IN.size) return;
        fs.forget?.(this.#ctx, nodeid, v.getBigUint64(at + A.FORGET_IN.nlookup, true));
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
      if (fs.batchForget !== undefined) fs.batchForget(this.#ctx, items);
      else for (const item of items) fs.forget?.(this.#ctx, item.nodeid, item.nlookup);
    } catch (e) {
      if (this.#noisy.pass()) {
        this.#log.warn(`${A.opcodeName(opcode)} failed: ${e instanceof Error ? e.message : e}`);
      }
    }
  }

  /** Writes the out header (length `total`, `error`, the request's unique) into `#out`. */
  #header(total: number, error: number): void {
    const o = this.#outView;
    o.setUint32(A.OUT_HEADER.len, total, true);
    o.setInt32(A.OUT_HEADER.error, error, true);
    o.setUint32(A.OUT_HEADER.unique, this.#uniqueLo, true);
    o.setUint32(A.OUT_HEADER.unique + 4, this.#uniqueHi, true);
    this.stats.replies++;
  }

  #reply(chain: DescriptorChain, bodyLength: number): number {
    const total = A.OUT_HEADER.size + bodyLength;
    this.#header(total, 0);
    return chain.writeFrom(this.#out, 0, total, 0);
  }

  /** Writes only the out header: the body (`bodyLength` bytes) is already in the chain. */
  #replyHeader(chain: DescriptorChain, bodyLength: number): number {
    this.#header(A.OUT_HEADER.size + bodyLength, 0);
    return chain.writeFrom(this.#out, 0, A.OUT_HEADER.size, 0) + bodyLength;
  }

  #error(chain: DescriptorChain, errno: number): number {
    this.#header(A.OUT_HEADER.size, -errno);
    return chain.writeFrom(this.#out, 0, A.OUT_HEADER.size, 0);
  }

  #init(chain: DescriptorChain, argLen: number): number {
    const v = this.#inView;
    const at = A.IN_HEADER.size;
    if (argLen < A.INIT_IN.compatSize) return this.#error(chain, Errno.EINVAL);
    const major = v.getUint32(at + A.INIT_IN.major, true);
    const minor = v.getUint32(at + A.INIT_IN.minor, true);
    const maxReadahead = v.getUint32(at + A.INIT_IN.maxReadahead, true);
    let flags = BigInt(v.getUint32(at + A.INIT_IN.flags, true));
    if ((flags & A.FUSE_INIT_EXT) !== 0n && argLen >= A.INIT_IN.flags2 + 4) {
      flags |= BigInt(v.getUint32(at + A.INIT_IN.flags2, true)) << 32n;
    }
    const o = this.#outView;
    const body = A.OUT_HEADER.size;
    this.#out.fill(0, body, body + A.INIT_OUT.size);
    if (major > A.FUSE_KERNEL_VERSION) {
      // The client retries with our major when we answer with just the version.
      o.setUint32(body + A.INIT_OUT.major, A.FUSE_KERNEL_VERSION, true);
      o.setUint32(body + A.INIT_OUT.minor, A.FUSE_KERNEL_MINOR_VERSION, true);
      return this.#reply(chain, A.INIT_OUT.size);
    }
    if (major < A.FUSE_KERNEL_VERSION || minor < A.FUSE_MIN_MINOR_VERSION) {
      if (this.#noisy.pass()) {
        this.#log.error(
          `FUSE_INIT from a client speaking ${major}.${minor}: too old (need 7.${A.FUSE_MIN_MINOR_VERSION})`,
        );
      }
      return this.#error(chain, Errno.EPROTO);
    }
    if (this.negotiated !== undefined) {
      this.#log.info("FUSE_INIT on a live session: starting afresh");
    }
    this.reset();
    const capable = flags & SUPPORTED_INIT_FLAGS;
    // The writeback cache changes what WRITE means (any fh, the guest's own i_size), so only a
    // file system that asks for it in init() gets it.
    const granted = this.#fs.init !== undefined
      ? this.#fs.init(capable) & capable
      : capable & ~(A.FUSE_WRITEBACK_CACHE | A.FUSE_DIRECT_IO_ALLOW_MMAP);
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
    this.#log.info(
      `FUSE_INIT: client ${major}.${minor} flags 0x${
        flags.toString(16)
      }; session 7.${sessionMinor} flags 0x${granted.toString(16)}`,
    );
    return this.#reply(chain, A.INIT_OUT.size);
  }
}
