/**
 * Spec: a real Linux guest mounts the share and works in it as on a local disk.
 *
 * The design (Linux commit a62a8ef9, "virtio-fs: add virtiofs filesystem"):
 *
 * > - Use fuse protocol (instead of 9p) for communication between guest and host. Guest kernel
 * > will be fuse client and a fuse server will run on host to serve the requests.
 *
 * (OV-FUSE-2: the mount works and every FUSE operation the guest sends is served) and
 *
 * > With the goal of designing something with better performance and local file system
 * > semantics, a bunch of ideas were proposed.
 *
 * (OV-LOCAL-1: POSIX behaviour in the guest matches a local file system: errno, atomic rename,
 * links, permissions, sparse files, xattrs, large files).
 *
 * A Linux 6.1 guest (Debian's cloud kernel) boots under QEMU 7.2 (TCG, `queue-size=1024`, 2 GiB)
 * once per daemon, runs `mount -t virtiofs share /mnt`, and does what a user does on a local
 * disk, with Debian's own programs (coreutils, util-linux, attr, python3) over the serial
 * console (`_driver/qemu_guest.ts`). Each step checks what the guest sees and what the served file
 * system holds afterwards (`c.host`, a {@linkcode HostView}). Where a step compares with "a local
 * file system", it runs the same
 * script in the guest's own tmpfs (`/tmp`) and on the share and requires the same results, errno
 * by errno; where tmpfs cannot be the bar (user xattrs, which 6.1's tmpfs lacks), the expected
 * values are written out.
 *
 * The CONFINE- steps try every confinement rule from inside the guest: the guest kernel resolves
 * paths and symlinks itself, so a symlink to `/` in the share, `..` of the mount root, and
 * `a/../../..` all lead into the guest's own tree, never the host's, and nothing outside the
 * shared directory changes.
 *
 * Daemons: every one in `DAEMONS` (default ours, c, rust), with xattrs on (ours `--xattr`, C
 * `-o xattr`, Rust `--xattr`). Without `SPEC_FULL=1`, C and Rust run only the steps marked `ref`;
 * their known departures are in `spec/expectations/guest.json` (see
 * `_driver/guest_expectations.ts`). Ours has none: where ours departs, the step fails.
 *
 * Memory: whenever ours is in `DAEMONS`, the same steps run once more against the library's
 * `MemoryFs` (`examples/memory_fs.ts`, 1 GiB), held to ours' bar (no departures). Its "host
 * side" is the daemon's memory, which the test reaches only through the guest: the
 * {@linkcode HostView} then runs guest commands on the same mount after dropping the guest's
 * caches (`echo 3 > /proc/sys/vm/drop_caches`), so that names, attributes and bytes come back
 * from the daemon. (A second `mount -t virtiofs` of the tag would be no fresher: Linux gives it
 * the same superblock, caches and all.) Steps about a host directory by nature (`hostDir`) are
 * skipped there, and say so.
 *
 * DAX window: whenever ours is in `DAEMONS`, the same steps run once more on ours started with a
 * cache window (`--tag share --cache-size 64M --request-queues 1`), in the same guest booted
 * under QEMU 11.1 on its generic vhost-user device (`vhost-user-test-device-pci`, which takes the
 * tag, the queues and the window from the daemon). The plain `mount -t virtiofs share /mnt` is
 * then DAX inode mode: a regular file whose size is a whole number of 2 MiB ranges at the first
 * attributes the guest gets for it (the host's 256 MiB file of the large-file step, the files of
 * the DAX-2 step) is read and written through the window (FUSE_SETUPMAPPING and
 * FUSE_REMOVEMAPPING), every other file through FUSE_READ and FUSE_WRITE. The DAX-2 step runs in
 * that variant only, and the test ends by requiring SETUPMAPPINGs in the daemon's `DAX:` line.
 * No step unlinks a DAX file while it is open: a Linux 6.1 guest that unlinks an open DAX file
 * with mapped ranges and then closes it deadlocks (a guest kernel bug, not the daemon's).
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { getxattrRaw } from "../src/ffi/fs.ts";
import {
  type DaemonHandle,
  type DaemonKind,
  daemonsUnderTest,
  OURS_SANDBOXED,
  startDaemon,
} from "./_driver/daemon.ts";
import { Buffer } from "node:buffer";
import { deflateSync } from "node:zlib";
import { type GuestKind, type GuestStep, runGuestSteps } from "./_driver/guest_expectations.ts";
import { startProgram } from "./_driver/program.ts";
import { WINDOW_BOOT, windowArgs } from "./_driver/dax_guest.ts";
import { QemuGuest } from "./_driver/qemu_guest.ts";

const TAG = "share";
/** The guest's /etc/hostname (fixtures/guest/rootfs/etc/hostname). */
const GUEST_HOSTNAME = "virtiofs-test-guest";
const BIG_FILE_MIB = 256;
const MiB = 1 << 20;
const MANY_ENTRIES = 10_000;
/** The MemoryFs's size: the large-file step holds 2 x 256 MiB at once. */
const MEMORY_MAX_BYTES = 1024 * 1024 * 1024;

/** What every step gets. */
interface Ctx {
  kind: GuestKind;
  /** Ours with a DAX window, in a QEMU 11.1 guest on the generic vhost-user device. */
  dax: boolean;
  g: QemuGuest;
  /** The daemon (undefined for memory: examples/memory_fs.ts is no DaemonHandle). */
  daemon: DaemonHandle | undefined;
  /** The served file system from outside the guest. */
  host: HostView;
  /** A directory beside the shared one (or, for memory, a host directory), which nothing may change. */
  outside: string;
  /** {@linkcode snapshot} of `outside` before the guest booted. */
  outsideBefore: string[];
  /** Unique per run: names of marker files in the guest's and host's /tmp. */
  nonce: string;
}

/**
 * A step; `hostDir` ones are about a host directory by nature and do not run on memory; `daxOnly`
 * ones run only on ours with a DAX window.
 */
interface LocalStep extends GuestStep<Ctx> {
  hostDir?: true;
  daxOnly?: true;
}

/** A file's status in the served file system (the fields of `Deno.FileInfo` the steps use). */
interface HostStat {
  isFile: boolean;
  isDirectory: boolean;
  isSymlink: boolean;
  isSocket: boolean;
  size: number;
  /** st_mode, type bits included. */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  ino: number;
  blocks: number;
  mtimeMs: number;
  atimeMs: number;
}

/**
 * What the served file system holds, seen from outside the guest: "the host side" of a step.
 * Paths are relative to the share's root. For the passthrough daemons it is the shared host
 * directory; for memory, guest commands on /mnt after dropping the guest's caches (and writes
 * are followed by a drop, so that the guest reads them back from the daemon).
 */
interface HostView {
  /** The shared host directory, or undefined (memory). */
  readonly dir: string | undefined;
  /** Block size, total blocks and name length (`stat -f -c '%S %b %l'`) of what is served. */
  statfs(): Promise<string[]>;
  read(rel: string): Promise<Uint8Array>;
  readText(rel: string): Promise<string>;
  readAt(rel: string, offset: number, length: number): Promise<Uint8Array>;
  md5(rel: string): Promise<string>;
  /** Follows symlinks. */
  stat(rel: string): Promise<HostStat>;
  lstat(rel: string): Promise<HostStat>;
  /** lstat finds it. */
  exists(rel: string): Promise<boolean>;
  /** The names in directory `rel` (memory: as `ls -b` prints them, odd bytes escaped). */
  list(rel: string): Promise<string[]>;
  readLink(rel: string): Promise<string>;
  /** getxattr (following symlinks); undefined when the attribute is missing. */
  xattr(rel: string, name: string): Promise<Uint8Array | undefined>;
  /** mkdir -p. */
  mkdir(rel: string): Promise<void>;
  write(rel: string, data: string | Uint8Array): Promise<void>;
  /** Writes `bytes` random bytes; returns their md5. */
  writeRandom(rel: string, bytes: number): Promise<string>;
  /** Creates each of `names` in directory `rel`, empty. */
  createEmpty(rel: string, names: readonly string[]): Promise<void>;
  symlink(target: string, rel: string): Promise<void>;
}

// ---- helpers ----------------------------------------------------------------------------------

/** Single-quotes `s` for sh. */
function q(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** Helpers every guest Python script starts with. `B` is the base directory (argv[1]). */
const PY_PRELUDE = String.raw`
import os, sys, json, errno, stat, ctypes, mmap, socket, time
B = sys.argv[1] if len(sys.argv) > 1 else "/"
def P(*parts):
    return os.path.join(B, *parts)
def E(fn, *a, **k):
    try:
        fn(*a, **k)
        return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def V(fn, *a, **k):
    try:
        v = fn(*a, **k)
        return v.decode("latin-1") if isinstance(v, bytes) else v
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
_libc = ctypes.CDLL(None, use_errno=True)
NOREPLACE, EXCHANGE = 1, 2
def renameat2(a, b, flags):
    if _libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), ctypes.c_uint(flags)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), a)
def put(p, data, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode=0o644):
    fd = os.open(p, flags, mode)
    try:
        os.write(fd, data if isinstance(data, bytes) else data.encode())
    finally:
        os.close(fd)
def get(p):
    with open(p, "rb") as f:
        return f.read().decode("latin-1")
def owner(p):
    try:
        st = os.lstat(p)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return [st.st_uid, st.st_gid, oct(stat.S_IMODE(st.st_mode))]
def wr(p, data, flags=os.O_WRONLY):
    fd = os.open(p, flags)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
def done(x):
    print("@@JSON " + json.dumps(x, sort_keys=True))
`;

/** Runs a Python script in the guest (optionally as the unprivileged user) and returns its JSON. */
async function py(
  g: QemuGuest,
  code: string,
  opts: { base?: string; user?: boolean; timeoutMs?: number } = {},
): Promise<Record<string, unknown>> {
  const prefix = opts.user ? "setpriv --reuid=1000 --regid=1000 --init-groups " : "";
  const cmd = `${prefix}python3 - ${
    q(opts.base ?? "/")
  } <<'@@PYEOF'\n${PY_PRELUDE}\n${code}\n@@PYEOF`;
  const r = await g.sh(cmd, { timeoutMs: opts.timeoutMs });
  const line = r.out.split("\n").find((l) => l.startsWith("@@JSON "));
  if (r.status !== 0 || line === undefined) {
    const last = r.out.trim().split("\n").at(-1) ?? "";
    throw new Error(`guest python failed: ${last} (status ${r.status})\n${r.out.slice(-3000)}`);
  }
  return JSON.parse(line.slice("@@JSON ".length)) as Record<string, unknown>;
}

/**
 * Runs `setup` (as root) then `script` (as root or the user) in a fresh directory of the guest's
 * tmpfs and in a fresh directory of the share, and requires the same results. Returns them.
 */
async function sameAsLocal(
  c: Ctx,
  name: string,
  script: string,
  opts: { setup?: string; user?: boolean } = {},
): Promise<Record<string, unknown>> {
  const results: Record<string, unknown>[] = [];
  for (const base of [`/tmp/local-${name}`, `/mnt/${name}`]) {
    await c.g.shOk(`rm -rf ${base} && mkdir ${base}`);
    if (opts.setup !== undefined) await py(c.g, opts.setup, { base });
    results.push(await py(c.g, script, { base, user: opts.user }));
  }
  const [local, share] = results;
  assert.deepEqual(share, local, "the share behaves like the guest's local tmpfs");
  return share ?? {};
}

/** Polls a guest shell condition for up to `ms` (in the guest, 0.1 s apart). */
async function eventually(g: QemuGuest, cond: string, ms = 5000): Promise<void> {
  const tries = Math.ceil(ms / 100);
  const r = await g.sh(
    `i=0; while [ $i -lt ${tries} ]; do if ${cond}; then exit 0; fi; sleep 0.1; i=$((i+1)); done; exit 1`,
  );
  assert.equal(r.status, 0, `within ${ms} ms: ${cond}\n${r.out}`);
}

/** The permission bits of a host stat. */
function mode(st: HostStat): number {
  return st.mode & 0o7777;
}

function md5(data: Uint8Array): string {
  return createHash("md5").update(data).digest("hex");
}

async function md5File(path: string): Promise<string> {
  const h = createHash("md5");
  using f = await Deno.open(path);
  for await (const chunk of f.readable) h.update(chunk);
  return h.digest("hex");
}

/** `getxattr(2)` on the host; `undefined` when the attribute is missing. */
function hostXattr(path: string, name: string): Uint8Array | undefined {
  const enc = (s: string): Uint8Array => new TextEncoder().encode(`${s}\0`);
  const buf = new Uint8Array(65536);
  const n = getxattrRaw(enc(path), enc(name), buf);
  if (n === -61 /* ENODATA */) return undefined;
  if (n < 0) throw new Error(`host getxattr ${path} ${name}: errno ${-n}`);
  return buf.slice(0, n);
}

/** Names, types, sizes, modes and mtimes of everything under `dir`, for before/after checks. */
async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string): Promise<void> => {
    for await (const e of Deno.readDir(d)) {
      const p = join(d, e.name);
      const st = await Deno.lstat(p);
      out.push(
        `${rel}${e.name} ${st.isFile ? "f" : st.isDirectory ? "d" : "l"} ${st.size} ` +
          `${st.mode} ${st.mtime?.getTime()} ${st.nlink}`,
      );
      if (st.isDirectory) await walk(p, `${rel}${e.name}/`);
    }
  };
  await walk(dir, "");
  return out.sort();
}

async function hostExists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** The shared host directory `dir` as the passthrough daemons serve it. */
function hostDirView(dir: string): HostView {
  const p = (rel: string): string => join(dir, rel);
  const info = (st: Deno.FileInfo): HostStat => ({
    isFile: st.isFile,
    isDirectory: st.isDirectory,
    isSymlink: st.isSymlink,
    isSocket: st.isSocket ?? false,
    size: st.size,
    mode: st.mode ?? -1,
    nlink: st.nlink ?? -1,
    uid: st.uid ?? -1,
    gid: st.gid ?? -1,
    ino: st.ino ?? -1,
    blocks: st.blocks ?? -1,
    mtimeMs: st.mtime?.getTime() ?? NaN,
    atimeMs: st.atime?.getTime() ?? NaN,
  });
  return {
    dir,
    async statfs() {
      const out = await new Deno.Command("stat", { args: ["-f", "-c", "%S %b %l", dir] }).output();
      return new TextDecoder().decode(out.stdout).trim().split(" ");
    },
    read: (rel) => Deno.readFile(p(rel)),
    readText: (rel) => Deno.readTextFile(p(rel)),
    async readAt(rel, offset, length) {
      using f = await Deno.open(p(rel));
      await f.seek(offset, Deno.SeekMode.Start);
      const buf = new Uint8Array(length);
      let n = 0;
      while (n < length) {
        const r = await f.read(buf.subarray(n));
        if (r === null) break;
        n += r;
      }
      return buf.subarray(0, n);
    },
    md5: (rel) => md5File(p(rel)),
    stat: async (rel) => info(await Deno.stat(p(rel))),
    lstat: async (rel) => info(await Deno.lstat(p(rel))),
    exists: (rel) => hostExists(p(rel)),
    list: (rel) => Array.fromAsync(Deno.readDir(p(rel)), (e) => e.name),
    readLink: (rel) => Deno.readLink(p(rel)),
    // deno-lint-ignore require-await
    async xattr(rel, name) {
      return hostXattr(p(rel), name);
    },
    mkdir: (rel) => Deno.mkdir(p(rel), { recursive: true }),
    write: (rel, data) =>
      typeof data === "string" ? Deno.writeTextFile(p(rel), data) : Deno.writeFile(p(rel), data),
    async writeRandom(rel, bytes) {
      const hash = createHash("md5");
      using f = await Deno.open(p(rel), { write: true, create: true, truncate: true });
      for (let done = 0; done < bytes;) {
        const chunk = randomBytes(Math.min(1 << 20, bytes - done));
        hash.update(chunk);
        for (let off = 0; off < chunk.length;) off += await f.write(chunk.subarray(off));
        done += chunk.length;
      }
      return hash.digest("hex");
    },
    // deno-lint-ignore require-await
    async createEmpty(rel, names) {
      for (const n of names) Deno.writeFileSync(join(p(rel), n), new Uint8Array(0));
    },
    symlink: (target, rel) => Deno.symlink(target, p(rel)),
  };
}

/**
 * Guest Python: `dax(path)` is whether the guest's inode is DAX (statx's STATX_ATTR_DAX, which
 * Linux sets for a virtiofs file the daemon marked FUSE_ATTR_DAX), None if statx cannot tell.
 */
const STATX_DAX = String.raw`
import struct
def dax(p):
    buf = ctypes.create_string_buffer(256)
    if _libc.statx(-100, os.fsencode(p), 0, 0x7ff, buf) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), p)
    attributes, mask = struct.unpack_from("<Q", buf.raw, 8)[0], struct.unpack_from("<Q", buf.raw, 56)[0]
    return bool(attributes & 0x200000) if mask & 0x200000 else None
`;

/** `bytes` of a pattern in which every 4 KiB page differs, so that a page out of place shows. */
function pattern(bytes: number, seed: number): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = ((i >>> 12) * 131 + i * 7 + seed * 17) & 0xff;
  return out;
}

/** Drops the guest's page cache, dentries and inodes: what is read next comes from the daemon. */
const DROP_CACHES = "echo 3 > /proc/sys/vm/drop_caches";

/** Milliseconds of a `stat` time printed as `%.9X` (seconds and nine digits). */
function statMs(t: string): number {
  const [sec = "", frac = ""] = t.split(".");
  return Number(sec) * 1000 + Number(frac.padEnd(3, "0").slice(0, 3));
}

/**
 * The MemoryFs behind the guest's /mnt, reached through the guest (the test has no other way
 * into the daemon's memory): each read drops the guest's caches first, each write drops them
 * after. `statfs` is what the MemoryFs was made with: `maxBytes` in 4 KiB blocks, names of 255.
 */
function memoryView(g: QemuGuest, maxBytes: number): HostView {
  const m = (rel: string): string => q(`/mnt/${rel}`);
  const fresh = (cmd: string, timeoutMs?: number): Promise<string> =>
    g.shOk(`${DROP_CACHES} && ${cmd}`, { timeoutMs });
  const written = (cmd: string, timeoutMs?: number): Promise<string> =>
    g.shOk(`${cmd} && sync && ${DROP_CACHES}`, { timeoutMs });
  const fromBase64 = (out: string): Uint8Array => new Uint8Array(Buffer.from(out.trim(), "base64"));
  const statOf = async (rel: string, follow: boolean): Promise<HostStat> => {
    const out = await fresh(
      `stat ${follow ? "-L " : ""}-c '%f %s %h %u %g %i %b %.9X %.9Y' ${m(rel)}`,
    );
    const [f = "", size, nlink, uid, gid, ino, blocks, atime = "", mtime = ""] = out.trim().split(
      " ",
    );
    const mode = parseInt(f, 16);
    const type = mode & 0o170000;
    return {
      isFile: type === 0o100000,
      isDirectory: type === 0o040000,
      isSymlink: type === 0o120000,
      isSocket: type === 0o140000,
      size: Number(size),
      mode,
      nlink: Number(nlink),
      uid: Number(uid),
      gid: Number(gid),
      ino: Number(ino),
      blocks: Number(blocks),
      atimeMs: statMs(atime),
      mtimeMs: statMs(mtime),
    };
  };
  const view: HostView = {
    dir: undefined,
    // deno-lint-ignore require-await
    async statfs() {
      return ["4096", String(Math.floor(maxBytes / 4096)), "255"];
    },
    read: async (rel) => fromBase64(await fresh(`base64 -w0 < ${m(rel)}`)),
    readText: async (rel) => new TextDecoder().decode(await view.read(rel)),
    readAt: async (rel, offset, length) =>
      fromBase64(
        await fresh(
          `dd if=${m(rel)} bs=65536 iflag=skip_bytes,count_bytes skip=${offset} ` +
            `count=${length} status=none | base64 -w0`,
        ),
      ),
    md5: async (rel) => (await fresh(`md5sum < ${m(rel)}`, 180_000)).split(" ")[0] ?? "",
    stat: (rel) => statOf(rel, true),
    lstat: (rel) => statOf(rel, false),
    exists: async (rel) =>
      (await fresh(`if [ -e ${m(rel)} ] || [ -L ${m(rel)} ]; then echo yes; else echo no; fi`)) ===
        "yes\n",
    list: async (rel) => (await fresh(`ls -1Ab ${m(rel)}`)).split("\n").filter((l) => l !== ""),
    readLink: async (rel) => (await fresh(`readlink ${m(rel)}`)).replace(/\n$/, ""),
    async xattr(rel, name) {
      const r = await g.sh(
        `${DROP_CACHES} && getfattr --absolute-names -e hex -n ${q(name)} ${m(rel)}`,
      );
      if (r.status !== 0 && /No such attribute/.test(r.out)) return undefined;
      const value = r.out.match(/^[^#\n][^=\n]*=(?:0x([0-9a-f]*)|"")$/m);
      if (r.status !== 0 || value === null) throw new Error(`getfattr ${rel} ${name}: ${r.out}`);
      return new Uint8Array(Buffer.from(value[1] ?? "", "hex"));
    },
    mkdir: async (rel) => void await written(`mkdir -p ${m(rel)}`),
    async write(rel, data) {
      const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
      await written(`echo ${Buffer.from(bytes).toString("base64")} | base64 -d > ${m(rel)}`);
    },
    async writeRandom(rel, bytes) {
      const out = await written(
        `head -c ${bytes} /dev/urandom | tee ${m(rel)} | md5sum && ` +
          `[ "$(stat -c %s ${m(rel)})" = ${bytes} ]`,
        180_000,
      );
      return out.split(" ")[0] ?? "";
    },
    async createEmpty(rel, names) {
      const packed = deflateSync(Buffer.from(JSON.stringify(names))).toString("base64");
      await py(
        g,
        `import zlib, base64\n` +
          `for n in json.loads(zlib.decompress(base64.b64decode("${packed}"))):\n` +
          `    os.close(os.open(P(n), os.O_CREAT | os.O_WRONLY, 0o644))\n` +
          `done({})`,
        { base: `/mnt/${rel}`, timeoutMs: 180_000 },
      );
      await g.shOk(`sync && ${DROP_CACHES}`);
    },
    symlink: async (target, rel) => void await written(`ln -s ${q(target)} ${m(rel)}`),
  };
  return view;
}

/** The shared host directory of a passthrough step (hostDir steps only). */
function hostDir(c: Ctx): string {
  if (c.host.dir === undefined) throw new Error("a hostDir step ran without a host directory");
  return c.host.dir;
}

// ---- steps ------------------------------------------------------------------------------------

const ERRNO_SCRIPT = String.raw`
r = {}
os.mkdir(P("d")); put(P("f"), "x"); os.mkdir(P("full")); put(P("full", "x"), "")
os.symlink("loop2", P("loop1")); os.symlink("loop1", P("loop2"))
r["open missing"] = E(os.open, P("missing"), os.O_RDONLY)
r["mkdir existing"] = E(os.mkdir, P("d"))
r["O_CREAT|O_EXCL existing"] = E(os.open, P("f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
r["O_CREAT|O_EXCL on a symlink"] = E(os.open, P("loop1"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
r["open under a file"] = E(os.open, P("f", "x"), os.O_RDONLY)
r["open a dir for writing"] = E(os.open, P("d"), os.O_WRONLY)
r["O_DIRECTORY on a file"] = E(os.open, P("f"), os.O_RDONLY | os.O_DIRECTORY)
r["rmdir non-empty"] = E(os.rmdir, P("full"))
r["rmdir a file"] = E(os.rmdir, P("f"))
r["unlink a dir"] = E(os.unlink, P("d"))
r["unlink file/"] = E(os.unlink, P("f") + "/")
r["symlink loop"] = E(os.open, P("loop1"), os.O_RDONLY)
r["O_NOFOLLOW on a symlink"] = E(os.open, P("loop1"), os.O_RDONLY | os.O_NOFOLLOW)
r["name of 255 bytes"] = E(put, P("n" * 255), "")
r["name of 256 bytes"] = E(put, P("n" * 256), "")
r["link to an existing name"] = E(os.link, P("f"), P("full", "x"))
r["hard link to a dir"] = E(os.link, P("d"), P("d2"))
r["readlink a file"] = E(os.readlink, P("f"))
r["readlink missing"] = E(os.readlink, P("missing"))
r["rename a dir into itself"] = E(os.rename, P("d"), P("d", "sub"))
r["rename a file over a dir"] = E(os.rename, P("f"), P("d"))
r["rename a dir over a file"] = E(os.rename, P("d"), P("f"))
r["rename a dir over a non-empty dir"] = E(os.rename, P("d"), P("full"))
r["rename missing"] = E(os.rename, P("missing"), P("x"))
r["rename to another file system"] = E(os.rename, P("f"), "/dev/shm/moved")
r["mkdir under a file"] = E(os.mkdir, P("f", "d"))
r["truncate a dir"] = E(os.truncate, P("d"), 0)
r["truncate to -1"] = E(os.truncate, P("f"), -1)
fd = os.open(P("f"), os.O_RDONLY)
r["write to O_RDONLY"] = E(os.write, fd, b"x")
r["SEEK_DATA past the end"] = E(os.lseek, fd, 10, os.SEEK_DATA)
os.close(fd)
fd = os.open(P("f"), os.O_WRONLY)
r["read from O_WRONLY"] = E(os.read, fd, 1)
os.close(fd)
fd = os.open(P("d"), os.O_RDONLY)
r["read a dir"] = E(os.read, fd, 1)
os.close(fd)
r["chdir to a file"] = E(os.chdir, P("f"))
r["mkdir with a trailing slash"] = E(os.mkdir, P("t") + "/")
r["rmdir ."] = E(os.rmdir, P("d", "."))
r["mknod a FIFO"] = E(os.mkfifo, P("fifo"))
r["listdir"] = sorted(os.listdir(B))
done(r)
`;

const USER_SETUP = String.raw`
os.chmod(B, 0o755)
put(P("root600"), "secret"); os.chmod(P("root600"), 0o600)
put(P("root644"), "data"); os.chmod(P("root644"), 0o644)
put(P("root666"), "rw"); os.chmod(P("root666"), 0o666)
put(P("suid"), "x"); os.chmod(P("suid"), 0o4777)
put(P("sgid-exec"), "x"); os.chmod(P("sgid-exec"), 0o2777)
os.mkdir(P("userdir")); os.chown(P("userdir"), 1000, 1000)
os.mkdir(P("sticky")); os.chmod(P("sticky"), 0o1777)
put(P("sticky", "rootfile"), ""); os.chmod(P("sticky", "rootfile"), 0o666)
os.mkdir(P("sgid")); os.chown(P("sgid"), 0, 100); os.chmod(P("sgid"), 0o2777)
os.mkdir(P("closed")); os.chmod(P("closed"), 0o700)
done({})
`;

const USER_SCRIPT = String.raw`
r = {}
r["ids"] = [os.getuid(), os.getgid(), sorted(os.getgroups())]
r["read root600"] = E(get, P("root600"))
r["read root644"] = E(get, P("root644"))
r["access R_OK root600"] = os.access(P("root600"), os.R_OK)
r["write root644"] = E(os.open, P("root644"), os.O_WRONLY)
r["truncate root644"] = E(os.truncate, P("root644"), 0)
r["create in root's 0755 dir"] = E(put, P("new"), "")
r["list a 0700 dir"] = E(os.listdir, P("closed"))
r["create in own dir"] = E(put, P("userdir", "mine"), "m")
r["own file"] = owner(P("userdir", "mine"))
r["chmod own file"] = E(os.chmod, P("userdir", "mine"), 0o600)
r["chown own file to root"] = E(os.chown, P("userdir", "mine"), 0, -1)
r["chgrp own file to a group of mine"] = E(os.chown, P("userdir", "mine"), -1, 100)
r["chgrp own file to a group not mine"] = E(os.chown, P("userdir", "mine"), -1, 0)
r["own file after"] = owner(P("userdir", "mine"))
r["chmod root's file"] = E(os.chmod, P("root644"), 0o666)
r["chown root's file"] = E(os.chown, P("root644"), 1000, 1000)
r["utime root's file to a given time"] = E(os.utime, P("root666"), (1, 1))
r["utime root's writable file to now"] = E(os.utime, P("root666"), None)
r["utime root's read-only file to now"] = E(os.utime, P("root644"), None)
r["unlink another's file in a sticky dir"] = E(os.unlink, P("sticky", "rootfile"))
r["rename another's file in a sticky dir"] = E(os.rename, P("sticky", "rootfile"), P("sticky", "x"))
r["create in a sticky dir"] = E(put, P("sticky", "userfile"), "")
r["unlink own file in a sticky dir"] = E(os.unlink, P("sticky", "userfile"))
r["write to another's setuid file"] = E(wr, P("suid"), b"y")
r["the write cleared setuid"] = owner(P("suid"))
r["truncate another's setgid file"] = E(os.truncate, P("sgid-exec"), 0)
r["the truncate cleared setgid"] = owner(P("sgid-exec"))
r["create in a setgid dir"] = [E(put, P("sgid", "f"), ""), owner(P("sgid", "f"))]
r["mkdir in a setgid dir"] = [E(os.mkdir, P("sgid", "d")), owner(P("sgid", "d"))]
r["mkdir in own dir"] = [E(os.mkdir, P("userdir", "d")), owner(P("userdir", "d"))]
r["symlink in own dir"] = [E(os.symlink, "mine", P("userdir", "l")), owner(P("userdir", "l"))[:2]]
r["mkdir mode 0777 under umask 022"] = [E(os.mkdir, P("userdir", "m"), 0o777), owner(P("userdir", "m"))]
r["trusted xattr as a user"] = E(os.setxattr, P("userdir", "mine"), "trusted.x", b"1")
r["user xattr on root's file"] = E(os.setxattr, P("root644"), "user.x", b"1")
r["rename own file"] = E(os.rename, P("userdir", "mine"), P("userdir", "renamed"))
r["rmdir own dir"] = E(os.rmdir, P("userdir", "d"))
done(r)
`;

const STEPS: LocalStep[] = [
  {
    name: "OV-FUSE-2 mount -t virtiofs works and statfs reports the file system served",
    ref: true,
    async fn(c) {
      const r = await c.g.sh(`mount -t virtiofs ${TAG} /mnt && grep ' /mnt ' /proc/mounts`);
      assert.equal(r.status, 0, r.out);
      assert.match(r.out, /^share \/mnt virtiofs /m);
      const guest = (await c.g.shOk("stat -f -c '%S %b %l' /mnt")).trim().split(" ");
      assert.deepEqual(
        guest,
        await c.host.statfs(),
        "block size, total blocks and name length as served (the host's, or the MemoryFs's)",
      );
      assert.match(await c.g.shOk("df -P /mnt | tail -1"), /^share\s+\d+/);
    },
  },
  {
    name: "OV-LOCAL-1 create, read, write, append, overwrite in place, truncate",
    ref: true,
    async fn(c) {
      const g = c.g;
      await g.shOk("mkdir /mnt/rw && cd /mnt/rw && printf hello > f && printf ' world' >> f");
      assert.equal(await g.shOk("cat /mnt/rw/f"), "hello world");
      assert.equal(await c.host.readText("rw/f"), "hello world");
      await g.shOk("printf X | dd of=/mnt/rw/f bs=1 seek=2 conv=notrunc status=none");
      assert.equal(await c.host.readText("rw/f"), "heXlo world");
      await g.shOk("truncate -s 5 /mnt/rw/f");
      assert.equal(await c.host.readText("rw/f"), "heXlo");
      await g.shOk("truncate -s 8192 /mnt/rw/f");
      assert.equal(await g.shOk("stat -c %s /mnt/rw/f"), "8192\n");
      const host = await c.host.read("rw/f");
      assert.equal(host.length, 8192);
      assert.ok(host.subarray(5).every((b) => b === 0), "the extension reads as zeros");
      await g.shOk(": > /mnt/rw/f");
      assert.equal((await c.host.stat("rw/f")).size, 0, "O_TRUNC");
      // Larger than a page, at odd offsets, through pwrite/pread.
      const out = await py(
        g,
        String.raw`
data = bytes((i * 7 + 3) % 251 for i in range(200000))
fd = os.open(P("big"), os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
os.pwrite(fd, data, 0)
os.pwrite(fd, b"MIDDLE", 99999)
back = os.pread(fd, 10, 99997)
os.close(fd)
fd = os.open(P("big"), os.O_WRONLY | os.O_APPEND)
os.write(fd, b"TAIL")
os.close(fd)
done({"back": back.decode("latin-1"), "size": os.stat(P("big")).st_size})
`,
        { base: "/mnt/rw" },
      );
      const expect = new Uint8Array(200004);
      for (let i = 0; i < 200000; i++) expect[i] = (i * 7 + 3) % 251;
      expect.set(new TextEncoder().encode("MIDDLE"), 99999);
      expect.set(new TextEncoder().encode("TAIL"), 200000);
      assert.deepEqual(out, {
        back: String.fromCharCode(...expect.subarray(99997, 100007)),
        size: 200004,
      });
      assert.equal(await c.host.md5("rw/big"), md5(expect));
      // Two appenders at once: O_APPEND never loses a line.
      await g.shOk(
        "cd /mnt/rw && (for i in $(seq 100); do echo a >> log; done) & " +
          "(for i in $(seq 100); do echo b >> /mnt/rw/log; done); wait",
      );
      const lines = (await c.host.readText("rw/log")).split("\n").filter((l) => l !== "");
      assert.equal(lines.length, 200);
      // A file the host writes (memory: written through the guest, its caches dropped after),
      // read in the guest.
      await c.host.write("rw/from-host", "written on the host\n");
      assert.equal(await g.shOk("cat /mnt/rw/from-host"), "written on the host\n");
    },
  },
  {
    name: "OV-LOCAL-1 errno: every failing call fails as on the guest's local tmpfs",
    ref: true,
    async fn(c) {
      const r = await sameAsLocal(c, "errno", ERRNO_SCRIPT);
      // The local bar itself, for the record (and so that a broken baseline cannot pass).
      assert.equal(r["open missing"], "ENOENT");
      assert.equal(r["rmdir non-empty"], "ENOTEMPTY");
      assert.equal(r["name of 256 bytes"], "ENAMETOOLONG");
      assert.equal(r["rename to another file system"], "EXDEV");
      assert.equal(r["symlink loop"], "ELOOP");
    },
  },
  {
    name: "OV-LOCAL-1 mkdir, rmdir, nested trees, modes and link counts",
    ref: true,
    async fn(c) {
      const g = c.g;
      await g.shOk("mkdir -p /mnt/dirs/a/b/c /mnt/dirs/a/b2 && mkdir -m 0700 /mnt/dirs/private");
      assert.equal(await g.shOk("stat -c '%a %h' /mnt/dirs/private /mnt/dirs/a"), "700 2\n755 4\n");
      assert.equal(mode(await c.host.stat("dirs/private")), 0o700);
      assert.equal((await c.host.stat("dirs/a")).nlink, 4);
      assert.ok((await c.host.stat("dirs/a/b/c")).isDirectory);
      await g.shOk("rmdir /mnt/dirs/a/b/c");
      assert.equal(await c.host.exists("dirs/a/b/c"), false);
      assert.equal(await g.shOk("ls -1a /mnt/dirs/a/b"), ".\n..\n");
      await g.shOk("rm -r /mnt/dirs/a");
      assert.deepEqual(await c.host.list("dirs"), ["private"]);
    },
  },
  {
    name: "OV-LOCAL-1 rename: over an existing file, across directories, NOREPLACE, EXCHANGE",
    ref: true,
    async fn(c) {
      const script = String.raw`
r = {}
put(P("old"), "old"); put(P("new"), "new")
ino = os.stat(P("new")).st_ino
os.rename(P("new"), P("old"))
r["over an existing file"] = [get(P("old")), os.path.exists(P("new")), os.stat(P("old")).st_ino == ino]
os.mkdir(P("x")); os.mkdir(P("y")); put(P("x", "f"), "1")
os.rename(P("x", "f"), P("y", "g"))
r["across dirs"] = [os.listdir(P("x")), os.listdir(P("y")), get(P("y", "g"))]
os.rename(P("y"), P("x", "y"))
r["a dir with its contents"] = sorted(os.listdir(P("x"))) + [get(P("x", "y", "g"))]
os.mkdir(P("empty"))
r["a dir over an empty dir"] = E(os.rename, P("x"), P("empty"))
put(P("a"), "A"); put(P("b"), "B")
r["NOREPLACE onto an existing name"] = E(renameat2, P("a"), P("b"), NOREPLACE)
r["NOREPLACE onto a new name"] = E(renameat2, P("a"), P("c"), NOREPLACE)
ia, ib = os.stat(P("c")).st_ino, os.stat(P("b")).st_ino
r["EXCHANGE"] = [E(renameat2, P("c"), P("b"), EXCHANGE), get(P("c")), get(P("b"))]
r["EXCHANGE swaps inodes"] = [os.stat(P("c")).st_ino == ib, os.stat(P("b")).st_ino == ia]
os.mkdir(P("dir"))
r["EXCHANGE a file with a dir"] = [E(renameat2, P("c"), P("dir"), EXCHANGE), os.path.isdir(P("c")), get(P("dir"))]
r["EXCHANGE with a missing name"] = E(renameat2, P("b"), P("nothing"), EXCHANGE)
r["onto itself"] = [E(os.rename, P("b"), P("b")), get(P("b"))]
os.link(P("b"), P("b2"))
r["onto a hard link of itself"] = [E(os.rename, P("b"), P("b2")), sorted(os.listdir(B))]
done(r)
`;
      const r = await sameAsLocal(c, "ren", script);
      assert.deepEqual(r["over an existing file"], ["new", false, true]);
      assert.deepEqual(r["EXCHANGE"], ["OK", "B", "A"]);
      // And on the host:
      assert.equal(await c.host.readText("ren/old"), "new");
      assert.equal(await c.host.readText("ren/dir"), "B");
      assert.ok((await c.host.stat("ren/c")).isDirectory);
      assert.equal(await c.host.readText("ren/empty/y/g"), "1");
    },
  },
  {
    name: "OV-LOCAL-1 rename over a file is atomic: a reader never sees it missing or partial",
    async fn(c) {
      await c.g.shOk("mkdir /mnt/atomic");
      const r = await py(
        c.g,
        String.raw`
tgt = P("target"); put(tgt, "v0" * 5000)
pid = os.fork()
if pid == 0:
    for i in range(1, 301):
        tmp = P("tmp%d" % i)
        put(tmp, ("v%d" % (i % 10)) * 5000)
        os.rename(tmp, tgt)
    os._exit(0)
bad = missing = reads = 0
while True:
    try:
        d = get(tgt)
        reads += 1
        if len(d) != 10000 or len(set(d[i:i + 2] for i in range(0, 10000, 2))) != 1:
            bad += 1
    except FileNotFoundError:
        missing += 1
    if os.waitpid(pid, os.WNOHANG)[0] == pid:
        break
done({"bad": bad, "missing": missing, "reads": reads > 10, "left": sorted(os.listdir(B))})
`,
        { base: "/mnt/atomic", timeoutMs: 120_000 },
      );
      assert.deepEqual(r, { bad: 0, missing: 0, reads: true, left: ["target"] });
    },
  },
  {
    name: "OV-LOCAL-1 hard and symbolic links",
    ref: true,
    async fn(c) {
      const g = c.g;
      await g.shOk(
        "mkdir /mnt/links && cd /mnt/links && echo data > f && ln f g && mkdir sub && ln g sub/h",
      );
      const [f, gg] = (await g.shOk("stat -c '%h %i' /mnt/links/f /mnt/links/g")).trim().split(
        "\n",
      );
      assert.equal(f, gg, "same inode, same count");
      assert.match(f ?? "", /^3 /);
      const hf = await c.host.stat("links/f");
      assert.equal(hf.nlink, 3);
      assert.equal((await c.host.stat("links/sub/h")).ino, hf.ino);
      await g.shOk("echo more >> /mnt/links/g");
      assert.equal(await g.shOk("cat /mnt/links/f"), "data\nmore\n");
      await g.shOk("rm /mnt/links/f");
      assert.equal(await g.shOk("stat -c %h /mnt/links/g"), "2\n");
      assert.equal((await c.host.stat("links/g")).nlink, 2);

      await g.shOk(
        "cd /mnt/links && ln -s g sym && ln -s /nonexistent dangling && ln -s sub dirlink",
      );
      assert.equal(await g.shOk("readlink /mnt/links/sym; cat /mnt/links/sym"), "g\ndata\nmore\n");
      assert.equal(await g.shOk("stat -c %F /mnt/links/sym"), "symbolic link\n");
      assert.equal(await c.host.readLink("links/sym"), "g");
      assert.equal(await c.host.readLink("links/dangling"), "/nonexistent");
      const dangling = await g.sh("cat /mnt/links/dangling");
      assert.notEqual(dangling.status, 0);
      assert.match(dangling.out, /No such file or directory/);
      assert.equal(await g.shOk("ls -1 /mnt/links/dirlink/"), "h\n");
      const long = "d/".repeat(2000) + "end";
      await g.shOk(`ln -s ${long} /mnt/links/long`);
      assert.equal(await g.shOk("readlink /mnt/links/long"), `${long}\n`);
      assert.equal(await c.host.readLink("links/long"), long);
      assert.equal(
        await g.shOk("stat -c %s /mnt/links/long"),
        `${long.length}\n`,
        "a symlink's size is its target's length",
      );
    },
  },
  {
    name: "OV-LOCAL-1 chmod, chown and utimes as root",
    ref: true,
    async fn(c) {
      const g = c.g;
      await g.shOk("mkdir /mnt/attrs && touch /mnt/attrs/f && ln -s f /mnt/attrs/l");
      await g.shOk("chmod 0751 /mnt/attrs/f");
      assert.equal(await g.shOk("stat -c %a /mnt/attrs/f"), "751\n");
      assert.equal(mode(await c.host.stat("attrs/f")), 0o751);
      const ctime0 = await g.shOk("stat -c %Z.%z /mnt/attrs/f");
      await g.shOk("sleep 0.05; chmod 4755 /mnt/attrs/f");
      assert.equal(await g.shOk("stat -c %a /mnt/attrs/f"), "4755\n");
      assert.equal(mode(await c.host.stat("attrs/f")), 0o4755);
      assert.notEqual(await g.shOk("stat -c %Z.%z /mnt/attrs/f"), ctime0, "chmod changes ctime");
      await g.shOk("chown 1234:5678 /mnt/attrs/f && chown -h 4321:8765 /mnt/attrs/l");
      assert.equal(
        await g.shOk("stat -c '%u %g' /mnt/attrs/f /mnt/attrs/l"),
        "1234 5678\n4321 8765\n",
      );
      const hf = await c.host.stat("attrs/f");
      const hl = await c.host.lstat("attrs/l");
      assert.deepEqual([hf.uid, hf.gid, hl.uid, hl.gid], [1234, 5678, 4321, 8765]);
      assert.equal(mode(hf), 0o755, "chown by root clears setuid, as locally");
      await g.shOk("touch -m -d @1000000000.123456789 /mnt/attrs/f");
      await g.shOk("touch -a -d @1234567890.5 /mnt/attrs/f");
      assert.equal(
        await g.shOk("stat -c '%y|%x' /mnt/attrs/f"),
        "2001-09-09 01:46:40.123456789 +0000|2009-02-13 23:31:30.500000000 +0000\n",
      );
      const hf2 = await c.host.stat("attrs/f");
      assert.equal(hf2.mtimeMs, 1000000000123);
      assert.equal(hf2.atimeMs, 1234567890500);
      await g.shOk("touch /mnt/attrs/f");
      const now = Date.now();
      const guestMtime = Number(await g.shOk("stat -c %.3Y /mnt/attrs/f")) * 1000;
      assert.ok(Math.abs(guestMtime - now) < 3000, `touch sets now: ${guestMtime} vs ${now}`);
      assert.ok(Math.abs((await c.host.stat("attrs/f")).mtimeMs - now) < 3000);
      // The guest's view survives dropping its caches: it was the host's all along.
      assert.equal(
        await g.shOk("echo 3 > /proc/sys/vm/drop_caches; stat -c '%a %u %g' /mnt/attrs/f"),
        "755 1234 5678\n",
      );
    },
  },
  {
    name: "OV-LOCAL-1 permissions as an unprivileged guest user match the local tmpfs",
    ref: true,
    async fn(c) {
      const r = await sameAsLocal(c, "perm", USER_SCRIPT, { setup: USER_SETUP, user: true });
      assert.deepEqual(r["ids"], [1000, 1000, [100, 1000]]);
      assert.equal(r["read root600"], "EACCES");
      assert.equal(r["create in own dir"], "OK");
      assert.equal(r["chown own file to root"], "EPERM");
      assert.equal(r["unlink another's file in a sticky dir"], "EPERM");
      assert.deepEqual(r["the write cleared setuid"], [0, 0, "0o777"]);
      // On the host, as the guest left it:
      const mine = await c.host.stat("perm/userdir/renamed");
      assert.deepEqual([mine.uid, mine.gid, mode(mine)], [1000, 100, 0o600]);
      const sg = await c.host.stat("perm/sgid/f");
      assert.deepEqual([sg.uid, sg.gid], [1000, 100]);
      assert.equal(mode(await c.host.stat("perm/suid")), 0o777);
      assert.equal((await c.host.lstat("perm/userdir/l")).uid, 1000);
    },
  },
  {
    name:
      `OV-LOCAL-1 large files: ${BIG_FILE_MIB} MiB with equal checksums on host and guest, an offset past 4 GiB`,
    async fn(c) {
      const g = c.g;
      await c.host.mkdir("big");
      const sum = await c.host.writeRandom("big/host.bin", BIG_FILE_MIB << 20);
      const timeoutMs = 180_000;
      assert.equal(
        await g.shOk("md5sum < /mnt/big/host.bin", { timeoutMs }),
        `${sum}  -\n`,
        "the guest reads what the host wrote",
      );
      await g.shOk("dd if=/mnt/big/host.bin of=/mnt/big/guest.bin bs=1M conv=fsync status=none", {
        timeoutMs,
      });
      assert.equal((await c.host.stat("big/guest.bin")).size, BIG_FILE_MIB << 20);
      assert.equal(await c.host.md5("big/guest.bin"), sum, "the host reads what the guest wrote");
      assert.equal(
        await g.shOk("echo 3 > /proc/sys/vm/drop_caches; md5sum < /mnt/big/guest.bin", {
          timeoutMs,
        }),
        `${sum}  -\n`,
        "and the guest reads it back, uncached",
      );
      // Past 4 GiB (and 2^32 blocks of nothing): 64-bit offsets all the way.
      const far = 5 * 1024 * 1024 * 1024;
      await g.shOk(`printf END | dd of=/mnt/big/far bs=1 seek=${far} status=none`);
      assert.equal(
        await g.shOk("stat -c %s /mnt/big/far; tail -c 3 /mnt/big/far"),
        `${far + 3}\nEND`,
      );
      const st = await c.host.stat("big/far");
      assert.equal(st.size, far + 3);
      assert.ok(st.blocks < 64, "sparse on the host too");
      assert.equal(new TextDecoder().decode(await c.host.readAt("big/far", far, 3)), "END");
      await g.shOk("rm /mnt/big/host.bin /mnt/big/guest.bin");
    },
  },
  {
    name:
      "DAX-2 files of whole 2 MiB ranges the host put there go through the window: read, changed in place and by mmap, renamed, removed",
    daxOnly: true,
    hostDir: true,
    async fn(c) {
      const g = c.g;
      const dir = join(hostDir(c), "dax");
      await Deno.mkdir(join(dir, "sub"), { recursive: true });
      // Before the guest looks them up: the daemon decides at a node's first attributes.
      const sizes: Record<string, number> = {
        "two.bin": 2 * MiB,
        "eight.bin": 8 * MiB,
        "odd.bin": 3 * MiB + 4096,
      };
      for (const [i, [name, size]] of Object.entries(sizes).entries()) {
        await Deno.writeFile(join(dir, name), pattern(size, i));
      }
      const daxOf = (names: string[]): Promise<Record<string, unknown>> =>
        py(g, `${STATX_DAX}\ndone({n: dax(P(n)) for n in ${JSON.stringify(names)}})`, {
          base: "/mnt/dax",
        });
      assert.deepEqual(
        await daxOf(["two.bin", "eight.bin", "odd.bin"]),
        { "two.bin": true, "eight.bin": true, "odd.bin": false },
        "FUSE_ATTR_DAX (the guest's STATX_ATTR_DAX) on exactly the files of whole 2 MiB ranges",
      );
      const guestSums = async (names: string[]): Promise<string[]> =>
        (await g.shOk(`${DROP_CACHES} && cd /mnt/dax && md5sum ${names.join(" ")}`, {
          timeoutMs: 120_000,
        })).trim().split("\n").map((l) => l.split(" ")[0] ?? "");
      const hostSums = (names: string[]): Promise<string[]> =>
        Promise.all(names.map((n) => c.host.md5(`dax/${n}`)));
      const all = ["two.bin", "eight.bin", "odd.bin"];
      assert.deepEqual(
        await guestSums(all),
        await hostSums(all),
        "the guest reads the host's bytes",
      );

      // The host changes bytes in place: nothing caches them in between, the guest sees them at once.
      {
        using f = await Deno.open(join(dir, "eight.bin"), { write: true });
        await f.seek(5 * MiB - 3, Deno.SeekMode.Start);
        await f.write(new TextEncoder().encode("HOST-CHANGED"));
      }
      assert.equal(
        await g.shOk(
          `dd if=/mnt/dax/eight.bin bs=4096 iflag=skip_bytes,count_bytes skip=${
            5 * MiB - 3
          } count=12 status=none`,
        ),
        "HOST-CHANGED",
      );

      // The guest writes in place: 1 MiB across eight.bin's first 2 MiB boundary, 5 bytes into
      // two.bin; the host reads them at once, and the sizes stay.
      const chunk = (await g.shOk(
        "head -c 1048576 /dev/urandom >/tmp/dax-chunk && md5sum </tmp/dax-chunk",
      )).split(" ")[0];
      await g.shOk(
        `dd if=/tmp/dax-chunk of=/mnt/dax/eight.bin bs=65536 oflag=seek_bytes seek=${
          3 * MiB / 2
        } conv=notrunc status=none && ` +
          "printf GUEST | dd of=/mnt/dax/two.bin bs=1 seek=1000000 conv=notrunc status=none",
      );
      assert.equal(md5(await c.host.readAt("dax/eight.bin", 3 * MiB / 2, MiB)), chunk);
      assert.equal(
        new TextDecoder().decode(await c.host.readAt("dax/two.bin", 1000000, 5)),
        "GUEST",
      );
      assert.deepEqual(
        [(await c.host.stat("dax/eight.bin")).size, (await c.host.stat("dax/two.bin")).size],
        [8 * MiB, 2 * MiB],
      );

      // mmap MAP_SHARED: the guest maps the window's pages themselves.
      const r = await py(
        g,
        String.raw`
M = 1 << 20
fd = os.open(P("eight.bin"), os.O_RDWR)
m = mmap.mmap(fd, 8 * M, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
r = {"read": m[5 * M - 3:5 * M + 9].decode()}
m[7 * M - 3:7 * M + 4] = b"MMAPPED"
m.flush(); m.close(); os.close(fd)
done(r)
`,
        { base: "/mnt/dax" },
      );
      assert.deepEqual(r, { read: "HOST-CHANGED" });
      assert.equal(
        new TextDecoder().decode(await c.host.readAt("dax/eight.bin", 7 * MiB - 3, 7)),
        "MMAPPED",
      );
      assert.deepEqual(await guestSums(all), await hostSums(all), "whole files, after all that");

      // Renamed (in its directory, and into another): the same bytes, still through the window.
      await g.shOk("cd /mnt/dax && mv eight.bin eight-renamed.bin && mv two.bin sub/two-moved.bin");
      assert.deepEqual(await c.host.list("dax/sub"), ["two-moved.bin"]);
      assert.equal(await c.host.exists("dax/eight.bin"), false);
      assert.equal(await c.host.exists("dax/two.bin"), false);
      const moved = ["eight-renamed.bin", "sub/two-moved.bin"];
      assert.deepEqual(await guestSums(moved), await hostSums(moved));
      assert.deepEqual(await daxOf(moved), {
        "eight-renamed.bin": true,
        "sub/two-moved.bin": true,
      });

      // A file the guest makes is empty at its first attributes: not DAX, even at 2 MiB.
      await g.shOk("head -c 2097152 /dev/zero >/mnt/dax/made.bin");
      assert.deepEqual(await daxOf(["made.bin"]), { "made.bin": false });

      // Removed, none of them open (see the module's doc on Linux 6.1 and open DAX files).
      await g.shOk(
        "cd /mnt/dax && rm eight-renamed.bin sub/two-moved.bin odd.bin made.bin && rmdir sub",
      );
      assert.equal(await g.shOk("ls -A /mnt/dax"), "");
      assert.deepEqual(await c.host.list("dax"), []);
      await g.shOk("rmdir /mnt/dax");
      assert.equal(await c.host.exists("dax"), false);
    },
  },
  {
    name: "OV-LOCAL-1 sparse files: SEEK_DATA/SEEK_HOLE, st_blocks, fallocate and punching holes",
    ref: true,
    async fn(c) {
      const script = String.raw`
r = {}
M = 1 << 20
fd = os.open(P("s"), os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
os.pwrite(fd, b"a" * 4096, 0)
os.pwrite(fd, b"b" * 4096, M)
os.ftruncate(fd, 4 * M)
os.fsync(fd)
r["size"] = os.fstat(fd).st_size
r["seeks"] = [os.lseek(fd, 0, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_HOLE),
              os.lseek(fd, 4096, os.SEEK_DATA), os.lseek(fd, M, os.SEEK_HOLE),
              os.lseek(fd, M + 4096, os.SEEK_HOLE)]
r["SEEK_DATA in the trailing hole"] = E(os.lseek, fd, 2 * M, os.SEEK_DATA)
r["reads zeros in a hole"] = os.pread(fd, 8, 8192) == bytes(8)
r["blocks"] = os.fstat(fd).st_blocks
os.close(fd)
fd = os.open(P("s"), os.O_RDWR)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
PUNCH, KEEP = 2, 1
r["punch a hole"] = _libc.fallocate(fd, PUNCH | KEEP, 0, 4096)
r["after punching"] = [os.lseek(fd, 0, os.SEEK_DATA), os.fstat(fd).st_size, os.pread(fd, 4, 0) == bytes(4)]
os.close(fd)
fd = os.open(P("pre"), os.O_CREAT | os.O_RDWR, 0o644)
os.posix_fallocate(fd, 0, 8 * M)
st = os.fstat(fd)
r["preallocated"] = [st.st_size, st.st_blocks >= 8 * M // 512]
os.close(fd)
done(r)
`;
      const r = await sameAsLocal(c, "sparse", script);
      const M = 1 << 20;
      assert.deepEqual(r["seeks"], [0, 4096, M, M + 4096, M + 4096]);
      assert.equal(r["SEEK_DATA in the trailing hole"], "ENXIO");
      assert.deepEqual(r["after punching"], [M, 4 * M, true]);
      const st = await c.host.stat("sparse/s");
      assert.equal(st.size, 4 * M);
      assert.ok(st.blocks <= 16, `host blocks ${st.blocks}: the holes stayed holes`);
    },
  },
  {
    name: "OV-LOCAL-1 extended attributes: set, get, list, remove, flags, namespaces",
    ref: true,
    async fn(c) {
      const g = c.g;
      await g.shOk(
        "mkdir /mnt/xattr && touch /mnt/xattr/f && mkdir /mnt/xattr/d && ln -s f /mnt/xattr/l",
      );
      await g.shOk("setfattr -n user.color -v blue /mnt/xattr/f");
      assert.equal(
        await g.shOk("getfattr --absolute-names --only-values -n user.color /mnt/xattr/f"),
        "blue",
      );
      assert.match(await g.shOk("getfattr --absolute-names -d /mnt/xattr/f"), /user\.color="blue"/);
      const r = await py(
        g,
        String.raw`
r = {}
f, d, l = P("f"), P("d"), P("l")
r["create an existing one"] = E(os.setxattr, f, "user.color", b"red", os.XATTR_CREATE)
r["replace a missing one"] = E(os.setxattr, f, "user.none", b"x", os.XATTR_REPLACE)
r["get a missing one"] = E(os.getxattr, f, "user.none")
big = bytes(range(256)) * 8
os.setxattr(f, "user.big", big)
r["2 KiB value round trip"] = V(os.getxattr, f, "user.big") == big.decode("latin-1")
r["empty value"] = [E(os.setxattr, f, "user.empty", b""), V(os.getxattr, f, "user.empty")]
r["list"] = sorted(os.listxattr(f))
r["on a dir"] = [E(os.setxattr, d, "user.dir", b"1"), V(os.getxattr, d, "user.dir")]
r["user.* on a symlink"] = E(os.setxattr, l, "user.x", b"1", follow_symlinks=False)
r["trusted.* as root"] = [E(os.setxattr, f, "trusted.t", b"1"), V(os.getxattr, f, "trusted.t")]
r["over 64 KiB"] = E(os.setxattr, f, "user.huge", b"x" * 65537)
r["remove"] = E(os.removexattr, f, "user.color")
r["after remove"] = E(os.getxattr, f, "user.color")
r["remove a missing one"] = E(os.removexattr, f, "user.color")
done(r)
`,
        { base: "/mnt/xattr" },
      );
      // In the sandbox, trusted.* needs CAP_SYS_ADMIN, which it does not keep (as Rust's).
      const noSysAdmin = c.kind === "ours" && OURS_SANDBOXED;
      assert.deepEqual(r, {
        "create an existing one": "EEXIST",
        "replace a missing one": "ENODATA",
        "get a missing one": "ENODATA",
        "2 KiB value round trip": true,
        "empty value": ["OK", ""],
        "list": ["user.big", "user.color", "user.empty"],
        "on a dir": ["OK", "1"],
        "user.* on a symlink": "EPERM",
        "trusted.* as root": noSysAdmin ? ["EPERM", "ENODATA"] : ["OK", "1"],
        "over 64 KiB": "E2BIG",
        remove: "OK",
        "after remove": "ENODATA",
        "remove a missing one": "ENODATA",
      });
      const big = new Uint8Array(2048).map((_, i) => i % 256);
      assert.deepEqual(await c.host.xattr("xattr/f", "user.big"), big);
      assert.equal(await c.host.xattr("xattr/f", "user.color"), undefined);
      assert.deepEqual(await c.host.xattr("xattr/d", "user.dir"), new TextEncoder().encode("1"));
      assert.deepEqual(
        await c.host.xattr("xattr/f", "trusted.t"),
        noSysAdmin ? undefined : new TextEncoder().encode("1"),
      );
    },
  },
  {
    name: "OV-LOCAL-1 fsync, fdatasync, fsync of a directory, sync and syncfs",
    ref: true,
    async fn(c) {
      const r = await py(
        c.g,
        String.raw`
r = {}
fd = os.open(P("f"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
os.write(fd, b"durable")
r["fsync"] = E(os.fsync, fd)
os.write(fd, b"!")
r["fdatasync"] = E(os.fdatasync, fd)
os.close(fd)
dfd = os.open(B, os.O_RDONLY | os.O_DIRECTORY)
r["fsync a dir"] = E(os.fsync, dfd)
os.close(dfd)
r["sync"] = E(os.sync)
done(r)
`,
        { base: (await c.g.shOk("mkdir /mnt/fsync && echo /mnt/fsync")).trim() },
      );
      assert.deepEqual(r, { fsync: "OK", fdatasync: "OK", "fsync a dir": "OK", sync: "OK" });
      await c.g.shOk("sync -f /mnt/fsync/f && sync /mnt/fsync/f && sync -d /mnt/fsync/f");
      assert.equal(await c.host.readText("fsync/f"), "durable!");
    },
  },
  {
    name: "OV-LOCAL-1 mmap MAP_SHARED: reads the host's data, writes reach the host",
    ref: true,
    async fn(c) {
      await c.host.mkdir("mmap");
      await c.host.write("mmap/f", "host-data".padEnd(8192, "."));
      const r = await py(
        c.g,
        String.raw`
r = {}
fd = os.open(P("f"), os.O_RDWR)
m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
r["read"] = m[:9].decode()
m[0:5] = b"GUEST"
m[4096:4101] = b"PAGE2"
m.flush()
r["read(2) sees it"] = os.pread(fd, 5, 4096).decode()
m2 = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ)
r["a second mapping sees it"] = m2[0:5].decode()
m2.close(); m.close(); os.close(fd)
fd = os.open(P("grown"), os.O_CREAT | os.O_RDWR, 0o644)
os.ftruncate(fd, 16384)
m = mmap.mmap(fd, 16384, mmap.MAP_SHARED)
m[12000:12004] = b"GREW"
m.flush(); m.close(); os.close(fd)
done(r)
`,
        { base: "/mnt/mmap" },
      );
      assert.deepEqual(r, {
        read: "host-data",
        "read(2) sees it": "PAGE2",
        "a second mapping sees it": "GUEST",
      });
      const host = await c.host.readText("mmap/f");
      assert.equal(host.slice(0, 9), "GUESTdata");
      assert.equal(host.slice(4096, 4101), "PAGE2");
      const grown = await c.host.read("mmap/grown");
      assert.equal(grown.length, 16384);
      assert.equal(new TextDecoder().decode(grown.subarray(12000, 12004)), "GREW");
    },
  },
  {
    name:
      `OV-LOCAL-1 a directory of ${MANY_ENTRIES} entries: listed whole, each once, created and removed`,
    async fn(c) {
      const g = c.g;
      await c.host.mkdir("many");
      const names = Array.from(
        { length: MANY_ENTRIES },
        (_, i) => `f${String(i).padStart(5, "0")}`,
      );
      await c.host.createEmpty("many", names);
      const timeoutMs = 180_000;
      const expectList = names.join("\n") + "\n";
      assert.equal(
        await g.shOk("ls -f /mnt/many | grep -v '^\\.\\.\\?$' | sort | md5sum", { timeoutMs }),
        `${md5(new TextEncoder().encode(expectList))}  -\n`,
        "every entry exactly once",
      );
      assert.equal(
        await g.shOk("find /mnt/many -type f | wc -l", { timeoutMs }),
        `${MANY_ENTRIES}\n`,
      );
      await g.shOk("find /mnt/many -mindepth 1 -delete", { timeoutMs });
      assert.deepEqual(await c.host.list("many"), []);
      await py(
        g,
        `for i in range(${MANY_ENTRIES}):\n    os.mknod(P("g%05d" % i))\ndone({})`,
        { base: "/mnt/many", timeoutMs },
      );
      const made = await c.host.list("many");
      assert.equal(made.length, MANY_ENTRIES);
      assert.equal(new Set(made).size, MANY_ENTRIES);
      assert.equal(await g.shOk("ls /mnt/many | wc -l", { timeoutMs }), `${MANY_ENTRIES}\n`);
      await g.shOk("rm -rf /mnt/many", { timeoutMs });
      assert.equal(await c.host.exists("many"), false);
    },
  },
  {
    name: "OV-LOCAL-1 what the host creates, changes, renames and removes appears in the guest",
    ref: true,
    // Changes made behind the guest's back: nothing but the guest changes a MemoryFs.
    hostDir: true,
    async fn(c) {
      const g = c.g;
      const h = join(hostDir(c), "hostvis");
      await Deno.mkdir(h);
      assert.equal(await g.shOk("ls -1a /mnt/hostvis"), ".\n..\n");
      await Deno.writeTextFile(join(h, "new"), "created on the host");
      await eventually(g, `[ "$(cat /mnt/hostvis/new 2>/dev/null)" = "created on the host" ]`);
      await Deno.writeTextFile(join(h, "new"), "changed on the host, and longer");
      await eventually(g, `[ "$(cat /mnt/hostvis/new)" = "changed on the host, and longer" ]`);
      await Deno.rename(join(h, "new"), join(h, "renamed"));
      await eventually(g, "[ ! -e /mnt/hostvis/new ] && [ -e /mnt/hostvis/renamed ]");
      await Deno.mkdir(join(h, "deep/er"), { recursive: true });
      await Deno.writeTextFile(join(h, "deep/er/file"), "deep");
      await eventually(g, `[ "$(cat /mnt/hostvis/deep/er/file 2>/dev/null)" = deep ]`);
      await Deno.chmod(join(h, "renamed"), 0o600);
      await eventually(g, `[ "$(stat -c %a /mnt/hostvis/renamed)" = 600 ]`);
      await Deno.remove(join(h, "renamed"));
      await eventually(g, "[ ! -e /mnt/hostvis/renamed ]");
      assert.equal(await g.shOk("ls -1 /mnt/hostvis"), "deep\n");
    },
  },
  {
    name: "OV-FUSE-2 FIFOs, sockets, flock, fallocate and copy_file_range in the share",
    ref: true,
    async fn(c) {
      const r = await py(
        c.g,
        String.raw`
r = {}
os.mkfifo(P("fifo"))
pid = os.fork()
if pid == 0:
    fd = os.open(P("fifo"), os.O_WRONLY); os.write(fd, b"through the fifo"); os.close(fd); os._exit(0)
fd = os.open(P("fifo"), os.O_RDONLY); r["fifo"] = os.read(fd, 100).decode(); os.close(fd)
os.waitpid(pid, 0)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(P("sock")); s.listen(1)
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect(P("sock")); c.sendall(b"hi")
a, _ = s.accept(); r["socket"] = a.recv(10).decode()
r["socket type"] = stat.S_ISSOCK(os.lstat(P("sock")).st_mode)
import fcntl
fd = os.open(P("lock"), os.O_CREAT | os.O_RDWR, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
fd2 = os.open(P("lock"), os.O_RDWR)
r["flock held"] = E(fcntl.flock, fd2, fcntl.LOCK_EX | fcntl.LOCK_NB)
fcntl.lockf(fd, fcntl.LOCK_EX)
os.close(fd2); os.close(fd)
put(P("src"), b"0123456789" * 1000)
fi = os.open(P("src"), os.O_RDONLY); fo = os.open(P("dst"), os.O_CREAT | os.O_WRONLY, 0o644)
r["copy_file_range"] = os.copy_file_range(fi, fo, 5000, 2000, 100)
os.close(fi); os.close(fo)
r["copied"] = get(P("dst"))[100:110]
r["cp"] = os.system("cp " + P("src") + " " + P("cp")) == 0 and get(P("cp")) == get(P("src"))
done(r)
`,
        { base: (await c.g.shOk("mkdir /mnt/special && echo /mnt/special")).trim() },
      );
      assert.deepEqual(r, {
        fifo: "through the fifo",
        socket: "hi",
        "socket type": true,
        "flock held": "EAGAIN",
        copy_file_range: 5000,
        copied: "0123456789",
        cp: true,
      });
      const st = await c.host.lstat("special/sock");
      assert.ok(st.isSocket, "the socket is a socket inode on the host");
      if (c.host.dir !== undefined) {
        // (A host directory's only: a MemoryFs socket node is no host socket to connect to.)
        await assert.rejects(
          Deno.connect({ transport: "unix", path: join(c.host.dir, "special/sock") }),
          "a socket the guest binds in the share is the guest's: the host cannot connect to it",
        );
      }
    },
  },
  {
    name: "OV-FUSE-2 ioctl on a file in the share fails as on a file system without it (ENOTTY)",
    ref: true,
    async fn(c) {
      // The guest kernel sends FUSE_IOCTL for ioctls it does not handle itself (isatty()'s
      // TCGETS on every Python open(), for one); a daemon without ioctl support answers ENOSYS,
      // which the guest turns into ENOTTY, what a local file gives for a terminal ioctl.
      const r = await sameAsLocal(
        c,
        "ioctl",
        String.raw`
import fcntl, termios
put(P("f"), "0123456789")
fd = os.open(P("f"), os.O_RDONLY)
os.lseek(fd, 4, os.SEEK_SET)
r = {"TCGETS": E(fcntl.ioctl, fd, termios.TCGETS, bytes(64)), "isatty": os.isatty(fd)}
r["FIONREAD"] = int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, bytes(4)), "little")
os.close(fd)
done(r)
`,
      );
      assert.deepEqual(r, { TCGETS: "ENOTTY", isatty: false, FIONREAD: 6 });
    },
  },
  {
    name: "CONFINE-SYMLINK a symlink to / in the share leads into the guest's root, not the host's",
    ref: true,
    async fn(c) {
      const g = c.g;
      await c.host.mkdir("conf");
      await c.host.symlink("/", "link-to-root");
      await c.host.symlink("/etc", "conf/etc-link");
      await c.host.symlink("../../../../../../../..", "conf/up");
      await c.host.symlink(c.outside, "conf/to-outside");
      const hostHostname = await Deno.readTextFile("/etc/hostname").catch(() => "");
      assert.notEqual(hostHostname.trim(), GUEST_HOSTNAME, "the test needs different hostnames");
      assert.equal(await g.shOk("cat /mnt/link-to-root/etc/hostname"), `${GUEST_HOSTNAME}\n`);
      assert.equal(await g.shOk("cat /mnt/conf/etc-link/hostname"), `${GUEST_HOSTNAME}\n`);
      assert.equal(await g.shOk("cat /mnt/conf/up/etc/hostname"), `${GUEST_HOSTNAME}\n`);
      const marker = `guest-only-${c.nonce}`;
      await g.shOk(`touch /tmp/${marker}`);
      assert.equal(await g.shOk(`ls /mnt/link-to-root/tmp/ | grep -c ${marker}`), "1\n");
      assert.match(await g.shOk("ls -1 /mnt/link-to-root/"), /^mnt$/m, "the guest's own /");
      const out = await g.sh(`ls /mnt/conf/to-outside/ 2>&1`);
      assert.notEqual(out.status, 0, `the host path ${c.outside} does not exist in the guest`);
      // Writing through the links writes the guest's files.
      await g.shOk(`echo through-link > /mnt/link-to-root/tmp/written-${c.nonce}`);
      assert.equal(await g.shOk(`cat /tmp/written-${c.nonce}`), "through-link\n");
      assert.equal(await hostExists(`/tmp/written-${c.nonce}`), false);
      assert.equal(await hostExists(`/tmp/${marker}`), false);
      assert.equal(await Deno.readTextFile("/etc/hostname").catch(() => ""), hostHostname);
    },
  },
  {
    name:
      "CONFINE-DOTDOT '..' of the mount root is the guest's /, and a/../../.. stays in the guest",
    ref: true,
    async fn(c) {
      const g = c.g;
      await g.shOk("mkdir -p /mnt/dd/a");
      assert.equal(
        await g.shOk("stat -c %i /mnt/.. /; cd /mnt/dd/../../ && pwd"),
        (await g.shOk("stat -c %i /")).repeat(2) + "/\n",
      );
      assert.equal(await g.shOk("ls -1a /mnt/.."), await g.shOk("ls -1a /"));
      const outsideName = c.outside.split("/").at(-1) ?? "";
      const none = await g.sh(`ls /mnt/../${outsideName} /mnt/../../${outsideName} 2>&1`);
      assert.notEqual(none.status, 0, "the host's neighbours of the share are not there");
      const r = await py(
        g,
        String.raw`
r = {}
d = os.open(P("a"), os.O_RDONLY | os.O_DIRECTORY)
fd = os.open("../../../../../../etc/escape-${c.nonce}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=d)
os.write(fd, b"x"); os.close(fd)
r["created in the guest's /etc"] = os.path.exists("/etc/escape-${c.nonce}")
up = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=os.open("/mnt", os.O_RDONLY))
r["openat(.. of the mount root) is /"] = os.fstat(up).st_ino == os.stat("/").st_ino
r["a name with '/' is a path"] = [E(os.open, P("no-dir/x"), os.O_CREAT | os.O_WRONLY), E(put, P("a/b"), "")]
r["non-UTF-8 name"] = E(put, P(os.fsdecode(b"\xff\xfe-bytes")), "")
done(r)
`,
        { base: "/mnt/dd" },
      );
      assert.deepEqual(r, {
        "created in the guest's /etc": true,
        "openat(.. of the mount root) is /": true,
        "a name with '/' is a path": ["ENOENT", "OK"],
        "non-UTF-8 name": "OK",
      });
      assert.equal(await hostExists(`/etc/escape-${c.nonce}`), false);
      assert.ok(await c.host.exists("dd/a/b"), "a/b is b inside a");
      const raw = await c.host.list("dd");
      assert.ok(raw.some((n) => n.includes("-bytes")), "the non-UTF-8 name reached the host");
    },
  },
  {
    name: "CONFINE-OUTSIDE nothing outside the shared directory changed",
    ref: true,
    async fn(c) {
      assert.deepEqual(await snapshot(c.outside), c.outsideBefore);
      for await (const e of Deno.readDir("/tmp")) {
        assert.ok(!e.name.includes(c.nonce), `host /tmp/${e.name} was made by the guest`);
      }
    },
  },
  {
    name: "OV-FUSE-2 umount and mount again: everything written is still there",
    ref: true,
    async fn(c) {
      await c.g.shOk("echo still-here > /mnt/remount-marker");
      const before = await c.g.shOk("cd /mnt && find . | sort | md5sum");
      await c.g.shOk("umount /mnt && ! grep -q ' /mnt ' /proc/mounts");
      await c.g.shOk(`mount -t virtiofs ${TAG} /mnt`);
      assert.equal(await c.g.shOk("cd /mnt && find . | sort | md5sum"), before);
      assert.equal(await c.g.shOk("cat /mnt/remount-marker"), "still-here\n");
    },
  },
  {
    name: "OV-FUSE-2 every FUSE request the guest sent was one our daemon serves",
    // deno-lint-ignore require-await
    async fn(c) {
      if (c.kind !== "ours" || c.daemon === undefined) return; // the census reads our trace log
      const log = c.daemon.stderrText();
      const counts = new Map<string, number>();
      for (const m of log.matchAll(/ ([A-Z0-9_]+)\((\d+)\) unique \d+ /g)) {
        counts.set(m[1] ?? "", (counts.get(m[1] ?? "") ?? 0) + 1);
      }
      const seen = [...counts].sort(([a], [b]) => a < b ? -1 : 1);
      console.log(`requests the guest sent: ${seen.map(([k, n]) => `${k} ${n}`).join(", ")}`);
      const served = (k: string): boolean =>
        SERVED.has(k) || ENOSYS_OK.has(k) || (c.dax && DAX_SERVED.has(k));
      const unserved = seen.map(([k]) => k).filter((k) => !served(k));
      assert.deepEqual(unserved, [], "opcodes the daemon has no handler for");
      const expected = ["LOOKUP", "CREATE", "READ", "WRITE", "RENAME2", "SETXATTR", "LSEEK"];
      for (const op of [...expected, ...c.dax ? ["SETUPMAPPING"] : []]) {
        assert.ok(counts.has(op), `the guest sent ${op}`);
      }
      const problems = log.split("\n").filter((l) => / (ERROR|WARN)\] /.test(l));
      assert.deepEqual(problems.slice(0, 10), [], "the daemon logged no errors or warnings");
    },
  },
];

/**
 * The opcodes our daemon has a handler for (src/fuse/dispatch.ts and session.ts); the guest
 * never sends the others (locks, ioctl, DAX mappings) unless INIT offered them.
 */
const SERVED = new Set([
  "INIT",
  "DESTROY",
  "FORGET",
  "BATCH_FORGET",
  "INTERRUPT",
  "LOOKUP",
  "GETATTR",
  "SETATTR",
  "READLINK",
  "SYMLINK",
  "MKNOD",
  "MKDIR",
  "UNLINK",
  "RMDIR",
  "RENAME",
  "RENAME2",
  "LINK",
  "OPEN",
  "OPENDIR",
  "READ",
  "WRITE",
  "STATFS",
  "RELEASE",
  "RELEASEDIR",
  "FLUSH",
  "FSYNC",
  "FSYNCDIR",
  "SETXATTR",
  "GETXATTR",
  "LISTXATTR",
  "REMOVEXATTR",
  "READDIR",
  "READDIRPLUS",
  "ACCESS",
  "CREATE",
  "TMPFILE",
  "FALLOCATE",
  "LSEEK",
  "COPY_FILE_RANGE",
  "SYNCFS",
]);

/**
 * The DAX mappings, which the guest sends only with a window and FUSE_HAS_INODE_DAX granted (the
 * DAX window variant), for files the daemon marked FUSE_ATTR_DAX.
 */
const DAX_SERVED = new Set(["SETUPMAPPING", "REMOVEMAPPING"]);

/**
 * Opcodes the guest sends that our daemon (like C virtiofsd) answers with ENOSYS, and why that
 * is still the local behaviour. Proven by the ioctl step above.
 */
const ENOSYS_OK = new Map([[
  "IOCTL",
  "the guest turns ENOSYS into ENOTTY, what a local file gives for the terminal ioctls programs " +
  "send (isatty)",
]]);

function daemonArgs(kind: DaemonKind): string[] {
  switch (kind) {
    case "ours":
      return ["--xattr", "--log-level", "trace"];
    case "c":
      return ["-o", "xattr"];
    case "rust":
      return ["--xattr"];
  }
}

/**
 * Ours' cache window for the DAX variant; the generic device takes the tag (the guest mounts
 * {@linkcode TAG} as everywhere) and the request queues from the daemon.
 */
const DAX_ARGS = windowArgs(TAG);

/** A run's temporary directory: `shared` (empty) and `outside` beside it, snapshotted. */
async function workDirs(
  label: string,
): Promise<{ work: string; shared: string; outside: string; outsideBefore: string[] }> {
  const work = await Deno.makeTempDir({ prefix: `guest-local-fs-${label}-` });
  const shared = join(work, "shared");
  const outside = join(work, "outside");
  await Deno.mkdir(shared);
  await Deno.mkdir(join(outside, "sub"), { recursive: true });
  await Deno.writeTextFile(join(outside, "secret"), "the host's, not the guest's\n");
  await Deno.writeTextFile(join(outside, "sub", "file"), "also outside\n");
  return { work, shared, outside, outsideBefore: await snapshot(outside) };
}

/** The steps of a variant: the DAX-only ones with a window only. */
function stepsFor(dax: boolean): LocalStep[] {
  return STEPS.filter((s) => dax || !s.daxOnly);
}

/**
 * The daemon's `DAX: N SETUPMAPPING (...) ...` line, which ours logs when it stops (only when the
 * guest mapped or unmapped anything), and its SETUPMAPPING count (0 without the line).
 */
function daxLine(log: string): { line: string | undefined; setups: number } {
  const line = log.split("\n").map((l) => l.match(/DAX: \d+ SETUPMAPPING.*/)?.[0]).find((l) =>
    l !== undefined
  );
  return { line, setups: Number(line?.match(/^DAX: (\d+)/)?.[1] ?? 0) };
}

/** Waits up to `ms` for the daemon to exit by itself (ours does when QEMU disconnects). */
async function exitedWithin(daemon: DaemonHandle, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([daemon.exited, new Promise((r) => timer = setTimeout(r, ms))]);
  clearTimeout(timer);
}

for (const kind of daemonsUnderTest()) {
  Deno.test({
    name:
      `OV-LOCAL-1 OV-FUSE-2 [guest, ${kind}] a Linux guest works in the share as on a local disk`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      const { work, shared, outside, outsideBefore } = await workDirs(kind);
      const daemon = await startDaemon(kind, { sharedDir: shared, extraArgs: daemonArgs(kind) });
      let g: QemuGuest | undefined;
      try {
        g = await QemuGuest.boot({ socketPath: daemon.socketPath, tag: TAG, memoryMiB: 2048 });
        const ctx: Ctx = {
          kind,
          dax: false,
          g,
          daemon,
          host: hostDirView(shared),
          outside,
          outsideBefore,
          nonce: randomBytes(6).toString("hex"),
        };
        await runGuestSteps(t, "local_fs", kind, ctx, stepsFor(false));
      } finally {
        await g?.shutdown();
        await daemon.stop();
        await Deno.remove(work, { recursive: true }).catch(() => {});
      }
    },
  });
}

// The same steps on ours with a DAX window (QEMU 11.1's generic device), plus the DAX-2 step.
if (daemonsUnderTest().includes("ours")) {
  Deno.test({
    name: "OV-LOCAL-1 OV-FUSE-2 DAX-2 [guest, ours, DAX window] a Linux guest works in the share " +
      "as on a local disk, files of whole 2 MiB ranges through the window",
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      const { work, shared, outside, outsideBefore } = await workDirs("ours-dax");
      const daemon = await startDaemon("ours", {
        sharedDir: shared,
        extraArgs: [...daemonArgs("ours"), ...DAX_ARGS],
      });
      let g: QemuGuest | undefined;
      try {
        g = await QemuGuest.boot({
          socketPath: daemon.socketPath,
          tag: TAG,
          memoryMiB: 2048,
          ...WINDOW_BOOT,
        });
        const window = (await g.shOk("dmesg | grep -i 'cache len' || true")).trim();
        console.log(`ours, DAX window: the guest's virtiofs: ${window || "(no Cache len line)"}`);
        const ctx: Ctx = {
          kind: "ours",
          dax: true,
          g,
          daemon,
          host: hostDirView(shared),
          outside,
          outsideBefore,
          nonce: randomBytes(6).toString("hex"),
        };
        await runGuestSteps(t, "local_fs", "ours", ctx, stepsFor(true));
      } finally {
        await g?.shutdown();
        await exitedWithin(daemon, 5_000); // the DAX line is logged as it ends
        await daemon.stop();
        await Deno.remove(work, { recursive: true }).catch(() => {});
      }
      const { line, setups } = daxLine(daemon.stderrText());
      console.log(`ours, DAX window: ${line ?? "the daemon logged no DAX line"}`);
      assert.ok(setups > 0, `the guest mapped files through the window: ${line}`);
    },
  });
}

// The same steps on the library's MemoryFs, served by examples/memory_fs.ts (CI runs it with ours).
if (daemonsUnderTest().includes("ours")) {
  Deno.test({
    name:
      "OV-LOCAL-1 OV-FUSE-2 [guest, memory] a Linux guest works in a MemoryFs share (examples/memory_fs.ts) as on a local disk",
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      const steps = stepsFor(false);
      const skipped = steps.filter((s) => s.hostDir === true).map((s) => s.name);
      console.log(
        `memory: ${skipped.length} steps skipped (they are about a host directory): ` +
          skipped.join("; "),
      );
      const { work, outside, outsideBefore } = await workDirs("memory");
      await using program = await startProgram("examples/memory_fs.ts", {}, [
        String(MEMORY_MAX_BYTES),
      ]);
      await program.listening();
      let g: QemuGuest | undefined;
      try {
        g = await QemuGuest.boot({ socketPath: program.socket, tag: TAG, memoryMiB: 2048 });
        const ctx: Ctx = {
          kind: "memory",
          dax: false,
          g,
          daemon: undefined,
          host: memoryView(g, MEMORY_MAX_BYTES),
          outside,
          outsideBefore,
          nonce: randomBytes(6).toString("hex"),
        };
        await runGuestSteps(t, "local_fs", "memory", ctx, steps.filter((s) => !s.hostDir));
      } finally {
        await g?.shutdown();
        await Deno.remove(work, { recursive: true }).catch(() => {});
      }
      // It ends by itself, cleanly, when QEMU goes away.
      assert.equal((await program.child.status).code, 0, await program.log());
    },
  });
}
