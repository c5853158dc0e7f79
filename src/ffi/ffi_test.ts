import assert from "node:assert/strict";
import {
  accept,
  AddressReservation,
  bindAndListen,
  close,
  EFD_NONBLOCK,
  Epoll,
  EPOLLIN,
  Errno,
  ErrnoError,
  eventfd,
  eventfdConsume,
  eventfdSignal,
  FdSocket,
  fileSize,
  getrlimit,
  isListeningSocket,
  isOpen,
  Mapping,
  memfdCreate,
  poll,
  POLLIN,
  read,
  RLIMIT_NOFILE,
  socketPair,
  unixConnect,
  unixSocket,
  write,
} from "./mod.ts";

Deno.test("ErrnoError carries errno, its name and the call", () => {
  const err = assert.throws(() => close(1_000_000), (e: unknown) => {
    assert.ok(e instanceof ErrnoError);
    assert.equal(e.errno, Errno.EBADF);
    assert.equal(e.code, "EBADF");
    assert.equal(e.syscall, "close");
    assert.match(e.message, /close fd 1000000 failed: EBADF/);
    return true;
  });
  assert.equal(err, undefined);
});

Deno.test("FdSocket.send()/recv() pass bytes and descriptors (SCM_RIGHTS)", () => {
  const [a, b] = socketPair();
  const efd = eventfd();
  try {
    const sa = new FdSocket(a);
    const sb = new FdSocket(b);
    assert.equal(sa.send(new Uint8Array([1, 2, 3]), [efd, efd]), 3);
    const buf = new Uint8Array(16);
    const fds: number[] = [];
    assert.equal(sb.recv(buf, fds), 3);
    assert.deepEqual([...buf.subarray(0, 3)], [1, 2, 3]);
    assert.equal(fds.length, 2);
    // The received descriptors are new ones for the same eventfd.
    for (const f of fds) assert.notEqual(f, efd);
    eventfdSignal(fds[0] ?? -1);
    assert.equal(eventfdConsume(efd), 1);
    fds.forEach(close);
    close(a);
    assert.equal(sb.recv(buf, fds), 0, "peer closed");
  } finally {
    close(b);
    close(efd);
  }
});

Deno.test("eventfd counts signals; a non-blocking one reads 0 when empty", () => {
  const fd = eventfd(0, EFD_NONBLOCK);
  try {
    assert.equal(eventfdConsume(fd), 0);
    eventfdSignal(fd);
    eventfdSignal(fd);
    assert.equal(eventfdConsume(fd), 2);
    assert.equal(eventfdConsume(fd), 0);
  } finally {
    close(fd);
  }
});

Deno.test("Epoll.wait() reports the token of a ready descriptor; poll() agrees", () => {
  const fd = eventfd(0, EFD_NONBLOCK);
  using ep = new Epoll(4);
  try {
    ep.add(fd, EPOLLIN, 0xdeadbeef);
    assert.equal(ep.wait(0), 0);
    assert.deepEqual(poll([fd], POLLIN, 0), [0]);
    eventfdSignal(fd);
    assert.equal(ep.wait(1000), 1);
    assert.equal(ep.token(0), 0xdeadbeef);
    assert.equal(ep.events(0) & EPOLLIN, EPOLLIN);
    assert.deepEqual(poll([fd], POLLIN, 0), [POLLIN]);
  } finally {
    close(fd);
  }
});

Deno.test("Mapping.map() of a memfd is one zero-copy view shared with other mappings", () => {
  const fd = memfdCreate("test", 1 << 20);
  try {
    using a = Mapping.map(fd, 1 << 20);
    using b = Mapping.map(fd, 4096, 4096);
    a.bytes[4096 + 7] = 42;
    assert.equal(b.bytes[7], 42);
    b.bytes[0] = 9;
    assert.equal(a.bytes[4096], 9);
    assert.ok(a.address > 0);
    a.unmap();
    assert.equal(a.mapped, false);
    assert.throws(() => a.bytes, /after unmap/);
  } finally {
    close(fd);
  }
  assert.throws(
    () => Mapping.map(1_000_000, 4096),
    (e: unknown) => e instanceof ErrnoError && e.code === "EBADF",
  );
});

Deno.test("AddressReservation: PROT_NONE span; mapFile() and clear() swap ranges in place", () => {
  const perms = (address: number): string => {
    for (const line of Deno.readTextFileSync("/proc/self/maps").split("\n")) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+)/.exec(line);
      if (m && parseInt(m[1] ?? "", 16) <= address && address < parseInt(m[2] ?? "", 16)) {
        return m[3] ?? "";
      }
    }
    return "unmapped";
  };
  const fd = memfdCreate("reservation", 3 * 4096);
  try {
    assert.equal(fileSize(fd), 3 * 4096);
    using r = AddressReservation.reserve(16 * 4096);
    assert.equal(r.length, 16 * 4096);
    assert.equal(perms(r.address), "---p");
    r.mapFile(4 * 4096, 2 * 4096, fd, 4096);
    assert.equal(perms(r.address + 4 * 4096), "rw-s");
    assert.equal(perms(r.address + 6 * 4096), "---p");
    r.bytes[4 * 4096] = 77;
    using m = Mapping.map(fd, 3 * 4096);
    assert.equal(m.bytes[4096], 77, "stores reach the file");
    r.clear(4 * 4096, 2 * 4096);
    assert.equal(perms(r.address + 4 * 4096), "---p");
    assert.throws(
      () => r.mapFile(15 * 4096, 2 * 4096, fd, 0),
      (e: unknown) => e instanceof ErrnoError && e.code === "EINVAL",
    );
    assert.throws(
      () => r.mapFile(0, 4096, fd, 100),
      (e: unknown) => e instanceof ErrnoError && e.code === "EINVAL",
    );
    const at = r.address;
    r.release();
    assert.equal(r.reserved, false);
    assert.equal(perms(at), "unmapped");
    assert.throws(() => r.bytes, /after release/);
  } finally {
    close(fd);
  }
  assert.throws(() => AddressReservation.reserve(100), RangeError);
});

Deno.test("unixConnect() to a path nobody listens on fails with ECONNREFUSED or ENOENT", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.throws(
      () => unixConnect(`${dir}/none.sock`),
      (e: unknown) => e instanceof ErrnoError && e.code === "ENOENT",
    );
    const l = unixSocket();
    bindAndListen(l, `${dir}/s.sock`, 1);
    assert.ok(isListeningSocket(l));
    const c = unixConnect(`${dir}/s.sock`);
    const s = accept(l);
    assert.equal(write(c, new Uint8Array([5])), 1);
    const buf = new Uint8Array(1);
    assert.equal(read(s, buf), 1);
    assert.equal(buf[0], 5);
    assert.ok(!isListeningSocket(s));
    [c, s, l].forEach(close);
    assert.ok(!isOpen(l));
    assert.throws(
      () => unixConnect(`${dir}/s.sock`),
      (e: unknown) => e instanceof ErrnoError && e.code === "ECONNREFUSED",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("getrlimit(RLIMIT_NOFILE) reads soft and hard limits", () => {
  const l = getrlimit(RLIMIT_NOFILE);
  assert.ok(l.cur > 0 && l.cur <= l.max);
});
