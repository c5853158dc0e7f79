/**
 * Installs `deno-virtiofsd` as users expect a virtiofsd: an executable on PATH, and a vhost-user
 * back-end description QEMU's management tools find it by.
 *
 * - `<prefix>/deno-virtiofsd` (prefix default `/usr/local/bin`): a `/bin/sh` wrapper that execs
 *   this checkout's `mod.ts` with the Deno pinned in its `node_modules` (absolute paths,
 *   `--allow-all`, every argument passed through). `exec` keeps the pid, so signals reach the
 *   daemon, and inherited descriptors (`--fd 3`, as libvirt and kata pass a listening socket)
 *   stay open. `deno compile` would make a single binary, but it downloads a runtime our
 *   machines cannot fetch.
 * - `<prefix>/../share/qemu/vhost-user/50-deno-virtiofsd.json` (or `--json-dir DIR`): the
 *   description QEMU's docs/interop/vhost-user.json specifies (`description`, `type: "fs"`,
 *   `binary`: the wrapper's absolute path), generated from `scripts/50-deno-virtiofsd.json.in`.
 *   The features are not in it: management software runs `binary --print-capabilities`, which
 *   the installer runs once too, to check the wrapper works and the types agree.
 *
 * Run: `npx deno task install [--prefix DIR] [--json-dir DIR]` (as root for the defaults). It
 * prints what it wrote. Run it again after moving the checkout or `npm ci`.
 *
 * @module
 */
import { chmod, mkdir, readFile, realpath, rename, rm, writeFile } from "node:fs/promises";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { CAPABILITIES } from "../src/cli/options.ts";
import { projectDir } from "./_host.ts";

/** The executable's name. */
export const EXECUTABLE = "deno-virtiofsd";
/** The vhost-user description's file name (QEMU's convention: a two-digit priority first). */
export const DESCRIPTION_FILE = "50-deno-virtiofsd.json";
/** The default directory of the executable. */
export const DEFAULT_PREFIX = "/usr/local/bin";
/** The description's template, beside this script. */
export const TEMPLATE: string = join(projectDir(), "scripts", `${DESCRIPTION_FILE}.in`);

/** A vhost-user back-end description (QEMU docs/interop/vhost-user.json, `VhostUserBackend`). */
export interface VhostUserBackend {
  description: string;
  type: string;
  binary: string;
  tags?: string[];
}

/** What {@linkcode install} wrote. */
export interface Installed {
  /** The wrapper's absolute path. */
  executable: string;
  /** The description's absolute path. */
  json: string;
  /** What the wrapper printed for `--print-capabilities`, parsed. */
  capabilities: { type: string; features?: string[] };
}

/** `s` as one single-quoted `sh` word. */
function shQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * The wrapper: runs `root`'s `mod.ts` with `deno`, from the caller's working directory (relative
 * paths on the command line stay the caller's), with `root`'s `deno.json` (not one the working
 * directory happens to have) and no lockfile written.
 */
export function wrapperScript(root: string, deno: string): string {
  const mod = join(root, "mod.ts");
  const config = join(root, "deno.json");
  return [
    "#!/bin/sh",
    `# ${EXECUTABLE}: the virtio-fs daemon (vhost-user-fs back end) of the checkout`,
    `# ${root}, run by the Deno pinned in its node_modules.`,
    "# Written by `deno task install` (scripts/install.ts): run it again after moving the checkout.",
    `if [ ! -x ${shQuote(deno)} ]; then`,
    `  echo ${
      shQuote(`${EXECUTABLE}: ${deno} is missing: run npm ci in ${root}, then deno task install`)
    } >&2`,
    "  exit 127",
    "fi",
    "export DENO_NO_UPDATE_CHECK=1",
    `exec ${shQuote(deno)} run --allow-all --config ${shQuote(config)} --no-lock ${
      shQuote(mod)
    } "$@"`,
    "",
  ].join("\n");
}

/**
 * The vhost-user description for `binary`, from `template` (the text of
 * `50-deno-virtiofsd.json.in`): its `binary` set, checked against the schema's required members
 * and against what the daemon reports (`type` must be `CAPABILITIES.type`, "fs").
 */
export function vhostUserJson(template: string, binary: string): VhostUserBackend {
  if (!isAbsolute(binary)) throw new Error(`The binary path must be absolute, not ${binary}`);
  const t = JSON.parse(template) as Partial<VhostUserBackend>;
  if (typeof t.description !== "string" || typeof t.type !== "string") {
    throw new Error("The template lacks a description or a type");
  }
  if (t.type !== CAPABILITIES.type) {
    throw new Error(`The template's type ${t.type} is not the daemon's (${CAPABILITIES.type})`);
  }
  return { description: t.description, type: t.type, binary };
}

/** Writes `text` to `path` through a temporary file and a rename, with `mode`. */
async function writeAtomically(path: string, text: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}`;
  try {
    await writeFile(tmp, text, { mode });
    await chmod(tmp, mode); // writeFile's mode is masked by the umask
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** Runs `executable --print-capabilities` and parses what it prints. */
async function printCapabilities(executable: string): Promise<Installed["capabilities"]> {
  const out = await new Deno.Command(executable, {
    args: ["--print-capabilities"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  if (!out.success) {
    throw new Error(
      `${executable} --print-capabilities failed (exit ${out.code}): ${dec.decode(out.stderr)}`,
    );
  }
  const caps = JSON.parse(dec.decode(out.stdout)) as Installed["capabilities"];
  if (typeof caps.type !== "string") {
    throw new Error(`${executable} --print-capabilities printed no type`);
  }
  return caps;
}

/**
 * Installs the wrapper into `prefix` and the description into `jsonDir` (default
 * `<prefix>/../share/qemu/vhost-user`), creating the directories. Throws naming the path it
 * cannot write.
 */
export async function install(
  opts: { prefix?: string; jsonDir?: string; root?: string } = {},
): Promise<Installed> {
  const root = resolve(opts.root ?? projectDir());
  const prefix = resolve(opts.prefix ?? DEFAULT_PREFIX);
  const jsonDir = resolve(opts.jsonDir ?? join(prefix, "..", "share", "qemu", "vhost-user"));
  let deno: string;
  try {
    deno = await realpath(join(root, "node_modules", ".bin", "deno"));
  } catch {
    throw new Error(`No Deno in ${join(root, "node_modules")}: run npm ci in ${root} first`);
  }
  const executable = join(prefix, EXECUTABLE);
  const json = join(jsonDir, DESCRIPTION_FILE);
  const description = vhostUserJson(await readFile(TEMPLATE, "utf8"), executable);
  for (const [dir, file] of [[prefix, executable], [jsonDir, json]] as const) {
    try {
      await mkdir(dir, { recursive: true });
      await Deno.writeTextFile(`${file}.probe-${Deno.pid}`, "");
      await rm(`${file}.probe-${Deno.pid}`);
    } catch (e) {
      throw new Error(
        `Cannot write ${dir} (${e instanceof Error ? e.message : e}): run as root, or choose ` +
          "another place with --prefix (e.g. ~/.local/bin) and --json-dir",
      );
    }
  }
  await writeAtomically(executable, wrapperScript(root, deno), 0o755);
  const capabilities = await printCapabilities(executable);
  if (capabilities.type !== description.type) {
    throw new Error(
      `${executable} --print-capabilities reports type ${capabilities.type}, ` +
        `not ${description.type}`,
    );
  }
  await writeAtomically(json, JSON.stringify(description, null, 2) + "\n", 0o644);
  return { executable, json, capabilities };
}

const USAGE = `Usage: deno task install [--prefix DIR] [--json-dir DIR]

  --prefix DIR    where the executable ${EXECUTABLE} goes (default ${DEFAULT_PREFIX})
  --json-dir DIR  where the vhost-user description ${DESCRIPTION_FILE} goes
                  (default DIR/../share/qemu/vhost-user; libvirt reads /usr/share/qemu/vhost-user,
                  /etc/qemu/vhost-user and ~/.config/qemu/vhost-user)
`;

if (import.meta.main) {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
      options: {
        prefix: { type: "string" },
        "json-dir": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    console.error(`install: ${e instanceof Error ? e.message : e}\n${USAGE}`);
    Deno.exit(2);
  }
  if (values.help === true) {
    console.log(USAGE);
    Deno.exit(0);
  }
  try {
    const done = await install({ prefix: values.prefix, jsonDir: values["json-dir"] });
    console.log(`installed ${done.executable}`);
    console.log(`installed ${done.json}`);
    console.log(`${EXECUTABLE} --print-capabilities: ${JSON.stringify(done.capabilities)}`);
    const onPath = (Deno.env.get("PATH") ?? "").split(":").includes(dirname(done.executable));
    if (!onPath) console.log(`note: ${dirname(done.executable)} is not on PATH`);
    console.log(
      `libvirt: <driver type='virtiofs'/><binary path='${done.executable}'/> in <filesystem>`,
    );
  } catch (e) {
    console.error(`install: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
