/**
 * Linux errno values, `errno()` read through `__errno_location`, and `ErrnoError`.
 *
 * @module
 */
import { libc } from "./_libc.ts";

/** Linux (x86-64, asm-generic) errno values, under their uapi names. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  ENOTBLK: 15,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  EDOM: 33,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENOMSG: 42,
  ENODATA: 61,
  ETIME: 62,
  EPROTO: 71,
  EOVERFLOW: 75,
  EBADFD: 77,
  EILSEQ: 84,
  ENOTSOCK: 88,
  EDESTADDRREQ: 89,
  EMSGSIZE: 90,
  EPROTOTYPE: 91,
  ENOPROTOOPT: 92,
  EPROTONOSUPPORT: 93,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOBUFS: 105,
  EISCONN: 106,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EALREADY: 114,
  EINPROGRESS: 115,
  ESTALE: 116,
  EDQUOT: 122,
  ECANCELED: 125,
  EOWNERDEAD: 130,
} as const;

/** The name of an errno value. */
export type ErrnoName = keyof typeof Errno;

const NAMES: Map<number, ErrnoName> = new Map(
  (Object.entries(Errno) as [ErrnoName, number][]).map(([name, value]) => [value, name]),
);

/** The uapi name of an errno value (`EBADF`), or `E<number>` for one this table lacks. */
export function errnoName(errno: number): string {
  return NAMES.get(errno) ?? `E${errno}`;
}

let errnoView: Deno.UnsafePointerView | undefined;

/**
 * The calling thread's `errno`. Read it right after the failed call, on the same thread: the
 * location is thread-local, and any later libc call may change it.
 */
export function errno(): number {
  if (errnoView === undefined) {
    const ptr = libc.__errno_location();
    if (ptr === null) throw new Error("Cannot locate errno: __errno_location returned NULL");
    errnoView = new Deno.UnsafePointerView(ptr);
  }
  return errnoView.getInt32();
}

/** A failed system call: the errno, its name, and the call that failed. */
export class ErrnoError extends Error {
  /** The positive errno value (`9`). */
  readonly errno: number;
  /** Its uapi name (`"EBADF"`). */
  readonly code: string;
  /** The call that failed (`"recvmsg"`). */
  readonly syscall: string;

  /**
   * `syscall` names the call that failed (a file system may leave it out: the errno is what the
   * guest gets); `detail` (a path, an fd) is added to the message when given.
   */
  constructor(errno: number, syscall = "", detail?: string) {
    const code = errnoName(errno);
    // No stack trace: an errno is an answer for the guest (ENOENT, ENODATA, ...), made on hot
    // paths; capturing the stack cost more than the system call that failed.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(
      syscall === ""
        ? `${code} (errno ${errno})`
        : `${syscall}${detail === undefined ? "" : ` ${detail}`} failed: ${code} (errno ${errno})`,
    );
    Error.stackTraceLimit = limit;
    this.name = "ErrnoError";
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
  }
}

/** Returns `ret` when it is not -1; otherwise throws `ErrnoError` with the current errno. */
export function check(ret: number, syscall: string, detail?: string): number {
  if (ret === -1) throw new ErrnoError(errno(), syscall, detail);
  return ret;
}

/**
 * Returns `ret` when it is not -1, otherwise `-errno`. For hot paths that must not throw: the
 * caller turns the negative value into a reply.
 */
export function orNegErrno(ret: number): number {
  return ret === -1 ? -errno() : ret;
}
