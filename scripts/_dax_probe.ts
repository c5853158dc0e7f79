// temporary probe (not committed)
import { join } from "node:path";
import { startDaemon } from "../spec/_driver/daemon.ts";
import { QemuGuest } from "../spec/_driver/qemu_guest.ts";
const MiB = 1 << 20;
const dir = Deno.makeTempDirSync({ prefix: "daxprobe-" });
function pattern(size: number, seed: number): Uint8Array {
  const b = new Uint8Array(size);
  let x = (seed * 2654435761) >>> 0;
  for (let i = 0; i < size; i++) { x = (x * 1103515245 + 12345) >>> 0; b[i] = x >>> 24; }
  return b;
}
const sizes: Record<string, number> = { empty: 0, twenty: 20, page: 4096, tail: 3 * MiB + 5, four: 4 * MiB, big: 64 * MiB };
for (const [n, s] of Object.entries(sizes)) Deno.writeFileSync(join(dir, n), pattern(s, s % 97));
const d = await startDaemon("ours", { sharedDir: dir, extraArgs: ["--tag", "daxfs", "--cache-size", "64M", "--request-queues", "1", "--log-level", "trace"] });
const g = await QemuGuest.boot({ socketPath: d.socketPath, tag: "daxfs", qemu: "11", device: "generic", requestQueues: 1, timeoutMs: 240000 });
const cmds = Deno.args.length ? Deno.args : [
  "mount -t virtiofs daxfs /mnt && grep /mnt /proc/mounts",
  "cd /mnt && md5sum empty twenty page tail four big",
  "cd /mnt && printf 12345 >> four; md5sum four; tail -c 6 four | od -c",
];
for (const c of cmds) {
  const r = await g.sh(c, { timeoutMs: 60000 }).catch((e) => ({ status: -1, out: String(e) }));
  console.log(`$ ${c}\n${r.out}[${r.status}]`);
}
for (const [n] of Object.entries(sizes)) {
  const h = new Deno.Command("md5sum", { args: [join(dir, n)] }).outputSync();
  console.log(new TextDecoder().decode(h.stdout).trim());
}
await g.shutdown({ timeoutMs: 30000 });
await new Promise((r) => setTimeout(r, 2000));
const log = d.stderrText();
Deno.writeTextFileSync("/tmp/probe/daemon.log", log);
console.log(log.split("\n").filter((l) => /SETUPMAPPING|REMOVEMAPPING|READ |requests|served/.test(l)).slice(-40).join("\n"));
console.log("console:\n" + g.consoleTail(20));
await d.stop();
