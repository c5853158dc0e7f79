/**
 * Spec: CACHE-ALWAYS — everything cached, nothing expires. The design's paragraph, quoted:
 *
 * > - cache=always: metadata, data and pathname lookup are cached in guest and never expire.
 *
 * - CACHE-ALWAYS-1: metadata is cached and never expires: after the host's chmod and truncate
 *   the guest keeps the old mode and size.
 * - CACHE-ALWAYS-2: data is cached: after the host rewrites a file, the guest reads the old bytes,
 *   even through new opens (FOPEN_KEEP_CACHE keeps the pages across opens).
 * - CACHE-ALWAYS-3: pathname lookups are cached and never expire: names the host unlinked or
 *   renamed away still resolve in the guest.
 *
 * "Never" within a bounded test: the guest caches everything once, the host changes it all, and
 * then the guest looks every 25 ms for 5 s, five times cache=auto's default timeout, and must see
 * its first view every time, while the daemon's log shows that no LOOKUP, GETATTR or READ
 * reached it in those 5 s (OPEN/FLUSH/RELEASE still do: Linux sends every open). The wire test
 * shows the reason: every reply that makes an entry carries 86400 s of entry and attribute
 * validity (so "never" means a day), OPEN and CREATE set FOPEN_KEEP_CACHE, OPENDIR sets
 * FOPEN_CACHE_DIR.
 *
 * What a lookup cache cannot hold: a name the guest found absent. None of the three daemons
 * caches negative lookups (they answer ENOENT, which Linux does not keep; it would keep an entry
 * with nodeid 0 and a timeout), so a file the host creates is seen at the next lookup in every
 * mode. The last step shows it, so a change there shows up as a failing test.
 *
 * `--cache metadata` (Rust virtiofsd's fourth mode, ours too) is checked at the wire here: the
 * metadata and lookups of always (86400 s) with the data of none (FOPEN_DIRECT_IO on files;
 * FOPEN_CACHE_DIR and FOPEN_KEEP_CACHE on directories).
 *
 * Runs against every daemon in `DAEMONS` with the same options; departures are in
 * `spec/expectations/cache.json`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  FOPEN_CACHE_DIR,
  FOPEN_DIRECT_IO,
  FOPEN_KEEP_CACHE,
  FUSE_AUTO_INVAL_DATA,
  FUSE_DO_READDIRPLUS,
  FUSE_GETATTR,
  FUSE_LOOKUP,
  FUSE_READ,
  FUSE_READDIRPLUS,
  opcodeName,
} from "../src/wire/fuse.ts";
import { type DaemonKind, daemonsUnderTest } from "./_driver/daemon.ts";
import {
  departure,
  GuestSession,
  MNT,
  type ModeOptions,
  surveyReplies,
  surveySetup,
  WireSession,
} from "./_driver/cache_harness.ts";
import { parseWatch, VFSPROBE } from "./_driver/guest_tools.ts";

/** A day: what "never expire" is on the wire. */
const DAY = 86400;
/** How long the guest keeps looking, in ms: five times cache=auto's default timeout. */
const WATCH_MS = 5000;

const enc = new TextEncoder();

// ---- wire -------------------------------------------------------------------------------------

async function wireCheck(
  kind: DaemonKind,
  m: ModeOptions,
  fileFlags: number,
  dirFlags: number,
): Promise<void> {
  await using w = await WireSession.open(kind, m, { setup: surveySetup });
  const s = surveyReplies(w);
  for (const [op, t] of Object.entries(s.entries)) {
    assert.deepEqual(t, { entry: DAY, attr: DAY }, `${op}: entry and attribute validity`);
  }
  assert.ok("READDIRPLUS inner" in s.entries, "READDIRPLUS was granted and answered");
  assert.equal(s.getattr, DAY, "GETATTR attribute validity");
  assert.deepEqual(s.openFlags, {
    "OPEN O_RDONLY": fileFlags,
    "OPEN O_RDWR": fileFlags,
    CREATE: fileFlags,
    OPENDIR: dirFlags,
  });
  assert.notEqual(s.initFlags & FUSE_DO_READDIRPLUS, 0n, "INIT grants DO_READDIRPLUS");
  assert.notEqual(s.initFlags & FUSE_AUTO_INVAL_DATA, 0n, "INIT grants AUTO_INVAL_DATA");
}

for (const kind of daemonsUnderTest()) {
  Deno.test(
    `CACHE-ALWAYS-1, CACHE-ALWAYS-2, CACHE-ALWAYS-3 [wire] a day of validity, ` +
      `FOPEN_KEEP_CACHE [${kind}]`,
    async (t) => {
      const dirDep = departure(kind, "CACHE-ALWAYS-2 OPENDIR flags");
      const dirFlags = typeof dirDep?.value === "number" ? dirDep.value : FOPEN_CACHE_DIR;
      await t.step(
        "CACHE-ALWAYS-1 CACHE-ALWAYS-3 every entry and attribute validity is 86400 s; " +
          "CACHE-ALWAYS-2 files FOPEN_KEEP_CACHE, directories FOPEN_CACHE_DIR" +
          (dirDep !== undefined ? ` (OPENDIR ${dirFlags}: ${dirDep.reason})` : ""),
        () => wireCheck(kind, { cache: "always" }, FOPEN_KEEP_CACHE, dirFlags),
      );
      const metaDep = departure(kind, "CACHE-ALWAYS metadata mode");
      await t.step({
        name: "CACHE-ALWAYS-1 --cache metadata: metadata and lookups as always (86400 s), data " +
          "as none (files FOPEN_DIRECT_IO; directories FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE)" +
          (metaDep?.skip ? ` (skipped: ${metaDep.reason})` : ""),
        ignore: metaDep?.skip === true,
        fn: () =>
          wireCheck(
            kind,
            { cache: "metadata" },
            FOPEN_DIRECT_IO,
            FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE,
          ),
      });
    },
  );
}

// ---- guest ------------------------------------------------------------------------------------

const FILES: Record<string, string> = {
  "a-meta": "mmmm",
  "a-size": "ssssssss",
  "a-data": "dddddddd",
  "a-gone": "g",
  "a-old": "o",
};

function setup(dir: string): void {
  for (const [name, text] of Object.entries(FILES)) {
    Deno.writeFileSync(`${dir}/${name}`, enc.encode(text));
  }
}

/** The cached probes: each must keep its first view. */
const CASES: { id: string; what: string; probe: string }[] = [
  { id: "CACHE-ALWAYS-1", what: "metadata after a host chmod", probe: "stat:a-meta" },
  { id: "CACHE-ALWAYS-1", what: "metadata after a host truncate", probe: "stat:a-size" },
  {
    id: "CACHE-ALWAYS-2",
    what: "data after a host rewrite, through new opens",
    probe: "read:a-data",
  },
  { id: "CACHE-ALWAYS-3", what: "a name the host unlinked", probe: "stat:a-gone" },
  { id: "CACHE-ALWAYS-3", what: "a name the host renamed away", probe: "stat:a-old" },
];

function change(s: GuestSession): void {
  Deno.chmodSync(s.host("a-meta"), 0o600);
  Deno.truncateSync(s.host("a-size"), 2);
  const f = Deno.openSync(s.host("a-data"), { write: true });
  f.writeSync(enc.encode("DDDDDDDD"));
  f.close();
  Deno.removeSync(s.host("a-gone"));
  Deno.renameSync(s.host("a-old"), s.host("a-moved"));
  Deno.writeFileSync(s.host("a-new"), enc.encode("new"));
}

for (const kind of daemonsUnderTest()) {
  Deno.test({
    name: `CACHE-ALWAYS-1, CACHE-ALWAYS-2, CACHE-ALWAYS-3 [guest] the guest keeps its view ` +
      `for ${WATCH_MS / 1000} s after the host changed everything, asking the daemon nothing ` +
      `[${kind}]`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      await using s = await GuestSession.start(kind, { cache: "always" }, setup);
      const probes = CASES.map((c) => c.probe.replace(":", `:${MNT}/`)).join(" ");
      // The first view, and two names found absent (looked up again below, not in the count).
      const absent = `stat:${MNT}/a-new stat:${MNT}/a-moved`;
      const cached = parseWatch(
        (await s.guest.sh(`${VFSPROBE} watch -d 0 ${probes} ${absent}`)).out,
      );
      assert.equal(cached.rounds, 1, cached.raw);
      const n = CASES.length;
      assert.deepEqual(
        [cached.probes[n]?.[0]?.value, cached.probes[n + 1]?.[0]?.value],
        ["ENOENT", "ENOENT"],
        cached.raw,
      );
      change(s);
      const log = s.requestLog();
      const out = (await s.guest.sh(`${VFSPROBE} watch -i 25 -d ${WATCH_MS} ${probes}`)).out;
      const w = parseWatch(out);
      const counts = log.counts();
      assert.ok(w.endMs >= WATCH_MS, `the guest looked for ${w.endMs} ms`);

      for (const [i, c] of CASES.entries()) {
        await t.step(`${c.id} ${c.what}: the first view for ${WATCH_MS / 1000} s`, () => {
          const before = cached.probes[i]?.[0]?.value;
          assert.deepEqual(
            w.probes[i]?.map((o) => o.value),
            [before],
            `probe ${c.probe}: the cached view was ${before}; ${w.rounds} rounds saw:\n${w.raw}`,
          );
        });
      }

      await t.step(
        `CACHE-ALWAYS-1 CACHE-ALWAYS-2 CACHE-ALWAYS-3 no LOOKUP, GETATTR or READ reached the ` +
          `daemon in ${WATCH_MS / 1000} s of looking (${w.rounds} rounds)`,
        () => {
          for (const op of [FUSE_LOOKUP, FUSE_GETATTR, FUSE_READ, FUSE_READDIRPLUS]) {
            assert.equal(counts.get(op) ?? 0, 0, `${opcodeName(op)} requests`);
          }
        },
      );

      await t.step(
        "CACHE-ALWAYS-3 (scope) a name the guest found absent is looked up again: the host's " +
          "new file and the renamed file's new name are seen at once (no negative caching)",
        async () => {
          const r = parseWatch(
            (await s.guest.sh(`${VFSPROBE} watch -d 0 ${absent}`)).out,
          );
          assert.match(r.probes[0]?.[0]?.value ?? "", / size=3 /, r.raw);
          assert.match(r.probes[1]?.[0]?.value ?? "", / size=1 /, r.raw);
        },
      );
    },
  });
}
