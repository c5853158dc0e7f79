/**
 * Spec: DAX — the design's second idea, at the wire. The paragraphs, quoted:
 *
 * > - For data access inside guest, mmap portion of file in QEMU address space
 * > and guest accesses this memory using dax. That way guest page cache is
 * > bypassed and there is only one copy of data (on host). This will also
 * > enable mmap(MAP_SHARED) between guests.
 *
 * > How virtio-fs differs from existing approaches
 * >
 * > The unique idea behind virtio-fs is to take advantage of the co-location of
 * > the virtual machine and hypervisor to avoid communication (vmexits).
 * >
 * > DAX allows file contents to be accessed without communication with the
 * > hypervisor. [...]
 *
 * - DAX-1: FUSE_SETUPMAPPING maps the file range into the front end's cache window (vhost-user
 *   SHMEM_MAP); the window holds the file's bytes.
 * - DAX-2: loads and stores through the window read and change the file.
 * - DAX-3: a host write(2) is seen in the window with no message; a store is seen by a host
 *   read(2) at once.
 * - DAX-4: two front ends on two daemons over the same directory map the same range and see
 *   each other's stores.
 * - DAX-5: reading 64 MiB through the window sends no request (counted by the daemon).
 * - DAX-6: FUSE_REMOVEMAPPING unmaps exactly what it names; every bad range, flag and handle
 *   gets an errno, and nothing bad reaches the front end.
 * - DAX-7 (wire half): without a window, SETUPMAPPING is an errno; with `--tag` and
 *   `--cache-size`, a front end without a window (QEMU 7.2's vhost-user-fs-pci) is served as
 *   before. The guest half (QEMU 7.2's and 11.1's vhost-user-fs-pci realize and mount) is in
 *   `dax_guest_test.ts`.
 * - WB-DAX-1 (the DAX half): writeback "has no effect on ... writes going through the DAX
 *   mechanism": with it on or off, a store through the window is in the host file at once.
 * - DAX-CLEANUP: FORGET of a mapped inode, a guest reset, a front-end disconnect and SIGTERM
 *   leave no mapping and no memory slot behind.
 *
 * The front end is our driver's (`src/driver/`) playing QEMU 11.1's window (`cacheWindow`): a
 * PROT_NONE reservation where SHMEM_MAP maps the descriptor MAP_FIXED|MAP_SHARED, refusing what
 * QEMU refuses (past the end of the file, O_RDONLY descriptors, overlaps), and sending
 * ADD_MEM_REG / REM_MEM_REG with NEED_REPLY after each map and unmap, as QEMU does.
 *
 * Against C and Rust virtiofsd (`DAEMONS`), DAX-REF records what they answer to SETUPMAPPING and
 * REMOVEMAPPING: neither offers a window (`spec/expectations/dax.json`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { pattern } from "./_driver/pattern.ts";
import { type DaemonHandle, daemonsUnderTest, startDaemon } from "./_driver/daemon.ts";
import { type FrontendOptions, VhostUserFrontend } from "../src/driver/frontend.ts";
import { FUSE_ROOT_ID, FuseClient, FuseError, O_RDWR } from "../src/driver/fuse_client.ts";
import * as A from "../src/wire/fuse.ts";
import { Errno } from "../src/ffi/errno.ts";
import { RENAME_EXCHANGE } from "../src/ffi/constants.ts";

const MiB = 1 << 20;
const WINDOW = 64 * MiB;
const RANGE = 2 * MiB;
const RW = A.FUSE_SETUPMAPPING_FLAG_READ | A.FUSE_SETUPMAPPING_FLAG_WRITE;
const R = A.FUSE_SETUPMAPPING_FLAG_READ;
const FE: FrontendOptions = {
  queueSize: 256,
  timeoutMs: 10_000,
  connectTimeoutMs: 30_000,
  cacheWindow: true,
};

/** A share with `data` (8 MiB of pattern), `big` (64 MiB), `small` (20 bytes), a directory. */
function makeShare(): { dir: string; data: Uint8Array } {
  const dir = Deno.makeTempDirSync({ prefix: "dax-spec-" });
  const data = pattern(8 * MiB, 1);
  Deno.writeFileSync(join(dir, "data"), data);
  Deno.writeFileSync(join(dir, "big"), pattern(64 * MiB, 2));
  Deno.writeFileSync(join(dir, "small"), new TextEncoder().encode("twenty bytes of text"));
  Deno.mkdirSync(join(dir, "sub"));
  return { dir, data };
}

/** Our daemon over `dir` with a `WINDOW` window (and `extra` flags). */
function startOurs(dir: string, extra: string[] = []): Promise<DaemonHandle> {
  return startDaemon("ours", {
    sharedDir: dir,
    extraArgs: ["--tag", "daxfs", "--cache-size", `${WINDOW / MiB}M`, ...extra],
  });
}

/** A connected front end with a window, and an initialized client. */
async function session(d: DaemonHandle, opts: FrontendOptions = FE) {
  const fe = await VhostUserFrontend.connect(d.socketPath, opts);
  const client = new FuseClient(fe);
  client.init({ flags: A.FUSE_MAP_ALIGNMENT | 0x0000000b_7bfffffbn });
  return { fe, client };
}

function errnoOf(f: () => unknown): number {
  try {
    f();
  } catch (e) {
    if (e instanceof FuseError) return e.errno;
    throw e;
  }
  return 0;
}

/** The daemon's "served N chains" count, from its exit log. */
function servedChains(d: DaemonHandle): number {
  const m = /served (\d+) chains/.exec(d.stderrText());
  assert.ok(m !== null, `the daemon logged its chains:\n${d.stderrText()}`);
  return Number(m[1]);
}

/**
 * Stops the daemon while servicing the front end's back-end channel (a stopping daemon unmaps
 * the window, and the driver answers only while it is called).
 */
async function stopServicing(d: DaemonHandle, fe: VhostUserFrontend): Promise<void> {
  let done = false;
  const stopped = d.stop().then(() => {
    done = true;
  });
  while (!done) {
    if (!fe.peerClosed()) fe.serviceBackendChannel(20);
    await new Promise((r) => setTimeout(r, 5));
  }
  await stopped;
}

Deno.test("DAX-1 SETUPMAPPING maps the file range into the front end's window, which then holds the file's bytes", async () => {
  const { dir, data } = makeShare();
  const d = await startOurs(dir);
  const { fe, client } = await session(d, { ...FE, config: true });
  try {
    assert.equal(fe.window.size, WINDOW, "GET_SHMEM_CONFIG: region 0 is the window");
    assert.deepEqual(fe.fsConfig(), { tag: "daxfs", numRequestQueues: 2 }, "GET_CONFIG");
    assert.equal(client.initOut?.mapAlignment, 12, "INIT: page-aligned mappings");
    const node = client.lookup(FUSE_ROOT_ID, "data").nodeid;
    client.setupmapping(node, { foffset: 0, len: RANGE, flags: R, moffset: 0 });
    client.setupmapping(node, { foffset: 6 * MiB, len: RANGE, flags: RW, moffset: 10 * MiB });
    assert.deepEqual(
      fe.window.mappings().map((m) => [m.shmOffset / MiB, m.len / MiB, m.fdOffset / MiB]),
      [[0, 2, 0], [10, 2, 6]],
      "SHMEM_MAP of exactly what was asked",
    );
    assert.deepEqual(fe.window.read(0, RANGE), data.subarray(0, RANGE));
    assert.deepEqual(fe.window.read(10 * MiB, RANGE), data.subarray(6 * MiB, 8 * MiB));
    assert.equal(fe.window.isMapped(2 * MiB, 4096), false, "nothing else is mapped");
  } finally {
    fe.close();
    await d.stop();
  }
});

Deno.test("DAX-2 loads and stores through the window read and change the file", async () => {
  const { dir, data } = makeShare();
  const d = await startOurs(dir);
  const { fe, client } = await session(d);
  try {
    const node = client.lookup(FUSE_ROOT_ID, "data").nodeid;
    client.setupmapping(node, { foffset: 2 * MiB, len: RANGE, flags: RW, moffset: 4 * MiB });
    const at = 4 * MiB + 12345;
    assert.equal(fe.window.read(at, 1)[0], data[2 * MiB + 12345], "a load");
    const text = new TextEncoder().encode("stored through the window");
    fe.window.write(at, text);
    const host = Deno.readFileSync(join(dir, "data"));
    assert.deepEqual(host.subarray(2 * MiB + 12345, 2 * MiB + 12345 + text.length), text);
    // FUSE_READ through the daemon sees the store too (one copy of the data).
    const fh = client.open(node, O_RDWR).fh;
    assert.deepEqual(client.read(node, fh, 2 * MiB + 12345, text.length), text);
  } finally {
    fe.close();
    await d.stop();
  }
});

Deno.test("DAX-3 a host write(2) is seen in the window with no message; a store is seen by a host read(2) at once", async () => {
  const { dir } = makeShare();
  const d = await startOurs(dir);
  const { fe, client } = await session(d);
  try {
    const node = client.lookup(FUSE_ROOT_ID, "data").nodeid;
    client.setupmapping(node, { foffset: 0, len: RANGE, flags: RW, moffset: 0 });
    const q = fe.queue(1);
    const published = q.availIdx;
    const f = Deno.openSync(join(dir, "data"), { read: true, write: true });
    try {
      const host = new TextEncoder().encode("written on the host");
      f.seekSync(777, Deno.SeekMode.Start);
      f.writeSync(host);
      assert.deepEqual(fe.window.read(777, host.length), host, "the host's write, in the window");
      const store = new TextEncoder().encode("stored in the window");
      fe.window.write(9000, store);
      const back = new Uint8Array(store.length);
      f.seekSync(9000, Deno.SeekMode.Start);
      assert.equal(f.readSync(back), store.length);
      assert.deepEqual(back, store, "the store, in the host's read(2)");
    } finally {
      f.close();
    }
    assert.equal(q.availIdx, published, "no request was sent meanwhile");
  } finally {
    fe.close();
    await d.stop();
  }
});

Deno.test("DAX-4 two front ends on two daemons over one directory map the same range and see each other's stores", async () => {
  const { dir } = makeShare();
  const d1 = await startOurs(dir);
  const d2 = await startOurs(dir);
  const a = await session(d1);
  const b = await session(d2);
  try {
    for (const s of [a, b]) {
      const node = s.client.lookup(FUSE_ROOT_ID, "data").nodeid;
      s.client.setupmapping(node, { foffset: 4 * MiB, len: RANGE, flags: RW, moffset: 8 * MiB });
    }
    const one = new TextEncoder().encode("from guest one");
    a.fe.window.write(8 * MiB + 100, one);
    assert.deepEqual(b.fe.window.read(8 * MiB + 100, one.length), one);
    const two = new TextEncoder().encode("and guest two");
    b.fe.window.write(8 * MiB + 5000, two);
    assert.deepEqual(a.fe.window.read(8 * MiB + 5000, two.length), two);
  } finally {
    a.fe.close();
    b.fe.close();
    await d1.stop();
    await d2.stop();
  }
});

Deno.test("DAX-5 reading 64 MiB through the window sends no request; FUSE_READ of the same bytes sends 64", async () => {
  const { dir } = makeShare();
  const big = Deno.readFileSync(join(dir, "big"));
  const d = await startOurs(dir);
  const { fe, client } = await session(d);
  let sent = 0;
  try {
    const node = client.lookup(FUSE_ROOT_ID, "big").nodeid;
    for (let off = 0; off < 64 * MiB; off += RANGE) {
      client.setupmapping(node, { foffset: off, len: RANGE, flags: R, moffset: off });
    }
    const q = fe.queue(1);
    const before = q.availIdx;
    assert.deepEqual(fe.window.read(0, 64 * MiB), big, "all 64 MiB, right");
    assert.equal(q.availIdx, before, "no chain published while reading the window");
    const fh = client.open(node, 0).fh;
    const through = client.readAll(node, fh, 0, 64 * MiB);
    assert.deepEqual(through, big);
    sent = q.availIdx - before;
    assert.equal(sent, 1 + 64, "OPEN and 64 READs of 1 MiB");
    // Every chain the daemon saw is one this front end sent: none for the window reads.
    const total = fe.queue(0).availIdx + q.availIdx;
    fe.close();
    await d.stop();
    assert.equal(servedChains(d), total);
  } finally {
    fe.close();
    await d.stop();
  }
});

Deno.test("DAX-6 REMOVEMAPPING unmaps exactly what it names; an overlapping SETUPMAPPING splits what it covers", async () => {
  const { dir, data } = makeShare();
  const d = await startOurs(dir);
  const { fe, client } = await session(d);
  try {
    const node = client.lookup(FUSE_ROOT_ID, "data").nodeid;
    for (const off of [0, 2, 4]) {
      client.setupmapping(node, { foffset: off * MiB, len: RANGE, flags: RW, moffset: off * MiB });
    }
    client.removemapping([{ moffset: 2 * MiB, len: RANGE }]);
    assert.deepEqual(fe.window.mappings().map((m) => m.shmOffset / MiB), [0, 4]);
    assert.equal(fe.window.isMapped(2 * MiB, 4096), false);
    assert.deepEqual(fe.window.read(4 * MiB, RANGE), data.subarray(4 * MiB, 6 * MiB));
    // One 8 MiB mapping, then 2 MiB of other file bytes in its middle: split in three.
    client.removemapping([{ moffset: 0, len: RANGE }, { moffset: 4 * MiB, len: RANGE }]);
    client.setupmapping(node, { foffset: 0, len: 8 * MiB, flags: RW, moffset: 16 * MiB });
    client.setupmapping(node, { foffset: 0, len: RANGE, flags: R, moffset: 20 * MiB });
    assert.deepEqual(
      fe.window.mappings().map((m) => [m.shmOffset / MiB, m.len / MiB, m.fdOffset / MiB]),
      [[16, 4, 0], [20, 2, 0], [22, 2, 6]],
    );
    assert.deepEqual(fe.window.read(16 * MiB, 4 * MiB), data.subarray(0, 4 * MiB));
    assert.deepEqual(fe.window.read(20 * MiB, RANGE), data.subarray(0, RANGE));
    assert.deepEqual(fe.window.read(22 * MiB, RANGE), data.subarray(6 * MiB, 8 * MiB));
    // A removal naming unmapped space is no error, and removes only what it names.
    client.removemapping([{ moffset: 21 * MiB, len: 4 * MiB }]);
    assert.deepEqual(
      fe.window.mappings().map((m) => [m.shmOffset / MiB, m.len / MiB, m.fdOffset / MiB]),
      [[16, 4, 0], [20, 1, 0]],
    );
  } finally {
    fe.close();
    await d.stop();
  }
});

Deno.test("DAX-6 every bad range, flag, handle and file gets an errno; nothing bad reaches the front end", async () => {
  const { dir } = makeShare();
  // A running executable on the share: it cannot be opened for writing (ETXTBSY).
  Deno.copyFileSync("/bin/sleep", join(dir, "sleeper"));
  Deno.chmodSync(join(dir, "sleeper"), 0o755);
  const sleeper = new Deno.Command(join(dir, "sleeper"), { args: ["60"] }).spawn();
  const d = await startOurs(dir);
  const { fe, client } = await session(d);
  try {
    const data = client.lookup(FUSE_ROOT_ID, "data").nodeid;
    const small = client.lookup(FUSE_ROOT_ID, "small").nodeid;
    const sub = client.lookup(FUSE_ROOT_ID, "sub").nodeid;
    const running = client.lookup(FUSE_ROOT_ID, "sleeper").nodeid;
    const setup = (node: bigint, a: Parameters<typeof FuseClient.setupmappingIn>[0]) =>
      errnoOf(() => client.setupmapping(node, a));
    const ok = { foffset: 0, len: RANGE, flags: RW, moffset: 0 };
    const cases: [string, number, number][] = [
      ["no flag", setup(data, { ...ok, flags: 0n }), Errno.EINVAL],
      ["an unknown flag", setup(data, { ...ok, flags: RW | 4n }), Errno.EINVAL],
      ["length 0", setup(data, { ...ok, len: 0 }), Errno.EINVAL],
      ["unaligned length", setup(data, { ...ok, len: 1000 }), Errno.EINVAL],
      ["unaligned file offset", setup(data, { ...ok, foffset: 512 }), Errno.EINVAL],
      ["unaligned window offset", setup(data, { ...ok, moffset: 2048 }), Errno.EINVAL],
      ["past the window", setup(data, { ...ok, moffset: WINDOW }), Errno.EINVAL],
      ["across the window's end", setup(data, { ...ok, moffset: WINDOW - MiB }), Errno.EINVAL],
      [
        "a range that wraps around",
        setup(data, { ...ok, moffset: 0xffff_ffff_ffe0_0000n, len: 0x40_0000 }),
        Errno.EINVAL,
      ],
      ["a file offset past 2^53", setup(data, { ...ok, foffset: 1n << 60n }), Errno.EINVAL],
      ["past the end of the file", setup(data, { ...ok, foffset: 8 * MiB }), Errno.EIO],
      ["a 20-byte file (QEMU would extend it)", setup(small, ok), Errno.EIO],
      ["a directory", setup(sub, ok), Errno.EISDIR],
      ["an unknown nodeid", setup(123456789n, ok), Errno.ENOENT],
      ["a handle that is not open", setup(data, { ...ok, fh: 999n }), Errno.EBADF],
      ["a running executable", setup(running, ok), Errno.ETXTBSY],
    ];
    const remove = (arg: Uint8Array) =>
      client.request(A.FUSE_REMOVEMAPPING, [arg], [], { nodeid: FUSE_ROOT_ID }).error;
    const rm = FuseClient.removemappingIn;
    const removals: [string, number][] = [
      ["count 0", remove(rm([], 0))],
      ["count over 256", remove(rm([{ moffset: 0, len: RANGE }], 257))],
      ["count over the ranges sent", remove(rm([{ moffset: 0, len: RANGE }], 2))],
      ["an unaligned range", remove(rm([{ moffset: 100, len: RANGE }]))],
      ["an empty range", remove(rm([{ moffset: 0, len: 0 }]))],
      ["past the window", remove(rm([{ moffset: WINDOW, len: RANGE }]))],
      ["wrapping", remove(rm([{ moffset: 0xffff_ffff_ffff_f000n, len: 0x2000 }]))],
      [
        "ranges overlapping each other",
        remove(rm([{ moffset: 0, len: 2 * RANGE }, { moffset: RANGE, len: RANGE }])),
      ],
    ];
    for (const [what, got, want] of cases) assert.equal(got, want, `SETUPMAPPING: ${what}`);
    for (const [what, got] of removals) assert.equal(got, -Errno.EINVAL, `REMOVEMAPPING: ${what}`);
    assert.deepEqual(fe.windowStats, { maps: 0, unmaps: 0, dropped: 0, refused: 0 });
    // And the daemon serves on: a good mapping still works.
    client.setupmapping(data, ok);
    assert.equal(fe.window.mappings().length, 1);
  } finally {
    sleeper.kill();
    await sleeper.status;
    fe.close();
    await d.stop();
  }
});

Deno.test("DAX-6 a --readonly share never maps (QEMU maps every range read-write), nor marks a file DAX; nor does a file the daemon cannot open read-write", async () => {
  const { dir } = makeShare();
  const d = await startOurs(dir, ["--readonly"]);
  const { fe, client } = await session(d);
  try {
    assert.equal(((client.initOut?.flags ?? 0n) & A.FUSE_HAS_INODE_DAX) !== 0n, false);
    const data = client.lookup(FUSE_ROOT_ID, "data");
    assert.equal((data.attr.flags ?? 0) & A.FUSE_ATTR_DAX, 0, "an 8 MiB file, read-only share");
    const e = errnoOf(() =>
      client.setupmapping(data.nodeid, { foffset: 0, len: RANGE, flags: R, moffset: 0 })
    );
    assert.equal(e, Errno.ENOSYS);
    assert.equal(fe.windowStats.maps, 0);
  } finally {
    fe.close();
    await d.stop();
  }
  // Immutable (chattr +i, which even root cannot open for writing), on a writable share.
  const immutable = join(dir, "data");
  const chattr = new Deno.Command("chattr", { args: ["+i", immutable] }).outputSync();
  if (!chattr.success) return; // a file system without the flag (tmpfs before 6.0): nothing to test
  const d2 = await startOurs(dir);
  const s2 = await session(d2);
  try {
    const attr = s2.client.lookup(FUSE_ROOT_ID, "data").attr;
    assert.equal((attr.flags ?? 0) & A.FUSE_ATTR_DAX, 0, "an immutable 8 MiB file");
    const big = s2.client.lookup(FUSE_ROOT_ID, "big").attr;
    assert.equal((big.flags ?? 0) & A.FUSE_ATTR_DAX, A.FUSE_ATTR_DAX, "its writable neighbour");
  } finally {
    new Deno.Command("chattr", { args: ["-i", immutable] }).outputSync();
    s2.fe.close();
    await d2.stop();
  }
});

Deno.test("DAX-6 live mappings stay within the window's 2 MiB ranges: ENOSPC past them, and slots are reused", async () => {
  const { dir } = makeShare();
  const d = await startDaemon("ours", {
    sharedDir: dir,
    extraArgs: ["--tag", "daxfs", "--cache-size", "4M"],
  });
  const { fe, client } = await session(d);
  try {
    const node = client.lookup(FUSE_ROOT_ID, "data").nodeid;
    const map = (moffset: number, len = 4096) =>
      errnoOf(() => client.setupmapping(node, { foffset: 0, len, flags: R, moffset }));
    assert.equal(map(0), 0);
    assert.equal(map(8192), 0);
    assert.equal(map(16384), Errno.ENOSPC, "a third live mapping in a 2-range window");
    // Map and unmap 200 times: every map's memory slot comes back.
    for (let i = 0; i < 200; i++) {
      client.removemapping([{ moffset: 0, len: RANGE }]);
      assert.equal(map(0, RANGE), 0, `cycle ${i}`);
    }
    assert.equal(fe.windowStats.refused, 0, "the front end never ran out of slots");
  } finally {
    fe.close();
    await d.stop();
  }
});

Deno.test("DAX-2 (inode mode) FUSE_ATTR_DAX marks exactly the regular files whose size is a whole number of 2 MiB ranges, once FUSE_HAS_INODE_DAX is granted", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "dax-inode-" });
  const sizes: Record<string, number> = {
    empty: 0,
    twenty: 20,
    page: 4096,
    range: RANGE,
    tail: 3 * MiB + 5,
    four: 4 * MiB,
    pages: 3 * MiB,
  };
  for (const [name, size] of Object.entries(sizes)) {
    Deno.writeFileSync(join(dir, name), new Uint8Array(size));
  }
  Deno.mkdirSync(join(dir, "sub"));
  const served = new Set(["range", "four"]);
  const dax = (flags: number | undefined) => ((flags ?? 0) & A.FUSE_ATTR_DAX) !== 0;
  const d = await startOurs(dir, ["--keep-serving"]);
  try {
    const { fe, client } = await session(d);
    try {
      assert.equal(((client.initOut?.flags ?? 0n) & A.FUSE_HAS_INODE_DAX) !== 0n, true);
      for (const name of [...Object.keys(sizes), "sub"]) {
        const e = client.lookup(FUSE_ROOT_ID, name);
        assert.equal(dax(e.attr.flags), served.has(name), `LOOKUP ${name}`);
        assert.equal(dax(client.getattr(e.nodeid).attr.flags), served.has(name), `GETATTR ${name}`);
      }
      // The flag is kept while the guest knows the node (a Linux guest evicts an inode whose
      // flag changed, and can hang doing so): a file that stops being whole ranges keeps it, and
      // its partial last range is refused; one that becomes whole ranges gets it once forgotten.
      const four = client.lookup(FUSE_ROOT_ID, "four").nodeid;
      const fh = client.open(four, O_RDWR).fh;
      client.write(four, fh, 4 * MiB, new Uint8Array(5));
      assert.equal(dax(client.getattr(four).attr.flags), true, "4 MiB + 5, still known");
      const tailRange = { fh, foffset: 4 * MiB, len: RANGE, flags: RW, moffset: 0 };
      assert.equal(errnoOf(() => client.setupmapping(four, tailRange)), Errno.EIO);
      client.setupmapping(four, { ...tailRange, foffset: 2 * MiB });
      client.removemapping([{ moffset: 0, len: RANGE }]);
      client.release(four, fh, O_RDWR);
      const tail = client.lookup(FUSE_ROOT_ID, "tail").nodeid;
      Deno.truncateSync(join(dir, "tail"), 4 * MiB);
      assert.equal(dax(client.getattr(tail).attr.flags), false, "4 MiB now, still known");
      client.forget(tail, 2n); // the loop's lookup and the one above
      client.forget(four, 2n);
      assert.equal(dax(client.lookup(FUSE_ROOT_ID, "tail").attr.flags), true, "forgotten: 4 MiB");
      assert.equal(
        dax(client.lookup(FUSE_ROOT_ID, "four").attr.flags),
        false,
        "forgotten: 4 MiB + 5",
      );
    } finally {
      fe.close();
    }
    // A client that does not ask FUSE_HAS_INODE_DAX (or has no window) gets no flag.
    for (
      const [what, opts, flags] of [
        [
          "no FUSE_HAS_INODE_DAX asked",
          FE,
          A.FUSE_MAP_ALIGNMENT | 0x0000000b_7bfffffbn & ~A.FUSE_HAS_INODE_DAX,
        ],
        ["no window", { ...FE, cacheWindow: false }, A.FUSE_MAP_ALIGNMENT | 0x0000000b_7bfffffbn],
      ] as const
    ) {
      const other = await VhostUserFrontend.connect(d.socketPath, opts);
      try {
        const c = new FuseClient(other);
        c.init({ flags });
        assert.equal(((c.initOut?.flags ?? 0n) & A.FUSE_HAS_INODE_DAX) !== 0n, false, what);
        assert.equal(dax(c.lookup(FUSE_ROOT_ID, "range").attr.flags), false, what);
      } finally {
        other.close();
      }
    }
  } finally {
    await d.stop();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("DAX-6 a DAX file the guest has open is not unlinked or renamed over (EBUSY: a Linux 6.1 guest would hang closing it after a read through the window); closed, it is; a deleted file is never mapped", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "dax-busy-" });
  for (const name of ["a", "b", "c"]) Deno.writeFileSync(join(dir, name), new Uint8Array(4 * MiB));
  const d = await startOurs(dir);
  try {
    const { fe, client } = await session(d);
    try {
      const a = client.lookup(FUSE_ROOT_ID, "a").nodeid;
      const fh = client.open(a, O_RDWR).fh;
      client.setupmapping(a, { fh, foffset: 0, len: RANGE, flags: R, moffset: 0 });
      assert.equal(errnoOf(() => client.unlink(FUSE_ROOT_ID, "a")), Errno.EBUSY, "unlink");
      assert.equal(
        errnoOf(() => client.rename(FUSE_ROOT_ID, "b", FUSE_ROOT_ID, "a")),
        Errno.EBUSY,
        "rename over it",
      );
      assert.equal(
        errnoOf(() => client.rename2(FUSE_ROOT_ID, "b", FUSE_ROOT_ID, "a", RENAME_EXCHANGE)),
        0,
        "an exchange unlinks nothing",
      );
      client.rename2(FUSE_ROOT_ID, "b", FUSE_ROOT_ID, "a", RENAME_EXCHANGE); // back
      // Mapped, closed: the guest evicts it in the remover, which is fine.
      client.release(a, fh, O_RDWR);
      client.unlink(FUSE_ROOT_ID, "a");
      // Open, not mapped (yet: a read after the unlink would map it): EBUSY too.
      const c = client.lookup(FUSE_ROOT_ID, "c").nodeid;
      const cfh = client.open(c, O_RDWR).fh;
      assert.equal(errnoOf(() => client.unlink(FUSE_ROOT_ID, "c")), Errno.EBUSY, "open");
      client.release(c, cfh, O_RDWR);
      client.unlink(FUSE_ROOT_ID, "c");
      // Deleted on the host while open: never mapped (the guest would hang evicting it).
      const b = client.lookup(FUSE_ROOT_ID, "b").nodeid;
      const bfh = client.open(b, O_RDWR).fh;
      Deno.removeSync(join(dir, "b"));
      const range = { fh: bfh, foffset: 0, len: RANGE, flags: R, moffset: 0 };
      assert.equal(errnoOf(() => client.setupmapping(b, range)), Errno.EIO, "deleted");
      client.release(b, bfh, O_RDWR);
      assert.deepEqual(Deno.readDirSync(dir).map((e) => e.name).toArray(), []);
    } finally {
      fe.close();
    }
  } finally {
    await d.stop();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("DAX-7 without a window, SETUPMAPPING and REMOVEMAPPING are ENOSYS and the session works", async () => {
  const { dir } = makeShare();
  for (
    const [what, extra, opts] of [
      ["a daemon without --cache-size", [], FE],
      ["a front end without a window (QEMU 7.2)", ["--tag", "t", "--cache-size", "64M"], {
        ...FE,
        cacheWindow: false,
      }],
    ] as const
  ) {
    const d = await startDaemon("ours", { sharedDir: dir, extraArgs: [...extra] });
    const { fe, client } = await session(d, opts);
    try {
      const node = client.lookup(FUSE_ROOT_ID, "data").nodeid;
      const e = errnoOf(() =>
        client.setupmapping(node, { foffset: 0, len: RANGE, flags: R, moffset: 0 })
      );
      assert.equal(e, Errno.ENOSYS, what);
      assert.equal(errnoOf(() => client.removemapping([{ moffset: 0, len: RANGE }])), Errno.ENOSYS);
      assert.equal(client.initOut?.mapAlignment, 0, `${what}: no map alignment`);
      const fh = client.open(node, 0).fh;
      assert.equal(client.read(node, fh, 0, 4).length, 4, `${what}: reads work`);
    } finally {
      fe.close();
      await d.stop();
    }
  }
});

Deno.test("DAX-CLEANUP FORGET of a mapped inode, a guest reset, a disconnect and SIGTERM leave no mapping behind", async (t) => {
  const { dir } = makeShare();
  await t.step("FORGET", async () => {
    const d = await startOurs(dir);
    const { fe, client } = await session(d);
    try {
      const node = client.lookup(FUSE_ROOT_ID, "data").nodeid;
      client.setupmapping(node, { foffset: 0, len: RANGE, flags: R, moffset: 0 });
      client.setupmapping(node, { foffset: 0, len: RANGE, flags: R, moffset: 6 * MiB });
      client.forget(node, 1);
      // The unmaps come on the back-end channel; a GETATTR round trip lets them through.
      for (let i = 0; i < 50 && fe.window.mappings().length > 0; i++) {
        client.getattr(FUSE_ROOT_ID);
        fe.serviceBackendChannel(20);
      }
      assert.equal(fe.window.mappings().length, 0);
    } finally {
      fe.close();
      await d.stop();
    }
  });
  await t.step("a guest reset, then the same offsets map again", async () => {
    const d = await startOurs(dir);
    const { fe, client } = await session(d);
    try {
      let node = client.lookup(FUSE_ROOT_ID, "data").nodeid;
      client.setupmapping(node, { foffset: 0, len: RANGE, flags: R, moffset: 0 });
      fe.restartQueues();
      assert.equal(fe.window.mappings().length, 0, "the front end drops its mappings at reset");
      const again = new FuseClient(fe);
      again.init({ flags: A.FUSE_MAP_ALIGNMENT | 0x0000000b_7bfffffbn });
      node = again.lookup(FUSE_ROOT_ID, "data").nodeid;
      again.setupmapping(node, { foffset: 2 * MiB, len: RANGE, flags: R, moffset: 0 });
      assert.equal(fe.windowStats.refused, 0, "no overlap: the daemon forgot the old mapping");
    } finally {
      fe.close();
      await d.stop();
    }
  });
  await t.step("a disconnect, then the next front end", async () => {
    const d = await startOurs(dir, ["--keep-serving"]);
    const first = await session(d);
    const node = first.client.lookup(FUSE_ROOT_ID, "data").nodeid;
    first.client.setupmapping(node, { foffset: 0, len: RANGE, flags: R, moffset: 0 });
    first.fe.close();
    const second = await session(d);
    try {
      const n = second.client.lookup(FUSE_ROOT_ID, "data").nodeid;
      second.client.setupmapping(n, { foffset: 0, len: RANGE, flags: R, moffset: 0 });
      assert.equal(second.fe.window.mappings().length, 1);
    } finally {
      second.fe.close();
      await d.stop();
    }
  });
  await t.step("SIGTERM: the daemon unmaps the window before it exits", async () => {
    const d = await startOurs(dir);
    const { fe, client } = await session(d);
    try {
      const node = client.lookup(FUSE_ROOT_ID, "data").nodeid;
      for (const m of [0, 2, 4]) {
        client.setupmapping(node, { foffset: 0, len: RANGE, flags: R, moffset: m * MiB });
      }
      await stopServicing(d, fe);
      assert.equal(fe.window.mappings().length, 0, d.stderrText());
      assert.equal(fe.windowStats.unmaps, 3);
      assert.match(d.stderrText(), /unmapping 3 DAX ranges/);
    } finally {
      fe.close();
      await d.stop();
    }
  });
});

Deno.test("DAX-REF what each daemon answers to SETUPMAPPING and REMOVEMAPPING without a window", async () => {
  const { dir } = makeShare();
  const expected: Record<string, { setupmapping: number; removemapping: number }> = JSON.parse(
    Deno.readTextFileSync(new URL("./expectations/dax.json", import.meta.url)),
  ).noWindow;
  for (const kind of daemonsUnderTest()) {
    const d = await startDaemon(kind, { sharedDir: dir });
    const { fe, client } = await session(d, { ...FE, cacheWindow: false });
    try {
      const node = client.lookup(FUSE_ROOT_ID, "data").nodeid;
      const got = {
        setupmapping: errnoOf(() =>
          client.setupmapping(node, { foffset: 0, len: RANGE, flags: R, moffset: 0 })
        ),
        removemapping: errnoOf(() => client.removemapping([{ moffset: 0, len: RANGE }])),
      };
      assert.deepEqual(got, expected[kind], `${kind}: ${JSON.stringify(got)}`);
      // And it serves on.
      assert.equal(client.getattr(node).attr.size, 8n * BigInt(MiB));
    } finally {
      fe.close();
      await d.stop();
    }
  }
});

Deno.test("WB-DAX-1 (the DAX half, wire) writeback has no effect on writes through the window: with it on or off, a store is in the host file at once", async () => {
  const { dir } = makeShare();
  for (const extra of [[], ["--writeback"]]) {
    const d = await startOurs(dir, extra);
    const { fe, client } = await session(d);
    try {
      const granted = (client.initOut?.flags ?? 0n) & A.FUSE_WRITEBACK_CACHE;
      assert.equal(granted !== 0n, extra.length > 0, "writeback as asked");
      const node = client.lookup(FUSE_ROOT_ID, "data").nodeid;
      client.setupmapping(node, { foffset: 0, len: RANGE, flags: RW, moffset: 0 });
      const text = new TextEncoder().encode(`store with ${extra[0] ?? "no writeback"}`);
      fe.window.write(4096, text);
      const f = Deno.openSync(join(dir, "data"));
      const back = new Uint8Array(text.length);
      f.seekSync(4096, Deno.SeekMode.Start);
      f.readSync(back);
      f.close();
      assert.deepEqual(back, text);
    } finally {
      fe.close();
      await d.stop();
    }
  }
});
