// A file system written in TypeScript, served to a VM: a directory holding one read-only file.
//   deno run -A examples/hello_fs.ts /tmp/hello.sock   (guest: mount -t virtiofs TAG /mnt)
import * as vfs from "../mod.ts";
import type { Context, DirentSink, FileSystem, ReadDestination } from "../mod.ts";

const text = new TextEncoder().encode("Hello from TypeScript!\n");
const name = new TextEncoder().encode("hello");
const root = vfs.attr({ ino: 1n, mode: vfs.S_IFDIR | 0o755 });
const hello = vfs.attr({ ino: 2n, mode: vfs.S_IFREG | 0o444, size: text.length });
const enoent = () => new vfs.ErrnoError(vfs.Errno.ENOENT);

class HelloFs implements FileSystem {
  lookup(_ctx: Context, parent: bigint, n: Uint8Array) {
    if (parent !== 1n || n.length !== name.length || !n.every((b, i) => b === name[i])) {
      throw enoent();
    }
    return vfs.entry(2n, hello);
  }
  getattr(_ctx: Context, nodeid: bigint) {
    if (nodeid !== 1n && nodeid !== 2n) throw enoent();
    return { attr: nodeid === 1n ? root : hello, timeout: 1 };
  }
  open(_ctx: Context, nodeid: bigint) {
    if (nodeid !== 2n) throw enoent();
    return { fh: 0n, openFlags: 0 };
  }
  read(_c: Context, _n: bigint, _fh: bigint, offset: bigint, size: number, dst: ReadDestination) {
    return dst.write(text.subarray(Number(offset), Number(offset) + size));
  }
  opendir = (_ctx: Context, nodeid: bigint) => ({ fh: nodeid, openFlags: 0 });
  readdir(_c: Context, _n: bigint, _fh: bigint, offset: bigint, sink: DirentSink) {
    if (offset === 0n) sink.add(2n, 1n, vfs.DT_REG, name);
  }
}

const daemon = await vfs.serve({
  socketPath: Deno.args[0] ?? "/tmp/hello.sock",
  fileSystem: new HelloFs(),
});
await daemon.exited;
