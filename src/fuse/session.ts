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
import type { Attr, Context, FileSystem, ForgetOne } from "../filesystem/filesystem.ts";
import type { DescriptorChain } from "../virtqueue/descriptor_chain.ts";
import type { Logger } from "../log.ts";
import * as A from "./abi.ts";

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
  A.FUSE_ASYNC_DIO |
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

/** One FUSE session (one mount). */
export class FuseSession {
  /** Counters. */
  readonly stats: SessionStats = { replies: 0, noReply: 0, dropped: 0 };
  /** Set by INIT, cleared by DESTROY and `reset()`. */
  negotiated: Negotiated | undefined;
  readonly #log: Logger;
  readonly #fs: FileSystem;
  readonly #ctx: Context = { uid: 0, gid: 0, pid: 0 };
  readonly #in = new Uint8Array(new ArrayBuffer(SCRATCH_SIZE));
  readonly #inView = new DataView(this.#in.buffer);
  readonly #out = new Uint8Array(new ArrayBuffer(A.OUT_HEADER.size + 4096));
  readonly #outView = new DataView(this.#out.buffer);

  /** A session serving `fs`. */
  constructor(log: Logger, fs: FileSystem) {
    this.#log = log;
    this.#fs = fs;
  }

  /**
   * Forgets everything INIT set up (a new mount, a guest reboot, a disconnect); the file system
   * forgets every node it handed out.
   */
  reset(): void {
    if (this.negotiated !== undefined) this.#fs.destroy?.();
    this.negotiated = undefined;
  }

  /**
   * Handles the request in `chain`. Returns the number of bytes written into its device-writable
   * buffers: the used length to put on the used ring (0 for requests with no reply).
   */
  handle(chain: DescriptorChain): number {
    if (chain.readableLength < A.IN_HEADER.size) {
      this.stats.dropped++;
      this.#log.warn(`dropped a chain of ${chain.readableLength} readable bytes: no FUSE header`);
      return 0;
    }
    const have = chain.read(this.#in.subarray(0, A.IN_HEADER.size), 0);
    const v = this.#inView;
    const len = v.getUint32(A.IN_HEADER.len, true);
    const opcode = v.getUint32(A.IN_HEADER.opcode, true);
    const unique = v.getBigUint64(A.IN_HEADER.unique, true);
    if (this.#log.enabled("trace")) {
      this.#log.trace(`${A.opcodeName(opcode)} unique ${unique} len ${len}`);
    }
    if (opcode === A.FUSE_FORGET || opcode === A.FUSE_BATCH_FORGET || opcode === A.FUSE_INTERRUPT) {
      this.stats.noReply++;
      if (opcode !== A.FUSE_INTERRUPT && this.negotiated !== undefined) {
        this.#forget(chain, opcode, len);
      }
      return 0;
    }
    if (chain.writableLength < A.OUT_HEADER.size) {
      this.stats.dropped++;
      this.#log.warn(
        `dropped ${
          A.opcodeName(opcode)
        } unique ${unique}: ${chain.writableLength} writable bytes, no room for a reply`,
      );
      return 0;
    }
    if (have < A.IN_HEADER.size || len < A.IN_HEADER.size || len > chain.readableLength) {
      return this.#error(chain, unique, Errno.EINVAL);
    }
    const argLen = Math.min(len - A.IN_HEADER.size, SCRATCH_SIZE - A.IN_HEADER.size);
    const args = this.#in.subarray(A.IN_HEADER.size, A.IN_HEADER.size + argLen);
    if (opcode !== A.FUSE_WRITE) chain.read(args, A.IN_HEADER.size);
    switch (opcode) {
      case A.FUSE_INIT:
        return this.#init(chain, unique, argLen);
      case A.FUSE_DESTROY:
        this.#log.info("FUSE session destroyed by the client");
        this.reset();
        return this.#reply(chain, unique, 0);
    }
    if (this.negotiated === undefined) return this.#error(chain, unique, Errno.EIO);
    const ctx = this.#ctx;
    ctx.uid = v.getUint32(A.IN_HEADER.uid, true);
    ctx.gid = v.getUint32(A.IN_HEADER.gid, true);
    ctx.pid = v.getUint32(A.IN_HEADER.pid, true);
    const nodeid = v.getBigUint64(A.IN_HEADER.nodeid, true);
    try {
      const n = this.#dispatch(opcode, nodeid, argLen);
      return n < 0 ? this.#error(chain, unique, -n) : this.#reply(chain, unique, n);
    } catch (e) {
      if (e instanceof ErrnoError) return this.#error(chain, unique, e.errno);
      this.#log.error(
        `${A.opcodeName(opcode)} unique ${unique} failed: ${e instanceof Error ? e.stack : e}`,
      );
      return this.#error(chain, unique, Errno.EIO);
    }
  }

  /**
   * Runs one operation on the file system and writes its reply body after the out header.
   * Returns the body's length, or -errno.
   */
  #dispatch(opcode: number, nodeid: bigint, argLen: number): number {
    const fs = this.#fs;
    const v = this.#inView;
    const args = A.IN_HEADER.size;
    const body = A.OUT_HEADER.size;
    const o = this.#outView;
    switch (opcode) {
      case A.FUSE_LOOKUP: {
        if (fs.lookup === undefined) return -Errno.ENOSYS;
        const name = this.#name(args, argLen);
        if (name === undefined) return -Errno.EINVAL;
        const e = fs.lookup(this.#ctx, nodeid, name);
        this.#out.fill(0, body, body + A.ENTRY_OUT.size);
        o.setBigUint64(body + A.ENTRY_OUT.nodeid, e.nodeid, true);
        o.setBigUint64(body + A.ENTRY_OUT.generation, e.generation, true);
        this.#putTimeout(
          body + A.ENTRY_OUT.entryValid,
          body + A.ENTRY_OUT.entryValidNsec,
          e.entryTimeout,
        );
        this.#putTimeout(
          body + A.ENTRY_OUT.attrValid,
          body + A.ENTRY_OUT.attrValidNsec,
          e.attrTimeout,
        );
        this.#putAttr(body + A.ENTRY_OUT.attr, e.attr);
        return A.ENTRY_OUT.size;
      }
      case A.FUSE_GETATTR: {
        if (fs.getattr === undefined) return -Errno.ENOSYS;
        if (argLen < A.GETATTR_IN.size) return -Errno.EINVAL;
        const flags = v.getUint32(args + A.GETATTR_IN.getattrFlags, true);
        const fh = (flags & A.FUSE_GETATTR_FH) !== 0
          ? v.getBigUint64(args + A.GETATTR_IN.fh, true)
          : undefined;
        const r = fs.getattr(this.#ctx, nodeid, fh);
        this.#out.fill(0, body, body + A.ATTR_OUT.size);
        this.#putTimeout(body + A.ATTR_OUT.attrValid, body + A.ATTR_OUT.attrValidNsec, r.timeout);
        this.#putAttr(body + A.ATTR_OUT.attr, r.attr);
        return A.ATTR_OUT.size;
      }
      case A.FUSE_STATFS: {
        if (fs.statfs === undefined) return -Errno.ENOSYS;
        const s = fs.statfs(this.#ctx, nodeid);
        this.#out.fill(0, body, body + A.KSTATFS.size);
        for (
          const [at, value] of [
            [A.KSTATFS.blocks, s.blocks],
            [A.KSTATFS.bfree, s.bfree],
            [A.KSTATFS.bavail, s.bavail],
            [A.KSTATFS.files, s.files],
            [A.KSTATFS.ffree, s.ffree],
          ] as const
        ) {
          o.setBigUint64(body + at, BigInt(value), true);
        }
        o.setUint32(body + A.KSTATFS.bsize, s.bsize, true);
        o.setUint32(body + A.KSTATFS.namelen, s.namelen, true);
        o.setUint32(body + A.KSTATFS.frsize, s.frsize, true);
        return A.KSTATFS.size;
      }
    }
    if (A.OPCODE_NAMES[opcode] === undefined) {
      this.#log.warn(`unknown FUSE opcode ${opcode}: ENOSYS`);
    }
    return -Errno.ENOSYS;
  }

  /** The NUL-terminated name at `at` in the request (without its NUL), or undefined. */
  #name(at: number, argLen: number): Uint8Array | undefined {
    const end = this.#in.indexOf(0, at);
    if (end < 0 || end >= at + argLen) return undefined;
    return this.#in.subarray(at, end);
  }

  #putTimeout(secAt: number, nsecAt: number, seconds: number): void {
    const s = Math.max(0, Math.floor(seconds));
    this.#outView.setBigUint64(secAt, BigInt(s), true);
    this.#outView.setUint32(nsecAt, Math.floor((seconds - s) * 1e9), true);
  }

  #putAttr(at: number, a: Attr): void {
    const o = this.#outView;
    o.setBigUint64(at + A.ATTR.ino, a.ino, true);
    o.setBigUint64(at + A.ATTR.sizeField, BigInt(a.size), true);
    o.setBigUint64(at + A.ATTR.blocks, BigInt(a.blocks), true);
    o.setBigInt64(at + A.ATTR.atime, BigInt(a.atime), true);
    o.setBigInt64(at + A.ATTR.mtime, BigInt(a.mtime), true);
    o.setBigInt64(at + A.ATTR.ctime, BigInt(a.ctime), true);
    o.setUint32(at + A.ATTR.atimensec, a.atimeNsec, true);
    o.setUint32(at + A.ATTR.mtimensec, a.mtimeNsec, true);
    o.setUint32(at + A.ATTR.ctimensec, a.ctimeNsec, true);
    o.setUint32(at + A.ATTR.mode, a.mode, true);
    o.setUint32(at + A.ATTR.nlink, a.nlink, true);
    o.setUint32(at + A.ATTR.uid, a.uid, true);
    o.setUint32(at + A.ATTR.gid, a.gid, true);
    o.setUint32(at + A.ATTR.rdev, a.rdev, true);
    o.setUint32(at + A.ATTR.blksize, a.blksize, true);
    o.setUint32(at + A.ATTR.flags, 0, true);
  }

  /** FORGET and BATCH_FORGET: no reply; what does not fit the request is ignored. */
  #forget(chain: DescriptorChain, opcode: number, len: number): void {
    const fs = this.#fs;
    const argLen = Math.min(len, chain.readableLength, SCRATCH_SIZE) - A.IN_HEADER.size;
    if (argLen <= 0) return;
    const args = this.#in.subarray(A.IN_HEADER.size, A.IN_HEADER.size + argLen);
    chain.read(args, A.IN_HEADER.size);
    const v = this.#inView;
    const at = A.IN_HEADER.size;
    try {
      if (opcode === A.FUSE_FORGET) {
        if (argLen < A.FORGET_IN.size) return;
        const nodeid = v.getBigUint64(A.IN_HEADER.nodeid, true);
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
      this.#log.warn(`${A.opcodeName(opcode)} failed: ${e instanceof Error ? e.message : e}`);
    }
  }

  #reply(chain: DescriptorChain, unique: bigint, bodyLength: number): number {
    const total = A.OUT_HEADER.size + bodyLength;
    this.#outView.setUint32(A.OUT_HEADER.len, total, true);
    this.#outView.setInt32(A.OUT_HEADER.error, 0, true);
    this.#outView.setBigUint64(A.OUT_HEADER.unique, unique, true);
    this.stats.replies++;
    return chain.write(this.#out.subarray(0, total), 0);
  }

  #error(chain: DescriptorChain, unique: bigint, errno: number): number {
    this.#outView.setUint32(A.OUT_HEADER.len, A.OUT_HEADER.size, true);
    this.#outView.setInt32(A.OUT_HEADER.error, -errno, true);
    this.#outView.setBigUint64(A.OUT_HEADER.unique, unique, true);
    this.stats.replies++;
    return chain.write(this.#out.subarray(0, A.OUT_HEADER.size), 0);
  }

  #init(chain: DescriptorChain, unique: bigint, argLen: number): number {
    const v = this.#inView;
    const at = A.IN_HEADER.size;
    if (argLen < A.INIT_IN.compatSize) return this.#error(chain, unique, Errno.EINVAL);
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
      return this.#reply(chain, unique, A.INIT_OUT.size);
    }
    if (major < A.FUSE_KERNEL_VERSION || minor < A.FUSE_MIN_MINOR_VERSION) {
      this.#log.error(
        `FUSE_INIT from a client speaking ${major}.${minor}: too old (need 7.${A.FUSE_MIN_MINOR_VERSION})`,
      );
      return this.#error(chain, unique, Errno.EPROTO);
    }
    if (this.negotiated !== undefined) {
      this.#log.info("FUSE_INIT on a live session: starting afresh");
    }
    this.reset();
    const capable = flags & SUPPORTED_INIT_FLAGS;
    const granted = (this.#fs.init?.(capable) ?? capable) & capable;
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
    return this.#reply(chain, unique, A.INIT_OUT.size);
  }
}
