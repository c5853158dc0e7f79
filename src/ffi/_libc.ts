/**
 * The libc symbol table: the only `Deno.dlopen` in the project.
 *
 * Every other file reaches libc through the typed wrappers of `mod.ts` beside this file. Each
 * parameter carries its C type in a comment. `ssize_t` results are declared `i32`: on x86-64 the
 * low half of `rax` is the exact value for every count below 2 GiB and for -1, and a 32-bit
 * result keeps BigInt off the hot path.
 *
 * @module
 */

const symbols = {
  __errno_location: { parameters: [], result: "pointer" }, // int *__errno_location(void)
  getpid: { parameters: [], result: "i32" },
  _exit: { parameters: ["i32" /* int status */], result: "void" },
  close: { parameters: ["i32" /* int fd */], result: "i32" },
  read: {
    parameters: ["i32", /* int fd */ "buffer", /* void *buf */ "usize" /* size_t count */],
    result: "i32", // ssize_t
  },
  write: {
    parameters: ["i32", /* int fd */ "buffer", /* const void *buf */ "usize" /* size_t count */],
    result: "i32", // ssize_t
  },
  preadv: {
    parameters: [
      "i32", /* int fd */
      "buffer", /* const struct iovec *iov */
      "i32", /* int iovcnt */
      "i64", /* off_t offset */
    ],
    result: "i32", // ssize_t
  },
  pwritev: {
    parameters: [
      "i32", /* int fd */
      "buffer", /* const struct iovec *iov */
      "i32", /* int iovcnt */
      "i64", /* off_t offset */
    ],
    result: "i32", // ssize_t
  },
  fcntl: {
    parameters: ["i32", /* int fd */ "i32", /* int cmd */ "i32" /* int arg (variadic) */],
    result: "i32",
  },
  poll: {
    parameters: [
      "buffer", /* struct pollfd *fds */
      "u64", /* nfds_t nfds */
      "i32", /* int timeout */
    ],
    result: "i32",
  },
  unlink: { parameters: ["buffer" /* const char *pathname */], result: "i32" },
  flock: { parameters: ["i32", /* int fd */ "i32" /* int operation */], result: "i32" },
  // files
  openat: {
    parameters: [
      "i32", /* int dirfd */
      "buffer", /* const char *pathname */
      "i32", /* int flags */
      "u32", /* mode_t mode (variadic) */
    ],
    result: "i32",
  },
  fstatat: {
    parameters: [
      "i32", /* int dirfd */
      "buffer", /* const char *pathname */
      "buffer", /* struct stat *statbuf */
      "i32", /* int flags */
    ],
    result: "i32",
  },
  fstatfs: {
    parameters: ["i32", /* int fd */ "buffer" /* struct statfs *buf */],
    result: "i32",
  },
  statx: {
    parameters: [
      "i32", /* int dirfd */
      "buffer", /* const char *pathname */
      "i32", /* int flags */
      "u32", /* unsigned int mask */
      "buffer", /* struct statx *statxbuf */
    ],
    result: "i32",
  },
  dup: { parameters: ["i32" /* int oldfd */], result: "i32" },
  mkdirat: {
    parameters: [
      "i32",
      /* int dirfd */ "buffer",
      /* const char *pathname */ "u32", /* mode_t mode */
    ],
    result: "i32",
  },
  mknodat: {
    parameters: [
      "i32", /* int dirfd */
      "buffer", /* const char *pathname */
      "u32", /* mode_t mode */
      "u64", /* dev_t dev */
    ],
    result: "i32",
  },
  symlinkat: {
    parameters: [
      "buffer", /* const char *target */
      "i32", /* int newdirfd */
      "buffer", /* const char *linkpath */
    ],
    result: "i32",
  },
  readlinkat: {
    parameters: [
      "i32", /* int dirfd */
      "buffer", /* const char *pathname */
      "buffer", /* char *buf */
      "usize", /* size_t bufsiz */
    ],
    result: "i32", // ssize_t
  },
  unlinkat: {
    parameters: ["i32", /* int dirfd */ "buffer", /* const char *pathname */ "i32" /* int flags */],
    result: "i32",
  },
  renameat2: {
    parameters: [
      "i32", /* int olddirfd */
      "buffer", /* const char *oldpath */
      "i32", /* int newdirfd */
      "buffer", /* const char *newpath */
      "u32", /* unsigned int flags */
    ],
    result: "i32",
  },
  linkat: {
    parameters: [
      "i32", /* int olddirfd */
      "buffer", /* const char *oldpath */
      "i32", /* int newdirfd */
      "buffer", /* const char *newpath */
      "i32", /* int flags */
    ],
    result: "i32",
  },
  fchmod: { parameters: ["i32", /* int fd */ "u32" /* mode_t mode */], result: "i32" },
  fchmodat: {
    parameters: [
      "i32", /* int dirfd */
      "buffer", /* const char *pathname */
      "u32", /* mode_t mode */
      "i32", /* int flags */
    ],
    result: "i32",
  },
  fchownat: {
    parameters: [
      "i32", /* int dirfd */
      "buffer", /* const char *pathname */
      "u32", /* uid_t owner */
      "u32", /* gid_t group */
      "i32", /* int flags */
    ],
    result: "i32",
  },
  utimensat: {
    parameters: [
      "i32", /* int dirfd */
      "buffer", /* const char *pathname */
      "buffer", /* const struct timespec times[2] */
      "i32", /* int flags */
    ],
    result: "i32",
  },
  faccessat: {
    parameters: [
      "i32", /* int dirfd */
      "buffer", /* const char *pathname */
      "i32", /* int mode */
      "i32", /* int flags */
    ],
    result: "i32",
  },
  fallocate: {
    parameters: [
      "i32",
      /* int fd */ "i32",
      /* int mode */ "i64",
      /* off_t offset */ "i64", /* off_t len */
    ],
    result: "i32",
  },
  lseek: {
    parameters: ["i32", /* int fd */ "i64", /* off_t offset */ "i32" /* int whence */],
    result: "i64", // off_t
  },
  fsync: { parameters: ["i32" /* int fd */], result: "i32" },
  fdatasync: { parameters: ["i32" /* int fd */], result: "i32" },
  syncfs: { parameters: ["i32" /* int fd */], result: "i32" },
  copy_file_range: {
    parameters: [
      "i32", /* int fd_in */
      "buffer", /* off64_t *off_in */
      "i32", /* int fd_out */
      "buffer", /* off64_t *off_out */
      "usize", /* size_t len */
      "u32", /* unsigned int flags */
    ],
    result: "i32", // ssize_t
  },
  getdents64: {
    parameters: ["i32", /* int fd */ "buffer", /* void *dirp */ "usize" /* size_t count */],
    result: "i32", // ssize_t
  },
  getxattr: {
    parameters: [
      "buffer", /* const char *path */
      "buffer", /* const char *name */
      "buffer", /* void *value */
      "usize", /* size_t size */
    ],
    result: "i32", // ssize_t
  },
  setxattr: {
    parameters: [
      "buffer", /* const char *path */
      "buffer", /* const char *name */
      "buffer", /* const void *value */
      "usize", /* size_t size */
      "i32", /* int flags */
    ],
    result: "i32",
  },
  listxattr: {
    parameters: [
      "buffer",
      /* const char *path */ "buffer",
      /* char *list */ "usize", /* size_t size */
    ],
    result: "i32", // ssize_t
  },
  removexattr: {
    parameters: ["buffer", /* const char *path */ "buffer" /* const char *name */],
    result: "i32",
  },
  // file handles (open_by_handle_at needs CAP_DAC_READ_SEARCH)
  name_to_handle_at: {
    parameters: [
      "i32", /* int dirfd */
      "buffer", /* const char *pathname */
      "buffer", /* struct file_handle *handle */
      "buffer", /* int *mount_id */
      "i32", /* int flags */
    ],
    result: "i32",
  },
  open_by_handle_at: {
    parameters: [
      "i32", /* int mount_fd */
      "buffer", /* struct file_handle *handle */
      "i32", /* int flags */
    ],
    result: "i32",
  },
  // credentials of the calling thread
  geteuid: { parameters: [], result: "u32" }, // uid_t geteuid(void)
  getegid: { parameters: [], result: "u32" }, // gid_t getegid(void)
  setfsuid: { parameters: ["u32" /* uid_t fsuid */], result: "i32" },
  setfsgid: { parameters: ["u32" /* gid_t fsgid */], result: "i32" },
  unshare: { parameters: ["i32" /* int flags */], result: "i32" },
  umask: { parameters: ["u32" /* mode_t mask */], result: "u32" },
  // namespaces and the root (the sandbox)
  setns: { parameters: ["i32", /* int fd */ "i32" /* int nstype */], result: "i32" },
  mount: {
    parameters: [
      "buffer", /* const char *source */
      "buffer", /* const char *target */
      "buffer", /* const char *filesystemtype */
      "u64", /* unsigned long mountflags */
      "pointer", /* const void *data */
    ],
    result: "i32",
  },
  umount2: {
    parameters: ["buffer", /* const char *target */ "i32" /* int flags */],
    result: "i32",
  },
  chdir: { parameters: ["buffer" /* const char *path */], result: "i32" },
  chroot: { parameters: ["buffer" /* const char *path */], result: "i32" },
  capget: {
    parameters: ["buffer", /* cap_user_header_t */ "buffer" /* cap_user_data_t */],
    result: "i32",
  },
  capset: {
    parameters: ["buffer", /* cap_user_header_t */ "buffer" /* cap_user_data_t */],
    result: "i32",
  },
  fchdir: { parameters: ["i32" /* int fd */], result: "i32" },
  // long syscall(SYS_seccomp, unsigned int op, unsigned int flags, void *args): no glibc wrapper
  syscall_seccomp: {
    name: "syscall",
    parameters: ["i64", /* long number */ "u32", /* op */ "u32", /* flags */ "buffer" /* args */],
    result: "i64",
  },
  // int prctl(int option, unsigned long arg2, arg3, arg4, arg5)
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  // int personality(unsigned long persona): the sandbox spec's off-list call
  personality: { parameters: ["u64" /* persona */], result: "i32" },
  // The *xattrat calls (Linux 6.13): no glibc wrapper in bookworm's or trixie's glibc.
  // long syscall(SYS_getxattrat / SYS_setxattrat, int dfd, const char *path, unsigned int
  // at_flags, const char *name, struct xattr_args *args, size_t size)
  syscall_xattrat: {
    name: "syscall",
    parameters: ["i64", "i32", "buffer", "u32", "buffer", "buffer", "u64"],
    result: "i64",
  },
  // long syscall(SYS_listxattrat, int dfd, const char *path, unsigned int at_flags, char *list,
  // size_t size)
  syscall_listxattrat: {
    name: "syscall",
    parameters: ["i64", "i32", "buffer", "u32", "buffer", "u64"],
    result: "i64",
  },
  // long syscall(SYS_removexattrat, int dfd, const char *path, unsigned int at_flags,
  // const char *name)
  syscall_removexattrat: {
    name: "syscall",
    parameters: ["i64", "i32", "buffer", "u32", "buffer"],
    result: "i64",
  },
  // long syscall(SYS_pivot_root, const char *new_root, const char *put_old): no glibc wrapper
  syscall_pivot_root: {
    name: "syscall",
    parameters: ["i64", /* long number */ "buffer", /* new_root */ "buffer" /* put_old */],
    result: "i64",
  },
  // sockets
  socket: {
    parameters: ["i32", /* int domain */ "i32", /* int type */ "i32" /* int protocol */],
    result: "i32",
  },
  socketpair: {
    parameters: [
      "i32", /* int domain */
      "i32", /* int type */
      "i32", /* int protocol */
      "buffer", /* int sv[2] */
    ],
    result: "i32",
  },
  bind: {
    parameters: [
      "i32", /* int sockfd */
      "buffer", /* const struct sockaddr *addr */
      "u32", /* socklen_t addrlen */
    ],
    result: "i32",
  },
  listen: { parameters: ["i32", /* int sockfd */ "i32" /* int backlog */], result: "i32" },
  accept4: {
    parameters: [
      "i32", /* int sockfd */
      "buffer", /* struct sockaddr *addr (may be NULL) */
      "buffer", /* socklen_t *addrlen (may be NULL) */
      "i32", /* int flags */
    ],
    result: "i32",
  },
  connect: {
    parameters: [
      "i32", /* int sockfd */
      "buffer", /* const struct sockaddr *addr */
      "u32", /* socklen_t addrlen */
    ],
    result: "i32",
  },
  getsockopt: {
    parameters: [
      "i32", /* int sockfd */
      "i32", /* int level */
      "i32", /* int optname */
      "buffer", /* void *optval */
      "buffer", /* socklen_t *optlen */
    ],
    result: "i32",
  },
  recvmsg: {
    parameters: ["i32", /* int sockfd */ "buffer", /* struct msghdr *msg */ "i32" /* int flags */],
    result: "i32", // ssize_t
  },
  sendmsg: {
    parameters: [
      "i32", /* int sockfd */
      "buffer", /* const struct msghdr *msg */
      "i32", /* int flags */
    ],
    result: "i32", // ssize_t
  },
  shutdown: { parameters: ["i32", /* int sockfd */ "i32" /* int how */], result: "i32" },
  // memory
  mmap: {
    parameters: [
      "pointer", /* void *addr */
      "usize", /* size_t length */
      "i32", /* int prot */
      "i32", /* int flags */
      "i32", /* int fd */
      "i64", /* off_t offset */
    ],
    result: "pointer", // void * (MAP_FAILED = (void *)-1)
  },
  munmap: { parameters: ["pointer", /* void *addr */ "usize" /* size_t length */], result: "i32" },
  memfd_create: {
    parameters: ["buffer", /* const char *name */ "u32" /* unsigned int flags */],
    result: "i32",
  },
  ftruncate: { parameters: ["i32", /* int fd */ "i64" /* off_t length */], result: "i32" },
  // events
  eventfd: { parameters: ["u32", /* unsigned int initval */ "i32" /* int flags */], result: "i32" },
  epoll_create1: { parameters: ["i32" /* int flags */], result: "i32" },
  epoll_ctl: {
    parameters: [
      "i32", /* int epfd */
      "i32", /* int op */
      "i32", /* int fd */
      "buffer", /* struct epoll_event *event */
    ],
    result: "i32",
  },
  epoll_wait: {
    parameters: [
      "i32", /* int epfd */
      "buffer", /* struct epoll_event *events */
      "i32", /* int maxevents */
      "i32", /* int timeout (ms) */
    ],
    result: "i32",
  },
  // The same call on Deno's blocking-task threads: the isolate's event loop runs meanwhile.
  epoll_wait_nonblocking: {
    name: "epoll_wait",
    parameters: [
      "i32", /* int epfd */
      "buffer", /* struct epoll_event *events */
      "i32", /* int maxevents */
      "i32", /* int timeout (ms) */
    ],
    result: "i32",
    nonblocking: true,
  },
  // resources
  getrlimit: {
    parameters: ["i32", /* int resource */ "buffer" /* struct rlimit *rlim */],
    result: "i32",
  },
  setrlimit: {
    parameters: ["i32", /* int resource */ "buffer" /* const struct rlimit *rlim */],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The opened libc, typed by the table above. Internal to `src/ffi/`. */
export const libc: Deno.DynamicLibrary<typeof symbols>["symbols"] =
  Deno.dlopen("libc.so.6", symbols).symbols;
