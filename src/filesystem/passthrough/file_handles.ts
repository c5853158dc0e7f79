/**
 * File handles for the passthrough file system's inodes, so that an inode the guest holds need
 * not hold a host descriptor. `name_to_handle_at(fd, "", AT_EMPTY_PATH)` on the O_PATH
 * descriptor a lookup opened gives a persistent handle of that very file; `open_by_handle_at`
 * reopens it later, as O_PATH, through a descriptor of its mount. A handle names a file, not a
 * path: the file it reopens is the one the lookup found, wherever it has moved since (as an
 * O_PATH descriptor kept open would), and ESTALE once it is deleted. Handles only ever come from
 * the daemon's own lookups, so the guest cannot name a file outside the share with one.
 *
 * open_by_handle_at needs CAP_DAC_READ_SEARCH, and not every file system has handles: a probe on
 * the shared directory at start decides whether they are used at all (mode `prefer` falls back
 * to a descriptor per inode, `mandatory` refuses to start), and a file whose handle cannot be
 * taken keeps its descriptor (`prefer`) or fails its lookup (`mandatory`).
 *
 * Mount descriptors: open_by_handle_at wants an open (not O_PATH) descriptor on the handle's
 * mount. The first directory looked up on a mount is reopened O_RDONLY|O_DIRECTORY for that
 * (never a device, a FIFO or a regular file), and kept while inodes of the mount are held.
 *
 * @module
 */
import {
  AT_EMPTY_PATH,
  closeQuietly,
  cString,
  Errno,
  ErrnoError,
  errnoName,
  FILE_HANDLE,
  FileHandleBuffer,
  MAX_HANDLE_SZ,
  nameToHandleAtRaw,
  O_CLOEXEC,
  O_DIRECTORY,
  O_PATH,
  O_RDONLY,
  openatRaw,
  openByHandleAtRaw,
  S_IFDIR,
} from "../../ffi/mod.ts";

/**
 * Whether inodes keep file handles instead of descriptors: `never` (a descriptor per inode),
 * `prefer` (handles when the host allows them, else descriptors), `mandatory` (handles, or the
 * file system does not start and a lookup without one fails). virtiofsd's
 * `--inode-file-handles` values.
 */
export type InodeFileHandles = "never" | "prefer" | "mandatory";

/** The `InodeFileHandles` values. */
export const INODE_FILE_HANDLES: readonly InodeFileHandles[] = ["never", "prefer", "mandatory"];

/** Where file handles stand after the start-up probe. */
export interface FileHandleStatus {
  /** The mode asked for. */
  readonly mode: InodeFileHandles;
  /** Whether inodes keep handles (and their descriptors are a bounded cache). */
  readonly active: boolean;
  /** Why they are not used, when `mode` asked for them; "" otherwise. */
  readonly reason: string;
}

/** Whether `r` is -EMFILE or -ENFILE: out of descriptors (the process's or the host's). */
export function outOfFds(r: number): boolean {
  return r === -Errno.EMFILE || r === -Errno.ENFILE;
}

interface MountFd {
  fd: number;
  refs: number;
}

/** Handles of files on the host, and the mount descriptors that reopen them. */
export class FileHandles {
  readonly #mode: InodeFileHandles;
  readonly #procFd: number;
  readonly #buf = new FileHandleBuffer();
  /** Where a handle string is decoded for open_by_handle_at. */
  readonly #open = new Uint8Array(new ArrayBuffer(FILE_HANDLE.size + MAX_HANDLE_SZ));
  readonly #mounts = new Map<number, MountFd>();
  #active = false;
  #reason = "";

  /** Handles in `mode`; `procFd` is an O_PATH descriptor of /proc/self/fd. */
  constructor(mode: InodeFileHandles, procFd: number) {
    this.#mode = mode;
    this.#procFd = procFd;
  }

  /** Whether inodes keep handles. */
  get active(): boolean {
    return this.#active;
  }

  /** Whether a file without a handle fails its lookup. */
  get mandatory(): boolean {
    return this.#mode === "mandatory";
  }

  /** The mode, whether handles are used, and why not. */
  get status(): FileHandleStatus {
    return { mode: this.#mode, active: this.#active, reason: this.#reason };
  }

  /** Whether a descriptor of mount `mountId` is held. */
  hasMount(mountId: number): boolean {
    return this.#mounts.has(mountId);
  }

  /** Mount descriptors held. */
  get mountCount(): number {
    return this.#mounts.size;
  }

  /**
   * Decides whether handles are used: takes the handle of the shared directory `rootFd` (an
   * O_PATH descriptor), reopens it by handle and checks with `sameFile` that the descriptor it
   * got is that directory. On success the root's mount descriptor is kept (one reference). Mode `never`
   * skips the probe; `mandatory` throws ErrnoError when it fails.
   */
  probe(rootFd: number, sameFile: (fd: number) => boolean): boolean {
    if (this.#mode === "never") return false;
    const fail = (errno: number, what: string): boolean => {
      this.#reason = `${what}: ${errnoName(errno)}`;
      if (this.#mode === "mandatory") {
        this.close();
        throw new ErrnoError(errno, "inode file handles", this.#reason);
      }
      return false;
    };
    const handle = this.handleOf(rootFd);
    if (typeof handle === "number") return fail(-handle, "name_to_handle_at");
    const m = this.acquireMount(this.#buf.mountId, rootFd, S_IFDIR);
    if (m < 0) return fail(-m, "open of the mount");
    this.#active = true;
    const fd = this.open(handle, this.#buf.mountId);
    if (fd < 0) {
      this.#active = false;
      this.releaseMount(this.#buf.mountId);
      return fail(-fd, "open_by_handle_at");
    }
    let same: boolean;
    try {
      same = sameFile(fd);
    } finally {
      closeQuietly(fd);
    }
    if (!same) {
      this.#active = false;
      this.releaseMount(this.#buf.mountId);
      return fail(Errno.ESTALE, "open_by_handle_at reached another file");
    }
    return true;
  }

  /**
   * The handle of the file O_PATH descriptor `fd` names, as a string of the `struct
   * file_handle` bytes (one char per byte), or -errno (EOPNOTSUPP: its file system has no
   * handles). The mount id is `lastMountId` afterwards.
   */
  handleOf(fd: number): string | number {
    const r = nameToHandleAtRaw(fd, EMPTY, this.#buf, AT_EMPTY_PATH);
    if (r < 0) return r;
    return String.fromCharCode(...this.#buf.filled());
  }

  /**
   * Whether the file named `cname` (NUL-terminated) in directory `dirfd`, a symlink itself, has
   * handle `handle` on mount `mountId`: the same file, not another that took its inode number
   * (a handle carries the generation). Opens nothing. Returns a boolean, or -errno.
   */
  sameFileAt(dirfd: number, cname: Uint8Array, handle: string, mountId: number): boolean | number {
    const r = nameToHandleAtRaw(dirfd, cname, this.#buf, 0);
    if (r < 0) return r;
    if (this.#buf.mountId !== mountId) return false;
    const got = this.#buf.filled();
    if (got.length !== handle.length) return false;
    for (let i = 0; i < got.length; i++) if (got[i] !== handle.charCodeAt(i)) return false;
    return true;
  }

  /** The mount id the last `handleOf` reported. */
  get lastMountId(): number {
    return this.#buf.mountId;
  }

  /**
   * One more reference on a descriptor of mount `mountId`. When there is none yet, `fd` (an
   * O_PATH descriptor of a file of type `type` on that mount) gives it, if it is a directory.
   * Returns 0, or -errno (EOPNOTSUPP: no descriptor, and `fd` is not a directory).
   */
  acquireMount(mountId: number, fd: number, type: number): number {
    const known = this.#mounts.get(mountId);
    if (known !== undefined) {
      known.refs++;
      return 0;
    }
    if (type !== S_IFDIR) return -Errno.EOPNOTSUPP;
    const mfd = openatRaw(this.#procFd, cString(String(fd)), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (mfd < 0) return mfd;
    this.#mounts.set(mountId, { fd: mfd, refs: 1 });
    return 0;
  }

  /** Drops a reference taken by `acquireMount`; the last one closes the descriptor. */
  releaseMount(mountId: number): void {
    const m = this.#mounts.get(mountId);
    if (m === undefined || --m.refs > 0) return;
    this.#mounts.delete(mountId);
    closeQuietly(m.fd);
  }

  /** Opens `handle` (from `handleOf`) on mount `mountId` as O_PATH. Returns the fd or -errno. */
  open(handle: string, mountId: number): number {
    const m = this.#mounts.get(mountId);
    if (m === undefined || !this.#active) return -Errno.ESTALE;
    const n = handle.length;
    if (n > this.#open.length) return -Errno.EINVAL;
    for (let i = 0; i < n; i++) this.#open[i] = handle.charCodeAt(i);
    return openByHandleAtRaw(m.fd, this.#open.subarray(0, n), O_PATH | O_CLOEXEC);
  }

  /** Closes every mount descriptor; handles are off afterwards. */
  close(): void {
    for (const m of this.#mounts.values()) closeQuietly(m.fd);
    this.#mounts.clear();
    this.#active = false;
  }
}

const EMPTY = new Uint8Array(new ArrayBuffer(1));
