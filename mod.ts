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
 * Or serve a file system written in TypeScript, synchronous or async: pass any object that
 * implements {@linkcode FileSystem} (`serve({ socketPath, fileSystem })`; see its contract and
 * `examples/hello_fs.ts`), a {@linkcode MemoryFs}, or a {@linkcode SyntheticFs} over either.
 *
 * A vhost-user front end (guest memory, split virtqueues, a FUSE client), to drive and test any
 * vhost-user-fs back end at the wire, is the package's second entry, `./driver` (`driver.ts`).
 *
 * @module
 */
export { type Daemon, serve, type ServeOptions, type WorkerExit } from "./src/daemon/serve.ts";
export type { SyslogOptions } from "./src/daemon/syslog.ts";
export {
  type DeviceExit,
  type DeviceOptions,
  type DeviceStats,
  VirtioFsDevice,
} from "./src/daemon/device.ts";
export { type OpcodeSummary, RequestStats } from "./src/fuse/request_stats.ts";
export { ListenError } from "./src/vhost_user/listener.ts";
export { Errno, ErrnoError } from "./src/ffi/errno.ts";
export { LOG_LEVELS, type Logger, type LogLevel, stderrLogger } from "./src/log.ts";
export { main } from "./src/cli/main.ts";
export type {
  Attr,
  AttrReply,
  Context,
  CreateReply,
  DirentPlusSink,
  DirentSink,
  Entry,
  FileSystem,
  ForgetOne,
  MappableFile,
  MaybePromise,
  OpenReply,
  ReadDestination,
  SetattrIn,
  StatFs,
  WriteSource,
} from "./src/filesystem/filesystem.ts";
export {
  type CacheMode,
  type PassthroughConfig,
  PassthroughFs,
  type PassthroughOptions,
} from "./src/filesystem/passthrough/passthrough_fs.ts";
export { ReadOnlyFs } from "./src/filesystem/read_only_fs.ts";
export { attr, type AttrInit, entry } from "./src/filesystem/attr_helpers.ts";
export {
  DT_BLK,
  DT_CHR,
  DT_DIR,
  DT_FIFO,
  DT_LNK,
  DT_REG,
  DT_SOCK,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
} from "./src/ffi/constants.ts";
export { MemoryFs, type MemoryFsOptions, type MemoryFsUsage } from "./src/filesystem/memory_fs.ts";
export {
  type SyntheticContent,
  type SyntheticFiles,
  SyntheticFs,
  type SyntheticFsOptions,
} from "./src/filesystem/synthetic_fs.ts";
if (import.meta.main) {
  const { main, exitNow } = await import("./src/cli/main.ts");
  exitNow(await main(Deno.args));
}
