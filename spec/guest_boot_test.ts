/**
 * Smoke tests of the real-guest infrastructure (spec/_driver/qemu_guest.ts): boot the guest
 * against a reference daemon, mount the share, read a file the host wrote, write one the host
 * reads. They prove the kernel, initramfs, console protocol and QEMU wiring, not our daemon.
 *
 * @module
 */

import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QemuGuest } from "./_driver/qemu_guest.ts";
import { C_VIRTIOFSD, ensureRustVirtiofsd } from "../scripts/setup.ts";

const TAG = "share";

/** A reference daemon started for one test. */
interface Daemon {
  /** Waits for it to exit by itself (it does when QEMU disconnects); kills it after `ms`. */
  stop(ms: number): Promise<{ status: Deno.CommandStatus; stderr: string }>;
}

function startDaemon(argv: readonly string[]): Daemon {
  const [cmd, ...args] = argv;
  assert.ok(cmd !== undefined);
  const child = new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "piped" })
    .spawn();
  const output = child.output();
  return {
    async stop(ms) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, ms);
      });
      let exited = false;
      await Promise.race([output.then(() => exited = true), timeout]);
      clearTimeout(timer);
      if (!exited) child.kill("SIGKILL");
      const out = await output;
      return {
        status: { success: out.success, code: out.code, signal: out.signal },
        stderr: new TextDecoder().decode(out.stderr),
      };
    },
  };
}

/** Boots a guest against the daemon `argv(socket, dir)` starts, and checks read and write. */
async function mountReadWrite(
  daemonArgv: (socketPath: string, sharedDir: string) => string[],
): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), "guest-boot-test-"));
  const shared = join(work, "shared");
  const socketPath = join(work, "vfs.sock");
  await Deno.mkdir(shared);
  await writeFile(join(shared, "hello"), "hello from the host\n");
  const daemon = startDaemon(daemonArgv(socketPath, shared));
  let guest: QemuGuest | undefined;
  try {
    guest = await QemuGuest.boot({ socketPath, tag: TAG });
    console.log(`booted ${guest.kernelRelease} in ${Math.round(guest.bootMs)} ms`);

    const mount = await guest.sh(`mount -t virtiofs ${TAG} /mnt`);
    assert.deepEqual(mount, { status: 0, out: "" });

    assert.deepEqual(await guest.sh("cat /mnt/hello"), { status: 0, out: "hello from the host\n" });

    const write = await guest.sh("printf 'written by the guest' > /mnt/from_guest && sync");
    assert.equal(write.status, 0, write.out);
    assert.equal(await readFile(join(shared, "from_guest"), "utf8"), "written by the guest");

    const missing = await guest.sh("cat /mnt/nope");
    assert.notEqual(missing.status, 0);
    assert.match(missing.out, /No such file or directory/);

    await guest.shutdown();
    assert.equal(guest.exitStatus?.code, 0, "QEMU should exit by itself at power off");
  } finally {
    await guest?.shutdown();
    const { status, stderr } = await daemon.stop(10_000);
    await rm(work, { recursive: true, force: true });
    if (status.signal !== null) console.log(`daemon had to be killed; stderr:\n${stderr}`);
  }
}

Deno.test("GUEST-INFRA c-virtiofsd: mount and read/write a file", async () => {
  await mountReadWrite((socketPath, dir) => [
    C_VIRTIOFSD,
    `--socket-path=${socketPath}`,
    "-o",
    `source=${dir}`,
    "-o",
    "cache=auto",
  ]);
});

Deno.test("GUEST-INFRA rust-virtiofsd: mount and read/write a file", async () => {
  const rustVirtiofsd = await ensureRustVirtiofsd();
  await mountReadWrite((socketPath, dir) => [
    ...rustVirtiofsd,
    "--socket-path",
    socketPath,
    "--shared-dir",
    dir,
    "--sandbox",
    "none",
    "--cache",
    "auto",
  ]);
});
