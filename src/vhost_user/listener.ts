/**
 * The listening socket: bound at `--socket-path` (replacing a stale socket left by a dead daemon),
 * or handed over already listening as `--fd N` (socket activation).
 *
 * @module
 */
import {
  bindAndListen,
  close,
  ErrnoError,
  isListeningSocket,
  unixConnect,
  unixSocket,
  unlink,
} from "../ffi/mod.ts";
import type { Logger } from "../log.ts";

/** The socket cannot be set up; the message names the path or fd. Exit status 1. */
export class ListenError extends Error {
  /** An error with `message`. */
  constructor(message: string) {
    super(message);
    this.name = "ListenError";
  }
}

/**
 * Binds and listens at `path`. A socket file nobody listens on (connect gives ECONNREFUSED) is
 * replaced; a live socket, or a file that is not a socket, is an error naming the path.
 */
export function listenOnPath(path: string, log: Logger): number {
  let info: Deno.FileInfo | undefined;
  try {
    info = Deno.lstatSync(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new ListenError(`Cannot use socket path ${path}: ${(e as Error).message}`);
    }
  }
  if (info !== undefined) {
    if (!info.isSocket) {
      throw new ListenError(`Cannot use socket path ${path}: it exists and is not a socket`);
    }
    try {
      close(unixConnect(path));
      throw new ListenError(`Cannot use socket path ${path}: a live daemon is listening on it`);
    } catch (e) {
      if (!(e instanceof ErrnoError)) throw e;
      if (e.code !== "ECONNREFUSED") {
        throw new ListenError(`Cannot use socket path ${path}: ${e.message}`);
      }
    }
    unlink(path);
    log.info(`replaced the stale socket ${path}`);
  }
  const fd = unixSocket();
  try {
    bindAndListen(fd, path, 16);
  } catch (e) {
    close(fd);
    throw new ListenError(`Cannot listen on ${path}: ${(e as Error).message}`);
  }
  return fd;
}

/** Checks that `fd` is a listening socket (for `--fd`). */
export function checkListeningFd(fd: number): void {
  if (!isListeningSocket(fd)) {
    throw new ListenError(`--fd ${fd} is not a listening socket`);
  }
}

/** Gives the socket file at `path` to group `group` (a name or a number), mode 0660. */
export function setSocketGroup(path: string, group: string): void {
  let gid: number | undefined = /^\d+$/.test(group) ? Number(group) : undefined;
  if (gid === undefined) {
    const line = Deno.readTextFileSync("/etc/group").split("\n").find((l) =>
      l.split(":")[0] === group
    );
    const field = line?.split(":")[2];
    if (field === undefined) throw new ListenError(`--socket-group ${group}: no such group`);
    gid = Number(field);
  }
  Deno.chownSync(path, null, gid);
  Deno.chmodSync(path, 0o660);
}
