import assert from "node:assert/strict";
import {
  Errno,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  O_APPEND,
  O_CREAT,
  O_DIRECT,
  O_EXCL,
  O_NOATIME,
  O_RDONLY,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
  R_OK,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  RENAME_WHITEOUT,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  SEEK_DATA,
  SEEK_END,
  SEEK_HOLE,
  W_OK,
  X_OK,
  XATTR_CREATE,
  XATTR_REPLACE,
} from "../../ffi/mod.ts";
import type { Context, SetattrIn } from "../filesystem.ts";
import {
  FUSE_DO_READDIRPLUS,
  FUSE_HANDLE_KILLPRIV_V2,
  FUSE_READDIRPLUS_AUTO,
  FUSE_SUBMOUNTS,
} from "../../wire/fuse.ts";
import type { PassthroughFs } from "./passthrough_fs.ts";
import {
  assertErrno,
  BufferDestination,
  BufferSource,
  bytes,
  openFdCount,
  openFlagsOf,
  ROOT_CTX,
  tempShare,
  text,
} from "./testing.ts";

const ctx = ROOT_CTX;

const errno = assertErrno;

/** CREATE in `parent`; returns the nodeid and fh. */
function create(
  fs: PassthroughFs,
  parent: bigint,
  name: string,
  flags = O_RDWR,
  mode = 0o644,
): { nodeid: bigint; fh: bigint } {
  const c = fs.create(ctx, parent, bytes(name), S_IFREG | mode, flags | O_CREAT, 0o022);
  return { nodeid: c.entry.nodeid, fh: c.open.fh };
}

function write(fs: PassthroughFs, nodeid: bigint, fh: bigint, at: number, data: string): number {
  return fs.write(ctx, nodeid, fh, BigInt(at), new BufferSource(data), 0);
}

function read(fs: PassthroughFs, nodeid: bigint, fh: bigint, at: number, size: number): string {
  const dst = new BufferDestination(size);
  const n = fs.read(ctx, nodeid, fh, BigInt(at), size, dst);
  return text(dst.buf.subarray(0, n));
}

const SETATTR: SetattrIn = {
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

Deno.test("create, write, read, append, truncate through handles", () => {
  using share = tempShare();
  const fs = share.fs;
  const f = create(fs, 1n, "a.txt");
  assert.equal(write(fs, f.nodeid, f.fh, 0, "hello world"), 11);
  assert.equal(read(fs, f.nodeid, f.fh, 0, 100), "hello world", "short only at EOF");
  assert.equal(read(fs, f.nodeid, f.fh, 6, 3), "wor");
  assert.equal(read(fs, f.nodeid, f.fh, 50, 10), "", "past EOF");
  assert.equal(Deno.readTextFileSync(`${share.dir}/a.txt`), "hello world");
  assert.equal((Deno.statSync(`${share.dir}/a.txt`).mode ?? 0) & 0o777, 0o644);
  fs.flush(ctx, f.nodeid, f.fh, 0n);
  fs.release(ctx, f.nodeid, f.fh, 0);

  // OPEN with O_APPEND: every write lands at the end, whatever the offset.
  const a = fs.open(ctx, f.nodeid, O_WRONLY | O_APPEND, 0);
  write(fs, f.nodeid, a.fh, 0, "!");
  fs.release(ctx, f.nodeid, a.fh, 0);
  assert.equal(Deno.readTextFileSync(`${share.dir}/a.txt`), "hello world!");

  // OPEN with O_TRUNC (ATOMIC_O_TRUNC).
  const t = fs.open(ctx, f.nodeid, O_RDWR | O_TRUNC, 0);
  assert.equal(fs.getattr(ctx, f.nodeid, t.fh).attr.size, 0);
  write(fs, f.nodeid, t.fh, 0, "0123456789");
  // SETATTR size through the handle (ftruncate) and without one (truncate).
  let a2 = fs.setattr(ctx, f.nodeid, { ...SETATTR, valid: 1 << 3 | 1 << 6, fh: t.fh, size: 4 });
  assert.equal(a2.attr.size, 4);
  a2 = fs.setattr(ctx, f.nodeid, { ...SETATTR, valid: 1 << 3, size: 8192 });
  assert.equal(a2.attr.size, 8192);
  assert.equal(read(fs, f.nodeid, t.fh, 0, 6), "0123\0\0");
  errno(
    () => fs.setattr(ctx, f.nodeid, { ...SETATTR, valid: 1 << 3, size: 2 ** 64 }),
    Errno.EINVAL,
  );
  assert.equal(fs.getattr(ctx, f.nodeid, undefined).attr.size, 8192, "never wrapped to 0");
  fs.release(ctx, f.nodeid, t.fh, 0);

  // A read-only handle refuses writes with the host's errno.
  const r = fs.open(ctx, f.nodeid, O_RDONLY, 0);
  errno(() => write(fs, f.nodeid, r.fh, 0, "x"), Errno.EBADF);
  fs.release(ctx, f.nodeid, r.fh, 0);
  assert.equal(fs.handleCount, 0);
});

Deno.test("CREATE: O_EXCL, an existing file without it, '.'/'..', symlinks never followed", () => {
  using share = tempShare();
  const fs = share.fs;
  Deno.writeTextFileSync(`${share.dir}/old`, "keep");
  errno(() => create(fs, 1n, "old", O_RDWR | O_EXCL), Errno.EEXIST);
  const f = create(fs, 1n, "old", O_RDWR);
  assert.equal(read(fs, f.nodeid, f.fh, 0, 10), "keep", "opened, not truncated");
  fs.release(ctx, f.nodeid, f.fh, 0);
  const t = create(fs, 1n, "old", O_RDWR | O_TRUNC);
  assert.equal(fs.getattr(ctx, t.nodeid, undefined).attr.size, 0);
  fs.release(ctx, t.nodeid, t.fh, 0);
  assert.equal(t.nodeid, f.nodeid, "one host file, one nodeid");

  errno(() => create(fs, 1n, "."), Errno.EISDIR);
  errno(() => create(fs, 1n, ".."), Errno.EISDIR);
  Deno.mkdirSync(`${share.dir}/d`);
  errno(() => create(fs, 1n, "d"), Errno.EISDIR);

  Deno.symlinkSync(`${share.dir}/../outside_${crypto.randomUUID()}`, `${share.dir}/dangling`);
  errno(() => create(fs, 1n, "dangling"), Errno.ELOOP);
  Deno.symlinkSync("old", `${share.dir}/ln`);
  errno(() => create(fs, 1n, "ln"), Errno.ELOOP);
  errno(() => create(fs, 1n, "ln", O_RDWR | O_EXCL), Errno.EEXIST);
  assert.equal(fs.handleCount, 0);
});

Deno.test("open flags: O_DIRECT and O_NOATIME dropped unless allowed; writeback widens O_WRONLY", () => {
  {
    using share = tempShare();
    const fs = share.fs;
    const f = create(fs, 1n, "f", O_WRONLY | O_DIRECT | O_NOATIME | O_APPEND);
    const flags = openFlagsOf(`${share.dir}/f`);
    assert.equal(flags.length, 1);
    const fl = flags[0] ?? 0;
    assert.equal(fl & O_DIRECT, 0);
    assert.equal(fl & O_NOATIME, 0);
    assert.equal(fl & O_APPEND, O_APPEND);
    assert.equal(fl & 3, O_WRONLY);
    fs.release(ctx, f.nodeid, f.fh, 0);
  }
  {
    using share = tempShare({ allowDirectIo: true, preserveNoatime: true, writeback: true });
    const fs = share.fs;
    // Not negotiated yet: no writeback semantics.
    assert.equal(fs.init(0n), 0n);
    const all = (1n << 16n) | (1n << 13n) | 1n;
    assert.equal(fs.init(all), all);
    const f = create(fs, 1n, "f", O_WRONLY | O_DIRECT | O_NOATIME | O_APPEND);
    const fl = openFlagsOf(`${share.dir}/f`)[0] ?? 0;
    assert.equal(fl & O_DIRECT, O_DIRECT);
    assert.equal(fl & O_NOATIME, O_NOATIME);
    assert.equal(fl & O_APPEND, 0, "writeback: the guest appends");
    assert.equal(fl & 3, O_RDWR, "writeback: write-only becomes read-write");
    fs.release(ctx, f.nodeid, f.fh, 0);
  }
  {
    using share = tempShare({ cache: "none" });
    const all = (1n << 16n) | (1n << 13n) | (1n << 14n) | 1n;
    assert.equal(share.fs.init(all), 1n, "no writeback unless asked; no readdirplus for none");
  }
});

Deno.test("INIT switches: killpriv_v2 (on by default), submounts (on), readdirplus", () => {
  const offer = FUSE_HANDLE_KILLPRIV_V2 | FUSE_SUBMOUNTS | FUSE_DO_READDIRPLUS |
    FUSE_READDIRPLUS_AUTO | 1n;
  const cases: [Parameters<typeof tempShare>[0], bigint][] = [
    [{}, offer],
    [{ killprivV2: false }, FUSE_SUBMOUNTS | FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO | 1n],
    [
      { killprivV2: false, announceSubmounts: false },
      FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO | 1n,
    ],
    [{ readdirplus: false }, FUSE_HANDLE_KILLPRIV_V2 | FUSE_SUBMOUNTS | 1n],
    [{ cache: "none", readdirplus: true }, offer],
  ];
  for (const [config, granted] of cases) {
    using share = tempShare(config);
    assert.equal(
      share.fs.init(offer).toString(16),
      granted.toString(16),
      JSON.stringify(config),
    );
  }
});

Deno.test("OPEN reply flags follow the cache mode", () => {
  for (
    const [cache, file, dir] of [
      ["none", 1, 0],
      ["auto", 0, 0],
      ["always", 2, 8],
      ["metadata", 1, 10],
    ] as const
  ) {
    using share = tempShare({ cache });
    const fs = share.fs;
    const f = create(fs, 1n, "f");
    assert.equal(fs.create(ctx, 1n, bytes("g"), 0o644, O_RDWR | O_CREAT, 0).open.openFlags, file);
    assert.equal(fs.open(ctx, f.nodeid, O_RDONLY, 0).openFlags, file, cache);
    assert.equal(fs.opendir(ctx, 1n, 0).openFlags, dir, cache);
  }
});

Deno.test("mkdir, rmdir, unlink, mknod with the errnos Linux gives '.' and '..'", () => {
  using share = tempShare();
  const fs = share.fs;
  // Replies reuse one object: take what is needed before the next call.
  const d = { ...fs.mkdir(ctx, 1n, bytes("dir"), 0o750, 0) };
  assert.equal(d.attr.mode, S_IFDIR | 0o750);
  assert.equal(d.nodeid, fs.lookup(ctx, 1n, bytes("dir")).nodeid);
  errno(() => fs.mkdir(ctx, 1n, bytes("dir"), 0o755, 0), Errno.EEXIST);
  errno(() => fs.mkdir(ctx, 1n, bytes("."), 0o755, 0), Errno.EEXIST);
  errno(() => fs.mkdir(ctx, 1n, bytes(".."), 0o755, 0), Errno.EEXIST);
  const sub = fs.mkdir(ctx, d.nodeid, bytes("sub"), 0o777, 0o022);
  assert.equal(sub.attr.mode & 0o777, 0o755, "the guest's umask applies");
  const open = fs.mkdir(ctx, d.nodeid, bytes("open"), 0o1777, 0);
  assert.equal(open.attr.mode & 0o7777, 0o1777, "and not the daemon's");
  fs.rmdir(ctx, d.nodeid, bytes("open"));
  errno(() => fs.rmdir(ctx, 1n, bytes("dir")), Errno.ENOTEMPTY);
  errno(() => fs.rmdir(ctx, d.nodeid, bytes(".")), Errno.EINVAL);
  errno(() => fs.rmdir(ctx, d.nodeid, bytes("..")), Errno.ENOTEMPTY);
  errno(() => fs.unlink(ctx, d.nodeid, bytes("sub")), Errno.EISDIR);
  errno(() => fs.unlink(ctx, d.nodeid, bytes(".")), Errno.EISDIR);
  errno(() => fs.unlink(ctx, d.nodeid, bytes("..")), Errno.EISDIR);
  fs.rmdir(ctx, d.nodeid, bytes("sub"));
  errno(() => fs.rmdir(ctx, d.nodeid, bytes("sub")), Errno.ENOENT);

  const fifo = fs.mknod(ctx, d.nodeid, bytes("fifo"), S_IFIFO | 0o600, 0, 0);
  assert.equal(fifo.attr.mode, S_IFIFO | 0o600);
  const chr = fs.mknod(ctx, d.nodeid, bytes("null"), S_IFCHR | 0o666, (1 << 8) | 3, 0);
  assert.equal(chr.attr.mode & S_IFMT, S_IFCHR);
  assert.equal(chr.attr.rdev, (1 << 8) | 3, "rdev round-trips in the FUSE encoding");
  const st = Deno.statSync(`${share.dir}/dir/null`);
  assert.equal(st.rdev, Deno.statSync("/dev/null").rdev);
  const reg = fs.mknod(ctx, d.nodeid, bytes("reg"), S_IFREG | 0o640, 0, 0);
  assert.equal(reg.attr.mode, S_IFREG | 0o640);
  errno(() => fs.mknod(ctx, d.nodeid, bytes(".."), S_IFREG | 0o640, 0, 0), Errno.EEXIST);
  errno(() => fs.rmdir(ctx, d.nodeid, bytes("reg")), Errno.ENOTDIR);
  for (const n of ["fifo", "null", "reg"]) fs.unlink(ctx, d.nodeid, bytes(n));
  errno(() => fs.unlink(ctx, d.nodeid, bytes("reg")), Errno.ENOENT);
  fs.rmdir(ctx, 1n, bytes("dir"));
  assert.deepEqual([...Deno.readDirSync(share.dir)], []);
});

Deno.test("OPEN refuses devices, FIFOs, sockets and symlinks; OPENDIR refuses files", () => {
  using share = tempShare();
  const fs = share.fs;
  const fifo = fs.mknod(ctx, 1n, bytes("fifo"), S_IFIFO | 0o666, 0, 0).nodeid;
  const chr = fs.mknod(ctx, 1n, bytes("zero"), S_IFCHR | 0o666, (1 << 8) | 5, 0).nodeid;
  Deno.symlinkSync("/etc/passwd", `${share.dir}/ln`);
  const ln = fs.lookup(ctx, 1n, bytes("ln")).nodeid;
  errno(() => fs.open(ctx, fifo, O_RDONLY, 0), Errno.EACCES);
  errno(() => fs.open(ctx, chr, O_RDONLY, 0), Errno.EACCES);
  errno(() => fs.open(ctx, ln, O_RDONLY, 0), Errno.ELOOP);
  errno(() => fs.opendir(ctx, ln, 0), Errno.ENOTDIR);
  errno(() => fs.create(ctx, 1n, bytes("zero"), 0o644, O_RDWR | O_CREAT, 0), Errno.EACCES);
  errno(() => fs.create(ctx, 1n, bytes("fifo"), 0o644, O_RDONLY | O_CREAT, 0), Errno.EACCES);
  const f = create(fs, 1n, "f");
  errno(() => fs.opendir(ctx, f.nodeid, 0), Errno.ENOTDIR);
  errno(() => fs.setattr(ctx, fifo, { ...SETATTR, valid: 1 << 3, size: 0 }), Errno.EINVAL);
  errno(() => fs.setattr(ctx, 1n, { ...SETATTR, valid: 1 << 3, size: 0 }), Errno.EISDIR);
  assert.equal(fs.handleCount, 1);
});

Deno.test("rename: plain, RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT, bad flags", () => {
  using share = tempShare();
  const fs = share.fs;
  const d = fs.mkdir(ctx, 1n, bytes("d"), 0o755, 0).nodeid;
  const a = create(fs, 1n, "a");
  write(fs, a.nodeid, a.fh, 0, "A");
  const b = create(fs, d, "b");
  write(fs, b.nodeid, b.fh, 0, "B");

  fs.rename(ctx, 1n, bytes("a"), d, bytes("a2"), 0);
  assert.equal(fs.lookup(ctx, d, bytes("a2")).nodeid, a.nodeid, "the node follows its file");
  errno(() => fs.lookup(ctx, 1n, bytes("a")), Errno.ENOENT);

  errno(() => fs.rename(ctx, d, bytes("a2"), d, bytes("b"), RENAME_NOREPLACE), Errno.EEXIST);
  fs.rename(ctx, d, bytes("a2"), 1n, bytes("a"), RENAME_NOREPLACE);

  fs.rename(ctx, 1n, bytes("a"), d, bytes("b"), RENAME_EXCHANGE);
  assert.equal(Deno.readTextFileSync(`${share.dir}/a`), "B");
  assert.equal(Deno.readTextFileSync(`${share.dir}/d/b`), "A");
  errno(() => fs.rename(ctx, 1n, bytes("a"), d, bytes("none"), RENAME_EXCHANGE), Errno.ENOENT);

  fs.rename(ctx, 1n, bytes("a"), d, bytes("w"), RENAME_WHITEOUT);
  assert.equal(Deno.readTextFileSync(`${share.dir}/d/w`), "B");
  const wh = Deno.lstatSync(`${share.dir}/a`);
  assert.ok(wh.isCharDevice, "a whiteout (char 0/0) is left behind");
  assert.equal(wh.rdev, 0);

  errno(() => fs.rename(ctx, d, bytes("w"), d, bytes("x"), 8), Errno.EINVAL);
  errno(
    () => fs.rename(ctx, d, bytes("w"), d, bytes("x"), RENAME_EXCHANGE | RENAME_NOREPLACE),
    Errno.EINVAL,
  );
  errno(() => fs.rename(ctx, d, bytes("."), 1n, bytes("x"), 0), Errno.EBUSY);
  errno(() => fs.rename(ctx, d, bytes("w"), 1n, bytes(".."), 0), Errno.EBUSY);
  errno(() => fs.rename(ctx, d, bytes("w"), 1n, bytes(".."), RENAME_NOREPLACE), Errno.EEXIST);
  errno(() => fs.rename(ctx, d, bytes("w"), 77n, bytes("x"), 0), Errno.ENOENT);
  for (const h of [a, b]) fs.release(ctx, h.nodeid, h.fh, 0);
});

Deno.test("hard links, symlinks and readlink; TMPFILE then LINK", () => {
  using share = tempShare();
  const fs = share.fs;
  const f = create(fs, 1n, "f");
  fs.release(ctx, f.nodeid, f.fh, 0);
  const before = fs.inodeCount;
  const l = fs.link(ctx, f.nodeid, 1n, bytes("g"));
  assert.equal(l.nodeid, f.nodeid);
  assert.equal(l.attr.nlink, 2);
  assert.equal(fs.inodeCount, before);
  errno(() => fs.link(ctx, f.nodeid, 1n, bytes("g")), Errno.EEXIST);
  errno(() => fs.link(ctx, f.nodeid, 1n, bytes(".")), Errno.EEXIST);
  errno(() => fs.link(ctx, 1n, 1n, bytes("rootlink")), Errno.EPERM);

  const s = { ...fs.symlink(ctx, 1n, bytes("s"), bytes("../../etc/passwd")) };
  assert.equal(s.attr.mode & S_IFMT, S_IFLNK);
  assert.equal(text(fs.readlink(ctx, s.nodeid)), "../../etc/passwd");
  errno(() => fs.readlink(ctx, f.nodeid), Errno.EINVAL);
  errno(() => fs.symlink(ctx, 1n, bytes("s"), bytes("x")), Errno.EEXIST);
  errno(() => fs.symlink(ctx, 1n, bytes(".."), bytes("x")), Errno.EEXIST);
  const long = "x".repeat(4095);
  assert.equal(
    text(fs.readlink(ctx, fs.symlink(ctx, 1n, bytes("long"), bytes(long)).nodeid)),
    long,
  );
  errno(() => fs.symlink(ctx, 1n, bytes("toolong"), bytes(long + "x")), Errno.ENAMETOOLONG);
  // A hard link to a symlink links the symlink itself.
  fs.link(ctx, s.nodeid, 1n, bytes("s2"));
  assert.equal(Deno.readLinkSync(`${share.dir}/s2`), "../../etc/passwd");

  const t = fs.tmpfile(ctx, 1n, S_IFREG | 0o600, O_RDWR, 0);
  const [tnode, tfh] = [t.entry.nodeid, t.open.fh];
  assert.equal(t.entry.attr.nlink, 0);
  write(fs, tnode, tfh, 0, "tmp");
  assert.equal(fs.link(ctx, tnode, 1n, bytes("kept")).attr.nlink, 1);
  assert.equal(Deno.readTextFileSync(`${share.dir}/kept`), "tmp");
  fs.release(ctx, tnode, tfh, 0);
  const x = fs.tmpfile(ctx, 1n, S_IFREG | 0o600, O_RDWR | O_EXCL, 0);
  const [xnode, xfh] = [x.entry.nodeid, x.open.fh];
  errno(() => fs.link(ctx, xnode, 1n, bytes("never")), Errno.ENOENT, "O_TMPFILE | O_EXCL");
  fs.release(ctx, xnode, xfh, 0);
});

Deno.test("SETATTR: chmod, chown, utimes (explicit, NOW, OMIT), through a handle too", () => {
  using share = tempShare();
  const fs = share.fs;
  const f = create(fs, 1n, "f");
  let a = fs.setattr(ctx, f.nodeid, { ...SETATTR, valid: 1 << 0, mode: 0o4711 });
  assert.equal(a.attr.mode, S_IFREG | 0o4711);
  a = fs.setattr(ctx, f.nodeid, { ...SETATTR, valid: 1 << 0 | 1 << 6, fh: f.fh, mode: 0o600 });
  assert.equal(a.attr.mode, S_IFREG | 0o600);
  a = fs.setattr(ctx, f.nodeid, { ...SETATTR, valid: 1 << 1 | 1 << 2, uid: 1234, gid: 5678 });
  assert.equal(a.attr.uid, 1234);
  assert.equal(a.attr.gid, 5678);
  a = fs.setattr(ctx, f.nodeid, { ...SETATTR, valid: 1 << 2, gid: 42 });
  assert.equal(a.attr.uid, 1234, "uid left alone");
  assert.equal(a.attr.gid, 42);

  a = fs.setattr(ctx, f.nodeid, {
    ...SETATTR,
    valid: 1 << 4 | 1 << 5,
    atime: 1_000_000_000,
    atimeNsec: 5,
    mtime: 1_500_000_000,
    mtimeNsec: 999_999_999,
  });
  assert.deepEqual(
    [a.attr.atime, a.attr.atimeNsec, a.attr.mtime, a.attr.mtimeNsec],
    [1_000_000_000, 5, 1_500_000_000, 999_999_999],
  );
  // MTIME_NOW with atime omitted.
  a = fs.setattr(ctx, f.nodeid, { ...SETATTR, valid: 1 << 8 });
  assert.equal(a.attr.atime, 1_000_000_000, "atime omitted");
  assert.ok(Math.abs(a.attr.mtime - Date.now() / 1000) < 60, "mtime is now");
  a = fs.setattr(ctx, f.nodeid, { ...SETATTR, valid: 1 << 7 });
  assert.ok(Math.abs(a.attr.atime - Date.now() / 1000) < 60, "atime is now");

  // Symlinks: owner and times change on the link itself, never on its target.
  Deno.writeTextFileSync(`${share.dir}/target`, "t");
  const s = fs.symlink(ctx, 1n, bytes("s"), bytes("target")).nodeid;
  a = fs.setattr(ctx, s, { ...SETATTR, valid: 1 << 1, uid: 777 });
  assert.equal(a.attr.uid, 777);
  a = fs.setattr(ctx, s, { ...SETATTR, valid: 1 << 5, mtime: 12345 });
  assert.equal(a.attr.mtime, 12345);
  const target = Deno.statSync(`${share.dir}/target`);
  assert.equal(target.uid, 0);
  assert.notEqual(target.mtime?.getTime(), 12345000);

  errno(() => fs.setattr(ctx, f.nodeid, { ...SETATTR, valid: 1 << 6, fh: 999n }), Errno.EBADF);
  fs.release(ctx, f.nodeid, f.fh, 0);
});

Deno.test("sparse files: SEEK_DATA/SEEK_HOLE, fallocate (keep size, punch hole)", () => {
  using share = tempShare();
  const fs = share.fs;
  const f = create(fs, 1n, "sparse");
  const MiB = 1 << 20;
  write(fs, f.nodeid, f.fh, 4 * MiB, "data");
  assert.equal(fs.getattr(ctx, f.nodeid, undefined).attr.size, 4 * MiB + 4);
  assert.equal(fs.lseek(ctx, f.nodeid, f.fh, 0n, SEEK_DATA), BigInt(4 * MiB));
  assert.equal(fs.lseek(ctx, f.nodeid, f.fh, 0n, SEEK_HOLE), 0n);
  assert.equal(fs.lseek(ctx, f.nodeid, f.fh, BigInt(4 * MiB), SEEK_HOLE), BigInt(4 * MiB + 4));
  assert.equal(fs.lseek(ctx, f.nodeid, f.fh, 0n, SEEK_END), BigInt(4 * MiB + 4));
  errno(() => fs.lseek(ctx, f.nodeid, f.fh, BigInt(5 * MiB), SEEK_DATA), Errno.ENXIO);
  errno(() => fs.lseek(ctx, f.nodeid, f.fh, 0n, 99), Errno.EINVAL);
  assert.equal(read(fs, f.nodeid, f.fh, 4 * MiB - 2, 6), "\0\0data");

  fs.fallocate(ctx, f.nodeid, f.fh, 0n, BigInt(MiB), 0);
  assert.ok(fs.getattr(ctx, f.nodeid, undefined).attr.blocks * 512 >= MiB, "allocated");
  fs.fallocate(ctx, f.nodeid, f.fh, BigInt(8 * MiB), BigInt(MiB), FALLOC_FL_KEEP_SIZE);
  const at = fs.getattr(ctx, f.nodeid, undefined).attr;
  assert.equal(at.size, 4 * MiB + 4, "KEEP_SIZE");
  assert.ok(at.blocks * 512 >= 2 * MiB);
  fs.fallocate(ctx, f.nodeid, f.fh, 0n, BigInt(MiB), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
  assert.equal(fs.lseek(ctx, f.nodeid, f.fh, 0n, SEEK_DATA), BigInt(4 * MiB));
  errno(() => fs.fallocate(ctx, f.nodeid, f.fh, 0n, 0n, 0), Errno.EINVAL);
  fs.release(ctx, f.nodeid, f.fh, 0);
  const r = fs.open(ctx, f.nodeid, O_RDONLY, 0);
  errno(() => fs.fallocate(ctx, f.nodeid, r.fh, 0n, 10n, 0), Errno.EBADF);
  fs.release(ctx, f.nodeid, r.fh, 0);
});

Deno.test("copy_file_range between two handles, fsync and fdatasync, flush", () => {
  using share = tempShare();
  const fs = share.fs;
  const a = create(fs, 1n, "a");
  const b = create(fs, 1n, "b");
  write(fs, a.nodeid, a.fh, 0, "0123456789");
  assert.equal(fs.copyFileRange(ctx, a.nodeid, a.fh, 2n, b.nodeid, b.fh, 5n, 4, 0), 4);
  assert.equal(read(fs, b.nodeid, b.fh, 0, 20), "\0\0\0\0\x002345");
  assert.equal(fs.copyFileRange(ctx, a.nodeid, a.fh, 8n, b.nodeid, b.fh, 0n, 100, 0), 2);
  assert.equal(fs.copyFileRange(ctx, a.nodeid, a.fh, 80n, b.nodeid, b.fh, 0n, 100, 0), 0);
  errno(() => fs.copyFileRange(ctx, a.nodeid, a.fh, 0n, b.nodeid, b.fh, 0n, 1, 1), Errno.EINVAL);
  errno(() => fs.copyFileRange(ctx, a.nodeid, a.fh, 0n, b.nodeid, 99n, 0n, 1, 0), Errno.EBADF);
  errno(() => fs.copyFileRange(ctx, a.nodeid, b.fh, 0n, b.nodeid, b.fh, 0n, 1, 0), Errno.EBADF);
  fs.fsync(ctx, a.nodeid, a.fh, false);
  fs.fsync(ctx, a.nodeid, a.fh, true);
  const dir = fs.opendir(ctx, 1n, 0).fh;
  fs.fsyncdir(ctx, 1n, dir, false);
  errno(() => fs.fsync(ctx, 1n, dir, false), Errno.EBADF);
  errno(() => fs.fsyncdir(ctx, a.nodeid, a.fh, false), Errno.EBADF);
  const fds = openFdCount();
  fs.flush(ctx, a.nodeid, a.fh, 0n);
  assert.equal(openFdCount(), fds, "flush closes only its duplicate");
  assert.equal(read(fs, a.nodeid, a.fh, 0, 3), "012", "the handle stays usable after FLUSH");
  fs.syncfs(ctx, 1n);
  fs.syncfs(ctx, a.nodeid);
  fs.releasedir(ctx, 1n, dir);
  for (const h of [a, b]) fs.release(ctx, h.nodeid, h.fh, 0);
});

Deno.test("xattrs: set/get/list/remove with flags and sizes; ENOSYS when off", () => {
  {
    using share = tempShare();
    const fs = share.fs;
    errno(() => fs.getxattr(ctx, 1n, bytes("user.a"), 0), Errno.ENOSYS);
    errno(() => fs.listxattr(ctx, 1n, 0), Errno.ENOSYS);
    errno(() => fs.setxattr(ctx, 1n, bytes("user.a"), bytes("v"), 0), Errno.ENOSYS);
    errno(() => fs.removexattr(ctx, 1n, bytes("user.a")), Errno.ENOSYS);
  }
  using share = tempShare({ xattr: true });
  const fs = share.fs;
  const f = create(fs, 1n, "f");
  fs.release(ctx, f.nodeid, f.fh, 0);
  const n = f.nodeid;
  fs.setxattr(ctx, n, bytes("user.colour"), bytes("blue"), 0);
  errno(() => fs.setxattr(ctx, n, bytes("user.colour"), bytes("red"), XATTR_CREATE), Errno.EEXIST);
  errno(() => fs.setxattr(ctx, n, bytes("user.other"), bytes("x"), XATTR_REPLACE), Errno.ENODATA);
  fs.setxattr(ctx, n, bytes("user.colour"), bytes("green"), XATTR_REPLACE);
  fs.setxattr(ctx, n, bytes("user.empty"), new Uint8Array(0), 0);
  assert.equal(fs.getxattr(ctx, n, bytes("user.colour"), 0), 5);
  assert.equal(text(fs.getxattr(ctx, n, bytes("user.colour"), 100) as Uint8Array), "green");
  assert.equal((fs.getxattr(ctx, n, bytes("user.empty"), 10) as Uint8Array).length, 0);
  errno(() => fs.getxattr(ctx, n, bytes("user.colour"), 3), Errno.ERANGE);
  errno(() => fs.getxattr(ctx, n, bytes("user.none"), 10), Errno.ENODATA);
  const len = fs.listxattr(ctx, n, 0) as number;
  const list = text(fs.listxattr(ctx, n, len) as Uint8Array).split("\0").filter((s) => s);
  assert.deepEqual(list.sort(), ["user.colour", "user.empty"]);
  errno(() => fs.listxattr(ctx, n, 3), Errno.ERANGE);
  fs.removexattr(ctx, n, bytes("user.colour"));
  errno(() => fs.removexattr(ctx, n, bytes("user.colour")), Errno.ENODATA);
  errno(() => fs.getxattr(ctx, n, bytes("user." + "x".repeat(300)), 10), Errno.ERANGE);
  // A directory, a FIFO (never opened), and a symlink (the link itself, not its target).
  fs.setxattr(ctx, 1n, bytes("user.dir"), bytes("d"), 0);
  assert.equal(text(fs.getxattr(ctx, 1n, bytes("user.dir"), 10) as Uint8Array), "d");
  const fifo = fs.mknod(ctx, 1n, bytes("fifo"), S_IFIFO | 0o644, 0, 0).nodeid;
  fs.setxattr(ctx, fifo, bytes("trusted.t"), bytes("fifo"), 0);
  assert.equal(text(fs.getxattr(ctx, fifo, bytes("trusted.t"), 10) as Uint8Array), "fifo");
  const s = fs.symlink(ctx, 1n, bytes("s"), bytes("f")).nodeid;
  errno(() => fs.setxattr(ctx, s, bytes("user.x"), bytes("v"), 0), Errno.EPERM);
  fs.setxattr(ctx, s, bytes("trusted.link"), bytes("L"), 0);
  assert.equal(text(fs.getxattr(ctx, s, bytes("trusted.link"), 10) as Uint8Array), "L");
  errno(() => fs.getxattr(ctx, n, bytes("trusted.link"), 10), Errno.ENODATA);
  fs.removexattr(ctx, s, bytes("trusted.link"));
});

Deno.test("ACCESS checks as the caller", () => {
  using share = tempShare();
  const fs = share.fs;
  const f = create(fs, 1n, "f", O_RDWR, 0o640);
  fs.release(ctx, f.nodeid, f.fh, 0);
  fs.setattr(ctx, f.nodeid, { ...SETATTR, valid: 1 << 1 | 1 << 2, uid: 1000, gid: 1000 });
  const owner: Context = { uid: 1000, gid: 1000, pid: 2 };
  const group: Context = { uid: 1001, gid: 1000, pid: 2 };
  const other: Context = { uid: 1002, gid: 1002, pid: 2 };
  fs.access(owner, f.nodeid, R_OK | W_OK);
  errno(() => fs.access(owner, f.nodeid, X_OK), Errno.EACCES);
  fs.access(group, f.nodeid, R_OK);
  errno(() => fs.access(group, f.nodeid, W_OK), Errno.EACCES);
  errno(() => fs.access(other, f.nodeid, R_OK), Errno.EACCES);
  fs.access(other, f.nodeid, 0);
  fs.access(ctx, f.nodeid, R_OK | W_OK);
  errno(() => fs.access(ctx, f.nodeid, X_OK), Errno.EACCES, "root needs one x bit");
  // Back to the daemon's own identity afterwards.
  fs.setattr(ctx, f.nodeid, { ...SETATTR, valid: 1 << 0, mode: 0 });
  fs.access(ctx, f.nodeid, R_OK);
});

Deno.test("nodes are created as the caller: owner, group, and the caller's permission", () => {
  using share = tempShare();
  const fs = share.fs;
  const user: Context = { uid: 1000, gid: 100, pid: 2 };
  errno(() => fs.mkdir(user, 1n, bytes("no"), 0o755, 0), Errno.EACCES, "root's 0755 dir");
  Deno.chmodSync(share.dir, 0o777);
  const d = { ...fs.mkdir(user, 1n, bytes("d"), 0o755, 0) };
  assert.deepEqual([d.attr.uid, d.attr.gid], [1000, 100]);
  const c = fs.create(user, d.nodeid, bytes("f"), S_IFREG | 0o644, O_RDWR | O_CREAT, 0);
  assert.deepEqual([c.entry.attr.uid, c.entry.attr.gid], [1000, 100]);
  fs.release(user, c.entry.nodeid, c.open.fh, 0);
  const s = fs.symlink(user, d.nodeid, bytes("s"), bytes("f"));
  assert.deepEqual([s.attr.uid, s.attr.gid], [1000, 100]);
  const m = fs.mknod(user, d.nodeid, bytes("p"), S_IFIFO | 0o600, 0, 0);
  assert.deepEqual([m.attr.uid, m.attr.gid], [1000, 100]);
  const t = fs.tmpfile(user, d.nodeid, S_IFREG | 0o600, O_RDWR, 0);
  assert.deepEqual([t.entry.attr.uid, t.entry.attr.gid], [1000, 100]);
  fs.release(user, t.entry.nodeid, t.open.fh, 0);
  // The daemon is itself again.
  const r = fs.mkdir(ctx, 1n, bytes("r"), 0o700, 0);
  assert.deepEqual([r.attr.uid, r.attr.gid], [0, 0]);
  errno(() => fs.mkdir(user, r.nodeid, bytes("x"), 0o755, 0), Errno.EACCES);
  const own = Deno.statSync(`${share.dir}/d/f`);
  assert.equal(own.uid, 1000);
});

Deno.test("statfs, getattr and errors for unknown nodeids and fhs", () => {
  using share = tempShare();
  const fs = share.fs;
  const s = fs.statfs(ctx, 1n);
  assert.ok(s.blocks > 0 && s.bsize > 0 && s.namelen === 255);
  const a = fs.getattr(ctx, 1n, undefined).attr;
  assert.equal(a.mode, S_IFDIR | 0o755);
  assert.equal(a.ino, BigInt(Deno.statSync(share.dir).ino ?? 0));
  for (
    const call of [
      () => fs.getattr(ctx, 5n, undefined),
      () => fs.lookup(ctx, 5n, bytes("x")),
      () => fs.statfs(ctx, 0n),
      () => fs.open(ctx, 5n, O_RDONLY, 0),
      () => fs.opendir(ctx, 5n, 0),
      () => fs.mkdir(ctx, 5n, bytes("x"), 0o755, 0),
      () => fs.readlink(ctx, 5n),
    ]
  ) errno(call, Errno.ENOENT);
  const f = create(fs, 1n, "f");
  const dst = new BufferDestination(10);
  errno(() => fs.read(ctx, f.nodeid, f.fh + 1n, 0n, 10, dst), Errno.EBADF);
  errno(() => fs.read(ctx, 1n, f.fh, 0n, 10, dst), Errno.EBADF, "fh of another node");
  errno(() => fs.read(ctx, f.nodeid, f.fh, 1n << 63n, 10, dst), Errno.EINVAL);
  errno(() => fs.release(ctx, f.nodeid, 0n, 0), Errno.EBADF);
  errno(() => fs.releasedir(ctx, f.nodeid, f.fh), Errno.EBADF, "a file handle is not a dir's");
  fs.release(ctx, f.nodeid, f.fh, 0);
  errno(() => fs.release(ctx, f.nodeid, f.fh, 0), Errno.EBADF, "released twice");
  errno(() => fs.flush(ctx, f.nodeid, f.fh, 0n), Errno.EBADF);
  const g = fs.open(ctx, f.nodeid, O_RDONLY, 0);
  assert.ok(g.fh > f.fh, "fh values are never reused");
  fs.release(ctx, f.nodeid, g.fh, 0);
});

Deno.test("lookup counts, FORGET, and destroy() releasing every node and handle", () => {
  const fds = openFdCount();
  {
    using share = tempShare();
    const fs = share.fs;
    Deno.writeTextFileSync(`${share.dir}/f`, "");
    assert.equal(fs.inodeCount, 1);
    const n = fs.lookup(ctx, 1n, bytes("f")).nodeid;
    assert.equal(fs.lookup(ctx, 1n, bytes("f")).nodeid, n);
    assert.equal(fs.link(ctx, n, 1n, bytes("g")).nodeid, n);
    assert.equal(fs.inodeCount, 2);
    fs.forget(ctx, n, 2n);
    assert.equal(fs.inodeCount, 2, "one lookup left");
    fs.forget(ctx, n, 1n);
    assert.equal(fs.inodeCount, 1, "forgotten");
    errno(() => fs.getattr(ctx, n, undefined), Errno.ENOENT);
    const again = fs.lookup(ctx, 1n, bytes("f")).nodeid;
    assert.ok(again > n, "nodeids are never reused");
    fs.forget(ctx, again, 100n);
    fs.forget(ctx, 1n, 100n);
    fs.forget(ctx, 12345n, 1n);
    assert.equal(fs.inodeCount, 1, "the root stays");
    assert.equal(fs.lookup(ctx, 1n, bytes(".")).nodeid, 1n);

    const mid = openFdCount();
    for (let i = 0; i < 20; i++) {
      const c = create(fs, 1n, `n${i}`);
      if (i % 2 === 0) fs.opendir(ctx, 1n, 0);
      fs.open(ctx, c.nodeid, O_RDONLY, 0);
    }
    assert.equal(fs.inodeCount, 21);
    assert.equal(fs.handleCount, 50);
    assert.equal(openFdCount(), mid + 70);
    fs.destroy();
    assert.equal(fs.inodeCount, 1);
    assert.equal(fs.handleCount, 0);
    assert.equal(openFdCount(), mid);
    assert.equal(fs.getattr(ctx, 1n, undefined).attr.mode & S_IFMT, S_IFDIR, "root still served");
  }
  assert.equal(openFdCount(), fds, "close() closes everything");
});

Deno.test("same inode through different names; forgotten while open", () => {
  using share = tempShare();
  const fs = share.fs;
  const f = create(fs, 1n, "f");
  fs.forget(ctx, f.nodeid, 1n);
  assert.equal(fs.inodeCount, 1);
  // The handle outlives the node: the kernel releases after forgetting in a racy close.
  write(fs, f.nodeid, f.fh, 0, "still");
  fs.release(ctx, f.nodeid, f.fh, 0);
  assert.equal(Deno.readTextFileSync(`${share.dir}/f`), "still");
});

Deno.test("names: empty, with '/', NUL, or longer than NAME_MAX are refused", () => {
  using share = tempShare();
  const fs = share.fs;
  errno(() => fs.lookup(ctx, 1n, bytes("")), Errno.EINVAL);
  errno(() => fs.lookup(ctx, 1n, bytes("a/b")), Errno.EINVAL);
  errno(() => fs.lookup(ctx, 1n, new Uint8Array([0x61, 0, 0x62])), Errno.EINVAL);
  errno(() => fs.lookup(ctx, 1n, bytes("x".repeat(256))), Errno.ENAMETOOLONG);
  errno(() => fs.lookup(ctx, 1n, bytes("x".repeat(255))), Errno.ENOENT);
  errno(() => fs.mkdir(ctx, 1n, bytes("a/b"), 0o755, 0), Errno.EINVAL);
  errno(() => fs.create(ctx, 1n, bytes("/etc/x"), 0o644, O_RDWR | O_CREAT, 0), Errno.EINVAL);
  errno(() => fs.rename(ctx, 1n, bytes("a"), 1n, bytes("../b"), 0), Errno.EINVAL);
  errno(() => fs.symlink(ctx, 1n, bytes("s"), bytes("")), Errno.ENOENT);
  const d = fs.mkdir(ctx, 1n, bytes("d"), 0o755, 0).nodeid;
  const f = fs.mknod(ctx, d, bytes("x".repeat(255)), S_IFREG | 0o644, 0, 0);
  assert.equal(f.nodeid, fs.lookup(ctx, d, bytes("x".repeat(255))).nodeid);
  const utf = fs.mkdir(ctx, 1n, bytes("ünïcødé ✓"), 0o755, 0);
  assert.equal(utf.nodeid, fs.lookup(ctx, 1n, bytes("ünïcødé ✓")).nodeid);
});
