import assert from "node:assert/strict";
import { join } from "node:path";

const MOD = new URL("../../mod.ts", import.meta.url).pathname;

/** Our daemon as a process, its stderr piped. */
function daemon(args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MOD, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(what: string, probe: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test({
  name: "--socket-path keeps PATH.pid: our pid, a second daemon refused naming it, removed at exit",
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "main_test_" });
    try {
      const share = join(dir, "share");
      await Deno.mkdir(share);
      const socket = join(dir, "vfs.sock");
      const pidFile = `${socket}.pid`;
      const args = ["--socket-path", socket, "--shared-dir", share];

      const first = daemon(args);
      try {
        await waitFor("the socket", () => exists(socket));
        assert.equal(await Deno.readTextFile(pidFile), `${first.pid}\n`);

        const second = await daemon(args).output();
        const err = new TextDecoder().decode(second.stderr);
        assert.equal(second.code, 1, err);
        assert.ok(err.includes(pidFile), `names ${pidFile}: ${err}`);
        assert.ok(err.includes(`pid ${first.pid}`), `names pid ${first.pid}: ${err}`);
        assert.equal(await Deno.readTextFile(pidFile), `${first.pid}\n`, "left as it was");
        assert.ok(await exists(socket), "the first daemon's socket is left alone");
      } finally {
        first.kill("SIGTERM");
      }
      const out = await first.output();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      assert.equal(await exists(pidFile), false, "the pid file goes at exit");
      assert.equal(await exists(socket), false, "and the socket");

      // A daemon killed outright leaves its pid file, but not its lock: the next one starts.
      const killed = daemon(args);
      await waitFor("the socket", () => exists(socket));
      killed.kill("SIGKILL");
      await killed.output();
      assert.ok(await exists(pidFile), "a killed daemon leaves its pid file");
      const next = daemon(args);
      try {
        await waitFor("the next daemon's pid", async () => {
          try {
            return (await Deno.readTextFile(pidFile)) === `${next.pid}\n`;
          } catch {
            return false;
          }
        });
      } finally {
        next.kill("SIGTERM");
      }
      assert.equal((await next.output()).code, 0);
      assert.equal(await exists(pidFile), false);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a flag not supported yet exits 2 naming it; --print-capabilities prints our JSON",
  sanitizeResources: false,
  async fn() {
    const refused = await daemon(["--fd=3", "--shared-dir", "/", "--translate-uid", "map:0:1000:1"])
      .output();
    assert.equal(refused.code, 2);
    assert.match(
      new TextDecoder().decode(refused.stderr),
      /^deno-virtiofsd: --translate-uid: not supported yet \(.*\) \(see --help\)\n$/,
    );
    const caps = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MOD, "--print-capabilities"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(caps.code, 0);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(caps.stdout)), {
      type: "fs",
      features: ["separate-options"],
    });
  },
});
