/**
 * Mounts below the share: two fresh tmpfs mounted in a temporary shared directory (so their first
 * files have the same host inode number), served with submounts in effect and without. Needs
 * root (mount(2)); skipped otherwise.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { O_RDONLY, S_IFDIR } from "../../ffi/mod.ts";
import type { DirentPlusSink, Entry } from "../filesystem.ts";
import {
  FUSE_ATTR_SUBMOUNT,
  FUSE_DO_READDIRPLUS,
  FUSE_READDIRPLUS_AUTO,
  FUSE_SUBMOUNTS,
} from "../../wire/fuse.ts";
import { PassthroughFs, type PassthroughOptions } from "./passthrough_fs.ts";
import { InodeNumbers, MAPPED_INO_LIMIT } from "./inode_numbers.ts";
import { bytes, ListSink, ROOT_CTX as ctx } from "./testing.ts";

const IS_ROOT = Deno.uid() === 0;
const OFFER = FUSE_SUBMOUNTS | FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO;

function run(cmd: string, ...args: string[]): void {
  const out = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/**
 * A shared directory holding `top` (on the host's file system) and two tmpfs, `t1` and `t2`,
 * each with a file `f` (their first file: the same inode number in both) and a directory `d`.
 */
class MountedShare {
  readonly dir: string;
  readonly fs: PassthroughFs;
  #mounted: string[] = [];

  constructor(options: Omit<PassthroughOptions, "sharedDir"> = {}) {
    this.dir = Deno.makeTempDirSync({ prefix: "submounts_test_" });
    try {
      Deno.writeTextFileSync(join(this.dir, "top"), "top\n");
      for (const t of ["t1", "t2"]) {
        const m = join(this.dir, t);
        Deno.mkdirSync(m);
        run("mount", "-t", "tmpfs", "-o", "size=1m", "none", m);
        this.#mounted.push(m);
        Deno.writeTextFileSync(join(m, "f"), `${t}\n`);
        Deno.mkdirSync(join(m, "d"));
      }
      this.fs = new PassthroughFs({ sharedDir: this.dir, ...options });
    } catch (e) {
      this.#unmount();
      throw e;
    }
  }

  /** The host's (st_dev, st_ino) of `rel`. */
  host(rel: string): { dev: number; ino: bigint } {
    const st = Deno.statSync(join(this.dir, rel));
    return { dev: st.dev, ino: BigInt(st.ino ?? 0) };
  }

  #unmount(): void {
    for (const m of this.#mounted.splice(0).reverse()) run("umount", m);
    Deno.removeSync(this.dir, { recursive: true });
  }

  [Symbol.dispose](): void {
    this.fs.close();
    this.#unmount();
  }
}

/** LOOKUP of the path `rel` from the root: the last entry's nodeid, ino and flags. */
function walk(fs: PassthroughFs, rel: string): { nodeid: bigint; ino: bigint; flags: number } {
  let nodeid = 1n;
  let e: Entry | undefined;
  for (const name of rel.split("/")) {
    e = fs.lookup(ctx, nodeid, bytes(name));
    nodeid = e.nodeid;
  }
  assert.ok(e !== undefined);
  return { nodeid, ino: e.attr.ino, flags: e.attr.flags ?? 0 };
}

/** READDIRPLUS of directory `nodeid`: name → (ino, flags, nodeid). */
function listPlus(
  fs: PassthroughFs,
  nodeid: bigint,
): Map<string, { ino: bigint; flags: number; nodeid: bigint }> {
  const out = new Map<string, { ino: bigint; flags: number; nodeid: bigint }>();
  const sink: DirentPlusSink = {
    fits: () => true,
    add(entry: Entry, _off: bigint, _type: number, name: Uint8Array): void {
      out.set(new TextDecoder().decode(name), {
        ino: entry.attr.ino,
        flags: entry.attr.flags ?? 0,
        nodeid: entry.nodeid,
      });
    },
  };
  const h = fs.opendir(ctx, nodeid, O_RDONLY);
  try {
    fs.readdirplus(ctx, nodeid, h.fh, 0n, sink);
  } finally {
    fs.releasedir(ctx, nodeid, h.fh);
  }
  return out;
}

/** READDIR of directory `nodeid`: name → d_ino. */
function listInos(fs: PassthroughFs, nodeid: bigint): Map<string, bigint> {
  const sink = new ListSink(1 << 16);
  const h = fs.opendir(ctx, nodeid, O_RDONLY);
  try {
    fs.readdir(ctx, nodeid, h.fh, 0n, sink);
  } finally {
    fs.releasedir(ctx, nodeid, h.fh);
  }
  return new Map(sink.entries.map((e) => [e.name, e.ino]));
}

Deno.test({
  name: "submounts in effect: mount roots carry FUSE_ATTR_SUBMOUNT; inode numbers are the host's",
  ignore: !IS_ROOT,
  fn() {
    using s = new MountedShare();
    const fs = s.fs;
    assert.equal(fs.init(OFFER) & FUSE_SUBMOUNTS, FUSE_SUBMOUNTS);
    // The premise: two file systems below the share number a file alike.
    assert.equal(s.host("t1/f").ino, s.host("t2/f").ino);
    assert.notEqual(s.host("t1/f").dev, s.host("t2/f").dev);

    const t1 = walk(fs, "t1");
    assert.equal(t1.flags, FUSE_ATTR_SUBMOUNT, "LOOKUP of a mount root");
    assert.equal(t1.ino, s.host("t1").ino);
    for (const rel of ["top", "t1/f", "t1/d", "t2/f"]) {
      const e = walk(fs, rel);
      assert.equal(e.flags, 0, rel);
      assert.equal(e.ino, s.host(rel).ino, `${rel}: the host's number`);
    }
    assert.equal(walk(fs, "t2").flags, FUSE_ATTR_SUBMOUNT);

    // GETATTR knows it too (the submount's root, which the guest asks by the same nodeid).
    assert.equal(fs.getattr(ctx, t1.nodeid, undefined).attr.flags, FUSE_ATTR_SUBMOUNT);
    assert.equal(fs.getattr(ctx, 1n, undefined).attr.flags, 0, "never the share's root");
    assert.equal(fs.getattr(ctx, walk(fs, "t1/d").nodeid, undefined).attr.flags, 0);
    // ".." of a directory in the submount is its root, which it must not mount again.
    const up = fs.lookup(ctx, walk(fs, "t1/d").nodeid, bytes(".."));
    assert.equal(up.nodeid, t1.nodeid);
    assert.equal(up.attr.flags, 0);
    // A directory made in the submount is an ordinary one.
    const made = fs.mkdir(ctx, t1.nodeid, bytes("new"), S_IFDIR | 0o755, 0o022);
    assert.equal(made.attr.flags, 0);

    // READDIRPLUS marks them as LOOKUP does.
    const root = listPlus(fs, 1n);
    assert.equal(root.get("t1")?.flags, FUSE_ATTR_SUBMOUNT);
    assert.equal(root.get("t2")?.flags, FUSE_ATTR_SUBMOUNT);
    assert.equal(root.get("top")?.flags, 0);
    assert.equal(root.get("t1")?.nodeid, t1.nodeid);
    const inT1 = listPlus(fs, t1.nodeid);
    assert.equal(inT1.get("f")?.flags, 0);
    assert.equal(inT1.get("d")?.flags, 0);

    // SYNCFS of a submount's root (what the guest sends for that superblock) works.
    fs.syncfs(ctx, t1.nodeid);
    fs.syncfs(ctx, 1n);
  },
});

Deno.test({
  name: "submounts not in effect: files of other devices get mapped numbers that never collide",
  ignore: !IS_ROOT,
  async fn(t) {
    for (
      const [what, options, offer] of [
        ["--no-announce-submounts", { announceSubmounts: false }, OFFER],
        ["a guest without FUSE_SUBMOUNTS", {}, OFFER & ~FUSE_SUBMOUNTS],
      ] as const
    ) {
      await t.step(what, () => {
        using s = new MountedShare(options);
        const fs = s.fs;
        assert.equal(fs.init(offer) & FUSE_SUBMOUNTS, 0n);
        const rels = ["top", "t1", "t1/f", "t1/d", "t2", "t2/f", "t2/d"];
        const seen = new Map<bigint, string>();
        for (const rel of rels) {
          const e = walk(fs, rel);
          assert.equal(e.flags, 0, `${rel}: no submount`);
          const other = seen.get(e.ino);
          assert.equal(other, undefined, `${rel} and ${other} share inode number ${e.ino}`);
          seen.set(e.ino, rel);
          const host = s.host(rel);
          if (rel === "top") {
            assert.equal(e.ino, host.ino, "the share's own device: the host's number");
          } else {
            assert.ok(e.ino >= MAPPED_INO_LIMIT, `${rel}: mapped (${e.ino.toString(16)})`);
            assert.equal(e.ino & (MAPPED_INO_LIMIT - 1n), host.ino, `${rel}: the host's below`);
          }
        }
        // The same numbers in GETATTR, READDIR's d_ino and READDIRPLUS, and after a FORGET.
        const t1 = walk(fs, "t1");
        const f = walk(fs, "t1/f");
        assert.equal(fs.getattr(ctx, f.nodeid, undefined).attr.ino, f.ino);
        assert.equal(listInos(fs, t1.nodeid).get("f"), f.ino);
        assert.equal(listPlus(fs, t1.nodeid).get("f")?.ino, f.ino);
        assert.equal(listPlus(fs, 1n).get("t1")?.ino, t1.ino);
        assert.equal(listInos(fs, 1n).get("top"), s.host("top").ino);
        fs.forget(ctx, f.nodeid, 1000n);
        assert.equal(walk(fs, "t1/f").ino, f.ino, "stable for the daemon's life");

        // SYNCFS of the root (the guest's only superblock) reaches every file system known.
        fs.syncfs(ctx, 1n);
      });
    }
  },
});

Deno.test({
  name: "a file bind-mounted over another gets a mapped number even with submounts",
  ignore: !IS_ROOT,
  fn() {
    using s = new MountedShare();
    const fs = s.fs;
    fs.init(OFFER);
    // t1/f over `top`: a mount root that is not a directory, shown in the root's superblock.
    run("mount", "--bind", join(s.dir, "t1", "f"), join(s.dir, "top"));
    try {
      const top = walk(fs, "top");
      assert.equal(top.flags, 0, "not a directory: no submount");
      assert.ok(top.ino >= MAPPED_INO_LIMIT, top.ino.toString(16));
      assert.equal(fs.getattr(ctx, top.nodeid, undefined).attr.ino, top.ino);
      // t1/f itself, in t1's submount, keeps the host's number.
      assert.equal(walk(fs, "t1/f").ino, s.host("t1/f").ino);
      fs.forget(ctx, top.nodeid, 1n);
    } finally {
      s.fs.destroy();
      run("umount", join(s.dir, "top"));
    }
  },
});

Deno.test("InodeNumbers: one index per device, in order; mapping is its own inverse", () => {
  const n = new InodeNumbers();
  const a = n.mapped(0, 40, 2n);
  const b = n.mapped(0, 41, 2n);
  assert.equal(a, (1n << 56n) | 2n);
  assert.equal(b, (2n << 56n) | 2n);
  assert.equal(n.mapped(0, 40, 3n), (1n << 56n) | 3n);
  assert.equal(n.mapper(0, 41)(7n), (2n << 56n) | 7n);
  assert.equal(n.devices, 2);
  // A number of 2^56 and above stays unique within its device (XOR is a bijection).
  const high = (1n << 57n) | 5n;
  assert.notEqual(n.mapped(0, 40, high), n.mapped(0, 40, high + 1n));
  assert.equal(n.mapped(0, 40, n.mapped(0, 40, high)), high);
});
