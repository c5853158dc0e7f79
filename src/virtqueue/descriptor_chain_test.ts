import assert from "node:assert/strict";
import {
  close,
  IOVEC,
  memfdCreate,
  preadvRaw,
  pwritevRaw,
  read,
  stableBytes,
  write,
} from "../ffi/mod.ts";
import { GuestQueue, writeDescriptorAt } from "../driver/guest_queue.ts";
import { GuestRam } from "../driver/guest_ram.ts";
import { GuestMemory, type MemoryRegion } from "../memory/guest_memory.ts";
import { DescriptorChain } from "./descriptor_chain.ts";
import {
  DESCRIPTOR_SIZE,
  VIRTQ_DESC_F_INDIRECT as INDIRECT,
  VIRTQ_DESC_F_NEXT as NEXT,
  VIRTQ_DESC_F_WRITE as WRITE,
} from "../wire/virtio.ts";

// ---------------------------------------------------------------------------------------------
// A descriptor table in memfd-backed guest memory: the test driver's GuestQueue (GuestRam) owns
// it, and the tests write its descriptors through the queue's raw access, at the indices they
// choose. The device side maps the same memfd (GuestMemory).

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

/** Guest memory over a memfd, with a queue of `size` entries at the first region's start. */
class TestTable {
  readonly ram: GuestRam;
  readonly driver: GuestQueue;
  readonly memory = new GuestMemory();
  readonly size: number;

  constructor(size: number, regions: readonly RegionSpec[] = [{ gpa: GPA0, size: REGION_SIZE }]) {
    this.size = size;
    this.ram = GuestRam.create({
      regions: regions.map((r) => ({ guestPhysAddr: r.gpa, size: r.size })),
      name: "descriptor_chain_test",
    });
    this.driver = new GuestQueue(this.ram, { size, eventIdx: false });
    for (const r of this.ram.regions) this.memory.add(r, this.ram.dupFd());
  }

  /** The queue's descriptor table. */
  get descGpa(): number {
    return this.driver.descGpa;
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

  /** Writes descriptor `i` of the table at `table` (default: the queue's own table). */
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

  /** An indirect table holding `bufs` (entries 0, 1, ...), referenced by descriptor `head`. */
  indirect(head: number, bufs: readonly Buf[], flags = 0): number {
    const table = this.alloc(DESCRIPTOR_SIZE * bufs.length);
    this.chain(bufs.map((_, k) => k), bufs, table);
    this.setDesc(head, table, DESCRIPTOR_SIZE * bufs.length, INDIRECT | flags);
    return table;
  }

  /** The queue's table as `DescriptorChain.walk` takes it. */
  get table(): { region: MemoryRegion; offset: number; entries: number } {
    const region = this.memory.regionOfGpa(this.descGpa);
    assert.ok(region !== undefined);
    return {
      region,
      offset: region.base + this.descGpa - region.guestPhysAddr,
      entries: this.size,
    };
  }

  walk(chain: DescriptorChain, head: number): string | undefined {
    return chain.walk(this.memory, this.table, head, this.size);
  }

  [Symbol.dispose](): void {
    this.memory.clear();
    this.ram.close();
  }
}

/** `n` bytes counting from `seed`. */
function pattern(n: number, seed = 1): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (seed + i) & 0xff);
}

function iovBuffer(count: number): Uint8Array {
  return stableBytes(IOVEC.size * count);
}

function iovAt(iov: Uint8Array, i: number): { base: number; len: number } {
  const v = new DataView(iov.buffer, iov.byteOffset);
  const u64 = (o: number): number =>
    v.getUint32(o + 4, true) * 0x1_0000_0000 + v.getUint32(o, true);
  return { base: u64(i * IOVEC.size + IOVEC.base), len: u64(i * IOVEC.size + IOVEC.len) };
}

function hostAddressOf(t: TestTable, gpa: number): number {
  const r = t.memory.regionOfGpa(gpa);
  assert.ok(r !== undefined);
  return r.hostAddress + gpa - r.guestPhysAddr;
}

// ---------------------------------------------------------------------------------------------
// Well-formed chains.

Deno.test("DescriptorChain.walk() takes a single readable descriptor", () => {
  using t = new TestTable(8);
  const data = pattern(40);
  const head = t.chain([3], [{ addr: t.put(data), len: 40 }]);
  const c = new DescriptorChain();
  assert.equal(t.walk(c, head), undefined);
  assert.equal(c.head, 3);
  assert.equal(c.descriptorCount, 1);
  assert.equal(c.segmentCount, 1);
  assert.equal(c.readableCount, 1);
  assert.equal(c.readableLength, 40);
  assert.equal(c.writableLength, 0);
  assert.equal(c.indirect, false);
  const out = new Uint8Array(40);
  assert.equal(c.read(out, 0), 40);
  assert.deepEqual(out, data);
});

Deno.test("DescriptorChain.walk() follows NEXT and splits readable from writable", () => {
  using t = new TestTable(8);
  const r0 = t.put(pattern(10, 0));
  const r1 = t.put(pattern(7, 10));
  const w0 = t.alloc(5);
  const w1 = t.alloc(20);
  // Out of order indices: 6 -> 1 -> 4 -> 0.
  const head = t.chain([6, 1, 4, 0], [
    { addr: r0, len: 10 },
    { addr: r1, len: 7 },
    { addr: w0, len: 5, write: true },
    { addr: w1, len: 20, write: true },
  ]);
  const c = new DescriptorChain();
  assert.equal(t.walk(c, head), undefined);
  assert.equal(c.head, 6);
  assert.equal(c.descriptorCount, 4);
  assert.equal(c.segmentCount, 4);
  assert.equal(c.readableCount, 2);
  assert.equal(c.readableLength, 17);
  assert.equal(c.writableLength, 25);
  assert.equal(c.indirect, false);
});

Deno.test("DescriptorChain.walk() accepts a chain of only writable buffers", () => {
  using t = new TestTable(4);
  const head = t.chain([0, 1], [
    { addr: t.alloc(8), len: 8, write: true },
    { addr: t.alloc(8), len: 8, write: true },
  ]);
  const c = new DescriptorChain();
  assert.equal(t.walk(c, head), undefined);
  assert.equal(c.readableCount, 0);
  assert.equal(c.readableLength, 0);
  assert.equal(c.writableLength, 16);
  assert.equal(c.read(new Uint8Array(4), 0), 0);
});

Deno.test("DescriptorChain.walk() takes a zero-length descriptor as no segment", () => {
  using t = new TestTable(4);
  const head = t.chain([0, 1, 2], [
    { addr: t.put(pattern(4)), len: 4 },
    { addr: t.alloc(4), len: 0 },
    { addr: t.alloc(4), len: 4, write: true },
  ]);
  const c = new DescriptorChain();
  assert.equal(t.walk(c, head), undefined);
  assert.equal(c.descriptorCount, 3);
  assert.equal(c.segmentCount, 2);
  assert.equal(c.readableCount, 1);
});

Deno.test("DescriptorChain.read() copies across segments from any offset", () => {
  using t = new TestTable(8);
  const all = pattern(10 + 7 + 13, 50);
  const head = t.chain([0, 1, 2, 3], [
    { addr: t.put(all.subarray(0, 10)), len: 10 },
    { addr: t.put(all.subarray(10, 17)), len: 7 },
    { addr: t.put(all.subarray(17)), len: 13 },
    { addr: t.put(pattern(8, 200)), len: 8, write: true },
  ]);
  const c = new DescriptorChain();
  assert.equal(t.walk(c, head), undefined);
  for (const [from, n] of [[0, 30], [5, 10], [9, 9], [10, 7], [16, 14], [29, 1], [0, 0]]) {
    const out = new Uint8Array(n ?? 0);
    assert.equal(c.read(out, from ?? 0), n, `read ${n} from ${from}`);
    assert.deepEqual(out, all.subarray(from, (from ?? 0) + (n ?? 0)));
  }
  const big = new Uint8Array(64);
  assert.equal(c.read(big, 20), 10, "only what remains");
  assert.deepEqual(big.subarray(0, 10), all.subarray(20));
  assert.equal(c.read(big, 30), 0, "nothing past the end");
  assert.equal(c.read(big, 1000), 0);
  assert.equal(big[10], 0, "never reads the writable part");
});

Deno.test("DescriptorChain.write() copies across writable segments and never into readable ones", () => {
  using t = new TestTable(8);
  const r = t.put(pattern(6, 9));
  const w = [t.alloc(4), t.alloc(3), t.alloc(9)];
  const head = t.chain([0, 1, 2, 3], [
    { addr: r, len: 6 },
    { addr: w[0] ?? 0, len: 4, write: true },
    { addr: w[1] ?? 0, len: 3, write: true },
    { addr: w[2] ?? 0, len: 9, write: true },
  ]);
  const c = new DescriptorChain();
  assert.equal(t.walk(c, head), undefined);
  const writable = (): Uint8Array =>
    Uint8Array.from([
      ...t.bytes(w[0] ?? 0, 4),
      ...t.bytes(w[1] ?? 0, 3),
      ...t.bytes(w[2] ?? 0, 9),
    ]);

  assert.equal(c.write(pattern(5, 100), 2), 5);
  const expected = new Uint8Array(16);
  expected.set(pattern(5, 100), 2);
  assert.deepEqual(writable(), expected);

  assert.equal(c.write(pattern(30, 1), 10), 6, "truncated at the end of the writable part");
  expected.set(pattern(6, 1), 10);
  assert.deepEqual(writable(), expected);
  assert.equal(c.write(pattern(3), 16), 0, "nothing past the end");
  assert.equal(c.write(pattern(3), 400), 0);
  assert.deepEqual(t.bytes(r, 6), pattern(6, 9), "readable buffer untouched");
});

Deno.test("DescriptorChain.readInto() and writeFrom() copy short and long runs at any offset, past 64 segments", () => {
  // 100 readable buffers (3 bytes each, then one of 400: the long-copy path), then 100
  // writable ones of 5 bytes and one of 300: more segments than the arrays start with.
  const n = 100;
  // A queue of 256 (a power of 2) holds the chain of 2n + 2 descriptors.
  using t = new TestTable(256);
  const readable = pattern(3 * n + 400, 7);
  const bufs: Buf[] = [];
  for (let i = 0; i < n; i++) {
    bufs.push({ addr: t.put(readable.subarray(3 * i, 3 * i + 3)), len: 3 });
  }
  bufs.push({ addr: t.put(readable.subarray(3 * n)), len: 400 });
  const w: number[] = [];
  for (let i = 0; i < n; i++) {
    w.push(t.alloc(5));
    bufs.push({ addr: w[i] ?? 0, len: 5, write: true });
  }
  const wLast = t.alloc(300);
  bufs.push({ addr: wLast, len: 300, write: true });
  const c = new DescriptorChain();
  assert.equal(t.walk(c, t.chain(bufs.map((_, i) => i), bufs)), undefined);
  assert.equal(c.segmentCount, 2 * n + 2);
  assert.equal(c.readableLength, readable.length);
  assert.equal(c.segmentLength(n), 400);
  assert.equal(c.segmentRegion(0), t.memory.regions[0]);
  assert.equal(
    c.segmentOffset(1) - c.segmentOffset(0),
    (bufs[1]?.addr ?? 0) - (bufs[0]?.addr ?? 0),
  );

  const dst = new Uint8Array(readable.length + 10);
  assert.equal(c.readInto(dst, 10, 0, readable.length), readable.length);
  assert.deepEqual(dst.subarray(10), readable);
  dst.fill(0);
  assert.equal(c.readInto(dst, 3, 250, 200), 200, "from the middle, through the long buffer");
  assert.deepEqual(dst.subarray(3, 203), readable.subarray(250, 450));
  assert.equal(dst[203], 0, "no more than asked");
  assert.equal(c.readInto(dst, dst.length - 4, 0, 100), 4, "bounded by the destination");
  assert.equal(c.readInto(dst, dst.length + 4, 0, 100), 0);

  const writable = (): Uint8Array =>
    Uint8Array.from([...w.flatMap((a) => [...t.bytes(a, 5)]), ...t.bytes(wLast, 300)]);
  const src = pattern(900, 1);
  assert.equal(c.writeFrom(src, 100, 900, 2), 5 * n + 300 - 2, "as much as fits");
  const expected = new Uint8Array(5 * n + 300);
  expected.set(src.subarray(100, 100 + 5 * n + 300 - 2), 2);
  assert.deepEqual(writable(), expected);
  assert.equal(c.writeFrom(src, 898, 100, 0), 2, "bounded by the source");
  assert.equal(c.writeFrom(src, 0, 10, 5 * n + 300), 0, "nothing past the end");
  assert.deepEqual(t.bytes(bufs[0]?.addr ?? 0, 3), readable.subarray(0, 3), "readable untouched");
});

Deno.test("DescriptorChain.walk() follows an INDIRECT table", async (t) => {
  await t.step("readable and writable entries", () => {
    using tt = new TestTable(4);
    const req = pattern(24, 3);
    const w = tt.alloc(32);
    tt.indirect(2, [
      { addr: tt.put(req.subarray(0, 16)), len: 16 },
      { addr: tt.put(req.subarray(16)), len: 8 },
      { addr: w, len: 32, write: true },
    ]);
    const c = new DescriptorChain();
    assert.equal(tt.walk(c, 2), undefined);
    assert.equal(c.head, 2);
    assert.equal(c.indirect, true);
    assert.equal(c.descriptorCount, 4, "the ring descriptor and three table entries");
    assert.equal(c.readableLength, 24);
    assert.equal(c.writableLength, 32);
    const out = new Uint8Array(24);
    assert.equal(c.read(out, 0), 24);
    assert.deepEqual(out, req);
    assert.equal(c.write(pattern(32, 7), 0), 32);
    assert.deepEqual(tt.bytes(w, 32), pattern(32, 7));
  });
  await t.step(
    'WRITE on the indirect descriptor is ignored — §2.7.5.3.2 "The device MUST ignore the ' +
      'write-only flag (flags&VIRTQ_DESC_F_WRITE) in the descriptor that refers to an indirect table."',
    () => {
      using tt = new TestTable(4);
      tt.indirect(0, [{ addr: tt.put(pattern(8)), len: 8 }, {
        addr: tt.alloc(8),
        len: 8,
        write: true,
      }], WRITE);
      const c = new DescriptorChain();
      assert.equal(tt.walk(c, 0), undefined);
      assert.equal(c.readableLength, 8);
      assert.equal(c.writableLength, 8);
    },
  );
  await t.step(
    'direct descriptors then an indirect one — §2.7.5.3.2 "The device MUST handle the case of ' +
      "zero or more normal chained descriptors followed by a single descriptor with " +
      'flags&VIRTQ_DESC_F_INDIRECT."',
    () => {
      using tt = new TestTable(4);
      const hdr = pattern(8, 1);
      const body = pattern(8, 9);
      tt.setDesc(0, tt.put(hdr), 8, NEXT, 3);
      const table = tt.indirect(3, [{ addr: tt.put(body), len: 8 }, {
        addr: tt.alloc(16),
        len: 16,
        write: true,
      }]);
      assert.ok(table > 0);
      const c = new DescriptorChain();
      assert.equal(tt.walk(c, 0), undefined);
      assert.equal(c.indirect, true);
      assert.equal(c.descriptorCount, 4);
      assert.equal(c.readableLength, 16);
      assert.equal(c.writableLength, 16);
      const out = new Uint8Array(16);
      c.read(out, 0);
      assert.deepEqual(out, Uint8Array.from([...hdr, ...body]));
    },
  );
});

Deno.test("DescriptorChain.walk() resets everything between chains (one object is reused)", () => {
  using t = new TestTable(8);
  t.indirect(0, [{ addr: t.put(pattern(10)), len: 10 }, {
    addr: t.alloc(10),
    len: 10,
    write: true,
  }]);
  t.chain([5], [{ addr: t.alloc(6), len: 6, write: true }]);
  const c = new DescriptorChain();
  assert.equal(t.walk(c, 0), undefined);
  assert.equal(t.walk(c, 5), undefined);
  assert.equal(c.head, 5);
  assert.equal(c.indirect, false);
  assert.equal(c.descriptorCount, 1);
  assert.equal(c.segmentCount, 1);
  assert.equal(c.readableCount, 0);
  assert.equal(c.readableLength, 0);
  assert.equal(c.writableLength, 6);
});

Deno.test("DescriptorChain.walk() splits a buffer spanning two adjacent regions", () => {
  // Region B starts where A ends in guest-physical space; their user addresses and mappings are
  // unrelated, so the buffer must become one segment per region.
  using t = new TestTable(4, [
    { gpa: 0x10_0000, size: 0x1_0000 },
    { gpa: 0x11_0000, size: 0x1_0000 },
  ]);
  const data = pattern(64, 11);
  const start = 0x11_0000 - 24;
  t.bytes(start, 24).set(data.subarray(0, 24));
  t.bytes(0x11_0000, 40).set(data.subarray(24));
  const w = 0x11_0000 - 8;
  t.chain([0, 1], [{ addr: start, len: 64 }, { addr: 0x10_8000, len: 16, write: true }]);
  const c = new DescriptorChain();
  assert.equal(t.walk(c, 0), undefined);
  assert.equal(c.segmentCount, 3);
  assert.equal(c.readableCount, 2, "one readable buffer, two segments");
  assert.equal(c.readableLength, 64);
  const out = new Uint8Array(64);
  assert.equal(c.read(out, 0), 64);
  assert.deepEqual(out, data);
  const mid = new Uint8Array(10);
  assert.equal(c.read(mid, 20), 10);
  assert.deepEqual(mid, data.subarray(20, 30));

  const iov = iovBuffer(4);
  assert.equal(c.readableIovecs(0, 64, iov), 2);
  assert.deepEqual(iovAt(iov, 0), { base: hostAddressOf(t, start), len: 24 });
  assert.deepEqual(iovAt(iov, 1), { base: hostAddressOf(t, 0x11_0000), len: 40 });

  // A writable buffer across the boundary too.
  t.chain([2], [{ addr: w, len: 16, write: true }]);
  assert.equal(t.walk(c, 2), undefined);
  assert.equal(c.segmentCount, 2);
  assert.equal(c.write(pattern(16, 77), 0), 16);
  assert.deepEqual(Uint8Array.from([...t.bytes(w, 8), ...t.bytes(0x11_0000, 8)]), pattern(16, 77));
});

// ---------------------------------------------------------------------------------------------
// iovecs straight into guest memory.

Deno.test("DescriptorChain.writableIovecs() points into the mapping: preadv lands in the buffers", () => {
  using t = new TestTable(8);
  const w = [t.alloc(5), t.alloc(100), t.alloc(23)];
  const head = t.chain([0, 1, 2, 3], [
    { addr: t.put(pattern(40)), len: 40 },
    { addr: w[0] ?? 0, len: 5, write: true },
    { addr: w[1] ?? 0, len: 100, write: true },
    { addr: w[2] ?? 0, len: 23, write: true },
  ]);
  const c = new DescriptorChain();
  assert.equal(t.walk(c, head), undefined);
  const file = pattern(128, 33);
  const fd = memfdCreate("src", 0);
  try {
    assert.equal(write(fd, file), 128);
    const iov = iovBuffer(8);
    const n = c.writableIovecs(0, 128, iov);
    assert.equal(n, 3);
    assert.deepEqual(iovAt(iov, 0), { base: hostAddressOf(t, w[0] ?? 0), len: 5 });
    assert.deepEqual(iovAt(iov, 1), { base: hostAddressOf(t, w[1] ?? 0), len: 100 });
    assert.deepEqual(iovAt(iov, 2), { base: hostAddressOf(t, w[2] ?? 0), len: 23 });
    assert.equal(preadvRaw(fd, iov, n, 0n), 128);
    assert.deepEqual(t.bytes(w[0] ?? 0, 5), file.subarray(0, 5));
    assert.deepEqual(t.bytes(w[1] ?? 0, 100), file.subarray(5, 105));
    assert.deepEqual(t.bytes(w[2] ?? 0, 23), file.subarray(105));

    // A window: 50 bytes from writable byte 3 (starts in the first segment, ends in the second).
    t.bytes(w[0] ?? 0, 5).fill(0);
    t.bytes(w[1] ?? 0, 100).fill(0);
    const k = c.writableIovecs(3, 50, iov);
    assert.equal(k, 2);
    assert.deepEqual(iovAt(iov, 0), { base: hostAddressOf(t, (w[0] ?? 0) + 3), len: 2 });
    assert.deepEqual(iovAt(iov, 1), { base: hostAddressOf(t, w[1] ?? 0), len: 48 });
    assert.equal(preadvRaw(fd, iov, k, 0n), 50);
    assert.deepEqual(
      t.bytes(w[0] ?? 0, 5),
      Uint8Array.from([0, 0, 0, file[0] ?? -1, file[1] ?? -1]),
    );
    assert.deepEqual(t.bytes(w[1] ?? 0, 48), file.subarray(2, 50));
    assert.equal(t.bytes(w[1] ?? 0, 49)[48], 0);
  } finally {
    close(fd);
  }
});

Deno.test("DescriptorChain.readableIovecs() points into the mapping: pwritev sends the buffers", () => {
  using t = new TestTable(8);
  const all = pattern(70, 5);
  const head = t.chain([0, 1, 2], [
    { addr: t.put(all.subarray(0, 30)), len: 30 },
    { addr: t.put(all.subarray(30)), len: 40 },
    { addr: t.alloc(10), len: 10, write: true },
  ]);
  const c = new DescriptorChain();
  assert.equal(t.walk(c, head), undefined);
  const fd = memfdCreate("dst", 0);
  try {
    const iov = iovBuffer(4);
    const n = c.readableIovecs(20, 30, iov);
    assert.equal(n, 2);
    assert.equal(pwritevRaw(fd, iov, n, 0n), 30);
    const back = new Uint8Array(64);
    assert.equal(read(fd, back), 30);
    assert.deepEqual(back.subarray(0, 30), all.subarray(20, 50));
  } finally {
    close(fd);
  }
});

Deno.test("DescriptorChain iovecs stop at the room in the iovec buffer and at the part's end", () => {
  using t = new TestTable(8);
  const bufs = Array.from({ length: 5 }, () => ({ addr: t.alloc(10), len: 10, write: true }));
  const head = t.chain([0, 1, 2, 3, 4], bufs);
  const c = new DescriptorChain();
  assert.equal(t.walk(c, head), undefined);
  const two = iovBuffer(2);
  assert.equal(c.writableIovecs(0, 50, two), 2, "only two fit");
  assert.deepEqual(iovAt(two, 1), { base: hostAddressOf(t, bufs[1]?.addr ?? 0), len: 10 });
  const many = iovBuffer(16);
  assert.equal(c.writableIovecs(0, 1000, many), 5, "no more than the chain holds");
  assert.equal(c.writableIovecs(50, 10, many), 0, "from the end");
  assert.equal(c.writableIovecs(0, 0, many), 0, "zero length");
  assert.equal(c.readableIovecs(0, 10, many), 0, "no readable part");
});

// ---------------------------------------------------------------------------------------------
// What a driver MUST NOT do (virtio 1.2): each malformed chain is refused with a reason.

interface BadCase {
  /** The rule, quoted from virtio 1.2 with its section. */
  rule: string;
  /** Builds the chain in `t`; returns its head. */
  build: (t: TestTable) => number;
  reason: RegExp;
}

const BAD_CHAINS: readonly BadCase[] = [
  {
    rule: '§2.7.5.3.1 "A driver MUST NOT set both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT ' +
      'in flags."',
    build: (t) => {
      const table = t.alloc(DESCRIPTOR_SIZE);
      t.setDesc(0, t.put(pattern(8)), 8, 0, 0, table);
      t.setDesc(0, table, DESCRIPTOR_SIZE, INDIRECT | NEXT, 1);
      t.chain([1], [{ addr: t.alloc(8), len: 8, write: true }]);
      return 0;
    },
    reason: /INDIRECT descriptor also has NEXT/,
  },
  {
    rule: '§2.7.5.3.1 "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag within an indirect ' +
      'descriptor (ie. only one table per descriptor)."',
    build: (t) => {
      const inner = t.alloc(DESCRIPTOR_SIZE);
      t.setDesc(0, t.put(pattern(8)), 8, 0, 0, inner);
      const outer = t.alloc(2 * DESCRIPTOR_SIZE);
      t.setDesc(0, t.put(pattern(8)), 8, NEXT, 1, outer);
      t.setDesc(1, inner, DESCRIPTOR_SIZE, INDIRECT, 0, outer);
      t.setDesc(2, outer, 2 * DESCRIPTOR_SIZE, INDIRECT);
      return 2;
    },
    reason: /indirect table inside an indirect table/,
  },
  {
    rule: '§2.7.5.3.1 "A driver MUST NOT create a descriptor chain longer than the Queue Size of ' +
      'the device." (size + 1 descriptors in a table of size entries)',
    build: (t) => {
      const idx = Array.from({ length: t.size }, (_, k) => k);
      t.chain(idx, idx.map(() => ({ addr: t.alloc(4), len: 4 })));
      // The last one chains back to the head: descriptor size + 1 is descriptor 0 again.
      t.setDesc(t.size - 1, t.alloc(4), 4, NEXT, 0);
      return 0;
    },
    reason: /longer than 8 descriptors or loops/,
  },
  {
    rule: '§2.7.5.2 "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total; ' +
      'this implies that loops in the descriptor chain are forbidden!" (a descriptor pointing at ' +
      "itself)",
    build: (t) => {
      t.setDesc(4, t.alloc(4), 4, NEXT, 4);
      return 4;
    },
    reason: /loops/,
  },
  {
    rule: "§2.7.5.2 loops are forbidden (a loop inside an indirect table)",
    build: (t) => {
      const table = t.alloc(3 * DESCRIPTOR_SIZE);
      t.setDesc(0, t.put(pattern(4)), 4, NEXT, 1, table);
      t.setDesc(1, t.put(pattern(4)), 4, NEXT, 2, table);
      t.setDesc(2, t.put(pattern(4)), 4, NEXT, 1, table);
      t.setDesc(0, table, 3 * DESCRIPTOR_SIZE, INDIRECT);
      return 0;
    },
    reason: /longer than 3 descriptors or loops/,
  },
  {
    rule: '§2.7.4.2 "The driver MUST place any device-writable descriptor elements after any ' +
      'device-readable descriptor elements." (direct chain)',
    build: (t) =>
      t.chain([0, 1, 2], [
        { addr: t.put(pattern(8)), len: 8 },
        { addr: t.alloc(8), len: 8, write: true },
        { addr: t.put(pattern(8)), len: 8 },
      ]),
    reason: /readable buffer after a writable one/,
  },
  {
    rule: "§2.7.4.2 writable before readable (inside an indirect table)",
    build: (t) => {
      t.indirect(0, [{ addr: t.alloc(8), len: 8, write: true }, {
        addr: t.put(pattern(8)),
        len: 8,
      }]);
      return 0;
    },
    reason: /readable buffer after a writable one/,
  },
  {
    rule: '§2.7.5 "The number of descriptors in the table is defined by the queue size for this ' +
      'virtqueue" (next index out of range)',
    build: (t) => {
      t.setDesc(0, t.put(pattern(8)), 8, NEXT, t.size);
      return 0;
    },
    reason: /descriptor index 8 is out of range \(table of 8\)/,
  },
  {
    rule: "§2.7.5 the head index itself out of range",
    build: (t) => t.size + 3,
    reason: /descriptor index 11 is out of range/,
  },
  {
    rule: '§2.7.5.3 "struct virtq_desc desc[len / 16]" (next index past the indirect table)',
    build: (t) => {
      const table = t.alloc(2 * DESCRIPTOR_SIZE);
      t.setDesc(0, t.put(pattern(4)), 4, NEXT, 1, table);
      t.setDesc(1, t.put(pattern(4)), 4, NEXT, 2, table);
      t.setDesc(0, table, 2 * DESCRIPTOR_SIZE, INDIRECT);
      return 0;
    },
    reason: /descriptor index 2 is out of range \(table of 2\)/,
  },
  {
    rule: '§2.7.5 "addr is a physical address" (a buffer in no region of guest memory)',
    build: (t) => t.chain([0], [{ addr: 0x4000_0000, len: 8 }]),
    reason: /buffer 0x40000000\+8 is outside guest memory/,
  },
  {
    rule: "§2.7.5 a buffer running past the end of guest memory",
    build: (t) => t.chain([0], [{ addr: GPA0 + REGION_SIZE - 4, len: 8, write: true }]),
    reason: /outside guest memory at 0x200000/,
  },
  {
    rule: "§2.7.5 a buffer address beyond 2^53 (high bits set)",
    build: (t) => t.chain([0], [{ addr: 0xffff_ffff_0000_0000, len: 8 }]),
    reason: /outside guest memory/,
  },
  {
    rule: "§2.7.5 a buffer whose low 32 address bits fall inside the region of the buffer " +
      "before it, and whose high bits do not (the walk's fast path)",
    build: (t) => {
      const first = t.put(pattern(8));
      return t.chain([0, 1], [{ addr: first, len: 8 }, { addr: 0x1_0000_0000 + first, len: 8 }]);
    },
    reason: /buffer 0x1001[0-9a-f]{5}\+8 is outside guest memory/,
  },
  {
    rule: '§2.7.5.3 "addr and len refer to the indirect table address and length in bytes" ' +
      "(indirect length 0)",
    build: (t) => {
      t.setDesc(0, t.alloc(DESCRIPTOR_SIZE), 0, INDIRECT);
      return 0;
    },
    reason: /indirect table length 0 is not a positive multiple of 16/,
  },
  {
    rule: '§2.7.5.3 "struct virtq_desc desc[len / 16]" (indirect length not a multiple of 16)',
    build: (t) => {
      t.setDesc(0, t.alloc(2 * DESCRIPTOR_SIZE), 24, INDIRECT);
      return 0;
    },
    reason: /indirect table length 24 is not a positive multiple of 16/,
  },
  {
    rule: "§2.7.5.3 an indirect table outside guest memory",
    build: (t) => {
      t.setDesc(0, 0x4000_0000, 2 * DESCRIPTOR_SIZE, INDIRECT);
      return 0;
    },
    reason: /indirect table 0x40000000\+32 is outside guest memory/,
  },
  {
    rule: "§2.7.5.3 an indirect table running past the end of guest memory",
    build: (t) => {
      t.setDesc(0, GPA0 + REGION_SIZE - DESCRIPTOR_SIZE, 2 * DESCRIPTOR_SIZE, INDIRECT);
      return 0;
    },
    reason: /indirect table .* is outside guest memory/,
  },
];

Deno.test("DescriptorChain.walk() refuses every chain a driver MUST NOT make", async (t) => {
  for (const bad of BAD_CHAINS) {
    await t.step(bad.rule, () => {
      using tt = new TestTable(8);
      const head = bad.build(tt);
      const c = new DescriptorChain();
      const problem = tt.walk(c, head);
      assert.ok(problem !== undefined, "refused");
      assert.match(problem, bad.reason);
    });
  }
});

Deno.test("DescriptorChain.walk() takes a chain of exactly the queue size", () => {
  using t = new TestTable(8);
  const idx = Array.from({ length: 8 }, (_, k) => (k * 3) % 8);
  const head = t.chain(idx, idx.map((_, k) => ({ addr: t.alloc(4), len: 4, write: k >= 4 })));
  const c = new DescriptorChain();
  assert.equal(t.walk(c, head), undefined);
  assert.equal(c.descriptorCount, 8);
  assert.equal(c.readableLength, 16);
  assert.equal(c.writableLength, 16);
});
