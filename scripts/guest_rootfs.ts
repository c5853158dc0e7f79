/**
 * Builds the guest's Debian userland: a read-only ext4 image that the guest's init
 * (`fixtures/guest/init`) mounts from a virtio-blk disk, puts a tmpfs overlay on, and runs every
 * command in (chroot). It holds Python 3.11 with its own test suite, coreutils, util-linux,
 * attr/acl, perl-base and their dependency closure, so guest specs run real programs, not only
 * busybox applets.
 *
 * How: `apt-get install -s` against an empty dpkg status resolves the dependency closure of
 * {@linkcode ROOTFS_PACKAGES} (Recommends off), `apt-get install --download-only` fetches it into
 * a private directory, `dpkg-deb -x` unpacks each package (no maintainer scripts run), the files
 * under `fixtures/guest/rootfs/` are laid over it (users, hostname), and `mke2fs -d` makes the
 * image. Nothing on the host is installed or changed.
 *
 * The image is cached as `<cache>/guest/rootfs.ext4` with `rootfs.json` beside it, and rebuilt
 * only when the package list, the fixture files or the layout version change; delete it to pick
 * up newer packages.
 *
 * @module
 */

import { createHash } from "node:crypto";
import {
  chmod,
  chown,
  copyFile,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { join, relative } from "node:path";
import {
  aptGet,
  cacheDir,
  type EnsureOptions,
  exists,
  projectDir,
  run,
  type RunResult,
  timed,
  which,
} from "./_host.ts";

/** The packages whose dependency closure makes up the guest's userland. */
export const ROOTFS_PACKAGES: readonly string[] = [
  "base-files",
  "base-passwd",
  "libc-bin",
  "dash",
  "bash",
  "coreutils",
  "util-linux",
  "mount",
  "findutils",
  "grep",
  "sed",
  "diffutils",
  "tar",
  "gzip",
  "procps",
  "hostname",
  "attr",
  "acl",
  "perl-base",
  "python3.11",
  "libpython3.11-testsuite",
];

/**
 * A variant of the image: the default packages plus `extraPackages`, cached as
 * `<cache>/guest/rootfs-<name>.ext4` (e.g. the benchmark's, with fio).
 */
export interface RootfsVariant {
  /** The variant's name, part of the image's file name. */
  name: string;
  /** Packages besides {@linkcode ROOTFS_PACKAGES}. */
  extraPackages: readonly string[];
}

/**
 * The guest benchmark's image (`scripts/bench_guest.ts`): fio and libaio (its fio workloads) and
 * stress-ng (its programs group) besides the default.
 */
export const BENCH_ROOTFS: RootfsVariant = {
  name: "bench",
  extraPackages: ["fio", "libaio1", "stress-ng"],
};

/** Bump when the image's layout changes, so that cached images are rebuilt. */
const ROOTFS_FORMAT = 1;

/** The unprivileged guest user `fixtures/guest/rootfs/etc/passwd` defines. */
export const GUEST_USER = { name: "user", uid: 1000, gid: 1000 } as const;

/** Directories dropped from the image: documentation and translations nobody reads there. */
const DROPPED = ["usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"];

/** The guest's root file system image, as {@linkcode ensureGuestRootfs} returns it. */
export interface GuestRootfs {
  /** The ext4 image (raw), to attach read-only as a virtio-blk disk. */
  image: string;
  /** `name=version` of every package in it. */
  packages: string[];
}

interface RootfsManifest extends GuestRootfs {
  key: string;
  bytes: number;
}

/** Where `fixtures/guest/rootfs/` is: files laid over the unpacked packages. */
export function rootfsFixturesDir(): string {
  return join(projectDir(), "fixtures", "guest", "rootfs");
}

async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() || e.isSymbolicLink()) out.push(join(e.parentPath, e.name));
  }
  return out.sort();
}

/** The cache key: layout version, package list, and every fixture file's path, mode and bytes. */
async function rootfsKey(packages: readonly string[] = ROOTFS_PACKAGES): Promise<string> {
  const h = createHash("sha256");
  h.update(JSON.stringify({ format: ROOTFS_FORMAT, packages, drop: DROPPED }));
  const fixtures = rootfsFixturesDir();
  for (const f of await listTree(fixtures)) {
    const st = await lstat(f);
    // Only the executable bit: git keeps no other mode bits, so a fresh clone has the same key.
    h.update(`\0${relative(fixtures, f)}\0${st.mode & 0o100 ? "x" : "-"}\0`);
    h.update(st.isSymbolicLink() ? await readlink(f) : await readFile(f));
  }
  return h.digest("hex");
}

/** apt-get options that make it resolve and download as if nothing were installed. */
function aptEmptySystem(statusFile: string, archives?: string): string[] {
  const opts = [
    "-o",
    `Dir::State::status=${statusFile}`,
    "-o",
    "APT::Install-Recommends=false",
    "-o",
    "APT::Install-Suggests=false",
  ];
  if (archives !== undefined) opts.push("-o", `Dir::Cache::archives=${archives}`);
  return opts;
}

/** Resolves the closure: `[name, version]` pairs, from `apt-get -s install`. */
async function resolveClosure(
  statusFile: string,
  packages: readonly string[],
): Promise<[string, string][]> {
  const args = [...aptEmptySystem(statusFile), "-s", "install", ...packages];
  let result: RunResult;
  try {
    result = await aptGet(args);
  } catch {
    await aptGet(["update"]);
    result = await aptGet(args);
  }
  const pkgs: [string, string][] = [];
  for (const m of result.stdout.matchAll(/^Inst (\S+) \((\S+)/gm)) {
    if (m[1] !== undefined && m[2] !== undefined) pkgs.push([m[1], m[2]]);
  }
  if (pkgs.length < packages.length) {
    throw new Error(`apt-get -s install resolved too few packages:\n${result.stdout}`);
  }
  return pkgs;
}

/** Bytes and entries under `dir` (not following symlinks). */
async function measure(dir: string): Promise<{ bytes: number; entries: number }> {
  let bytes = 0;
  let entries = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    entries++;
    if (e.isFile()) bytes += (await lstat(join(e.parentPath, e.name))).size;
  }
  return { bytes, entries };
}

/**
 * Copies `fixtures/guest/rootfs/` over the unpacked tree, owner root, mode 0755 or 0644 by the
 * executable bit (as git keeps them), then the modes git cannot keep.
 */
async function layFixtures(root: string): Promise<void> {
  const fixtures = rootfsFixturesDir();
  for (const f of await listTree(fixtures)) {
    const rel = relative(fixtures, f);
    const dst = join(root, rel);
    await mkdir(join(dst, ".."), { recursive: true });
    await rm(dst, { force: true });
    const st = await lstat(f);
    if (st.isSymbolicLink()) {
      await symlink(await readlink(f), dst);
      continue;
    }
    await copyFile(f, dst);
    await chmod(dst, st.mode & 0o100 ? 0o755 : 0o644);
  }
  for (const [path, mode] of PRIVATE_FILES) {
    if (exists(join(root, path))) await chmod(join(root, path), mode);
  }
}

/** Fixture files whose mode is not 0644. */
const PRIVATE_FILES: readonly [string, number][] = [["etc/shadow", 0o600]];

/** The tree's finishing touches: what maintainer scripts or the admin would have done. */
async function finishTree(root: string): Promise<void> {
  for (const d of DROPPED) await rm(join(root, d), { recursive: true, force: true });
  await layFixtures(root);
  // The `python3` package's symlink comes from python3-minimal on a real install; make sure.
  if (!exists(join(root, "usr/bin/python3"))) {
    await symlink("python3.11", join(root, "usr/bin/python3"));
  }
  await rm(join(root, "etc/mtab"), { force: true });
  await symlink("../proc/self/mounts", join(root, "etc/mtab"));
  for (const d of ["proc", "sys", "dev", "run", "tmp", "mnt", "root", "home"]) {
    await mkdir(join(root, d), { recursive: true });
  }
  await chmod(join(root, "tmp"), 0o1777);
  await chmod(join(root, "root"), 0o700);
  const home = join(root, "home", GUEST_USER.name);
  await mkdir(home, { recursive: true });
  await chown(home, GUEST_USER.uid, GUEST_USER.gid);
  // The loader's cache (the default search path would find the libraries too, only slower).
  const ldconfig = which("ldconfig");
  if (ldconfig !== undefined) await run(ldconfig, ["-r", root], { check: false });
}

/** Builds the image at `out` and returns the package list. */
async function buildRootfs(
  guestDir: string,
  out: string,
  log: EnsureOptions["log"],
  packages: readonly string[] = ROOTFS_PACKAGES,
): Promise<{ packages: string[]; bytes: number }> {
  const work = await mkdtemp(join(guestDir, ".rootfs-"));
  try {
    const status = join(work, "status");
    await writeFile(status, "");
    const closure = await timed(log, "rootfs resolve", async () => {
      const pkgs = await resolveClosure(status, packages);
      return [pkgs, `${pkgs.length} packages`];
    });
    const debs = join(work, "debs");
    await mkdir(join(debs, "partial"), { recursive: true });
    await timed(log, "rootfs download", async () => {
      await aptGet([
        ...aptEmptySystem(status, debs),
        "--download-only",
        "-y",
        "install",
        ...closure.map(([name, version]) => `${name}=${version}`),
      ]);
      const files = (await readdir(debs)).filter((f) => f.endsWith(".deb"));
      if (files.length !== closure.length) {
        throw new Error(`Downloaded ${files.length} packages, expected ${closure.length}`);
      }
      let bytes = 0;
      for (const f of files) bytes += (await stat(join(debs, f))).size;
      return [undefined, `${files.length} .deb, ${(bytes / 1048576).toFixed(1)} MiB`];
    });
    const root = join(work, "root");
    await mkdir(root);
    const size = await timed(log, "rootfs unpack", async () => {
      for (const f of (await readdir(debs)).filter((f) => f.endsWith(".deb")).sort()) {
        await run("dpkg-deb", ["-x", join(debs, f), root]);
      }
      await finishTree(root);
      const m = await measure(root);
      return [m, `${m.entries} entries, ${(m.bytes / 1048576).toFixed(1)} MiB`];
    });
    await timed(log, "rootfs image", async () => {
      const imageBytes = Math.ceil((size.bytes * 1.25 + 64 * 1048576) / 1048576) * 1048576;
      const tmp = `${out}.tmp`;
      await rm(tmp, { force: true });
      await run("mke2fs", [
        ...["-q", "-F", "-t", "ext4", "-O", "^has_journal", "-L", "guestroot"],
        ...["-N", String(Math.ceil(size.entries * 1.3) + 4096)],
        ...["-E", "root_owner=0:0", "-d", root, tmp, `${imageBytes / 1024}k`],
      ]);
      await rename(tmp, out);
      return [undefined, `${out} (${imageBytes / 1048576} MiB)`];
    });
    return { packages: closure.map(([n, v]) => `${n}=${v}`), bytes: size.bytes };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Makes sure the guest's root file system image is built and cached, and returns it. Fast (a
 * few file reads) when cached.
 */
export async function ensureGuestRootfs(
  opts: EnsureOptions & { variant?: RootfsVariant } = {},
): Promise<GuestRootfs> {
  const guestDir = join(cacheDir(), "guest");
  const suffix = opts.variant === undefined ? "" : `-${opts.variant.name}`;
  const image = join(guestDir, `rootfs${suffix}.ext4`);
  const manifestPath = join(guestDir, `rootfs${suffix}.json`);
  const packages = [...ROOTFS_PACKAGES, ...opts.variant?.extraPackages ?? []];
  const key = await rootfsKey(opts.variant === undefined ? ROOTFS_PACKAGES : packages);
  const old = await readFile(manifestPath, "utf8")
    .then((t) => JSON.parse(t) as RootfsManifest)
    .catch(() => undefined);
  if (old !== undefined && old.key === key && old.image === image && exists(image)) {
    opts.log?.(`rootfs: cached, ${old.packages.length} packages`);
    return { image: old.image, packages: old.packages };
  }
  await mkdir(guestDir, { recursive: true });
  if (which("mke2fs") === undefined) {
    throw new Error(
      "Cannot build the guest root image: mke2fs is missing (apt-get install e2fsprogs)",
    );
  }
  const built = await buildRootfs(guestDir, image, opts.log, packages);
  const manifest: RootfsManifest = { key, image, packages: built.packages, bytes: built.bytes };
  await writeFile(`${manifestPath}.tmp`, JSON.stringify(manifest, null, 2) + "\n");
  await rename(`${manifestPath}.tmp`, manifestPath);
  return { image, packages: built.packages };
}

if (import.meta.main) {
  const t0 = performance.now();
  const r = await ensureGuestRootfs({ log: (line) => console.log(`setup: ${line}`) });
  console.log(`setup: rootfs ${r.image} in ${Math.round(performance.now() - t0)} ms`);
}
