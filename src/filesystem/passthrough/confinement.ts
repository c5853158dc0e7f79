/**
 * Keeping ".." inside the share. A directory's parent is inside the share when climbing ".."
 * from it meets the share's root; reaching "/" (whose ".." is itself) first means the directory
 * was moved out of the share on the host. In the sandbox the share is a bind mount of its own and
 * Linux itself refuses ".." from a directory moved out of it (ENOENT: its path no longer connects
 * to the mount's root): that means outside too.
 *
 * @module
 */
import {
  closeQuietly,
  cString,
  Errno,
  ErrnoError,
  O_CLOEXEC,
  O_DIRECTORY,
  O_PATH,
  openatRaw,
} from "../../ffi/mod.ts";
import type { Stat } from "./attr.ts";
import { inodeKey } from "./inode_store.ts";

/** How many ".." a check climbs before giving up. */
const MAX_DEPTH = 4096;
const DOTDOT = cString("..");

/**
 * Whether directory descriptor `fd` is the share's root (key `rootKey`) or below it. Uses (and
 * overwrites) `stat`'s buffer; leaves `fd` open.
 */
export function insideShare(fd: number, rootKey: string, stat: Stat): boolean {
  let cur = fd;
  let key = "";
  try {
    for (let depth = 0; depth < MAX_DEPTH; depth++) {
      const r = stat.statRaw(cur);
      if (r < 0) throw new ErrnoError(-r, "statx");
      const k = inodeKey(stat.sx);
      if (k === rootKey) return true;
      if (k === key) return false;
      key = k;
      const up = openatRaw(cur, DOTDOT, O_PATH | O_DIRECTORY | O_CLOEXEC);
      // Not deleted (which also gives ENOENT), yet no parent: disconnected from the mount.
      if (up === -Errno.ENOENT && stat.sx.nlink > 0) return false;
      if (cur !== fd) closeQuietly(cur);
      cur = up;
      if (cur < 0) throw new ErrnoError(-cur, "openat");
    }
    return false;
  } finally {
    if (cur !== fd) closeQuietly(cur);
  }
}
