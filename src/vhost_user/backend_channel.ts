/**
 * The back-end request channel (the socket the front end hands over with SET_BACKEND_REQ_FD):
 * requests from us to the front end, each with NEED_REPLY, answered in order by a u64 (0 = done).
 * Today that is SHMEM_MAP and SHMEM_UNMAP, the cache window's half of DAX.
 *
 * Nothing here blocks. A request is sent and its answer arrives later, as an event of the
 * device's loop (`onReadable`), because the front end answers only when it gets to it: QEMU,
 * after answering a map, sends ADD_MEM_REG on the main socket and waits for that ack before it
 * reads our next request. A back end that waited on this channel alone would deadlock.
 *
 * @module
 */
import { Errno, ErrnoError } from "../ffi/errno.ts";
import { closeQuietly, setNonBlocking } from "../ffi/mod.ts";
import {
  SHMEM_MAP_MSG,
  VHOST_USER_BACKEND_SHMEM_MAP,
  VHOST_USER_BACKEND_SHMEM_UNMAP,
  VHOST_USER_FLAG_MAP_RW,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
} from "../wire/vhost_user.ts";
import { Connection } from "./connection.ts";
import type { Logger } from "../log.ts";

/** Names of the back-end requests, for logs. */
const NAMES: Readonly<Record<number, string>> = {
  [VHOST_USER_BACKEND_SHMEM_MAP]: "SHMEM_MAP",
  [VHOST_USER_BACKEND_SHMEM_UNMAP]: "SHMEM_UNMAP",
};

/** The most requests in flight on the channel (a window's worth of maps is far below it). */
export const MAX_IN_FLIGHT = 1024;

interface InFlight {
  request: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

/** One back-end channel. Owns its socket. */
export class BackendChannel {
  readonly #conn: Connection;
  readonly #log: Logger;
  readonly #inFlight: InFlight[] = [];
  readonly #payload = new Uint8Array(new ArrayBuffer(SHMEM_MAP_MSG.size));
  readonly #view = new DataView(this.#payload.buffer);
  #closed = false;

  /** Wraps `fd` (owned: `close()` closes it). */
  constructor(fd: number, log: Logger) {
    setNonBlocking(fd, true);
    this.#conn = new Connection(fd);
    this.#log = log;
  }

  /** The socket (for the device's epoll). */
  get fd(): number {
    return this.#conn.fd;
  }

  /** Whether the channel can still carry requests. */
  get open(): boolean {
    return !this.#closed;
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.#inFlight.length;
  }

  /**
   * SHMEM_MAP: `len` bytes of `fd` at `fdOffset` into shared memory region `shmid` at
   * `shmOffset`, writable or not. Settles when the front end answers: rejects with EIO when it
   * refuses or the channel fails. `fd` stays the caller's (the front end receives a copy).
   */
  map(
    shmid: number,
    fd: number,
    fdOffset: number,
    shmOffset: number,
    len: number,
    writable: boolean,
  ): Promise<void> {
    return this.#request(
      VHOST_USER_BACKEND_SHMEM_MAP,
      shmid,
      fdOffset,
      shmOffset,
      len,
      writable ? VHOST_USER_FLAG_MAP_RW : 0,
      [fd],
    );
  }

  /** SHMEM_UNMAP of exactly a range `map` mapped. Settles as `map` does. */
  unmap(shmid: number, shmOffset: number, len: number): Promise<void> {
    return this.#request(VHOST_USER_BACKEND_SHMEM_UNMAP, shmid, 0, shmOffset, len, 0, []);
  }

  #request(
    request: number,
    shmid: number,
    fdOffset: number,
    shmOffset: number,
    len: number,
    flags: number,
    fds: readonly number[],
  ): Promise<void> {
    if (this.#closed) {
      return Promise.reject(
        new ErrnoError(Errno.EIO, NAMES[request] ?? "", "the channel is closed"),
      );
    }
    if (this.#inFlight.length >= MAX_IN_FLIGHT) {
      return Promise.reject(new ErrnoError(Errno.EBUSY, NAMES[request] ?? "", "channel is full"));
    }
    this.#payload.fill(0);
    const v = this.#view;
    v.setUint8(SHMEM_MAP_MSG.shmid, shmid);
    v.setBigUint64(SHMEM_MAP_MSG.fdOffset, BigInt(fdOffset), true);
    v.setBigUint64(SHMEM_MAP_MSG.shmOffset, BigInt(shmOffset), true);
    v.setBigUint64(SHMEM_MAP_MSG.len, BigInt(len), true);
    v.setBigUint64(SHMEM_MAP_MSG.flags, BigInt(flags), true);
    try {
      this.#conn.send(
        request,
        VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK,
        this.#payload,
        fds,
      );
    } catch (e) {
      this.#fail(`cannot send ${NAMES[request]}: ${e instanceof Error ? e.message : e}`);
      return Promise.reject(new ErrnoError(Errno.EIO, NAMES[request] ?? "", "the channel failed"));
    }
    return new Promise((resolve, reject) => this.#inFlight.push({ request, resolve, reject }));
  }

  /**
   * The socket is readable: takes every answer there is. An answer that is not the reply to the
   * oldest request in flight, or a closed channel, ends the channel: every request in flight
   * fails with EIO.
   */
  onReadable(): void {
    while (!this.#closed && this.#conn.pending()) {
      let msg;
      try {
        msg = this.#conn.receive();
      } catch (e) {
        this.#fail(e instanceof Error ? e.message : String(e));
        return;
      }
      if (msg === undefined) {
        this.#fail("the front end closed the channel");
        return;
      }
      for (const fd of msg.fds.splice(0)) closeQuietly(fd);
      const next = this.#inFlight[0];
      if (
        next === undefined || msg.request !== next.request ||
        msg.flags !== (VHOST_USER_VERSION | VHOST_USER_REPLY_MASK) || msg.size !== 8
      ) {
        this.#fail(
          `${
            next === undefined ? "nothing was asked" : `expected the ${NAMES[next.request]} reply`
          }, got message ${msg.request} flags 0x${msg.flags.toString(16)} size ${msg.size}`,
        );
        return;
      }
      this.#inFlight.shift();
      const status = msg.payload.getBigUint64(0, true);
      if (status === 0n) next.resolve();
      else {
        next.reject(
          new ErrnoError(Errno.EIO, NAMES[next.request] ?? "", `refused (status ${status})`),
        );
      }
    }
  }

  #fail(why: string): void {
    if (this.#closed) return;
    this.#log.warn(`back-end channel closed: ${why}`);
    this.close();
  }

  /** Closes the channel; every request in flight fails with EIO. */
  close(): void {
    if (!this.#closed) {
      this.#closed = true;
      this.#conn.close();
    }
    for (const r of this.#inFlight.splice(0)) {
      r.reject(new ErrnoError(Errno.EIO, NAMES[r.request] ?? "", "the channel closed"));
    }
  }
}
