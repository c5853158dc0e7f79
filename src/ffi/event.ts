/**
 * eventfd, epoll and poll.
 *
 * @module
 */
import { libc } from "./_libc.ts";
import { check, Errno, errno, ErrnoError } from "./errno.ts";
import {
  EFD_CLOEXEC,
  EPOLL_CLOEXEC,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_CTL_MOD,
} from "./constants.ts";
import { EPOLL_EVENT, POLLFD } from "./layout.ts";
import { stableBytes } from "./pointers.ts";

/** A new eventfd (close-on-exec, plus `flags` such as EFD_NONBLOCK). */
export function eventfd(initval = 0, flags = 0): number {
  return check(libc.eventfd(initval, EFD_CLOEXEC | flags), "eventfd");
}

const one = new BigUint64Array([1n]);
const oneBytes = new Uint8Array(one.buffer);
const counter = stableBytes(8);
const counterView = new DataView(counter.buffer);

/** Adds 1 to an eventfd's counter (a kick or a call). Returns false if the write failed. */
export function eventfdSignal(fd: number): boolean {
  for (;;) {
    if (libc.write(fd, oneBytes, 8n) === 8) return true;
    if (errno() !== Errno.EINTR) return false;
  }
}

/**
 * Reads and resets an eventfd's counter. Returns the count (exact below 2^53), 0 if a
 * non-blocking eventfd had nothing, or -errno on another failure.
 */
export function eventfdConsume(fd: number): number {
  for (;;) {
    if (libc.read(fd, counter, 8n) === 8) {
      return counterView.getUint32(4, true) * 0x1_0000_0000 + counterView.getUint32(0, true);
    }
    const e = errno();
    if (e === Errno.EAGAIN) return 0;
    if (e !== Errno.EINTR) return -e;
  }
}

/**
 * An epoll instance whose events carry a 32-bit token chosen at `add`. `wait` fills a reused
 * buffer; read the results with `token(i)` and `events(i)`.
 */
export class Epoll {
  readonly #fd: number;
  readonly #events: Uint8Array;
  readonly #view: DataView;
  readonly #max: number;
  readonly #one = stableBytes(EPOLL_EVENT.size);
  readonly #oneView = new DataView(this.#one.buffer);

  /** Creates the instance; `maxEvents` bounds one `wait`. */
  constructor(maxEvents = 64) {
    this.#fd = check(libc.epoll_create1(EPOLL_CLOEXEC), "epoll_create1");
    this.#max = maxEvents;
    this.#events = stableBytes(EPOLL_EVENT.size * maxEvents);
    this.#view = new DataView(this.#events.buffer);
  }

  /** The epoll descriptor. */
  get fd(): number {
    return this.#fd;
  }

  #ctl(op: number, fd: number, events: number, token: number, name: string): void {
    this.#oneView.setUint32(EPOLL_EVENT.events, events, true);
    this.#oneView.setUint32(EPOLL_EVENT.data, token >>> 0, true);
    this.#oneView.setUint32(EPOLL_EVENT.data + 4, 0, true);
    check(libc.epoll_ctl(this.#fd, op, fd, this.#one), name, `fd ${fd}`);
  }

  /** Watches `fd` for `events`, reporting `token`. */
  add(fd: number, events: number, token: number): void {
    this.#ctl(EPOLL_CTL_ADD, fd, events, token, "epoll_ctl(ADD)");
  }

  /** Changes the events or token of a watched `fd`. */
  modify(fd: number, events: number, token: number): void {
    this.#ctl(EPOLL_CTL_MOD, fd, events, token, "epoll_ctl(MOD)");
  }

  /** Stops watching `fd`; a descriptor that is not watched (or closed) is ignored. */
  remove(fd: number): void {
    libc.epoll_ctl(this.#fd, EPOLL_CTL_DEL, fd, this.#one);
  }

  /** Blocks up to `timeoutMs` (-1: forever). Returns the number of ready events; 0 on EINTR. */
  wait(timeoutMs: number): number {
    const n = libc.epoll_wait(this.#fd, this.#events, this.#max, timeoutMs);
    if (n >= 0) return n;
    const e = errno();
    if (e === Errno.EINTR) return 0;
    throw new ErrnoError(e, "epoll_wait");
  }

  /**
   * `wait` on another thread, so that this isolate's event loop (timers, promises, I/O) runs
   * meanwhile; about 9 µs more than `wait`. Do not call `wait` or `waitAsync` again before it
   * settles (they share the result buffer). EINTR (or any failure, whose errno is another
   * thread's) counts as 0 events.
   */
  async waitAsync(timeoutMs: number): Promise<number> {
    const n = await libc.epoll_wait_nonblocking(this.#fd, this.#events, this.#max, timeoutMs);
    return n > 0 ? n : 0;
  }

  /** The token of ready event `i`. */
  token(i: number): number {
    return this.#view.getUint32(i * EPOLL_EVENT.size + EPOLL_EVENT.data, true);
  }

  /** The event bits of ready event `i`. */
  events(i: number): number {
    return this.#view.getUint32(i * EPOLL_EVENT.size + EPOLL_EVENT.events, true);
  }

  /** Closes the epoll descriptor. */
  close(): void {
    libc.close(this.#fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * `poll(2)` on `fds` for `events` each; returns the `revents` of each, in order (all 0 on
 * timeout). EINTR counts as a timeout.
 */
export function poll(fds: readonly number[], events: number, timeoutMs: number): number[] {
  const buf = stableBytes(POLLFD.size * fds.length);
  const view = new DataView(buf.buffer);
  fds.forEach((fd, i) => {
    view.setInt32(i * POLLFD.size + POLLFD.fd, fd, true);
    view.setInt16(i * POLLFD.size + POLLFD.events, events, true);
  });
  const n = libc.poll(buf, BigInt(fds.length), timeoutMs);
  if (n === -1 && errno() !== Errno.EINTR) throw new ErrnoError(errno(), "poll");
  return fds.map((_, i) => view.getUint16(i * POLLFD.size + POLLFD.revents, true));
}
