/**
 * One vhost-user connection: reads whole messages (header, payload and attached descriptors) and
 * sends replies. A peer that stalls mid-message, sends more than a message may hold, or stops
 * reading our replies cannot block the daemon: each such case is an error naming it.
 *
 * @module
 */
import { close, Errno, ErrnoError, FdSocket, MSG_DONTWAIT, poll, POLLIN } from "../ffi/mod.ts";
import {
  HEADER_SIZE,
  MAX_PAYLOAD_SIZE,
  requestName,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
} from "../wire/vhost_user.ts";

/** How long the rest of a message may take to arrive once its first byte has. */
export const MESSAGE_TIMEOUT_MS = 1000;

/** A protocol violation by the peer: the connection is closed with this message logged. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

/** One received message. `fds` are owned by the receiver of the message until handed on. */
export interface Message {
  request: number;
  flags: number;
  size: number;
  /** The payload (a view valid until the next `receive`). */
  payload: DataView;
  /** Attached descriptors. */
  fds: number[];
}

/** A vhost-user message stream over a connected socket. */
export class Connection {
  readonly #socket: FdSocket;
  readonly #buf = new Uint8Array(new ArrayBuffer(HEADER_SIZE + MAX_PAYLOAD_SIZE));
  readonly #view = new DataView(this.#buf.buffer);
  readonly #out = new Uint8Array(new ArrayBuffer(HEADER_SIZE + MAX_PAYLOAD_SIZE));
  readonly #outView = new DataView(this.#out.buffer);
  /** Messages received so far. */
  messages = 0;

  /** Wraps connected socket `fd` (owned: `close()` closes it). */
  constructor(fd: number) {
    this.#socket = new FdSocket(fd);
  }

  /** The socket. */
  get fd(): number {
    return this.#socket.fd;
  }

  /** Reads exactly `buf.length` bytes; false if the peer closed before the first byte. */
  #readExact(buf: Uint8Array, fds: number[], what: string): boolean {
    let got = 0;
    while (got < buf.length) {
      let n: number;
      try {
        n = this.#socket.recv(buf.subarray(got), fds, MSG_DONTWAIT);
      } catch (e) {
        if (e instanceof ErrnoError && e.errno === Errno.EAGAIN) {
          const [revents] = poll([this.fd], POLLIN, MESSAGE_TIMEOUT_MS);
          if (revents === 0) {
            throw new ProtocolError(
              `${what}: ${got} of ${buf.length} bytes arrived, the rest not within ${MESSAGE_TIMEOUT_MS} ms`,
            );
          }
          continue;
        }
        if (e instanceof ErrnoError && e.errno === Errno.ECONNRESET) return false;
        throw e;
      }
      if (n === 0) {
        if (got === 0 && what === "header") return false;
        throw new ProtocolError(`${what}: the peer closed after ${got} of ${buf.length} bytes`);
      }
      got += n;
    }
    return true;
  }

  /**
   * Reads the next message. Returns undefined when the peer has closed the connection cleanly
   * (between messages). Throws ProtocolError for a truncated or oversized message; descriptors
   * that came with a refused message are closed.
   */
  receive(): Message | undefined {
    const fds: number[] = [];
    try {
      if (!this.#readExact(this.#buf.subarray(0, HEADER_SIZE), fds, "header")) {
        for (const fd of fds) close(fd);
        return undefined;
      }
      const request = this.#view.getUint32(0, true);
      const flags = this.#view.getUint32(4, true);
      const size = this.#view.getUint32(8, true);
      if (size > MAX_PAYLOAD_SIZE) {
        throw new ProtocolError(
          `${requestName(request)}: payload size ${size} is over the limit of ${MAX_PAYLOAD_SIZE}`,
        );
      }
      if (size > 0) {
        const body = this.#buf.subarray(HEADER_SIZE, HEADER_SIZE + size);
        if (!this.#readExact(body, fds, `${requestName(request)} payload`)) {
          throw new ProtocolError(`${requestName(request)}: the peer closed before the payload`);
        }
      }
      this.messages++;
      return {
        request,
        flags,
        size,
        payload: new DataView(this.#buf.buffer, HEADER_SIZE, size),
        fds,
      };
    } catch (e) {
      for (const fd of fds) close(fd);
      throw e;
    }
  }

  /** Sends a reply to `request`: flags exactly VERSION | REPLY, then `payload`. */
  reply(request: number, payload: Uint8Array): void {
    this.#outView.setUint32(0, request, true);
    this.#outView.setUint32(4, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, true);
    this.#outView.setUint32(8, payload.length, true);
    this.#out.set(payload, HEADER_SIZE);
    try {
      this.#socket.send(this.#out.subarray(0, HEADER_SIZE + payload.length), [], MSG_DONTWAIT);
    } catch (e) {
      if (e instanceof ErrnoError && e.errno === Errno.EAGAIN) {
        throw new ProtocolError(`${requestName(request)}: the peer does not read its replies`);
      }
      throw e;
    }
  }

  /** Whether a message (or the peer's close) is waiting to be read, without waiting. */
  pending(): boolean {
    const [revents = 0] = poll([this.fd], POLLIN, 0);
    return revents !== 0;
  }

  /**
   * Sends a request (the back-end channel's direction): `flags` as given, `payload`, and `fds`
   * by SCM_RIGHTS. A peer that does not read is a ProtocolError, never a blocked daemon.
   */
  send(request: number, flags: number, payload: Uint8Array, fds: readonly number[] = []): void {
    this.#outView.setUint32(0, request, true);
    this.#outView.setUint32(4, flags, true);
    this.#outView.setUint32(8, payload.length, true);
    this.#out.set(payload, HEADER_SIZE);
    try {
      this.#socket.send(this.#out.subarray(0, HEADER_SIZE + payload.length), fds, MSG_DONTWAIT);
    } catch (e) {
      if (e instanceof ErrnoError && e.errno === Errno.EAGAIN) {
        throw new ProtocolError(`request ${request}: the peer does not read its channel`);
      }
      throw e;
    }
  }

  /** Closes the socket. */
  close(): void {
    close(this.fd);
  }
}
