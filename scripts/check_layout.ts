/**
 * Project rules `deno lint` cannot express: only src/ffi/_libc.ts calls Deno.dlopen; each layer
 * imports only the layers below it; nothing in src/ or the entries (mod.ts, driver.ts) imports
 * spec/; the protocol's vocabulary (FUSE, vhost-user and virtio constants, virtqueue flags and
 * ring offsets) is defined only in src/wire/; nothing reads the team's material beside the project
 * (the `shared` folder one level up), which users do not have.
 *
 * Run: `deno run --allow-read scripts/check_layout.ts` (part of `deno task check`).
 *
 * @module
 */
import { join, relative } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;

/** Which src/ folders each src/ folder may import. */
const LAYERS: Record<string, readonly string[]> = {
  ffi: [],
  wire: [],
  memory: ["ffi", "wire"],
  virtqueue: ["ffi", "wire", "memory"],
  "vhost_user": ["ffi", "wire", "memory", "virtqueue", "log.ts"],
  filesystem: ["ffi", "wire", "log.ts"],
  fuse: ["ffi", "wire", "virtqueue", "filesystem", "log.ts"],
  driver: ["ffi", "wire"],
  daemon: [
    "ffi",
    "wire",
    "memory",
    "virtqueue",
    "vhost_user",
    "fuse",
    "filesystem",
    "driver",
    "log.ts",
  ],
  cli: ["daemon", "log.ts"],
  "log.ts": [],
};

function* files(dir: string): Generator<string> {
  for (const e of Deno.readDirSync(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) {
      if (e.name === "node_modules" || e.name.startsWith(".")) continue;
      yield* files(p);
    } else if (e.name.endsWith(".ts")) yield p;
  }
}

/** A quoted path into the folder beside the project (built so this file does not match itself). */
const OUTSIDE_MATERIAL = new RegExp(`["'\`][^"'\`]*\\.\\./${"sha" + "red"}/`);

const WIRE = join(ROOT, "src", "wire");
/** Every name src/wire/ exports: defining one anywhere else is a second copy of a protocol fact. */
const wireNames = new Set<string>();
for (const file of files(WIRE)) {
  const text = Deno.readTextFileSync(file);
  for (const m of text.matchAll(/^export (?:const|function) (\w+)/gm)) wireNames.add(m[1] ?? "");
}
/** Prefixes of the protocol's constant names (fuse.h, vhost-user.rst, virtio_ring.h). */
const WIRE_PREFIX = /^(FUSE_|FOPEN_|FATTR_|VIRTQ_|VRING_|VIRTIO_|VHOST_USER_|VHOST_F_)/;
/** The entries users import. */
const ENTRIES = new Set(["mod.ts", "driver.ts"]);

const problems: string[] = [];
for (const file of files(ROOT)) {
  const rel = relative(ROOT, file);
  const text = Deno.readTextFileSync(file);
  if (
    rel !== "src/ffi/_libc.ts" && rel !== "scripts/check_layout.ts" &&
    /Deno\.dlopen\s*\(/.test(text)
  ) {
    problems.push(`${rel}: calls Deno.dlopen (only src/ffi/_libc.ts may)`);
  }
  if (rel !== "scripts/check_layout.ts" && OUTSIDE_MATERIAL.test(text)) {
    problems.push(`${rel}: reaches into the team's shared folder, which users do not have`);
  }
  if (rel.startsWith("src/") || ENTRIES.has(rel)) {
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*["'](\.[^"']+)["']/g)) {
      const target = relative(ROOT, join(file, "..", m[1] ?? ""));
      if (target.startsWith("spec/")) {
        problems.push(`${rel}: imports ${m[1]} from spec/ (test code)`);
      }
    }
  }
  if (!rel.startsWith("src/wire/")) {
    for (const m of text.matchAll(/\b(?:const|let|var)\s+([A-Z][A-Z0-9_]*)\s*=/g)) {
      const name = m[1] ?? "";
      if (wireNames.has(name) || WIRE_PREFIX.test(name)) {
        problems.push(`${rel}: defines ${name}, a protocol constant (import it from src/wire/)`);
      }
    }
  }
  if (!rel.startsWith("src/") || rel.endsWith("_test.ts")) continue;
  const layer = rel.split("/")[1] ?? "";
  const allowed = LAYERS[layer];
  if (allowed === undefined) {
    problems.push(`${rel}: src/${layer} is not a known layer (add it to scripts/check_layout.ts)`);
    continue;
  }
  for (const m of text.matchAll(/(?:from|import)\s*\(?\s*["'](\.[^"']+)["']/g)) {
    const target = relative(join(ROOT, "src"), join(file, "..", m[1] ?? ""));
    if (target.startsWith("..")) {
      problems.push(`${rel}: imports ${m[1]} from outside src/`);
      continue;
    }
    const targetLayer = target.split("/")[0] ?? "";
    if (targetLayer !== layer && !allowed.includes(targetLayer)) {
      problems.push(`${rel}: layer ${layer} may not import ${targetLayer} (${m[1]})`);
    }
  }
}
if (problems.length > 0) {
  console.error(problems.join("\n"));
  Deno.exit(1);
}
console.log("layout ok");
