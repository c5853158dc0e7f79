/**
 * One guest run for the DAX window: start a daemon with a cache window, boot the test guest under
 * QEMU 7.2 or 11 with `vhost-user-fs-pci` or the generic vhost-user device, mount the share
 * without `-o dax`, check that a file written on the host reads back right in the guest and one
 * written in the guest reads back right on the host, then try `mount -o dax`, and report what
 * the guest said about the window (its virtiofs kernel log lines: `Cache len: 0x... @ 0x...` or
 * `No cache capability`).
 *
 * Nothing here asserts: {@linkcode plainMountWithWindow} returns an observation for a test to
 * assert on. It throws only when the daemon cannot be started; a guest that does not boot, a mount
 * that fails or a file that reads back wrong are in the observation (`error`, `mounted`,
 * `hostToGuest`, `guestToHost`).
 *
 * @example
 * ```ts ignore
 * const seen = await plainMountWithWindow("11", "generic");
 * assert.equal(seen.error, undefined, seen.error);
 * assert.ok(seen.hostToGuest && seen.guestToHost);
 * assert.equal(seen.cacheLen, 0x4000000);
 * ```
 *
 * @module
 */

import { createHash, randomBytes } from "node:crypto";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type DaemonKind, startDaemon } from "./daemon.ts";
import { type FsDeviceKind, QemuGuest, type QemuVersion } from "./qemu_guest.ts";

/** The tag the daemon reports and the guest mounts. */
export const DAX_TAG = "daxfs";

/**
 * Our daemon's flags for a 64 MiB window that QEMU 11.1's generic device takes with tag `tag` and
 * one request queue (the device's `num_vqs` follows `requestQueues` in {@linkcode WINDOW_BOOT}).
 */
export function windowArgs(tag: string): string[] {
  return ["--tag", tag, "--cache-size", "64M", "--request-queues", "1"];
}

/** `QemuGuest.boot` options of a guest on QEMU 11.1's generic device, which takes the window. */
export const WINDOW_BOOT = {
  qemu: "11",
  device: "generic",
  requestQueues: 1,
  timeoutMs: 240_000,
} as const;

/** Options of {@linkcode plainMountWithWindow}. */
export interface PlainMountOptions {
  /** Which daemon (default `ours`). C and Rust virtiofsd get no `--tag`/`--cache-size`. */
  daemon?: DaemonKind;
  /**
   * Our daemon's `--cache-size` (default `"64M"`); `false` leaves out `--tag` and `--cache-size`
   * (for a daemon without them).
   */
  cacheSize?: string | false;
  /** The tag (default {@linkcode DAX_TAG}). */
  tag?: string;
  /**
   * Request queues: our daemon's `--request-queues` and the generic device's `num_vqs - 1`
   * (default 1). With `vhost-user-fs-pci` QEMU asks for its own default (1) whatever this is.
   */
  requestQueues?: number;
  /** More daemon arguments, after the ones above. */
  extraDaemonArgs?: string[];
  /** After `mount -o dax` is accepted: read and write a file through the window too (default false). */
  daxIo?: boolean;
  /** Boot deadline in ms (default 240000; TCG guests are slow). */
  bootTimeoutMs?: number;
  /** Deadline of each guest command in ms (default 120000). */
  commandTimeoutMs?: number;
}

/** What a DAX mount attempt did. */
export interface DaxMountObservation {
  /** `mount -t virtiofs -o dax TAG /mnt` exited 0. */
  accepted: boolean;
  /** Its exit status. */
  status: number;
  /** Its output (e.g. `mount: /mnt: wrong fs type, bad option, ...`). */
  out: string;
  /** The mount's options in /proc/mounts when accepted (e.g. `rw,relatime,dax=always`). */
  options?: string;
  /** With `daxIo`: the host's file read back right through the DAX mount. */
  hostToGuest?: boolean;
  /** With `daxIo`: a file written through the DAX mount read back right on the host. */
  guestToHost?: boolean;
  /** With `daxIo`: the guest commands' output when something went wrong. */
  ioOut?: string;
}

/** What {@linkcode plainMountWithWindow} observed. */
export interface PlainMountObservation {
  /** The QEMU that ran the guest. */
  qemu: QemuVersion;
  /** The device. */
  device: FsDeviceKind;
  /** The daemon and its command line. */
  daemon: DaemonKind;
  /** The daemon's command line. */
  daemonArgv: readonly string[];
  /** ms from starting QEMU to the guest's init being ready (0 if it did not boot). */
  bootMs: number;
  /** The first error that ended the run early (boot failure, a command timing out), if any. */
  error?: string;
  /** The guest's kernel log lines about virtio-fs, the cache window or DAX. */
  virtiofsLog: string[];
  /** The window's length from `virtiofs virtio0: Cache len: 0x... @ 0x...`, if logged. */
  cacheLen?: number;
  /** The window's guest-physical address from the same line, if logged. */
  cacheAddr?: bigint;
  /** The guest logged `No cache capability` (the device has no window). */
  noCacheCapability: boolean;
  /** The plain `mount -t virtiofs TAG /mnt` exited 0. */
  mounted: boolean;
  /** Its output, when it failed. */
  mountOut: string;
  /** The plain mount's options in /proc/mounts. */
  mountOptions?: string;
  /** A file written on the host read back byte for byte in the guest. */
  hostToGuest: boolean;
  /** A file written in the guest read back byte for byte on the host. */
  guestToHost: boolean;
  /** The `mount -o dax` attempt (after the plain mount is unmounted); absent if not reached. */
  dax?: DaxMountObservation;
  /** Everything the daemon wrote. */
  daemonLog: string;
  /** How the daemon ended after the guest powered off. */
  daemonExit?: { code: number; signal: Deno.Signal | null };
  /** What QEMU wrote to stderr. */
  qemuStderr: string;
  /** The last console lines (useful when something failed). */
  consoleTail: string;
}

const sha256 = (data: Uint8Array): string => createHash("sha256").update(data).digest("hex");

/** `rw,relatime,dax=always` for `/mnt` in a /proc/mounts text, or undefined. */
function mntOptions(procMounts: string): string | undefined {
  const line = procMounts.split("\n").find((l) => l.split(" ")[1] === "/mnt");
  return line?.split(" ")[3];
}

/**
 * Starts the daemon with a cache window (`--tag TAG --cache-size 64M` for ours), boots the
 * guest under `qemu` with `device`, mounts the share without `-o dax`, checks a file each way,
 * unmounts, tries `mount -o dax`, powers the guest off and stops the daemon. Returns what it saw.
 */
export async function plainMountWithWindow(
  qemu: QemuVersion,
  device: FsDeviceKind,
  opts: PlainMountOptions = {},
): Promise<PlainMountObservation> {
  const kind = opts.daemon ?? "ours";
  const tag = opts.tag ?? DAX_TAG;
  const cacheSize = opts.cacheSize ?? "64M";
  const requestQueues = opts.requestQueues ?? 1;
  const cmdOpts = { timeoutMs: opts.commandTimeoutMs ?? 120_000 };
  const extraArgs = kind === "ours"
    ? [
      ...(cacheSize === false ? [] : ["--tag", tag, "--cache-size", cacheSize]),
      ...["--request-queues", String(requestQueues)],
      ...opts.extraDaemonArgs ?? [],
    ]
    : [...opts.extraDaemonArgs ?? []];

  const sharedDir = await Deno.makeTempDir({ prefix: "dax-share-" });
  // Not a multiple of the page size, so a short last page would show.
  const fromHost = new Uint8Array(randomBytes(3 * 1024 * 1024 + 12345));
  await writeFile(join(sharedDir, "from-host.bin"), fromHost);

  const daemon = await startDaemon(kind, { sharedDir, extraArgs });
  const seen: PlainMountObservation = {
    qemu,
    device,
    daemon: kind,
    daemonArgv: daemon.argv,
    bootMs: 0,
    virtiofsLog: [],
    noCacheCapability: false,
    mounted: false,
    mountOut: "",
    hostToGuest: false,
    guestToHost: false,
    daemonLog: "",
    qemuStderr: "",
    consoleTail: "",
  };
  let guest: QemuGuest | undefined;
  try {
    guest = await QemuGuest.boot({
      socketPath: daemon.socketPath,
      tag,
      qemu,
      device,
      requestQueues,
      timeoutMs: opts.bootTimeoutMs ?? 240_000,
    });
    seen.bootMs = Math.round(guest.bootMs);

    const log = await guest.sh("dmesg", cmdOpts);
    seen.virtiofsLog = log.out.split("\n").map((l) => l.trimEnd()).filter((l) =>
      /virtio.?fs|cache len|no cache capability|dax/i.test(l)
    );
    for (const line of seen.virtiofsLog) {
      const m = line.match(/Cache len: (0x[0-9a-f]+) @ (0x[0-9a-f]+)/i);
      if (m !== null) {
        seen.cacheLen = Number(m[1]);
        seen.cacheAddr = BigInt(m[2] ?? "0");
      }
      if (/No cache capability/i.test(line)) seen.noCacheCapability = true;
    }

    const mount = await guest.sh(`mount -t virtiofs ${tag} /mnt`, cmdOpts);
    seen.mounted = mount.status === 0;
    seen.mountOut = mount.out;
    if (seen.mounted) {
      seen.mountOptions = mntOptions(await guest.shOk("cat /proc/mounts", cmdOpts));
      seen.hostToGuest =
        (await guest.sh("sha256sum </mnt/from-host.bin", cmdOpts)).out.split(" ")[0] ===
          sha256(fromHost);
      // Written and checked in the guest, then compared on the host after the unmount.
      const wrote = await guest.sh(
        "head -c 2109876 /dev/urandom >/mnt/from-guest.bin && sync && " +
          "sha256sum </mnt/from-guest.bin",
        cmdOpts,
      );
      await guest.sh("umount /mnt", cmdOpts);
      const onHost = await readFile(join(sharedDir, "from-guest.bin")).catch(() => undefined);
      seen.guestToHost = wrote.status === 0 && onHost !== undefined &&
        sha256(onHost) === wrote.out.split(" ")[0];
    }

    const dax = await guest.sh(`mount -t virtiofs -o dax ${tag} /mnt`, cmdOpts);
    seen.dax = { accepted: dax.status === 0, status: dax.status, out: dax.out };
    if (seen.dax.accepted) {
      seen.dax.options = mntOptions(await guest.shOk("cat /proc/mounts", cmdOpts));
      if (opts.daxIo === true) {
        const read = await guest.sh("sha256sum </mnt/from-host.bin", cmdOpts);
        seen.dax.hostToGuest = read.out.split(" ")[0] === sha256(fromHost);
        const wrote = await guest.sh(
          "head -c 1234567 /dev/urandom >/mnt/from-guest-dax.bin && sync && " +
            "sha256sum </mnt/from-guest-dax.bin",
          cmdOpts,
        );
        await guest.sh("umount /mnt", cmdOpts);
        const onHost = await readFile(join(sharedDir, "from-guest-dax.bin")).catch(() => undefined);
        seen.dax.guestToHost = wrote.status === 0 && onHost !== undefined &&
          sha256(onHost) === wrote.out.split(" ")[0];
        if (!seen.dax.hostToGuest || !seen.dax.guestToHost) {
          seen.dax.ioOut = `read: ${read.out}\nwrite: ${wrote.out}`;
        }
      } else {
        await guest.sh("umount /mnt", cmdOpts);
      }
    }
  } catch (e) {
    seen.error = e instanceof Error ? e.message : String(e);
  } finally {
    if (guest !== undefined) {
      await guest.shutdown({ timeoutMs: 60_000 });
      seen.qemuStderr = guest.qemuStderr;
      seen.consoleTail = guest.consoleTail(40);
    }
    // Ours exits by itself when QEMU disconnects; give it a moment before the log is read.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([daemon.exited, new Promise((r) => timer = setTimeout(r, 5_000))]);
    clearTimeout(timer);
    seen.daemonLog = daemon.stderrText(); // stop() removes the log
    seen.daemonExit = await daemon.stop();
    await rm(sharedDir, { recursive: true, force: true });
  }
  return seen;
}
