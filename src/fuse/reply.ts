/**
 * Encoders of reply bodies: fuse_attr, fuse_entry_out, timeouts, directory records. They write
 * into a DataView at an offset and allocate nothing: a u64 field whose value is a number is
 * written as two u32 halves.
 *
 * @module
 */
import type { Attr, Entry } from "../filesystem/filesystem.ts";
import * as A from "../wire/fuse.ts";

/**
 * Writes a non-negative integer below 2^53 as a little-endian u64 (two u32 halves: no BigInt).
 */
export function putU64(o: DataView, at: number, value: number): void {
  o.setUint32(at, value >>> 0, true);
  o.setUint32(at + 4, Math.floor(value / 0x1_0000_0000), true);
}

/** Writes an integer of magnitude below 2^53 as a little-endian i64 (two's complement halves). */
export function putI64(o: DataView, at: number, value: number): void {
  o.setUint32(at, value >>> 0, true);
  o.setInt32(at + 4, Math.floor(value / 0x1_0000_0000), true);
}

/** Writes a timeout in seconds as a u64 seconds field and a u32 nanoseconds field. */
export function putTimeout(o: DataView, secAt: number, nsecAt: number, seconds: number): void {
  const s = Math.max(0, Math.min(Math.floor(seconds), Number.MAX_SAFE_INTEGER));
  putU64(o, secAt, s);
  o.setUint32(nsecAt, Math.min(999_999_999, Math.floor((seconds - s) * 1e9)), true);
}

/**
 * Writes all of `struct fuse_attr` at `at` (every byte: no fill needed before). FUSE_ATTR_DAX,
 * which the file system sets on the files a DAX window can serve, reaches only a guest granted
 * FUSE_HAS_INODE_DAX (`inodeDax`).
 */
export function putAttr(o: DataView, at: number, a: Attr, inodeDax = false): void {
  o.setBigUint64(at + A.ATTR.ino, a.ino, true);
  putU64(o, at + A.ATTR.sizeField, a.size);
  putU64(o, at + A.ATTR.blocks, a.blocks);
  putI64(o, at + A.ATTR.atime, a.atime);
  putI64(o, at + A.ATTR.mtime, a.mtime);
  putI64(o, at + A.ATTR.ctime, a.ctime);
  o.setUint32(at + A.ATTR.atimensec, a.atimeNsec, true);
  o.setUint32(at + A.ATTR.mtimensec, a.mtimeNsec, true);
  o.setUint32(at + A.ATTR.ctimensec, a.ctimeNsec, true);
  o.setUint32(at + A.ATTR.mode, a.mode, true);
  o.setUint32(at + A.ATTR.nlink, a.nlink, true);
  o.setUint32(at + A.ATTR.uid, a.uid, true);
  o.setUint32(at + A.ATTR.gid, a.gid, true);
  o.setUint32(at + A.ATTR.rdev, a.rdev, true);
  o.setUint32(at + A.ATTR.blksize, a.blksize, true);
  const flags = a.flags ?? 0;
  o.setUint32(
    at + A.ATTR.flags,
    inodeDax ? flags : flags & ~A.FUSE_ATTR_DAX,
    true,
  );
}

/** Writes all of `struct fuse_entry_out` at `at` (every byte: no fill needed before). */
export function putEntry(o: DataView, at: number, e: Entry, inodeDax = false): void {
  o.setBigUint64(at + A.ENTRY_OUT.nodeid, e.nodeid, true);
  o.setBigUint64(at + A.ENTRY_OUT.generation, e.generation, true);
  putTimeout(o, at + A.ENTRY_OUT.entryValid, at + A.ENTRY_OUT.entryValidNsec, e.entryTimeout);
  putTimeout(o, at + A.ENTRY_OUT.attrValid, at + A.ENTRY_OUT.attrValidNsec, e.attrTimeout);
  putAttr(o, at + A.ENTRY_OUT.attr, e.attr, inodeDax);
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
