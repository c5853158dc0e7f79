/**
 * Spec: DAX-7, in a real guest — the design's DAX paragraph (quoted in `dax_test.ts`) must not
 * cost a guest without a window anything:
 *
 * > - For data access inside guest, mmap portion of file in QEMU address space
 * > and guest accesses this memory using dax. [...]
 *
 * - DAX-7: started with `--tag` and `--cache-size`, the daemon still serves QEMU 7.2's and QEMU
 *   11.1's `vhost-user-fs-pci` (neither has a window: the guest logs "No cache capability" and
 *   refuses `-o dax`), and a plain mount works both ways (a file written on the host reads back
 *   right in the guest, and the other way).
 * - DAX-7 (the window): QEMU 11.1's generic vhost-user device takes the window from the daemon
 *   (GET_SHMEM_CONFIG) and its tag and queues from the configuration space (GET_CONFIG): the
 *   guest's virtiofs driver logs the window's size, and a plain mount works the same.
 *
 * QEMU 11.1 comes from Debian sid, unpacked privately by `scripts/setup.ts` (`scripts/qemu_sid.ts`).
 * Reading through a `-o dax` mount is the next DAX issue's (QEMU refuses to map a file's partial
 * last 2 MiB range); nothing here mounts with dax.
 *
 * @module
 */
import assert from "node:assert/strict";
import { type PlainMountObservation, plainMountWithWindow } from "./_driver/dax_guest.ts";
import { qemuSidCommand } from "../scripts/setup.ts";

const MiB = 1 << 20;

function explain(o: PlainMountObservation): string {
  return `error: ${o.error ?? "none"}\nvirtiofs: ${
    o.virtiofsLog.join(" | ")
  }\nmount: ${o.mountOut}\n` +
    `qemu: ${o.qemuStderr}\ndaemon:\n${o.daemonLog}\nconsole:\n${o.consoleTail}`;
}

for (const qemu of ["7.2", "11"] as const) {
  Deno.test(`DAX-7 QEMU ${qemu}'s vhost-user-fs-pci with a daemon offering a window: no window in the guest, and a plain mount works both ways`, async () => {
    const o = await plainMountWithWindow(qemu, "vhost-user-fs-pci");
    assert.equal(o.error, undefined, explain(o));
    assert.ok(o.noCacheCapability, `the guest found no window\n${explain(o)}`);
    assert.ok(o.mounted, explain(o));
    assert.ok(o.hostToGuest, `host to guest\n${explain(o)}`);
    assert.ok(o.guestToHost, `guest to host\n${explain(o)}`);
    assert.equal(o.dax?.accepted, false, "mount -o dax is refused without a window");
    assert.equal(o.daemonExit?.code, 0, explain(o));
  });
}

Deno.test("DAX-7 QEMU 11.1's generic vhost-user device takes the window and the tag from the daemon; a plain mount works both ways", async () => {
  const o = await plainMountWithWindow("11", "generic", { daxIo: false, requestQueues: 2 });
  // Which QEMU ran (setup takes the newest sid offers, at least 11.1).
  console.log(`QEMU from sid: ${qemuSidCommand().versionLine}`);
  assert.equal(o.error, undefined, explain(o));
  assert.equal(o.cacheLen, 64 * MiB, `the guest's virtiofs logs the window\n${explain(o)}`);
  assert.equal(o.noCacheCapability, false);
  assert.ok(o.mounted, explain(o));
  assert.ok(o.hostToGuest, `host to guest\n${explain(o)}`);
  assert.ok(o.guestToHost, `guest to host\n${explain(o)}`);
  assert.equal(o.daemonExit?.code, 0, explain(o));
});
