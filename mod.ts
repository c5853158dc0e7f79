/**
 * deno-virtiofsd: a virtio-fs device back end (a vhost-user-fs daemon) in TypeScript on Deno.
 *
 * Run it (`deno run -A mod.ts --socket-path /tmp/vfs.sock --shared-dir ./share`) as a drop-in
 * for virtiofsd, or import it to serve a directory to a VM:
 *
 * ```ts ignore
 * import { serve } from "./mod.ts";
 * const daemon = await serve({ socketPath: "/tmp/vfs.sock", sharedDir: "./share" });
 * await daemon.exited; // the VM disconnected
 * ```
 *
 * The test driver (a vhost-user front end) is exported too, to test any vhost-user-fs back end.
 *
 * @module
 */
export {
  type Daemon,
  serve,
  type ServeOptions,
  type WorkerExit as DaemonExit,
} from "./src/daemon/serve.ts";
export { type DeviceExit, type DeviceOptions, VirtioFsDevice } from "./src/daemon/device.ts";
export { ListenError } from "./src/vhost_user/listener.ts";
export { Errno, ErrnoError } from "./src/ffi/errno.ts";
export { type Logger, type LogLevel, stderrLogger } from "./src/log.ts";
export { main } from "./src/cli/main.ts";

if (import.meta.main) {
  const { main } = await import("./src/cli/main.ts");
  Deno.exit(await main(Deno.args));
}
