/**
 * seccomp: a filter of the system calls every thread of this process may make, built as a
 * classic BPF program (no libseccomp: nothing to install, and the program is a plain list we can
 * test). It checks the architecture (x86-64, else the process is killed), refuses the x32 ABI
 * (numbers with bit 30), allows the numbers on the list, and answers anything else with the
 * chosen action: kill the process, log the call (to the audit log or, without auditd, the kernel
 * log: `type=1326 ... syscall=N`), or SIGSYS. It reads no argument, so Linux 5.11 and later
 * answer an allowed call from a bitmap without running the program.
 *
 * @module
 */
import { libc } from "./_libc.ts";
import { errno, ErrnoError } from "./errno.ts";
import { addressOf, stableBytes } from "./pointers.ts";

/** x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl), by name. */
export const SYSCALL_NUMBERS: Readonly<Record<string, number>> = {
  read: 0,
  write: 1,
  open: 2,
  close: 3,
  stat: 4,
  fstat: 5,
  lstat: 6,
  poll: 7,
  lseek: 8,
  mmap: 9,
  mprotect: 10,
  munmap: 11,
  brk: 12,
  "rt_sigaction": 13,
  "rt_sigprocmask": 14,
  "rt_sigreturn": 15,
  ioctl: 16,
  pread64: 17,
  pwrite64: 18,
  readv: 19,
  writev: 20,
  access: 21,
  pipe: 22,
  select: 23,
  "sched_yield": 24,
  mremap: 25,
  msync: 26,
  mincore: 27,
  madvise: 28,
  dup: 32,
  dup2: 33,
  nanosleep: 35,
  getpid: 39,
  sendfile: 40,
  socket: 41,
  connect: 42,
  accept: 43,
  sendto: 44,
  recvfrom: 45,
  sendmsg: 46,
  recvmsg: 47,
  shutdown: 48,
  bind: 49,
  listen: 50,
  getsockname: 51,
  getpeername: 52,
  socketpair: 53,
  setsockopt: 54,
  getsockopt: 55,
  clone: 56,
  fork: 57,
  vfork: 58,
  execve: 59,
  exit: 60,
  wait4: 61,
  kill: 62,
  uname: 63,
  fcntl: 72,
  flock: 73,
  fsync: 74,
  fdatasync: 75,
  truncate: 76,
  ftruncate: 77,
  getdents: 78,
  getcwd: 79,
  chdir: 80,
  fchdir: 81,
  rename: 82,
  mkdir: 83,
  rmdir: 84,
  link: 86,
  unlink: 87,
  symlink: 88,
  readlink: 89,
  chmod: 90,
  fchmod: 91,
  chown: 92,
  fchown: 93,
  umask: 95,
  gettimeofday: 96,
  getrlimit: 97,
  getrusage: 98,
  sysinfo: 99,
  ptrace: 101,
  getuid: 102,
  getgid: 104,
  setuid: 105,
  setgid: 106,
  geteuid: 107,
  getegid: 108,
  getppid: 110,
  setresuid: 117,
  setresgid: 119,
  setfsuid: 122,
  setfsgid: 123,
  capget: 125,
  capset: 126,
  sigaltstack: 131,
  mknod: 133,
  personality: 135,
  statfs: 137,
  fstatfs: 138,
  "sched_setparam": 142,
  "sched_getparam": 143,
  "sched_setscheduler": 144,
  "sched_getscheduler": 145,
  "sched_get_priority_max": 146,
  "sched_get_priority_min": 147,
  mlock: 149,
  munlock: 150,
  "pivot_root": 155,
  prctl: 157,
  "arch_prctl": 158,
  setrlimit: 160,
  chroot: 161,
  sync: 162,
  mount: 165,
  umount2: 166,
  gettid: 186,
  setxattr: 188,
  lsetxattr: 189,
  fsetxattr: 190,
  getxattr: 191,
  lgetxattr: 192,
  fgetxattr: 193,
  listxattr: 194,
  llistxattr: 195,
  flistxattr: 196,
  removexattr: 197,
  lremovexattr: 198,
  fremovexattr: 199,
  tkill: 200,
  time: 201,
  futex: 202,
  "sched_setaffinity": 203,
  "sched_getaffinity": 204,
  "epoll_create": 213,
  getdents64: 217,
  "set_tid_address": 218,
  "restart_syscall": 219,
  fadvise64: 221,
  "clock_gettime": 228,
  "clock_getres": 229,
  "clock_nanosleep": 230,
  "exit_group": 231,
  "epoll_wait": 232,
  "epoll_ctl": 233,
  tgkill: 234,
  openat: 257,
  mkdirat: 258,
  mknodat: 259,
  fchownat: 260,
  newfstatat: 262,
  unlinkat: 263,
  renameat: 264,
  linkat: 265,
  symlinkat: 266,
  readlinkat: 267,
  fchmodat: 268,
  faccessat: 269,
  pselect6: 270,
  ppoll: 271,
  unshare: 272,
  "set_robust_list": 273,
  "get_robust_list": 274,
  splice: 275,
  tee: 276,
  "sync_file_range": 277,
  utimensat: 280,
  "epoll_pwait": 281,
  "timerfd_create": 283,
  eventfd: 284,
  fallocate: 285,
  "timerfd_settime": 286,
  "timerfd_gettime": 287,
  accept4: 288,
  eventfd2: 290,
  "epoll_create1": 291,
  dup3: 292,
  pipe2: 293,
  preadv: 295,
  pwritev: 296,
  recvmmsg: 299,
  prlimit64: 302,
  "name_to_handle_at": 303,
  "open_by_handle_at": 304,
  syncfs: 306,
  sendmmsg: 307,
  setns: 308,
  getcpu: 309,
  "sched_setattr": 314,
  "sched_getattr": 315,
  renameat2: 316,
  seccomp: 317,
  getrandom: 318,
  "memfd_create": 319,
  membarrier: 324,
  mlock2: 325,
  "copy_file_range": 326,
  preadv2: 327,
  pwritev2: 328,
  "pkey_mprotect": 329,
  "pkey_alloc": 330,
  "pkey_free": 331,
  statx: 332,
  rseq: 334,
  "pidfd_open": 434,
  clone3: 435,
  "close_range": 436,
  openat2: 437,
  faccessat2: 439,
  "epoll_pwait2": 441,
  "futex_waitv": 449,
  setxattrat: 463,
  getxattrat: 464,
  listxattrat: 465,
  removexattrat: 466,
};

/** What happens to a call off the list. */
export type SeccompAction = "kill" | "log" | "trap";

// Classic BPF (linux/filter.h, linux/seccomp.h, linux/audit.h).
const BPF_LD_W_ABS = 0x20;
const BPF_JEQ_K = 0x15;
const BPF_JGE_K = 0x35;
const BPF_RET_K = 0x06;
/** struct seccomp_data: nr at 0, arch at 4. */
const DATA_NR = 0;
const DATA_ARCH = 4;
const AUDIT_ARCH_X86_64 = 0xc000003e;
/** The x32 ABI's bit in the number. */
const X32_SYSCALL_BIT = 0x40000000;
const SECCOMP_RET_KILL_PROCESS = 0x80000000;
const SECCOMP_RET_TRAP = 0x00030000;
const SECCOMP_RET_LOG = 0x7ffc0000;
const SECCOMP_RET_ERRNO = 0x00050000;
const SECCOMP_RET_ALLOW = 0x7fff0000;
const RETURNS: Record<SeccompAction, number> = {
  kill: SECCOMP_RET_KILL_PROCESS,
  log: SECCOMP_RET_LOG,
  trap: SECCOMP_RET_TRAP,
};
/** One instruction: u16 code, u8 jt, u8 jf, u32 k. */
const INSN = 8;

/** The numbers of `names`, sorted, without repeats. Throws naming an unknown call. */
function numbersOf(names: readonly string[]): number[] {
  return [
    ...new Set(names.map((name) => {
      const n = SYSCALL_NUMBERS[name];
      if (n === undefined) throw new Error(`seccomp: no x86-64 system call named ${name}`);
      return n;
    })),
  ].sort((a, b) => a - b);
}

/**
 * The BPF program (struct sock_filter[]) that allows the calls named in `allowed`, answers those
 * in `refused` with the error `refusedErrno` (they fail, the process lives: for calls a runtime
 * makes on its own that the daemon does without) and the others with `action`. Throws naming an
 * unknown call.
 */
export function seccompProgram(
  allowed: readonly string[],
  action: SeccompAction,
  refused: readonly string[] = [],
  refusedErrno = 13, /* EACCES */
): Uint8Array {
  const numbers = numbersOf(allowed);
  const refusedNumbers = numbersOf(refused).filter((n) => !numbers.includes(n));
  const a = numbers.length, r = refusedNumbers.length;
  // A jump's offset is 8 bits: every test must reach the returns after the last one.
  if (a + r > 250) throw new Error("seccomp: more than 250 calls");
  const insns: [number, number, number, number][] = [];
  insns.push([BPF_LD_W_ABS, 0, 0, DATA_ARCH]);
  insns.push([BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64]);
  insns.push([BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS]);
  insns.push([BPF_LD_W_ABS, 0, 0, DATA_NR]);
  // x32 calls: straight to the action (past every test).
  insns.push([BPF_JGE_K, a + r, 0, X32_SYSCALL_BIT]);
  // After the tests: the action, then (with refused calls) the error, then ALLOW.
  const toAllow = r > 0 ? a + r + 1 : a;
  numbers.forEach((n, i) => insns.push([BPF_JEQ_K, toAllow - i, 0, n]));
  refusedNumbers.forEach((n, j) => insns.push([BPF_JEQ_K, r - j, 0, n]));
  insns.push([BPF_RET_K, 0, 0, RETURNS[action]]);
  if (r > 0) insns.push([BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | (refusedErrno & 0xffff)]);
  insns.push([BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW]);
  const prog = stableBytes(insns.length * INSN);
  const v = new DataView(prog.buffer);
  insns.forEach(([code, jt, jf, k], i) => {
    v.setUint16(i * INSN, code, true);
    v.setUint8(i * INSN + 2, jt);
    v.setUint8(i * INSN + 3, jf);
    v.setUint32(i * INSN + 4, k >>> 0, true);
  });
  return prog;
}

const PR_SET_NO_NEW_PRIVS = 38;
const SECCOMP_SET_MODE_FILTER = 1;
const SECCOMP_FILTER_FLAG_TSYNC = 1;

/**
 * Installs `program` (from `seccompProgram`) on every thread of the process (TSYNC), after
 * setting no_new_privs (which TSYNC then sets on every thread). Threads started later inherit it.
 * Throws ErrnoError, or an Error naming a thread that could not take it.
 */
export function installSeccomp(program: Uint8Array): void {
  if (libc.prctl(PR_SET_NO_NEW_PRIVS, 1n, 0n, 0n, 0n) === -1) {
    throw new ErrnoError(errno(), "prctl(PR_SET_NO_NEW_PRIVS)");
  }
  // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
  const fprog = stableBytes(16);
  const v = new DataView(fprog.buffer);
  v.setUint16(0, program.byteLength / INSN, true);
  v.setBigUint64(8, BigInt(addressOf(program)), true);
  const r = Number(
    libc.syscall_seccomp(
      BigInt(SYSCALL_NUMBERS.seccomp ?? -1),
      SECCOMP_SET_MODE_FILTER,
      SECCOMP_FILTER_FLAG_TSYNC,
      fprog,
    ),
  );
  if (r === -1) throw new ErrnoError(errno(), "seccomp(SECCOMP_SET_MODE_FILTER)");
  if (r > 0) throw new Error(`seccomp: thread ${r} could not take the filter`);
}

/** `personality(0xffffffff)`: a harmless query that no filter of ours allows (the spec's probe). */
export function personalityQuery(): number {
  const r = libc.personality(0xffffffffn);
  return r === -1 ? -errno() : r;
}
