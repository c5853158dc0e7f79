/**
 * Spec: CACHE-AUTO — the default cache mode. The design's paragraph, quoted:
 *
 * > - cache=auto: metadata and pathname lookup cache expires after a configured amount of time
 * > (default is 1 second). Data is cached while the file is open (close to open consistency).
 *
 * - CACHE-AUTO-1: metadata and lookups expire after the timeout, default 1 s: the guest sees the
 *   stale view at least once within it and the new one after it.
 * - CACHE-AUTO-2: the timeout is configurable (ours: `-o timeout=N` as C virtiofsd, and our own
 *   `--cache-timeout N`).
 * - CACHE-AUTO-3: data is cached while the file is open: reads within the attribute timeout are
 *   served from the guest's page cache (no READ reaches the daemon, counted in its log) even
 *   though the host changed the file. After the timeout, Linux's AUTO_INVAL_DATA (granted by
 *   every daemon here) makes a read refresh the attributes, and a changed mtime or size drops the
 *   cached pages: the open file then shows the host's data. The paragraph's "may" is pinned
 *   down: with AUTO_INVAL_DATA granted, it does.
 * - CACHE-AUTO-4: close-to-open: a file opened again sees the host's change at once (the open
 *   reply has no FOPEN_KEEP_CACHE, so Linux drops the file's pages at open). A new *size*, though,
 *   is an attribute: within the timeout a reopen reads the host's new bytes up to the cached size,
 *   and the new size after the timeout.
 *
 * Wire: every reply that makes an entry (LOOKUP, CREATE, MKNOD, MKDIR, SYMLINK, LINK,
 * READDIRPLUS) carries the timeout as entry and attribute validity, GETATTR as attribute
 * validity; OPEN, CREATE and OPENDIR set no FOPEN_* cache flag; INIT grants AUTO_INVAL_DATA and
 * READDIRPLUS, and no writeback cache. Guest: a Linux 6.1 guest under QEMU 7.2, one boot per
 * daemon and timeout; `vfsprobe watch` looks at files every 5 ms, the host changes them once the
 * guest has them cached, and the guest reports (on its own monotonic clock) when each view
 * changed. Times are measured from the probe's first look (the reply that started the cache
 * came after it): the flip must come no earlier than the timeout minus 10 ms (a jiffy of
 * rounding) and no later than 300 ms after it.
 *
 * Negative lookups are not cached in any mode by any of the three daemons (they answer ENOENT,
 * which Linux does not keep), so a file the host creates is seen at once; lookups here are of
 * names the guest found.
 *
 * Runs against every daemon in `DAEMONS` (ours, c, rust by default), with the same options;
 * departures are recorded in `spec/expectations/cache.json`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  FUSE_AUTO_INVAL_DATA,
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
  surveyReplies,
  surveySetup,
  UnsupportedOption,
  WireSession,
} from "./_driver/cache_harness.ts";
import { type Flip, flipOf, type WatchResult } from "./_driver/guest_tools.ts";

/** The configured timeout of CACHE-AUTO-2, in seconds. */
const CONFIGURED = 2;
/** Slack after the timeout for the flip to show (5 ms rounds under TCG). */
const LATE_MS = 300;
/** Slack before the timeout (a jiffy of rounding in the guest's expiry time). */
const EARLY_MS = 10;

const enc = new TextEncoder();

function fill(ch: string, n: number): string {
  return ch.repeat(n);
}

// ---- wire -------------------------------------------------------------------------------------

async function wireCheck(kind: DaemonKind, m: ModeOptions, want: number): Promise<void> {
  await using w = await WireSession.open(kind, m, { setup: surveySetup });
  const s = surveyReplies(w);
  for (const [op, t] of Object.entries(s.entries)) {
    assert.deepEqual(t, { entry: want, attr: want }, `${op}: entry and attribute validity`);
  }
  assert.ok("READDIRPLUS inner" in s.entries, "READDIRPLUS was granted and answered");
  assert.equal(s.getattr, want, "GETATTR attribute validity");
  assert.deepEqual(s.openFlags, {
    "OPEN O_RDONLY": 0,
    "OPEN O_RDWR": 0,
    CREATE: 0,
    OPENDIR: 0,
  }, "no FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE or FOPEN_CACHE_DIR");
  assert.notEqual(s.initFlags & FUSE_AUTO_INVAL_DATA, 0n, "INIT grants AUTO_INVAL_DATA");
  assert.notEqual(s.initFlags & FUSE_DO_READDIRPLUS, 0n, "INIT grants DO_READDIRPLUS");
  assert.equal(s.initFlags & FUSE_WRITEBACK_CACHE, 0n, "no writeback cache unless asked");
}

/** Runs `fn` unless `kind` cannot express the mode (recorded as a departure with a reason). */
async function unlessUnsupported(
  t: Deno.TestContext,
  kind: DaemonKind,
  key: string,
  name: string,
  fn: () => Promise<void>,
): Promise<void> {
  const dep = departure(kind, key);
  await t.step({
    name: dep?.skip ? `${name} (skipped: ${dep.reason})` : name,
    ignore: dep?.skip === true,
    fn: async () => {
      try {
        await fn();
      } catch (e) {
        if (e instanceof UnsupportedOption && kind !== "ours") {
          throw new Error(`${e.message}: record it in spec/expectations/cache.json (${key})`);
        }
        throw e;
      }
    },
  });
}

for (const kind of daemonsUnderTest()) {
  Deno.test(`CACHE-AUTO-1, CACHE-AUTO-2 [wire] entry/attribute timeouts and open flags [${kind}]`, async (t) => {
    await t.step(
      "CACHE-AUTO-1 the default (no cache option) is auto: 1 s, no FOPEN cache flags",
      () => wireCheck(kind, {}, 1),
    );
    await unlessUnsupported(
      t,
      kind,
      "CACHE-AUTO-2 timeout option",
      `CACHE-AUTO-2 -o timeout=${CONFIGURED}: every timeout is ${CONFIGURED} s`,
      () => wireCheck(kind, { timeout: CONFIGURED }, CONFIGURED),
    );
    if (kind === "ours") {
      await t.step(
        `CACHE-AUTO-2 --cache-timeout ${CONFIGURED} (our own flag): every timeout is ${CONFIGURED} s`,
        () => wireCheck(kind, { cacheTimeoutFlag: CONFIGURED }, CONFIGURED),
      );
    }
  });
}

// ---- guest ------------------------------------------------------------------------------------

/** The files of the expiry watch, their probes and the host's change. */
const FILES = {
  meta: "aaaa",
  gone: "gone",
  old: "old!",
  "open-same": fill("s", 8),
  "open-grow": fill("g", 8),
  reopen: fill("r", 8),
  "reopen-grow": fill("q", 8),
  held: fill("h", 4096),
} as const;

function setup(dir: string): void {
  for (const [name, text] of Object.entries(FILES)) {
    Deno.writeFileSync(`${dir}/${name}`, enc.encode(text));
  }
}

const PROBES = [
  `stat:${MNT}/meta`,
  `stat:${MNT}/gone`,
  `stat:${MNT}/old`,
  `fdread:${MNT}/open-same`,
  `fdread:${MNT}/open-grow`,
  `read:${MNT}/reopen`,
  `read:${MNT}/reopen-grow`,
];

/** The host's change to each probed file, after the guest cached it. */
function change(s: GuestSession): void {
  Deno.chmodSync(s.host("meta"), 0o600);
  Deno.removeSync(s.host("gone"));
  Deno.renameSync(s.host("old"), s.host("moved"));
  // Same size, new bytes: only the mtime tells the guest.
  Deno.writeFileSync(s.host("open-same"), enc.encode(fill("S", 8)));
  Deno.writeFileSync(s.host("open-grow"), enc.encode(fill("G", 12)));
  Deno.writeFileSync(s.host("reopen"), enc.encode(fill("R", 8)));
  Deno.writeFileSync(s.host("reopen-grow"), enc.encode(fill("Q", 12)));
}

function describe(w: WatchResult, i: number): string {
  return `probe ${PROBES[i]}:\n${w.raw}`;
}

/**
 * Like `flipOf`, but the flip is the first observation matching `to`: an unlinked name that still
 * resolves may first show its refreshed attributes (nlink=0, when its attribute timeout ran out a
 * moment before its entry timeout), and that is still the name resolving, not the flip.
 */
function flipTo(w: WatchResult, i: number, to: RegExp): Flip {
  const obs = w.probes[i] ?? [];
  const before = obs[0]?.value ?? "";
  const first = obs.find((o) => to.test(o.value));
  const s = w.signal;
  const staleAfterSignal = s !== undefined && (first === undefined || first.round > s.round);
  return { before, ...(first !== undefined ? { first } : {}), staleAfterSignal };
}

/**
 * CACHE-AUTO-1/-3 after the timeout: probe `i` shows its round-0 view after the signal, and
 * the new `value` from the timeout on (measured from its first look). With `flipAt`, only an
 * observation matching it counts as the change.
 */
function assertExpires(
  w: WatchResult,
  i: number,
  timeoutMs: number,
  value: RegExp,
  flipAt?: RegExp,
): void {
  const f = flipAt === undefined ? flipOf(w, i) : flipTo(w, i, flipAt);
  const first = w.probes[i]?.[0];
  assert.ok(first !== undefined && w.signal !== undefined, describe(w, i));
  assert.ok(f.staleAfterSignal, `stale at least once after the host's change: ${describe(w, i)}`);
  assert.ok(f.first !== undefined, `never changed: ${describe(w, i)}`);
  const after = f.first.tMs - first.tMs;
  assert.ok(
    after >= timeoutMs - EARLY_MS,
    `changed ${after.toFixed(1)} ms after the first look, before the ${timeoutMs} ms timeout: ` +
      describe(w, i),
  );
  assert.ok(
    after <= timeoutMs + LATE_MS,
    `changed ${after.toFixed(1)} ms after the first look, over ${LATE_MS} ms past the ` +
      `${timeoutMs} ms timeout: ${describe(w, i)}`,
  );
  assert.match(f.first.value, value, describe(w, i));
}

async function expiryWatch(s: GuestSession, timeoutMs: number): Promise<WatchResult> {
  const w = await s.watch(PROBES, () => change(s), `-i 5 -d ${timeoutMs + 2000} -w 50`);
  assert.ok(w.signal !== undefined, `the guest never saw the signal:\n${w.raw}`);
  // The host's change must be in place well within the timeout for "stale within" to count.
  assert.ok(
    w.signal.tMs < timeoutMs - 200,
    `the host's change came ${w.signal.tMs} ms after round 0 (timeout ${timeoutMs} ms):\n${w.raw}`,
  );
  return w;
}

function expiryChecks(w: WatchResult, timeoutMs: number, id: string): [string, () => void][] {
  return [
    [
      `${id} metadata: a host chmod is seen after the timeout, not before`,
      () => assertExpires(w, 0, timeoutMs, /mode=100600 /),
    ],
    [
      `${id} lookup: a name the host unlinked still resolves until the timeout`,
      () => assertExpires(w, 1, timeoutMs, /^ENOENT$/, /^ENOENT$/),
    ],
    [
      `${id} lookup: a name the host renamed away still resolves until the timeout`,
      () => assertExpires(w, 2, timeoutMs, /^ENOENT$/),
    ],
  ];
}

for (const kind of daemonsUnderTest()) {
  Deno.test({
    name: `CACHE-AUTO-1, CACHE-AUTO-3, CACHE-AUTO-4 [guest] default auto: expiry after 1 s, ` +
      `data cached while open, close-to-open [${kind}]`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      await using s = await GuestSession.start(kind, {}, setup);
      const timeoutMs = 1000;
      const w = await expiryWatch(s, timeoutMs);
      for (const [name, check] of expiryChecks(w, timeoutMs, "CACHE-AUTO-1")) {
        await t.step(name, check);
      }

      await t.step(
        "CACHE-AUTO-3 an open file's cached data is replaced after the timeout " +
          "(AUTO_INVAL_DATA): same size, new mtime",
        () => assertExpires(w, 3, timeoutMs, /^n=8 data=SSSSSSSS$/),
      );
      await t.step(
        "CACHE-AUTO-3 an open file's cached data is replaced after the timeout: new size",
        () => assertExpires(w, 4, timeoutMs, /^n=12 data=GGGGGGGGGGGG$/),
      );

      await t.step("CACHE-AUTO-4 a reopen sees the host's new data at once", () => {
        const f = flipOf(w, 5);
        assert.ok(!f.staleAfterSignal, `stale after the host's change: ${describe(w, 5)}`);
        assert.equal(f.first?.value, "n=8 data=RRRRRRRR", describe(w, 5));
        assert.ok((f.first?.tMs ?? Infinity) < timeoutMs - EARLY_MS, describe(w, 5));
      });

      await t.step(
        "CACHE-AUTO-4 a reopen within the timeout reads the new bytes up to the cached size; " +
          "the new size after the timeout",
        () => {
          const obs = w.probes[6] ?? [];
          assert.deepEqual(
            obs.map((o) => o.value),
            ["n=8 data=qqqqqqqq", "n=8 data=QQQQQQQQ", "n=12 data=QQQQQQQQQQQQ"],
            describe(w, 6),
          );
          const [o0, o1, o2] = obs;
          assert.ok(o0 !== undefined && o1 !== undefined && o2 !== undefined);
          assert.ok(o1.tMs < timeoutMs - EARLY_MS, `new bytes at once: ${describe(w, 6)}`);
          const after = o2.tMs - o0.tMs;
          assert.ok(
            after >= timeoutMs - EARLY_MS && after <= timeoutMs + LATE_MS,
            `the new size ${after.toFixed(1)} ms after the first look: ${describe(w, 6)}`,
          );
        },
      );

      await t.step(
        "CACHE-AUTO-3 reads of an open file within the timeout are served by the guest: " +
          "old data, no READ reaches the daemon",
        async () => {
          const log = s.requestLog();
          // 700 ms of reads every 10 ms on the descriptor opened in round 0: all within the
          // timeout of the LOOKUP that round made (the file was never looked up before).
          const h = await s.watch([`fdread:${MNT}/held`], () => {
            log.mark();
            Deno.writeFileSync(s.host("held"), enc.encode(fill("H", 4096)));
          }, "-i 10 -d 700");
          assert.ok(h.signal !== undefined, h.raw);
          assert.equal(h.probes[0]?.length, 1, `the view never changed:\n${h.raw}`);
          assert.match(h.probes[0]?.[0]?.value ?? "", /^n=64 data=h{64}$/);
          assert.ok(h.rounds >= 30, `${h.rounds} rounds`);
          assert.ok(h.endMs < timeoutMs - 100, `all reads within the timeout (${h.endMs} ms)`);
          const reads = log.since().filter((r) => r.opcode === FUSE_READ).length;
          assert.equal(reads, 0, `READ requests while the file was open and its attributes valid`);
        },
      );
    },
  });

  Deno.test({
    name: `CACHE-AUTO-2 [guest] a configured timeout (${CONFIGURED} s) is what the guest ` +
      `keeps metadata and lookups for [${kind}]`,
    sanitizeResources: false,
    sanitizeOps: false,
    ignore: departure(kind, "CACHE-AUTO-2 timeout option")?.skip === true,
    async fn(t) {
      const m: ModeOptions = { timeout: CONFIGURED };
      await using s = await GuestSession.start(kind, m, setup);
      const timeoutMs = CONFIGURED * 1000;
      const w = await expiryWatch(s, timeoutMs);
      for (const [name, check] of expiryChecks(w, timeoutMs, `CACHE-AUTO-2 ${modeName(m)}`)) {
        await t.step(name, check);
      }
      await t.step(
        `CACHE-AUTO-2 ${modeName(m)} an open file's data until the timeout`,
        () => assertExpires(w, 3, timeoutMs, /^n=8 data=SSSSSSSS$/),
      );
    },
  });
}
