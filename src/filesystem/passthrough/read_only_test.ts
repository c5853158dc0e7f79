import assert from "node:assert/strict";
import {
  Errno,
  ErrnoError,
  O_CREAT,
  O_RDONLY,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
  R_OK,
  S_IFREG,
  W_OK,
} from "../../ffi/mod.ts";
import type { FileSystem } from "../filesystem.ts";
import { ReadOnlyFs } from "../read_only_fs.ts";
import {
  BufferDestination,
  BufferSource,
  bytes,
  ListSink,
  ROOT_CTX,
  tempShare,
  text,
} from "./testing.ts";

const ctx = ROOT_CTX;
const SET = {
  valid: 1,
  fh: 0n,
  size: 0,
  atime: 0,
  atimeNsec: 0,
  mtime: 0,
  mtimeNsec: 0,
  mode: 0o777,
  uid: 0,
  gid: 0,
};

async function erofs(fn: () => unknown, what: string): Promise<void> {
  await assert.rejects(
    async () => await fn(),
    (e: unknown) => e instanceof ErrnoError && e.errno === Errno.EROFS,
    what,
  );
}

/** Every change refused with EROFS, every read served; the host tree is unchanged. */
async function checkReadOnly(fs: FileSystem, dir: string): Promise<void> {
  const f = (await fs.lookup?.(ctx, 1n, bytes("f")))?.nodeid ?? 0n;
  const d = (await fs.lookup?.(ctx, 1n, bytes("d")))?.nodeid ?? 0n;
  const h = (await fs.open?.(ctx, f, O_RDONLY, 0))?.fh ?? 0n;
  const dst = new BufferDestination(100);
  assert.equal(await fs.read?.(ctx, f, h, 0n, 100, dst), 4);
  assert.equal(text(dst.buf.subarray(0, 4)), "data");
  const dh = (await fs.opendir?.(ctx, 1n, 0))?.fh ?? 0n;
  const sink = new ListSink(4096);
  fs.readdir?.(ctx, 1n, dh, 0n, sink);
  assert.deepEqual(sink.entries.map((e) => e.name).sort(), [".", "..", "d", "f"]);
  fs.access?.(ctx, f, R_OK);
  assert.ok(((await fs.statfs?.(ctx, 1n))?.blocks ?? 0) > 0);
  assert.equal((await fs.getattr?.(ctx, f, undefined))?.attr.size, 4);
  fs.fsync?.(ctx, f, h, false);
  fs.flush?.(ctx, f, h, 0n);

  await erofs(() => fs.open?.(ctx, f, O_WRONLY, 0), "open for writing");
  await erofs(() => fs.open?.(ctx, f, O_RDWR, 0), "open read-write");
  await erofs(() => fs.open?.(ctx, f, O_RDONLY | O_TRUNC, 0), "open with O_TRUNC");
  await erofs(() => fs.write?.(ctx, f, h, 0n, new BufferSource("x"), 0), "write");
  await erofs(() => fs.setattr?.(ctx, f, SET), "setattr");
  await erofs(
    () => fs.create?.(ctx, 1n, bytes("n"), S_IFREG | 0o644, O_RDWR | O_CREAT, 0),
    "create",
  );
  await erofs(() => fs.tmpfile?.(ctx, 1n, S_IFREG | 0o644, O_RDWR, 0), "tmpfile");
  await erofs(() => fs.mkdir?.(ctx, 1n, bytes("n"), 0o755, 0), "mkdir");
  await erofs(() => fs.mknod?.(ctx, 1n, bytes("n"), S_IFREG | 0o644, 0, 0), "mknod");
  await erofs(() => fs.symlink?.(ctx, 1n, bytes("n"), bytes("f")), "symlink");
  await erofs(() => fs.link?.(ctx, f, 1n, bytes("n")), "link");
  await erofs(() => fs.unlink?.(ctx, 1n, bytes("f")), "unlink");
  await erofs(() => fs.rmdir?.(ctx, 1n, bytes("d")), "rmdir");
  await erofs(() => fs.rename?.(ctx, 1n, bytes("f"), d, bytes("f"), 0), "rename");
  await erofs(() => fs.fallocate?.(ctx, f, h, 0n, 10n, 0), "fallocate");
  await erofs(() => fs.copyFileRange?.(ctx, f, h, 0n, f, h, 10n, 2, 0), "copy_file_range");
  await erofs(() => fs.setxattr?.(ctx, f, bytes("user.a"), bytes("b"), 0), "setxattr");
  await erofs(() => fs.removexattr?.(ctx, f, bytes("user.a")), "removexattr");
  await erofs(() => fs.access?.(ctx, f, W_OK), "access W_OK");
  assert.equal((await fs.init?.((1n << 16n) | 1n) ?? 0n) & (1n << 16n), 0n, "no writeback cache");

  fs.release?.(ctx, f, h, 0);
  fs.releasedir?.(ctx, 1n, dh);
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["d", "f"]);
  assert.equal(Deno.readTextFileSync(`${dir}/f`), "data");
  assert.equal((Deno.statSync(`${dir}/f`).mode ?? 0) & 0o777, 0o644);
}

Deno.test("readonly: ReadOnlyFs around PassthroughFs (what --readonly serves): changes EROFS, the rest passed through", async () => {
  using share = tempShare({ writeback: true, xattr: true });
  Deno.writeTextFileSync(`${share.dir}/f`, "data");
  Deno.chmodSync(`${share.dir}/f`, 0o644);
  Deno.mkdirSync(`${share.dir}/d`);
  await checkReadOnly(new ReadOnlyFs(share.fs), share.dir);
  assert.equal(share.fs.handleCount, 0);

  // What the wrapped file system lacks stays ENOSYS.
  const bare = new ReadOnlyFs({});
  for (
    const call of [
      () => bare.lookup(ctx, 1n, bytes("f")),
      () => bare.getattr(ctx, 1n, undefined),
      () => bare.setxattr(ctx, 1n, bytes("user.a"), bytes("b"), 0),
      () => bare.readdir(ctx, 1n, 1n, 0n, new ListSink(10)),
      () => bare.access(ctx, 1n, W_OK),
    ]
  ) {
    assert.throws(call, (e: unknown) => e instanceof ErrnoError && e.errno === Errno.ENOSYS);
  }
  assert.equal(bare.init(7n), 7n);
  bare.forget(ctx, 2n, 1n);
  bare.destroy();
});
