/**
 * Decoding each FUSE request's arguments (bounds-checked against what the guest really sent),
 * calling the file system, and encoding its reply. The session owns the framing (headers,
 * INIT, DESTROY, FORGET); this module owns every other operation.
 *
 * @module
 */
import { Errno } from "../ffi/errno.ts";
import { stableBytes } from "../ffi/pointers.ts";
import { preadvRaw, pwritevRaw } from "../ffi/io.ts";
import { IOVEC } from "../ffi/layout.ts";
import type {
  AttrReply,
  Context,
  DirentPlusSink,
  DirentSink,
  Entry,
  FileSystem,
  ReadDestination,
  SetattrIn,
  WriteSource,
} from "../filesystem/filesystem.ts";
import type { DescriptorChain } from "../virtqueue/descriptor_chain.ts";
import * as A from "../wire/fuse.ts";
import { putAttr, putDirent, putEntry, putTimeout } from "./reply.ts";

/** The most iovecs one READ or WRITE uses (a 1 MiB request split over many buffers). */
const MAX_IOVECS = 1024;
/** The largest directory listing one READDIR(PLUS) returns. */
const MAX_DIR_REPLY = 128 * 1024;
/** The largest reply body the session's own buffer holds. */
export const OUT_BODY_MAX = 8192;

/** One request being served: the session fills it, the operation reads and answers it. */
export interface Request {
  chain: DescriptorChain;
  ctx: Context;
  nodeid: bigint;
  /** The copied request: in header then arguments (not WRITE data). */
  in: DataView;
  /** The copied request's bytes. */
  inBytes: Uint8Array;
  /** Argument bytes after the in header. */
  argLen: number;
  /** The reply body buffer (after the out header). */
  out: DataView;
  /** Its bytes. */
  outBytes: Uint8Array;
  /** Set when the operation wrote its body straight into the chain. */
  bodyInChain: boolean;
}

const ARGS = A.IN_HEADER.size;
const BODY = A.OUT_HEADER.size;

/** The u32 argument field at `off` (after the in header). */
function u32(v: DataView, off: number): number {
  return v.getUint32(ARGS + off, true);
}

/** The u64 argument field at `off` (after the in header), as the FileSystem interface takes it. */
function u64(v: DataView, off: number): bigint {
  return v.getBigUint64(ARGS + off, true);
}

/** Reads guest data into a file (WRITE), or file data into guest memory (READ), with no copy. */
class ChainData implements ReadDestination, WriteSource {
  chain!: DescriptorChain;
  /** Where the data starts in the chain's readable (WRITE) or writable (READ) part. */
  at = 0;
  capacity = 0;
  size = 0;
  readonly #iov = stableBytes(IOVEC.size * MAX_IOVECS);

  preadv(fd: number, offset: bigint, size: number): number {
    const n = Math.min(size, this.capacity);
    if (n <= 0) return 0;
    const count = this.chain.writableIovecs(this.at, n, this.#iov);
    return preadvRaw(fd, this.#iov, count, offset);
  }

  write(data: Uint8Array): number {
    return this.chain.write(data.subarray(0, this.capacity), this.at);
  }

  pwritev(fd: number, offset: bigint): number {
    if (this.size === 0) return 0;
    const count = this.chain.readableIovecs(this.at, this.size, this.#iov);
    return pwritevRaw(fd, this.#iov, count, offset);
  }

  read(dst: Uint8Array): number {
    return this.chain.read(dst.subarray(0, this.size), this.at);
  }
}

/** Packs READDIR / READDIRPLUS records into a buffer no larger than the guest asked for. */
class DirBuffer implements DirentSink, DirentPlusSink {
  readonly bytes = new Uint8Array(new ArrayBuffer(MAX_DIR_REPLY));
  readonly view = new DataView(this.bytes.buffer);
  used = 0;
  limit = 0;

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
    if (first.nodeid !== 0n) putEntry(this.view, at, first);
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

/** Runs every operation but INIT, DESTROY and FORGET against a file system. */
export class Operations {
  readonly #fs: FileSystem;
  readonly #data = new ChainData();
  readonly #dir = new DirBuffer();
  readonly #set: SetattrIn = {
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

  constructor(fs: FileSystem) {
    this.#fs = fs;
  }

  /**
   * A NUL-terminated name at `at` in the request's arguments: its bytes without the NUL, or
   * undefined when it is unterminated, empty, or holds a "/". `r.argLen` bounds the search.
   */
  #name(r: Request, at: number): Uint8Array | undefined {
    const bytes = r.inBytes;
    const limit = ARGS + r.argLen;
    let end = at;
    for (; end < limit; end++) {
      const b = bytes[end];
      if (b === 0) break;
      if (b === 0x2f) return undefined;
    }
    if (end >= limit || end === at) return undefined;
    return bytes.subarray(at, end);
  }

  /** fuse_entry_out: putEntry writes every byte of it. */
  #entry(r: Request, e: Entry): number {
    putEntry(r.out, BODY, e);
    return A.ENTRY_OUT.size;
  }

  /** fuse_attr_out: every field, and the padding zeroed (no fill of the whole body). */
  #attr(r: Request, a: AttrReply): number {
    putTimeout(r.out, BODY + A.ATTR_OUT.attrValid, BODY + A.ATTR_OUT.attrValidNsec, a.timeout);
    r.out.setUint32(BODY + A.ATTR_OUT.attrValidNsec + 4, 0, true);
    putAttr(r.out, BODY + A.ATTR_OUT.attr, a.attr);
    return A.ATTR_OUT.size;
  }

  #open(r: Request, at: number, fh: bigint, flags: number): void {
    r.out.setBigUint64(at + A.OPEN_OUT.fh, fh, true);
    r.out.setUint32(at + A.OPEN_OUT.openFlags, flags, true);
    r.out.setUint32(at + A.OPEN_OUT.openFlags + 4, 0, true);
  }

  /** Writes `data` as the reply body straight into the chain. */
  #bodyInChain(r: Request, data: Uint8Array): number {
    r.bodyInChain = true;
    return r.chain.write(data, BODY);
  }

  /** Serves `opcode`. Returns the reply body's length, or -errno. */
  run(opcode: number, r: Request): number {
    const fs = this.#fs;
    const v = r.in;
    const n = r.argLen;
    const ctx = r.ctx;
    // u32(v, off) / u64(v, off) read the argument struct's field at `off` (module functions, so no
    // closure is made per request).
    switch (opcode) {
      case A.FUSE_LOOKUP: {
        if (fs.lookup === undefined) return -Errno.ENOSYS;
        const name = this.#name(r, ARGS);
        if (name === undefined) return -Errno.EINVAL;
        return this.#entry(r, fs.lookup(ctx, r.nodeid, name));
      }
      case A.FUSE_GETATTR: {
        if (fs.getattr === undefined) return -Errno.ENOSYS;
        if (n < A.GETATTR_IN.size) return -Errno.EINVAL;
        const fh = (u32(v, A.GETATTR_IN.getattrFlags) & A.FUSE_GETATTR_FH) !== 0
          ? u64(v, A.GETATTR_IN.fh)
          : undefined;
        return this.#attr(r, fs.getattr(ctx, r.nodeid, fh));
      }
      case A.FUSE_SETATTR: {
        if (fs.setattr === undefined) return -Errno.ENOSYS;
        if (n < A.SETATTR_IN.size) return -Errno.EINVAL;
        const s = this.#set;
        s.valid = u32(v, A.SETATTR_IN.valid);
        s.fh = u64(v, A.SETATTR_IN.fh);
        s.size = Number(u64(v, A.SETATTR_IN.sizeField));
        s.atime = Number(v.getBigInt64(ARGS + A.SETATTR_IN.atime, true));
        s.mtime = Number(v.getBigInt64(ARGS + A.SETATTR_IN.mtime, true));
        s.atimeNsec = u32(v, A.SETATTR_IN.atimensec);
        s.mtimeNsec = u32(v, A.SETATTR_IN.mtimensec);
        s.mode = u32(v, A.SETATTR_IN.mode);
        s.uid = u32(v, A.SETATTR_IN.uid);
        s.gid = u32(v, A.SETATTR_IN.gid);
        if (s.atimeNsec > 999_999_999 || s.mtimeNsec > 999_999_999) return -Errno.EINVAL;
        return this.#attr(r, fs.setattr(ctx, r.nodeid, s));
      }
      case A.FUSE_READLINK: {
        if (fs.readlink === undefined) return -Errno.ENOSYS;
        return this.#bodyInChain(r, fs.readlink(ctx, r.nodeid));
      }
      case A.FUSE_SYMLINK: {
        if (fs.symlink === undefined) return -Errno.ENOSYS;
        const name = this.#name(r, ARGS);
        if (name === undefined) return -Errno.EINVAL;
        const targetAt = ARGS + name.length + 1;
        const end = r.inBytes.indexOf(0, targetAt);
        if (end < 0 || end >= ARGS + n || end === targetAt) return -Errno.EINVAL;
        return this.#entry(r, fs.symlink(ctx, r.nodeid, name, r.inBytes.subarray(targetAt, end)));
      }
      case A.FUSE_MKNOD: {
        if (fs.mknod === undefined) return -Errno.ENOSYS;
        if (n < A.MKNOD_IN.size) return -Errno.EINVAL;
        const name = this.#name(r, ARGS + A.MKNOD_IN.size);
        if (name === undefined) return -Errno.EINVAL;
        const e = fs.mknod(
          ctx,
          r.nodeid,
          name,
          u32(v, A.MKNOD_IN.mode),
          u32(v, A.MKNOD_IN.rdev),
          u32(v, A.MKNOD_IN.umask),
        );
        return this.#entry(r, e);
      }
      case A.FUSE_MKDIR: {
        if (fs.mkdir === undefined) return -Errno.ENOSYS;
        if (n < A.MKDIR_IN.size) return -Errno.EINVAL;
        const name = this.#name(r, ARGS + A.MKDIR_IN.size);
        if (name === undefined) return -Errno.EINVAL;
        return this.#entry(
          r,
          fs.mkdir(ctx, r.nodeid, name, u32(v, A.MKDIR_IN.mode), u32(v, A.MKDIR_IN.umask)),
        );
      }
      case A.FUSE_UNLINK:
      case A.FUSE_RMDIR: {
        const op = opcode === A.FUSE_UNLINK ? fs.unlink : fs.rmdir;
        if (op === undefined) return -Errno.ENOSYS;
        const name = this.#name(r, ARGS);
        if (name === undefined) return -Errno.EINVAL;
        op.call(fs, ctx, r.nodeid, name);
        return 0;
      }
      case A.FUSE_RENAME:
      case A.FUSE_RENAME2: {
        if (fs.rename === undefined) return -Errno.ENOSYS;
        const fixed = opcode === A.FUSE_RENAME ? A.RENAME_IN.size : A.RENAME2_IN.size;
        if (n < fixed) return -Errno.EINVAL;
        const flags = opcode === A.FUSE_RENAME ? 0 : u32(v, A.RENAME2_IN.flags);
        const name = this.#name(r, ARGS + fixed);
        if (name === undefined) return -Errno.EINVAL;
        const newName = this.#name(r, ARGS + fixed + name.length + 1);
        if (newName === undefined) return -Errno.EINVAL;
        fs.rename(ctx, r.nodeid, name, u64(v, A.RENAME_IN.newdir), newName, flags);
        return 0;
      }
      case A.FUSE_LINK: {
        if (fs.link === undefined) return -Errno.ENOSYS;
        if (n < A.LINK_IN.size) return -Errno.EINVAL;
        const name = this.#name(r, ARGS + A.LINK_IN.size);
        if (name === undefined) return -Errno.EINVAL;
        return this.#entry(r, fs.link(ctx, u64(v, A.LINK_IN.oldnodeid), r.nodeid, name));
      }
      case A.FUSE_OPEN:
      case A.FUSE_OPENDIR: {
        const dir = opcode === A.FUSE_OPENDIR;
        if ((dir ? fs.opendir : fs.open) === undefined) return -Errno.ENOSYS;
        if (n < A.OPEN_IN.size) return -Errno.EINVAL;
        const o = dir
          ? fs.opendir?.(ctx, r.nodeid, u32(v, A.OPEN_IN.flags))
          : fs.open?.(ctx, r.nodeid, u32(v, A.OPEN_IN.flags), u32(v, A.OPEN_IN.openFlags));
        if (o === undefined) return -Errno.ENOSYS;
        this.#open(r, BODY, o.fh, o.openFlags);
        return A.OPEN_OUT.size;
      }
      case A.FUSE_READ: {
        if (fs.read === undefined) return -Errno.ENOSYS;
        if (n < A.READ_IN.size) return -Errno.EINVAL;
        const size = u32(v, A.READ_IN.sizeField);
        if (size > A.MAX_WRITE) return -Errno.EINVAL;
        const d = this.#data;
        d.chain = r.chain;
        d.at = BODY;
        d.capacity = Math.min(size, r.chain.writableLength - BODY);
        const got = fs.read(
          ctx,
          r.nodeid,
          u64(v, A.READ_IN.fh),
          u64(v, A.READ_IN.offset),
          d.capacity,
          d,
        );
        if (got < 0) return got;
        r.bodyInChain = true;
        return Math.min(got, d.capacity);
      }
      case A.FUSE_WRITE: {
        if (fs.write === undefined) return -Errno.ENOSYS;
        if (n < A.WRITE_IN.size) return -Errno.EINVAL;
        const size = u32(v, A.WRITE_IN.sizeField);
        const dataAt = ARGS + A.WRITE_IN.size;
        if (size > A.MAX_WRITE || dataAt + size > r.chain.readableLength) return -Errno.EINVAL;
        const d = this.#data;
        d.chain = r.chain;
        d.at = dataAt;
        d.size = size;
        const wrote = fs.write(
          ctx,
          r.nodeid,
          u64(v, A.WRITE_IN.fh),
          u64(v, A.WRITE_IN.offset),
          d,
          u32(v, A.WRITE_IN.writeFlags),
        );
        if (wrote < 0) return wrote;
        r.out.setUint32(BODY + A.WRITE_OUT.sizeField, Math.min(wrote, size), true);
        r.out.setUint32(BODY + 4, 0, true);
        return A.WRITE_OUT.size;
      }
      case A.FUSE_STATFS: {
        if (fs.statfs === undefined) return -Errno.ENOSYS;
        const s = fs.statfs(ctx, r.nodeid);
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
      case A.FUSE_RELEASE:
      case A.FUSE_RELEASEDIR: {
        if (n < A.RELEASE_IN.size) return -Errno.EINVAL;
        if (opcode === A.FUSE_RELEASE) {
          if (fs.release === undefined) return -Errno.ENOSYS;
          fs.release(ctx, r.nodeid, u64(v, A.RELEASE_IN.fh), u32(v, A.RELEASE_IN.flags));
        } else {
          if (fs.releasedir === undefined) return -Errno.ENOSYS;
          fs.releasedir(ctx, r.nodeid, u64(v, A.RELEASE_IN.fh));
        }
        return 0;
      }
      case A.FUSE_FLUSH: {
        if (fs.flush === undefined) return -Errno.ENOSYS;
        if (n < A.FLUSH_IN.size) return -Errno.EINVAL;
        fs.flush(ctx, r.nodeid, u64(v, A.FLUSH_IN.fh), u64(v, A.FLUSH_IN.lockOwner));
        return 0;
      }
      case A.FUSE_FSYNC:
      case A.FUSE_FSYNCDIR: {
        const op = opcode === A.FUSE_FSYNC ? fs.fsync : fs.fsyncdir;
        if (op === undefined) return -Errno.ENOSYS;
        if (n < A.FSYNC_IN.size) return -Errno.EINVAL;
        const datasync = (u32(v, A.FSYNC_IN.fsyncFlags) & A.FUSE_FSYNC_FDATASYNC) !== 0;
        op.call(fs, ctx, r.nodeid, u64(v, A.FSYNC_IN.fh), datasync);
        return 0;
      }
      case A.FUSE_SETXATTR: {
        if (fs.setxattr === undefined) return -Errno.ENOSYS;
        if (n < A.SETXATTR_IN.compatSize) return -Errno.EINVAL;
        const size = u32(v, A.SETXATTR_IN.sizeField);
        const name = this.#name(r, ARGS + A.SETXATTR_IN.compatSize);
        if (name === undefined) return -Errno.EINVAL;
        const valueAt = ARGS + A.SETXATTR_IN.compatSize + name.length + 1;
        if (valueAt + size > ARGS + n) return -Errno.EINVAL;
        fs.setxattr(
          ctx,
          r.nodeid,
          name,
          r.inBytes.subarray(valueAt, valueAt + size),
          u32(v, A.SETXATTR_IN.flags),
        );
        return 0;
      }
      case A.FUSE_GETXATTR:
      case A.FUSE_LISTXATTR: {
        const get = opcode === A.FUSE_GETXATTR;
        if ((get ? fs.getxattr : fs.listxattr) === undefined) return -Errno.ENOSYS;
        if (n < A.GETXATTR_IN.size) return -Errno.EINVAL;
        const size = u32(v, A.GETXATTR_IN.sizeField);
        let result: Uint8Array | number | undefined;
        if (get) {
          const name = this.#name(r, ARGS + A.GETXATTR_IN.size);
          if (name === undefined) return -Errno.EINVAL;
          result = fs.getxattr?.(ctx, r.nodeid, name, size);
        } else {
          result = fs.listxattr?.(ctx, r.nodeid, size);
        }
        if (result === undefined) return -Errno.ENOSYS;
        if (typeof result === "number") {
          if (size !== 0) return -Errno.EIO;
          r.out.setUint32(BODY + A.GETXATTR_OUT.sizeField, result, true);
          r.out.setUint32(BODY + 4, 0, true);
          return A.GETXATTR_OUT.size;
        }
        if (size === 0) {
          r.out.setUint32(BODY + A.GETXATTR_OUT.sizeField, result.length, true);
          r.out.setUint32(BODY + 4, 0, true);
          return A.GETXATTR_OUT.size;
        }
        if (result.length > size || result.length > r.chain.writableLength - BODY) {
          return -Errno.ERANGE;
        }
        return this.#bodyInChain(r, result);
      }
      case A.FUSE_REMOVEXATTR: {
        if (fs.removexattr === undefined) return -Errno.ENOSYS;
        const name = this.#name(r, ARGS);
        if (name === undefined) return -Errno.EINVAL;
        fs.removexattr(ctx, r.nodeid, name);
        return 0;
      }
      case A.FUSE_READDIR:
      case A.FUSE_READDIRPLUS: {
        const plus = opcode === A.FUSE_READDIRPLUS;
        if ((plus ? fs.readdirplus : fs.readdir) === undefined) return -Errno.ENOSYS;
        if (n < A.READ_IN.size) return -Errno.EINVAL;
        const dir = this.#dir;
        dir.used = 0;
        dir.limit = Math.min(
          u32(v, A.READ_IN.sizeField),
          r.chain.writableLength - BODY,
          MAX_DIR_REPLY,
        );
        const fh = u64(v, A.READ_IN.fh);
        const offset = u64(v, A.READ_IN.offset);
        if (plus) fs.readdirplus?.(ctx, r.nodeid, fh, offset, dir);
        else fs.readdir?.(ctx, r.nodeid, fh, offset, dir);
        return this.#bodyInChain(r, dir.bytes.subarray(0, dir.used));
      }
      case A.FUSE_ACCESS: {
        if (fs.access === undefined) return -Errno.ENOSYS;
        if (n < A.ACCESS_IN.size) return -Errno.EINVAL;
        fs.access(ctx, r.nodeid, u32(v, A.ACCESS_IN.mask));
        return 0;
      }
      case A.FUSE_CREATE:
      case A.FUSE_TMPFILE: {
        const tmp = opcode === A.FUSE_TMPFILE;
        if ((tmp ? fs.tmpfile : fs.create) === undefined) return -Errno.ENOSYS;
        if (n < A.CREATE_IN.size) return -Errno.EINVAL;
        const flags = u32(v, A.CREATE_IN.flags);
        const mode = u32(v, A.CREATE_IN.mode);
        const umask = u32(v, A.CREATE_IN.umask);
        let c;
        if (tmp) c = fs.tmpfile?.(ctx, r.nodeid, mode, flags, umask);
        else {
          const name = this.#name(r, ARGS + A.CREATE_IN.size);
          if (name === undefined) return -Errno.EINVAL;
          c = fs.create?.(ctx, r.nodeid, name, mode, flags, umask);
        }
        if (c === undefined) return -Errno.ENOSYS;
        this.#entry(r, c.entry);
        this.#open(r, BODY + A.ENTRY_OUT.size, c.open.fh, c.open.openFlags);
        return A.ENTRY_OUT.size + A.OPEN_OUT.size;
      }
      case A.FUSE_FALLOCATE: {
        if (fs.fallocate === undefined) return -Errno.ENOSYS;
        if (n < A.FALLOCATE_IN.size) return -Errno.EINVAL;
        fs.fallocate(
          ctx,
          r.nodeid,
          u64(v, A.FALLOCATE_IN.fh),
          u64(v, A.FALLOCATE_IN.offset),
          u64(v, A.FALLOCATE_IN.length),
          u32(v, A.FALLOCATE_IN.mode),
        );
        return 0;
      }
      case A.FUSE_LSEEK: {
        if (fs.lseek === undefined) return -Errno.ENOSYS;
        if (n < A.LSEEK_IN.size) return -Errno.EINVAL;
        const at = fs.lseek(
          ctx,
          r.nodeid,
          u64(v, A.LSEEK_IN.fh),
          u64(v, A.LSEEK_IN.offset),
          u32(v, A.LSEEK_IN.whence),
        );
        r.out.setBigUint64(BODY + A.LSEEK_OUT.offset, at, true);
        return A.LSEEK_OUT.size;
      }
      case A.FUSE_COPY_FILE_RANGE: {
        if (fs.copyFileRange === undefined) return -Errno.ENOSYS;
        if (n < A.COPY_FILE_RANGE_IN.size) return -Errno.EINVAL;
        const len = u64(v, A.COPY_FILE_RANGE_IN.len);
        const copied = fs.copyFileRange(
          ctx,
          r.nodeid,
          u64(v, A.COPY_FILE_RANGE_IN.fhIn),
          u64(v, A.COPY_FILE_RANGE_IN.offIn),
          u64(v, A.COPY_FILE_RANGE_IN.nodeidOut),
          u64(v, A.COPY_FILE_RANGE_IN.fhOut),
          u64(v, A.COPY_FILE_RANGE_IN.offOut),
          Number(len > 0x7fff_f000n ? 0x7fff_f000n : len),
          Number(u64(v, A.COPY_FILE_RANGE_IN.flags) & 0xffff_ffffn),
        );
        r.out.setUint32(BODY + A.WRITE_OUT.sizeField, copied, true);
        r.out.setUint32(BODY + 4, 0, true);
        return A.WRITE_OUT.size;
      }
      case A.FUSE_SYNCFS: {
        if (fs.syncfs === undefined) return -Errno.ENOSYS;
        fs.syncfs(ctx, r.nodeid);
        return 0;
      }
    }
    return -Errno.ENOSYS;
  }
}
