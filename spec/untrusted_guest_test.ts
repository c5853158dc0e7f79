/**
 * Hostile input: a front end that sends malformed vhost-user messages and a guest that writes
 * garbage into its rings. The daemon must refuse each bad message (a failure reply when one was
 * asked for) or close the connection with an ERROR naming the message, refuse each malformed
 * descriptor chain on its own, and go on serving: with `--keep-serving` the next front end is
 * accepted, and FUSE_INIT is answered at the end. Without `--keep-serving` a malformed message
 * ends the daemon with exit code 1.
 *
 * - UNTRUSTED-MSG: one malformed message per step, each on a fresh connection to ONE daemon.
 * - UNTRUSTED-REFUSED: well-formed requests the daemon must refuse with a failure reply (REPLY_ACK
 *   negotiated, NEED_REPLY set), the connection and its queues staying usable.
 * - UNTRUSTED-INFLIGHT: CALL/KICK re-sent and a memory region removed while requests are in
 *   flight.
 * - UNTRUSTED-FUZZ: 10,000 seeded random-ring cases (`spec/_driver/hostile.ts`), each followed by
 *   a sentinel request answered within 1 s (10 ms more per request of its batch that changes the
 *   cache window); the daemon's RSS may not grow by more than 32 MiB.
 *   The daemon has a 16 MiB cache window and the share one 8 MiB file: the cases include
 *   SETUPMAPPING and REMOVEMAPPING with random fields, the window never holds more than 8
 *   mappings, the daemon never asks the front end for a map QEMU refuses, and a REMOVEMAPPING of
 *   the whole window leaves nothing mapped.
 * - UNTRUSTED-REGION-BEYOND-FD: a memory region larger than its file descriptor (own daemon: a
 *   crash here must not hide the rest).
 * - UNTRUSTED-CALL-FD-UNREAD: a CALL descriptor that is a socket nobody reads (own daemon: a hang
 *   here must not hide the rest).
 * - UNTRUSTED-EXIT: without `--keep-serving`, one malformed message means exit code 1.
 *
 * @module
 */
import assert from "node:assert/strict";
import { type DaemonHandle, startDaemon } from "./_driver/daemon.ts";
import { PEER_CLOSED, REPLY_FLAGS, VhostUserFrontend } from "../src/driver/frontend.ts";
import { FuseClient } from "../src/driver/fuse_client.ts";
import { ATTR_OUT, GETATTR_IN } from "../src/wire/fuse.ts";
import {
  daemonRefusedChains,
  FUZZ_DAEMON_ARGS,
  FUZZ_MAX_MAPPINGS,
  fuzzDaemonEnv,
  type FuzzStats,
  type MemKiB,
  MEMORY_GROWTH_LIMIT_KIB,
  prepareFuzzShare,
  readMemKiB,
  readRssKiB,
  runFuzz,
} from "./_driver/hostile.ts";
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../src/wire/virtio.ts";
import {
  close,
  closeQuietly,
  EFD_NONBLOCK,
  eventfd,
  FdSocket,
  memfdCreate,
  socketPair,
} from "../src/ffi/mod.ts";
import { FUSE_GETATTR, IN_HEADER } from "../src/wire/fuse.ts";
import { ErrnoError } from "../src/ffi/mod.ts";
import * as M from "../src/wire/vhost_user.ts";
import { u64Payload, vringStatePayload } from "../src/wire/vhost_user.ts";

/** The fuzzing seed (fixed: a failure is reproduced with `deno task fuzz -- --seed`). */
const FUZZ_SEED = 20261125;
const FUZZ_CASES = 10_000;

const V = M.VHOST_USER_VERSION;
const NEED_REPLY = M.VHOST_USER_NEED_REPLY_MASK;
const RAW_REGIONS = [{ guestPhysAddr: 0x10_0000, size: 1 << 20 }];
const FULL_REGIONS = [{ guestPhysAddr: 0x10_0000, size: 4 << 20 }];

// ---- payloads -----------------------------------------------------------------------------------

/** A region as 64-bit fields. */
interface Region64 {
  gpa: bigint;
  size: bigint;
  uaddr: bigint;
  offset: bigint;
}

function putRegion(v: DataView, at: number, r: Region64): void {
  v.setBigUint64(at + M.MEMORY_REGION.guestPhysAddr, r.gpa, true);
  v.setBigUint64(at + M.MEMORY_REGION.memorySize, r.size, true);
  v.setBigUint64(at + M.MEMORY_REGION.userspaceAddr, r.uaddr, true);
  v.setBigUint64(at + M.MEMORY_REGION.mmapOffset, r.offset, true);
}

/** ADD_MEM_REG / REM_MEM_REG payload. */
function singleRegion(r: Region64): Uint8Array {
  const b = new Uint8Array(M.SINGLE_MEMORY_REGION.size);
  putRegion(new DataView(b.buffer), M.SINGLE_MEMORY_REGION.region, r);
  return b;
}

/** SET_MEM_TABLE payload claiming `nregions` and holding `regions`. */
function memTable(nregions: number, regions: readonly Region64[]): Uint8Array {
  const b = new Uint8Array(M.MEMORY_TABLE.header + M.MEMORY_REGION.size * regions.length);
  const v = new DataView(b.buffer);
  v.setUint32(M.MEMORY_TABLE.nregions, nregions, true);
  regions.forEach((r, i) => putRegion(v, M.MEMORY_TABLE.header + M.MEMORY_REGION.size * i, r));
  return b;
}

/** The first region of a front end's memory, as 64-bit fields. */
function firstRegion(fe: VhostUserFrontend): Region64 {
  const r = fe.memory.regions[0];
  assert.ok(r !== undefined);
  return {
    gpa: BigInt(r.guestPhysAddr),
    size: BigInt(r.memorySize),
    uaddr: BigInt(r.userspaceAddr),
    offset: BigInt(r.mmapOffset),
  };
}

function header(request: number, flags: number, size: number): Uint8Array {
  const b = new Uint8Array(M.HEADER_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, size, true);
  return b;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Sends bytes as they are (no header of our making) on the front end's socket. */
function sendBytes(fe: VhostUserFrontend, bytes: Uint8Array, fds: readonly number[] = []): void {
  new FdSocket(fe.socketFd).send(bytes, fds);
}

function withEventfds<T>(n: number, f: (fds: number[]) => T): T {
  const fds = Array.from({ length: n }, () => eventfd(0, EFD_NONBLOCK));
  try {
    return f(fds);
  } finally {
    for (const fd of fds) close(fd);
  }
}

// ---- the harness --------------------------------------------------------------------------------

/** How the daemon took a message. */
type Outcome = "closed" | "refused" | "accepted" | "silent" | "other";

/** Reads the daemon's answer to `request`: a close, a u64 ack (0 or not), or nothing. */
function outcome(fe: VhostUserFrontend, request: number, timeoutMs = 3000): Outcome {
  const m = fe.recvReply(timeoutMs);
  if (m === PEER_CLOSED) return "closed";
  if (m === null) return "silent";
  for (const fd of m.fds) close(fd);
  if (m.request !== request || m.flags !== REPLY_FLAGS || m.size !== 8) return "other";
  return new DataView(m.payload.buffer, m.payload.byteOffset).getBigUint64(0, true) === 0n
    ? "accepted"
    : "refused";
}

/** GET_FEATURES answered on this connection. */
function assertAnswers(fe: VhostUserFrontend, what: string): void {
  fe.sendRaw(M.VHOST_USER_GET_FEATURES, V);
  const m = fe.recvReply(3000);
  assert.ok(m !== null && m !== PEER_CLOSED, `${what}: GET_FEATURES got ${m ?? "no reply"}`);
  assert.equal(m.request, M.VHOST_USER_GET_FEATURES, what);
  assert.equal(m.flags, REPLY_FLAGS, what);
}

/** One FUSE request round trip on the request queue: answered, with its unique. */
function assertFuseServes(fuse: FuseClient, what: string): void {
  const r = fuse.request(FUSE_GETATTR, [new Uint8Array(GETATTR_IN.size)], [ATTR_OUT.size], {
    nodeid: 1n,
  });
  assert.equal(r.unique, r.requestUnique, `${what}: GETATTR reply unique`);
}

function count(text: string, re: RegExp): number {
  return [...text.matchAll(new RegExp(re.source, "g"))].length;
}

function fdCount(pid: number): number {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
}

/** The states of a process's threads from /proc (R running, S sleeping, D waiting, ...). */
function procState(pid: number): string {
  try {
    const states = [...Deno.readDirSync(`/proc/${pid}/task`)].map((t) => {
      const stat = Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/stat`);
      return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0] ?? "?";
    });
    const n = (s: string): number => states.filter((x) => x === s).length;
    return [...new Set(states)].sort().map((s) => `${n(s)} ${s}`).join(", ") + " threads";
  } catch {
    return "gone";
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

async function within<T>(p: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), ms));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** One daemon and what the steps need of it. */
class Harness {
  readonly daemon: DaemonHandle;
  /** Connections the daemon must have accepted (and logged) so far. */
  accepted = 0;

  constructor(daemon: DaemonHandle) {
    this.daemon = daemon;
  }

  log(): string {
    return this.daemon.stderrText();
  }

  /** Fails naming the daemon's end when it has exited. */
  assertRunning(): void {
    assert.ok(
      !this.daemon.hasExited() && readRssKiB(this.daemon.pid) !== undefined,
      `the daemon is gone; its log ends:\n${this.log().slice(-2000)}`,
    );
  }

  /**
   * Waits until the daemon has accepted every connection made so far and seen each end (it
   * serves one at a time: a connection made before it has let the last one go is refused).
   */
  async settled(ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    for (;;) {
      const log = this.log();
      const opened = count(log, /front end connected \(connection/);
      const ended = count(log, /front end disconnected/);
      if (opened >= this.accepted && ended >= opened) return;
      this.assertRunning();
      if (Date.now() > deadline) {
        throw new Error(
          `the daemon has not let every connection go after ${ms} ms (${this.accepted} made, ` +
            `${opened} accepted, ${ended} ended; process state ${procState(this.daemon.pid)})`,
        );
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** A connection on which nothing was sent yet. */
  async raw(): Promise<VhostUserFrontend> {
    await this.settled();
    this.accepted++;
    return await VhostUserFrontend.connectOnly(this.daemon.socketPath, {
      regions: RAW_REGIONS,
      timeoutMs: 3000,
      connectTimeoutMs: 3000,
    });
  }

  /** A connection set up as QEMU 7.2 does (REPLY_ACK, memory slots), FUSE_INIT answered. */
  async full(): Promise<{ fe: VhostUserFrontend; fuse: FuseClient }> {
    await this.settled();
    this.accepted++;
    const fe = await VhostUserFrontend.connect(this.daemon.socketPath, {
      queueSize: 64,
      regions: FULL_REGIONS,
      timeoutMs: 3000,
      connectTimeoutMs: 3000,
    });
    const fuse = new FuseClient(fe, { timeoutMs: 3000 });
    fuse.init();
    return { fe, fuse };
  }

  /** The daemon is alive: a new connection gets GET_FEATURES answered. */
  async probe(): Promise<void> {
    this.assertRunning();
    const fe = await this.raw();
    try {
      assertAnswers(fe, "liveness probe");
    } finally {
      fe.close();
    }
    await this.settled();
  }

  /** The log since `mark` has a line matching `re` at ERROR or WARN. */
  assertLogged(mark: number, re: RegExp, what: string): void {
    const since = this.log().slice(mark);
    const line = new RegExp(`\\b(ERROR|WARN)\\] [^\\n]*${re.source}`);
    assert.match(since, line, `${what}: no ERROR/WARN line naming it; the log since:\n${since}`);
  }
}

/** A malformed message on a fresh connection: the daemon must close it and log an ERROR. */
interface ClosedCase {
  id: string;
  what: string;
  send(fe: VhostUserFrontend): void;
  /** The ERROR line's text (after the level). */
  log: RegExp;
}

const QUEUE_SIZE_CASES: ClosedCase[] = [0, 3, 65536].map((n) => ({
  id: `VRING-SIZE-${n}`,
  what: `SET_VRING_NUM with ring size ${n}`,
  send: (fe) => fe.sendRaw(M.VHOST_USER_SET_VRING_NUM, V, vringStatePayload(0, n)),
  log: new RegExp(`SET_VRING_NUM[^\\n]*queue size ${n} is not a power of 2`),
}));

const CLOSED_CASES: ClosedCase[] = [
  {
    id: "VRING-NUM-4-BYTES",
    what: "SET_VRING_NUM with a 4-byte payload",
    send: (fe) => fe.sendRaw(M.VHOST_USER_SET_VRING_NUM, V, new Uint8Array(4)),
    log: /SET_VRING_NUM\(8\): payload size 4, expected 8/,
  },
  {
    id: "SET-FEATURES-0-BYTES",
    what: "SET_FEATURES with no payload",
    send: (fe) => fe.sendRaw(M.VHOST_USER_SET_FEATURES, V),
    log: /SET_FEATURES\(2\): payload size 0, expected 8/,
  },
  {
    id: "PAYLOAD-4097",
    what: "a payload of 4097 bytes (over 4096)",
    send: (fe) => fe.sendRaw(M.VHOST_USER_GET_FEATURES, V, new Uint8Array(4097)),
    log: /GET_FEATURES\(1\): payload size 4097 is over the limit of 4096/,
  },
  {
    id: "PAYLOAD-4GIB",
    what: "a header claiming a payload of 2^32-1 bytes",
    send: (fe) => sendBytes(fe, header(M.VHOST_USER_SET_MEM_TABLE, V, 0xffff_ffff)),
    log: /SET_MEM_TABLE\(5\): payload size 4294967295 is over the limit/,
  },
  {
    id: "ADD-MEM-REG-0-FDS",
    what: "ADD_MEM_REG without its descriptor",
    send: (fe) =>
      fe.sendRaw(
        M.VHOST_USER_ADD_MEM_REG,
        V,
        singleRegion({ gpa: 0x10_0000n, size: 0x10_0000n, uaddr: 0x7f00_0000_0000n, offset: 0n }),
      ),
    log: /ADD_MEM_REG\(37\): 0 descriptors attached, expected 1/,
  },
  {
    id: "KICK-2-FDS",
    what: "SET_VRING_KICK with 2 descriptors",
    send: (fe) =>
      withEventfds(2, (fds) => fe.sendRaw(M.VHOST_USER_SET_VRING_KICK, V, u64Payload(0), fds)),
    log: /SET_VRING_KICK\(12\): 2 descriptors attached/,
  },
  {
    id: "KICK-NOFD-WITH-FD",
    what: "SET_VRING_KICK with the NOFD bit and a descriptor",
    send: (fe) =>
      withEventfds(1, (fds) => fe.sendRaw(M.VHOST_USER_SET_VRING_KICK, V, u64Payload(0x100), fds)),
    log: /SET_VRING_KICK\(12\): NOFD is set but 1 descriptors came/,
  },
  {
    id: "CALL-NO-FD-NO-NOFD",
    what: "SET_VRING_CALL with neither a descriptor nor NOFD",
    send: (fe) => fe.sendRaw(M.VHOST_USER_SET_VRING_CALL, V, u64Payload(0)),
    log: /SET_VRING_CALL\(13\): NOFD is clear but 0 descriptors came/,
  },
  {
    id: "KICK-UNKNOWN-BITS",
    what: "SET_VRING_KICK whose payload has unknown bits",
    send: (fe) => fe.sendRaw(M.VHOST_USER_SET_VRING_KICK, V, u64Payload(0x1_0000_0100n)),
    log: /SET_VRING_KICK\(12\): payload 0x100000100 has unknown bits/,
  },
  {
    id: "OWNER-16-FDS",
    what: "SET_OWNER with 16 descriptors",
    send: (fe) => withEventfds(16, (fds) => fe.sendRaw(M.VHOST_USER_SET_OWNER, V, undefined, fds)),
    log: /SET_OWNER\(3\): 16 descriptors attached, expected 0/,
  },
  {
    id: "VRING-NUM-QUEUE-200",
    what: "SET_VRING_NUM for queue index 200",
    send: (fe) => fe.sendRaw(M.VHOST_USER_SET_VRING_NUM, V, vringStatePayload(200, 64)),
    log: /SET_VRING_NUM\(8\): queue index 200 is out of range/,
  },
  {
    id: "GET-VRING-BASE-QUEUE-200",
    what: "GET_VRING_BASE for queue index 200",
    send: (fe) => fe.sendRaw(M.VHOST_USER_GET_VRING_BASE, V, vringStatePayload(200, 0)),
    log: /GET_VRING_BASE\(11\): queue index 200 is out of range/,
  },
  ...QUEUE_SIZE_CASES,
  {
    id: "VRING-BASE-70000",
    what: "SET_VRING_BASE 70000 (over 16 bits)",
    send: (fe) => fe.sendRaw(M.VHOST_USER_SET_VRING_BASE, V, vringStatePayload(0, 70000)),
    log: /SET_VRING_BASE[^\n]*70000/,
  },
  {
    id: "VRING-ENABLE-2",
    what: "SET_VRING_ENABLE with state 2",
    send: (fe) => fe.sendRaw(M.VHOST_USER_SET_VRING_ENABLE, V, vringStatePayload(0, 2)),
    log: /SET_VRING_ENABLE[^\n]*state 2/,
  },
  {
    id: "MEM-TABLE-0-REGIONS",
    what: "SET_MEM_TABLE announcing 0 regions",
    send: (fe) =>
      fe.sendRaw(
        M.VHOST_USER_SET_MEM_TABLE,
        V,
        memTable(0, [{ gpa: 0x10_0000n, size: 0x10_0000n, uaddr: 0x7f00_0000_0000n, offset: 0n }]),
        [fe.memory.fd],
      ),
    log: /SET_MEM_TABLE[^\n]*0 regions/,
  },
  {
    id: "MEM-TABLE-COUNT-MISMATCH",
    what: "SET_MEM_TABLE announcing 2 regions with 1 in the payload",
    send: (fe) =>
      fe.sendRaw(
        M.VHOST_USER_SET_MEM_TABLE,
        V,
        memTable(2, [{ gpa: 0x10_0000n, size: 0x10_0000n, uaddr: 0x7f00_0000_0000n, offset: 0n }]),
        [fe.memory.fd],
      ),
    log: /SET_MEM_TABLE[^\n]*2 regions/,
  },
  {
    id: "UNKNOWN-REQUEST-99",
    what: "request code 99",
    send: (fe) => fe.sendRaw(99, V),
    log: /unknown request 99\b/,
  },
  {
    id: "FEATURES-NOT-OFFERED",
    what: "SET_FEATURES with bit 63 (never offered), no NEED_REPLY",
    send: (fe) => fe.sendRaw(M.VHOST_USER_SET_FEATURES, V, u64Payload(1n << 63n)),
    log: /SET_FEATURES\(2\)[^\n]*features 0x8000000000000000 were not offered/,
  },
  {
    id: "PROTOCOL-FEATURES-NOT-OFFERED",
    what: "SET_PROTOCOL_FEATURES with LOG_SHMFD (never offered)",
    send: (fe) =>
      fe.sendRaw(
        M.VHOST_USER_SET_PROTOCOL_FEATURES,
        V,
        u64Payload(M.bit(M.VHOST_USER_PROTOCOL_F_LOG_SHMFD)),
      ),
    log: /SET_PROTOCOL_FEATURES\(16\)[^\n]*not offered/,
  },
  {
    id: "NO-VERSION",
    what: "a request whose flags carry no version",
    send: (fe) => fe.sendRaw(M.VHOST_USER_GET_FEATURES, 0),
    log: /GET_FEATURES\(1\): flags 0x0 carry no version 1/,
  },
  {
    id: "REPLY-FLAG",
    what: "a request with the REPLY flag",
    send: (fe) => fe.sendRaw(M.VHOST_USER_GET_FEATURES, V | M.VHOST_USER_REPLY_MASK),
    log: /GET_FEATURES\(1\): a reply where a request was expected/,
  },
  {
    id: "ADD-MEM-REG-2E64-NO-REPLY",
    what: "ADD_MEM_REG at 2^64-4 KiB without NEED_REPLY",
    send: (fe) =>
      fe.sendRaw(
        M.VHOST_USER_ADD_MEM_REG,
        V,
        singleRegion({
          gpa: 0xffff_ffff_ffff_f000n,
          size: 0x2000n,
          uaddr: 0x7f00_0000_0000n,
          offset: 0n,
        }),
        [fe.memory.fd],
      ),
    log: /ADD_MEM_REG\(37\)[^\n]*beyond 2\^53/,
  },
];

/** A well-formed request the daemon must refuse with a failure reply, keeping the connection. */
interface RefusedCase {
  id: string;
  what: string;
  request: number;
  send(fe: VhostUserFrontend): void;
  log: RegExp;
  /** The queues must still serve afterwards (false where the refusal may drop memory). */
  servesAfter: boolean;
}

function addRegion(fe: VhostUserFrontend, r: Region64, fd = fe.memory.fd): void {
  fe.sendRaw(M.VHOST_USER_ADD_MEM_REG, V | NEED_REPLY, singleRegion(r), [fd]);
}

const REFUSED_CASES: RefusedCase[] = [
  {
    id: "ADD-MEM-REG-OVERLAP-GPA",
    what: "ADD_MEM_REG overlapping the present region in guest-physical addresses",
    request: M.VHOST_USER_ADD_MEM_REG,
    send: (fe) =>
      addRegion(fe, {
        gpa: firstRegion(fe).gpa + 0x1000n,
        size: 0x2000n,
        uaddr: 0x7e00_0000_0000n,
        offset: 0n,
      }),
    log: /ADD_MEM_REG\(37\)[^\n]*guest address range overlaps/,
    servesAfter: true,
  },
  {
    id: "ADD-MEM-REG-OVERLAP-UADDR",
    what: "ADD_MEM_REG overlapping the present region in front-end addresses",
    request: M.VHOST_USER_ADD_MEM_REG,
    send: (fe) =>
      addRegion(fe, {
        gpa: 0x4000_0000n,
        size: 0x2000n,
        uaddr: firstRegion(fe).uaddr + 0x1000n,
        offset: 0n,
      }),
    log: /ADD_MEM_REG\(37\)[^\n]*user address range overlaps/,
    servesAfter: true,
  },
  {
    id: "ADD-MEM-REG-WRAPS-2E64",
    what: "ADD_MEM_REG at 2^64-4 KiB of 8 KiB (wraps past 2^64)",
    request: M.VHOST_USER_ADD_MEM_REG,
    send: (fe) =>
      addRegion(fe, {
        gpa: 0xffff_ffff_ffff_f000n,
        size: 0x2000n,
        uaddr: 0x7e00_0000_0000n,
        offset: 0n,
      }),
    log: /ADD_MEM_REG\(37\)[^\n]*beyond 2\^53/,
    servesAfter: true,
  },
  {
    id: "ADD-MEM-REG-SIZE-WRAPS-2E64",
    what: "ADD_MEM_REG of 2^64-4 KiB bytes",
    request: M.VHOST_USER_ADD_MEM_REG,
    send: (fe) =>
      addRegion(fe, {
        gpa: 0x4000_0000n,
        size: 0xffff_ffff_ffff_f000n,
        uaddr: 0x7e00_0000_0000n,
        offset: 0n,
      }),
    log: /ADD_MEM_REG\(37\)[^\n]*beyond 2\^53/,
    servesAfter: true,
  },
  {
    id: "ADD-MEM-REG-PASSES-2E53",
    what: "ADD_MEM_REG at 2^53-4 KiB of 8 KiB",
    request: M.VHOST_USER_ADD_MEM_REG,
    send: (fe) =>
      addRegion(fe, {
        gpa: (1n << 53n) - 0x1000n,
        size: 0x2000n,
        uaddr: 0x7e00_0000_0000n,
        offset: 0n,
      }),
    log: /ADD_MEM_REG\(37\)[^\n]*2\^53/,
    servesAfter: true,
  },
  {
    id: "ADD-MEM-REG-UADDR-PASSES-2E53",
    what: "ADD_MEM_REG whose front-end address range passes 2^53",
    request: M.VHOST_USER_ADD_MEM_REG,
    send: (fe) =>
      addRegion(fe, {
        gpa: 0x4000_0000n,
        size: 0x2000n,
        uaddr: (1n << 53n) - 0x1000n,
        offset: 0n,
      }),
    log: /ADD_MEM_REG\(37\)[^\n]*2\^53/,
    servesAfter: true,
  },
  {
    id: "ADD-MEM-REG-SIZE-0",
    what: "ADD_MEM_REG of 0 bytes",
    request: M.VHOST_USER_ADD_MEM_REG,
    send: (fe) =>
      addRegion(fe, { gpa: 0x4000_0000n, size: 0n, uaddr: 0x7e00_0000_0000n, offset: 0n }),
    log: /ADD_MEM_REG\(37\)[^\n]*size is 0/,
    servesAfter: true,
  },
  {
    id: "MEM-TABLE-OVERLAP",
    what: "SET_MEM_TABLE with two overlapping regions",
    request: M.VHOST_USER_SET_MEM_TABLE,
    send: (fe) => {
      const r = firstRegion(fe);
      fe.sendRaw(
        M.VHOST_USER_SET_MEM_TABLE,
        V | NEED_REPLY,
        memTable(2, [r, { ...r, uaddr: r.uaddr + (1n << 40n) }]),
        [fe.memory.fd, fe.memory.fd],
      );
    },
    log: /SET_MEM_TABLE\(5\)[^\n]*overlaps/,
    servesAfter: false,
  },
  {
    id: "REM-MEM-REG-UNKNOWN",
    what: "REM_MEM_REG of a region that is not there",
    request: M.VHOST_USER_REM_MEM_REG,
    send: (fe) =>
      fe.sendRaw(
        M.VHOST_USER_REM_MEM_REG,
        V | NEED_REPLY,
        singleRegion({ gpa: 0x4000_0000n, size: 0x2000n, uaddr: 0x7e00_0000_0000n, offset: 0n }),
      ),
    log: /REM_MEM_REG\(38\)[^\n]*no region/,
    servesAfter: true,
  },
  {
    id: "FEATURES-NOT-OFFERED-NEED-REPLY",
    what: "SET_FEATURES with bit 63 (never offered), NEED_REPLY",
    request: M.VHOST_USER_SET_FEATURES,
    send: (fe) => fe.sendRaw(M.VHOST_USER_SET_FEATURES, V | NEED_REPLY, u64Payload(1n << 63n)),
    log: /SET_FEATURES\(2\)[^\n]*not offered/,
    servesAfter: true,
  },
  {
    id: "GET-CONFIG-24",
    what: "GET_CONFIG (known, never offered) with NEED_REPLY",
    request: M.VHOST_USER_GET_CONFIG,
    send: (fe) => {
      const p = new Uint8Array(12 + 16);
      new DataView(p.buffer).setUint32(4, 16, true);
      fe.sendRaw(M.VHOST_USER_GET_CONFIG, V | NEED_REPLY, p);
    },
    log: /GET_CONFIG\(24\)/,
    servesAfter: true,
  },
  {
    id: "SET-LOG-BASE-6",
    what: "SET_LOG_BASE (known, never offered) with NEED_REPLY and a descriptor",
    request: M.VHOST_USER_SET_LOG_BASE,
    send: (fe) => {
      const fd = memfdCreate("log", 4096);
      try {
        const p = new Uint8Array(16);
        new DataView(p.buffer).setBigUint64(0, 4096n, true);
        fe.sendRaw(M.VHOST_USER_SET_LOG_BASE, V | NEED_REPLY, p, [fd]);
      } finally {
        close(fd);
      }
    },
    log: /SET_LOG_BASE\(6\)/,
    servesAfter: true,
  },
  {
    id: "VRING-NUM-WHILE-STARTED",
    what: "SET_VRING_NUM on a running ring with NEED_REPLY",
    request: M.VHOST_USER_SET_VRING_NUM,
    send: (fe) => fe.sendRaw(M.VHOST_USER_SET_VRING_NUM, V | NEED_REPLY, vringStatePayload(1, 32)),
    log: /SET_VRING_NUM\(8\)[^\n]*started/,
    servesAfter: true,
  },
];

// ---- in-flight steps ----------------------------------------------------------------------------

/** Submits `n` GETATTRs on queue 1 (published, kicked unless `kick` is false). */
function submitGetattrs(fuse: FuseClient, n: number, kick = true): void {
  for (let i = 0; i < n; i++) {
    fuse.submit(FUSE_GETATTR, [new Uint8Array(GETATTR_IN.size)], [ATTR_OUT.size], {
      nodeid: 1n,
      publish: false,
    });
  }
  if (kick) fuse.publish();
  else fuse.frontend.queue(fuse.queue).publish();
}

function ack(fe: VhostUserFrontend, request: number, what: string): void {
  const o = outcome(fe, request);
  assert.equal(o, "accepted", `${what}: ${M.requestName(request)} answered ${o}`);
}

function assertAllAnswered(fuse: FuseClient, n: number, what: string): void {
  const replies = fuse.collect({ timeoutMs: 3000 });
  assert.equal(replies.length, n, `${what}: replies`);
  for (const r of replies) assert.equal(r.unique, r.requestUnique, `${what}: reply unique`);
}

// ---- the tests ----------------------------------------------------------------------------------

Deno.test({
  name: "UNTRUSTED-HOSTILE malformed messages, refused requests, in-flight changes and 10,000 " +
    "random rings against one --keep-serving daemon",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const shared = await Deno.makeTempDir({ prefix: "untrusted-" });
    prepareFuzzShare(shared); // the file the fuzz's SETUPMAPPINGs map
    const daemon = await startDaemon("ours", {
      sharedDir: shared,
      // --keep-serving and a 16 MiB cache window, as `deno task fuzz` runs it
      extraArgs: [...FUZZ_DAEMON_ARGS],
      env: fuzzDaemonEnv(), // V8's young generation pinned, as `deno task fuzz` runs it
    });
    const h = new Harness(daemon);
    let fdBaseline = 0;
    let fuzz: FuzzStats | undefined;
    let refusedBeforeFuzz = 0;
    try {
      await h.probe();
      fdBaseline = fdCount(daemon.pid);

      await t.step("UNTRUSTED-MSG-HEADER-5-THEN-CLOSE 5 header bytes, then close", async () => {
        const mark = h.log().length;
        const fe = await h.raw();
        sendBytes(fe, header(M.VHOST_USER_GET_FEATURES, V, 0).subarray(0, 5));
        fe.close();
        await h.settled();
        h.assertLogged(mark, /header: the peer closed after 5 of 12 bytes/, "a 5-byte header");
        await h.probe();
      });

      await t.step(
        "UNTRUSTED-MSG-HEADER-5-THEN-STALL 5 header bytes, then silence: closed after ~1 s",
        async () => {
          const mark = h.log().length;
          const fe = await h.raw();
          try {
            sendBytes(fe, header(M.VHOST_USER_GET_FEATURES, V, 0).subarray(0, 5));
            const t0 = performance.now();
            assert.equal(outcome(fe, M.VHOST_USER_GET_FEATURES, 3000), "closed");
            const ms = performance.now() - t0;
            assert.ok(ms >= 900 && ms < 2500, `closed after ${Math.round(ms)} ms, not ~1000`);
          } finally {
            fe.close();
          }
          h.assertLogged(mark, /header: 5 of 12 bytes arrived, the rest not within/, "a stall");
          await h.probe();
        },
      );

      await t.step(
        "UNTRUSTED-MSG-PAYLOAD-STALL SET_FEATURES with 4 of its 8 payload bytes, then silence",
        async () => {
          const mark = h.log().length;
          const fe = await h.raw();
          try {
            sendBytes(fe, concat(header(M.VHOST_USER_SET_FEATURES, V, 8), new Uint8Array(4)));
            const t0 = performance.now();
            assert.equal(outcome(fe, M.VHOST_USER_SET_FEATURES, 3000), "closed");
            const ms = performance.now() - t0;
            assert.ok(ms >= 900 && ms < 2500, `closed after ${Math.round(ms)} ms, not ~1000`);
          } finally {
            fe.close();
          }
          h.assertLogged(mark, /SET_FEATURES\(2\) payload: 4 of 8 bytes arrived/, "a stall");
          await h.probe();
        },
      );

      for (const c of CLOSED_CASES) {
        await t.step(
          `UNTRUSTED-MSG-${c.id} ${c.what}: connection closed, ERROR logged`,
          async () => {
            const mark = h.log().length;
            const fe = await h.raw();
            try {
              c.send(fe);
              assert.equal(outcome(fe, -1), "closed", `${c.what}: the connection stays open`);
            } finally {
              fe.close();
            }
            await h.settled();
            h.assertLogged(mark, c.log, c.what);
            assert.match(h.log().slice(mark), /ERROR\] closing the connection/);
            await h.probe();
          },
        );
      }

      for (const c of REFUSED_CASES) {
        await t.step(
          `UNTRUSTED-REFUSED-${c.id} ${c.what}: failure reply, connection kept`,
          async () => {
            const mark = h.log().length;
            const { fe, fuse } = await h.full();
            try {
              c.send(fe);
              const o = outcome(fe, c.request);
              assert.equal(o, "refused", `${c.what}: answered ${o}`);
              assertAnswers(fe, `after ${c.what}`);
              if (c.servesAfter) assertFuseServes(fuse, `after ${c.what}`);
            } finally {
              fe.close();
            }
            h.assertLogged(mark, c.log, c.what);
            await h.probe();
          },
        );
      }

      await t.step(
        "UNTRUSTED-INFLIGHT-CALL-KICK CALL and KICK re-sent (fd, NOFD, fd) while requests are in " +
          "flight: every request answered",
        async () => {
          const { fe, fuse } = await h.full();
          try {
            const q = 1;
            submitGetattrs(fuse, 16);
            fe.sendRaw(M.VHOST_USER_SET_VRING_CALL, V, u64Payload(q), [fe.callFd(q)]);
            submitGetattrs(fuse, 16, false);
            fe.sendRaw(M.VHOST_USER_SET_VRING_KICK, V, u64Payload(q), [fe.kickFd(q)]);
            submitGetattrs(fuse, 16);
            fe.sendRaw(M.VHOST_USER_SET_VRING_CALL, V | NEED_REPLY, u64Payload(q), [fe.callFd(q)]);
            ack(fe, M.VHOST_USER_SET_VRING_CALL, "CALL re-sent");
            fe.kick(q);
            assertAllAnswered(fuse, 48, "CALL/KICK re-sent");
            // A polled ring (KICK with NOFD), requests never kicked, then an eventfd again.
            fe.sendRaw(M.VHOST_USER_SET_VRING_KICK, V | NEED_REPLY, u64Payload(q | 0x100));
            ack(fe, M.VHOST_USER_SET_VRING_KICK, "KICK with NOFD");
            submitGetattrs(fuse, 16, false);
            assertAllAnswered(fuse, 16, "a polled ring");
            fe.sendRaw(M.VHOST_USER_SET_VRING_KICK, V | NEED_REPLY, u64Payload(q), [fe.kickFd(q)]);
            ack(fe, M.VHOST_USER_SET_VRING_KICK, "KICK with an fd again");
            submitGetattrs(fuse, 16);
            assertAllAnswered(fuse, 16, "KICK with an fd again");
            assertFuseServes(fuse, "after the re-sends");
          } finally {
            fe.close();
          }
          await h.probe();
        },
      );

      await t.step(
        "UNTRUSTED-INFLIGHT-REM-MEM-REG the only region removed while requests are in flight: " +
          "no crash; answered once it is back",
        async () => {
          const mark = h.log().length;
          const { fe, fuse } = await h.full();
          try {
            const region = firstRegion(fe);
            submitGetattrs(fuse, 8, false);
            fe.sendRaw(M.VHOST_USER_REM_MEM_REG, V | NEED_REPLY, singleRegion(region));
            const o = outcome(fe, M.VHOST_USER_REM_MEM_REG);
            assert.ok(o === "accepted" || o === "refused", `REM_MEM_REG answered ${o}`);
            fe.kick(1);
            submitGetattrs(fuse, 8);
            assertAnswers(fe, "after REM_MEM_REG and kicks");
            h.assertRunning();
            if (o === "accepted") {
              addRegion(fe, region);
              ack(fe, M.VHOST_USER_ADD_MEM_REG, "the region added back");
              fe.kick(1);
            }
            assertAllAnswered(fuse, 16, "requests in flight across REM_MEM_REG");
          } finally {
            fe.close();
          }
          h.assertRunning();
          console.log(
            `REM_MEM_REG in flight: ${
              /paused after a memory change/.test(h.log().slice(mark))
                ? "the queue was paused"
                : "no pause logged"
            }`,
          );
          await h.probe();
        },
      );

      await t.step(
        "UNTRUSTED-SECOND-FRONT-END a second connection while one is served is refused; the " +
          "first goes on",
        async () => {
          const mark = h.log().length;
          const { fe, fuse } = await h.full();
          try {
            const second = await VhostUserFrontend.connectOnly(daemon.socketPath, {
              regions: RAW_REGIONS,
              timeoutMs: 3000,
            });
            try {
              // The daemon may close it before the request is even sent (EPIPE, ECONNRESET).
              let sent = true;
              try {
                second.sendRaw(M.VHOST_USER_GET_FEATURES, V);
              } catch (e) {
                if (!(e instanceof ErrnoError && (e.code === "EPIPE" || e.code === "ECONNRESET"))) {
                  throw e;
                }
                sent = false;
              }
              if (sent) assert.equal(outcome(second, M.VHOST_USER_GET_FEATURES), "closed");
            } finally {
              second.close();
            }
            assertFuseServes(fuse, "the first front end");
          } finally {
            fe.close();
          }
          h.assertLogged(mark, /refused a second front end/, "a second front end");
          await h.probe();
        },
      );

      await t.step(
        `UNTRUSTED-FUZZ ${FUZZ_CASES} seeded random-ring cases (seed ${FUZZ_SEED}): each ` +
          "sentinel within 1 s (10 ms more per window change), RssAnon growth within 32 MiB, DAX " +
          "maps within the window's 8 and all undone, FUSE_INIT served afterwards",
        async () => {
          h.assertRunning();
          await h.settled();
          refusedBeforeFuzz = daemonRefusedChains(h.log()).count;
          let mem100: MemKiB | undefined;
          console.log(`fuzz seed ${FUZZ_SEED}, ${FUZZ_CASES} cases`);
          fuzz = await runFuzz({
            socketPath: daemon.socketPath,
            seed: FUZZ_SEED,
            cases: FUZZ_CASES,
            maxFailures: 20,
            onProgress: (done) => {
              if (done === 100) mem100 = readMemKiB(daemon.pid);
            },
          });
          const s = fuzz;
          h.accepted += 1 + s.reconnects;
          const memEnd = readMemKiB(daemon.pid);
          console.log(
            `fuzz: ${s.cases} cases in ${(s.elapsedMs / 1000).toFixed(1)} s; ${s.chains} chains, ` +
              `${s.malformed} malformed, ${s.answered} answered, ${s.repliesChecked} replies ` +
              `checked, ${s.ringsBroken} rings broken; sentinel max ${
                s.sentinelMaxMs.toFixed(1)
              } ms; case max ${
                s.caseMaxMs.toFixed(1)
              } ms; RssAnon ${mem100?.anon} KiB after 100 cases, ` +
              `${memEnd?.anon} KiB at the end (VmRSS ${mem100?.rss} → ${memEnd?.rss} KiB); ` +
              `DAX: ${s.dax.setups} SETUPMAPPING, ${s.dax.removals} REMOVEMAPPING, window ` +
              `${s.dax.maps} maps, ${s.dax.unmaps} unmaps, ${s.dax.dropped} dropped, at most ` +
              `${s.dax.maxMappings} live, ${s.dax.windowChecks} whole-window checks`,
          );
          assert.deepEqual(s.failureSamples, [], `${s.failures} failed checks`);
          assert.equal(s.cases, FUZZ_CASES);
          // Over 1 s (plus DAX_ALLOWANCE_MS for each request of its batch that changes the
          // window: each waits on the front end's maps).
          assert.equal(s.slowCases, 0, `slowest case ${s.caseMaxMs} ms`);
          assert.equal(s.reconnects, 0, "the daemon closed the fuzzing connection");
          assert.ok(s.dax.window, "the fuzzing front end got a cache window");
          assert.ok(s.dax.maps > 0, "no SETUPMAPPING of the fuzz mapped anything");
          assert.equal(s.dax.refused, 0, "the daemon asked for maps QEMU refuses");
          assert.ok(s.dax.maxMappings <= FUZZ_MAX_MAPPINGS, `${s.dax.maxMappings} live mappings`);
          assert.ok(s.dax.windowChecks > 0, "no whole-window check");
          assert.ok(mem100 !== undefined && memEnd !== undefined, "the daemon's memory");
          assert.ok(
            memEnd.anon - mem100.anon <= MEMORY_GROWTH_LIMIT_KIB,
            `RssAnon grew from ${mem100.anon} KiB to ${memEnd.anon} KiB`,
          );
          await h.settled();
          const { fe } = await h.full(); // FUSE_INIT answered on a fresh connection
          fe.close();
          await h.settled();
        },
      );

      await t.step("UNTRUSTED-FINAL a fresh connection gets FUSE_INIT answered", async () => {
        const { fe, fuse } = await h.full();
        try {
          assertFuseServes(fuse, "the last connection");
        } finally {
          fe.close();
        }
        await h.settled();
      });

      await t.step(
        "UNTRUSTED-FD-LEAK every descriptor sent with a refused message was closed",
        async () => {
          h.assertRunning();
          await h.settled();
          const now = fdCount(daemon.pid);
          assert.ok(now <= fdBaseline + 2, `${now} open descriptors, ${fdBaseline} at the start`);
        },
      );

      await t.step(
        "UNTRUSTED-STOP SIGTERM: exit 0; the refused-chain count matches the model",
        async () => {
          h.assertRunning();
          Deno.kill(daemon.pid, "SIGTERM");
          const exit = await within(daemon.exited, 5000);
          assert.notEqual(exit, "timeout", "the daemon did not stop within 5 s of SIGTERM");
          if (exit === "timeout") return;
          assert.deepEqual(exit, { code: 0, signal: null });
          const refused = daemonRefusedChains(h.log());
          console.log(
            `refused chains: daemon ${refused.count - refusedBeforeFuzz} during the fuzz, ` +
              `model ${fuzz?.expectedRefused ?? "?"}`,
          );
          assert.ok(refused.exact, "the daemon's statistics line");
          if (fuzz !== undefined) {
            assert.equal(refused.count - refusedBeforeFuzz, fuzz.expectedRefused);
          }
        },
      );
    } finally {
      await daemon.stop();
      await Deno.remove(shared, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "UNTRUSTED-REGION-BEYOND-FD a region larger than its descriptor's file: refused, or no " +
    "crash when the guest points a buffer past the file's end",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const shared = await Deno.makeTempDir({ prefix: "untrusted-" });
    const daemon = await startDaemon("ours", { sharedDir: shared, extraArgs: ["--keep-serving"] });
    const h = new Harness(daemon);
    try {
      const { fe } = await h.full();
      try {
        const small = memfdCreate("small", 4096);
        const gpa = 0x4000_0000;
        try {
          addRegion(
            fe,
            { gpa: BigInt(gpa), size: 1n << 20n, uaddr: 0x7e00_0000_0000n, offset: 0n },
            small,
          );
        } finally {
          close(small);
        }
        const o = outcome(fe, M.VHOST_USER_ADD_MEM_REG);
        assert.ok(o === "accepted" || o === "refused", `ADD_MEM_REG answered ${o}`);
        if (o === "accepted") {
          // A request whose header lies 512 KiB into the region: past the 4 KiB file.
          const q = fe.queue(1);
          const reply = fe.memory.alloc(128);
          const slot = q.availIdx;
          q.writeDescriptor(0, {
            addr: gpa + 0x8_0000,
            len: 64,
            flags: VIRTQ_DESC_F_NEXT,
            next: 1,
          });
          q.writeDescriptor(1, { addr: reply, len: 128, flags: VIRTQ_DESC_F_WRITE, next: 0 });
          q.writeAvailRing(slot, 0);
          q.setAvailIdx(slot + 1);
          fe.kick(1);
          const deadline = Date.now() + 2000;
          while (q.usedIdx === q.lastUsedIdx && !daemon.hasExited() && Date.now() < deadline) {
            await new Promise((r) => setTimeout(r, 5));
          }
          if (daemon.hasExited()) {
            const e = await daemon.exited;
            assert.fail(
              `the daemon died (exit code ${e.code}, signal ${e.signal}) serving a request whose ` +
                "buffer lies in the region but past the end of its file; its log ends:\n" +
                h.log().slice(-1500),
            );
          }
          assertAnswers(fe, "after a buffer past the end of a region's file");
        }
      } finally {
        fe.close();
      }
      await h.probe();
    } finally {
      await daemon.stop();
      await Deno.remove(shared, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "UNTRUSTED-CALL-FD-UNREAD a CALL descriptor nobody reads (a socket, not an eventfd): " +
    "refused, or requests go on being answered",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const shared = await Deno.makeTempDir({ prefix: "untrusted-" });
    const daemon = await startDaemon("ours", { sharedDir: shared, extraArgs: ["--keep-serving"] });
    const h = new Harness(daemon);
    const [ours, theirs] = socketPair();
    try {
      const { fe } = await h.full();
      try {
        fe.sendRaw(M.VHOST_USER_SET_VRING_CALL, V | NEED_REPLY, u64Payload(1), [theirs]);
        close(theirs);
        const o = outcome(fe, M.VHOST_USER_SET_VRING_CALL);
        assert.ok(o === "accepted" || o === "refused", `SET_VRING_CALL answered ${o}`);
        if (o === "accepted") {
          // One request at a time, each asking for an interrupt: far more interrupts than the
          // socket buffers, none ever read.
          const q = fe.queue(1);
          const req = new Uint8Array(IN_HEADER.size + GETATTR_IN.size);
          const v = new DataView(req.buffer);
          v.setUint32(IN_HEADER.len, req.length, true);
          v.setUint32(IN_HEADER.opcode, FUSE_GETATTR, true);
          v.setBigUint64(IN_HEADER.nodeid, 1n, true);
          const readable = [{ gpa: fe.memory.place(req), len: req.length }];
          const writable = [{ gpa: fe.memory.alloc(128), len: 128 }];
          for (let i = 0; i < 2000; i++) {
            q.enableInterrupts();
            q.add(readable, writable);
            fe.publish(1);
            fe.kick(1);
            const deadline = Date.now() + 2000;
            while (!q.hasUsed() && Date.now() < deadline) {
              if (i % 64 === 0) await new Promise((r) => setTimeout(r, 0));
            }
            assert.ok(
              q.hasUsed(),
              `request ${i} unanswered within 2 s: the daemon blocks signalling a CALL ` +
                `descriptor nobody reads (state ${procState(daemon.pid)})`,
            );
            q.harvest();
          }
          assertAnswers(fe, "after 2000 interrupts nobody read");
        }
      } finally {
        fe.close();
      }
      await h.probe();
    } finally {
      closeQuietly(ours);
      closeQuietly(theirs);
      await daemon.stop(500);
      await Deno.remove(shared, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "UNTRUSTED-EXIT without --keep-serving, one malformed message (SET_VRING_NUM size 0 on " +
    "queue 200) ends the daemon: exit code 1, an ERROR naming the request",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const shared = await Deno.makeTempDir({ prefix: "untrusted-" });
    const daemon = await startDaemon("ours", { sharedDir: shared });
    try {
      const fe = await VhostUserFrontend.connectOnly(daemon.socketPath, {
        regions: RAW_REGIONS,
        timeoutMs: 3000,
      });
      try {
        fe.sendRaw(M.VHOST_USER_SET_VRING_NUM, V, vringStatePayload(200, 0));
        assert.equal(outcome(fe, M.VHOST_USER_SET_VRING_NUM), "closed");
      } finally {
        fe.close();
      }
      const exit = await within(daemon.exited, 5000);
      assert.notEqual(exit, "timeout", "the daemon did not exit within 5 s");
      assert.deepEqual(exit, { code: 1, signal: null });
      const log = daemon.stderrText();
      assert.match(log, /ERROR\] [^\n]*SET_VRING_NUM\(8\)/);
      assert.ok(!exists(daemon.socketPath), "the socket file was left behind");
    } finally {
      await daemon.stop();
      await Deno.remove(shared, { recursive: true }).catch(() => {});
    }
  },
});
