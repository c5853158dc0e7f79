import assert from "node:assert/strict";
import {
  AT_EMPTY_PATH,
  AT_FDCWD,
  closeQuietly,
  cString,
  Errno,
  ErrnoError,
  FILE_HANDLE,
  FileHandleBuffer,
  nameToHandleAtRaw,
  O_CLOEXEC,
  O_DIRECTORY,
  O_NOFOLLOW,
  O_PATH,
  O_RDONLY,
  openat,
  openByHandleAtRaw,
  S_IFDIR,
  S_IFREG,
  StatxBuffer,
  statxFdRaw,
} from "../../ffi/mod.ts";
import { FileHandles } from "./file_handles.ts";
import { inodeKey } from "./inode_store.ts";
import { PassthroughFs } from "./passthrough_fs.ts";
import { bytes, openFdCount, ROOT_CTX } from "./testing.ts";

function keyOf(fd: number): string {
  const sx = new StatxBuffer();
  assert.equal(statxFdRaw(fd, sx), 0);
  return inodeKey(sx);
}

function tempDir(): string {
  const dir = Deno.makeTempDirSync({ prefix: "file_handles_test_" });
  Deno.chmodSync(dir, 0o755);
  return dir;
}

Deno.test("ffi: name_to_handle_at gives a handle that open_by_handle_at reopens as the same file", () => {
  const dir = tempDir();
  const fds: number[] = [];
  try {
    Deno.writeTextFileSync(`${dir}/a`, "a");
    const path = openat(AT_FDCWD, cString(`${dir}/a`), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    fds.push(path);
    const buf = new FileHandleBuffer();
    assert.equal(nameToHandleAtRaw(path, cString(""), buf, AT_EMPTY_PATH), 0);
    assert.ok(buf.handleBytes > 0 && buf.handleBytes <= 128, `${buf.handleBytes} bytes`);
    assert.equal(buf.filled().length, FILE_HANDLE.size + buf.handleBytes);
    const sx = new StatxBuffer();
    assert.equal(statxFdRaw(path, sx), 0);
    assert.equal(BigInt(buf.mountId), sx.mntId);
    // By name, relative to the directory, without following: the same handle.
    const handle = buf.filled().slice();
    const dfd = openat(AT_FDCWD, cString(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    fds.push(dfd);
    assert.equal(nameToHandleAtRaw(dfd, cString("a"), buf, 0), 0);
    assert.deepEqual(buf.filled(), handle);
    // An O_PATH descriptor is no mount descriptor; an open one is.
    const dpath = openat(AT_FDCWD, cString(dir), O_PATH | O_DIRECTORY | O_CLOEXEC);
    fds.push(dpath);
    assert.equal(openByHandleAtRaw(dpath, handle, O_PATH | O_CLOEXEC), -Errno.EBADF);
    const again = openByHandleAtRaw(dfd, handle, O_PATH | O_CLOEXEC);
    assert.ok(again >= 0, `open_by_handle_at: ${again}`);
    fds.push(again);
    assert.equal(keyOf(again), keyOf(path));
    assert.equal(openByHandleAtRaw(dfd, handle.subarray(0, 4), O_PATH), -Errno.EINVAL);
    // Deleted (and no descriptor keeps it): ESTALE, never another file.
    for (const fd of fds.splice(2)) closeQuietly(fd);
    closeQuietly(fds.shift() ?? -1);
    Deno.removeSync(`${dir}/a`);
    Deno.writeTextFileSync(`${dir}/b`, "b");
    assert.equal(openByHandleAtRaw(dfd, handle, O_PATH | O_CLOEXEC), -Errno.ESTALE);
  } finally {
    for (const fd of fds) closeQuietly(fd);
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("FileHandles: the probe, the mount descriptors, handles of files and their reopening", () => {
  const dir = tempDir();
  Deno.mkdirSync(`${dir}/d`);
  Deno.writeTextFileSync(`${dir}/f`, "f");
  const procFd = openat(AT_FDCWD, cString("/proc/self/fd"), O_PATH | O_DIRECTORY | O_CLOEXEC);
  const root = openat(AT_FDCWD, cString(dir), O_PATH | O_DIRECTORY | O_CLOEXEC);
  const f = openat(root, cString("f"), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  const d = openat(root, cString("d"), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  const before = openFdCount();
  const h = new FileHandles("prefer", procFd);
  try {
    assert.equal(h.probe(root, (fd) => keyOf(fd) === keyOf(root)), true);
    assert.deepEqual(h.status, { mode: "prefer", active: true, reason: "" });
    assert.equal(h.mountCount, 1);
    assert.equal(openFdCount(), before + 1);
    const hf = h.handleOf(f);
    assert.equal(typeof hf, "string");
    const mount = h.lastMountId;
    // A known mount takes a reference, whatever the file; an unknown one needs a directory.
    assert.equal(h.acquireMount(mount, f, S_IFREG), 0);
    assert.equal(h.acquireMount(mount + 100000, f, S_IFREG), -Errno.EOPNOTSUPP);
    assert.equal(h.acquireMount(mount + 100000, d, S_IFDIR), 0);
    assert.equal(h.mountCount, 2);
    h.releaseMount(mount + 100000);
    assert.equal(h.mountCount, 1);
    const fd = h.open(hf as string, mount);
    assert.ok(fd >= 0);
    assert.equal(keyOf(fd), keyOf(f));
    closeQuietly(fd);
    assert.equal(h.open(hf as string, mount + 100000), -Errno.ESTALE);
    h.releaseMount(mount);
    h.releaseMount(mount);
    assert.equal(h.mountCount, 0);
    assert.equal(openFdCount(), before);
  } finally {
    h.close();
    for (const fd of [f, d, root, procFd]) closeQuietly(fd);
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("FileHandles: a file system without handles (procfs): prefer falls back, mandatory refuses", () => {
  const procFd = openat(AT_FDCWD, cString("/proc/self/fd"), O_PATH | O_DIRECTORY | O_CLOEXEC);
  const root = openat(AT_FDCWD, cString("/proc/self"), O_PATH | O_DIRECTORY | O_CLOEXEC);
  try {
    const never = new FileHandles("never", procFd);
    assert.equal(never.probe(root, () => true), false);
    assert.deepEqual(never.status, { mode: "never", active: false, reason: "" });
    const prefer = new FileHandles("prefer", procFd);
    assert.equal(prefer.probe(root, () => true), false);
    assert.equal(prefer.active, false);
    assert.match(prefer.status.reason, /name_to_handle_at: EOPNOTSUPP/);
    assert.equal(prefer.handleOf(root), -Errno.EOPNOTSUPP);
    const mandatory = new FileHandles("mandatory", procFd);
    assert.throws(() => mandatory.probe(root, () => true), (e: unknown) => {
      return e instanceof ErrnoError && e.errno === Errno.EOPNOTSUPP;
    });
    // A probe that reopens another file is a failure too.
    const dir = tempDir();
    const other = openat(AT_FDCWD, cString(dir), O_PATH | O_DIRECTORY | O_CLOEXEC);
    try {
      const wrong = new FileHandles("prefer", procFd);
      assert.equal(wrong.probe(other, () => false), false);
      assert.match(wrong.status.reason, /another file/);
      assert.equal(wrong.mountCount, 0);
    } finally {
      closeQuietly(other);
      Deno.removeSync(dir);
    }
  } finally {
    closeQuietly(root);
    closeQuietly(procFd);
  }
});

Deno.test("PassthroughFs on procfs: prefer serves with a descriptor per inode, mandatory does not start", () => {
  const before = openFdCount();
  assert.throws(
    () => new PassthroughFs({ sharedDir: "/proc/self", inodeFileHandles: "mandatory" }),
    (e: unknown) => e instanceof ErrnoError && e.errno === Errno.EOPNOTSUPP,
  );
  assert.equal(openFdCount(), before, "a refused start leaks no descriptor");
  const warned: string[] = [];
  const log = {
    error: () => {},
    warn: (m: string) => warned.push(m),
    info: () => {},
    debug: () => {},
    trace: () => {},
    enabled: () => true,
  };
  const fs = new PassthroughFs({ sharedDir: "/proc/self", log });
  try {
    assert.equal(fs.inodeFds.fileHandles, false);
    assert.equal(warned.length, 1);
    assert.match(warned[0] ?? "", /file handles unusable \(name_to_handle_at: EOPNOTSUPP\)/);
    const e = fs.lookup(ROOT_CTX, 1n, bytes("status"));
    assert.equal(fs.getattr(ROOT_CTX, e.nodeid, undefined).attr.mode & 0o170000, S_IFREG);
    assert.equal(fs.inodeFds.pinned, 2);
    fs.forget(ROOT_CTX, e.nodeid, 1n);
    assert.equal(fs.inodeFds.pinned, 1);
  } finally {
    fs.close();
  }
  assert.equal(openFdCount(), before);
});
