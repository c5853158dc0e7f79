/**
 * QEMU from Debian sid (11.1 or newer), unpacked privately beside the system's QEMU 7.2, for the
 * DAX experiments: QEMU 11.1 is the first with a vhost-user device that gives the guest a cache
 * window (`vhost-user-test-device-pci` with the back end's SHMEM regions).
 *
 * The binaries need sid's glibc, newer than bookworm's. So, as `scripts/rust_virtiofsd.sh` does
 * for trixie, this unpacks `qemu-system-x86`, `qemu-system-common` (the modules),
 * `qemu-system-data`, `seabios`, `ipxe-qemu` and the library packages they depend on (the closure
 * of their `Depends` over library packages) with `dpkg -x` into `<cache>/qemu-sid/root`, and runs
 * QEMU through sid's own dynamic loader with a private library path. Nothing on the system is
 * installed or changed: apt reads a private sources list, package lists, preferences and an empty
 * dpkg status, all under `<cache>/qemu-sid`.
 *
 * QEMU must never load QEMU 7.2's modules (it aborts) or firmware. It looks for them under
 * `<directory of /proc/self/exe>/qemu-bundle` if that exists, else at the configured absolute
 * paths (the host's); /proc/self/exe is the loader here, so the tree gets a
 * `usr/lib/x86_64-linux-gnu/qemu-bundle` link to its own root. {@linkcode qemuSidCommand} also
 * sets `QEMU_MODULE_DIR` and passes `-L` for the private data and SeaBIOS directories.
 *
 * The version is whatever sid's candidate is on the day of the fetch (checked to be ≥ 11.1); it is
 * logged and written to `<cache>/qemu-sid/version`. Once fetched it is cached: delete
 * `<cache>/qemu-sid` to pick up a newer one. Directory: `$QEMU_SID_DIR`, else
 * `<cache>/qemu-sid`.
 *
 * @example
 * ```ts ignore
 * import { ensureQemuSid } from "./qemu_sid.ts";
 * const qemu = await ensureQemuSid();
 * await new Deno.Command(qemu.command, { args: [...qemu.argsPrefix, "--version"], env: qemu.env })
 *   .output();
 * ```
 *
 * @module
 */

import { mkdir, readdir, readlink, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { cacheDir, type EnsureOptions, exists, run, timed } from "./_host.ts";

/** The oldest QEMU accepted (major, minor): the first with SHMEM regions for vhost-user. */
export const QEMU_SID_MIN_VERSION: readonly [number, number] = [11, 1];

/** The packages fetched by name; their library dependencies are added to them. */
export const QEMU_SID_PACKAGES: readonly string[] = [
  "qemu-system-x86",
  "qemu-system-common",
  "qemu-system-data",
  "seabios",
  "ipxe-qemu",
  "libc6",
];

/** The packages whose library `Depends` are followed (the data packages have none). */
const DEPENDS_ROOTS = ["qemu-system-x86", "qemu-system-common", "libc6"];

/** Bump when the layout of the unpacked tree changes, so that old caches are fetched again. */
const FORMAT = 1;

/** The Debian archive the packages come from. */
const SID_SOURCE = "http://deb.debian.org/debian sid main";

/** How to run the private QEMU: `command [...argsPrefix, ...yourArgs]` with `env` added. */
export interface QemuSidCommand {
  /** sid's dynamic loader (`ld-linux-x86-64.so.2`), which runs QEMU. */
  command: string;
  /** Loader options, the QEMU binary and its `-L` data directories; append QEMU's arguments. */
  argsPrefix: string[];
  /** Environment to add: `QEMU_MODULE_DIR`, QEMU's private module directory. */
  env: Record<string, string>;
  /** The upstream version, e.g. `11.1.3`. */
  version: string;
  /** The first line of `--version`, e.g. `QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-1)`. */
  versionLine: string;
  /** The Debian package version of `qemu-system-x86`, e.g. `1:11.1.3+ds-1`. */
  debianVersion: string;
  /** The directory everything is kept in. */
  dir: string;
}

interface Manifest {
  format: number;
  debianVersion: string;
  version: string;
  versionLine: string;
  /** `name=version` of every package unpacked. */
  packages: string[];
  /** Bytes of .deb files downloaded. */
  downloadBytes: number;
  fetchedAt: string;
}

/** The directory the sid QEMU lives in: `$QEMU_SID_DIR`, else `<cache>/qemu-sid`. */
export function qemuSidDir(): string {
  return Deno.env.get("QEMU_SID_DIR") || join(cacheDir(), "qemu-sid");
}

const MULTIARCH = "x86_64-linux-gnu";

function paths(dir: string) {
  const root = join(dir, "root");
  return {
    root,
    manifest: join(dir, "manifest.json"),
    versionFile: join(dir, "version"),
    loader: join(root, "usr", "lib", MULTIARCH, "ld-linux-x86-64.so.2"),
    libDirs: [join(root, "usr", "lib", MULTIARCH), join(root, "lib", MULTIARCH)],
    binary: join(root, "usr", "bin", "qemu-system-x86_64"),
    moduleDir: join(root, "usr", "lib", MULTIARCH, "qemu"),
    bundle: join(root, "usr", "lib", MULTIARCH, "qemu-bundle"),
    dataDirs: [join(root, "usr", "share", "qemu"), join(root, "usr", "share", "seabios")],
  };
}

/** The loader's `--library-path`: the tree's library directories that exist. */
function libraryPath(dir: string): string {
  return paths(dir).libDirs.filter(exists).join(":");
}

function commandOf(dir: string, m: Manifest): QemuSidCommand {
  const p = paths(dir);
  return {
    command: p.loader,
    argsPrefix: [
      // Only the private tree: never the host's /etc/ld.so.cache (bookworm's libraries).
      "--inhibit-cache",
      ...["--library-path", libraryPath(dir)],
      p.binary,
      ...p.dataDirs.flatMap((d) => ["-L", d]),
    ],
    env: { QEMU_MODULE_DIR: p.moduleDir },
    version: m.version,
    versionLine: m.versionLine,
    debianVersion: m.debianVersion,
    dir,
  };
}

function readManifestSync(dir: string): Manifest | undefined {
  try {
    const m = JSON.parse(readFileSync(paths(dir).manifest, "utf8")) as Manifest;
    const p = paths(dir);
    if (m.format !== FORMAT || ![p.binary, p.loader, p.bundle].every(exists)) return undefined;
    return m;
  } catch {
    return undefined;
  }
}

/**
 * The command that runs the private QEMU, if it has been fetched (by `scripts/setup.ts` or
 * {@linkcode ensureQemuSid}); throws otherwise.
 */
export function qemuSidCommand(): QemuSidCommand {
  const dir = qemuSidDir();
  const m = readManifestSync(dir);
  if (m === undefined) {
    throw new Error(
      `QEMU from Debian sid is not unpacked in ${dir}: run "deno run -A scripts/setup.ts"`,
    );
  }
  return commandOf(dir, m);
}

/** `1:11.1.3+ds-1` → `11.1.3`. */
export function upstreamVersion(debianVersion: string): string {
  return debianVersion.replace(/^\d+:/, "").replace(/[+~-].*$/, "");
}

/** True if `version` (e.g. `11.1.3`) is at least {@linkcode QEMU_SID_MIN_VERSION}. */
export function isRecentEnough(version: string): boolean {
  const [major = NaN, minor = 0] = version.split(".").map(Number);
  const [wantMajor, wantMinor] = QEMU_SID_MIN_VERSION;
  return major > wantMajor || (major === wantMajor && minor >= wantMinor);
}

/**
 * Makes sure QEMU ≥ 11.1 from Debian sid is unpacked under {@linkcode qemuSidDir} and runs, and
 * returns how to run it. Fetches (68 packages, 36 MB, about 16 s) only when it is not there yet; one fetch at a time,
 * even when several processes ask together.
 */
export async function ensureQemuSid(opts: EnsureOptions = {}): Promise<QemuSidCommand> {
  const dir = qemuSidDir();
  const cached = readManifestSync(dir);
  if (cached !== undefined) {
    opts.log?.(`qemu sid: cached, ${cached.versionLine}`);
    return commandOf(dir, cached);
  }
  await mkdir(dir, { recursive: true });
  using lock = await Deno.open(join(dir, ".lock"), { create: true, write: true });
  await lock.lock(true);
  const other = readManifestSync(dir); // fetched by another process while we waited
  if (other !== undefined) {
    opts.log?.(`qemu sid: cached, ${other.versionLine}`);
    return commandOf(dir, other);
  }
  return await timed(opts.log, "qemu sid", async () => {
    const m = await fetchQemuSid(dir, opts);
    return [
      commandOf(dir, m),
      `fetched ${m.versionLine}, ${m.packages.length} packages, ` +
      `${(m.downloadBytes / 1e6).toFixed(1)} MB`,
    ];
  });
}

/** apt-get / apt-cache options that make apt read and write only under `dir`. */
function aptOptions(dir: string): string[] {
  const o = (k: string, v: string) => ["-o", `${k}=${v}`];
  return [
    ...o("Dir::Etc::sourcelist", join(dir, "sources.list")),
    ...o("Dir::Etc::sourceparts", "-"),
    ...o("Dir::Etc::preferences", join(dir, "preferences")),
    ...o("Dir::Etc::preferencesparts", join(dir, "preferences.d")),
    ...o("Dir::State::Lists", join(dir, "lists")),
    ...o("Dir::State::status", join(dir, "status")),
    ...o("Dir::Cache", join(dir, "cache")),
    ...o("Dir::Cache::archives", join(dir, "archives")),
    ...o("APT::Sandbox::User", "root"),
  ];
}

async function fetchQemuSid(dir: string, opts: EnsureOptions): Promise<Manifest> {
  const log = opts.log;
  for (const d of ["lists/partial", "archives/partial", "cache", "preferences.d"]) {
    await mkdir(join(dir, d), { recursive: true });
  }
  const keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
  const signedBy = exists(keyring) ? `[signed-by=${keyring}] ` : "";
  await writeFile(join(dir, "sources.list"), `deb ${signedBy}${SID_SOURCE}\n`);
  await writeFile(join(dir, "status"), ""); // nothing installed, as apt sees it
  const apt = aptOptions(dir);
  const aptGet = (args: string[], cwd?: string) =>
    run("apt-get", ["-q", ...apt, ...args], { cwd, env: { DEBIAN_FRONTEND: "noninteractive" } });
  const aptCache = (args: string[]) => run("apt-cache", [...apt, ...args]);

  await timed(log, "qemu sid: apt-get update (sid)", async () => {
    await aptGet(["update"]);
    return [undefined, "done"];
  });

  // The candidate sid offers today.
  const policy = (await aptCache(["policy", "qemu-system-x86"])).stdout;
  const debianVersion = policy.match(/Candidate:\s*(\S+)/)?.[1];
  if (debianVersion === undefined || debianVersion === "(none)") {
    throw new Error(`Debian sid offers no qemu-system-x86:\n${policy}`);
  }
  const version = upstreamVersion(debianVersion);
  if (!isRecentEnough(version)) {
    throw new Error(
      `Debian sid offers qemu-system-x86 ${debianVersion}; need ≥ ${
        QEMU_SID_MIN_VERSION.join(".")
      }`,
    );
  }
  log?.(`qemu sid: sid offers qemu-system-x86 ${debianVersion}`);

  // The packages: the named ones plus the closure of their library dependencies.
  const wanted = new Set(QEMU_SID_PACKAGES);
  let frontier = [...DEPENDS_ROOTS];
  while (frontier.length > 0) {
    const { stdout } = await aptCache([
      "depends",
      ...["--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks"],
      ...["--no-replaces", "--no-enhances"],
      ...frontier,
    ]);
    frontier = [];
    for (const dep of libraryDepends(stdout)) {
      if (wanted.has(dep)) continue;
      wanted.add(dep);
      frontier.push(dep);
    }
  }
  // Pin qemu's own packages to the version checked above (they must match each other).
  const names = [...wanted].sort().map((n) =>
    n.startsWith("qemu-system-") ? `${n}=${debianVersion}` : n
  );

  const archives = join(dir, "archives");
  for (const f of await readdir(archives)) {
    if (f.endsWith(".deb")) await rm(join(archives, f));
  }
  const downloadBytes = await timed(log, "qemu sid: apt-get download", async () => {
    await aptGet(["download", ...names], archives);
    let bytes = 0;
    for (const f of await readdir(archives)) {
      if (f.endsWith(".deb")) bytes += (await stat(join(archives, f))).size;
    }
    return [bytes, `${names.length} packages, ${(bytes / 1e6).toFixed(1)} MB`];
  });

  // Unpack beside the final place, then swap it in, so a half-unpacked tree is never used.
  const p = paths(dir);
  const staging = `${p.root}.new`;
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  const debs = (await readdir(archives)).filter((f) => f.endsWith(".deb")).sort();
  const packages: string[] = [];
  for (const deb of debs) {
    await run("dpkg", ["-x", join(archives, deb), staging]);
    packages.push(decodeURIComponent(deb.replace(/\.deb$/, "")).split("_").slice(0, 2).join("="));
  }
  // Documentation is most of what is not needed (17 MB).
  for (const d of ["doc", "man"]) {
    await rm(join(staging, "usr", "share", d), { recursive: true, force: true });
  }
  await relativizeSymlinks(staging);
  // QEMU looks for its modules and firmware under <its executable's directory>/qemu-bundle when
  // that exists, else at the configured absolute paths, where QEMU 7.2's are. Its executable, as
  // /proc/self/exe says, is the loader: give the loader's directory a qemu-bundle that is the
  // tree's root, so no path of QEMU's ever leads out of the tree.
  const bundle = join(staging, "usr", "lib", MULTIARCH, "qemu-bundle");
  await symlink(relative(dirname(bundle), staging), bundle);
  await rm(p.root, { recursive: true, force: true });
  await rename(staging, p.root);
  // The .debs are not needed any more (the tree is what runs).
  for (const deb of debs) await rm(join(archives, deb));

  const draft: Manifest = {
    format: FORMAT,
    debianVersion,
    version,
    versionLine: "",
    packages,
    downloadBytes,
    fetchedAt: new Date().toISOString(),
  };
  const versionLine = await verify(dir, draft);
  const manifest: Manifest = { ...draft, versionLine };
  await writeFile(p.versionFile, `${versionLine}\n${debianVersion}\n`);
  await writeFile(`${p.manifest}.tmp`, JSON.stringify(manifest, null, 2) + "\n");
  await rename(`${p.manifest}.tmp`, p.manifest);
  log?.(`qemu sid: ${versionLine} in ${dir}`);
  return manifest;
}

/**
 * The library packages named in `apt-cache depends` output: the first of each group of
 * alternatives, real packages only, names starting with `lib` or `zlib`.
 */
export function libraryDepends(aptCacheDepends: string): string[] {
  const out: string[] = [];
  let alternative = false;
  for (const line of aptCacheDepends.split("\n")) {
    const m = line.match(/^\s+(\|?)(?:Pre)?Depends:\s*(\S+)/);
    if (m === null) continue;
    const [, bar, name = ""] = m;
    const skip = alternative; // the previous line was "a |": this is its alternative
    alternative = bar === "|";
    if (skip || name.startsWith("<") || !/^(lib|zlib)/.test(name)) continue;
    out.push(name.replace(/:any$/, ""));
  }
  return out;
}

/**
 * Turns absolute symlinks that point into the unpacked tree (e.g. /usr/share/qemu/x ->
 * /usr/share/seabios/x) into relative ones, so they never reach the host's files.
 */
async function relativizeSymlinks(root: string): Promise<void> {
  for (const entry of await readdir(root, { withFileTypes: true, recursive: true })) {
    if (!entry.isSymbolicLink()) continue;
    const link = join(entry.parentPath, entry.name);
    const target = await readlink(link);
    if (!target.startsWith("/")) continue;
    const inside = join(root, target);
    if (!exists(inside)) continue;
    await rm(link);
    await symlink(relative(dirname(link), inside), link);
  }
}

/**
 * Checks the unpacked QEMU: every library it and its modules load resolves inside the tree,
 * `--version` says what apt said, and its devices include `vhost-user-fs-pci` and
 * `vhost-user-test-device-pci` (which loads every module). Returns the `--version` line.
 */
async function verify(dir: string, m: Manifest): Promise<string> {
  const p = paths(dir);
  const cmd = commandOf(dir, m);
  const objects = [p.binary];
  if (exists(p.moduleDir)) {
    for (const f of await readdir(p.moduleDir)) {
      if (f.endsWith(".so")) objects.push(join(p.moduleDir, f));
    }
  }
  const outside: string[] = [];
  for (const obj of objects) {
    const { stdout } = await run(p.loader, [
      "--inhibit-cache",
      ...["--library-path", libraryPath(dir)],
      "--list",
      obj,
    ], { check: false });
    for (const line of stdout.split("\n")) {
      const lib = line.match(/^\s*(\S+) => (.*?) \(0x[0-9a-f]+\)$/) ??
        line.match(/^\s*(\S+) => (not found)$/);
      if (lib === null) continue;
      const [, soname = "", path = ""] = lib;
      if (!path.startsWith(`${p.root}/`)) {
        outside.push(`${relative(p.root, obj)}: ${soname} => ${path}`);
      }
    }
  }
  if (outside.length > 0) {
    throw new Error(
      `QEMU from sid needs libraries that are not unpacked in ${p.root}:\n${
        [...new Set(outside)].join("\n")
      }`,
    );
  }

  const run11 = (args: string[]) =>
    run(cmd.command, [...cmd.argsPrefix, ...args], { env: cmd.env });
  const versionLine = (await run11(["--version"])).stdout.split("\n")[0]?.trim() ?? "";
  const said = versionLine.match(/version (\d+\.\d+(?:\.\d+)?)/)?.[1];
  if (said === undefined || !isRecentEnough(said) || said !== m.version) {
    throw new Error(`Expected QEMU ${m.version} from ${m.debianVersion}, got: ${versionLine}`);
  }
  const help = await run11(["-device", "help"]);
  for (const dev of ["vhost-user-fs-pci", "vhost-user-test-device-pci"]) {
    if (!help.stdout.includes(`name "${dev}"`)) {
      throw new Error(`${versionLine}: -device help does not list ${dev}\n${help.stderr}`);
    }
  }
  if (help.stderr.trim() !== "") {
    throw new Error(`${versionLine}: -device help complained:\n${help.stderr.trim()}`);
  }
  return versionLine;
}
