/**
 * Spec: CACHE-NONE — nothing cached in the guest. The design's paragraph, quoted:
 *
 * > - cache=none: metadata, data and pathname lookup are not cached in guest. They are always
 * > fetched from host and any changes are immediately pushed to host.
 *
 * - CACHE-NONE-1: a host chmod/chown/utime/truncate is seen by the guest at once.
 * - CACHE-NONE-2: a host write is seen by the guest's next read, on a descriptor it holds open
 *   as on a new one; every read reaches the daemon (READs counted in its log).
 * - CACHE-NONE-3: a host create/unlink/rename is seen at once (and a directory listing).
 * - CACHE-NONE-4: a guest write is on the host when write(2) returns.
 *
 * "At once" is measured, not assumed: `vfsprobe watch` looks every 5 ms, the host changes the
 * files once the guest has looked, then creates a signal file; the first look after the guest
 * sees the signal must show the change. The signal must come well within the 1 s that cache=auto
 * would keep the stale view, so the same test fails against auto (for the names the guest had
 * found; a name it found absent is looked up again in every mode, see cache_auto_test.ts).
 *
 * Wire: every reply that makes an entry carries 0 s entry and attribute validity, GETATTR 0 s;
 * OPEN and CREATE set FOPEN_DIRECT_IO (the guest has no page cache for the file); OPENDIR sets no
 * cache flag; INIT does not grant READDIRPLUS (as both virtiofsd do under cache=none: the
 * entries it returns could not be cached anyway). `--cache never` (Rust virtiofsd's word) is the
 * same mode.
 *
 * mmap: FOPEN_DIRECT_IO has a price. Linux 6.1 refuses mmap(MAP_SHARED) of such a file with
 * ENODEV (it cannot keep a shared mapping coherent without a page cache); MAP_PRIVATE works. The
 * guest test shows exactly that. Linux 6.6 added FUSE_DIRECT_IO_ALLOW_MMAP (INIT flags2 bit 36):
 * a daemon started with `--allow-mmap` grants it when the kernel offers it, and then shared maps
 * work; the wire test offers the bit as a 6.6 guest would. Our 6.1 guest does not offer it, so
 * there `--allow-mmap` changes nothing.
 *
 * Runs against every daemon in `DAEMONS` with the same options (C: `-o cache=none`, Rust:
 * `--cache never`); departures are in `spec/expectations/cache.json`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  FOPEN_DIRECT_IO,
  FUSE_DIRECT_IO_ALLOW_MMAP,
  FUSE_DO_READDIRPLUS,
  FUSE_READ,
  FUSE_WRITEBACK_CACHE,
} from "../src/wire/fuse.ts";
import { type DaemonKind, daemonsUnderTest } from "./_driver/daemon.ts";
import {
  departure,
  GuestSession,
  MNT,
  modeName,
  type ModeOptions,
  suidSetup,
  suidWrite,
  surveyReplies,
  surveySetup,
  WireSession,
} from "./_driver/cache_harness.ts";
import { LINUX_6_1_INIT_FLAGS } from "../src/driver/fuse_client.ts";
import { flipOf, type WatchResult } from "./_driver/guest_tools.ts";

/** INIT flags2 bit 36 (Linux 6.6): mmap(MAP_SHARED) allowed on FOPEN_DIRECT_IO files. */
/** The time cache=auto would keep a stale view (the default timeout). */
const AUTO_TIMEOUT_MS = 1000;

const enc = new TextEncoder();
const dec = new TextDecoder();

// ---- wire -------------------------------------------------------------------------------------

async function wireNone(kind: DaemonKind, m: ModeOptions): Promise<void> {
  await using w = await WireSession.open(kind, m, { setup: surveySetup });
  const s = surveyReplies(w);
  for (const [op, t] of Object.entries(s.entries)) {
    assert.deepEqual(t, { entry: 0, attr: 0 }, `${op}: entry and attribute validity`);
  }
  assert.equal(s.getattr, 0, "GETATTR attribute validity");
  assert.deepEqual(s.openFlags, {
    "OPEN O_RDONLY": FOPEN_DIRECT_IO,
    "OPEN O_RDWR": FOPEN_DIRECT_IO,
    CREATE: FOPEN_DIRECT_IO,
    OPENDIR: 0,
  }, "files FOPEN_DIRECT_IO, directories nothing");
  assert.equal(s.initFlags & FUSE_DO_READDIRPLUS, 0n, "no READDIRPLUS under cache=none");
  assert.equal(s.initFlags & FUSE_WRITEBACK_CACHE, 0n, "no writeback cache unless asked");
}

for (const kind of daemonsUnderTest()) {
  Deno.test(
    `CACHE-NONE-1, CACHE-NONE-2, CACHE-NONE-3 [wire] zero timeouts, FOPEN_DIRECT_IO [${kind}]`,
    async (t) => {
      await t.step(
        "CACHE-NONE-1 CACHE-NONE-3 every entry and attribute validity is 0 s; " +
          "CACHE-NONE-2 files are FOPEN_DIRECT_IO",
        () => wireNone(kind, { cache: "none" }),
      );
      if (kind !== "c") {
        await t.step(
          "CACHE-NONE-1 --cache never (Rust virtiofsd's word) is cache=none",
          () => wireNone(kind, { cache: "none", cacheWord: "never" }),
        );
      }
      const dep = departure(kind, "CACHE-NONE-2 allow-mmap");
      await t.step({
        name: "CACHE-NONE-2 --allow-mmap grants FUSE_DIRECT_IO_ALLOW_MMAP to a kernel that " +
          "offers it (Linux >= 6.6), and only with the option" +
          (dep?.skip ? ` (skipped: ${dep.reason})` : ""),
        ignore: dep?.skip === true,
        fn: async () => {
          const offer = LINUX_6_1_INIT_FLAGS | FUSE_DIRECT_IO_ALLOW_MMAP;
          {
            await using w = await WireSession.open(kind, { cache: "none" }, { initFlags: offer });
            assert.equal(w.init.flags & FUSE_DIRECT_IO_ALLOW_MMAP, 0n, "not without the option");
          }
          await using w = await WireSession.open(kind, { cache: "none", allowMmap: true }, {
            initFlags: offer,
          });
          assert.notEqual(w.init.flags & FUSE_DIRECT_IO_ALLOW_MMAP, 0n, "granted");
          await using w2 = await WireSession.open(kind, { cache: "none", allowMmap: true });
          assert.equal(
            w2.init.flags & FUSE_DIRECT_IO_ALLOW_MMAP,
            0n,
            "never granted to a kernel that did not offer it (Linux 6.1)",
          );
        },
      });
    },
  );
}

// ---- guest ------------------------------------------------------------------------------------

const FILES: Record<string, string> = {
  "n-chmod": "aaaa",
  "n-chown": "aaaa",
  "n-utime": "aaaa",
  "n-trunc": "aaaa",
  "n-data-fd": "dddddddd",
  "n-data": "eeeeeeee",
  "n-gone": "g",
  "n-old": "o",
  "n-dir/x": "x",
  "n-map": "m".repeat(4096),
};

function setup(dir: string): void {
  suidSetup(dir);
  Deno.mkdirSync(`${dir}/n-dir`);
  for (const [name, text] of Object.entries(FILES)) {
    Deno.writeFileSync(`${dir}/${name}`, enc.encode(text));
  }
}

/** Each probe, the host's change to it, and what the guest must see right after. */
const CASES: { id: string; what: string; probe: string; after: RegExp }[] = [
  { id: "CACHE-NONE-1", what: "chmod", probe: "stat:n-chmod", after: /mode=100600 / },
  { id: "CACHE-NONE-1", what: "chown", probe: "stat:n-chown", after: /uid=1234 gid=5678 / },
  { id: "CACHE-NONE-1", what: "utime", probe: "stat:n-utime", after: /mtime=1000000000\.0+ / },
  { id: "CACHE-NONE-1", what: "truncate", probe: "stat:n-trunc", after: / size=2 / },
  {
    id: "CACHE-NONE-2",
    what: "write, read on a descriptor open before it",
    probe: "fdread:n-data-fd",
    after: /^n=8 data=DDDDDDDD$/,
  },
  {
    id: "CACHE-NONE-2",
    what: "write, read after a new open",
    probe: "read:n-data",
    after: /^n=8 data=EEEEEEEE$/,
  },
  { id: "CACHE-NONE-3", what: "unlink", probe: "stat:n-gone", after: /^ENOENT$/ },
  { id: "CACHE-NONE-3", what: "rename (the old name)", probe: "stat:n-old", after: /^ENOENT$/ },
  {
    id: "CACHE-NONE-3",
    what: "rename (the new name)",
    probe: "stat:n-moved",
    after: /^ino=\d+ mode=100644 .* size=1 /,
  },
  { id: "CACHE-NONE-3", what: "create", probe: "stat:n-new", after: / size=3 / },
  { id: "CACHE-NONE-3", what: "create in a listed directory", probe: "ls:n-dir", after: /^x,y$/ },
];

function change(s: GuestSession): void {
  Deno.chmodSync(s.host("n-chmod"), 0o600);
  Deno.chownSync(s.host("n-chown"), 1234, 5678);
  Deno.utimeSync(s.host("n-utime"), 1_000_000_000, 1_000_000_000);
  Deno.truncateSync(s.host("n-trunc"), 2);
  // In place, same size: only the bytes change.
  for (const [name, ch] of [["n-data-fd", "D"], ["n-data", "E"]]) {
    const f = Deno.openSync(s.host(name ?? ""), { write: true });
    f.writeSync(enc.encode((ch ?? "").repeat(8)));
    f.close();
  }
  Deno.removeSync(s.host("n-gone"));
  Deno.renameSync(s.host("n-old"), s.host("n-moved"));
  Deno.writeFileSync(s.host("n-new"), enc.encode("new"));
  Deno.writeFileSync(s.host("n-dir/y"), enc.encode("y"));
}

function describe(w: WatchResult, i: number): string {
  return `probe ${CASES[i]?.probe}:\n${w.raw}`;
}

for (const kind of daemonsUnderTest()) {
  Deno.test({
    name: `CACHE-NONE-1, CACHE-NONE-2, CACHE-NONE-3, CACHE-NONE-4 [guest] the host's changes ` +
      `seen at once, the guest's on the host at once [${kind}]`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      const m: ModeOptions = { cache: "none" };
      await using s = await GuestSession.start(kind, m, setup);
      const log = s.requestLog();
      const w = await s.watch(
        CASES.map((c) => c.probe.replace(":", `:${MNT}/`)),
        () => change(s),
        "-i 5 -d 3000 -w 50",
      );
      const reads = log.since().filter((r) => r.opcode === FUSE_READ).length;
      assert.ok(w.signal !== undefined, `the guest never saw the signal:\n${w.raw}`);
      assert.ok(
        w.signal.tMs < AUTO_TIMEOUT_MS - 200,
        `the signal came ${w.signal.tMs} ms after the guest's first look: too late to tell ` +
          `none from auto:\n${w.raw}`,
      );

      for (const [i, c] of CASES.entries()) {
        await t.step(`${c.id} ${modeName(m)} host ${c.what}: seen by the next look`, () => {
          const f = flipOf(w, i);
          assert.ok(!f.staleAfterSignal, `stale after the host's change: ${describe(w, i)}`);
          assert.ok(f.first !== undefined, `never changed: ${describe(w, i)}`);
          assert.match(f.first.value, c.after, describe(w, i));
        });
      }

      await t.step(
        "CACHE-NONE-2 every read of the guest reached the daemon (READs counted)",
        () => {
          // Two probes read each round: one READ each (a 64-byte read of an 8-byte file).
          assert.ok(
            reads >= 2 * w.rounds,
            `${reads} READ requests for ${w.rounds} rounds of 2 reads`,
          );
        },
      );

      await t.step(
        "CACHE-NONE-2 mmap(MAP_SHARED) fails with ENODEV under FOPEN_DIRECT_IO (Linux 6.1); " +
          "MAP_PRIVATE works",
        async () => {
          const r = await s.act([
            `open:${MNT}/n-map:+`,
            "mmap:4096:shared",
            "close",
            `open:${MNT}/n-map:r`,
            "mmap:4096:private",
            "load:0:4",
            "munmap",
            "close",
          ]);
          assert.deepEqual(r.map((a) => `${a.name} ${a.result}`), [
            "open ok",
            "mmap err=ENODEV",
            "close ok",
            "open ok",
            "mmap ok",
            "load ok data=mmmm",
            "munmap ok",
            "close ok",
          ]);
        },
      );

      await t.step(
        "CACHE-NONE-4 a guest write(2) is on the host when it returns (before close or fsync)",
        async () => {
          const path = s.host("n-written");
          const host = (): string => dec.decode(Deno.readFileSync(path));
          const seen: string[] = [];
          const r = await s.act([
            `open:${MNT}/n-written:wc`,
            "write:4096:a",
            { host: () => void seen.push(host()) },
            "write:4096:b",
            { host: () => void seen.push(host()) },
            "pwrite:100:10:c",
            { host: () => void seen.push(host()) },
            "close",
          ]);
          assert.ok(r.every((a) => a.result.startsWith("ok")), JSON.stringify(r));
          const expected = ["a".repeat(4096), "a".repeat(4096) + "b".repeat(4096)];
          expected.push(expected[1]?.slice(0, 100) + "c".repeat(10) + expected[1]?.slice(110));
          assert.equal(seen.length, 3);
          for (const [i, want] of expected.entries()) {
            assert.ok(
              seen[i] === want,
              `after write ${i + 1} the host file is ${
                seen[i]?.length
              } bytes, not the ${want.length} written`,
            );
          }
        },
      );

      const dep = departure(kind, "CACHE-NONE-4 [guest] kill-suid");
      await t.step(
        "CACHE-NONE-4 a user's write to a setuid file it may write clears setuid and setgid on " +
          "the host (a direct write: the guest leaves it to the daemon, FUSE_WRITE_KILL_SUIDGID)" +
          (dep !== undefined ? " (a known departure: spec/expectations/cache.json)" : ""),
        () => suidWrite(s, dep?.value),
      );
    },
  });
}
