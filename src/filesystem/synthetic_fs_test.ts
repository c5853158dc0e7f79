import assert from "node:assert/strict";
import { Errno, ErrnoError } from "../ffi/errno.ts";
import {
  DT_DIR,
  DT_REG,
  O_EXCL,
  O_RDONLY,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
  R_OK,
  RENAME_NOREPLACE,
  S_IFDIR,
  S_IFREG,
  SEEK_DATA,
  SEEK_END,
  SEEK_HOLE,
  W_OK,
  X_OK,
} from "../ffi/constants.ts";
import { FATTR_MODE, FOPEN_DIRECT_IO, FUSE_WRITEBACK_CACHE } from "../wire/fuse.ts";
import type { Context, FileSystem, MaybePromise, SetattrIn } from "./filesystem.ts";
import { MemoryFs } from "./memory_fs.ts";
import { SyntheticFs } from "./synthetic_fs.ts";
import {
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

async function rejects(p: () => MaybePromise<unknown>, expected: number, msg?: string) {
  let err: unknown;
  try {
    await p();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ErrnoError, `${msg ?? ""}: ${err}`);
  assert.equal(err.code, new ErrnoError(expected).code, msg ?? err.message);
}

/** The same file system, every method answering through a Promise settled on a later tick. */
function asyncOf(fs: FileSystem): FileSystem {
  return new Proxy(fs, {
    get(target, key) {
      const v = Reflect.get(target, key);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) =>
        new Promise((resolve, reject) =>
          setTimeout(() => {
            try {
              resolve(v.apply(target, args));
            } catch (e) {
              reject(e);
            }
          }, 0)
        );
    },
  });
}

async function readAll(fs: FileSystem, nodeid: bigint, fh: bigint, at = 0, size = 4096) {
  const dst = new BufferDestination(size);
  const n = await fs.read?.(ctx, nodeid, fh, BigInt(at), size, dst);
  return text(dst.buf.subarray(0, n));
}

async function catFile(fs: FileSystem, nodeid: bigint, who = ctx, direct = true) {
  const o = await (fs.open as NonNullable<FileSystem["open"]>)(who, nodeid, O_RDONLY, 0);
  if (direct) assert.equal(o.openFlags & FOPEN_DIRECT_IO, FOPEN_DIRECT_IO, "opened direct-I/O");
  const s = await readAll(fs, nodeid, o.fh);
  await fs.release?.(who, nodeid, o.fh, 0);
  return s;
}

/** A whole READDIR listing (`size` bytes per request). */
async function listAll(fs: FileSystem, dir: bigint, size = 4096): Promise<Listed[]> {
  const fh = (await (fs.opendir as NonNullable<FileSystem["opendir"]>)(ctx, dir, 0)).fh;
  const out: Listed[] = [];
  let off = 0n;
  for (let i = 0; i < 100_000; i++) {
    const sink = new ListSink(size);
    await fs.readdir?.(ctx, dir, fh, off, sink);
    if (sink.entries.length === 0) break;
    out.push(...sink.entries);
    off = (sink.entries.at(-1) as Listed).off;
  }
  await fs.releasedir?.(ctx, dir, fh);
  return out;
}

async function listPlusAll(fs: FileSystem, dir: bigint, size = 4096): Promise<Listed[]> {
  const fh = (await (fs.opendir as NonNullable<FileSystem["opendir"]>)(ctx, dir, 0)).fh;
  const out: Listed[] = [];
  let off = 0n;
  for (let i = 0; i < 100_000; i++) {
    const sink = new PlusSink(size);
    await fs.readdirplus?.(ctx, dir, fh, off, sink);
    if (sink.entries.length === 0) break;
    out.push(...sink.entries);
    off = (sink.entries.at(-1) as Listed).off;
  }
  await fs.releasedir?.(ctx, dir, fh);
  return out;
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

/** A MemoryFs holding `notes.txt` ("mine") and a directory `docs`, under a synthetic layer. */
function setup(
  files: Record<string, (ctx: Context) => MaybePromise<Uint8Array | string>>,
  opts: { async?: boolean; sizeOnStat?: boolean } = {},
) {
  const mem = new MemoryFs();
  const c = mem.create(ctx, 1n, bytes("notes.txt"), S_IFREG | 0o644, O_RDWR, 0);
  mem.write(ctx, c.entry.nodeid, c.open.fh, 0n, new BufferSource("mine"), 0);
  mem.release(ctx, c.entry.nodeid, c.open.fh, 0);
  mem.mkdir(ctx, 1n, bytes("docs"), 0o755, 0);
  const inner = opts.async ? asyncOf(mem) : mem;
  const fs = new SyntheticFs(
    inner,
    files,
    opts.sizeOnStat === undefined ? {} : { sizeOnStat: opts.sizeOnStat },
  );
  return { mem, fs, notes: c.entry.nodeid };
}

Deno.test("SyntheticFs files appear in LOOKUP, GETATTR and the root's READDIR, after '.' and '..' and before the wrapped entries", async () => {
  let calls = 0;
  const { fs } = setup({
    status: () => `calls ${++calls}\n`,
    "proc/info": () => new Uint8Array([1, 2, 3]),
  });
  const e = await fs.lookup(ctx, 1n, bytes("status"));
  assert.equal(e.attr.mode, S_IFREG | 0o444);
  assert.equal(e.attr.size, 8, "the size of contents computed for the lookup");
  assert.equal(e.attr.nlink, 1);
  assert.equal(e.attr.ino, e.nodeid);
  assert.equal(e.attrTimeout, 0, "attributes are never cached");
  const a = await fs.getattr(ctx, e.nodeid, undefined);
  assert.equal(a.attr.size, 8);
  assert.equal(await catFile(fs, e.nodeid), "calls 3\n");
  const l = await listAll(fs, 1n);
  assert.deepEqual(l.map((x) => x.name), [".", "..", "status", "proc", "notes.txt", "docs"]);
  assert.deepEqual(l.map((x) => x.type), [DT_DIR, DT_DIR, DT_REG, DT_DIR, DT_REG, DT_DIR]);
  assert.equal(l[0]?.ino, 1n, "the wrapped root's inode number");
  for (const x of l) assert.ok(x.off > 0n && x.off < 2n ** 63n, "cookies fit a signed off_t");
  const proc = await fs.lookup(ctx, 1n, bytes("proc"));
  assert.equal(proc.attr.mode, S_IFDIR | 0o555);
  assert.equal(proc.attr.nlink, 2);
  const info = await fs.lookup(ctx, proc.nodeid, bytes("info"));
  assert.equal(info.attr.size, 3);
  assert.deepEqual((await listAll(fs, proc.nodeid)).map((x) => x.name), [".", "..", "info"]);
  await rejects(() => fs.lookup(ctx, proc.nodeid, bytes("nope")), Errno.ENOENT);
  await rejects(() => fs.lookup(ctx, info.nodeid, bytes("x")), Errno.ENOTDIR);
  assert.equal((await fs.lookup(ctx, proc.nodeid, bytes("."))).nodeid, proc.nodeid);
  assert.equal((await fs.lookup(ctx, proc.nodeid, bytes(".."))).nodeid, 1n);
  // The wrapped file system's own names still resolve.
  assert.equal((await fs.lookup(ctx, 1n, bytes("notes.txt"))).attr.size, 4);
});

Deno.test("SyntheticFs contents are computed at OPEN and stay what the handle reads until RELEASE", async () => {
  let version = 0;
  const { fs } = setup({ counter: () => `version ${version}` }, { sizeOnStat: false });
  const e = await fs.lookup(ctx, 1n, bytes("counter"));
  assert.equal(e.attr.size, 0, "sizeOnStat false: nothing computed yet");
  version = 1;
  const o = await fs.open?.(ctx, e.nodeid, O_RDONLY, 0) as { fh: bigint };
  version = 2;
  assert.equal(await readAll(fs, e.nodeid, o.fh), "version 1");
  assert.equal(await readAll(fs, e.nodeid, o.fh, 8, 10), "1");
  assert.equal(await readAll(fs, e.nodeid, o.fh, 9), "", "at the end");
  assert.equal(await readAll(fs, e.nodeid, o.fh, 1 << 30), "", "far past the end");
  const viaFh = await fs.getattr(ctx, e.nodeid, o.fh);
  assert.equal(viaFh.attr.size, 9, "the handle's contents");
  assert.equal((await fs.getattr(ctx, e.nodeid, undefined)).attr.size, 9, "the last computed");
  assert.equal(await fs.lseek?.(ctx, e.nodeid, o.fh, 2n, SEEK_DATA), 2n);
  assert.equal(await fs.lseek?.(ctx, e.nodeid, o.fh, 2n, SEEK_HOLE), 9n);
  assert.equal(await fs.lseek?.(ctx, e.nodeid, o.fh, 0n, SEEK_END), 9n);
  await rejects(
    () => fs.lseek?.(ctx, e.nodeid, o.fh, 9n, SEEK_DATA) as MaybePromise<bigint>,
    Errno.ENXIO,
  );
  await fs.flush?.(ctx, e.nodeid, o.fh, 0n);
  await fs.fsync?.(ctx, e.nodeid, o.fh, false);
  const o2 = await fs.open?.(ctx, e.nodeid, O_RDONLY, 0) as { fh: bigint };
  assert.equal(await readAll(fs, e.nodeid, o2.fh), "version 2");
  assert.equal(await readAll(fs, e.nodeid, o.fh), "version 1", "the first handle kept its own");
  await fs.release?.(ctx, e.nodeid, o.fh, 0);
  await rejects(
    () => readAll(fs, e.nodeid, o.fh),
    Errno.EBADF,
    "released",
  );
  // The mtime moves when the contents change, not otherwise.
  const m1 = (await fs.getattr(ctx, e.nodeid, undefined)).attr;
  await new Promise((r) => setTimeout(r, 5));
  await catFile(fs, e.nodeid);
  const m2 = (await fs.getattr(ctx, e.nodeid, undefined)).attr;
  assert.deepEqual([m2.mtime, m2.mtimeNsec], [m1.mtime, m1.mtimeNsec], "same contents");
  version = 3;
  await catFile(fs, e.nodeid);
  const m3 = (await fs.getattr(ctx, e.nodeid, undefined)).attr;
  assert.ok(m3.mtime * 1e9 + m3.mtimeNsec > m2.mtime * 1e9 + m2.mtimeNsec, "changed contents");
});

Deno.test("SyntheticFs the context of the caller reaches the content function", async () => {
  const { fs } = setup({ whoami: (c) => `uid ${c.uid} gid ${c.gid}` });
  const e = await fs.lookup(alice, 1n, bytes("whoami"));
  assert.equal(await catFile(fs, e.nodeid, alice), "uid 1000 gid 1000");
  assert.equal(await catFile(fs, e.nodeid, ctx), "uid 0 gid 0");
});

Deno.test("SyntheticFs writes, truncation, chmod, unlink, rename and xattr changes of synthetic nodes are EROFS; their names are EEXIST to create", async () => {
  const { fs, notes } = setup({ ro: () => "x", "d/f": () => "y" });
  const ro = (await fs.lookup(ctx, 1n, bytes("ro"))).nodeid;
  const d = (await fs.lookup(ctx, 1n, bytes("d"))).nodeid;
  const f = (await fs.lookup(ctx, d, bytes("f"))).nodeid;
  await rejects(() => fs.open?.(ctx, ro, O_WRONLY, 0) as MaybePromise<unknown>, Errno.EROFS);
  await rejects(() => fs.open?.(ctx, ro, O_RDWR, 0) as MaybePromise<unknown>, Errno.EROFS);
  await rejects(
    () => fs.open?.(ctx, ro, O_RDONLY | O_TRUNC, 0) as MaybePromise<unknown>,
    Errno.EROFS,
  );
  await rejects(() => fs.open?.(ctx, d, O_RDONLY, 0) as MaybePromise<unknown>, Errno.EISDIR);
  const o = await fs.open?.(ctx, ro, O_RDONLY, 0) as { fh: bigint };
  await rejects(
    () => fs.write?.(ctx, ro, o.fh, 0n, new BufferSource("z"), 0) as MaybePromise<unknown>,
    Errno.EROFS,
  );
  await rejects(
    () => fs.write?.(ctx, ro, 999n, 0n, new BufferSource("z"), 0) as MaybePromise<unknown>,
    Errno.EBADF,
  );
  await rejects(
    () => fs.fallocate?.(ctx, ro, o.fh, 0n, 1n, 0) as MaybePromise<unknown>,
    Errno.EROFS,
  );
  await rejects(
    () =>
      fs.setattr?.(ctx, ro, { ...NO_SET, valid: FATTR_MODE, mode: 0o777 }) as MaybePromise<unknown>,
    Errno.EROFS,
  );
  const change = [
    () => fs.unlink?.(ctx, 1n, bytes("ro")),
    () => fs.rmdir?.(ctx, 1n, bytes("d")),
    () => fs.unlink?.(ctx, d, bytes("f")),
    () => fs.rename?.(ctx, 1n, bytes("ro"), 1n, bytes("x"), 0),
    () => fs.rename?.(ctx, 1n, bytes("notes.txt"), 1n, bytes("ro"), 0),
    () => fs.rename?.(ctx, 1n, bytes("notes.txt"), d, bytes("n"), 0),
    () => fs.mkdir?.(ctx, d, bytes("sub"), 0o755, 0),
    () => fs.create?.(ctx, d, bytes("new"), S_IFREG | 0o644, O_RDWR, 0),
    () => fs.create?.(ctx, 1n, bytes("ro"), S_IFREG | 0o644, O_RDWR, 0),
    () => fs.symlink?.(ctx, d, bytes("l"), bytes("t")),
    () => fs.mknod?.(ctx, d, bytes("p"), 0o10644, 0, 0),
    () => fs.tmpfile?.(ctx, d, S_IFREG | 0o600, O_RDWR, 0),
    () => fs.link?.(ctx, ro, 1n, bytes("alias")),
    () => fs.link?.(ctx, notes, d, bytes("alias")),
    () => fs.setxattr?.(ctx, ro, bytes("user.a"), bytes("1"), 0),
    () => fs.removexattr?.(ctx, f, bytes("user.a")),
    () => fs.access?.(ctx, ro, W_OK),
  ];
  for (const [i, call] of change.entries()) {
    await rejects(call as () => MaybePromise<unknown>, Errno.EROFS, `change ${i}`);
  }
  const taken = [
    () => fs.mkdir?.(ctx, 1n, bytes("ro"), 0o755, 0),
    () => fs.symlink?.(ctx, 1n, bytes("d"), bytes("t")),
    () => fs.mknod?.(ctx, 1n, bytes("ro"), 0o10644, 0, 0),
    () => fs.link?.(ctx, notes, 1n, bytes("d")),
    () => fs.create?.(ctx, 1n, bytes("ro"), S_IFREG | 0o644, O_RDWR | O_EXCL, 0),
    () => fs.rename?.(ctx, 1n, bytes("notes.txt"), 1n, bytes("ro"), RENAME_NOREPLACE),
  ];
  for (const [i, call] of taken.entries()) {
    await rejects(call as () => MaybePromise<unknown>, Errno.EEXIST, `taken ${i}`);
  }
  await rejects(
    () => fs.copyFileRange?.(ctx, notes, 1n, 0n, ro, o.fh, 0n, 1, 0) as MaybePromise<unknown>,
    Errno.EROFS,
  );
  // Reading them is fine: getxattr says there is nothing, listxattr lists nothing.
  await rejects(
    () => fs.getxattr?.(ctx, ro, bytes("user.a"), 0) as MaybePromise<unknown>,
    Errno.ENODATA,
  );
  assert.equal(await fs.listxattr?.(ctx, ro, 0), 0);
  await fs.access?.(ctx, ro, R_OK);
  await fs.access?.(alice, d, R_OK | X_OK);
  await rejects(() => fs.access?.(alice, ro, X_OK) as MaybePromise<unknown>, Errno.EACCES);
  await rejects(() => fs.readlink?.(ctx, ro) as MaybePromise<unknown>, Errno.EINVAL);
  await rejects(() => fs.opendir?.(ctx, ro, 0) as MaybePromise<unknown>, Errno.ENOTDIR);
  assert.equal((await fs.statfs?.(ctx, ro))?.namelen, 255, "statfs of the wrapped one");
  await fs.syncfs?.(ctx, ro);
});

Deno.test("SyntheticFs hides a wrapped name it covers, in LOOKUP, READDIR and READDIRPLUS, giving back the lookups it drops", async () => {
  const { mem, fs, notes } = setup({ "notes.txt": () => "synthetic" });
  const e = await fs.lookup(ctx, 1n, bytes("notes.txt"));
  assert.notEqual(e.nodeid, notes);
  assert.equal(await catFile(fs, e.nodeid), "synthetic");
  assert.deepEqual((await listAll(fs, 1n)).map((x) => x.name), [".", "..", "notes.txt", "docs"]);
  // The wrapped node is still reachable by its nodeid (the guest may hold it) and untouched.
  assert.equal((await fs.getattr(ctx, notes, undefined)).attr.size, 4);
  // READDIRPLUS: the hidden entry's lookup goes back, so FORGET + unlink release it.
  mem.forget(ctx, notes, 1n);
  const plus = await listPlusAll(fs, 1n);
  assert.deepEqual(plus.map((x) => x.name), [".", "..", "notes.txt", "docs"]);
  assert.equal(plus[2]?.nodeid, e.nodeid, "the synthetic one");
  assert.deepEqual([plus[0]?.nodeid, plus[1]?.nodeid], [0n, 0n]);
  assert.equal(plus[0]?.ino, 1n);
  const before = mem.usage.nodes;
  mem.unlink(ctx, 1n, bytes("notes.txt"));
  assert.equal(mem.usage.nodes, before - 1, "no lookup left on the hidden node");
});

Deno.test("SyntheticFs a root listing in small READDIR(PLUS) calls, hidden names and a changing wrapped directory: each entry once", async () => {
  const hidden: Record<string, () => string> = {};
  for (let i = 0; i < 40; i++) hidden[`h${i}`] = () => `${i}`;
  for (let i = 0; i < 30; i++) hidden[`syn-${i}`] = () => "s";
  const mem = new MemoryFs();
  // Wrapped names: first a run of 40 hidden ones (rounds with nothing visible), then others.
  for (let i = 0; i < 40; i++) {
    mem.forget(ctx, mem.mknod(ctx, 1n, bytes(`h${i}`), S_IFREG | 0o644, 0, 0).nodeid, 1n);
  }
  for (let i = 0; i < 100; i++) mem.mknod(ctx, 1n, bytes(`w${i}`), S_IFREG | 0o644, 0, 0);
  const fs = new SyntheticFs(asyncOf(mem), hidden);
  for (const plus of [false, true]) {
    const fh = (await (fs.opendir as NonNullable<FileSystem["opendir"]>)(ctx, 1n, 0)).fh;
    const seen = new Map<string, number>();
    let off = 0n;
    let round = 0;
    for (; round < 10_000; round++) {
      const sink = plus ? new PlusSink(400) : new ListSink(120);
      if (sink instanceof PlusSink) await fs.readdirplus(ctx, 1n, fh, off, sink);
      else await fs.readdir(ctx, 1n, fh, off, sink);
      if (sink.entries.length === 0) break;
      for (const e of sink.entries) seen.set(e.name, (seen.get(e.name) ?? 0) + 1);
      off = (sink.entries.at(-1) as Listed).off;
      // The wrapped directory changes between calls (for a while: a directory that grows at
      // every call has no end).
      if (round < 40) {
        mem.mknod(ctx, 1n, bytes(`late${plus}${round}`), S_IFREG | 0o644, 0, 0);
        if (round % 2 === 0) mem.unlink(ctx, 1n, bytes(`late${plus}${round / 2}`));
      }
    }
    for (const [name, n] of seen) assert.equal(n, 1, `${name} ×${n}`);
    for (let i = 0; i < 100; i++) assert.equal(seen.get(`w${i}`), 1);
    for (const name of Object.keys(hidden)) assert.equal(seen.get(name), 1, name);
    assert.equal(seen.get("."), 1);
    await fs.releasedir(ctx, 1n, fh);
  }
  // Every lookup READDIRPLUS took of a hidden node was given back: unlinked, they go at once.
  const before = mem.usage.nodes;
  for (let i = 0; i < 40; i++) mem.unlink(ctx, 1n, bytes(`h${i}`));
  assert.equal(mem.usage.nodes, before - 40, "no hidden node kept by a lookup");
});

Deno.test("SyntheticFs passes everything else to the wrapped file system, sync or async", async () => {
  for (const async of [false, true]) {
    const { fs, notes } = setup({ status: () => "ok" }, { async });
    // Write and read back a wrapped file.
    const c = await fs.create(ctx, 1n, bytes("new"), S_IFREG | 0o644, O_RDWR, 0);
    assert.equal(
      await fs.write(ctx, c.entry.nodeid, c.open.fh, 0n, new BufferSource("data"), 0),
      4,
    );
    assert.equal(await readAll(fs, c.entry.nodeid, c.open.fh), "data");
    await fs.flush(ctx, c.entry.nodeid, c.open.fh, 0n);
    await fs.release(ctx, c.entry.nodeid, c.open.fh, 0);
    const d = await fs.mkdir(ctx, 1n, bytes("dir"), 0o755, 0);
    await fs.rename(ctx, 1n, bytes("new"), d.nodeid, bytes("moved"), 0);
    const moved = await fs.lookup(ctx, d.nodeid, bytes("moved"));
    assert.equal(await catFile(fs, moved.nodeid, ctx, false), "data");
    await fs.setxattr(ctx, notes, bytes("user.k"), bytes("v"), 0);
    assert.equal(await fs.getxattr(ctx, notes, bytes("user.k"), 0), 1);
    assert.equal(text(await fs.listxattr(ctx, notes, 100) as Uint8Array), "user.k\0");
    await fs.removexattr(ctx, notes, bytes("user.k"));
    const l = await fs.symlink(ctx, 1n, bytes("link"), bytes("notes.txt"));
    assert.equal(text(await fs.readlink(ctx, l.nodeid)), "notes.txt");
    await fs.link(ctx, notes, d.nodeid, bytes("hard"));
    await fs.unlink(ctx, d.nodeid, bytes("hard"));
    await fs.unlink(ctx, d.nodeid, bytes("moved"));
    await fs.rmdir(ctx, 1n, bytes("dir"));
    const s = await fs.setattr(ctx, notes, { ...NO_SET, valid: FATTR_MODE, mode: 0o600 });
    assert.equal(s.attr.mode, S_IFREG | 0o600);
    await fs.access(ctx, notes, R_OK);
    const st = await fs.statfs(ctx, 1n);
    assert.equal(st.namelen, 255);
    await fs.syncfs(ctx, 1n);
    await fs.forget(ctx, notes, 1n);
    await fs.batchForget(ctx, [{ nodeid: notes, nlookup: 0n }, {
      nodeid: 2n ** 64n - 1n,
      nlookup: 1n,
    }]);
    const t = await fs.tmpfile(ctx, 1n, S_IFREG | 0o600, O_RDWR, 0);
    await fs.fallocate(ctx, t.entry.nodeid, t.open.fh, 0n, 10n, 0);
    assert.equal(await fs.lseek(ctx, t.entry.nodeid, t.open.fh, 0n, SEEK_HOLE), 10n);
    await fs.fsync(ctx, t.entry.nodeid, t.open.fh, true);
    const c2 = await fs.create(ctx, 1n, bytes("copy"), S_IFREG | 0o644, O_RDWR, 0);
    await fs.copyFileRange(
      ctx,
      t.entry.nodeid,
      t.open.fh,
      0n,
      c2.entry.nodeid,
      c2.open.fh,
      0n,
      10,
      0,
    );
    assert.equal((await fs.getattr(ctx, c2.entry.nodeid, undefined)).attr.size, 10);
    const mk = await fs.mknod(ctx, 1n, bytes("fifo"), 0o10600, 0, 0);
    assert.equal(mk.attr.mode, 0o10600);
    const dh = await fs.opendir(ctx, 1n, 0);
    await fs.fsyncdir(ctx, 1n, dh.fh, false);
    await fs.releasedir(ctx, 1n, dh.fh);
    assert.equal(await fs.init(FUSE_WRITEBACK_CACHE | 1n), 1n, "MemoryFs's init answers");
    await fs.destroy();
    // Wrapped errors come through as they are.
    await rejects(() => fs.lookup(ctx, 1n, bytes("absent")), Errno.ENOENT);
    await rejects(() => fs.getattr(ctx, 999n, undefined), Errno.ENOENT);
  }
});

Deno.test("SyntheticFs async contents, and a content function's ErrnoError, reach the caller", async () => {
  const { fs } = setup({
    slow: async () => {
      await new Promise((r) => setTimeout(r, 5));
      return "late";
    },
    busy: () => {
      throw new ErrnoError(Errno.EBUSY, "busy");
    },
  }, { async: true });
  const slow = await fs.lookup(ctx, 1n, bytes("slow"));
  assert.equal(slow.attr.size, 4);
  assert.equal(await catFile(fs, slow.nodeid), "late");
  await rejects(() => fs.lookup(ctx, 1n, bytes("busy")), Errno.EBUSY);
  const quiet = new SyntheticFs(new MemoryFs(), {
    busy: () => Promise.reject(new ErrnoError(Errno.EAGAIN)),
  }, {
    sizeOnStat: false,
  });
  const b = await quiet.lookup(ctx, 1n, bytes("busy"));
  assert.equal(b.attr.size, 0);
  await rejects(() => quiet.open(ctx, b.nodeid, O_RDONLY, 0), Errno.EAGAIN);
});

Deno.test("SyntheticFs unknown synthetic-range nodeids are ENOENT, unknown or mismatched fhs EBADF", async () => {
  const { fs } = setup({ a: () => "a", "d/b": () => "b" });
  const bad = 0xffff_ffff_0000_1000n;
  const dst = new BufferDestination(8);
  await rejects(() => fs.lookup(ctx, bad, bytes("x")), Errno.ENOENT);
  await rejects(() => fs.getattr(ctx, bad, undefined), Errno.ENOENT);
  await rejects(() => fs.open(ctx, bad, O_RDONLY, 0), Errno.ENOENT);
  await rejects(() => fs.read(ctx, bad, 1n, 0n, 1, dst), Errno.ENOENT);
  await rejects(() => fs.opendir(ctx, bad, 0), Errno.ENOENT);
  await rejects(() => fs.mkdir(ctx, bad, bytes("x"), 0o755, 0), Errno.ENOENT);
  await rejects(() => fs.setxattr(ctx, bad, bytes("user.x"), bytes("1"), 0), Errno.ENOENT);
  fs.forget(ctx, bad, 1n);
  const a = (await fs.lookup(ctx, 1n, bytes("a"))).nodeid;
  const d = (await fs.lookup(ctx, 1n, bytes("d"))).nodeid;
  const o = await fs.open(ctx, a, O_RDONLY, 0);
  const dh = await fs.opendir(ctx, d, 0);
  for (const fh of [0n, 7n, 2n ** 64n - 1n, dh.fh]) {
    await rejects(() => fs.read(ctx, a, fh, 0n, 1, dst), Errno.EBADF, `read ${fh}`);
    await rejects(() => fs.release(ctx, a, fh, 0), Errno.EBADF);
    await rejects(() => fs.flush(ctx, a, fh, 0n), Errno.EBADF);
    await rejects(() => fs.lseek(ctx, a, fh, 0n, SEEK_DATA), Errno.EBADF);
    await rejects(() => fs.getattr(ctx, a, fh), Errno.EBADF);
  }
  await rejects(() => fs.readdir(ctx, d, o.fh, 0n, new ListSink(4096)), Errno.EBADF);
  await rejects(() => fs.releasedir(ctx, d, o.fh), Errno.EBADF);
  await rejects(() => fs.readdir(ctx, a, dh.fh, 0n, new ListSink(4096)), Errno.EBADF);
  await fs.fsyncdir(ctx, d, dh.fh, false);
  await fs.releasedir(ctx, d, dh.fh);
  await rejects(() => fs.releasedir(ctx, d, dh.fh), Errno.EBADF);
  // A synthetic nodeid with a wrapped file system's fh, and the other way round.
  await rejects(
    () => fs.copyFileRange(ctx, a, o.fh, 0n, 2n, 1n, 0n, 1, 0),
    Errno.EXDEV,
    "from a synthetic file",
  );
  // destroy() drops synthetic handles with the session.
  await fs.destroy();
  await rejects(() => fs.read(ctx, a, o.fh, 0n, 1, dst), Errno.EBADF);
});

Deno.test("SyntheticFs READDIRPLUS of a synthetic directory gives '.' and '..' without lookups, then entries", async () => {
  const { fs } = setup({ "d/x": () => "1", "d/y": () => "22", "d/sub/z": () => "" });
  const d = (await fs.lookup(ctx, 1n, bytes("d"))).nodeid;
  const l = await listPlusAll(fs, d, 200);
  assert.deepEqual(l.map((e) => e.name), [".", "..", "x", "y", "sub"]);
  assert.deepEqual(l.map((e) => e.nodeid === 0n), [true, true, false, false, false]);
  assert.equal(l[0]?.ino, d);
  assert.equal(l[1]?.ino, 1n);
  const sub = await fs.lookup(ctx, d, bytes("sub"));
  assert.equal(sub.attr.nlink, 2);
  assert.equal((await fs.lookup(ctx, d, bytes("sub"))).nodeid, l[4]?.nodeid);
  assert.equal((await fs.lookup(ctx, sub.nodeid, bytes(".."))).nodeid, d);
  assert.equal((await fs.getattr(ctx, d, undefined)).attr.nlink, 3);
  const small = await listAll(fs, d, 32);
  assert.deepEqual(small.map((e) => e.name), [".", "..", "x", "y", "sub"], "one per call");
});

Deno.test("SyntheticFs bad paths throw TypeError", () => {
  const mem = new MemoryFs();
  const f = () => "";
  for (const path of ["", "/a", "a/", "a//b", ".", "a/..", "n".repeat(256), "a\0b"]) {
    assert.throws(() => new SyntheticFs(mem, { [path]: f }), TypeError, JSON.stringify(path));
  }
  assert.throws(() => new SyntheticFs(mem, { "a": f, "a/b": f }), TypeError);
  assert.throws(() => new SyntheticFs(mem, { "a/b": f, "a": f }), TypeError);
  new SyntheticFs(mem, { "a/b": f, "a/c": f, ["n".repeat(255)]: f });
});

Deno.test("SyntheticFs over a file system lacking methods answers ENOSYS for them", async () => {
  const bare: FileSystem = {
    lookup() {
      throw new ErrnoError(Errno.ENOENT);
    },
  };
  const fs = new SyntheticFs(bare, { hello: () => "hi" });
  const e = await fs.lookup(ctx, 1n, bytes("hello"));
  assert.equal(await catFile(fs, e.nodeid), "hi");
  await rejects(() => fs.lookup(ctx, 1n, bytes("other")), Errno.ENOENT);
  await rejects(() => fs.unlink(ctx, 1n, bytes("other")), Errno.ENOSYS);
  await rejects(() => fs.getattr(ctx, 1n, undefined), Errno.ENOSYS);
  await rejects(() => fs.readdir(ctx, 1n, 1n, 0n, new ListSink(100)), Errno.ENOSYS);
  assert.equal(fs.init(5n), 5n, "init without the wrapped one's: what was offered");
  fs.forget(ctx, 5n, 1n);
  fs.batchForget(ctx, [{ nodeid: 5n, nlookup: 1n }]);
  fs.destroy();
});

Deno.test("SyntheticFs a wrapped listing that returns two entries per call, all hidden for a while, does not end the root listing early", async () => {
  const mem = new MemoryFs();
  const files: Record<string, () => string> = {};
  for (let i = 0; i < 9; i++) {
    mem.mknod(ctx, 1n, bytes(`x${i}`), S_IFREG | 0o644, 0, 0);
    files[`x${i}`] = () => "";
  }
  mem.mknod(ctx, 1n, bytes("visible"), S_IFREG | 0o644, 0, 0);
  const stingy: FileSystem = {
    opendir: (c, n, f) => mem.opendir(c, n, f),
    releasedir: (c, n, fh) => mem.releasedir(c, n, fh),
    getattr: (c, n, fh) => mem.getattr(c, n, fh),
    readdir(c, n, fh, off, sink) {
      let k = 0;
      mem.readdir(c, n, fh, off, { add: (...a) => k++ < 2 && sink.add(...a) });
    },
  };
  const fs = new SyntheticFs(stingy, files);
  const names = (await listAll(fs, 1n, 4096)).map((e) => e.name);
  assert.deepEqual(names, [".", "..", ...Object.keys(files), "visible"]);
  // Resumed right after the synthetic names, too.
  const fh = (await fs.opendir(ctx, 1n, 0)).fh;
  const sink = new ListSink(4096);
  await fs.readdir(ctx, 1n, fh, 0x7fff_ffff_ff00_0000n + 11n, sink);
  assert.deepEqual(sink.entries.map((e) => e.name), ["visible"]);
});
