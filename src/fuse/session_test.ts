import assert from "node:assert/strict";
import { Errno, ErrnoError } from "../ffi/mod.ts";
import type {
  Attr,
  AttrReply,
  Context,
  Entry,
  FileSystem,
  ForgetOne,
  StatFs,
} from "../filesystem/filesystem.ts";
import { silentLogger } from "../log.ts";
import { GuestMemory } from "../memory/guest_memory.ts";
import { GuestQueue } from "../driver/guest_queue.ts";
import { GuestRam } from "../driver/guest_ram.ts";
import { SplitQueue } from "../virtqueue/split_queue.ts";
import * as A from "../wire/fuse.ts";
import { FuseSession } from "./session.ts";

// ---------------------------------------------------------------------------------------------
// A split ring carrying FUSE requests: the test driver's GuestQueue in GuestRam (a memfd) on the
// driver side, the same memory mapped again (GuestMemory) and a SplitQueue on the device side.

const GPA0 = 0x10_0000;
const REGION_SIZE = 1 << 20;
const QUEUE_SIZE = 16;

/** Guest memory over a memfd with a split ring, its driver side and its device side. */
class TestRing {
  readonly ram = GuestRam.create({
    regions: [{ guestPhysAddr: GPA0, size: REGION_SIZE }],
    name: "session_test",
  });
  readonly memory = new GuestMemory();
  readonly driver = new GuestQueue(this.ram, { size: QUEUE_SIZE, eventIdx: false });
  readonly queue: SplitQueue;

  constructor() {
    for (const r of this.ram.regions) this.memory.add(r, this.ram.dupFd());
    this.queue = new SplitQueue(
      QUEUE_SIZE,
      {
        desc: this.ram.gpaToUserspace(this.driver.descGpa),
        avail: this.ram.gpaToUserspace(this.driver.availGpa),
        used: this.ram.gpaToUserspace(this.driver.usedGpa),
      },
      0,
      false,
    );
    assert.equal(this.queue.map(this.memory), undefined);
  }

  /**
   * Sends one request: `readable` buffers then writable buffers of `writable` lengths (filled with
   * 0xee), as one direct chain; pops it and hands it to `session`. Returns what `handle` returned
   * and the writable bytes afterwards, concatenated.
   */
  send(
    session: FuseSession,
    readable: readonly Uint8Array[],
    writable: readonly number[],
  ): { len: number; out: Uint8Array } {
    const ram = this.ram;
    const r = readable.map((data) => ({ gpa: ram.place(data, 16), len: data.length }));
    const w = writable.map((len) => {
      const gpa = ram.alloc(Math.max(len, 1), 16);
      ram.slice(gpa, len).fill(0xee);
      return { gpa, len };
    });
    const head = this.driver.add(r, w);
    this.driver.publish();

    assert.equal(
      this.queue.pop(this.memory, (why) => assert.fail(why)),
      true,
      "the chain is well formed",
    );
    assert.equal(this.queue.chain.head, head);
    const len = session.handle(this.queue.chain);
    this.queue.pushUsed(this.queue.chain.head, len);
    assert.deepEqual(this.driver.harvest(), [{ id: head, len, writableBytes: sum(writable) }]);
    const out = Uint8Array.from(w.flatMap((b) => [...ram.slice(b.gpa, b.len)]));
    for (const b of [...r, ...w]) ram.free(b.gpa, Math.max(b.len, 1));
    return { len, out };
  }

  [Symbol.dispose](): void {
    this.memory.clear();
    this.ram.close();
  }
}

function sum(ns: readonly number[]): number {
  return ns.reduce((a, b) => a + b, 0);
}

// ---------------------------------------------------------------------------------------------
// FUSE messages.

let nextUnique = 2n;

/** A `fuse_in_header` for a request of `len` bytes in all. */
function inHeader(opcode: number, len: number, unique = nextUnique += 2n): Uint8Array {
  const b = new Uint8Array(A.IN_HEADER.size);
  const v = new DataView(b.buffer);
  v.setUint32(A.IN_HEADER.len, len, true);
  v.setUint32(A.IN_HEADER.opcode, opcode, true);
  v.setBigUint64(A.IN_HEADER.unique, unique, true);
  v.setBigUint64(A.IN_HEADER.nodeid, 1n, true);
  return b;
}

/** A whole request: header plus `args`. */
function request(
  opcode: number,
  args: Uint8Array = new Uint8Array(0),
  unique?: bigint,
): Uint8Array {
  const b = new Uint8Array(A.IN_HEADER.size + args.length);
  b.set(inHeader(opcode, b.length, unique));
  b.set(args, A.IN_HEADER.size);
  return b;
}

/** `fuse_init_in`: `flags` bits 32–63 go in `flags2`; `size` 16 for a client before 7.36. */
function initIn(major: number, minor: number, flags: bigint, size = 64): Uint8Array {
  const b = new Uint8Array(size);
  const v = new DataView(b.buffer);
  v.setUint32(A.INIT_IN.major, major, true);
  v.setUint32(A.INIT_IN.minor, minor, true);
  v.setUint32(A.INIT_IN.maxReadahead, 0x20000, true);
  v.setUint32(A.INIT_IN.flags, Number(flags & 0xffff_ffffn), true);
  if (size >= A.INIT_IN.flags2 + 4) v.setUint32(A.INIT_IN.flags2, Number(flags >> 32n), true);
  return b;
}

interface OutHeader {
  len: number;
  error: number;
  unique: bigint;
}

function outHeader(out: Uint8Array): OutHeader {
  const v = new DataView(out.buffer, out.byteOffset);
  return {
    len: v.getUint32(A.OUT_HEADER.len, true),
    error: v.getInt32(A.OUT_HEADER.error, true),
    unique: v.getBigUint64(A.OUT_HEADER.unique, true),
  };
}

interface InitOut {
  major: number;
  minor: number;
  maxReadahead: number;
  /** flags | flags2 << 32. */
  flags: bigint;
  maxWrite: number;
  timeGran: number;
  maxPages: number;
}

function initOut(out: Uint8Array): InitOut {
  const v = new DataView(out.buffer, out.byteOffset + A.OUT_HEADER.size);
  return {
    major: v.getUint32(A.INIT_OUT.major, true),
    minor: v.getUint32(A.INIT_OUT.minor, true),
    maxReadahead: v.getUint32(A.INIT_OUT.maxReadahead, true),
    flags: BigInt(v.getUint32(A.INIT_OUT.flags, true)) |
      BigInt(v.getUint32(A.INIT_OUT.flags2, true)) << 32n,
    maxWrite: v.getUint32(A.INIT_OUT.maxWrite, true),
    timeGran: v.getUint32(A.INIT_OUT.timeGran, true),
    maxPages: v.getUint16(A.INIT_OUT.maxPages, true),
  };
}

/** What the Linux 6.1.192 virtiofs client asks for (observed on the wire). */
const LINUX_6_1_FLAGS = 0x0000000b_7bfffffbn;

/** Sends INIT the way Linux does (16 + 64 writable) and returns the reply. */
function init(
  ring: TestRing,
  session: FuseSession,
  major: number,
  minor: number,
  flags: bigint,
  initInSize = 64,
): { len: number; out: Uint8Array; header: OutHeader } {
  const unique = nextUnique += 2n;
  const r = ring.send(session, [
    request(A.FUSE_INIT, initIn(major, minor, flags, initInSize), unique),
  ], [A.OUT_HEADER.size, A.INIT_OUT.size]);
  const header = outHeader(r.out);
  assert.equal(header.unique, unique);
  return { ...r, header };
}

function assertError(r: { len: number; out: Uint8Array }, errno: number): void {
  assert.equal(r.len, A.OUT_HEADER.size);
  const h = outHeader(r.out);
  assert.equal(h.len, A.OUT_HEADER.size);
  assert.equal(h.error, -errno);
}

function hasBit(flags: bigint, bit: bigint): boolean {
  return (flags & bit) !== 0n;
}

// ---------------------------------------------------------------------------------------------
// A file system that records what the session asks of it.

const ATTR: Attr = {
  ino: 0x1234n,
  size: 4097,
  blocks: 16,
  atime: 1_700_000_000,
  atimeNsec: 1,
  mtime: 1_700_000_001,
  mtimeNsec: 2,
  ctime: 1_700_000_002,
  ctimeNsec: 3,
  mode: 0o100644,
  nlink: 1,
  uid: 1000,
  gid: 100,
  rdev: 0,
  blksize: 4096,
};

class FakeFs implements FileSystem {
  readonly calls: string[] = [];
  /** What `init` keeps of the capable flags (default: all). */
  keep = ~0n;
  /** Thrown by `getattr` when set. */
  fail: unknown;
  /** What `getattr` answers. */
  attr: Attr = ATTR;
  lastCtx: Context | undefined;

  init(capable: bigint): bigint {
    this.calls.push(`init 0x${capable.toString(16)}`);
    return capable & this.keep;
  }
  destroy(): void {
    this.calls.push("destroy");
  }
  lookup(ctx: Context, parent: bigint, name: Uint8Array): Entry {
    this.lastCtx = { ...ctx };
    this.calls.push(`lookup ${parent} ${new TextDecoder().decode(name)}`);
    return { nodeid: 42n, generation: 7n, attr: ATTR, entryTimeout: 1.5, attrTimeout: 2 };
  }
  forget(_ctx: Context, nodeid: bigint, nlookup: bigint): void {
    this.calls.push(`forget ${nodeid} ${nlookup}`);
  }
  batchForget(_ctx: Context, items: readonly ForgetOne[]): void {
    this.calls.push(`batchForget ${items.map((i) => `${i.nodeid}:${i.nlookup}`).join(",")}`);
  }
  getattr(ctx: Context, nodeid: bigint, fh: bigint | undefined): AttrReply {
    this.lastCtx = { ...ctx };
    this.calls.push(`getattr ${nodeid} ${fh}`);
    if (this.fail !== undefined) throw this.fail;
    return { attr: this.attr, timeout: 0.25 };
  }
  statfs(_ctx: Context, nodeid: bigint): StatFs {
    this.calls.push(`statfs ${nodeid}`);
    return {
      blocks: 1000,
      bfree: 500,
      bavail: 400,
      files: 100,
      ffree: 50,
      bsize: 4096,
      namelen: 255,
      frsize: 4096,
    };
  }
}

function newSession(fs: FileSystem = new FakeFs()): FuseSession {
  return new FuseSession(silentLogger, fs);
}

/** The session's minor version (read through a call, so no assertion narrows it). */
function negotiatedMinor(session: FuseSession): number | undefined {
  return session.negotiated?.minor;
}

// ---------------------------------------------------------------------------------------------

Deno.test("FuseSession.handle() answers INIT from a 7.38 client with the session's terms", () => {
  using ring = new TestRing();
  const session = newSession();
  const r = init(ring, session, 7, 38, LINUX_6_1_FLAGS);
  assert.equal(r.len, A.OUT_HEADER.size + A.INIT_OUT.size);
  assert.equal(r.header.len, 80);
  assert.equal(r.header.error, 0);
  const o = initOut(r.out);
  assert.equal(o.major, 7);
  assert.equal(o.minor, 38);
  assert.equal(o.maxReadahead, 0x20000, "the client's max_readahead, echoed");
  assert.equal(o.maxWrite, 1 << 20);
  assert.equal(o.maxPages, 256);
  assert.equal(o.timeGran, 1);
  assert.equal(hasBit(o.flags, A.FUSE_MAX_PAGES), true, "MAX_PAGES");
  assert.equal(hasBit(o.flags, A.FUSE_INIT_EXT), true, "INIT_EXT");
  assert.equal(hasBit(o.flags, A.FUSE_ASYNC_READ), true, "ASYNC_READ");
  assert.equal(hasBit(o.flags, A.FUSE_HAS_INODE_DAX), false, "no DAX window, no DAX");
  assert.equal(o.flags & ~LINUX_6_1_FLAGS, 0n, "nothing the client did not ask for");
  assert.equal(session.negotiated?.minor, 38);
  assert.equal(session.negotiated?.flags, o.flags);
  assert.equal(session.negotiated?.maxReadahead, 0x20000);
  assert.equal(session.stats.replies, 1);
});

Deno.test("FuseSession.handle() INIT: the session minor is min(38, the client's)", async (t) => {
  for (const [client, expected] of [[36, 36], [27, 27], [37, 37], [38, 38], [39, 38], [99, 38]]) {
    await t.step(`7.${client} -> 7.${expected}`, () => {
      using ring = new TestRing();
      const session = newSession();
      const r = init(
        ring,
        session,
        7,
        client ?? 0,
        A.FUSE_ASYNC_READ,
        (client ?? 0) >= 36 ? 64 : 16,
      );
      assert.equal(r.header.error, 0);
      assert.equal(initOut(r.out).major, 7);
      assert.equal(initOut(r.out).minor, expected);
      assert.equal(session.negotiated?.minor, expected);
    });
  }
});

Deno.test("FuseSession.handle() INIT grants only flags the client asked for", async (t) => {
  await t.step("MAX_PAGES granted when asked", () => {
    using ring = new TestRing();
    const session = newSession();
    const o = initOut(init(ring, session, 7, 38, A.FUSE_MAX_PAGES).out);
    assert.equal(hasBit(o.flags, A.FUSE_MAX_PAGES), true);
    assert.equal(hasBit(session.negotiated?.flags ?? 0n, A.FUSE_MAX_PAGES), true);
  });
  await t.step("MAX_PAGES not granted when not asked", () => {
    using ring = new TestRing();
    const session = newSession();
    const o = initOut(init(ring, session, 7, 38, A.FUSE_ASYNC_READ).out);
    assert.equal(hasBit(o.flags, A.FUSE_MAX_PAGES), false);
    assert.equal(hasBit(o.flags, A.FUSE_ASYNC_READ), true);
    assert.equal(hasBit(o.flags, A.FUSE_INIT_EXT), false, "INIT_EXT not asked");
    assert.equal(hasBit(o.flags, A.FUSE_BIG_WRITES), false);
  });
  await t.step("no flags asked, none granted", () => {
    using ring = new TestRing();
    const session = newSession();
    const o = initOut(init(ring, session, 7, 38, 0n).out);
    assert.equal(o.flags, 0n);
    assert.equal(session.negotiated?.flags, 0n);
  });
});

Deno.test("FuseSession.handle() INIT: flags2 counts only with INIT_EXT", async (t) => {
  const high = A.FUSE_SECURITY_CTX | A.FUSE_HAS_INODE_DAX | A.FUSE_HAS_EXPIRE_ONLY;
  await t.step("with INIT_EXT: INIT_EXT granted, flags2 a subset of what was asked", () => {
    using ring = new TestRing();
    const session = newSession();
    const o = initOut(init(ring, session, 7, 38, A.FUSE_INIT_EXT | high).out);
    assert.equal(hasBit(o.flags, A.FUSE_INIT_EXT), true);
    assert.equal((o.flags >> 32n) & ~(high >> 32n), 0n);
    assert.equal(hasBit(o.flags, A.FUSE_HAS_INODE_DAX), false);
  });
  await t.step("without INIT_EXT: flags2 ignored", () => {
    using ring = new TestRing();
    const session = newSession();
    const o = initOut(init(ring, session, 7, 38, A.FUSE_ASYNC_READ | high).out);
    assert.equal(hasBit(o.flags, A.FUSE_INIT_EXT), false);
    assert.equal(o.flags >> 32n, 0n, "reply flags2 is 0");
    assert.equal((session.negotiated?.flags ?? 0n) >> 32n, 0n);
  });
  await t.step("a 16-byte fuse_init_in (before 7.36) with INIT_EXT set", () => {
    using ring = new TestRing();
    const session = newSession();
    const r = init(ring, session, 7, 35, A.FUSE_INIT_EXT | A.FUSE_MAX_PAGES, 16);
    assert.equal(r.header.error, 0);
    const o = initOut(r.out);
    assert.equal(o.minor, 35);
    assert.equal(hasBit(o.flags, A.FUSE_MAX_PAGES), true);
    assert.equal(o.flags >> 32n, 0n);
  });
});

Deno.test("FuseSession.handle() INIT from major 8 gets just our version", () => {
  using ring = new TestRing();
  const session = newSession();
  const r = init(ring, session, 8, 1, LINUX_6_1_FLAGS);
  assert.equal(r.header.error, 0);
  assert.equal(r.header.len, 80);
  const o = initOut(r.out);
  assert.equal(o.major, 7);
  assert.equal(o.minor, 38);
  assert.equal(o.flags, 0n);
  assert.equal(o.maxWrite, 0);
  assert.equal(o.maxPages, 0);
  assert.equal(session.negotiated, undefined, "no session until the client retries with 7");
  // The client retries with major 7.
  assert.equal(init(ring, session, 7, 38, 0n).header.error, 0);
  assert.equal(negotiatedMinor(session), 38);
});

Deno.test("FuseSession.handle() INIT from too old a client is EPROTO", async (t) => {
  for (const [major, minor] of [[7, 26], [7, 0], [6, 99]]) {
    await t.step(`${major}.${minor}`, () => {
      using ring = new TestRing();
      const session = newSession();
      const r = init(ring, session, major ?? 0, minor ?? 0, A.FUSE_ASYNC_READ, 16);
      assertError(r, Errno.EPROTO);
      assert.equal(session.negotiated, undefined);
    });
  }
});

Deno.test("FuseSession.handle() INIT with fewer than 16 argument bytes is EINVAL", () => {
  using ring = new TestRing();
  const session = newSession();
  const r = ring.send(session, [request(A.FUSE_INIT, initIn(7, 38, 0n, 16).subarray(0, 12))], [80]);
  assertError(r, Errno.EINVAL);
  assert.equal(session.negotiated, undefined);
});

Deno.test("FuseSession.handle() INIT twice starts a fresh session", () => {
  using ring = new TestRing();
  const session = newSession();
  init(ring, session, 7, 31, A.FUSE_MAX_PAGES | A.FUSE_ASYNC_READ, 16);
  const first = session.negotiated;
  assert.equal(first?.minor, 31);
  const o = initOut(init(ring, session, 7, 38, A.FUSE_ASYNC_READ).out);
  assert.equal(o.minor, 38);
  assert.equal(session.negotiated?.minor, 38);
  assert.equal(hasBit(session.negotiated?.flags ?? 0n, A.FUSE_MAX_PAGES), false);
  assert.notEqual(session.negotiated, first);
});

Deno.test("FuseSession.handle() answers a request before INIT with EIO", () => {
  using ring = new TestRing();
  const session = newSession();
  const unique = 0x1234_5678_9abc_def0n;
  const r = ring.send(session, [request(A.FUSE_GETATTR, new Uint8Array(16), unique)], [16, 104]);
  assertError(r, Errno.EIO);
  assert.equal(outHeader(r.out).unique, unique);
  assert.equal(r.out[16], 0xee, "nothing written past the header");
  assertError(ring.send(session, [request(A.FUSE_LOOKUP, new Uint8Array(6))], [16]), Errno.EIO);
});

Deno.test("FuseSession.handle() answers an unknown opcode with ENOSYS", () => {
  using ring = new TestRing();
  const session = newSession();
  init(ring, session, 7, 38, 0n);
  for (const opcode of [9999, 7, 19, 4096, 0xffff_ffff]) {
    assertError(ring.send(session, [request(opcode, new Uint8Array(8))], [16]), Errno.ENOSYS);
  }
});

Deno.test("FuseSession.handle() refuses a header whose len disagrees with the chain: EINVAL", async (t) => {
  await t.step("len larger than the readable bytes", () => {
    using ring = new TestRing();
    const session = newSession();
    init(ring, session, 7, 38, 0n);
    const req = request(A.FUSE_GETATTR, new Uint8Array(16));
    new DataView(req.buffer).setUint32(A.IN_HEADER.len, req.length + 1, true);
    assertError(ring.send(session, [req], [120]), Errno.EINVAL);
  });
  await t.step("len smaller than the header (40)", () => {
    using ring = new TestRing();
    const session = newSession();
    init(ring, session, 7, 38, 0n);
    for (const len of [0, 16, 39]) {
      const req = request(A.FUSE_GETATTR, new Uint8Array(16));
      new DataView(req.buffer).setUint32(A.IN_HEADER.len, len, true);
      assertError(ring.send(session, [req], [120]), Errno.EINVAL);
    }
  });
  await t.step("INIT too: a bad len is EINVAL before any negotiation", () => {
    using ring = new TestRing();
    const session = newSession();
    const req = request(A.FUSE_INIT, initIn(7, 38, 0n));
    new DataView(req.buffer).setUint32(A.IN_HEADER.len, 200, true);
    assertError(ring.send(session, [req], [80]), Errno.EINVAL);
    assert.equal(session.negotiated, undefined);
  });
  await t.step("readable bytes beyond len are fine", () => {
    using ring = new TestRing();
    const session = newSession();
    const req = request(A.FUSE_INIT, initIn(7, 38, 0n));
    const padded = new Uint8Array(req.length + 32);
    padded.set(req);
    const r = ring.send(session, [padded], [80]);
    assert.equal(outHeader(r.out).error, 0);
  });
});

Deno.test("FuseSession.handle() reads a header split across descriptors", () => {
  using ring = new TestRing();
  const session = newSession();
  const req = request(A.FUSE_INIT, initIn(7, 36, A.FUSE_MAX_PAGES));
  const r = ring.send(session, [req.subarray(0, 7), req.subarray(7, 45), req.subarray(45)], [
    10,
    6,
    64,
  ]);
  assert.equal(r.len, 80);
  assert.equal(outHeader(r.out).error, 0);
  assert.equal(initOut(r.out).minor, 36);
  assert.equal(hasBit(initOut(r.out).flags, A.FUSE_MAX_PAGES), true);
});

Deno.test("FuseSession.handle() takes FORGET, BATCH_FORGET and INTERRUPT without a reply", () => {
  using ring = new TestRing();
  const session = newSession();
  init(ring, session, 7, 38, 0n);
  for (const opcode of [A.FUSE_FORGET, A.FUSE_BATCH_FORGET, A.FUSE_INTERRUPT]) {
    // Linux sends FORGET on hiprio with no writable part at all.
    const none = ring.send(session, [request(opcode, new Uint8Array(8))], []);
    assert.equal(none.len, 0);
    const some = ring.send(session, [request(opcode, new Uint8Array(8))], [16]);
    assert.equal(some.len, 0);
    assert.deepEqual(some.out, new Uint8Array(16).fill(0xee), "nothing written");
  }
  assert.equal(session.stats.noReply, 6);
  assert.equal(session.stats.dropped, 0);
  assert.equal(session.stats.replies, 1, "only INIT");
  // Before INIT too.
  const fresh = newSession();
  assert.equal(ring.send(fresh, [request(A.FUSE_FORGET, new Uint8Array(8))], []).len, 0);
  assert.equal(fresh.stats.noReply, 1);
});

Deno.test("FuseSession.handle() drops a chain with no room for a reply header", () => {
  using ring = new TestRing();
  const session = newSession();
  init(ring, session, 7, 38, 0n);
  for (const writable of [[], [8], [15], [10, 5]]) {
    const r = ring.send(session, [request(A.FUSE_GETATTR, new Uint8Array(16))], writable);
    assert.equal(r.len, 0);
    assert.ok(r.out.every((b) => b === 0xee), "nothing written");
  }
  assert.equal(session.stats.dropped, 4);
  assert.equal(session.stats.replies, 1);
});

Deno.test("FuseSession.handle() drops a chain shorter than a request header", () => {
  using ring = new TestRing();
  const session = newSession();
  const r = ring.send(session, [request(A.FUSE_INIT, initIn(7, 38, 0n)).subarray(0, 39)], [80]);
  assert.equal(r.len, 0);
  assert.ok(r.out.every((b) => b === 0xee));
  assert.equal(session.stats.dropped, 1);
  assert.equal(session.negotiated, undefined);
});

Deno.test("FuseSession.handle() DESTROY replies and resets the session", () => {
  using ring = new TestRing();
  const session = newSession();
  init(ring, session, 7, 38, A.FUSE_MAX_PAGES);
  const live = ring.send(session, [request(A.FUSE_GETATTR, new Uint8Array(16))], [120]);
  assert.equal(outHeader(live.out).error, 0);
  const unique = 0x77n;
  const r = ring.send(session, [request(A.FUSE_DESTROY, new Uint8Array(0), unique)], [16]);
  assert.equal(r.len, 16);
  assert.deepEqual(outHeader(r.out), { len: 16, error: 0, unique });
  assert.equal(session.negotiated, undefined);
  assertError(ring.send(session, [request(A.FUSE_GETATTR, new Uint8Array(16))], [120]), Errno.EIO);
  // A new mount: INIT again.
  assert.equal(init(ring, session, 7, 38, 0n).header.error, 0);
  assert.notEqual(session.negotiated, undefined);
});

Deno.test("FuseSession.reset() forgets INIT", () => {
  using ring = new TestRing();
  const session = newSession();
  init(ring, session, 7, 38, 0n);
  session.reset();
  assert.equal(session.negotiated, undefined);
  assertError(ring.send(session, [request(A.FUSE_STATFS)], [96]), Errno.EIO);
});

// ---------------------------------------------------------------------------------------------
// What the session asks of the file system.

function getattrIn(fh?: bigint): Uint8Array {
  const b = new Uint8Array(A.GETATTR_IN.size);
  const v = new DataView(b.buffer);
  if (fh !== undefined) {
    v.setUint32(A.GETATTR_IN.getattrFlags, A.FUSE_GETATTR_FH, true);
    v.setBigUint64(A.GETATTR_IN.fh, fh, true);
  }
  return b;
}

function readAttr(out: Uint8Array, at: number): Attr {
  const v = new DataView(out.buffer, out.byteOffset + at);
  return {
    ino: v.getBigUint64(A.ATTR.ino, true),
    size: Number(v.getBigUint64(A.ATTR.sizeField, true)),
    blocks: Number(v.getBigUint64(A.ATTR.blocks, true)),
    atime: Number(v.getBigInt64(A.ATTR.atime, true)),
    atimeNsec: v.getUint32(A.ATTR.atimensec, true),
    mtime: Number(v.getBigInt64(A.ATTR.mtime, true)),
    mtimeNsec: v.getUint32(A.ATTR.mtimensec, true),
    ctime: Number(v.getBigInt64(A.ATTR.ctime, true)),
    ctimeNsec: v.getUint32(A.ATTR.ctimensec, true),
    mode: v.getUint32(A.ATTR.mode, true),
    nlink: v.getUint32(A.ATTR.nlink, true),
    uid: v.getUint32(A.ATTR.uid, true),
    gid: v.getUint32(A.ATTR.gid, true),
    rdev: v.getUint32(A.ATTR.rdev, true),
    blksize: v.getUint32(A.ATTR.blksize, true),
  };
}

Deno.test("FuseSession INIT: the file system chooses among the capable flags", () => {
  using ring = new TestRing();
  const fs = new FakeFs();
  fs.keep = ~A.FUSE_ASYNC_READ;
  const session = newSession(fs);
  const o = initOut(
    init(
      ring,
      session,
      7,
      38,
      A.FUSE_ASYNC_READ | A.FUSE_MAX_PAGES |
        A.FUSE_WRITEBACK_CACHE,
    ).out,
  );
  assert.equal(hasBit(o.flags, A.FUSE_ASYNC_READ), false, "the file system declined it");
  assert.equal(hasBit(o.flags, A.FUSE_MAX_PAGES), true);
  assert.equal(fs.calls.length, 1);
  const offered = BigInt(fs.calls[0]?.split(" ")[1] ?? "0");
  assert.equal(hasBit(offered, A.FUSE_MAX_PAGES), true, "capable: asked and supported");
  assert.equal(offered & ~(A.FUSE_ASYNC_READ | A.FUSE_MAX_PAGES | A.FUSE_WRITEBACK_CACHE), 0n);
});

Deno.test("FuseSession tells the file system when a session ends", () => {
  using ring = new TestRing();
  const fs = new FakeFs();
  const session = newSession(fs);
  ring.send(session, [request(A.FUSE_DESTROY)], [16]);
  assert.deepEqual(fs.calls, [], "no session yet: nothing to destroy");
  init(ring, session, 7, 38, 0n);
  init(ring, session, 7, 38, 0n);
  ring.send(session, [request(A.FUSE_DESTROY)], [16]);
  assert.deepEqual(fs.calls, ["init 0x0", "destroy", "init 0x0", "destroy"]);
  session.reset();
  assert.equal(fs.calls.length, 4, "reset() of an ended session does not destroy twice");
});

Deno.test("FuseSession GETATTR: the reply carries the attributes and the timeout", () => {
  using ring = new TestRing();
  const fs = new FakeFs();
  const session = newSession(fs);
  init(ring, session, 7, 38, 0n);
  const req = request(A.FUSE_GETATTR, getattrIn(0x99n));
  const v = new DataView(req.buffer);
  v.setBigUint64(A.IN_HEADER.nodeid, 5n, true);
  v.setUint32(A.IN_HEADER.uid, 1001, true);
  v.setUint32(A.IN_HEADER.gid, 1002, true);
  v.setUint32(A.IN_HEADER.pid, 1003, true);
  const r = ring.send(session, [req], [16, A.ATTR_OUT.size]);
  assert.equal(r.len, 16 + A.ATTR_OUT.size);
  assert.equal(outHeader(r.out).error, 0);
  assert.equal(outHeader(r.out).len, 16 + A.ATTR_OUT.size);
  const o = new DataView(r.out.buffer, 16);
  assert.equal(o.getBigUint64(A.ATTR_OUT.attrValid, true), 0n);
  assert.equal(o.getUint32(A.ATTR_OUT.attrValidNsec, true), 250_000_000);
  assert.deepEqual(readAttr(r.out, 16 + A.ATTR_OUT.attr), ATTR);
  assert.deepEqual(fs.calls.slice(1), ["getattr 5 153"]);
  assert.deepEqual(fs.lastCtx, { uid: 1001, gid: 1002, pid: 1003 });
  // Without FUSE_GETATTR_FH the fh is not passed.
  ring.send(session, [request(A.FUSE_GETATTR, getattrIn())], [120]);
  assert.equal(fs.calls.at(-1), "getattr 1 undefined");
  // A short getattr_in is EINVAL, without asking the file system.
  assertError(
    ring.send(session, [request(A.FUSE_GETATTR, new Uint8Array(8))], [120]),
    Errno.EINVAL,
  );
  assert.equal(fs.calls.length, 3);
});

Deno.test("FuseSession GETATTR: 64-bit nodeids, sizes and times before 1970 cross the wire whole", () => {
  using ring = new TestRing();
  const fs = new FakeFs();
  const session = newSession(fs);
  init(ring, session, 7, 38, 0n);
  fs.attr = {
    ...ATTR,
    size: 2 ** 53 - 1,
    blocks: 0x1_0000_0001,
    atime: -1,
    mtime: -(2 ** 40) - 3,
    ctime: 2 ** 33 + 5,
  };
  // Nodeids sharing their low bits (and so a slot of the session's nodeid cache).
  for (const nodeid of [5n, 5n + 256n, 5n + (1n << 32n), 0xffff_ffff_0000_0005n, 5n]) {
    const req = request(A.FUSE_GETATTR, getattrIn());
    new DataView(req.buffer).setBigUint64(A.IN_HEADER.nodeid, nodeid, true);
    const r = ring.send(session, [req], [16, A.ATTR_OUT.size]);
    assert.equal(outHeader(r.out).error, 0);
    assert.equal(fs.calls.at(-1), `getattr ${nodeid} undefined`);
    assert.deepEqual(readAttr(r.out, 16 + A.ATTR_OUT.attr), fs.attr);
    assert.equal(new DataView(r.out.buffer, 16).getUint32(A.ATTR_OUT.attrValidNsec + 4), 0);
  }
});

Deno.test("FuseSession LOOKUP: the name ends at its NUL; the entry goes back", () => {
  using ring = new TestRing();
  const fs = new FakeFs();
  const session = newSession(fs);
  init(ring, session, 7, 38, 0n);
  const r = ring.send(session, [request(A.FUSE_LOOKUP, new TextEncoder().encode("hello\0"))], [
    16,
    A.ENTRY_OUT.size,
  ]);
  assert.equal(r.len, 16 + A.ENTRY_OUT.size);
  assert.equal(fs.calls.at(-1), "lookup 1 hello");
  const o = new DataView(r.out.buffer, 16);
  assert.equal(o.getBigUint64(A.ENTRY_OUT.nodeid, true), 42n);
  assert.equal(o.getBigUint64(A.ENTRY_OUT.generation, true), 7n);
  assert.equal(o.getBigUint64(A.ENTRY_OUT.entryValid, true), 1n);
  assert.equal(o.getUint32(A.ENTRY_OUT.entryValidNsec, true), 500_000_000);
  assert.equal(o.getBigUint64(A.ENTRY_OUT.attrValid, true), 2n);
  assert.equal(o.getUint32(A.ENTRY_OUT.attrValidNsec, true), 0);
  assert.deepEqual(readAttr(r.out, 16 + A.ENTRY_OUT.attr), ATTR);
  // No NUL within the request: EINVAL, the file system is not asked.
  const calls = fs.calls.length;
  assertError(
    ring.send(session, [request(A.FUSE_LOOKUP, new TextEncoder().encode("hello"))], [144]),
    Errno.EINVAL,
  );
  assert.equal(fs.calls.length, calls);
});

Deno.test("FuseSession STATFS: the reply is a fuse_kstatfs", () => {
  using ring = new TestRing();
  const session = newSession();
  init(ring, session, 7, 38, 0n);
  const r = ring.send(session, [request(A.FUSE_STATFS)], [16 + A.KSTATFS.size]);
  assert.equal(r.len, 16 + A.KSTATFS.size);
  const o = new DataView(r.out.buffer, 16);
  assert.equal(o.getBigUint64(A.KSTATFS.blocks, true), 1000n);
  assert.equal(o.getBigUint64(A.KSTATFS.bavail, true), 400n);
  assert.equal(o.getBigUint64(A.KSTATFS.ffree, true), 50n);
  assert.equal(o.getUint32(A.KSTATFS.bsize, true), 4096);
  assert.equal(o.getUint32(A.KSTATFS.namelen, true), 255);
  assert.equal(o.getUint32(A.KSTATFS.frsize, true), 4096);
});

Deno.test("FuseSession answers ENOSYS for an operation the file system lacks", () => {
  using ring = new TestRing();
  const session = newSession({});
  init(ring, session, 7, 38, 0n);
  assertError(ring.send(session, [request(A.FUSE_GETATTR, getattrIn())], [120]), Errno.ENOSYS);
  assertError(ring.send(session, [request(A.FUSE_STATFS)], [96]), Errno.ENOSYS);
  assertError(
    ring.send(session, [request(A.FUSE_LOOKUP, new Uint8Array([0x61, 0]))], [144]),
    Errno.ENOSYS,
  );
  assertError(ring.send(session, [request(A.FUSE_MKDIR, new Uint8Array(16))], [144]), Errno.ENOSYS);
  assert.equal(ring.send(session, [request(A.FUSE_FORGET, new Uint8Array(8))], []).len, 0);
});

Deno.test("FuseSession turns what the file system throws into an error reply", async (t) => {
  await t.step("ErrnoError: its errno", () => {
    using ring = new TestRing();
    const fs = new FakeFs();
    fs.fail = new ErrnoError(Errno.ENOENT, "fstatat", "x");
    const session = newSession(fs);
    init(ring, session, 7, 38, 0n);
    assertError(ring.send(session, [request(A.FUSE_GETATTR, getattrIn())], [120]), Errno.ENOENT);
  });
  await t.step("anything else: EIO", () => {
    using ring = new TestRing();
    const fs = new FakeFs();
    fs.fail = new TypeError("a bug");
    const session = newSession(fs);
    init(ring, session, 7, 38, 0n);
    assertError(ring.send(session, [request(A.FUSE_GETATTR, getattrIn())], [120]), Errno.EIO);
  });
});

Deno.test("FuseSession FORGET and BATCH_FORGET reach the file system, after INIT only", () => {
  using ring = new TestRing();
  const fs = new FakeFs();
  const session = newSession(fs);
  const forget = (nodeid: bigint, nlookup: bigint): Uint8Array => {
    const args = new Uint8Array(A.FORGET_IN.size);
    new DataView(args.buffer).setBigUint64(A.FORGET_IN.nlookup, nlookup, true);
    const req = request(A.FUSE_FORGET, args);
    new DataView(req.buffer).setBigUint64(A.IN_HEADER.nodeid, nodeid, true);
    return req;
  };
  ring.send(session, [forget(9n, 1n)], []);
  assert.deepEqual(fs.calls, [], "no session: nothing to forget");
  init(ring, session, 7, 38, 0n);
  ring.send(session, [forget(9n, 3n)], []);
  const items = [[10n, 1n], [11n, 2n], [12n, 3n]] as const;
  const batch = new Uint8Array(A.BATCH_FORGET_IN.size + items.length * A.FORGET_ONE.size);
  const bv = new DataView(batch.buffer);
  bv.setUint32(A.BATCH_FORGET_IN.count, items.length + 5, true); // claims more than it holds
  items.forEach(([nodeid, nlookup], i) => {
    const at = A.BATCH_FORGET_IN.size + i * A.FORGET_ONE.size;
    bv.setBigUint64(at + A.FORGET_ONE.nodeid, nodeid, true);
    bv.setBigUint64(at + A.FORGET_ONE.nlookup, nlookup, true);
  });
  ring.send(session, [request(A.FUSE_BATCH_FORGET, batch)], []);
  ring.send(session, [forget(9n, 1n).subarray(0, 44)], []); // a truncated forget_in: ignored
  assert.deepEqual(fs.calls.slice(1), ["forget 9 3", "batchForget 10:1,11:2,12:3"]);
  assert.equal(session.stats.replies, 1);
});
