/**
 * `PassthroughFs`: serves a host directory. Every operation is relative to a descriptor of the
 * node it names (`*at` calls with O_PATH descriptors, never a path from the share's root), and a
 * symlink is never followed by the daemon.
 *
 * @module
 */
import {
  AT_FDCWD,
  closeQuietly,
  cString,
  Errno,
  ErrnoError,
  fstatfsRaw,
  fstatRaw,
  O_CLOEXEC,
  O_DIRECTORY,
  O_NOFOLLOW,
  O_PATH,
  openat,
  openatRaw,
  STAT,
  StatBuffer,
  STATFS,
} from "../../ffi/mod.ts";
import type { Attr, AttrReply, Context, Entry, FileSystem, StatFs } from "../filesystem.ts";
import { type Inode, InodeStore } from "./inode_store.ts";

/** How long the guest may cache, per cache mode (the design's names). */
export type CacheMode = "none" | "auto" | "always" | "metadata";

/** Options of a PassthroughFs. */
export interface PassthroughConfig {
  /** The host directory to share. */
  sharedDir: string;
  /** Cache mode (default auto). */
  cache?: CacheMode;
  /** cache=auto's entry and attribute timeout, in seconds (default 1). */
  timeout?: number;
}

const NAME_MAX = 255;
const DOT = cString(".");

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

/** A host directory served as a FileSystem. */
export class PassthroughFs implements FileSystem {
  readonly #inodes: InodeStore;
  readonly #timeout: number;
  readonly #stat = new StatBuffer();
  readonly #statfs = new Uint8Array(new ArrayBuffer(STATFS.size));
  readonly #name = new Uint8Array(new ArrayBuffer(NAME_MAX + 1));
  readonly #attr: Attr = {
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
  };
  readonly #entry: Entry;
  readonly #attrReply: AttrReply;

  /** Opens the shared directory (throws ErrnoError naming it if it cannot). */
  constructor(config: PassthroughConfig) {
    const fd = openat(AT_FDCWD, cString(config.sharedDir), O_PATH | O_DIRECTORY | O_CLOEXEC);
    const r = fstatRaw(fd, this.#stat);
    if (r < 0) throw new ErrnoError(-r, "fstatat", config.sharedDir);
    this.#inodes = new InodeStore(fd, this.#stat.dev, this.#stat.ino);
    this.#timeout = cacheTimeout(config.cache ?? "auto", config.timeout);
    this.#entry = {
      nodeid: 0n,
      generation: 0n,
      attr: this.#attr,
      entryTimeout: this.#timeout,
      attrTimeout: this.#timeout,
    };
    this.#attrReply = { attr: this.#attr, timeout: this.#timeout };
  }

  /** Inodes the guest holds (the root included). */
  get inodeCount(): number {
    return this.#inodes.size;
  }

  #inode(nodeid: bigint): Inode {
    const inode = this.#inodes.get(nodeid);
    if (inode === undefined) throw new ErrnoError(Errno.ENOENT, "nodeid", `${nodeid} is unknown`);
    return inode;
  }

  /** Fills the reused Attr from the reused stat buffer. */
  #fillAttr(): Attr {
    const v = this.#stat.view;
    const a = this.#attr;
    const n = (at: number): number => Number(v.getBigInt64(at, true));
    a.ino = v.getBigUint64(STAT.ino, true);
    a.size = n(STAT.sizeField);
    a.blocks = n(STAT.blocks);
    a.atime = n(STAT.atime);
    a.atimeNsec = n(STAT.atimeNsec);
    a.mtime = n(STAT.mtime);
    a.mtimeNsec = n(STAT.mtimeNsec);
    a.ctime = n(STAT.ctime);
    a.ctimeNsec = n(STAT.ctimeNsec);
    a.mode = v.getUint32(STAT.mode, true);
    a.nlink = n(STAT.nlink);
    a.uid = v.getUint32(STAT.uid, true);
    a.gid = v.getUint32(STAT.gid, true);
    a.rdev = n(STAT.rdev);
    a.blksize = n(STAT.blksize);
    return a;
  }

  #statOf(fd: number): Attr {
    const r = fstatRaw(fd, this.#stat);
    if (r < 0) throw new ErrnoError(-r, "fstatat");
    return this.#fillAttr();
  }

  /** Forgets every node but the root. */
  destroy(): void {
    this.#inodes.clear();
  }

  lookup(_ctx: Context, parent: bigint, name: Uint8Array): Entry {
    const dir = this.#inode(parent);
    if (name.length === 0 || name.includes(0x2f) || name.includes(0)) {
      throw new ErrnoError(Errno.EINVAL, "lookup", "name is empty or holds '/' or NUL");
    }
    if (name.length > NAME_MAX) throw new ErrnoError(Errno.ENAMETOOLONG, "lookup");
    const dot = name.length === 1 && name[0] === 0x2e;
    const dotdot = name.length === 2 && name[0] === 0x2e && name[1] === 0x2e;
    let fd: number;
    if (dot || (dotdot && parent === 1n)) {
      // "." is the directory itself; ".." of the root stays at the root.
      fd = openatRaw(dir.fd, DOT, O_PATH | O_CLOEXEC);
    } else {
      this.#name.set(name);
      this.#name[name.length] = 0;
      fd = openatRaw(
        dir.fd,
        this.#name.subarray(0, name.length + 1),
        O_PATH | O_NOFOLLOW | O_CLOEXEC,
      );
    }
    if (fd < 0) throw new ErrnoError(-fd, "openat");
    const r = fstatRaw(fd, this.#stat);
    if (r < 0) {
      closeQuietly(fd);
      throw new ErrnoError(-r, "fstatat");
    }
    const inode = this.#inodes.lookedUp(fd, this.#stat.dev, this.#stat.ino);
    this.#fillAttr();
    this.#entry.nodeid = inode.nodeid;
    return this.#entry;
  }

  forget(_ctx: Context, nodeid: bigint, nlookup: bigint): void {
    this.#inodes.forget(nodeid, nlookup);
  }

  getattr(_ctx: Context, nodeid: bigint, _fh: bigint | undefined): AttrReply {
    this.#statOf(this.#inode(nodeid).fd);
    return this.#attrReply;
  }

  statfs(_ctx: Context, nodeid: bigint): StatFs {
    const r = fstatfsRaw(this.#inode(nodeid).fd, this.#statfs);
    if (r < 0) throw new ErrnoError(-r, "fstatfs");
    const v = new DataView(this.#statfs.buffer);
    const n = (at: number): number => Number(v.getBigUint64(at, true));
    return {
      blocks: n(STATFS.blocks),
      bfree: n(STATFS.bfree),
      bavail: n(STATFS.bavail),
      files: n(STATFS.files),
      ffree: n(STATFS.ffree),
      bsize: n(STATFS.bsize),
      namelen: n(STATFS.namelen),
      frsize: n(STATFS.frsize),
    };
  }

  /** Closes every descriptor (the root's too); the file system is unusable afterwards. */
  close(): void {
    this.#inodes.close();
  }
}
