/**
 * Helpers for writing a `FileSystem`: attributes and lookup replies with sensible defaults.
 *
 * @module
 */
import { S_IFDIR, S_IFMT } from "../ffi/constants.ts";
import type { Attr, Entry } from "./filesystem.ts";

/** What `attr()` needs: the inode number and `st_mode`; every other field has a default. */
export type AttrInit = Partial<Attr> & Pick<Attr, "ino" | "mode">;

/**
 * A complete `Attr` from the fields that matter: `ino` and `mode` (type and permission bits,
 * e.g. `S_IFREG | 0o644`). Defaults: size 0, blocks enough for the size, all three times now,
 * nlink 2 for a directory and 1 otherwise, uid and gid 0, rdev 0, blksize 4096.
 *
 * ```ts ignore
 * const file = attr({ ino: 2n, mode: S_IFREG | 0o444, size: 12 });
 * ```
 */
export function attr(init: AttrInit): Attr {
  const now = Date.now();
  const sec = Math.floor(now / 1000);
  const nsec = (now % 1000) * 1_000_000;
  const size = init.size ?? 0;
  return {
    size,
    blocks: Math.ceil(size / 512),
    atime: sec,
    atimeNsec: nsec,
    mtime: sec,
    mtimeNsec: nsec,
    ctime: sec,
    ctimeNsec: nsec,
    nlink: (init.mode & S_IFMT) === S_IFDIR ? 2 : 1,
    uid: 0,
    gid: 0,
    rdev: 0,
    blksize: 4096,
    ...init,
  };
}

/**
 * A LOOKUP (or create) reply for node `nodeid` with attributes `a`, cached by the guest for
 * `timeout` seconds (default 1; 0: ask every time).
 */
export function entry(nodeid: bigint, a: Attr, timeout = 1): Entry {
  return { nodeid, generation: 0n, attr: a, entryTimeout: timeout, attrTimeout: timeout };
}
