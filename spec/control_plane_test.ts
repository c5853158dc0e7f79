/**
 * Spec: the vhost-user control plane beyond what QEMU 7.2's vhost-user-fs sends. QEMU 7.2
 * always negotiates CONFIGURE_MEM_SLOTS (memory through ADD_MEM_REG), never removes a region
 * under running rings, never resets the owner, always gives kick and call eventfds, and uses one
 * request queue. Other front ends (other VMMs, later QEMUs, the vhost-user spec itself) do all
 * of that, and the README promises the back end handles "ADD_MEM_REG, or SET_MEM_TABLE" and
 * checks every message before it changes anything.
 *
 * Each case ends with a FUSE_INIT answered on a request queue: the device still works after the
 * unusual request. Test names start with `CONTROL-`; every case runs against each daemon in
 * `DAEMONS` (comma list of ours, c, rust; default all three) unless `DIFFERENCES` below says the
 * reference daemon does not do it, with the reason.
 *
 * @module
 */
import assert from "node:assert/strict";
import { FUSE_GETATTR, FUSE_INIT, IN_HEADER, INIT_OUT, OUT_HEADER } from "../src/wire/fuse.ts";
import {
  bit,
  MEMORY_REGION,
  requestName,
  SINGLE_MEMORY_REGION,
  U64_PAYLOAD_SIZE,
  u64Payload,
  VHOST_USER_ADD_MEM_REG,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_GET_FEATURES,
  VHOST_USER_GET_MAX_MEM_SLOTS,
  VHOST_USER_GET_PROTOCOL_FEATURES,
  VHOST_USER_GET_QUEUE_NUM,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS,
  VHOST_USER_PROTOCOL_F_MQ,
  VHOST_USER_PROTOCOL_F_REPLY_ACK,
  VHOST_USER_PROTOCOL_F_RESET_DEVICE,
  VHOST_USER_REM_MEM_REG,
  VHOST_USER_RESET_DEVICE,
  VHOST_USER_RESET_OWNER,
  VHOST_USER_SET_FEATURES,
  VHOST_USER_SET_OWNER,
  VHOST_USER_SET_PROTOCOL_FEATURES,
  VHOST_USER_SET_VRING_ADDR,
  VHOST_USER_SET_VRING_BASE,
  VHOST_USER_SET_VRING_CALL,
  VHOST_USER_SET_VRING_ENABLE,
  VHOST_USER_SET_VRING_KICK,
  VHOST_USER_SET_VRING_NUM,
  VHOST_USER_VERSION,
  VHOST_USER_VRING_NOFD_MASK,
  VRING_ADDR,
  vringStatePayload,
} from "../src/wire/vhost_user.ts";
import { HIPRIO_QUEUE } from "../src/wire/virtio.ts";
import {
  type DaemonHandle,
  type DaemonKind,
  daemonsUnderTest,
  startDaemon,
} from "./_driver/daemon.ts";
import {
  type FrontendOptions,
  PEER_CLOSED,
  REPLY_FLAGS,
  VhostUserFrontend,
} from "../src/driver/frontend.ts";
import { FUSE_ROOT_ID, FuseClient, type InitOut } from "../src/driver/fuse_client.ts";
import { ATTR_OUT } from "../src/wire/fuse.ts";
import type { GuestRam, GuestRegion, GuestRegionSpec } from "../src/driver/guest_ram.ts";
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../src/wire/virtio.ts";

// ---- what the reference daemons do differently --------------------------------------------------

/** The cases, by ID. */
type CaseId =
  | "mem-table"
  | "rem-mem-reg"
  | "rem-add-ring-region"
  | "reset-owner"
  | "reset-device"
  | "kick-nofd"
  | "call-nofd"
  | "get-vring-base"
  | "mq"
  | "hiprio-request";

/**
 * Cases a reference daemon is known not to pass, with the reason (observed against QEMU 7.2's C
 * virtiofsd and Rust virtiofsd 1.13 with `DAEMONS=ours,c,rust`). Those tests are ignored for it,
 * the reason in the test name.
 */
const DIFFERENCES: Readonly<Record<DaemonKind, Partial<Record<CaseId, string>>>> = {
  ours: {},
  c: {
    "rem-add-ring-region": "QEMU 7.2's libvhost-user unmaps the region under the running " +
      "queue thread and the daemon dies at the next kick (the ADD_MEM_REG that would bring the " +
      "region back gets EPIPE)",
    "reset-owner": "its queue threads keep serving after RESET_OWNER (a request kicked " +
      "afterwards is answered), and setting the rings up again aborts it: " +
      '"fv_queue_set_started: Assertion `vud->qi[qidx]->kick_fd == -1\' failed"',
    "reset-device": "it does not offer protocol feature 13, RESET_DEVICE",
    "kick-nofd": "it starts the queue thread on kick_fd -1 and never polls the ring " +
      '("fv_queue_thread: Start for queue 1 kick_fd -1"): the INIT is never answered',
    "call-nofd": "it panics at the first reply: " +
      '"fv_panic: libvhost-user: Error writing eventfd: Bad file descriptor"',
    mq: "GET_QUEUE_NUM is 2: C virtiofsd serves a single request queue",
  },
  rust: {
    "rem-add-ring-region": 'its vring worker panics on the unmapped ring: "called ' +
      '`Result::unwrap()` on an `Err` value: GuestMemory(InvalidGuestAddress(..))" ' +
      "(virtiofsd-1.13.2/src/vhost_user.rs:353)",
    "reset-owner": "rust-vmm's RESET_OWNER only forgets the owner and the features: the rings " +
      "keep being served (a request kicked afterwards is answered), and guest memory is kept, " +
      "so ADD_MEM_REG of the same region fails (MemoryRegionOverlap) and the daemon exits",
    "reset-device": "guest memory is kept across RESET_DEVICE: ADD_MEM_REG of the same region " +
      "is refused (REPLY_ACK status 1)",
    "kick-nofd": "a ring whose kick came with NOFD is not polled: the INIT is never answered",
    mq: "GET_QUEUE_NUM is 2: Rust virtiofsd 1.13 serves a single request queue",
  },
};

// ---- sessions -----------------------------------------------------------------------------------

/** Three regions, far apart in both address spaces; the rings go in region 0 (first fit). */
const THREE_REGIONS: readonly GuestRegionSpec[] = [
  { guestPhysAddr: 0x10_0000, size: 1 << 20 },
  { guestPhysAddr: 0x800_0000, size: 1 << 20 },
  { guestPhysAddr: 0x4000_0000, size: 2 << 20 },
];

/** How long a control reply may take (they come in microseconds). */
const REPLY_TIMEOUT_MS = 2000;

const BASE_FE: FrontendOptions = { queueSize: 256, timeoutMs: 5000 };

interface Session {
  kind: DaemonKind;
  daemon: DaemonHandle;
  fe: VhostUserFrontend;
  fuse: FuseClient;
  ctl: Ctl;
}

async function makeSharedDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "vfsd-cp-share-" });
  await Deno.writeTextFile(`${dir}/hello.txt`, "hello, virtio-fs\n");
  return dir;
}

/** Runs `fn` on a fresh daemon and front end; a failure carries the daemon's log. */
async function withSession(
  kind: DaemonKind,
  sharedDir: string,
  feOpts: FrontendOptions,
  fn: (s: Session) => void | Promise<void>,
): Promise<void> {
  const daemon = await startDaemon(kind, { sharedDir });
  let fe: VhostUserFrontend | undefined;
  try {
    fe = await VhostUserFrontend.connect(daemon.socketPath, { ...BASE_FE, ...feOpts });
    await fn({ kind, daemon, fe, fuse: new FuseClient(fe), ctl: new Ctl(fe) });
  } catch (e) {
    const log = daemon.stderrText().split("\n").slice(-40).join("\n");
    if (e instanceof Error) e.message += `\n--- ${kind} daemon log (last 40 lines) ---\n${log}`;
    throw e;
  } finally {
    fe?.close();
    await daemon.stop();
  }
}

// ---- raw control messages -----------------------------------------------------------------------

function singleRegion(r: GuestRegion): Uint8Array {
  const p = new Uint8Array(SINGLE_MEMORY_REGION.size);
  const v = new DataView(p.buffer);
  const at = SINGLE_MEMORY_REGION.region;
  v.setBigUint64(at + MEMORY_REGION.guestPhysAddr, BigInt(r.guestPhysAddr), true);
  v.setBigUint64(at + MEMORY_REGION.memorySize, BigInt(r.memorySize), true);
  v.setBigUint64(at + MEMORY_REGION.userspaceAddr, BigInt(r.userspaceAddr), true);
  v.setBigUint64(at + MEMORY_REGION.mmapOffset, BigInt(r.mmapOffset), true);
  return p;
}

/** Control messages sent by hand on a front end's connection, every reply checked. */
class Ctl {
  readonly fe: VhostUserFrontend;
  /** REPLY_ACK is negotiated as far as the back end knows (a reset clears it). */
  replyAck: boolean;

  constructor(fe: VhostUserFrontend) {
    this.fe = fe;
    this.replyAck = (fe.protocolFeatures.acked & bit(VHOST_USER_PROTOCOL_F_REPLY_ACK)) !== 0n;
  }

  #expect(request: number, size: number): Uint8Array {
    const name = requestName(request);
    const m = this.fe.recvReply(REPLY_TIMEOUT_MS);
    if (m === null) {
      throw new Error(
        `Timed out after ${REPLY_TIMEOUT_MS} ms waiting for the ${name} reply` +
          (this.replyAck ? " (a REPLY_ACK: NEED_REPLY was set, REPLY_ACK having been acked)" : ""),
      );
    }
    if (m === PEER_CLOSED) throw new Error(`Back end closed the connection instead of ${name}`);
    assert.equal(m.flags, REPLY_FLAGS, `${name} reply flags`);
    assert.equal(m.request, request, `${name} reply request`);
    assert.equal(m.size, size, `${name} reply size`);
    return m.payload;
  }

  /** Sends `request` and returns its reply body of `size` bytes. */
  get(request: number, payload: Uint8Array, size: number): Uint8Array {
    this.fe.sendRaw(request, VHOST_USER_VERSION, payload);
    return this.#expect(request, size);
  }

  getU64(request: number): bigint {
    const p = this.get(request, new Uint8Array(0), U64_PAYLOAD_SIZE);
    return new DataView(p.buffer, p.byteOffset).getBigUint64(0, true);
  }

  /**
   * Sends a request without a reply body; with REPLY_ACK negotiated it asks for the ack and
   * returns its status (0 = success), else returns 0n.
   */
  trySet(
    request: number,
    payload: Uint8Array = new Uint8Array(0),
    fds: readonly number[] = [],
  ): bigint {
    const ack = this.replyAck;
    this.fe.sendRaw(
      request,
      VHOST_USER_VERSION | (ack ? VHOST_USER_NEED_REPLY_MASK : 0),
      payload,
      fds,
    );
    if (!ack) return 0n;
    const p = this.#expect(request, U64_PAYLOAD_SIZE);
    return new DataView(p.buffer, p.byteOffset).getBigUint64(0, true);
  }

  /** `trySet`, failing unless the ack (when asked for) is 0. */
  set(
    request: number,
    payload: Uint8Array = new Uint8Array(0),
    fds: readonly number[] = [],
  ): void {
    const status = this.trySet(request, payload, fds);
    assert.equal(status, 0n, `${requestName(request)} REPLY_ACK status`);
  }

  /** GET_FEATURES as a barrier: every earlier message was taken. */
  barrier(): void {
    assert.equal(this.getU64(VHOST_USER_GET_FEATURES), this.fe.features.offered, "GET_FEATURES");
  }

  /**
   * Sets ring `i` up from scratch: the driver's rings zeroed (or left with avail.idx and used.idx
   * at `base`), then SET_VRING_NUM, BASE, ADDR, KICK (or NOFD), ENABLE 1, CALL (or NOFD).
   */
  startRing(i: number, opts: { base?: number; kickNoFd?: boolean; callNoFd?: boolean } = {}): void {
    const fe = this.fe;
    const q = fe.queue(i);
    const mem = fe.memory;
    const base = opts.base ?? 0;
    q.reset();
    if (base !== 0) {
      q.setAvailIdx(base);
      mem.setU16(q.usedGpa + 2, base);
    }
    this.set(VHOST_USER_SET_VRING_NUM, vringStatePayload(i, q.size));
    this.set(VHOST_USER_SET_VRING_BASE, vringStatePayload(i, base));
    const a = new Uint8Array(VRING_ADDR.size);
    const av = new DataView(a.buffer);
    av.setUint32(VRING_ADDR.index, i, true);
    av.setBigUint64(VRING_ADDR.desc, BigInt(mem.gpaToUserspace(q.descGpa)), true);
    av.setBigUint64(VRING_ADDR.used, BigInt(mem.gpaToUserspace(q.usedGpa)), true);
    av.setBigUint64(VRING_ADDR.avail, BigInt(mem.gpaToUserspace(q.availGpa)), true);
    this.set(VHOST_USER_SET_VRING_ADDR, a);
    if (opts.kickNoFd) {
      this.set(VHOST_USER_SET_VRING_KICK, u64Payload(VHOST_USER_VRING_NOFD_MASK | i));
    } else this.set(VHOST_USER_SET_VRING_KICK, u64Payload(i), [fe.kickFd(i)]);
    if ((fe.features.acked & bit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n) {
      this.set(VHOST_USER_SET_VRING_ENABLE, vringStatePayload(i, 1));
    }
    if (opts.callNoFd) {
      this.set(VHOST_USER_SET_VRING_CALL, u64Payload(VHOST_USER_VRING_NOFD_MASK | i));
    } else this.set(VHOST_USER_SET_VRING_CALL, u64Payload(i), [fe.callFd(i)]);
  }

  addRegion(r: GuestRegion): void {
    this.set(VHOST_USER_ADD_MEM_REG, singleRegion(r), [this.fe.memory.fd]);
  }

  removeRegion(r: GuestRegion): void {
    // As QEMU 7.2 sends it: the region, no descriptor.
    this.set(VHOST_USER_REM_MEM_REG, singleRegion(r));
  }

  /**
   * The negotiation again on the same connection, after RESET_OWNER / RESET_DEVICE: features,
   * memory, and every ring from scratch (the front end's own eventfds and rings are reused).
   * With `protocol`, first GET_FEATURES, GET/SET_PROTOCOL_FEATURES (`extraProtocol` acked too
   * when offered), GET_QUEUE_NUM and GET_MAX_MEM_SLOTS, as on a new connection; without it the
   * protocol features acked before stay in force (REPLY_ACK included), as QEMU assumes. With
   * `owner`, SET_OWNER too.
   */
  renegotiate(opts: { protocol: boolean; owner: boolean; extraProtocol?: bigint }): void {
    const fe = this.fe;
    let slots = (fe.protocolFeatures.acked & bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) !== 0n;
    if (opts.protocol) {
      this.replyAck = false;
      const features = this.getU64(VHOST_USER_GET_FEATURES);
      assert.equal(features, fe.features.offered, "GET_FEATURES after the reset");
      const offered = this.getU64(VHOST_USER_GET_PROTOCOL_FEATURES);
      const want = (bit(VHOST_USER_PROTOCOL_F_REPLY_ACK) | bit(VHOST_USER_PROTOCOL_F_MQ) |
        bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS) | (opts.extraProtocol ?? 0n)) & offered;
      this.set(VHOST_USER_SET_PROTOCOL_FEATURES, u64Payload(want));
      this.replyAck = (want & bit(VHOST_USER_PROTOCOL_F_REPLY_ACK)) !== 0n;
      if ((want & bit(VHOST_USER_PROTOCOL_F_MQ)) !== 0n) {
        const n = this.getU64(VHOST_USER_GET_QUEUE_NUM);
        assert.ok(n >= BigInt(fe.queueCount), `GET_QUEUE_NUM ${n} after the reset`);
      }
      slots = (want & bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) !== 0n;
      if (slots) this.getU64(VHOST_USER_GET_MAX_MEM_SLOTS);
    }
    if (opts.owner) this.set(VHOST_USER_SET_OWNER);
    for (let i = 0; i < fe.queueCount; i++) {
      this.set(VHOST_USER_SET_VRING_CALL, u64Payload(i), [fe.callFd(i)]);
    }
    this.set(VHOST_USER_SET_FEATURES, u64Payload(fe.features.acked));
    assert.ok(slots, "the renegotiation sends memory through ADD_MEM_REG");
    for (const r of fe.memory.regions) this.addRegion(r);
    for (let i = 0; i < fe.queueCount; i++) this.startRing(i);
    this.barrier();
  }
}

// ---- FUSE helpers -------------------------------------------------------------------------------

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** FUSE_INIT placed and published on queue `fuse.queue` without kicking; waits for the answer. */
function initWithoutKick(fe: VhostUserFrontend, fuse: FuseClient): InitOut {
  const unique = fuse.submit(FUSE_INIT, [FuseClient.initIn()], [INIT_OUT.size], {
    nodeid: 0n,
    publish: false,
  });
  fe.queue(fuse.queue).publish(); // avail.idx only: no kick whatever the device asked
  return FuseClient.parseInitOut(FuseClient.check(fuse.wait(unique)));
}

function checkInit(init: InitOut): void {
  assert.equal(init.major, 7, "FUSE_INIT answered with major 7");
  assert.ok(init.minor >= 31, `FUSE_INIT minor ${init.minor}`);
}

/** Allocates everything left in region `index` of `mem` (so later buffers go elsewhere). */
function fillRegion(mem: GuestRam, index: number): void {
  for (const size of [1 << 16, 4096, 512, 64, 8]) {
    for (;;) {
      try {
        mem.alloc(size, 8, index);
      } catch {
        break;
      }
    }
  }
}

/** Waits (polling the used ring) until queue `i`'s used.idx is `idx`. */
async function waitUsedIdx(fe: VhostUserFrontend, i: number, idx: number, ms = 5000) {
  const q = fe.queue(i);
  const deadline = Date.now() + ms;
  while (q.usedIdx !== idx) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${ms} ms: queue ${i} used.idx ${q.usedIdx}, want ${idx}`);
    }
    await sleep(5);
  }
}

/**
 * Places a GETATTR of the root as a direct chain by hand in avail slot `slot` using descriptors
 * `2 * k` and `2 * k + 1` (for rings whose indices do not start at 0).
 */
function rawGetattr(fe: VhostUserFrontend, i: number, k: number, slot: number): void {
  const q = fe.queue(i);
  const mem = fe.memory;
  const inLen = IN_HEADER.size + 16;
  const req = new Uint8Array(inLen);
  const v = new DataView(req.buffer);
  v.setUint32(IN_HEADER.len, inLen, true);
  v.setUint32(IN_HEADER.opcode, FUSE_GETATTR, true);
  v.setBigUint64(IN_HEADER.unique, BigInt(1000 + 2 * k), true);
  v.setBigUint64(IN_HEADER.nodeid, FUSE_ROOT_ID, true);
  const inGpa = mem.place(req);
  const outLen = OUT_HEADER.size + ATTR_OUT.size;
  const outGpa = mem.alloc(outLen);
  q.writeDescriptor(2 * k, { addr: inGpa, len: inLen, flags: VIRTQ_DESC_F_NEXT, next: 2 * k + 1 });
  q.writeDescriptor(2 * k + 1, { addr: outGpa, len: outLen, flags: VIRTQ_DESC_F_WRITE, next: 0 });
  q.writeAvailRing(slot, 2 * k);
}

/**
 * INIT, then RESET_DEVICE acked (the driver's negotiation does not ack it) and sent; a request
 * kicked afterwards is not served.
 */
async function resetDevice(fe: VhostUserFrontend, fuse: FuseClient, ctl: Ctl): Promise<void> {
  const f13 = bit(VHOST_USER_PROTOCOL_F_RESET_DEVICE);
  assert.ok((fe.protocolFeatures.offered & f13) !== 0n, "RESET_DEVICE is offered");
  checkInit(fuse.init());
  ctl.set(VHOST_USER_SET_PROTOCOL_FEATURES, u64Payload(fe.protocolFeatures.acked | f13));
  ctl.barrier();
  fe.sendRaw(VHOST_USER_RESET_DEVICE, VHOST_USER_VERSION);
  await assertNotServed(fe);
}

/** Publishes a GETATTR on queue 1 (through a throwaway client), kicks, and sees it unanswered. */
async function assertNotServed(fe: VhostUserFrontend, ms = 200): Promise<void> {
  const stray = new FuseClient(fe);
  stray.submit(FUSE_GETATTR, [FuseClient.getattrIn()], [ATTR_OUT.size]);
  const used = fe.queue(1).usedIdx;
  fe.kick(1);
  await sleep(ms);
  assert.equal(fe.queue(1).usedIdx, used, "a request kicked after the reset is not served");
}

// ---- the cases ----------------------------------------------------------------------------------

interface Case {
  id: CaseId;
  name: string;
  feOpts?: FrontendOptions;
  fn: (s: Session) => void | Promise<void>;
}

const CASES: readonly Case[] = [
  {
    id: "mem-table",
    name: "SET_MEM_TABLE with 3 regions instead of ADD_MEM_REG (setMemTable: true)",
    feOpts: { setMemTable: true, regions: THREE_REGIONS },
    fn: ({ fe, fuse }) => {
      checkInit(fuse.init());
      // Fill region 0, then region 1: each GETATTR's buffers land in the next region.
      for (const region of [0, 1]) {
        fillRegion(fe.memory, region);
        const attr = fuse.getattr(FUSE_ROOT_ID);
        assert.ok(attr.attr.ino !== 0n, `GETATTR with buffers after region ${region}`);
      }
    },
  },
  {
    id: "mem-table",
    name: "SET_MEM_TABLE with 3 regions when CONFIGURE_MEM_SLOTS is not negotiated",
    feOpts: { configureMemSlots: false, regions: THREE_REGIONS },
    fn: ({ fe, fuse }) => {
      assert.equal(fe.maxMemSlots, undefined, "GET_MAX_MEM_SLOTS was not asked");
      checkInit(fuse.init());
      for (const region of [0, 1]) {
        fillRegion(fe.memory, region);
        fuse.getattr(FUSE_ROOT_ID);
      }
    },
  },
  {
    id: "rem-mem-reg",
    name: "REM_MEM_REG of a region not holding the rings; INIT works; ADD_MEM_REG brings it back",
    feOpts: { regions: THREE_REGIONS },
    fn: ({ fe, fuse, ctl }) => {
      const r2 = fe.memory.regions[2];
      assert.ok(r2 !== undefined);
      ctl.removeRegion(r2);
      ctl.barrier();
      checkInit(fuse.init());
      fillRegion(fe.memory, 0);
      fuse.getattr(FUSE_ROOT_ID); // buffers in region 1, still there
      ctl.addRegion(r2);
      fillRegion(fe.memory, 1);
      fuse.getattr(FUSE_ROOT_ID); // buffers in region 2, back again
    },
  },
  {
    id: "rem-add-ring-region",
    name: "REM_MEM_REG of the region holding the rings pauses the queue; ADD_MEM_REG resumes it",
    feOpts: { regions: THREE_REGIONS },
    fn: async ({ fe, fuse, ctl }) => {
      const r0 = fe.memory.regions[0];
      assert.ok(r0 !== undefined);
      ctl.removeRegion(r0);
      ctl.barrier();
      const unique = fuse.submit(FUSE_INIT, [FuseClient.initIn()], [INIT_OUT.size], {
        nodeid: 0n,
      });
      fe.kick(1);
      const q = fe.queue(1);
      await sleep(300);
      assert.equal(q.usedIdx, 0, "nothing is served while the ring's region is gone");
      ctl.addRegion(r0);
      const init = FuseClient.parseInitOut(FuseClient.check(fuse.wait(unique)));
      checkInit(init);
      fuse.getattr(FUSE_ROOT_ID);
    },
  },
  {
    id: "reset-owner",
    name: "RESET_OWNER resets everything; negotiated again from scratch on the same " +
      "connection (protocol features, owner, features, memory, rings); INIT works",
    fn: async ({ fe, fuse, ctl }) => {
      checkInit(fuse.init());
      fe.sendRaw(VHOST_USER_RESET_OWNER, VHOST_USER_VERSION);
      await assertNotServed(fe);
      ctl.renegotiate({ protocol: true, owner: true });
      checkInit(fuse.init());
      fuse.getattr(FUSE_ROOT_ID);
    },
  },
  // vhost-user.rst: RESET_DEVICE resets "all internal device state to the initial state, ready
  // to be reinitialized. The back-end retains ownership of the device throughout the reset".
  // QEMU sends SET_PROTOCOL_FEATURES once per connection and never again, so after a reset it
  // goes on with NEED_REPLY set wherever REPLY_ACK was negotiated (rust-vmm's vhost, too,
  // "retain[s] protocol state" across RESET_DEVICE).
  {
    id: "reset-device",
    name: "RESET_DEVICE (protocol feature 13 offered) resets the device; features, memory and " +
      "rings set up again with the protocol state kept (REPLY_ACK in force, no SET_OWNER), as " +
      "QEMU does; INIT works",
    fn: async ({ fe, fuse, ctl }) => {
      await resetDevice(fe, fuse, ctl);
      ctl.renegotiate({ protocol: false, owner: false });
      checkInit(fuse.init());
      fuse.getattr(FUSE_ROOT_ID);
    },
  },
  {
    id: "reset-device",
    name: "RESET_DEVICE, then protocol features negotiated again too (no SET_OWNER); INIT works",
    fn: async ({ fe, fuse, ctl }) => {
      await resetDevice(fe, fuse, ctl);
      ctl.renegotiate({
        protocol: true,
        owner: false,
        extraProtocol: bit(VHOST_USER_PROTOCOL_F_RESET_DEVICE),
      });
      checkInit(fuse.init());
      fuse.getattr(FUSE_ROOT_ID);
    },
  },
  {
    id: "kick-nofd",
    name: "SET_VRING_KICK with NOFD: the ring is polled and INIT is answered without any kick",
    fn: ({ fe, fuse, ctl }) => {
      fe.stopQueue(1);
      ctl.startRing(1, { kickNoFd: true });
      ctl.barrier();
      checkInit(initWithoutKick(fe, fuse));
      for (let i = 0; i < 3; i++) {
        const unique = fuse.submit(FUSE_GETATTR, [FuseClient.getattrIn()], [ATTR_OUT.size], {
          publish: false,
        });
        fe.queue(1).publish();
        FuseClient.check(fuse.wait(unique));
      }
    },
  },
  {
    id: "call-nofd",
    name: "SET_VRING_CALL with NOFD: no interrupt, the replies still appear on the used ring",
    fn: ({ fe, fuse, ctl }) => {
      checkInit(fuse.init());
      assert.ok(fe.stats(1).interrupts > 0, "with a call eventfd, INIT's reply interrupts");
      ctl.set(VHOST_USER_SET_VRING_CALL, u64Payload(VHOST_USER_VRING_NOFD_MASK | 1));
      ctl.barrier();
      const before = fe.stats(1).interrupts;
      checkInit(fuse.init());
      for (let i = 0; i < 3; i++) fuse.getattr(FUSE_ROOT_ID);
      assert.equal(fe.stats(1).interrupts, before, "no interrupt after SET_VRING_CALL NOFD");
    },
  },
  {
    id: "get-vring-base",
    name: "GET_VRING_BASE after N requests returns N and stops the ring; restarted, INIT works",
    fn: async ({ fe, fuse }) => {
      checkInit(fuse.init());
      for (let i = 0; i < 4; i++) fuse.getattr(FUSE_ROOT_ID);
      assert.equal(fe.stopQueue(1), 5, "GET_VRING_BASE = 5 requests + base 0");
      const stray = new FuseClient(fe);
      stray.submit(FUSE_GETATTR, [FuseClient.getattrIn()], [ATTR_OUT.size]);
      fe.kick(1);
      await sleep(300);
      assert.equal(fe.queue(1).usedIdx, 5, "a request published after the stop is not answered");
      fe.restartQueues();
      checkInit(new FuseClient(fe).init());
    },
  },
  {
    id: "get-vring-base",
    name: "GET_VRING_BASE with initial base 7 after 3 requests returns 10",
    fn: async ({ fe, ctl }) => {
      fe.stopQueue(1);
      ctl.startRing(1, { base: 7 });
      ctl.barrier();
      for (let k = 0; k < 3; k++) rawGetattr(fe, 1, k, 7 + k);
      fe.queue(1).setAvailIdx(10);
      fe.kick(1);
      await waitUsedIdx(fe, 1, 10);
      assert.equal(fe.stopQueue(1), 10, "GET_VRING_BASE = 3 requests + base 7");
      fe.restartQueues();
      checkInit(new FuseClient(fe).init());
    },
  },
  {
    id: "mq",
    name: "GET_QUEUE_NUM >= 3, and FUSE_INIT on the second request queue (queue 2) is answered",
    feOpts: { requestQueues: 2 },
    fn: ({ fe }) => {
      assert.ok((fe.backendQueueNum ?? 0) >= 3, `GET_QUEUE_NUM ${fe.backendQueueNum}`);
      const q2 = new FuseClient(fe, { queue: 2 });
      checkInit(q2.init());
      q2.getattr(FUSE_ROOT_ID);
      new FuseClient(fe, { queue: 1 }).getattr(FUSE_ROOT_ID);
    },
  },
  {
    id: "hiprio-request",
    name: "a request on the hiprio queue that is not FORGET gets a reply",
    fn: ({ fuse, fe }) => {
      checkInit(fuse.init());
      const hiprio = new FuseClient(fe, { queue: HIPRIO_QUEUE });
      const attr = hiprio.getattr(FUSE_ROOT_ID);
      assert.ok(attr.attr.ino !== 0n, "GETATTR answered on the hiprio queue");
      fuse.getattr(FUSE_ROOT_ID);
    },
  },
];

for (const kind of daemonsUnderTest()) {
  for (const c of CASES) {
    const differs = DIFFERENCES[kind][c.id];
    Deno.test({
      name: `CONTROL-${c.id.toUpperCase()} ${c.name} [${kind}]` +
        (differs !== undefined ? ` (skipped: ${differs})` : ""),
      ignore: differs !== undefined,
      async fn() {
        const dir = await makeSharedDir();
        try {
          await withSession(kind, dir, c.feOpts ?? {}, c.fn);
        } finally {
          await Deno.remove(dir, { recursive: true });
        }
      },
    });
  }
}
