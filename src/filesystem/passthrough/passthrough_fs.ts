/**
 * `PassthroughFs`: serves a host directory. Every operation is relative to a descriptor of the
 * node it names (`*at` calls with O_PATH descriptors, never a path from the share's root), a
 * symlink is never followed by the daemon, and ".." never leaves the share.
 *
 * Files are reopened from their O_PATH descriptor through a long-lived descriptor of
 * /proc/self/fd (`openat(procfd, "N", flags)`), which reaches the very file the guest named and
 * refuses a symlink (ELOOP). OPEN of anything but a regular file or a directory is refused, so a
 * device node or a FIFO in the share is never opened by the daemon.
 *
 * @module
 */
import {
  AT_EACCESS,
  AT_EMPTY_PATH,
  AT_FDCWD,
  AT_REMOVEDIR,
  AT_SYMLINK_FOLLOW,
  AT_SYMLINK_NOFOLLOW,
  closeQuietly,
  closeRaw,
  copyFileRangeRaw,
  cString,
  dupRaw,
  Errno,
  ErrnoError,
  faccessatRaw,
  fallocateRaw,
  fchmodatRaw,
  fchmodRaw,
  fstatfsRaw,
  fsyncRaw,
  getFlRaw,
  linkatRaw,
  lseekRaw,
  mkdiratRaw,
  mknodatRaw,
  O_APPEND,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECTORY,
  O_EXCL,
  O_NOFOLLOW,
  O_NONBLOCK,
  O_PATH,
  O_RDONLY,
  O_RDWR,
  O_TMPFILE,
  O_TRUNC,
  openat,
  openatRaw,
  readlinkatRaw,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  RENAME_WHITEOUT,
  renameat2Raw,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_ISGID,
  S_ISUID,
  S_IXGRP,
  setFlRaw,
  STATFS,
  statxAtRaw,
  symlinkatRaw,
  syncfsRaw,
  unlinkatRaw,
  W_OK,
} from "../../ffi/mod.ts";
import type {
  Attr,
  AttrReply,
  Context,
  CreateReply,
  DirentPlusSink,
  DirentSink,
  Entry,
  FileSystem,
  MappableFile,
  OpenReply,
  ReadDestination,
  SetattrIn,
  StatFs,
  WriteSource,
} from "../filesystem.ts";
import { type CacheMode, cacheTimeout, hostDev, Stat } from "./attr.ts";
import { insideShare } from "./confinement.ts";
import { Credentials } from "./credentials.ts";
import { DirReader } from "./dir_reader.ts";
import { type Handle, HandleTable } from "./handle_table.ts";
import type { Logger } from "../../log.ts";
import { type Inode, InodeStore } from "./inode_store.ts";
import { InodeNumbers } from "./inode_numbers.ts";
import { dots, NAME_MAX, NameBuffer, TARGET_MAX } from "./names.ts";
import { checkOpenable, OpenPolicy } from "./open_flags.ts";
import { AttrSetter } from "./setattr.ts";
import {
  FATTR_FH,
  FATTR_KILL_SUIDGID,
  FATTR_MODE,
  FUSE_ATTR_DAX,
  FUSE_ATTR_SUBMOUNT,
  FUSE_DAX_SHIFT,
  FUSE_HANDLE_KILLPRIV_V2,
  FUSE_OPEN_KILL_SUIDGID,
  FUSE_SUBMOUNTS,
  FUSE_WRITE_CACHE,
  FUSE_WRITE_KILL_SUIDGID,
} from "../../wire/fuse.ts";
import { Xattrs } from "./xattr.ts";

export { type CacheMode, cacheTimeout } from "./attr.ts";
export { INODE_FILE_HANDLES, type InodeFileHandles } from "./file_handles.ts";

/**
 * LOOKUP of a name that does not exist, the most common error a guest causes (every search of a
 * path list): one error object, thrown again and again, costs no stack trace or message.
 */
const LOOKUP_ENOENT = new ErrnoError(Errno.ENOENT, "statx", "(lookup of a missing name)");

/**
 * How a host directory is served: one type from the command line (`src/cli/options.ts`) through
 * `serve()` and the device's Worker to this file system. Read-only is not among them: it is the
 * `ReadOnlyFs` layer around this one.
 */
export interface PassthroughOptions {
  /** The host directory to share. */
  sharedDir: string;
  /** Cache mode (default auto). */
  cache?: CacheMode;
  /** cache=auto's entry and attribute timeout, in seconds (default 1). */
  timeout?: number;
  /** Serve extended attributes (default false: the xattr calls answer ENOSYS). */
  xattr?: boolean;
  /** Honour the guest's O_DIRECT on the host (default false: dropped). */
  allowDirectIo?: boolean;
  /** Honour the guest's O_NOATIME on the host (default false: dropped). */
  preserveNoatime?: boolean;
  /**
   * Accept the guest's writeback cache when it offers it (default false). Files are then opened
   * read-write even when the guest asks write-only, and O_APPEND is left to the guest.
   */
  writeback?: boolean;
  /** Offer READDIRPLUS (default: on unless cache is none, as virtiofsd). */
  readdirplus?: boolean;
  /**
   * Grant FUSE_HANDLE_KILLPRIV_V2 when the guest offers it: the guest then leaves clearing
   * setuid/setgid on write, truncate and O_TRUNC open to us, instead of sending a GETXATTR of
   * security.capability before every write. Default true, as C virtiofsd 7.2 (Rust virtiofsd
   * defaults to off). A WRITE or SETATTR carrying the kill flag is honoured either way.
   */
  killprivV2?: boolean;
  /**
   * Announce submounts (grant FUSE_SUBMOUNTS): default true, as Rust virtiofsd
   * (`--announce-submounts`, `--no-announce-submounts`). A directory that is the root of another
   * host mount below the share is then marked FUSE_ATTR_SUBMOUNT, and the guest gives it a
   * superblock and device number of its own. Without submounts, files of other host devices get
   * mapped inode numbers (see `inode_numbers.ts`).
   */
  announceSubmounts?: boolean;
  /**
   * Let a guest that offers FUSE_DIRECT_IO_ALLOW_MMAP (Linux 6.6+) mmap(MAP_SHARED) files opened
   * with FOPEN_DIRECT_IO (cache=none); default false.
   */
  allowMmap?: boolean;
  /**
   * Inodes keep file handles and a bounded cache of descriptors (`prefer`, the default, when
   * the host allows it), a descriptor each (`never`), or handles or nothing (`mandatory`: the
   * constructor throws when they cannot be used). virtiofsd's `--inode-file-handles`.
   */
  inodeFileHandles?: "never" | "prefer" | "mandatory";
  /**
   * With file handles: how many inode descriptors stay open (default min(RLIMIT_NOFILE soft
   * limit / 2, 65536)).
   */
  inodeFdCache?: number;
}

/** `PassthroughOptions`, and where the constructor says whether file handles are used. */
export interface PassthroughConfig extends PassthroughOptions {
  /** Default: nowhere. */
  log?: Logger;
}

const RENAME_FLAGS = RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT;
const INT64_MAX = (1n << 63n) - 1n;
/** A guest DAX range (2 MiB). */
const DAX_RANGE = 2 ** FUSE_DAX_SHIFT;
const EMPTY = new Uint8Array(new ArrayBuffer(1));
const DOT = cString(".");
const DOTDOT = cString("..");

function fail(r: number, call: string): void {
  if (r < 0) throw new ErrnoError(-r, call);
}

/** A host directory served as a FileSystem. */
export class PassthroughFs implements FileSystem {
  readonly #inodes: InodeStore;
  readonly #handles = new HandleTable();
  /** An O_PATH descriptor of /proc/self/fd, to reopen O_PATH descriptors. */
  readonly #procFd: number;
  readonly #xattr: boolean;
  readonly #policy: OpenPolicy;
  /** INIT flags never granted, whatever the guest offers (the configuration's switches). */
  readonly #withheld: bigint;
  /** Whether submounts are announced (FUSE_SUBMOUNTS is granted when the guest offers it). */
  readonly #announceSubmounts: boolean;
  /**
   * Submounts are in effect this session: announced, and FUSE_SUBMOUNTS granted at INIT. Mount
   * roots below the share are then marked FUSE_ATTR_SUBMOUNT; otherwise files of other host
   * devices get mapped inode numbers.
   */
  #submounts = false;
  readonly #numbers: InodeNumbers;
  readonly #log: PassthroughConfig["log"];
  readonly #setter: AttrSetter;
  readonly #creds = new Credentials();
  readonly #dir = new DirReader();
  readonly #xattrs: Xattrs;
  readonly #stat = new Stat();
  readonly #statfs = new Uint8Array(new ArrayBuffer(STATFS.size));
  readonly #name = new NameBuffer(NAME_MAX);
  readonly #newName = new NameBuffer(NAME_MAX);
  readonly #target = new NameBuffer(TARGET_MAX);
  readonly #link = new Uint8Array(new ArrayBuffer(TARGET_MAX + 2));
  readonly #entry: Entry;
  readonly #attrReply: AttrReply;
  readonly #open: OpenReply = { fh: 0n, openFlags: 0 };
  readonly #create: CreateReply;
  /** The entry readdirplus gives "." and "..": nodeid 0, only `attr.ino` counts. */
  readonly #dotEntry: Entry;

  /** Opens the shared directory (throws ErrnoError naming it if it cannot). */
  constructor(config: PassthroughConfig) {
    const fd = openat(AT_FDCWD, cString(config.sharedDir), O_PATH | O_DIRECTORY | O_CLOEXEC);
    try {
      const r = this.#stat.statRaw(fd);
      if (r < 0) throw new ErrnoError(-r, "statx", config.sharedDir);
      this.#procFd = openat(AT_FDCWD, cString("/proc/self/fd"), O_PATH | O_DIRECTORY | O_CLOEXEC);
    } catch (err) {
      closeQuietly(fd);
      throw err;
    }
    try {
      this.#inodes = new InodeStore(fd, this.#stat.sx, {
        procFd: this.#procFd,
        fileHandles: config.inodeFileHandles ?? "prefer",
        ...(config.inodeFdCache !== undefined ? { fdCache: config.inodeFdCache } : {}),
      });
    } catch (err) {
      closeQuietly(fd);
      closeQuietly(this.#procFd);
      throw err;
    }
    const fh = this.#inodes.fileHandles;
    if (fh.active) {
      config.log?.info(
        `inodes keep file handles; at most ${this.#inodes.stats.cacheLimit} of their ` +
          "descriptors stay open",
      );
    } else if (fh.mode !== "never") {
      config.log?.warn(`file handles unusable (${fh.reason}): one descriptor per inode`);
    }
    const cache = config.cache ?? "auto";
    const timeout = cacheTimeout(cache, config.timeout);
    this.#xattr = config.xattr ?? false;
    this.#policy = new OpenPolicy({
      cache,
      allowDirectIo: config.allowDirectIo ?? false,
      preserveNoatime: config.preserveNoatime ?? false,
      writeback: config.writeback ?? false,
      readdirplus: config.readdirplus ?? cache !== "none",
      allowMmap: config.allowMmap ?? false,
    });
    this.#announceSubmounts = config.announceSubmounts ?? true;
    this.#log = config.log;
    this.#numbers = new InodeNumbers(config.log);
    this.#withheld = (config.killprivV2 === false ? FUSE_HANDLE_KILLPRIV_V2 : 0n) |
      (this.#announceSubmounts ? 0n : FUSE_SUBMOUNTS);
    this.#setter = new AttrSetter(this.#procFd);
    this.#xattrs = new Xattrs(this.#procFd);
    const attr = this.#stat.attr;
    this.#entry = { nodeid: 0n, generation: 0n, attr, entryTimeout: timeout, attrTimeout: timeout };
    this.#attrReply = { attr, timeout };
    this.#create = { entry: this.#entry, open: this.#open };
    this.#dotEntry = {
      nodeid: 0n,
      generation: 0n,
      attr: { ...attr },
      entryTimeout: 0,
      attrTimeout: 0,
    };
  }

  /** Inodes the guest holds (the root included). */
  get inodeCount(): number {
    return this.#inodes.size;
  }

  /** Open file and directory handles. */
  get handleCount(): number {
    return this.#handles.size;
  }

  /**
   * The descriptors inodes hold: whether they keep file handles (`reason`: why not, when asked
   * for), how many of their descriptors are open (`cached`, at most `cacheLimit`), inodes that
   * keep a descriptor each (`pinned`, the root among them), mount descriptors, and how many
   * descriptors were reopened from handles and closed to make room after EMFILE, and how many
   * handles were taken (when a descriptor was first closed), so far.
   */
  get inodeFds(): {
    fileHandles: boolean;
    reason: string;
    cached: number;
    cacheLimit: number;
    pinned: number;
    mounts: number;
    reopened: number;
    shed: number;
    handlesTaken: number;
  } {
    const s = this.#inodes.stats;
    const h = this.#inodes.fileHandles;
    return {
      fileHandles: h.active,
      reason: h.reason,
      cached: s.cached,
      cacheLimit: s.cacheLimit,
      pinned: s.pinned,
      mounts: s.mounts,
      reopened: s.reopened,
      shed: s.shed,
      handlesTaken: s.handlesTaken,
    };
  }

  // ---------------------------------------------------------------- helpers

  #inode(nodeid: bigint): Inode {
    const inode = this.#inodes.get(nodeid);
    if (inode === undefined) throw new ErrnoError(Errno.ENOENT, "nodeid", `${nodeid} is unknown`);
    return inode;
  }

  /** The handle `fh` of node `nodeid`, of the kind asked (EBADF otherwise). */
  #handle(fh: bigint, nodeid: bigint, dir: boolean): Handle {
    const h = this.#handles.get(fh);
    if (h === undefined || h.nodeid !== nodeid || h.dir !== dir) {
      throw new ErrnoError(Errno.EBADF, "fh", `${fh} is not an open ${dir ? "directory" : "file"}`);
    }
    return h;
  }

  /** Reopens an O_PATH descriptor (or any descriptor) with `flags`. Returns the fd or -errno. */
  #reopenRaw(procName: Uint8Array, flags: number): number {
    return this.#inodes.withFds(() => openatRaw(this.#procFd, procName, flags | O_CLOEXEC));
  }

  /**
   * The entry of an O_PATH descriptor just opened: the known inode (and `fd` is closed) or a new
   * one owning `fd`, +1 lookup. Closes `fd` on failure. `dir`: the directory it was looked up
   * in by name (see `#entryOf`).
   */
  #enter(fd: number, dir?: Inode): Entry {
    const r = this.#stat.statRaw(fd);
    if (r < 0) {
      closeQuietly(fd);
      throw new ErrnoError(-r, "statx");
    }
    return this.#entryOf(this.#inodes.lookedUp(fd, this.#stat.sx), dir);
  }

  /**
   * The entry of `inode`, whose statx the buffer holds. When it was looked up by name in `dir`
   * and lies on another device or mount than `dir`, it is the root of a host mount below the
   * share, and is marked so (for good: GETATTR then knows it too).
   */
  #entryOf(inode: Inode, dir: Inode | undefined): Entry {
    if (
      dir !== undefined && !inode.mountRoot &&
      (inode.devMajor !== dir.devMajor || inode.devMinor !== dir.devMinor ||
        inode.mntId !== dir.mntId)
    ) {
      this.#inodes.markMountRoot(inode);
    }
    this.#stat.fill();
    this.#present(inode);
    this.#entry.nodeid = inode.nodeid;
    return this.#entry;
  }

  /**
   * Makes the attributes `fill()` left (of `inode`) what the guest sees: FUSE_ATTR_SUBMOUNT on
   * a directory that is a mount root when submounts are in effect, the inode number mapped
   * where the host's could collide with another file system's in the guest (`inode_numbers.ts`),
   * and FUSE_ATTR_DAX on a regular file its DAX window can serve (the session passes it on only
   * to a guest granted FUSE_HAS_INODE_DAX).
   *
   * The window serves a file whole only if its size is a non-zero multiple of the guest's 2 MiB
   * range: the front end maps nothing past a file's end, and a guest reuses a range it set up
   * without asking again, so a file's partial last range cannot be served (FUSE_READ/WRITE serve
   * every size exactly). The decision is made once, at the node's first attributes, and kept
   * while the guest knows the node: a Linux guest evicts an inode whose FUSE_ATTR_DAX changed at
   * its last reference, and when that is the RELEASE reply's iput with ranges still mapped, its
   * REMOVEMAPPING waits on the reply queue it is itself blocking (observed with Linux 6.1: the
   * mount hangs). A DAX file that stops being whole ranges keeps its flag; its partial last range
   * is refused (EIO) until the guest forgets the node and looks it up again.
   */
  #present(inode: Inode): Attr {
    const a = this.#stat.attr;
    a.flags = 0;
    if (inode.type === S_IFREG) {
      inode.dax ??= a.size > 0 && a.size % DAX_RANGE === 0 && this.#writable(inode);
      if (inode.dax) a.flags = FUSE_ATTR_DAX;
    }
    if (this.#submounts) {
      if (!inode.mountRoot) this.#numbers.unmapped(a.ino);
      else if (inode.type === S_IFDIR) a.flags = FUSE_ATTR_SUBMOUNT;
      else a.ino = this.#numbers.mapped(inode.devMajor, inode.devMinor, a.ino);
    } else if (this.#sameDevAsRoot(inode)) {
      this.#numbers.unmapped(a.ino);
    } else {
      a.ino = this.#numbers.mapped(inode.devMajor, inode.devMinor, a.ino);
    }
    return a;
  }

  /**
   * Whether the daemon could open the file read-write, as a mapping needs (QEMU maps every range
   * read-write): not on a read-only mount, not immutable, writable for the daemon's ids. A file
   * the guest would read through its window but the daemon cannot map could not be read at all.
   */
  #writable(inode: Inode): boolean {
    return faccessatRaw(this.#procFd, inode.procName, W_OK, AT_EACCESS) === 0;
  }

  #sameDevAsRoot(inode: Inode): boolean {
    const root = this.#inodes.root;
    return inode.devMajor === root.devMajor && inode.devMinor === root.devMinor;
  }

  /**
   * How READDIR's `d_ino` of the entries of directory `dir` are mapped, as its files' numbers
   * are (submounts not in effect, the directory on another device than the share's); undefined:
   * they are the host's.
   */
  #direntInos(dir: Inode | undefined): ((ino: bigint) => bigint) | undefined {
    if (this.#submounts || dir === undefined || this.#sameDevAsRoot(dir)) return undefined;
    return this.#numbers.mapper(dir.devMajor, dir.devMinor);
  }

  /**
   * Looks up `cname` (NUL-terminated, neither "." nor "..") in directory `dir`, whose descriptor
   * `dirfd` is.
   * A statx of the name first: a file the store knows and holds a descriptor of needs nothing
   * more (one syscall, where opening the name, statx of the descriptor and closing it take
   * three; a known file whose descriptor was closed, the name's handle besides), and a name
   * that is absent fails at once; anything else is opened O_PATH and the descriptor's own statx
   * decides (the file may have changed between the two).
   */
  #lookupAt(dir: Inode, dirfd: number, cname: Uint8Array): Entry {
    const r = statxAtRaw(dirfd, cname, this.#stat.sx);
    if (r === -Errno.ENOENT) throw LOOKUP_ENOENT;
    if (r === 0) {
      const known = this.#inodes.lookedUpByName(this.#stat.sx, dirfd, cname);
      if (known !== undefined) return this.#entryOf(known, dir);
    }
    const fd = this.#inodes.withFds(() => openatRaw(dirfd, cname, O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (fd < 0) throw new ErrnoError(-fd, "openat");
    return this.#enter(fd, dir);
  }

  /**
   * An O_PATH descriptor of the parent of `dir`, inside the share: the root's parent is the
   * root; another's must climb to the root (else EACCES: it was moved out on the host).
   */
  #parentOf(dir: Inode): number {
    const root = this.#inodes.root;
    const dirfd = dir.fd;
    const parent = this.#inodes.withFds(() =>
      openatRaw(dirfd, dir === root ? DOT : DOTDOT, O_PATH | O_CLOEXEC)
    );
    if (parent === -Errno.ENOENT && this.#stat.statRaw(dirfd) === 0 && this.#stat.sx.nlink > 0) {
      // Not deleted, yet no parent: in the sandbox, moved out of the share's mount (Linux says
      // ENOENT for a path that no longer connects to the mount's root).
      throw new ErrnoError(Errno.EACCES, "lookup", "'..' leads out of the shared directory");
    }
    if (parent < 0) throw new ErrnoError(-parent, "openat");
    if (dir === root) return parent;
    let inside: boolean;
    try {
      inside = insideShare(parent, root.key, this.#stat);
    } catch (err) {
      closeQuietly(parent);
      throw err;
    }
    if (!inside) {
      closeQuietly(parent);
      throw new ErrnoError(Errno.EACCES, "lookup", "'..' leads out of the shared directory");
    }
    return parent;
  }

  #fillOpen(h: Handle, openFlags: number): OpenReply {
    this.#open.fh = h.fh;
    this.#open.openFlags = openFlags;
    return this.#open;
  }

  // ---------------------------------------------------------------- session

  /**
   * Takes the writeback cache only when configured; READDIRPLUS per the configuration;
   * HANDLE_KILLPRIV_V2 only with `killprivV2`; SUBMOUNTS unless `announceSubmounts` is false.
   */
  init(capable: bigint): bigint {
    const granted = this.#policy.init(capable) & ~this.#withheld;
    this.#submounts = (granted & FUSE_SUBMOUNTS) !== 0n;
    if (this.#announceSubmounts && !this.#submounts) {
      this.#log?.warn(
        "the guest did not offer FUSE_SUBMOUNTS: mounts below the shared directory are not " +
          "announced, and files of other host devices get mapped inode numbers",
      );
    }
    return granted;
  }

  /** Closes every handle and forgets every node but the root. */
  destroy(): void {
    this.#handles.clear();
    this.#inodes.clear();
    this.#policy.writeback = false;
    this.#submounts = false;
  }

  // ---------------------------------------------------------------- nodes

  lookup(_ctx: Context, parent: bigint, name: Uint8Array): Entry {
    const dir = this.#inode(parent);
    const cname = this.#name.component(name, "lookup", 0);
    let entry: Entry;
    switch (dots(name)) {
      case 1: {
        const dirfd = dir.fd;
        const fd = this.#inodes.withFds(() => openatRaw(dirfd, DOT, O_PATH | O_CLOEXEC));
        if (fd < 0) throw new ErrnoError(-fd, "openat");
        entry = this.#enter(fd);
        break;
      }
      case 2:
        entry = this.#enter(this.#parentOf(dir));
        break;
      default:
        return this.#lookupAt(dir, dir.fd, cname);
    }
    // "." and ".." (the guest asks them when it exports the mount over NFS) name a directory
    // the guest holds already, maybe as a submount's root, which it must not mount again.
    entry.attr.flags = 0;
    return entry;
  }

  forget(_ctx: Context, nodeid: bigint, nlookup: bigint): void {
    this.#inodes.forget(nodeid, nlookup);
  }

  getattr(_ctx: Context, nodeid: bigint, _fh: bigint | undefined): AttrReply {
    const inode = this.#inode(nodeid);
    this.#stat.of(inode.fd);
    this.#present(inode);
    return this.#attrReply;
  }

  setattr(_ctx: Context, nodeid: bigint, set: Readonly<SetattrIn>): AttrReply {
    const inode = this.#inode(nodeid);
    const h = (set.valid & FATTR_FH) !== 0 ? this.#handle(set.fh, nodeid, false) : undefined;
    // Applied with the daemon's credentials, as both virtiofsd do: the permission checks are the
    // guest kernel's (virtio-fs mounts with default_permissions), and that kernel itself sends
    // SETATTRs as an unprivileged caller to clear setuid/setgid when such a caller writes or
    // truncates, which a check as the caller would refuse.
    this.#setter.apply(inode, h?.fd, set);
    if ((set.valid & FATTR_KILL_SUIDGID) !== 0 && (set.valid & FATTR_MODE) === 0) {
      // HANDLE_KILLPRIV_V2: a truncate by a caller without CAP_FSETID. (The host removed any
      // security.capability itself when it truncated.)
      this.#killSuidgid(h?.fd ?? inode.fd, h === undefined ? inode.procName : undefined);
    }
    this.#stat.of(inode.fd);
    this.#present(inode);
    return this.#attrReply;
  }

  readlink(_ctx: Context, nodeid: bigint): Uint8Array {
    const inode = this.#inode(nodeid);
    if (inode.type !== S_IFLNK) throw new ErrnoError(Errno.EINVAL, "readlink", "not a symlink");
    const n = readlinkatRaw(inode.fd, EMPTY, this.#link);
    if (n < 0) throw new ErrnoError(-n, "readlinkat");
    if (n > TARGET_MAX) throw new ErrnoError(Errno.ENAMETOOLONG, "readlinkat");
    return this.#link.subarray(0, n);
  }

  symlink(ctx: Context, parent: bigint, name: Uint8Array, target: Uint8Array): Entry {
    const dir = this.#inode(parent);
    const cname = this.#name.component(name, "symlink", Errno.EEXIST);
    const ctarget = this.#target.bytes(target, "symlink", Errno.ENAMETOOLONG);
    // Descriptors before the caller's fsuid, which drops CAP_DAC_READ_SEARCH (file handles).
    const dirfd = dir.fd;
    this.#creds.enter(ctx, 0o777, 0);
    let r: number;
    try {
      r = symlinkatRaw(ctarget, dirfd, cname);
    } finally {
      this.#creds.leave();
    }
    fail(r, "symlinkat");
    return this.#lookupAt(dir, dirfd, cname);
  }

  mknod(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    mode: number,
    rdev: number,
    umask: number,
  ): Entry {
    const dir = this.#inode(parent);
    const cname = this.#name.component(name, "mknod", Errno.EEXIST);
    const dirfd = dir.fd;
    const m = this.#creds.enter(ctx, mode, umask);
    let r: number;
    try {
      r = mknodatRaw(dirfd, cname, (mode & S_IFMT) | m, hostDev(rdev));
    } finally {
      this.#creds.leave();
    }
    fail(r, "mknodat");
    return this.#lookupAt(dir, dirfd, cname);
  }

  mkdir(ctx: Context, parent: bigint, name: Uint8Array, mode: number, umask: number): Entry {
    const dir = this.#inode(parent);
    const cname = this.#name.component(name, "mkdir", Errno.EEXIST);
    const dirfd = dir.fd;
    const m = this.#creds.enter(ctx, mode, umask);
    let r: number;
    try {
      r = mkdiratRaw(dirfd, cname, m);
    } finally {
      this.#creds.leave();
    }
    fail(r, "mkdirat");
    return this.#lookupAt(dir, dirfd, cname);
  }

  /**
   * EBUSY if name `cname` in `dirfd` is a DAX file the guest has open: unlinking it (or renaming
   * over it) would hang a Linux 6.1 guest when it closes it after reading through its window (the
   * RELEASE reply evicts the inode, whose REMOVEMAPPING then waits in the reply worker for a reply
   * only that worker reads). Closed, it can be removed: its eviction then runs in the remover.
   */
  #refuseOpenDax(dirfd: number, cname: Uint8Array, what: string): void {
    // No statx on the common path: nothing open, nothing to refuse.
    if (this.#handles.size === 0) return;
    if (statxAtRaw(dirfd, cname, this.#stat.sx) !== 0) return;
    const node = this.#inodes.known(this.#stat.sx);
    if (node?.dax === true && this.#handles.isOpen(node.nodeid)) {
      throw new ErrnoError(Errno.EBUSY, what, "a DAX file the guest has open");
    }
  }

  unlink(_ctx: Context, parent: bigint, name: Uint8Array): void {
    const dir = this.#inode(parent);
    const cname = this.#name.component(name, "unlink", Errno.EISDIR);
    this.#refuseOpenDax(dir.fd, cname, "unlinkat");
    fail(unlinkatRaw(dir.fd, cname, 0), "unlinkat");
  }

  rmdir(_ctx: Context, parent: bigint, name: Uint8Array): void {
    const dir = this.#inode(parent);
    const d = dots(name);
    if (d !== 0) throw new ErrnoError(d === 1 ? Errno.EINVAL : Errno.ENOTEMPTY, "rmdir");
    const cname = this.#name.component(name, "rmdir", 0);
    fail(unlinkatRaw(dir.fd, cname, AT_REMOVEDIR), "unlinkat");
  }

  rename(
    _ctx: Context,
    parent: bigint,
    name: Uint8Array,
    newParent: bigint,
    newName: Uint8Array,
    flags: number,
  ): void {
    const dir = this.#inode(parent);
    const newDir = this.#inode(newParent);
    if ((flags & ~RENAME_FLAGS) !== 0) throw new ErrnoError(Errno.EINVAL, "renameat2");
    const cname = this.#name.component(name, "rename", Errno.EBUSY);
    const cnew = this.#newName.component(
      newName,
      "rename",
      (flags & RENAME_NOREPLACE) !== 0 ? Errno.EEXIST : Errno.EBUSY,
    );
    // Renaming over a file unlinks it (an exchange keeps both; NOREPLACE replaces nothing).
    if ((flags & (RENAME_EXCHANGE | RENAME_NOREPLACE)) === 0) {
      this.#refuseOpenDax(newDir.fd, cnew, "renameat2");
    }
    fail(renameat2Raw(dir.fd, cname, newDir.fd, cnew, flags), "renameat2");
  }

  link(_ctx: Context, nodeid: bigint, newParent: bigint, newName: Uint8Array): Entry {
    const inode = this.#inode(nodeid);
    const dir = this.#inode(newParent);
    const cnew = this.#newName.component(newName, "link", Errno.EEXIST);
    let r = linkatRaw(inode.fd, EMPTY, dir.fd, cnew, AT_EMPTY_PATH);
    if (r === -Errno.ENOENT) {
      // Without CAP_DAC_READ_SEARCH, AT_EMPTY_PATH is refused: go through /proc/self/fd.
      r = linkatRaw(this.#procFd, inode.procName, dir.fd, cnew, AT_SYMLINK_FOLLOW);
    }
    fail(r, "linkat");
    this.#stat.of(inode.fd);
    this.#present(inode);
    this.#inodes.ref(inode);
    this.#entry.nodeid = inode.nodeid;
    return this.#entry;
  }

  access(ctx: Context, nodeid: bigint, mask: number): void {
    const inode = this.#inode(nodeid);
    const fd = inode.fd;
    this.#creds.enterForCheck(ctx);
    let r: number;
    try {
      r = faccessatRaw(fd, EMPTY, mask, AT_EMPTY_PATH | AT_EACCESS | AT_SYMLINK_NOFOLLOW);
    } finally {
      this.#creds.leave();
    }
    fail(r, "faccessat");
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

  /**
   * syncfs(2) of the host file system of `nodeid`, the root of one of the guest's superblocks:
   * the share's root, or, with submounts, a mount root below it. When the share is one guest
   * file system (submounts not in effect), SYNCFS of the root also syncs every other host file
   * system the guest knows files of. The first failure is thrown, after every file system was
   * tried.
   */
  syncfs(_ctx: Context, nodeid: bigint): void {
    let inode = this.#inode(nodeid);
    if (inode.type !== S_IFREG && inode.type !== S_IFDIR) inode = this.#inodes.root;
    let err = this.#syncfsOf(inode);
    if (inode === this.#inodes.root && !this.#submounts) {
      for (const other of this.#inodes.otherDevices()) {
        let r: ErrnoError | undefined;
        try {
          r = this.#syncfsOf(other);
        } catch (e) {
          // ESTALE: deleted on the host since; its file system is reached through another file.
          if (!(e instanceof ErrnoError)) throw e;
        }
        err ??= r;
      }
    }
    if (err !== undefined) throw err;
  }

  /** syncfs(2) of `inode`'s file system: undefined, or the error. */
  #syncfsOf(inode: Inode): ErrnoError | undefined {
    const fd = this.#reopenRaw(inode.procName, O_RDONLY | O_NONBLOCK);
    if (fd < 0) return new ErrnoError(-fd, "open");
    const r = syncfsRaw(fd);
    closeQuietly(fd);
    return r < 0 ? new ErrnoError(-r, "syncfs") : undefined;
  }

  // ---------------------------------------------------------------- files

  open(_ctx: Context, nodeid: bigint, flags: number, openFlags: number): OpenReply {
    const inode = this.#inode(nodeid);
    checkOpenable(inode.type, true, "open");
    const fd = this.#reopenRaw(inode.procName, this.#policy.hostFlags(flags));
    if (fd < 0) throw new ErrnoError(-fd, "open");
    if ((openFlags & FUSE_OPEN_KILL_SUIDGID) !== 0 && (flags & O_TRUNC) !== 0) {
      try {
        this.#killSuidgid(fd);
      } catch (e) {
        closeQuietly(fd);
        throw e;
      }
    }
    return this.#fillOpen(this.#handles.add(nodeid, fd, false), this.#policy.fileReplyFlags);
  }

  /**
   * DAX: the file reopened O_RDWR for the front end to map (it maps every range read-write), and
   * its size. A read-only file, a running executable (ETXTBSY) or anything but a regular file
   * gets the errno its open would.
   */
  mappable(_ctx: Context, nodeid: bigint, fh: bigint | undefined): MappableFile {
    const inode = this.#inode(nodeid);
    if (fh !== undefined) this.#handle(fh, nodeid, false);
    checkOpenable(inode.type, false, "setupmapping");
    const fd = this.#reopenRaw(inode.procName, O_RDWR);
    if (fd < 0) throw new ErrnoError(-fd, "open", "for a mapping");
    const r = this.#stat.statRaw(fd);
    if (r < 0) {
      closeQuietly(fd);
      throw new ErrnoError(-r, "statx");
    }
    if (this.#stat.sx.nlink === 0) {
      // Deleted (on the host): a Linux 6.1 guest evicting it from a RELEASE reply with ranges
      // mapped would hang; reads of it go wrong rather than the mount.
      closeQuietly(fd);
      throw new ErrnoError(Errno.EIO, "setupmapping", "the file was deleted");
    }
    return { fd, size: this.#stat.sx.size };
  }

  create(
    ctx: Context,
    parent: bigint,
    name: Uint8Array,
    mode: number,
    flags: number,
    umask: number,
  ): CreateReply {
    const dir = this.#inode(parent);
    const cname = this.#name.component(name, "create", Errno.EISDIR);
    const hostFlags = this.#policy.hostFlags(flags);
    const dirfd = dir.fd;
    const how = hostFlags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    const m = this.#creds.enter(ctx, mode, umask);
    let fd: number;
    try {
      fd = this.#inodes.withFds(() => openatRaw(dirfd, cname, how, m));
      if (fd === -Errno.EEXIST && (flags & O_EXCL) === 0) {
        fd = this.#openExisting(dirfd, cname, flags);
      }
    } finally {
      this.#creds.leave();
    }
    if (fd < 0) throw new ErrnoError(-fd, "openat");
    return this.#created(fd, this.#policy.fileReplyFlags);
  }

  /**
   * CREATE of a name that exists, without O_EXCL: opens it as OPEN would (a regular file only;
   * the name is never followed). Returns the fd or -errno.
   */
  #openExisting(dirfd: number, cname: Uint8Array, flags: number): number {
    const pfd = this.#inodes.withFds(() =>
      openatRaw(dirfd, cname, O_PATH | O_NOFOLLOW | O_CLOEXEC)
    );
    if (pfd < 0) return pfd;
    try {
      const r = this.#stat.statRaw(pfd);
      if (r < 0) return r;
      switch (this.#stat.sx.mode & S_IFMT) {
        case S_IFREG:
          break;
        case S_IFDIR:
          return -Errno.EISDIR;
        case S_IFLNK:
          return -Errno.ELOOP;
        default:
          return -Errno.EACCES;
      }
      return this.#reopenRaw(cString(String(pfd)), this.#policy.hostFlags(flags));
    } finally {
      closeQuietly(pfd);
    }
  }

  tmpfile(ctx: Context, parent: bigint, mode: number, flags: number, umask: number): CreateReply {
    const dir = this.#inode(parent);
    // O_EXCL: the file may never be linked.
    const hostFlags = (this.#policy.hostFlags(flags) & ~O_TRUNC) | (flags & O_EXCL);
    const dirfd = dir.fd;
    const m = this.#creds.enter(ctx, mode, umask);
    let fd: number;
    try {
      fd = this.#inodes.withFds(() => openatRaw(dirfd, DOT, hostFlags | O_TMPFILE | O_CLOEXEC, m));
    } finally {
      this.#creds.leave();
    }
    if (fd < 0) throw new ErrnoError(-fd, "openat");
    return this.#created(fd, this.#policy.fileReplyFlags);
  }

  /** The reply to CREATE/TMPFILE for `fd`, a newly opened file: its node (+1) and handle. */
  #created(fd: number, openFlags: number): CreateReply {
    let entry: Entry;
    try {
      const pfd = this.#reopenRaw(cString(String(fd)), O_PATH);
      if (pfd < 0) throw new ErrnoError(-pfd, "open");
      entry = this.#enter(pfd);
    } catch (err) {
      closeQuietly(fd);
      throw err;
    }
    this.#fillOpen(this.#handles.add(entry.nodeid, fd, false), openFlags);
    return this.#create;
  }

  read(
    _ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    size: number,
    dst: ReadDestination,
  ): number {
    const h = this.#handle(fh, nodeid, false);
    if (offset > INT64_MAX) throw new ErrnoError(Errno.EINVAL, "preadv");
    const n = dst.preadv(h.fd, offset, size);
    if (n < 0) throw new ErrnoError(-n, "preadv");
    return n;
  }

  write(
    _ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    src: WriteSource,
    writeFlags: number,
  ): number {
    const h = this.#handle(fh, nodeid, false);
    if (offset > INT64_MAX) throw new ErrnoError(Errno.EINVAL, "pwritev");
    let n: number;
    const fl = (writeFlags & FUSE_WRITE_CACHE) !== 0 ? getFlRaw(h.fd) : 0;
    if (fl > 0 && (fl & O_APPEND) !== 0) {
      // A write the guest kernel positioned itself (page cache or mmap write-back) must land at
      // its offset, but pwritev on an O_APPEND descriptor appends: drop O_APPEND around it.
      setFlRaw(h.fd, fl & ~O_APPEND);
      n = src.pwritev(h.fd, offset);
      setFlRaw(h.fd, fl);
    } else {
      n = src.pwritev(h.fd, offset);
    }
    if (n < 0) throw new ErrnoError(-n, "pwritev");
    if ((writeFlags & FUSE_WRITE_KILL_SUIDGID) !== 0) this.#killSuidgid(h.fd);
    return n;
  }

  /**
   * After a write, truncate or O_TRUNC open by a caller without CAP_FSETID (HANDLE_KILLPRIV_V2
   * leaves it to us): clear setuid, and setgid when group-executable, as Linux does. `fd` is
   * stat'ed; the mode is changed through it, or, for an O_PATH descriptor, through `procName`.
   */
  #killSuidgid(fd: number, procName?: Uint8Array): void {
    const mode = this.#stat.of(fd).mode;
    if ((mode & S_IFMT) !== S_IFREG) return;
    let kill = mode & S_ISUID;
    if ((mode & S_ISGID) !== 0 && (mode & S_IXGRP) !== 0) kill |= S_ISGID;
    if (kill === 0) return;
    const m = mode & 0o7777 & ~kill;
    const r = procName === undefined ? fchmodRaw(fd, m) : fchmodatRaw(this.#procFd, procName, m, 0);
    if (r < 0) throw new ErrnoError(-r, "fchmod", "(clearing setuid/setgid)");
  }

  flush(_ctx: Context, nodeid: bigint, fh: bigint, _lockOwner: bigint): void {
    const h = this.#handle(fh, nodeid, false);
    // close(2) of a duplicate: what the guest's close means to the host file (NFS writes back
    // and reports errors here), while the handle stays open for later requests.
    const dup = this.#inodes.withFds(() => dupRaw(h.fd));
    if (dup < 0) throw new ErrnoError(-dup, "dup");
    const r = closeRaw(dup);
    if (r < 0 && r !== -Errno.EINTR) throw new ErrnoError(-r, "close");
  }

  release(_ctx: Context, nodeid: bigint, fh: bigint, _flags: number): void {
    this.#handles.release(this.#handle(fh, nodeid, false));
  }

  fsync(_ctx: Context, nodeid: bigint, fh: bigint, datasync: boolean): void {
    fail(fsyncRaw(this.#handle(fh, nodeid, false).fd, datasync), datasync ? "fdatasync" : "fsync");
  }

  fallocate(
    _ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    length: bigint,
    mode: number,
  ): void {
    const h = this.#handle(fh, nodeid, false);
    fail(
      fallocateRaw(h.fd, mode, BigInt.asIntN(64, offset), BigInt.asIntN(64, length)),
      "fallocate",
    );
  }

  lseek(_ctx: Context, nodeid: bigint, fh: bigint, offset: bigint, whence: number): bigint {
    const h = this.#handle(fh, nodeid, false);
    const r = lseekRaw(h.fd, BigInt.asIntN(64, offset), whence);
    if (r < 0n) throw new ErrnoError(Number(-r), "lseek");
    return r;
  }

  copyFileRange(
    _ctx: Context,
    nodeidIn: bigint,
    fhIn: bigint,
    offsetIn: bigint,
    nodeidOut: bigint,
    fhOut: bigint,
    offsetOut: bigint,
    length: number,
    flags: number,
  ): number {
    const hIn = this.#handle(fhIn, nodeidIn, false);
    const hOut = this.#handle(fhOut, nodeidOut, false);
    if (offsetIn > INT64_MAX || offsetOut > INT64_MAX) {
      throw new ErrnoError(Errno.EINVAL, "copy_file_range");
    }
    const n = copyFileRangeRaw(hIn.fd, offsetIn, hOut.fd, offsetOut, length, flags);
    if (n < 0) throw new ErrnoError(-n, "copy_file_range");
    return n;
  }

  // ---------------------------------------------------------------- directories

  opendir(_ctx: Context, nodeid: bigint, _flags: number): OpenReply {
    const inode = this.#inode(nodeid);
    if (inode.type !== S_IFDIR) throw new ErrnoError(Errno.ENOTDIR, "opendir");
    const fd = this.#reopenRaw(inode.procName, O_RDONLY | O_DIRECTORY);
    if (fd < 0) throw new ErrnoError(-fd, "open");
    return this.#fillOpen(this.#handles.add(nodeid, fd, true), this.#policy.dirReplyFlags);
  }

  readdir(_ctx: Context, nodeid: bigint, fh: bigint, offset: bigint, sink: DirentSink): void {
    const h = this.#handle(fh, nodeid, true);
    const ino = this.#submounts ? undefined : this.#direntInos(this.#inodes.get(nodeid));
    this.#dir.list(h, offset, sink, ino);
  }

  readdirplus(
    _ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    sink: DirentPlusSink,
  ): void {
    const h = this.#handle(fh, nodeid, true);
    const dir = this.#inode(nodeid);
    this.#dir.listPlus(
      h,
      offset,
      sink,
      this.#dotEntry,
      (cname) => this.#lookupAt(dir, h.fd, cname),
      this.#direntInos(dir),
    );
  }

  releasedir(_ctx: Context, nodeid: bigint, fh: bigint): void {
    this.#handles.release(this.#handle(fh, nodeid, true));
  }

  fsyncdir(_ctx: Context, nodeid: bigint, fh: bigint, datasync: boolean): void {
    fail(fsyncRaw(this.#handle(fh, nodeid, true).fd, datasync), datasync ? "fdatasync" : "fsync");
  }

  // ---------------------------------------------------------------- extended attributes

  #xattrNode(nodeid: bigint, call: string): Inode {
    if (!this.#xattr) throw new ErrnoError(Errno.ENOSYS, call, "extended attributes are off");
    return this.#inode(nodeid);
  }

  setxattr(
    _ctx: Context,
    nodeid: bigint,
    name: Uint8Array,
    value: Uint8Array,
    flags: number,
  ): void {
    const inode = this.#xattrNode(nodeid, "setxattr");
    this.#xattrs.set(inode.procName, name, value, flags);
  }

  getxattr(_ctx: Context, nodeid: bigint, name: Uint8Array, size: number): Uint8Array | number {
    return this.#xattrs.get(this.#xattrNode(nodeid, "getxattr").procName, name, size);
  }

  listxattr(_ctx: Context, nodeid: bigint, size: number): Uint8Array | number {
    return this.#xattrs.list(this.#xattrNode(nodeid, "listxattr").procName, size);
  }

  removexattr(_ctx: Context, nodeid: bigint, name: Uint8Array): void {
    const inode = this.#xattrNode(nodeid, "removexattr");
    this.#xattrs.remove(inode.procName, name);
  }

  /** Closes every descriptor (the root's too); the file system is unusable afterwards. */
  close(): void {
    this.#handles.clear();
    this.#inodes.close();
    this.#xattrs.close();
    closeQuietly(this.#procFd);
  }
}
