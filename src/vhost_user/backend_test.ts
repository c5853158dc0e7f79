import assert from "node:assert/strict";
import {
  close,
  eventfd,
  eventfdConsume,
  eventfdSignal,
  FdSocket,
  isOpen,
  memfdCreate,
  MSG_DONTWAIT,
  socketPair,
} from "../ffi/mod.ts";
import { silentLogger } from "../log.ts";
import {
  type BackendConfig,
  type BackendHooks,
  PROTOCOL_FEATURES,
  VhostUserBackend,
  VIRTIO_FS_FEATURES,
} from "./backend.ts";
import type { SplitQueue } from "../virtqueue/split_queue.ts";
import { Connection, ProtocolError } from "./connection.ts";
import * as M from "../wire/vhost_user.ts";
import * as V from "../wire/virtio.ts";
import { GuestRam } from "../driver/guest_ram.ts";
import { GuestQueue } from "../driver/guest_queue.ts";

// ---------------------------------------------------------------------------------------------
// A front end and the back end in one process, over a socket pair.

const FLAGS = M.VHOST_USER_VERSION; // 0x1
const NEED_REPLY = M.VHOST_USER_VERSION | M.VHOST_USER_NEED_REPLY_MASK; // 0x9
const NOFD = M.VHOST_USER_VRING_NOFD_MASK; // 0x100

const QUEUES = 2;
const MAX_SLOTS = 4;

/** All the features a QEMU 7.2 vhost-user-fs front end would acknowledge. */
const FEATURES = VIRTIO_FS_FEATURES | M.bit(M.VHOST_USER_F_PROTOCOL_FEATURES);

class RecordingHooks implements BackendHooks {
  readonly calls: string[] = [];
  /** The kick fds handed over, in order (-1 for none). */
  readonly kickFds: number[] = [];
  kickChanged(index: number, fd: number): void {
    this.kickFds.push(fd);
    this.calls.push(`kick ${index} ${fd >= 0 ? "fd" : "-1"}`);
  }
  queueReady(index: number): void {
    this.calls.push(`ready ${index}`);
  }
  queueStopped(index: number): void {
    this.calls.push(`stopped ${index}`);
  }
  /** The calls since the last `take()`. */
  take(): string[] {
    return this.calls.splice(0);
  }
}

interface Reply {
  request: number;
  flags: number;
  size: number;
  payload: DataView;
}

class Harness {
  readonly hooks = new RecordingHooks();
  readonly backend: VhostUserBackend;
  readonly conn: Connection;
  readonly #frontFd: number;
  readonly #front: FdSocket;
  readonly #out = new Uint8Array(new ArrayBuffer(12 + 8192));
  readonly #in = new Uint8Array(new ArrayBuffer(12 + 8192));

  constructor(config: Partial<BackendConfig> = {}) {
    const [a, b] = socketPair();
    this.#frontFd = a;
    this.#front = new FdSocket(a);
    this.conn = new Connection(b);
    this.backend = new VhostUserBackend(
      {
        queues: QUEUES,
        features: VIRTIO_FS_FEATURES,
        protocolFeatures: PROTOCOL_FEATURES,
        maxMemSlots: MAX_SLOTS,
        ...config,
      },
      this.hooks,
      silentLogger,
    );
  }

  /** Writes one raw message: header (request, flags, size), payload, fds as SCM_RIGHTS. */
  send(
    request: number,
    payload: Uint8Array = new Uint8Array(0),
    opts: { flags?: number; fds?: number[]; size?: number } = {},
  ): void {
    const v = new DataView(this.#out.buffer);
    v.setUint32(0, request, true);
    v.setUint32(4, opts.flags ?? FLAGS, true);
    v.setUint32(8, opts.size ?? payload.length, true);
    this.#out.set(payload, 12);
    this.#front.send(this.#out.subarray(0, 12 + payload.length), opts.fds ?? []);
  }

  /** The back end reads and handles the next message. */
  step(): void {
    const msg = this.conn.receive();
    assert.ok(msg !== undefined, "a message");
    this.backend.handle(msg, this.conn);
  }

  /** `send` then `step`. */
  do(
    request: number,
    payload?: Uint8Array,
    opts?: { flags?: number; fds?: number[]; size?: number },
  ): void {
    this.send(request, payload, opts);
    this.step();
  }

  /** `do`, expecting a ProtocolError whose message matches `why`. */
  malformed(
    request: number,
    payload: Uint8Array | undefined,
    opts: { flags?: number; fds?: number[]; size?: number },
    why: RegExp,
  ): void {
    this.send(request, payload, opts);
    assert.throws(() => this.step(), (e: unknown) => {
      assert.ok(e instanceof ProtocolError, `a ProtocolError, not ${e}`);
      assert.match(e.message, why);
      return true;
    });
    assert.equal(this.reply(), undefined, "no reply to a malformed message");
  }

  #recvExact(buf: Uint8Array): boolean {
    let got = 0;
    while (got < buf.length) {
      const fds: number[] = [];
      let n: number;
      try {
        n = this.#front.recv(buf.subarray(got), fds, MSG_DONTWAIT);
      } catch (e) {
        if (got === 0) return false; // EAGAIN: nothing there
        throw e;
      }
      fds.forEach(close);
      assert.ok(n > 0);
      got += n;
    }
    return true;
  }

  /** The next reply, or undefined when none was sent. */
  reply(): Reply | undefined {
    if (!this.#recvExact(this.#in.subarray(0, 12))) return undefined;
    const v = new DataView(this.#in.buffer);
    const size = v.getUint32(8, true);
    this.#recvExact(this.#in.subarray(12, 12 + size));
    return {
      request: v.getUint32(0, true),
      flags: v.getUint32(4, true),
      size,
      payload: new DataView(this.#in.slice(12, 12 + size).buffer),
    };
  }

  /** The next reply, which must be a u64 to `request` with flags exactly 0x5; its value. */
  u64Reply(request: number): bigint {
    const r = this.reply();
    assert.ok(r !== undefined, `a reply to ${M.requestName(request)}`);
    assert.equal(r.request, request, "the request is echoed");
    assert.equal(r.flags, 0x5, "flags exactly VERSION | REPLY");
    assert.equal(r.size, 8);
    return r.payload.getBigUint64(0, true);
  }

  /** Negotiates features and protocol features as QEMU does. */
  negotiate(protocol: bigint = PROTOCOL_FEATURES, features: bigint = FEATURES): void {
    this.do(M.VHOST_USER_GET_FEATURES);
    this.reply();
    this.do(M.VHOST_USER_GET_PROTOCOL_FEATURES);
    this.reply();
    this.do(M.VHOST_USER_SET_PROTOCOL_FEATURES, u64(protocol));
    this.do(M.VHOST_USER_SET_OWNER);
    this.do(M.VHOST_USER_SET_FEATURES, u64(features));
  }

  close(): void {
    this.backend.reset();
    this.conn.close();
    close(this.#frontFd);
  }
}

/** Queue `index`'s SplitQueue (through a call, so no earlier assertion narrows it). */
function queueOf(h: Harness, index: number): SplitQueue | undefined {
  return h.backend.vrings[index]?.queue;
}

function openFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

/** Runs `fn` with a fresh harness; afterwards no descriptor may have leaked. */
function withHarness(fn: (h: Harness) => void, config?: Partial<BackendConfig>): () => void {
  return () => {
    const before = openFds();
    const h = new Harness(config);
    try {
      fn(h);
    } finally {
      h.close();
    }
    assert.equal(openFds(), before, "no descriptor leaked");
  };
}

// Payloads.

function u64(value: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(value), true);
  return b;
}

function state(index: number, num: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, index, true);
  v.setUint32(4, num, true);
  return b;
}

interface RegionDesc {
  gpa: number;
  size: number;
  uva: number;
  offset?: number;
}

function regionBytes(r: RegionDesc): Uint8Array {
  const b = new Uint8Array(M.MEMORY_REGION.size);
  const v = new DataView(b.buffer);
  v.setBigUint64(M.MEMORY_REGION.guestPhysAddr, BigInt(r.gpa), true);
  v.setBigUint64(M.MEMORY_REGION.memorySize, BigInt(r.size), true);
  v.setBigUint64(M.MEMORY_REGION.userspaceAddr, BigInt(r.uva), true);
  v.setBigUint64(M.MEMORY_REGION.mmapOffset, BigInt(r.offset ?? 0), true);
  return b;
}

function singleRegion(r: RegionDesc): Uint8Array {
  const b = new Uint8Array(M.SINGLE_MEMORY_REGION.size);
  b.set(regionBytes(r), M.SINGLE_MEMORY_REGION.region);
  return b;
}

function memTable(regions: readonly RegionDesc[]): Uint8Array {
  const b = new Uint8Array(M.MEMORY_TABLE.header + regions.length * M.MEMORY_REGION.size);
  new DataView(b.buffer).setUint32(0, regions.length, true);
  regions.forEach((r, i) => b.set(regionBytes(r), M.MEMORY_TABLE.header + i * 32));
  return b;
}

function vringAddr(
  index: number,
  desc: number,
  used: number,
  avail: number,
  flags = 0,
): Uint8Array {
  const b = new Uint8Array(M.VRING_ADDR.size);
  const v = new DataView(b.buffer);
  v.setUint32(M.VRING_ADDR.index, index, true);
  v.setUint32(M.VRING_ADDR.flags, flags, true);
  v.setBigUint64(M.VRING_ADDR.desc, BigInt(desc), true);
  v.setBigUint64(M.VRING_ADDR.used, BigInt(used), true);
  v.setBigUint64(M.VRING_ADDR.avail, BigInt(avail), true);
  return b;
}

// ---------------------------------------------------------------------------------------------
// Guest RAM as the front end owns it, with a split ring for queue 0 in it.

const GPA = 0x10_0000;
const RAM_SIZE = 1 << 20;
const UVA = 0x7f3a_0000_0000;
const RING_SIZE = 8;

/** Sends ADD_MEM_REG for a fresh memfd backing `region` (the test's copy is closed). */
function addRegion(h: Harness, region: RegionDesc, flags = NEED_REPLY): void {
  const fd = memfdCreate("backend_test_region", region.size + (region.offset ?? 0));
  h.send(M.VHOST_USER_ADD_MEM_REG, singleRegion(region), { flags, fds: [fd] });
  close(fd);
  h.step();
}

/**
 * Guest RAM whose memfd the back end maps too (ADD_MEM_REG), so a ring written here is the ring
 * the back end reads.
 */
function sharedRam(h: Harness): { ram: GuestView; region: RegionDesc } {
  const ram = new GuestView();
  h.send(M.VHOST_USER_ADD_MEM_REG, singleRegion(ram.region), {
    flags: NEED_REPLY,
    fds: [ram.memory.fd],
  });
  h.step();
  return { ram, region: ram.region };
}

/** Writable bytes of each descriptor {@linkcode GuestView.offer} makes available. */
const OFFER_BYTES = 64;

/**
 * The front end's guest RAM (the driver's GuestRam, one region) with queue 0's split ring in it
 * (the driver's GuestQueue), and a writable buffer per descriptor.
 */
class GuestView {
  readonly memory: GuestRam;
  readonly queue: GuestQueue;
  readonly region: RegionDesc;
  readonly #buffers: number;

  constructor() {
    this.memory = GuestRam.create({
      regions: [{ guestPhysAddr: GPA, size: RAM_SIZE }],
      userspaceBase: UVA,
      name: "backend_test_ram",
    });
    const r = this.memory.regions[0];
    if (r === undefined) throw new Error("Guest RAM without a region");
    this.region = { gpa: r.guestPhysAddr, size: r.memorySize, uva: r.userspaceAddr };
    this.queue = new GuestQueue(this.memory, { size: RING_SIZE, eventIdx: true });
    this.#buffers = this.memory.alloc(OFFER_BYTES * RING_SIZE);
  }

  /** SET_VRING_ADDR's payload for this ring (front-end virtual addresses, as QEMU sends). */
  addr(index = 0): Uint8Array {
    const va = (gpa: number): number => this.memory.gpaToUserspace(gpa);
    const q = this.queue;
    return vringAddr(index, va(q.descGpa), va(q.usedGpa), va(q.availGpa));
  }

  /**
   * Makes a one-descriptor chain (64 writable bytes) available at descriptor `head` (any index,
   * not the driver's choice) in the next avail slot, and publishes it.
   */
  offer(head: number): void {
    const q = this.queue;
    q.writeDescriptor(head, {
      addr: this.#buffers + OFFER_BYTES * head,
      len: OFFER_BYTES,
      flags: V.VIRTQ_DESC_F_WRITE,
      next: 0,
    });
    const idx = q.availIdx;
    q.writeAvailRing(idx, head);
    q.setAvailIdx(idx + 1);
  }

  get usedIdx(): number {
    return this.queue.usedIdx;
  }

  /** Unmaps guest RAM and closes its memfd. */
  unmap(): void {
    this.memory.close();
  }
}

/** Sets queue `index` up as QEMU 7.2 does at start: NUM, BASE, ADDR, KICK (fd or NOFD). */
function setupRing(
  h: Harness,
  ram: GuestView,
  opts: { index?: number; base?: number; kick?: number } = {},
): void {
  const index = opts.index ?? 0;
  h.do(M.VHOST_USER_SET_VRING_NUM, state(index, RING_SIZE));
  h.do(M.VHOST_USER_SET_VRING_BASE, state(index, opts.base ?? 0));
  h.do(M.VHOST_USER_SET_VRING_ADDR, ram.addr(index));
  if (opts.kick === undefined) h.do(M.VHOST_USER_SET_VRING_KICK, u64(index | NOFD));
  else h.do(M.VHOST_USER_SET_VRING_KICK, u64(index), { fds: [opts.kick] });
}

// ---------------------------------------------------------------------------------------------
// Feature negotiation.

Deno.test(
  "VhostUserBackend.handle() answers GET_FEATURES and GET_PROTOCOL_FEATURES with flags 0x5",
  withHarness((h) => {
    h.do(M.VHOST_USER_GET_FEATURES);
    const features = h.u64Reply(M.VHOST_USER_GET_FEATURES);
    assert.equal(features, VIRTIO_FS_FEATURES | M.bit(M.VHOST_USER_F_PROTOCOL_FEATURES));
    for (
      const b of [V.VIRTIO_F_VERSION_1, V.VIRTIO_RING_F_INDIRECT_DESC, V.VIRTIO_RING_F_EVENT_IDX]
    ) {
      assert.notEqual(features & M.bit(b), 0n, `feature bit ${b}`);
    }
    assert.equal(features & M.bit(34), 0n, "no packed ring");
    assert.equal(features & M.bit(40), 0n, "no RING_RESET");
    h.do(M.VHOST_USER_GET_PROTOCOL_FEATURES);
    assert.equal(h.u64Reply(M.VHOST_USER_GET_PROTOCOL_FEATURES), PROTOCOL_FEATURES);
    h.do(M.VHOST_USER_GET_QUEUE_NUM);
    assert.equal(h.u64Reply(M.VHOST_USER_GET_QUEUE_NUM), BigInt(QUEUES));
    h.do(M.VHOST_USER_GET_MAX_MEM_SLOTS);
    assert.equal(h.u64Reply(M.VHOST_USER_GET_MAX_MEM_SLOTS), BigInt(MAX_SLOTS));
    assert.equal(h.reply(), undefined, "one reply each");
  }),
);

Deno.test(
  "VhostUserBackend.handle() SET_FEATURES and SET_PROTOCOL_FEATURES acknowledge, without a reply",
  withHarness((h) => {
    h.negotiate();
    assert.equal(h.reply(), undefined);
    assert.equal(h.backend.ackedFeatures, FEATURES);
    assert.equal(h.backend.ackedProtocolFeatures, PROTOCOL_FEATURES);
  }),
);

Deno.test(
  "VhostUserBackend.handle() refuses features that were not offered",
  withHarness((h) => {
    h.malformed(
      M.VHOST_USER_SET_FEATURES,
      u64(FEATURES | M.bit(40)),
      {},
      /0x10000000000 were not offered/,
    );
    assert.equal(h.backend.ackedFeatures, 0n);
    h.malformed(
      M.VHOST_USER_SET_PROTOCOL_FEATURES,
      u64(M.bit(M.VHOST_USER_PROTOCOL_F_LOG_SHMFD)),
      {},
      /protocol features 0x2 were not offered/,
    );
    assert.equal(h.backend.ackedProtocolFeatures, 0n);
  }),
);

// ---------------------------------------------------------------------------------------------
// REPLY_ACK.

Deno.test(
  "VhostUserBackend.handle() with REPLY_ACK: NEED_REPLY gets u64 0, a refusal non-zero",
  withHarness((h) => {
    h.negotiate();
    h.do(M.VHOST_USER_SET_OWNER, undefined, { flags: NEED_REPLY });
    assert.equal(h.u64Reply(M.VHOST_USER_SET_OWNER), 0n);
    h.do(M.VHOST_USER_SET_OWNER);
    assert.equal(h.reply(), undefined, "no NEED_REPLY, no reply");
    h.do(M.VHOST_USER_SET_VRING_NUM, state(1, 64), { flags: NEED_REPLY });
    assert.equal(h.u64Reply(M.VHOST_USER_SET_VRING_NUM), 0n);
    // A refused request with NEED_REPLY: a failure, and the state is unchanged.
    h.do(M.VHOST_USER_SET_FEATURES, u64(FEATURES | M.bit(40)), { flags: NEED_REPLY });
    assert.notEqual(h.u64Reply(M.VHOST_USER_SET_FEATURES), 0n);
    assert.equal(h.backend.ackedFeatures, FEATURES);
    // A request with its own reply gets just that one.
    h.do(M.VHOST_USER_GET_FEATURES, undefined, { flags: NEED_REPLY });
    assert.equal(h.u64Reply(M.VHOST_USER_GET_FEATURES), FEATURES);
    assert.equal(h.reply(), undefined);
  }),
);

Deno.test(
  "VhostUserBackend.handle() without REPLY_ACK negotiated sends no ack",
  withHarness((h) => {
    h.negotiate(M.bit(M.VHOST_USER_PROTOCOL_F_MQ));
    h.do(M.VHOST_USER_SET_OWNER, undefined, { flags: NEED_REPLY });
    assert.equal(h.reply(), undefined);
  }),
);

// ---------------------------------------------------------------------------------------------
// Guest memory.

Deno.test(
  "VhostUserBackend.handle() ADD_MEM_REG maps a region and REM_MEM_REG removes it",
  withHarness((h) => {
    h.negotiate();
    const a = { gpa: 0x10_0000, size: 0x10_000, uva: 0x7f00_0000_0000 };
    const b = { gpa: 0x20_0000, size: 0x2_0000, uva: 0x7f00_1000_0000, offset: 0x1000 };
    addRegion(h, a);
    assert.equal(h.u64Reply(M.VHOST_USER_ADD_MEM_REG), 0n);
    addRegion(h, b);
    assert.equal(h.u64Reply(M.VHOST_USER_ADD_MEM_REG), 0n);
    const regions = h.backend.memory.regions;
    assert.equal(regions.length, 2);
    assert.deepEqual(
      regions.map((r) => [r.guestPhysAddr, r.memorySize, r.userspaceAddr, r.mmapOffset]),
      [[a.gpa, a.size, a.uva, 0], [b.gpa, b.size, b.uva, 0x1000]],
    );
    h.do(M.VHOST_USER_REM_MEM_REG, singleRegion(a), { flags: NEED_REPLY });
    assert.equal(h.u64Reply(M.VHOST_USER_REM_MEM_REG), 0n);
    assert.deepEqual(h.backend.memory.regions.map((r) => r.guestPhysAddr), [b.gpa]);
    // REM_MEM_REG may come with an fd (the spec says to close it).
    const fd = memfdCreate("x", 0);
    h.send(M.VHOST_USER_REM_MEM_REG, singleRegion(b), { flags: NEED_REPLY, fds: [fd] });
    close(fd);
    h.step();
    assert.equal(h.u64Reply(M.VHOST_USER_REM_MEM_REG), 0n);
    assert.equal(h.backend.memory.regions.length, 0);
    // Removing what is not there is a failure.
    h.do(M.VHOST_USER_REM_MEM_REG, singleRegion(a), { flags: NEED_REPLY });
    assert.notEqual(h.u64Reply(M.VHOST_USER_REM_MEM_REG), 0n);
  }),
);

Deno.test(
  "VhostUserBackend.handle() ADD_MEM_REG refuses overlaps and a full table",
  withHarness((h) => {
    h.negotiate();
    const a = { gpa: 0x10_0000, size: 0x1_0000, uva: 0x7f00_0000_0000 };
    addRegion(h, a);
    assert.equal(h.u64Reply(M.VHOST_USER_ADD_MEM_REG), 0n);
    addRegion(h, { gpa: 0x10_8000, size: 0x1_0000, uva: 0x7f00_1000_0000 });
    assert.notEqual(h.u64Reply(M.VHOST_USER_ADD_MEM_REG), 0n, "guest-physical overlap");
    addRegion(h, { gpa: 0x50_0000, size: 0x1_0000, uva: 0x7f00_0000_8000 });
    assert.notEqual(h.u64Reply(M.VHOST_USER_ADD_MEM_REG), 0n, "user address overlap");
    addRegion(h, { gpa: 0x50_0000, size: 0, uva: 0x7f00_2000_0000 });
    assert.notEqual(h.u64Reply(M.VHOST_USER_ADD_MEM_REG), 0n, "size 0");
    addRegion(h, { gpa: 2 ** 53, size: 0x1000, uva: 0x7f00_2000_0000 });
    assert.notEqual(h.u64Reply(M.VHOST_USER_ADD_MEM_REG), 0n, "beyond 2^53");
    assert.equal(h.backend.memory.regions.length, 1);
    for (let i = 1; i < MAX_SLOTS; i++) {
      addRegion(h, { gpa: 0x100_0000 * (i + 1), size: 0x1000, uva: 0x7e00_0000_0000 + i * 0x1000 });
      assert.equal(h.u64Reply(M.VHOST_USER_ADD_MEM_REG), 0n);
    }
    addRegion(h, { gpa: 0x900_0000, size: 0x1000, uva: 0x7d00_0000_0000 });
    assert.notEqual(h.u64Reply(M.VHOST_USER_ADD_MEM_REG), 0n, "all slots in use");
    assert.equal(h.backend.memory.regions.length, MAX_SLOTS);
    // Without NEED_REPLY a refusal ends the connection.
    const fd = memfdCreate("x", 0x1_0000);
    h.malformed(
      M.VHOST_USER_ADD_MEM_REG,
      singleRegion(a),
      { fds: [fd] },
      /ADD_MEM_REG\(37\) refused: all 4 memory slots are in use/,
    );
    close(fd);
  }),
);

Deno.test(
  "VhostUserBackend.handle() SET_MEM_TABLE replaces the whole table",
  withHarness((h) => {
    h.negotiate();
    addRegion(h, { gpa: 0x10_0000, size: 0x1_0000, uva: 0x7f00_0000_0000 });
    h.reply();
    const regions = [
      { gpa: 0, size: 0xa_0000, uva: 0x7f10_0000_0000 },
      { gpa: 0x10_0000, size: 0x10_0000, uva: 0x7f10_0010_0000, offset: 0xa_0000 },
    ];
    const fds = regions.map((r) => memfdCreate("t", r.size + (r.offset ?? 0)));
    h.send(M.VHOST_USER_SET_MEM_TABLE, memTable(regions), { flags: NEED_REPLY, fds });
    fds.forEach(close);
    h.step();
    assert.equal(h.u64Reply(M.VHOST_USER_SET_MEM_TABLE), 0n);
    assert.deepEqual(
      h.backend.memory.regions.map((r) => [r.guestPhysAddr, r.userspaceAddr, r.mmapOffset]),
      [[0, 0x7f10_0000_0000, 0], [0x10_0000, 0x7f10_0010_0000, 0xa_0000]],
    );
  }),
);

Deno.test(
  "VhostUserBackend.handle() SET_MEM_TABLE with overlapping regions fails and closes every fd",
  withHarness((h) => {
    h.negotiate();
    const regions = [
      { gpa: 0, size: 0x1_0000, uva: 0x7f10_0000_0000 },
      { gpa: 0x8000, size: 0x1_0000, uva: 0x7f20_0000_0000 },
      { gpa: 0x10_0000, size: 0x1_0000, uva: 0x7f30_0000_0000 },
    ];
    const fds = regions.map((r) => memfdCreate("t", r.size));
    h.send(M.VHOST_USER_SET_MEM_TABLE, memTable(regions), { flags: NEED_REPLY, fds });
    fds.forEach(close);
    h.step();
    assert.notEqual(h.u64Reply(M.VHOST_USER_SET_MEM_TABLE), 0n);
    assert.equal(h.backend.memory.regions.length, 0);
  }),
);

Deno.test(
  "VhostUserBackend.handle() SET_MEM_TABLE: region count, size and fds must agree",
  withHarness((h) => {
    h.negotiate();
    const r = { gpa: 0, size: 0x1000, uva: 0x7f10_0000_0000 };
    const two = memTable([r, { ...r, gpa: 0x1000, uva: r.uva + 0x1000 }]);
    const fd1 = memfdCreate("t", 0x1000);
    const fd2 = memfdCreate("t", 0x1000);
    h.malformed(M.VHOST_USER_SET_MEM_TABLE, two, { fds: [fd1] }, /2 regions but 1 descriptors/);
    const lying = two.slice();
    new DataView(lying.buffer).setUint32(0, 3, true);
    h.malformed(
      M.VHOST_USER_SET_MEM_TABLE,
      lying,
      { fds: [fd1, fd2] },
      /3 regions in a payload of 72/,
    );
    h.malformed(M.VHOST_USER_SET_MEM_TABLE, memTable([r]), { fds: [] }, /0 descriptors attached/);
    close(fd1);
    close(fd2);
    assert.equal(h.backend.memory.regions.length, 0);
  }),
);

// ---------------------------------------------------------------------------------------------
// Rings.

Deno.test(
  "VhostUserBackend: vring setup, then KICK starts the ring and ENABLE makes it ready",
  withHarness((h) => {
    h.negotiate();
    const { ram } = sharedRam(h);
    assert.equal(h.u64Reply(M.VHOST_USER_ADD_MEM_REG), 0n);
    const kick = eventfd();
    const call = eventfd();
    try {
      h.send(M.VHOST_USER_SET_VRING_CALL, u64(0), { fds: [call] });
      h.step();
      setupRing(h, ram, { kick });
      assert.deepEqual(h.hooks.take(), ["kick 0 fd"], "started, but disabled: not ready");
      const v = h.backend.vrings[0];
      assert.ok(v?.queue !== undefined, "started");
      assert.equal(v.enabled, false);
      assert.equal(h.backend.isRunning(0), false);
      assert.equal(v.queue.eventIdx, true, "EVENT_IDX was acknowledged");
      assert.equal(v.queue.size, RING_SIZE);

      h.do(M.VHOST_USER_SET_VRING_ENABLE, state(0, 1));
      assert.deepEqual(h.hooks.take(), ["ready 0"]);
      assert.equal(h.backend.isRunning(0), true);

      // The kick fd is the front end's eventfd; the call fd its call eventfd.
      const backendKick = h.hooks.kickFds[0] ?? -1;
      assert.equal(backendKick, v.kickFd);
      eventfdSignal(kick);
      assert.equal(eventfdConsume(backendKick), 1);
      eventfdSignal(v.callFd);
      assert.equal(eventfdConsume(call), 1);

      // The ring is the one in the front end's memory.
      ram.offer(3);
      ram.offer(5);
      const q = v.queue;
      const heads: number[] = [];
      while (q.pop(h.backend.memory, (why) => assert.fail(why))) {
        heads.push(q.chain.head);
        q.pushUsed(q.chain.head, 0);
      }
      assert.deepEqual(heads, [3, 5]);
      assert.equal(ram.usedIdx, 2);
      assert.equal(h.reply(), undefined, "no reply to any of it");
    } finally {
      close(kick);
      close(call);
      ram.unmap();
    }
  }),
);

Deno.test(
  "VhostUserBackend: without PROTOCOL_FEATURES a ring starts enabled, and ENABLE is refused",
  withHarness((h) => {
    h.negotiate(0n, VIRTIO_FS_FEATURES);
    const { ram } = sharedRam(h);
    setupRing(h, ram);
    assert.deepEqual(h.hooks.take(), ["kick 0 -1", "ready 0"]);
    assert.equal(h.backend.isRunning(0), true);
    h.malformed(
      M.VHOST_USER_SET_VRING_ENABLE,
      state(0, 1),
      {},
      /PROTOCOL_FEATURES was not negotiated/,
    );
    ram.unmap();
  }),
);

Deno.test(
  "VhostUserBackend: a ring whose memory arrives after its KICK becomes ready then",
  withHarness((h) => {
    h.negotiate();
    h.do(M.VHOST_USER_SET_VRING_ENABLE, state(0, 1));
    const ram = new GuestView();
    setupRing(h, ram);
    assert.deepEqual(h.hooks.take(), ["kick 0 -1"], "no memory yet: not ready");
    assert.equal(h.backend.isRunning(0), false);
    h.send(M.VHOST_USER_ADD_MEM_REG, singleRegion(ram.region), {
      flags: NEED_REPLY,
      fds: [ram.memory.fd],
    });
    h.step();
    assert.equal(h.u64Reply(M.VHOST_USER_ADD_MEM_REG), 0n);
    assert.deepEqual(h.hooks.take(), ["ready 0"]);
    // Removing the memory pauses it.
    h.do(M.VHOST_USER_REM_MEM_REG, singleRegion(ram.region), { flags: NEED_REPLY });
    assert.equal(h.u64Reply(M.VHOST_USER_REM_MEM_REG), 0n);
    assert.equal(h.backend.isRunning(0), false);
    ram.unmap();
  }),
);

Deno.test(
  "VhostUserBackend: GET_VRING_BASE returns the base and stops the ring; it restarts without memory",
  withHarness((h) => {
    h.negotiate();
    const { ram } = sharedRam(h);
    h.reply();
    const kick1 = eventfd();
    const kick2 = eventfd();
    try {
      setupRing(h, ram, { kick: kick1, base: 0 });
      h.do(M.VHOST_USER_SET_VRING_ENABLE, state(0, 1));
      h.hooks.take();
      const q = h.backend.vrings[0]?.queue;
      assert.ok(q !== undefined);
      for (const head of [0, 1, 2]) ram.offer(head);
      while (q.pop(h.backend.memory, (why) => assert.fail(why))) q.pushUsed(q.chain.head, 0);
      const backendKick = h.hooks.kickFds[0] ?? -1;

      // QEMU at stop: ENABLE(0), then GET_VRING_BASE.
      h.do(M.VHOST_USER_SET_VRING_ENABLE, state(0, 0));
      h.do(M.VHOST_USER_GET_VRING_BASE, state(0, 0));
      const r = h.reply();
      assert.ok(r !== undefined);
      assert.equal(r.request, M.VHOST_USER_GET_VRING_BASE);
      assert.equal(r.flags, 0x5);
      assert.equal(r.size, 8);
      assert.equal(r.payload.getUint32(0, true), 0, "index");
      assert.equal(r.payload.getUint32(4, true), 3, "the next avail index");
      assert.deepEqual(h.hooks.take(), ["kick 0 -1", "stopped 0"]);
      assert.equal(isOpen(backendKick), false, "the kick fd is closed");
      assert.equal(h.backend.vrings[0]?.queue, undefined);
      assert.equal(h.backend.isRunning(0), false);
      assert.equal(h.backend.memory.regions.length, 1, "memory is kept");

      // A stopped ring's base may be set again, and the ring restarted with the same memory.
      ram.offer(3);
      setupRing(h, ram, { kick: kick2, base: 3 });
      h.do(M.VHOST_USER_SET_VRING_ENABLE, state(0, 1));
      assert.deepEqual(h.hooks.take(), ["kick 0 fd", "ready 0"]);
      const q2 = queueOf(h, 0);
      assert.ok(q2 !== undefined && q2 !== q);
      assert.equal(q2.lastAvailIdx, 3);
      assert.equal(q2.usedIdx, 3, "resumed from the used index in memory");
      assert.equal(q2.pop(h.backend.memory, (why) => assert.fail(why)), true);
      assert.equal(q2.chain.head, 3);

      // GET_VRING_BASE of a ring never started returns what SET_VRING_BASE set.
      h.do(M.VHOST_USER_SET_VRING_BASE, state(1, 77));
      h.do(M.VHOST_USER_GET_VRING_BASE, state(1, 0));
      assert.equal(h.reply()?.payload.getUint32(4, true), 77);
      assert.deepEqual(h.hooks.take(), []);
    } finally {
      close(kick1);
      close(kick2);
      ram.unmap();
    }
  }),
);

Deno.test(
  "VhostUserBackend: a started ring refuses SET_VRING_NUM, _BASE and _ADDR until stopped",
  withHarness((h) => {
    h.negotiate();
    const { ram } = sharedRam(h);
    h.reply();
    setupRing(h, ram);
    for (
      const [request, payload] of [
        [M.VHOST_USER_SET_VRING_NUM, state(0, 16)],
        [M.VHOST_USER_SET_VRING_BASE, state(0, 9)],
        [M.VHOST_USER_SET_VRING_ADDR, ram.addr(0)],
      ] as const
    ) {
      h.do(request, payload, { flags: NEED_REPLY });
      assert.notEqual(h.u64Reply(request), 0n, M.requestName(request));
    }
    assert.equal(h.backend.vrings[0]?.num, RING_SIZE);
    ram.unmap();
  }),
);

Deno.test(
  "VhostUserBackend: KICK and CALL with NOFD (0x100) and no fd",
  withHarness((h) => {
    h.negotiate();
    const { ram } = sharedRam(h);
    h.reply();
    h.do(M.VHOST_USER_SET_VRING_CALL, u64(1 | NOFD));
    assert.equal(h.backend.vrings[1]?.callFd, -1);
    h.do(M.VHOST_USER_SET_VRING_ERR, u64(1 | NOFD));
    assert.equal(h.backend.vrings[1]?.errFd, -1);
    setupRing(h, ram);
    assert.deepEqual(h.hooks.take(), ["kick 0 -1"]);
    const v = h.backend.vrings[0];
    assert.equal(v?.kickPolled, true);
    assert.equal(v?.kickFd, -1);
    assert.ok(v?.queue !== undefined, "started without a kick fd");
    h.do(M.VHOST_USER_SET_VRING_ENABLE, state(0, 1));
    assert.deepEqual(h.hooks.take(), ["ready 0"]);
    ram.unmap();
  }),
);

Deno.test(
  "VhostUserBackend: SET_VRING_CALL and _ERR replace and close the old fd",
  withHarness((h) => {
    h.negotiate();
    const a = eventfd();
    const b = eventfd();
    h.send(M.VHOST_USER_SET_VRING_CALL, u64(1), { fds: [a] });
    h.step();
    const first = h.backend.vrings[1]?.callFd ?? -1;
    assert.ok(first >= 0 && isOpen(first));
    h.send(M.VHOST_USER_SET_VRING_CALL, u64(1), { fds: [b] });
    h.step();
    assert.equal(isOpen(first), false, "the old call fd is closed");
    const second = h.backend.vrings[1]?.callFd ?? -1;
    eventfdSignal(second);
    assert.equal(eventfdConsume(b), 1);
    h.send(M.VHOST_USER_SET_VRING_ERR, u64(0), { fds: [a] });
    h.step();
    const err = h.backend.vrings[0]?.errFd ?? -1;
    h.do(M.VHOST_USER_SET_VRING_ERR, u64(0 | NOFD));
    assert.equal(isOpen(err), false);
    close(a);
    close(b);
  }),
);

Deno.test(
  "VhostUserBackend: SET_BACKEND_REQ_FD is kept when negotiated, refused otherwise",
  withHarness((h) => {
    h.negotiate(M.bit(M.VHOST_USER_PROTOCOL_F_REPLY_ACK));
    const [x, y] = socketPair();
    h.send(M.VHOST_USER_SET_BACKEND_REQ_FD, undefined, { flags: NEED_REPLY, fds: [x] });
    h.step();
    assert.notEqual(h.u64Reply(M.VHOST_USER_SET_BACKEND_REQ_FD), 0n);
    assert.equal(h.backend.channel?.fd ?? -1, -1);
    h.negotiate();
    h.send(M.VHOST_USER_SET_BACKEND_REQ_FD, undefined, { flags: NEED_REPLY, fds: [x] });
    h.step();
    assert.equal(h.u64Reply(M.VHOST_USER_SET_BACKEND_REQ_FD), 0n);
    assert.ok(isOpen(h.backend.channel?.fd ?? -1));
    close(x);
    close(y);
  }),
);

// ---------------------------------------------------------------------------------------------
// Reset.

/** A back end with memory, a running ring, call/err fds and a back-end channel. */
function busy(h: Harness): { ram: GuestView; fds: number[] } {
  h.negotiate();
  const { ram } = sharedRam(h);
  h.reply();
  const kick = eventfd();
  const call = eventfd();
  const [x, y] = socketPair();
  h.send(M.VHOST_USER_SET_VRING_CALL, u64(0), { fds: [call] });
  h.step();
  h.send(M.VHOST_USER_SET_VRING_ERR, u64(1), { fds: [call] });
  h.step();
  h.send(M.VHOST_USER_SET_BACKEND_REQ_FD, undefined, { fds: [x] });
  h.step();
  setupRing(h, ram, { kick });
  h.do(M.VHOST_USER_SET_VRING_ENABLE, state(0, 1));
  assert.equal(h.backend.isRunning(0), true);
  h.hooks.take();
  return { ram, fds: [kick, call, x, y] };
}

for (
  const [name, request] of [["RESET_OWNER", M.VHOST_USER_RESET_OWNER], [
    "RESET_DEVICE",
    M.VHOST_USER_RESET_DEVICE,
  ]] as const
) {
  Deno.test(
    `VhostUserBackend.handle() ${name} stops and forgets every ring, its fds and guest memory`,
    withHarness((h) => {
      const before = openFds();
      const { ram, fds } = busy(h);
      h.do(request);
      assert.equal(h.reply(), undefined);
      assert.deepEqual(h.hooks.take(), ["kick 0 -1", "stopped 0"]);
      assert.equal(h.backend.memory.regions.length, 0);
      assert.equal(h.backend.ackedFeatures, 0n, "features are negotiated again");
      for (const v of h.backend.vrings) {
        assert.equal(v.queue, undefined);
        assert.equal(v.num, 0);
        assert.equal(v.addresses, undefined);
        assert.equal(v.kickFd, -1);
        assert.equal(v.callFd, -1);
        assert.equal(v.errFd, -1);
        assert.equal(v.enabled, false);
      }
      if (request === M.VHOST_USER_RESET_OWNER) {
        assert.equal(h.backend.ackedProtocolFeatures, 0n);
        assert.equal(h.backend.channel?.fd ?? -1, -1);
      }
      // RESET_DEVICE: "The back-end retains ownership of the device throughout the reset
      // operation", so it may keep the protocol features and the back-end channel.
      const kept = (h.backend.channel?.fd ?? -1) >= 0 ? 1 : 0;
      ram.unmap();
      fds.forEach(close);
      assert.equal(openFds(), before + kept, "every ring descriptor and the memory are closed");
    }),
  );

  Deno.test(
    `VhostUserBackend.handle() ${name} with NEED_REPLY (REPLY_ACK negotiated) is acked`,
    withHarness((h) => {
      const { ram, fds } = busy(h);
      h.do(request, undefined, { flags: NEED_REPLY });
      try {
        // The front end negotiated REPLY_ACK and waits for the ack of this very message.
        assert.equal(h.u64Reply(request), 0n);
      } finally {
        ram.unmap();
        fds.forEach(close);
      }
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Malformed messages: a ProtocolError (the connection is closed), descriptors closed, no change.

Deno.test(
  "VhostUserBackend.handle() refuses a wrong payload size",
  withHarness((h) => {
    h.negotiate();
    const fd = memfdCreate("t", 0x1000);
    const cases: [number, Uint8Array, number[], RegExp][] = [
      [
        M.VHOST_USER_SET_VRING_NUM,
        new Uint8Array(4),
        [],
        /SET_VRING_NUM\(8\): payload size 4, expected 8/,
      ],
      [M.VHOST_USER_SET_FEATURES, new Uint8Array(16), [], /SET_FEATURES\(2\): payload size 16/],
      [M.VHOST_USER_GET_VRING_BASE, new Uint8Array(0), [], /GET_VRING_BASE\(11\): payload size 0/],
      [M.VHOST_USER_SET_VRING_ADDR, new Uint8Array(32), [], /SET_VRING_ADDR\(9\): payload size 32/],
      [
        M.VHOST_USER_SET_VRING_KICK,
        new Uint8Array(4),
        [fd],
        /SET_VRING_KICK\(12\): payload size 4/,
      ],
      [M.VHOST_USER_ADD_MEM_REG, new Uint8Array(32), [fd], /ADD_MEM_REG\(37\): payload size 32/],
      [
        M.VHOST_USER_SET_MEM_TABLE,
        new Uint8Array(8),
        [fd],
        /SET_MEM_TABLE\(5\): payload size 8, expected 40 to 264/,
      ],
      [M.VHOST_USER_GET_FEATURES, new Uint8Array(12), [], /GET_FEATURES\(1\): payload size 12/],
    ];
    for (const [request, payload, fds, why] of cases) h.malformed(request, payload, { fds }, why);
    close(fd);
    assert.equal(h.backend.memory.regions.length, 0);
    assert.equal(h.backend.vrings[0]?.kickFd, -1);
  }),
);

Deno.test(
  "VhostUserBackend.handle() refuses a wrong descriptor count",
  withHarness((h) => {
    h.negotiate();
    const a = memfdCreate("t", 0x1000);
    const b = memfdCreate("t", 0x1000);
    const region = singleRegion({ gpa: 0, size: 0x1000, uva: 0x7f00_0000_0000 });
    h.malformed(
      M.VHOST_USER_ADD_MEM_REG,
      region,
      { fds: [] },
      /ADD_MEM_REG\(37\): 0 descriptors attached, expected 1/,
    );
    h.malformed(
      M.VHOST_USER_ADD_MEM_REG,
      region,
      { fds: [a, b] },
      /2 descriptors attached, expected 1/,
    );
    h.malformed(
      M.VHOST_USER_SET_VRING_NUM,
      state(0, 8),
      { fds: [a] },
      /SET_VRING_NUM\(8\): 1 descriptors/,
    );
    h.malformed(
      M.VHOST_USER_SET_VRING_KICK,
      u64(0),
      { fds: [a, b] },
      /SET_VRING_KICK\(12\): 2 descriptors attached, expected 0 to 1/,
    );
    h.malformed(
      M.VHOST_USER_SET_VRING_CALL,
      u64(0),
      { fds: [] },
      /NOFD is clear but 0 descriptors came/,
    );
    h.malformed(
      M.VHOST_USER_SET_VRING_CALL,
      u64(NOFD),
      { fds: [a] },
      /NOFD is set but 1 descriptors came/,
    );
    h.malformed(
      M.VHOST_USER_GET_FEATURES,
      undefined,
      { fds: [a] },
      /GET_FEATURES\(1\): 1 descriptors/,
    );
    h.malformed(
      M.VHOST_USER_SET_BACKEND_REQ_FD,
      undefined,
      { fds: [] },
      /SET_BACKEND_REQ_FD\(21\): 0 descriptors/,
    );
    const nine = Array.from({ length: 9 }, () => eventfd());
    h.malformed(
      M.VHOST_USER_SET_MEM_TABLE,
      memTable([{ gpa: 0, size: 0x1000, uva: 0x7f00_0000_0000 }]),
      { fds: nine },
      /SET_MEM_TABLE\(5\): 9 descriptors attached, expected 1 to 8/,
    );
    nine.forEach(close);
    close(a);
    close(b);
    assert.equal(h.backend.memory.regions.length, 0);
    assert.equal(h.backend.vrings[0]?.callFd, -1);
  }),
);

Deno.test(
  "VhostUserBackend.handle() refuses a queue index out of range",
  withHarness((h) => {
    h.negotiate();
    const fd = eventfd();
    const out = (i: number): RegExp =>
      new RegExp(`queue index ${i} is out of range \\(2 queues\\)`);
    h.malformed(M.VHOST_USER_SET_VRING_NUM, state(2, 8), {}, out(2));
    h.malformed(M.VHOST_USER_SET_VRING_BASE, state(0xffff_ffff, 0), {}, out(0xffff_ffff));
    h.malformed(M.VHOST_USER_SET_VRING_ADDR, vringAddr(5, 0, 0, 0), {}, out(5));
    h.malformed(M.VHOST_USER_GET_VRING_BASE, state(9, 0), {}, out(9));
    h.malformed(M.VHOST_USER_SET_VRING_ENABLE, state(2, 1), {}, out(2));
    h.malformed(M.VHOST_USER_SET_VRING_KICK, u64(200), { fds: [fd] }, out(200));
    h.malformed(M.VHOST_USER_SET_VRING_CALL, u64(2 | NOFD), {}, out(2));
    h.malformed(
      M.VHOST_USER_SET_VRING_KICK,
      u64(0x200),
      { fds: [fd] },
      /payload 0x200 has unknown bits/,
    );
    close(fd);
  }),
);

Deno.test(
  "VhostUserBackend.handle() refuses a ring size that is not a power of 2 up to 32768",
  withHarness((h) => {
    h.negotiate();
    for (const size of [0, 3, 65536, 100, 0xffff_ffff]) {
      h.malformed(
        M.VHOST_USER_SET_VRING_NUM,
        state(0, size),
        {},
        new RegExp(`queue size ${size} `),
      );
    }
    assert.equal(h.backend.vrings[0]?.num, 0);
    for (const size of [1, 256, 32768]) {
      h.do(M.VHOST_USER_SET_VRING_NUM, state(0, size));
      assert.equal(h.backend.vrings[0]?.num, size);
    }
    h.malformed(M.VHOST_USER_SET_VRING_BASE, state(0, 0x1_0000), {}, /base 65536 is over 65535/);
    h.malformed(M.VHOST_USER_SET_VRING_ENABLE, state(0, 2), {}, /state 2 is not 0 or 1/);
  }),
);

Deno.test(
  "VhostUserBackend.handle() refuses ring addresses with logging or beyond 2^53",
  withHarness((h) => {
    h.negotiate();
    h.do(M.VHOST_USER_SET_VRING_ADDR, vringAddr(0, 0x1000, 0x2000, 0x3000, M.VHOST_VRING_F_LOG), {
      flags: NEED_REPLY,
    });
    assert.notEqual(h.u64Reply(M.VHOST_USER_SET_VRING_ADDR), 0n);
    h.do(M.VHOST_USER_SET_VRING_ADDR, vringAddr(0, 2 ** 53, 0x2000, 0x3000), { flags: NEED_REPLY });
    assert.notEqual(h.u64Reply(M.VHOST_USER_SET_VRING_ADDR), 0n);
    assert.equal(h.backend.vrings[0]?.addresses, undefined);
  }),
);

Deno.test(
  "VhostUserBackend.handle() KICK before the ring has a size or addresses is refused, fd kept once",
  withHarness((h) => {
    h.negotiate();
    const fd = eventfd();
    h.send(M.VHOST_USER_SET_VRING_KICK, u64(0), { flags: NEED_REPLY, fds: [fd] });
    h.step();
    assert.notEqual(h.u64Reply(M.VHOST_USER_SET_VRING_KICK), 0n);
    assert.equal(h.backend.vrings[0]?.queue, undefined);
    close(fd);
  }),
);

Deno.test(
  "VhostUserBackend.handle() a refused KICK changes nothing (no fd kept, no hook called)",
  withHarness((h) => {
    // The module's contract: "Every request is checked before it changes anything".
    h.negotiate();
    const fd = eventfd();
    h.send(M.VHOST_USER_SET_VRING_KICK, u64(0), { flags: NEED_REPLY, fds: [fd] });
    h.step();
    assert.notEqual(h.u64Reply(M.VHOST_USER_SET_VRING_KICK), 0n);
    close(fd);
    assert.deepEqual(h.hooks.take(), [], "the device was not told to watch a refused fd");
    assert.equal(h.backend.vrings[0]?.kickFd, -1, "the refused fd was not kept");
  }),
);

Deno.test(
  "VhostUserBackend: a new KICK on a started ring swaps the fd and keeps the queue",
  withHarness((h) => {
    h.negotiate();
    const { ram } = sharedRam(h);
    h.reply();
    const k1 = eventfd();
    const k2 = eventfd();
    setupRing(h, ram, { kick: k1 });
    h.do(M.VHOST_USER_SET_VRING_ENABLE, state(0, 1));
    const q = queueOf(h, 0);
    const old = h.backend.vrings[0]?.kickFd ?? -1;
    h.hooks.take();
    h.send(M.VHOST_USER_SET_VRING_KICK, u64(0), { fds: [k2] });
    h.step();
    assert.deepEqual(h.hooks.take(), ["kick 0 fd", "ready 0"]);
    assert.equal(isOpen(old), false, "the old kick fd is closed");
    assert.equal(queueOf(h, 0), q, "the same queue");
    eventfdSignal(k2);
    assert.equal(eventfdConsume(h.backend.vrings[0]?.kickFd ?? -1), 1);
    close(k1);
    close(k2);
    ram.unmap();
  }),
);

Deno.test(
  "VhostUserBackend.handle() refuses an unknown request code, closing its fds",
  withHarness((h) => {
    h.negotiate();
    const fd = eventfd();
    h.malformed(99, new Uint8Array(8), { fds: [fd] }, /unknown request 99/);
    h.malformed(0, undefined, {}, /unknown request 0/);
    h.malformed(41, undefined, { flags: NEED_REPLY }, /unknown request 41/);
    close(fd);
  }),
);

Deno.test(
  "VhostUserBackend.handle() answers a known but unsupported request with a failure, no crash",
  withHarness((h) => {
    h.negotiate();
    // GET_CONFIG (24) with NEED_REPLY: a failure reply.
    h.do(M.VHOST_USER_GET_CONFIG, new Uint8Array(12 + 36), { flags: NEED_REPLY });
    assert.notEqual(h.u64Reply(M.VHOST_USER_GET_CONFIG), 0n);
    // SET_LOG_BASE (6) with its fd: a failure reply, and the fd is closed.
    const fd = memfdCreate("log", 0x1000);
    h.send(M.VHOST_USER_SET_LOG_BASE, new Uint8Array(16), { flags: NEED_REPLY, fds: [fd] });
    close(fd);
    h.step();
    assert.notEqual(h.u64Reply(M.VHOST_USER_SET_LOG_BASE), 0n);
    // Without NEED_REPLY it is ignored.
    h.do(M.VHOST_USER_SET_STATUS, u64(15));
    assert.equal(h.reply(), undefined);
    // The connection goes on.
    h.do(M.VHOST_USER_GET_QUEUE_NUM);
    assert.equal(h.u64Reply(M.VHOST_USER_GET_QUEUE_NUM), BigInt(QUEUES));
  }),
);

Deno.test(
  "VhostUserBackend.handle() refuses header flags without version 1, or with REPLY",
  withHarness((h) => {
    const fd = eventfd();
    h.malformed(M.VHOST_USER_GET_FEATURES, undefined, { flags: 0 }, /carry no version 1/);
    h.malformed(M.VHOST_USER_GET_FEATURES, undefined, { flags: 0x2 }, /carry no version 1/);
    h.malformed(
      M.VHOST_USER_SET_VRING_CALL,
      u64(0),
      { flags: 0x5, fds: [fd] },
      /a reply where a request/,
    );
    close(fd);
    assert.equal(h.backend.vrings[0]?.callFd, -1);
  }),
);

Deno.test(
  "Connection.receive() refuses a payload over 4096 bytes, closing its fds",
  withHarness((h) => {
    const fd = eventfd();
    h.send(M.VHOST_USER_SET_MEM_TABLE, new Uint8Array(0), { size: 5000, fds: [fd] });
    close(fd);
    assert.throws(() => h.conn.receive(), (e: unknown) => {
      assert.ok(e instanceof ProtocolError);
      assert.match(e.message, /payload size 5000 is over the limit of 4096/);
      return true;
    });
  }),
);

Deno.test("VhostUserBackend: GET_CONFIG reads the configuration space; GET_SHMEM_CONFIG the window's size", () => {
  const config = new Uint8Array(40);
  config.set(new TextEncoder().encode("myfs"));
  new DataView(config.buffer).setUint32(36, 2, true);
  const protocol = PROTOCOL_FEATURES | M.bit(M.VHOST_USER_PROTOCOL_F_CONFIG) |
    M.bit(M.VHOST_USER_PROTOCOL_F_SHMEM);
  const h = new Harness({
    protocolFeatures: protocol,
    deviceConfig: config,
    shmemSizes: [64 << 20],
  });
  try {
    h.negotiate(protocol);
    const ask = new Uint8Array(12 + 40);
    new DataView(ask.buffer).setUint32(4, 40, true);
    h.do(M.VHOST_USER_GET_CONFIG, ask);
    const r = h.reply();
    assert.ok(r !== undefined);
    assert.equal(r.request, M.VHOST_USER_GET_CONFIG);
    assert.equal(r.size, 52, "the header and the 40 bytes asked");
    assert.equal(r.payload.getUint32(4, true), 40);
    assert.deepEqual(new Uint8Array(r.payload.buffer, 12, 40), config);
    // Asked past the space: zeros; a size the payload does not hold: a protocol error.
    const tail = new Uint8Array(12 + 8);
    new DataView(tail.buffer).setUint32(0, 36, true);
    new DataView(tail.buffer).setUint32(4, 8, true);
    h.do(M.VHOST_USER_GET_CONFIG, tail);
    assert.deepEqual([...new Uint8Array(h.reply()?.payload.buffer ?? new ArrayBuffer(0), 12)], [
      2,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
    ]);
    const lying = new Uint8Array(12);
    new DataView(lying.buffer).setUint32(4, 40, true);
    h.malformed(M.VHOST_USER_GET_CONFIG, lying, {}, /GET_CONFIG: offset 0 size 40/);
    h.do(M.VHOST_USER_GET_SHMEM_CONFIG);
    const s = h.reply();
    assert.ok(s !== undefined);
    assert.equal(s.size, M.SHMEM_CONFIG.size);
    assert.equal(s.payload.getUint32(0, true), 1, "one region");
    assert.equal(s.payload.getBigUint64(8, true), 64n << 20n, "the window's size");
  } finally {
    h.close();
  }
  // Not negotiated: a failure reply when one was asked for, never the window.
  const plain = new Harness({ shmemSizes: [64 << 20] });
  try {
    plain.negotiate();
    plain.do(M.VHOST_USER_GET_SHMEM_CONFIG, undefined, { flags: FLAGS | 0x8 });
    assert.equal(plain.u64Reply(M.VHOST_USER_GET_SHMEM_CONFIG), 1n);
  } finally {
    plain.close();
  }
});
