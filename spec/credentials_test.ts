/**
 * Spec: CRED — whose files the guest's requests make, and with which rights.
 *
 * - CRED-OWNER: a daemon running as root creates every node (CREATE, MKDIR, MKNOD, SYMLINK,
 *   TMPFILE) as the request header's uid and gid, so the host file belongs to the guest's user
 *   and the host checks that user's permission on the parent directory.
 * - CRED-UMASK: the guest's umask (the `umask` field of CREATE, MKDIR, MKNOD and TMPFILE) is
 *   applied to the mode; the daemon's own umask never is.
 * - CRED-CHOWN: SETATTR of the owner, the group or the mode is applied as the guest kernel asks,
 *   whoever the caller: the permission checks are the guest kernel's (default_permissions), which
 *   itself sends unprivileged-caller SETATTRs to clear setuid/setgid on write and truncate (see
 *   spec/guest_local_fs_test.ts: the share then behaves as the guest's tmpfs).
 * - CRED-UNPRIV: a daemon that is not root (ours under `setpriv --reuid=65534 --regid=65534
 *   --clear-groups`) does everything as its own user: whatever uid a request carries, new files
 *   belong to 65534, and the host refuses what 65534 may not do.
 *
 * CRED-OWNER, CRED-UMASK and CRED-CHOWN run once per daemon in `DAEMONS` (comma list of ours,
 * c, rust; default ours), as root; a reference daemon's departure is in `EXPECTATIONS` with its
 * reason, ours has none. CRED-UNPRIV runs ours only (C virtiofsd needs root for its sandbox).
 *
 * @module
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { Errno, errnoName } from "../src/ffi/errno.ts";
import { FUSE_DONT_MASK, FUSE_ROOT_ID } from "../src/wire/fuse.ts";
import {
  daemonArgv,
  type DaemonHandle,
  type DaemonKind,
  daemonsUnderTest,
  startDaemon,
} from "./_driver/daemon.ts";
import { VhostUserFrontend } from "../src/driver/frontend.ts";
import {
  type EntryOut,
  FuseClient,
  FuseError,
  type FuseRequestOptions,
  O_EXCL,
  O_RDONLY,
  O_RDWR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
} from "../src/driver/fuse_client.ts";

/** The guest user the requests come from. */
const GUEST = { uid: 1000, gid: 1000 } as const;
/** The unprivileged daemon's user. */
const NOBODY = 65534;

// ---- expectations -----------------------------------------------------------------------------

/** A known departure of a reference daemon, with its reason. */
interface Known {
  /** It answers this errno instead. */
  errno?: number;
  /** It performs the request where the claim says it must be refused. */
  accepts?: boolean;
  /** The check is not made. */
  skip?: boolean;
  /** Why, with what was observed. */
  reason: string;
}

/** The key of a departure: the daemon ignores the request's umask field. */
const UMASK_IGNORED = "the umask field is ignored";

const RUST_PARENT = "Rust virtiofsd 1.13 (--sandbox none, as root) creates the node as the " +
  "caller but keeps its capabilities, so the host never checks the caller's write permission " +
  "on the parent (observed: uid 1000 created in root's 0755 directory)";

/** Per-daemon departures by case key; `ours` stays empty (a departure of ours fails). */
const EXPECTATIONS: Readonly<Record<DaemonKind, Readonly<Record<string, Known>>>> = {
  ours: {},
  c: {
    TMPFILE: { errno: Errno.ENOSYS, reason: "C virtiofsd speaks FUSE 7.36; TMPFILE is 7.37" },
    [UMASK_IGNORED]: {
      reason: "C virtiofsd does not grant FUSE_DONT_MASK (the guest kernel masks the mode " +
        "before sending it) and ignores the umask field unless posix_acl is on (observed: " +
        "mode 666 with umask 022 made a 666 file)",
    },
  },
  rust: {
    TMPFILE: { errno: Errno.ENOSYS, reason: "Rust virtiofsd 1.13 answers ENOSYS to TMPFILE" },
    [UMASK_IGNORED]: {
      reason: "Rust virtiofsd 1.13 does not grant FUSE_DONT_MASK (the guest kernel masks the " +
        "mode before sending it) and ignores the umask field (observed: mode 666 with umask " +
        "022 made a 666 file)",
    },
    "CREATE in a root directory": { accepts: true, reason: RUST_PARENT },
    "MKDIR in a root directory": { accepts: true, reason: RUST_PARENT },
    "MKNOD fifo in a root directory": { accepts: true, reason: RUST_PARENT },
    "SYMLINK in a root directory": { accepts: true, reason: RUST_PARENT },
  },
};

// ---- the harness ------------------------------------------------------------------------------

interface Session {
  daemon: DaemonHandle;
  fe: VhostUserFrontend;
  ops: FuseClient;
  /** The INIT reply's flags. */
  flags: bigint;
}

/** How to start the daemon of one test. */
interface Launch {
  kind: DaemonKind;
  shared: string;
  /** Run ours as 65534 under setpriv (DENO_DIR in `denoDir`). */
  unprivileged?: { denoDir: string };
}

async function open(l: Launch): Promise<Session> {
  const daemon = l.unprivileged === undefined
    ? await startDaemon(l.kind, { sharedDir: l.shared })
    : await startDaemon("ours", {
      sharedDir: l.shared,
      env: { DENO_DIR: l.unprivileged.denoDir, HOME: l.unprivileged.denoDir },
      args: (socketPath, sharedDir) => {
        // The socket's directory is root's; 65534 must be able to create the socket in it.
        Deno.chmodSync(dirname(socketPath), 0o777);
        return [
          "setpriv",
          `--reuid=${NOBODY}`,
          `--regid=${NOBODY}`,
          "--clear-groups",
          "--",
          ...daemonArgv("ours", socketPath, sharedDir),
          // Not root: no namespaces (even when SPEC_SANDBOX asks for them).
          "--sandbox",
          "none",
        ];
      },
    });
  try {
    const fe = await VhostUserFrontend.connect(daemon.socketPath, {
      queueSize: 1024,
      timeoutMs: 10_000,
    });
    const ops = new FuseClient(fe);
    const init = ops.init();
    return { daemon, fe, ops, flags: init.flags };
  } catch (e) {
    const log = daemon.stderrText();
    await daemon.stop();
    throw new Error(`${(e as Error).message}\n--- ${l.kind} daemon log ---\n${log}`, { cause: e });
  }
}

/** One daemon for a whole test, restarted when it died or a step left the wire unknown. */
class Harness implements AsyncDisposable {
  readonly launch: Launch;
  #s: Session | undefined;

  constructor(launch: Launch) {
    this.launch = launch;
  }

  async session(): Promise<Session> {
    if (this.#s !== undefined && !this.#s.daemon.hasExited()) return this.#s;
    await this.poison();
    this.#s = await open(this.launch);
    return this.#s;
  }

  logTail(lines = 30): string {
    return this.#s?.daemon.stderrText().split("\n").slice(-lines).join("\n") ?? "";
  }

  async poison(): Promise<void> {
    const s = this.#s;
    this.#s = undefined;
    if (s === undefined) return;
    s.fe.close();
    await s.daemon.stop();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.poison();
  }
}

/** What a scenario gets. */
interface Ctx {
  kind: DaemonKind;
  ops: FuseClient;
  /** The INIT reply's flags. */
  flags: bigint;
  /** The host path of the step's own directory. */
  host: string;
  /** Its nodeid. */
  dir: bigint;
  known(key: string): Known | undefined;
}

interface Scenario {
  name: string;
  /** The step's directory: its owner and mode on the host (default root, 0777). */
  dirOwner?: { uid: number; gid: number; mode: number };
  run(c: Ctx): void | Promise<void>;
}

function slug(name: string, i: number): string {
  return `s${String(i).padStart(2, "0")}-` +
    name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40);
}

/** A fresh base directory (0755, so 65534 can reach the share in it). */
async function makeBase(tag: string): Promise<string> {
  const base = await Deno.makeTempDir({ prefix: `cred-${tag}-` });
  await Deno.chmod(base, 0o755);
  return base;
}

async function runScenarios(
  t: Deno.TestContext,
  launch: Launch,
  scenarios: readonly Scenario[],
): Promise<void> {
  await using h = new Harness(launch);
  for (const [i, sc] of scenarios.entries()) {
    await t.step(sc.name, async () => {
      const host = join(launch.shared, slug(sc.name, i));
      await Deno.mkdir(host);
      const owner = sc.dirOwner ?? { uid: 0, gid: 0, mode: 0o777 };
      await Deno.chown(host, owner.uid, owner.gid);
      await Deno.chmod(host, owner.mode);
      const s = await h.session();
      const dir = s.ops.lookup(FUSE_ROOT_ID, slug(sc.name, i)).nodeid;
      const ctx: Ctx = {
        kind: launch.kind,
        ops: s.ops,
        flags: s.flags,
        host,
        dir,
        known: (key) => EXPECTATIONS[launch.kind][key],
      };
      try {
        await sc.run(ctx);
        s.ops.getattr(FUSE_ROOT_ID);
      } catch (e) {
        const log = h.logTail();
        const clean = e instanceof FuseError || e instanceof assert.AssertionError;
        if (!clean || s.daemon.hasExited()) await h.poison();
        if (e instanceof Error) e.message += `\n--- ${launch.kind} daemon log (tail) ---\n${log}`;
        throw e;
      }
    });
  }
}

// ---- helpers ----------------------------------------------------------------------------------

function errnoText(n: number): string {
  return `${errnoName(n)} (${n})`;
}

type Outcome<T> = { ok: true; value: T } | { ok: false; errno: number };

function attempt<T>(fn: () => T): Outcome<T> {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    if (e instanceof FuseError) return { ok: false, errno: e.errno };
    throw e;
  }
}

/** Asserts `fn` is refused with `errno` (or the daemon's recorded departure for `key`). */
function refused<T>(c: Ctx, key: string, errno: number, fn: () => T): Outcome<T> {
  const k = c.known(key);
  const o = attempt(fn);
  if (k?.skip) return o;
  if (k?.accepts) {
    assert.ok(
      o.ok,
      `${key}: recorded as accepted (${k.reason}), but refused with ` +
        `${o.ok ? "" : errnoText(o.errno)}: update EXPECTATIONS`,
    );
    return o;
  }
  const want = k?.errno ?? errno;
  if (o.ok) assert.fail(`${key}: expected ${errnoText(want)}, the request succeeded`);
  assert.equal(
    errnoText(o.errno),
    errnoText(want),
    `${key}: expected ${errnoText(want)}, the daemon answered ${errnoText(o.errno)}`,
  );
  return o;
}

/** The host's owner and permission bits of `path` (lstat). */
async function hostOwner(path: string): Promise<{ uid: number; gid: number; mode: number }> {
  const st = await Deno.lstat(path);
  return { uid: st.uid ?? -1, gid: st.gid ?? -1, mode: (st.mode ?? 0) & 0o7777 };
}

function as(id: { uid: number; gid: number }): FuseRequestOptions {
  return { uid: id.uid, gid: id.gid };
}

/** The five ways to make a node, each returning the new entry and its host name. */
type Maker = (
  c: Ctx,
  name: string,
  id: { uid: number; gid: number },
  mode: number,
  umask: number,
) => EntryOut;

const MAKERS: readonly [string, number, Maker][] = [
  ["CREATE", S_IFREG, (c, name, id, mode, umask) => {
    const r = c.ops.create(c.dir, name, O_RDWR | O_EXCL, mode, umask, as(id));
    c.ops.release(r.entry.nodeid, r.open.fh);
    return r.entry;
  }],
  ["MKDIR", S_IFDIR, (c, name, id, mode, umask) => c.ops.mkdir(c.dir, name, mode, umask, as(id))],
  ["MKNOD fifo", S_IFIFO, (c, name, id, mode, umask) => {
    return c.ops.mknod(c.dir, name, S_IFIFO | mode, 0, umask, as(id));
  }],
  ["SYMLINK", S_IFLNK, (c, name, id) => c.ops.symlink(c.dir, name, "target", as(id))],
  ["TMPFILE", S_IFREG, (c, name, id, mode, umask) => {
    // Not O_EXCL, so it can be linked in and seen on the host.
    const r = c.ops.tmpfile(c.dir, O_RDWR, mode, umask, as(id));
    c.ops.link(r.entry.nodeid, c.dir, name);
    c.ops.release(r.entry.nodeid, r.open.fh);
    return r.entry;
  }],
];

/** Makes one node of each kind as `id` and checks both the reply's and the host's owner. */
async function makeAll(
  c: Ctx,
  id: { uid: number; gid: number },
  want: { uid: number; gid: number },
): Promise<void> {
  for (const [op, type, make] of MAKERS) {
    const key = `${op} owner`;
    const k = c.known(`${op}`);
    if (k?.skip) continue;
    const name = `${op.split(" ")[0]?.toLowerCase()}-${id.uid}-${id.gid}`;
    const o = attempt(() => make(c, name, id, 0o644, 0));
    if (k?.errno !== undefined) {
      assert.equal(o.ok ? "ok" : errnoText(o.errno), errnoText(k.errno), `${op}: ${k.reason}`);
      continue;
    }
    if (!o.ok) assert.fail(`${op} as ${id.uid}:${id.gid} failed with ${errnoText(o.errno)}`);
    const e = o.value;
    assert.equal(e.attr.mode & S_IFMT, type, `${op}: the file type`);
    const h = await hostOwner(join(c.host, name));
    const kk = c.known(key);
    if (kk?.skip) continue;
    assert.deepEqual(
      { uid: h.uid, gid: h.gid },
      want,
      `${op} as ${id.uid}:${id.gid}: the host file's owner`,
    );
    assert.deepEqual(
      { uid: e.attr.uid, gid: e.attr.gid },
      want,
      `${op} as ${id.uid}:${id.gid}: the reply's owner`,
    );
  }
}

// ---- CRED-OWNER -------------------------------------------------------------------------------

const OWNER: Scenario[] = [
  {
    name: "as 1000:1000, every new node belongs to 1000:1000",
    run: (c) => makeAll(c, GUEST, GUEST),
  },
  {
    name: "as 1000:2000, the group is the request's too",
    run: (c) => makeAll(c, { uid: 1000, gid: 2000 }, { uid: 1000, gid: 2000 }),
  },
  {
    name: "as 0:0, root's",
    run: (c) => makeAll(c, { uid: 0, gid: 0 }, { uid: 0, gid: 0 }),
  },
  {
    name: "the host checks the caller's permission on the parent (root's 0755 directory)",
    dirOwner: { uid: 0, gid: 0, mode: 0o755 },
    async run(c) {
      for (const [op, , make] of MAKERS) {
        if (c.known(op)?.errno !== undefined || c.known(op)?.skip) continue;
        refused(c, `${op} in a root directory`, Errno.EACCES, () => {
          return make(c, `denied-${op.split(" ")[0]?.toLowerCase()}`, GUEST, 0o644, 0);
        });
      }
      const names = [];
      for await (const e of Deno.readDir(c.host)) names.push(e.name);
      const accepted = MAKERS.filter(([op]) => c.known(`${op} in a root directory`)?.accepts);
      if (accepted.length === 0) assert.deepEqual(names, [], "nothing was created");
      // Root may.
      const r = c.ops.mkdir(c.dir, "by-root", 0o755, 0, as({ uid: 0, gid: 0 }));
      assert.equal(r.attr.uid, 0);
    },
  },
];

// ---- CRED-UMASK -------------------------------------------------------------------------------

/** [op, mode, umask] cases, and the mode each must end with. */
const UMASK_CASES: readonly [string, number, number][] = [
  ["CREATE", 0o666, 0o022],
  ["CREATE", 0o666, 0o077],
  ["MKDIR", 0o777, 0o027],
  ["MKNOD fifo", 0o666, 0o077],
  ["TMPFILE", 0o666, 0o022],
  ["CREATE", 0o666, 0],
  ["MKDIR", 0o777, 0],
  ["MKNOD fifo", 0o666, 0],
  ["TMPFILE", 0o666, 0],
];

const UMASK: Scenario[] = [
  {
    name: "the mode is masked by the request's umask, never by the daemon's",
    async run(c) {
      const dontMask = (c.flags & FUSE_DONT_MASK) !== 0n;
      for (const [i, [op, mode, umask]] of UMASK_CASES.entries()) {
        const maker = MAKERS.find(([o]) => o === op);
        assert.ok(maker !== undefined);
        const k = c.known(op);
        if (k?.skip || k?.errno !== undefined) continue;
        const name = `m${i}`;
        const ignored = c.known(UMASK_IGNORED) !== undefined;
        const want = ignored ? mode : mode & ~umask;
        const key = `${op} umask ${umask.toString(8)}`;
        const e = maker[2](c, name, GUEST, mode, umask);
        const host = await hostOwner(join(c.host, name));
        const kk = c.known(key);
        if (kk?.skip) continue;
        assert.equal(
          host.mode.toString(8),
          want.toString(8),
          `${key}, mode ${mode.toString(8)} (DONT_MASK ${dontMask ? "granted" : "not granted"}` +
            `${ignored ? "; recorded: the umask field is ignored" : ""}): the host mode`,
        );
        assert.equal((e.attr.mode & 0o7777).toString(8), want.toString(8), `${key}: the reply`);
      }
    },
  },
];

// ---- CRED-CHOWN -------------------------------------------------------------------------------

/** A file of `owner` in the step's directory, made on the host; returns its nodeid. */
async function hostFile(c: Ctx, name: string, owner: { uid: number; gid: number }) {
  const path = join(c.host, name);
  await Deno.writeTextFile(path, "x");
  await Deno.chown(path, owner.uid, owner.gid);
  await Deno.chmod(path, 0o644);
  return { path, nodeid: c.ops.lookup(c.dir, name).nodeid };
}

function showOwner(o: { uid: number; gid: number; mode: number }): string {
  return `${o.uid}:${o.gid} ${o.mode.toString(8)}`;
}

/**
 * Asserts SETATTR `set` as `caller` is applied on the host. The daemon trusts the guest kernel's
 * permission checks (virtio-fs mounts with default_permissions): that kernel itself sends
 * SETATTRs as an unprivileged caller to clear setuid/setgid when such a caller writes or
 * truncates a file, and those must succeed as they do on a local disk. A forged uid in a request
 * header would gain nothing a guest root does not already have.
 */
async function appliedSetattr(
  c: Ctx,
  _key: string,
  f: { path: string; nodeid: bigint },
  caller: { uid: number; gid: number },
  set: { uid?: number; gid?: number; mode?: number },
): Promise<void> {
  const before = await hostOwner(f.path);
  const o = attempt(() => c.ops.setattr(f.nodeid, set, as(caller)));
  const after = await hostOwner(f.path);
  const what = `SETATTR ${JSON.stringify(set)} as ${caller.uid}:${caller.gid} of a ` +
    `${showOwner(before)} file`;
  assert.ok(o.ok, `${what}: refused (${o.ok ? "" : errnoText(o.errno)}), expected applied`);
  assert.deepEqual(after, {
    uid: set.uid ?? before.uid,
    gid: set.gid ?? before.gid,
    mode: set.mode ?? before.mode,
  }, `${what}: the host file`);
}

const CHOWN: Scenario[] = [
  {
    name: "the owner (1000) gives its file to 2000: applied",
    async run(c) {
      const f = await hostFile(c, "mine", GUEST);
      await appliedSetattr(c, "chown own file away", f, GUEST, { uid: 2000 });
      await appliedSetattr(c, "chown own file away", f, GUEST, { uid: 2000, gid: 1000 });
    },
  },
  {
    name: "the owner (1000:1000) changes the group to 2000: applied",
    async run(c) {
      const f = await hostFile(c, "mine", GUEST);
      await appliedSetattr(c, "chgrp own file to a foreign group", f, GUEST, { gid: 2000 });
    },
  },
  {
    name: "a caller (1000) takes a root file: applied",
    async run(c) {
      const f = await hostFile(c, "roots", { uid: 0, gid: 0 });
      await appliedSetattr(c, "chown a root file", f, GUEST, { uid: 1000 });
      await appliedSetattr(c, "chgrp a root file", f, GUEST, { gid: 1000 });
      await appliedSetattr(c, "chown a root file", f, GUEST, { uid: 1000, gid: 1000 });
    },
  },
  {
    name: "a caller (1000) chmods a root file (as the guest kernel does to kill setuid): applied",
    async run(c) {
      const f = await hostFile(c, "roots", { uid: 0, gid: 0 });
      await appliedSetattr(c, "chmod a root file", f, GUEST, { mode: 0o666 });
    },
  },
  {
    name: "allowed: the owner sets its own uid and gid, chmods its file; root chowns anything",
    async run(c) {
      const f = await hostFile(c, "mine", GUEST);
      c.ops.setattr(f.nodeid, { uid: 1000, gid: 1000 }, as(GUEST));
      c.ops.setattr(f.nodeid, { mode: 0o600 }, as(GUEST));
      assert.deepEqual(await hostOwner(f.path), { uid: 1000, gid: 1000, mode: 0o600 });
      const a = c.ops.setattr(f.nodeid, { uid: 2000, gid: 3000 }, as({ uid: 0, gid: 0 }));
      assert.deepEqual({ uid: a.attr.uid, gid: a.attr.gid }, { uid: 2000, gid: 3000 });
      assert.deepEqual(await hostOwner(f.path), { uid: 2000, gid: 3000, mode: 0o600 });
    },
  },
];

// ---- CRED-UNPRIV ------------------------------------------------------------------------------

const UNPRIV: Scenario[] = [
  {
    name: "as 1000:1000, every new node belongs to 65534:65534",
    dirOwner: { uid: NOBODY, gid: NOBODY, mode: 0o755 },
    run: (c) => makeAll(c, GUEST, { uid: NOBODY, gid: NOBODY }),
  },
  {
    name: "as 0:0, still 65534:65534",
    dirOwner: { uid: NOBODY, gid: NOBODY, mode: 0o755 },
    run: (c) => makeAll(c, { uid: 0, gid: 0 }, { uid: NOBODY, gid: NOBODY }),
  },
  {
    name: "the guest's umask still applies",
    dirOwner: { uid: NOBODY, gid: NOBODY, mode: 0o755 },
    async run(c) {
      const r = c.ops.create(c.dir, "masked", O_RDWR | O_EXCL, 0o666, 0o027, as(GUEST));
      c.ops.release(r.entry.nodeid, r.open.fh);
      assert.equal((await hostOwner(join(c.host, "masked"))).mode.toString(8), "640");
    },
  },
  {
    name: "what 65534 may not do is refused, whoever asks",
    dirOwner: { uid: 0, gid: 0, mode: 0o755 },
    async run(c) {
      // Creating in a root-owned 0755 directory, even for a root caller.
      refused(c, "CREATE in root's directory", Errno.EACCES, () => {
        return c.ops.create(c.dir, "x", O_RDWR | O_EXCL, 0o644, 0, as({ uid: 0, gid: 0 }));
      });
      // Reading a root 0600 file.
      const secret = join(c.host, "secret");
      await Deno.writeTextFile(secret, "root only");
      await Deno.chmod(secret, 0o600);
      const s = c.ops.lookup(c.dir, "secret").nodeid;
      refused(c, "OPEN a root 0600 file", Errno.EACCES, () => {
        return c.ops.open(s, O_RDONLY, 0, as({ uid: 0, gid: 0 }));
      });
      // Giving a file to root.
      const mine = join(c.host, "mine");
      await Deno.writeTextFile(mine, "x");
      await Deno.chown(mine, NOBODY, NOBODY);
      const m = c.ops.lookup(c.dir, "mine").nodeid;
      refused(c, "chown to root", Errno.EPERM, () => {
        return c.ops.setattr(m, { uid: 0 }, as({ uid: 0, gid: 0 }));
      });
      assert.equal((await hostOwner(mine)).uid, NOBODY, "still 65534's");
    },
  },
];

// ---- tests ------------------------------------------------------------------------------------

for (const kind of daemonsUnderTest()) {
  Deno.test(`CRED-OWNER files the guest creates belong to the caller [${kind}]`, async (t) => {
    const base = await makeBase(`owner-${kind}`);
    try {
      const shared = join(base, "share");
      await Deno.mkdir(shared, { mode: 0o777 });
      await Deno.chmod(shared, 0o777);
      await runScenarios(t, { kind, shared }, OWNER);
    } finally {
      await Deno.remove(base, { recursive: true }).catch(() => {});
    }
  });

  Deno.test(`CRED-UMASK the guest's umask is honoured [${kind}]`, async (t) => {
    const base = await makeBase(`umask-${kind}`);
    try {
      const shared = join(base, "share");
      await Deno.mkdir(shared);
      await Deno.chmod(shared, 0o777);
      await runScenarios(t, { kind, shared }, UMASK);
    } finally {
      await Deno.remove(base, { recursive: true }).catch(() => {});
    }
  });

  Deno.test(`CRED-CHOWN owner and mode changes are applied as the guest kernel asks [${kind}]`, async (t) => {
    const base = await makeBase(`chown-${kind}`);
    try {
      const shared = join(base, "share");
      await Deno.mkdir(shared);
      await Deno.chmod(shared, 0o777);
      await runScenarios(t, { kind, shared }, CHOWN);
    } finally {
      await Deno.remove(base, { recursive: true }).catch(() => {});
    }
  });
}

Deno.test({
  name: "CRED-UNPRIV not as root, every operation runs as the daemon's user [ours]",
  ignore: Deno.uid() !== 0,
  async fn(t) {
    const base = await makeBase("unpriv");
    try {
      const shared = join(base, "share");
      const denoDir = join(base, "deno-dir");
      await Deno.mkdir(shared);
      await Deno.chown(shared, NOBODY, NOBODY);
      await Deno.mkdir(denoDir);
      await Deno.chown(denoDir, NOBODY, NOBODY);
      await runScenarios(t, { kind: "ours", shared, unprivileged: { denoDir } }, UNPRIV);
    } finally {
      await Deno.remove(base, { recursive: true }).catch(() => {});
    }
  },
});
