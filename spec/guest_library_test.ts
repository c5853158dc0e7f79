/**
 * Spec: file systems written in TypeScript, served through `mod.ts` to a real Linux guest. The
 * README's "Serve your own file system" section claims:
 *
 * > A guest mounts what `serve({ socketPath, fileSystem })` serves as it mounts any virtio-fs
 * > share: `examples/hello_fs.ts` (a read-only file in 40 lines) and `examples/memory_fs.ts` (a
 * > MemoryFs: a complete in-memory file system, with a synthetic README) both work, and CPython's
 * > file-system tests pass on the MemoryFs with no failure the passthrough share does not have.
 *
 * One boot carries both programs' devices (tags `hello` and `memory`), to save CI a boot. The
 * passthrough share's bar is its recorded result in `spec/expectations/guest.json`
 * (`pythonSuite.results.ours`, 741 passed, 0 failed when recorded).
 *
 * @module
 */
import assert from "node:assert/strict";
import { startProgram } from "./_driver/program.ts";
import { QemuGuest } from "./_driver/qemu_guest.ts";
import { readExpectations } from "./_driver/guest_expectations.ts";
import {
  parseRegrtest,
  PYTHON_SUITE_MODULES,
  SUITE_TIMEOUT_MS,
  suiteCommand,
} from "./_driver/python_suite.ts";

Deno.test({
  name:
    "LIBRARY-GUEST [guest] hello_fs and memory_fs, served from TypeScript, mounted in one guest",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using hello = await startProgram("examples/hello_fs.ts");
    await using memory = await startProgram("examples/memory_fs.ts");
    await hello.listening();
    await memory.listening();
    const g = await QemuGuest.boot({
      socketPath: hello.socket,
      tag: "hello",
      memoryMiB: 2048,
      extraQemuArgs: [
        ...["-chardev", `socket,id=mem,path=${memory.socket}`],
        ...["-device", "vhost-user-fs-pci,chardev=mem,tag=memory,queue-size=1024"],
      ],
    });
    try {
      await t.step("LIBRARY-GUEST-1 the hello example: one read-only file", async () => {
        await g.shOk("mkdir -p /mnt/hello && mount -t virtiofs hello /mnt/hello");
        assert.equal(await g.shOk("ls /mnt/hello"), "hello\n");
        assert.equal(await g.shOk("cat /mnt/hello/hello"), "Hello from TypeScript!\n");
        assert.equal(await g.shOk("stat -c '%s %A' /mnt/hello/hello"), "23 -r--r--r--\n");
        const w = await g.sh("echo x > /mnt/hello/new 2>&1");
        assert.notEqual(w.status, 0, "it has no create: the guest cannot make files");
        await g.shOk("umount /mnt/hello");
      });

      await t.step(
        "LIBRARY-GUEST-2 the MemoryFs example: files, trees, links, a synthetic README",
        async () => {
          await g.shOk("mkdir -p /mnt/mem && mount -t virtiofs memory /mnt/mem");
          assert.ok((await g.shOk("cat /mnt/mem/README")).length > 0, "the synthetic README reads");
          await g.shOk(
            "cd /mnt/mem && mkdir -p a/b/c && echo one > a/one && ln a/one a/two && " +
              "ln -s one a/sym && mv a/b a/bee && head -c 10485760 /dev/urandom > big && " +
              "sha256sum big > big.sum && setfattr -n user.k -v v a/one",
          );
          assert.equal(await g.shOk("cat /mnt/mem/a/two /mnt/mem/a/sym"), "one\none\n");
          assert.equal(await g.shOk("stat -c %h /mnt/mem/a/one"), "2\n");
          assert.equal(await g.shOk("ls /mnt/mem/a/bee"), "c\n");
          assert.equal(await g.shOk("cd /mnt/mem && getfattr --only-values -n user.k a/one"), "v");
          // The page cache dropped, the 10 MiB come back from the daemon's memory.
          await g.shOk("sync && echo 3 > /proc/sys/vm/drop_caches");
          await g.shOk("cd /mnt/mem && sha256sum -c big.sum");
          await g.shOk("rm -r /mnt/mem/a /mnt/mem/big /mnt/mem/big.sum");
        },
      );

      await t.step(
        "LIBRARY-GUEST-3 CPython's file-system tests pass on the MemoryFs (no failure passthrough does not have)",
        async () => {
          const run = await g.sh(suiteCommand("/mnt/mem/pysuite"), { timeoutMs: SUITE_TIMEOUT_MS });
          const log = await g.shOk("cat /tmp/suite.log", { timeoutMs: 120_000 });
          const r = parseRegrtest(log, PYTHON_SUITE_MODULES);
          console.log(
            `memory: CPython ${PYTHON_SUITE_MODULES.join(", ")}: ${r.counts.passed} passed, ` +
              `${r.counts.failed} failed, ${r.counts.skipped} skipped (regrtest exit ${run.out.trim()})`,
          );
          const passthrough = readExpectations().pythonSuite.results.ours?.failures ?? {};
          const extra = Object.entries(r.failures).filter(([id]) => !(id in passthrough));
          for (const [id, why] of extra) console.log(`  memory ${id}: ${why}`);
          assert.ok(r.counts.passed > 500, `the suite ran (${r.counts.passed} passed)`);
          assert.deepEqual(extra, [], "failures the passthrough share does not have");
        },
      );
      await g.shOk("umount /mnt/mem");
    } finally {
      await g.shutdown();
    }
    // Both programs end when QEMU goes away, cleanly.
    assert.equal((await hello.child.status).code, 0, await hello.log());
    assert.equal((await memory.child.status).code, 0, await memory.log());
  },
});
