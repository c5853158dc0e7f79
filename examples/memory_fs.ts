// A whole file system in the daemon's memory, served to a VM, with a synthetic README whose text
// (the file system's usage right now) is computed each time it is opened.
//   deno run -A examples/memory_fs.ts /tmp/mem.sock   (guest: mount -t virtiofs TAG /mnt)
// Optional second and third arguments: the most bytes (default 256 MiB) and inodes it holds.
import { MemoryFs, serve, SyntheticFs } from "../mod.ts";

const maxBytes = Number(Deno.args[1] ?? 256 * 1024 * 1024);
const maxNodes = Deno.args[2] === undefined ? undefined : Number(Deno.args[2]);
const memory = new MemoryFs({ maxBytes, ...(maxNodes === undefined ? {} : { maxNodes }) });

function readme(): string {
  const u = memory.usage;
  return [
    "This directory lives in the memory of a deno-virtiofsd process (MemoryFs).",
    "Everything written here is gone when that process ends.",
    "",
    `bytes:   ${u.bytes} of ${u.maxBytes}`,
    `inodes:  ${u.inodes} of ${u.maxNodes}`,
    `nodes:   ${u.nodes}`,
    `handles: ${u.handles}`,
    "",
  ].join("\n");
}

const daemon = await serve({
  socketPath: Deno.args[0] ?? "/tmp/mem.sock",
  fileSystem: new SyntheticFs(memory, { README: readme }),
});
await daemon.exited;
