import assert from "node:assert/strict";
import {
  close,
  eventfd,
  IOVEC,
  isOpen,
  memfdCreate,
  preadvRaw,
  setU64,
  stableBytes,
  write,
} from "../ffi/mod.ts";
import {
  GuestMemory,
  MAX_GUEST_ADDRESS,
  MemoryRegion,
  type RegionDescription,
  regionProblem,
} from "./guest_memory.ts";

const PAGE = 4096;
const UVA = 0x7f12_3450_0000;

/** A region description with distinct guest-physical and user addresses. */
function desc(gpa: number, size: number, uva = UVA + gpa, mmapOffset = 0): RegionDescription {
  return { guestPhysAddr: gpa, memorySize: size, userspaceAddr: uva, mmapOffset };
}

/** A memfd of `size` bytes whose byte `i` is `(i * 7 + seed) & 0xff`. */
function patternedMemfd(size: number, seed = 0): number {
  const fd = memfdCreate("guest_memory_test", size);
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 7 + seed) & 0xff;
  assert.equal(write(fd, bytes), size);
  return fd;
}

function withMemory(fn: (mem: GuestMemory) => void): void {
  const mem = new GuestMemory();
  try {
    fn(mem);
  } finally {
    mem.clear();
  }
}

Deno.test("GuestMemory.add() maps the fd and closes it", () => {
  withMemory((mem) => {
    const fd = patternedMemfd(2 * PAGE);
    const region = mem.add(desc(0x10_0000, 2 * PAGE), fd);
    assert.equal(isOpen(fd), false, "add() closes the fd it is given");
    assert.ok(region instanceof MemoryRegion);
    assert.equal(mem.regions.length, 1);
    assert.equal(mem.regions[0], region);
    assert.equal(region.guestPhysAddr, 0x10_0000);
    assert.equal(region.memorySize, 2 * PAGE);
    assert.equal(region.userspaceAddr, UVA + 0x10_0000);
    assert.equal(region.bytes.length, 2 * PAGE);
    // The mapping is the file's contents, and stays usable after the fd is gone.
    assert.equal(region.bytes[0], 0);
    assert.equal(region.bytes[100], (100 * 7) & 0xff);
    region.bytes[5] = 0xab;
    assert.equal(region.view.getUint8(region.base + 5), 0xab);
  });
});

Deno.test("GuestMemory.add() honours mmapOffset: bytes[0] is the fd's byte mmapOffset", () => {
  withMemory((mem) => {
    const fd = patternedMemfd(3 * PAGE, 3);
    const region = mem.add(desc(0x20_0000, PAGE, UVA, 2 * PAGE), fd);
    // Only the region's pages are mapped (a cache window's range may sit far into a file).
    assert.equal(region.base, 0);
    assert.equal(region.buffer.byteLength, PAGE);
    assert.equal(region.bytes.length, PAGE);
    for (const i of [0, 1, 17, PAGE - 1]) {
      assert.equal(region.bytes[i], ((2 * PAGE + i) * 7 + 3) & 0xff, `byte ${i}`);
      assert.equal(region.view.getUint8(region.base + i), region.bytes[i]);
    }
    // u16 covers the whole buffer, indexed from the mapping's start.
    assert.equal(region.u16[region.base / 2], region.view.getUint16(region.base, true));
  });
});

Deno.test("MemoryRegion.hostAddress points at bytes[0] in this process (preadv lands there)", () => {
  withMemory((mem) => {
    const region = mem.add(desc(0x10_0000, PAGE, UVA, PAGE), memfdCreate("g", 2 * PAGE));
    const src = patternedMemfd(64, 9);
    try {
      const iov = stableBytes(IOVEC.size);
      const v = new DataView(iov.buffer);
      setU64(v, IOVEC.base, region.hostAddress + 100);
      setU64(v, IOVEC.len, 64);
      assert.equal(preadvRaw(src, iov, 1, 0n), 64);
      for (let i = 0; i < 64; i++) assert.equal(region.bytes[100 + i], (i * 7 + 9) & 0xff);
      assert.equal(region.bytes[99], 0);
      assert.equal(region.bytes[164], 0);
    } finally {
      close(src);
    }
  });
});

Deno.test("GuestMemory.add() closes the fd when it refuses the region", async (t) => {
  await t.step("refused by regionProblem", () => {
    withMemory((mem) => {
      const fd = memfdCreate("g", PAGE);
      assert.throws(() => mem.add(desc(0, 0), fd), (e: unknown) => {
        assert.ok(e instanceof RangeError);
        assert.match(e.message, /size is 0/);
        return true;
      });
      assert.equal(isOpen(fd), false);
      assert.equal(mem.regions.length, 0);
    });
  });
  await t.step("mmap fails (an eventfd cannot be mapped)", () => {
    withMemory((mem) => {
      const fd = eventfd();
      assert.throws(() => mem.add(desc(0, PAGE), fd));
      assert.equal(isOpen(fd), false);
      assert.equal(mem.regions.length, 0);
    });
  });
  await t.step("overlap with a region already present", () => {
    withMemory((mem) => {
      mem.add(desc(0x10_0000, 2 * PAGE), memfdCreate("a", 2 * PAGE));
      const fd = memfdCreate("b", PAGE);
      assert.throws(() => mem.add(desc(0x10_1000, PAGE, 0x1000), fd), /overlaps/);
      assert.equal(isOpen(fd), false);
      assert.equal(mem.regions.length, 1);
    });
  });
});

Deno.test("GuestMemory.remove() unmaps the region matching guest address and size", () => {
  withMemory((mem) => {
    mem.add(desc(0x10_0000, PAGE), memfdCreate("a", PAGE));
    const b = mem.add(desc(0x20_0000, 2 * PAGE), memfdCreate("b", 2 * PAGE));
    assert.equal(mem.remove({ guestPhysAddr: 0x10_0000, memorySize: 2 * PAGE }), false, "size");
    assert.equal(mem.remove({ guestPhysAddr: 0x30_0000, memorySize: PAGE }), false, "address");
    assert.equal(mem.regions.length, 2);
    assert.equal(mem.remove({ guestPhysAddr: 0x10_0000, memorySize: PAGE }), true);
    assert.deepEqual([...mem.regions], [b]);
    assert.equal(mem.regionOfGpa(0x10_0000), undefined);
    assert.equal(mem.remove({ guestPhysAddr: 0x10_0000, memorySize: PAGE }), false, "twice");
    // The freed range may be added again.
    mem.add(desc(0x10_0000, PAGE), memfdCreate("c", PAGE));
    assert.equal(mem.regions.length, 2);
  });
});

Deno.test("GuestMemory.clear() unmaps every region", () => {
  const mem = new GuestMemory();
  mem.add(desc(0x10_0000, PAGE), memfdCreate("a", PAGE));
  mem.add(desc(0x20_0000, PAGE), memfdCreate("b", PAGE));
  mem.clear();
  assert.equal(mem.regions.length, 0);
  assert.equal(mem.regionOfGpa(0x10_0000), undefined);
  assert.equal(mem.translateUva(UVA + 0x10_0000, 1), undefined);
  mem.clear();
  assert.equal(mem.regions.length, 0);
});

Deno.test("GuestMemory.regionOfGpa() finds the region holding an address, ends exclusive", () => {
  withMemory((mem) => {
    const a = mem.add(desc(0x10_0000, PAGE), memfdCreate("a", PAGE));
    const b = mem.add(desc(0x10_1000, 2 * PAGE), memfdCreate("b", 2 * PAGE));
    assert.equal(mem.regionOfGpa(0x10_0000), a);
    assert.equal(mem.regionOfGpa(0x10_0fff), a);
    assert.equal(mem.regionOfGpa(0x10_1000), b, "adjacent region starts right after");
    assert.equal(mem.regionOfGpa(0x10_2fff), b);
    assert.equal(mem.regionOfGpa(0x10_3000), undefined, "one past the end");
    assert.equal(mem.regionOfGpa(0x0f_ffff), undefined, "one before the start");
    assert.equal(mem.regionOfGpa(0), undefined);
    assert.equal(mem.regionOfGpa(UVA + 0x10_0000), undefined, "user addresses are not GPAs");
  });
});

Deno.test("GuestMemory.translateUva() maps a front-end address range inside one region", () => {
  withMemory((mem) => {
    const a = mem.add(desc(0x10_0000, 2 * PAGE, 0x7f00_0000_0000), memfdCreate("a", 2 * PAGE));
    const b = mem.add(desc(0x10_2000, PAGE, 0x7f00_0000_2000), memfdCreate("b", PAGE));
    assert.deepEqual(mem.translateUva(0x7f00_0000_0000, 16), { region: a, offset: 0 });
    assert.deepEqual(mem.translateUva(0x7f00_0000_0010, 2 * PAGE - 16), {
      region: a,
      offset: 16,
    });
    assert.deepEqual(mem.translateUva(0x7f00_0000_2ff0, 16), { region: b, offset: PAGE - 16 });
    assert.equal(mem.translateUva(0x7f00_0000_1ff0, 17), undefined, "runs past a's end");
    assert.equal(
      mem.translateUva(0x7f00_0000_1ff0, 32),
      undefined,
      "spans two regions even though they are adjacent",
    );
    assert.equal(mem.translateUva(0x7f00_0000_3000, 1), undefined, "past b");
    assert.equal(mem.translateUva(0x6fff_ffff_fff0, 32), undefined, "before a");
    assert.equal(mem.translateUva(0x10_0000, 16), undefined, "GPAs are not user addresses");
  });
});

Deno.test("regionProblem() refuses a size of 0", () => {
  assert.match(regionProblem(desc(0x1000, 0), []) ?? "", /size is 0/);
  assert.equal(regionProblem(desc(0x1000, 1), []), undefined);
});

Deno.test("regionProblem() refuses ranges that wrap or pass 2^53", async (t) => {
  const top = MAX_GUEST_ADDRESS;
  await t.step("guest address", () => {
    assert.equal(regionProblem(desc(top - PAGE, PAGE, 0), []), undefined, "ends exactly at 2^53");
    assert.match(regionProblem(desc(top - PAGE, 2 * PAGE, 0), []) ?? "", /guest address/);
    // A 64-bit address near 2^64 (as a front end would wrap) is far beyond 2^53.
    assert.match(regionProblem(desc(2 ** 64 - PAGE, 2 * PAGE, 0), []) ?? "", /guest address/);
  });
  await t.step("user address", () => {
    assert.equal(regionProblem(desc(0, PAGE, top - PAGE), []), undefined);
    assert.match(regionProblem(desc(0, 2 * PAGE, top - PAGE), []) ?? "", /user address/);
  });
  await t.step("mmap offset", () => {
    assert.match(regionProblem(desc(0, 2 * PAGE, 0, top - PAGE), []) ?? "", /mmap offset/);
  });
});

Deno.test("regionProblem() refuses overlaps in guest-physical space", () => {
  const existing = [desc(0x10_0000, 0x2000, 0x7f00_0000_0000)];
  const at = (gpa: number, size: number): string | undefined =>
    regionProblem(desc(gpa, size, 0x5000_0000), existing);
  assert.match(at(0x10_0000, 0x2000) ?? "", /guest address range overlaps.*0x100000/, "same");
  assert.match(at(0x10_1000, 0x2000) ?? "", /guest address/, "tail");
  assert.match(at(0x0f_f000, 0x2000) ?? "", /guest address/, "head");
  assert.match(at(0x0f_0000, 0x10_0000) ?? "", /guest address/, "covers it");
  assert.match(at(0x10_0800, 0x100) ?? "", /guest address/, "inside it");
  assert.equal(at(0x10_2000, 0x1000), undefined, "adjacent after");
  assert.equal(at(0x0f_f000, 0x1000), undefined, "adjacent before");
});

Deno.test("regionProblem() refuses overlaps in front-end virtual space", () => {
  const existing = [desc(0x10_0000, 0x2000, 0x7f00_0000_0000)];
  const at = (uva: number, size: number): string | undefined =>
    regionProblem(desc(0x40_0000, size, uva), existing);
  assert.match(at(0x7f00_0000_1000, 0x1000) ?? "", /user address range overlaps/);
  assert.match(at(0x7eff_ffff_f000, 0x2000) ?? "", /user address/);
  assert.equal(at(0x7f00_0000_2000, 0x1000), undefined, "adjacent after");
  assert.equal(at(0x7eff_ffff_f000, 0x1000), undefined, "adjacent before");
});

Deno.test("regionProblem() checks against every existing region", () => {
  const existing = [desc(0x10_0000, PAGE, 0x1000_0000), desc(0x20_0000, PAGE, 0x2000_0000)];
  assert.equal(regionProblem(desc(0x30_0000, PAGE, 0x3000_0000), existing), undefined);
  assert.match(regionProblem(desc(0x20_0000, PAGE, 0x3000_0000), existing) ?? "", /0x200000/);
  assert.match(regionProblem(desc(0x30_0000, PAGE, 0x2000_0000), existing) ?? "", /0x20000000/);
});

Deno.test("GuestMemory.remove() takes the region out of the table at once and unmaps it at releaseRetired()", () => {
  withMemory((mem) => {
    const region = mem.add(desc(0x40_0000, PAGE), patternedMemfd(PAGE, 5));
    const view = region.bytes;
    assert.ok(mem.remove({ guestPhysAddr: 0x40_0000, memorySize: PAGE }));
    assert.equal(mem.regionOfGpa(0x40_0000), undefined, "no address resolves into it");
    assert.equal(mem.retired, 1);
    // A view taken before is still backed (a request in flight may hold one).
    assert.equal(view[1], (1 * 7 + 5) & 0xff);
    view[0] = 1;
    mem.releaseRetired();
    assert.equal(mem.retired, 0);
    assert.equal(mem.remove({ guestPhysAddr: 0x40_0000, memorySize: PAGE }), false);
  });
});
