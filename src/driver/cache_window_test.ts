import assert from "node:assert/strict";
import {
  accept,
  AT_FDCWD,
  bindAndListen,
  close,
  closeQuietly,
  cString,
  FdSocket,
  fileSize,
  isOpen,
  memfdCreate,
  O_CLOEXEC,
  O_RDONLY,
  O_RDWR,
  openat,
  poll,
  POLLIN,
  unixSocket,
} from "../ffi/mod.ts";
import {
  bit,
  DEVICE_CONFIG,
  HEADER_SIZE,
  MEMORY_REGION,
  SHMEM_CONFIG,
  SINGLE_MEMORY_REGION,
  u64Payload,
  VHOST_USER_ADD_MEM_REG,
  VHOST_USER_BACKEND_SHMEM_MAP,
  VHOST_USER_BACKEND_SHMEM_UNMAP,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_FLAG_MAP_RW,
  VHOST_USER_GET_CONFIG,
  VHOST_USER_GET_FEATURES,
  VHOST_USER_GET_MAX_MEM_SLOTS,
  VHOST_USER_GET_PROTOCOL_FEATURES,
  VHOST_USER_GET_SHMEM_CONFIG,
  VHOST_USER_GET_VRING_BASE,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_PROTOCOL_F_BACKEND_REQ,
  VHOST_USER_PROTOCOL_F_CONFIG,
  VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS,
  VHOST_USER_PROTOCOL_F_REPLY_ACK,
  VHOST_USER_PROTOCOL_F_SHMEM,
  VHOST_USER_REM_MEM_REG,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_SET_BACKEND_REQ_FD,
  VHOST_USER_SET_FEATURES,
  VHOST_USER_SET_PROTOCOL_FEATURES,
  VHOST_USER_SET_VRING_NUM,
  VHOST_USER_VERSION,
  vringStatePayload,
} from "../wire/vhost_user.ts";
import { VIRTIO_F_VERSION_1 } from "../wire/virtio.ts";
import { CacheWindow, type ShmemRequest, shmemRequestPayload } from "./cache_window.ts";
import { VhostUserFrontend } from "./frontend.ts";

const PAGE = 4096;
const WINDOW = 1 << 20;

/** A temp file holding `content`, opened with `flags`; removed at dispose. */
function tempFile(content: Uint8Array, flags = O_RDWR): { fd: number; path: string } & Disposable {
  const path = Deno.makeTempFileSync({ prefix: "cache-window-" });
  Deno.writeFileSync(path, content);
  const fd = openat(AT_FDCWD, cString(path), flags | O_CLOEXEC);
  return {
    fd,
    path,
    [Symbol.dispose]() {
      closeQuietly(fd);
      Deno.removeSync(path);
    },
  };
}

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

function req(shmOffset: number, len: number, fdOffset = 0, flags = VHOST_USER_FLAG_MAP_RW) {
  return { shmid: 0, shmOffset, len, fdOffset, flags } satisfies ShmemRequest;
}

/** The permissions /proc/self/maps shows at `address` (e.g. "rw-s", "---p"). */
function permsAt(address: number): string {
  for (const line of Deno.readTextFileSync("/proc/self/maps").split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+)/.exec(line);
    if (m === null) continue;
    if (parseInt(m[1] ?? "", 16) <= address && address < parseInt(m[2] ?? "", 16)) {
      return m[3] ?? "";
    }
  }
  return "unmapped";
}

function mapOk(w: CacheWindow, r: ShmemRequest, fd: number): void {
  const got = w.map(r, fd);
  assert.ok(got.ok, got.ok ? "" : got.reason);
}

Deno.test("CacheWindow: reserved inaccessible, at the guest address given", () => {
  using w = CacheWindow.reserve({ size: WINDOW, guestAddress: 1 << 30 });
  assert.equal(w.size, WINDOW);
  assert.equal(w.guestAddress, 1 << 30);
  assert.equal(w.bytes.byteLength, WINDOW);
  assert.equal(permsAt(w.hostAddress), "---p");
  assert.equal(permsAt(w.hostAddress + WINDOW - 1), "---p");
  assert.deepEqual(w.mappings(), []);
  assert.equal(w.isMapped(0, 1), false);
  assert.throws(() => w.read(0, 16), /not wholly mapped/);
});

Deno.test("CacheWindow: map makes the range visible, writable, and described for ADD_MEM_REG", () => {
  const data = pattern(4 * PAGE, 3);
  using f = tempFile(data);
  using w = CacheWindow.reserve({ size: WINDOW, guestAddress: 1 << 30 });
  // A read-only map request still maps read-write, as QEMU 11.1 does.
  const r = w.map(req(8 * PAGE, 2 * PAGE, PAGE, 0), f.fd);
  assert.ok(r.ok);
  assert.deepEqual(r.mapping, {
    shmid: 0,
    shmOffset: 8 * PAGE,
    len: 2 * PAGE,
    fdOffset: PAGE,
    flags: 0,
    writable: false,
  });
  assert.equal(permsAt(w.hostAddress + 8 * PAGE), "rw-s");
  assert.equal(permsAt(w.hostAddress + 7 * PAGE), "---p");
  assert.equal(permsAt(w.hostAddress + 10 * PAGE), "---p");
  assert.deepEqual(w.read(8 * PAGE, 2 * PAGE), data.subarray(PAGE, 3 * PAGE));
  w.write(8 * PAGE + 5, new Uint8Array([0xaa, 0xbb]));
  const file = Deno.readFileSync(f.path);
  assert.equal(file[PAGE + 5], 0xaa);
  assert.equal(file[PAGE + 6], 0xbb);
  // The whole-window view agrees on the mapped range.
  assert.equal(w.bytes[8 * PAGE + 5], 0xaa);
  assert.deepEqual(w.regionOf(r.mapping), {
    guestPhysAddr: (1 << 30) + 8 * PAGE,
    memorySize: 2 * PAGE,
    userspaceAddr: w.hostAddress + 8 * PAGE,
    mmapOffset: PAGE,
  });
  // The window keeps its own descriptor; the caller's was handed over.
  assert.equal(w.fdOf(r.mapping), f.fd);
  assert.equal(w.isMapped(8 * PAGE, 2 * PAGE), true);
  assert.equal(w.isMapped(8 * PAGE, 2 * PAGE + 1), false);
  assert.equal(w.isMapped(7 * PAGE, PAGE + 1), false);
  assert.throws(() => w.read(9 * PAGE, PAGE + 1), /not wholly mapped/);
  assert.equal(w.stats.maps, 1);
});

Deno.test("CacheWindow: an O_RDONLY descriptor is refused (QEMU needs O_RDWR) and closed", () => {
  using f = tempFile(pattern(PAGE, 1), O_RDONLY);
  using w = CacheWindow.reserve({ size: WINDOW, guestAddress: 1 << 30 });
  const r = w.map(req(0, PAGE, 0, 0), f.fd);
  assert.ok(!r.ok);
  assert.equal(r.kind, "access");
  assert.match(r.reason, /O_RDONLY/);
  assert.equal(isOpen(f.fd), false, "a refused descriptor is closed");
  assert.equal(permsAt(w.hostAddress), "---p");
  assert.deepEqual(w.stats, {
    maps: 0,
    unmaps: 0,
    dropped: 0,
    refused: 1,
    lastRefusal: r.reason,
    lastRefusalKind: "access",
  });
});

Deno.test("CacheWindow: a map past the end of the file is refused; up to it is fine", () => {
  const fd = memfdCreate("cw-eof", 3 * PAGE);
  using w = CacheWindow.reserve({ size: WINDOW, guestAddress: 1 << 30 });
  const fd2 = memfdCreate("cw-eof2", 3 * PAGE);
  const r = w.map(req(0, 2 * PAGE, 2 * PAGE), fd);
  assert.ok(!r.ok);
  assert.equal(r.kind, "eof");
  assert.match(r.reason, /past the end of the file \(12288 bytes\)/);
  mapOk(w, req(0, 2 * PAGE, PAGE), fd2);
  assert.equal(w.stats.refused, 1);
});

Deno.test("CacheWindow: overlap, alignment, bounds, zero length and unknown shmid are refused", () => {
  using w = CacheWindow.reserve({ size: WINDOW, guestAddress: 1 << 30 });
  mapOk(w, req(4 * PAGE, 4 * PAGE), memfdCreate("cw", 16 * PAGE));
  const cases: [ShmemRequest, string][] = [
    [req(6 * PAGE, 4 * PAGE), "overlap"],
    [req(0, 5 * PAGE), "overlap"],
    [req(7 * PAGE, PAGE), "overlap"],
    [req(2 * PAGE, 8 * PAGE), "overlap"],
    [req(100, PAGE), "alignment"],
    [req(0, 100), "alignment"],
    [req(0, PAGE, 512), "alignment"],
    [req(WINDOW - PAGE, 2 * PAGE), "bounds"],
    [req(WINDOW, PAGE), "bounds"],
    [{ ...req(0, PAGE), shmOffset: 0xffff_ffff_ffff_f000n }, "bounds"],
    [req(0, 0), "length"],
    [{ ...req(0, PAGE), shmid: 1 }, "shmid"],
  ];
  for (const [r, kind] of cases) {
    const fd = memfdCreate("cw", 16 * PAGE);
    const got = w.map(r, fd);
    assert.ok(!got.ok, `${JSON.stringify(r, (_, v) => String(v))} should be refused`);
    assert.equal(got.kind, kind, got.reason);
    assert.equal(isOpen(fd), false);
  }
  assert.equal(w.stats.refused, cases.length);
  // Adjacent ranges are fine, and together they are one mapped span.
  mapOk(w, req(0, 4 * PAGE), memfdCreate("cw", 16 * PAGE));
  mapOk(w, req(8 * PAGE, PAGE), memfdCreate("cw", 16 * PAGE));
  assert.equal(w.isMapped(0, 9 * PAGE), true);
  assert.equal(w.isMapped(0, 10 * PAGE), false);
  assert.deepEqual(w.mappings().map((m) => m.shmOffset), [0, 4 * PAGE, 8 * PAGE]);
  // No descriptor at all.
  const none = w.map(req(20 * PAGE, PAGE), undefined);
  assert.ok(!none.ok);
  assert.equal(none.kind, "message");
});

Deno.test("CacheWindow: unmap must name a mapping exactly, and restores PROT_NONE", () => {
  using w = CacheWindow.reserve({ size: WINDOW, guestAddress: 1 << 30 });
  const fd = memfdCreate("cw", 8 * PAGE);
  mapOk(w, req(4 * PAGE, 4 * PAGE), fd);
  for (const r of [req(4 * PAGE, PAGE), req(5 * PAGE, 3 * PAGE), req(4 * PAGE, 8 * PAGE)]) {
    const got = w.unmap(r);
    assert.ok(!got.ok);
    assert.equal(got.kind, "no-mapping");
    assert.match(got.reason, /no mapping is exactly/);
  }
  const bad = w.unmap(req(4 * PAGE + 1, PAGE));
  assert.ok(!bad.ok);
  assert.equal(bad.kind, "alignment");
  assert.equal(w.isMapped(4 * PAGE, 4 * PAGE), true);
  assert.equal(permsAt(w.hostAddress + 4 * PAGE), "rw-s");
  const got = w.unmap(req(4 * PAGE, 4 * PAGE, 12345, 0));
  assert.ok(got.ok, got.ok ? "" : got.reason);
  assert.equal(w.isMapped(4 * PAGE, PAGE), false);
  assert.equal(permsAt(w.hostAddress + 4 * PAGE), "---p");
  assert.equal(permsAt(w.hostAddress + 7 * PAGE), "---p");
  assert.equal(isOpen(fd), false, "the mapping's descriptor is closed");
  assert.throws(() => w.read(4 * PAGE, 1), /not wholly mapped/);
  assert.deepEqual(w.mappings(), []);
  assert.equal(w.stats.unmaps, 1);
  assert.equal(w.stats.refused, 4);
  // The same range maps again.
  mapOk(w, req(4 * PAGE, 4 * PAGE), memfdCreate("cw", 8 * PAGE));
});

Deno.test("CacheWindow: a map beyond the memory slots left is refused", () => {
  using w = CacheWindow.reserve({ size: WINDOW, guestAddress: 1 << 30, maxMappings: 2 });
  mapOk(w, req(0, PAGE), memfdCreate("cw", PAGE));
  mapOk(w, req(PAGE, PAGE), memfdCreate("cw", PAGE));
  const got = w.map(req(2 * PAGE, PAGE), memfdCreate("cw", PAGE));
  assert.ok(!got.ok);
  assert.equal(got.kind, "slots");
  assert.ok(w.unmap(req(0, PAGE)).ok);
  mapOk(w, req(2 * PAGE, PAGE), memfdCreate("cw", PAGE));
  w.maxMappings = 1;
  const again = w.map(req(3 * PAGE, PAGE), memfdCreate("cw", PAGE));
  assert.ok(!again.ok);
  assert.equal(again.kind, "slots");
});

Deno.test("CacheWindow: reset drops every mapping (highest first) and closes their descriptors", () => {
  using w = CacheWindow.reserve({ size: WINDOW, guestAddress: 1 << 30 });
  const fds = [memfdCreate("cw", PAGE), memfdCreate("cw", PAGE), memfdCreate("cw", PAGE)];
  mapOk(w, req(2 * PAGE, PAGE), fds[0] ?? -1);
  mapOk(w, req(0, PAGE), fds[1] ?? -1);
  mapOk(w, req(9 * PAGE, PAGE), fds[2] ?? -1);
  const gone = w.reset();
  assert.deepEqual(gone.map((m) => m.shmOffset), [9 * PAGE, 2 * PAGE, 0]);
  assert.deepEqual(w.mappings(), []);
  for (const fd of fds) assert.equal(isOpen(fd), false);
  for (const off of [0, 2 * PAGE, 9 * PAGE]) assert.equal(permsAt(w.hostAddress + off), "---p");
  assert.deepEqual({ ...w.stats }, { maps: 3, unmaps: 0, dropped: 3, refused: 0 });
  w.close();
  assert.equal(permsAt(w.hostAddress), "unmapped");
});

Deno.test("CacheWindow: the reservation avoids the address ranges it is told to", () => {
  using probe = CacheWindow.reserve({ size: WINDOW, guestAddress: 0 });
  const taken = { start: probe.hostAddress, end: probe.hostAddress + WINDOW };
  probe.close();
  using w = CacheWindow.reserve({ size: WINDOW, guestAddress: 0, avoid: [taken] });
  assert.ok(w.hostAddress + WINDOW <= taken.start || w.hostAddress >= taken.end);
});

// ---- the message flow, with the test playing the back end on the sockets -------------------

interface Msg {
  request: number;
  flags: number;
  payload: Uint8Array;
  fds: number[];
}

function send(
  sock: FdSocket,
  request: number,
  flags: number,
  payload: Uint8Array,
  fds: number[] = [],
): void {
  const m = new Uint8Array(HEADER_SIZE + payload.byteLength);
  const v = new DataView(m.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, payload.byteLength, true);
  m.set(payload, HEADER_SIZE);
  sock.send(m, fds);
}

const REPLY = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK;
const NEED_REPLY = VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK;

function reply(sock: FdSocket, request: number, payload: Uint8Array): void {
  send(sock, request, REPLY, payload);
}

/** Reads all of `buf`; false when the peer closed before its first byte. */
function readExactly(sock: FdSocket, buf: Uint8Array, fds: number[]): boolean {
  let got = 0;
  while (got < buf.byteLength) {
    const n = sock.recv(buf.subarray(got), fds);
    if (n === 0 && got === 0) return false;
    if (n === 0) throw new Error("closed inside a message");
    got += n;
  }
  return true;
}

/** Every message the front end sent that is waiting on `sock` (up to its close). */
function drain(sock: FdSocket): Msg[] {
  const out: Msg[] = [];
  while ((poll([sock.fd], POLLIN, 0)[0] ?? 0) !== 0) {
    const h = new Uint8Array(HEADER_SIZE);
    const fds: number[] = [];
    if (!readExactly(sock, h, fds)) break;
    const v = new DataView(h.buffer);
    const payload = new Uint8Array(v.getUint32(8, true));
    if (payload.byteLength > 0) readExactly(sock, payload, fds);
    out.push({ request: v.getUint32(0, true), flags: v.getUint32(4, true), payload, fds });
  }
  return out;
}

function region(m: Msg): Record<string, number> {
  const v = new DataView(m.payload.buffer, SINGLE_MEMORY_REGION.region);
  const get = (o: number) => Number(v.getBigUint64(o, true));
  return {
    guestPhysAddr: get(MEMORY_REGION.guestPhysAddr),
    memorySize: get(MEMORY_REGION.memorySize),
    userspaceAddr: get(MEMORY_REGION.userspaceAddr),
    mmapOffset: get(MEMORY_REGION.mmapOffset),
  };
}

const FEATURES = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES);
const PROTOCOL = bit(VHOST_USER_PROTOCOL_F_REPLY_ACK) |
  bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS) | bit(VHOST_USER_PROTOCOL_F_BACKEND_REQ) |
  bit(VHOST_USER_PROTOCOL_F_CONFIG) | bit(VHOST_USER_PROTOCOL_F_SHMEM);

/**
 * A front end connected to the test, which plays the back end. The front end is synchronous, so
 * every reply it will wait for is written before it runs: the negotiation is deterministic.
 */
async function fakeBackend(
  opts: { closeChannelOnRefusal?: boolean; maxMemSlots?: number } = {},
): Promise<{ fe: VhostUserFrontend; main: FdSocket; channel: FdSocket } & Disposable> {
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/be.sock`;
  const listener = unixSocket();
  bindAndListen(listener, path, 1);
  // connect() runs its negotiation after its first await: accept and pre-write replies first.
  const pending = VhostUserFrontend.connect(path, {
    cacheWindow: true,
    closeChannelOnRefusal: opts.closeChannelOnRefusal ?? false,
    timeoutMs: 2000,
  });
  const mainFd = accept(listener);
  close(listener);
  Deno.removeSync(dir, { recursive: true });
  const main = new FdSocket(mainFd);
  const shmem = new Uint8Array(SHMEM_CONFIG.size);
  const sv = new DataView(shmem.buffer);
  sv.setUint32(SHMEM_CONFIG.nregions, 1, true);
  sv.setBigUint64(SHMEM_CONFIG.memorySizes, BigInt(WINDOW), true);
  reply(main, VHOST_USER_GET_FEATURES, u64Payload(FEATURES));
  reply(main, VHOST_USER_GET_PROTOCOL_FEATURES, u64Payload(PROTOCOL));
  reply(main, VHOST_USER_GET_SHMEM_CONFIG, shmem);
  reply(main, VHOST_USER_GET_MAX_MEM_SLOTS, u64Payload(opts.maxMemSlots ?? 32));
  reply(main, VHOST_USER_SET_BACKEND_REQ_FD, u64Payload(0));
  reply(main, VHOST_USER_GET_FEATURES, u64Payload(FEATURES));
  reply(main, VHOST_USER_ADD_MEM_REG, u64Payload(0)); // guest RAM
  reply(main, VHOST_USER_GET_FEATURES, u64Payload(FEATURES)); // the start-up barrier
  const fe = await pending;
  const sent = drain(main);
  const names = sent.map((m) => m.request);
  // GET_SHMEM_CONFIG comes right after SET_PROTOCOL_FEATURES.
  const spf = names.indexOf(VHOST_USER_SET_PROTOCOL_FEATURES);
  assert.equal(names[spf + 1], VHOST_USER_GET_SHMEM_CONFIG);
  const acked = new DataView(sent[spf]?.payload.buffer ?? new ArrayBuffer(8)).getBigUint64(0, true);
  assert.equal(acked, PROTOCOL, "SHMEM and CONFIG acked with the rest");
  const req = sent.find((m) => m.request === VHOST_USER_SET_BACKEND_REQ_FD);
  assert.equal(req?.fds.length, 1);
  const channel = new FdSocket(req?.fds[0] ?? -1);
  for (const m of sent) if (m !== req) m.fds.forEach(closeQuietly);
  return {
    fe,
    main,
    channel,
    [Symbol.dispose]() {
      fe.close();
      closeQuietly(mainFd);
      closeQuietly(channel.fd);
    },
  };
}

function shmem(channel: FdSocket, request: number, r: ShmemRequest, fds: number[] = []): void {
  send(channel, request, NEED_REPLY, shmemRequestPayload(r), fds);
}

function status(m: Msg | undefined): bigint {
  assert.ok(m !== undefined);
  assert.equal(m.flags, REPLY);
  assert.equal(m.payload.byteLength, 8);
  return new DataView(m.payload.buffer).getBigUint64(0, true);
}

Deno.test("front end: SHMEM_MAP is answered, then ADD_MEM_REG names the mapping", async () => {
  using be = await fakeBackend();
  const { fe, main, channel } = be;
  const w = fe.window;
  assert.equal(w.size, WINDOW);
  assert.ok(w.guestAddress >= 2 ** 32 && w.guestAddress % WINDOW === 0);
  assert.deepEqual(fe.shmemSizes, [WINDOW]);
  assert.equal(w.maxMappings, 31, "32 slots, one taken by guest RAM");
  const data = pattern(2 * PAGE, 9);
  const file = memfdCreate("cw-file", 0);
  Deno.writeFileSync(`/proc/self/fd/${file}`, data);
  reply(main, VHOST_USER_ADD_MEM_REG, u64Payload(0));
  shmem(channel, VHOST_USER_BACKEND_SHMEM_MAP, req(16 * PAGE, 2 * PAGE, 0, 0), [file]);
  close(file);
  assert.equal(fe.serviceBackendChannel(1000), 1);
  const [answer, ...more] = drain(channel);
  assert.equal(more.length, 0);
  assert.equal(answer?.request, VHOST_USER_BACKEND_SHMEM_MAP);
  assert.equal(status(answer), 0n);
  const [add, ...rest] = drain(main);
  assert.equal(rest.length, 0);
  assert.equal(add?.request, VHOST_USER_ADD_MEM_REG);
  assert.equal(add?.flags, NEED_REPLY);
  assert.deepEqual(region(add), {
    guestPhysAddr: w.guestAddress + 16 * PAGE,
    memorySize: 2 * PAGE,
    userspaceAddr: w.hostAddress + 16 * PAGE,
    mmapOffset: 0,
  });
  assert.equal(add.fds.length, 1);
  assert.equal(fileSize(add.fds[0] ?? -1), 2 * PAGE, "the file's descriptor is attached");
  add.fds.forEach(close);
  assert.deepEqual(w.read(16 * PAGE, 2 * PAGE), data);
  assert.equal(fe.windowStats.maps, 1);

  // Refused: an O_RDONLY descriptor. Answered non-zero; no ADD_MEM_REG; the channel stays.
  using ro = tempFile(pattern(PAGE, 1), O_RDONLY);
  shmem(channel, VHOST_USER_BACKEND_SHMEM_MAP, req(0, PAGE), [ro.fd]);
  assert.equal(fe.serviceBackendChannel(1000), 1);
  assert.notEqual(status(drain(channel)[0]), 0n);
  assert.deepEqual(drain(main), []);
  assert.equal(fe.windowStats.refused, 1);
  assert.equal(fe.windowStats.lastRefusalKind, "access");
  assert.notEqual(fe.backendChannelFd, undefined);

  // SHMEM_UNMAP: answered, then REM_MEM_REG (no descriptor, mmap_offset 0), then PROT_NONE.
  reply(main, VHOST_USER_REM_MEM_REG, u64Payload(0));
  shmem(channel, VHOST_USER_BACKEND_SHMEM_UNMAP, req(16 * PAGE, 2 * PAGE));
  assert.equal(fe.serviceBackendChannel(1000), 1);
  assert.equal(status(drain(channel)[0]), 0n);
  const [rem] = drain(main);
  assert.equal(rem?.request, VHOST_USER_REM_MEM_REG);
  assert.equal(rem?.flags, NEED_REPLY);
  assert.equal(rem?.fds.length, 0);
  assert.deepEqual(region(rem), {
    guestPhysAddr: w.guestAddress + 16 * PAGE,
    memorySize: 2 * PAGE,
    userspaceAddr: w.hostAddress + 16 * PAGE,
    mmapOffset: 0,
  });
  assert.equal(w.isMapped(16 * PAGE, PAGE), false);
  assert.equal(permsAt(w.hostAddress + 16 * PAGE), "---p");
  // Unmapping it again is refused.
  shmem(channel, VHOST_USER_BACKEND_SHMEM_UNMAP, req(16 * PAGE, 2 * PAGE));
  assert.equal(fe.serviceBackendChannel(1000), 1);
  assert.notEqual(status(drain(channel)[0]), 0n);
  assert.equal(fe.windowStats.lastRefusalKind, "no-mapping");
  assert.equal(fe.serviceBackendChannel(0), 0);
});

Deno.test("front end: a SHMEM_MAP arriving during a wait for a reply is serviced first", async () => {
  using be = await fakeBackend();
  const { fe, main, channel } = be;
  // The GET_CONFIG reply is already there when the ADD_MEM_REG ack is awaited: it is kept.
  const cfg = new Uint8Array(DEVICE_CONFIG.header + 8);
  new DataView(cfg.buffer).setUint32(DEVICE_CONFIG.size, 8, true);
  cfg.set([1, 2, 3, 4, 5, 6, 7, 8], DEVICE_CONFIG.region);
  reply(main, VHOST_USER_GET_CONFIG, cfg);
  reply(main, VHOST_USER_ADD_MEM_REG, u64Payload(0));
  shmem(channel, VHOST_USER_BACKEND_SHMEM_MAP, req(0, PAGE), [memfdCreate("cw", PAGE)]);
  assert.deepEqual([...fe.getConfig(0, 8)], [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual(drain(main).map((m) => m.request), [
    VHOST_USER_GET_CONFIG,
    VHOST_USER_ADD_MEM_REG,
  ]);
  assert.equal(status(drain(channel)[0]), 0n);
  assert.equal(fe.window.isMapped(0, PAGE), true);

  // waitUsed services the channel too (no used element comes: it times out).
  reply(main, VHOST_USER_ADD_MEM_REG, u64Payload(0));
  shmem(channel, VHOST_USER_BACKEND_SHMEM_MAP, req(PAGE, PAGE), [memfdCreate("cw", PAGE)]);
  assert.throws(() => fe.waitUsed(1, { timeoutMs: 300 }), /Timed out/);
  assert.equal(fe.window.isMapped(PAGE, PAGE), true);
  assert.equal(status(drain(channel)[0]), 0n);
  assert.deepEqual(drain(main).map((m) => m.request), [VHOST_USER_ADD_MEM_REG]);

  // A restart drops the mappings: REM_MEM_REG each, after SET_FEATURES, before the rings.
  reply(main, VHOST_USER_GET_VRING_BASE, vringStatePayload(0, 0));
  reply(main, VHOST_USER_GET_VRING_BASE, vringStatePayload(1, 0));
  reply(main, VHOST_USER_REM_MEM_REG, u64Payload(0));
  reply(main, VHOST_USER_REM_MEM_REG, u64Payload(0));
  reply(main, VHOST_USER_GET_FEATURES, u64Payload(FEATURES));
  fe.restartQueues();
  const names = drain(main).map((m) => m.request);
  const sf = names.indexOf(VHOST_USER_SET_FEATURES);
  assert.deepEqual(names.slice(sf, sf + 4), [
    VHOST_USER_SET_FEATURES,
    VHOST_USER_REM_MEM_REG,
    VHOST_USER_REM_MEM_REG,
    VHOST_USER_SET_VRING_NUM,
  ]);
  assert.deepEqual(fe.window.mappings(), []);
  assert.equal(permsAt(fe.window.hostAddress), "---p");
  assert.equal(fe.windowStats.dropped, 2);
  assert.deepEqual(drain(channel), [], "nothing is said on the back-end channel");

  // close() drops what is left with REM_MEM_REG too.
  reply(main, VHOST_USER_ADD_MEM_REG, u64Payload(0));
  shmem(channel, VHOST_USER_BACKEND_SHMEM_MAP, req(0, PAGE), [memfdCreate("cw", PAGE)]);
  assert.equal(fe.serviceBackendChannel(1000), 1);
  drain(channel);
  drain(main);
  reply(main, VHOST_USER_REM_MEM_REG, u64Payload(0));
  fe.close();
  assert.deepEqual(drain(main).map((m) => m.request), [VHOST_USER_REM_MEM_REG]);
});

Deno.test("front end: closeChannelOnRefusal closes the channel without an answer", async () => {
  using be = await fakeBackend({ closeChannelOnRefusal: true, maxMemSlots: 2 });
  const { fe, main, channel } = be;
  assert.equal(fe.window.maxMappings, 1);
  reply(main, VHOST_USER_ADD_MEM_REG, u64Payload(0));
  shmem(channel, VHOST_USER_BACKEND_SHMEM_MAP, req(0, PAGE), [memfdCreate("cw", PAGE)]);
  shmem(channel, VHOST_USER_BACKEND_SHMEM_MAP, req(PAGE, PAGE), [memfdCreate("cw", PAGE)]);
  assert.equal(fe.serviceBackendChannel(1000), 2);
  assert.equal(fe.windowStats.lastRefusalKind, "slots");
  const answers = drain(channel);
  assert.equal(answers.length, 1, "the refused map got no answer");
  assert.equal(status(answers[0]), 0n);
  assert.equal(fe.backendChannelFd, undefined);
  assert.match(fe.backendChannelClosed ?? "", /no memory slot left/);
  const buf = new Uint8Array(1);
  assert.equal(channel.recv(buf, []), 0, "the front end closed its end");
  assert.equal(fe.serviceBackendChannel(0), 0);
  drain(main);
  reply(main, VHOST_USER_REM_MEM_REG, u64Payload(0)); // close() drops the live mapping
});

Deno.test("front end: without cacheWindow, SHMEM is not acked and nothing is serviced", async () => {
  const dir = Deno.makeTempDirSync();
  const listener = unixSocket();
  bindAndListen(listener, `${dir}/be.sock`, 1);
  const pending = VhostUserFrontend.connect(`${dir}/be.sock`, { timeoutMs: 2000 });
  const main = new FdSocket(accept(listener));
  close(listener);
  Deno.removeSync(dir, { recursive: true });
  reply(main, VHOST_USER_GET_FEATURES, u64Payload(FEATURES));
  reply(main, VHOST_USER_GET_PROTOCOL_FEATURES, u64Payload(PROTOCOL));
  reply(main, VHOST_USER_GET_MAX_MEM_SLOTS, u64Payload(32));
  reply(main, VHOST_USER_SET_BACKEND_REQ_FD, u64Payload(0));
  reply(main, VHOST_USER_GET_FEATURES, u64Payload(FEATURES));
  reply(main, VHOST_USER_ADD_MEM_REG, u64Payload(0));
  reply(main, VHOST_USER_GET_FEATURES, u64Payload(FEATURES));
  using fe = await pending;
  const sent = drain(main);
  const spf = sent.find((m) => m.request === VHOST_USER_SET_PROTOCOL_FEATURES);
  const acked = new DataView(spf?.payload.buffer ?? new ArrayBuffer(8)).getBigUint64(0, true);
  assert.equal(acked & bit(VHOST_USER_PROTOCOL_F_SHMEM), 0n);
  assert.equal(acked & bit(VHOST_USER_PROTOCOL_F_CONFIG), 0n);
  assert.ok(!sent.some((m) => m.request === VHOST_USER_GET_SHMEM_CONFIG));
  assert.equal(fe.hasWindow, false);
  assert.throws(() => fe.window, /No cache window/);
  assert.throws(() => fe.getConfig(0, 8), /PROTOCOL_F_CONFIG was not negotiated/);
  assert.equal(fe.serviceBackendChannel(0), 0);
  for (const m of sent) m.fds.forEach(closeQuietly);
  closeQuietly(main.fd);
});
