import assert from "node:assert/strict";
import { type Command, HELP, type Options, parseOptions, UsageError } from "./options.ts";

/** The options of a `serve` command line. */
function serve(args: readonly string[]): Options {
  const c: Command = parseOptions(args);
  assert.equal(c.kind, "serve");
  return (c as Extract<Command, { kind: "serve" }>).options;
}

/** Asserts `args` is refused with a UsageError whose message matches every one of `names`. */
function refused(args: readonly string[], ...names: (string | RegExp)[]): string {
  let message = "";
  assert.throws(() => parseOptions(args), (e: unknown) => {
    assert.ok(e instanceof UsageError, `a UsageError, not ${e}`);
    assert.equal(e.name, "UsageError");
    message = e.message;
    return true;
  });
  for (const n of names) {
    if (typeof n === "string") assert.ok(message.includes(n), `"${message}" names ${n}`);
    else assert.match(message, n);
  }
  return message;
}

const BASE = ["--socket-path", "/run/vfsd.sock", "--shared-dir", "/srv/share"];

Deno.test("parseOptions() defaults", () => {
  const o = serve(BASE);
  assert.deepEqual(o, {
    socketPath: "/run/vfsd.sock",
    sharedDir: "/srv/share",
    cache: "auto",
    writeback: false,
    xattr: false,
    readonly: false,
    allowDirectIo: false,
    preserveNoatime: false,
    threadPoolSize: 0,
    requestQueues: 2,
    keepServing: false,
    logLevel: "info",
    inodeFileHandles: "prefer",
    allowMmap: false,
  });
});

Deno.test("parseOptions() takes Rust virtiofsd's spellings", () => {
  const o = serve([
    "--socket-path=/run/vfsd.sock",
    "--shared-dir",
    "/srv/share",
    "--cache",
    "always",
    "--sandbox",
    "none",
    "--seccomp=none",
    "--thread-pool-size",
    "16",
    "--xattr",
    "--writeback",
    "--readonly",
    "--allow-direct-io",
    "--preserve-noatime",
    "--rlimit-nofile",
    "4096",
    "--log-level",
    "debug",
    "--socket-group",
    "kvm",
    "--tag",
    "myfs",
    "--request-queues",
    "3",
    "--keep-serving",
    "--syslog",
    "-f",
    "--inode-file-handles=mandatory",
    "--allow-mmap",
  ]);
  assert.deepEqual(o, {
    socketPath: "/run/vfsd.sock",
    sharedDir: "/srv/share",
    cache: "always",
    writeback: true,
    xattr: true,
    readonly: true,
    allowDirectIo: true,
    preserveNoatime: true,
    threadPoolSize: 16,
    requestQueues: 3,
    keepServing: true,
    logLevel: "debug",
    rlimitNofile: 4096,
    socketGroup: "kvm",
    tag: "myfs",
    inodeFileHandles: "mandatory",
    allowMmap: true,
  });
});

Deno.test("parseOptions() --inode-file-handles takes never, prefer, mandatory", () => {
  assert.equal(serve([...BASE, "--inode-file-handles", "never"]).inodeFileHandles, "never");
  assert.throws(
    () => serve([...BASE, "--inode-file-handles", "always"]),
    /--inode-file-handles: 'always'/,
  );
});

Deno.test("parseOptions() --cache never is none", () => {
  assert.equal(serve([...BASE, "--cache", "never"]).cache, "none");
  assert.equal(serve([...BASE, "--cache=never"]).cache, "none");
  assert.equal(serve([...BASE, "--cache", "metadata"]).cache, "metadata");
  assert.equal(serve([...BASE, "--cache", "auto"]).cache, "auto");
});

Deno.test("parseOptions() takes C virtiofsd's -o spellings", async (t) => {
  await t.step("-o source=DIR,cache=none,xattr with --fd (as libvirt passes it)", () => {
    const o = serve(["--fd=3", "-o", "source=/srv/share,cache=none,xattr"]);
    assert.equal(o.fd, 3);
    assert.equal(o.socketPath, undefined);
    assert.equal(o.sharedDir, "/srv/share");
    assert.equal(o.cache, "none");
    assert.equal(o.xattr, true);
  });
  await t.step("several -o, each with several options", () => {
    const o = serve([
      "--socket-path",
      "/run/vfsd.sock",
      "-o",
      "source=/srv/share",
      "-o",
      "cache=always,writeback,timeout=5",
      "-o",
      "allow_direct_io,log_level=warn",
      "--thread-pool-size=0",
    ]);
    assert.equal(o.sharedDir, "/srv/share");
    assert.equal(o.cache, "always");
    assert.equal(o.writeback, true);
    assert.equal(o.timeout, 5);
    assert.equal(o.allowDirectIo, true);
    assert.equal(o.logLevel, "warn");
  });
  await t.step("no_* options", () => {
    const o = serve([...BASE, "-o", "xattr,no_xattr,no_writeback,no_allow_direct_io"]);
    assert.equal(o.xattr, false);
    assert.equal(o.writeback, false);
    assert.equal(o.allowDirectIo, false);
  });
  await t.step("options accepted for compatibility and ignored", () => {
    const o = serve([
      ...BASE,
      "-o",
      "readdirplus,no_readdirplus,flock,no_flock,posix_lock,no_posix_lock",
      "-o",
      "announce_submounts,killpriv_v2,no_killpriv_v2",
    ]);
    assert.equal(o.sharedDir, "/srv/share");
  });
  await t.step("-o cache=never is none too", () => {
    assert.equal(serve([...BASE, "-o", "cache=never"]).cache, "none");
  });
  await t.step("-o log_level is case-insensitive", () => {
    assert.equal(serve([...BASE, "-o", "log_level=DEBUG"]).logLevel, "debug");
  });
  await t.step("-d is --log-level debug", () => {
    assert.equal(serve([...BASE, "-d"]).logLevel, "debug");
    assert.equal(serve([...BASE, "--debug"]).logLevel, "debug");
    assert.equal(serve([...BASE, "-d", "--log-level", "trace"]).logLevel, "trace");
  });
});

Deno.test("parseOptions() --help, --version and --print-capabilities need nothing else", () => {
  assert.deepEqual(parseOptions(["--help"]), { kind: "help" });
  assert.deepEqual(parseOptions(["-h"]), { kind: "help" });
  assert.deepEqual(parseOptions(["--version"]), { kind: "version" });
  assert.deepEqual(parseOptions(["-V"]), { kind: "version" });
  assert.deepEqual(parseOptions(["--print-capabilities"]), { kind: "print-capabilities" });
  assert.deepEqual(parseOptions([...BASE, "--help"]), { kind: "help" });
  assert.match(HELP, /--shared-dir/);
  assert.match(HELP, /--socket-path/);
});

Deno.test("parseOptions() refuses contradictions, naming both flags", async (t) => {
  await t.step("--shared-dir A -o source=B", () => {
    refused(
      ["--socket-path", "/s", "--shared-dir", "/a", "-o", "source=/b"],
      "--shared-dir",
      "-o source",
    );
  });
  await t.step("--shared-dir A -o source=A is no contradiction", () => {
    assert.equal(
      serve(["--socket-path", "/s", "--shared-dir", "/a", "-o", "source=/a"]).sharedDir,
      "/a",
    );
  });
  await t.step("--socket-path and --fd", () => {
    refused(["--socket-path", "/s", "--fd", "3", "--shared-dir", "/a"], "--socket-path", "--fd");
  });
  await t.step("--cache auto -o cache=none", () => {
    refused([...BASE, "--cache", "auto", "-o", "cache=none"], "--cache", "-o cache");
  });
  await t.step("--cache never -o cache=none agree", () => {
    assert.equal(serve([...BASE, "--cache", "never", "-o", "cache=none"]).cache, "none");
  });
  await t.step("--log-level -o log_level", () => {
    refused(
      [...BASE, "--log-level", "info", "-o", "log_level=debug"],
      "--log-level",
      "-o log_level",
    );
  });
});

Deno.test("parseOptions() refuses a missing shared dir or socket, naming the flag", () => {
  refused(["--socket-path", "/s"], "--shared-dir", "-o source");
  refused(["--fd", "3"], "--shared-dir");
  refused(["--shared-dir", "/a"], "--socket-path", "--fd");
  refused([], "--shared-dir");
  refused(["--socket-path", "/s", "-o", "source="], "-o source", /needs a value/);
  refused(["--socket-path", "/s", "-o", "source"], "-o source");
  refused(["--socket-path"], "--socket-path");
  refused(["--socket-path", "/s", "--shared-dir"], "--shared-dir");
});

Deno.test("parseOptions() refuses an empty shared dir or socket path, naming the flag", () => {
  // `-o source=` is refused ("needs a value"); the long flags must not take "" either.
  refused(["--socket-path", "/s", "--shared-dir="], "--shared-dir");
  refused(["--socket-path", "/s", "--shared-dir", ""], "--shared-dir");
  refused(["--socket-path=", "--shared-dir", "/a"], "--socket-path");
});

Deno.test("parseOptions() refuses unknown flags and options, naming them", () => {
  refused([...BASE, "--bogus"], "--bogus");
  refused([...BASE, "-x"], "-x");
  refused([...BASE, "-o", "cache=none,bogus=1"], "-o bogus=1", /unknown option/);
  refused([...BASE, "stray"], "stray");
  refused([...BASE, "--xattr=yes"], "--xattr");
});

Deno.test("parseOptions() refuses bad values, naming the flag", async (t) => {
  const cases: [string[], string][] = [
    [["--fd", "abc", "--shared-dir", "/a"], "--fd"],
    [["--fd", "-1", "--shared-dir", "/a"], "--fd"],
    [["--fd", "1.5", "--shared-dir", "/a"], "--fd"],
    [["--fd", "", "--shared-dir", "/a"], "--fd"],
    [[...BASE, "--request-queues", "0"], "--request-queues"],
    [[...BASE, "--request-queues", "255"], "--request-queues"],
    [[...BASE, "--request-queues", "two"], "--request-queues"],
    [[...BASE, "--rlimit-nofile", "0"], "--rlimit-nofile"],
    [[...BASE, "--rlimit-nofile", "1e6"], "--rlimit-nofile"],
    [[...BASE, "--thread-pool-size", "-4"], "--thread-pool-size"],
    [[...BASE, "-o", "timeout=soon"], "-o timeout"],
    [[...BASE, "-o", "timeout="], "-o timeout"],
    [[...BASE, "--cache", "sometimes"], "--cache"],
    [[...BASE, "-o", "cache=sometimes"], "-o cache"],
    [[...BASE, "--log-level", "loud"], "--log-level"],
    [[...BASE, "-o", "log_level=loud"], "-o log_level"],
    [[...BASE, "--sandbox", "namespace"], "--sandbox"],
    [[...BASE, "--sandbox", "chroot"], "--sandbox"],
    [[...BASE, "--seccomp", "kill"], "--seccomp"],
  ];
  for (const [args, flag] of cases) {
    await t.step(args.slice(-2).join(" "), () => {
      refused(args, flag);
    });
  }
  await t.step("limits are accepted at their edges", () => {
    assert.equal(serve([...BASE, "--request-queues", "1"]).requestQueues, 1);
    assert.equal(serve([...BASE, "--request-queues", "254"]).requestQueues, 254);
    assert.equal(serve(["--fd", "0", "--shared-dir", "/a"]).fd, 0);
    assert.equal(serve([...BASE, "--rlimit-nofile", "1"]).rlimitNofile, 1);
    assert.equal(serve([...BASE, "-o", "timeout=0"]).timeout, 0);
  });
});

Deno.test("parseOptions() describes a number too large to be exact as such, not as too small", () => {
  const message = refused([...BASE, "--rlimit-nofile", "99999999999999999999"], "--rlimit-nofile");
  assert.doesNotMatch(message, /is below/, message);
});

Deno.test("parseOptions() --tag and --cache-size: sizes with suffixes, a power of two, 2M to 512M, with a tag", () => {
  assert.equal(serve([...BASE, "--tag", "fs0", "--cache-size", "64M"]).cacheSize, 64 * 2 ** 20);
  assert.equal(serve([...BASE, "--tag", "fs0", "--cache-size", "512MiB"]).cacheSize, 2 ** 29);
  assert.equal(serve([...BASE, "--tag", "fs0", "--cache-size", "2097152"]).cacheSize, 2 ** 21);
  assert.equal(serve([...BASE, "--tag", "fs0", "--cache-size", "0"]).cacheSize, 0);
  assert.equal(serve([...BASE, "--tag", "fs0"]).tag, "fs0");
  assert.equal(serve(BASE).cacheSize, undefined);
  refused([...BASE, "--cache-size", "64M"], "--cache-size", "--tag");
  refused([...BASE, "--tag", "fs0", "--cache-size", "1G"], "--cache-size", "512 MiB");
  refused([...BASE, "--tag", "fs0", "--cache-size", "48M"], "--cache-size", "power of two");
  refused([...BASE, "--tag", "fs0", "--cache-size", "1M"], "--cache-size", "2 MiB");
  refused([...BASE, "--tag", "fs0", "--cache-size", "lots"], "--cache-size", "'lots'");
  refused([...BASE, "--tag", "x".repeat(37)], "--tag", "36 bytes");
  refused([...BASE, "--tag", ""], "--tag");
  assert.match(HELP, /--cache-size SIZE/);
  assert.match(HELP, /--tag TAG/);
});
