/**
 * A levelled logger: one line per event on stderr, `[deno-virtiofsd LEVEL] message`.
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
