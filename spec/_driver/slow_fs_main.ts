/**
 * A program that serves an async file system through `mod.ts` alone, for the library spec: the
 * root directory holds `data` (4 KiB of a pattern); READ answers after `SLOW_READ_MS` (default
 * 200 ms, an `await` of a timer), every other call at once. Run as
 * `deno run -A spec/_driver/slow_fs_main.ts SOCKET`; it exits when the front end goes away.
 *
 * @module
 */
import {
  attr,
  type Context,
  entry,
  Errno,
  ErrnoError,
  type FileSystem,
  type ReadDestination,
  S_IFDIR,
  S_IFREG,
  serve,
} from "../../mod.ts";

/** The contents of `data`: byte i is i mod 251. */
export const SLOW_DATA: Uint8Array = Uint8Array.from({ length: 4096 }, (_, i) => i % 251);

const root = attr({ ino: 1n, mode: S_IFDIR | 0o755 });
const data = attr({ ino: 2n, mode: S_IFREG | 0o444, size: SLOW_DATA.length });
const delayMs = Number(Deno.env.get("SLOW_READ_MS") ?? "200");

class SlowFs implements FileSystem {
  lookup(_ctx: Context, parent: bigint, name: Uint8Array) {
    if (parent !== 1n || new TextDecoder().decode(name) !== "data") {
      throw new ErrnoError(Errno.ENOENT);
    }
    return entry(2n, data);
  }
  getattr(_ctx: Context, nodeid: bigint) {
    if (nodeid === 1n) return { attr: root, timeout: 1 };
    if (nodeid === 2n) return { attr: data, timeout: 1 };
    throw new ErrnoError(Errno.ENOENT);
  }
  open(_ctx: Context, nodeid: bigint) {
    if (nodeid !== 2n) throw new ErrnoError(Errno.EISDIR);
    return { fh: 7n, openFlags: 0 };
  }
  async read(
    _ctx: Context,
    _nodeid: bigint,
    _fh: bigint,
    offset: bigint,
    size: number,
    dst: ReadDestination,
  ): Promise<number> {
    await new Promise((r) => setTimeout(r, delayMs));
    try {
      return dst.write(SLOW_DATA.subarray(Number(offset), Number(offset) + size));
    } catch (e) {
      console.error(`slow_fs: READ after its queue was reset: ${(e as Error).message}`);
      throw e;
    }
  }
}

if (import.meta.main) {
  const daemon = await serve({
    socketPath: Deno.args[0] ?? "/tmp/slow.sock",
    fileSystem: new SlowFs(),
    logLevel: "info",
  });
  const exit = await daemon.exited;
  Deno.exit(exit.status);
}
