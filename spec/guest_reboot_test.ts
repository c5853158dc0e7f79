/**
 * Spec: the guest reboots without the daemon noticing more than a new FUSE session.
 *
 * A guest that reboots keeps its vhost-user connection: QEMU stops the rings (GET_VRING_BASE)
 * and starts them again when the new kernel's virtio-fs driver comes up, and the new kernel
 * sends a fresh FUSE_INIT on a session that still holds the old kernel's inodes and open files.
 * Here a Linux 6.1 guest under QEMU 7.2 mounts the share, holds files open, and is rebooted
 * twice without a clean shutdown: once by QEMU (`system_reset`, the reset button) and once from
 * inside (`reboot -f`). After each reboot the share mounts again and works, and umount then
 * mount works. Our daemon must keep the one connection and let go of what the old guests held.
 *
 * Every step runs against every daemon in `DAEMONS` (they are cheap; known departures of the
 * references would be in `spec/expectations/guest.json`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type DaemonHandle,
  type DaemonKind,
  daemonsUnderTest,
  startDaemon,
} from "./_driver/daemon.ts";
import { type GuestStep, runGuestSteps } from "./_driver/guest_expectations.ts";
import { QemuGuest } from "./_driver/qemu_guest.ts";

const TAG = "share";

interface Ctx {
  kind: DaemonKind;
  g: QemuGuest;
  daemon: DaemonHandle;
  shared: string;
  /** Open descriptors of the daemon before the first mount. */
  fdsBefore: number;
}

async function openFds(pid: number): Promise<number> {
  return (await Array.fromAsync(Deno.readDir(`/proc/${pid}/fd`))).length;
}

/**
 * Mounts the share in a guest that has booted `generation` times before, checks that every
 * earlier generation's file is there, writes this generation's, and works in a directory
 * (mkdir, rename, hard link, unlink, rmdir). Then leaves a file held open for reading and one
 * for appending, so that the next reboot happens with open files.
 */
async function work(c: Ctx, generation: number): Promise<void> {
  const g = c.g;
  const r = await g.sh(`mount -t virtiofs ${TAG} /mnt && grep -c ' /mnt virtiofs ' /proc/mounts`);
  assert.equal(r.status, 0, r.out);
  for (let i = 0; i < generation; i++) {
    assert.equal(await g.shOk(`cat /mnt/gen${i}`), `generation ${i}\n`);
  }
  await g.shOk(`echo 'generation ${generation}' > /mnt/gen${generation}`);
  assert.equal(
    await Deno.readTextFile(join(c.shared, `gen${generation}`)),
    `generation ${generation}\n`,
  );
  await g.shOk(
    `d=/mnt/work${generation} && mkdir $d && echo x > $d/a && mv $d/a $d/b && ln $d/b $d/c && ` +
      `rm $d/b $d/c && rmdir $d`,
  );
  assert.deepEqual(
    (await g.shOk("ls -1 /mnt")).trim().split("\n").filter((n) => n.startsWith("gen")),
    Array.from({ length: generation + 1 }, (_, i) => `gen${i}`),
  );
  // Files held open across the coming reboot (one read, one appended to).
  await g.shOk(
    `echo held > /mnt/held${generation} && ` +
      `(sleep 100000 </mnt/held${generation} >/dev/null 2>&1 &) && ` +
      `(sh -c 'echo appended; exec sleep 100000' >>/mnt/held${generation} 2>/dev/null &) && ` +
      `until grep -q appended /mnt/held${generation}; do sleep 0.1; done`,
  );
}

const STEPS: GuestStep<Ctx>[] = [
  {
    name: "LIFECYCLE-REBOOT the share mounts and works, with files held open",
    ref: true,
    async fn(c) {
      await work(c, 0);
    },
  },
  {
    name: "LIFECYCLE-REBOOT after QEMU system_reset the share mounts again and works",
    ref: true,
    async fn(c) {
      await c.g.reset();
      assert.equal(await c.g.shOk("grep -c ' /mnt ' /proc/mounts || true"), "0\n");
      await work(c, 1);
    },
  },
  {
    name: "LIFECYCLE-REBOOT after the guest's reboot -f the share mounts again and works",
    ref: true,
    async fn(c) {
      await c.g.reboot();
      assert.equal(await c.g.shOk("grep -c ' /mnt ' /proc/mounts || true"), "0\n");
      await work(c, 2);
    },
  },
  {
    name: "LIFECYCLE-REBOOT umount then mount again works, three times over",
    ref: true,
    async fn(c) {
      // Let go of the files the last generation holds, so that umount is not busy.
      await c.g.shOk("pkill sleep || true; sleep 0.2");
      for (let i = 0; i < 3; i++) {
        await c.g.shOk("umount /mnt && ! grep -q ' /mnt ' /proc/mounts");
        await c.g.shOk(`mount -t virtiofs ${TAG} /mnt`);
        assert.equal(await c.g.shOk("cat /mnt/gen0 /mnt/gen2"), "generation 0\ngeneration 2\n");
        await c.g.shOk(`echo ${i} > /mnt/remount${i}`);
      }
      assert.equal(await Deno.readTextFile(join(c.shared, "remount2")), "2\n");
      assert.match(await Deno.readTextFile(join(c.shared, "held0")), /^held\nappended\n$/);
    },
  },
  {
    name: "LIFECYCLE-REBOOT one connection throughout, and what the old guests held is let go",
    ref: true,
    async fn(c) {
      assert.equal(c.daemon.hasExited(), false, "the daemon is still running");
      await c.g.shOk("umount /mnt");
      if (c.kind !== "ours") return; // the rest reads our log and descriptors
      const log = c.daemon.stderrText();
      assert.equal([...log.matchAll(/front end connected/g)].length, 1, "one connection");
      assert.ok([...log.matchAll(/FUSE_INIT: client 7\.38/g)].length >= 6, "a session per mount");
      // After the umount (FUSE_DESTROY) nothing of the three guests' sessions stays open.
      let fds = await openFds(c.daemon.pid);
      for (let i = 0; i < 20 && fds > c.fdsBefore + 2; i++) {
        await new Promise((r) => setTimeout(r, 100));
        fds = await openFds(c.daemon.pid);
      }
      assert.ok(fds <= c.fdsBefore + 2, `open descriptors ${fds}, ${c.fdsBefore} before`);
    },
  },
];

for (const kind of daemonsUnderTest()) {
  Deno.test({
    name: `LIFECYCLE-REBOOT [guest, ${kind}] the share works after system_reset and reboot -f`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      const work = await Deno.makeTempDir({ prefix: `guest-reboot-${kind}-` });
      const shared = join(work, "shared");
      await Deno.mkdir(shared);
      const daemon = await startDaemon(kind, { sharedDir: shared });
      let g: QemuGuest | undefined;
      try {
        g = await QemuGuest.boot({ socketPath: daemon.socketPath, tag: TAG, memoryMiB: 1024 });
        const fdsBefore = await openFds(daemon.pid);
        await runGuestSteps(t, "reboot", kind, { kind, g, daemon, shared, fdsBefore }, STEPS);
      } finally {
        await g?.shutdown();
        await daemon.stop();
        await Deno.remove(work, { recursive: true }).catch(() => {});
      }
    },
  });
}
