/**
 * One method per FUSE operation: each decodes its request's arguments (bounds-checked against
 * what the guest really sent), calls the file system, and encodes the reply body. The session
 * owns the framing (headers, INIT, DESTROY, FORGET) and the requests in flight.
 *
 * One error convention from end to end: a bad request, a missing method and a failed file
 * system call all throw `ErrnoError` (or reject with it), and the session answers its errno.
 * A file-system method may return a Promise; `then` below encodes its reply when it settles,
 * and the operation returns that Promise of the body length instead of the length.
 *
 * @module
 */
import { Errno, ErrnoError } from "../ffi/errno.ts";
import { stableBytes } from "../ffi/pointers.ts";
import { preadvRaw, pwritevRaw } from "../ffi/io.ts";
import { IOVEC } from "../ffi/layout.ts";
import type {
  AttrReply,
  Context,
  CreateReply,
  DirentPlusSink,
  DirentSink,
  Entry,
  FileSystem,
  MaybePromise,
  OpenReply,
  ReadDestination,
  SetattrIn,
  StatFs,
  WriteSource,
} from "../filesystem/filesystem.ts";
import type { DescriptorChain } from "../virtqueue/descriptor_chain.ts";
import * as A from "../wire/fuse.ts";
import { putAttr, putDirent, putEntry, putTimeout } from "./reply.ts";
import type { DaxWindow } from "./dax.ts";

/** The most iovecs one READ or WRITE uses (a 1 MiB request split over many buffers). */
const MAX_IOVECS = 1024;
/** The largest directory listing one READDIR(PLUS) returns. */
const MAX_DIR_REPLY = 128 * 1024;
/** The largest reply body a request's own buffer holds. */
export const OUT_BODY_MAX = 8192;
/** The request bytes copied: the in header and up to 64 KiB of arguments (a SETXATTR value). */
export const SCRATCH_SIZE = A.IN_HEADER.size + 64 * 1024 + 4096;

const ARGS = A.IN_HEADER.size;
const BODY = A.OUT_HEADER.size;

/** Errors of requests that break the protocol: made once, thrown without a new stack each time. */
const EINVAL = new ErrnoError(Errno.EINVAL, "FUSE request");
const ENOSYS = new ErrnoError(Errno.ENOSYS, "FUSE request");
const EIO_ENDED = new ErrnoError(Errno.EIO, "guest memory access", "after the queue was reset");

/** What an operation returns: the reply body's length, or a Promise of it. */
export type BodyLength = number | Promise<number>;

/**
 * One request: its chain, its copied header and arguments, its reply buffer, and what its
 * file-system call is handed (context, SETATTR fields, data and directory sinks). A request that
 * goes async keeps its object until it settles, so everything an async method was given stays
 * valid across its awaits.
 */
export class FuseRequest {
  chain: DescriptorChain = undefined as unknown as DescriptorChain;
  readonly ctx: Context = { uid: 0, gid: 0, pid: 0 };
  nodeid = 0n;
  opcode = 0;
  /** `unique`, as two u32 (echoed into the reply as read). */
  uniqueLo = 0;
  uniqueHi = 0;
  /** The copied request: in header then arguments (not WRITE data). */
  readonly inBytes: Uint8Array = new Uint8Array(new ArrayBuffer(SCRATCH_SIZE));
  readonly in: DataView = new DataView(this.inBytes.buffer);
  /** Argument bytes after the in header. */
  argLen = 0;
  /** The reply: out header, then body. */
  readonly outBytes: Uint8Array = new Uint8Array(new ArrayBuffer(BODY + OUT_BODY_MAX));
  readonly out: DataView = new DataView(this.outBytes.buffer);
  /** Set when the operation wrote its body straight into the chain. */
  bodyInChain = false;
  /** The session granted FUSE_HAS_INODE_DAX: attributes mark the files the window serves. */
  inodeDax = false;
  /**
   * Whether the request may still touch guest memory: false once the queue it came from was
   * reset or its memory remapped (the session's `invalidate`); its reply is then dropped.
   */
  live = true;
  /** The device's tag for the request (its queue), handed back with an async reply. */
  tag = 0;
  readonly set: SetattrIn = {
    valid: 0,
    fh: 0n,
    size: 0,
    atime: 0,
    atimeNsec: 0,
    mtime: 0,
    mtimeNsec: 0,
    mode: 0,
    uid: 0,
    gid: 0,
  };
  readonly data: ChainData = new ChainData(this);
  #dir: DirBuffer | undefined;

  /** The READDIR(PLUS) buffer (made on the first listing this request object serves). */
  get dir(): DirBuffer {
    return this.#dir ??= new DirBuffer();
  }

  /** The request's `unique` as text (for logs). */
  uniqueText(): string {
    return String(BigInt(this.uniqueHi) * 0x1_0000_0000n + BigInt(this.uniqueLo));
  }
}

/** Reads guest data into a file (WRITE), or file data into guest memory (READ), with no copy. */
class ChainData implements ReadDestination, WriteSource {
  readonly #r: FuseRequest;
  /** Where the data starts in the chain's readable (WRITE) or writable (READ) part. */
  at = 0;
  capacity = 0;
  size = 0;
  readonly #iov = stableBytes(IOVEC.size * MAX_IOVECS);

  constructor(r: FuseRequest) {
    this.#r = r;
  }

  #chain(): DescriptorChain {
    if (!this.#r.live) throw EIO_ENDED;
    return this.#r.chain;
  }

  preadv(fd: number, offset: bigint, size: number): number {
    const chain = this.#chain();
    const n = Math.min(size, this.capacity);
    if (n <= 0) return 0;
    const count = chain.writableIovecs(this.at, n, this.#iov);
    const got = preadvRaw(fd, this.#iov, count, offset);
    if (got < 0) throw new ErrnoError(-got, "preadv");
    return got;
  }

  write(data: Uint8Array): number {
    return this.#chain().write(data.subarray(0, this.capacity), this.at);
  }

  pwritev(fd: number, offset: bigint): number {
    const chain = this.#chain();
    if (this.size === 0) return 0;
    const count = chain.readableIovecs(this.at, this.size, this.#iov);
    const n = pwritevRaw(fd, this.#iov, count, offset);
    if (n < 0) throw new ErrnoError(-n, "pwritev");
    return n;
  }

  read(dst: Uint8Array): number {
    return this.#chain().read(dst.subarray(0, this.size), this.at);
  }
}

/** Packs READDIR / READDIRPLUS records into a buffer no larger than the guest asked for. */
class DirBuffer implements DirentSink, DirentPlusSink {
  readonly bytes = new Uint8Array(new ArrayBuffer(MAX_DIR_REPLY));
  readonly view = new DataView(this.bytes.buffer);
  used = 0;
  limit = 0;
  /** As FuseRequest.inodeDax. */
  inodeDax = false;

  add(ino: bigint, offset: bigint, type: number, name: Uint8Array): boolean;
  add(entry: Entry, offset: bigint, type: number, name: Uint8Array): void;
  add(first: bigint | Entry, offset: bigint, type: number, name: Uint8Array): boolean | void {
    if (typeof first === "bigint") {
      const len = A.direntAlign(A.DIRENT.size + name.length);
      if (this.used + len > this.limit) return false;
      this.used += putDirent(this.bytes, this.view, this.used, first, offset, type, name);
      return true;
    }
    const at = this.used;
    this.bytes.fill(0, at, at + A.ENTRY_OUT.size);
    if (first.nodeid !== 0n) putEntry(this.view, at, first, this.inodeDax);
    this.used = at + A.ENTRY_OUT.size +
      putDirent(this.bytes, this.view, at + A.ENTRY_OUT.size, first.attr.ino, offset, type, name);
  }

  addRaw(
    src: Uint8Array,
    inoAt: number,
    offAt: number,
    type: number,
    nameAt: number,
    nameLength: number,
  ): boolean {
    const at = this.used;
    const len = A.direntAlign(A.DIRENT.size + nameLength);
    if (at + len > this.limit) return false;
    const b = this.bytes;
    for (let k = 0; k < 8; k++) b[at + A.DIRENT.ino + k] = src[inoAt + k] as number;
    for (let k = 0; k < 8; k++) b[at + A.DIRENT.off + k] = src[offAt + k] as number;
    const v = this.view;
    v.setUint32(at + A.DIRENT.namelen, nameLength, true);
    v.setUint32(at + A.DIRENT.type, type, true);
    const name = at + A.DIRENT.name;
    for (let k = 0; k < nameLength; k++) b[name + k] = src[nameAt + k] as number;
    for (let k = name + nameLength; k < at + len; k++) b[k] = 0;
    this.used = at + len;
    return true;
  }

  fits(nameLength: number): boolean {
    return this.used + A.DIRENTPLUS.size + A.direntAlign(nameLength) <= this.limit;
  }
}

/**
 * `encode(r, value)` now, or when `value` (a Promise) settles. The one place an async file
 * system's result joins the reply path; encoders are module functions, so the synchronous path
 * makes no closure.
 */
function then<T>(
  r: FuseRequest,
  value: MaybePromise<T>,
  encode: (r: FuseRequest, value: T) => number,
): BodyLength {
  return value instanceof Promise ? value.then((v) => encode(r, v)) : encode(r, value);
}

/** The u32 argument field at `off` (after the in header). */
function u32(r: FuseRequest, off: number): number {
  return r.in.getUint32(ARGS + off, true);
}

/** The u64 argument field at `off` (after the in header), as the FileSystem interface takes it. */
function u64(r: FuseRequest, off: number): bigint {
  return r.in.getBigUint64(ARGS + off, true);
}

/** Throws EINVAL unless the arguments hold `size` bytes. */
function need(r: FuseRequest, size: number): void {
  if (r.argLen < size) throw EINVAL;
}

/** `method` when the file system has it; ENOSYS otherwise. */
function has<M>(method: M | undefined): M {
  if (method === undefined) throw ENOSYS;
  return method;
}

/**
 * A NUL-terminated name at `at` in the request's arguments: its bytes without the NUL. EINVAL
 * when it is unterminated, empty, or holds a "/". `r.argLen` bounds the search.
 */
function nameAt(r: FuseRequest, at: number): Uint8Array {
  const bytes = r.inBytes;
  const limit = ARGS + r.argLen;
  let end = at;
  for (; end < limit; end++) {
    const b = bytes[end];
    if (b === 0) break;
    if (b === 0x2f) throw EINVAL;
  }
  if (end >= limit || end === at) throw EINVAL;
  return bytes.subarray(at, end);
}

// Encoders of reply bodies: each writes into `r.out` (or the chain) and returns the length.

function noBody(): number {
  return 0;
}

/** fuse_entry_out: putEntry writes every byte of it. */
function entryBody(r: FuseRequest, e: Entry): number {
  putEntry(r.out, BODY, e, r.inodeDax);
  return A.ENTRY_OUT.size;
}

/** fuse_attr_out: every field, and the padding zeroed (no fill of the whole body). */
function attrBody(r: FuseRequest, a: AttrReply): number {
  putTimeout(r.out, BODY + A.ATTR_OUT.attrValid, BODY + A.ATTR_OUT.attrValidNsec, a.timeout);
  r.out.setUint32(BODY + A.ATTR_OUT.attrValidNsec + 4, 0, true);
  putAttr(r.out, BODY + A.ATTR_OUT.attr, a.attr, r.inodeDax);
  return A.ATTR_OUT.size;
}

function putOpen(r: FuseRequest, at: number, o: OpenReply): void {
  r.out.setBigUint64(at + A.OPEN_OUT.fh, o.fh, true);
  r.out.setUint32(at + A.OPEN_OUT.openFlags, o.openFlags, true);
  r.out.setUint32(at + A.OPEN_OUT.openFlags + 4, 0, true);
}

function openBody(r: FuseRequest, o: OpenReply): number {
  putOpen(r, BODY, o);
  return A.OPEN_OUT.size;
}

function createBody(r: FuseRequest, c: CreateReply): number {
  putEntry(r.out, BODY, c.entry, r.inodeDax);
  putOpen(r, BODY + A.ENTRY_OUT.size, c.open);
  return A.ENTRY_OUT.size + A.OPEN_OUT.size;
}

/** Writes `data` as the reply body straight into the chain. */
function chainBody(r: FuseRequest, data: Uint8Array): number {
  if (!r.live) throw EIO_ENDED;
  r.bodyInChain = true;
  return r.chain.write(data, BODY);
}

/** READ: the data is already in the chain (the file system wrote it through `r.data`). */
function readBody(r: FuseRequest, got: number): number {
  if (!Number.isInteger(got) || got < 0) throw new TypeError(`read returned ${got}`);
  r.bodyInChain = true;
  return Math.min(got, r.data.capacity);
}

/** fuse_write_out (WRITE and COPY_FILE_RANGE): the count, bounded by what was asked. */
function writeBody(r: FuseRequest, wrote: number): number {
  if (!Number.isInteger(wrote) || wrote < 0) throw new TypeError(`write returned ${wrote}`);
  r.out.setUint32(BODY + A.WRITE_OUT.sizeField, Math.min(wrote, r.data.size), true);
  r.out.setUint32(BODY + 4, 0, true);
  return A.WRITE_OUT.size;
}

function statfsBody(r: FuseRequest, s: StatFs): number {
  const o = r.out;
  r.outBytes.fill(0, BODY, BODY + A.KSTATFS.size);
  o.setBigUint64(BODY + A.KSTATFS.blocks, BigInt(s.blocks), true);
  o.setBigUint64(BODY + A.KSTATFS.bfree, BigInt(s.bfree), true);
  o.setBigUint64(BODY + A.KSTATFS.bavail, BigInt(s.bavail), true);
  o.setBigUint64(BODY + A.KSTATFS.files, BigInt(s.files), true);
  o.setBigUint64(BODY + A.KSTATFS.ffree, BigInt(s.ffree), true);
  o.setUint32(BODY + A.KSTATFS.bsize, s.bsize, true);
  o.setUint32(BODY + A.KSTATFS.namelen, s.namelen, true);
  o.setUint32(BODY + A.KSTATFS.frsize, s.frsize, true);
  return A.KSTATFS.size;
}

/** GETXATTR / LISTXATTR: the value (or the names), or with size 0 only its length. */
function xattrBody(r: FuseRequest, result: Uint8Array | number): number {
  const size = u32(r, A.GETXATTR_IN.sizeField);
  let length: number;
  if (typeof result === "number") {
    if (size !== 0) throw new TypeError("a length was returned for a request of the value");
    length = result;
  } else if (size === 0) {
    length = result.length;
  } else {
    if (result.length > size || result.length > r.chain.writableLength - BODY) {
      throw new ErrnoError(Errno.ERANGE, "getxattr");
    }
    return chainBody(r, result);
  }
  r.out.setUint32(BODY + A.GETXATTR_OUT.sizeField, length, true);
  r.out.setUint32(BODY + 4, 0, true);
  return A.GETXATTR_OUT.size;
}

function dirBody(r: FuseRequest): number {
  const dir = r.dir;
  return chainBody(r, dir.bytes.subarray(0, dir.used));
}

function lseekBody(r: FuseRequest, at: bigint): number {
  r.out.setBigUint64(BODY + A.LSEEK_OUT.offset, at, true);
  return A.LSEEK_OUT.size;
}

/**
 * Every operation but INIT, DESTROY and FORGET against one file system, one method per opcode.
 */
export class Operations {
  readonly #fs: FileSystem;
  /** The DAX cache window, when the device has one. */
  dax: DaxWindow | undefined;

  constructor(fs: FileSystem) {
    this.#fs = fs;
  }

  setupmapping(r: FuseRequest): BodyLength {
    const dax = this.dax;
    if (dax === undefined) throw ENOSYS;
    need(r, A.SETUPMAPPING_IN.size);
    const done = dax.setup(
      this.#fs,
      r.ctx,
      r.nodeid,
      u64(r, A.SETUPMAPPING_IN.fh),
      u64(r, A.SETUPMAPPING_IN.foffset),
      u64(r, A.SETUPMAPPING_IN.len),
      u64(r, A.SETUPMAPPING_IN.flags),
      u64(r, A.SETUPMAPPING_IN.moffset),
    );
    return then(r, done, noBody);
  }

  removemapping(r: FuseRequest): BodyLength {
    const dax = this.dax;
    if (dax === undefined) throw ENOSYS;
    need(r, A.REMOVEMAPPING_IN.size);
    const count = u32(r, A.REMOVEMAPPING_IN.count);
    if (
      count === 0 || count > A.FUSE_REMOVEMAPPING_MAX_ENTRY ||
      r.argLen < A.REMOVEMAPPING_IN.size + count * A.REMOVEMAPPING_ONE.size
    ) {
      throw EINVAL;
    }
    const ranges = [];
    for (let i = 0; i < count; i++) {
      const at = A.REMOVEMAPPING_IN.size + i * A.REMOVEMAPPING_ONE.size;
      ranges.push({
        moffset: u64(r, at + A.REMOVEMAPPING_ONE.moffset),
        len: u64(r, at + A.REMOVEMAPPING_ONE.len),
      });
    }
    return then(r, dax.remove(ranges), noBody);
  }

  /**
   * Serves `opcode` (not INIT, DESTROY or FORGET): the body length, or a Promise of it; throws
   * ErrnoError. A switch of direct calls, so that each call site stays monomorphic.
   */
  run(opcode: number, r: FuseRequest): BodyLength {
    switch (opcode) {
      case A.FUSE_LOOKUP:
        return this.lookup(r);
      case A.FUSE_GETATTR:
        return this.getattr(r);
      case A.FUSE_SETATTR:
        return this.setattr(r);
      case A.FUSE_READLINK:
        return this.readlink(r);
      case A.FUSE_SYMLINK:
        return this.symlink(r);
      case A.FUSE_MKNOD:
        return this.mknod(r);
      case A.FUSE_MKDIR:
        return this.mkdir(r);
      case A.FUSE_UNLINK:
        return this.unlink(r);
      case A.FUSE_RMDIR:
        return this.rmdir(r);
      case A.FUSE_RENAME:
        return this.rename(r);
      case A.FUSE_RENAME2:
        return this.rename2(r);
      case A.FUSE_LINK:
        return this.link(r);
      case A.FUSE_OPEN:
        return this.open(r);
      case A.FUSE_READ:
        return this.read(r);
      case A.FUSE_WRITE:
        return this.write(r);
      case A.FUSE_STATFS:
        return this.statfs(r);
      case A.FUSE_RELEASE:
        return this.release(r);
      case A.FUSE_FSYNC:
        return this.fsync(r);
      case A.FUSE_SETXATTR:
        return this.setxattr(r);
      case A.FUSE_GETXATTR:
        return this.getxattr(r);
      case A.FUSE_LISTXATTR:
        return this.listxattr(r);
      case A.FUSE_REMOVEXATTR:
        return this.removexattr(r);
      case A.FUSE_FLUSH:
        return this.flush(r);
      case A.FUSE_OPENDIR:
        return this.opendir(r);
      case A.FUSE_READDIR:
        return this.readdir(r);
      case A.FUSE_RELEASEDIR:
        return this.releasedir(r);
      case A.FUSE_FSYNCDIR:
        return this.fsyncdir(r);
      case A.FUSE_ACCESS:
        return this.access(r);
      case A.FUSE_CREATE:
        return this.create(r);
      case A.FUSE_READDIRPLUS:
        return this.readdirplus(r);
      case A.FUSE_FALLOCATE:
        return this.fallocate(r);
      case A.FUSE_LSEEK:
        return this.lseek(r);
      case A.FUSE_COPY_FILE_RANGE:
        return this.copyFileRange(r);
      case A.FUSE_SYNCFS:
        return this.syncfs(r);
      case A.FUSE_TMPFILE:
        return this.tmpfile(r);
      case A.FUSE_SETUPMAPPING:
        return this.setupmapping(r);
      case A.FUSE_REMOVEMAPPING:
        return this.removemapping(r);
    }
    throw ENOSYS;
  }

  lookup(r: FuseRequest): BodyLength {
    const m = has(this.#fs.lookup);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, nameAt(r, ARGS)), entryBody);
  }

  getattr(r: FuseRequest): BodyLength {
    const m = has(this.#fs.getattr);
    need(r, A.GETATTR_IN.size);
    const fh = (u32(r, A.GETATTR_IN.getattrFlags) & A.FUSE_GETATTR_FH) !== 0
      ? u64(r, A.GETATTR_IN.fh)
      : undefined;
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, fh), attrBody);
  }

  setattr(r: FuseRequest): BodyLength {
    const m = has(this.#fs.setattr);
    need(r, A.SETATTR_IN.size);
    const s = r.set;
    s.valid = u32(r, A.SETATTR_IN.valid);
    s.fh = u64(r, A.SETATTR_IN.fh);
    s.size = Number(u64(r, A.SETATTR_IN.sizeField));
    s.atime = Number(r.in.getBigInt64(ARGS + A.SETATTR_IN.atime, true));
    s.mtime = Number(r.in.getBigInt64(ARGS + A.SETATTR_IN.mtime, true));
    s.atimeNsec = u32(r, A.SETATTR_IN.atimensec);
    s.mtimeNsec = u32(r, A.SETATTR_IN.mtimensec);
    s.mode = u32(r, A.SETATTR_IN.mode);
    s.uid = u32(r, A.SETATTR_IN.uid);
    s.gid = u32(r, A.SETATTR_IN.gid);
    if (s.atimeNsec > 999_999_999 || s.mtimeNsec > 999_999_999) throw EINVAL;
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, s), attrBody);
  }

  readlink(r: FuseRequest): BodyLength {
    const m = has(this.#fs.readlink);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid), chainBody);
  }

  symlink(r: FuseRequest): BodyLength {
    const m = has(this.#fs.symlink);
    const name = nameAt(r, ARGS);
    const targetAt = ARGS + name.length + 1;
    const end = r.inBytes.indexOf(0, targetAt);
    if (end < 0 || end >= ARGS + r.argLen || end === targetAt) throw EINVAL;
    const target = r.inBytes.subarray(targetAt, end);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, name, target), entryBody);
  }

  mknod(r: FuseRequest): BodyLength {
    const m = has(this.#fs.mknod);
    need(r, A.MKNOD_IN.size);
    const name = nameAt(r, ARGS + A.MKNOD_IN.size);
    const e = m.call(
      this.#fs,
      r.ctx,
      r.nodeid,
      name,
      u32(r, A.MKNOD_IN.mode),
      u32(r, A.MKNOD_IN.rdev),
      u32(r, A.MKNOD_IN.umask),
    );
    return then(r, e, entryBody);
  }

  mkdir(r: FuseRequest): BodyLength {
    const m = has(this.#fs.mkdir);
    need(r, A.MKDIR_IN.size);
    const name = nameAt(r, ARGS + A.MKDIR_IN.size);
    const mode = u32(r, A.MKDIR_IN.mode);
    return then(
      r,
      m.call(this.#fs, r.ctx, r.nodeid, name, mode, u32(r, A.MKDIR_IN.umask)),
      entryBody,
    );
  }

  unlink(r: FuseRequest): BodyLength {
    const m = has(this.#fs.unlink);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, nameAt(r, ARGS)), noBody);
  }

  rmdir(r: FuseRequest): BodyLength {
    const m = has(this.#fs.rmdir);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, nameAt(r, ARGS)), noBody);
  }

  #rename(r: FuseRequest, fixed: number, flags: number): BodyLength {
    const m = has(this.#fs.rename);
    need(r, fixed);
    const name = nameAt(r, ARGS + fixed);
    const newName = nameAt(r, ARGS + fixed + name.length + 1);
    const newdir = u64(r, A.RENAME_IN.newdir);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, name, newdir, newName, flags), noBody);
  }

  rename(r: FuseRequest): BodyLength {
    return this.#rename(r, A.RENAME_IN.size, 0);
  }

  rename2(r: FuseRequest): BodyLength {
    need(r, A.RENAME2_IN.size);
    return this.#rename(r, A.RENAME2_IN.size, u32(r, A.RENAME2_IN.flags));
  }

  link(r: FuseRequest): BodyLength {
    const m = has(this.#fs.link);
    need(r, A.LINK_IN.size);
    const name = nameAt(r, ARGS + A.LINK_IN.size);
    return then(r, m.call(this.#fs, r.ctx, u64(r, A.LINK_IN.oldnodeid), r.nodeid, name), entryBody);
  }

  open(r: FuseRequest): BodyLength {
    const m = has(this.#fs.open);
    need(r, A.OPEN_IN.size);
    const o = m.call(
      this.#fs,
      r.ctx,
      r.nodeid,
      u32(r, A.OPEN_IN.flags),
      u32(r, A.OPEN_IN.openFlags),
    );
    return then(r, o, openBody);
  }

  opendir(r: FuseRequest): BodyLength {
    const m = has(this.#fs.opendir);
    need(r, A.OPEN_IN.size);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, u32(r, A.OPEN_IN.flags)), openBody);
  }

  read(r: FuseRequest): BodyLength {
    const m = has(this.#fs.read);
    need(r, A.READ_IN.size);
    const size = u32(r, A.READ_IN.sizeField);
    if (size > A.MAX_WRITE) throw EINVAL;
    const d = r.data;
    d.at = BODY;
    d.capacity = Math.min(size, r.chain.writableLength - BODY);
    const got = m.call(
      this.#fs,
      r.ctx,
      r.nodeid,
      u64(r, A.READ_IN.fh),
      u64(r, A.READ_IN.offset),
      d.capacity,
      d,
    );
    return then(r, got, readBody);
  }

  write(r: FuseRequest): BodyLength {
    const m = has(this.#fs.write);
    need(r, A.WRITE_IN.size);
    const size = u32(r, A.WRITE_IN.sizeField);
    const dataAt = ARGS + A.WRITE_IN.size;
    if (size > A.MAX_WRITE || dataAt + size > r.chain.readableLength) throw EINVAL;
    const d = r.data;
    d.at = dataAt;
    d.size = size;
    const wrote = m.call(
      this.#fs,
      r.ctx,
      r.nodeid,
      u64(r, A.WRITE_IN.fh),
      u64(r, A.WRITE_IN.offset),
      d,
      u32(r, A.WRITE_IN.writeFlags),
    );
    return then(r, wrote, writeBody);
  }

  statfs(r: FuseRequest): BodyLength {
    const m = has(this.#fs.statfs);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid), statfsBody);
  }

  release(r: FuseRequest): BodyLength {
    const m = has(this.#fs.release);
    need(r, A.RELEASE_IN.size);
    const fh = u64(r, A.RELEASE_IN.fh);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, fh, u32(r, A.RELEASE_IN.flags)), noBody);
  }

  releasedir(r: FuseRequest): BodyLength {
    const m = has(this.#fs.releasedir);
    need(r, A.RELEASE_IN.size);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, u64(r, A.RELEASE_IN.fh)), noBody);
  }

  flush(r: FuseRequest): BodyLength {
    const m = has(this.#fs.flush);
    need(r, A.FLUSH_IN.size);
    const fh = u64(r, A.FLUSH_IN.fh);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, fh, u64(r, A.FLUSH_IN.lockOwner)), noBody);
  }

  #fsync(r: FuseRequest, m: NonNullable<FileSystem["fsync"]>): BodyLength {
    need(r, A.FSYNC_IN.size);
    const datasync = (u32(r, A.FSYNC_IN.fsyncFlags) & A.FUSE_FSYNC_FDATASYNC) !== 0;
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, u64(r, A.FSYNC_IN.fh), datasync), noBody);
  }

  fsync(r: FuseRequest): BodyLength {
    return this.#fsync(r, has(this.#fs.fsync));
  }

  fsyncdir(r: FuseRequest): BodyLength {
    return this.#fsync(r, has(this.#fs.fsyncdir));
  }

  setxattr(r: FuseRequest): BodyLength {
    const m = has(this.#fs.setxattr);
    need(r, A.SETXATTR_IN.compatSize);
    const size = u32(r, A.SETXATTR_IN.sizeField);
    const name = nameAt(r, ARGS + A.SETXATTR_IN.compatSize);
    const valueAt = ARGS + A.SETXATTR_IN.compatSize + name.length + 1;
    if (valueAt + size > ARGS + r.argLen) throw EINVAL;
    const value = r.inBytes.subarray(valueAt, valueAt + size);
    const flags = u32(r, A.SETXATTR_IN.flags);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, name, value, flags), noBody);
  }

  getxattr(r: FuseRequest): BodyLength {
    const m = has(this.#fs.getxattr);
    need(r, A.GETXATTR_IN.size);
    const name = nameAt(r, ARGS + A.GETXATTR_IN.size);
    const size = u32(r, A.GETXATTR_IN.sizeField);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, name, size), xattrBody);
  }

  listxattr(r: FuseRequest): BodyLength {
    const m = has(this.#fs.listxattr);
    need(r, A.GETXATTR_IN.size);
    const size = u32(r, A.GETXATTR_IN.sizeField);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, size), xattrBody);
  }

  removexattr(r: FuseRequest): BodyLength {
    const m = has(this.#fs.removexattr);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, nameAt(r, ARGS)), noBody);
  }

  /** The directory buffer, emptied and bounded by what the guest asked and its buffers. */
  #dir(r: FuseRequest): DirBuffer {
    need(r, A.READ_IN.size);
    const dir = r.dir;
    dir.used = 0;
    dir.inodeDax = r.inodeDax;
    dir.limit = Math.min(
      u32(r, A.READ_IN.sizeField),
      r.chain.writableLength - BODY,
      MAX_DIR_REPLY,
    );
    return dir;
  }

  readdir(r: FuseRequest): BodyLength {
    const m = has(this.#fs.readdir);
    const dir = this.#dir(r);
    const fh = u64(r, A.READ_IN.fh);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, fh, u64(r, A.READ_IN.offset), dir), dirBody);
  }

  readdirplus(r: FuseRequest): BodyLength {
    const m = has(this.#fs.readdirplus);
    const dir = this.#dir(r);
    const fh = u64(r, A.READ_IN.fh);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, fh, u64(r, A.READ_IN.offset), dir), dirBody);
  }

  access(r: FuseRequest): BodyLength {
    const m = has(this.#fs.access);
    need(r, A.ACCESS_IN.size);
    const mask = u32(r, A.ACCESS_IN.mask);
    // access(2) takes F_OK or R_OK | W_OK | X_OK; the guest's kernel refuses other bits itself.
    if ((mask & ~7) !== 0) throw EINVAL;
    return then(r, m.call(this.#fs, r.ctx, r.nodeid, mask), noBody);
  }

  create(r: FuseRequest): BodyLength {
    const m = has(this.#fs.create);
    need(r, A.CREATE_IN.size);
    const name = nameAt(r, ARGS + A.CREATE_IN.size);
    const c = m.call(
      this.#fs,
      r.ctx,
      r.nodeid,
      name,
      u32(r, A.CREATE_IN.mode),
      u32(r, A.CREATE_IN.flags),
      u32(r, A.CREATE_IN.umask),
    );
    return then(r, c, createBody);
  }

  tmpfile(r: FuseRequest): BodyLength {
    const m = has(this.#fs.tmpfile);
    need(r, A.CREATE_IN.size);
    const c = m.call(
      this.#fs,
      r.ctx,
      r.nodeid,
      u32(r, A.CREATE_IN.mode),
      u32(r, A.CREATE_IN.flags),
      u32(r, A.CREATE_IN.umask),
    );
    return then(r, c, createBody);
  }

  fallocate(r: FuseRequest): BodyLength {
    const m = has(this.#fs.fallocate);
    need(r, A.FALLOCATE_IN.size);
    const done = m.call(
      this.#fs,
      r.ctx,
      r.nodeid,
      u64(r, A.FALLOCATE_IN.fh),
      u64(r, A.FALLOCATE_IN.offset),
      u64(r, A.FALLOCATE_IN.length),
      u32(r, A.FALLOCATE_IN.mode),
    );
    return then(r, done, noBody);
  }

  lseek(r: FuseRequest): BodyLength {
    const m = has(this.#fs.lseek);
    need(r, A.LSEEK_IN.size);
    const at = m.call(
      this.#fs,
      r.ctx,
      r.nodeid,
      u64(r, A.LSEEK_IN.fh),
      u64(r, A.LSEEK_IN.offset),
      u32(r, A.LSEEK_IN.whence),
    );
    return then(r, at, lseekBody);
  }

  copyFileRange(r: FuseRequest): BodyLength {
    const m = has(this.#fs.copyFileRange);
    need(r, A.COPY_FILE_RANGE_IN.size);
    const len = u64(r, A.COPY_FILE_RANGE_IN.len);
    const length = Number(len > 0x7fff_f000n ? 0x7fff_f000n : len);
    // writeBody bounds the count by what was asked.
    r.data.size = length;
    const copied = m.call(
      this.#fs,
      r.ctx,
      r.nodeid,
      u64(r, A.COPY_FILE_RANGE_IN.fhIn),
      u64(r, A.COPY_FILE_RANGE_IN.offIn),
      u64(r, A.COPY_FILE_RANGE_IN.nodeidOut),
      u64(r, A.COPY_FILE_RANGE_IN.fhOut),
      u64(r, A.COPY_FILE_RANGE_IN.offOut),
      length,
      Number(u64(r, A.COPY_FILE_RANGE_IN.flags) & 0xffff_ffffn),
    );
    return then(r, copied, writeBody);
  }

  syncfs(r: FuseRequest): BodyLength {
    const m = has(this.#fs.syncfs);
    return then(r, m.call(this.#fs, r.ctx, r.nodeid), noBody);
  }
}
