/**
 * Boots a Linux 6.1 guest under QEMU 7.2 (TCG) with a `vhost-user-fs-pci` device connected to a
 * daemon's socket, and runs shell commands in it over the serial console.
 *
 * `qemu: "11"` boots the same guest under QEMU 11 from Debian sid instead (unpacked privately by
 * `scripts/qemu_sid.ts`; fetched when missing), with everything else the same; there,
 * `device: "generic"` uses QEMU's generic vhost-user device, `vhost-user-test-device-pci` with
 * virtio id 26 (virtio-fs), instead of `vhost-user-fs-pci`: the back end supplies the tag and
 * the number of request queues (GET_CONFIG) and may give the device a DAX cache window
 * (GET_SHMEM_CONFIG).
 *
 * The guest is the kernel, initramfs and Debian root image from `scripts/setup.ts`
 * (`ensureGuest()`); its PID 1 is `fixtures/guest/init`, which documents the console protocol.
 * Commands run as root, chrooted in the Debian userland (dash, coreutils, util-linux, attr,
 * python3; `rootfs: false` boots busybox only). The guest user `user` (uid/gid 1000) exists for
 * unprivileged commands (`setpriv --reuid=1000 --regid=1000 --clear-groups ...`). The guest does
 * not mount the share by itself: tests run `mount -t virtiofs TAG /mnt`.
 *
 * QEMU and the guest files are installed and built when missing (`ensureHostTools()`,
 * `ensureGuest()`), so a spec file runs on a fresh machine by itself.
 *
 * @example
 * ```ts
 * await using guest = await QemuGuest.boot({ socketPath: "/tmp/vfs.sock", tag: "share" });
 * await guest.sh("mount -t virtiofs share /mnt");
 * const { status, out } = await guest.sh("cat /mnt/hello");
 * ```
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureGuest, ensureHostTools, ensureQemuSid, which } from "../../scripts/setup.ts";
import { VIRTIO_FS_CONFIG, VIRTIO_ID_FS } from "../../src/wire/virtio.ts";

/** Which QEMU runs the guest: the system's 7.2 (the default) or Debian sid's 11.x. */
export type QemuVersion = "7.2" | "11";

/**
 * The virtio-fs device: `vhost-user-fs-pci` (the default), or `generic`: QEMU 11's
 * `vhost-user-test-device-pci,virtio-id=26`, whose configuration space (tag, request queues) and
 * shared memory regions (the DAX window) come from the back end.
 */
export type FsDeviceKind = "vhost-user-fs-pci" | "generic";

/** One more `vhost-user-fs-pci` device: {@linkcode QemuGuestOptions.moreDevices}. */
export interface FsDeviceOptions {
  /** Its daemon's listening socket. */
  socketPath: string;
  /** Its tag (`mount -t virtiofs TAG /mnt`). */
  tag: string;
  /** Its virtqueue size (default 1024). */
  queueSize?: number;
  /** More device properties, as {@linkcode QemuGuestOptions.deviceProps}. */
  deviceProps?: Record<string, string | number | boolean>;
}

/** Options of {@linkcode QemuGuest.boot}. */
export interface QemuGuestOptions {
  /** The vhost-user-fs daemon's listening socket (QEMU connects to it as a client). */
  socketPath: string;
  /**
   * The file system tag the guest mounts (`mount -t virtiofs TAG /mnt`). With
   * `device: "generic"` the back end reports the tag, and this is not passed to QEMU.
   */
  tag: string;
  /** Which QEMU (default `"7.2"`, the system's). */
  qemu?: QemuVersion;
  /** Which device (default `"vhost-user-fs-pci"`; `"generic"` needs `qemu: "11"`). */
  device?: FsDeviceKind;
  /**
   * `device: "generic"` only: the request queues the back end reports in its configuration
   * space; the device gets this + 1 queues (`num_vqs`), hiprio included. Default 1. It must
   * match the back end's (our daemon: `--request-queues N`), or the guest's driver fails to
   * find its queues.
   */
  requestQueues?: number;
  /** Guest RAM in MiB, shared with the daemon through a memfd (default 512). */
  memoryMiB?: number;
  /** Virtqueue size of the device (`queue-size`, or `vq_size` for the generic one; default 1024). */
  queueSize?: number;
  /**
   * More device properties, e.g. `{ "num-request-queues": 2 }` for `vhost-user-fs-pci`, or
   * `{ packed: true }` for the generic device.
   */
  deviceProps?: Record<string, string | number | boolean>;
  /**
   * More `vhost-user-fs-pci` devices on the same boot, each on its own daemon socket (chardevs
   * `vfs1`, `vfs2`, ...; the first device, `socketPath` and `tag`, is `vfs`): one guest serves
   * several daemons. boot() waits for every socket. Not with `device: "generic"`.
   */
  moreDevices?: readonly FsDeviceOptions[];
  /** More QEMU arguments, appended at the end. */
  extraQemuArgs?: string[];
  /** More kernel command line words, e.g. `["loglevel=7"]`. */
  extraKernelArgs?: string[];
  /** Boot deadline in ms, until init reports ready (default 60000). The guest is killed then. */
  timeoutMs?: number;
  /** Kernel image (default: from `ensureGuest()`). */
  kernel?: string;
  /** Initramfs (default: from `ensureGuest()`). */
  initrd?: string;
  /**
   * The root image the init runs commands in, attached read-only as a virtio-blk disk
   * (default: the Debian userland from `ensureGuest()`); `false` for busybox only.
   */
  rootfs?: string | false;
}

/** Options of {@linkcode QemuGuest.sh}. */
export interface ShOptions {
  /** Deadline in ms (default 60000). A command that misses it gets the guest killed. */
  timeoutMs?: number;
}

/** What a command run by {@linkcode QemuGuest.sh} produced. */
export interface ShResult {
  /** The exit status of `sh` running the command. */
  status: number;
  /** Its stdout and stderr, merged, exactly as written (decoded as UTF-8). */
  out: string;
}

/** Options of {@linkcode QemuGuest.shutdown}. */
export interface ShutdownOptions {
  /** How long to wait for the guest to power off by itself before QEMU is stopped (default 20000). */
  timeoutMs?: number;
}

const DEFAULT_BOOT_TIMEOUT_MS = 60_000;
const DEFAULT_SH_TIMEOUT_MS = 60_000;
const DEFAULT_SHUTDOWN_TIMEOUT_MS = 20_000;
/** How long boot() waits for the daemon's socket to appear before starting QEMU anyway. */
const SOCKET_WAIT_MS = 10_000;
const CONSOLE_KEEP_CHARS = 1 << 20;
const TAIL_LINES_IN_ERRORS = 30;

/** A running guest. Create it with {@linkcode QemuGuest.boot}; dispose of it to stop QEMU. */
export class QemuGuest implements AsyncDisposable {
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #tmpDir: string;
  #qmpPath: string;
  #qmp: QmpClient | undefined;
  /** Everything the console printed (the last CONSOLE_KEEP_CHARS characters). */
  #console = "";
  /** Console text not consumed by a marker search yet. */
  #unparsed = "";
  #stderr = "";
  #ended = false;
  #exitStatus: Deno.CommandStatus | undefined;
  #closed: Promise<void>;
  #waiters = new Set<() => void>();
  #queue: Promise<unknown> = Promise.resolve();
  #nonce = randomBytes(4).toString("hex");
  #seq = 0;
  #shutdown: Promise<void> | undefined;
  #bootMs = 0;
  #kernelRelease = "";

  private constructor(child: Deno.ChildProcess, tmpDir: string, qmpPath: string) {
    this.#child = child;
    this.#stdin = child.stdin.getWriter();
    this.#tmpDir = tmpDir;
    this.#qmpPath = qmpPath;
    const out = this.#pump(child.stdout, (text) => {
      this.#console = (this.#console + text).slice(-CONSOLE_KEEP_CHARS);
      this.#unparsed += text;
    });
    const err = this.#pump(child.stderr, (text) => {
      this.#stderr = (this.#stderr + text).slice(-CONSOLE_KEEP_CHARS);
    });
    this.#closed = Promise.all([child.status, out, err]).then(([status]) => {
      this.#exitStatus = status;
      this.#ended = true;
      this.#notify();
    });
  }

  /**
   * Starts QEMU and waits until the guest's init is ready for commands. Waits (up to 10 s) for
   * `socketPath` to exist first, so it can be called right after starting the daemon, and
   * throws if it does not.
   * Throws, with the last console lines, if QEMU exits or the deadline passes first.
   */
  static async boot(opts: QemuGuestOptions): Promise<QemuGuest> {
    const t0 = performance.now();
    const timeoutMs = opts.timeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const qemuVersion = opts.qemu ?? "7.2";
    const deviceKind = opts.device ?? "vhost-user-fs-pci";
    if (deviceKind === "generic" && qemuVersion !== "11") {
      throw new Error(
        `The generic vhost-user device (vhost-user-test-device-pci) needs qemu: "11", not ` +
          `${qemuVersion}`,
      );
    }
    // [program, argv prefix, extra environment] of the QEMU that runs the guest.
    let qemu: [string, string[], Record<string, string>] = ["qemu-system-x86_64", [], {}];
    if (qemuVersion === "11") {
      const sid = await ensureQemuSid();
      qemu = [sid.command, sid.argsPrefix, sid.env];
    }
    let kernel = opts.kernel;
    let initrd = opts.initrd;
    let rootfs = opts.rootfs;
    if (kernel === undefined || initrd === undefined || rootfs === undefined) {
      await ensureHostTools();
      const files = await ensureGuest();
      kernel ??= files.kernel;
      initrd ??= files.initrd;
      rootfs ??= files.rootfs;
    }
    const moreDevices = opts.moreDevices ?? [];
    if (moreDevices.length > 0 && deviceKind === "generic") {
      throw new Error("moreDevices: only vhost-user-fs-pci devices, not the generic one");
    }
    const socketWaitMs = Math.min(SOCKET_WAIT_MS, timeoutMs);
    for (const path of [opts.socketPath, ...moreDevices.map((d) => d.socketPath)]) {
      if (!await waitForSocket(path, socketWaitMs)) {
        throw new Error(
          `Cannot boot the guest: no socket at ${path} after ${socketWaitMs} ms ` +
            "(is the daemon listening?)",
        );
      }
    }

    const tmpDir = await mkdtemp(join(tmpdir(), "qemu-guest-"));
    const qmpPath = join(tmpDir, "qmp.sock");
    const mem = opts.memoryMiB ?? 512;
    const props: Record<string, string | number | boolean> = deviceKind === "generic"
      ? {
        chardev: "vfs",
        "virtio-id": VIRTIO_ID_FS,
        num_vqs: 1 + (opts.requestQueues ?? 1),
        config_size: VIRTIO_FS_CONFIG.size,
        vq_size: opts.queueSize ?? 1024,
        ...opts.deviceProps,
      }
      : {
        chardev: "vfs",
        tag: opts.tag,
        "queue-size": opts.queueSize ?? 1024,
        ...opts.deviceProps,
      };
    const device = [
      deviceKind === "generic" ? "vhost-user-test-device-pci" : "vhost-user-fs-pci",
      ...Object.entries(props)
        .map(([k, v]) => `${k}=${typeof v === "boolean" ? (v ? "on" : "off") : v}`),
    ].join(",");
    const qemuArgs = [
      ...["-accel", "tcg", "-cpu", "max", "-m", `${mem}`, "-smp", "1"],
      // Like -nographic, but without default devices (NIC, VGA, ...) and without the monitor
      // multiplexed onto the serial line: stdin/stdout are the guest's ttyS0, nothing else.
      ...["-nodefaults", "-display", "none", "-no-reboot"],
      ...["-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con", "-monitor", "none"],
      ...["-qmp", `unix:${qmpPath},server=on,wait=off`],
      ...["-kernel", kernel, "-initrd", initrd],
      ...(rootfs === false ? [] : [
        ...["-drive", `file=${rootfs},if=none,id=rootfs,format=raw,readonly=on`],
        ...["-device", "virtio-blk-pci,drive=rootfs"],
      ]),
      ...[
        "-append",
        [
          "console=ttyS0",
          "quiet",
          "panic=-1",
          ...(rootfs === false ? [] : ["guest.rootfs=/dev/vda"]),
          ...opts.extraKernelArgs ?? [],
        ].join(" "),
      ],
      ...["-object", `memory-backend-memfd,id=mem,size=${mem}M,share=on`],
      ...["-numa", "node,memdev=mem"],
      ...["-chardev", `socket,id=vfs,path=${opts.socketPath}`],
      ...["-device", device],
      ...moreDevices.flatMap((d, i) => [
        ...["-chardev", `socket,id=vfs${i + 1},path=${d.socketPath}`],
        ...["-device", fsPciDevice(`vfs${i + 1}`, d)],
      ]),
      ...opts.extraQemuArgs ?? [],
    ];
    // setpriv --pdeathsig: QEMU dies with the test process even if that is SIGKILLed.
    const setpriv = which("setpriv");
    const [program, prefix, env] = qemu;
    const [cmd, args] = setpriv !== undefined
      ? [setpriv, ["--pdeathsig", "KILL", "--", program, ...prefix, ...qemuArgs]]
      : [program, [...prefix, ...qemuArgs]];
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(cmd, {
        args,
        env,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (e) {
      await rm(tmpDir, { recursive: true, force: true });
      throw e;
    }
    const guest = new QemuGuest(child, tmpDir, qmpPath);
    try {
      await guest.#waitReady(deadline, "the guest to boot");
      await guest.#syncClock(deadline);
      guest.#bootMs = performance.now() - t0;
      return guest;
    } catch (e) {
      await guest.kill();
      throw guest.#annotate(e);
    }
  }

  /** Waits for init's "@@READY" line (or a module or userland failure) and consumes it. */
  async #waitReady(deadline: number, what: string): Promise<void> {
    this.#kernelRelease = await this.#waitFor(
      () => {
        const bad = this.#unparsed.match(/@@MODFAIL (\S+)/);
        if (bad !== null) throw new Error(`The guest could not load the kernel module ${bad[1]}`);
        const fail = this.#unparsed.match(/@@FAIL ([^\r\n]*)/);
        if (fail !== null) throw new Error(`The guest's init failed: ${fail[1]}`);
        const m = this.#unparsed.match(/@@READY (\S*)\r?\n/);
        if (m === null) return undefined;
        this.#unparsed = this.#unparsed.slice((m.index ?? 0) + m[0].length);
        return m[1] ?? "";
      },
      deadline,
      what,
    );
  }

  /**
   * Resets the machine (QMP `system_reset`, like pressing the reset button: no clean
   * shutdown, so the daemon sees the device stop and start again on the same connection) and
   * waits until the guest has booted again. Mounts are gone afterwards.
   */
  reset(opts: ShOptions = {}): Promise<void> {
    const result = this.#queue.then(async () => {
      const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS);
      try {
        this.#unparsed = "";
        // -no-reboot (reboot action "shutdown") would turn the reset into an exit.
        await this.qmp("set-action", { reboot: "reset" });
        await this.qmp("system_reset");
        await this.#waitReady(deadline, "the guest to boot again after system_reset");
        await this.#syncClock(deadline);
        // Only now: QEMU looks at the action when it handles the reset, not when it is asked.
        await this.qmp("set-action", { reboot: "shutdown" });
      } catch (e) {
        await this.kill();
        throw this.#annotate(e);
      }
    });
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /**
   * Reboots from inside: init runs `reboot -f` (no unmount, no clean shutdown), QEMU resets the
   * machine instead of exiting, and this waits until the guest has booted again. Like
   * {@linkcode QemuGuest.reset}, the vhost-user connection stays; mounts are gone afterwards.
   */
  reboot(opts: ShOptions = {}): Promise<void> {
    const result = this.#queue.then(async () => {
      const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS);
      try {
        this.#unparsed = "";
        await this.qmp("set-action", { reboot: "reset" });
        await this.#write("@@REBOOT\n");
        await this.#waitReady(deadline, "the guest to boot again after reboot -f");
        await this.#syncClock(deadline);
        await this.qmp("set-action", { reboot: "shutdown" });
      } catch (e) {
        await this.kill();
        throw this.#annotate(e);
      }
    });
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /** Milliseconds from {@linkcode QemuGuest.boot} being called to init being ready. */
  get bootMs(): number {
    return this.#bootMs;
  }

  /** `uname -r` in the guest, as init reported it. */
  get kernelRelease(): string {
    return this.#kernelRelease;
  }

  /** What QEMU wrote to stderr so far (the last 1 MiB): warnings about the device, mostly. */
  get qemuStderr(): string {
    return this.#stderr;
  }

  /** QEMU's exit status once it has exited, else `undefined`. */
  get exitStatus(): Deno.CommandStatus | undefined {
    return this.#exitStatus;
  }

  /**
   * Runs `cmd` with `sh` in the guest (stdin `/dev/null`, working directory `/`) and returns
   * its exit status and merged stdout/stderr. Calls are queued, one command at a time. If the
   * deadline passes, QEMU is killed and the error carries the last console lines.
   */
  sh(cmd: string, opts: ShOptions = {}): Promise<ShResult> {
    const result = this.#queue.then(() => this.#sh(cmd, opts));
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /**
   * Like {@linkcode QemuGuest.sh}, but returns the output only, and throws (with the command, its
   * status and output) if the exit status is not 0.
   */
  async shOk(cmd: string, opts: ShOptions = {}): Promise<string> {
    const r = await this.sh(cmd, opts);
    if (r.status !== 0) {
      throw new Error(
        `Guest command failed with exit status ${r.status}: ${cmd}\n--- output ---\n${
          r.out.slice(-4000)
        }`,
      );
    }
    return r.out;
  }

  /**
   * Sets the guest's clock to the host's, to a few milliseconds: the emulated RTC starts it at
   * whole seconds, and file times set to "now" by the guest and by the daemon should agree. The
   * guest prints its time; its offset from the host's time at arrival is corrected with a
   * relative `date -s "-0.123 seconds"` (one process, so no start-up latency in the result), and
   * measured again, up to 4 times. A busybox-only guest gets whole seconds.
   */
  async #syncClock(deadline: number): Promise<void> {
    const opts = (): ShOptions => ({ timeoutMs: Math.max(1_000, deadline - Date.now()) });
    const now = (): number => (performance.timeOrigin + performance.now()) / 1000;
    for (let i = 0; i < 4; i++) {
      const r = await this.#sh("date -u +%s.%N", opts());
      const offset = Number(r.out.trim()) - now();
      if (!Number.isFinite(offset) || !/^\d+\.\d{9}$/.test(r.out.trim())) {
        await this.#sh(`date -u -s @${Math.round(now())} >/dev/null`, opts());
        return;
      }
      if (Math.abs(offset) < 0.003) return;
      await this.#sh(`date -u -s "${(-offset).toFixed(6)} seconds" >/dev/null`, opts());
    }
  }

  async #sh(cmd: string, opts: ShOptions): Promise<ShResult> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_SH_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const id = `${this.#nonce}.${++this.#seq}`;
    const what = `the guest to run ${JSON.stringify(shorten(cmd))}`;
    if (this.#ended || this.#shutdown !== undefined) {
      throw this.#annotate(
        new Error(`Cannot run ${JSON.stringify(shorten(cmd))}: the guest is gone`),
      );
    }
    const begin = `@@BEGIN ${id}\n`;
    const done = new RegExp(`\\n@@DONE ${id.replace(".", "\\.")} (\\d+)\\n`);
    try {
      await this.#write(`@@RUN ${id} ${Buffer.from(cmd, "utf8").toString("base64")}\n`);
      return await this.#waitFor(
        () => {
          const b = this.#unparsed.indexOf(begin);
          if (b < 0) return undefined;
          const m = done.exec(this.#unparsed.slice(b + begin.length));
          if (m === null) return undefined;
          const start = b + begin.length;
          const out = this.#unparsed.slice(start, start + m.index);
          this.#unparsed = this.#unparsed.slice(start + m.index + m[0].length);
          return { status: Number(m[1]), out };
        },
        deadline,
        what,
      );
    } catch (e) {
      await this.kill();
      throw this.#annotate(e);
    }
  }

  /**
   * Sends a QMP command (e.g. `"system_reset"`, `"query-status"`) and returns its `return`
   * value; throws if QEMU answers with an error.
   */
  async qmp(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.#ended) throw new Error(`Cannot send QMP ${command}: QEMU has exited`);
    this.#qmp ??= await QmpClient.connect(this.#qmpPath);
    return await this.#qmp.execute(command, args);
  }

  /** The last `lines` lines of the serial console (carriage returns removed). */
  consoleTail(lines: number = TAIL_LINES_IN_ERRORS): string {
    const all = this.#console.replaceAll("\r", "").split("\n");
    if (all.at(-1) === "") all.pop();
    return all.slice(-lines).join("\n");
  }

  /**
   * Powers the guest off: init syncs, unmounts virtiofs mounts and powers off, and QEMU exits.
   * If that takes longer than the deadline, QEMU is told to quit, then killed. Safe to call
   * more than once; also what `await using` does.
   */
  shutdown(opts: ShutdownOptions = {}): Promise<void> {
    this.#shutdown ??= this.#doShutdown(opts.timeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS);
    return this.#shutdown;
  }

  async #doShutdown(timeoutMs: number): Promise<void> {
    try {
      if (!this.#ended) {
        await this.#write("@@POWEROFF\n").catch(() => undefined);
        await this.#waitEnded(timeoutMs);
      }
      if (!this.#ended) {
        await withTimeout(this.qmp("quit"), 2_000).catch(() => undefined);
        await this.#waitEnded(2_000);
      }
      await this.kill();
    } finally {
      this.#qmp?.close();
      this.#qmp = undefined;
      await this.#stdin.close().catch(() => undefined);
      await rm(this.#tmpDir, { recursive: true, force: true });
    }
  }

  /** Kills QEMU at once (SIGKILL) and waits for it to exit. */
  async kill(): Promise<void> {
    if (!this.#ended) {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
    await this.#closed;
  }

  /** Same as {@linkcode QemuGuest.shutdown}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  async #write(text: string): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(text));
  }

  async #pump(stream: ReadableStream<Uint8Array>, onText: (text: string) => void): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of stream) {
        onText(decoder.decode(chunk, { stream: true }));
        this.#notify();
      }
    } catch {
      // the pipe broke: QEMU is gone
    }
    onText(decoder.decode());
    this.#notify();
  }

  #notify(): void {
    for (const wake of [...this.#waiters]) wake();
  }

  /** Waits until `probe` returns a value, QEMU has exited, or the deadline passes. */
  async #waitFor<T>(probe: () => T | undefined, deadline: number, what: string): Promise<T> {
    const t0 = Date.now();
    for (;;) {
      const value = probe();
      if (value !== undefined) return value;
      if (this.#ended) {
        throw new Error(
          `QEMU exited (${describeStatus(this.#exitStatus)}) while waiting for ${what}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`Timed out after ${Date.now() - t0} ms waiting for ${what}; killed QEMU`);
      }
      await this.#sleepUntilNotified(left);
    }
  }

  async #waitEnded(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.#ended && Date.now() < deadline) {
      await this.#sleepUntilNotified(deadline - Date.now());
    }
  }

  #sleepUntilNotified(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.#waiters.add(wake);
    });
  }

  /** Adds QEMU's stderr and the console tail to an error. */
  #annotate(e: unknown): Error {
    const err = e instanceof Error ? e : new Error(String(e));
    const stderr = this.#stderr.trim();
    err.message += `\n--- last ${TAIL_LINES_IN_ERRORS} console lines ---\n${this.consoleTail()}` +
      (stderr === "" ? "" : `\n--- QEMU stderr ---\n${stderr.split("\n").slice(-10).join("\n")}`);
    return err;
  }
}

/** A minimal QMP client: one command at a time, events are skipped. */
class QmpClient {
  #conn: Deno.UnixConn;
  #buf = "";
  #decoder = new TextDecoder();
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
  }

  static async connect(path: string): Promise<QmpClient> {
    const conn = await Deno.connect({ transport: "unix", path });
    const client = new QmpClient(conn);
    try {
      await client.#readMessage(); // greeting
      await client.#exchange("qmp_capabilities");
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const result = this.#queue.then(() => this.#exchange(command, args));
    this.#queue = result.catch(() => undefined);
    return result;
  }

  close(): void {
    try {
      this.#conn.close();
    } catch {
      // closed already
    }
  }

  async #exchange(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const msg = args === undefined ? { execute: command } : { execute: command, arguments: args };
    const bytes = new TextEncoder().encode(JSON.stringify(msg) + "\n");
    for (let off = 0; off < bytes.length;) off += await this.#conn.write(bytes.subarray(off));
    for (;;) {
      const reply = await this.#readMessage();
      if ("return" in reply) return reply.return;
      if ("error" in reply) {
        throw new Error(`QMP ${command} failed: ${JSON.stringify(reply.error)}`);
      }
      // an event: skip it
    }
  }

  async #readMessage(): Promise<Record<string, unknown>> {
    const chunk = new Uint8Array(4096);
    for (;;) {
      const nl = this.#buf.indexOf("\n");
      if (nl >= 0) {
        const line = this.#buf.slice(0, nl).trim();
        this.#buf = this.#buf.slice(nl + 1);
        if (line !== "") return JSON.parse(line) as Record<string, unknown>;
        continue;
      }
      const n = await this.#conn.read(chunk);
      if (n === null) throw new Error("QMP connection closed");
      this.#buf += this.#decoder.decode(chunk.subarray(0, n), { stream: true });
    }
  }
}

/** A `vhost-user-fs-pci` device's `-device` value on chardev `chardev`. */
function fsPciDevice(chardev: string, d: FsDeviceOptions): string {
  const props: Record<string, string | number | boolean> = {
    chardev,
    tag: d.tag,
    "queue-size": d.queueSize ?? 1024,
    ...d.deviceProps,
  };
  return [
    "vhost-user-fs-pci",
    ...Object.entries(props)
      .map(([k, v]) => `${k}=${typeof v === "boolean" ? (v ? "on" : "off") : v}`),
  ].join(",");
}

/** Polls until `path` is a socket; false if it is not one after `ms`. */
async function waitForSocket(path: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if ((await stat(path)).isSocket()) return true;
    } catch {
      // not there yet
    }
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function describeStatus(s: Deno.CommandStatus | undefined): string {
  if (s === undefined) return "status unknown";
  return s.signal !== null ? `signal ${s.signal}` : `exit status ${s.code}`;
}

function shorten(cmd: string): string {
  return cmd.length > 80 ? `${cmd.slice(0, 77)}...` : cmd;
}
