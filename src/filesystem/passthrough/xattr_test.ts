import assert from "node:assert/strict";
import {
  AT_FDCWD,
  closeQuietly,
  cString,
  Errno,
  O_CLOEXEC,
  O_DIRECTORY,
  O_NOFOLLOW,
  O_PATH,
  openatRaw,
  XATTR_CREATE,
  XATTR_REPLACE,
} from "../../ffi/mod.ts";
import { assertErrno, kernelHasXattrAt } from "./testing.ts";
import { Xattrs } from "./xattr.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const b = (s: string) => enc.encode(s);

const errno = assertErrno;

for (const useAt of [undefined, false] as const) {
  const mode = useAt === false ? "getxattr on /proc/self/fd entries" : "the kernel's choice";
  Deno.test(`Xattrs (${mode}): every call reaches the node of an O_PATH descriptor`, () => {
    const dir = Deno.makeTempDirSync({ prefix: "xattr_test_" });
    const procFd = openatRaw(AT_FDCWD, cString("/proc/self/fd"), O_PATH | O_DIRECTORY | O_CLOEXEC);
    const fds: number[] = [];
    const node = (path: string, flags = 0): Uint8Array => {
      const fd = openatRaw(AT_FDCWD, cString(`${dir}/${path}`), O_PATH | O_CLOEXEC | flags);
      assert.ok(fd >= 0, path);
      fds.push(fd);
      return cString(String(fd));
    };
    const x = new Xattrs(procFd, useAt);
    const cwd = Deno.cwd();
    try {
      Deno.writeTextFileSync(`${dir}/f`, "data");
      const f = node("f");
      x.set(f, b("user.colour"), b("blue"), 0);
      assert.equal(x.usesAt, useAt === false ? false : kernelHasXattrAt());
      errno(() => x.set(f, b("user.colour"), b("red"), XATTR_CREATE), Errno.EEXIST);
      errno(() => x.set(f, b("user.other"), b("x"), XATTR_REPLACE), Errno.ENODATA);
      x.set(f, b("user.colour"), b("green"), XATTR_REPLACE);
      x.set(f, b("user.big"), new Uint8Array(4000).fill(7), 0);
      assert.equal(x.get(f, b("user.colour"), 0), 5);
      assert.equal(dec.decode(x.get(f, b("user.colour"), 100) as Uint8Array), "green");
      assert.deepEqual(x.get(f, b("user.big"), 65536), new Uint8Array(4000).fill(7));
      errno(() => x.get(f, b("user.colour"), 4), Errno.ERANGE);
      // The answer a guest gets most, twice (one error made once).
      errno(() => x.get(f, b("security.capability"), 20), Errno.ENODATA);
      errno(() => x.get(f, b("security.capability"), 0), Errno.ENODATA);
      const len = x.list(f, 0) as number;
      assert.equal(len, "user.colour\0user.big\0".length);
      const names = dec.decode(x.list(f, len) as Uint8Array).split("\0").filter(Boolean).sort();
      assert.deepEqual(names, ["user.big", "user.colour"]);
      errno(() => x.list(f, 3), Errno.ERANGE);
      x.remove(f, b("user.big"));
      errno(() => x.remove(f, b("user.big")), Errno.ENODATA);
      errno(() => x.get(f, b("user." + "n".repeat(300)), 10), Errno.ERANGE);
      // A directory and a FIFO (neither opened: a FIFO's open would block; user.* is for
      // files and directories only, trusted.* for the rest: the tests run as root).
      Deno.mkdirSync(`${dir}/d`);
      const d = node("d", O_DIRECTORY);
      x.set(d, b("user.dir"), b("d"), 0);
      assert.equal(dec.decode(x.get(d, b("user.dir"), 10) as Uint8Array), "d");
      new Deno.Command("mkfifo", { args: [`${dir}/fifo`] }).outputSync();
      const p = node("fifo");
      errno(() => x.set(p, b("user.fifo"), b("p"), 0), Errno.EPERM);
      x.set(p, b("trusted.fifo"), b("p"), 0);
      assert.equal(dec.decode(x.get(p, b("trusted.fifo"), 10) as Uint8Array), "p");
      // A symlink's own descriptor: the link gets the attribute, not its target.
      Deno.symlinkSync("f", `${dir}/link`);
      const l = node("link", O_NOFOLLOW);
      x.set(l, b("trusted.link"), b("l"), 0);
      assert.equal(dec.decode(x.get(l, b("trusted.link"), 10) as Uint8Array), "l");
      errno(() => x.get(f, b("trusted.link"), 10), Errno.ENODATA);
      // No call moved this thread's working directory.
      assert.equal(Deno.cwd(), cwd);
    } finally {
      x.close();
      for (const fd of fds) closeQuietly(fd);
      closeQuietly(procFd);
      Deno.removeSync(dir, { recursive: true });
    }
  });
}
