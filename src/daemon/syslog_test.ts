import assert from "node:assert/strict";
import { join } from "node:path";
import { closeQuietly, ErrnoError, read, unixDatagramBind } from "../ffi/mod.ts";
import { syslogLine } from "../log.ts";
import { daemonLogger, openSyslog, SYSLOG_SOCKET_ENV } from "./syslog.ts";

/** A syslog daemon of our own: a bound datagram socket, read without blocking. */
class FakeSyslog implements Disposable {
  readonly fd: number;
  readonly lines: string[] = [];
  readonly #buf = new Uint8Array(new ArrayBuffer(65536));

  constructor(readonly path: string) {
    this.fd = unixDatagramBind(path);
  }

  /** Takes every datagram waiting. */
  drain(): string[] {
    for (;;) {
      try {
        const n = read(this.fd, this.#buf);
        this.lines.push(new TextDecoder().decode(this.#buf.subarray(0, n)));
      } catch (e) {
        if (e instanceof ErrnoError && e.code === "EAGAIN") return this.lines;
        throw e;
      }
    }
  }

  /** Waits until a line matches `re` (failing after `ms`, listing what came). */
  async waitFor(re: RegExp, ms = 20_000): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const hit = this.drain().find((l) => re.test(l));
      if (hit !== undefined) return hit;
      if (Date.now() > deadline) {
        throw new Error(`no syslog line matching ${re} within ${ms} ms; got:\n${this.lines}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  [Symbol.dispose](): void {
    closeQuietly(this.fd);
  }
}

Deno.test("syslogLine() is what glibc's syslog(3) sends: <PRI>Mmm dd hh:mm:ss tag[pid]: message", () => {
  const date = new Date(2026, 0, 5, 7, 8, 9);
  assert.equal(
    syslogLine("warn", "hello", { date, pid: 42 }),
    "<12>Jan  5 07:08:09 deno-virtiofsd[42]: hello",
  );
  assert.match(
    syslogLine("error", "x", { date }),
    /^<11>Jan {2}5 07:08:09 deno-virtiofsd\[\d+\]: x$/,
  );
  assert.match(syslogLine("info", "x", { date, tag: "t", pid: 1 }), /^<14>.* t\[1\]: x$/);
  assert.match(syslogLine("debug", "x", { date }), /^<15>/);
  assert.match(syslogLine("trace", "x", { date }), /^<15>/);
  assert.match(syslogLine("info", "x", { date: new Date(2026, 11, 25, 23, 0, 0) }), /Dec 25 23:/);
});

Deno.test("openSyslog() sends one datagram per event at the level, to the socket it is given", () => {
  const dir = Deno.makeTempDirSync({ prefix: "syslog_test_" });
  try {
    using server = new FakeSyslog(join(dir, "log"));
    const sink = openSyslog("info", server.path);
    try {
      sink.log.info("listening");
      sink.log.warn("careful");
      sink.log.error("broken");
      sink.log.debug("not at info");
      assert.equal(sink.log.enabled("debug"), false);
      assert.equal(sink.log.enabled("warn"), true);
    } finally {
      sink.close();
    }
    const lines = server.drain();
    assert.equal(lines.length, 3, lines.join("\n"));
    assert.match(
      lines[0] ?? "",
      new RegExp(`^<14>... .. ..:..:.. deno-virtiofsd\\[${Deno.pid}\\]: listening$`),
    );
    assert.match(lines[1] ?? "", /^<12>.*: careful$/);
    assert.match(lines[2] ?? "", /^<11>.*: broken$/);
    assert.equal(sink.dropped, 0);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("openSyslog() names the socket when nobody listens; daemonLogger() then logs to stderr", () => {
  const dir = Deno.makeTempDirSync({ prefix: "syslog_test_" });
  try {
    const path = join(dir, "nobody");
    assert.throws(() => openSyslog("info", path), (e: unknown) => {
      assert.ok(e instanceof ErrnoError);
      assert.match(e.message, new RegExp(path));
      return true;
    });
    const { syslog } = daemonLogger("off", path);
    assert.equal(syslog, undefined, "falls back to stderr");
    assert.equal(daemonLogger("off").syslog, undefined, "stderr unless asked");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("openSyslog() writes to stderr what it cannot send, and reconnects to a restarted syslog", () => {
  const dir = Deno.makeTempDirSync({ prefix: "syslog_test_" });
  try {
    const path = join(dir, "log");
    const first = new FakeSyslog(path);
    const sink = openSyslog("info", path);
    try {
      sink.log.info("delivered");
      assert.equal(first.drain().length, 1);
      first[Symbol.dispose]();
      Deno.removeSync(path);
      // Nobody there: the line goes to stderr (one line in this test's output) and is counted.
      sink.log.info("syslog_test: this line went to stderr, as it should");
      assert.equal(sink.dropped, 1);
      using second = new FakeSyslog(path);
      sink.log.info("after a restart");
      assert.deepEqual(second.drain().map((l) => l.replace(/^.*\]: /, "")), ["after a restart"]);
      assert.equal(sink.dropped, 1);
    } finally {
      sink.close();
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test({
  name: "--syslog: the daemon's lines, from both threads, go to syslog and not to stderr",
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "syslog_test_" });
    try {
      await Deno.mkdir(join(dir, "share"));
      using server = new FakeSyslog(join(dir, "log"));
      const socket = join(dir, "vfs.sock");
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../../mod.ts", import.meta.url).pathname,
          "--syslog",
          "--socket-path",
          socket,
          "--shared-dir",
          join(dir, "share"),
          "--thread-pool-size",
          "2",
        ],
        env: { [SYSLOG_SOCKET_ENV]: server.path },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      try {
        const pid = child.pid;
        await server.waitFor(/listening on /);
        // The device thread's first line: its file system opened the shared directory.
        await server.waitFor(/file handles/);
        const warn = await server.waitFor(/accepted without effect: --thread-pool-size 2/);
        assert.match(warn, new RegExp(`^<12>.* deno-virtiofsd\\[${pid}\\]: `));
      } finally {
        child.kill("SIGTERM");
      }
      const out = await child.output();
      assert.equal(out.code, 0);
      await server.waitFor(/stopped: /);
      assert.equal(new TextDecoder().decode(out.stderr), "", "nothing on stderr");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "--syslog with nobody listening: one warning, then stderr",
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "syslog_test_" });
    try {
      await Deno.mkdir(join(dir, "share"));
      const socket = join(dir, "vfs.sock");
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../../mod.ts", import.meta.url).pathname,
          "--syslog",
          "--socket-path",
          socket,
          "--shared-dir",
          join(dir, "share"),
        ],
        env: { [SYSLOG_SOCKET_ENV]: join(dir, "nobody") },
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const deadline = Date.now() + 20_000;
      while (!(await exists(socket)) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      child.kill("SIGTERM");
      const out = await child.output();
      const err = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, err);
      const warnings = err.split("\n").filter((l) => /cannot log to syslog/.test(l));
      assert.equal(warnings.length, 1, err);
      assert.match(warnings[0] ?? "", /WARN\] --syslog: cannot log to syslog through .*nobody/);
      assert.match(err, /INFO\] listening on /);
      assert.match(err, /INFO\] stopped: /);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}
