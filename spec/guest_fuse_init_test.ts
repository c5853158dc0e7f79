/**
 * The device under a real client: a Linux 6.1 guest under QEMU 7.2 (TCG, `queue-size=1024`)
 * boots against our daemon, and its FUSE_INIT reaches us over the request queue and is answered.
 * The same connection then lives through a guest reset (rings stopped and set up again without
 * the memory being sent again), and the daemon exits 0, removing its socket, when QEMU goes.
 *
 * The design's paragraph, quoted:
 *
 * > - Use fuse protocol (instead of 9p) for communication between guest and host. Guest kernel
 * > will be fuse client and a fuse server will run on host to serve the requests.
 *
 * OV-FUSE-1 is proven at the wire in `fuse_over_virtqueues_test.ts`; here the guest's own kernel
 * is the FUSE client. (Serving every operation, OV-FUSE-2, needs the file system: next issue.)
 *
 * @module
 */
import assert from "node:assert/strict";
import { QemuGuest } from "./_driver/qemu_guest.ts";
import { startDaemon } from "./_driver/daemon.ts";

const TAG = "share";

function count(text: string, pattern: RegExp): number {
  return [...text.matchAll(new RegExp(pattern.source, "g"))].length;
}

async function waitFor(what: string, probe: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test({
  name: "OV-FUSE-1 [guest] a QEMU 7.2 guest's FUSE_INIT reaches our daemon and is answered",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const shared = await Deno.makeTempDir({ prefix: "guest-init-" });
    const daemon = await startDaemon("ours", {
      sharedDir: shared,
      extraArgs: ["--log-level", "debug"],
    });
    let guest: QemuGuest | undefined;
    try {
      guest = await QemuGuest.boot({ socketPath: daemon.socketPath, tag: TAG, queueSize: 1024 });
      const g = guest;

      await t.step(
        "OV-FUSE-1 the guest kernel's FUSE_INIT (7.38) is answered and the mount succeeds",
        async () => {
          const r = await g.sh(
            `mount -t virtiofs ${TAG} /mnt && grep -c ' /mnt virtiofs ' /proc/mounts`,
          );
          assert.equal(r.status, 0, r.out);
          assert.match(r.out, /^1$/m);
          const log = daemon.stderrText();
          assert.match(log, /FUSE_INIT: client 7\.38 flags 0x[0-9a-f]+; session 7\.38/);
          // The request queue was set up as QEMU 7.2 does it: memory through ADD_MEM_REG.
          assert.match(log, /ADD_MEM_REG\(37\) flags 0x9/);
          await g.sh("umount /mnt");
          await waitFor(
            "FUSE_DESTROY at umount",
            () => /FUSE session destroyed by the client/.test(daemon.stderrText()),
          );
        },
      );

      await t.step(
        "LIFECYCLE-RESET a guest reset stops and restarts the rings on the same connection",
        async () => {
          const before = daemon.stderrText();
          assert.equal(count(before, /front end connected/), 1);
          await g.reset();
          const r = await g.sh(
            `mount -t virtiofs ${TAG} /mnt && grep -c ' /mnt virtiofs ' /proc/mounts`,
          );
          assert.equal(r.status, 0, r.out);
          const log = daemon.stderrText();
          assert.equal(
            count(log, /FUSE_INIT: client 7\.38/),
            2,
            "a second FUSE_INIT after the reset",
          );
          assert.ok(count(log, /GET_VRING_BASE\(11\)/) >= 2, "the rings were stopped");
          assert.equal(count(log, /front end connected/), 1, "still the first connection");
          assert.equal(daemon.hasExited(), false);
        },
      );

      await t.step(
        "LIFECYCLE-EXIT the daemon exits 0 when QEMU disconnects and removes its socket",
        async () => {
          await g.shutdown();
          guest = undefined;
          const exit = await Promise.race([
            daemon.exited,
            new Promise<never>((_, reject) =>
              setTimeout(
                () => reject(new Error("daemon still running 10 s after QEMU left")),
                10_000,
              )
            ),
          ]);
          assert.equal(exit.code, 0);
          assert.equal(exit.signal, null);
          await assert.rejects(Deno.lstat(daemon.socketPath), Deno.errors.NotFound);
        },
      );
    } finally {
      await guest?.kill();
      await daemon.stop();
      await Deno.remove(shared, { recursive: true });
    }
  },
});
