/**
 * Spec: LIMITS — the guest may hold more inodes than the daemon may open descriptors, and when
 * the host truly runs out of descriptors the guest gets EMFILE for that request while the daemon
 * goes on serving.
 *
 * This host's RLIMIT_NOFILE is 20,000 (soft and hard) and the daemon cannot raise the hard
 * limit: a descriptor per inode would stop at about 20,000 live inodes. Inodes keep file handles
 * instead (`name_to_handle_at`), with a bounded cache of O_PATH descriptors reopened by
 * `open_by_handle_at`.
 *
 * - LIMITS-INODES: 100,000 files looked up (pipelined, never forgotten), then GETATTR and
 *   OPEN/READ/RELEASE of files across the whole range (the first ones long out of the cache),
 *   then BATCH_FORGET of them all: the daemon's descriptors come back to where they were, and
 *   it still serves.
 * - LIMITS-EMFILE: the daemon under a limit of 64 descriptors; the guest opens files without
 *   releasing them until an OPEN answers EMFILE; LOOKUP, GETATTR and READ still work; after some
 *   RELEASEs OPEN works again.
 *
 * The shared directories live on tmpfs when /dev/shm exists (100,000 files are made there in
 * about a second; on this host's ext4 it takes ten times longer).
 *
 * @module
 */
import assert from "node:assert/strict";
import { Errno } from "../src/ffi/errno.ts";
import { ENTRY_OUT, FUSE_LOOKUP, FUSE_ROOT_ID } from "../src/wire/fuse.ts";
import { daemonArgv, type DaemonHandle, startDaemon } from "./_driver/daemon.ts";
import { VhostUserFrontend } from "../src/driver/frontend.ts";
import { cstr, FuseClient, FuseError, O_RDONLY, parseEntry } from "../src/driver/fuse_client.ts";
import { readRssKiB } from "./_driver/hostile.ts";

const N = 100_000;
/** LOOKUPs in flight at once. */
const WINDOW = 256;

/** A temporary directory, on tmpfs when there is one. */
function fastTempDir(prefix: string): string {
  let dir: string | undefined;
  try {
    if (Deno.statSync("/dev/shm").isDirectory) dir = "/dev/shm";
  } catch { /* the default temporary directory then */ }
  const made = Deno.makeTempDirSync({ prefix, ...(dir ? { dir } : {}) });
  Deno.chmodSync(made, 0o755);
  return made;
}

/** Files f0 … f{n-1} in `dir`, file i holding "i\n" (perl: far faster than a write per call). */
function makeFiles(dir: string, n: number): void {
  const script = 'for my $i (0..$ARGV[0]-1) { open(my $f, ">", "f$i") or die; print $f "$i\\n" }';
  const out = new Deno.Command("perl", { args: ["-e", script, String(n)], cwd: dir }).outputSync();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
}

function fdCount(pid: number): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

function inoOf(path: string): bigint {
  return BigInt(Deno.statSync(path).ino ?? 0);
}

/** Opens a session to `d`: connect, FUSE_INIT. */
async function session(d: DaemonHandle): Promise<{ fe: VhostUserFrontend; ops: FuseClient }> {
  try {
    const fe = await VhostUserFrontend.connect(d.socketPath, {
      queueSize: 1024,
      timeoutMs: 20_000,
    });
    const ops = new FuseClient(fe);
    ops.init();
    return { fe, ops };
  } catch (e) {
    throw new Error(`${(e as Error).message}\n--- daemon log ---\n${d.stderrText()}`, { cause: e });
  }
}

/** LOOKUP of f{from} … f{to-1} in the root, WINDOW requests in flight at a time. */
function lookupAll(client: FuseClient, names: (i: number) => string, n: number): BigUint64Array {
  const ids = new BigUint64Array(n);
  const index = new Map<bigint, number>();
  for (let i = 0; i < n;) {
    const end = Math.min(n, i + WINDOW);
    for (let k = i; k < end; k++) {
      const unique = client.submit(FUSE_LOOKUP, [cstr(names(k))], [ENTRY_OUT.size], {
        nodeid: FUSE_ROOT_ID,
        publish: k === end - 1,
      });
      index.set(unique, k);
    }
    for (const r of client.collect({ count: end - i })) {
      const k = index.get(r.requestUnique);
      if (k === undefined) throw new Error(`a reply to unknown unique ${r.requestUnique}`);
      index.delete(r.requestUnique);
      FuseClient.check(r);
      const e = parseEntry(new DataView(r.body.buffer, r.body.byteOffset, r.body.byteLength));
      if (e.attr.size !== BigInt(String(k).length + 1)) {
        throw new Error(`${names(k)}: size ${e.attr.size}`);
      }
      ids[k] = e.nodeid;
    }
    i = end;
  }
  return ids;
}

Deno.test("LIMITS-INODES 100,000 live inodes", async () => {
  const shared = fastTempDir("limits-inodes-");
  try {
    const t0 = performance.now();
    makeFiles(shared, N);
    const makeMs = performance.now() - t0;
    await using d = await startDaemon("ours", { sharedDir: shared });
    const { fe, ops } = await session(d);
    using _fe = fe;
    const base = fdCount(d.pid);
    const rss0 = readRssKiB(d.pid) ?? 0;

    const t1 = performance.now();
    const ids = lookupAll(ops, (i) => `f${i}`, N);
    const lookupMs = performance.now() - t1;
    const held = fdCount(d.pid);
    const rss = readRssKiB(d.pid) ?? 0;
    assert.equal(new Set(ids).size, N, "every file has its own nodeid");
    assert.ok(held - base < 20_000, `${held - base} descriptors for ${N} live inodes`);

    // GETATTR and OPEN + READ + RELEASE across the whole range, the first files included.
    const sample: number[] = [];
    for (let i = 0; i < 20; i++) sample.push(i, N - 1 - i);
    for (let i = 0; i < N; i += 499) sample.push(i);
    const t2 = performance.now();
    for (const i of sample) {
      const nodeid = ids[i] ?? 0n;
      assert.equal(ops.getattr(nodeid).attr.ino, inoOf(`${shared}/f${i}`), `GETATTR f${i}`);
      const fh = ops.open(nodeid, O_RDONLY).fh;
      assert.equal(new TextDecoder().decode(ops.read(nodeid, fh, 0, 64)), `${i}\n`, `READ f${i}`);
      ops.release(nodeid, fh);
    }
    const sampleMs = performance.now() - t2;

    // Forgotten, all of them: the descriptors come back, and the daemon still serves.
    const t3 = performance.now();
    ops.batchForget([...ids].map((id) => [id, 1] as const));
    const forgetMs = performance.now() - t3;
    const after = fdCount(d.pid);
    assert.ok(after <= base, `${after} descriptors after BATCH_FORGET, ${base} before the lookups`);
    const again = ops.lookup(FUSE_ROOT_ID, "f0");
    assert.ok(again.nodeid > (ids[N - 1] ?? 0n), "nodeids are not reused");
    assert.equal(ops.getattr(again.nodeid).attr.ino, inoOf(`${shared}/f0`));
    ops.forget(again.nodeid, 1);
    assert.equal(d.hasExited(), false);
    console.log(
      `  ${N} files made in ${makeMs.toFixed(0)} ms; ${N} LOOKUPs in ${lookupMs.toFixed(0)} ms ` +
        `(${(lookupMs * 1000 / N).toFixed(1)} µs each, ${WINDOW} in flight); daemon descriptors ` +
        `${base} → ${held} → ${after}; RSS ${(rss0 / 1024).toFixed(0)} → ` +
        `${(rss / 1024).toFixed(0)} MiB; ${sample.length} GETATTR+OPEN+READ+RELEASE in ` +
        `${sampleMs.toFixed(0)} ms; BATCH_FORGET in ${forgetMs.toFixed(0)} ms`,
    );
  } finally {
    Deno.removeSync(shared, { recursive: true });
  }
});

Deno.test("LIMITS-EMFILE out of descriptors: the request fails with EMFILE, the daemon serves on", async () => {
  const shared = fastTempDir("limits-emfile-");
  const F = 64;
  try {
    makeFiles(shared, F);
    Deno.writeTextFileSync(`${shared}/late`, "late\n");
    // Deno raises its soft limit to the hard one at start, so the hard limit is lowered too.
    await using d = await startDaemon("ours", {
      sharedDir: shared,
      args: (socket, dir) => [
        "prlimit",
        "--nofile=64:64",
        ...daemonArgv("ours", socket, dir),
        "--rlimit-nofile",
        "64",
      ],
    });
    const { fe, ops } = await session(d);
    using _fe = fe;
    const limits = Deno.readTextFileSync(`/proc/${d.pid}/limits`);
    assert.match(limits, /^Max open files\s+64\s+64\s/m);

    const ids = lookupAll(ops, (i) => `f${i}`, F);
    const opened: [bigint, bigint][] = [];
    let failure: FuseError | undefined;
    for (let k = 0; k < 1000 && failure === undefined; k++) {
      const nodeid = ids[k % F] ?? 0n;
      try {
        opened.push([nodeid, ops.open(nodeid, O_RDONLY).fh]);
      } catch (e) {
        if (!(e instanceof FuseError)) throw e;
        failure = e;
      }
    }
    assert.ok(failure !== undefined, `${opened.length} OPENs and no failure`);
    assert.equal(failure.errno, Errno.EMFILE, failure.message);
    assert.ok(opened.length > 0);

    // Still served: LOOKUP of a new name, GETATTR of inodes long out of the cache, READ.
    const late = ops.lookup(FUSE_ROOT_ID, "late");
    assert.equal(late.attr.ino, inoOf(`${shared}/late`));
    for (const i of [0, 1, F - 1]) {
      assert.equal(ops.getattr(ids[i] ?? 0n).attr.ino, inoOf(`${shared}/f${i}`), `GETATTR f${i}`);
    }
    const [n0, fh0] = opened[0] ?? [0n, 0n];
    assert.equal(new TextDecoder().decode(ops.read(n0, fh0, 0, 64)), "0\n");

    // Some RELEASEs, and OPEN works again.
    for (const [nodeid, fh] of opened.splice(0, 4)) ops.release(nodeid, fh);
    const fh = ops.open(late.nodeid, O_RDONLY).fh;
    assert.equal(new TextDecoder().decode(ops.read(late.nodeid, fh, 0, 64)), "late\n");
    ops.release(late.nodeid, fh);
    for (const [nodeid, h] of opened) ops.release(nodeid, h);
    ops.batchForget([...[...ids].map((id) => [id, 1] as const), [late.nodeid, 1]]);
    assert.equal(ops.getattr(FUSE_ROOT_ID).attr.ino, inoOf(shared));
    assert.equal(d.hasExited(), false);
    console.log(`  ${opened.length + 4} files open when OPEN answered EMFILE (limit 64)`);
  } finally {
    Deno.removeSync(shared, { recursive: true });
  }
});
