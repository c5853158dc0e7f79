import assert from "node:assert/strict";
import { Errno, ErrnoError, O_CREAT, O_RDWR } from "../../ffi/mod.ts";
import type { Entry } from "../filesystem.ts";
import { type Listed, ListSink, PlusSink, ROOT_CTX, tempShare, text } from "./testing.ts";
import type { PassthroughFs } from "./passthrough_fs.ts";

const ctx = ROOT_CTX;
const DT_DIR = 4;
const DT_REG = 8;
const N = 10_000;

/** Lists `fh` from `offset` to the end in READDIR(PLUS)es of `limit` bytes. */
function listAll(
  fs: PassthroughFs,
  nodeid: bigint,
  fh: bigint,
  plus: boolean,
  limit: number,
  offset = 0n,
): { entries: Listed[]; calls: number } {
  const entries: Listed[] = [];
  let calls = 0;
  for (;;) {
    const sink = plus ? new PlusSink(limit) : new ListSink(limit);
    if (plus) fs.readdirplus(ctx, nodeid, fh, offset, sink as PlusSink);
    else fs.readdir(ctx, nodeid, fh, offset, sink as ListSink);
    calls++;
    if (sink.entries.length === 0) return { entries, calls };
    entries.push(...sink.entries);
    offset = sink.entries[sink.entries.length - 1]?.off ?? 0n;
  }
}

function populate(dir: string, n: number): Set<string> {
  const names = new Set<string>();
  for (let i = 0; i < n; i++) {
    const name = `file-${i.toString().padStart(5, "0")}-${"x".repeat(i % 40)}`;
    Deno.writeFileSync(`${dir}/${name}`, new Uint8Array(0));
    names.add(name);
  }
  Deno.mkdirSync(`${dir}/sub`);
  names.add("sub");
  return names;
}

Deno.test("READDIR of 10,000 entries over many calls: each once, offsets stable", () => {
  using share = tempShare();
  const fs = share.fs;
  const names = populate(share.dir, N);
  const fh = fs.opendir(ctx, 1n, 0).fh;
  const { entries, calls } = listAll(fs, 1n, fh, false, 4096);
  assert.ok(calls > 50, `${calls} calls`);
  const listed = entries.map((e) => e.name);
  assert.equal(new Set(listed).size, listed.length, "no entry twice");
  assert.deepEqual(new Set(listed), new Set([...names, ".", ".."]));
  for (const e of entries) {
    if (e.name === "sub") assert.equal(e.type, DT_DIR);
    else if (!e.name.startsWith(".")) assert.equal(e.type, DT_REG);
    if (e.name === "sub") assert.equal(e.ino, BigInt(Deno.statSync(`${share.dir}/sub`).ino ?? 0));
  }
  assert.equal(fs.inodeCount, 1, "READDIR looks nothing up");

  // Resuming at any cookie, on this handle or another, gives the same rest of the listing.
  const fh2 = fs.opendir(ctx, 1n, 0).fh;
  for (const at of [1, 777, 5000, entries.length - 1]) {
    const from = entries[at - 1]?.off ?? 0n;
    const rest = listAll(fs, 1n, at % 2 === 0 ? fh : fh2, false, 65536, from).entries;
    assert.deepEqual(rest.map((e) => e.name), listed.slice(at), `resume after entry ${at}`);
  }
  // A whole listing in big buffers matches too, and offset 0 rewinds.
  assert.deepEqual(listAll(fs, 1n, fh, false, 128 * 1024).entries, entries);
  // A buffer too small for one entry takes nothing.
  const none = new ListSink(10);
  fs.readdir(ctx, 1n, fh, 0n, none);
  assert.equal(none.entries.length, 0);
  assert.deepEqual(listAll(fs, 1n, fh, false, 4096).entries, entries);
  fs.releasedir(ctx, 1n, fh);
  fs.releasedir(ctx, 1n, fh2);
  assert.equal(fs.handleCount, 0);
});

Deno.test("READDIRPLUS of 10,000 entries: one lookup per entry sent, none for '.'/'..'", () => {
  using share = tempShare();
  const fs = share.fs;
  const names = populate(share.dir, N);
  const fh = fs.opendir(ctx, 1n, 0).fh;
  const { entries, calls } = listAll(fs, 1n, fh, true, 8192);
  assert.ok(calls > 100, `${calls} calls`);
  const listed = entries.map((e) => e.name);
  assert.equal(new Set(listed).size, listed.length, "no entry twice");
  assert.deepEqual(new Set(listed), new Set([...names, ".", ".."]));
  for (const e of entries) {
    if (e.name === "." || e.name === "..") assert.equal(e.nodeid, 0n);
    else assert.ok(e.nodeid > 1n);
  }
  // Exactly one lookup per entry sent: forgetting one each empties the table.
  assert.equal(fs.inodeCount, 1 + names.size);
  for (const e of entries) if (e.nodeid !== 0n) fs.forget(ctx, e.nodeid, 1n);
  assert.equal(fs.inodeCount, 1);

  // Plain and plus listings agree on names, offsets and types.
  const plain = listAll(fs, 1n, fh, false, 4096).entries;
  assert.deepEqual(
    plain.map((e) => [e.name, e.off, e.type, e.ino]),
    entries.map((e) => [e.name, e.off, e.type, e.ino]),
  );
  // A sink with no room looks nothing up.
  const none = new PlusSink(100);
  fs.readdirplus(ctx, 1n, fh, 0n, none);
  assert.equal(none.entries.length, 0);
  assert.equal(fs.inodeCount, 1);
  fs.releasedir(ctx, 1n, fh);
});

Deno.test("READDIRPLUS skips entries removed between getdents and their lookup", () => {
  using share = tempShare();
  const fs = share.fs;
  const names = populate(share.dir, 200);
  const fh = fs.opendir(ctx, 1n, 0).fh;
  // A sink that deletes every other file on the host once the listing has begun.
  const sink = new PlusSink(1 << 20);
  const add = sink.add.bind(sink);
  let removed = false;
  const deleted = new Set<string>();
  let trigger = "";
  sink.add = (entry: Entry, off: bigint, type: number, name: Uint8Array): void => {
    add(entry, off, type, name);
    const got = text(name);
    if (removed || got === "." || got === "..") return;
    removed = true;
    trigger = got;
    for (const n of names) {
      if (n !== got && n !== "sub") {
        Deno.removeSync(`${share.dir}/${n}`);
        deleted.add(n);
      }
    }
  };
  fs.readdirplus(ctx, 1n, fh, 0n, sink);
  const listed = sink.entries.map((e) => e.name).filter((n) => n !== "." && n !== "..");
  assert.equal(deleted.size, names.size - (trigger === "sub" ? 1 : 2));
  assert.ok(listed.includes(trigger) && listed.includes("sub"));
  assert.equal(listed.length, trigger === "sub" ? 1 : 2, "the removed files are skipped");
  assert.equal(fs.inodeCount, 1 + listed.length);
  fs.releasedir(ctx, 1n, fh);
});

Deno.test("READDIR: handles checked, cookies after changes, subdirectories", () => {
  using share = tempShare();
  const fs = share.fs;
  const d = fs.mkdir(ctx, 1n, Uint8Array.from([0x64]), 0o755, 0).nodeid;
  const fh = fs.opendir(ctx, d, 0).fh;
  const first = listAll(fs, d, fh, false, 4096).entries.map((e) => e.name);
  assert.deepEqual(first.sort(), [".", ".."]);
  const c = fs.create(ctx, d, Uint8Array.from([0x66]), 0o644, O_RDWR | O_CREAT, 0);
  const [fnode, ffh] = [c.entry.nodeid, c.open.fh];
  // A new handle sees the new file (a rewind on the old one does too).
  assert.deepEqual(listAll(fs, d, fh, false, 4096).entries.map((e) => e.name).sort(), [
    ".",
    "..",
    "f",
  ]);
  for (
    const [call, code] of [
      [() => fs.readdir(ctx, d, ffh, 0n, new ListSink(4096)), Errno.EBADF],
      [() => fs.readdir(ctx, 1n, fh, 0n, new ListSink(4096)), Errno.EBADF],
      [() => fs.readdir(ctx, d, 999n, 0n, new ListSink(4096)), Errno.EBADF],
      [() => fs.readdirplus(ctx, d, ffh, 0n, new PlusSink(4096)), Errno.EBADF],
      [() => fs.releasedir(ctx, d, ffh), Errno.EBADF],
      [() => fs.release(ctx, d, fh, 0), Errno.EBADF],
      [() => fs.opendir(ctx, fnode, 0), Errno.ENOTDIR],
    ] as const
  ) {
    assert.throws(call, (e: unknown) => e instanceof ErrnoError && e.errno === code);
  }
  fs.release(ctx, fnode, ffh, 0);
  fs.releasedir(ctx, d, fh);
  assert.throws(() => fs.readdir(ctx, d, fh, 0n, new ListSink(4096)), ErrnoError);
});

Deno.test("READDIR(PLUS) on three handles in turn: each listing whole, each entry once", () => {
  using share = tempShare();
  const fs = share.fs;
  const names = populate(share.dir, 3000);
  const fhs = [0, 1, 2].map(() => fs.opendir(ctx, 1n, 0).fh);
  const lists: Listed[][] = [[], [], []];
  const offsets = [0n, 0n, 0n];
  const done = [false, false, false];
  // Round robin, one small READDIR(PLUS) per handle per turn, as 3 concurrent guest listings.
  for (let turn = 0; done.includes(false); turn++) {
    const i = turn % 3;
    if (done[i]) continue;
    const plus = i !== 1;
    const sink = plus ? new PlusSink(4096) : new ListSink(4096);
    const fh = fhs[i] ?? 0n;
    if (plus) fs.readdirplus(ctx, 1n, fh, offsets[i] ?? 0n, sink as PlusSink);
    else fs.readdir(ctx, 1n, fh, offsets[i] ?? 0n, sink as ListSink);
    if (sink.entries.length === 0) done[i] = true;
    lists[i]?.push(...sink.entries);
    offsets[i] = sink.entries[sink.entries.length - 1]?.off ?? 0n;
  }
  for (const list of lists) {
    const listed = list.map((e) => e.name);
    assert.equal(new Set(listed).size, listed.length, "no entry twice");
    assert.deepEqual(new Set(listed), new Set([...names, ".", ".."]));
  }
  for (const fh of fhs) fs.releasedir(ctx, 1n, fh);
});

Deno.test("READDIR through a sink's addRaw gives what add gives, byte for byte", () => {
  using share = tempShare();
  const fs = share.fs;
  populate(share.dir, 2000);
  /** Takes entries as addRaw passes them (add must not be called), in `limit`-byte replies. */
  class RawSink {
    readonly entries: Listed[] = [];
    #used = 0;
    constructor(readonly limit: number) {}
    add(): boolean {
      throw new Error("add called although addRaw is there");
    }
    addRaw(
      src: Uint8Array,
      inoAt: number,
      offAt: number,
      type: number,
      nameAt: number,
      nameLength: number,
    ): boolean {
      const len = (24 + nameLength + 7) & ~7;
      if (this.#used + len > this.limit) return false;
      this.#used += len;
      const v = new DataView(src.buffer, src.byteOffset);
      this.entries.push({
        ino: v.getBigUint64(inoAt, true),
        off: v.getBigUint64(offAt, true),
        type,
        name: text(src.subarray(nameAt, nameAt + nameLength)),
        nodeid: 0n,
      });
      return true;
    }
  }
  const fh = fs.opendir(ctx, 1n, 0).fh;
  const viaAdd = listAll(fs, 1n, fh, false, 4096).entries;
  const viaRaw: Listed[] = [];
  let offset = 0n;
  for (;;) {
    const sink = new RawSink(4096);
    fs.readdir(ctx, 1n, fh, offset, sink);
    if (sink.entries.length === 0) break;
    viaRaw.push(...sink.entries);
    offset = sink.entries[sink.entries.length - 1]?.off ?? 0n;
  }
  assert.equal(viaRaw.length, 2003);
  assert.deepEqual(viaRaw, viaAdd);
  fs.releasedir(ctx, 1n, fh);
});
