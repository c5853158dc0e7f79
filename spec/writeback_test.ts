/**
 * Spec: WB — the writeback switch. The design's paragraph, quoted:
 *
 * > - writeback/no_writeback: These options control the writeback strategy. If writeback is
 * > disabled, then normal writes will immediately be synchronized with the host fs. If writeback
 * > is enabled, then writes may be cached in the guest until the file is closed or an fsync(2)
 * > performed. This option has no effect on mmap-ed writes or writes going through the DAX
 * > mechanism.
 *
 * - WB-OFF-1: writeback disabled: the host has each write(2) when it returns.
 * - WB-ON-1: writeback enabled: writes may be cached in the guest until close or fsync(2). The
 *   "may" is pinned down: when a 4 KiB write(2) returns, the host file is unchanged, and stays so
 *   (measured: the host polls it every 5 ms until it changes) for at least 4 s. The guest keeps
 *   dirty pages until fsync, close, or the flusher writes them back; for a FUSE mount that is the
 *   flusher's first periodic run after the mount became dirty (vm.dirty_writeback_centisecs, 5 s),
 *   not the dirty expiry (vm.dirty_expire_centisecs, 30 s): Linux gives a FUSE mount a strict,
 *   tiny share of the dirty limit, so the periodic run finds it over its background threshold.
 *   Measured here: 5.0-5.3 s after the first dirty page, with every daemon, for write(2) and mmap
 *   stores alike, writeback on or off.
 * - WB-ON-2: after fsync(2), and after close, the host has all of it.
 * - WB-DAX-1: writeback has no effect on mmap-ed writes: a MAP_SHARED store reaches the host at
 *   msync(2), and at munmap (Linux's FUSE writes a mapping's dirty pages back when it goes), not
 *   before (measured as for WB-ON-1: at least 4 s), the same with writeback on and off; also on a
 *   descriptor opened with O_APPEND, where the write-back must land at the page's offset, not at
 *   the end.
 *
 * Checks that snapshot the host right after a guest call rely on no flush falling in between:
 * each session first watches its only dirty pages until the periodic flush (leaving the mount
 * clean, no flush pending), then runs those sequences, which must end within 4 s of their first
 * dirty page (asserted), before the next periodic run can come.
 *   The DAX half ("writes going through the DAX mechanism") is in `dax_test.ts` (at the wire).
 *
 * What writeback needs from the daemon (WB-ON-1, wire and guest), as both virtiofsd do:
 * - INIT grants FUSE_WRITEBACK_CACHE only when the daemon is started with writeback (our
 *   `--writeback`, C's `-o writeback`) and the kernel offers it.
 * - A file the guest opens write-only is opened read-write on the host: the guest's page cache
 *   reads to fill a partly written page (READ on the write-only handle).
 * - O_APPEND is left to the guest, which positions every cached write: a write-back at offset 0
 *   of a file opened O_APPEND lands at 0. The same holds with writeback off for a write the kernel
 *   positioned (FUSE_WRITE_CACHE: an mmap write-back), as Rust virtiofsd does since 2022; a plain
 *   WRITE to an O_APPEND file is still appended.
 * - The kill-suid rule: a WRITE carrying FUSE_WRITE_KILL_SUIDGID (the guest kernel sets it when
 *   the writer lacks CAP_FSETID, e.g. for direct writes) clears the file's setuid/setgid bits on
 *   the host, as a local write by that user would; a WRITE without it (a root writer) keeps them.
 *
 * Runs against every daemon in `DAEMONS` with the same options (cache=auto, writeback off and
 * on); departures are in `spec/expectations/cache.json`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  FUSE_WRITE_CACHE,
  FUSE_WRITE_KILL_SUIDGID,
  FUSE_WRITEBACK_CACHE,
} from "../src/wire/fuse.ts";
import { Errno } from "../src/ffi/errno.ts";
import { type DaemonKind, daemonsUnderTest } from "./_driver/daemon.ts";
import {
  departure,
  GuestSession,
  MNT,
  modeName,
  type ModeOptions,
  suidSetup,
  suidWrite,
  WireSession,
} from "./_driver/cache_harness.ts";
import {
  FuseError,
  LINUX_6_1_INIT_FLAGS,
  O_APPEND,
  O_RDWR,
  O_WRONLY,
} from "../src/driver/fuse_client.ts";
import type { ActionResult } from "./_driver/guest_tools.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function text(path: string): string {
  return dec.decode(Deno.readFileSync(path));
}

/**
 * Runs a step. A reference daemon's recorded departure (key `key`) either skips it or gives
 * `fn` the outcome the daemon is known to have instead (its `value`), named in the step.
 */
async function step(
  t: Deno.TestContext,
  kind: DaemonKind,
  key: string,
  name: string,
  fn: (known?: unknown) => void | Promise<void>,
): Promise<void> {
  const dep = departure(kind, key);
  const note = dep === undefined
    ? ""
    : dep.skip
    ? ` (skipped: ${dep.reason})`
    : " (a known departure: spec/expectations/cache.json)";
  await t.step({ name: name + note, ignore: dep?.skip === true, fn: () => fn(dep?.value) });
}

// ---- wire -------------------------------------------------------------------------------------

function wireSetup(dir: string): void {
  Deno.writeTextFileSync(join(dir, "abc"), "abc");
  Deno.writeTextFileSync(join(dir, "suid"), "suid");
  Deno.chmodSync(join(dir, "suid"), 0o6755);
  Deno.writeTextFileSync(join(dir, "suid-root"), "suid");
  Deno.chmodSync(join(dir, "suid-root"), 0o6755);
}

/** WRITE "XY" at offset 0 through a handle opened `flags`; returns the host file. */
function writeAt0(w: WireSession, name: string, flags: number, writeFlags: number): string {
  const e = w.ops.lookup(1n, name);
  const h = w.ops.open(e.nodeid, flags);
  w.ops.write(e.nodeid, h.fh, 0, enc.encode("XY"), { writeFlags, flags });
  w.ops.release(e.nodeid, h.fh, flags);
  return text(join(w.shared, name));
}

for (const kind of daemonsUnderTest()) {
  Deno.test(`WB-ON-1 [wire] what the writeback cache needs from the daemon [${kind}]`, async (t) => {
    await t.step(
      "WB-ON-1 INIT grants FUSE_WRITEBACK_CACHE with writeback on and a kernel offering it; " +
        "never otherwise",
      async () => {
        {
          await using w = await WireSession.open(kind, { writeback: true });
          assert.notEqual(w.init.flags & FUSE_WRITEBACK_CACHE, 0n, "writeback on: granted");
        }
        {
          await using w = await WireSession.open(kind, {});
          assert.equal(w.init.flags & FUSE_WRITEBACK_CACHE, 0n, "writeback off (default)");
        }
        await using w = await WireSession.open(kind, { writeback: true }, {
          initFlags: LINUX_6_1_INIT_FLAGS & ~FUSE_WRITEBACK_CACHE,
        });
        assert.equal(w.init.flags & FUSE_WRITEBACK_CACHE, 0n, "not offered by the kernel");
      },
    );

    await t.step(
      "WB-ON-1 a file opened write-only can be read through its handle with writeback on " +
        "(the guest fills partial pages), not with writeback off",
      async () => {
        for (const writeback of [true, false]) {
          await using w = await WireSession.open(kind, { writeback }, { setup: wireSetup });
          const e = w.ops.lookup(1n, "abc");
          const h = w.ops.open(e.nodeid, O_WRONLY);
          if (writeback) {
            assert.equal(dec.decode(w.ops.read(e.nodeid, h.fh, 0, 4096)), "abc");
          } else {
            assert.throws(
              () => w.ops.read(e.nodeid, h.fh, 0, 4096),
              (err: unknown) => err instanceof FuseError && err.errno === Errno.EBADF,
              "READ through a write-only handle without writeback: EBADF",
            );
          }
          w.ops.release(e.nodeid, h.fh);
        }
      },
    );

    await t.step(
      "WB-ON-1 writeback on: O_APPEND is the guest's; a cached WRITE at offset 0 lands at 0",
      async () => {
        await using w = await WireSession.open(kind, { writeback: true }, { setup: wireSetup });
        assert.equal(writeAt0(w, "abc", O_WRONLY | O_APPEND, FUSE_WRITE_CACHE), "XYc");
      },
    );

    await step(
      t,
      kind,
      "WB-ON-1 kill-suid",
      "WB-ON-1 a WRITE with FUSE_WRITE_KILL_SUIDGID clears setuid and setgid on the host; " +
        "one without keeps them",
      async (known) => {
        for (const writeback of [false, true]) {
          await using w = await WireSession.open(kind, { writeback }, { setup: wireSetup });
          writeAt0(w, "suid", O_RDWR, FUSE_WRITE_KILL_SUIDGID);
          const killed = Deno.statSync(join(w.shared, "suid")).mode ?? 0;
          assert.equal(
            killed & 0o7777,
            typeof known === "number" ? known : 0o755,
            `writeback ${writeback}: setuid and setgid cleared`,
          );
          writeAt0(w, "suid-root", O_RDWR, 0);
          const kept = Deno.statSync(join(w.shared, "suid-root")).mode ?? 0;
          assert.equal(kept & 0o7777, 0o6755, `writeback ${writeback}: bits kept`);
        }
      },
    );
  });

  Deno.test(
    `WB-DAX-1 [wire] a kernel-positioned WRITE (FUSE_WRITE_CACHE, an mmap write-back) lands ` +
      `at its offset on an O_APPEND handle, writeback on and off [${kind}]`,
    async (t) => {
      for (const writeback of [false, true]) {
        await step(
          t,
          kind,
          `WB-DAX-1 [wire] O_APPEND write-back writeback=${writeback}`,
          `WB-DAX-1 writeback ${writeback ? "on" : "off"}: FUSE_WRITE_CACHE at 0 lands at 0`,
          async (known) => {
            await using w = await WireSession.open(kind, { writeback }, { setup: wireSetup });
            assert.equal(
              writeAt0(w, "abc", O_RDWR | O_APPEND, FUSE_WRITE_CACHE),
              typeof known === "string" ? known : "XYc",
            );
          },
        );
      }
      await t.step(
        "WB-OFF-1 writeback off: a plain WRITE to an O_APPEND handle is appended",
        async () => {
          await using w = await WireSession.open(kind, {}, { setup: wireSetup });
          assert.equal(writeAt0(w, "abc", O_WRONLY | O_APPEND, 0), "abcXY");
        },
      );
    },
  );
}

// ---- guest ------------------------------------------------------------------------------------

/** How long the host waits for data the guest has not synced to show up, in ms. */
const FLUSH_WAIT_MS = 10_000;
/**
 * The least time data the guest has not synced must stay in the guest, in ms. Linux writes a
 * FUSE mount's dirty pages back at the flusher's periodic run, 5 s (vm.dirty_writeback_centisecs)
 * after the first page was dirtied on a clean mount; measured here at 5.0-5.3 s with every daemon.
 */
const HELD_MS = 4000;
/**
 * The sequences that snapshot the host right after a guest call must end within this long of
 * their first dirty page, so that the flusher's periodic run (5 s after it) cannot fall inside
 * one of them and pass a check by luck; they start on a clean mount, after a measured flush.
 */
const QUICK_MS = 4000;

const Z8K = "z".repeat(8192);

function setup(dir: string): void {
  Deno.writeFileSync(join(dir, "mm-held"), enc.encode(Z8K));
  Deno.writeFileSync(join(dir, "mm"), enc.encode(Z8K));
  Deno.writeFileSync(join(dir, "ma"), enc.encode("z".repeat(4096)));
  Deno.writeFileSync(join(dir, "wp"), enc.encode("x".repeat(8192)));
  Deno.writeFileSync(join(dir, "wa"), enc.encode("abc"));
  suidSetup(dir);
}

function allOk(r: ActionResult[]): void {
  const bad = r.filter((a) => !a.result.startsWith("ok"));
  assert.deepEqual(bad, [], "every action succeeded");
}

/** What the host saw of the share's files at the guest's marks. */
class HostView {
  /** Per file, its content at each `take`. */
  readonly seen = new Map<string, string[]>();
  /** Per file watched by `hold`: its content then, and when it changed (ms; undefined: never). */
  readonly held = new Map<string, { value: string; changedMs?: number }>();
  readonly #s: GuestSession;

  constructor(s: GuestSession) {
    this.#s = s;
  }

  /** An action snapshotting `names`. */
  take(...names: string[]): { host: () => void } {
    return {
      host: () => {
        for (const n of names) {
          const list = this.seen.get(n) ?? [];
          list.push(text(this.#s.host(n)));
          this.seen.set(n, list);
        }
      },
    };
  }

  /** An action watching `names` every 5 ms until each changed, or `maxMs` passed. */
  hold(names: string[], maxMs: number): { host: () => Promise<void> } {
    return {
      host: async () => {
        const t0 = performance.now();
        const first = names.map((n) => text(this.#s.host(n)));
        const changed: (number | undefined)[] = names.map(() => undefined);
        while (performance.now() - t0 < maxMs && changed.some((c) => c === undefined)) {
          await new Promise((r) => setTimeout(r, 5));
          const t = performance.now() - t0;
          names.forEach((n, i) => {
            if (changed[i] === undefined && text(this.#s.host(n)) !== first[i]) changed[i] = t;
          });
        }
        names.forEach((n, i) => {
          const c = changed[i];
          this.held.set(n, { value: first[i] ?? "", ...(c !== undefined ? { changedMs: c } : {}) });
        });
      },
    };
  }

  /** Asserts snapshot `i` of `name` is `want`. */
  check(name: string, i: number, want: string, label: string): void {
    const got = this.seen.get(name)?.[i];
    assert.ok(
      got === want,
      `${label}: the host file ${name} is ${got?.length} bytes ` +
        `(${JSON.stringify(got?.slice(0, 8))}...), expected ${want.length} ` +
        `(${JSON.stringify(want.slice(0, 8))}...)`,
    );
  }

  /** Asserts `name` was `want` when the guest's call returned and stayed so for `HELD_MS`. */
  checkHeld(name: string, want: string, label: string): void {
    const h = this.held.get(name);
    assert.ok(h !== undefined, `${name} was not watched`);
    assert.ok(h.value === want, `${label}: the host had it at once (${h.value.length} bytes)`);
    assert.ok(
      h.changedMs === undefined || h.changedMs >= HELD_MS,
      `${label}: the host file changed ${h.changedMs?.toFixed(0)} ms after the guest's call ` +
        `returned, before ${HELD_MS} ms`,
    );
    console.log(
      `  ${label}: on the host after ${h.changedMs?.toFixed(0) ?? `more than ${FLUSH_WAIT_MS}`} ms`,
    );
  }
}

/** Asserts the actions from the first `store`/`write` to the last ended within `QUICK_MS`. */
function assertQuick(r: ActionResult[]): void {
  const first = r.find((a) => a.name === "write" || a.name === "store");
  const last = r.at(-1);
  assert.ok(first !== undefined && last !== undefined);
  assert.ok(
    last.tMs - first.tMs < QUICK_MS,
    `the sequence took ${(last.tMs - first.tMs).toFixed(0)} ms from its first dirty page: ` +
      "the guest's periodic flush may have fallen inside it",
  );
}

/** WB-DAX-1: msync and munmap, then the O_APPEND descriptor (actions, then their checks). */
function mmapActions(v: HostView): (string | { host: () => void })[] {
  return [
    "slot:2",
    `open:${MNT}/mm:+`,
    "mmap:8192:shared",
    "store:0:4:M",
    v.take("mm"),
    "msync",
    v.take("mm"),
    "store:4096:4:N",
    v.take("mm"),
    "munmap",
    v.take("mm"),
    "close",
    "slot:3",
    `open:${MNT}/ma:+a`,
    "mmap:4096:shared",
    "store:0:4:Q",
    "msync",
    v.take("ma"),
    "munmap",
    "close",
  ];
}

async function mmapChecks(
  t: Deno.TestContext,
  s: GuestSession,
  m: ModeOptions,
  v: HostView,
): Promise<void> {
  await t.step(
    `WB-DAX-1 ${modeName(m)} a MAP_SHARED store stays in the guest (at least ${HELD_MS} ms)`,
    () => v.checkHeld("mm-held", Z8K, "an mmap store"),
  );
  await t.step(
    `WB-DAX-1 ${modeName(m)} a MAP_SHARED store reaches the host at msync and at munmap`,
    () => {
      const m1 = "MMMM" + Z8K.slice(4);
      const m2 = m1.slice(0, 4096) + "NNNN" + Z8K.slice(4100);
      v.check("mm", 0, Z8K, "right after the store");
      v.check("mm", 1, m1, "after msync");
      v.check("mm", 2, m1, "right after the second store");
      v.check("mm", 3, m2, "after munmap");
    },
  );
  await step(
    t,
    s.kind,
    `WB-DAX-1 [guest] O_APPEND write-back writeback=${m.writeback === true}`,
    `WB-DAX-1 ${modeName(m)} a MAP_SHARED store on an O_APPEND descriptor lands at its ` +
      `offset at msync`,
    (known) => {
      const page = "QQQQ" + "z".repeat(4092);
      // A known departure: the page is appended after the file's old contents.
      const want = known === "appended" ? "z".repeat(4096) + page : page;
      v.check("ma", 0, want, `after msync (${known === "appended" ? "appended" : "in place"})`);
    },
  );
}

for (const kind of daemonsUnderTest()) {
  Deno.test({
    name: `WB-OFF-1, WB-DAX-1 [guest] writeback off: each write(2) on the host when it ` +
      `returns; mmap stores at msync/munmap [${kind}]`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      const m: ModeOptions = {};
      await using s = await GuestSession.start(kind, m, setup);
      const v = new HostView(s);
      // First: the only dirty page on a clean mount, watched until the guest's flush.
      const held = await s.act([
        `open:${MNT}/wo:wc`,
        "write:4096:a",
        v.take("wo"),
        "write:4096:b",
        v.take("wo"),
        "pwrite:100:10:c",
        v.take("wo"),
        "close",
        "slot:1",
        `open:${MNT}/mm-held:+`,
        "mmap:8192:shared",
        "store:0:4:M",
        v.hold(["mm-held"], FLUSH_WAIT_MS),
        "munmap",
        "close",
      ]);
      const quick = await s.act(mmapActions(v));
      await t.step("WB-OFF-1 the host has each write(2) when it returns", () => {
        allOk(held);
        const a = "a".repeat(4096);
        const ab = a + "b".repeat(4096);
        v.check("wo", 0, a, "after write 1");
        v.check("wo", 1, ab, "after write 2");
        v.check("wo", 2, ab.slice(0, 100) + "c".repeat(10) + ab.slice(110), "after write 3");
      });
      allOk(quick);
      assertQuick(quick);
      await mmapChecks(t, s, m, v);
      await step(
        t,
        kind,
        "WB-OFF-1 [guest] kill-suid",
        "WB-OFF-1 a user's write to a setuid file it may write clears setuid and setgid on the " +
          "host (its own file and root's)",
        (known) => suidWrite(s, known),
      );
    },
  });

  Deno.test({
    name: `WB-ON-1, WB-ON-2, WB-DAX-1 [guest] writeback on: writes stay in the guest until ` +
      `fsync or close, then all reach the host; mmap as without [${kind}]`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      const m: ModeOptions = { writeback: true };
      await using s = await GuestSession.start(kind, m, setup);
      const v = new HostView(s);
      const a = "a".repeat(4096);
      // First: a write and an mmap store, the only dirty pages on a clean mount, watched until
      // the guest's flush.
      const held = await s.act([
        `open:${MNT}/wn:wc`,
        "write:4096:a",
        "slot:1",
        `open:${MNT}/mm-held:+`,
        "mmap:8192:shared",
        "store:0:4:M",
        v.hold(["wn", "mm-held"], FLUSH_WAIT_MS),
        "munmap",
        "close",
        "slot:0",
        "close",
      ]);
      const quick = await s.act([
        `open:${MNT}/wf:wc`,
        "write:4096:a",
        v.take("wf"),
        "fsync",
        v.take("wf"),
        "write:4096:b",
        v.take("wf"),
        "close",
        v.take("wf"),
        ...mmapActions(v),
      ]);
      allOk(held);
      allOk(quick);
      assertQuick(quick);
      await t.step(
        `WB-ON-1 a 4 KiB write(2) stays in the guest: the host file is unchanged when it ` +
          `returns, and for at least ${HELD_MS} ms`,
        () => {
          v.checkHeld("wn", "", "a write(2)");
          v.check("wf", 0, "", "right after write 1");
          v.check("wf", 2, a, "right after write 2 (write 1 was synced)");
        },
      );
      await t.step("WB-ON-2 after fsync(2) the host has all of it", () => {
        v.check("wf", 1, a, "after fsync");
      });
      await t.step("WB-ON-2 after close the host has all of it", () => {
        v.check("wf", 3, a + "b".repeat(4096), "after close");
      });
      await t.step(
        "WB-ON-2 a partial-page write to a file opened write-only (the guest reads the page " +
          "through the write-only handle) reaches the host whole at close",
        async () => {
          allOk(await s.act([`open:${MNT}/wp:w`, "pwrite:100:10:y", "close"]));
          const x = "x".repeat(8192);
          assert.ok(text(s.host("wp")) === x.slice(0, 100) + "y".repeat(10) + x.slice(110));
        },
      );
      await t.step(
        "WB-ON-2 an O_APPEND write reaches the host once, at the end (not appended again)",
        async () => {
          allOk(await s.act([`open:${MNT}/wa:wa`, "write:3:d", "close"]));
          assert.equal(text(s.host("wa")), "abcddd");
        },
      );
      await mmapChecks(t, s, m, v);
      await step(
        t,
        kind,
        "WB-ON-2 [guest] kill-suid",
        "WB-ON-2 a user's write to a setuid file it may write clears setuid and setgid on the " +
          "host at close (its own file and root's)",
        (known) => suidWrite(s, known),
      );
    },
  });
}
