import assert from "node:assert/strict";
import { GuestQueue, writeDescriptorAt } from "../driver/guest_queue.ts";
import { GuestRam } from "../driver/guest_ram.ts";
import { GuestMemory } from "../memory/guest_memory.ts";
import {
  availRingBytes,
  DESCRIPTOR_SIZE,
  descTableBytes,
  MAX_QUEUE_SIZE,
  queueSizeProblem,
  usedRingBytes,
  VIRTQ_DESC_F_INDIRECT as INDIRECT,
  VIRTQ_DESC_F_NEXT as NEXT,
  VIRTQ_DESC_F_WRITE as WRITE,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "../wire/virtio.ts";
import { type RingAddresses, SplitQueue } from "./split_queue.ts";

// ---------------------------------------------------------------------------------------------
// A split ring in memfd-backed guest memory: the test driver's GuestQueue (GuestRam) lays it out
// as a driver would (descriptor table, avail ring with used_event, used ring with avail_event);
// the tests write descriptors, avail entries and indices through its raw access, at the indices
// they choose. The device side maps the same memfd (GuestMemory).

const GPA0 = 0x10_0000;
const REGION_SIZE = 1 << 20;

interface RegionSpec {
  gpa: number;
  size: number;
}

/** One buffer of a chain: device-writable when `write` is set. */
interface Buf {
  addr: number;
  len: number;
  write?: boolean;
}

/**
 * Guest memory over a memfd with a split ring of `size` allocated at the start of the first
 * region, and the same memory as the device maps it.
 */
class TestRing {
  readonly ram: GuestRam;
  readonly driver: GuestQueue;
  readonly memory = new GuestMemory();
  readonly size: number;
  /** The driver's next avail index (published with `offer`). */
  availIdx = 0;

  constructor(size: number, regions: readonly RegionSpec[] = [{ gpa: GPA0, size: REGION_SIZE }]) {
    this.size = size;
    this.ram = GuestRam.create({
      regions: regions.map((r) => ({ guestPhysAddr: r.gpa, size: r.size })),
      name: "split_queue_test",
    });
    this.driver = new GuestQueue(this.ram, { size, eventIdx: false });
    for (const r of this.ram.regions) this.memory.add(r, this.ram.dupFd());
  }

  get descGpa(): number {
    return this.driver.descGpa;
  }

  get availGpa(): number {
    return this.driver.availGpa;
  }

  get usedGpa(): number {
    return this.driver.usedGpa;
  }

  /** The rings' front-end virtual addresses, as SET_VRING_ADDR gives them. */
  get addresses(): RingAddresses {
    return {
      desc: this.ram.gpaToUserspace(this.descGpa),
      avail: this.ram.gpaToUserspace(this.availGpa),
      used: this.ram.gpaToUserspace(this.usedGpa),
    };
  }

  /** A device side for this ring, mapped. */
  queue(eventIdx = false, base = 0): SplitQueue {
    const q = new SplitQueue(this.size, this.addresses, base, eventIdx);
    assert.equal(q.map(this.memory), undefined);
    return q;
  }

  /** The bytes at guest-physical `gpa` (inside one region). */
  bytes(gpa: number, len: number): Uint8Array {
    return this.ram.slice(gpa, len);
  }

  /** `len` zeroed bytes of guest memory. */
  alloc(len: number, align = 16): number {
    return this.ram.alloc(Math.max(len, 1), align);
  }

  /** A buffer holding `data`. */
  put(data: Uint8Array): number {
    return this.ram.place(data, 16);
  }

  /** Writes descriptor `i` of the table at `table` (default: the ring's own table). */
  setDesc(
    i: number,
    addr: number,
    len: number,
    flags: number,
    next = 0,
    table?: number,
  ): void {
    const d = { addr, len, flags, next };
    if (table === undefined) this.driver.writeDescriptor(i, d);
    else writeDescriptorAt(this.ram, table + DESCRIPTOR_SIZE * i, d);
  }

  /** Lays `bufs` out as a NEXT chain at descriptor indices `at` of the table at `table`. */
  chain(at: readonly number[], bufs: readonly Buf[], table?: number): number {
    bufs.forEach((b, k) => {
      const last = k === bufs.length - 1;
      this.setDesc(
        at[k] ?? -1,
        b.addr,
        b.len,
        (b.write ? WRITE : 0) | (last ? 0 : NEXT),
        last ? 0 : at[k + 1] ?? 0,
        table,
      );
    });
    return at[0] ?? -1;
  }

  /** An indirect table holding `bufs`, referenced by descriptor `head`. */
  indirect(head: number, bufs: readonly Buf[], flags = 0): number {
    const table = this.alloc(DESCRIPTOR_SIZE * bufs.length);
    this.chain(bufs.map((_, k) => k), bufs, table);
    this.setDesc(head, table, DESCRIPTOR_SIZE * bufs.length, INDIRECT | flags);
    return table;
  }

  /** Makes `heads` available, then publishes the avail index. */
  offer(...heads: number[]): void {
    for (const h of heads) {
      this.driver.writeAvailRing(this.availIdx, h);
      this.availIdx = (this.availIdx + 1) & 0xffff;
    }
    this.setAvailIdx(this.availIdx);
  }

  setAvailIdx(idx: number): void {
    this.driver.setAvailIdx(idx);
  }

  set availFlags(flags: number) {
    this.driver.setAvailFlags(flags);
  }

  set usedEvent(idx: number) {
    this.driver.setUsedEvent(idx);
  }

  get availEvent(): number {
    return this.driver.availEvent;
  }

  set availEvent(idx: number) {
    this.driver.setAvailEvent(idx);
  }

  get usedFlags(): number {
    return this.driver.usedFlags;
  }

  set usedFlags(flags: number) {
    this.driver.setUsedFlags(flags);
  }

  get usedIdx(): number {
    return this.driver.usedIdx;
  }

  set usedIdx(idx: number) {
    this.driver.setUsedIdx(idx);
  }

  /** Used ring element `slot` (taken modulo the size). */
  used(slot: number): { id: number; len: number } {
    return this.driver.readUsedElement(slot);
  }

  [Symbol.dispose](): void {
    this.memory.clear();
    this.ram.close();
  }
}

function pattern(n: number, seed = 1): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (seed + i) & 0xff);
}

/** A one-readable, one-writable chain at descriptors `at[0]`, `at[1]`. */
function simpleChain(r: TestRing, at: readonly [number, number], readable = 8): number {
  return r.chain(at, [
    { addr: r.put(pattern(readable)), len: readable },
    { addr: r.alloc(16), len: 16, write: true },
  ]);
}

function noBadChain(reason: string): void {
  assert.fail(`unexpected bad chain: ${reason}`);
}

// ---------------------------------------------------------------------------------------------

Deno.test("queueSizeProblem() accepts powers of 2 from 1 to 32768 only", () => {
  for (const ok of [1, 2, 4, 128, 256, 1024, 32768]) {
    assert.equal(queueSizeProblem(ok), undefined, `${ok}`);
  }
  assert.equal(MAX_QUEUE_SIZE, 32768);
  for (const bad of [0, 3, 65536, 6, 32769, 65535, -1, -2, 2.5, NaN]) {
    assert.match(queueSizeProblem(bad) ?? "", /is not a power of 2 from 1 to 32768/, `${bad}`);
  }
  assert.match(queueSizeProblem(3) ?? "", /queue size 3/);
});

Deno.test("SplitQueue.map() resolves the rings by front-end virtual address", async (t) => {
  await t.step("good addresses", () => {
    using r = new TestRing(8);
    const q = new SplitQueue(8, r.addresses, 0, false);
    assert.equal(q.usable, false, "not usable before map()");
    assert.equal(q.pop(r.memory, noBadChain), false);
    assert.equal(q.map(r.memory), undefined);
    assert.equal(q.usable, true);
  });
  await t.step("guest-physical addresses given where user addresses belong", () => {
    using r = new TestRing(8);
    const q = new SplitQueue(
      8,
      { desc: r.descGpa, avail: r.availGpa, used: r.usedGpa },
      0,
      false,
    );
    assert.equal(r.descGpa, GPA0);
    assert.match(q.map(r.memory) ?? "", /descriptor table at user address 0x100000 .* outside/);
    assert.equal(q.usable, false);
  });
  await t.step("a part running past the end of its region", () => {
    using r = new TestRing(8);
    const end = r.ram.gpaToUserspace(GPA0) + REGION_SIZE;
    // Each part placed to end a few bytes past the region; the sizes the device must find are
    // virtio 1.2's: 16 * 8, 6 + 2 * 8, 6 + 8 * 8.
    const cases: [keyof RingAddresses, number, RegExp][] = [
      [
        "desc",
        end - descTableBytes(8) + DESCRIPTOR_SIZE,
        /descriptor table .*\(\+128\) is outside guest memory/,
      ],
      ["avail", end - availRingBytes(8) + 2, /avail ring .*\(\+22\) is outside/],
      ["used", end - usedRingBytes(8) + 4, /used ring .*\(\+70\) is outside/],
    ];
    for (const [part, uva, why] of cases) {
      const q = new SplitQueue(8, { ...r.addresses, [part]: uva }, 0, false);
      assert.match(q.map(r.memory) ?? "", why, part);
      assert.equal(q.usable, false);
    }
  });
  await t.step("misaligned parts (virtio 1.2 §2.7: alignment 16, 2 and 4)", () => {
    using r = new TestRing(8);
    const a = r.addresses;
    const cases: [Partial<RingAddresses>, RegExp][] = [
      [{ desc: a.desc + 8 }, /descriptor table .* is not 16-byte aligned/],
      [{ avail: a.avail + 1 }, /avail ring .* is not 2-byte aligned/],
      [{ used: a.used + 2 }, /used ring .* is not 4-byte aligned/],
    ];
    for (const [change, why] of cases) {
      const q = new SplitQueue(8, { ...a, ...change }, 0, false);
      assert.match(q.map(r.memory) ?? "", why);
    }
  });
  await t.step("an empty memory makes the queue unusable until mapped again", () => {
    using r = new TestRing(8);
    const q = r.queue();
    assert.match(q.map(new GuestMemory()) ?? "", /outside guest memory/);
    assert.equal(q.usable, false);
    r.offer(simpleChain(r, [0, 1]));
    assert.equal(q.pop(r.memory, noBadChain), false);
    assert.equal(q.map(r.memory), undefined);
    assert.equal(q.pop(r.memory, noBadChain), true);
  });
});

Deno.test("SplitQueue.pop() takes chains in avail order; pushUsed() returns them", () => {
  using r = new TestRing(8);
  const q = r.queue();
  assert.equal(q.pop(r.memory, noBadChain), false, "empty");
  const req = pattern(24, 40);
  const reply = r.alloc(32);
  const a = r.chain([5, 2], [{ addr: r.put(req), len: 24 }, {
    addr: reply,
    len: 32,
    write: true,
  }]);
  const b = simpleChain(r, [0, 7]);
  r.offer(a, b);

  assert.equal(q.pop(r.memory, noBadChain), true);
  assert.equal(q.chain.head, 5);
  assert.equal(q.chain.readableLength, 24);
  assert.equal(q.chain.writableLength, 32);
  const got = new Uint8Array(24);
  q.chain.read(got, 0);
  assert.deepEqual(got, req);
  q.chain.write(pattern(12, 90), 0);
  q.pushUsed(q.chain.head, 12);
  assert.equal(r.usedIdx, 1);
  assert.deepEqual(r.used(0), { id: 5, len: 12 });
  assert.deepEqual(r.bytes(reply, 12), pattern(12, 90));

  assert.equal(q.pop(r.memory, noBadChain), true);
  assert.equal(q.chain.head, 0);
  q.pushUsed(0, 0);
  assert.equal(r.usedIdx, 2);
  assert.deepEqual(r.used(1), { id: 0, len: 0 });

  assert.equal(q.pop(r.memory, noBadChain), false, "empty again");
  assert.equal(q.lastAvailIdx, 2);
  assert.equal(q.usedIdx, 2);
  assert.equal(q.stats.chains, 2);
  assert.equal(q.stats.badChains, 0);
});

Deno.test("SplitQueue.pop() serves an INDIRECT chain", () => {
  using r = new TestRing(4);
  const q = r.queue();
  const w = r.alloc(64);
  r.indirect(3, [
    { addr: r.put(pattern(40)), len: 40 },
    { addr: r.put(pattern(64, 3)), len: 64 },
    { addr: r.alloc(16), len: 16, write: true },
    { addr: w, len: 64, write: true },
  ]);
  r.offer(3);
  assert.equal(q.pop(r.memory, noBadChain), true);
  assert.equal(q.chain.head, 3);
  assert.equal(q.chain.indirect, true);
  assert.equal(q.chain.readableLength, 104);
  assert.equal(q.chain.writableLength, 80);
  assert.equal(q.chain.write(pattern(80, 8), 0), 80);
  assert.deepEqual(r.bytes(w, 64), pattern(80, 8).subarray(16));
});

Deno.test("SplitQueue.pop() serves a buffer spanning two adjacent regions", () => {
  using r = new TestRing(4, [{ gpa: 0x10_0000, size: 0x1_0000 }, {
    gpa: 0x11_0000,
    size: 0x1_0000,
  }]);
  const q = r.queue();
  const data = pattern(100, 5);
  r.bytes(0x11_0000 - 30, 30).set(data.subarray(0, 30));
  r.bytes(0x11_0000, 70).set(data.subarray(30));
  r.offer(r.chain([1, 2], [{ addr: 0x11_0000 - 30, len: 100 }, {
    addr: r.alloc(8),
    len: 8,
    write: true,
  }]));
  assert.equal(q.pop(r.memory, noBadChain), true);
  assert.equal(q.chain.readableLength, 100);
  assert.equal(q.chain.segmentCount, 3);
  const got = new Uint8Array(100);
  assert.equal(q.chain.read(got, 0), 100);
  assert.deepEqual(got, data);
});

Deno.test("SplitQueue indices wrap at 2^16; ring slots are taken modulo the size", () => {
  using r = new TestRing(4);
  r.availIdx = 0xfffe;
  r.setAvailIdx(0xfffe);
  const q = r.queue(false, 0xfffe);
  q.usedIdx = 0xfffe;
  const heads = [
    simpleChain(r, [0, 1]),
    simpleChain(r, [2, 3]),
    r.chain([1], [{
      addr: r.put(pattern(4)),
      len: 4,
    }]),
  ];
  r.offer(...heads);
  assert.equal(r.availIdx, 1);
  const taken: number[] = [];
  while (q.pop(r.memory, noBadChain)) {
    taken.push(q.chain.head);
    q.pushUsed(q.chain.head, 1);
  }
  assert.deepEqual(taken, heads);
  assert.equal(q.lastAvailIdx, 1);
  assert.equal(q.usedIdx, 1);
  assert.equal(r.usedIdx, 1);
  // 0xfffe % 4 = 2, 0xffff % 4 = 3, 0 % 4 = 0.
  assert.deepEqual(r.used(2), { id: heads[0], len: 1 });
  assert.deepEqual(r.used(3), { id: heads[1], len: 1 });
  assert.deepEqual(r.used(0), { id: heads[2], len: 1 });
});

Deno.test("SplitQueue constructor keeps only the low 16 bits of the base", () => {
  using r = new TestRing(4);
  assert.equal(new SplitQueue(4, r.addresses, 0x1_0005, false).lastAvailIdx, 5);
});

Deno.test("SplitQueue.syncUsedIdx() resumes from the used index in guest memory", () => {
  using r = new TestRing(8);
  r.usedIdx = 5;
  const q = r.queue(false, 5);
  assert.equal(q.usedIdx, 0);
  q.syncUsedIdx();
  assert.equal(q.usedIdx, 5);
  r.offer(...[0, 0, 0, 0, 0]); // the driver had made 5 available before the restart
  r.offer(simpleChain(r, [0, 1]));
  assert.equal(q.pop(r.memory, noBadChain), true);
  q.pushUsed(q.chain.head, 3);
  assert.equal(r.usedIdx, 6);
  assert.deepEqual(r.used(5), { id: 0, len: 3 });
});

// ---------------------------------------------------------------------------------------------
// What a driver MUST NOT do (virtio 1.2): the chain is refused, counted, reported, returned with
// length 0 when its head is valid, and the queue goes on with the next chain.

interface BadCase {
  rule: string;
  /** Builds the bad chain (its descriptors among 0..5 of a ring of 8); returns its head. */
  build: (r: TestRing) => number;
  reason: RegExp;
}

const BAD_CHAINS: readonly BadCase[] = [
  {
    rule: '§2.7.5.3.1 "A driver MUST NOT set both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT ' +
      'in flags."',
    build: (r) => {
      const table = r.alloc(DESCRIPTOR_SIZE);
      r.setDesc(0, r.put(pattern(8)), 8, 0, 0, table);
      r.setDesc(0, table, DESCRIPTOR_SIZE, INDIRECT | NEXT, 1);
      r.chain([1], [{ addr: r.alloc(8), len: 8, write: true }]);
      return 0;
    },
    reason: /INDIRECT descriptor also has NEXT/,
  },
  {
    rule: '§2.7.5.3.1 "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag within an indirect ' +
      'descriptor (ie. only one table per descriptor)."',
    build: (r) => {
      const inner = r.alloc(DESCRIPTOR_SIZE);
      r.setDesc(0, r.put(pattern(8)), 8, 0, 0, inner);
      const outer = r.alloc(DESCRIPTOR_SIZE);
      r.setDesc(0, inner, DESCRIPTOR_SIZE, INDIRECT, 0, outer);
      r.setDesc(2, outer, DESCRIPTOR_SIZE, INDIRECT);
      return 2;
    },
    reason: /indirect table inside an indirect table/,
  },
  {
    rule: '§2.7.5.3.1 "A driver MUST NOT create a descriptor chain longer than the Queue Size of ' +
      'the device." (all 8 descriptors, then the first again)',
    build: (r) => {
      const idx = Array.from({ length: r.size }, (_, k) => k);
      r.chain(idx, idx.map(() => ({ addr: r.alloc(4), len: 4 })));
      r.setDesc(r.size - 1, r.alloc(4), 4, NEXT, 0);
      return 0;
    },
    reason: /chain is longer than 8 descriptors or loops/,
  },
  {
    rule: '§2.7.5.2 "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total; ' +
      'this implies that loops in the descriptor chain are forbidden!"',
    build: (r) => {
      r.setDesc(3, r.alloc(4), 4, NEXT, 4);
      r.setDesc(4, r.alloc(4), 4, NEXT, 3);
      return 3;
    },
    reason: /loops/,
  },
  {
    rule: '§2.7.4.2 "The driver MUST place any device-writable descriptor elements after any ' +
      'device-readable descriptor elements."',
    build: (r) =>
      r.chain([4, 5], [{ addr: r.alloc(8), len: 8, write: true }, {
        addr: r.put(pattern(8)),
        len: 8,
      }]),
    reason: /readable buffer after a writable one/,
  },
  {
    rule: '§2.7.5 "The number of descriptors in the table is defined by the queue size for this ' +
      'virtqueue" (next index out of range)',
    build: (r) => {
      r.setDesc(1, r.put(pattern(8)), 8, NEXT, 9);
      return 1;
    },
    reason: /descriptor index 9 is out of range/,
  },
  {
    rule: '§2.7.5 "addr is a physical address" (a buffer outside guest memory)',
    build: (r) => r.chain([2], [{ addr: 0x4000_0000, len: 16, write: true }]),
    reason: /outside guest memory/,
  },
  {
    rule: '§2.7.5.3 "struct virtq_desc desc[len / 16]" (indirect length 0)',
    build: (r) => {
      r.setDesc(0, r.alloc(DESCRIPTOR_SIZE), 0, INDIRECT);
      return 0;
    },
    reason: /indirect table length 0 /,
  },
  {
    rule: '§2.7.5.3 "struct virtq_desc desc[len / 16]" (indirect length not a multiple of 16)',
    build: (r) => {
      r.setDesc(0, r.alloc(2 * DESCRIPTOR_SIZE), 20, INDIRECT);
      return 0;
    },
    reason: /indirect table length 20 /,
  },
];

Deno.test("SplitQueue.pop() refuses a bad chain, returns it with length 0, and serves the next", async (t) => {
  for (const bad of BAD_CHAINS) {
    await t.step(bad.rule, () => {
      using r = new TestRing(8);
      const q = r.queue();
      const head = bad.build(r);
      r.offer(head);
      const reasons: string[] = [];
      assert.equal(q.pop(r.memory, (why) => reasons.push(why)), false, "nothing good to take");
      assert.equal(reasons.length, 1);
      assert.match(reasons[0] ?? "", new RegExp(`^chain at head ${head}: `));
      assert.match(reasons[0] ?? "", bad.reason);
      assert.equal(q.stats.badChains, 1);
      assert.equal(q.stats.chains, 0);
      assert.equal(r.usedIdx, 1, "the bad chain went back to the driver");
      assert.deepEqual(r.used(0), { id: head, len: 0 });
      assert.equal(q.usable, true, "a bad chain does not break the queue");
      // The driver reuses the descriptors for a good chain: it is served.
      const good = simpleChain(r, [6, 7]);
      r.offer(good);
      assert.equal(q.pop(r.memory, noBadChain), true);
      assert.equal(q.chain.head, good);
      q.pushUsed(good, 16);
      assert.deepEqual(r.used(1), { id: good, len: 16 });
      assert.equal(q.stats.chains, 1);
    });
  }
});

Deno.test("SplitQueue.pop() goes on past bad chains to a good one in the same call", () => {
  using r = new TestRing(8);
  const q = r.queue();
  r.setDesc(3, r.alloc(4), 4, NEXT, 3); // loops
  r.setDesc(4, r.alloc(4), 4, INDIRECT | NEXT, 5); // INDIRECT with NEXT
  const good = simpleChain(r, [6, 7]);
  r.offer(3, 4, good);
  const reasons: string[] = [];
  assert.equal(q.pop(r.memory, (why) => reasons.push(why)), true);
  assert.equal(q.chain.head, good);
  assert.equal(reasons.length, 2);
  assert.equal(q.stats.badChains, 2);
  assert.deepEqual([r.used(0), r.used(1)], [{ id: 3, len: 0 }, { id: 4, len: 0 }]);
  assert.equal(r.usedIdx, 2);
});

Deno.test("SplitQueue.pop() refuses a head index out of range without a used entry", () => {
  using r = new TestRing(8);
  const q = r.queue();
  r.offer(8, 0xffff, simpleChain(r, [0, 1]));
  const reasons: string[] = [];
  assert.equal(q.pop(r.memory, (why) => reasons.push(why)), true);
  assert.equal(q.chain.head, 0);
  assert.equal(reasons.length, 2);
  assert.match(reasons[0] ?? "", /chain at head 8: descriptor index 8 is out of range/);
  assert.match(reasons[1] ?? "", /chain at head 65535: /);
  assert.equal(q.stats.badChains, 2);
  assert.equal(r.usedIdx, 0, "no used entry names a head that does not exist");
  assert.equal(q.lastAvailIdx, 3);
});

Deno.test("SplitQueue.pop() breaks the queue when the avail index moves more than the size ahead", async (t) => {
  // §2.7: "Queue Size corresponds to the maximum number of buffers in the virtqueue", and §2.7.6.1
  // "A driver MUST NOT decrement the available idx on a virtqueue": a jump of more than the size
  // (or backwards, which is the same modulo 2^16) means the driver broke the ring.
  for (const [name, idx] of [["size + 1 ahead", 9], ["decremented", 0xffff]] as const) {
    await t.step(name, () => {
      using r = new TestRing(8);
      const q = r.queue();
      simpleChain(r, [0, 1]);
      r.setAvailIdx(idx);
      const reasons: string[] = [];
      assert.equal(q.pop(r.memory, (why) => reasons.push(why)), false);
      assert.equal(reasons.length, 1);
      assert.match(reasons[0] ?? "", new RegExp(`from 0 to ${idx}, more than the queue size 8`));
      assert.equal(q.broken, reasons[0]);
      assert.equal(q.usable, false);
      assert.equal(r.usedIdx, 0);
      assert.equal(q.lastAvailIdx, 0);
      // Nothing more is taken, even once the index looks sane again.
      r.setAvailIdx(1);
      assert.equal(q.pop(r.memory, noBadChain), false);
    });
  }
  await t.step("exactly the size ahead is a full ring, and fine", () => {
    using r = new TestRing(4);
    const q = r.queue();
    r.offer(...[0, 1, 2, 3].map((i) => r.chain([i], [{ addr: r.alloc(4), len: 4 }])));
    let n = 0;
    while (q.pop(r.memory, noBadChain)) n++;
    assert.equal(n, 4);
    assert.equal(q.broken, undefined);
  });
});

// ---------------------------------------------------------------------------------------------
// Notifications.

/** Pushes `n` used entries. */
function complete(q: SplitQueue, n: number): void {
  for (let i = 0; i < n; i++) q.pushUsed(0, 0);
}

Deno.test("SplitQueue.needsInterrupt() with EVENT_IDX follows vring_need_event", async (t) => {
  await t.step("the first completion always interrupts", () => {
    using r = new TestRing(8);
    const q = r.queue(true);
    r.usedEvent = 100; // far away: would suppress, but nothing was signalled yet
    complete(q, 1);
    assert.equal(q.needsInterrupt(), true);
    assert.equal(q.stats.interrupts, 1);
  });
  await t.step("used_event is honoured", () => {
    using r = new TestRing(8);
    const q = r.queue(true);
    complete(q, 1);
    assert.equal(q.needsInterrupt(), true); // signalled at used idx 1
    r.usedEvent = 2; // "interrupt me when you write entry 2", i.e. once used idx passes 2
    complete(q, 1); // used idx 2
    // vring_need_event(2, 2, 1): (2 - 2 - 1) & 0xffff = 65535 is not below 2 - 1.
    assert.equal(vringNeedEvent(2, 2, 1), false);
    assert.equal(q.needsInterrupt(), false);
    assert.equal(q.needsInterrupt(), false, "no new entries: never an interrupt");
    complete(q, 1); // used idx 3: entry 2 written
    // vring_need_event(2, 3, 2): 3 - 2 - 1 = 0 is below 3 - 2.
    assert.equal(vringNeedEvent(2, 3, 2), true);
    assert.equal(q.needsInterrupt(), true);
    assert.equal(q.needsInterrupt(), false);
    assert.equal(q.stats.interrupts, 2);
    assert.equal(q.stats.interruptsSuppressed, 1);
  });
  await t.step("a batch that passes used_event interrupts once", () => {
    using r = new TestRing(8);
    const q = r.queue(true);
    complete(q, 1);
    q.needsInterrupt();
    r.usedEvent = 3;
    complete(q, 5); // 1 -> 6 passes 3
    assert.equal(q.needsInterrupt(), true);
    r.usedEvent = 5; // already behind: the driver has not caught up, no interrupt
    complete(q, 2); // 6 -> 8
    // vring_need_event(5, 8, 6): 8 - 5 - 1 = 2 is not below 8 - 6.
    assert.equal(vringNeedEvent(5, 8, 6), false);
    assert.equal(q.needsInterrupt(), false);
  });
  await t.step("across the 2^16 wrap", () => {
    using r = new TestRing(8);
    const q = r.queue(true);
    q.usedIdx = 0xfffd;
    complete(q, 1); // 0xfffe
    assert.equal(q.needsInterrupt(), true);
    r.usedEvent = 0xffff;
    complete(q, 3); // 0xfffe -> 0x0001 passes 0xffff
    assert.equal(q.usedIdx, 1);
    assert.equal(q.needsInterrupt(), true);
    r.usedEvent = 0x0005;
    complete(q, 2); // 1 -> 3, before 5
    assert.equal(q.needsInterrupt(), false);
  });
  await t.step("avail.flags NO_INTERRUPT is ignored under EVENT_IDX", () => {
    using r = new TestRing(8);
    const q = r.queue(true);
    r.availFlags = VRING_AVAIL_F_NO_INTERRUPT;
    complete(q, 1);
    assert.equal(q.needsInterrupt(), true);
    r.usedEvent = 1;
    complete(q, 1);
    assert.equal(q.needsInterrupt(), true);
  });
});

Deno.test("SplitQueue.needsInterrupt() without EVENT_IDX honours NO_INTERRUPT", () => {
  using r = new TestRing(8);
  const q = r.queue(false);
  r.usedEvent = 100; // ignored without EVENT_IDX
  complete(q, 1);
  assert.equal(q.needsInterrupt(), true);
  r.availFlags = VRING_AVAIL_F_NO_INTERRUPT;
  complete(q, 1);
  assert.equal(q.needsInterrupt(), false);
  r.availFlags = 0;
  complete(q, 1);
  assert.equal(q.needsInterrupt(), true);
  assert.equal(q.stats.interrupts, 2);
  assert.equal(q.stats.interruptsSuppressed, 1);
});

Deno.test("SplitQueue.armKick() with EVENT_IDX writes avail_event = lastAvailIdx", () => {
  using r = new TestRing(8);
  const q = r.queue(true, 7);
  r.availIdx = 7;
  r.setAvailIdx(7);
  r.availEvent = 0x1234;
  assert.equal(q.armKick(), false, "nothing new");
  assert.equal(r.availEvent, 7);
  r.offer(simpleChain(r, [0, 1]), simpleChain(r, [2, 3]));
  assert.equal(q.armKick(), true, "more arrived: serve before sleeping");
  assert.equal(q.pop(r.memory, noBadChain), true);
  assert.equal(q.armKick(), true);
  assert.equal(r.availEvent, 8);
  assert.equal(q.pop(r.memory, noBadChain), true);
  assert.equal(q.armKick(), false);
  assert.equal(r.availEvent, 9);
  assert.equal(r.usedFlags, 0, "used.flags untouched under EVENT_IDX");
});

Deno.test("SplitQueue.armKick() without EVENT_IDX clears NO_NOTIFY and leaves avail_event", () => {
  using r = new TestRing(8);
  const q = r.queue(false);
  r.usedFlags = VRING_USED_F_NO_NOTIFY;
  r.availEvent = 0x4321;
  assert.equal(q.armKick(), false);
  assert.equal(r.usedFlags & VRING_USED_F_NO_NOTIFY, 0);
  assert.equal(r.availEvent, 0x4321);
  r.offer(simpleChain(r, [0, 1]));
  assert.equal(q.armKick(), true);
});
