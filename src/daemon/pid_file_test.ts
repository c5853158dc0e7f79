import assert from "node:assert/strict";
import { join } from "node:path";
import { ListenError } from "../vhost_user/listener.ts";
import { PidFile } from "./pid_file.ts";

Deno.test("PidFile holds our pid and a lock; a second taker is refused naming the file and the pid", () => {
  const dir = Deno.makeTempDirSync({ prefix: "pid_file_test_" });
  try {
    const path = join(dir, "vfs.sock.pid");
    // A longer stale content is replaced, not overwritten in part.
    Deno.writeTextFileSync(path, "123456789012\n");
    const held = PidFile.take(path);
    assert.equal(Deno.readTextFileSync(path), `${Deno.pid}\n`);
    assert.throws(() => PidFile.take(path), (e: unknown) => {
      assert.ok(e instanceof ListenError);
      assert.ok(e.message.includes(path), e.message);
      assert.ok(e.message.includes(`pid ${Deno.pid}`), e.message);
      assert.ok(e.message.includes(join(dir, "vfs.sock")), e.message);
      return true;
    });
    held.release();
    assert.throws(() => Deno.statSync(path), Deno.errors.NotFound, "removed at release");
    held.release(); // twice is harmless
    const again = PidFile.take(path);
    assert.equal((Deno.statSync(path).mode ?? 0) & 0o777, 0o600, "a new one is mode 0600");
    again.release();
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("PidFile names the path when it cannot be created", () => {
  const path = "/nonexistent-dir-for-pid-file-test/vfs.sock.pid";
  assert.throws(() => PidFile.take(path), (e: unknown) => {
    assert.ok(e instanceof ListenError);
    assert.ok(e.message.includes(path), e.message);
    return true;
  });
});
