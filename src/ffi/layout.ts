/**
 * C struct layouts (x86-64 Linux, glibc) used by the wrappers, in one place. Offsets and sizes are
 * checked against the C compiler by `layout_test.ts`.
 *
 * @module
 */

/** `struct iovec { void *iov_base; size_t iov_len; }` */
export const IOVEC = { size: 16, base: 0, len: 8 } as const;

/**
 * `struct xattr_args { __aligned_u64 value; __u32 size; __u32 flags; }` (linux/xattr.h, Linux
 * 6.13: the value buffer of getxattrat/setxattrat, its size, setxattr's flags).
 */
export const XATTR_ARGS = { size: 16, value: 0, valueSize: 8, flags: 12 } as const;

/**
 * `struct msghdr { void *msg_name; socklen_t msg_namelen; struct iovec *msg_iov; size_t
 * msg_iovlen; void *msg_control; size_t msg_controllen; int msg_flags; }`
 */
export const MSGHDR = {
  size: 56,
  name: 0,
  namelen: 8,
  iov: 16,
  iovlen: 24,
  control: 32,
  controllen: 40,
  flags: 48,
} as const;

/** `struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; unsigned char data[]; }` */
export const CMSGHDR = { size: 16, len: 0, level: 8, type: 12, data: 16 } as const;

/** `CMSG_ALIGN(n)`: control messages are aligned to `sizeof(size_t)`. */
export function cmsgAlign(n: number): number {
  return (n + 7) & ~7;
}

/** `CMSG_SPACE(n)`: bytes of control buffer one message with `n` data bytes takes. */
export function cmsgSpace(n: number): number {
  return CMSGHDR.size + cmsgAlign(n);
}

/** `CMSG_LEN(n)`: the `cmsg_len` of one message with `n` data bytes. */
export function cmsgLen(n: number): number {
  return CMSGHDR.size + n;
}

/** `struct epoll_event { uint32_t events; epoll_data_t data; }`, packed on x86-64. */
export const EPOLL_EVENT = { size: 12, events: 0, data: 4 } as const;

/** `struct pollfd { int fd; short events; short revents; }` */
export const POLLFD = { size: 8, fd: 0, events: 4, revents: 6 } as const;

/** `struct sockaddr_un { sa_family_t sun_family; char sun_path[108]; }` */
export const SOCKADDR_UN = { size: 110, family: 0, path: 2, pathMax: 108 } as const;

/** `struct rlimit { rlim_t rlim_cur; rlim_t rlim_max; }` */
export const RLIMIT = { size: 16, cur: 0, max: 8 } as const;

/** `struct ucred { pid_t pid; uid_t uid; gid_t gid; }` (SO_PEERCRED) */
export const UCRED = { size: 12, pid: 0, uid: 4, gid: 8 } as const;

/** `struct stat` (x86-64): the fields we read, with their offsets. */
export const STAT = {
  size: 144,
  dev: 0,
  ino: 8,
  nlink: 16,
  mode: 24,
  uid: 28,
  gid: 32,
  rdev: 40,
  sizeField: 48,
  blksize: 56,
  blocks: 64,
  atime: 72,
  atimeNsec: 80,
  mtime: 88,
  mtimeNsec: 96,
  ctime: 104,
  ctimeNsec: 112,
} as const;

/** `struct statfs` (x86-64). */
export const STATFS = {
  size: 120,
  type: 0,
  bsize: 8,
  blocks: 16,
  bfree: 24,
  bavail: 32,
  files: 40,
  ffree: 48,
  fsid: 56,
  namelen: 64,
  frsize: 72,
  flags: 80,
} as const;

/** `struct timespec { time_t tv_sec; long tv_nsec; }` (x86-64). */
export const TIMESPEC = { size: 16, sec: 0, nsec: 8 } as const;

/**
 * `struct statx` (Linux ≥ 4.11; `stx_mnt_id` since 5.8). Each `struct statx_timestamp` is
 * `{ __s64 tv_sec; __u32 tv_nsec; __s32 __reserved; }`.
 */
export const STATX = {
  size: 256,
  mask: 0,
  blksize: 4,
  attributes: 8,
  nlink: 16,
  uid: 20,
  gid: 24,
  mode: 28,
  ino: 32,
  sizeField: 40,
  blocks: 48,
  attributesMask: 56,
  atime: 64,
  btime: 80,
  ctime: 96,
  mtime: 112,
  /** Offset of `tv_nsec` within a `struct statx_timestamp`. */
  timestampNsec: 8,
  rdevMajor: 128,
  rdevMinor: 132,
  devMajor: 136,
  devMinor: 140,
  mntId: 144,
} as const;

/**
 * `struct file_handle { unsigned int handle_bytes; int handle_type; unsigned char f_handle[]; }`
 * (name_to_handle_at(2)); `size` is the header before `f_handle`.
 */
export const FILE_HANDLE = { size: 8, bytes: 0, type: 4, handle: 8 } as const;

/** `MAX_HANDLE_SZ`: the most `f_handle` bytes any file system's handle takes. */
export const MAX_HANDLE_SZ = 128;

/**
 * `struct linux_dirent64 { ino64_t d_ino; off64_t d_off; unsigned short d_reclen; unsigned char
 * d_type; char d_name[]; }` as getdents64(2) fills it (glibc's `struct dirent64` has the same
 * header).
 */
export const DIRENT64 = { ino: 0, off: 8, reclen: 16, type: 18, name: 19 } as const;
