/**
 * Logging to syslog (`--syslog`): one datagram per event on the local syslog socket, as glibc's
 * `syslog(3)` sends them (`<PRI>Mmm dd hh:mm:ss deno-virtiofsd[PID]: message`, facility
 * LOG_USER as Rust virtiofsd's). Each thread that logs (the main one and the device's Worker)
 * opens its own socket.
 *
 * @module
 */
import { closeQuietly, Errno, ErrnoError, unixDatagramConnect, write } from "../ffi/mod.ts";
import { type Logger, type LogLevel, stderrLogger, syslogLogger } from "../log.ts";

/** Where syslog listens. */
export const DEFAULT_SYSLOG_SOCKET = "/dev/log";

/**
 * The environment variable that names another syslog socket for `--syslog` (tests bind their
 * own datagram socket and read what the daemon sends).
 */
export const SYSLOG_SOCKET_ENV = "DENO_VIRTIOFSD_SYSLOG_SOCKET";

/** How a syslog logger behaves. */
export interface SyslogOptions {
  /**
   * Connect again, by path, when syslog restarts (default true). The sandbox turns it off: its
   * root is the shared directory, where the path would name the guest's file.
   */
  reconnect?: boolean;
  /** The pid in each line (default ours; in the sandbox, the supervisor's, which the host sees). */
  pid?: number;
}

/** A logger sending to syslog, and the socket it owns. */
export interface SyslogSink {
  /** The logger. */
  readonly log: Logger;
  /** The socket path it sends to. */
  readonly path: string;
  /** Datagrams that could not be sent (their lines went to stderr instead). */
  readonly dropped: number;
  /** Closes the socket; later events go to stderr. */
  close(): void;
}

/**
 * Opens a syslog logger at `level` on the datagram socket `path` (default `/dev/log`). Throws
 * ErrnoError naming the path when nobody listens there. An event that cannot be sent later (the
 * syslog daemon went away, its queue is full) is written to stderr instead: nothing is lost
 * silently.
 */
export function openSyslog(
  level: LogLevel,
  path: string = DEFAULT_SYSLOG_SOCKET,
  opts: SyslogOptions = {},
): SyslogSink {
  let fd = unixDatagramConnect(path);
  const tries = opts.reconnect === false ? 1 : 2;
  let dropped = 0;
  const fallback = stderrLogger(level);
  const decoder = new TextDecoder();
  const send = (datagram: Uint8Array): void => {
    for (let attempt = 0; attempt < tries && fd >= 0; attempt++) {
      try {
        write(fd, datagram);
        return;
      } catch (e) {
        // A restarted syslog daemon: connect again once.
        const gone = e instanceof ErrnoError &&
          (e.errno === Errno.ECONNREFUSED || e.errno === Errno.ENOTCONN);
        if (!gone || attempt + 1 >= tries) break;
        try {
          const again = unixDatagramConnect(path);
          closeQuietly(fd);
          fd = again;
        } catch {
          break;
        }
      }
    }
    dropped++;
    // `<PRI>stamp tag[pid]: message` -> the message, on stderr at its own level.
    const text = decoder.decode(datagram);
    const m = /^<(\d+)>[^\]]*\]: ([^]*)$/.exec(text);
    const severity = Number(m?.[1] ?? 11) % 8;
    const msg = m?.[2] ?? text;
    if (severity <= 3) fallback.error(msg);
    else if (severity === 4) fallback.warn(msg);
    else if (severity <= 6) fallback.info(msg);
    else fallback.debug(msg);
  };
  return {
    log: syslogLogger(level, send, "deno-virtiofsd", opts.pid),
    path,
    get dropped() {
      return dropped;
    },
    close() {
      if (fd >= 0) closeQuietly(fd);
      fd = -1;
    },
  };
}

/**
 * The daemon's logger: syslog through `syslogSocket` when given and reachable, else stderr. When
 * syslog was asked for but cannot be reached, says so once (on stderr) and logs to stderr;
 * `syslog` is then undefined.
 */
export function daemonLogger(
  level: LogLevel,
  syslogSocket?: string,
  opts: SyslogOptions = {},
): { log: Logger; syslog?: SyslogSink } {
  if (syslogSocket === undefined) return { log: stderrLogger(level) };
  try {
    const syslog = openSyslog(level, syslogSocket, opts);
    return { log: syslog.log, syslog };
  } catch (e) {
    const log = stderrLogger(level);
    log.warn(
      `--syslog: cannot log to syslog through ${syslogSocket} (${
        e instanceof Error ? e.message : e
      }); logging to stderr`,
    );
    return { log };
  }
}
