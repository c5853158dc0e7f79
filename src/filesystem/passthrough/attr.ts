/**
 * Attributes as the guest sees them: `struct statx` of a host descriptor turned into `Attr`,
 * device numbers in the FUSE encoding, and the cache lifetimes of each cache mode.
 *
 * @module
 */
import { ErrnoError, makedev, STATX, StatxBuffer, statxFdRaw } from "../../ffi/mod.ts";
import type { Attr } from "../filesystem.ts";

/** How long the guest may cache, per cache mode (the design's names). */
export type CacheMode = "none" | "auto" | "always" | "metadata";

/** Seconds the guest may keep entries and attributes, per cache mode. */
export function cacheTimeout(cache: CacheMode, timeout?: number): number {
  switch (cache) {
    case "none":
      return 0;
    case "auto":
      return timeout ?? 1;
    case "always":
    case "metadata":
      return 86400;
  }
}

/** The FUSE (the kernel's `new_encode_dev`) form of a device number. */
export function fuseDev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

/** A FUSE device number as a glibc `dev_t`. */
export function hostDev(rdev: number): bigint {
  return makedev((rdev & 0xfff00) >>> 8, (rdev & 0xff) | ((rdev >>> 12) & 0xfff00));
}

/** A zeroed Attr. */
export function newAttr(): Attr {
  return {
    ino: 0n,
    size: 0,
    blocks: 0,
    atime: 0,
    atimeNsec: 0,
    mtime: 0,
    mtimeNsec: 0,
    ctime: 0,
    ctimeNsec: 0,
    mode: 0,
    nlink: 0,
    uid: 0,
    gid: 0,
    rdev: 0,
    blksize: 0,
    flags: 0,
  };
}

/** One statx buffer and one Attr, reused for every call (one request at a time). */
export class Stat {
  /** The statx buffer the last `of()` filled. */
  readonly sx: StatxBuffer = new StatxBuffer();
  /** The Attr `fill()` fills. */
  readonly attr: Attr = newAttr();

  /** statx of descriptor `fd` itself (never following a symlink). Returns 0 or -errno. */
  statRaw(fd: number): number {
    return statxFdRaw(fd, this.sx);
  }

  /** The attributes of descriptor `fd` (throws ErrnoError). */
  of(fd: number): Attr {
    const r = statxFdRaw(fd, this.sx);
    if (r < 0) throw new ErrnoError(-r, "statx");
    return this.fill();
  }

  /** Fills `attr` from what the last statx returned. */
  fill(): Attr {
    const v = this.sx.view;
    const a = this.attr;
    a.ino = v.getBigUint64(STATX.ino, true);
    a.size = Number(v.getBigUint64(STATX.sizeField, true));
    a.blocks = Number(v.getBigUint64(STATX.blocks, true));
    a.atime = Number(v.getBigInt64(STATX.atime, true));
    a.atimeNsec = v.getUint32(STATX.atime + STATX.timestampNsec, true);
    a.mtime = Number(v.getBigInt64(STATX.mtime, true));
    a.mtimeNsec = v.getUint32(STATX.mtime + STATX.timestampNsec, true);
    a.ctime = Number(v.getBigInt64(STATX.ctime, true));
    a.ctimeNsec = v.getUint32(STATX.ctime + STATX.timestampNsec, true);
    a.mode = v.getUint16(STATX.mode, true);
    a.nlink = v.getUint32(STATX.nlink, true);
    a.uid = v.getUint32(STATX.uid, true);
    a.gid = v.getUint32(STATX.gid, true);
    a.rdev = fuseDev(v.getUint32(STATX.rdevMajor, true), v.getUint32(STATX.rdevMinor, true));
    a.blksize = v.getUint32(STATX.blksize, true);
    return a;
  }
}
