/**
 * A vhost-user FRONT END for tests: what QEMU 7.2's `vhost-user-fs-pci` is to a virtio-fs back
 * end. It owns guest memory (a memfd), one {@linkcode GuestQueue} per virtqueue, and the kick,
 * call and error eventfds; it negotiates in QEMU's order and checks every reply.
 *
 * Every wait has a timeout and fails with a message naming what it awaited. Waiting for used
 * elements polls the queue's call eventfd (synchronous FFI `poll`: the back end is another
 * process) and re-checks the used ring, never relying on interrupts alone; interrupts are counted.
 *
 * With `cacheWindow` it also plays QEMU 11.1's DAX half: it acks PROTOCOL_F_SHMEM, asks
 * GET_SHMEM_CONFIG, reserves the cache window ({@linkcode CacheWindow}), and services the back
 * end's SHMEM_MAP / SHMEM_UNMAP requests whenever it waits (for used elements or for a reply):
 * answer first, then ADD_MEM_REG / REM_MEM_REG on the main socket and wait for its ack.
 *
 * @example
 * ```ts ignore
 * using fe = await VhostUserFrontend.connect("/tmp/vfsd.sock", { queueSize: 1024 });
 * const q = fe.queue(1); // the first request queue
 * ```
 *
 * @module
 */
import {
  close,
  closeQuietly,
  EFD_NONBLOCK,
  Errno,
  ErrnoError,
  eventfd,
  eventfdConsume,
  eventfdSignal,
  FdSocket,
  MSG_DONTWAIT,
  MSG_PEEK,
  poll,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  socketPair,
  unixConnect,
} from "../ffi/mod.ts";
import {
  bit,
  DEVICE_CONFIG,
  HEADER_SIZE,
  MEMORY_REGION,
  MEMORY_TABLE,
  requestName,
  SHMEM_CONFIG,
  SINGLE_MEMORY_REGION,
  U64_PAYLOAD_SIZE,
  u64Payload,
  VHOST_USER_ADD_MEM_REG,
  VHOST_USER_BACKEND_SHMEM_MAP,
  VHOST_USER_BACKEND_SHMEM_UNMAP,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_GET_CONFIG,
  VHOST_USER_GET_FEATURES,
  VHOST_USER_GET_MAX_MEM_SLOTS,
  VHOST_USER_GET_PROTOCOL_FEATURES,
  VHOST_USER_GET_QUEUE_NUM,
  VHOST_USER_GET_SHMEM_CONFIG,
  VHOST_USER_GET_VRING_BASE,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_PROTOCOL_F_BACKEND_REQ,
  VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD,
  VHOST_USER_PROTOCOL_F_CONFIG,
  VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS,
  VHOST_USER_PROTOCOL_F_MQ,
  VHOST_USER_PROTOCOL_F_REPLY_ACK,
  VHOST_USER_PROTOCOL_F_SHMEM,
  VHOST_USER_REM_MEM_REG,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_SET_BACKEND_REQ_FD,
  VHOST_USER_SET_FEATURES,
  VHOST_USER_SET_MEM_TABLE,
  VHOST_USER_SET_OWNER,
  VHOST_USER_SET_PROTOCOL_FEATURES,
  VHOST_USER_SET_VRING_ADDR,
  VHOST_USER_SET_VRING_BASE,
  VHOST_USER_SET_VRING_CALL,
  VHOST_USER_SET_VRING_ENABLE,
  VHOST_USER_SET_VRING_ERR,
  VHOST_USER_SET_VRING_KICK,
  VHOST_USER_SET_VRING_NUM,
  VHOST_USER_VERSION,
  VRING_ADDR,
  VRING_STATE,
  vringStatePayload,
} from "../wire/vhost_user.ts";
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_FS_CONFIG,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from "../wire/virtio.ts";
import { GuestRam, type GuestRegion, type GuestRegionSpec } from "./guest_ram.ts";
import { type DriverNotifyStats, GuestQueue, type UsedElement } from "./guest_queue.ts";
import {
  CacheWindow,
  type CacheWindowStats,
  parseShmemRequest,
  type WindowMapping,
  type WindowResult,
} from "./cache_window.ts";

export {
  CacheWindow,
  type CacheWindowOptions,
  type CacheWindowStats,
  parseShmemRequest,
  type RefusalKind,
  type ShmemRequest,
  shmemRequestPayload,
  type WindowMapping,
  type WindowResult,
} from "./cache_window.ts";

/** The flags every reply must carry exactly: version 1 | REPLY. */
export const REPLY_FLAGS: number = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK;
/** The largest message payload the front end reads before calling the peer broken. */
const MAX_READ_PAYLOAD = 1 << 20;
/** Where the cache window may start at the lowest: the 64-bit PCI hole, above 4 GiB. */
const WINDOW_FLOOR = 2 ** 32;
/** The cache window's least alignment (a huge page). */
const WINDOW_ALIGN = 2 << 20;
/** The u64 QEMU answers a refused back-end request with (`!!ret`). */
const REFUSED_STATUS = 1n;

/** One vhost-user message, as received. */
export interface VhostUserMessage {
  /** The request code. */
  request: number;
  /** The header flags. */
  flags: number;
  /** The header's payload size. */
  size: number;
  /** The payload (`size` bytes). */
  payload: Uint8Array;
  /** Descriptors received with it (owned by the caller). */
  fds: number[];
}

/** What {@linkcode VhostUserFrontend.recvReply} returns when the peer closed the connection. */
export const PEER_CLOSED = "closed";

/** Options of {@linkcode VhostUserFrontend.connect}; every feature is on unless turned off. */
export interface FrontendOptions {
  /** Descriptors per virtqueue (QEMU's `queue-size`). Default 1024. */
  queueSize?: number;
  /** Request queues after the hiprio queue (QEMU's `num-request-queues`). Default 1. */
  requestQueues?: number;
  /** Guest memory to use (not closed by the front end). Default: a new one from `regions`. */
  memory?: GuestRam;
  /** Regions of a new guest memory (default: one 16 MiB region). */
  regions?: readonly GuestRegionSpec[];
  /** Ack VHOST_USER_PROTOCOL_F_REPLY_ACK if offered. Default true. */
  replyAck?: boolean;
  /** Ack VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS if offered. Default true. */
  configureMemSlots?: boolean;
  /** Ack VHOST_USER_PROTOCOL_F_MQ if offered. Default true. */
  mq?: boolean;
  /** Ack VHOST_USER_PROTOCOL_F_BACKEND_REQ if offered (and send SET_BACKEND_REQ_FD). Default true. */
  backendReq?: boolean;
  /** Ack VIRTIO_RING_F_INDIRECT_DESC if offered. Default true. */
  indirectDesc?: boolean;
  /** Ack VIRTIO_RING_F_EVENT_IDX if offered. Default true. */
  eventIdx?: boolean;
  /** Send SET_MEM_TABLE even when CONFIGURE_MEM_SLOTS is negotiated. Default false. */
  setMemTable?: boolean;
  /** Timeout of every wait for a reply or a used element, in ms. Default 5000. */
  timeoutMs?: number;
  /** How long `connect` retries a refused or missing socket, in ms. Default 5000. */
  connectTimeoutMs?: number;
  /**
   * Play QEMU 11.1's DAX cache window: if the back end offers PROTOCOL_F_SHMEM, ack it (with
   * CONFIG and BACKEND_SEND_FD when offered), ask GET_SHMEM_CONFIG right after the protocol
   * features, reserve region 0 as the window, and service SHMEM_MAP / SHMEM_UNMAP on the back-end
   * channel during every wait. Default false (SHMEM is never acked).
   */
  cacheWindow?: boolean;
  /**
   * Ack VHOST_USER_PROTOCOL_F_CONFIG if offered (for {@linkcode VhostUserFrontend.getConfig}).
   * Default false (`cacheWindow` acks it too).
   */
  config?: boolean;
  /**
   * On a refused SHMEM_MAP / SHMEM_UNMAP, close the back-end channel without answering, as QEMU
   * does. Default false: answer a non-zero u64 and keep the channel. Refusals are counted either
   * way ({@linkcode VhostUserFrontend.windowStats}).
   */
  closeChannelOnRefusal?: boolean;
}

/** Notification counters of one queue. */
export interface QueueStats extends DriverNotifyStats {
  /** Interrupts: the number of times the back end signalled the call eventfd. */
  interrupts: number;
}

interface VringFds {
  kick: number;
  call: number;
  err: number;
  interrupts: number;
  stopped: boolean;
}

function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}

function putRegion(v: DataView, at: number, r: GuestRegion): void {
  v.setBigUint64(at + MEMORY_REGION.guestPhysAddr, BigInt(r.guestPhysAddr), true);
  v.setBigUint64(at + MEMORY_REGION.memorySize, BigInt(r.memorySize), true);
  v.setBigUint64(at + MEMORY_REGION.userspaceAddr, BigInt(r.userspaceAddr), true);
  v.setBigUint64(at + MEMORY_REGION.mmapOffset, BigInt(r.mmapOffset), true);
}

/**
 * A vhost-user front end over one connection: guest memory, virtqueues, eventfds, and the
 * control messages of QEMU 7.2's vhost-user-fs. Dispose it to close everything it owns.
 */
export class VhostUserFrontend {
  readonly #sockFd: number;
  readonly #sock: FdSocket;
  readonly #timeoutMs: number;
  readonly #memory: GuestRam;
  readonly #ownsMemory: boolean;
  readonly #queues: GuestQueue[] = [];
  readonly #vrings: VringFds[] = [];
  #featuresOffered = 0n;
  #featuresAcked = 0n;
  #protocolOffered = 0n;
  #protocolAcked = 0n;
  #backendQueueNum: number | undefined;
  #maxMemSlots: number | undefined;
  #backendChannel: FdSocket | undefined;
  /** Why our end of the back-end channel was closed (a refusal with `closeChannelOnRefusal`). */
  #backendChannelClosed: string | undefined;
  #closeChannelOnRefusal = false;
  #shmemSizes: number[] | undefined;
  #window: CacheWindow | undefined;
  /** Servicing a back-end request (or closing): waits do not service the channel meanwhile. */
  #servicing = false;
  /** Requests whose replies are awaited, outermost first. */
  readonly #awaiting: number[] = [];
  /** Replies to an outer request that arrived during a nested wait (ADD_MEM_REG's ack). */
  readonly #inbox: VhostUserMessage[] = [];
  #closed = false;

  private constructor(sockFd: number, memory: GuestRam, ownsMemory: boolean, timeoutMs: number) {
    this.#sockFd = sockFd;
    this.#sock = new FdSocket(sockFd);
    this.#memory = memory;
    this.#ownsMemory = ownsMemory;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Connects to the back end's socket (retrying ENOENT / ECONNREFUSED until the connect
   * timeout) and runs the whole QEMU 7.2 start-up: realize, then the DRIVER_OK start.
   */
  static async connect(socketPath: string, opts: FrontendOptions = {}): Promise<VhostUserFrontend> {
    const fe = await VhostUserFrontend.connectOnly(socketPath, opts);
    try {
      fe.#negotiate(opts);
    } catch (e) {
      fe.close();
      throw e;
    }
    return fe;
  }

  /**
   * Connects without sending anything, for hostile tests that speak raw messages. Guest memory
   * is created (or taken from `opts.memory`) but no queue exists yet.
   */
  static async connectOnly(
    socketPath: string,
    opts: FrontendOptions = {},
  ): Promise<VhostUserFrontend> {
    const deadline = Date.now() + (opts.connectTimeoutMs ?? 5000);
    let fd: number;
    for (;;) {
      try {
        fd = unixConnect(socketPath);
        break;
      } catch (e) {
        const retry = e instanceof ErrnoError &&
          (e.errno === Errno.ENOENT || e.errno === Errno.ECONNREFUSED);
        if (!retry || Date.now() >= deadline) {
          throw new Error(`Cannot connect to vhost-user socket ${socketPath}`, { cause: e });
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const memory = opts.memory ?? GuestRam.create(opts.regions ? { regions: opts.regions } : {});
    const fe = new VhostUserFrontend(fd, memory, opts.memory === undefined, opts.timeoutMs ?? 5000);
    fe.#closeChannelOnRefusal = opts.closeChannelOnRefusal ?? false;
    return fe;
  }

  // ---- accessors ------------------------------------------------------------------------------

  /** The connected socket. */
  get socketFd(): number {
    return this.#sockFd;
  }

  /** Guest memory. */
  get memory(): GuestRam {
    return this.#memory;
  }

  /** Number of virtqueues set up (hiprio + request queues). */
  get queueCount(): number {
    return this.#queues.length;
  }

  /** The driver side of virtqueue `i` (0 = hiprio, 1.. = request queues). */
  queue(i: number): GuestQueue {
    const q = this.#queues[i];
    if (q === undefined) {
      throw new RangeError(`No virtqueue ${i}: there are ${this.#queues.length}`);
    }
    return q;
  }

  #vring(i: number): VringFds {
    const v = this.#vrings[i];
    if (v === undefined) {
      throw new RangeError(`No virtqueue ${i}: there are ${this.#vrings.length}`);
    }
    return v;
  }

  /** Virtio features: what GET_FEATURES offered and what SET_FEATURES acked. */
  get features(): { offered: bigint; acked: bigint } {
    return { offered: this.#featuresOffered, acked: this.#featuresAcked };
  }

  /** Protocol features: offered by GET_PROTOCOL_FEATURES, acked by SET_PROTOCOL_FEATURES. */
  get protocolFeatures(): { offered: bigint; acked: bigint } {
    return { offered: this.#protocolOffered, acked: this.#protocolAcked };
  }

  /** GET_QUEUE_NUM's answer (undefined without MQ). */
  get backendQueueNum(): number | undefined {
    return this.#backendQueueNum;
  }

  /** GET_MAX_MEM_SLOTS's answer (undefined without CONFIGURE_MEM_SLOTS). */
  get maxMemSlots(): number | undefined {
    return this.#maxMemSlots;
  }

  /** True when VIRTIO_RING_F_INDIRECT_DESC was acked. */
  get indirectDesc(): boolean {
    return (this.#featuresAcked & bit(VIRTIO_RING_F_INDIRECT_DESC)) !== 0n;
  }

  /** True when VIRTIO_RING_F_EVENT_IDX was acked. */
  get eventIdx(): boolean {
    return (this.#featuresAcked & bit(VIRTIO_RING_F_EVENT_IDX)) !== 0n;
  }

  /** Our end of the back-end request channel (SET_BACKEND_REQ_FD), if one was sent and is open. */
  get backendChannelFd(): number | undefined {
    return this.#backendChannelClosed === undefined ? this.#backendChannel?.fd : undefined;
  }

  /** Why the front end closed the back-end channel (a refusal with `closeChannelOnRefusal`). */
  get backendChannelClosed(): string | undefined {
    return this.#backendChannelClosed;
  }

  /** GET_SHMEM_CONFIG's region sizes (undefined when it was not asked). */
  get shmemSizes(): readonly number[] | undefined {
    return this.#shmemSizes;
  }

  /** True when a cache window was set up (`cacheWindow` and SHMEM offered). */
  get hasWindow(): boolean {
    return this.#window !== undefined;
  }

  /**
   * The DAX cache window: size, guest address, live mappings, checked reads
   * (`window.read(offset, len)` throws unless the range is wholly mapped). Throws when there is
   * none.
   */
  get window(): CacheWindow {
    if (this.#window === undefined) {
      throw new Error(
        "No cache window: connect with { cacheWindow: true } to a back end offering " +
          `PROTOCOL_F_SHMEM (offered protocol features ${hex(this.#protocolOffered)})`,
      );
    }
    return this.#window;
  }

  /** The cache window's counters (all 0 without a window). */
  get windowStats(): CacheWindowStats {
    return this.#window?.stats ?? { maps: 0, unmaps: 0, dropped: 0, refused: 0 };
  }

  #protocolHas(b: number): boolean {
    return (this.#protocolAcked & bit(b)) !== 0n;
  }

  // ---- raw messages ---------------------------------------------------------------------------

  /** Sends one message as given: header (`request`, `flags`, payload size), payload, fds. */
  sendRaw(
    request: number,
    flags: number,
    payload: Uint8Array = new Uint8Array(0),
    fds: readonly number[] = [],
  ): void {
    VhostUserFrontend.#sendOn(this.#sock, request, flags, payload, fds);
  }

  static #sendOn(
    sock: FdSocket,
    request: number,
    flags: number,
    payload: Uint8Array,
    fds: readonly number[],
  ): void {
    const msg = new Uint8Array(new ArrayBuffer(HEADER_SIZE + payload.byteLength));
    const v = new DataView(msg.buffer);
    v.setUint32(0, request, true);
    v.setUint32(4, flags, true);
    v.setUint32(8, payload.byteLength, true);
    msg.set(payload, HEADER_SIZE);
    sock.send(msg, fds);
  }

  /**
   * Receives one message from the back end: `null` when nothing arrives within `timeoutMs`,
   * {@linkcode PEER_CLOSED} when the back end closed the connection. A message cut short by a
   * close or a stall throws.
   */
  recvReply(timeoutMs: number = this.#timeoutMs): VhostUserMessage | null | typeof PEER_CLOSED {
    return this.#recvMain(timeoutMs, true);
  }

  /** `recvReply`; `useInbox` false for a nested wait, which must not take the outer's reply. */
  #recvMain(
    timeoutMs: number,
    useInbox: boolean,
  ): VhostUserMessage | null | typeof PEER_CLOSED {
    if (useInbox) {
      const stashed = this.#inbox.shift();
      if (stashed !== undefined) return stashed;
    }
    if (!this.#canService()) return VhostUserFrontend.#recvOn(this.#sock, timeoutMs);
    // With a cache window, the back end may need a SHMEM_MAP answered before it can reply.
    const deadline = Date.now() + timeoutMs;
    let watchChannel = true;
    for (;;) {
      const left = Math.max(0, deadline - Date.now());
      const channel = this.#openChannel();
      if (!watchChannel || channel === undefined || !this.#canService()) {
        return VhostUserFrontend.#recvOn(this.#sock, left);
      }
      const [sockRev = 0, chanRev = 0] = poll([this.#sockFd, channel.fd], POLLIN, left);
      // Requests first, as they come: a reply that arrives meanwhile waits in the inbox.
      if (chanRev !== 0) {
        if (this.#service(0).blocked) watchChannel = false;
        const got = useInbox ? this.#inbox.shift() : undefined;
        if (got !== undefined) return got;
        continue;
      }
      if (sockRev !== 0) return VhostUserFrontend.#recvOn(this.#sock, left);
      if (left === 0) return null;
    }
  }

  static #recvOn(
    sock: FdSocket,
    timeoutMs: number,
  ): VhostUserMessage | null | typeof PEER_CLOSED {
    const deadline = Date.now() + timeoutMs;
    const fds: number[] = [];
    const readExactly = (buf: Uint8Array, what: string): "ok" | "timeout" | "closed" => {
      let got = 0;
      while (got < buf.byteLength) {
        const left = Math.max(0, deadline - Date.now());
        const [rev = 0] = poll([sock.fd], POLLIN, left);
        if (rev === 0) {
          if (got === 0 && what === "header") return "timeout";
          throw new Error(
            `Timed out after ${timeoutMs} ms reading a vhost-user ${what} ` +
              `(${got} of ${buf.byteLength} bytes received)`,
          );
        }
        let n: number;
        try {
          n = sock.recv(buf.subarray(got), fds, MSG_DONTWAIT);
        } catch (e) {
          if (e instanceof ErrnoError && e.errno === Errno.EAGAIN) continue;
          if (e instanceof ErrnoError && e.errno === Errno.ECONNRESET) n = 0;
          else throw e;
        }
        if (n === 0) {
          if (got === 0 && what === "header") return "closed";
          throw new Error(
            `Back end closed the connection inside a vhost-user ${what} ` +
              `(${got} of ${buf.byteLength} bytes received)`,
          );
        }
        got += n;
      }
      return "ok";
    };
    const header = new Uint8Array(HEADER_SIZE);
    const r = readExactly(header, "header");
    if (r === "timeout") return null;
    if (r === "closed") return PEER_CLOSED;
    const hv = new DataView(header.buffer);
    const request = hv.getUint32(0, true);
    const flags = hv.getUint32(4, true);
    const size = hv.getUint32(8, true);
    if (size > MAX_READ_PAYLOAD) {
      for (const f of fds) closeQuietly(f);
      throw new Error(
        `Back end sent ${requestName(request)} with payload size ${size}, over ${MAX_READ_PAYLOAD}`,
      );
    }
    const payload = new Uint8Array(size);
    if (size > 0) readExactly(payload, `${requestName(request)} payload`);
    return { request, flags, size, payload, fds };
  }

  /**
   * True when the back end has closed the connection (checked without consuming data; waits up
   * to `timeoutMs` for the close to show).
   */
  peerClosed(timeoutMs = 0): boolean {
    const [rev = 0] = poll([this.#sockFd], POLLIN, timeoutMs);
    if ((rev & (POLLHUP | POLLERR | POLLNVAL)) !== 0) return true;
    if ((rev & POLLIN) === 0) return false;
    const fds: number[] = [];
    try {
      const n = this.#sock.recv(new Uint8Array(1), fds, MSG_DONTWAIT | MSG_PEEK);
      for (const f of fds) closeQuietly(f);
      return n === 0;
    } catch {
      return true;
    }
  }

  // ---- checked requests -----------------------------------------------------------------------

  /**
   * Receives the reply to `request`, checking flags, request and size. Inside a nested wait (the
   * ack of ADD_MEM_REG sent while servicing the back-end channel during an outer wait), a reply
   * to an outer request is kept for the outer wait.
   */
  #expectReply(request: number, size: number): Uint8Array {
    const name = requestName(request);
    const outer = [...this.#awaiting];
    this.#awaiting.push(request);
    let m: ReturnType<VhostUserFrontend["recvReply"]>;
    try {
      const deadline = Date.now() + this.#timeoutMs;
      for (;;) {
        m = this.#recvMain(Math.max(0, deadline - Date.now()), outer.length === 0);
        if (
          m !== null && m !== PEER_CLOSED && m.request !== request &&
          (m.flags & VHOST_USER_REPLY_MASK) !== 0 && outer.includes(m.request)
        ) {
          this.#inbox.push(m);
          continue;
        }
        break;
      }
    } finally {
      this.#awaiting.pop();
    }
    if (m === null) {
      throw new Error(`Timed out after ${this.#timeoutMs} ms waiting for the ${name} reply`);
    }
    if (m === PEER_CLOSED) {
      throw new Error(`Back end closed the connection instead of the ${name} reply`);
    }
    for (const f of m.fds) closeQuietly(f);
    if (m.flags !== REPLY_FLAGS) {
      throw new Error(`${name} reply flags ${hex(m.flags)}, expected ${hex(REPLY_FLAGS)}`);
    }
    if (m.request !== request) {
      throw new Error(`${name} reply carries request ${requestName(m.request)}`);
    }
    if (m.size !== size) throw new Error(`${name} reply size ${m.size}, expected ${size}`);
    return m.payload;
  }

  /** Sends a request that has a reply body of `replySize` bytes and returns the body. */
  #get(request: number, payload: Uint8Array, replySize: number): Uint8Array {
    this.sendRaw(request, VHOST_USER_VERSION, payload);
    return this.#expectReply(request, replySize);
  }

  #getU64(request: number): bigint {
    const p = this.#get(request, new Uint8Array(0), U64_PAYLOAD_SIZE);
    return new DataView(p.buffer, p.byteOffset).getBigUint64(0, true);
  }

  /**
   * Sends a request without a reply body. With `needReply` and REPLY_ACK negotiated it sets
   * NEED_REPLY and checks the u64 ack is 0.
   */
  #set(
    request: number,
    payload: Uint8Array = new Uint8Array(0),
    fds: readonly number[] = [],
    needReply = false,
  ): void {
    const ack = needReply && this.#protocolHas(VHOST_USER_PROTOCOL_F_REPLY_ACK);
    this.sendRaw(
      request,
      VHOST_USER_VERSION | (ack ? VHOST_USER_NEED_REPLY_MASK : 0),
      payload,
      fds,
    );
    if (!ack) return;
    const p = this.#expectReply(request, U64_PAYLOAD_SIZE);
    const status = new DataView(p.buffer, p.byteOffset).getBigUint64(0, true);
    if (status !== 0n) {
      throw new Error(`${requestName(request)} REPLY_ACK status ${hex(status)}, expected 0`);
    }
  }

  // ---- negotiation ----------------------------------------------------------------------------

  #negotiate(opts: FrontendOptions): void {
    const on = (o: boolean | undefined): boolean => o ?? true;
    const queueSize = opts.queueSize ?? 1024;
    const wantQueues = 1 + (opts.requestQueues ?? 1);

    // Realize (QEMU start).
    this.#featuresOffered = this.#getU64(VHOST_USER_GET_FEATURES);
    const protocol = (this.#featuresOffered & bit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n;
    if (protocol) {
      this.#protocolOffered = this.#getU64(VHOST_USER_GET_PROTOCOL_FEATURES);
      let want = 0n;
      if (on(opts.replyAck)) want |= bit(VHOST_USER_PROTOCOL_F_REPLY_ACK);
      if (on(opts.configureMemSlots)) want |= bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS);
      if (on(opts.mq)) want |= bit(VHOST_USER_PROTOCOL_F_MQ);
      if (on(opts.backendReq)) want |= bit(VHOST_USER_PROTOCOL_F_BACKEND_REQ);
      if (opts.config) want |= bit(VHOST_USER_PROTOCOL_F_CONFIG);
      if (opts.cacheWindow) {
        want |= bit(VHOST_USER_PROTOCOL_F_SHMEM) | bit(VHOST_USER_PROTOCOL_F_CONFIG) |
          bit(VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD);
      }
      this.#protocolAcked = want & this.#protocolOffered;
      this.#set(VHOST_USER_SET_PROTOCOL_FEATURES, u64Payload(this.#protocolAcked));
      if (this.#protocolHas(VHOST_USER_PROTOCOL_F_SHMEM)) this.#setUpWindow();
      if (this.#protocolHas(VHOST_USER_PROTOCOL_F_MQ)) {
        this.#backendQueueNum = Number(this.#getU64(VHOST_USER_GET_QUEUE_NUM));
        if (this.#backendQueueNum < wantQueues) {
          throw new Error(
            `GET_QUEUE_NUM says the back end has ${this.#backendQueueNum} queues; ` +
              `${wantQueues} are needed`,
          );
        }
      }
      if (this.#protocolHas(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) {
        this.#maxMemSlots = Number(this.#getU64(VHOST_USER_GET_MAX_MEM_SLOTS));
        if (this.#maxMemSlots < this.#memory.regions.length) {
          throw new Error(
            `GET_MAX_MEM_SLOTS says ${this.#maxMemSlots} slots; ` +
              `guest memory has ${this.#memory.regions.length} regions`,
          );
        }
      }
      if (this.#window !== undefined) {
        // Each live mapping takes a memory slot (a table entry without CONFIGURE_MEM_SLOTS).
        const slots = this.#maxMemSlots ?? MEMORY_TABLE.maxRegions;
        this.#window.maxMappings = Math.max(0, slots - this.#memory.regions.length);
      }
      if (this.#protocolHas(VHOST_USER_PROTOCOL_F_BACKEND_REQ)) {
        const [ours, theirs] = socketPair();
        this.#backendChannel = new FdSocket(ours);
        try {
          this.#set(VHOST_USER_SET_BACKEND_REQ_FD, new Uint8Array(0), [theirs], true);
        } finally {
          close(theirs);
        }
      }
    }
    this.#set(VHOST_USER_SET_OWNER);
    const again = this.#getU64(VHOST_USER_GET_FEATURES);
    if (again !== this.#featuresOffered) {
      throw new Error(
        `Second GET_FEATURES answered ${hex(again)}, the first ${hex(this.#featuresOffered)}`,
      );
    }
    for (let i = 0; i < wantQueues; i++) {
      const masked = eventfd(0, EFD_NONBLOCK);
      const v: VringFds = {
        kick: -1,
        call: masked,
        err: eventfd(0, EFD_NONBLOCK),
        interrupts: 0,
        stopped: true,
      };
      this.#vrings.push(v);
      this.#set(VHOST_USER_SET_VRING_CALL, u64Payload(i), [v.call]);
      this.#set(VHOST_USER_SET_VRING_ERR, u64Payload(i), [v.err]);
    }

    // Start (guest DRIVER_OK): guest notifiers, features, memory, rings.
    for (let i = 0; i < wantQueues; i++) {
      const v = this.#vring(i);
      closeQuietly(v.call);
      v.call = eventfd(0, EFD_NONBLOCK);
      this.#set(VHOST_USER_SET_VRING_CALL, u64Payload(i), [v.call]);
    }
    let acked = 0n;
    const offer = (b: number, wanted: boolean): void => {
      if (wanted && (this.#featuresOffered & bit(b)) !== 0n) acked |= bit(b);
    };
    offer(VIRTIO_F_VERSION_1, true);
    offer(VIRTIO_RING_F_INDIRECT_DESC, on(opts.indirectDesc));
    offer(VIRTIO_RING_F_EVENT_IDX, on(opts.eventIdx));
    offer(VHOST_USER_F_PROTOCOL_FEATURES, true);
    this.#featuresAcked = acked;
    this.#set(VHOST_USER_SET_FEATURES, u64Payload(acked));
    this.#sendMemory(opts.setMemTable ?? false);
    for (let i = 0; i < wantQueues; i++) {
      this.#queues.push(new GuestQueue(this.#memory, { size: queueSize, eventIdx: this.eventIdx }));
    }
    this.#startRings();
    this.#barrier("start-up");
  }

  #sendMemory(forceTable: boolean): void {
    const regions = this.#memory.regions;
    const slots = this.#protocolHas(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS) && !forceTable;
    if (slots) {
      for (const r of regions) this.#sendMemReg(VHOST_USER_ADD_MEM_REG, r, this.#memory.fd);
      return;
    }
    this.#sendMemTable();
  }

  /** ADD_MEM_REG (with `fd`) or REM_MEM_REG (none) of one region, NEED_REPLY, ack checked. */
  #sendMemReg(request: number, r: GuestRegion, fd: number | undefined): void {
    const p = new Uint8Array(SINGLE_MEMORY_REGION.size);
    putRegion(new DataView(p.buffer), SINGLE_MEMORY_REGION.region, r);
    this.#set(request, p, fd === undefined ? [] : [fd], true);
  }

  /**
   * SET_MEM_TABLE of guest RAM and the window's live mappings but `leaving` (without
   * CONFIGURE_MEM_SLOTS, QEMU sends the whole table at each change).
   */
  #sendMemTable(leaving: readonly WindowMapping[] = []): void {
    const entries: { region: GuestRegion; fd: number }[] = this.#memory.regions.map((region) => ({
      region,
      fd: this.#memory.fd,
    }));
    for (const m of this.#window?.mappings() ?? []) {
      if (leaving.includes(m)) continue;
      const w = this.#window as CacheWindow;
      entries.push({ region: w.regionOf(m), fd: w.fdOf(m) });
    }
    if (entries.length > MEMORY_TABLE.maxRegions) {
      throw new Error(
        `Cannot send SET_MEM_TABLE with ${entries.length} regions (at most ` +
          `${MEMORY_TABLE.maxRegions}); CONFIGURE_MEM_SLOTS was not negotiated`,
      );
    }
    const p = new Uint8Array(MEMORY_TABLE.header + MEMORY_REGION.size * entries.length);
    const v = new DataView(p.buffer);
    v.setUint32(MEMORY_TABLE.nregions, entries.length, true);
    entries.forEach((e, i) => putRegion(v, MEMORY_TABLE.header + MEMORY_REGION.size * i, e.region));
    this.#set(VHOST_USER_SET_MEM_TABLE, p, entries.map((e) => e.fd), true);
  }

  /** SET_VRING_NUM/BASE/ADDR/KICK per queue, then ENABLE 1 per queue, then CALL per queue. */
  #startRings(): void {
    this.#queues.forEach((q, i) => {
      const v = this.#vring(i);
      this.#set(VHOST_USER_SET_VRING_NUM, vringStatePayload(i, q.size));
      this.#set(VHOST_USER_SET_VRING_BASE, vringStatePayload(i, 0));
      const a = new Uint8Array(VRING_ADDR.size);
      const av = new DataView(a.buffer);
      av.setUint32(VRING_ADDR.index, i, true);
      av.setUint32(VRING_ADDR.flags, 0, true);
      av.setBigUint64(VRING_ADDR.desc, BigInt(this.#memory.gpaToUserspace(q.descGpa)), true);
      av.setBigUint64(VRING_ADDR.used, BigInt(this.#memory.gpaToUserspace(q.usedGpa)), true);
      av.setBigUint64(VRING_ADDR.avail, BigInt(this.#memory.gpaToUserspace(q.availGpa)), true);
      av.setBigUint64(VRING_ADDR.log, 0n, true);
      this.#set(VHOST_USER_SET_VRING_ADDR, a);
      closeQuietly(v.kick);
      v.kick = eventfd(0, EFD_NONBLOCK);
      this.#set(VHOST_USER_SET_VRING_KICK, u64Payload(i), [v.kick]);
      v.stopped = false;
    });
    if ((this.#featuresAcked & bit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n) {
      this.#queues.forEach((_, i) =>
        this.#set(VHOST_USER_SET_VRING_ENABLE, vringStatePayload(i, 1))
      );
    }
    this.#queues.forEach((_, i) => {
      this.#set(VHOST_USER_SET_VRING_CALL, u64Payload(i), [this.#vring(i).call]);
    });
  }

  /** GET_FEATURES as a barrier (as QEMU's enforce_reply): proves the earlier messages were taken. */
  #barrier(after: string): void {
    try {
      const f = this.#getU64(VHOST_USER_GET_FEATURES);
      if (f !== this.#featuresOffered) {
        throw new Error(`GET_FEATURES answered ${hex(f)}, earlier ${hex(this.#featuresOffered)}`);
      }
    } catch (e) {
      throw new Error(`Back end failed the GET_FEATURES barrier after ${after}`, { cause: e });
    }
  }

  /**
   * GET_SHMEM_CONFIG (right after SET_PROTOCOL_FEATURES), its reply checked, and region 0
   * reserved as the cache window: inaccessible, at a guest-physical address above RAM (the
   * 64-bit PCI hole: at least 4 GiB, aligned to its size and to 2 MiB, as a BAR is).
   */
  #setUpWindow(): void {
    const p = this.#get(VHOST_USER_GET_SHMEM_CONFIG, new Uint8Array(0), SHMEM_CONFIG.size);
    const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
    const nregions = v.getUint32(SHMEM_CONFIG.nregions, true);
    if (nregions > SHMEM_CONFIG.maxRegions) {
      throw new Error(
        `GET_SHMEM_CONFIG reply has ${nregions} regions, at most ${SHMEM_CONFIG.maxRegions}`,
      );
    }
    const sizes: number[] = [];
    for (let i = 0; i < nregions; i++) {
      const size = v.getBigUint64(SHMEM_CONFIG.memorySizes + 8 * i, true);
      if (size > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new Error(`GET_SHMEM_CONFIG region ${i} is ${hex(size)} bytes: too large`);
      }
      sizes.push(Number(size));
    }
    this.#shmemSizes = sizes;
    const size = sizes[0] ?? 0;
    if (size === 0 || (BigInt(size) & (BigInt(size) - 1n)) !== 0n) {
      throw new Error(
        `GET_SHMEM_CONFIG region 0 (the cache window) is ${hex(size)} bytes ` +
          `(${nregions} regions): not a non-zero power of two`,
      );
    }
    const ramEnd = Math.max(...this.#memory.regions.map((r) => r.guestPhysAddr + r.memorySize));
    const align = Math.max(size, WINDOW_ALIGN);
    const guestAddress = Math.ceil(Math.max(ramEnd, WINDOW_FLOOR) / align) * align;
    this.#window = CacheWindow.reserve({
      size,
      guestAddress,
      avoid: this.#memory.regions.map((r) => ({
        start: r.userspaceAddr,
        end: r.userspaceAddr + r.memorySize,
      })),
    });
  }

  /**
   * GET_CONFIG: `size` bytes (1..256) of the device's configuration space from `offset`, as
   * QEMU 11's generic vhost-user device reads it. Needs PROTOCOL_F_CONFIG acked (the `config` or
   * `cacheWindow` option). The reply must carry the header and exactly `size` bytes.
   */
  getConfig(offset: number, size: number): Uint8Array {
    if (!this.#protocolHas(VHOST_USER_PROTOCOL_F_CONFIG)) {
      throw new Error(
        "Cannot send GET_CONFIG: PROTOCOL_F_CONFIG was not negotiated " +
          `(offered ${hex(this.#protocolOffered)}, acked ${hex(this.#protocolAcked)})`,
      );
    }
    if (!Number.isInteger(size) || size <= 0 || size > DEVICE_CONFIG.maxSize) {
      throw new RangeError(`Cannot ask GET_CONFIG for ${size} bytes (1..${DEVICE_CONFIG.maxSize})`);
    }
    const p = new Uint8Array(DEVICE_CONFIG.header + size);
    const v = new DataView(p.buffer);
    v.setUint32(DEVICE_CONFIG.offset, offset >>> 0, true);
    v.setUint32(DEVICE_CONFIG.size, size, true);
    v.setUint32(DEVICE_CONFIG.flags, 0, true);
    const reply = this.#get(VHOST_USER_GET_CONFIG, p, DEVICE_CONFIG.header + size);
    return reply.slice(DEVICE_CONFIG.region);
  }

  /** The virtio-fs configuration space through GET_CONFIG: the tag and num_request_queues. */
  fsConfig(): { tag: string; numRequestQueues: number } {
    const c = this.getConfig(0, VIRTIO_FS_CONFIG.size);
    const raw = c.subarray(VIRTIO_FS_CONFIG.tag, VIRTIO_FS_CONFIG.numRequestQueues);
    const nul = raw.indexOf(0);
    return {
      tag: new TextDecoder().decode(nul < 0 ? raw : raw.subarray(0, nul)),
      numRequestQueues: new DataView(c.buffer, c.byteOffset).getUint32(
        VIRTIO_FS_CONFIG.numRequestQueues,
        true,
      ),
    };
  }

  // ---- rings ----------------------------------------------------------------------------------

  /** Signals queue `i`'s kick eventfd. */
  kick(i: number): void {
    if (!eventfdSignal(this.#vring(i).kick)) throw new Error(`Cannot kick queue ${i}`);
  }

  /** Publishes queue `i`'s added chains and kicks if the device asked for it. Returns kicked. */
  publish(i: number): boolean {
    const kick = this.queue(i).publish();
    if (kick) this.kick(i);
    return kick;
  }

  /** Reads and counts queue `i`'s pending interrupts (non-blocking). */
  #consumeCalls(i: number): number {
    const v = this.#vring(i);
    const n = eventfdConsume(v.call);
    if (n > 0) v.interrupts += n;
    return n;
  }

  /**
   * Harvests used elements of queue `i` until at least `min` arrived (default 1), waiting on the
   * call eventfd and re-checking the used ring. Throws after the timeout naming the queue and
   * the ring indices, or when the back end closes the connection meanwhile. With `raw`, used
   * elements are taken without matching them to chains (see `GuestQueue.harvestRaw`).
   */
  waitUsed(
    i: number,
    opts: { min?: number; timeoutMs?: number; raw?: boolean } = {},
  ): UsedElement[] {
    const q = this.queue(i);
    const v = this.#vring(i);
    const min = opts.min ?? 1;
    const timeoutMs = opts.timeoutMs ?? this.#timeoutMs;
    const deadline = Date.now() + timeoutMs;
    const out: UsedElement[] = [];
    let watchSocket = true;
    let watchChannel = true;
    for (;;) {
      out.push(...(opts.raw ? q.harvestRaw() : q.harvest()));
      // Like Linux's done work (disable_cb, drain, enable_cb): ask for an interrupt at the next
      // used element; if one slipped in meanwhile, drain again.
      if (q.enableInterrupts()) continue;
      if (out.length >= min) return out;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `Timed out after ${timeoutMs} ms waiting for ${min} used elements on queue ${i} ` +
            `(got ${out.length}; avail.idx ${q.availIdx}, used.idx ${q.usedIdx}, ` +
            `${q.outstanding} chains outstanding, ${v.interrupts} interrupts so far)`,
        );
      }
      const fds = [v.call];
      const sockAt = watchSocket ? fds.push(this.#sockFd) - 1 : -1;
      const channel = watchChannel && this.#canService() ? this.#openChannel() : undefined;
      const chanAt = channel !== undefined ? fds.push(channel.fd) - 1 : -1;
      const revs = poll(fds, POLLIN, Math.min(left, 100));
      const callRev = revs[0] ?? 0;
      const sockRev = sockAt < 0 ? 0 : revs[sockAt] ?? 0;
      const chanRev = chanAt < 0 ? 0 : revs[chanAt] ?? 0;
      if ((callRev & POLLIN) !== 0) this.#consumeCalls(i);
      // The back end may need a SHMEM_MAP answered (and its ADD_MEM_REG acked) to finish.
      if (chanRev !== 0 && this.#service(0).blocked) watchChannel = false;
      if (sockRev !== 0) {
        if (this.peerClosed()) {
          out.push(...(opts.raw ? q.harvestRaw() : q.harvest()));
          if (out.length >= min) return out;
          throw new Error(
            `Back end closed the connection while ${min} used elements were awaited on ` +
              `queue ${i} (got ${out.length}; used.idx ${q.usedIdx})`,
          );
        }
        // Unexpected bytes stay for the test to read; an ack taken by servicing leaves nothing.
        if (((poll([this.#sockFd], POLLIN, 0)[0] ?? 0) & POLLIN) !== 0) watchSocket = false;
      }
    }
  }

  /** Queue `i`'s notification counters (pending interrupts are counted first). */
  stats(i: number): QueueStats {
    this.#consumeCalls(i);
    return { ...this.queue(i).stats, interrupts: this.#vring(i).interrupts };
  }

  /** Signals on queue `i`'s error eventfd so far (consumed). */
  takeErrors(i: number): number {
    const n = eventfdConsume(this.#vring(i).err);
    return n > 0 ? n : 0;
  }

  /** The call eventfd of queue `i` (for tests that wait on it themselves). */
  callFd(i: number): number {
    return this.#vring(i).call;
  }

  /** The kick eventfd of queue `i`. */
  kickFd(i: number): number {
    return this.#vring(i).kick;
  }

  /**
   * Stops queue `i` as QEMU does at guest poweroff: SET_VRING_ENABLE 0 (with protocol features),
   * then GET_VRING_BASE, whose reply index must echo `i`. Returns the base (next avail index).
   */
  stopQueue(i: number): number {
    const v = this.#vring(i);
    if ((this.#featuresAcked & bit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n) {
      this.#set(VHOST_USER_SET_VRING_ENABLE, vringStatePayload(i, 0));
    }
    const p = this.#get(VHOST_USER_GET_VRING_BASE, vringStatePayload(i, 0), VRING_STATE.size);
    const pv = new DataView(p.buffer, p.byteOffset);
    const index = pv.getUint32(VRING_STATE.index, true);
    if (index !== i) throw new Error(`GET_VRING_BASE reply index ${index}, expected ${i}`);
    v.stopped = true;
    return pv.getUint32(VRING_STATE.num, true);
  }

  /**
   * Sets every ring up again as after a guest reboot: queues still running are stopped first,
   * rings are zeroed (indices back to 0), then SET_FEATURES and per queue
   * SET_VRING_NUM/BASE 0/ADDR/KICK (a new kick eventfd), ENABLE 1, CALL. Memory is not re-sent.
   */
  restartQueues(): void {
    this.#queues.forEach((_, i) => {
      if (!this.#vring(i).stopped) this.stopQueue(i);
    });
    for (const q of this.#queues) q.reset();
    // The virtio reset drops the cache window's mappings in the front end (no SHMEM_UNMAP); the
    // memory listener's removals reach the back end when the device starts again, after
    // SET_FEATURES, as QEMU's vhost_dev_start sends the memory table.
    const dropped = this.#window?.reset() ?? [];
    this.#set(VHOST_USER_SET_FEATURES, u64Payload(this.#featuresAcked));
    this.#announceRemoved(dropped);
    this.#startRings();
    this.#barrier("restart");
  }

  // ---- back-end channel -----------------------------------------------------------------------

  #channel(): FdSocket {
    if (this.#backendChannel === undefined) throw new Error("No back-end channel was set up");
    if (this.#backendChannelClosed !== undefined) {
      throw new Error(`The back-end channel was closed: ${this.#backendChannelClosed}`);
    }
    return this.#backendChannel;
  }

  #openChannel(): FdSocket | undefined {
    return this.#backendChannelClosed === undefined ? this.#backendChannel : undefined;
  }

  /** Receives one back-end request on the SET_BACKEND_REQ_FD channel (same conventions). */
  recvBackendRequest(timeoutMs: number = this.#timeoutMs): VhostUserMessage | null | "closed" {
    return VhostUserFrontend.#recvOn(this.#channel(), timeoutMs);
  }

  /** Replies to a back-end request (flags 0x5) with `payload`. */
  sendBackendReply(request: number, payload: Uint8Array): void {
    VhostUserFrontend.#sendOn(this.#channel(), request, REPLY_FLAGS, payload, []);
  }

  /**
   * Services the SHMEM_MAP / SHMEM_UNMAP requests waiting on the back-end channel (waiting up to
   * `timeoutMs` for the first), as QEMU 11.1 does: answer, then ADD_MEM_REG / REM_MEM_REG on the
   * main socket and wait for its ack. Stops at the first other request (left for
   * {@linkcode recvBackendRequest}). Returns how many were handled (refused ones included).
   * Without a cache window, does nothing.
   */
  serviceBackendChannel(timeoutMs = 0): number {
    return this.#service(timeoutMs).handled;
  }

  /** True when waits should service the back-end channel. */
  #canService(): boolean {
    return this.#window !== undefined && !this.#servicing && !this.#closed &&
      this.#openChannel() !== undefined;
  }

  /**
   * Handles the SHMEM requests at the head of the back-end channel. `blocked`: the channel holds
   * something this will not take (another request, or the back end's close), so a wait should
   * stop watching it.
   */
  #service(timeoutMs: number): { handled: number; blocked: boolean } {
    let handled = 0;
    let wait = timeoutMs;
    for (;;) {
      const channel = this.#openChannel();
      if (!this.#canService() || channel === undefined) return { handled, blocked: true };
      const [rev = 0] = poll([channel.fd], POLLIN, wait);
      wait = 0;
      if (rev === 0) return { handled, blocked: false };
      if ((rev & POLLNVAL) !== 0) return { handled, blocked: true };
      const head = new Uint8Array(HEADER_SIZE);
      const peeked: number[] = [];
      let n: number;
      try {
        n = channel.recv(head, peeked, MSG_DONTWAIT | MSG_PEEK);
      } catch (e) {
        if (e instanceof ErrnoError && e.errno === Errno.EAGAIN) return { handled, blocked: false };
        return { handled, blocked: true };
      } finally {
        for (const f of peeked) closeQuietly(f);
      }
      if (n === 0) return { handled, blocked: true }; // the back end closed its end
      if (n >= 4) {
        const request = new DataView(head.buffer).getUint32(0, true);
        if (
          request !== VHOST_USER_BACKEND_SHMEM_MAP && request !== VHOST_USER_BACKEND_SHMEM_UNMAP
        ) {
          return { handled, blocked: true };
        }
      }
      const m = VhostUserFrontend.#recvOn(channel, this.#timeoutMs);
      if (m === null || m === PEER_CLOSED) return { handled, blocked: true };
      if (
        m.request !== VHOST_USER_BACKEND_SHMEM_MAP && m.request !== VHOST_USER_BACKEND_SHMEM_UNMAP
      ) {
        // Only a header shorter than 4 bytes at the peek gets here: put nothing back, say so.
        for (const f of m.fds) closeQuietly(f);
        throw new Error(`Back-end channel request ${m.request} arrived while servicing SHMEM`);
      }
      this.#handleShmem(m);
      handled++;
    }
  }

  /** One SHMEM_MAP / SHMEM_UNMAP, in QEMU 11.1's order. */
  #handleShmem(m: VhostUserMessage): void {
    const w = this.window;
    const isMap = m.request === VHOST_USER_BACKEND_SHMEM_MAP;
    const name = isMap ? "SHMEM_MAP" : "SHMEM_UNMAP";
    const [fd, ...extra] = m.fds;
    for (const f of extra) closeQuietly(f);
    const req = parseShmemRequest(m.payload);
    let r: WindowResult;
    if (req === undefined) {
      closeQuietly(fd);
      r = w.refuse("message", `${name}: payload of ${m.size} bytes, expected 40`);
    } else if (isMap) {
      r = w.map(req, fd);
    } else {
      closeQuietly(fd);
      r = w.checkUnmap(req);
    }
    const needReply = (m.flags & VHOST_USER_NEED_REPLY_MASK) !== 0;
    if (!r.ok) {
      if (this.#closeChannelOnRefusal) {
        this.#backendChannelClosed = `refused ${name}: ${r.reason}`;
        if (this.#backendChannel !== undefined) closeQuietly(this.#backendChannel.fd);
      } else if (needReply) {
        this.sendBackendReply(m.request, u64Payload(REFUSED_STATUS));
      }
      return;
    }
    if (needReply) this.sendBackendReply(m.request, u64Payload(0));
    this.#servicing = true;
    try {
      if (isMap) this.#announceAdded(r.mapping);
      else {
        try {
          this.#announceRemoved([r.mapping]);
        } finally {
          w.drop(r.mapping);
        }
      }
    } finally {
      this.#servicing = false;
    }
  }

  /** Tells the back end about a new mapping: ADD_MEM_REG, or the whole table without slots. */
  #announceAdded(m: WindowMapping): void {
    const w = this.window;
    if (this.#protocolHas(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) {
      this.#sendMemReg(VHOST_USER_ADD_MEM_REG, w.regionOf(m), w.fdOf(m));
    } else {
      this.#sendMemTable();
    }
  }

  /**
   * Tells the back end mappings are gone: REM_MEM_REG each (no descriptor, mmap_offset 0, as
   * QEMU), or one table without slots (sent after they left the window's table).
   */
  #announceRemoved(gone: readonly WindowMapping[]): void {
    if (gone.length === 0) return;
    const w = this.window;
    if (this.#protocolHas(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) {
      for (const m of gone) {
        this.#sendMemReg(VHOST_USER_REM_MEM_REG, { ...w.regionOf(m), mmapOffset: 0 }, undefined);
      }
    } else {
      this.#sendMemTable(gone);
    }
  }

  // ---- teardown -------------------------------------------------------------------------------

  /**
   * Closes the connection, every eventfd, the back-end channel, and memory it created. The cache
   * window's mappings are dropped first, with REM_MEM_REG for each while the back end still
   * listens (best effort: the first failure ends that).
   */
  close(): void {
    if (this.#closed) return;
    this.#servicing = true; // no more SHMEM servicing
    if (this.#window !== undefined) {
      const gone = this.#window.reset();
      if (gone.length > 0 && !this.peerClosed()) {
        try {
          this.#announceRemoved(gone);
        } catch {
          // The back end is gone or broken: nothing more to tell it.
        }
      }
      this.#window.close();
    }
    this.#closed = true;
    closeQuietly(this.#sockFd);
    if (this.#backendChannel) closeQuietly(this.#backendChannel.fd);
    for (const v of this.#vrings) {
      closeQuietly(v.kick);
      closeQuietly(v.call);
      closeQuietly(v.err);
    }
    if (this.#ownsMemory) this.#memory.close();
  }

  /** Closes the connection (as `close()`). */
  [Symbol.dispose](): void {
    this.close();
  }
}
