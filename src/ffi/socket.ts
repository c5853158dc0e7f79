/**
 * UNIX stream sockets with file descriptor passing (SCM_RIGHTS), and datagram sockets (syslog).
 *
 * @module
 */
import { libc } from "./_libc.ts";
import { check, Errno, errno, ErrnoError } from "./errno.ts";
import {
  AF_UNIX,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_NOSIGNAL,
  SCM_RIGHTS,
  SHUT_RDWR,
  SO_ACCEPTCONN,
  SO_PEERCRED,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOL_SOCKET,
} from "./constants.ts";
import { CMSGHDR, cmsgLen, cmsgSpace, IOVEC, MSGHDR, SOCKADDR_UN, UCRED } from "./layout.ts";
import { addressOf, setU64, stableBytes } from "./pointers.ts";

const encoder = new TextEncoder();

/** A `struct sockaddr_un` for `path`, and its length. Throws ENAMETOOLONG naming the path. */
export function sockaddrUn(path: string): { addr: Uint8Array; len: number } {
  const bytes = encoder.encode(path);
  if (bytes.length >= SOCKADDR_UN.pathMax) {
    throw new ErrnoError(Errno.ENAMETOOLONG, "sockaddr_un", `${path} (over 107 bytes)`);
  }
  const addr = stableBytes(SOCKADDR_UN.size);
  new DataView(addr.buffer).setUint16(SOCKADDR_UN.family, AF_UNIX, true);
  addr.set(bytes, SOCKADDR_UN.path);
  return { addr, len: SOCKADDR_UN.path + bytes.length + 1 };
}

/**
 * A new AF_UNIX socket, close-on-exec: stream unless `type` says SOCK_DGRAM; `flags` may add
 * SOCK_NONBLOCK.
 */
export function unixSocket(flags = 0, type: number = SOCK_STREAM): number {
  return check(libc.socket(AF_UNIX, type | SOCK_CLOEXEC | flags, 0), "socket");
}

/** Binds `fd` to `path` and listens. */
export function bindAndListen(fd: number, path: string, backlog: number): void {
  const { addr, len } = sockaddrUn(path);
  check(libc.bind(fd, addr, len), "bind", path);
  check(libc.listen(fd, backlog), "listen", path);
}

/**
 * Connects a new socket (stream, or `type`, with `flags`) to `path`; returns it. Throws
 * ErrnoError (ECONNREFUSED, ...).
 */
export function unixConnect(path: string, type: number = SOCK_STREAM, flags = 0): number {
  const fd = unixSocket(flags, type);
  const { addr, len } = sockaddrUn(path);
  for (;;) {
    if (libc.connect(fd, addr, len) === 0) return fd;
    const e = errno();
    if (e === Errno.EINTR) continue;
    libc.close(fd);
    throw new ErrnoError(e, "connect", path);
  }
}

/**
 * A non-blocking AF_UNIX datagram socket connected to `path` (syslog's `/dev/log`): each
 * `write` is one datagram. Throws ErrnoError naming the path (ENOENT, ECONNREFUSED, ...).
 */
export function unixDatagramConnect(path: string): number {
  return unixConnect(path, SOCK_DGRAM, SOCK_NONBLOCK);
}

/** A non-blocking AF_UNIX datagram socket bound to `path` (a syslog daemon's end of it). */
export function unixDatagramBind(path: string): number {
  const fd = unixSocket(SOCK_NONBLOCK, SOCK_DGRAM);
  const { addr, len } = sockaddrUn(path);
  if (libc.bind(fd, addr, len) !== 0) {
    const e = errno();
    libc.close(fd);
    throw new ErrnoError(e, "bind", path);
  }
  return fd;
}

/** Accepts one connection on listening socket `fd` (close-on-exec, plus `flags`). */
export function accept(fd: number, flags = 0): number {
  for (;;) {
    const conn = libc.accept4(fd, null, null, SOCK_CLOEXEC | flags);
    if (conn >= 0) return conn;
    const e = errno();
    if (e !== Errno.EINTR && e !== Errno.ECONNABORTED) {
      throw new ErrnoError(e, "accept4", `fd ${fd}`);
    }
  }
}

/** A connected pair of AF_UNIX stream sockets. */
export function socketPair(): [number, number] {
  const sv = new Int32Array(new ArrayBuffer(8));
  check(
    libc.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, new Uint8Array(sv.buffer)),
    "socketpair",
  );
  return [sv[0] ?? -1, sv[1] ?? -1];
}

/** `shutdown(fd, SHUT_RDWR)`, ignoring errors: wakes a peer blocked on the socket. */
export function shutdownQuietly(fd: number): void {
  libc.shutdown(fd, SHUT_RDWR);
}

function getsockoptInt(fd: number, level: number, name: number): number {
  const val = stableBytes(4);
  const len = stableBytes(4);
  new DataView(len.buffer).setUint32(0, 4, true);
  check(libc.getsockopt(fd, level, name, val, len), "getsockopt", `fd ${fd}`);
  return new DataView(val.buffer).getInt32(0, true);
}

/** True when `fd` is a socket in the listening state (for `--fd` socket activation). */
export function isListeningSocket(fd: number): boolean {
  try {
    return getsockoptInt(fd, SOL_SOCKET, SO_ACCEPTCONN) === 1;
  } catch {
    return false;
  }
}

/** The peer's pid, uid and gid (SO_PEERCRED). */
export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } {
  const val = stableBytes(UCRED.size);
  const len = stableBytes(4);
  new DataView(len.buffer).setUint32(0, UCRED.size, true);
  check(libc.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, val, len), "getsockopt", `fd ${fd}`);
  const v = new DataView(val.buffer);
  return {
    pid: v.getInt32(UCRED.pid, true),
    uid: v.getUint32(UCRED.uid, true),
    gid: v.getUint32(UCRED.gid, true),
  };
}

/** The most descriptors one message may carry (vhost-user allows 8 regions at once). */
export const MAX_FDS_PER_MESSAGE = 16;

/**
 * Sends and receives byte messages with attached descriptors on one stream socket, reusing one
 * msghdr, iovec and control buffer.
 */
export class FdSocket {
  readonly #fd: number;
  readonly #msghdr = stableBytes(MSGHDR.size);
  readonly #iov = stableBytes(IOVEC.size);
  readonly #control = stableBytes(cmsgSpace(4 * MAX_FDS_PER_MESSAGE));
  readonly #msgView = new DataView(this.#msghdr.buffer);
  readonly #iovView = new DataView(this.#iov.buffer);
  readonly #ctlView = new DataView(this.#control.buffer);

  /** Wraps the connected socket `fd` (not owned: closing it is the caller's job). */
  constructor(fd: number) {
    this.#fd = fd;
    setU64(this.#msgView, MSGHDR.iov, addressOf(this.#iov));
    setU64(this.#msgView, MSGHDR.iovlen, 1);
  }

  /** The socket. */
  get fd(): number {
    return this.#fd;
  }

  #prepare(buf: Uint8Array, controlLen: number): void {
    setU64(this.#iovView, IOVEC.base, buf.byteLength === 0 ? 0 : addressOf(buf));
    setU64(this.#iovView, IOVEC.len, buf.byteLength);
    setU64(this.#msgView, MSGHDR.control, controlLen === 0 ? 0 : addressOf(this.#control));
    setU64(this.#msgView, MSGHDR.controllen, controlLen);
    this.#msgView.setInt32(MSGHDR.flags, 0, true);
  }

  /**
   * Sends `buf` with `fds` attached (one `sendmsg`, retried on EINTR, no SIGPIPE). Returns the
   * bytes sent; a short send of a stream socket is completed with plain sends. `flags` adds
   * sendmsg flags (MSG_DONTWAIT: throw EAGAIN rather than wait for a peer that does not read).
   */
  send(buf: Uint8Array, fds: readonly number[] = [], flags = 0): number {
    if (fds.length > MAX_FDS_PER_MESSAGE) {
      throw new ErrnoError(
        Errno.EINVAL,
        "sendmsg",
        `(${fds.length} fds, at most ${MAX_FDS_PER_MESSAGE})`,
      );
    }
    const controlLen = fds.length === 0 ? 0 : cmsgSpace(4 * fds.length);
    if (fds.length > 0) {
      this.#control.fill(0);
      setU64(this.#ctlView, CMSGHDR.len, cmsgLen(4 * fds.length));
      this.#ctlView.setInt32(CMSGHDR.level, SOL_SOCKET, true);
      this.#ctlView.setInt32(CMSGHDR.type, SCM_RIGHTS, true);
      fds.forEach((f, i) => this.#ctlView.setInt32(CMSGHDR.data + 4 * i, f, true));
    }
    this.#prepare(buf, controlLen);
    let sent: number;
    for (;;) {
      sent = libc.sendmsg(this.#fd, this.#msghdr, MSG_NOSIGNAL | flags);
      if (sent >= 0) break;
      const e = errno();
      if (e !== Errno.EINTR) throw new ErrnoError(e, "sendmsg", `fd ${this.#fd}`);
    }
    while (sent < buf.byteLength) {
      this.#prepare(buf.subarray(sent), 0);
      const n = libc.sendmsg(this.#fd, this.#msghdr, MSG_NOSIGNAL | flags);
      if (n < 0) {
        const e = errno();
        if (e === Errno.EINTR) continue;
        throw new ErrnoError(e, "sendmsg", `fd ${this.#fd}`);
      }
      sent += n;
    }
    return sent;
  }

  /**
   * One `recvmsg` into `buf` (retried on EINTR); received descriptors are close-on-exec and pushed
   * onto `fds`. Returns the byte count (0: the peer closed). If the kernel had to drop
   * descriptors for lack of room (MSG_CTRUNC), the ones received are closed and EMSGSIZE thrown.
   */
  recv(buf: Uint8Array, fds: number[], flags = 0): number {
    this.#control.fill(0);
    this.#prepare(buf, this.#control.byteLength);
    let n: number;
    for (;;) {
      n = libc.recvmsg(this.#fd, this.#msghdr, MSG_CMSG_CLOEXEC | flags);
      if (n >= 0) break;
      const e = errno();
      if (e !== Errno.EINTR) throw new ErrnoError(e, "recvmsg", `fd ${this.#fd}`);
    }
    const controlLen = this.#msgView.getUint32(MSGHDR.controllen, true);
    const received: number[] = [];
    let off = 0;
    while (off + CMSGHDR.size <= controlLen) {
      const len = this.#ctlView.getUint32(off + CMSGHDR.len, true);
      if (len < CMSGHDR.size) break;
      const level = this.#ctlView.getInt32(off + CMSGHDR.level, true);
      const type = this.#ctlView.getInt32(off + CMSGHDR.type, true);
      if (level === SOL_SOCKET && type === SCM_RIGHTS) {
        for (let i = CMSGHDR.data; i + 4 <= len; i += 4) {
          received.push(this.#ctlView.getInt32(off + i, true));
        }
      }
      off += cmsgSpace(len - CMSGHDR.size);
    }
    if ((this.#msgView.getInt32(MSGHDR.flags, true) & MSG_CTRUNC) !== 0) {
      for (const f of received) libc.close(f);
      throw new ErrnoError(Errno.EMSGSIZE, "recvmsg", `fd ${this.#fd} (descriptors truncated)`);
    }
    fds.push(...received);
    return n;
  }
}
