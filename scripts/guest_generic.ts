/**
 * Debian 12's generic kernel for the guest benchmark (`scripts/bench_guest.ts`): the cloud kernel
 * of `scripts/setup.ts` has no 9p, and the benchmark compares virtio-fs with QEMU's virtio-9p on
 * the same kernel. This fetches the package `linux-image-amd64` depends on, keeps `vmlinuz` and
 * the modules the guest loads (virtio-pci, virtio-blk, ext4, overlay, fuse, virtiofs, netfs,
 * fscache, 9pnet, 9pnet_virtio, 9p, and whatever `modules.dep` says they need, in load order),
 * and builds an initramfs with the same init (`fixtures/guest/init`) and busybox as the default
 * guest (`buildInitramfs()` of setup.ts). Cached under `<cache>/guest-generic/`.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { statSync } from "node:fs";
import { basename, join } from "node:path";
import { aptGet, cacheDir, type EnsureOptions, exists, run, timed } from "./_host.ts";
import { buildInitramfs, decompressModule, findStaticBusybox, guestInitPath } from "./setup.ts";

/** The modules the benchmark guest wants (their dependencies are added from `modules.dep`). */
export const GENERIC_WANTED_MODULES: readonly string[] = [
  "virtio_pci",
  "virtio_blk",
  "crc32c_generic",
  "crc32c_intel",
  "ext4",
  "overlay",
  "fuse",
  "virtiofs",
  "netfs",
  "fscache",
  "9pnet",
  "9pnet_virtio",
  "9p",
];

/** Bump when the cached layout changes. */
const GENERIC_FORMAT = 1;

/** The generic kernel's boot files. */
export interface GenericKernel {
  /** The kernel image. */
  kernel: string;
  /** The initramfs with the modules above. */
  initrd: string;
  /** `uname -r`, e.g. `6.1.0-50-amd64`. */
  kernelRelease: string;
  /** `name=version` of the kernel package. */
  kernelPackage: string;
}

interface Manifest extends GenericKernel {
  format: number;
  initSha256: string;
  modules: string[];
}

function moduleNameOf(path: string): string {
  return basename(path).replace(/\.ko(\.(xz|zst|gz))?$/, "").replaceAll("-", "_");
}

/** The `depends=` list of a module's `.modinfo` (a decompressed `.ko`). */
export function modinfoDepends(ko: Uint8Array): string[] {
  const text = new TextDecoder("latin1").decode(ko);
  const m = text.match(/\0depends=([^\0]*)\0/);
  return m?.[1] === undefined || m[1] === "" ? [] : m[1].split(",").map(moduleNameOf);
}

/**
 * Decompresses `wanted` and, from their `.modinfo`, the modules they depend on into `outDir`
 * (`<name>.ko`), and returns the load order (dependencies first). Built-in ones are skipped;
 * names missing from the kernel throw, except the optional `crc32c_*` drivers.
 */
async function collectModules(
  modRoot: string,
  wanted: readonly string[],
  outDir: string,
): Promise<string[]> {
  const builtin = new Set(
    (await readFile(join(modRoot, "modules.builtin"), "utf8")).split("\n").filter((l) => l !== "")
      .map(moduleNameOf),
  );
  const files = new Map<string, string>();
  for (
    const e of await readdir(join(modRoot, "kernel"), { withFileTypes: true, recursive: true })
  ) {
    if (e.isFile()) files.set(moduleNameOf(e.name), join(e.parentPath, e.name));
  }
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = async (name: string, optional: boolean): Promise<void> => {
    if (seen.has(name) || builtin.has(name)) return;
    seen.add(name);
    const file = files.get(name);
    if (file === undefined) {
      if (optional) return;
      throw new Error(`Module ${name} is neither built in nor in the kernel package`);
    }
    const out = join(outDir, `${name}.ko`);
    await decompressModule(file, out);
    for (const d of modinfoDepends(await readFile(out))) await visit(d, false);
    order.push(name);
  };
  for (const w of wanted) await visit(w, w.startsWith("crc32c_"));
  return order;
}

/**
 * Makes sure Debian's generic kernel and its benchmark initramfs are cached, and returns their
 * paths. Fast when cached; delete `<cache>/guest-generic` for a newer kernel.
 */
export async function ensureGenericKernel(opts: EnsureOptions = {}): Promise<GenericKernel> {
  const dir = join(cacheDir(), "guest-generic");
  const manifestPath = join(dir, "manifest.json");
  const initSha256 = createHash("sha256").update(await readFile(guestInitPath())).digest("hex");
  const busybox = findStaticBusybox();
  if (busybox === undefined) throw new Error("Cannot find a static busybox (run scripts/setup.ts)");
  const bb = statSync(busybox);
  const initKey = `${initSha256}:${busybox}:${bb.size}:${bb.mtimeMs}`;
  const old = await readFile(manifestPath, "utf8").then((t) => JSON.parse(t) as Manifest).catch(
    () => undefined,
  );
  if (
    old !== undefined && old.format === GENERIC_FORMAT && old.initSha256 === initKey &&
    exists(old.kernel) && exists(old.initrd)
  ) {
    opts.log?.(`generic kernel: cached, ${old.kernelRelease}`);
    return pick(old);
  }
  await mkdir(dir, { recursive: true });
  const got = await timed(opts.log, "generic kernel", async () => {
    const pkg = await resolveGenericPackage();
    const work = await mkdtemp(join(dir, ".kernel-"));
    try {
      try {
        await aptGet(["download", pkg], { cwd: work });
      } catch {
        await aptGet(["update"]);
        await aptGet(["download", pkg], { cwd: work });
      }
      const deb = (await readdir(work)).find((f) => f.endsWith(".deb"));
      if (deb === undefined) throw new Error(`apt-get download ${pkg} left no .deb`);
      const root = join(work, "root");
      await run("dpkg", ["-x", join(work, deb), root]);
      const releases = await readdir(join(root, "lib", "modules"));
      const release = releases[0];
      if (release === undefined || releases.length !== 1) {
        throw new Error(`Expected one module tree in ${pkg}, found: ${releases.join(", ")}`);
      }
      const modRoot = join(root, "lib", "modules", release);
      const kernelDir = join(dir, release);
      await rm(kernelDir, { recursive: true, force: true });
      await mkdir(join(kernelDir, "modules"), { recursive: true });
      await run("cp", [join(root, "boot", `vmlinuz-${release}`), join(kernelDir, "vmlinuz")]);
      const order = await collectModules(
        modRoot,
        GENERIC_WANTED_MODULES,
        join(kernelDir, "modules"),
      );
      const pkgVersion = deb.replace(/\.deb$/, "").split("_").slice(0, 2).join("=");
      return [
        { release, pkgVersion, kernelDir, modules: order },
        `fetched ${pkgVersion}; modules ${order.join(" ")}`,
      ];
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
  const initrd = join(dir, "initrd.img");
  await timed(opts.log, "generic initramfs", async () => {
    await buildInitramfs(
      got.kernelDir,
      got.modules.map((name) => ({ name, builtin: false })),
      busybox,
      initrd,
    );
    return [undefined, `built ${initrd} (${(await stat(initrd)).size} bytes)`];
  });
  const manifest: Manifest = {
    format: GENERIC_FORMAT,
    kernel: join(got.kernelDir, "vmlinuz"),
    initrd,
    kernelRelease: got.release,
    kernelPackage: got.pkgVersion,
    initSha256: initKey,
    modules: got.modules,
  };
  await writeFile(`${manifestPath}.tmp`, JSON.stringify(manifest, null, 2) + "\n");
  await rename(`${manifestPath}.tmp`, manifestPath);
  return pick(manifest);
}

function pick(m: Manifest): GenericKernel {
  return {
    kernel: m.kernel,
    initrd: m.initrd,
    kernelRelease: m.kernelRelease,
    kernelPackage: m.kernelPackage,
  };
}

/** The kernel package `linux-image-amd64` depends on. */
async function resolveGenericPackage(): Promise<string> {
  let r = await run("apt-cache", ["depends", "linux-image-amd64"], { check: false });
  if (!/Depends:/.test(r.stdout)) {
    await aptGet(["update"]);
    r = await run("apt-cache", ["depends", "linux-image-amd64"]);
  }
  const m = r.stdout.match(/Depends:\s*(linux-image-\S+)/);
  if (m?.[1] === undefined) throw new Error(`No kernel package in:\n${r.stdout}`);
  return m[1];
}

if (import.meta.main) {
  console.log(await ensureGenericKernel({ log: (l) => console.log(`setup: ${l}`) }));
}
