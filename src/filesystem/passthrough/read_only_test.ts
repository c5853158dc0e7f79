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

function erofs(fn: () => unknown, what: string): void {
  assert.throws(fn, (e: unknown) => e instanceof ErrnoError && e.errno === Errno.EROFS, what);
}

/** Every change refused with EROFS, every read served; the host tree is unchanged. */
function checkReadOnly(fs: FileSystem, dir: string): void {
  const f = fs.lookup?.(ctx, 1n, bytes("f")).nodeid ?? 0n;
  const d = fs.lookup?.(ctx, 1n, bytes("d")).nodeid ?? 0n;
  const h = fs.open?.(ctx, f, O_RDONLY, 0).fh ?? 0n;
  const dst = new BufferDestination(100);
  assert.equal(fs.read?.(ctx, f, h, 0n, 100, dst), 4);
  assert.equal(text(dst.buf.subarray(0, 4)), "data");
  const dh = fs.opendir?.(ctx, 1n, 0).fh ?? 0n;
  const sink = new ListSink(4096);
  fs.readdir?.(ctx, 1n, dh, 0n, sink);
  assert.deepEqual(sink.entries.map((e) => e.name).sort(), [".", "..", "d", "f"]);
  fs.access?.(ctx, f, R_OK);
  assert.ok((fs.statfs?.(ctx, 1n).blocks ?? 0) > 0);
  assert.equal(fs.getattr?.(ctx, f, undefined).attr.size, 4);
  fs.fsync?.(ctx, f, h, false);
  fs.flush?.(ctx, f, h, 0n);

  erofs(() => fs.open?.(ctx, f, O_WRONLY, 0), "open for writing");
  erofs(() => fs.open?.(ctx, f, O_RDWR, 0), "open read-write");
  erofs(() => fs.open?.(ctx, f, O_RDONLY | O_TRUNC, 0), "open with O_TRUNC");
  erofs(() => fs.write?.(ctx, f, h, 0n, new BufferSource("x"), 0), "write");
  erofs(() => fs.setattr?.(ctx, f, SET), "setattr");
  erofs(() => fs.create?.(ctx, 1n, bytes("n"), S_IFREG | 0o644, O_RDWR | O_CREAT, 0), "create");
  erofs(() => fs.tmpfile?.(ctx, 1n, S_IFREG | 0o644, O_RDWR, 0), "tmpfile");
  erofs(() => fs.mkdir?.(ctx, 1n, bytes("n"), 0o755, 0), "mkdir");
  erofs(() => fs.mknod?.(ctx, 1n, bytes("n"), S_IFREG | 0o644, 0, 0), "mknod");
  erofs(() => fs.symlink?.(ctx, 1n, bytes("n"), bytes("f")), "symlink");
  erofs(() => fs.link?.(ctx, f, 1n, bytes("n")), "link");
  erofs(() => fs.unlink?.(ctx, 1n, bytes("f")), "unlink");
  erofs(() => fs.rmdir?.(ctx, 1n, bytes("d")), "rmdir");
  erofs(() => fs.rename?.(ctx, 1n, bytes("f"), d, bytes("f"), 0), "rename");
  erofs(() => fs.fallocate?.(ctx, f, h, 0n, 10n, 0), "fallocate");
  erofs(() => fs.copyFileRange?.(ctx, f, h, 0n, f, h, 10n, 2, 0), "copy_file_range");
  erofs(() => fs.setxattr?.(ctx, f, bytes("user.a"), bytes("b"), 0), "setxattr");
  erofs(() => fs.removexattr?.(ctx, f, bytes("user.a")), "removexattr");
  erofs(() => fs.access?.(ctx, f, W_OK), "access W_OK");
  assert.equal((fs.init?.((1n << 16n) | 1n) ?? 0n) & (1n << 16n), 0n, "no writeback cache");

  fs.release?.(ctx, f, h, 0);
  fs.releasedir?.(ctx, 1n, dh);
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["d", "f"]);
  assert.equal(Deno.readTextFileSync(`${dir}/f`), "data");
  assert.equal((Deno.statSync(`${dir}/f`).mode ?? 0) & 0o777, 0o644);
}

Deno.test("readonly: PassthroughFs refuses every change with EROFS", () => {
  using share = tempShare({ readonly: true, writeback: true, xattr: true });
  Deno.writeTextFileSync(`${share.dir}/f`, "data", { mode: 0o644 });
  Deno.chmodSync(`${share.dir}/f`, 0o644);
  Deno.mkdirSync(`${share.dir}/d`);
  checkReadOnly(share.fs, share.dir);
  assert.equal(share.fs.handleCount, 0);
});

Deno.test("ReadOnlyFs wraps any FileSystem: changes EROFS, the rest passed through", () => {
  using share = tempShare({ writeback: true, xattr: true });
  Deno.writeTextFileSync(`${share.dir}/f`, "data");
  Deno.chmodSync(`${share.dir}/f`, 0o644);
  Deno.mkdirSync(`${share.dir}/d`);
  checkReadOnly(new ReadOnlyFs(share.fs), share.dir);
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
