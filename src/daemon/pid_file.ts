/**
 * The pid file beside the socket, as Rust virtiofsd keeps it: `<socket-path>.pid` holds the
 * daemon's pid and an exclusive `flock` for as long as it runs, so a second daemon started on
 * the same socket path refuses to start, naming the file and the pid in it. The lock goes with
 * the process, so a file left by a killed daemon does not stand in the way. Unlike Rust
 * virtiofsd (which leaves it behind) we remove it when we stop, while still holding the lock.
 *
 * @module
 */
import {
  AT_FDCWD,
  closeQuietly,
  cString,
  Errno,
  ErrnoError,
  flockRaw,
  fstatRaw,
  ftruncateRaw,
  LOCK_EX,
  LOCK_NB,
  O_CLOEXEC,
  O_CREAT,
  O_NOFOLLOW,
  O_NONBLOCK,
  O_WRONLY,
  openatRaw,
  S_IFMT,
  S_IFREG,
  StatBuffer,
  write,
} from "../ffi/mod.ts";
import { ListenError } from "../vhost_user/listener.ts";

/** A held pid file. */
export class PidFile {
  /** Its path. */
  readonly path: string;
  #fd: number;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.#fd = fd;
  }

  /**
   * Creates (or reuses) `path`, locks it and writes our pid into it. Throws ListenError naming
   * the path, and the pid it holds, when another process holds it.
   */
  static take(path: string): PidFile {
    const name = cString(path);
    const st = new StatBuffer();
    for (let tries = 0;; tries++) {
      // Never through a symlink planted at the path: the daemon, often root, truncates what it
      // opens.
      const fd = openatRaw(
        AT_FDCWD,
        name,
        O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
        0o600,
      );
      if (fd < 0) {
        throw new ListenError(
          `Cannot create the pid file ${path}: ${new ErrnoError(-fd, "open").message}`,
        );
      }
      const r = flockRaw(fd, LOCK_EX | LOCK_NB);
      if (r < 0) {
        closeQuietly(fd);
        if (-r === Errno.EAGAIN) {
          let holder = "";
          try {
            const pid = Deno.readTextFileSync(path).trim();
            if (/^\d+$/.test(pid)) holder = ` (pid ${pid})`;
          } catch { /* gone meanwhile */ }
          throw new ListenError(
            `Cannot use ${path.replace(/\.pid$/, "")}: another daemon${holder} holds its pid ` +
              `file ${path}`,
          );
        }
        throw new ListenError(`Cannot lock the pid file ${path}: ${errnoText(-r)}`);
      }
      // The file we locked must still be the one at the path: a daemon that was stopping may
      // have removed it between our open and our lock.
      const statted = fstatRaw(fd, st) === 0;
      if (statted && (st.mode & S_IFMT) !== S_IFREG) {
        closeQuietly(fd);
        throw new ListenError(`Cannot use the pid file ${path}: it is not a regular file`);
      }
      let same = false;
      if (statted) {
        try {
          same = BigInt(Deno.statSync(path).ino ?? -1) === st.ino;
        } catch { /* removed meanwhile */ }
      }
      if (!same) {
        closeQuietly(fd);
        if (tries < 100) continue;
        throw new ListenError(`Cannot take the pid file ${path}: it keeps being replaced`);
      }
      const t = ftruncateRaw(fd, 0n);
      try {
        if (t < 0) throw new ErrnoError(-t, "ftruncate");
        write(fd, new TextEncoder().encode(`${Deno.pid}\n`));
      } catch (e) {
        closeQuietly(fd);
        throw new ListenError(`Cannot write the pid file ${path}: ${(e as Error).message}`);
      }
      return new PidFile(path, fd);
    }
  }

  /** Removes the file (still locked, so nobody takes a file about to vanish), then unlocks it. */
  release(): void {
    if (this.#fd < 0) return;
    try {
      Deno.removeSync(this.path);
    } catch { /* already gone */ }
    closeQuietly(this.#fd);
    this.#fd = -1;
  }
}

function errnoText(errno: number): string {
  return new ErrnoError(errno, "flock").message;
}
