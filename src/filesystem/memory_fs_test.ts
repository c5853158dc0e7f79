import assert from "node:assert/strict";
import { Errno, ErrnoError } from "../ffi/errno.ts";
import {
  DT_DIR,
  DT_LNK,
  DT_REG,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  O_APPEND,
  O_EXCL,
  O_RDONLY,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
  R_OK,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  RENAME_WHITEOUT,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  S_ISGID,
  S_ISUID,
  SEEK_CUR,
  SEEK_DATA,
  SEEK_END,
  SEEK_HOLE,
  SEEK_SET,
  W_OK,
  X_OK,
  XATTR_CREATE,
  XATTR_REPLACE,
} from "../ffi/constants.ts";
import {
  FATTR_ATIME,
  FATTR_ATIME_NOW,
  FATTR_FH,
  FATTR_GID,
  FATTR_KILL_SUIDGID,
  FATTR_MODE,
  FATTR_MTIME,
  FATTR_MTIME_NOW,
  FATTR_SIZE,
  FATTR_UID,
  FUSE_DO_READDIRPLUS,
  FUSE_WRITE_KILL_SUIDGID,
  FUSE_WRITEBACK_CACHE,
} from "../wire/fuse.ts";
import type { Attr, Context, SetattrIn } from "./filesystem.ts";
import { MemoryFs } from "./memory_fs.ts";
import {
  assertErrno,
  BufferDestination,
  BufferSource,
  bytes,
  type Listed,
  ListSink,
  PlusSink,
  text,
} from "./passthrough/testing.ts";

const ctx: Context = { uid: 0, gid: 0, pid: 1 };
const alice: Context = { uid: 1000, gid: 1000, pid: 2 };
const KiB = 1024;
const CHUNK = 64 * KiB;
const PAGE = 4 * KiB;

const errno = assertErrno;

/** CREATE of `name` in `parent`, open read-write. */
function create(
  fs: MemoryFs,
  parent: bigint,
  name: string,
  opts: { flags?: number; mode?: number; who?: Context } = {},
): { nodeid: bigint; fh: bigint; attr: Attr } {
  const c = fs.create(
    opts.who ?? ctx,
    parent,
    bytes(name),
    S_IFREG | (opts.mode ?? 0o644),
    opts.flags ?? O_RDWR,
    0o022,
  );
  return { nodeid: c.entry.nodeid, fh: c.open.fh, attr: c.entry.attr };
}

function write(
  fs: MemoryFs,
  f: { nodeid: bigint; fh: bigint },
  at: number | bigint,
  data: Uint8Array | string,
  writeFlags = 0,
): number {
  return fs.write(ctx, f.nodeid, f.fh, BigInt(at), new BufferSource(data), writeFlags);
}

function read(
  fs: MemoryFs,
  f: { nodeid: bigint; fh: bigint },
  at: number | bigint,
  size: number,
): Uint8Array {
  const dst = new BufferDestination(Math.max(size, 1));
  const n = fs.read(ctx, f.nodeid, f.fh, BigInt(at), size, dst);
  return dst.buf.slice(0, n);
}

function readText(fs: MemoryFs, f: { nodeid: bigint; fh: bigint }, at: number, size: number) {
  return text(read(fs, f, at, size));
}

const NO_SET: SetattrIn = {
  valid: 0,
  fh: 0n,
  size: 0,
  atime: 0,
  atimeNsec: 0,
  mtime: 0,
  mtimeNsec: 0,
  mode: 0,
  uid: 0,
  gid: 0,
};

function setattr(fs: MemoryFs, nodeid: bigint, set: Partial<SetattrIn>, who = ctx): Attr {
  return fs.setattr(who, nodeid, { ...NO_SET, ...set }).attr;
}

function attrOf(fs: MemoryFs, nodeid: bigint): Attr {
  return fs.getattr(ctx, nodeid, undefined).attr;
}

function mkdir(fs: MemoryFs, parent: bigint, name: string, mode = 0o755, who = ctx): bigint {
  return fs.mkdir(who, parent, bytes(name), mode, 0o022).nodeid;
}

/** A whole READDIR listing of `dir`, `size` bytes per request. */
function listAll(fs: MemoryFs, dir: bigint, size = 4096): Listed[] {
  const fh = fs.opendir(ctx, dir, O_RDONLY).fh;
  const out: Listed[] = [];
  let off = 0n;
  for (;;) {
    const sink = new ListSink(size);
    fs.readdir(ctx, dir, fh, off, sink);
    if (sink.entries.length === 0) break;
    out.push(...sink.entries);
    off = (sink.entries.at(-1) as Listed).off;
  }
  fs.releasedir(ctx, dir, fh);
  return out;
}

function names(fs: MemoryFs, dir: bigint): string[] {
  return listAll(fs, dir).map((e) => e.name);
}

/** Whether (sec, nsec) `a` is after `b`. */
function after(a: [number, number], b: [number, number]): boolean {
  return a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);
}

const mtimeOf = (a: Attr): [number, number] => [a.mtime, a.mtimeNsec];
const ctimeOf = (a: Attr): [number, number] => [a.ctime, a.ctimeNsec];

// ------------------------------------------------------------------------------------ basics

Deno.test("MemoryFs root is nodeid 1: a directory 0755 owned by root listing '.' and '..' first", () => {
  const fs = new MemoryFs();
  const a = attrOf(fs, 1n);
  assert.equal(a.ino, 1n);
  assert.equal(a.mode, S_IFDIR | 0o755);
  assert.equal(a.nlink, 2);
  assert.equal(a.uid, 0);
  create(fs, 1n, "f");
  const l = listAll(fs, 1n);
  assert.deepEqual(l.map((e) => e.name), [".", "..", "f"]);
  assert.deepEqual(l.map((e) => e.type), [DT_DIR, DT_DIR, DT_REG]);
  assert.equal(l[0]?.ino, 1n);
  assert.equal(l[1]?.ino, 1n, "the root's '..' is itself");
  const custom = new MemoryFs({ rootMode: 0o1777, rootUid: 5, rootGid: 6 });
  const r = attrOf(custom, 1n);
  assert.equal(r.mode, S_IFDIR | 0o1777);
  assert.equal(r.uid, 5);
  assert.equal(r.gid, 6);
});

Deno.test("MemoryFs CREATE, WRITE and READ back; size, mtime and ctime follow the write", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "a.txt");
  assert.equal(f.attr.size, 0);
  assert.equal(f.attr.mode, S_IFREG | 0o644);
  assert.equal(write(fs, f, 0, "hello world"), 11);
  assert.equal(readText(fs, f, 0, 100), "hello world", "short only at end of file");
  assert.equal(readText(fs, f, 6, 3), "wor");
  assert.equal(readText(fs, f, 11, 10), "", "at the end");
  assert.equal(readText(fs, f, 5000, 10), "", "past the end");
  const a1 = attrOf(fs, f.nodeid);
  assert.equal(a1.size, 11);
  assert.ok(after(mtimeOf(a1), mtimeOf(f.attr)), "mtime moved");
  assert.ok(after(ctimeOf(a1), ctimeOf(f.attr)), "ctime moved");
  assert.equal(write(fs, f, 6, ""), 0, "an empty write");
  assert.deepEqual(mtimeOf(attrOf(fs, f.nodeid)), mtimeOf(a1), "an empty write changes nothing");
  // Across chunk boundaries.
  const big = Uint8Array.from({ length: 3 * CHUNK + 17 }, (_, i) => (i * 7) & 0xff);
  assert.equal(write(fs, f, CHUNK - 5, big), big.length);
  assert.deepEqual(read(fs, f, CHUNK - 5, big.length), big);
  assert.equal(attrOf(fs, f.nodeid).size, CHUNK - 5 + big.length);
  fs.flush(ctx, f.nodeid, f.fh, 0n);
  fs.fsync(ctx, f.nodeid, f.fh, true);
  fs.release(ctx, f.nodeid, f.fh, 0);
  assert.equal(fs.usage.handles, 0);
});

Deno.test("MemoryFs new nodes are owned by the caller; a set-gid directory passes its group on, and set-gid to subdirectories", () => {
  const fs = new MemoryFs({ rootMode: 0o777 });
  const f = create(fs, 1n, "mine", { who: alice, mode: 0o640 });
  assert.equal(f.attr.uid, 1000);
  assert.equal(f.attr.gid, 1000);
  assert.equal(f.attr.mode, S_IFREG | 0o640, "the mode as the guest's kernel sent it");
  const shared = mkdir(fs, 1n, "shared", 0o2775);
  setattr(fs, shared, { valid: FATTR_GID, gid: 50 });
  assert.equal(attrOf(fs, shared).mode, S_IFDIR | 0o2775);
  const g = create(fs, shared, "doc", { who: alice });
  assert.equal(g.attr.uid, 1000);
  assert.equal(g.attr.gid, 50, "group of the set-gid directory");
  const sub = fs.mkdir(alice, shared, bytes("sub"), 0o755, 0);
  assert.equal(sub.attr.gid, 50);
  assert.equal(sub.attr.mode, S_IFDIR | S_ISGID | 0o755, "set-gid inherited by a subdirectory");
  const link = fs.symlink(alice, shared, bytes("l"), bytes("doc"));
  assert.equal(link.attr.gid, 50);
  const node = fs.mknod(alice, shared, bytes("fifo"), S_IFIFO | 0o600, 0, 0);
  assert.equal(node.attr.gid, 50);
  assert.equal(node.attr.mode & S_ISGID, 0, "only directories inherit the bit");
});

Deno.test("MemoryFs LOOKUP: a missing name is ENOENT; '.' and '..' give the directory and its parent; +1 lookup each", () => {
  const fs = new MemoryFs();
  const d = mkdir(fs, 1n, "d");
  errno(() => fs.lookup(ctx, d, bytes("nothing")), Errno.ENOENT);
  assert.equal(fs.lookup(ctx, d, bytes(".")).nodeid, d);
  assert.equal(fs.lookup(ctx, d, bytes("..")).nodeid, 1n);
  assert.equal(fs.lookup(ctx, 1n, bytes("..")).nodeid, 1n);
  const e = fs.lookup(ctx, 1n, bytes("d"));
  assert.equal(e.nodeid, d);
  assert.equal(e.generation, 0n);
  assert.equal(e.attr.ino, d);
  assert.equal(e.entryTimeout, 1);
  const f = create(fs, 1n, "file");
  errno(() => fs.lookup(ctx, f.nodeid, bytes("x")), Errno.ENOTDIR, "a file is not a directory");
  const quick = new MemoryFs({ timeout: 0 });
  assert.equal(quick.lookup(ctx, 1n, bytes(".")).attrTimeout, 0);
});

Deno.test("MemoryFs names of 256 bytes are ENAMETOOLONG, 255 work; '/', NUL and empty names are EINVAL", () => {
  const fs = new MemoryFs();
  const ok = "n".repeat(255);
  const long = "n".repeat(256);
  create(fs, 1n, ok);
  assert.equal(fs.lookup(ctx, 1n, bytes(ok)).attr.mode & S_IFMT, S_IFREG);
  errno(() => create(fs, 1n, long), Errno.ENAMETOOLONG);
  errno(() => fs.lookup(ctx, 1n, bytes(long)), Errno.ENAMETOOLONG);
  errno(() => mkdir(fs, 1n, long), Errno.ENAMETOOLONG);
  errno(() => fs.symlink(ctx, 1n, bytes(long), bytes("t")), Errno.ENAMETOOLONG);
  errno(() => fs.mknod(ctx, 1n, bytes(long), S_IFIFO, 0, 0), Errno.ENAMETOOLONG);
  errno(() => fs.rename(ctx, 1n, bytes(ok), 1n, bytes(long), 0), Errno.ENAMETOOLONG);
  errno(() => fs.unlink(ctx, 1n, bytes(long)), Errno.ENAMETOOLONG);
  errno(() => fs.link(ctx, 2n, 1n, bytes(long)), Errno.ENAMETOOLONG);
  errno(() => create(fs, 1n, "a/b"), Errno.EINVAL);
  errno(() => fs.lookup(ctx, 1n, new Uint8Array([0x61, 0, 0x62])), Errno.EINVAL);
  errno(() => fs.lookup(ctx, 1n, new Uint8Array(0)), Errno.EINVAL);
  // Any other byte is a name, UTF-8 or not.
  const odd = new Uint8Array([0xff, 0x80, 0x01, 0x7f]);
  const e = fs.mknod(ctx, 1n, odd, S_IFREG | 0o600, 0, 0);
  assert.equal(fs.lookup(ctx, 1n, odd).nodeid, e.nodeid);
  assert.ok(listAll(fs, 1n).some((x) => x.ino === e.nodeid));
  // "." and ".." never become names.
  errno(() => mkdir(fs, 1n, "."), Errno.EEXIST);
  errno(() => mkdir(fs, 1n, ".."), Errno.EEXIST);
  errno(() => create(fs, 1n, "."), Errno.EISDIR);
  errno(() => fs.unlink(ctx, 1n, bytes("..")), Errno.EISDIR);
  errno(() => fs.rmdir(ctx, 1n, bytes(".")), Errno.EINVAL);
  errno(() => fs.rmdir(ctx, 1n, bytes("..")), Errno.ENOTEMPTY);
  errno(() => fs.rename(ctx, 1n, bytes("."), 1n, bytes("x"), 0), Errno.EBUSY);
  errno(() => fs.rename(ctx, 1n, bytes(ok), 1n, bytes(".."), 0), Errno.EBUSY);
});

// ------------------------------------------------------------------------------- hostile ids

Deno.test("MemoryFs unknown nodeids are ENOENT and unknown fhs EBADF, for every call", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f");
  const dir = fs.opendir(ctx, 1n, O_RDONLY).fh;
  const dst = new BufferDestination(16);
  const src = new BufferSource("x");
  const n = bytes("n");
  for (const bad of [0n, 999n, 2n ** 64n - 1n, -1n]) {
    errno(() => fs.lookup(ctx, bad, n), Errno.ENOENT);
    errno(() => fs.getattr(ctx, bad, undefined), Errno.ENOENT);
    errno(() => setattr(fs, bad, { valid: FATTR_MODE, mode: 0o777 }), Errno.ENOENT);
    errno(() => fs.readlink(ctx, bad), Errno.ENOENT);
    errno(() => fs.symlink(ctx, bad, n, n), Errno.ENOENT);
    errno(() => fs.mknod(ctx, bad, n, S_IFIFO, 0, 0), Errno.ENOENT);
    errno(() => fs.mkdir(ctx, bad, n, 0o755, 0), Errno.ENOENT);
    errno(() => fs.unlink(ctx, bad, n), Errno.ENOENT);
    errno(() => fs.rmdir(ctx, bad, n), Errno.ENOENT);
    errno(() => fs.rename(ctx, bad, n, 1n, n, 0), Errno.ENOENT);
    errno(() => fs.rename(ctx, 1n, bytes("f"), bad, n, 0), Errno.ENOENT);
    errno(() => fs.link(ctx, bad, 1n, n), Errno.ENOENT);
    errno(() => fs.link(ctx, f.nodeid, bad, n), Errno.ENOENT);
    errno(() => fs.open(ctx, bad, O_RDONLY, 0), Errno.ENOENT);
    errno(() => fs.create(ctx, bad, n, S_IFREG | 0o644, O_RDWR, 0), Errno.ENOENT);
    errno(() => fs.tmpfile(ctx, bad, S_IFREG | 0o600, O_RDWR, 0), Errno.ENOENT);
    errno(() => fs.opendir(ctx, bad, 0), Errno.ENOENT);
    errno(() => fs.access(ctx, bad, 0), Errno.ENOENT);
    errno(() => fs.statfs(ctx, bad), Errno.ENOENT);
    errno(() => fs.syncfs(ctx, bad), Errno.ENOENT);
    errno(() => fs.setxattr(ctx, bad, bytes("user.a"), n, 0), Errno.ENOENT);
    errno(() => fs.getxattr(ctx, bad, bytes("user.a"), 0), Errno.ENOENT);
    errno(() => fs.listxattr(ctx, bad, 0), Errno.ENOENT);
    errno(() => fs.removexattr(ctx, bad, bytes("user.a")), Errno.ENOENT);
    // A known fh under an unknown nodeid is EBADF: the pair must match.
    errno(() => fs.read(ctx, bad, f.fh, 0n, 1, dst), Errno.EBADF);
    errno(() => fs.write(ctx, bad, f.fh, 0n, src, 0), Errno.EBADF);
    errno(() => fs.readdir(ctx, bad, dir, 0n, new ListSink(4096)), Errno.EBADF);
    fs.forget(ctx, bad, 1n); // no reply, no crash
    fs.batchForget(ctx, [{ nodeid: bad, nlookup: 5n }]);
  }
  for (const fh of [0n, 12345n, 2n ** 64n - 1n]) {
    errno(() => fs.read(ctx, f.nodeid, fh, 0n, 1, dst), Errno.EBADF);
    errno(() => fs.write(ctx, f.nodeid, fh, 0n, src, 0), Errno.EBADF);
    errno(() => fs.flush(ctx, f.nodeid, fh, 0n), Errno.EBADF);
    errno(() => fs.fsync(ctx, f.nodeid, fh, false), Errno.EBADF);
    errno(() => fs.release(ctx, f.nodeid, fh, 0), Errno.EBADF);
    errno(() => fs.fallocate(ctx, f.nodeid, fh, 0n, 1n, 0), Errno.EBADF);
    errno(() => fs.lseek(ctx, f.nodeid, fh, 0n, SEEK_DATA), Errno.EBADF);
    errno(
      () => fs.copyFileRange(ctx, f.nodeid, fh, 0n, f.nodeid, f.fh, 10n, 1, 0),
      Errno.EBADF,
    );
    errno(() => fs.getattr(ctx, f.nodeid, fh), Errno.EBADF);
    errno(() => setattr(fs, f.nodeid, { valid: FATTR_SIZE | FATTR_FH, fh, size: 0 }), Errno.EBADF);
    errno(() => fs.readdir(ctx, 1n, fh, 0n, new ListSink(4096)), Errno.EBADF);
    errno(() => fs.readdirplus(ctx, 1n, fh, 0n, new PlusSink(4096)), Errno.EBADF);
    errno(() => fs.releasedir(ctx, 1n, fh), Errno.EBADF);
    errno(() => fs.fsyncdir(ctx, 1n, fh, false), Errno.EBADF);
  }
  // A file handle is not a directory handle, nor the other way round.
  errno(() => fs.readdir(ctx, f.nodeid, f.fh, 0n, new ListSink(4096)), Errno.EBADF);
  errno(() => fs.releasedir(ctx, f.nodeid, f.fh), Errno.EBADF);
  errno(() => fs.read(ctx, 1n, dir, 0n, 1, dst), Errno.EBADF);
  errno(() => fs.release(ctx, 1n, dir, 0), Errno.EBADF);
  // A handle of another node is EBADF.
  const g = create(fs, 1n, "g");
  errno(() => fs.read(ctx, g.nodeid, f.fh, 0n, 1, dst), Errno.EBADF);
  // Nothing was released by the attempts.
  assert.equal(fs.usage.handles, 3);
  fs.releasedir(ctx, 1n, dir);
  errno(() => fs.releasedir(ctx, 1n, dir), Errno.EBADF, "twice");
});

// --------------------------------------------------------------------------- node lifetime

Deno.test("MemoryFs FORGET releases an unlinked node only when its lookups and handles are gone", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f"); // lookup 1, handle 1
  write(fs, f, 0, "data");
  fs.lookup(ctx, 1n, bytes("f")); // lookup 2
  fs.unlink(ctx, 1n, bytes("f"));
  assert.equal(attrOf(fs, f.nodeid).nlink, 0);
  assert.equal(readText(fs, f, 0, 10), "data", "still readable through its handle");
  fs.forget(ctx, f.nodeid, 1n);
  fs.release(ctx, f.nodeid, f.fh, 0);
  assert.equal(attrOf(fs, f.nodeid).size, 4, "one lookup still held");
  const before = fs.usage.nodes;
  fs.forget(ctx, f.nodeid, 1n);
  assert.equal(fs.usage.nodes, before - 1);
  errno(() => attrOf(fs, f.nodeid), Errno.ENOENT, "released");
  assert.equal(fs.usage.bytes, 0, "its chunk went with it");
  // A forget of more than was looked up just empties the count.
  const g = create(fs, 1n, "g");
  fs.release(ctx, g.nodeid, g.fh, 0);
  fs.forget(ctx, g.nodeid, 2n ** 64n - 1n);
  assert.equal(attrOf(fs, g.nodeid).nlink, 1, "a named node stays");
  fs.unlink(ctx, 1n, bytes("g"));
  errno(() => attrOf(fs, g.nodeid), Errno.ENOENT, "its last name went and nothing holds it");
  // The root is never forgotten.
  fs.forget(ctx, 1n, 1000n);
  assert.equal(attrOf(fs, 1n).ino, 1n);
});

Deno.test("MemoryFs BATCH_FORGET and destroy() drop lookup counts; named nodes survive destroy", () => {
  const fs = new MemoryFs();
  const a = create(fs, 1n, "a");
  const b = create(fs, 1n, "b");
  write(fs, a, 0, "kept");
  fs.release(ctx, a.nodeid, a.fh, 0);
  fs.release(ctx, b.nodeid, b.fh, 0);
  fs.unlink(ctx, 1n, bytes("b"));
  fs.batchForget(ctx, [{ nodeid: b.nodeid, nlookup: 1n }, { nodeid: 77n, nlookup: 1n }]);
  errno(() => attrOf(fs, b.nodeid), Errno.ENOENT);
  // Unnamed, looked up and open when the session ends: gone after destroy.
  const c = create(fs, 1n, "c");
  fs.unlink(ctx, 1n, bytes("c"));
  const d = fs.opendir(ctx, 1n, 0);
  fs.destroy();
  errno(() => attrOf(fs, c.nodeid), Errno.ENOENT);
  assert.equal(fs.usage.handles, 0);
  errno(() => fs.releasedir(ctx, 1n, d.fh), Errno.EBADF, "handles end with the session");
  // The tree stays for the next session.
  const again = fs.lookup(ctx, 1n, bytes("a"));
  const o = fs.open(ctx, again.nodeid, O_RDONLY, 0);
  assert.equal(readText(fs, { nodeid: again.nodeid, fh: o.fh }, 0, 10), "kept");
});

Deno.test("MemoryFs a node open through a handle survives its unlink until RELEASE", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f");
  fs.forget(ctx, f.nodeid, 1n);
  fs.unlink(ctx, 1n, bytes("f"));
  assert.equal(write(fs, f, 0, "still here"), 10);
  assert.equal(readText(fs, f, 0, 100), "still here");
  assert.equal(names(fs, 1n).includes("f"), false);
  fs.release(ctx, f.nodeid, f.fh, 0);
  errno(() => attrOf(fs, f.nodeid), Errno.ENOENT);
  // An open directory removed: lists nothing, gets no names.
  const d = mkdir(fs, 1n, "d");
  const dh = fs.opendir(ctx, d, 0).fh;
  fs.rmdir(ctx, 1n, bytes("d"));
  const sink = new ListSink(4096);
  fs.readdir(ctx, d, dh, 0n, sink);
  assert.equal(sink.entries.length, 0);
  errno(() => mkdir(fs, d, "x"), Errno.ENOENT);
  errno(() => create(fs, d, "x"), Errno.ENOENT);
  assert.equal(attrOf(fs, d).nlink, 0);
  fs.releasedir(ctx, d, dh);
  fs.forget(ctx, d, 1n);
  errno(() => attrOf(fs, d), Errno.ENOENT);
});

// -------------------------------------------------------------------------------- links

Deno.test("MemoryFs hard links: nlink counts, data shared, ctime moves, a directory is EPERM", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "one");
  write(fs, f, 0, "shared");
  const d = mkdir(fs, 1n, "d");
  const before = attrOf(fs, f.nodeid);
  const e = fs.link(ctx, f.nodeid, d, bytes("two"));
  assert.equal(e.nodeid, f.nodeid);
  assert.equal(e.attr.nlink, 2);
  assert.ok(after(ctimeOf(e.attr), ctimeOf(before)), "link changes ctime");
  assert.deepEqual(mtimeOf(e.attr), mtimeOf(before), "not mtime");
  const o = fs.open(ctx, f.nodeid, O_RDONLY, 0);
  assert.equal(readText(fs, { nodeid: f.nodeid, fh: o.fh }, 0, 10), "shared");
  errno(() => fs.link(ctx, f.nodeid, d, bytes("two")), Errno.EEXIST);
  errno(() => fs.link(ctx, d, 1n, bytes("dirlink")), Errno.EPERM);
  fs.unlink(ctx, 1n, bytes("one"));
  assert.equal(attrOf(fs, f.nodeid).nlink, 1);
  assert.deepEqual(names(fs, d), [".", "..", "two"]);
  assert.ok(after(ctimeOf(attrOf(fs, f.nodeid)), ctimeOf(e.attr)), "unlink changes ctime");
});

Deno.test("MemoryFs symlink and readlink; readlink of a file is EINVAL; empty target ENOENT, 4096 bytes ENAMETOOLONG", () => {
  const fs = new MemoryFs();
  const target = bytes("../some/where");
  const e = fs.symlink(alice, 1n, bytes("l"), target);
  target[0] = 0x58; // the caller's buffer is reused: the file system kept a copy
  assert.equal(e.attr.mode, S_IFLNK | 0o777);
  assert.equal(e.attr.size, 13);
  assert.equal(e.attr.uid, 1000);
  assert.equal(text(fs.readlink(ctx, e.nodeid)), "../some/where");
  assert.equal(listAll(fs, 1n).find((x) => x.name === "l")?.type, DT_LNK);
  const f = create(fs, 1n, "f");
  errno(() => fs.readlink(ctx, f.nodeid), Errno.EINVAL);
  errno(() => fs.symlink(ctx, 1n, bytes("e"), new Uint8Array(0)), Errno.ENOENT);
  errno(() => fs.symlink(ctx, 1n, bytes("e"), bytes("x".repeat(4096))), Errno.ENAMETOOLONG);
  fs.symlink(ctx, 1n, bytes("e"), bytes("x".repeat(4095)));
  errno(() => fs.symlink(ctx, 1n, bytes("l"), bytes("t")), Errno.EEXIST);
  errno(() => fs.open(ctx, e.nodeid, O_RDONLY, 0), Errno.ELOOP);
});

Deno.test("MemoryFs mknod makes devices, FIFOs, sockets and files; a directory type is EINVAL", () => {
  const fs = new MemoryFs();
  const chr = fs.mknod(ctx, 1n, bytes("null"), S_IFCHR | 0o666, 0x103, 0);
  assert.equal(chr.attr.mode, S_IFCHR | 0o666);
  assert.equal(chr.attr.rdev, 0x103);
  const blk = fs.mknod(ctx, 1n, bytes("blk"), S_IFBLK | 0o660, 0x801, 0);
  assert.equal(blk.attr.rdev, 0x801);
  const fifo = fs.mknod(ctx, 1n, bytes("fifo"), S_IFIFO | 0o600, 7, 0);
  assert.equal(fifo.attr.rdev, 0, "rdev only for devices");
  const sock = fs.mknod(ctx, 1n, bytes("sock"), S_IFSOCK | 0o755, 0, 0);
  assert.equal(sock.attr.mode & S_IFMT, S_IFSOCK);
  const reg = fs.mknod(ctx, 1n, bytes("reg"), 0o600, 0, 0);
  assert.equal(reg.attr.mode, S_IFREG | 0o600, "type 0 is a regular file");
  errno(() => fs.mknod(ctx, 1n, bytes("d"), S_IFDIR | 0o755, 0, 0), Errno.EINVAL);
  errno(() => fs.mknod(ctx, 1n, bytes("l"), S_IFLNK | 0o777, 0, 0), Errno.EINVAL);
  errno(() => fs.mknod(ctx, 1n, bytes("null"), S_IFCHR, 0, 0), Errno.EEXIST);
  errno(() => fs.open(ctx, chr.nodeid, O_RDONLY, 0), Errno.EACCES, "never opened here");
  errno(() => fs.open(ctx, sock.nodeid, O_RDONLY, 0), Errno.ENXIO);
  assert.deepEqual(
    listAll(fs, 1n).slice(2).map((e) => e.type),
    [2, 6, 1, 12, DT_REG],
    "d_type of each",
  );
});

Deno.test("MemoryFs mkdir/rmdir keep the parent's nlink; rmdir of a non-empty directory is ENOTEMPTY; unlink of one EISDIR", () => {
  const fs = new MemoryFs();
  const a = mkdir(fs, 1n, "a", 0o700);
  assert.equal(attrOf(fs, a).mode, S_IFDIR | 0o700);
  assert.equal(attrOf(fs, a).nlink, 2);
  assert.equal(attrOf(fs, 1n).nlink, 3);
  const b = mkdir(fs, a, "b");
  assert.equal(attrOf(fs, a).nlink, 3);
  errno(() => mkdir(fs, 1n, "a"), Errno.EEXIST);
  errno(() => fs.rmdir(ctx, 1n, bytes("a")), Errno.ENOTEMPTY);
  errno(() => fs.unlink(ctx, 1n, bytes("a")), Errno.EISDIR);
  create(fs, 1n, "f");
  errno(() => fs.rmdir(ctx, 1n, bytes("f")), Errno.ENOTDIR);
  errno(() => fs.rmdir(ctx, 1n, bytes("zzz")), Errno.ENOENT);
  fs.rmdir(ctx, a, bytes("b"));
  assert.equal(attrOf(fs, a).nlink, 2);
  assert.equal(attrOf(fs, b).nlink, 0, "looked up still, but removed");
  fs.rmdir(ctx, 1n, bytes("a"));
  assert.equal(attrOf(fs, 1n).nlink, 2);
  assert.deepEqual(names(fs, 1n), [".", "..", "f"]);
});

Deno.test("MemoryFs a directory's mtime and ctime move when names are added or removed", () => {
  const fs = new MemoryFs();
  const d = mkdir(fs, 1n, "d");
  let last = attrOf(fs, d);
  const step = (what: string, fn: () => void): void => {
    fn();
    const now = attrOf(fs, d);
    assert.ok(after(mtimeOf(now), mtimeOf(last)), `${what}: mtime`);
    assert.ok(after(ctimeOf(now), ctimeOf(last)), `${what}: ctime`);
    last = now;
  };
  step("create", () => create(fs, d, "f"));
  step("mkdir", () => mkdir(fs, d, "sub"));
  step("symlink", () => fs.symlink(ctx, d, bytes("l"), bytes("f")));
  step("mknod", () => fs.mknod(ctx, d, bytes("p"), S_IFIFO | 0o600, 0, 0));
  step("link", () => fs.link(ctx, fs.lookup(ctx, d, bytes("f")).nodeid, d, bytes("f2")));
  step("unlink", () => fs.unlink(ctx, d, bytes("f2")));
  step("rename within", () => fs.rename(ctx, d, bytes("f"), d, bytes("g"), 0));
  step("rename out", () => fs.rename(ctx, d, bytes("g"), 1n, bytes("g"), 0));
  step("rename in", () => fs.rename(ctx, 1n, bytes("g"), d, bytes("g"), 0));
  step("rmdir", () => fs.rmdir(ctx, d, bytes("sub")));
  // The file itself: write moves mtime and ctime; chmod, chown, setxattr only ctime.
  const f = create(fs, 1n, "file");
  let fa = attrOf(fs, f.nodeid);
  const only = (what: string, fn: () => void): void => {
    fn();
    const now = attrOf(fs, f.nodeid);
    assert.ok(after(ctimeOf(now), ctimeOf(fa)), `${what}: ctime`);
    assert.deepEqual(mtimeOf(now), mtimeOf(fa), `${what}: not mtime`);
    fa = now;
  };
  only("chmod", () => setattr(fs, f.nodeid, { valid: FATTR_MODE, mode: 0o600 }));
  only("chown", () => setattr(fs, f.nodeid, { valid: FATTR_UID, uid: 7 }));
  only("setxattr", () => fs.setxattr(ctx, f.nodeid, bytes("user.x"), bytes("1"), 0));
  only("removexattr", () => fs.removexattr(ctx, f.nodeid, bytes("user.x")));
  only("rename", () => fs.rename(ctx, 1n, bytes("file"), 1n, bytes("file2"), 0));
});

Deno.test("MemoryFs timestamps carry nanoseconds and strictly increase", () => {
  const fs = new MemoryFs();
  const seen = new Set<string>();
  let prev: [number, number] = [0, 0];
  for (let i = 0; i < 200; i++) {
    const a = create(fs, 1n, `f${i}`).attr;
    assert.ok(a.mtimeNsec >= 0 && a.mtimeNsec < 1e9);
    assert.ok(after(mtimeOf(a), prev));
    prev = mtimeOf(a);
    seen.add(String(a.mtimeNsec % 1_000_000));
  }
  assert.ok(seen.size > 1, "not only whole milliseconds");
  const wall = Date.now() / 1000;
  assert.ok(Math.abs(prev[0] - wall) < 5, "wall-clock seconds");
});

// ------------------------------------------------------------------------------- rename

Deno.test("MemoryFs RENAME moves a file between directories, replacing the target; the directories' nlink follow", () => {
  const fs = new MemoryFs();
  const a = mkdir(fs, 1n, "a");
  const b = mkdir(fs, 1n, "b");
  const f = create(fs, a, "f");
  write(fs, f, 0, "moved");
  const old = create(fs, b, "g");
  fs.rename(ctx, a, bytes("f"), b, bytes("g"), 0);
  assert.deepEqual(names(fs, a), [".", ".."]);
  assert.deepEqual(names(fs, b), [".", "..", "g"]);
  assert.equal(fs.lookup(ctx, b, bytes("g")).nodeid, f.nodeid);
  assert.equal(attrOf(fs, old.nodeid).nlink, 0, "the replaced file lost its name");
  assert.equal(readText(fs, old, 0, 1), "", "and is still open");
  // A directory moves: nlink of both parents, and its "..".
  const sub = mkdir(fs, a, "sub");
  fs.rename(ctx, a, bytes("sub"), b, bytes("sub"), 0);
  assert.equal(attrOf(fs, a).nlink, 2);
  assert.equal(attrOf(fs, b).nlink, 3);
  assert.equal(fs.lookup(ctx, sub, bytes("..")).nodeid, b);
  assert.equal(listAll(fs, sub)[1]?.ino, b);
  // Over an empty directory.
  const empty = mkdir(fs, a, "empty");
  fs.rename(ctx, b, bytes("sub"), a, bytes("empty"), 0);
  assert.equal(attrOf(fs, empty).nlink, 0);
  assert.equal(attrOf(fs, a).nlink, 3);
  assert.equal(attrOf(fs, b).nlink, 2);
  // The data survived.
  const o = fs.open(ctx, f.nodeid, O_RDONLY, 0);
  assert.equal(readText(fs, { nodeid: f.nodeid, fh: o.fh }, 0, 10), "moved");
});

Deno.test("MemoryFs RENAME_NOREPLACE onto an existing name is EEXIST", () => {
  const fs = new MemoryFs();
  create(fs, 1n, "a");
  const b = create(fs, 1n, "b");
  errno(() => fs.rename(ctx, 1n, bytes("a"), 1n, bytes("b"), RENAME_NOREPLACE), Errno.EEXIST);
  errno(() => fs.rename(ctx, 1n, bytes("a"), 1n, bytes("a"), RENAME_NOREPLACE), Errno.EEXIST);
  errno(() => fs.rename(ctx, 1n, bytes("a"), 1n, bytes(".."), RENAME_NOREPLACE), Errno.EEXIST);
  assert.equal(fs.lookup(ctx, 1n, bytes("b")).nodeid, b.nodeid, "nothing changed");
  fs.rename(ctx, 1n, bytes("a"), 1n, bytes("c"), RENAME_NOREPLACE);
  assert.deepEqual(names(fs, 1n), [".", "..", "b", "c"]);
});

Deno.test("MemoryFs RENAME_EXCHANGE swaps a directory and a file across directories", () => {
  const fs = new MemoryFs();
  const a = mkdir(fs, 1n, "a");
  const b = mkdir(fs, 1n, "b");
  const dir = mkdir(fs, a, "x");
  create(fs, dir, "inside");
  const file = create(fs, b, "y");
  fs.rename(ctx, a, bytes("x"), b, bytes("y"), RENAME_EXCHANGE);
  assert.equal(fs.lookup(ctx, a, bytes("x")).nodeid, file.nodeid);
  assert.equal(fs.lookup(ctx, b, bytes("y")).nodeid, dir);
  assert.equal(attrOf(fs, a).nlink, 2, "a lost its subdirectory");
  assert.equal(attrOf(fs, b).nlink, 3, "b gained one");
  assert.equal(fs.lookup(ctx, dir, bytes("..")).nodeid, b);
  assert.deepEqual(names(fs, dir), [".", "..", "inside"]);
  // Exchange needs both names; a directory may not go inside itself.
  errno(
    () => fs.rename(ctx, a, bytes("x"), b, bytes("missing"), RENAME_EXCHANGE),
    Errno.ENOENT,
  );
  const inner = mkdir(fs, dir, "inner");
  errno(() => fs.rename(ctx, b, bytes("y"), dir, bytes("inner"), RENAME_EXCHANGE), Errno.EINVAL);
  errno(() => fs.rename(ctx, dir, bytes("inner"), b, bytes("y"), RENAME_EXCHANGE), Errno.EINVAL);
  errno(
    () => fs.rename(ctx, a, bytes("x"), b, bytes("y"), RENAME_EXCHANGE | RENAME_NOREPLACE),
    Errno.EINVAL,
  );
  // Two directories in one parent.
  const other = mkdir(fs, dir, "other");
  fs.rename(ctx, dir, bytes("inner"), dir, bytes("other"), RENAME_EXCHANGE);
  assert.equal(fs.lookup(ctx, dir, bytes("inner")).nodeid, other);
  assert.equal(attrOf(fs, dir).nlink, 4);
  assert.equal(attrOf(fs, inner).nlink, 2);
});

Deno.test("MemoryFs RENAME rules: ENOTEMPTY, EISDIR, ENOTDIR, EINVAL for a directory into itself, ENOENT", () => {
  const fs = new MemoryFs();
  const d = mkdir(fs, 1n, "d");
  const full = mkdir(fs, 1n, "full");
  create(fs, full, "x");
  create(fs, 1n, "f");
  const r = (a: string, b: string, flags = 0, from = 1n, to = 1n) =>
    fs.rename(ctx, from, bytes(a), to, bytes(b), flags);
  errno(() => r("d", "full"), Errno.ENOTEMPTY);
  errno(() => r("f", "d"), Errno.EISDIR);
  errno(() => r("d", "f"), Errno.ENOTDIR);
  errno(() => r("missing", "z"), Errno.ENOENT);
  errno(() => r("d", "z", 0, 1n, d), Errno.EINVAL, "into itself");
  const deep = mkdir(fs, mkdir(fs, d, "e"), "g");
  errno(() => r("d", "z", 0, 1n, deep), Errno.EINVAL, "into its own subdirectory");
  errno(() => fs.rename(ctx, d, bytes("e"), deep, bytes("z"), 0), Errno.EINVAL);
  errno(() => r("f", "g", 0x80), Errno.EINVAL, "an unknown flag");
  assert.deepEqual(names(fs, 1n), [".", "..", "d", "full", "f"], "nothing changed");
  // Renaming onto the same file (two names of one node) changes nothing.
  const f = fs.lookup(ctx, 1n, bytes("f")).nodeid;
  fs.link(ctx, f, 1n, bytes("f2"));
  r("f", "f2");
  assert.deepEqual(names(fs, 1n), [".", "..", "d", "full", "f", "f2"]);
  assert.equal(attrOf(fs, f).nlink, 2);
  r("f", "f");
});

Deno.test("MemoryFs RENAME_WHITEOUT leaves a 0/0 character device where the source was", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f");
  fs.rename(ctx, 1n, bytes("f"), 1n, bytes("g"), RENAME_WHITEOUT);
  const w = fs.lookup(ctx, 1n, bytes("f"));
  assert.equal(w.attr.mode, S_IFCHR);
  assert.equal(w.attr.rdev, 0);
  assert.equal(fs.lookup(ctx, 1n, bytes("g")).nodeid, f.nodeid);
});

// -------------------------------------------------------------------- sparse files and space

Deno.test("MemoryFs sparse files: holes read as zeros, blocks count the 4 KiB pages holding data", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "sparse");
  write(fs, f, 10 * CHUNK + 3, "x");
  const a = attrOf(fs, f.nodeid);
  assert.equal(a.size, 10 * CHUNK + 4);
  assert.equal(a.blocks, PAGE / 512, "one page");
  assert.equal(fs.usage.bytes, CHUNK, "in one 64 KiB chunk");
  const all = read(fs, f, 0, 1024 * KiB);
  assert.equal(all.length, 10 * CHUNK + 4, "short at the end of the file");
  assert.ok(all.subarray(0, -1).every((b) => b === 0), "a hole reads as zeros");
  assert.deepEqual(read(fs, f, 10 * CHUNK, 8), new Uint8Array([0, 0, 0, 0x78]));
  // Far out: a file of 1 TiB holding one byte.
  write(fs, f, 2 ** 40 - 1, "z");
  assert.equal(attrOf(fs, f.nodeid).size, 2 ** 40);
  assert.equal(attrOf(fs, f.nodeid).blocks, 2 * PAGE / 512);
  assert.equal(readText(fs, f, 2 ** 40 - 2, 10), "\0z");
  // A write across a hole and data keeps both right.
  write(fs, f, 10 * CHUNK - 2, "abcd");
  assert.equal(readText(fs, f, 10 * CHUNK - 2, 6), "abcd\0x");
});

Deno.test("MemoryFs SEEK_DATA and SEEK_HOLE work on 4 KiB pages; at or past the end is ENXIO", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f");
  const seek = (at: number | bigint, whence: number) =>
    Number(fs.lseek(ctx, f.nodeid, f.fh, BigInt(at), whence));
  setattr(fs, f.nodeid, { valid: FATTR_SIZE, size: 10 * CHUNK });
  assert.equal(seek(0, SEEK_HOLE), 0);
  errno(() => seek(0, SEEK_DATA), Errno.ENXIO, "all hole");
  write(fs, f, 3 * CHUNK + 100, "a");
  write(fs, f, 4 * CHUNK, "b");
  write(fs, f, 7 * CHUNK + 5, "c");
  assert.equal(seek(0, SEEK_DATA), 3 * CHUNK);
  assert.equal(seek(3 * CHUNK + 10, SEEK_DATA), 3 * CHUNK + 10);
  assert.equal(seek(3 * CHUNK, SEEK_HOLE), 3 * CHUNK + PAGE, "the rest of the chunk is a hole");
  assert.equal(seek(3 * CHUNK + PAGE, SEEK_DATA), 4 * CHUNK);
  assert.equal(seek(4 * CHUNK, SEEK_HOLE), 4 * CHUNK + PAGE);
  assert.equal(seek(4 * CHUNK + PAGE, SEEK_DATA), 7 * CHUNK);
  assert.equal(seek(5 * CHUNK, SEEK_DATA), 7 * CHUNK);
  assert.equal(seek(7 * CHUNK + 9, SEEK_HOLE), 7 * CHUNK + PAGE);
  errno(() => seek(7 * CHUNK + PAGE, SEEK_DATA), Errno.ENXIO);
  errno(() => seek(8 * CHUNK, SEEK_DATA), Errno.ENXIO);
  assert.equal(seek(10 * CHUNK - 1, SEEK_HOLE), 10 * CHUNK - 1);
  errno(() => seek(10 * CHUNK, SEEK_HOLE), Errno.ENXIO);
  errno(() => seek(2n ** 64n - 1n, SEEK_DATA), Errno.ENXIO, "a negative offset");
  // The end of the file is a hole even inside a chunk.
  const g = create(fs, 1n, "g");
  write(fs, g, 0, "12345");
  assert.equal(fs.lseek(ctx, g.nodeid, g.fh, 0n, SEEK_HOLE), 5n);
  assert.equal(fs.lseek(ctx, g.nodeid, g.fh, 2n, SEEK_DATA), 2n);
  // SEEK_SET and SEEK_END; SEEK_CUR needs a position only the guest has.
  assert.equal(fs.lseek(ctx, g.nodeid, g.fh, 3n, SEEK_SET), 3n);
  assert.equal(fs.lseek(ctx, g.nodeid, g.fh, BigInt.asUintN(64, -2n), SEEK_END), 3n);
  errno(() => fs.lseek(ctx, g.nodeid, g.fh, BigInt.asUintN(64, -9n), SEEK_END), Errno.EINVAL);
  errno(() => fs.lseek(ctx, g.nodeid, g.fh, 0n, SEEK_CUR), Errno.EINVAL);
  errno(() => fs.lseek(ctx, g.nodeid, g.fh, 0n, 99), Errno.EINVAL);
});

Deno.test("MemoryFs fallocate: mode 0 and KEEP_SIZE allocate, PUNCH_HOLE|KEEP_SIZE frees whole pages and zeros partial ones, ZERO_RANGE zeros", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f");
  const falloc = (at: number, len: number, mode: number) =>
    fs.fallocate(ctx, f.nodeid, f.fh, BigInt(at), BigInt(len), mode);
  falloc(0, 2 * CHUNK, 0);
  assert.equal(attrOf(fs, f.nodeid).size, 2 * CHUNK);
  assert.equal(attrOf(fs, f.nodeid).blocks, 2 * CHUNK / 512);
  falloc(2 * CHUNK, 1, FALLOC_FL_KEEP_SIZE);
  assert.equal(attrOf(fs, f.nodeid).size, 2 * CHUNK, "KEEP_SIZE");
  assert.equal(attrOf(fs, f.nodeid).blocks, (2 * CHUNK + PAGE) / 512, "one page more");
  assert.ok(read(fs, f, 0, 2 * CHUNK).every((b) => b === 0));
  // Fill, then punch [CHUNK/2, 2*CHUNK + 10): the 24 pages wholly inside go (the second chunk
  // with them), the page holding the last 10 bytes is zeroed there.
  write(fs, f, 0, new Uint8Array(3 * CHUNK).fill(0x41));
  const before = attrOf(fs, f.nodeid);
  falloc(CHUNK / 2, CHUNK / 2 + CHUNK + 10, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
  const a = attrOf(fs, f.nodeid);
  assert.equal(a.size, 3 * CHUNK);
  assert.equal(a.blocks, (3 * CHUNK - 24 * PAGE) / 512, "24 pages freed");
  assert.equal(fs.usage.bytes, 2 * CHUNK, "one chunk freed");
  assert.ok(after(mtimeOf(a), mtimeOf(before)));
  const data = read(fs, f, 0, 3 * CHUNK);
  assert.ok(data.subarray(0, CHUNK / 2).every((b) => b === 0x41));
  assert.ok(data.subarray(CHUNK / 2, 2 * CHUNK + 10).every((b) => b === 0));
  assert.ok(data.subarray(2 * CHUNK + 10).every((b) => b === 0x41));
  // ZERO_RANGE zeros (and allocates); past the end it grows the file unless KEEP_SIZE.
  falloc(2 * CHUNK + 20, 5, FALLOC_FL_ZERO_RANGE);
  assert.deepEqual(read(fs, f, 2 * CHUNK + 19, 7), new Uint8Array([65, 0, 0, 0, 0, 0, 65]));
  falloc(3 * CHUNK, 100, FALLOC_FL_ZERO_RANGE);
  assert.equal(attrOf(fs, f.nodeid).size, 3 * CHUNK + 100);
  falloc(4 * CHUNK, 100, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE);
  assert.equal(attrOf(fs, f.nodeid).size, 3 * CHUNK + 100);
  // A punch past everything is fine and frees nothing.
  falloc(100 * CHUNK, CHUNK, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
});

Deno.test("MemoryFs sparse files answer as tmpfs does, page by page: SEEK_DATA/SEEK_HOLE, blocks, a punched page", () => {
  // The guest spec's sparse step (spec/guest_local_fs_test.ts) compares with tmpfs: 64 KiB chunk
  // granularity answered 65536 where tmpfs says 4096, 256 blocks for 16, and kept a punched page.
  const fs = new MemoryFs();
  const f = create(fs, 1n, "s");
  const M = 1 << 20;
  const seek = (at: number, whence: number) =>
    Number(fs.lseek(ctx, f.nodeid, f.fh, BigInt(at), whence));
  write(fs, f, 0, new Uint8Array(PAGE).fill(0x61));
  write(fs, f, M, new Uint8Array(PAGE).fill(0x62));
  setattr(fs, f.nodeid, { valid: FATTR_SIZE, size: 4 * M });
  assert.deepEqual(
    [seek(0, SEEK_DATA), seek(0, SEEK_HOLE), seek(PAGE, SEEK_DATA), seek(M, SEEK_HOLE)],
    [0, PAGE, M, M + PAGE],
  );
  assert.equal(seek(M + PAGE, SEEK_HOLE), M + PAGE);
  errno(() => seek(2 * M, SEEK_DATA), Errno.ENXIO, "in the trailing hole");
  assert.equal(attrOf(fs, f.nodeid).blocks, 16);
  fs.fallocate(ctx, f.nodeid, f.fh, 0n, BigInt(PAGE), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
  assert.equal(seek(0, SEEK_DATA), M, "the punched page is a hole");
  assert.equal(attrOf(fs, f.nodeid).blocks, 8);
  assert.equal(attrOf(fs, f.nodeid).size, 4 * M);
  assert.ok(read(fs, f, 0, PAGE).every((b) => b === 0));
  // A page punched in part is still data (zeroed there).
  write(fs, f, 0, "abcdefgh");
  fs.fallocate(ctx, f.nodeid, f.fh, 2n, 4n, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
  assert.equal(seek(0, SEEK_DATA), 0);
  assert.equal(seek(0, SEEK_HOLE), PAGE);
  assert.equal(readText(fs, f, 0, 8), "ab\0\0\0\0gh");
  // copy_file_range: a page of the source that is a hole stays one in the target.
  const c = create(fs, 1n, "copy");
  assert.equal(fs.copyFileRange(ctx, f.nodeid, f.fh, 0n, c.nodeid, c.fh, 0n, CHUNK, 0), CHUNK);
  assert.equal(attrOf(fs, c.nodeid).blocks, 8, "one page of data copied");
  assert.equal(fs.lseek(ctx, c.nodeid, c.fh, 0n, SEEK_HOLE), BigInt(PAGE));
  // Truncating into a page keeps that page and drops those after it.
  write(fs, f, M, new Uint8Array(3 * PAGE).fill(1));
  assert.equal(attrOf(fs, f.nodeid).blocks, 32);
  setattr(fs, f.nodeid, { valid: FATTR_SIZE, size: M + 100 });
  assert.equal(attrOf(fs, f.nodeid).blocks, 16);
  assert.equal(seek(M, SEEK_HOLE), M + 100, "the end of the file");
  // Allocated (posix_fallocate): every page of the range holds data.
  const p = create(fs, 1n, "pre");
  fs.fallocate(ctx, p.nodeid, p.fh, 0n, BigInt(8 * M), 0);
  assert.equal(attrOf(fs, p.nodeid).blocks, 8 * M / 512);
  assert.equal(fs.lseek(ctx, p.nodeid, p.fh, 0n, SEEK_HOLE), BigInt(8 * M));
});

Deno.test("MemoryFs fallocate modes it lacks are EOPNOTSUPP, bad ranges EINVAL, a read-only handle EBADF", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f");
  const falloc = (at: bigint, len: bigint, mode: number, fh = f.fh) =>
    fs.fallocate(ctx, f.nodeid, fh, at, len, mode);
  errno(() => falloc(0n, 10n, FALLOC_FL_PUNCH_HOLE), Errno.EOPNOTSUPP, "PUNCH_HOLE alone");
  errno(() => falloc(0n, 10n, 0x08), Errno.EOPNOTSUPP, "COLLAPSE_RANGE");
  errno(() => falloc(0n, 10n, 0x20), Errno.EOPNOTSUPP, "INSERT_RANGE");
  errno(() => falloc(0n, 10n, 0x40), Errno.EOPNOTSUPP, "UNSHARE_RANGE");
  errno(
    () => falloc(0n, 10n, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE),
    Errno.EOPNOTSUPP,
  );
  errno(() => falloc(0n, 0n, 0), Errno.EINVAL, "length 0");
  errno(() => falloc(BigInt.asUintN(64, -1n), 10n, 0), Errno.EINVAL, "negative offset");
  errno(() => falloc(0n, BigInt.asUintN(64, -1n), 0), Errno.EINVAL, "negative length");
  errno(() => falloc(2n ** 62n, 2n ** 62n, 0), Errno.EFBIG);
  const ro = fs.open(ctx, f.nodeid, O_RDONLY, 0).fh;
  errno(() => falloc(0n, 10n, 0, ro), Errno.EBADF);
  assert.equal(attrOf(fs, f.nodeid).size, 0);
});

Deno.test("MemoryFs writes beyond maxBytes are ENOSPC (or short), and the space comes back on unlink", () => {
  const fs = new MemoryFs({ maxBytes: 4 * CHUNK });
  const f = create(fs, 1n, "f");
  assert.equal(write(fs, f, 0, new Uint8Array(3 * CHUNK).fill(1)), 3 * CHUNK);
  const n = write(fs, f, 3 * CHUNK, new Uint8Array(2 * CHUNK).fill(2));
  assert.equal(n, CHUNK, "a short write: what fits");
  errno(() => write(fs, f, 4 * CHUNK, "x"), Errno.ENOSPC);
  errno(() => write(fs, f, 100 * CHUNK, new Uint8Array(3 * CHUNK)), Errno.ENOSPC);
  assert.equal(write(fs, f, 10, "overwrite"), 9, "allocated chunks can still be written");
  errno(() => fs.fallocate(ctx, f.nodeid, f.fh, 0n, BigInt(8 * CHUNK), 0), Errno.ENOSPC);
  assert.equal(attrOf(fs, f.nodeid).size, 4 * CHUNK, "a failed fallocate changed nothing");
  errno(() => fs.setxattr(ctx, f.nodeid, bytes("user.big"), new Uint8Array(100), 0), Errno.ENOSPC);
  errno(() => fs.symlink(ctx, 1n, bytes("l"), bytes("target")), Errno.ENOSPC);
  assert.equal(fs.usage.bytes, 4 * CHUNK);
  // Holes cost nothing.
  setattr(fs, f.nodeid, { valid: FATTR_SIZE, size: 2 ** 45 });
  assert.equal(fs.usage.bytes, 4 * CHUNK);
  // Truncate frees.
  setattr(fs, f.nodeid, { valid: FATTR_SIZE, size: CHUNK + 1 });
  assert.equal(fs.usage.bytes, 2 * CHUNK);
  fs.release(ctx, f.nodeid, f.fh, 0);
  fs.unlink(ctx, 1n, bytes("f"));
  fs.forget(ctx, f.nodeid, 1n);
  assert.equal(fs.usage.bytes, 0);
  const g = create(fs, 1n, "g");
  assert.equal(write(fs, g, 0, new Uint8Array(4 * CHUNK)), 4 * CHUNK);
});

Deno.test("MemoryFs statfs reports blocks/bfree from maxBytes and files/ffree from maxNodes", () => {
  const fs = new MemoryFs({ maxBytes: 1024 * 1024, maxNodes: 100 });
  let s = fs.statfs(ctx, 1n);
  assert.equal(s.bsize, 4096);
  assert.equal(s.frsize, 4096);
  assert.equal(s.blocks, 256);
  assert.equal(s.bfree, 256);
  assert.equal(s.bavail, 256);
  assert.equal(s.files, 100);
  assert.equal(s.ffree, 99, "the root");
  assert.equal(s.namelen, 255);
  const f = create(fs, 1n, "f");
  write(fs, f, 0, "x");
  s = fs.statfs(ctx, f.nodeid);
  assert.equal(s.bfree, 256 - 16);
  assert.equal(s.ffree, 98);
  const dflt = new MemoryFs().statfs(ctx, 1n);
  assert.equal(dflt.blocks * dflt.frsize, 1024 ** 3, "1 GiB by default");
});

Deno.test("MemoryFs creating past maxNodes is ENOSPC; hard links count as inodes, as in tmpfs", () => {
  const fs = new MemoryFs({ maxNodes: 4 });
  const a = create(fs, 1n, "a");
  mkdir(fs, 1n, "d");
  fs.link(ctx, a.nodeid, 1n, bytes("a2"));
  assert.equal(fs.usage.inodes, 4);
  errno(() => create(fs, 1n, "b"), Errno.ENOSPC);
  errno(() => mkdir(fs, 1n, "e"), Errno.ENOSPC);
  errno(() => fs.symlink(ctx, 1n, bytes("l"), bytes("a")), Errno.ENOSPC);
  errno(() => fs.mknod(ctx, 1n, bytes("p"), S_IFIFO, 0, 0), Errno.ENOSPC);
  errno(() => fs.link(ctx, a.nodeid, 1n, bytes("a3")), Errno.ENOSPC);
  errno(() => fs.tmpfile(ctx, 1n, S_IFREG | 0o600, O_RDWR, 0), Errno.ENOSPC);
  fs.unlink(ctx, 1n, bytes("a2"));
  assert.equal(fs.usage.inodes, 3);
  create(fs, 1n, "b");
  assert.equal(fs.statfs(ctx, 1n).ffree, 0);
});

// ------------------------------------------------------------------------------- xattrs

Deno.test("MemoryFs xattrs: set, get, list, remove; XATTR_CREATE and XATTR_REPLACE; size-0 queries; ERANGE", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f").nodeid;
  const name = bytes("user.color");
  const value = bytes("blue");
  fs.setxattr(ctx, f, name, value, 0);
  value[0] = 0x58; // the caller's buffer is reused
  assert.equal(fs.getxattr(ctx, f, bytes("user.color"), 0), 4, "size 0: the length");
  assert.equal(text(fs.getxattr(ctx, f, name, 4) as Uint8Array), "blue");
  assert.equal(text(fs.getxattr(ctx, f, name, 100) as Uint8Array), "blue");
  errno(() => fs.getxattr(ctx, f, name, 3), Errno.ERANGE, "value longer than the size asked");
  errno(() => fs.getxattr(ctx, f, bytes("user.none"), 10), Errno.ENODATA);
  errno(() => fs.setxattr(ctx, f, name, bytes("red"), XATTR_CREATE), Errno.EEXIST);
  errno(() => fs.setxattr(ctx, f, bytes("user.n"), bytes("1"), XATTR_REPLACE), Errno.ENODATA);
  fs.setxattr(ctx, f, name, bytes("red"), XATTR_REPLACE);
  assert.equal(text(fs.getxattr(ctx, f, name, 10) as Uint8Array), "red");
  fs.setxattr(ctx, f, bytes("trusted.t"), new Uint8Array(0), XATTR_CREATE);
  fs.setxattr(ctx, f, bytes("security.s"), bytes("s"), 0);
  assert.equal(fs.getxattr(ctx, f, bytes("trusted.t"), 0), 0, "an empty value");
  const list = "user.color\0trusted.t\0security.s\0";
  assert.equal(fs.listxattr(ctx, f, 0), list.length);
  assert.equal(text(fs.listxattr(ctx, f, 100) as Uint8Array), list);
  errno(() => fs.listxattr(ctx, f, list.length - 1), Errno.ERANGE);
  assert.equal(
    text(fs.listxattr(alice, f, 100) as Uint8Array),
    "user.color\0security.s\0",
    "trusted.* only for the privileged",
  );
  fs.removexattr(ctx, f, name);
  errno(() => fs.removexattr(ctx, f, name), Errno.ENODATA);
  errno(() => fs.getxattr(ctx, f, name, 0), Errno.ENODATA);
  fs.removexattr(ctx, f, bytes("trusted.t"));
  fs.removexattr(ctx, f, bytes("security.s"));
  assert.equal(fs.listxattr(ctx, f, 0), 0);
  assert.equal(fs.usage.bytes, 0, "the bytes were given back");
  // Directories take them too.
  fs.setxattr(ctx, 1n, bytes("user.dir"), bytes("1"), 0);
  assert.equal(fs.getxattr(ctx, 1n, bytes("user.dir"), 0), 1);
});

Deno.test("MemoryFs xattr names outside user/trusted/security are EOPNOTSUPP, bad lengths ERANGE, values over 64 KiB E2BIG", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f").nodeid;
  errno(
    () => fs.setxattr(ctx, f, bytes("system.posix_acl_access"), bytes("x"), 0),
    Errno.EOPNOTSUPP,
  );
  errno(() => fs.setxattr(ctx, f, bytes("other"), bytes("x"), 0), Errno.EOPNOTSUPP);
  errno(() => fs.getxattr(ctx, f, bytes("os2.x"), 0), Errno.EOPNOTSUPP);
  errno(() => fs.setxattr(ctx, f, bytes("user."), bytes("x"), 0), Errno.EINVAL);
  errno(() => fs.setxattr(ctx, f, new Uint8Array(0), bytes("x"), 0), Errno.ERANGE);
  errno(() => fs.setxattr(ctx, f, bytes("user." + "n".repeat(251)), bytes("x"), 0), Errno.ERANGE);
  fs.setxattr(ctx, f, bytes("user." + "n".repeat(250)), bytes("x"), 0);
  errno(() => fs.setxattr(ctx, f, bytes("user.v"), new Uint8Array(65537), 0), Errno.E2BIG);
  fs.setxattr(ctx, f, bytes("user.v"), new Uint8Array(65536), 0);
  assert.equal(fs.getxattr(ctx, f, bytes("user.v"), 0), 65536);
  errno(() => fs.setxattr(ctx, f, bytes("user.x"), bytes("x"), 4), Errno.EINVAL, "unknown flag");
  // The list of names is bounded by 64 KiB, as Linux's.
  let refused = -1;
  for (let i = 0; i < 300 && refused < 0; i++) {
    const name = bytes(`user.${String(i).padStart(3, "0")}${"n".repeat(247)}`);
    try {
      fs.setxattr(ctx, f, name, bytes(""), 0);
    } catch (e) {
      assert.ok(e instanceof ErrnoError && e.errno === Errno.ENOSPC, `${e}`);
      refused = i;
    }
  }
  const listed = fs.listxattr(ctx, f, 0) as number;
  assert.ok(refused > 0 && listed <= 65536 && listed + 256 > 65536, `${refused} ${listed}`);
});

Deno.test("MemoryFs user.* xattrs on a symlink or a device are EPERM (ENODATA to read); trusted.* works", () => {
  const fs = new MemoryFs();
  const l = fs.symlink(ctx, 1n, bytes("l"), bytes("t")).nodeid;
  const c = fs.mknod(ctx, 1n, bytes("c"), S_IFCHR | 0o600, 0, 0).nodeid;
  errno(() => fs.setxattr(ctx, l, bytes("user.a"), bytes("1"), 0), Errno.EPERM);
  errno(() => fs.setxattr(ctx, c, bytes("user.a"), bytes("1"), 0), Errno.EPERM);
  errno(() => fs.getxattr(ctx, l, bytes("user.a"), 0), Errno.ENODATA);
  fs.setxattr(ctx, l, bytes("trusted.overlay.opaque"), bytes("y"), 0);
  assert.equal(text(fs.getxattr(ctx, l, bytes("trusted.overlay.opaque"), 1) as Uint8Array), "y");
});

// ------------------------------------------------------------------------------- setattr

Deno.test("MemoryFs SETATTR mode, owner, size, atime/mtime with nanoseconds and *_NOW; ctime moves", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f");
  let a = setattr(fs, f.nodeid, { valid: FATTR_MODE, mode: S_IFDIR | 0o4751 });
  assert.equal(a.mode, S_IFREG | 0o4751, "the type never changes");
  a = setattr(fs, f.nodeid, { valid: FATTR_MODE, mode: 0o640 });
  a = setattr(fs, f.nodeid, { valid: FATTR_UID | FATTR_GID, uid: 1000, gid: 2000 });
  assert.equal(a.uid, 1000);
  assert.equal(a.gid, 2000);
  a = setattr(fs, f.nodeid, { valid: FATTR_GID, gid: 3 });
  assert.equal(a.uid, 1000, "uid kept");
  assert.equal(a.gid, 3);
  a = setattr(fs, f.nodeid, {
    valid: FATTR_ATIME | FATTR_MTIME,
    atime: 1_000_000_000,
    atimeNsec: 123_456_789,
    mtime: -5,
    mtimeNsec: 999_999_999,
  });
  assert.deepEqual([a.atime, a.atimeNsec, a.mtime, a.mtimeNsec], [
    1_000_000_000,
    123_456_789,
    -5,
    999_999_999,
  ]);
  const c0 = ctimeOf(a);
  const b = setattr(fs, f.nodeid, { valid: FATTR_ATIME | FATTR_ATIME_NOW, atime: 1 });
  assert.ok(b.atime > 1_600_000_000, "ATIME_NOW wins over the time sent");
  assert.equal(b.mtime, -5, "mtime left");
  assert.ok(after(ctimeOf(b), c0));
  const m = setattr(fs, f.nodeid, { valid: FATTR_MTIME | FATTR_MTIME_NOW });
  assert.ok(m.mtime > 1_600_000_000);
  assert.deepEqual([m.atime, m.atimeNsec], [b.atime, b.atimeNsec], "atime left");
  // valid 0 is a getattr.
  assert.deepEqual(setattr(fs, f.nodeid, { valid: 0 }), attrOf(fs, f.nodeid));
  // Size through the handle (ftruncate).
  write(fs, f, 0, "0123456789");
  const t = setattr(fs, f.nodeid, { valid: FATTR_SIZE | FATTR_FH, fh: f.fh, size: 4 });
  assert.equal(t.size, 4);
  assert.ok(after(mtimeOf(t), mtimeOf(m)));
  // Symlinks and directories take modes and owners too.
  const d = mkdir(fs, 1n, "d");
  assert.equal(setattr(fs, d, { valid: FATTR_MODE, mode: 0o1777 }).mode, S_IFDIR | 0o1777);
});

Deno.test("MemoryFs SETATTR size: shrink and grow; bytes cut off read as zeros after growing back", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f");
  write(fs, f, 0, new Uint8Array(CHUNK + 100).fill(9));
  const a = setattr(fs, f.nodeid, { valid: FATTR_SIZE, size: 10 });
  assert.equal(a.size, 10);
  assert.equal(a.blocks, PAGE / 512, "the page holding the 10 bytes");
  const g = setattr(fs, f.nodeid, { valid: FATTR_SIZE, size: CHUNK + 100 });
  assert.equal(g.size, CHUNK + 100);
  const data = read(fs, f, 0, CHUNK + 100);
  assert.ok(data.subarray(0, 10).every((b) => b === 9));
  assert.ok(data.subarray(10).every((b) => b === 0), "no old bytes come back");
  const same = attrOf(fs, f.nodeid);
  const s = setattr(fs, f.nodeid, { valid: FATTR_SIZE, size: CHUNK + 100 });
  assert.deepEqual(mtimeOf(s), mtimeOf(same), "the same size: mtime kept (POSIX)");
  assert.ok(after(ctimeOf(s), ctimeOf(same)));
  const d = mkdir(fs, 1n, "d");
  errno(() => setattr(fs, d, { valid: FATTR_SIZE, size: 0 }), Errno.EISDIR);
  const l = fs.symlink(ctx, 1n, bytes("l"), bytes("f")).nodeid;
  errno(() => setattr(fs, l, { valid: FATTR_SIZE, size: 0 }), Errno.EINVAL);
  errno(() => setattr(fs, f.nodeid, { valid: FATTR_SIZE, size: 2 ** 53 }), Errno.EFBIG);
  errno(() => setattr(fs, f.nodeid, { valid: FATTR_SIZE, size: 2 ** 64 }), Errno.EINVAL);
  errno(
    () => setattr(fs, f.nodeid, { valid: FATTR_SIZE | FATTR_MODE, size: 2 ** 64, mode: 0 }),
    Errno.EINVAL,
  );
  assert.equal(attrOf(fs, f.nodeid).mode, S_IFREG | 0o644, "a failed SETATTR changes nothing");
});

Deno.test("MemoryFs chown clears set-uid and group-executable set-gid of a file; FATTR_KILL_SUIDGID and WRITE_KILL_SUIDGID do too", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f", { mode: 0o6755 });
  assert.equal(f.attr.mode, S_IFREG | 0o6755);
  let a = setattr(fs, f.nodeid, { valid: FATTR_UID, uid: 5 });
  assert.equal(a.mode, S_IFREG | 0o755, "set-uid and set-gid (group-executable) cleared");
  setattr(fs, f.nodeid, { valid: FATTR_MODE, mode: 0o6745 });
  a = setattr(fs, f.nodeid, { valid: FATTR_GID, gid: 5 });
  assert.equal(a.mode, S_IFREG | 0o2745, "set-gid without group-execute is kept");
  // A mode sent along with the owner is the kernel's: kept as sent.
  a = setattr(fs, f.nodeid, { valid: FATTR_UID | FATTR_MODE, uid: 6, mode: 0o4755 });
  assert.equal(a.mode, S_IFREG | 0o4755);
  // Directories keep theirs.
  const d = mkdir(fs, 1n, "d", 0o2775);
  assert.equal(setattr(fs, d, { valid: FATTR_UID, uid: 9 }).mode, S_IFDIR | 0o2775);
  // security.capability goes with chown.
  fs.setxattr(ctx, f.nodeid, bytes("security.capability"), bytes("cap"), 0);
  setattr(fs, f.nodeid, { valid: FATTR_UID, uid: 1 });
  errno(() => fs.getxattr(ctx, f.nodeid, bytes("security.capability"), 0), Errno.ENODATA);
  // FATTR_KILL_SUIDGID with a truncate.
  setattr(fs, f.nodeid, { valid: FATTR_MODE, mode: 0o6755 });
  a = setattr(fs, f.nodeid, { valid: FATTR_SIZE | FATTR_KILL_SUIDGID, size: 0 });
  assert.equal(a.mode, S_IFREG | 0o755);
  // A write with FUSE_WRITE_KILL_SUIDGID; without it the bits stay.
  setattr(fs, f.nodeid, { valid: FATTR_MODE, mode: 0o6755 });
  write(fs, f, 0, "x");
  assert.equal(attrOf(fs, f.nodeid).mode, S_IFREG | 0o6755);
  write(fs, f, 0, "x", FUSE_WRITE_KILL_SUIDGID);
  assert.equal(attrOf(fs, f.nodeid).mode, S_IFREG | 0o755);
  assert.equal(S_ISUID, 0o4000);
});

// ------------------------------------------------------------------------------- open

Deno.test("MemoryFs OPEN with O_TRUNC empties the file; O_APPEND writes go to the end", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f");
  write(fs, f, 0, "hello");
  fs.release(ctx, f.nodeid, f.fh, 0);
  const a = fs.open(ctx, f.nodeid, O_WRONLY | O_APPEND, 0).fh;
  assert.equal(write(fs, { nodeid: f.nodeid, fh: a }, 0, " world"), 6);
  assert.equal(write(fs, { nodeid: f.nodeid, fh: a }, 2, "!"), 1, "offset ignored");
  const r = fs.open(ctx, f.nodeid, O_RDONLY, 0).fh;
  assert.equal(readText(fs, { nodeid: f.nodeid, fh: r }, 0, 100), "hello world!");
  const before = attrOf(fs, f.nodeid);
  const t = fs.open(ctx, f.nodeid, O_RDWR | O_TRUNC, 0).fh;
  const after0 = attrOf(fs, f.nodeid);
  assert.equal(after0.size, 0);
  assert.equal(after0.blocks, 0);
  assert.ok(after(mtimeOf(after0), mtimeOf(before)));
  assert.equal(readText(fs, { nodeid: f.nodeid, fh: r }, 0, 100), "");
  write(fs, { nodeid: f.nodeid, fh: t }, 0, "new");
  // CREATE with O_APPEND too.
  const c = create(fs, 1n, "log", { flags: O_WRONLY | O_APPEND });
  write(fs, c, 100, "a");
  write(fs, c, 100, "b");
  assert.equal(attrOf(fs, c.nodeid).size, 2);
});

Deno.test("MemoryFs a read on a write-only handle and a write on a read-only one are EBADF", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f", { flags: O_WRONLY });
  errno(() => read(fs, f, 0, 1), Errno.EBADF);
  const r = fs.open(ctx, f.nodeid, O_RDONLY, 0).fh;
  errno(() => write(fs, { nodeid: f.nodeid, fh: r }, 0, "x"), Errno.EBADF);
  const rw = fs.open(ctx, f.nodeid, O_RDWR, 0).fh;
  write(fs, { nodeid: f.nodeid, fh: rw }, 0, "x");
  assert.equal(readText(fs, { nodeid: f.nodeid, fh: rw }, 0, 1), "x");
});

Deno.test("MemoryFs OPEN of a directory is EISDIR, of a symlink ELOOP; OPENDIR of a file ENOTDIR", () => {
  const fs = new MemoryFs();
  const d = mkdir(fs, 1n, "d");
  errno(() => fs.open(ctx, d, O_RDONLY, 0), Errno.EISDIR);
  errno(() => fs.open(ctx, 1n, O_RDONLY, 0), Errno.EISDIR);
  const l = fs.symlink(ctx, 1n, bytes("l"), bytes("d")).nodeid;
  errno(() => fs.open(ctx, l, O_RDONLY, 0), Errno.ELOOP);
  const f = create(fs, 1n, "f");
  errno(() => fs.opendir(ctx, f.nodeid, 0), Errno.ENOTDIR);
  errno(() => fs.opendir(ctx, l, 0), Errno.ENOTDIR);
});

Deno.test("MemoryFs CREATE of an existing name: EEXIST with O_EXCL, else it opens the file (O_TRUNC honoured)", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f");
  write(fs, f, 0, "data");
  errno(() => create(fs, 1n, "f", { flags: O_RDWR | O_EXCL }), Errno.EEXIST);
  const again = create(fs, 1n, "f");
  assert.equal(again.nodeid, f.nodeid);
  assert.equal(readText(fs, again, 0, 10), "data");
  const t = create(fs, 1n, "f", { flags: O_RDWR | O_TRUNC });
  assert.equal(t.attr.size, 0);
  mkdir(fs, 1n, "d");
  errno(() => create(fs, 1n, "d"), Errno.EISDIR);
  assert.equal(fs.usage.handles, 3, "no handle leaked by the failures");
});

Deno.test("MemoryFs TMPFILE: unnamed, released at its last handle; LINK names it unless O_EXCL", () => {
  const fs = new MemoryFs();
  const d = mkdir(fs, 1n, "d", 0o2777);
  setattr(fs, d, { valid: FATTR_GID, gid: 77 });
  const t = fs.tmpfile(alice, d, S_IFREG | 0o600, O_RDWR, 0);
  assert.equal(t.entry.attr.nlink, 0);
  assert.equal(t.entry.attr.gid, 77);
  const f = { nodeid: t.entry.nodeid, fh: t.open.fh };
  write(fs, f, 0, "temp");
  assert.deepEqual(names(fs, d), [".", ".."], "no name");
  const l = fs.link(ctx, f.nodeid, d, bytes("kept"));
  assert.equal(l.attr.nlink, 1);
  assert.deepEqual(names(fs, d), [".", "..", "kept"]);
  // O_EXCL: never linkable; gone at release.
  const x = fs.tmpfile(ctx, d, S_IFREG | 0o600, O_RDWR | O_EXCL, 0);
  errno(() => fs.link(ctx, x.entry.nodeid, d, bytes("no")), Errno.ENOENT);
  const nodes = fs.usage.nodes;
  fs.release(ctx, x.entry.nodeid, x.open.fh, 0);
  fs.forget(ctx, x.entry.nodeid, 1n);
  assert.equal(fs.usage.nodes, nodes - 1);
  // An unlinked file may not be linked again either.
  fs.unlink(ctx, d, bytes("kept"));
  errno(() => fs.link(ctx, f.nodeid, d, bytes("back")), Errno.ENOENT);
  const file = create(fs, 1n, "plain");
  errno(() => fs.tmpfile(ctx, file.nodeid, S_IFREG | 0o600, O_RDWR, 0), Errno.ENOTDIR);
});

// --------------------------------------------------------------------------- huge offsets

Deno.test("MemoryFs huge offsets: read past 2^63 is EINVAL, write at 4 PiB EFBIG, read past the end 0", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f");
  write(fs, f, 0, "abc");
  errno(() => read(fs, f, 2n ** 63n, 10), Errno.EINVAL);
  errno(() => read(fs, f, 2n ** 64n - 1n, 10), Errno.EINVAL);
  errno(() => write(fs, f, 2n ** 63n, "x"), Errno.EINVAL);
  errno(() => write(fs, f, 2n ** 52n, "x"), Errno.EFBIG);
  errno(() => write(fs, f, 2n ** 62n, "x"), Errno.EFBIG);
  assert.equal(write(fs, f, 2n ** 52n - 2n, "wxyz"), 2, "cut at the limit");
  assert.equal(attrOf(fs, f.nodeid).size, 2 ** 52);
  assert.equal(read(fs, f, 2n ** 62n, 10).length, 0);
  assert.equal(readText(fs, f, 2 ** 52 - 2, 10), "wx");
  assert.equal(read(fs, f, 0, 0).length, 0, "a read of 0 bytes");
  errno(
    () => fs.copyFileRange(ctx, f.nodeid, f.fh, 2n ** 63n, f.nodeid, f.fh, 0n, 10, 0),
    Errno.EINVAL,
  );
});

// --------------------------------------------------------------------------- copy_file_range

Deno.test("MemoryFs copy_file_range copies bytes and keeps holes; overlapping ranges of one file are EINVAL", () => {
  const fs = new MemoryFs();
  const src = create(fs, 1n, "src");
  const dst = create(fs, 1n, "dst");
  write(fs, src, 0, "head");
  write(fs, src, 5 * CHUNK, "tail");
  const size = 5 * CHUNK + 4;
  const n = fs.copyFileRange(ctx, src.nodeid, src.fh, 0n, dst.nodeid, dst.fh, 0n, 2 ** 30, 0);
  assert.equal(n, size, "up to the end of the source");
  const a = attrOf(fs, dst.nodeid);
  assert.equal(a.size, size);
  assert.equal(a.blocks, 2 * PAGE / 512, "the holes stayed holes");
  assert.deepEqual(read(fs, dst, 0, size), read(fs, src, 0, size));
  // Unaligned, over existing data: the hole part zeros it.
  write(fs, dst, 0, new Uint8Array(3 * CHUNK).fill(7));
  fs.copyFileRange(ctx, src.nodeid, src.fh, 2n, dst.nodeid, dst.fh, 10n, 2 * CHUNK, 0);
  const got = read(fs, dst, 0, 3 * CHUNK);
  assert.deepEqual(got.subarray(0, 12), new Uint8Array([7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 97, 100]));
  assert.ok(got.subarray(12, 10 + 2 * CHUNK).every((b) => b === 0));
  assert.ok(got.subarray(10 + 2 * CHUNK).every((b) => b === 7));
  // Within one file, apart: fine; overlapping: EINVAL.
  assert.equal(
    fs.copyFileRange(ctx, src.nodeid, src.fh, 0n, src.nodeid, src.fh, 100n, 4, 0),
    4,
  );
  assert.equal(readText(fs, src, 100, 4), "head");
  errno(
    () => fs.copyFileRange(ctx, src.nodeid, src.fh, 0n, src.nodeid, src.fh, 2n, 10, 0),
    Errno.EINVAL,
  );
  errno(
    () => fs.copyFileRange(ctx, src.nodeid, src.fh, 0n, dst.nodeid, dst.fh, 0n, 1, 1),
    Errno.EINVAL,
  );
  assert.equal(
    fs.copyFileRange(ctx, src.nodeid, src.fh, BigInt(size), dst.nodeid, dst.fh, 0n, 10, 0),
    0,
    "at the end of the source",
  );
  const ro = fs.open(ctx, dst.nodeid, O_RDONLY, 0).fh;
  errno(() => fs.copyFileRange(ctx, src.nodeid, src.fh, 0n, dst.nodeid, ro, 0n, 1, 0), Errno.EBADF);
  const ap = fs.open(ctx, dst.nodeid, O_WRONLY | O_APPEND, 0).fh;
  errno(() => fs.copyFileRange(ctx, src.nodeid, src.fh, 0n, dst.nodeid, ap, 0n, 1, 0), Errno.EBADF);
  // Out of space: what fits.
  const small = new MemoryFs({ maxBytes: 2 * CHUNK });
  const s = create(small, 1n, "s");
  write(small, s, 0, new Uint8Array(2 * CHUNK).fill(1));
  const t = create(small, 1n, "t");
  errno(
    () => small.copyFileRange(ctx, s.nodeid, s.fh, 0n, t.nodeid, t.fh, 0n, CHUNK, 0),
    Errno.ENOSPC,
  );
});

// --------------------------------------------------------------------------- access, init

Deno.test("MemoryFs access() checks owner, group and other bits; root may read and write anything", () => {
  const fs = new MemoryFs();
  const f = create(fs, 1n, "f", { who: alice, mode: 0o640 });
  const bob: Context = { uid: 2000, gid: 1000, pid: 3 };
  const eve: Context = { uid: 3000, gid: 3000, pid: 4 };
  fs.access(alice, f.nodeid, R_OK | W_OK);
  errno(() => fs.access(alice, f.nodeid, X_OK), Errno.EACCES);
  fs.access(bob, f.nodeid, R_OK);
  errno(() => fs.access(bob, f.nodeid, W_OK), Errno.EACCES);
  errno(() => fs.access(eve, f.nodeid, R_OK), Errno.EACCES);
  fs.access(eve, f.nodeid, 0);
  fs.access(ctx, f.nodeid, R_OK | W_OK);
  errno(() => fs.access(ctx, f.nodeid, X_OK), Errno.EACCES, "root: no x bit anywhere");
  setattr(fs, f.nodeid, { valid: FATTR_MODE, mode: 0o001 });
  fs.access(ctx, f.nodeid, X_OK);
  fs.access(ctx, 1n, X_OK);
});

Deno.test("MemoryFs init() does not take the writeback cache", () => {
  const fs = new MemoryFs();
  const offered = FUSE_WRITEBACK_CACHE | FUSE_DO_READDIRPLUS | 1n;
  assert.equal(fs.init(offered), FUSE_DO_READDIRPLUS | 1n);
  fs.syncfs(ctx, 1n);
  const d = fs.opendir(ctx, 1n, 0).fh;
  fs.fsyncdir(ctx, 1n, d, false);
});

// --------------------------------------------------------------------------- readdir

Deno.test("MemoryFs READDIR over many calls with a small buffer lists each entry once", () => {
  const fs = new MemoryFs();
  const want = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const name = `file-${i}-${"x".repeat(i % 50)}`;
    fs.mknod(ctx, 1n, bytes(name), S_IFREG | 0o644, 0, 0);
    want.add(name);
  }
  const l = listAll(fs, 1n, 300);
  assert.deepEqual(l.slice(0, 2).map((e) => e.name), [".", ".."]);
  const got = l.slice(2).map((e) => e.name);
  assert.equal(got.length, 1000);
  assert.deepEqual(new Set(got), want);
  const offs = l.map((e) => e.off);
  assert.deepEqual(offs, [...offs].sort((a, b) => (a < b ? -1 : 1)), "cookies increase");
  // A buffer too small for one entry gets nothing (and no error).
  const fh = fs.opendir(ctx, 1n, 0).fh;
  const tiny = new ListSink(16);
  fs.readdir(ctx, 1n, fh, 0n, tiny);
  assert.equal(tiny.entries.length, 0);
});

Deno.test("MemoryFs a readdir whose directory changes between calls never skips or repeats an entry that exists throughout", () => {
  const fs = new MemoryFs();
  const d = mkdir(fs, 1n, "d");
  for (let i = 0; i < 300; i++) fs.mknod(ctx, d, bytes(`s${i}`), S_IFREG | 0o644, 0, 0);
  const stable = new Set<string>();
  for (let i = 0; i < 300; i += 3) stable.add(`s${i}`);
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const fh = fs.opendir(ctx, d, 0).fh;
  const seen = new Map<string, number>();
  let off = 0n;
  let extra = 0;
  for (let round = 0; round < 10_000; round++) {
    const sink = new ListSink(200 + rand(300));
    fs.readdir(ctx, d, fh, off, sink);
    if (sink.entries.length === 0) break;
    for (const e of sink.entries) seen.set(e.name, (seen.get(e.name) ?? 0) + 1);
    off = (sink.entries.at(-1) as Listed).off;
    // Between calls: remove some unstable names, add new ones, rename some.
    for (let k = 0; k < 5; k++) {
      const i = rand(300);
      if (i % 3 !== 0) {
        try {
          fs.unlink(ctx, d, bytes(`s${i}`));
        } catch { /* gone already */ }
      }
      fs.mknod(ctx, d, bytes(`new${extra++}`), S_IFREG | 0o644, 0, 0);
      const j = rand(300);
      if (j % 3 !== 0) {
        try {
          fs.rename(ctx, d, bytes(`s${j}`), d, bytes(`r${j}-${extra}`), 0);
        } catch { /* gone already */ }
      }
    }
    // A stable name replaced in place (rename over it) keeps its place too.
    const v = rand(100) * 3;
    fs.mknod(ctx, d, bytes("tmp"), S_IFREG | 0o644, 0, 0);
    fs.rename(ctx, d, bytes("tmp"), d, bytes(`s${v}`), 0);
  }
  for (const name of stable) assert.equal(seen.get(name), 1, `${name} listed once`);
  for (const [name, count] of seen) assert.equal(count, 1, `${name} listed ${count} times`);
  assert.equal(seen.get("."), 1);
  assert.equal(seen.get(".."), 1);
});

Deno.test("MemoryFs READDIRPLUS takes one lookup per entry sent, none for '.' and '..'", () => {
  const fs = new MemoryFs();
  const d = mkdir(fs, 1n, "d");
  const ids: bigint[] = [];
  for (let i = 0; i < 50; i++) {
    const e = fs.mknod(ctx, d, bytes(`f${i}`), S_IFREG | 0o644, 0, 0);
    ids.push(e.nodeid);
    fs.forget(ctx, e.nodeid, 1n);
  }
  const fh = fs.opendir(ctx, d, 0).fh;
  const all: Listed[] = [];
  let off = 0n;
  for (;;) {
    const sink = new PlusSink(1000);
    fs.readdirplus(ctx, d, fh, off, sink);
    if (sink.entries.length === 0) break;
    all.push(...sink.entries);
    off = (sink.entries.at(-1) as Listed).off;
  }
  assert.equal(all.length, 52);
  assert.equal(all[0]?.nodeid, 0n);
  assert.equal(all[0]?.ino, d);
  assert.equal(all[1]?.nodeid, 0n);
  assert.equal(all[1]?.ino, 1n);
  assert.deepEqual(all.slice(2).map((e) => e.nodeid), ids);
  // Each took exactly one lookup: unlink, then one FORGET each releases them.
  const nodes = fs.usage.nodes;
  for (let i = 0; i < 50; i++) fs.unlink(ctx, d, bytes(`f${i}`));
  assert.equal(fs.usage.nodes, nodes);
  for (const id of ids) fs.forget(ctx, id, 1n);
  assert.equal(fs.usage.nodes, nodes - 50);
});

Deno.test("MemoryFs READDIR from a huge offset or a removed entry's cookie resumes right", () => {
  const fs = new MemoryFs();
  for (const n of ["a", "b", "c"]) create(fs, 1n, n);
  const fh = fs.opendir(ctx, 1n, 0).fh;
  const list = (off: bigint) => {
    const sink = new ListSink(4096);
    fs.readdir(ctx, 1n, fh, off, sink);
    return sink.entries.map((e) => e.name);
  };
  assert.deepEqual(list(2n ** 64n - 1n), []);
  assert.deepEqual(list(2n ** 53n), []);
  const full = listAll(fs, 1n);
  const bOff = full.find((e) => e.name === "b")?.off as bigint;
  fs.unlink(ctx, 1n, bytes("b"));
  assert.deepEqual(list(bOff), ["c"], "after a removed entry's cookie: what came after it");
  assert.deepEqual(list(1n), ["..", "a", "c"]);
  assert.deepEqual(list(2n), ["a", "c"]);
});

// --------------------------------------------------------------------------- model

Deno.test("MemoryFs random writes, truncates, punches and copies match a flat byte model", () => {
  const fs = new MemoryFs({ maxBytes: 64 * CHUNK });
  const f = create(fs, 1n, "f");
  const g = create(fs, 1n, "g");
  const LIMIT = 12 * CHUNK;
  let model = new Uint8Array(0);
  let seed = 7;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const resize = (size: number) => {
    const m = new Uint8Array(size);
    m.set(model.subarray(0, Math.min(size, model.length)));
    model = m;
  };
  for (let step = 0; step < 400; step++) {
    const op = rand(5);
    const at = rand(LIMIT);
    const len = 1 + rand(2 * CHUNK);
    if (op === 0 || op === 1) {
      const data = Uint8Array.from({ length: len }, () => 1 + rand(255));
      assert.equal(write(fs, f, at, data), len);
      if (at + len > model.length) resize(at + len);
      model.set(data, at);
    } else if (op === 2) {
      setattr(fs, f.nodeid, { valid: FATTR_SIZE, size: at });
      resize(at);
    } else if (op === 3) {
      fs.fallocate(
        ctx,
        f.nodeid,
        f.fh,
        BigInt(at),
        BigInt(len),
        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
      );
      model.fill(0, at, Math.min(at + len, model.length));
    } else {
      // Through another file and back.
      setattr(fs, g.nodeid, { valid: FATTR_SIZE, size: 0 });
      const n = fs.copyFileRange(ctx, f.nodeid, f.fh, BigInt(at), g.nodeid, g.fh, 0n, len, 0);
      const want = Math.max(0, Math.min(len, model.length - at));
      assert.equal(n, want);
      const to = rand(LIMIT);
      if (n > 0) {
        fs.copyFileRange(ctx, g.nodeid, g.fh, 0n, f.nodeid, f.fh, BigInt(to), n, 0);
        const piece = model.slice(at, at + n);
        if (to + n > model.length) resize(to + n);
        model.set(piece, to);
      }
    }
    assert.equal(attrOf(fs, f.nodeid).size, model.length, `size after step ${step}`);
    if (step % 20 === 0 || step === 399) {
      assert.deepEqual(read(fs, f, 0, model.length), model, `contents after step ${step}`);
    }
  }
  // SEEK_DATA / SEEK_HOLE never call data a hole, and blocks count the pages of data they show.
  for (const h of [f, g]) {
    const size = attrOf(fs, h.nodeid).size;
    const content = read(fs, h, 0, size);
    let pages = 0;
    let hole = 0;
    for (;;) {
      let data: number;
      try {
        data = Number(fs.lseek(ctx, h.nodeid, h.fh, BigInt(hole), SEEK_DATA));
      } catch (e) {
        assert.ok(e instanceof ErrnoError && e.code === new ErrnoError(Errno.ENXIO).code);
        data = size;
      }
      assert.ok(content.subarray(hole, data).every((b) => b === 0), `a hole at ${hole}`);
      if (data >= size) break;
      assert.equal(data % PAGE, 0, "data starts on a page");
      hole = Number(fs.lseek(ctx, h.nodeid, h.fh, BigInt(data), SEEK_HOLE));
      assert.ok(hole === size || hole % PAGE === 0, "a hole starts on a page or at the end");
      pages += Math.ceil((hole - data) / PAGE);
    }
    assert.equal(attrOf(fs, h.nodeid).blocks, pages * PAGE / 512);
  }
  // Every allocated chunk is counted, and each holds a page of data.
  const blocks = attrOf(fs, f.nodeid).blocks + attrOf(fs, g.nodeid).blocks;
  assert.equal(fs.usage.bytes % CHUNK, 0);
  assert.ok(fs.usage.bytes >= blocks * 512 && fs.usage.bytes <= blocks * 512 * (CHUNK / PAGE));
});
