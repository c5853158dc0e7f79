/**
 * What OPEN, CREATE and OPENDIR do with the guest's flags: the open(2) flags used on the host,
 * the FOPEN_* flags of the reply per cache mode, the INIT flags this file system takes, and which
 * nodes may be opened at all.
 *
 * @module
 */
import {
  Errno,
  ErrnoError,
  O_ACCMODE,
  O_APPEND,
  O_DIRECT,
  O_DSYNC,
  O_LARGEFILE,
  O_NOATIME,
  O_RDWR,
  O_SYNC,
  O_TRUNC,
  O_WRONLY,
  S_IFDIR,
  S_IFLNK,
  S_IFREG,
  S_IFSOCK,
} from "../../ffi/mod.ts";
import type { CacheMode } from "./attr.ts";
import {
  FOPEN_CACHE_DIR,
  FOPEN_DIRECT_IO,
  FOPEN_KEEP_CACHE,
  FUSE_DIRECT_IO_ALLOW_MMAP,
  FUSE_DO_READDIRPLUS,
  FUSE_READDIRPLUS_AUTO,
  FUSE_WRITEBACK_CACHE,
} from "../../wire/fuse.ts";

/** The open flags passed on to the host; the rest (O_CREAT, O_NOFOLLOW, O_PATH...) are ours. */
const KEPT = O_ACCMODE | O_APPEND | O_TRUNC | O_DSYNC | O_SYNC | O_DIRECT | O_NOATIME | O_LARGEFILE;

/** The open policy of one file system. */
export interface OpenPolicyConfig {
  cache: CacheMode;
  allowDirectIo: boolean;
  preserveNoatime: boolean;
  writeback: boolean;
  readdirplus: boolean;
  /** Grant FUSE_DIRECT_IO_ALLOW_MMAP (Linux 6.6+) so MAP_SHARED works under FOPEN_DIRECT_IO. */
  allowMmap: boolean;
}

/** Flags in, flags out. */
export class OpenPolicy {
  readonly #c: OpenPolicyConfig;
  /** FOPEN_* flags of OPEN and CREATE replies. */
  readonly fileReplyFlags: number;
  /** FOPEN_* flags of OPENDIR replies. */
  readonly dirReplyFlags: number;
  /** Whether the session took the writeback cache (set by `init`). */
  writeback = false;

  /** The policy of `config`. */
  constructor(config: OpenPolicyConfig) {
    this.#c = config;
    const cache = config.cache;
    this.fileReplyFlags = cache === "none" || cache === "metadata"
      ? FOPEN_DIRECT_IO
      : cache === "always"
      ? FOPEN_KEEP_CACHE
      : 0;
    this.dirReplyFlags = cache === "always"
      ? FOPEN_CACHE_DIR
      : cache === "metadata"
      ? FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE
      : 0;
  }

  /** The INIT flags to take of `capable`: writeback only when configured, READDIRPLUS per config. */
  init(capable: bigint): bigint {
    let want = capable;
    this.writeback = this.#c.writeback && (capable & FUSE_WRITEBACK_CACHE) !== 0n;
    if (!this.writeback) want &= ~FUSE_WRITEBACK_CACHE;
    if (!this.#c.readdirplus) want &= ~(FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO);
    if (!this.#c.allowMmap) want &= ~FUSE_DIRECT_IO_ALLOW_MMAP;
    return want;
  }

  /** The open(2) flags to use on the host for the guest's `flags`. */
  hostFlags(flags: number): number {
    let f = flags & KEPT;
    if (!this.#c.allowDirectIo) f &= ~O_DIRECT;
    if (!this.#c.preserveNoatime) f &= ~O_NOATIME;
    if (this.writeback) {
      // The guest's page cache may read to fill partial pages, and it keeps the file size.
      if ((f & O_ACCMODE) === O_WRONLY) f = (f & ~O_ACCMODE) | O_RDWR;
      f &= ~O_APPEND;
    }
    return f;
  }
}

/**
 * Refuses to open a node of file type `type` unless it is a regular file or (when `dirOk`) a
 * directory: a symlink is ELOOP, a socket ENXIO, a device or FIFO EACCES (as on a nodev mount;
 * and opening a FIFO would block the daemon).
 */
export function checkOpenable(type: number, dirOk: boolean, call: string): void {
  switch (type) {
    case S_IFREG:
      return;
    case S_IFDIR:
      if (dirOk) return;
      throw new ErrnoError(Errno.EISDIR, call);
    case S_IFLNK:
      throw new ErrnoError(Errno.ELOOP, call);
    case S_IFSOCK:
      throw new ErrnoError(Errno.ENXIO, call);
    default:
      throw new ErrnoError(Errno.EACCES, call, "not a regular file or directory");
  }
}
