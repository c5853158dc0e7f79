/**
 * A wire probe (issue 17): the depth-1 round trip of the calls stress-ng's xattr and fallocate
 * stressors make, for each daemon in turn, through the project's FUSE client (driver and daemon
 * unpinned, on separate cores). Not a benchmark row: a tool to compare one op's cost.
 *
 *     deno run -A scripts/wire_ops_probe.ts ours,c,rust 20000 /var/tmp
 *
 * Arguments: the daemons (default ours,c,rust), calls per op after 200 untimed ones (default
 * 3000; below ~10,000 ours still runs ops its start-up warm-up does not serve unoptimized), and
 * where the shared directories are made (default /var/tmp), and how long to leave the daemon idle
 * after INIT before measuring, in ms (default 0; a guest's boot leaves ours time for its start-up
 * warm-up, so 3000 measures what a guest's first calls cost).
 *
 * @module
 */
import { type DaemonKind, startDaemon } from "../spec/_driver/daemon.ts";
import { FUSE_ROOT_ID, FuseClient, O_RDWR, VhostUserFrontend } from "../driver.ts";

const kinds = (Deno.args[0] ?? "ours,c,rust").split(",") as DaemonKind[];
const N = Number(Deno.args[1] ?? 3000);
const dir = Deno.args[2] ?? "/var/tmp";
const idleMs = Number(Deno.args[3] ?? 0);
for (const kind of kinds) {
  const shared = await Deno.makeTempDir({ dir, prefix: `ops-${kind}-` });
  const d = await startDaemon(kind, {
    sharedDir: shared,
    extraArgs: kind === "c" ? ["-o", "xattr"] : ["--xattr"],
  });
  const fe = await VhostUserFrontend.connect(d.socketPath, { queueSize: 1024 });
  const f = new FuseClient(fe);
  f.init();
  if (idleMs > 0) await new Promise((r) => setTimeout(r, idleMs));
  const { entry, open } = f.create(FUSE_ROOT_ID, "f", O_RDWR, 0o644);
  const n = entry.nodeid, fh = open.fh;
  const time = (label: string, fn: (i: number) => void): void => {
    for (let i = 0; i < 200; i++) fn(i);
    const t0 = performance.now();
    for (let i = 0; i < N; i++) fn(i);
    const us = ((performance.now() - t0) * 1000) / N;
    console.log(`${kind.padEnd(5)} ${label.padEnd(28)} ${us.toFixed(1)} µs`);
  };
  time("GETATTR", () => f.getattr(n));
  time("SETXATTR user.a (replace)", (i) => f.setxattr(n, "user.a", `v${i & 7}`));
  time("GETXATTR user.a size", () => f.getxattrSize(n, "user.a"));
  time("GETXATTR user.a", () => f.getxattr(n, "user.a", 64));
  time("LISTXATTR", () => f.listxattr(n, 256));
  time("SET+REMOVEXATTR user.b", () => {
    f.setxattr(n, "user.b", "x");
    f.removexattr(n, "user.b");
  });
  time("FALLOCATE 4k", (i) => f.fallocate(n, fh, (i % 256) * 4096, 4096));
  time("FALLOCATE punch 4k", (i) => f.fallocate(n, fh, (i % 256) * 4096, 4096, 3));
  time("FLUSH", () => f.flush(n, fh));
  time("FSYNC", () => f.fsync(n, fh));
  f.release(n, fh);
  fe.close();
  await d.stop();
  await Deno.remove(shared, { recursive: true });
}
