/**
 * Confinement: nothing outside the shared directory is reachable through any request, whatever
 * names the guest sends and however the host tree changes under it.
 */
import assert from "node:assert/strict";
import { Errno, ErrnoError, O_CREAT, O_RDONLY, O_RDWR, S_IFREG } from "../../ffi/mod.ts";
import { assertErrno, bytes, ListSink, PlusSink, ROOT_CTX, tempShare, text } from "./testing.ts";

const ctx = ROOT_CTX;

const errno = assertErrno;

/** A directory beside the share, with a secret in it. */
function outside(): { dir: string; [Symbol.dispose](): void } {
  const dir = Deno.makeTempDirSync({ prefix: "outside_" });
  Deno.writeTextFileSync(`${dir}/secret`, "secret");
  return { dir, [Symbol.dispose]: () => Deno.removeSync(dir, { recursive: true }) };
}

Deno.test("'..' stays inside: the root's parent is the root, others climb to it", () => {
  using share = tempShare();
  const fs = share.fs;
  assert.equal(fs.lookup(ctx, 1n, bytes("..")).nodeid, 1n);
  assert.equal(fs.lookup(ctx, 1n, bytes(".")).nodeid, 1n);
  const a = fs.mkdir(ctx, 1n, bytes("a"), 0o755, 0).nodeid;
  const b = fs.mkdir(ctx, a, bytes("b"), 0o755, 0).nodeid;
  assert.equal(fs.lookup(ctx, b, bytes("..")).nodeid, a);
  assert.equal(fs.lookup(ctx, a, bytes("..")).nodeid, 1n);
  assert.equal(fs.lookup(ctx, b, bytes(".")).nodeid, b);
  let n = b;
  for (let i = 0; i < 5; i++) n = fs.lookup(ctx, n, bytes("..")).nodeid;
  assert.equal(n, 1n, "climbing stops at the root");
  const f = fs.mknod(ctx, a, bytes("f"), S_IFREG | 0o644, 0, 0).nodeid;
  errno(() => fs.lookup(ctx, f, bytes("..")), Errno.ENOTDIR);
  errno(() => fs.lookup(ctx, f, bytes(".")), Errno.ENOTDIR);
});

Deno.test("'..' of a directory moved out of the share on the host is refused", () => {
  using share = tempShare();
  using out = outside();
  const fs = share.fs;
  const d = fs.mkdir(ctx, 1n, bytes("d"), 0o755, 0).nodeid;
  const dd = fs.mkdir(ctx, d, bytes("dd"), 0o755, 0).nodeid;
  Deno.renameSync(`${share.dir}/d`, `${out.dir}/d`);
  errno(() => fs.lookup(ctx, d, bytes("..")), Errno.EACCES);
  // Deeper below it, the climb meets "/" without meeting the share either.
  errno(() => fs.lookup(ctx, dd, bytes("..")), Errno.EACCES);
  Deno.renameSync(`${out.dir}/d`, `${share.dir}/d`);
  assert.equal(fs.lookup(ctx, d, bytes("..")).nodeid, 1n, "back inside");
});

Deno.test("names with '/' or '..' components cannot reach outside", () => {
  using share = tempShare();
  using out = outside();
  const fs = share.fs;
  const rel = `../${out.dir.split("/").pop()}/secret`;
  errno(() => fs.lookup(ctx, 1n, bytes(rel)), Errno.EINVAL);
  errno(() => fs.lookup(ctx, 1n, bytes(`${out.dir}/secret`)), Errno.EINVAL);
  errno(() => fs.create(ctx, 1n, bytes(rel), 0o644, O_RDWR | O_CREAT, 0), Errno.EINVAL);
  errno(() => fs.mkdir(ctx, 1n, bytes("../x"), 0o755, 0), Errno.EINVAL);
  errno(() => fs.unlink(ctx, 1n, bytes(rel)), Errno.EINVAL);
  errno(() => fs.rename(ctx, 1n, bytes(".."), 1n, bytes("x"), 0), Errno.EBUSY);
  errno(() => fs.rmdir(ctx, 1n, bytes("..")), Errno.ENOTEMPTY);
  errno(() => fs.symlink(ctx, 1n, bytes("../s"), bytes("/")), Errno.EINVAL);
  errno(() => fs.link(ctx, 1n, 1n, bytes("..")), Errno.EEXIST);
  assert.equal(Deno.readTextFileSync(`${out.dir}/secret`), "secret");
  assert.deepEqual([...Deno.readDirSync(out.dir)].map((e) => e.name), ["secret"]);
});

Deno.test("a symlink to '/' (or outside) is never followed by any request", () => {
  using share = tempShare({ xattr: true });
  using out = outside();
  const fs = share.fs;
  Deno.symlinkSync("/", `${share.dir}/root`);
  Deno.symlinkSync(out.dir, `${share.dir}/out`);
  Deno.symlinkSync(`${out.dir}/secret`, `${share.dir}/secret`);
  for (const name of ["root", "out"]) {
    const s = fs.lookup(ctx, 1n, bytes(name));
    assert.equal(s.attr.mode & 0o170000, 0o120000, "the link itself");
    const n = s.nodeid;
    errno(() => fs.lookup(ctx, n, bytes("etc")), Errno.ENOTDIR);
    errno(() => fs.lookup(ctx, n, bytes("secret")), Errno.ENOTDIR);
    errno(() => fs.lookup(ctx, n, bytes("..")), Errno.ENOTDIR);
    errno(() => fs.lookup(ctx, n, bytes(".")), Errno.ENOTDIR);
    errno(() => fs.open(ctx, n, O_RDONLY, 0), Errno.ELOOP);
    errno(() => fs.opendir(ctx, n, 0), Errno.ENOTDIR);
    errno(() => fs.create(ctx, n, bytes("x"), 0o644, O_RDWR | O_CREAT, 0), Errno.ENOTDIR);
    errno(() => fs.tmpfile(ctx, n, 0o644, O_RDWR, 0), Errno.ENOTDIR);
    errno(() => fs.mkdir(ctx, n, bytes("x"), 0o755, 0), Errno.ENOTDIR);
    errno(() => fs.mknod(ctx, n, bytes("x"), S_IFREG | 0o644, 0, 0), Errno.ENOTDIR);
    errno(() => fs.symlink(ctx, n, bytes("x"), bytes("y")), Errno.ENOTDIR);
    errno(() => fs.unlink(ctx, n, bytes("secret")), Errno.ENOTDIR);
    errno(() => fs.rmdir(ctx, n, bytes("x")), Errno.ENOTDIR);
    errno(() => fs.rename(ctx, n, bytes("secret"), 1n, bytes("stolen"), 0), Errno.ENOTDIR);
    errno(() => fs.rename(ctx, 1n, bytes("secret"), n, bytes("x"), 0), Errno.ENOTDIR);
    errno(() => fs.link(ctx, n, n, bytes("x")), Errno.ENOTDIR);
    errno(() => fs.setattr(ctx, n, { ...NO_SET, valid: 1 << 3, size: 0 }), Errno.EINVAL);
    errno(() => fs.getxattr(ctx, n, bytes("user.x"), 10), Errno.ENODATA);
    assert.equal(fs.listxattr(ctx, n, 0), 0);
  }
  // The link to the secret: readable as a link, never as the file.
  const s = fs.lookup(ctx, 1n, bytes("secret")).nodeid;
  assert.equal(text(fs.readlink(ctx, s)), `${out.dir}/secret`);
  errno(() => fs.open(ctx, s, O_RDONLY, 0), Errno.ELOOP);
  errno(() => fs.create(ctx, 1n, bytes("secret"), 0o644, O_RDWR | O_CREAT, 0), Errno.ELOOP);
  const a = fs.setattr(ctx, s, { ...NO_SET, valid: 1 << 1, uid: 4242 }).attr;
  assert.equal(a.uid, 4242);
  assert.equal(Deno.statSync(`${out.dir}/secret`).uid, 0, "the target's owner is untouched");
  assert.equal(Deno.readTextFileSync(`${out.dir}/secret`), "secret");
  // A hard link of the symlink links the symlink, not the secret.
  fs.link(ctx, s, 1n, bytes("s2"));
  assert.ok(Deno.lstatSync(`${share.dir}/s2`).isSymlink);
  // Listing the share shows the links as links.
  const fh = fs.opendir(ctx, 1n, 0).fh;
  const sink = new ListSink(4096);
  fs.readdir(ctx, 1n, fh, 0n, sink);
  for (const e of sink.entries) {
    if (["root", "out", "secret", "s2"].includes(e.name)) assert.equal(e.type, 10);
  }
  const plus = new PlusSink(8192);
  fs.readdirplus(ctx, 1n, fh, 0n, plus);
  for (const e of plus.entries) {
    if (e.name === "root") {
      assert.equal(e.ino, BigInt(Deno.lstatSync(`${share.dir}/root`).ino ?? 0));
    }
  }
  fs.releasedir(ctx, 1n, fh);
});

const NO_SET = {
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

Deno.test("a directory replaced by a symlink: old nodeids keep the old directory", () => {
  using share = tempShare();
  using out = outside();
  const fs = share.fs;
  const d = fs.mkdir(ctx, 1n, bytes("d"), 0o755, 0).nodeid;
  const inner = fs.mknod(ctx, d, bytes("inner"), S_IFREG | 0o644, 0, 0).nodeid;
  // The host swaps the directory for a symlink to the outside.
  Deno.renameSync(`${share.dir}/d`, `${share.dir}/d.old`);
  Deno.symlinkSync(out.dir, `${share.dir}/d`);
  // The guest's old nodeid still names the old directory, wherever it went.
  assert.equal(fs.lookup(ctx, d, bytes("inner")).nodeid, inner);
  errno(() => fs.lookup(ctx, d, bytes("secret")), Errno.ENOENT);
  const c = fs.create(ctx, d, bytes("new"), 0o644, O_RDWR | O_CREAT, 0);
  fs.release(ctx, c.entry.nodeid, c.open.fh, 0);
  assert.ok(Deno.statSync(`${share.dir}/d.old/new`).isFile);
  assert.throws(() => Deno.statSync(`${out.dir}/new`), Deno.errors.NotFound);
  fs.unlink(ctx, d, bytes("new"));
  // A fresh lookup of the name finds the symlink, which no request goes through.
  const s = fs.lookup(ctx, 1n, bytes("d")).nodeid;
  assert.notEqual(s, d);
  errno(() => fs.lookup(ctx, s, bytes("secret")), Errno.ENOTDIR);
  errno(() => fs.unlink(ctx, s, bytes("secret")), Errno.ENOTDIR);
  errno(() => fs.opendir(ctx, s, 0), Errno.ENOTDIR);
  // The same with the swap made between the guest's lookup of a file and its open.
  Deno.writeTextFileSync(`${share.dir}/f`, "mine");
  const f = fs.lookup(ctx, 1n, bytes("f")).nodeid;
  Deno.removeSync(`${share.dir}/f`);
  Deno.symlinkSync(`${out.dir}/secret`, `${share.dir}/f`);
  const h = fs.open(ctx, f, O_RDONLY, 0).fh;
  fs.release(ctx, f, h, 0);
  // Entries of the removed directory: the host's errno, never the outside's contents.
  Deno.removeSync(`${share.dir}/d.old`, { recursive: true });
  errno(() => fs.lookup(ctx, d, bytes("inner")), Errno.ENOENT);
  errno(() => fs.mkdir(ctx, d, bytes("x"), 0o755, 0), Errno.ENOENT);
  assert.equal(fs.lookup(ctx, d, bytes("..")).nodeid, 1n, "the parent it was removed from");
  assert.deepEqual([...Deno.readDirSync(out.dir)].map((e) => e.name), ["secret"]);
});

Deno.test("xattrs and SETATTR act on the node itself, never through a symlink", () => {
  using share = tempShare({ xattr: true });
  using out = outside();
  const fs = share.fs;
  Deno.symlinkSync(`${out.dir}/secret`, `${share.dir}/s`);
  const s = fs.lookup(ctx, 1n, bytes("s")).nodeid;
  fs.setxattr(ctx, s, bytes("trusted.mark"), bytes("x"), 0);
  const len = fs.listxattr(ctx, s, 0);
  assert.ok(typeof len === "number" && len > 0);
  errno(() => fs.getxattr(ctx, 1n, bytes("trusted.mark"), 9), Errno.ENODATA);
  const mode = Deno.statSync(`${out.dir}/secret`).mode;
  try {
    fs.setattr(ctx, s, { ...NO_SET, valid: 1, mode: 0o777 });
  } catch (e) {
    assert.ok(e instanceof ErrnoError && e.errno === Errno.EOPNOTSUPP, `${e}`);
  }
  assert.equal(Deno.statSync(`${out.dir}/secret`).mode, mode, "the target's mode is untouched");
  fs.setattr(ctx, s, { ...NO_SET, valid: 1 << 4 | 1 << 5, atime: 1, mtime: 2 });
  assert.notEqual(Deno.statSync(`${out.dir}/secret`).mtime?.getTime(), 2000);
});
