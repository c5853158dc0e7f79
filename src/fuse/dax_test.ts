/**
 * The DAX window's bookkeeping against a front end that keeps QEMU 11.1's rules (no overlap,
 * unmap only whole mappings, O_RDWR only): every check, splits, the slot bound, reset, forget.
 */
import assert from "node:assert/strict";
import { DAX_PAGE, DAX_RANGE, DaxWindow, type WindowMapper } from "./dax.ts";
import { Errno, ErrnoError } from "../ffi/errno.ts";
import { AT_FDCWD, cString, getFlRaw, O_ACCMODE, O_RDWR, openat } from "../ffi/mod.ts";
import type { Context, FileSystem, MappableFile } from "../filesystem/filesystem.ts";
import {
  FUSE_SETUPMAPPING_FLAG_READ as R,
  FUSE_SETUPMAPPING_FLAG_WRITE as W,
} from "../wire/fuse.ts";
import { silentLogger } from "../log.ts";

const MiB = 1 << 20;
const ctx: Context = { uid: 0, gid: 0, pid: 0 };
const NO_FH = (1n << 64n) - 1n;

/** A front end's window: refuses what QEMU refuses, records what is mapped. */
class FakeFrontEnd implements WindowMapper {
  available = true;
  readonly live = new Map<number, { len: number; fdOffset: number }>();
  readonly log: string[] = [];
  refuseNext = false;

  map(fd: number, fdOffset: number, shmOffset: number, len: number): Promise<void> {
    const rdwr = (getFlRaw(fd) & O_ACCMODE) === O_RDWR;
    for (const [at, m] of this.live) {
      if (at < shmOffset + len && shmOffset < at + m.len) {
        return Promise.reject(new Error(`overlap at ${at}`));
      }
    }
    if (!rdwr || this.refuseNext) {
      this.refuseNext = false;
      return Promise.reject(new ErrnoError(Errno.EIO, "SHMEM_MAP", "refused"));
    }
    this.live.set(shmOffset, { len, fdOffset });
    this.log.push(`map ${shmOffset / MiB}+${len / MiB} @${fdOffset / MiB}`);
    return Promise.resolve();
  }

  unmap(shmOffset: number, len: number): Promise<void> {
    const m = this.live.get(shmOffset);
    if (m === undefined || m.len !== len) {
      return Promise.reject(new Error(`no mapping ${shmOffset}+${len}`));
    }
    this.live.delete(shmOffset);
    this.log.push(`unmap ${shmOffset / MiB}+${len / MiB}`);
    return Promise.resolve();
  }
}

/** Files of 64 MiB (node 2), 20 bytes (node 3), and a read-only one (node 4). */
class Files implements FileSystem {
  readonly path: string;
  opened = 0;
  constructor() {
    this.path = Deno.makeTempFileSync();
    Deno.truncateSync(this.path, 64 * MiB);
  }
  mappable(_ctx: Context, nodeid: bigint, fh: bigint | undefined): MappableFile {
    if (fh !== undefined) throw new ErrnoError(Errno.EBADF, "fh");
    if (nodeid === 4n) throw new ErrnoError(Errno.EROFS, "open");
    this.opened++;
    const fd = openat(AT_FDCWD, cString(this.path), O_RDWR);
    return { fd, size: nodeid === 3n ? 20n : BigInt(64 * MiB) };
  }
}

function setup(
  win: DaxWindow,
  fs: FileSystem,
  moff: number,
  foff = 0,
  len = 2 * MiB,
  flags = R | W,
  nodeid = 2n,
) {
  return win.setup(fs, ctx, nodeid, NO_FH, BigInt(foff), BigInt(len), flags, BigInt(moff));
}

async function errno(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ErrnoError) return e.errno;
    throw e;
  }
  return 0;
}

Deno.test("DaxWindow: a map goes to the front end; an overlapping map unmaps first and splits", async () => {
  const fe = new FakeFrontEnd();
  const fs = new Files();
  const win = new DaxWindow(16 * MiB, fe, silentLogger);
  await setup(win, fs, 0, 0, 8 * MiB);
  assert.deepEqual(fe.log, ["map 0+8 @0"]);
  // A 2 MiB map in the middle: the old mapping goes, its two outer parts come back.
  await setup(win, fs, 4 * MiB, 32 * MiB);
  assert.deepEqual(fe.log.slice(1), ["unmap 0+8", "map 0+4 @0", "map 6+2 @6", "map 4+2 @32"]);
  assert.deepEqual(win.mappings.map((m) => [m.moffset / MiB, m.len / MiB, m.foffset / MiB]), [
    [0, 4, 0],
    [4, 2, 32],
    [6, 2, 6],
  ]);
  // REMOVEMAPPING of exactly the middle leaves the others.
  await win.remove([{ moffset: BigInt(4 * MiB), len: BigInt(2 * MiB) }]);
  assert.deepEqual(win.mappings.map((m) => m.moffset / MiB), [0, 6]);
  win.reset();
  assert.equal(win.mappings.length, 0);
  Deno.removeSync(fs.path);
});

Deno.test("DaxWindow: every bad field is an errno, and nothing reaches the front end", async () => {
  const fe = new FakeFrontEnd();
  const fs = new Files();
  const win = new DaxWindow(8 * MiB, fe, silentLogger);
  const cases: [string, Promise<void>, number][] = [
    ["no flags", setup(win, fs, 0, 0, 2 * MiB, 0n), Errno.EINVAL],
    ["unknown flag", setup(win, fs, 0, 0, 2 * MiB, R | 4n), Errno.EINVAL],
    ["zero length", setup(win, fs, 0, 0, 0), Errno.EINVAL],
    ["unaligned length", setup(win, fs, 0, 0, 100), Errno.EINVAL],
    ["unaligned file offset", setup(win, fs, 0, 512), Errno.EINVAL],
    ["unaligned window offset", setup(win, fs, DAX_PAGE / 2), Errno.EINVAL],
    ["past the window", setup(win, fs, 8 * MiB), Errno.EINVAL],
    ["runs past the window", setup(win, fs, 7 * MiB), Errno.EINVAL],
    [
      "wraps around",
      win.setup(fs, ctx, 2n, NO_FH, 0n, 1n << 63n, R, (1n << 64n) - (1n << 62n)),
      Errno.EINVAL,
    ],
    ["huge file offset", setup(win, fs, 0, 2 ** 53), Errno.EINVAL],
    ["past the end of the file", setup(win, fs, 0, 0, 2 * MiB, R, 3n), Errno.EIO],
    ["read-only file", setup(win, fs, 0, 0, 2 * MiB, R, 4n), Errno.EROFS],
    [
      "a handle the file system refuses",
      win.setup(fs, ctx, 2n, 7n, 0n, BigInt(2 * MiB), R, 0n),
      Errno.EBADF,
    ],
    ["no file system support", setup(win, {}, 0), Errno.ENOSYS],
    ["removal: unaligned", win.remove([{ moffset: 1n, len: BigInt(2 * MiB) }]), Errno.EINVAL],
    ["removal: outside", win.remove([{ moffset: BigInt(8 * MiB), len: 4096n }]), Errno.EINVAL],
    ["removal: zero", win.remove([{ moffset: 0n, len: 0n }]), Errno.EINVAL],
    [
      "removal: ranges overlap",
      win.remove([{ moffset: 0n, len: BigInt(4 * MiB) }, { moffset: BigInt(2 * MiB), len: 4096n }]),
      Errno.EINVAL,
    ],
  ];
  for (const [what, p, want] of cases) assert.equal(await errno(p), want, what);
  assert.deepEqual(fe.log, []);
  fe.available = false;
  assert.equal(await errno(setup(win, fs, 0)), Errno.ENOSYS, "no window negotiated");
  Deno.removeSync(fs.path);
});

Deno.test("DaxWindow: live mappings stay within the window's 2 MiB ranges (ENOSPC past them)", async () => {
  const fe = new FakeFrontEnd();
  const fs = new Files();
  const win = new DaxWindow(4 * MiB, fe, silentLogger);
  assert.equal(win.maxMappings, 2);
  // Page-sized maps: the third is refused before the front end sees it.
  await setup(win, fs, 0, 0, DAX_PAGE);
  await setup(win, fs, DAX_PAGE, 0, DAX_PAGE);
  assert.equal(await errno(setup(win, fs, 2 * DAX_PAGE, 0, DAX_PAGE)), Errno.ENOSPC);
  // A removal that would split one mapping in three parts is refused too.
  await win.remove([{ moffset: 0n, len: BigInt(2 * DAX_PAGE) }]);
  await setup(win, fs, 0, 0, DAX_RANGE);
  await setup(win, fs, DAX_RANGE, 0, DAX_PAGE);
  assert.equal(
    await errno(win.remove([{ moffset: BigInt(DAX_PAGE), len: BigInt(DAX_PAGE) }])),
    Errno.ENOSPC,
  );
  assert.equal(fe.live.size, 2);
  Deno.removeSync(fs.path);
});

Deno.test("DaxWindow: FORGET unmaps the node's ranges; unmapAll empties; a refused map keeps the table true", async () => {
  const fe = new FakeFrontEnd();
  const fs = new Files();
  const win = new DaxWindow(8 * MiB, fe, silentLogger);
  await setup(win, fs, 0, 0, 2 * MiB, R, 2n);
  await setup(win, fs, 2 * MiB, 0, 2 * MiB, R, 5n);
  win.forget(5n);
  await win.unmapAll().then(() => {}); // queued after the forget
  assert.equal(fe.live.size, 0);
  assert.equal(win.mappings.length, 0);
  fe.refuseNext = true;
  assert.equal(await errno(setup(win, fs, 0)), Errno.EIO);
  assert.equal(win.mappings.length, 0);
  assert.equal(win.busy, false);
  assert.equal(fs.opened, 3);
  Deno.removeSync(fs.path);
});
