/**
 * File descriptor calls: close, read, write, preadv/pwritev, fcntl, unlink, rlimits.
 *
 * @module
 */
import { libc } from "./_libc.ts";
import { check, Errno, errno, ErrnoError } from "./errno.ts";
import { F_GETFL, F_SETFL, O_NONBLOCK } from "./constants.ts";
import { RLIMIT } from "./layout.ts";
import { cString, getU64, setU64 } from "./pointers.ts";

/** Closes `fd`. EINTR is not retried (on Linux the fd is gone either way). */
export function close(fd: number): void {
  if (libc.close(fd) === -1) {
    const e = errno();
    if (e !== Errno.EINTR) throw new ErrnoError(e, "close", `fd ${fd}`);
  }
}

/** Closes `fd` if it is a descriptor, ignoring errors: for cleanup paths. */
export function closeQuietly(fd: number | undefined): void {
  if (fd !== undefined && fd >= 0) libc.close(fd);
}

/** `read(2)` into `buf`, retrying EINTR. Returns the byte count (0 at end of file). */
export function read(fd: number, buf: Uint8Array): number {
  for (;;) {
    const n = libc.read(fd, buf, BigInt(buf.byteLength));
    if (n >= 0) return n;
    const e = errno();
    if (e !== Errno.EINTR) throw new ErrnoError(e, "read", `fd ${fd}`);
  }
}

/** `write(2)` of `buf`, retrying EINTR. Returns the byte count. */
export function write(fd: number, buf: Uint8Array): number {
  for (;;) {
    const n = libc.write(fd, buf, BigInt(buf.byteLength));
    if (n >= 0) return n;
    const e = errno();
    if (e !== Errno.EINTR) throw new ErrnoError(e, "write", `fd ${fd}`);
  }
}

/**
 * `preadv(2)` into the `iovcnt` iovecs of `iov` (see `IOVEC`). Returns the byte count, or
 * `-errno`: a hot-path call that never throws.
 */
export function preadvRaw(fd: number, iov: Uint8Array, iovcnt: number, offset: bigint): number {
  for (;;) {
    const n = libc.preadv(fd, iov, iovcnt, offset);
    if (n >= 0) return n;
    const e = errno();
    if (e !== Errno.EINTR) return -e;
  }
}

/** `pwritev(2)` from the `iovcnt` iovecs of `iov`. Returns the byte count, or `-errno`. */
export function pwritevRaw(fd: number, iov: Uint8Array, iovcnt: number, offset: bigint): number {
  for (;;) {
    const n = libc.pwritev(fd, iov, iovcnt, offset);
    if (n >= 0) return n;
    const e = errno();
    if (e !== Errno.EINTR) return -e;
  }
}

/** Sets or clears O_NONBLOCK on `fd`. */
export function setNonBlocking(fd: number, on: boolean): void {
  const flags = check(libc.fcntl(fd, F_GETFL, 0), "fcntl(F_GETFL)", `fd ${fd}`);
  const next = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (next !== flags) check(libc.fcntl(fd, F_SETFL, next), "fcntl(F_SETFL)", `fd ${fd}`);
}

/** `fcntl(fd, F_GETFL)`: the file status flags, or -errno. */
export function getFlRaw(fd: number): number {
  const r = libc.fcntl(fd, F_GETFL, 0);
  return r === -1 ? -errno() : r;
}

/** `fcntl(fd, F_SETFL, flags)`: 0 or -errno. */
export function setFlRaw(fd: number, flags: number): number {
  return libc.fcntl(fd, F_SETFL, flags) === -1 ? -errno() : 0;
}

/** True when `fd` is an open descriptor of this process. */
export function isOpen(fd: number): boolean {
  return libc.fcntl(fd, F_GETFL, 0) !== -1;
}

/** `unlink(2)`. */
export function unlink(path: string): void {
  check(libc.unlink(cString(path)), "unlink", path);
}

/** Soft and hard limits of a resource (`RLIMIT_NOFILE`); `Infinity` is RLIM_INFINITY. */
export interface Rlimit {
  /** The soft limit. */
  cur: number;
  /** The hard limit. */
  max: number;
}

function rlimValue(view: DataView, offset: number): number {
  const hi = view.getUint32(offset + 4, true);
  return hi === 0xffffffff ? Infinity : getU64(view, offset);
}

/** `getrlimit(2)`. */
export function getrlimit(resource: number): Rlimit {
  const buf = new Uint8Array(new ArrayBuffer(RLIMIT.size));
  check(libc.getrlimit(resource, buf), "getrlimit");
  const view = new DataView(buf.buffer);
  return { cur: rlimValue(view, RLIMIT.cur), max: rlimValue(view, RLIMIT.max) };
}

/** `setrlimit(2)`. */
export function setrlimit(resource: number, limit: Rlimit): void {
  const buf = new Uint8Array(new ArrayBuffer(RLIMIT.size));
  const view = new DataView(buf.buffer);
  for (const [offset, value] of [[RLIMIT.cur, limit.cur], [RLIMIT.max, limit.max]] as const) {
    if (value === Infinity) view.setBigUint64(offset, 0xffffffffffffffffn, true);
    else setU64(view, offset, value);
  }
  check(libc.setrlimit(resource, buf), "setrlimit");
}

/** This process's id. */
export function getpid(): number {
  return libc.getpid();
}

/**
 * `_exit(2)`: ends the process now, with `status`, running no exit handlers or destructors (the
 * runtime's teardown can race a signal that arrives meanwhile: a SIGTERM forwarded while the
 * daemon exits made it abort in 1 of 30 sandboxed runs). Output written with `console.*` is
 * already written.
 */
export function exitNow(status: number): never {
  libc._exit(status);
  throw new Error("_exit returned");
}
