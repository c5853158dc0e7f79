/**
 * The `deno run` entry of the daemon: parse the command line, serve, and stop cleanly on SIGTERM
 * or SIGINT (socket file and pid file removed, exit 0). Exit status 2 for a bad command line, 1
 * for a bad path or socket, and the device's status otherwise.
 *
 * @module
 */
import { type Daemon, serve } from "../daemon/serve.ts";
import { daemonLogger, DEFAULT_SYSLOG_SOCKET, SYSLOG_SOCKET_ENV } from "../daemon/syslog.ts";
import { confine, sandboxedDaemon, startSandbox } from "../daemon/sandbox.ts";
import { CAPABILITIES, HELP, parseOptions, UsageError } from "./options.ts";

export { exitNow } from "../daemon/serve.ts";

/** The version printed by `--version`. */
export const VERSION = "0.1.0";

/** Runs the daemon's command line; resolves to the process exit status. */
export async function main(args: readonly string[]): Promise<number> {
  let command;
  try {
    command = parseOptions(args);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`deno-virtiofsd: ${e.message} (see --help)`);
      return 2;
    }
    throw e;
  }
  switch (command.kind) {
    case "help":
      console.log(HELP);
      return 0;
    case "version":
      console.log(`deno-virtiofsd ${VERSION} (Deno ${Deno.version.deno})`);
      return 0;
    case "print-capabilities":
      console.log(JSON.stringify(CAPABILITIES, null, 2));
      return 0;
  }
  const { options, warnings } = command;
  // Started by the sandbox's supervisor: serve what it handed over, inside the sandbox.
  const inner = sandboxedDaemon();
  try {
    inner?.prepare();
  } catch (e) {
    console.error(`deno-virtiofsd: ${(e as Error).message}`);
    return 1;
  }
  // --syslog: this thread's lines, and (when syslog answers here) the device thread's.
  // (In the sandbox, not when its supervisor could not reach syslog: it said so already.)
  const asked = options.syslog && inner?.syslog !== false
    ? Deno.env.get(SYSLOG_SOCKET_ENV) ?? DEFAULT_SYSLOG_SOCKET
    : undefined;
  const syslogOptions = inner !== undefined ? { reconnect: false, pid: inner.hostPid } : {};
  const { log, syslog } = daemonLogger(options.logLevel, asked, syslogOptions);
  // The supervisor said them already.
  if (inner === undefined) { for (const w of warnings) log.warn(w); }
  // Listen for signals before the socket exists: whoever sees the socket may signal at once.
  let daemon: Daemon | undefined;
  let stopRequested = false;
  const onSignal = (): void => {
    stopRequested = true;
    daemon?.stop();
  };
  Deno.addSignalListener("SIGTERM", onSignal);
  Deno.addSignalListener("SIGINT", onSignal);
  const removeListeners = (): void => {
    Deno.removeSignalListener("SIGTERM", onSignal);
    Deno.removeSignalListener("SIGINT", onSignal);
  };
  // --seccomp: once everything is open (and the root changed), before the first request.
  const seccomp = options.seccomp;
  const confineHere = (): void => {
    if (seccomp !== "none") confine(seccomp, log);
  };
  try {
    if (inner !== undefined) {
      const { socketPath: _path, socketGroup: _group, ...rest } = options;
      daemon = await serve({
        ...rest,
        log,
        fd: inner.listenFd,
        rlimitNofile: 0, // the supervisor raised it
        ...(inner.warmupDir !== undefined ? { warmupDir: inner.warmupDir } : {}),
        beforeServing: () => {
          inner.enter();
          confineHere();
        },
        dropCapabilities: [...inner.switchCapabilities],
        syslogOptions,
        ...(syslog !== undefined ? { syslogSocket: syslog.path } : {}),
      });
    } else if (options.sandbox !== "none") {
      daemon = await startSandbox({
        ...options,
        mode: options.sandbox,
        args,
        pidFile: true,
        warmup: true,
        log,
        ...(options.syslog ? { syslogReached: syslog !== undefined } : {}),
      });
    } else {
      daemon = await serve({
        ...options,
        log,
        pidFile: true,
        ...(seccomp !== "none" ? { beforeServing: confineHere } : {}),
        ...(syslog !== undefined ? { syslogSocket: syslog.path } : {}),
      });
    }
  } catch (e) {
    removeListeners();
    if (syslog !== undefined) {
      log.error((e as Error).message);
      syslog.close();
    }
    console.error(`deno-virtiofsd: ${(e as Error).message}`);
    return 1;
  }
  if (stopRequested) daemon.stop();
  const exit = await daemon.exited;
  removeListeners();
  syslog?.close();
  return exit.status;
}
