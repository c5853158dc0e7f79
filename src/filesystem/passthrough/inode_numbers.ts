/**
 * Inode numbers as the guest sees them when the share spans several host file systems.
 *
 * A host inode number is unique only within its file system: a tmpfs mounted below the share
 * numbers its files 1, 2, 3, ... whatever the share's own file system holds. How the guest keeps
 * them apart depends on the session:
 *
 * - Submounts in effect (`announceSubmounts`, the default, and a guest that offered
 *   FUSE_SUBMOUNTS, as Linux ≥ 5.10 does): a directory that is the root of another host mount is
 *   marked FUSE_ATTR_SUBMOUNT, and the guest mounts it as a submount with a superblock and device
 *   number of its own. Inode numbers are then the host's, as Rust and C virtiofsd report them,
 *   and each host (st_dev, st_ino) is a guest pair of its own. The one exception is a file that
 *   is a mount root itself (a file bind-mounted over another): it cannot be a submount, so it is
 *   shown in its parent's superblock with a mapped number (below).
 * - Submounts not in effect (`--no-announce-submounts`, or a guest that did not offer them): the
 *   whole share is one guest file system, one st_dev. Files of the share's own device keep the
 *   host's numbers; files of every other device get a mapped number. (Rust and C virtiofsd pass
 *   the host's numbers through then, and the guest sees two tmpfs' files as one: see
 *   `spec/submounts_test.ts`.)
 *
 * A mapped number is the host's with the device's index in its top byte: `ino ^ (k << 56)`,
 * where `k` (1 to 255) numbers the devices that need mapping in the order they are first seen.
 * It is stable for the daemon's life (the same host file always gets the same number, in
 * READDIR's `d_ino` as in attributes), and no two files share one as long as the host's inode
 * numbers stay below 2^56, which every local Linux file system's do (ext4 and tmpfs use 32 or
 * 64-bit counters that never get there; xfs, btrfs and zfs stay below 2^48 in practice). A
 * number at or above 2^56 on a mapped device, a share whose own numbers reach 2^56 (an overlayfs
 * with `xino` may), or more than 255 devices to map, each get one warning: collisions are
 * possible from then on.
 *
 * @module
 */
import type { Logger } from "../../log.ts";

/** 2^32. */
const U32 = 0x1_0000_0000;
/** The first inode number whose top byte is not zero. */
export const MAPPED_INO_LIMIT: bigint = 1n << 56n;
/** How many devices get an index of their own. */
const MAX_INDEX = 255;

/** The guest's inode numbers for files of devices other than the share's own. */
export class InodeNumbers {
  readonly #log: Logger | undefined;
  /** Device (`major * 2^32 + minor`) → its index, 1 to 255. */
  readonly #index = new Map<number, number>();
  /** Devices assigned an index so far (the 256th wraps around). */
  #assigned = 0;
  /** Warned already: a device's high numbers (by device), the share's, too many devices. */
  readonly #warnedHigh = new Set<number>();
  #warnedShare = false;

  /** `log` gets the warnings and one note per device mapped. */
  constructor(log?: Logger) {
    this.#log = log;
  }

  /** Devices that got an index so far. */
  get devices(): number {
    return this.#index.size;
  }

  /** The index of device (major, minor), assigned when first asked. */
  #indexOf(major: number, minor: number): number {
    const dev = major * U32 + minor;
    let k = this.#index.get(dev);
    if (k !== undefined) return k;
    k = (this.#assigned % MAX_INDEX) + 1;
    this.#assigned++;
    this.#index.set(dev, k);
    if (this.#assigned === MAX_INDEX + 1) {
      this.#log?.warn(
        `more than ${MAX_INDEX} host file systems below the shared directory need mapped inode ` +
          "numbers: the guest may see two files with one inode number",
      );
    }
    this.#log?.info(
      `files of host device ${major}:${minor} are shown with inode numbers mapped to ` +
        `0x${k.toString(16).padStart(2, "0")}xxxxxxxxxxxxxx (no submount for them in the guest)`,
    );
    return k;
  }

  /** The guest's number of host inode `ino` of device (major, minor): `ino ^ (k << 56)`. */
  mapped(major: number, minor: number, ino: bigint): bigint {
    const k = this.#indexOf(major, minor);
    if (ino >= MAPPED_INO_LIMIT) this.#high(major, minor);
    return ino ^ (BigInt(k) << 56n);
  }

  /**
   * The guest's number of host inode `ino` of device (major, minor) in a READDIR of a directory
   * whose files are mapped: as `mapped`.
   */
  mapper(major: number, minor: number): (ino: bigint) => bigint {
    const mask = BigInt(this.#indexOf(major, minor)) << 56n;
    return (ino) => {
      if (ino >= MAPPED_INO_LIMIT) this.#high(major, minor);
      return ino ^ mask;
    };
  }

  /** Notes a number of the share's own device that is shown as it is (a cheap check). */
  unmapped(ino: bigint): void {
    if (this.#index.size > 0 && !this.#warnedShare && ino >= MAPPED_INO_LIMIT) {
      this.#warnedShare = true;
      this.#log?.warn(
        `the shared directory's file system has inode numbers of 2^56 and above (${ino}): ` +
          "they may collide with the mapped numbers of the file systems below it",
      );
    }
  }

  #high(major: number, minor: number): void {
    const dev = major * U32 + minor;
    if (this.#warnedHigh.has(dev)) return;
    this.#warnedHigh.add(dev);
    this.#log?.warn(
      `host device ${major}:${minor} has inode numbers of 2^56 and above: its mapped numbers ` +
        "may collide with another file system's in the guest",
    );
  }
}
