/**
 * The `FileSystem` interface: what the FUSE session asks of a file system, one method per FUSE
 * operation. Implement it to serve your own file system to a VM; `PassthroughFs` serves a host
 * directory. The session knows nothing of host paths, and a file system knows nothing of queues.
 *
 * Contract, for every method:
 * - It runs synchronously on the device's thread; while it runs, no other request is served.
 * - It returns the reply, or throws `ErrnoError` (from `mod.ts`) whose errno goes back to the
 *   guest unchanged. Any other exception becomes EIO, with a log line.
 * - A method the file system does not have is answered ENOSYS.
 * - Every nodeid and fh comes from an untrusted guest: check that it is one you handed out.
 * - Returned objects are copied into the reply before the next call, so an implementation may
 *   reuse one object for every reply.
 *
 * @module
 */

/** Who is asking: the credentials in the request header (the guest's ids). */
export interface Context {
  /** The caller's uid in the guest. */
  uid: number;
  /** The caller's gid in the guest. */
  gid: number;
  /** The caller's pid in the guest (0 for requests the kernel makes itself). */
  pid: number;
}

/** File attributes, as `struct fuse_attr` carries them. */
export interface Attr {
  /** Inode number shown to the guest. */
  ino: bigint;
  /** Size in bytes. */
  size: number;
  /** 512-byte blocks allocated. */
  blocks: number;
  /** Access time, seconds. */
  atime: number;
  /** Access time, nanoseconds. */
  atimeNsec: number;
  /** Modification time, seconds. */
  mtime: number;
  /** Modification time, nanoseconds. */
  mtimeNsec: number;
  /** Status change time, seconds. */
  ctime: number;
  /** Status change time, nanoseconds. */
  ctimeNsec: number;
  /** File type and permission bits (`st_mode`). */
  mode: number;
  /** Hard links. */
  nlink: number;
  /** Owner (as the guest should see it). */
  uid: number;
  /** Group (as the guest should see it). */
  gid: number;
  /** Device number for device files. */
  rdev: number;
  /** Preferred I/O size. */
  blksize: number;
}

/** The reply to LOOKUP (and, later, to every call that creates a node). */
export interface Entry {
  /**
   * The node's id, which the guest uses until it FORGETs it. Each successful reply adds 1 to
   * the node's lookup count; FORGET subtracts what it names. Never 0; 1 is the root.
   */
  nodeid: bigint;
  /** Distinguishes a reused nodeid (0 when nodeids are never reused). */
  generation: bigint;
  /** The node's attributes. */
  attr: Attr;
  /** How long the guest may cache the name → node mapping, in seconds (0: not at all). */
  entryTimeout: number;
  /** How long the guest may cache `attr`, in seconds. */
  attrTimeout: number;
}

/** The reply to GETATTR. */
export interface AttrReply {
  /** The node's attributes. */
  attr: Attr;
  /** How long the guest may cache `attr`, in seconds. */
  timeout: number;
}

/** The reply to STATFS (`struct fuse_kstatfs`). */
export interface StatFs {
  /** Blocks in the file system (of `frsize` bytes). */
  blocks: number;
  /** Free blocks. */
  bfree: number;
  /** Free blocks an unprivileged user may use. */
  bavail: number;
  /** Inodes. */
  files: number;
  /** Free inodes. */
  ffree: number;
  /** Preferred block size. */
  bsize: number;
  /** Longest name. */
  namelen: number;
  /** Fragment size. */
  frsize: number;
}

/** One FORGET of a BATCH_FORGET. */
export interface ForgetOne {
  /** The node. */
  nodeid: bigint;
  /** Lookups to drop. */
  nlookup: bigint;
}

/**
 * A file system the session serves. Every method is optional (missing: ENOSYS). Operations not
 * listed here are answered ENOSYS by the session for now.
 */
export interface FileSystem {
  /**
   * The session starts (FUSE_INIT). `capable` are the INIT flags the client offered and the
   * session supports; return the subset this file system wants (default: all of them).
   */
  init?(capable: bigint): bigint;
  /** The session ends (FUSE_DESTROY, a new INIT, or the front end going away): forget every node. */
  destroy?(): void;
  /** Looks `name` (bytes, no "/" and no NUL) up in directory `parent`; +1 lookup count. */
  lookup?(ctx: Context, parent: bigint, name: Uint8Array): Entry;
  /** Drops `nlookup` from the node's lookup count; at 0 the node may be released. No reply. */
  forget?(ctx: Context, nodeid: bigint, nlookup: bigint): void;
  /** Several FORGETs at once (default: `forget` for each). No reply. */
  batchForget?(ctx: Context, items: readonly ForgetOne[]): void;
  /** The node's attributes; `fh` is set when the guest asks through an open handle. */
  getattr?(ctx: Context, nodeid: bigint, fh: bigint | undefined): AttrReply;
  /** File system statistics for the file system holding `nodeid`. */
  statfs?(ctx: Context, nodeid: bigint): StatFs;
}
