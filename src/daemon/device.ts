/**
 * The vhost-user-fs device: one thread, one epoll loop. It accepts a front end on the listening
 * socket, runs the control plane on that connection, and serves the hiprio queue and the request
 * queues with the FUSE session, with synchronous FFI between events.
 *
 * Between batches of events it waits in `epoll_wait`: on its own thread when it may block it
 * (`blocking`, the daemon's Worker) and no request is pending, else on another thread
 * (`Epoll.waitAsync`), so that the isolate's event loop runs: an async file system's Promises
 * settle, and the caller's own code runs when the device shares its isolate.
 *
 * Control-plane changes and queue work happen on this same thread, so a kick or call descriptor
 * is never closed, nor a memory region unmapped, while a request is being served. A request whose
 * file-system call is pending keeps its chain; when its queue stops, the front end goes away or
 * guest memory is remapped, the session marks it dead, and its reply never reaches guest memory.
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
  eventfd,
  eventfdConsume,
  eventfdSignal,
} from "../ffi/mod.ts";
import { type Logger, Throttle } from "../log.ts";
import { FuseSession, PENDING } from "../fuse/session.ts";
import { DescriptorChain } from "../virtqueue/descriptor_chain.ts";
import type { RequestStats } from "../fuse/request_stats.ts";
import type { FileSystem } from "../filesystem/filesystem.ts";
import { Connection, ProtocolError } from "../vhost_user/connection.ts";
import { PROTOCOL_FEATURES, VhostUserBackend, VIRTIO_FS_FEATURES } from "../vhost_user/backend.ts";
import {
  bit,
  requestName,
  VHOST_USER_PROTOCOL_F_CONFIG,
  VHOST_USER_PROTOCOL_F_SHMEM,
} from "../wire/vhost_user.ts";
import { VIRTIO_FS_CONFIG, VIRTIO_FS_TAG_SIZE } from "../wire/virtio.ts";
import { DAX_RANGE, DaxWindow, type WindowMapper } from "../fuse/dax.ts";
import { Errno, ErrnoError } from "../ffi/errno.ts";

const TOKEN_LISTEN = 1;
const TOKEN_CONNECTION = 2;
const TOKEN_STOP = 3;
/** The device's own eventfd: an async reply wakes a wait on another thread with it. */
const TOKEN_WAKE = 4;
/** The back-end request channel: answers to SHMEM_MAP / SHMEM_UNMAP. */
const TOKEN_CHANNEL = 5;
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
  /**
   * Whether `run()` may block its thread in `epoll_wait` while no request is pending (a Worker
   * of its own). False (the default): it always waits on another thread, so the isolate's event
   * loop keeps running (the device shares its isolate with other code).
   */
  blocking?: boolean;
  /** The file system the FUSE session serves. */
  fileSystem: FileSystem;
  /**
   * JIT warm-up run in slices while the device is idle (see `warmup.ts`); `step` returns true
   * when done, then `close` is called. None: no warm-up.
   */
  warmup?: { step(sliceMs: number): boolean; close(): void; readonly requests: number };
  /**
   * The tag the device's configuration space holds (GET_CONFIG, offered with PROTOCOL_F_CONFIG
   * only when given, as Rust virtiofsd's `--tag`): QEMU's generic vhost-user device reads it.
   */
  tag?: string;
  /**
   * The DAX cache window's size in bytes (PROTOCOL_F_SHMEM, GET_SHMEM_CONFIG); 0 or none: no
   * window. Check it with `cacheSizeProblem`.
   */
  cacheSize?: number;
}

/** Memory slots for guest RAM regions, besides one per 2 MiB range of the cache window. */
export const RAM_MEM_SLOTS = 32;
/** QEMU's vhost-user limit of memory slots. */
export const MAX_MEM_SLOTS = 512;
/** The largest cache window: a power of two whose ranges fit the slots left after RAM. */
export const MAX_CACHE_SIZE: number = 2 ** Math.floor(
  Math.log2((MAX_MEM_SLOTS - RAM_MEM_SLOTS) * DAX_RANGE),
);

/**
 * Why `size` cannot be a cache window (undefined when it can): 0 (none), or a power of two from
 * 2 MiB (one DAX range) to MAX_CACHE_SIZE.
 */
export function cacheSizeProblem(size: number): string | undefined {
  if (size === 0) return undefined;
  if (!Number.isSafeInteger(size) || size < DAX_RANGE || (size & (size - 1)) !== 0) {
    return `${size} is not a power of two of at least 2 MiB`;
  }
  if (size > MAX_CACHE_SIZE) {
    return `${size} needs more than the ${MAX_MEM_SLOTS} memory slots a front end allows (at most ${
      MAX_CACHE_SIZE / 2 ** 20
    } MiB)`;
  }
  return undefined;
}

/** Why `tag` cannot be the configuration space's tag (undefined when it can): 1 to 36 bytes. */
export function tagProblem(tag: string): string | undefined {
  const n = new TextEncoder().encode(tag).length;
  return n === 0 || n > VIRTIO_FS_TAG_SIZE
    ? `'${tag}' is ${n} bytes; a tag is 1 to ${VIRTIO_FS_TAG_SIZE} bytes`
    : undefined;
}

/** The virtio-fs configuration space: the tag (NUL-padded) and the request queues. */
export function fsConfigSpace(tag: string, requestQueues: number): Uint8Array {
  const problem = tagProblem(tag);
  if (problem !== undefined) throw new RangeError(`tag: ${problem}`);
  const config = new Uint8Array(VIRTIO_FS_CONFIG.size);
  config.set(new TextEncoder().encode(tag), VIRTIO_FS_CONFIG.tag);
  new DataView(config.buffer).setUint32(VIRTIO_FS_CONFIG.numRequestQueues, requestQueues, true);
  return config;
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
  /** Requests whose file-system call returned a Promise. */
  asyncRequests: number;
  /** Their replies dropped: the queue was reset, or memory remapped, before they settled. */
  lateReplies: number;
}

/** How long a stopping device waits for the front end to unmap the cache window. */
const STOP_UNMAP_MS = 2000;

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
    asyncRequests: 0,
    lateReplies: 0,
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
  /** Queues to which async replies went since the last interrupt round. */
  readonly #replied: boolean[];
  /** A queue stopped taking chains because MAX_PENDING requests were pending. */
  #stalled = false;
  /** Chains for queues whose last chain went with a pending request. */
  readonly #spareChains: DescriptorChain[] = [];
  readonly #wakeFd: number;
  /** A wait on another thread is in flight, and whether it has been woken. */
  #waitingAsync = false;
  #woken = false;
  /** The DAX cache window (none without `cacheSize`). */
  readonly #dax: DaxWindow | undefined;
  /** Stopping, once the window is unmapped or at this time (performance.now()). */
  #stopBy: number | undefined;

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
    this.#replied = new Array(queues).fill(false);
    this.#wakeFd = eventfd();
    this.#session.onAsyncReply = (tag, chain, used, live) =>
      this.#asyncReply(tag, chain, used, live);
    const cacheSize = opts.cacheSize ?? 0;
    const problem = cacheSizeProblem(cacheSize);
    if (problem !== undefined) throw new RangeError(`cache size: ${problem}`);
    let protocolFeatures = PROTOCOL_FEATURES;
    if (opts.tag !== undefined) protocolFeatures |= bit(VHOST_USER_PROTOCOL_F_CONFIG);
    if (cacheSize > 0) {
      protocolFeatures |= bit(VHOST_USER_PROTOCOL_F_SHMEM);
      this.#dax = new DaxWindow(cacheSize, this.#windowMapper(), opts.log);
      this.#session.dax = this.#dax;
    }
    this.#backend = new VhostUserBackend(
      {
        queues,
        features: VIRTIO_FS_FEATURES,
        protocolFeatures,
        maxMemSlots: RAM_MEM_SLOTS + cacheSize / DAX_RANGE,
        deviceConfig: opts.tag === undefined
          ? undefined
          : fsConfigSpace(opts.tag, opts.requestQueues),
        shmemSizes: cacheSize > 0 ? [cacheSize] : undefined,
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
        memoryChanging: () => this.#session.invalidate(),
        channelChanged: (channel) => {
          const old = this.#backend?.channel;
          if (old !== undefined && old.open) this.#epoll.remove(old.fd);
          if (channel !== undefined) this.#epoll.add(channel.fd, EPOLLIN, TOKEN_CHANNEL);
        },
      },
      opts.log,
    );
  }

  /** The cache window's mapper: SHMEM_MAP / SHMEM_UNMAP of region 0 on the back-end channel. */
  #windowMapper(): WindowMapper {
    const noChannel = () =>
      Promise.reject(new ErrnoError(Errno.EIO, "SHMEM_MAP", "no back-end channel"));
    const available = (): boolean =>
      this.#backend.negotiated(VHOST_USER_PROTOCOL_F_SHMEM) && this.#backend.channel?.open === true;
    return {
      get available(): boolean {
        return available();
      },
      map: (fd, fdOffset, shmOffset, len, writable) =>
        this.#backend.channel?.map(0, fd, fdOffset, shmOffset, len, writable) ?? noChannel(),
      unmap: (shmOffset, len) => this.#backend.channel?.unmap(0, shmOffset, len) ?? noChannel(),
    };
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
      if (!session.ready) {
        // MAX_PENDING requests are pending: the rest wait in the ring until one settles.
        this.#stalled = true;
        break;
      }
      if (!queue.pop(memory, this.#onBadChain)) {
        if (!queue.armKick()) break;
        continue;
      }
      // One request in SAMPLE_EVERY is timed, for the per-opcode service times.
      let len: number;
      if (requests.timeNext()) {
        const t0 = performance.now();
        len = session.handle(queue.chain, index);
        requests.sample(session.lastOpcode, (performance.now() - t0) * 1000);
      } else {
        len = session.handle(queue.chain, index);
      }
      if (len === PENDING) {
        // The request keeps its chain; the queue pops into another one.
        queue.replaceChain(this.#spareChains.pop() ?? new DescriptorChain());
        this.stats.asyncRequests++;
      } else {
        queue.pushUsed(queue.chain.head, len);
      }
      served++;
    }
    if (queue.usedIdx !== usedBefore) this.#interrupt(index);
    this.stats.chains += served;
    if (served > 0 && this.#warming) this.#lastServed = performance.now();
  }

  /** Interrupts the driver of queue `index` unless its used_event says it need not be. */
  #interrupt(index: number): void {
    const v = this.#backend.vrings[index];
    const queue = v?.queue;
    if (v === undefined || queue === undefined) return;
    if (queue.needsInterrupt() && v.callFd >= 0) {
      this.stats.interrupts++;
      eventfdSignal(v.callFd);
    } else this.stats.interruptsSuppressed++;
  }

  /**
   * The reply of a request whose file-system call settled (the session wrote it into `chain`
   * unless the request is dead): onto the used ring, and the interrupt after this batch.
   */
  #asyncReply(index: number, chain: DescriptorChain, used: number, live: boolean): void {
    const queue = this.#backend.vrings[index]?.queue;
    if (live && queue !== undefined && this.#backend.isRunning(index)) {
      queue.pushUsed(chain.head, used);
      this.#replied[index] = true;
    } else {
      this.stats.lateReplies++;
    }
    if (this.#spareChains.length < 8) this.#spareChains.push(chain);
    if (this.#stalled) {
      this.#stalled = false;
      this.#ready.fill(true);
    }
    if (this.#waitingAsync && !this.#woken) {
      this.#woken = true;
      eventfdSignal(this.#wakeFd);
    }
  }

  /** Interrupts for the async replies of the last batch. */
  #interruptReplied(): void {
    const replied = this.#replied;
    for (let i = 0; i < replied.length; i++) {
      if (replied[i]) {
        replied[i] = false;
        this.#interrupt(i);
      }
    }
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
    this.#replied.fill(false);
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

  /**
   * Accepts and serves front ends until stopped (or, without keepServing, one disconnects).
   * With `blocking`, the thread is the device's while no request is pending; otherwise the
   * isolate's event loop runs whenever the device waits.
   */
  async run(): Promise<DeviceExit> {
    const epoll = this.#epoll;
    const blocking = this.#opts.blocking ?? false;
    epoll.add(this.#opts.listenFd, EPOLLIN, TOKEN_LISTEN);
    epoll.add(this.#opts.stopFd, EPOLLIN, TOKEN_STOP);
    epoll.add(this.#wakeFd, EPOLLIN | EPOLLET, TOKEN_WAKE);
    let warmup = this.#opts.warmup;
    this.#warming = warmup !== undefined;
    const warmupStart = performance.now();
    try {
      for (;;) {
        if (this.#stopBy !== undefined) {
          const dax = this.#dax;
          if (dax === undefined || !dax.busy || performance.now() >= this.#stopBy) {
            if (dax !== undefined && dax.count > 0) {
              this.#log.warn(`stopped with ${dax.count} DAX ranges still mapped`);
            }
            return { status: 0, reason: "stopped" };
          }
        }
        const memory = this.#backend.memory;
        if (memory.retired > 0 && this.#session.pending === 0) memory.releaseRetired();
        const polled = this.#anyPolled();
        // Not while requests or DAX changes are pending: a slice never yields to their Promise
        // reactions.
        const warm = warmup !== undefined && this.#quietMs() >= WARMUP_QUIET_MS &&
          this.#session.pending === 0 && this.#dax?.busy !== true;
        let timeout = warm
          ? 0
          : warmup !== undefined
          ? this.#warmupWait(polled)
          : polled
          ? POLL_INTERVAL_MS
          : -1;
        if (this.#stopBy !== undefined) {
          const left = Math.max(1, Math.ceil(this.#stopBy - performance.now()));
          timeout = timeout < 0 ? left : Math.min(timeout, left);
        }
        let n: number;
        // Pending requests and DAX changes advance in Promise reactions: the event loop must run.
        if (blocking && this.#session.pending === 0 && this.#dax?.busy !== true) {
          n = epoll.wait(timeout);
        } else {
          // Events already there are taken without a thread hop; else wait with the event loop
          // running (async replies come in then, and wake the wait).
          n = epoll.wait(0);
          if (n === 0 && timeout !== 0 && !this.#readyAny()) {
            this.#waitingAsync = true;
            this.#woken = false;
            try {
              n = await epoll.waitAsync(timeout);
            } finally {
              this.#waitingAsync = false;
            }
          }
        }
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
          } else if (token === TOKEN_CHANNEL) {
            this.#backend.channel?.onReadable();
          } else if (token === TOKEN_STOP) {
            eventfdConsume(this.#opts.stopFd);
            if (this.#stopBy === undefined && this.#dax !== undefined) {
              // The front end lives on: leave nothing mapped in its window (nor a memory slot).
              if (this.#dax.count > 0 && this.#dax.available) {
                this.#log.info(`stopping: unmapping ${this.#dax.count} DAX ranges`);
                this.#dax.unmapAll();
                this.#stopBy = performance.now() + STOP_UNMAP_MS;
              }
            }
            if (this.#stopBy === undefined) return { status: 0, reason: "stopped" };
          }
        }
        if (polled) {
          this.#backend.vrings.forEach((v, i) => {
            if (v.kickPolled) this.#ready[i] = true;
          });
        }
        this.#interruptReplied();
        this.#serveReadyQueues();
      }
    } finally {
      if (warmup !== undefined) this.#endWarmup(warmup, warmupStart);
      this.#disconnect("the device stopped");
      epoll.close();
      closeQuietly(this.#wakeFd);
      this.#logStats();
    }
  }

  /** Whether a queue is marked ready (an async reply freed room for a stalled one). */
  #readyAny(): boolean {
    for (const r of this.#ready) if (r) return true;
    return false;
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
        `${s.protocolErrors} protocol errors; ${s.interrupts} interrupts, ${s.interruptsSuppressed} suppressed` +
        (s.asyncRequests > 0
          ? `; ${s.asyncRequests} async requests, ${s.lateReplies} replies dropped after a reset`
          : ""),
    );
    if (s.chains > 0) this.#log.info(`requests: ${this.#session.requests.line()}`);
    const d = this.#dax?.stats;
    if (d !== undefined && d.setups + d.removals > 0) {
      this.#log.info(
        `DAX: ${d.setups} SETUPMAPPING (${d.setupErrors} refused), ${d.removals} REMOVEMAPPING ` +
          `(${d.removalErrors} refused); ${d.maps} maps, ${d.unmaps} unmaps; ` +
          `${d.dropped} dropped at resets`,
      );
    }
  }
}
