/**
 * The command line, a drop-in for both references: every flag of Rust virtiofsd 1.14 and every
 * `-o` option of C virtiofsd 7.2 (and of Rust's `-o` compatibility form) is either served, or
 * refused by name with "not supported yet" (exit 2), never taken for a typo; what is accepted
 * without effect is listed in a warning at start. Parsing is pure: `parseOptions` returns typed
 * options (and the warnings) or throws `UsageError` naming the flag.
 *
 * @module
 */
import { LOG_LEVELS, type LogLevel } from "../log.ts";
import { type CacheMode, type ServeOptions, windowProblem } from "../daemon/serve.ts";
import { applyModcaps, defaultCapabilities, type IdMap, runningAsRoot } from "../daemon/sandbox.ts";

/** The daemon's options: what `serve()` takes, with the command line's defaults filled in. */
export interface Options extends ServeOptions {
  sharedDir: string;
  cache: CacheMode;
  /** cache=auto's timeout in seconds, fractions too (C virtiofsd's `-o timeout=`). */
  timeout?: number;
  writeback: boolean;
  xattr: boolean;
  readonly: boolean;
  allowDirectIo: boolean;
  preserveNoatime: boolean;
  /** RLIMIT_NOFILE to set; 0 leaves it as it is. */
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
  /** READDIRPLUS, when a flag says (else: on unless cache=none). */
  readdirplus?: boolean;
  /** Grant FUSE_HANDLE_KILLPRIV_V2 (default true, as C virtiofsd). */
  killprivV2: boolean;
  /** Announce submounts (default true, as Rust virtiofsd). */
  announceSubmounts: boolean;
  /** Log to syslog instead of stderr. */
  syslog: boolean;
  /** The sandbox: `namespace`, `chroot` (see `src/daemon/sandbox.ts`) or none (default). */
  sandbox: "namespace" | "chroot" | "none";
  /** The capabilities the sandboxed daemon keeps (`--modcaps` applied). */
  capabilities: string[];
  /** The seccomp filter's action for a call off the list, or none (default). */
  seccomp: "kill" | "log" | "trap" | "none";
  /** `--uid-map`: the sandbox's user namespace maps these uids (namespace -> host). */
  uidMap: IdMap[];
  /** `--gid-map`: and these gids. */
  gidMap: IdMap[];
}

/** What the command line asks for. */
export type Command =
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "print-capabilities" }
  | {
    kind: "serve";
    options: Options;
    /** Lines to log as warnings at start: what was accepted but has no effect, deprecations. */
    warnings: string[];
  };

/** A command line we cannot accept; `message` names the flag. Exit status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** What `--print-capabilities` prints (vhost-user.json's back-end capabilities). */
export const CAPABILITIES: { type: "fs"; features: string[] } = {
  type: "fs",
  // libvirt passes the separate flags (--shared-dir, --cache, ...) only to a daemon listing
  // this; without it, the old `-o source=...` form. No migration: no "migrate-precopy".
  features: ["separate-options"],
};

/** The usage text for `--help`. */
export const HELP = `deno-virtiofsd: a virtio-fs device back end (vhost-user-fs daemon)

Usage: deno-virtiofsd --socket-path PATH --shared-dir DIR [options]
       deno-virtiofsd --fd N -o source=DIR[,cache=auto,...] [options]

  --socket-path PATH       listen on this vhost-user UNIX socket (a stale one is replaced);
                           keeps PATH.pid (our pid, locked: a second daemon on PATH refuses)
  --socket PATH            deprecated spelling of --socket-path (Rust virtiofsd's)
  --fd N                   accept on this already-listening socket (socket activation)
  --socket-group GROUP     give the socket file to this group
  --shared-dir DIR         the host directory to share
  --cache MODE             none | auto | always | metadata (default auto; 'never' = none)
  --cache-timeout SECONDS  how long cache=auto lets the guest keep entries and attributes
                           (default 1; fractions allowed; C virtiofsd's -o timeout=)
  --writeback              let the guest cache writes (FUSE writeback cache)
  --xattr                  serve extended attributes
  --readonly               refuse every change with EROFS
  --allow-direct-io        honour the guest's O_DIRECT on the host
  --allow-mmap             with cache=none, let a guest that can (Linux 6.6+) mmap(MAP_SHARED)
                           files (FUSE_DIRECT_IO_ALLOW_MMAP); Linux 6.1 refuses it: ENODEV
  --preserve-noatime       honour the guest's O_NOATIME on the host
  --no-readdirplus         do not offer READDIRPLUS (it is off anyway with cache=none)
  --killpriv-v2            grant FUSE_HANDLE_KILLPRIV_V2 (the default, as C virtiofsd): the guest
                           leaves clearing setuid and setgid on write, truncate and O_TRUNC
                           open to the daemon, instead of a GETXATTR before every write
  --no-killpriv-v2         do not (Rust virtiofsd's default)
  --announce-submounts     announce submounts (the default): a mount below the share is a
                           submount in the guest, with its own device number
  --no-announce-submounts  do not (FUSE_SUBMOUNTS is not granted)
  --rlimit-nofile N        set RLIMIT_NOFILE to N; 0 leaves it (default: raise it to
                           min(1000000, fs.nr_open), or the hard limit without CAP_SYS_RESOURCE)
  --inode-file-handles M   never | prefer | mandatory (default prefer; 'fallback' = prefer):
                           keep the guest's inodes as file handles with a bounded descriptor
                           cache, so far more inodes stay live than the descriptor limit allows
  --thread-pool-size N     0 = what we do (requests are served on the device thread); a pool
                           (N > 0) is accepted with a warning
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
  --syslog                 log to syslog (/dev/log) instead of stderr
  -d, --debug              --log-level debug
  -f                       run in the foreground (we always do)
  --print-capabilities     print the vhost-user back-end capabilities (JSON) and exit
  --sandbox MODE            namespace (the default as root): serve from new mount, PID, IPC, UTS
                           and network namespaces (and a user namespace, without root) with
                           the shared directory as the root and only the capabilities below
                           (needs util-linux's unshare and setpriv); chroot (root only): the
                           shared directory as the root, no namespaces (for containers that
                           cannot make them); none (the default otherwise): no sandbox
  --uid-map=:IN:OUT:N:     the sandbox in a user namespace: N uids from IN there are OUT on the
  --gid-map=:IN:OUT:N:     host (and gids); repeatable; implies --sandbox namespace. Without
                           root the sandbox always has a user namespace (by default your uid
                           and gid are its 0); ranges beyond your own ids need /etc/subuid,
                           /etc/subgid and newuidmap / newgidmap (Debian's uidmap)
  --modcaps=+CAP:-CAP      with a sandbox, keep CAP too / drop CAP (default: chown,
                           dac_override, dac_read_search, fowner, fsetid, setgid, setuid,
                           mknod, setfcap; e.g. +sys_admin for trusted.* xattrs)
  --seccomp ACTION         kill (default) | log | trap | none: once the daemon serves, a
                           system call off its list kills it, is logged (kernel or audit
                           log, type=1326), or raises SIGSYS (which also kills it)
  --posix-acl=never, --security-label=never
                           accepted: what the daemon does
  -o OPT[,OPT...]          C virtiofsd's options (a comma in a value is written \\,):
                           source=DIR, cache=none|auto|always|metadata, timeout=SECONDS,
                           writeback, no_writeback, xattr, no_xattr, allow_direct_io,
                           no_allow_direct_io, readdirplus, no_readdirplus, killpriv_v2,
                           no_killpriv_v2, announce_submounts, debug,
                           log_level=debug|info|warn|err (loglevel= too), no_flock,
                           no_posix_lock, no_posix_acl, no_security_label,
                           sandbox=namespace|chroot|none, modcaps=+CAP:-CAP;
                           accepted with a warning: flock, posix_lock (locks stay in the
                           guest), max_idle_threads=N (no thread pool)
  -V, --version            print the version and exit
  -h, --help               print this help and exit

Not supported yet (refused by name, exit 2): --translate-uid, --translate-gid, --xattrmap,
--posix-acl, --security-label, --migration-mode, --migration-on-error,
--migration-verify-handles, --migration-confirm-paths, --daemonize; -o xattrmap=, posix_acl,
security_label, allow_root.
`;

// ---- tokens ---------------------------------------------------------------------------------

/** How a long flag takes its value: not at all, always, or only as `--flag=value`. */
type Takes = "none" | "value" | "optional";

/** Every long flag we know, served or refused by name. */
const LONG: Readonly<Record<string, Takes>> = {
  "--socket-path": "value",
  "--socket": "value",
  "--fd": "value",
  "--socket-group": "value",
  "--shared-dir": "value",
  "--tag": "value",
  "--cache": "value",
  "--cache-timeout": "value",
  "--cache-size": "value",
  "--writeback": "none",
  "--xattr": "none",
  "--readonly": "none",
  "--allow-direct-io": "none",
  "--allow-mmap": "none",
  "--preserve-noatime": "none",
  "--no-readdirplus": "none",
  "--killpriv-v2": "none",
  "--no-killpriv-v2": "none",
  "--announce-submounts": "none",
  "--no-announce-submounts": "none",
  "--inode-file-handles": "value",
  "--rlimit-nofile": "value",
  "--thread-pool-size": "value",
  "--request-queues": "value",
  "--keep-serving": "none",
  "--log-level": "value",
  "--syslog": "none",
  "--print-capabilities": "none",
  "--sandbox": "value",
  "--seccomp": "value",
  "--posix-acl": "optional",
  "--security-label": "optional",
  "--xattrmap": "value",
  "--modcaps": "value",
  "--uid-map": "value",
  "--gid-map": "value",
  "--translate-uid": "value",
  "--translate-gid": "value",
  "--migration-mode": "value",
  "--migration-on-error": "value",
  "--migration-verify-handles": "none",
  "--migration-confirm-paths": "none",
  "--daemonize": "none",
  "--debug": "none",
  "--foreground": "none",
  "--version": "none",
  "--help": "none",
};

/** The short flags: `-o` takes a value (`-o X` or `-oX`), the others none. */
const SHORT: Readonly<Record<string, string>> = {
  o: "-o",
  d: "--debug",
  f: "--foreground",
  h: "--help",
  V: "--version",
};

/** One flag of the command line, in order. */
interface Token {
  /** The flag's canonical name (`--debug` for `-d`). */
  name: string;
  /** As written (`-d`, `--fd`), for messages. */
  spelled: string;
  value?: string;
}

function tokenize(args: readonly string[]): Token[] {
  const out: Token[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? "";
    if (arg.startsWith("--") && arg.length > 2) {
      const eq = arg.indexOf("=");
      const spelled = eq < 0 ? arg : arg.slice(0, eq);
      const takes = LONG[spelled];
      if (takes === undefined) throw new UsageError(`${spelled}: unknown option`);
      if (eq >= 0) {
        if (takes === "none") throw new UsageError(`${spelled} takes no value ('${arg}')`);
        out.push({ name: spelled, spelled, value: arg.slice(eq + 1) });
      } else if (takes === "value") {
        const next = args[i + 1];
        if (next === undefined || (next.startsWith("--") && next.length > 2)) {
          throw new UsageError(`${spelled}: needs a value`);
        }
        out.push({ name: spelled, spelled, value: next });
        i++;
      } else out.push({ name: spelled, spelled });
    } else if (arg.startsWith("-") && arg.length > 1 && !arg.startsWith("--")) {
      // Short flags, bundled as clap allows (`-df`); `-o` takes the rest or the next argument.
      for (let j = 1; j < arg.length; j++) {
        const c = arg[j] ?? "";
        const name = SHORT[c];
        if (name === undefined) throw new UsageError(`-${c}: unknown option`);
        if (name !== "-o") {
          out.push({ name, spelled: `-${c}` });
          continue;
        }
        let value = arg.slice(j + 1);
        if (value === "") {
          const next = args[i + 1];
          if (next === undefined) throw new UsageError("-o: needs a value (-o OPT[,OPT...])");
          value = next;
          i++;
        }
        out.push({ name, spelled: "-o", value });
        break;
      }
    } else {
      throw new UsageError(`unexpected argument '${arg}' (every option is a flag)`);
    }
  }
  return out;
}

/**
 * Splits one `-o` argument into its options as C virtiofsd's option parser (libfuse's
 * fuse_opt) does: at commas, where `\,` is a comma inside a value, `\\` a backslash, a backslash
 * and three octal digits a byte (`\054`), and a backslash before any other character that
 * character.
 */
export function splitCompatOptions(group: string): string[] {
  const out: string[] = [];
  const bytes: number[] = [];
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  const flush = (): void => {
    out.push(decoder.decode(new Uint8Array(bytes)));
    bytes.length = 0;
  };
  for (let i = 0; i < group.length; i++) {
    const c = group[i] ?? "";
    if (c === ",") {
      flush();
      continue;
    }
    if (c === "\\" && i + 1 < group.length) {
      const octal = /^[0-3][0-7][0-7]/.exec(group.slice(i + 1, i + 4));
      if (octal !== null) {
        bytes.push(parseInt(octal[0], 8));
        i += 3;
        continue;
      }
      i++;
    }
    // One code point (a surrogate pair is two UTF-16 units).
    const cp = group.codePointAt(i) ?? 0;
    if (cp > 0xffff) i++;
    bytes.push(...encoder.encode(String.fromCodePoint(cp)));
  }
  flush();
  return out;
}

// ---- values ---------------------------------------------------------------------------------

function positiveInt(flag: string, value: string, min = 0): number {
  if (!/^\d+$/.test(value)) throw new UsageError(`${flag}: '${value}' is not a number`);
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new UsageError(`${flag}: ${value} is too large`);
  if (n < min) throw new UsageError(`${flag}: ${value} is below ${min}`);
  return n;
}

/** Seconds, fractions allowed (C virtiofsd reads `-o timeout=` as a double). */
function seconds(flag: string, value: string): number {
  if (!/^(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(value)) {
    throw new UsageError(`${flag}: '${value}' is not a number of seconds`);
  }
  const n = Number(value);
  if (!Number.isFinite(n) || n > Number.MAX_SAFE_INTEGER) {
    throw new UsageError(`${flag}: ${value} is too large`);
  }
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

/** C virtiofsd's level names (`err`), and ours (virtiofsd Rust's), case-insensitive. */
function logLevel(flag: string, value: string): LogLevel {
  const v = value.toLowerCase();
  if (v === "err") return "error";
  if (v === "warning") return "warn";
  if ((LOG_LEVELS as readonly string[]).includes(v)) return v as LogLevel;
  throw new UsageError(
    `${flag}: '${value}' is not a log level (${LOG_LEVELS.join(", ")}; or C's err)`,
  );
}

/** Rust virtiofsd's `--uid-map` / `--gid-map` value: `:namespace_id:host_id:count:`. */
function idMap(flag: string, v: string): IdMap {
  const m = /^:(\d+):(\d+):(\d+):$/.exec(v);
  const n = m === null ? [] : [Number(m[1]), Number(m[2]), Number(m[3])];
  const [inner = -1, outer = -1, count = 0] = n;
  if (m === null || n.some((x) => x > 0xffff_fffe) || count < 1) {
    throw new UsageError(
      `${flag}: '${v}' is not :namespace_id:host_id:count: (e.g. :0:1000:1:)`,
    );
  }
  return { inner, outer, count };
}

/** A refusal by name: the reference has it, we do not yet. */
function notYet(what: string, why: string): UsageError {
  return new UsageError(`${what}: not supported yet (${why})`);
}

const NO_MIGRATION = "the daemon does not offer migration";

// ---- parsing --------------------------------------------------------------------------------

/** The options being gathered, in command-line order: the last of two switches wins. */
interface Draft {
  socketPath?: { value: string; flag: string };
  fd?: string;
  socketGroup?: string;
  sharedDir?: string;
  source?: string;
  cacheFlag?: CacheMode;
  cacheCompat?: CacheMode;
  cacheTimeout?: number;
  compatTimeout?: number;
  writeback: boolean;
  xattr: boolean;
  readonly: boolean;
  allowDirectIo: boolean;
  allowMmap: boolean;
  preserveNoatime: boolean;
  readdirplus?: boolean;
  killprivV2: boolean;
  announceSubmounts: boolean;
  inodeFileHandles: "never" | "prefer" | "mandatory";
  rlimitNofile?: number;
  threadPoolSize: number;
  requestQueues?: string;
  keepServing: boolean;
  logLevelFlag?: LogLevel;
  logLevelCompat?: LogLevel;
  debug: boolean;
  syslog: boolean;
  sandbox?: { value: "namespace" | "chroot" | "none"; flag: string };
  seccomp?: "kill" | "log" | "trap" | "none";
  uidMap: IdMap[];
  gidMap: IdMap[];
  modcaps: { value: string; flag: string }[];
  tag?: string;
  cacheSize?: string;
  /** Accepted without effect: `flag (why)`. */
  ignored: string[];
  deprecated: string[];
}

/** The `-o` options that take no value. */
const SWITCHES: ReadonlySet<string> = new Set([
  "debug",
  "writeback",
  "no_writeback",
  "xattr",
  "no_xattr",
  "allow_direct_io",
  "no_allow_direct_io",
  "readdirplus",
  "no_readdirplus",
  "killpriv_v2",
  "no_killpriv_v2",
  "announce_submounts",
  "flock",
  "no_flock",
  "posix_lock",
  "no_posix_lock",
  "posix_acl",
  "no_posix_acl",
  "security_label",
  "no_security_label",
  "allow_root",
]);

/** Applies one `-o` option. */
function compatOption(d: Draft, opt: string): void {
  const eq = opt.indexOf("=");
  const key = eq < 0 ? opt : opt.slice(0, eq);
  const val = eq < 0 ? undefined : opt.slice(eq + 1);
  const need = (): string => {
    if (val === undefined || val === "") {
      throw new UsageError(`-o ${key}: needs a value (${key}=...)`);
    }
    return val;
  };
  const none = (): void => {
    if (!SWITCHES.has(key)) throw new UsageError(`-o ${opt}: unknown option`);
    if (val !== undefined) throw new UsageError(`-o ${opt}: ${key} takes no value`);
  };
  switch (key) {
    case "source":
      d.source = path("-o source", need());
      return;
    case "cache":
      d.cacheCompat = cacheMode("-o cache", need());
      return;
    case "timeout": {
      const t = seconds("-o timeout", need());
      d.compatTimeout = t;
      return;
    }
    case "log_level":
    case "loglevel":
      d.logLevelCompat = logLevel(`-o ${key}`, need());
      return;
    case "sandbox": {
      const v = need();
      if (v === "none" || v === "namespace" || v === "chroot") {
        d.sandbox = { value: v, flag: `-o sandbox=${v}` };
        return;
      }
      throw new UsageError(`-o sandbox: '${v}' is not one of namespace, chroot, none`);
    }
    case "max_idle_threads":
      d.ignored.push(
        `-o max_idle_threads=${positiveInt("-o max_idle_threads", need())} (no thread pool)`,
      );
      return;
    case "modcaps":
      d.modcaps.push({ value: need(), flag: "-o modcaps" });
      return;
    case "xattrmap":
      need();
      throw notYet(`-o ${key}=`, "extended attributes are not mapped");
  }
  none();
  switch (key) {
    case "debug":
      d.debug = true;
      return;
    case "writeback":
    case "no_writeback":
      d.writeback = key === "writeback";
      return;
    case "xattr":
    case "no_xattr":
      d.xattr = key === "xattr";
      return;
    case "allow_direct_io":
    case "no_allow_direct_io":
      d.allowDirectIo = key === "allow_direct_io";
      return;
    case "readdirplus":
    case "no_readdirplus":
      d.readdirplus = key === "readdirplus";
      return;
    case "killpriv_v2":
    case "no_killpriv_v2":
      d.killprivV2 = key === "killpriv_v2";
      return;
    case "announce_submounts":
      d.announceSubmounts = true;
      return;
    case "flock":
    case "posix_lock":
      d.ignored.push(`-o ${key} (locks are not served: they stay in the guest)`);
      return;
    case "no_flock":
    case "no_posix_lock":
    case "no_posix_acl":
    case "no_security_label":
      return; // what the daemon does
    case "posix_acl":
      throw notYet("-o posix_acl", "POSIX ACLs are not negotiated");
    case "security_label":
      throw notYet("-o security_label", "security labels are not negotiated");
    case "allow_root":
      throw notYet("-o allow_root", "every guest user is served");
    default:
      throw new UsageError(`-o ${opt}: unknown option`);
  }
}

/** A path given with `flag`: not empty, and no NUL byte (no system call could take it). */
function path(flag: string, v: string): string {
  if (v === "") throw new UsageError(`${flag}: the value is empty`);
  if (v.includes("\0")) throw new UsageError(`${flag}: the path holds a NUL byte`);
  return v;
}

/** Applies one flag (not `--help`, `--version`, `--print-capabilities`). */
function flag(d: Draft, t: Token): void {
  const v = t.value ?? "";
  const f = t.spelled;
  switch (t.name) {
    case "-o":
      for (const opt of splitCompatOptions(v)) if (opt !== "") compatOption(d, opt);
      return;
    case "--socket-path":
    case "--socket":
      path(f, v);
      if (d.socketPath !== undefined && d.socketPath.value !== v) {
        throw new UsageError(`${f} ${v} contradicts ${d.socketPath.flag} ${d.socketPath.value}`);
      }
      d.socketPath = { value: v, flag: f };
      if (t.name === "--socket") d.deprecated.push("--socket is deprecated: use --socket-path");
      return;
    case "--fd":
      d.fd = v;
      return;
    case "--socket-group":
      if (v === "") throw new UsageError(`${f}: the value is empty`);
      d.socketGroup = v;
      return;
    case "--shared-dir":
      d.sharedDir = path(f, v);
      return;
    case "--tag":
      if (v === "") throw new UsageError(`${f}: the value is empty`);
      d.tag = v;
      return;
    case "--cache":
      d.cacheFlag = cacheMode(f, v);
      return;
    case "--cache-timeout":
      d.cacheTimeout = seconds(f, v);
      return;
    case "--cache-size":
      d.cacheSize = v;
      return;
    case "--writeback":
      d.writeback = true;
      return;
    case "--xattr":
      d.xattr = true;
      return;
    case "--readonly":
      d.readonly = true;
      return;
    case "--allow-direct-io":
      d.allowDirectIo = true;
      return;
    case "--allow-mmap":
      d.allowMmap = true;
      return;
    case "--preserve-noatime":
      d.preserveNoatime = true;
      return;
    case "--no-readdirplus":
      d.readdirplus = false;
      return;
    case "--killpriv-v2":
    case "--no-killpriv-v2":
      d.killprivV2 = t.name === "--killpriv-v2";
      return;
    case "--announce-submounts":
      d.announceSubmounts = true;
      return;
    case "--no-announce-submounts":
      d.announceSubmounts = false;
      return;
    case "--inode-file-handles":
      if (v === "fallback") {
        d.inodeFileHandles = "prefer";
        d.deprecated.push("--inode-file-handles=fallback is deprecated: use prefer");
      } else if (v === "never" || v === "prefer" || v === "mandatory") d.inodeFileHandles = v;
      else {
        throw new UsageError(`${f}: '${v}' is not one of never, prefer, mandatory (or fallback)`);
      }
      return;
    case "--rlimit-nofile":
      d.rlimitNofile = positiveInt(f, v);
      return;
    case "--thread-pool-size":
      d.threadPoolSize = positiveInt(f, v);
      return;
    case "--request-queues":
      d.requestQueues = v;
      return;
    case "--keep-serving":
      d.keepServing = true;
      return;
    case "--log-level":
      d.logLevelFlag = logLevel(f, v);
      return;
    case "--debug":
      d.debug = true;
      return;
    case "--foreground":
      return; // we always run in the foreground
    case "--syslog":
      d.syslog = true;
      return;
    case "--sandbox":
      if (v === "none" || v === "namespace" || v === "chroot") {
        d.sandbox = { value: v, flag: f };
        return;
      }
      throw new UsageError(`${f}: '${v}' is not one of namespace, chroot, none`);
    case "--seccomp":
      if (v === "none" || v === "kill" || v === "log" || v === "trap") {
        d.seccomp = v;
        return;
      }
      throw new UsageError(`${f}: '${v}' is not one of none, kill, log, trap`);
    case "--posix-acl":
    case "--security-label": {
      const what = t.name === "--posix-acl" ? "POSIX ACLs" : "security labels";
      if (t.value === "never") return;
      if (t.value === undefined || t.value === "auto" || t.value === "always") {
        throw notYet(t.value === undefined ? f : `${f}=${t.value}`, `${what} are not negotiated`);
      }
      throw new UsageError(`${f}: '${v}' is not one of never, auto, always`);
    }
    case "--xattrmap":
      throw notYet(f, "extended attributes are not mapped");
    case "--modcaps":
      d.modcaps.push({ value: v, flag: f });
      return;
    case "--uid-map":
    case "--gid-map":
      (t.name === "--uid-map" ? d.uidMap : d.gidMap).push(idMap(f, v));
      return;
    case "--translate-uid":
    case "--translate-gid":
      throw notYet(f, "ids are not translated");
    case "--migration-mode":
    case "--migration-on-error":
    case "--migration-verify-handles":
    case "--migration-confirm-paths":
      throw notYet(f, NO_MIGRATION);
    case "--daemonize":
      throw notYet(f, "the daemon runs in the foreground");
    default:
      throw new UsageError(`${f}: unknown option`);
  }
}

/** Parses `args` (without the program name). */
export function parseOptions(
  args: readonly string[],
  host: { root: boolean } = { root: runningAsRoot() },
): Command {
  const tokens = tokenize(args);
  const has = (name: string): boolean => tokens.some((t) => t.name === name);
  if (has("--help")) return { kind: "help" };
  if (has("--version")) return { kind: "version" };
  if (has("--print-capabilities")) return { kind: "print-capabilities" };

  const d: Draft = {
    writeback: false,
    xattr: false,
    readonly: false,
    allowDirectIo: false,
    allowMmap: false,
    preserveNoatime: false,
    killprivV2: true,
    announceSubmounts: true,
    inodeFileHandles: "prefer",
    threadPoolSize: 0,
    keepServing: false,
    debug: false,
    syslog: false,
    modcaps: [],
    uidMap: [],
    gidMap: [],
    ignored: [],
    deprecated: [],
  };
  for (const t of tokens) flag(d, t);

  if (d.sharedDir !== undefined && d.source !== undefined && d.sharedDir !== d.source) {
    throw new UsageError(`--shared-dir ${d.sharedDir} contradicts -o source=${d.source}`);
  }
  const sharedDir = d.sharedDir ?? d.source;
  if (sharedDir === undefined) throw new UsageError("--shared-dir (or -o source=DIR) is required");
  if (d.socketPath !== undefined && d.fd !== undefined) {
    throw new UsageError(`${d.socketPath.flag} and --fd contradict each other: give one`);
  }
  if (d.socketPath === undefined && d.fd === undefined) {
    throw new UsageError("--socket-path (or --fd) is required");
  }
  if (d.socketGroup !== undefined && d.socketPath === undefined) {
    throw new UsageError(
      "--socket-group needs --socket-path: with --fd the socket file is not ours",
    );
  }
  if (d.cacheFlag !== undefined && d.cacheCompat !== undefined && d.cacheFlag !== d.cacheCompat) {
    throw new UsageError(`--cache ${d.cacheFlag} contradicts -o cache=${d.cacheCompat}`);
  }
  if (d.logLevelFlag !== undefined && d.logLevelCompat !== undefined) {
    throw new UsageError("--log-level contradicts -o log_level: give one");
  }
  if (
    d.cacheTimeout !== undefined && d.compatTimeout !== undefined &&
    d.cacheTimeout !== d.compatTimeout
  ) {
    throw new UsageError(
      `--cache-timeout ${d.cacheTimeout} contradicts -o timeout=${d.compatTimeout}`,
    );
  }
  const requestQueues = d.requestQueues === undefined
    ? 2
    : positiveInt("--request-queues", d.requestQueues, 1);
  if (requestQueues > 254) throw new UsageError(`--request-queues: ${requestQueues} is over 254`);
  if (d.threadPoolSize > 0) {
    d.ignored.unshift(
      `--thread-pool-size ${d.threadPoolSize} (requests are served on the device thread)`,
    );
  }
  const cache = d.cacheFlag ?? d.cacheCompat ?? "auto";
  const timeout = d.cacheTimeout ?? d.compatTimeout;
  if (timeout !== undefined && cache !== "auto") {
    const spelled = d.cacheTimeout !== undefined
      ? `--cache-timeout ${timeout}`
      : `-o timeout=${timeout}`;
    d.ignored.push(`${spelled} (it is cache=auto's; cache=${cache} keeps its own)`);
  }

  const warnings0: string[] = [];
  const options: Options = {
    sharedDir,
    cache,
    writeback: d.writeback,
    xattr: d.xattr,
    readonly: d.readonly,
    allowDirectIo: d.allowDirectIo,
    preserveNoatime: d.preserveNoatime,
    threadPoolSize: d.threadPoolSize,
    requestQueues,
    keepServing: d.keepServing,
    inodeFileHandles: d.inodeFileHandles,
    allowMmap: d.allowMmap,
    killprivV2: d.killprivV2,
    announceSubmounts: d.announceSubmounts,
    syslog: d.syslog,
    // As root the namespace sandbox, as both virtiofsd; id maps ask for it too (libvirt's session
    // mode counts on Rust's default when it passes them); else none.
    sandbox: d.sandbox?.value ??
      (host.root || d.uidMap.length + d.gidMap.length > 0 ? "namespace" : "none"),
    capabilities: [],
    // The filter by default, as both virtiofsd.
    seccomp: d.seccomp ?? "kill",
    uidMap: d.uidMap,
    gidMap: d.gidMap,
    logLevel: d.logLevelFlag ?? d.logLevelCompat ?? (d.debug ? "debug" : "info"),
  };
  if (d.socketPath !== undefined) options.socketPath = d.socketPath.value;
  if (d.fd !== undefined) options.fd = positiveInt("--fd", d.fd);
  if (d.socketGroup !== undefined) options.socketGroup = d.socketGroup;
  if (timeout !== undefined) options.timeout = timeout;
  if (d.readdirplus !== undefined) options.readdirplus = d.readdirplus;
  if (d.rlimitNofile !== undefined) options.rlimitNofile = d.rlimitNofile;
  if (d.tag !== undefined) options.tag = d.tag;
  if (d.cacheSize !== undefined) options.cacheSize = byteSize("--cache-size", d.cacheSize);
  const windowBad = windowProblem(options);
  if (windowBad !== undefined) throw new UsageError(windowBad);
  let caps = defaultCapabilities(options.inodeFileHandles !== "never");
  for (const m of d.modcaps) {
    try {
      caps = applyModcaps(caps, m.value);
    } catch (e) {
      throw new UsageError(`${m.flag}: ${(e as Error).message}`);
    }
  }
  if (options.inodeFileHandles === "mandatory" && !caps.includes("dac_read_search")) {
    throw new UsageError(
      "--modcaps: -dac_read_search with --inode-file-handles=mandatory (open_by_handle_at needs it)",
    );
  }
  if (d.modcaps.length > 0 && options.sandbox === "none") {
    warnings0.push(`${d.modcaps[0]?.flag}: no effect without --sandbox namespace or chroot`);
  }
  options.capabilities = caps;
  if (d.uidMap.length + d.gidMap.length > 0 && options.sandbox !== "namespace") {
    throw new UsageError(
      `--${d.uidMap.length > 0 ? "uid" : "gid"}-map needs --sandbox namespace (a user namespace)`,
    );
  }

  const warnings = [...d.deprecated, ...warnings0];
  if (d.ignored.length > 0) {
    warnings.push(`accepted without effect: ${d.ignored.join("; ")}`);
  }
  return { kind: "serve", options, warnings };
}
