/**
 * Spec: CONFINE — the shared directory is the guest's whole world. Whatever names, nodeids and
 * file handles a guest sends, and however the host tree changes under it, no request reads,
 * creates or changes anything outside the directory the daemon serves.
 *
 * Every test builds a fresh world in a temporary directory:
 *
 * ```
 * base/share/            the shared directory
 * base/outside/canary    a secret beside it (its atime is set an hour before its mtime, so on
 *                        a relatime mount any read of it moves the atime)
 * base/victim/           an empty directory beside it (a target for RMDIR "../victim")
 * base/elsewhere/        where the host moves a directory out of the share
 * ```
 *
 * After every step the outside is checked unread and unchanged: the canary's and the outside
 * directory's `stat` (inode, size, links, owner, mode, atime, mtime, ctime, to the nanosecond),
 * base's `stat`, and no `cfz-*` name (every name the tests try to create starts so) in `/`,
 * `/etc`, `/tmp`, base or base/outside. Every FUSE reply body is scanned for the canary's secret
 * and for the first line of the host's /etc/passwd: neither may ever come back.
 *
 * Each claim is one `Deno.test` per daemon in `DAEMONS` (comma list of ours, c, rust; default
 * ours), each scenario one `t.step`. A reference daemon's departure is in `EXPECTATIONS` with
 * its reason; ours has none — where ours departs, the step fails.
 *
 * CONFINE-RACE runs a host process (perl) that swaps `share/d` between a real directory and a
 * symlink to `/`, to the outside directory or to `../../..` as fast as it can, for
 * `CONFINE_RACE_SECONDS` (default 30) seconds against ours (5 s against the references unless
 * `SPEC_FULL=1`), while the driver works inside `d`; it prints the outcome counts.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Errno, errnoName } from "../src/ffi/errno.ts";
import { FUSE_ROOT_ID } from "../src/wire/fuse.ts";
import { RENAME_NOREPLACE } from "../src/ffi/mod.ts";
import {
  type DaemonHandle,
  type DaemonKind,
  daemonsUnderTest,
  startDaemon,
} from "./_driver/daemon.ts";
import { VhostUserFrontend } from "../src/driver/frontend.ts";
import {
  FuseClient,
  FuseError,
  type FuseReply,
  type FuseRequestOptions,
  O_EXCL,
  O_RDONLY,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  SEEK_SET,
} from "../src/driver/fuse_client.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** How long CONFINE-RACE runs, in seconds. */
const RACE_SECONDS = Number(Deno.env.get("CONFINE_RACE_SECONDS") ?? "30");
/**
 * The references get a shorter race in the default run (they are compared, not proven here);
 * `SPEC_FULL=1` gives them the whole `RACE_SECONDS` too.
 */
const REFERENCE_RACE_SECONDS = Deno.env.get("SPEC_FULL") === "1"
  ? RACE_SECONDS
  : Math.min(RACE_SECONDS, 5);

function raceSeconds(kind: string): number {
  return kind === "ours" ? RACE_SECONDS : REFERENCE_RACE_SECONDS;
}

// ---- expectations -----------------------------------------------------------------------------

/** A known departure of a reference daemon, with its reason. */
interface Known {
  /** It refuses with this errno instead. */
  errno?: number;
  /** It performs the request (nothing outside the share is involved). */
  accepts?: boolean;
  /** It reaches outside the share: the step asserts that it still does, then restores. */
  escapes?: boolean;
  /** The check is not made. */
  skip?: boolean;
  /** Why, with what was observed. */
  reason: string;
}

/** The key of a departure: LOOKUP ".." answers the directory itself, never its parent. */
const DOTDOT_IS_SELF = 'LOOKUP ".." is the directory itself';

/** The departure recorded for `key`: an exact entry, else the longest "prefix*" entry. */
function knownFor(kind: DaemonKind, key: string): Known | undefined {
  const map = EXPECTATIONS[kind];
  const exact = map[key];
  if (exact !== undefined) return exact;
  let best: [string, Known] | undefined;
  for (const [k, v] of Object.entries(map)) {
    if (!k.endsWith("*") || !key.startsWith(k.slice(0, -1))) continue;
    if (best === undefined || k.length > best[0].length) best = [k, v];
  }
  return best?.[1];
}

const C_SAFE_NAME = "C virtiofsd (QEMU 7.2) refuses every name that is '.', '..' or holds '/' " +
  "with EINVAL before the call (is_safe_path_component), where Linux gives this errno";
const C_BAD_INODE = "C virtiofsd answers EBADF for a nodeid it does not know (lo_inode() " +
  "returns NULL)";
const RUST_BAD_INODE = "Rust virtiofsd 1.13 answers EBADF for a nodeid it does not know";
const RUST_WALKS = "Rust virtiofsd 1.13 does not check names for '/': its LOOKUP resolves the " +
  "name as a path below the share, '..' never climbing past the share's root (observed: " +
  "'a/b' found share/a/b; '../outside/canary' and absolute paths ENOENT)";
const RUST_ESCAPES = "Rust virtiofsd 1.13 (--sandbox none) passes a name holding '/' to the " +
  "*at call unchecked, and the host resolves '..' out of the share";

/**
 * Per-daemon departures, by case key (`OP name`, as the steps spell them; a key ending in `*`
 * covers every case key it begins). `ours` stays empty: a departure of ours is a failing step.
 */
const EXPECTATIONS: Readonly<Record<DaemonKind, Readonly<Record<string, Known>>>> = {
  ours: {},
  c: {
    "MKDIR .": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EEXIST)` },
    "MKDIR ..": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EEXIST)` },
    "RMDIR ..": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (ENOTEMPTY)` },
    "UNLINK .": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EISDIR)` },
    "UNLINK ..": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EISDIR)` },
    "RENAME to .": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EBUSY)` },
    "RENAME to ..": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EBUSY)` },
    "RENAME2 NOREPLACE to ..": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EEXIST)` },
    "RENAME from .": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EBUSY)` },
    "RENAME from ..": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EBUSY)` },
    "LINK as .": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EEXIST)` },
    "LINK as ..": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EEXIST)` },
    "CREATE .": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EISDIR)` },
    "CREATE ..": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EISDIR)` },
    "MKNOD ..": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EEXIST)` },
    "SYMLINK .": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EEXIST)` },
    "SYMLINK ..": { errno: Errno.EINVAL, reason: `${C_SAFE_NAME} (EEXIST)` },
    "LOOKUP .. of root: nodeid": {
      skip: true,
      reason: "C virtiofsd answers LOOKUP '..' of the root with a second nodeid (observed 2) " +
        "for the same inode, not nodeid 1",
    },
    "LOOKUP .. of moved-out *": {
      errno: Errno.ENOENT,
      reason: "C virtiofsd serves the share as the root of its own mount namespace; '..' of a " +
        "directory moved out of that mount is disconnected, and the host answers ENOENT",
    },
    "CREATE over symlink": {
      errno: Errno.EBADF,
      reason: "C virtiofsd reopens an existing name only if it is a regular file or a " +
        "directory (lo_inode_open), else EBADF",
    },
    "OPEN symlink": {
      errno: Errno.EBADF,
      reason: "C virtiofsd opens only regular files and directories (lo_inode_open), else EBADF",
    },
    "SETATTR size of symlink": {
      errno: Errno.EBADF,
      reason: "C virtiofsd truncates through a reopened descriptor, refused with EBADF for a " +
        "symlink (lo_inode_open)",
    },
    "RENAME into symlink": {
      errno: Errno.EIO,
      reason: "C virtiofsd's lo_rename looks both names up again first; a parent that is no " +
        "directory makes lookup_name() fail, answered EIO",
    },
    "RENAME out of symlink": {
      errno: Errno.EIO,
      reason: "C virtiofsd's lo_rename looks both names up again first (EIO when that fails)",
    },
    "UNLINK under symlink": {
      errno: Errno.EIO,
      reason: "C virtiofsd's lo_unlink looks the name up again first (EIO when that fails)",
    },
    "TMPFILE under symlink": {
      errno: Errno.ENOSYS,
      reason: "C virtiofsd speaks FUSE 7.36; TMPFILE is 7.37",
    },
    "LINK forged nodeid": { errno: Errno.EBADF, reason: C_BAD_INODE },
    "LINK forgotten nodeid": { errno: Errno.EBADF, reason: C_BAD_INODE },
    ...Object.fromEntries(
      [
        "GETATTR",
        "OPEN",
        "OPENDIR",
        "READLINK",
        "SETATTR",
        "MKDIR",
        "CREATE",
        "MKNOD",
        "SYMLINK",
        "RENAME from",
        "RENAME to",
        "LINK source",
        "LINK parent",
      ].map((op) => [`forged nodeid ${op}`, { errno: Errno.EBADF, reason: C_BAD_INODE }]),
    ),
    "forged nodeid ACCESS": {
      errno: Errno.ENOSYS,
      reason: "C virtiofsd (QEMU 7.2) has no ACCESS handler",
    },
    "forged nodeid TMPFILE": {
      errno: Errno.ENOSYS,
      reason: "C virtiofsd speaks FUSE 7.36; TMPFILE is 7.37",
    },
    "forged nodeid RMDIR": {
      errno: Errno.EIO,
      reason: "C virtiofsd's lo_rmdir looks the name up again first (EIO when that fails)",
    },
    "forged nodeid UNLINK": {
      errno: Errno.EIO,
      reason: "C virtiofsd's lo_unlink looks the name up again first (EIO when that fails)",
    },
    "forged fh RELEASE": {
      accepts: true,
      reason: "C virtiofsd's lo_release closes the fh's descriptor if there is one and answers " +
        "0 either way",
    },
    "forged fh u64max RELEASE": {
      accepts: true,
      reason: "C virtiofsd's lo_release answers 0 for an fh it does not know",
    },
    "stale fh RELEASE": {
      accepts: true,
      reason: "C virtiofsd's lo_release answers 0 for an fh it does not know",
    },
    "directory fh on a file RELEASE": {
      accepts: true,
      reason: "C virtiofsd's lo_release answers 0 for an fh it does not know (directory " +
        "handles live in another table)",
    },
    "forged fh u64max FSYNC": {
      accepts: true,
      reason: "C virtiofsd takes fh ~0 as 'no handle' (do_fsync) and syncs the node itself",
    },
    "borrowed fh *": {
      accepts: true,
      reason: "C virtiofsd ignores the nodeid of a request that carries an fh: another file's " +
        "(or directory's) fh acts on that file, inside the share",
    },
  },
  rust: {
    "LOOKUP a/b": { accepts: true, reason: RUST_WALKS },
    "LOOKUP a/": { accepts: true, reason: RUST_WALKS },
    "LOOKUP ../outside/canary": { errno: Errno.ENOENT, reason: RUST_WALKS },
    "LOOKUP a/../../outside": { errno: Errno.ENOENT, reason: RUST_WALKS },
    "LOOKUP /abs/canary": { errno: Errno.ENOENT, reason: RUST_WALKS },
    "MKDIR ../*": {
      escapes: true,
      errno: Errno.ENOENT,
      reason: `${RUST_ESCAPES}: mkdirat creates the directory outside (observed base/cfz-x, ` +
        "base/cfz-y, base/outside/cfz-z), then its confined LOOKUP of the name answers ENOENT",
    },
    "MKNOD ../outside/cfz-fifo": {
      escapes: true,
      errno: Errno.ENOENT,
      reason: `${RUST_ESCAPES}: mknodat creates base/outside/cfz-fifo, then ENOENT`,
    },
    "SYMLINK ../outside/cfz-s": {
      escapes: true,
      errno: Errno.ENOENT,
      reason: `${RUST_ESCAPES}: symlinkat creates base/outside/cfz-s, then ENOENT`,
    },
    "SYMLINK a/cfz-s": {
      accepts: true,
      reason: "Rust virtiofsd 1.13 creates share/a/cfz-s for the name 'a/cfz-s' (inside)",
    },
    "CREATE ../*": {
      errno: Errno.ENOENT,
      reason: "Rust virtiofsd 1.13 does not check CREATE's name for '/', but nothing was " +
        "created outside (observed ENOENT, base and base/outside unchanged)",
    },
    "CREATE /abs/outside/cfz-abs": {
      errno: Errno.ENOENT,
      reason: "Rust virtiofsd 1.13 does not check CREATE's name for '/'; an absolute path " +
        "resolved below the share answers ENOENT (nothing created outside)",
    },
    "UNLINK ../outside/canary": {
      escapes: true,
      reason: `${RUST_ESCAPES}: unlinkat removed the canary`,
    },
    "RMDIR ../victim": {
      escapes: true,
      reason: `${RUST_ESCAPES}: unlinkat(AT_REMOVEDIR) removed base/victim`,
    },
    "RENAME ../outside/canary → cfz-stolen": {
      escapes: true,
      reason: `${RUST_ESCAPES}: renameat2 moved the canary into the share`,
    },
    "RENAME f → ../outside/cfz-f": {
      escapes: true,
      reason: `${RUST_ESCAPES}: renameat2 moved share/f out to base/outside`,
    },
    "RENAME2 NOREPLACE f → ../cfz-f": {
      escapes: true,
      reason: `${RUST_ESCAPES}: renameat2 moved share/f out to base`,
    },
    "LINK as ../*": {
      escapes: true,
      errno: Errno.ENOENT,
      reason: `${RUST_ESCAPES}: linkat creates the link outside (observed base/outside/cfz-l, ` +
        "base/cfz-l), then ENOENT",
    },
    [DOTDOT_IS_SELF]: {
      reason: "Rust virtiofsd 1.13 answers LOOKUP '..' of any directory with that directory " +
        "itself (observed: b/.. has b's inode), so '..' never leaves the share, nor reaches " +
        "the parent",
    },
    "CREATE over symlink": {
      errno: Errno.EBADF,
      reason: "Rust virtiofsd 1.13 refuses to open an existing non-regular file with EBADF",
    },
    "OPEN symlink": {
      errno: Errno.EBADF,
      reason: "Rust virtiofsd 1.13 opens regular files and directories only, else EBADF",
    },
    "OPENDIR symlink": {
      errno: Errno.EBADF,
      reason: "Rust virtiofsd 1.13 opens regular files and directories only, else EBADF",
    },
    "SETATTR size of symlink": {
      errno: Errno.EBADF,
      reason: "Rust virtiofsd 1.13 truncates through a reopened descriptor: EBADF for a symlink",
    },
    "TMPFILE under symlink": {
      errno: Errno.ENOSYS,
      reason: "Rust virtiofsd 1.13 answers ENOSYS to TMPFILE",
    },
    "LINK forged nodeid": { errno: Errno.EBADF, reason: RUST_BAD_INODE },
    "LINK forgotten nodeid": { errno: Errno.EBADF, reason: RUST_BAD_INODE },
    "forged nodeid *": { errno: Errno.EBADF, reason: RUST_BAD_INODE },
    "forged nodeid TMPFILE": {
      errno: Errno.ENOSYS,
      reason: "Rust virtiofsd 1.13 answers ENOSYS to TMPFILE",
    },
  },
};

// ---- the world --------------------------------------------------------------------------------

/** `stat` lines (lstat, nanosecond times) of `paths`; a missing path reads "absent". */
async function statLines(paths: readonly string[]): Promise<Map<string, string>> {
  const o = await new Deno.Command("stat", {
    args: ["--printf", "%n\t%i %s %h %u:%g %f atime %.9X mtime %.9Y ctime %.9Z\n", "--", ...paths],
    stdout: "piped",
    stderr: "null",
  }).output();
  const m = new Map<string, string>(paths.map((p) => [p, "absent"]));
  for (const line of dec.decode(o.stdout).split("\n")) {
    const tab = line.indexOf("\t");
    if (tab > 0) m.set(line.slice(0, tab), line.slice(tab + 1));
  }
  return m;
}

/** What the outside looked like. */
interface Snapshot {
  stats: Map<string, string>;
  strays: string[];
}

/** The fresh temporary world of one test. */
class World implements AsyncDisposable {
  readonly base: string;
  readonly share: string;
  readonly outside: string;
  readonly canary: string;
  readonly victim: string;
  readonly elsewhere: string;
  /** The canary's content. */
  readonly secret: string;
  /** The first line of the host's /etc/passwd. */
  readonly passwdLine: string;

  private constructor(base: string, passwdLine: string) {
    this.base = base;
    this.share = join(base, "share");
    this.outside = join(base, "outside");
    this.canary = join(this.outside, "canary");
    this.victim = join(base, "victim");
    this.elsewhere = join(base, "elsewhere");
    this.secret = `CANARY-${crypto.randomUUID()}`;
    this.passwdLine = passwdLine;
  }

  static async create(tag: string): Promise<World> {
    const passwd = await Deno.readTextFile("/etc/passwd");
    const first = passwd.split("\n")[0] ?? "";
    assert.ok(first.length >= 8, "/etc/passwd has a first line");
    const base = await Deno.makeTempDir({ prefix: `confine-${tag}-` });
    const w = new World(base, first);
    await Deno.mkdir(w.share);
    await Deno.mkdir(w.outside);
    await Deno.mkdir(w.victim);
    await Deno.mkdir(w.elsewhere);
    await Deno.writeTextFile(w.canary, w.secret);
    // The share's own tree.
    await Deno.mkdir(join(w.share, "a"));
    await Deno.writeTextFile(join(w.share, "a", "b"), "inside-b");
    await Deno.writeTextFile(join(w.share, "f"), "inside-f");
    await Deno.symlink("/", join(w.share, "toroot"));
    await Deno.symlink("../../..", join(w.share, "up3"));
    await Deno.symlink(w.outside, join(w.share, "tooutside"));
    await Deno.symlink(w.canary, join(w.share, "tocanary"));
    await Deno.symlink("../outside/canary", join(w.share, "relcanary"));
    await w.#ageTimes();
    return w;
  }

  /** atime an hour before mtime: on a relatime mount, the next read moves the atime. */
  async #ageTimes(): Promise<void> {
    const now = Date.now() / 1000;
    await Deno.utime(this.canary, now - 3600, now - 10);
    await Deno.utime(this.outside, now - 3600, now - 10);
  }

  /** The paths whose `stat` must never change. */
  get watched(): string[] {
    return [this.canary, this.outside, this.base, this.victim];
  }

  /** `cfz-*` names in `/`, `/etc`, `/tmp` (never base/outside: listing them moves their atime). */
  async #strays(): Promise<string[]> {
    const out: string[] = [];
    for (const dir of ["/", "/etc", "/tmp"]) {
      for await (const e of Deno.readDir(dir)) {
        if (e.name.startsWith("cfz-")) out.push(join(dir, e.name));
      }
    }
    return out.sort();
  }

  async snapshot(): Promise<Snapshot> {
    return { stats: await statLines(this.watched), strays: await this.#strays() };
  }

  /** What changed outside since `before`, one line per difference. */
  async changes(before: Snapshot): Promise<string[]> {
    const now = await this.snapshot();
    const out: string[] = [];
    for (const [p, line] of before.stats) {
      const after = now.stats.get(p);
      if (after !== line) out.push(`${p}: ${line} → ${after}`);
    }
    for (const s of now.strays) if (!before.strays.includes(s)) out.push(`${s} appeared`);
    return out;
  }

  /** Puts the outside back after a recorded escape (removes cfz-* names, rewrites the canary). */
  async restore(): Promise<void> {
    for (const dir of ["/", "/etc", "/tmp", this.base, this.outside]) {
      for await (const e of Deno.readDir(dir)) {
        if (e.name.startsWith("cfz-")) {
          await Deno.remove(join(dir, e.name), { recursive: true }).catch(() => {});
        }
      }
    }
    await Deno.mkdir(this.victim).catch(() => {});
    await Deno.writeTextFile(this.canary, this.secret);
    for await (const e of Deno.readDir(this.share)) {
      if (e.name.startsWith("cfz-")) {
        await Deno.remove(join(this.share, e.name), { recursive: true });
      }
    }
    await Deno.writeTextFile(join(this.share, "f"), "inside-f");
    await this.#ageTimes();
  }

  /** Asserts the final state: the canary's content and the outside's listing (reads them). */
  async assertFinal(): Promise<void> {
    const names = [];
    for await (const e of Deno.readDir(this.outside)) names.push(e.name);
    assert.deepEqual(names, ["canary"], "base/outside holds the canary only");
    assert.equal(await Deno.readTextFile(this.canary), this.secret, "the canary's content");
    const base = [];
    for await (const e of Deno.readDir(this.base)) base.push(e.name);
    assert.deepEqual(base.sort(), ["elsewhere", "outside", "share", "victim"], "base's listing");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.base, { recursive: true }).catch(() => {});
  }
}

// ---- the guest --------------------------------------------------------------------------------

function indexOfBytes(hay: Uint8Array, needle: Uint8Array): number {
  if (needle.byteLength === 0) return 0;
  const first = needle[0];
  outer: for (let i = hay.indexOf(first ?? 0); i >= 0; i = hay.indexOf(first ?? 0, i + 1)) {
    if (i + needle.byteLength > hay.byteLength) return -1;
    for (let j = 1; j < needle.byteLength; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** A FUSE client that scans every reply body for what must never leave the outside. */
class WatchedClient extends FuseClient {
  readonly #needles: { what: string; bytes: Uint8Array }[];
  /** Replies that carried a needle. */
  readonly leaks: string[] = [];

  constructor(fe: VhostUserFrontend, needles: { what: string; text: string }[]) {
    super(fe);
    this.#needles = needles.map((n) => ({ what: n.what, bytes: enc.encode(n.text) }));
  }

  override request(
    opcode: number,
    args: readonly Uint8Array[],
    replySizes: readonly number[] | null,
    opts: FuseRequestOptions = {},
  ): FuseReply {
    const r = super.request(opcode, args, replySizes, opts);
    for (const n of this.#needles) {
      if (indexOfBytes(r.body, n.bytes) >= 0) {
        this.leaks.push(`opcode ${opcode} on nodeid ${opts.nodeid} returned ${n.what}`);
      }
    }
    return r;
  }
}

interface Session {
  daemon: DaemonHandle;
  fe: VhostUserFrontend;
  client: WatchedClient;
  ops: FuseClient;
}

/** One daemon for a whole test, restarted when it died or a step left the wire unknown. */
class Harness implements AsyncDisposable {
  readonly kind: DaemonKind;
  readonly world: World;
  #s: Session | undefined;

  constructor(kind: DaemonKind, world: World) {
    this.kind = kind;
    this.world = world;
  }

  async session(): Promise<Session> {
    if (this.#s !== undefined && !this.#s.daemon.hasExited()) return this.#s;
    if (this.#s !== undefined) await this.poison();
    const daemon = await startDaemon(this.kind, { sharedDir: this.world.share });
    try {
      const fe = await VhostUserFrontend.connect(daemon.socketPath, {
        queueSize: 1024,
        timeoutMs: 10_000,
      });
      const client = new WatchedClient(fe, [
        { what: "the canary's secret", text: this.world.secret },
        { what: "the host's /etc/passwd", text: this.world.passwdLine },
      ]);
      client.init();
      this.#s = { daemon, fe, client, ops: client };
      return this.#s;
    } catch (e) {
      const log = daemon.stderrText();
      await daemon.stop();
      throw new Error(`${(e as Error).message}\n--- ${this.kind} daemon log ---\n${log}`, {
        cause: e,
      });
    }
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
  w: World;
  /** This daemon's recorded departure for `key`. */
  known(key: string): Known | undefined;
  /** The step may change the outside (a recorded escape); the outside is restored after it. */
  escaped(key: string): void;
  /** Whether `escaped` was called in this step. */
  anyEscaped(): boolean;
}

function errnoText(n: number): string {
  return `${errnoName(n)} (${n})`;
}

type Outcome<T> = { ok: true; value: T } | { ok: false; errno: number };

/** Runs `fn`: its value, or the errno of its FuseError. */
function attempt<T>(fn: () => T): Outcome<T> {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    if (e instanceof FuseError) return { ok: false, errno: e.errno };
    throw e;
  }
}

/**
 * Asserts that the daemon refuses `fn` with `errno` (or this daemon's recorded errno); a
 * recorded `accepts` asserts success, a recorded `escapes` asserts success and lets the outside
 * change.
 */
function refused<T>(c: Ctx, key: string, errno: number, fn: () => T): Outcome<T> {
  const k = c.known(key);
  if (k?.skip) return { ok: false, errno: 0 };
  const o = attempt(fn);
  if (k?.escapes && k.errno !== undefined) {
    // It answers an error, but did the deed outside first.
    c.escaped(key);
    assert.equal(
      o.ok ? "ok" : errnoText(o.errno),
      errnoText(k.errno),
      `${key}: recorded as escaping and answering ${errnoText(k.errno)} (${k.reason})`,
    );
    return o;
  }
  if (k?.escapes || k?.accepts) {
    assert.ok(
      o.ok,
      `${key}: recorded as ${k.escapes ? "escaping" : "accepted"} (${k.reason}), but ` +
        `refused with ${o.ok ? "" : errnoText(o.errno)}: update EXPECTATIONS`,
    );
    if (k.escapes) c.escaped(key);
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

async function hostIno(path: string): Promise<bigint> {
  return BigInt((await Deno.lstat(path)).ino ?? -1);
}

async function hostNames(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

/** A scenario: one `t.step`. */
interface Scenario {
  name: string;
  only?: (kind: DaemonKind) => boolean;
  run(c: Ctx): void | Promise<void>;
}

/** Runs `scenarios` as steps of one test against `kind`, checking the outside after each. */
async function runScenarios(
  t: Deno.TestContext,
  kind: DaemonKind,
  tag: string,
  scenarios: readonly Scenario[],
  prepare?: (w: World) => Promise<void>,
): Promise<void> {
  await using w = await World.create(`${tag}-${kind}`);
  if (prepare !== undefined) await prepare(w);
  await using h = new Harness(kind, w);
  for (const sc of scenarios) {
    if (sc.only !== undefined && !sc.only(kind)) continue;
    await t.step(sc.name, async () => {
      const s = await h.session();
      const before = await w.snapshot();
      const escapes: string[] = [];
      const ctx: Ctx = {
        kind,
        ops: s.ops,
        w,
        known: (key) => knownFor(kind, key),
        escaped: (key) => escapes.push(key),
        anyEscaped: () => escapes.length > 0,
      };
      try {
        await sc.run(ctx);
        assert.deepEqual(s.client.leaks, [], "no reply carried anything from outside the share");
        const changed = await w.changes(before);
        if (escapes.length > 0) {
          // A recorded escape: it did change the outside; that is put back for the next step.
          assert.ok(changed.length > 0, `recorded escapes left the outside unchanged: ${escapes}`);
          await w.restore();
        } else {
          assert.deepEqual(changed, [], "nothing outside the share was read or changed");
        }
        s.ops.getattr(FUSE_ROOT_ID);
        assert.ok(!s.daemon.hasExited(), "the daemon is alive");
      } catch (e) {
        const log = h.logTail();
        const clean = e instanceof FuseError || e instanceof assert.AssertionError;
        if (!clean || s.daemon.hasExited()) await h.poison();
        if (escapes.length > 0) await w.restore();
        s.client.leaks.length = 0;
        if (e instanceof Error) e.message += `\n--- ${kind} daemon log (tail) ---\n${log}`;
        throw e;
      }
    });
  }
  await w.assertFinal();
}

// ---- CONFINE-SLASH ----------------------------------------------------------------------------

/** A FIFO's mode. */
const FIFO = S_IFIFO | 0o644;

const SLASH: Scenario[] = [
  {
    name: 'LOOKUP "a/b" (which exists on the host) and "a/"',
    run(c) {
      refused(c, "LOOKUP a/b", Errno.EINVAL, () => c.ops.lookup(FUSE_ROOT_ID, "a/b"));
      refused(c, "LOOKUP a/", Errno.EINVAL, () => c.ops.lookup(FUSE_ROOT_ID, "a/"));
    },
  },
  {
    name: 'LOOKUP "../outside/canary", "a/../../outside" and the canary\'s absolute path',
    run(c) {
      const readThrough = (name: string) => () => {
        const e = c.ops.lookup(FUSE_ROOT_ID, name);
        const h = c.ops.open(e.nodeid, O_RDONLY);
        return c.ops.read(e.nodeid, h.fh, 0, 4096);
      };
      refused(c, "LOOKUP ../outside/canary", Errno.EINVAL, readThrough("../outside/canary"));
      refused(c, "LOOKUP a/../../outside", Errno.EINVAL, () => {
        return c.ops.lookup(FUSE_ROOT_ID, "a/../../outside");
      });
      refused(c, "LOOKUP /abs/canary", Errno.EINVAL, readThrough(c.w.canary));
    },
  },
  {
    name: 'MKDIR "../cfz-x" (in the root and from a subdirectory) and "../outside/cfz-z"',
    async run(c) {
      refused(c, "MKDIR ../cfz-x", Errno.EINVAL, () => c.ops.mkdir(FUSE_ROOT_ID, "../cfz-x"));
      const a = c.ops.lookup(FUSE_ROOT_ID, "a").nodeid;
      refused(c, "MKDIR ../../cfz-y (in a)", Errno.EINVAL, () => c.ops.mkdir(a, "../../cfz-y"));
      refused(c, "MKDIR ../outside/cfz-z", Errno.EINVAL, () => {
        return c.ops.mkdir(FUSE_ROOT_ID, "../outside/cfz-z");
      });
      c.ops.forget(a, 1);
      assert.deepEqual(await hostNames(join(c.w.share, "a")), ["b"], "share/a unchanged");
    },
  },
  {
    name: 'CREATE "../../etc/cfz-x", "../../../etc/cfz-x", "../outside/cfz-c" and an absolute path',
    run(c) {
      for (const name of ["../../etc/cfz-x", "../../../etc/cfz-x", "../outside/cfz-c"]) {
        refused(c, `CREATE ${name}`, Errno.EINVAL, () => {
          return c.ops.create(FUSE_ROOT_ID, name, O_RDWR | O_EXCL, 0o644);
        });
      }
      refused(c, "CREATE /abs/outside/cfz-abs", Errno.EINVAL, () => {
        return c.ops.create(FUSE_ROOT_ID, join(c.w.outside, "cfz-abs"), O_RDWR, 0o644);
      });
    },
  },
  {
    name: 'MKNOD "../outside/cfz-fifo", SYMLINK "../outside/cfz-s" → "/" and "a/cfz-s"',
    run(c) {
      refused(c, "MKNOD ../outside/cfz-fifo", Errno.EINVAL, () => {
        return c.ops.mknod(FUSE_ROOT_ID, "../outside/cfz-fifo", FIFO);
      });
      refused(c, "SYMLINK ../outside/cfz-s", Errno.EINVAL, () => {
        return c.ops.symlink(FUSE_ROOT_ID, "../outside/cfz-s", "/");
      });
      refused(c, "SYMLINK a/cfz-s", Errno.EINVAL, () => {
        return c.ops.symlink(FUSE_ROOT_ID, "a/cfz-s", "/");
      });
    },
  },
  {
    name: 'UNLINK "../outside/canary" and RMDIR "../victim"',
    run(c) {
      refused(c, "UNLINK ../outside/canary", Errno.EINVAL, () => {
        return c.ops.unlink(FUSE_ROOT_ID, "../outside/canary");
      });
      refused(c, "RMDIR ../victim", Errno.EINVAL, () => c.ops.rmdir(FUSE_ROOT_ID, "../victim"));
    },
  },
  {
    name: 'RENAME "../outside/canary" → "cfz-stolen", "f" → "../outside/cfz-f" and "../cfz-f"',
    async run(c) {
      refused(c, "RENAME ../outside/canary → cfz-stolen", Errno.EINVAL, () => {
        return c.ops.rename(FUSE_ROOT_ID, "../outside/canary", FUSE_ROOT_ID, "cfz-stolen");
      });
      refused(c, "RENAME f → ../outside/cfz-f", Errno.EINVAL, () => {
        return c.ops.rename(FUSE_ROOT_ID, "f", FUSE_ROOT_ID, "../outside/cfz-f");
      });
      // (A daemon that let the last one out gets its "f" back for the next.)
      await Deno.writeTextFile(join(c.w.share, "f"), "inside-f");
      refused(c, "RENAME2 NOREPLACE f → ../cfz-f", Errno.EINVAL, () => {
        return c.ops.rename2(FUSE_ROOT_ID, "f", FUSE_ROOT_ID, "../cfz-f", RENAME_NOREPLACE);
      });
      if (!c.anyEscaped()) {
        assert.equal(await Deno.readTextFile(join(c.w.share, "f")), "inside-f", "share/f stays");
      }
    },
  },
  {
    name: 'LINK of a file as "../outside/cfz-l" and "../cfz-l"',
    run(c) {
      const f = c.ops.lookup(FUSE_ROOT_ID, "f").nodeid;
      refused(c, "LINK as ../outside/cfz-l", Errno.EINVAL, () => {
        return c.ops.link(f, FUSE_ROOT_ID, "../outside/cfz-l");
      });
      refused(c, "LINK as ../cfz-l", Errno.EINVAL, () => c.ops.link(f, FUSE_ROOT_ID, "../cfz-l"));
      c.ops.forget(f, 1);
    },
  },
];

// ---- CONFINE-DOTS -----------------------------------------------------------------------------

/** The dot cases, each with the errno Linux gives the same call on a local file system. */
function dotCases(
  ops: FuseClient,
  dir: bigint,
  f: bigint,
  fname: string,
): [string, number, () => unknown][] {
  return [
    ["MKDIR .", Errno.EEXIST, () => ops.mkdir(dir, ".")],
    ["MKDIR ..", Errno.EEXIST, () => ops.mkdir(dir, "..")],
    ["RMDIR .", Errno.EINVAL, () => ops.rmdir(dir, ".")],
    ["RMDIR ..", Errno.ENOTEMPTY, () => ops.rmdir(dir, "..")],
    ["UNLINK .", Errno.EISDIR, () => ops.unlink(dir, ".")],
    ["UNLINK ..", Errno.EISDIR, () => ops.unlink(dir, "..")],
    ["RENAME to .", Errno.EBUSY, () => ops.rename(dir, fname, dir, ".")],
    ["RENAME to ..", Errno.EBUSY, () => ops.rename(dir, fname, dir, "..")],
    ["RENAME2 NOREPLACE to ..", Errno.EEXIST, () => {
      return ops.rename2(dir, fname, dir, "..", RENAME_NOREPLACE);
    }],
    ["RENAME from .", Errno.EBUSY, () => ops.rename(dir, ".", dir, "cfz-r")],
    ["RENAME from ..", Errno.EBUSY, () => ops.rename(dir, "..", dir, "cfz-r")],
    ["LINK as .", Errno.EEXIST, () => ops.link(f, dir, ".")],
    ["LINK as ..", Errno.EEXIST, () => ops.link(f, dir, "..")],
    ["CREATE .", Errno.EISDIR, () => ops.create(dir, ".", O_RDWR, 0o644)],
    ["CREATE ..", Errno.EISDIR, () => ops.create(dir, "..", O_RDWR, 0o644)],
    ["MKNOD ..", Errno.EEXIST, () => ops.mknod(dir, "..", FIFO)],
    ["SYMLINK .", Errno.EEXIST, () => ops.symlink(dir, ".", "/")],
    ["SYMLINK ..", Errno.EEXIST, () => ops.symlink(dir, "..", "/")],
  ];
}

async function dotsIn(c: Ctx, dirName: string | null, fname: string): Promise<void> {
  const host = dirName === null ? c.w.share : join(c.w.share, dirName);
  const dir = dirName === null ? FUSE_ROOT_ID : c.ops.lookup(FUSE_ROOT_ID, dirName).nodeid;
  const f = c.ops.lookup(dir, fname).nodeid;
  const names = await hostNames(host);
  const shareNames = await hostNames(c.w.share);
  for (const [key, errno, fn] of dotCases(c.ops, dir, f, fname)) refused(c, key, errno, fn);
  // "." is the directory itself.
  const dot = c.ops.lookup(dir, ".");
  assert.equal(dot.attr.ino, await hostIno(host), 'LOOKUP "." is the directory itself');
  c.ops.forget(dot.nodeid, 1);
  assert.deepEqual(await hostNames(host), names, "the directory's listing is unchanged");
  assert.deepEqual(await hostNames(c.w.share), shareNames, "the share's listing is unchanged");
  c.ops.forget(f, 1);
  if (dir !== FUSE_ROOT_ID) c.ops.forget(dir, 1);
}

const DOTS: Scenario[] = [
  { name: "in the root", run: (c) => dotsIn(c, null, "f") },
  { name: "in a subdirectory", run: (c) => dotsIn(c, "a", "b") },
];

// ---- CONFINE-PARENT ---------------------------------------------------------------------------

const PARENT: Scenario[] = [
  {
    name: 'LOOKUP ".." of the root returns the root\'s attributes',
    async run(c) {
      const root = c.ops.getattr(FUSE_ROOT_ID).attr;
      const up = c.ops.lookup(FUSE_ROOT_ID, "..");
      assert.equal(up.attr.ino, await hostIno(c.w.share), "the share's inode, not base's");
      assert.equal(up.attr.ino, root.ino, "the root's inode");
      assert.equal(up.attr.mode, root.mode, "the root's mode");
      assert.equal(up.attr.uid, root.uid, "the root's owner");
      const k = c.known("LOOKUP .. of root: nodeid");
      if (k === undefined) assert.equal(up.nodeid, FUSE_ROOT_ID, "nodeid 1");
      // Climbing on: still the root.
      let n = up.nodeid;
      for (let i = 0; i < 5; i++) {
        const e = c.ops.lookup(n, "..");
        assert.equal(e.attr.ino, root.ino, `climb ${i + 2}: still the root`);
        n = e.nodeid;
      }
      // The sibling of the share is not a child of "..".
      refused(c, "LOOKUP outside in ..", Errno.ENOENT, () => c.ops.lookup(up.nodeid, "outside"));
      refused(c, "LOOKUP victim in ..", Errno.ENOENT, () => c.ops.lookup(up.nodeid, "victim"));
      // Its listing is the share's.
      const h = c.ops.opendir(up.nodeid);
      const names = c.ops.readdirAll(up.nodeid, h.fh).entries.map((e) => e.name);
      c.ops.releasedir(up.nodeid, h.fh);
      assert.ok(!names.includes("outside"), `READDIR of "..": ${names.join(" ")}`);
      assert.ok(names.includes("toroot"), `READDIR of "..": ${names.join(" ")}`);
    },
  },
  {
    name: 'LOOKUP ".." from a/b climbs to the root and stops there',
    async run(c) {
      const a = c.ops.mkdir(FUSE_ROOT_ID, "cfz-p", 0o755);
      const b = c.ops.mkdir(a.nodeid, "b", 0o755);
      const rootIno = await hostIno(c.w.share);
      if (c.known(DOTDOT_IS_SELF) !== undefined) {
        // The recorded departure: ".." of a directory is that directory (never its parent).
        assert.equal(c.ops.lookup(b.nodeid, "..").attr.ino, b.attr.ino, "b/.. is b");
        assert.equal(c.ops.lookup(a.nodeid, "..").attr.ino, a.attr.ino, "a/.. is a");
      } else {
        let n = b.nodeid;
        const seen: bigint[] = [];
        for (let i = 0; i < 6; i++) {
          const e = c.ops.lookup(n, "..");
          seen.push(e.attr.ino);
          n = e.nodeid;
        }
        assert.deepEqual(
          seen,
          [a.attr.ino, rootIno, rootIno, rootIno, rootIno, rootIno],
          "b/.. is a, a/.. is the root, and the root's is the root",
        );
      }
      c.ops.rmdir(a.nodeid, "b");
      c.ops.rmdir(FUSE_ROOT_ID, "cfz-p");
    },
  },
  {
    name: 'LOOKUP ".." of a directory the host moved out of the share is refused',
    async run(c) {
      await Deno.mkdir(join(c.w.share, "m"));
      await Deno.mkdir(join(c.w.share, "m", "n"));
      const m = c.ops.lookup(FUSE_ROOT_ID, "m");
      const nn = c.ops.lookup(m.nodeid, "n");
      await Deno.rename(join(c.w.share, "m"), join(c.w.elsewhere, "m"));
      const self = c.known(DOTDOT_IS_SELF) !== undefined;
      try {
        if (self) {
          assert.equal(c.ops.lookup(m.nodeid, "..").attr.ino, m.attr.ino, "m/.. is m");
          assert.equal(c.ops.lookup(nn.nodeid, "..").attr.ino, nn.attr.ino, "n/.. is n");
        } else {
          // base/elsewhere is outside the share.
          refused(c, "LOOKUP .. of moved-out dir", Errno.EACCES, () => {
            return c.ops.lookup(m.nodeid, "..");
          });
          // Deeper: m/n's parent m is outside the share now, so its ".." is refused too.
          refused(c, "LOOKUP .. of moved-out subdir", Errno.EACCES, () => {
            return c.ops.lookup(nn.nodeid, "..");
          });
        }
      } finally {
        await Deno.rename(join(c.w.elsewhere, "m"), join(c.w.share, "m"));
      }
      const back = self ? m.attr.ino : await hostIno(c.w.share);
      assert.equal(c.ops.lookup(m.nodeid, "..").attr.ino, back, "m is back inside");
      await Deno.remove(join(c.w.share, "m"), { recursive: true });
    },
  },
];

// ---- CONFINE-SYMLINK --------------------------------------------------------------------------

function symlinkScenario(name: string, label: string, target: (w: World) => string): Scenario {
  return {
    name: `"${name}" → ${label}`,
    async run(c) {
      const t = target(c.w);
      const host = join(c.w.share, name);
      const e = c.ops.lookup(FUSE_ROOT_ID, name);
      assert.equal(e.attr.mode & S_IFMT, S_IFLNK, "LOOKUP: the link itself");
      assert.equal(e.attr.ino, await hostIno(host), "LOOKUP: the link's inode");
      assert.equal(e.attr.size, BigInt(enc.encode(t).byteLength), "LOOKUP: the link's size");
      assert.equal(c.ops.getattr(e.nodeid).attr.mode & S_IFMT, S_IFLNK, "GETATTR: the link");
      assert.equal(c.ops.readlink(e.nodeid), t, "READLINK: the target text only");
      const n = e.nodeid;
      // Never a directory.
      for (const inner of ["etc", "passwd", "canary", "outside", "..", "."]) {
        refused(c, `LOOKUP through symlink`, Errno.ENOTDIR, () => c.ops.lookup(n, inner));
      }
      refused(c, "OPENDIR symlink", Errno.ENOTDIR, () => c.ops.opendir(n));
      refused(c, "CREATE under symlink", Errno.ENOTDIR, () => {
        return c.ops.create(n, "cfz-c", O_RDWR | O_EXCL, 0o644);
      });
      refused(c, "MKDIR under symlink", Errno.ENOTDIR, () => c.ops.mkdir(n, "cfz-d"));
      refused(c, "MKNOD under symlink", Errno.ENOTDIR, () => c.ops.mknod(n, "cfz-n", FIFO));
      refused(c, "SYMLINK under symlink", Errno.ENOTDIR, () => c.ops.symlink(n, "cfz-s", "/"));
      refused(c, "TMPFILE under symlink", Errno.ENOTDIR, () => c.ops.tmpfile(n, O_RDWR));
      refused(c, "UNLINK under symlink", Errno.ENOTDIR, () => c.ops.unlink(n, "canary"));
      refused(c, "RENAME into symlink", Errno.ENOTDIR, () => {
        return c.ops.rename(FUSE_ROOT_ID, "f", n, "cfz-f");
      });
      refused(c, "RENAME out of symlink", Errno.ENOTDIR, () => {
        return c.ops.rename(n, "canary", FUSE_ROOT_ID, "cfz-stolen");
      });
      // Never a file.
      refused(c, "OPEN symlink", Errno.ELOOP, () => {
        const h = c.ops.open(n, O_RDONLY);
        return c.ops.read(n, h.fh, 0, 4096);
      });
      refused(c, "OPEN symlink", Errno.ELOOP, () => c.ops.open(n, O_WRONLY | O_TRUNC));
      refused(c, "SETATTR size of symlink", Errno.EINVAL, () => c.ops.setattr(n, { size: 0 }));
      // Its name is taken, and CREATE without O_EXCL does not open the target.
      refused(c, "CREATE over symlink", Errno.ELOOP, () => {
        const r = c.ops.create(FUSE_ROOT_ID, name, O_RDWR, 0o644);
        return c.ops.read(r.entry.nodeid, r.open.fh, 0, 4096);
      });
      refused(c, "CREATE over symlink, O_EXCL", Errno.EEXIST, () => {
        return c.ops.create(FUSE_ROOT_ID, name, O_RDWR | O_EXCL, 0o644);
      });
      refused(c, "MKDIR over symlink", Errno.EEXIST, () => c.ops.mkdir(FUSE_ROOT_ID, name));
      refused(c, "MKNOD over symlink", Errno.EEXIST, () => c.ops.mknod(FUSE_ROOT_ID, name, FIFO));
      // Owner and times change the link, not its target.
      c.ops.setattr(n, { mtime: { sec: 1_000_000 }, atime: { sec: 1_000_000 } });
      assert.equal((await Deno.lstat(host)).mtime?.getTime(), 1_000_000_000, "the link's mtime");
      c.ops.setattr(n, { uid: 4242, gid: 4242 });
      assert.equal((await Deno.lstat(host)).uid, 4242, "the link's owner");
      assert.ok((await Deno.lstat(host)).isSymlink, "still a symlink on the host");
      assert.equal(await Deno.readLink(host), t, "its target unchanged");
      c.ops.forget(n, 1);
    },
  };
}

const SYMLINKS: Scenario[] = [
  symlinkScenario("toroot", '"/"', () => "/"),
  symlinkScenario("up3", '"../../.."', () => "../../.."),
  symlinkScenario("tooutside", "base/outside (absolute)", (w) => w.outside),
  symlinkScenario("tocanary", "the canary (absolute)", (w) => w.canary),
  symlinkScenario("relcanary", '"../outside/canary"', () => "../outside/canary"),
];

// ---- CONFINE-LINK -----------------------------------------------------------------------------

const U64_MAX = (1n << 64n) - 1n;

/** A seeded xorshift64 generator of u64 values. */
function* randomU64(seed: bigint): Generator<bigint> {
  let x = seed & 0xffff_ffff_ffff_ffffn;
  const mask = 0xffff_ffff_ffff_ffffn;
  for (;;) {
    x ^= (x << 13n) & mask;
    x ^= x >> 7n;
    x ^= (x << 17n) & mask;
    yield x;
  }
}

function take(n: number, seed: bigint): bigint[] {
  const out: bigint[] = [];
  for (const v of randomU64(seed)) {
    out.push(v);
    if (out.length === n) break;
  }
  return out;
}

/** Nodeids a guest never got: small ones after the root, boundaries, seeded randoms. */
function forgedNodeids(): bigint[] {
  const small = Array.from({ length: 30 }, (_, i) => BigInt(i + 2));
  return [0n, ...small, 1n << 32n, 1n << 63n, (1n << 64n) - 1n, ...take(16, 0x5eed_c0f1n)];
}

const LINKS: Scenario[] = [
  {
    name: "LINK of nodeids the guest never got (fresh session) creates nothing",
    async run(c) {
      const before = await hostNames(c.w.share);
      for (const [i, id] of forgedNodeids().entries()) {
        refused(c, "LINK forged nodeid", Errno.ENOENT, () => {
          return c.ops.link(id, FUSE_ROOT_ID, `cfz-l${i}`);
        });
      }
      assert.deepEqual(await hostNames(c.w.share), before, "no new name in the share");
    },
  },
  {
    name: "LINK of a symlink to the canary links the symlink, never the canary",
    async run(c) {
      const s = c.ops.lookup(FUSE_ROOT_ID, "tocanary");
      const l = c.ops.link(s.nodeid, FUSE_ROOT_ID, "cfz-hl");
      assert.equal(l.attr.mode & S_IFMT, S_IFLNK, "the new name is the symlink");
      assert.equal(l.attr.ino, s.attr.ino, "the symlink's inode");
      const st = await Deno.lstat(join(c.w.share, "cfz-hl"));
      assert.ok(st.isSymlink, "a symlink on the host");
      assert.equal(st.nlink, 2, "the symlink has two names");
      c.ops.unlink(FUSE_ROOT_ID, "cfz-hl");
      c.ops.forget(s.nodeid, 2);
    },
  },
  {
    name: "LINK of a forgotten nodeid is refused",
    async run(c) {
      const f = c.ops.lookup(FUSE_ROOT_ID, "f").nodeid;
      c.ops.forget(f, 1);
      refused(c, "LINK forgotten nodeid", Errno.ENOENT, () => {
        return c.ops.link(f, FUSE_ROOT_ID, "cfz-forgot");
      });
      await assert.rejects(Deno.lstat(join(c.w.share, "cfz-forgot")), Deno.errors.NotFound);
    },
  },
];

// ---- CONFINE-FORGED ---------------------------------------------------------------------------

/** Every request that names a node, on nodeid `n`; `f` is a real file for the LINK source. */
function nodeOps(ops: FuseClient, n: bigint, f: bigint): [string, () => unknown][] {
  return [
    ["GETATTR", () => ops.getattr(n)],
    ["LOOKUP", () => ops.lookup(n, "f")],
    ["OPEN", () => ops.open(n, O_RDONLY)],
    ["OPENDIR", () => ops.opendir(n)],
    ["READLINK", () => ops.readlink(n)],
    ["SETATTR", () => ops.setattr(n, { mode: 0o777 })],
    ["MKDIR", () => ops.mkdir(n, "cfz-m")],
    ["CREATE", () => ops.create(n, "cfz-c", O_RDWR | O_EXCL, 0o644)],
    ["MKNOD", () => ops.mknod(n, "cfz-n", FIFO)],
    ["SYMLINK", () => ops.symlink(n, "cfz-s", "/")],
    ["UNLINK", () => ops.unlink(n, "f")],
    ["RMDIR", () => ops.rmdir(n, "a")],
    ["RENAME from", () => ops.rename(n, "f", FUSE_ROOT_ID, "cfz-r")],
    ["RENAME to", () => ops.rename(FUSE_ROOT_ID, "f", n, "cfz-r")],
    ["LINK source", () => ops.link(n, FUSE_ROOT_ID, "cfz-k")],
    ["LINK parent", () => ops.link(f, n, "cfz-k")],
    ["ACCESS", () => ops.access(n, 4)],
    ["TMPFILE", () => ops.tmpfile(n, O_RDWR)],
  ];
}

/** Tallies `key: outcome` in `m`. */
function tally(m: Map<string, number>, key: string, o: Outcome<unknown>): void {
  const k = `${key}: ${o.ok ? "ok" : errnoName(o.errno)}`;
  m.set(k, (m.get(k) ?? 0) + 1);
}

const FORGED: Scenario[] = [
  {
    name: "forged nodeids on every node request: ENOENT, never a crash",
    async run(c) {
      const f = c.ops.lookup(FUSE_ROOT_ID, "f").nodeid;
      const gone = c.ops.lookup(FUSE_ROOT_ID, "a").nodeid;
      c.ops.forget(gone, 1);
      const ids = [...forgedNodeids().filter((n) => n !== f && n !== gone && n > 1n), gone];
      const before = await hostNames(c.w.share);
      const outcomes = new Map<string, number>();
      for (const id of ids) {
        for (const [op, fn] of nodeOps(c.ops, id, f)) {
          const o = refused(c, `forged nodeid ${op}`, Errno.ENOENT, fn);
          tally(outcomes, op, o);
        }
        c.ops.forget(id, 1);
        c.ops.batchForget([[id, 3], [id, 1n << 40n]]);
        c.ops.getattr(FUSE_ROOT_ID);
      }
      assert.deepEqual(await hostNames(c.w.share), before, "nothing was created or removed");
      console.log(
        `CONFINE-FORGED nodeid outcomes [${c.kind}] (${ids.length} nodeids):\n` +
          [...outcomes].map(([k, v]) => `  ${k}: ${v}`).join("\n"),
      );
      c.ops.forget(f, 1);
    },
  },
  {
    name: "forged, stale and borrowed fh values: EBADF, never a crash",
    async run(c) {
      await Deno.writeTextFile(join(c.w.share, "fa"), "A-content");
      await Deno.writeTextFile(join(c.w.share, "fb"), "B-content");
      const a = c.ops.lookup(FUSE_ROOT_ID, "fa").nodeid;
      const b = c.ops.lookup(FUSE_ROOT_ID, "fb").nodeid;
      const ha = c.ops.open(a, O_RDWR).fh;
      const hd = c.ops.opendir(FUSE_ROOT_ID).fh;
      const stale = c.ops.open(b, O_RDONLY).fh;
      c.ops.release(b, stale);
      const given = new Set([ha, hd, stale]);
      const forged = [
        0n,
        ...Array.from({ length: 20 }, (_, i) => BigInt(i + 1)),
        1n << 32n,
        U64_MAX,
        ...take(8, 0xf00d_f00dn),
      ].filter((fh) => !given.has(fh));
      const outcomes = new Map<string, number>();
      const fileFhOps = (n: bigint, fh: bigint): [string, () => unknown][] => [
        ["READ", () => c.ops.read(n, fh, 0, 4096)],
        ["WRITE", () => c.ops.write(n, fh, 0, enc.encode("cfz"))],
        ["FLUSH", () => c.ops.flush(n, fh)],
        ["FSYNC", () => c.ops.fsync(n, fh)],
        ["LSEEK", () => c.ops.lseek(n, fh, 0, SEEK_SET)],
        ["FALLOCATE", () => c.ops.fallocate(n, fh, 0, 1)],
        ["SETATTR FH", () => c.ops.setattr(n, { size: 0, fh })],
        ["COPY_FILE_RANGE in", () => {
          return c.ops.copyFileRange({
            nodeidIn: n,
            fhIn: fh,
            offIn: 0,
            nodeidOut: a,
            fhOut: ha,
            offOut: 100,
            len: 9,
          });
        }],
        ["COPY_FILE_RANGE out", () => {
          return c.ops.copyFileRange({
            nodeidIn: a,
            fhIn: ha,
            offIn: 0,
            nodeidOut: n,
            fhOut: fh,
            offOut: 100,
            len: 9,
          });
        }],
        ["READDIR", () => c.ops.readdir(n, fh, 0)],
        ["FSYNCDIR", () => c.ops.fsyncdir(n, fh)],
        ["RELEASEDIR", () => c.ops.releasedir(n, fh)],
        ["RELEASE", () => c.ops.release(n, fh)],
      ];
      const check = (label: string, n: bigint, fh: bigint) => {
        for (const [op, fn] of fileFhOps(n, fh)) {
          // READDIR/FSYNCDIR/RELEASEDIR of a file node, or file requests of the root: the
          // node is wrong too, but the fh is the point.
          const o = refused(c, `${label} ${op}`, Errno.EBADF, fn);
          tally(outcomes, `${label} ${op}`, o);
        }
        // GETATTR through an fh may ignore the fh: then it answers the node's own attributes.
        const g = attempt(() => c.ops.getattr(n, fh));
        if (g.ok) assert.equal(g.value.attr.ino, c.ops.getattr(n).attr.ino, `${label} GETATTR`);
        else assert.equal(errnoText(g.errno), errnoText(Errno.EBADF), `${label} GETATTR`);
      };
      for (const fh of forged) check(fh === U64_MAX ? "forged fh u64max" : "forged fh", b, fh);
      check("stale fh", b, stale);
      // A's handle still works, and still reads A; B is untouched.
      assert.equal(dec.decode(c.ops.read(a, ha, 0, 64)).slice(0, 9), "A-content", "A's fh");
      assert.equal(await Deno.readTextFile(join(c.w.share, "fb")), "B-content", "B unchanged");
      // A's fh through B, the directory's fh as a file's, a file's fh as the directory's.
      check("borrowed fh", b, ha);
      check("directory fh on a file", b, hd);
      const onDir: [string, () => unknown][] = [
        ["READDIR", () => c.ops.readdir(FUSE_ROOT_ID, ha, 0)],
        ["RELEASEDIR", () => c.ops.releasedir(FUSE_ROOT_ID, ha)],
      ];
      for (const [op, fn] of onDir) {
        const key = `file fh on a directory ${op}`;
        tally(outcomes, key, refused(c, key, Errno.EBADF, fn));
      }
      console.log(
        `CONFINE-FORGED fh outcomes [${c.kind}]:\n` +
          [...outcomes].map(([k, v]) => `  ${k}: ${v}`).join("\n"),
      );
      attempt(() => c.ops.release(a, ha));
      attempt(() => c.ops.releasedir(FUSE_ROOT_ID, hd));
      c.ops.batchForget([[a, 1], [b, 1]]);
    },
  },
];

// ---- CONFINE-RACE -----------------------------------------------------------------------------

/**
 * The host side of the race (perl): swaps `d` between the real directory and a symlink, each
 * state about half the time, as fast as it can for `secs` seconds, rotating the targets; odd
 * rounds by rename + symlink + unlink + rename, even rounds by renameat2(RENAME_EXCHANGE) with
 * a prepared `d.lnk`. Puts the directory back and prints the number of swaps.
 */
const RACER = String.raw`
use strict; use warnings; use Time::HiRes qw(time);
my ($share, $secs, @targets) = @ARGV;
chdir $share or die "chdir: $!";
my ($D, $L) = ("d", "d.lnk");
sub xchg { syscall(316, -100, $D, -100, $L, 2) == 0 or die "renameat2: $!"; }
my $end = time + $secs; my $n = 0;
while (time < $end) {
  my $t = $targets[int($n / 4) % @targets];
  if (int($n / 2) % 2 == 0) {
    if ($n % 2 == 0) { rename("d", "d.away") or die "rename: $!"; symlink($t, "d") or die "symlink: $!"; }
    else { unlink("d") or die "unlink: $!"; rename("d.away", "d") or die "rename back: $!"; }
  } else {
    if ($n % 2 == 0) { unlink("d.lnk"); symlink($t, "d.lnk") or die "symlink: $!"; xchg(); }
    else { xchg(); }
  }
  $n++;
}
if (-l "d") { if (-d "d.away") { unlink("d"); rename("d.away", "d") or die; } else { xchg(); } }
unlink("d.lnk");
print "$n\n";
`;

/** The share's `d` and what is inside it (the same names as outside). */
async function prepareRace(w: World): Promise<void> {
  const d = join(w.share, "d");
  await Deno.mkdir(join(d, "etc"), { recursive: true });
  await Deno.writeTextFile(join(d, "etc", "passwd"), "inside-passwd\n");
  await Deno.writeTextFile(join(d, "canary"), "inside-canary\n");
  await Deno.mkdir(join(d, "outside"));
  await Deno.writeTextFile(join(w.share, "mv"), "mv\n");
}

/** Inode numbers outside the share on its file system, by what they are. */
async function outsideInos(w: World): Promise<Map<bigint, string>> {
  const dev = (await Deno.lstat(w.share)).dev;
  const m = new Map<bigint, string>();
  for (const p of ["/", "/etc", "/etc/passwd", "/tmp", w.base, w.outside, w.canary, w.elsewhere]) {
    const st = await Deno.lstat(p);
    if (st.dev === dev && st.ino !== null) m.set(BigInt(st.ino), p);
  }
  return m;
}

async function raceScenario(c: Ctx): Promise<void> {
  const w = c.w;
  const ops = c.ops;
  const d = join(w.share, "d");
  const inside = {
    d: await hostIno(d),
    etc: await hostIno(join(d, "etc")),
    passwd: await hostIno(join(d, "etc", "passwd")),
    canary: await hostIno(join(d, "canary")),
    outside: await hostIno(join(d, "outside")),
  };
  const rootIno = await hostIno(w.share);
  const outside = await outsideInos(w);
  const counts = new Map<string, number>();
  const violations: string[] = [];
  const count = (k: string) => counts.set(k, (counts.get(k) ?? 0) + 1);
  const outcome = <T>(label: string, fn: () => T): T | undefined => {
    const o = attempt(fn);
    count(`${label}: ${o.ok ? "ok" : errnoName(o.errno)}`);
    return o.ok ? o.value : undefined;
  };
  const noOutside = (label: string, e: { attr: { ino: bigint } }) => {
    const hit = outside.get(e.attr.ino);
    if (hit !== undefined) violations.push(`${label} answered ${hit}'s inode`);
  };
  const dotdotIsSelf = c.known(DOTDOT_IS_SELF) !== undefined;
  const insideNames = new Set(["etc", "canary", "outside", "mv", ".", ".."]);

  const targets = ["/", w.outside, "../../.."];
  const racer = new Deno.Command("perl", {
    args: ["-e", RACER, "--", w.share, String(raceSeconds(c.kind)), ...targets],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const racerOut = racer.output();
  const end = performance.now() + raceSeconds(c.kind) * 1000;
  let nextCheck = performance.now() + 500;
  const before = await w.snapshot();
  let iterations = 0;
  try {
    while (performance.now() < end) {
      iterations++;
      const forget: bigint[] = [];
      const e = outcome("LOOKUP d", () => ops.lookup(FUSE_ROOT_ID, "d"));
      if (e !== undefined) {
        forget.push(e.nodeid);
        noOutside("LOOKUP d", e);
        const type = e.attr.mode & S_IFMT;
        count(`LOOKUP d → ${type === S_IFDIR ? "directory" : type === S_IFLNK ? "symlink" : type}`);
        if (type === S_IFDIR && e.attr.ino !== inside.d) {
          violations.push(`LOOKUP d answered a directory with inode ${e.attr.ino}`);
        }
        const n = e.nodeid;
        const lookIn = (label: string, parent: bigint, name: string, want: bigint) => {
          const x = outcome(label, () => ops.lookup(parent, name));
          if (x === undefined) return undefined;
          forget.push(x.nodeid);
          noOutside(label, x);
          if (x.attr.ino !== want) violations.push(`${label} answered inode ${x.attr.ino}`);
          return x;
        };
        const readIt = (label: string, node: bigint, want: string) => {
          const h = outcome(`OPEN ${label}`, () => ops.open(node, O_RDONLY));
          if (h === undefined) return;
          const data = outcome(`READ ${label}`, () => ops.read(node, h.fh, 0, 4096));
          if (data !== undefined && dec.decode(data) !== want) {
            violations.push(`READ ${label} returned ${JSON.stringify(dec.decode(data))}`);
          }
          ops.release(node, h.fh);
        };
        const etc = lookIn("LOOKUP d/etc", n, "etc", inside.etc);
        if (etc !== undefined) {
          const pw = lookIn("LOOKUP d/etc/passwd", etc.nodeid, "passwd", inside.passwd);
          if (pw !== undefined) readIt("d/etc/passwd", pw.nodeid, "inside-passwd\n");
        }
        const can = lookIn("LOOKUP d/canary", n, "canary", inside.canary);
        if (can !== undefined) readIt("d/canary", can.nodeid, "inside-canary\n");
        lookIn("LOOKUP d/outside", n, "outside", inside.outside);
        const up = outcome("LOOKUP d/..", () => ops.lookup(n, ".."));
        if (up !== undefined) {
          forget.push(up.nodeid);
          const want = dotdotIsSelf ? e.attr.ino : rootIno;
          if (up.attr.ino !== want) violations.push(`LOOKUP d/.. answered ${up.attr.ino}`);
        }
        const name = `cfz-${iterations}`;
        const cr = outcome("CREATE d/cfz", () => ops.create(n, name, O_RDWR | O_EXCL, 0o644));
        if (cr !== undefined) {
          forget.push(cr.entry.nodeid);
          noOutside("CREATE d/cfz", cr.entry);
          ops.release(cr.entry.nodeid, cr.open.fh);
          outcome("UNLINK d/cfz", () => ops.unlink(n, name));
        }
        const mk = outcome("MKDIR d/cfz", () => ops.mkdir(n, name));
        if (mk !== undefined) {
          forget.push(mk.nodeid);
          noOutside("MKDIR d/cfz", mk);
          outcome("RMDIR d/cfz", () => ops.rmdir(n, name));
        }
        // As a guest does: the name is looked up before it is renamed (C virtiofsd even
        // refuses to rename a name the guest does not hold).
        const src = attempt(() => ops.lookup(FUSE_ROOT_ID, "mv"));
        if (src.ok) {
          forget.push(src.value.nodeid);
          const moved = outcome("RENAME mv → d/mv", () => {
            ops.rename(FUSE_ROOT_ID, "mv", n, "mv");
            return true;
          });
          if (moved) {
            const again = attempt(() => ops.lookup(n, "mv"));
            if (again.ok) forget.push(again.value.nodeid);
            outcome("RENAME d/mv → mv", () => ops.rename(n, "mv", FUSE_ROOT_ID, "mv"));
          }
        } else {
          // A half-done pair left "mv" inside d: make a new one.
          const r = attempt(() => ops.create(FUSE_ROOT_ID, "mv", O_RDWR, 0o644));
          count(`CREATE mv again: ${r.ok ? "ok" : errnoName(r.errno)}`);
          if (r.ok) {
            forget.push(r.value.entry.nodeid);
            ops.release(r.value.entry.nodeid, r.value.open.fh);
          }
        }
        if (iterations % 4 === 0) {
          const dh = outcome("OPENDIR d", () => ops.opendir(n));
          if (dh !== undefined) {
            const names = outcome("READDIR d", () => ops.readdirAll(n, dh.fh).entries);
            for (const x of names ?? []) {
              if (!insideNames.has(x.name) && !x.name.startsWith("cfz-")) {
                violations.push(`READDIR d listed ${JSON.stringify(x.name)}`);
              }
            }
            ops.releasedir(n, dh.fh);
          }
        }
      }
      const counted = new Map<bigint, number>();
      for (const id of forget) counted.set(id, (counted.get(id) ?? 0) + 1);
      if (counted.size > 0) ops.batchForget([...counted]);
      if (performance.now() >= nextCheck) {
        const changed = await w.changes(before);
        if (changed.length > 0) violations.push(...changed);
        nextCheck = performance.now() + 500;
        if (violations.length > 0) break;
      }
    }
  } finally {
    const out = await racerOut;
    const text = dec.decode(out.stdout).trim();
    console.log(
      `CONFINE-RACE [${c.kind}] ${raceSeconds(c.kind)} s: ${iterations} guest rounds, ` +
        `${text} host swaps (racer exit ${out.code}${
          out.code === 0 ? "" : `: ${dec.decode(out.stderr)}`
        })\n` +
        [...counts].sort(([x], [y]) => x.localeCompare(y)).map(([k, v]) => `  ${k}: ${v}`)
          .join("\n"),
    );
    assert.equal(out.code, 0, `the racer failed: ${dec.decode(out.stderr)}`);
  }
  assert.deepEqual(violations, [], "nothing outside the share was reached");
  assert.deepEqual(await w.changes(before), [], "nothing outside the share was read or changed");
  assert.ok((counts.get("LOOKUP d → directory") ?? 0) > 0, "the guest saw the directory");
  assert.ok((counts.get("LOOKUP d → symlink") ?? 0) > 0, "the guest saw the symlink");
  // Alive, and d is the directory again.
  const e = ops.lookup(FUSE_ROOT_ID, "d");
  assert.equal(e.attr.ino, inside.d, "d is the real directory again");
  ops.forget(e.nodeid, 1);
}

// ---- tests ------------------------------------------------------------------------------------

for (const kind of daemonsUnderTest()) {
  Deno.test(`CONFINE-SLASH names holding "/" are refused [${kind}]`, async (t) => {
    await runScenarios(t, kind, "slash", SLASH);
  });

  Deno.test(`CONFINE-DOTS "." and ".." are refused where a new name is needed [${kind}]`, async (t) => {
    await runScenarios(t, kind, "dots", DOTS);
  });

  Deno.test(`CONFINE-PARENT ".." never leaves the share [${kind}]`, async (t) => {
    await runScenarios(t, kind, "parent", PARENT);
  });

  Deno.test(`CONFINE-SYMLINK symlinks out of the share are never followed [${kind}]`, async (t) => {
    await runScenarios(t, kind, "symlink", SYMLINKS);
  });

  Deno.test(`CONFINE-LINK hard links only to nodes the guest holds [${kind}]`, async (t) => {
    await runScenarios(t, kind, "link", LINKS);
  });

  Deno.test(`CONFINE-FORGED forged nodeids and fh values [${kind}]`, async (t) => {
    await runScenarios(t, kind, "forged", FORGED);
  });

  Deno.test(
    `CONFINE-RACE a directory swapped for a symlink while the guest works in it [${kind}]`,
    async (t) => {
      await runScenarios(
        t,
        kind,
        "race",
        [{ name: `${raceSeconds(kind)} s of swaps`, run: raceScenario }],
        prepareRace,
      );
    },
  );
}
