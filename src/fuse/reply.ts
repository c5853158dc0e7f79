/**
 * Encoders of reply bodies: fuse_attr, fuse_entry_out, timeouts, directory records. They write
 * into a DataView at an offset and allocate nothing but the BigInts the wire's u64 fields need.
 *
 * @module
 */
import type { Attr, Entry } from "../filesystem/filesystem.ts";
import * as A from "./abi.ts";

/** Writes a timeout in seconds as a u64 seconds field and a u32 nanoseconds field. */
export function putTimeout(o: DataView, secAt: number, nsecAt: number, seconds: number): void {
  const s = Math.max(0, Math.floor(seconds));
  o.setBigUint64(secAt, BigInt(s), true);
  o.setUint32(nsecAt, Math.min(999_999_999, Math.floor((seconds - s) * 1e9)), true);
}

/** Writes `struct fuse_attr` at `at`. */
export function putAttr(o: DataView, at: number, a: Attr): void {
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

/** Writes `struct fuse_entry_out` at `at`. */
export function putEntry(o: DataView, at: number, e: Entry): void {
  o.setBigUint64(at + A.ENTRY_OUT.nodeid, e.nodeid, true);
  o.setBigUint64(at + A.ENTRY_OUT.generation, e.generation, true);
  putTimeout(o, at + A.ENTRY_OUT.entryValid, at + A.ENTRY_OUT.entryValidNsec, e.entryTimeout);
  putTimeout(o, at + A.ENTRY_OUT.attrValid, at + A.ENTRY_OUT.attrValidNsec, e.attrTimeout);
  putAttr(o, at + A.ENTRY_OUT.attr, e.attr);
}

/** Writes `struct fuse_dirent` and its name at `at`, padded; returns the record's length. */
export function putDirent(
  bytes: Uint8Array,
  o: DataView,
  at: number,
  ino: bigint,
  offset: bigint,
  type: number,
  name: Uint8Array,
): number {
  const len = A.direntAlign(A.DIRENT.size + name.length);
  o.setBigUint64(at + A.DIRENT.ino, ino, true);
  o.setBigUint64(at + A.DIRENT.off, offset, true);
  o.setUint32(at + A.DIRENT.namelen, name.length, true);
  o.setUint32(at + A.DIRENT.type, type, true);
  bytes.set(name, at + A.DIRENT.name);
  bytes.fill(0, at + A.DIRENT.name + name.length, at + len);
  return len;
}
