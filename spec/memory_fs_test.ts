/**
 * Spec: `MemoryFs` and `SyntheticFs` at the wire. `examples/memory_fs.ts` serves a file system
 * held in memory, with a synthetic `README` laid over it, through `mod.ts` alone; this test runs
 * it as its own process (its front end waits synchronously) and drives it with our vhost-user
 * front end and FUSE client, as a guest's kernel would: a file written is read back, survives a
 * rename, keeps its data across a new session, and the README is there, read-only. Test names
 * start with `LIBRARY-MEMORY-`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { PROJECT_ROOT } from "./_driver/daemon.ts";
import { startProgram } from "./_driver/program.ts";
import { type FrontendOptions, VhostUserFrontend } from "../src/driver/frontend.ts";
import { FUSE_ROOT_ID, FuseClient, FuseError } from "../src/driver/fuse_client.ts";
import * as A from "../src/wire/fuse.ts";
import { Errno } from "../src/ffi/errno.ts";
import {
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  S_IFDIR,
  S_IFMT,
  S_IFREG,
  SEEK_DATA,
  SEEK_HOLE,
} from "../src/ffi/constants.ts";

const FE_OPTS: FrontendOptions = { queueSize: 256, timeoutMs: 10_000, connectTimeoutMs: 20_000 };
const enc = new TextEncoder();
const dec = new TextDecoder();

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function fails(fn: () => unknown, errno: number, message?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof FuseError, `${err}`);
    assert.equal(err.errno, errno, message ?? err.message);
    return true;
  });
}

/** The README's text, read as the guest reads a file (OPEN, READ, RELEASE). */
function readme(client: FuseClient): string {
  const e = client.lookup(FUSE_ROOT_ID, "README");
  const o = client.open(e.nodeid, O_RDONLY);
  assert.equal(o.openFlags & A.FOPEN_DIRECT_IO, A.FOPEN_DIRECT_IO, "the README is direct-I/O");
  const text = dec.decode(client.read(e.nodeid, o.fh, 0, 4096));
  client.release(e.nodeid, o.fh);
  client.forget(e.nodeid, 1);
  return text;
}

Deno.test("LIBRARY-MEMORY-1 examples/memory_fs.ts serves a MemoryFs through mod.ts alone: a file written is read back, survives a rename, and the synthetic README is there", async () => {
  await using p = await startProgram("examples/memory_fs.ts");
  const source = Deno.readTextFileSync(join(PROJECT_ROOT, "examples", "memory_fs.ts"));
  assert.deepEqual(
    [...source.matchAll(/from "([^"]+)"/g)].map((m) => m[1]),
    ["../mod.ts"],
    "it imports mod.ts and nothing else",
  );
  const fe = await VhostUserFrontend.connect(p.socket, FE_OPTS);
  const client = new FuseClient(fe);
  try {
    const init = client.init();
    assert.equal(init.flags & A.FUSE_WRITEBACK_CACHE, 0n, "no writeback cache");
    assert.notEqual(init.flags & A.FUSE_DO_READDIRPLUS, 0n);
    // The README, computed when opened.
    const text = readme(client);
    assert.match(text, /MemoryFs/);
    assert.match(text, /bytes: +0 of 268435456/);
    // A directory, a file in it, written and read back.
    const root = client.getattr(FUSE_ROOT_ID).attr;
    assert.equal(root.mode & S_IFMT, S_IFDIR);
    const dir = client.mkdir(FUSE_ROOT_ID, "work", 0o755);
    assert.equal(dir.attr.mode, S_IFDIR | 0o755);
    const c = client.create(dir.nodeid, "data.bin", O_RDWR, 0o644);
    assert.equal(c.entry.attr.mode, S_IFREG | 0o644);
    const data = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 31 + 7) & 0xff);
    client.writeAll(c.entry.nodeid, c.open.fh, 0, data);
    assert.deepEqual(client.readAll(c.entry.nodeid, c.open.fh, 0, data.length + 10), data);
    assert.equal(client.getattr(c.entry.nodeid).attr.size, BigInt(data.length));
    // A hole far out, found with SEEK_HOLE / SEEK_DATA.
    assert.equal(client.write(c.entry.nodeid, c.open.fh, 10 << 20, enc.encode("end")), 3);
    assert.equal(
      client.lseek(c.entry.nodeid, c.open.fh, 0, SEEK_HOLE),
      303104n,
      "the end of the page holding the last byte, as tmpfs",
    );
    assert.equal(client.lseek(c.entry.nodeid, c.open.fh, 5 * 65536, SEEK_DATA), 10n << 20n);
    client.fsync(c.entry.nodeid, c.open.fh);
    client.flush(c.entry.nodeid, c.open.fh);
    client.release(c.entry.nodeid, c.open.fh);
    // Renamed into the root: the same node, the same bytes.
    client.rename(dir.nodeid, "data.bin", FUSE_ROOT_ID, "renamed.bin");
    fails(() => client.lookup(dir.nodeid, "data.bin"), Errno.ENOENT);
    const r = client.lookup(FUSE_ROOT_ID, "renamed.bin");
    assert.equal(r.nodeid, c.entry.nodeid);
    const o = client.open(r.nodeid, O_RDONLY);
    assert.deepEqual(client.readAll(r.nodeid, o.fh, 0, data.length), data);
    assert.equal(dec.decode(client.read(r.nodeid, o.fh, 10 << 20, 100)), "end");
    client.release(r.nodeid, o.fh);
    // A hard link, an xattr.
    const l = client.link(r.nodeid, dir.nodeid, "alias");
    assert.equal(l.attr.nlink, 2);
    client.setxattr(r.nodeid, "user.origin", "spec");
    assert.equal(client.getxattrSize(r.nodeid, "user.origin"), 4);
    assert.equal(dec.decode(client.getxattr(r.nodeid, "user.origin", 64)), "spec");
    assert.deepEqual(client.listxattr(r.nodeid, 256), ["user.origin"]);
    fails(() => client.getxattr(r.nodeid, "user.origin", 2), Errno.ERANGE);
    // READDIRPLUS of the root: ".", "..", the README, then the memory file system's names.
    const d = client.opendir(FUSE_ROOT_ID);
    const listed = client.readdirplusAll(FUSE_ROOT_ID, d.fh).entries;
    client.releasedir(FUSE_ROOT_ID, d.fh);
    assert.deepEqual(listed.map((e) => e.name), [".", "..", "README", "work", "renamed.bin"]);
    assert.equal(listed[4]?.entry.nodeid, r.nodeid);
    assert.equal(listed[4]?.entry.attr.nlink, 2);
    // statfs from maxBytes (256 MiB in 4 KiB blocks); the data is counted.
    const s = client.statfs();
    assert.equal(s.blocks, 65536n);
    assert.ok(s.bfree < 65536n - 80n, `free blocks ${s.bfree}`);
    assert.equal(s.namelen, 255);
    assert.match(readme(client), /bytes: +[1-9]\d* of 268435456/, "the README is live");
  } finally {
    fe.close();
  }
  const status = await p.child.status;
  assert.equal(status.code, 0, await p.log());
  assert.equal(exists(p.socket), false, "the socket file is removed");
});

Deno.test("LIBRARY-MEMORY-2 errors reach the guest: ENOENT, EEXIST, ENOTEMPTY, ENAMETOOLONG, EROFS on the README, ENOSPC past maxBytes", async () => {
  // 1 MiB and 64 inodes.
  await using p = await startProgram("examples/memory_fs.ts", {}, [String(1 << 20), "64"]);
  const fe = await VhostUserFrontend.connect(p.socket, FE_OPTS);
  const client = new FuseClient(fe);
  try {
    client.init();
    fails(() => client.lookup(FUSE_ROOT_ID, "absent"), Errno.ENOENT);
    const a = client.mkdir(FUSE_ROOT_ID, "a");
    fails(() => client.mkdir(FUSE_ROOT_ID, "a"), Errno.EEXIST);
    const f = client.create(a.nodeid, "f", O_WRONLY);
    fails(() => client.rmdir(FUSE_ROOT_ID, "a"), Errno.ENOTEMPTY);
    fails(() => client.create(FUSE_ROOT_ID, "n".repeat(256), O_RDWR), Errno.ENAMETOOLONG);
    fails(() => client.rename2(FUSE_ROOT_ID, "a", a.nodeid, "x", 0), Errno.EINVAL, "into itself");
    const b = client.mkdir(FUSE_ROOT_ID, "b");
    fails(
      () => client.rename2(FUSE_ROOT_ID, "a", FUSE_ROOT_ID, "b", RENAME_NOREPLACE),
      Errno.EEXIST,
    );
    client.rename2(a.nodeid, "f", FUSE_ROOT_ID, "b", RENAME_EXCHANGE);
    assert.equal(client.lookup(FUSE_ROOT_ID, "b").nodeid, f.entry.nodeid);
    assert.equal(client.lookup(a.nodeid, "f").nodeid, b.nodeid);
    // The README is read-only whoever asks.
    const rd = client.lookup(FUSE_ROOT_ID, "README");
    fails(() => client.open(rd.nodeid, O_RDWR), Errno.EROFS);
    fails(() => client.unlink(FUSE_ROOT_ID, "README"), Errno.EROFS);
    fails(() => client.setattr(rd.nodeid, { mode: 0o666 }), Errno.EROFS);
    fails(() => client.mkdir(FUSE_ROOT_ID, "README"), Errno.EEXIST);
    // Past maxBytes: what fits is written, then ENOSPC.
    const big = new Uint8Array(1 << 20).fill(1);
    let written = 0;
    let refused = 0;
    for (let at = 0; at < big.length * 2; at += 256 << 10) {
      try {
        written += client.write(f.entry.nodeid, f.open.fh, at, big.subarray(0, 256 << 10));
      } catch (err) {
        assert.ok(err instanceof FuseError && err.errno === Errno.ENOSPC, `${err}`);
        refused++;
      }
    }
    assert.equal(written, 1 << 20, "exactly maxBytes");
    assert.equal(refused, 4);
    assert.equal(client.statfs().bfree, 0n);
    // Unknown ids from the guest are errors, not crashes.
    fails(() => client.getattr(123456n), Errno.ENOENT);
    fails(() => client.read(f.entry.nodeid, 99999n, 0, 10), Errno.EBADF);
    // Inodes: 64 in all.
    let made = 0;
    try {
      for (let i = 0; i < 100; i++) {
        client.mknod(FUSE_ROOT_ID, `n${i}`, S_IFREG | 0o644);
        made++;
      }
    } catch (err) {
      assert.ok(err instanceof FuseError && err.errno === Errno.ENOSPC, `${err}`);
    }
    assert.equal(made, 64 - 4, "the root, a, f, b and 60 more");
    assert.equal(client.statfs().ffree, 0n);
  } finally {
    fe.close();
  }
  assert.equal((await p.child.status).code, 0, await p.log());
});

Deno.test("LIBRARY-MEMORY-3 the tree outlives a session: after DESTROY and a new INIT the files are still there", async () => {
  await using p = await startProgram("examples/memory_fs.ts");
  const fe = await VhostUserFrontend.connect(p.socket, FE_OPTS);
  try {
    const first = new FuseClient(fe);
    first.init();
    const c = first.create(FUSE_ROOT_ID, "kept.txt", O_RDWR);
    first.write(c.entry.nodeid, c.open.fh, 0, enc.encode("still here"));
    // Never released, never forgotten: the session's end drops the handle and the lookup.
    first.destroy();
    const second = new FuseClient(fe);
    second.init();
    const e = second.lookup(FUSE_ROOT_ID, "kept.txt");
    const o = second.open(e.nodeid, O_RDONLY);
    assert.equal(dec.decode(second.read(e.nodeid, o.fh, 0, 100)), "still here");
    assert.match(readme(second), /handles: 1\n/, "the old session's handle is gone");
  } finally {
    fe.close();
  }
  assert.equal((await p.child.status).code, 0, await p.log());
});
