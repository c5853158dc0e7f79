/**
 * The vhost-user back end's control plane: feature negotiation, guest memory, and vring setup,
 * start and stop, for one front-end connection at a time. The device (which owns the event loop
 * and the queues' work) learns of ring changes through `BackendHooks`.
 *
 * Every request is checked before it changes anything: payload size, attached descriptor count,
 * queue index, ring size, addresses and feature bits. A malformed request throws
 * `ProtocolError` (the caller closes the connection); a well-formed request we refuse gets a
 * failure reply when the front end asked for one (REPLY_ACK), and is otherwise a protocol error.
 *
 * @module
 */
import { close, closeQuietly, getU64, setNonBlocking } from "../ffi/mod.ts";
import {
  fileProblem,
  GuestMemory,
  MAX_GUEST_ADDRESS,
  type RegionDescription,
  regionProblem,
} from "../memory/guest_memory.ts";
import { type RingAddresses, SplitQueue } from "../virtqueue/split_queue.ts";
import { queueSizeProblem } from "../wire/virtio.ts";
import { type Connection, type Message, ProtocolError } from "./connection.ts";
import { BackendChannel } from "./backend_channel.ts";
import * as M from "../wire/vhost_user.ts";
import * as V from "../wire/virtio.ts";
import type { Logger } from "../log.ts";

/** What the device hears from the control plane. */
export interface BackendHooks {
  /**
   * Queue `index`'s kick descriptor changes: stop watching the old one (it is closed right after
   * this returns) and watch `fd` when it is a descriptor (-1: none, poll the ring instead).
   */
  kickChanged(index: number, fd: number): void;
  /** Queue `index` is started, enabled and mapped: take whatever the driver has made available. */
  queueReady(index: number): void;
  /** Queue `index` stopped (GET_VRING_BASE, reset or disconnect). */
  queueStopped(index: number): void;
  /**
   * Guest memory is about to be unmapped or remapped (SET_MEM_TABLE, REM_MEM_REG): chains taken
   * before must not be touched again.
   */
  memoryChanging?(): void;
  /**
   * The back-end request channel changed (SET_BACKEND_REQ_FD, reset, disconnect): watch the new
   * one's socket, or none. The old one is closed right after this returns.
   */
  channelChanged?(channel: BackendChannel | undefined): void;
}

/** What a back end offers; the device decides. */
export interface BackendConfig {
  /** Total queues (GET_QUEUE_NUM): for virtio-fs, the hiprio queue plus the request queues. */
  queues: number;
  /** Virtio feature bits the device offers (VHOST_USER_F_PROTOCOL_FEATURES is added). */
  features: bigint;
  /** Protocol feature bits offered. */
  protocolFeatures: bigint;
  /** GET_MAX_MEM_SLOTS. */
  maxMemSlots: number;
  /**
   * The device's configuration space, read by GET_CONFIG (offered with PROTOCOL_F_CONFIG by
   * whoever builds `protocolFeatures`). Undefined: GET_CONFIG is not served.
   */
  deviceConfig?: Uint8Array;
  /**
   * The sizes of the device's shared memory regions, for GET_SHMEM_CONFIG (PROTOCOL_F_SHMEM);
   * for virtio-fs, region 0 is the DAX cache window.
   */
  shmemSizes?: readonly number[];
}

/** The default offer of a virtio-fs back end. */
export const VIRTIO_FS_FEATURES: bigint = M.bit(V.VIRTIO_F_VERSION_1) |
  M.bit(V.VIRTIO_RING_F_INDIRECT_DESC) | M.bit(V.VIRTIO_RING_F_EVENT_IDX);

/** The protocol features we implement (CONFIG and SHMEM are added when configured). */
export const PROTOCOL_FEATURES: bigint = M.bit(M.VHOST_USER_PROTOCOL_F_MQ) |
  M.bit(M.VHOST_USER_PROTOCOL_F_REPLY_ACK) | M.bit(M.VHOST_USER_PROTOCOL_F_BACKEND_REQ) |
  M.bit(M.VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD) | M.bit(M.VHOST_USER_PROTOCOL_F_RESET_DEVICE) |
  M.bit(M.VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS);

/** One vring's state as the front end has set it. */
export class Vring {
  num = 0;
  addresses: RingAddresses | undefined;
  base = 0;
  kickFd = -1;
  /** The kick came with NOFD: the ring is polled. */
  kickPolled = false;
  callFd = -1;
  errFd = -1;
  enabled = false;
  /** Started by SET_VRING_KICK, stopped by GET_VRING_BASE. */
  queue: SplitQueue | undefined;
}

class Refused extends Error {}

/** Requests that are well known but not implemented (never offered): a clean failure. */
const UNSUPPORTED = new Set([
  M.VHOST_USER_SET_LOG_BASE,
  M.VHOST_USER_SET_LOG_FD,
  M.VHOST_USER_SEND_RARP,
  M.VHOST_USER_NET_SET_MTU,
  M.VHOST_USER_IOTLB_MSG,
  M.VHOST_USER_SET_VRING_ENDIAN,
  M.VHOST_USER_SET_CONFIG,
  M.VHOST_USER_CREATE_CRYPTO_SESSION,
  M.VHOST_USER_CLOSE_CRYPTO_SESSION,
  M.VHOST_USER_POSTCOPY_ADVISE,
  M.VHOST_USER_POSTCOPY_LISTEN,
  M.VHOST_USER_POSTCOPY_END,
  M.VHOST_USER_GET_INFLIGHT_FD,
  M.VHOST_USER_SET_INFLIGHT_FD,
  M.VHOST_USER_GPU_SET_SOCKET,
  M.VHOST_USER_VRING_KICK,
  M.VHOST_USER_SET_STATUS,
  M.VHOST_USER_GET_STATUS,
]);

/** [min payload, max payload, min fds, max fds] per implemented request. */
const SHAPES: Readonly<Record<number, readonly [number, number, number, number]>> = {
  [M.VHOST_USER_GET_FEATURES]: [0, 8, 0, 0],
  [M.VHOST_USER_SET_FEATURES]: [8, 8, 0, 0],
  [M.VHOST_USER_SET_OWNER]: [0, 8, 0, 0],
  [M.VHOST_USER_RESET_OWNER]: [0, 8, 0, 0],
  [M.VHOST_USER_SET_MEM_TABLE]: [
    M.MEMORY_TABLE.header + M.MEMORY_REGION.size,
    M.MEMORY_TABLE.header + M.MEMORY_TABLE.maxRegions * M.MEMORY_REGION.size,
    1,
    M.MEMORY_TABLE.maxRegions,
  ],
  [M.VHOST_USER_SET_VRING_NUM]: [8, 8, 0, 0],
  [M.VHOST_USER_SET_VRING_ADDR]: [40, 40, 0, 0],
  [M.VHOST_USER_SET_VRING_BASE]: [8, 8, 0, 0],
  [M.VHOST_USER_GET_VRING_BASE]: [8, 8, 0, 0],
  [M.VHOST_USER_SET_VRING_KICK]: [8, 8, 0, 1],
  [M.VHOST_USER_SET_VRING_CALL]: [8, 8, 0, 1],
  [M.VHOST_USER_SET_VRING_ERR]: [8, 8, 0, 1],
  [M.VHOST_USER_GET_PROTOCOL_FEATURES]: [0, 8, 0, 0],
  [M.VHOST_USER_SET_PROTOCOL_FEATURES]: [8, 8, 0, 0],
  [M.VHOST_USER_GET_QUEUE_NUM]: [0, 8, 0, 0],
  [M.VHOST_USER_SET_VRING_ENABLE]: [8, 8, 0, 0],
  [M.VHOST_USER_SET_BACKEND_REQ_FD]: [0, 8, 1, 1],
  [M.VHOST_USER_RESET_DEVICE]: [0, 8, 0, 0],
  [M.VHOST_USER_GET_MAX_MEM_SLOTS]: [0, 8, 0, 0],
  [M.VHOST_USER_ADD_MEM_REG]: [40, 40, 1, 1],
  [M.VHOST_USER_REM_MEM_REG]: [40, 40, 0, 1],
  [M.VHOST_USER_GET_CONFIG]: [
    M.DEVICE_CONFIG.header,
    M.DEVICE_CONFIG.header + M.DEVICE_CONFIG.maxSize,
    0,
    0,
  ],
  [M.VHOST_USER_GET_SHMEM_CONFIG]: [0, 8, 0, 0],
};

function hex(n: bigint | number): string {
  return `0x${n.toString(16)}`;
}

/** The control plane of one connection. */
export class VhostUserBackend {
  readonly config: BackendConfig;
  readonly memory: GuestMemory = new GuestMemory();
  readonly vrings: Vring[];
  /** Virtio features the front end acknowledged. */
  ackedFeatures = 0n;
  /** Protocol features the front end acknowledged. */
  ackedProtocolFeatures = 0n;
  /** The back-end request channel (SET_BACKEND_REQ_FD), when the front end gave one. */
  channel: BackendChannel | undefined;
  readonly #hooks: BackendHooks;
  readonly #log: Logger;
  readonly #u64 = new Uint8Array(new ArrayBuffer(8));
  readonly #u64View = new DataView(this.#u64.buffer);

  constructor(config: BackendConfig, hooks: BackendHooks, log: Logger) {
    this.config = config;
    this.#hooks = hooks;
    this.#log = log;
    this.vrings = Array.from({ length: config.queues }, () => new Vring());
  }

  /** All virtio features offered, PROTOCOL_FEATURES included. */
  get offeredFeatures(): bigint {
    return this.config.features | M.bit(M.VHOST_USER_F_PROTOCOL_FEATURES);
  }

  #has(protocolFeature: number): boolean {
    return (this.ackedProtocolFeatures & M.bit(protocolFeature)) !== 0n;
  }

  /** Whether the front end acknowledged protocol feature `bit`. */
  negotiated(protocolFeature: number): boolean {
    return this.#has(protocolFeature);
  }

  /** A queue runs when started (kick), enabled, and its rings are mapped. */
  isRunning(index: number): boolean {
    const v = this.vrings[index];
    return v !== undefined && v.enabled && v.queue !== undefined && v.queue.usable;
  }

  /**
   * Handles one message; the caller owns the connection. Throws ProtocolError for a malformed
   * request (close the connection). Descriptors attached to the message are always either kept
   * or closed.
   */
  handle(msg: Message, conn: Connection): void {
    const needReply = (msg.flags & M.VHOST_USER_NEED_REPLY_MASK) !== 0;
    try {
      if ((msg.flags & M.VHOST_USER_VERSION_MASK) !== M.VHOST_USER_VERSION) {
        throw new ProtocolError(
          `${M.requestName(msg.request)}: flags ${hex(msg.flags)} carry no version 1`,
        );
      }
      if ((msg.flags & M.VHOST_USER_REPLY_MASK) !== 0) {
        throw new ProtocolError(
          `${M.requestName(msg.request)}: a reply where a request was expected`,
        );
      }
      if (UNSUPPORTED.has(msg.request)) {
        throw new Refused(`${M.requestName(msg.request)} is not supported (never offered)`);
      }
      const shape = SHAPES[msg.request];
      if (shape === undefined) {
        throw new ProtocolError(
          `unknown request ${msg.request} (flags ${hex(msg.flags)}, size ${msg.size})`,
        );
      }
      const [minSize, maxSize, minFds, maxFds] = shape;
      if (msg.size < minSize || msg.size > maxSize) {
        throw new ProtocolError(
          `${M.requestName(msg.request)}: payload size ${msg.size}, expected ${
            minSize === maxSize ? minSize : `${minSize} to ${maxSize}`
          }`,
        );
      }
      if (msg.fds.length < minFds || msg.fds.length > maxFds) {
        throw new ProtocolError(
          `${M.requestName(msg.request)}: ${msg.fds.length} descriptors attached, expected ${
            minFds === maxFds ? minFds : `${minFds} to ${maxFds}`
          }`,
        );
      }
      // Decided before the request runs: RESET_OWNER clears the protocol features it acks with.
      const ack = needReply && this.#has(M.VHOST_USER_PROTOCOL_F_REPLY_ACK);
      const reply = this.#dispatch(msg);
      if (reply !== undefined) conn.reply(msg.request, reply);
      else if (ack) this.#ack(conn, msg, 0n);
    } catch (e) {
      for (const fd of msg.fds.splice(0)) closeQuietly(fd);
      if (e instanceof Refused) {
        if (needReply || msg.request === M.VHOST_USER_GET_VRING_BASE) {
          this.#log.warn(`refused ${M.requestName(msg.request)}: ${e.message}`);
          this.#ack(conn, msg, 1n);
          return;
        }
        if (UNSUPPORTED.has(msg.request)) {
          this.#log.warn(`ignored ${M.requestName(msg.request)}: ${e.message}`);
          return;
        }
        throw new ProtocolError(`${M.requestName(msg.request)} refused: ${e.message}`);
      }
      throw e;
    }
  }

  #ack(conn: Connection, msg: Message, value: bigint): void {
    this.#u64View.setBigUint64(0, value, true);
    conn.reply(msg.request, this.#u64);
  }

  #u64Reply(value: bigint | number): Uint8Array {
    this.#u64View.setBigUint64(0, BigInt(value), true);
    return this.#u64;
  }

  #vring(index: number, request: number): Vring {
    const v = this.vrings[index];
    if (v === undefined) {
      throw new ProtocolError(
        `${
          M.requestName(request)
        }: queue index ${index} is out of range (${this.vrings.length} queues)`,
      );
    }
    return v;
  }

  #dispatch(msg: Message): Uint8Array | undefined {
    const p = msg.payload;
    switch (msg.request) {
      case M.VHOST_USER_GET_FEATURES:
        return this.#u64Reply(this.offeredFeatures);
      case M.VHOST_USER_SET_FEATURES: {
        const features = p.getBigUint64(0, true);
        const extra = features & ~this.offeredFeatures;
        if (extra !== 0n) throw new Refused(`features ${hex(extra)} were not offered`);
        this.ackedFeatures = features;
        return undefined;
      }
      case M.VHOST_USER_GET_PROTOCOL_FEATURES:
        return this.#u64Reply(this.config.protocolFeatures);
      case M.VHOST_USER_SET_PROTOCOL_FEATURES: {
        const features = p.getBigUint64(0, true);
        const extra = features & ~this.config.protocolFeatures;
        if (extra !== 0n) throw new Refused(`protocol features ${hex(extra)} were not offered`);
        this.ackedProtocolFeatures = features;
        return undefined;
      }
      case M.VHOST_USER_SET_OWNER:
        return undefined;
      case M.VHOST_USER_RESET_OWNER:
        this.reset();
        return undefined;
      case M.VHOST_USER_RESET_DEVICE:
        // "The back-end retains ownership of the device throughout the reset": the protocol
        // features (REPLY_ACK in force) and the back-end channel stay.
        this.reset({ keepProtocol: true });
        return undefined;
      case M.VHOST_USER_GET_QUEUE_NUM:
        return this.#u64Reply(this.config.queues);
      case M.VHOST_USER_GET_MAX_MEM_SLOTS:
        return this.#u64Reply(this.config.maxMemSlots);
      case M.VHOST_USER_SET_MEM_TABLE:
        this.#setMemTable(msg);
        return undefined;
      case M.VHOST_USER_ADD_MEM_REG:
        this.#addMemReg(msg);
        return undefined;
      case M.VHOST_USER_REM_MEM_REG:
        this.#remMemReg(msg);
        return undefined;
      case M.VHOST_USER_SET_VRING_NUM: {
        const v = this.#vring(p.getUint32(0, true), msg.request);
        const num = p.getUint32(4, true);
        const problem = queueSizeProblem(num);
        if (problem !== undefined) throw new ProtocolError(`SET_VRING_NUM: ${problem}`);
        if (v.queue !== undefined) throw new Refused("the ring is started; stop it first");
        v.num = num;
        return undefined;
      }
      case M.VHOST_USER_SET_VRING_ADDR:
        this.#setVringAddr(p);
        return undefined;
      case M.VHOST_USER_SET_VRING_BASE: {
        const v = this.#vring(p.getUint32(0, true), msg.request);
        const base = p.getUint32(4, true);
        if (base > 0xffff) throw new ProtocolError(`SET_VRING_BASE: base ${base} is over 65535`);
        if (v.queue !== undefined) throw new Refused("the ring is started; stop it first");
        v.base = base;
        return undefined;
      }
      case M.VHOST_USER_GET_VRING_BASE: {
        const index = p.getUint32(0, true);
        const v = this.#vring(index, msg.request);
        const base = v.queue?.lastAvailIdx ?? v.base;
        this.#stop(index);
        v.base = base;
        const out = new Uint8Array(new ArrayBuffer(8));
        const view = new DataView(out.buffer);
        view.setUint32(0, index, true);
        view.setUint32(4, base, true);
        return out;
      }
      case M.VHOST_USER_SET_VRING_KICK:
      case M.VHOST_USER_SET_VRING_CALL:
      case M.VHOST_USER_SET_VRING_ERR:
        this.#setVringFd(msg);
        return undefined;
      case M.VHOST_USER_SET_VRING_ENABLE: {
        const index = p.getUint32(0, true);
        const v = this.#vring(index, msg.request);
        const enable = p.getUint32(4, true);
        if (enable > 1) throw new ProtocolError(`SET_VRING_ENABLE: state ${enable} is not 0 or 1`);
        if ((this.ackedFeatures & M.bit(M.VHOST_USER_F_PROTOCOL_FEATURES)) === 0n) {
          throw new Refused("PROTOCOL_FEATURES was not negotiated");
        }
        v.enabled = enable === 1;
        if (this.isRunning(index)) this.#hooks.queueReady(index);
        return undefined;
      }
      case M.VHOST_USER_SET_BACKEND_REQ_FD: {
        if (!this.#has(M.VHOST_USER_PROTOCOL_F_BACKEND_REQ)) {
          throw new Refused("BACKEND_REQ was not negotiated");
        }
        const fd = msg.fds.shift() ?? -1;
        let channel: BackendChannel;
        try {
          channel = new BackendChannel(fd, this.#log);
        } catch (e) {
          closeQuietly(fd);
          throw new Refused(`its descriptor is unusable: ${(e as Error).message}`);
        }
        this.#setChannel(channel);
        return undefined;
      }
      case M.VHOST_USER_GET_CONFIG:
        return this.#getConfig(msg);
      case M.VHOST_USER_GET_SHMEM_CONFIG: {
        if (!this.#has(M.VHOST_USER_PROTOCOL_F_SHMEM)) {
          throw new Refused("SHMEM was not negotiated");
        }
        const sizes = this.config.shmemSizes ?? [];
        const out = new Uint8Array(new ArrayBuffer(M.SHMEM_CONFIG.size));
        const view = new DataView(out.buffer);
        view.setUint32(M.SHMEM_CONFIG.nregions, sizes.length, true);
        sizes.forEach((size, i) =>
          view.setBigUint64(M.SHMEM_CONFIG.memorySizes + 8 * i, BigInt(size), true)
        );
        return out;
      }
    }
    throw new ProtocolError(`unhandled request ${M.requestName(msg.request)}`);
  }

  /** GET_CONFIG: the asked bytes of the configuration space (zeros past its end). */
  #getConfig(msg: Message): Uint8Array {
    const config = this.config.deviceConfig;
    if (config === undefined || !this.#has(M.VHOST_USER_PROTOCOL_F_CONFIG)) {
      throw new Refused("CONFIG was not negotiated");
    }
    const p = msg.payload;
    const offset = p.getUint32(M.DEVICE_CONFIG.offset, true);
    const size = p.getUint32(M.DEVICE_CONFIG.size, true);
    if (msg.size !== M.DEVICE_CONFIG.header + size || offset + size > M.DEVICE_CONFIG.maxSize) {
      throw new ProtocolError(
        `GET_CONFIG: offset ${offset} size ${size} in a payload of ${msg.size} bytes`,
      );
    }
    const out = new Uint8Array(new ArrayBuffer(M.DEVICE_CONFIG.header + size));
    const view = new DataView(out.buffer);
    view.setUint32(M.DEVICE_CONFIG.offset, offset, true);
    view.setUint32(M.DEVICE_CONFIG.size, size, true);
    view.setUint32(M.DEVICE_CONFIG.flags, p.getUint32(M.DEVICE_CONFIG.flags, true), true);
    out.set(
      config.subarray(Math.min(offset, config.length), Math.min(offset + size, config.length)),
      M.DEVICE_CONFIG.region,
    );
    return out;
  }

  #setChannel(channel: BackendChannel | undefined): void {
    const old = this.channel;
    this.channel = channel;
    this.#hooks.channelChanged?.(channel);
    old?.close();
  }

  #region(p: DataView, at: number, request: number): RegionDescription {
    const d: RegionDescription = {
      guestPhysAddr: getU64(p, at + M.MEMORY_REGION.guestPhysAddr),
      memorySize: getU64(p, at + M.MEMORY_REGION.memorySize),
      userspaceAddr: getU64(p, at + M.MEMORY_REGION.userspaceAddr),
      mmapOffset: getU64(p, at + M.MEMORY_REGION.mmapOffset),
    };
    for (const [k, v] of Object.entries(d)) {
      if (v >= MAX_GUEST_ADDRESS) {
        throw new Refused(`${M.requestName(request)}: region ${k} ${hex(v)} is beyond 2^53`);
      }
    }
    return d;
  }

  /** Memory changed: every started queue resolves its rings again. */
  #remapQueues(): void {
    this.vrings.forEach((v, index) => {
      if (v.queue === undefined) return;
      const problem = v.queue.map(this.memory);
      if (problem !== undefined) {
        this.#log.warn(`queue ${index} is paused after a memory change: ${problem}`);
      } else if (this.isRunning(index)) this.#hooks.queueReady(index);
    });
  }

  #setMemTable(msg: Message): void {
    const p = msg.payload;
    const n = p.getUint32(0, true);
    if (
      n < 1 || n > M.MEMORY_TABLE.maxRegions ||
      msg.size !== M.MEMORY_TABLE.header + n * M.MEMORY_REGION.size
    ) {
      throw new ProtocolError(`SET_MEM_TABLE: ${n} regions in a payload of ${msg.size} bytes`);
    }
    if (msg.fds.length !== n) {
      throw new ProtocolError(`SET_MEM_TABLE: ${n} regions but ${msg.fds.length} descriptors`);
    }
    const regions = Array.from(
      { length: n },
      (_, i) => this.#region(p, M.MEMORY_TABLE.header + i * M.MEMORY_REGION.size, msg.request),
    );
    // The new table is checked whole before the old one goes: a refused table changes nothing.
    for (let i = 0; i < n; i++) {
      const r = regions[i] as RegionDescription;
      const problem = regionProblem(r, regions.slice(0, i)) ?? fileProblem(r, msg.fds[i] ?? -1);
      if (problem !== undefined) {
        throw new Refused(`region ${i} at guest address ${hex(r.guestPhysAddr)}: ${problem}`);
      }
    }
    // Stop using the old table before it is unmapped.
    this.#pauseQueues();
    this.memory.clear();
    const fds = msg.fds.splice(0);
    try {
      regions.forEach((r, i) => this.memory.add(r, fds[i] ?? -1));
    } catch (e) {
      // GuestMemory.add closed the fd it was given; close the ones it never saw.
      for (const fd of fds.slice(this.memory.regions.length + 1)) closeQuietly(fd);
      this.memory.clear();
      throw new Refused(e instanceof Error ? e.message : String(e));
    } finally {
      this.#remapQueues();
    }
  }

  #pauseQueues(): void {
    this.#hooks.memoryChanging?.();
    for (const v of this.vrings) v.queue?.map(new GuestMemory());
  }

  #addMemReg(msg: Message): void {
    const d = this.#region(msg.payload, M.SINGLE_MEMORY_REGION.region, msg.request);
    const fd = msg.fds.shift() ?? -1;
    if (this.memory.regions.length >= this.config.maxMemSlots) {
      close(fd);
      throw new Refused(`all ${this.config.maxMemSlots} memory slots are in use`);
    }
    try {
      this.memory.add(d, fd);
    } catch (e) {
      throw new Refused(e instanceof Error ? e.message : String(e));
    }
    this.#remapQueues();
  }

  #remMemReg(msg: Message): void {
    const d = this.#region(msg.payload, M.SINGLE_MEMORY_REGION.region, msg.request);
    for (const fd of msg.fds.splice(0)) close(fd);
    // The region leaves the table now but stays mapped until no request is in flight
    // (`GuestMemory.releaseRetired`), so a chain taken before never touches unmapped memory and
    // nothing in flight need be dropped: the cache window's ranges come and go this way.
    const removed = this.memory.remove(d);
    this.#remapQueues();
    if (!removed) {
      throw new Refused(
        `no region at guest address ${hex(d.guestPhysAddr)} of ${d.memorySize} bytes`,
      );
    }
  }

  #setVringAddr(p: DataView): void {
    const index = p.getUint32(M.VRING_ADDR.index, true);
    const v = this.#vring(index, M.VHOST_USER_SET_VRING_ADDR);
    const flags = p.getUint32(M.VRING_ADDR.flags, true);
    if ((flags & M.VHOST_VRING_F_LOG) !== 0) throw new Refused("ring logging was not offered");
    const addresses: RingAddresses = {
      desc: getU64(p, M.VRING_ADDR.desc),
      used: getU64(p, M.VRING_ADDR.used),
      avail: getU64(p, M.VRING_ADDR.avail),
    };
    for (const [k, a] of Object.entries(addresses)) {
      if (a >= MAX_GUEST_ADDRESS) throw new Refused(`${k} address ${hex(a)} is beyond 2^53`);
    }
    if (v.queue !== undefined) throw new Refused("the ring is started; stop it first");
    v.addresses = addresses;
  }

  #setVringFd(msg: Message): void {
    const word = msg.payload.getBigUint64(0, true);
    const index = Number(word & BigInt(M.VHOST_USER_VRING_IDX_MASK));
    const noFd = (word & BigInt(M.VHOST_USER_VRING_NOFD_MASK)) !== 0n;
    if ((word & ~BigInt(M.VHOST_USER_VRING_IDX_MASK | M.VHOST_USER_VRING_NOFD_MASK)) !== 0n) {
      throw new ProtocolError(
        `${M.requestName(msg.request)}: payload ${hex(word)} has unknown bits`,
      );
    }
    const v = this.#vring(index, msg.request);
    if (noFd !== (msg.fds.length === 0)) {
      throw new ProtocolError(
        `${M.requestName(msg.request)}: NOFD is ${
          noFd ? "set" : "clear"
        } but ${msg.fds.length} descriptors came`,
      );
    }
    const fd = noFd ? -1 : msg.fds.shift() ?? -1;
    // A call (or kick) descriptor that nobody drains must not block the device: with O_NONBLOCK
    // a full counter is EAGAIN, and an interrupt already pending is as good as a new one.
    if (fd >= 0) {
      try {
        setNonBlocking(fd, true);
      } catch (e) {
        closeQuietly(fd);
        throw new Refused(`its descriptor is unusable: ${(e as Error).message}`);
      }
    }
    switch (msg.request) {
      case M.VHOST_USER_SET_VRING_CALL:
        closeQuietly(v.callFd);
        v.callFd = fd;
        return;
      case M.VHOST_USER_SET_VRING_ERR:
        closeQuietly(v.errFd);
        v.errFd = fd;
        return;
    }
    // SET_VRING_KICK starts the ring, so it is checked before anything changes.
    if (v.queue === undefined && (v.addresses === undefined || v.num === 0)) {
      closeQuietly(fd);
      throw new Refused(
        `queue ${index} has no ${v.addresses === undefined ? "ring addresses" : "size"}`,
      );
    }
    const old = v.kickFd;
    this.#hooks.kickChanged(index, fd);
    closeQuietly(old);
    v.kickFd = fd;
    v.kickPolled = noFd;
    if (v.queue === undefined && v.addresses !== undefined) {
      const eventIdx = (this.ackedFeatures & M.bit(V.VIRTIO_RING_F_EVENT_IDX)) !== 0n;
      v.queue = new SplitQueue(v.num, v.addresses, v.base, eventIdx);
      const problem = v.queue.map(this.memory);
      if (problem !== undefined) this.#log.warn(`queue ${index} cannot start yet: ${problem}`);
      v.queue.syncUsedIdx();
      if (v.queue.usedIdx !== v.queue.lastAvailIdx) {
        this.#log.debug(
          `queue ${index}: used index ${v.queue.usedIdx} != base ${v.queue.lastAvailIdx}`,
        );
      }
      if ((this.ackedFeatures & M.bit(M.VHOST_USER_F_PROTOCOL_FEATURES)) === 0n) v.enabled = true;
    }
    if (this.isRunning(index)) this.#hooks.queueReady(index);
  }

  #stop(index: number): void {
    const v = this.vrings[index];
    if (v === undefined) return;
    const wasStarted = v.queue !== undefined;
    if (v.kickFd >= 0) {
      this.#hooks.kickChanged(index, -1);
      closeQuietly(v.kickFd);
      v.kickFd = -1;
    }
    v.queue = undefined;
    v.kickPolled = false;
    if (wasStarted) this.#hooks.queueStopped(index);
  }

  /**
   * Back to the state of a new connection: every ring stopped and forgotten, its descriptors
   * closed, features cleared, guest memory unmapped. With `keepProtocol` (RESET_DEVICE) the
   * acknowledged protocol features and the back-end channel stay.
   */
  reset(opts: { keepProtocol?: boolean } = {}): void {
    this.vrings.forEach((v, index) => {
      this.#stop(index);
      closeQuietly(v.callFd);
      closeQuietly(v.errFd);
      Object.assign(v, new Vring());
    });
    this.memory.clear();
    this.ackedFeatures = 0n;
    if (opts.keepProtocol) return;
    this.#setChannel(undefined);
    this.ackedProtocolFeatures = 0n;
  }
}
