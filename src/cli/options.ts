/**
 * The command line, virtiofsd-compatible: Rust virtiofsd's long flags, and C virtiofsd's
 * `-o source=DIR,cache=...` spelling. Parsing is pure: `parseOptions` returns typed options or
 * throws `UsageError` naming the bad flag.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { LOG_LEVELS, type LogLevel } from "../log.ts";
import { type CacheMode, type ServeOptions, windowProblem } from "../daemon/serve.ts";

/** The daemon's options: what `serve()` takes, with the command line's defaults filled in. */
export interface Options extends ServeOptions {
  sharedDir: string;
  cache: CacheMode;
  /** cache=auto's timeout in seconds (C virtiofsd's `-o timeout=`). */
  timeout?: number;
  writeback: boolean;
  xattr: boolean;
  readonly: boolean;
  allowDirectIo: boolean;
  preserveNoatime: boolean;
  rlimitNofile?: number;
  threadPoolSize: number;
  requestQueues: number;
  keepServing: boolean;
  logLevel: LogLevel;
  tag?: string;
  /** Grant FUSE_DIRECT_IO_ALLOW_MMAP when the guest offers it. */
  allowMmap: boolean;
  /** Inodes as file handles: never, prefer (default), mandatory. */
  inodeFileHandles: "never" | "prefer" | "mandatory";
}

/** What the command line asks for. */
export type Command =
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "print-capabilities" }
  | { kind: "serve"; options: Options };

/** A command line we cannot accept; `message` names the flag. Exit status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The usage text for `--help`. */
export const HELP = `deno-virtiofsd: a virtio-fs device back end (vhost-user-fs daemon)

Usage: deno-virtiofsd --socket-path PATH --shared-dir DIR [options]
       deno-virtiofsd --fd N -o source=DIR[,cache=auto,...] [options]

  --socket-path PATH       listen on this vhost-user UNIX socket (a stale one is replaced)
  --fd N                   accept on this already-listening socket (socket activation)
  --socket-group GROUP     give the socket file to this group
  --shared-dir DIR         the host directory to share
  --cache MODE             none | auto | always | metadata (default auto; 'never' = none)
  --cache-timeout SECONDS  how long cache=auto lets the guest keep entries and attributes
                           (default 1; C virtiofsd's -o timeout=)
  --writeback              let the guest cache writes (FUSE writeback cache)
  --xattr                  serve extended attributes
  --readonly               refuse every change with EROFS
  --allow-direct-io        honour the guest's O_DIRECT on the host
  --allow-mmap             with cache=none, let a guest that can (Linux 6.6+) mmap(MAP_SHARED)
                           files (FUSE_DIRECT_IO_ALLOW_MMAP); Linux 6.1 refuses it: ENODEV
  --preserve-noatime       honour the guest's O_NOATIME on the host
  --rlimit-nofile N        set RLIMIT_NOFILE to N (default: raise it to min(1000000,
                           fs.nr_open), or the hard limit without CAP_SYS_RESOURCE)
  --inode-file-handles M   never | prefer | mandatory (default prefer): keep the guest's
                           inodes as file handles with a bounded descriptor cache, so
                           far more inodes stay live than the descriptor limit allows
  --thread-pool-size N     accepted for compatibility; requests are served inline
  --request-queues N       request queues offered besides hiprio (default 2; QEMU's
                           num-request-queues may be up to this)
  --tag TAG                the tag the device's configuration space holds, for front ends
                           that read it from the back end (QEMU's vhost-user-test-device-pci;
                           vhost-user-fs-pci takes tag= on QEMU's command line instead)
  --cache-size SIZE        offer a DAX cache window of SIZE bytes (a power of two, 2M to
                           512M; needs --tag; default 0: none). Front ends with a window:
                           QEMU 11.1's vhost-user-test-device-pci; the guest mounts -o dax
  --keep-serving           after the front end disconnects, wait for the next one
                           (default: exit 0, as virtiofsd does)
  --log-level LEVEL        off | error | warn | info | debug | trace (default info)
  --print-capabilities     print the vhost-user back-end capabilities (JSON) and exit
  --sandbox none, --seccomp none, -f, --syslog
                           accepted for compatibility (no sandbox; logs go to stderr)
  -d, --debug              --log-level debug
  -o OPT[,OPT...]          C virtiofsd options: source=DIR, cache=none|auto|always,
                           timeout=SECONDS, writeback, no_writeback, xattr, no_xattr,
                           allow_direct_io, no_allow_direct_io, log_level=LEVEL
  -V, --version            print the version and exit
  -h, --help               print this help and exit
`;

function positiveInt(flag: string, value: string, min = 0): number {
  if (!/^\d+$/.test(value)) throw new UsageError(`${flag}: '${value}' is not a number`);
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new UsageError(`${flag}: ${value} is too large`);
  if (n < min) throw new UsageError(`${flag}: ${value} is below ${min}`);
  return n;
}

/** A size in bytes: digits, optionally with a binary suffix K, M or G (`64M`, `1G`, `65536`). */
function byteSize(flag: string, value: string): number {
  const m = /^(\d+)([KMG]?)(i?B)?$/i.exec(value);
  if (m === null) throw new UsageError(`${flag}: '${value}' is not a size (e.g. 64M, 1G)`);
  const unit = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30 }[(m[2] ?? "").toUpperCase()] ?? 1;
  const n = Number(m[1]) * unit;
  if (!Number.isSafeInteger(n)) throw new UsageError(`${flag}: ${value} is too large`);
  return n;
}

function cacheMode(flag: string, value: string): CacheMode {
  const v = value === "never" ? "none" : value;
  if (v === "none" || v === "auto" || v === "always" || v === "metadata") return v;
  throw new UsageError(`${flag}: '${value}' is not a cache mode (none, auto, always, metadata)`);
}

function inodeFileHandles(value: string | undefined): "never" | "prefer" | "mandatory" {
  if (value === undefined) return "prefer";
  if (value === "never" || value === "prefer" || value === "mandatory") return value;
  throw new UsageError(
    `--inode-file-handles: '${value}' is not one of never, prefer, mandatory`,
  );
}

function logLevel(flag: string, value: string): LogLevel {
  const v = value.toLowerCase();
  if ((LOG_LEVELS as readonly string[]).includes(v)) return v as LogLevel;
  throw new UsageError(`${flag}: '${value}' is not a log level (${LOG_LEVELS.join(", ")})`);
}

/** Parses `args` (without the program name). */
export function parseOptions(args: readonly string[]): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: false,
      options: {
        "socket-path": { type: "string" },
        "fd": { type: "string" },
        "socket-group": { type: "string" },
        "shared-dir": { type: "string" },
        "cache": { type: "string" },
        "cache-timeout": { type: "string" },
        "writeback": { type: "boolean" },
        "xattr": { type: "boolean" },
        "readonly": { type: "boolean" },
        "allow-direct-io": { type: "boolean" },
        "preserve-noatime": { type: "boolean" },
        "rlimit-nofile": { type: "string" },
        "thread-pool-size": { type: "string" },
        "request-queues": { type: "string" },
        "keep-serving": { type: "boolean" },
        "log-level": { type: "string" },
        "print-capabilities": { type: "boolean" },
        "sandbox": { type: "string" },
        "seccomp": { type: "string" },
        "syslog": { type: "boolean" },
        "tag": { type: "string" },
        "cache-size": { type: "string" },
        "inode-file-handles": { type: "string" },
        "allow-mmap": { type: "boolean" },
        "foreground": { type: "boolean", short: "f" },
        "debug": { type: "boolean", short: "d" },
        "o": { type: "string", short: "o", multiple: true },
        "version": { type: "boolean", short: "V" },
        "help": { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  const v = parsed.values;
  if (v.help) return { kind: "help" };
  if (v.version) return { kind: "version" };
  if (v["print-capabilities"]) return { kind: "print-capabilities" };

  let source: string | undefined;
  let cache: CacheMode | undefined;
  let timeout: number | undefined;
  let writeback: boolean | undefined;
  let xattr: boolean | undefined;
  let directIo: boolean | undefined;
  let level: LogLevel | undefined;
  for (const group of v.o ?? []) {
    for (const opt of group.split(",")) {
      const eq = opt.indexOf("=");
      const key = eq < 0 ? opt : opt.slice(0, eq);
      const val = eq < 0 ? undefined : opt.slice(eq + 1);
      const need = (): string => {
        if (val === undefined || val === "") {
          throw new UsageError(`-o ${key}: needs a value (${key}=...)`);
        }
        return val;
      };
      switch (key) {
        case "source":
          source = need();
          break;
        case "cache":
          cache = cacheMode("-o cache", need());
          break;
        case "timeout":
          timeout = positiveInt("-o timeout", need());
          break;
        case "writeback":
        case "no_writeback":
          writeback = key === "writeback";
          break;
        case "xattr":
        case "no_xattr":
          xattr = key === "xattr";
          break;
        case "allow_direct_io":
        case "no_allow_direct_io":
          directIo = key === "allow_direct_io";
          break;
        case "log_level":
          level = logLevel("-o log_level", need());
          break;
        case "readdirplus":
        case "no_readdirplus":
        case "flock":
        case "no_flock":
        case "posix_lock":
        case "no_posix_lock":
        case "announce_submounts":
        case "killpriv_v2":
        case "no_killpriv_v2":
          break;
        default:
          throw new UsageError(`-o ${opt}: unknown option`);
      }
    }
  }
  if (v["shared-dir"] !== undefined && source !== undefined && v["shared-dir"] !== source) {
    throw new UsageError(`--shared-dir ${v["shared-dir"]} contradicts -o source=${source}`);
  }
  for (const flag of ["shared-dir", "socket-path", "socket-group", "tag"] as const) {
    if (v[flag] === "") throw new UsageError(`--${flag}: the value is empty`);
  }
  const sharedDir = v["shared-dir"] ?? source;
  if (sharedDir === undefined) throw new UsageError("--shared-dir (or -o source=DIR) is required");
  if (v["socket-path"] !== undefined && v.fd !== undefined) {
    throw new UsageError("--socket-path and --fd contradict each other: give one");
  }
  if (v["socket-path"] === undefined && v.fd === undefined) {
    throw new UsageError("--socket-path (or --fd) is required");
  }
  if (v.cache !== undefined && cache !== undefined && cacheMode("--cache", v.cache) !== cache) {
    throw new UsageError(`--cache ${v.cache} contradicts -o cache=${cache}`);
  }
  if (v.sandbox !== undefined && v.sandbox !== "none") {
    throw new UsageError(`--sandbox ${v.sandbox}: only 'none' is supported`);
  }
  if (v.seccomp !== undefined && v.seccomp !== "none") {
    throw new UsageError(`--seccomp ${v.seccomp}: only 'none' is supported`);
  }
  if (v["log-level"] !== undefined && level !== undefined) {
    throw new UsageError("--log-level contradicts -o log_level: give one");
  }
  const requestQueues = v["request-queues"] === undefined
    ? 2
    : positiveInt("--request-queues", v["request-queues"], 1);
  if (requestQueues > 254) throw new UsageError(`--request-queues: ${requestQueues} is over 254`);
  const options: Options = {
    sharedDir,
    cache: v.cache !== undefined ? cacheMode("--cache", v.cache) : cache ?? "auto",
    writeback: v.writeback ?? writeback ?? false,
    xattr: v.xattr ?? xattr ?? false,
    readonly: v.readonly ?? false,
    allowDirectIo: v["allow-direct-io"] ?? directIo ?? false,
    preserveNoatime: v["preserve-noatime"] ?? false,
    threadPoolSize: v["thread-pool-size"] === undefined
      ? 0
      : positiveInt("--thread-pool-size", v["thread-pool-size"]),
    requestQueues,
    keepServing: v["keep-serving"] ?? false,
    inodeFileHandles: inodeFileHandles(v["inode-file-handles"]),
    allowMmap: v["allow-mmap"] ?? false,
    logLevel: v["log-level"] !== undefined
      ? logLevel("--log-level", v["log-level"])
      : level ?? (v.debug ? "debug" : "info"),
  };
  if (v["socket-path"] !== undefined) options.socketPath = v["socket-path"];
  if (v.fd !== undefined) options.fd = positiveInt("--fd", v.fd);
  if (v["socket-group"] !== undefined) options.socketGroup = v["socket-group"];
  if (v["cache-timeout"] !== undefined) {
    const t = positiveInt("--cache-timeout", v["cache-timeout"]);
    if (timeout !== undefined && timeout !== t) {
      throw new UsageError(`--cache-timeout ${t} contradicts -o timeout=${timeout}`);
    }
    timeout = t;
  }
  if (timeout !== undefined) options.timeout = timeout;
  if (v["rlimit-nofile"] !== undefined) {
    options.rlimitNofile = positiveInt("--rlimit-nofile", v["rlimit-nofile"], 1);
  }
  if (v.tag !== undefined) options.tag = v.tag;
  if (v["cache-size"] !== undefined) options.cacheSize = byteSize("--cache-size", v["cache-size"]);
  const windowBad = windowProblem(options);
  if (windowBad !== undefined) throw new UsageError(windowBad);
  return { kind: "serve", options };
}
