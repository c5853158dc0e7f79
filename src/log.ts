/**
 * A levelled logger: one line per event on stderr, `[deno-virtiofsd LEVEL] message`; or one
 * syslog datagram per event (`syslogLogger`, given a sender: this layer imports nothing, so the
 * socket is `src/daemon/syslog.ts`'s).
 *
 * @module
 */

/** Log levels, most severe first (virtiofsd's names). */
export const LOG_LEVELS = ["off", "error", "warn", "info", "debug", "trace"] as const;
/** A log level. */
export type LogLevel = typeof LOG_LEVELS[number];

/** What the layers log through. */
export interface Logger {
  /** Something failed that an operator must know about. */
  error(msg: string): void;
  /** Something went wrong and was handled (a refused request, a dropped chain). */
  warn(msg: string): void;
  /** Lifecycle: listening, connected, disconnected. */
  info(msg: string): void;
  /** Control-plane messages and session events. */
  debug(msg: string): void;
  /** Every request. */
  trace(msg: string): void;
  /** Whether `level` is printed (to skip building messages that would not be). */
  enabled(level: LogLevel): boolean;
}

const encoder = new TextEncoder();

/** A logger printing `level` and more severe to stderr (synchronously, so lines never interleave). */
export function stderrLogger(level: LogLevel, prefix = "deno-virtiofsd"): Logger {
  const max = LOG_LEVELS.indexOf(level);
  const line = (l: LogLevel, msg: string): void => {
    if (LOG_LEVELS.indexOf(l) > max) return;
    const t = new Date().toISOString();
    Deno.stderr.writeSync(encoder.encode(`[${t} ${prefix} ${l.toUpperCase()}] ${msg}\n`));
  };
  return {
    error: (m) => line("error", m),
    warn: (m) => line("warn", m),
    info: (m) => line("info", m),
    debug: (m) => line("debug", m),
    trace: (m) => line("trace", m),
    enabled: (l) => LOG_LEVELS.indexOf(l) <= max,
  };
}

/** The syslog severity of each level (RFC 5424: 3 error, 4 warning, 6 informational, 7 debug). */
export const SYSLOG_SEVERITY: Readonly<Record<Exclude<LogLevel, "off">, number>> = {
  error: 3,
  warn: 4,
  info: 6,
  debug: 7,
  trace: 7,
};

/** syslog's LOG_USER facility (Rust virtiofsd's; the priority is facility * 8 + severity). */
export const LOG_USER = 1;

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/**
 * One syslog message as glibc's `syslog(3)` sends it to `/dev/log` (RFC 3164 without the host
 * name): `<PRI>Mmm dd hh:mm:ss TAG[PID]: MESSAGE`, the time in local time.
 */
export function syslogLine(
  level: Exclude<LogLevel, "off">,
  msg: string,
  opts: { tag?: string; pid?: number; facility?: number; date?: Date } = {},
): string {
  const d = opts.date ?? new Date();
  const pri = (opts.facility ?? LOG_USER) * 8 + SYSLOG_SEVERITY[level];
  const two = (n: number): string => String(n).padStart(2, "0");
  const stamp = `${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2, " ")} ` +
    `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  return `<${pri}>${stamp} ${opts.tag ?? "deno-virtiofsd"}[${opts.pid ?? Deno.pid}]: ${msg}`;
}

/**
 * A logger handing each event at `level` or more severe to `send` as one syslog message
 * (`syslogLine`, UTF-8). `send` never throws: what it cannot deliver is its own business.
 */
export function syslogLogger(
  level: LogLevel,
  send: (datagram: Uint8Array) => void,
  tag = "deno-virtiofsd",
  pid: number = Deno.pid,
): Logger {
  const max = LOG_LEVELS.indexOf(level);
  const line = (l: Exclude<LogLevel, "off">, msg: string): void => {
    if (LOG_LEVELS.indexOf(l) > max) return;
    send(encoder.encode(syslogLine(l, msg, { tag, pid })));
  };
  return {
    error: (m) => line("error", m),
    warn: (m) => line("warn", m),
    info: (m) => line("info", m),
    debug: (m) => line("debug", m),
    trace: (m) => line("trace", m),
    enabled: (l) => LOG_LEVELS.indexOf(l) <= max,
  };
}

/** A logger that prints nothing. */
export const silentLogger: Logger = stderrLogger("off");

/**
 * Lets the first `first` events through, then one in every `every`: for warnings a guest can
 * cause at will, so that it cannot fill the host's disk with them.
 */
export class Throttle {
  readonly #first: number;
  readonly #every: number;
  /** Events seen. */
  count = 0;

  /** A throttle passing the first `first` events, then every `every`-th. */
  constructor(first = 100, every = 1000) {
    this.#first = first;
    this.#every = every;
  }

  /** Counts one event; true when it should be logged. */
  pass(): boolean {
    this.count++;
    return this.count <= this.#first || this.count % this.#every === 0;
  }
}
