/**
 * Creating nodes as the guest's caller: a daemon running as root switches the serving thread's
 * fs uid and gid to the request's for mknod, mkdir, symlink, create and tmpfile (as virtiofsd
 * does), so new files belong to the guest user and the host checks that user's permission on
 * the parent directory. The guest's umask is applied by the host through a thread-private umask
 * (`unshare(CLONE_FS)`), so default ACLs of the parent directory keep working.
 *
 * @module
 */
import {
  getegid,
  geteuid,
  setfsgid,
  setfsuid,
  umask as setUmask,
  unshareFsRaw,
} from "../../ffi/mod.ts";
import type { Context } from "../filesystem.ts";

/** Switches and restores the calling thread's fs ids and umask around a creating call. */
export class Credentials {
  readonly #euid = geteuid();
  readonly #egid = getegid();
  /** Only root may take another uid; anyone else creates as itself. */
  readonly #switch = this.#euid === 0;
  /** Unknown until the first creating call, on the thread that serves. */
  #ownUmask: boolean | undefined;
  #savedUmask = 0;
  #switched = false;
  #umaskSet = false;

  /**
   * Enters the caller's identity for one creating call; `umask` is the guest's. Returns the mode
   * to pass to the call. Always pair with `leave()` (in a `finally`).
   */
  enter(ctx: Context, mode: number, umask: number): number {
    if (this.#ownUmask === undefined) this.#ownUmask = unshareFsRaw() === 0;
    let out = mode & 0o7777;
    if (this.#ownUmask) {
      this.#savedUmask = setUmask(umask & 0o777);
      this.#umaskSet = true;
    } else {
      // The process umask still applies on top; better too strict than too open.
      out &= ~umask;
    }
    if (this.#switch && (ctx.uid !== this.#euid || ctx.gid !== this.#egid)) {
      setfsgid(ctx.gid);
      setfsuid(ctx.uid);
      this.#switched = true;
    }
    return out;
  }

  /** Back to the daemon's own identity and umask. */
  leave(): void {
    if (this.#switched) {
      setfsuid(this.#euid);
      setfsgid(this.#egid);
      this.#switched = false;
    }
    if (this.#umaskSet) {
      setUmask(this.#savedUmask);
      this.#umaskSet = false;
    }
  }

  /** Enters the caller's identity (no umask) for a permission check; pair with `leave()`. */
  enterForCheck(ctx: Context): void {
    if (this.#switch && (ctx.uid !== this.#euid || ctx.gid !== this.#egid)) {
      setfsgid(ctx.gid);
      setfsuid(ctx.uid);
      this.#switched = true;
    }
  }
}
