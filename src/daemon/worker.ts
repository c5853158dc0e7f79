/**
 * Worker entry: runs one `VirtioFsDevice` on this thread until it stops, then reports how.
 * The main thread keeps signals and the socket file; this thread blocks in `epoll_wait`.
 *
 * @module
 */
import { dropCapability } from "../ffi/mod.ts";
import { PassthroughFs } from "../filesystem/passthrough/passthrough_fs.ts";
import { ReadOnlyFs } from "../filesystem/read_only_fs.ts";
import { type DeviceOptions, VirtioFsDevice } from "./device.ts";
import { Warmup } from "./warmup.ts";
import { daemonLogger } from "./syslog.ts";
import { WORKER_OPENED, type WorkerExit, type WorkerStart } from "./serve.ts";

declare const self: {
  onmessage: ((e: MessageEvent<WorkerStart>) => void) | null;
  postMessage(msg: WorkerExit | typeof WORKER_OPENED): void;
  close(): void;
};

self.onmessage = async (e: MessageEvent<WorkerStart>): Promise<void> => {
  self.onmessage = null;
  const start = e.data;
  // The main thread checked that syslog listens before handing its path over.
  const { log, syslog } = daemonLogger(start.logLevel, start.syslogSocket, start.syslogOptions);
  let exit: WorkerExit;
  try {
    const passthrough = new PassthroughFs({ ...start.fs, log });
    const fileSystem = start.readonly ? new ReadOnlyFs(passthrough) : passthrough;
    let warmup: Warmup | undefined;
    if (start.warmup !== false) {
      try {
        warmup = new Warmup(
          (dir, quiet) => new PassthroughFs({ ...start.fs, sharedDir: dir, log: quiet }),
          start.warmupDir,
        );
      } catch (e) {
        log.debug(`no warm-up: ${e instanceof Error ? e.message : e}`);
      }
    }
    const opts: DeviceOptions = {
      listenFd: start.listenFd,
      stopFd: start.stopFd,
      requestQueues: start.requestQueues,
      keepServing: start.keepServing,
      log,
      fileSystem,
      blocking: true,
      ...(warmup !== undefined ? { warmup } : {}),
      ...(start.tag !== undefined ? { tag: start.tag } : {}),
      cacheSize: start.cacheSize,
    };
    const device = new VirtioFsDevice(opts);
    // Before the seccomp filter (installed while we wait), which has no capset.
    for (const cap of start.dropCapabilities ?? []) dropCapability(cap);
    if (start.hold) {
      // Everything is open: the main thread may now change the root (the sandbox).
      const go = new Promise<void>((resolve) => {
        self.onmessage = () => resolve();
      });
      self.postMessage(WORKER_OPENED);
      await go;
      self.onmessage = null;
    }
    exit = await device.run();
    passthrough.close();
  } catch (err) {
    log.error(`the device failed: ${err instanceof Error ? err.stack ?? err.message : err}`);
    exit = { status: 1, reason: `internal error: ${err instanceof Error ? err.message : err}` };
  }
  syslog?.close();
  self.postMessage(exit);
  self.close();
};
