/**
 * Prepares what the real-guest tests need, and caches it:
 *
 * - host tools: `qemu-system-x86_64` (and the C `virtiofsd` that comes with it), a static
 *   busybox and `cpio`, installed with apt-get only when missing;
 * - the guest: Debian 12's cloud kernel (the package `linux-image-cloud-amd64` depends on), its
 *   virtio-pci / virtio-blk / overlay / fuse / virtiofs modules, an initramfs (busybox + modules +
 *   `fixtures/guest/init`), and a Debian userland (Python 3.11 and its test suite, coreutils,
 *   util-linux, attr, ...) as a read-only ext4 image the init mounts and runs commands in
 *   (`scripts/guest_rootfs.ts`);
 * - Rust virtiofsd 1.13 from Debian trixie, unpacked privately by `scripts/rust_virtiofsd.sh`;
 * - QEMU ≥ 11.1 from Debian sid, unpacked privately by `scripts/qemu_sid.ts` (for the DAX
 *   window: `vhost-user-test-device-pci`); QEMU 7.2 stays the default everywhere.
 *
 * Everything is kept under `$VIRTIOFSD_CACHE` (default `<project>/.cache`). Run as a script it
 * does all of the above and prints one line per step with its duration; when everything is
 * cached it only checks files and takes a few milliseconds. Delete `<cache>/guest` to pick up a
 * newer kernel and newer packages.
 *
 * @example
 * ```ts
 * import { ensureGuest, ensureQemuSid, ensureRustVirtiofsd } from "../scripts/setup.ts";
 * const { kernel, initrd, rootfs } = await ensureGuest();
 * const rustVirtiofsd = await ensureRustVirtiofsd(); // argv prefix
 * const qemu11 = await ensureQemuSid(); // { command, argsPrefix, env, version }
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import {
  chmod,
  copyFile,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { closeSync, openSync, readSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { gzipSync } from "node:zlib";
import {
  aptGet,
  aptGetWithUpdate,
  cacheDir,
  type EnsureOptions,
  exists,
  projectDir,
  run,
  type RunResult,
  timed,
  which,
} from "./_host.ts";
import { ensureGuestRootfs } from "./guest_rootfs.ts";
import { ensureQemuSid } from "./qemu_sid.ts";

export { cacheDir, type EnsureOptions, projectDir, type StepLogger, which } from "./_host.ts";
export { ensureGuestRootfs, GUEST_USER, ROOTFS_PACKAGES } from "./guest_rootfs.ts";
export { ensureQemuSid, type QemuSidCommand, qemuSidCommand, qemuSidDir } from "./qemu_sid.ts";

/** Kernel modules the guest needs, in load order. Built-in ones are skipped. */
export const GUEST_MODULES: readonly string[] = [
  "virtio_ring",
  "virtio",
  "virtio_pci_modern_dev",
  "virtio_pci_legacy_dev",
  "virtio_pci",
  "virtio_blk",
  "overlay",
  "fuse",
  "virtiofs",
];

/** Bump when the layout of the cached guest changes, so that old caches are rebuilt. */
const GUEST_FORMAT = 2;

/** The guest's boot files, as absolute paths. */
export interface GuestFiles {
  /** The kernel image (bzImage). */
  kernel: string;
  /** The initramfs (gzip-compressed cpio newc). */
  initrd: string;
  /** `uname -r` of the kernel, e.g. `6.1.0-50-cloud-amd64`. */
  kernelRelease: string;
  /** The Debian package the kernel came from, with its version. */
  kernelPackage: string;
  /** The Debian userland: a raw ext4 image, attached read-only (`scripts/guest_rootfs.ts`). */
  rootfs: string;
}

interface GuestManifest extends Omit<GuestFiles, "rootfs"> {
  format: number;
  initSha256: string;
  busybox: string;
  modules: { name: string; builtin: boolean }[];
}

/** The path of the init script that goes into the initramfs. */
export function guestInitPath(): string {
  return join(projectDir(), "fixtures", "guest", "init");
}

/** The path of `scripts/rust_virtiofsd.sh`. */
export function rustVirtiofsdScript(): string {
  return join(projectDir(), "scripts", "rust_virtiofsd.sh");
}

/** The path of the C virtiofsd that Debian 12 ships with QEMU 7.2. */
export const C_VIRTIOFSD = "/usr/lib/qemu/virtiofsd";

/** True if `path` is an ELF file without a PT_INTERP program header (statically linked). */
function isStaticElf(path: string): boolean {
  const fd = openSync(path, "r");
  try {
    const head = new Uint8Array(64);
    if (readSync(fd, head, 0, 64, 0) < 64) return false;
    const v = new DataView(head.buffer);
    // "\x7fELF", 64-bit, little-endian
    if (v.getUint32(0) !== 0x7f454c46 || head[4] !== 2 || head[5] !== 1) return false;
    const phoff = Number(v.getBigUint64(32, true));
    const phentsize = v.getUint16(54, true);
    const phnum = v.getUint16(56, true);
    const table = new Uint8Array(phentsize * phnum);
    readSync(fd, table, 0, table.length, phoff);
    const t = new DataView(table.buffer);
    for (let i = 0; i < phnum; i++) {
      if (t.getUint32(i * phentsize, true) === 3 /* PT_INTERP */) return false;
    }
    return true;
  } finally {
    closeSync(fd);
  }
}

/** Finds a statically linked busybox, or `undefined`. */
export function findStaticBusybox(): string | undefined {
  for (const p of ["/bin/busybox", "/usr/bin/busybox", which("busybox")]) {
    if (p !== undefined && exists(p) && isStaticElf(p)) return p;
  }
  return undefined;
}

/**
 * Makes sure `qemu-system-x86_64`, the C virtiofsd, a static busybox, `cpio`, `mke2fs`, and the
 * sandbox's `unshare`, `setpriv` and `newuidmap` / `newgidmap` are present, installing the Debian
 * packages that provide the missing ones.
 */
export async function ensureHostTools(opts: EnsureOptions = {}): Promise<void> {
  await timed(opts.log, "host tools", async () => {
    const wanted = new Set<string>();
    if (which("qemu-system-x86_64") === undefined) wanted.add("qemu-system-x86");
    if (!exists(C_VIRTIOFSD)) wanted.add("qemu-system-common");
    if (findStaticBusybox() === undefined) wanted.add("busybox-static");
    if (which("cpio") === undefined) wanted.add("cpio");
    if (which("mke2fs") === undefined) wanted.add("e2fsprogs");
    if (which("unshare") === undefined || which("setpriv") === undefined) wanted.add("util-linux");
    if (which("newuidmap") === undefined || which("newgidmap") === undefined) wanted.add("uidmap");
    if (wanted.size === 0) return [undefined, "present"];
    await aptGetWithUpdate(["install", "-y", ...wanted]);
    if (findStaticBusybox() === undefined) throw new Error("Cannot find a static busybox");
    return [undefined, `installed ${[...wanted].join(" ")}`];
  });
}

async function sha256File(path: string): Promise<string> {
  return createHash("sha256").update(await readFile(path)).digest("hex");
}

function busyboxSignature(path: string): string {
  const st = statSync(path);
  return `${path}:${st.size}:${st.mtimeMs}`;
}

async function readManifest(path: string): Promise<GuestManifest | undefined> {
  try {
    return JSON.parse(await readFile(path, "utf8")) as GuestManifest;
  } catch {
    return undefined;
  }
}

/** Resolves the kernel package `linux-image-cloud-amd64` currently depends on. */
async function resolveKernelPackage(): Promise<string> {
  const { stdout } = await aptGetWithUpdateCache(["depends", "linux-image-cloud-amd64"]);
  const m = stdout.match(/Depends:\s*(linux-image-\S+)/);
  if (m?.[1] === undefined) {
    throw new Error(`Cannot find the kernel package in: apt-cache depends\n${stdout}`);
  }
  return m[1];
}

async function aptGetWithUpdateCache(args: readonly string[]): Promise<RunResult> {
  const first = await run("apt-cache", args, { check: false });
  if (first.code === 0 && /Depends:/.test(first.stdout)) return first;
  await aptGet(["update"]);
  return await run("apt-cache", args);
}

/**
 * Downloads and unpacks the kernel package into `<dir>/<release>/`, keeping only `vmlinuz`,
 * `config`, `modules.builtin` and the modules we load (decompressed).
 */
async function fetchKernel(
  guestDir: string,
  pkg: string,
): Promise<{ release: string; pkgVersion: string; kernelDir: string }> {
  const work = await mkdtemp(join(guestDir, ".kernel-"));
  try {
    try {
      await aptGet(["download", pkg], { cwd: work });
    } catch {
      await aptGet(["update"]);
      await aptGet(["download", pkg], { cwd: work });
    }
    const deb = (await readdir(work)).find((f) => f.endsWith(".deb"));
    if (deb === undefined) throw new Error(`apt-get download ${pkg} left no .deb in ${work}`);
    const root = join(work, "root");
    await run("dpkg", ["-x", join(work, deb), root]);
    const releases = await readdir(join(root, "lib", "modules"));
    const release = releases[0];
    if (release === undefined || releases.length !== 1) {
      throw new Error(`Expected one module tree in ${pkg}, found: ${releases.join(", ")}`);
    }
    const modRoot = join(root, "lib", "modules", release);
    const kernelDir = join(guestDir, release);
    const staging = `${kernelDir}.new`;
    await rm(staging, { recursive: true, force: true });
    await mkdir(join(staging, "modules"), { recursive: true });
    await copyFile(join(root, "boot", `vmlinuz-${release}`), join(staging, "vmlinuz"));
    await copyFile(join(root, "boot", `config-${release}`), join(staging, "config"));
    await copyFile(join(modRoot, "modules.builtin"), join(staging, "modules.builtin"));

    const builtin = await readFile(join(modRoot, "modules.builtin"), "utf8");
    const files = await listFiles(join(modRoot, "kernel"));
    for (const name of GUEST_MODULES) {
      if (isBuiltin(builtin, name)) continue;
      const file = files.find((f) => moduleNameOf(f) === name);
      if (file === undefined) throw new Error(`Module ${name} is neither built in nor in ${pkg}`);
      await decompressModule(file, join(staging, "modules", `${name}.ko`));
    }
    await rm(kernelDir, { recursive: true, force: true });
    await rename(staging, kernelDir);
    const pkgVersion = deb.replace(/\.deb$/, "").split("_").slice(0, 2).join("=");
    return { release, pkgVersion, kernelDir };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function isBuiltin(modulesBuiltin: string, name: string): boolean {
  return modulesBuiltin.split("\n").some((line) => moduleNameOf(line) === name);
}

/** `kernel/fs/fuse/virtiofs.ko.xz` → `virtiofs`. Module names treat `-` and `_` alike. */
function moduleNameOf(path: string): string {
  return basename(path).replace(/\.ko(\.(xz|zst|gz))?$/, "").replaceAll("-", "_");
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out.push(join(entry.parentPath, entry.name));
  }
  return out;
}

/** Copies a module, decompressing .ko.xz / .ko.zst / .ko.gz (busybox insmod takes plain .ko). */
export async function decompressModule(src: string, dst: string): Promise<void> {
  const tool = src.endsWith(".xz")
    ? "xz"
    : src.endsWith(".zst")
    ? "zstd"
    : src.endsWith(".gz")
    ? "gzip"
    : undefined;
  if (tool === undefined) {
    await copyFile(src, dst);
    return;
  }
  if (which(tool) === undefined) {
    await aptGetWithUpdate(["install", "-y", tool === "xz" ? "xz-utils" : tool]);
  }
  const out = await new Deno.Command(tool, { args: ["-dc", src], stdout: "piped" }).output();
  if (out.code !== 0) throw new Error(`Cannot decompress ${src} with ${tool}`);
  await writeFile(dst, out.stdout);
}

/**
 * Builds the initramfs: static busybox with its applet links, `/init`, the modules and
 * `/etc/guest-modules` (their load order), as a gzip-compressed cpio newc archive.
 */
export async function buildInitramfs(
  kernelDir: string,
  modules: readonly { name: string; builtin: boolean }[],
  busybox: string,
  out: string,
): Promise<void> {
  const staging = await mkdtemp(join(dirname(out), ".initramfs-"));
  try {
    for (const d of ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp"]) {
      await mkdir(join(staging, d), { recursive: true });
    }
    await mkdir(join(staging, "lib", "modules"), { recursive: true });
    await copyFile(busybox, join(staging, "bin", "busybox"));
    await chmod(join(staging, "bin", "busybox"), 0o755);
    const { stdout } = await run(busybox, ["--list-full"]);
    for (const applet of stdout.split("\n").filter((l) => l !== "")) {
      const link = join(staging, applet);
      if (applet === "bin/busybox" || (await lstat(link).catch(() => undefined))) continue;
      await mkdir(dirname(link), { recursive: true });
      await symlink("/bin/busybox", link);
    }
    await copyFile(guestInitPath(), join(staging, "init"));
    await chmod(join(staging, "init"), 0o755);
    const loaded = modules.filter((m) => !m.builtin).map((m) => m.name);
    for (const name of loaded) {
      await copyFile(
        join(kernelDir, "modules", `${name}.ko`),
        join(staging, "lib", "modules", `${name}.ko`),
      );
    }
    await writeFile(join(staging, "etc", "guest-modules"), loaded.map((n) => `${n}\n`).join(""));
    // The kernel opens /dev/console before /init runs; its built-in initramfs usually has it,
    // but do not rely on that. mknod needs root, which setup has anyway.
    await run("mknod", ["-m", "600", join(staging, "dev", "console"), "c", "5", "1"], {
      check: false,
    });

    const list = (await run("find", [".", "-mindepth", "1"], { cwd: staging })).stdout
      .split("\n")
      .filter((l) => l !== "")
      .sort()
      .join("\n") + "\n";
    const cpio = new Deno.Command("cpio", {
      args: ["--quiet", "-o", "-H", "newc", "--owner", "0:0", "--reproducible"],
      cwd: staging,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = cpio.stdin.getWriter();
    const [result] = await Promise.all([
      cpio.output(),
      writer.write(new TextEncoder().encode(list)).then(() => writer.close()),
    ]);
    if (result.code !== 0) {
      throw new Error(`cpio failed: ${new TextDecoder().decode(result.stderr)}`);
    }
    const tmp = `${out}.tmp`;
    await writeFile(tmp, gzipSync(result.stdout, { level: 6 }));
    await rename(tmp, out);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/**
 * Makes sure the guest kernel, initramfs and root image are built and cached, and returns their
 * paths. Rebuilds the initramfs when `fixtures/guest/init` or busybox changed, the root image when
 * its package list or `fixtures/guest/rootfs/` changed. Fast when cached.
 */
export async function ensureGuest(opts: EnsureOptions = {}): Promise<GuestFiles> {
  const boot = await ensureGuestBoot(opts);
  const { image } = await ensureGuestRootfs(opts);
  return { ...boot, rootfs: image };
}

async function ensureGuestBoot(opts: EnsureOptions): Promise<Omit<GuestFiles, "rootfs">> {
  const log = opts.log;
  const guestDir = join(cacheDir(), "guest");
  const manifestPath = join(guestDir, "manifest.json");
  const old = await readManifest(manifestPath);
  const initSha256 = await sha256File(guestInitPath());
  const busybox = findStaticBusybox();
  if (busybox === undefined) {
    throw new Error(
      "Cannot find a static busybox (run scripts/setup.ts, or install busybox-static)",
    );
  }
  const bbSig = busyboxSignature(busybox);
  if (
    old !== undefined && old.format === GUEST_FORMAT && old.initSha256 === initSha256 &&
    old.busybox === bbSig && exists(old.kernel) && exists(old.initrd)
  ) {
    log?.(`guest: cached, kernel ${old.kernelRelease} (${old.kernelPackage})`);
    return pickFiles(old);
  }
  await mkdir(guestDir, { recursive: true });

  // Reuse the unpacked kernel if the cache has one; resolve and fetch it otherwise.
  const kernel = await timed(log, "kernel", async () => {
    if (
      old !== undefined && old.format === GUEST_FORMAT &&
      exists(join(guestDir, old.kernelRelease, "vmlinuz"))
    ) {
      return [
        { release: old.kernelRelease, pkgVersion: old.kernelPackage, modules: old.modules },
        `cached ${old.kernelRelease}`,
      ];
    }
    const pkg = await resolveKernelPackage();
    const got = await fetchKernel(guestDir, pkg);
    const builtin = await readFile(join(guestDir, got.release, "modules.builtin"), "utf8");
    const modules = GUEST_MODULES.map((name) => ({ name, builtin: isBuiltin(builtin, name) }));
    return [
      { release: got.release, pkgVersion: got.pkgVersion, modules },
      `fetched ${got.pkgVersion}; modules ${
        modules.map((m) => m.builtin ? `${m.name}(built-in)` : m.name).join(" ")
      }`,
    ];
  });

  const kernelDir = join(guestDir, kernel.release);
  const initrd = join(guestDir, "initrd.img");
  await timed(log, "initramfs", async () => {
    await buildInitramfs(kernelDir, kernel.modules, busybox, initrd);
    return [undefined, `built ${initrd} (${(await stat(initrd)).size} bytes)`];
  });

  const manifest: GuestManifest = {
    format: GUEST_FORMAT,
    kernel: join(kernelDir, "vmlinuz"),
    initrd,
    kernelRelease: kernel.release,
    kernelPackage: kernel.pkgVersion,
    initSha256,
    busybox: bbSig,
    modules: kernel.modules,
  };
  await writeFile(`${manifestPath}.tmp`, JSON.stringify(manifest, null, 2) + "\n");
  await rename(`${manifestPath}.tmp`, manifestPath);
  return pickFiles(manifest);
}

function pickFiles(m: GuestManifest): Omit<GuestFiles, "rootfs"> {
  return {
    kernel: m.kernel,
    initrd: m.initrd,
    kernelRelease: m.kernelRelease,
    kernelPackage: m.kernelPackage,
  };
}

/** The directory `scripts/rust_virtiofsd.sh` unpacks into (same rule as the script). */
export function rustVirtiofsdDir(): string {
  return Deno.env.get("RUST_VIRTIOFSD_DIR") || join(cacheDir(), "rust-virtiofsd");
}

/**
 * Makes sure Rust virtiofsd 1.13 is unpacked and runs, and returns the argv prefix that starts
 * it (append daemon options, which must include `--sandbox none`).
 */
export async function ensureRustVirtiofsd(opts: EnsureOptions = {}): Promise<string[]> {
  const script = rustVirtiofsdScript();
  const dir = rustVirtiofsdDir();
  const stampPath = join(dir, "verified-version");
  const daemon = join(dir, "root", "usr", "libexec", "virtiofsd");
  const stamp = await readFile(stampPath, "utf8").catch(() => undefined);
  if (stamp !== undefined && exists(daemon)) {
    opts.log?.(`rust virtiofsd: cached, ${stamp.trim()}`);
    return [script];
  }
  return await timed(opts.log, "rust virtiofsd", async () => {
    const env = { RUST_VIRTIOFSD_DIR: dir };
    await run(script, ["--fetch-only"], { env });
    const { stdout } = await run(script, ["--version"], { env });
    const version = stdout.trim();
    if (!/^virtiofsd 1\.13(\.|$)/.test(version)) {
      throw new Error(`Expected Rust virtiofsd 1.13, but --version says: ${version}`);
    }
    await writeFile(stampPath, `${version}\n`);
    return [[script], `fetched ${version}`];
  });
}

/**
 * Runs every step: host tools, guest kernel, initramfs and root image, Rust virtiofsd, QEMU from
 * sid.
 */
export async function setup(opts: EnsureOptions = {}): Promise<void> {
  await ensureHostTools(opts);
  await ensureGuest(opts);
  await ensureRustVirtiofsd(opts);
  await ensureQemuSid(opts);
}

if (import.meta.main) {
  const t0 = performance.now();
  await setup({ log: (line) => console.log(`setup: ${line}`) });
  console.log(`setup: done in ${Math.round(performance.now() - t0)} ms (cache ${cacheDir()})`);
}
