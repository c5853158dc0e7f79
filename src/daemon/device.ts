/**
 * The vhost-user-fs device: one thread, one epoll loop. It accepts a front end on the listening
 * socket, runs the control plane on that connection, and serves the hiprio queue and the request
 * queues with the FUSE session, blocking in `epoll_wait` with synchronous FFI between events.
 *
 * Control-plane changes and queue work happen on this same thread, so a kick or call descriptor
 * is never closed, nor a memory region unmapped, while a request is being served.
 *
 * @module
 */
import {
  accept,
  closeQuietly,
  Epoll,
  EPOLLET,
  EPOLLIN,
  EPOLLRDHUP,
  eventfdConsume,
  eventfdSignal,
} from "../ffi/mod.ts";
import { type Logger, Throttle } from "../log.ts";
import { FuseSession } from "../fuse/session.ts";
import type { RequestStats } from "../fuse/request_stats.ts";
import type { FileSystem } from "../filesystem/filesystem.ts";
import { Connection, ProtocolError } from "../vhost_user/connection.ts";
import { PROTOCOL_FEATURES, VhostUserBackend, VIRTIO_FS_FEATURES } from "../vhost_user/backend.ts";
import { requestName } from "../wire/vhost_user.ts";

const TOKEN_LISTEN = 1;
const TOKEN_CONNECTION = 2;
const TOKEN_STOP = 3;
const TOKEN_KICK = 0x100;

/** How often a queue whose kick came with NOFD is polled. */
const POLL_INTERVAL_MS = 1;

/** Options of a device. */
export interface DeviceOptions {
  /** A listening AF_UNIX stream socket (owned by the caller). */
  listenFd: number;
  /** An eventfd: a write to it stops `run()` (owned by the caller). */
  stopFd: number;
  /** Request queues offered besides the hiprio queue (GET_QUEUE_NUM = 1 + this). */
  requestQueues: number;
  /** After the front end disconnects, accept the next one instead of returning. */
  keepServing: boolean;
  /** Where log lines go. */
  log: Logger;
  /** The file system the FUSE session serves. */
  fileSystem: FileSystem;
  /**
   * JIT warm-up run in slices while the device is idle (see `warmup.ts`); `step` returns true
   * when done, then `close` is called. None: no warm-up.
   */
  warmup?: { step(sliceMs: number): boolean; close(): void; readonly requests: number };
}

/** How long one warm-up slice runs while the device is idle. */
const WARMUP_SLICE_MS = 2;
/** How long no request may have come before a warm-up slice runs (the guest comes first). */
const WARMUP_QUIET_MS = 50;

/** Why `run()` returned, and the exit status a daemon should use. */
export interface DeviceExit {
  /** 0: stopped or the front end disconnected; 1: a protocol error ended the connection. */
  status: number;
  /** One line for the log. */
  reason: string;
}

/** The device's counters (also logged at exit). */
export interface DeviceStats {
  /** Front ends accepted. */
  connections: number;
  /** Connections closed for a protocol error. */
  protocolErrors: number;
  /** Malformed descriptor chains refused. */
  badChains: number;
  /** Chains served, over all queues. */
  chains: number;
  /** Interrupts sent to the driver. */
  interrupts: number;
  /** Rounds in which the driver's used_event (or NO_INTERRUPT) let us skip the interrupt. */
  interruptsSuppressed: number;
}

/** A virtio-fs device serving front ends on a listening socket. */
export class VirtioFsDevice {
  /** Counters, logged when `run()` returns. */
  readonly stats: DeviceStats = {
    connections: 0,
    protocolErrors: 0,
    badChains: 0,
    chains: 0,
    interrupts: 0,
    interruptsSuppressed: 0,
  };
  readonly #opts: DeviceOptions;
  readonly #log: Logger;
  readonly #epoll = new Epoll(64);
  readonly #session: FuseSession;
  readonly #backend: VhostUserBackend;
  #connection: Connection | undefined;
  readonly #ready: boolean[];
  readonly #onBadChain = (reason: string): void => this.#badChain(reason);
  #badChainQueue = 0;
  /** While a warm-up is pending: when a queue last had requests (performance.now()). */
  #lastServed = -Infinity;
  #warming = false;
  readonly #badChainLog = new Throttle();

  /** Requests served so far, by opcode, with sampled service times (logged when `run()` returns). */
  get requests(): RequestStats {
    return this.#session.requests;
  }

  /** A device; nothing happens until `run()`. */
  constructor(opts: DeviceOptions) {
    this.#opts = opts;
    this.#log = opts.log;
    this.#session = new FuseSession(opts.log, opts.fileSystem);
    const queues = 1 + opts.requestQueues;
    this.#ready = new Array(queues).fill(false);
    this.#backend = new VhostUserBackend(
      {
        queues,
        features: VIRTIO_FS_FEATURES,
        protocolFeatures: PROTOCOL_FEATURES,
        maxMemSlots: 32,
      },
      {
        kickChanged: (index, fd) => {
          const old = this.#backend.vrings[index]?.kickFd ?? -1;
          if (old >= 0) this.#epoll.remove(old);
          // Edge-triggered: every kick (eventfd write) is one event, so the counter need not be
          // read back, which saves a syscall per kick.
          if (fd >= 0) this.#epoll.add(fd, EPOLLIN | EPOLLET, TOKEN_KICK + index);
        },
        queueReady: (index) => {
          this.#ready[index] = true;
        },
        queueStopped: (index) => {
          this.#ready[index] = false;
          // A stopped ring ends the mount's session (a guest reset or reboot does this).
          this.#session.reset();
        },
      },
      opts.log,
    );
  }

  #badChain(reason: string): void {
    this.stats.badChains++;
    const n = this.stats.badChains;
    if (this.#badChainLog.pass()) {
      this.#log.warn(
        `queue ${this.#badChainQueue}: refused a malformed chain (${n} so far): ${reason}`,
      );
    }
  }

  /** Serves `index` until its avail ring is empty, then interrupts the driver if it wants. */
  #serveQueue(index: number): void {
    const v = this.#backend.vrings[index];
    const queue = v?.queue;
    if (v === undefined || queue === undefined || !this.#backend.isRunning(index)) return;
    const memory = this.#backend.memory;
    const session = this.#session;
    const requests = session.requests;
    this.#badChainQueue = index;
    let served = 0;
    const usedBefore = queue.usedIdx;
    for (;;) {
      while (queue.pop(memory, this.#onBadChain)) {
        // One request in SAMPLE_EVERY is timed, for the per-opcode service times.
        if (requests.timeNext()) {
          const t0 = performance.now();
          const len = session.handle(queue.chain);
          requests.sample(session.lastOpcode, (performance.now() - t0) * 1000);
          queue.pushUsed(queue.chain.head, len);
        } else {
          queue.pushUsed(queue.chain.head, session.handle(queue.chain));
        }
        served++;
      }
      if (!queue.armKick()) break;
    }
    if (queue.usedIdx !== usedBefore) {
      if (queue.needsInterrupt() && v.callFd >= 0) {
        this.stats.interrupts++;
        eventfdSignal(v.callFd);
      } else this.stats.interruptsSuppressed++;
    }
    this.stats.chains += served;
    if (served > 0 && this.#warming) this.#lastServed = performance.now();
  }

  #serveReadyQueues(): void {
    for (let i = 0; i < this.#ready.length; i++) {
      if (this.#ready[i]) {
        this.#ready[i] = false;
        this.#serveQueue(i);
      }
    }
  }

  #disconnect(why: string): void {
    const conn = this.#connection;
    if (conn === undefined) return;
    this.#epoll.remove(conn.fd);
    this.#backend.reset();
    this.#session.reset();
    this.#ready.fill(false);
    conn.close();
    this.#connection = undefined;
    this.#log.info(`front end disconnected: ${why}`);
  }

  #accept(): void {
    const fd = accept(this.#opts.listenFd);
    if (this.#connection !== undefined) {
      this.#log.warn("refused a second front end: one is already connected");
      closeQuietly(fd);
      return;
    }
    this.stats.connections++;
    this.#connection = new Connection(fd);
    this.#epoll.add(fd, EPOLLIN | EPOLLRDHUP, TOKEN_CONNECTION);
    this.#log.info(`front end connected (connection ${this.stats.connections})`);
  }

  /**
   * Handles what the front end sent. Returns an exit when the connection ended and the device
   * should not wait for another.
   */
  #onConnection(): DeviceExit | undefined {
    const conn = this.#connection;
    if (conn === undefined) return undefined;
    let msg;
    try {
      msg = conn.receive();
      if (msg !== undefined) {
        if (this.#log.enabled("debug")) {
          this.#log.debug(
            `${requestName(msg.request)} flags 0x${msg.flags.toString(16)} size ${msg.size}` +
              (msg.fds.length > 0 ? ` fds ${msg.fds.length}` : ""),
          );
        }
        this.#backend.handle(msg, conn);
        return undefined;
      }
    } catch (e) {
      const text = e instanceof ProtocolError
        ? e.message
        : `internal error: ${e instanceof Error ? e.stack ?? e.message : e}`;
      this.stats.protocolErrors++;
      this.#log.error(`closing the connection: ${text}`);
      this.#disconnect("protocol error");
      return this.#opts.keepServing ? undefined : { status: 1, reason: `protocol error: ${text}` };
    }
    if (conn.messages === 0) {
      // A peer that connects and leaves without a word (another daemon probing whether this
      // socket is live) is not the front end going away.
      this.#disconnect("a peer closed the connection before sending anything");
      return undefined;
    }
    this.#disconnect("the front end closed the connection");
    return this.#opts.keepServing ? undefined : { status: 0, reason: "the front end disconnected" };
  }

  /** Whether a started queue's kick came with NOFD (so the rings are polled). */
  #anyPolled(): boolean {
    for (const v of this.#backend.vrings) if (v.kickPolled && v.queue !== undefined) return true;
    return false;
  }

  /** Accepts and serves front ends until stopped (or, without keepServing, one disconnects). */
  run(): DeviceExit {
    const epoll = this.#epoll;
    epoll.add(this.#opts.listenFd, EPOLLIN, TOKEN_LISTEN);
    epoll.add(this.#opts.stopFd, EPOLLIN, TOKEN_STOP);
    let warmup = this.#opts.warmup;
    this.#warming = warmup !== undefined;
    const warmupStart = performance.now();
    try {
      for (;;) {
        const polled = this.#anyPolled();
        const warm = warmup !== undefined && this.#quietMs() >= WARMUP_QUIET_MS;
        const timeout = warm
          ? 0
          : warmup !== undefined
          ? this.#warmupWait(polled)
          : polled
          ? POLL_INTERVAL_MS
          : -1;
        const n = epoll.wait(timeout);
        if (n === 0 && warm && warmup !== undefined) {
          // Idle: a slice of the warm-up (a message or a kick waits at most one slice).
          let done = true;
          try {
            done = warmup.step(WARMUP_SLICE_MS);
          } catch (e) {
            this.#log.debug(`warm-up stopped: ${e instanceof Error ? e.message : e}`);
          }
          if (done) {
            this.#endWarmup(warmup, warmupStart);
            warmup = undefined;
            this.#warming = false;
          }
          continue;
        }
        for (let i = 0; i < n; i++) {
          const token = epoll.token(i);
          if (token >= TOKEN_KICK) {
            this.#ready[token - TOKEN_KICK] = true;
          } else if (token === TOKEN_CONNECTION) {
            const exit = this.#onConnection();
            if (exit !== undefined) return exit;
          } else if (token === TOKEN_LISTEN) {
            this.#accept();
          } else if (token === TOKEN_STOP) {
            eventfdConsume(this.#opts.stopFd);
            return { status: 0, reason: "stopped" };
          }
        }
        if (polled) {
          this.#backend.vrings.forEach((v, i) => {
            if (v.kickPolled) this.#ready[i] = true;
          });
        }
        this.#serveReadyQueues();
      }
    } finally {
      if (warmup !== undefined) this.#endWarmup(warmup, warmupStart);
      this.#disconnect("the device stopped");
      epoll.close();
      this.#logStats();
    }
  }

  /** How long no queue has had requests. */
  #quietMs(): number {
    return performance.now() - this.#lastServed;
  }

  /** How long to wait for events before the guest has been quiet long enough for a slice. */
  #warmupWait(polled: boolean): number {
    const left = Math.ceil(WARMUP_QUIET_MS - this.#quietMs());
    return Math.min(left, polled ? POLL_INTERVAL_MS : WARMUP_QUIET_MS);
  }

  #endWarmup(warmup: NonNullable<DeviceOptions["warmup"]>, start: number): void {
    try {
      warmup.close();
    } catch (e) {
      this.#log.debug(`warm-up cleanup: ${e instanceof Error ? e.message : e}`);
    }
    this.#log.debug(
      `warm-up: ${warmup.requests} requests served to itself, ${
        (performance.now() - start).toFixed(0)
      } ms since the device started`,
    );
  }

  #logStats(): void {
    const s = this.stats;
    this.#log.info(
      `served ${s.chains} chains on ${s.connections} connections; ${s.badChains} malformed chains, ` +
        `${s.protocolErrors} protocol errors; ${s.interrupts} interrupts, ${s.interruptsSuppressed} suppressed`,
    );
    if (s.chains > 0) this.#log.info(`requests: ${this.#session.requests.line()}`);
  }
}
