/**
 * The system calls the serving daemon makes once it serves (`--seccomp`'s list): those of the
 * passthrough file system and the device (all through `src/ffi/`), and those of the Deno
 * runtime's threads (V8, tokio, the Worker): memory, threads, futexes, signals, time. Found with
 * strace of a serving daemon, then by running the specs with `SPEC_SANDBOX=namespace
 * SPEC_SECCOMP=log` (calls off the list are logged as `type=1326 ... syscall=N` in the kernel
 * log: tokio's recvfrom, V8's sched_getparam and sched_getscheduler, unlink at stop came that
 * way); the guest benchmark runs under `kill`. See the README's "Sandbox".
 *
 * @module
 */

/** Calls of the file system and the device. */
const FILE_SYSTEM = [
  "openat",
  "openat2",
  "open_by_handle_at",
  "name_to_handle_at",
  "close",
  "read",
  "write",
  "readv",
  "writev",
  "pread64",
  "pwrite64",
  "preadv",
  "pwritev",
  "preadv2",
  "pwritev2",
  "lseek",
  "fstat",
  "newfstatat",
  "statx",
  "fstatfs",
  "getdents64",
  "mkdirat",
  "mknodat",
  "symlinkat",
  "readlinkat",
  "linkat",
  "unlinkat",
  // Without the sandbox the daemon removes its socket file and pid file at stop, by path.
  "unlink",
  "renameat",
  "renameat2",
  "fchmod",
  "fchmodat",
  "fchownat",
  "utimensat",
  "faccessat",
  "faccessat2",
  "ftruncate",
  "fallocate",
  "fsync",
  "fdatasync",
  "syncfs",
  "copy_file_range",
  "flock",
  "fcntl",
  "dup",
  "fchdir",
  "getxattr",
  "setxattr",
  "listxattr",
  "removexattr",
  // Linux 6.13's *at forms, used where the kernel has them (older kernels answer ENOSYS).
  "getxattrat",
  "setxattrat",
  "listxattrat",
  "removexattrat",
  "umask",
  "setfsuid",
  "setfsgid",
  "geteuid",
  "getegid",
  "unshare",
] as const;

/** Calls of the vhost-user socket, the eventfds and guest memory. */
const DEVICE = [
  "accept4",
  "recvmsg",
  "recvfrom",
  "sendmsg",
  "sendto",
  "shutdown",
  "getsockopt",
  "eventfd2",
  "epoll_create1",
  "epoll_ctl",
  "epoll_wait",
  "epoll_pwait",
  "poll",
  "ppoll",
  "mmap",
  "munmap",
  "memfd_create",
] as const;

/** Calls of the Deno runtime's threads. */
const RUNTIME = [
  "brk",
  "mprotect",
  "mremap",
  "madvise",
  "futex",
  "sched_yield",
  "sched_getaffinity",
  "sched_getparam",
  "sched_getscheduler",
  "clone",
  "clone3",
  "set_robust_list",
  "rseq",
  "prctl",
  "sigaltstack",
  "rt_sigaction",
  "rt_sigprocmask",
  "rt_sigreturn",
  "restart_syscall",
  "tgkill",
  "tkill",
  "getpid",
  "gettid",
  "getrandom",
  "clock_gettime",
  "clock_nanosleep",
  "nanosleep",
  "gettimeofday",
  "membarrier",
  "exit",
  "exit_group",
] as const;

/** Every call the serving daemon may make. */
export const ALLOWED_SYSCALLS: readonly string[] = [...FILE_SYSTEM, ...DEVICE, ...RUNTIME];

/**
 * Calls the Deno runtime makes on its own that the daemon does without: under `--seccomp` they
 * fail (EACCES) instead of ending the process. Deno's update check, unless DENO_NO_UPDATE_CHECK
 * is set, looks its server's name up at start-up from a tokio thread, at a moment of its own
 * (glibc's resolver: uname, nscd's UNIX socket, then DNS over UDP): once the filter is in, `kill`
 * ended the daemon there (seen as `syscall=41`, then `syscall=63`, in the audit log, 1 start in
 * 3 as an unprivileged user). Refused, the lookup fails and the check gives up. The installed
 * launcher and the sandbox set DENO_NO_UPDATE_CHECK=1; `deno run mod.ts` cannot.
 */
export const REFUSED_SYSCALLS: readonly string[] = [
  "uname",
  "socket",
  "socketpair",
  "connect",
  "bind",
  "getsockname",
  "getpeername",
  "setsockopt",
  "sendmmsg",
  "recvmmsg",
];
