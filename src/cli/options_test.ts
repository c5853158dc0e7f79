import assert from "node:assert/strict";
import {
  CAPABILITIES,
  type Command,
  HELP,
  type Options,
  parseOptions,
  splitCompatOptions,
  UsageError,
} from "./options.ts";
import {
  C_7_2_FLAGS,
  C_7_2_O_OPTIONS,
  type ReferenceFlag,
  RUST_1_14_FLAGS,
  RUST_1_14_O_OPTIONS,
} from "./reference_flags.ts";

type Serve = Extract<Command, { kind: "serve" }>;

/** The `serve` command of a command line, as root unless `root` is false. */
function command(args: readonly string[], root = true): Serve {
  const c: Command = parseOptions(args, { root });
  assert.equal(c.kind, "serve");
  return c as Serve;
}

/** The options of a `serve` command line. */
function serve(args: readonly string[]): Options {
  return command(args).options;
}

/** The start warnings of a `serve` command line. */
function warnings(args: readonly string[]): string {
  return command(args).warnings.join("\n");
}

/** Asserts `args` is refused by name: the message names `name` and says "not supported yet". */
function notYet(args: readonly string[], name: string): void {
  const message = refused(args, name, /not supported yet/);
  assert.doesNotMatch(message, /unknown option/, message);
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

/** Rust virtiofsd's capability list (with file handles): what the sandbox keeps by default. */
const RUST_CAPABILITIES = [
  "chown",
  "dac_override",
  "dac_read_search",
  "fowner",
  "fsetid",
  "setgid",
  "setuid",
  "mknod",
  "setfcap",
];

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
    killprivV2: true,
    announceSubmounts: true,
    syslog: false,
    sandbox: "namespace",
    seccomp: "kill",
    uidMap: [],
    gidMap: [],
    capabilities: [...RUST_CAPABILITIES],
  });
  assert.deepEqual(command(BASE).warnings, []);
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
    killprivV2: true,
    announceSubmounts: true,
    syslog: true,
    sandbox: "none",
    seccomp: "none",
    uidMap: [],
    gidMap: [],
    capabilities: [...RUST_CAPABILITIES],
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
  await t.step("switches: the last one wins", () => {
    const o = serve([
      ...BASE,
      "-o",
      "readdirplus,no_readdirplus,no_flock,no_posix_lock",
      "-o",
      "killpriv_v2,no_killpriv_v2,no_posix_acl,no_security_label",
    ]);
    assert.equal(o.readdirplus, false);
    assert.equal(o.killprivV2, false);
    assert.deepEqual(command([...BASE, "-o", "no_flock,no_posix_lock"]).warnings, []);
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
  await t.step("--socket-group with --fd", () => {
    refused(["--fd", "3", "--shared-dir", "/a", "--socket-group", "kvm"], "--socket-group", "--fd");
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
    [[...BASE, "--rlimit-nofile", "-1"], "--rlimit-nofile"],
    [[...BASE, "--rlimit-nofile", "1e6"], "--rlimit-nofile"],
    [[...BASE, "--thread-pool-size", "-4"], "--thread-pool-size"],
    [[...BASE, "-o", "timeout=soon"], "-o timeout"],
    [[...BASE, "-o", "timeout="], "-o timeout"],
    [[...BASE, "--cache", "sometimes"], "--cache"],
    [[...BASE, "-o", "cache=sometimes"], "-o cache"],
    [[...BASE, "--log-level", "loud"], "--log-level"],
    [[...BASE, "-o", "log_level=loud"], "-o log_level"],
    [[...BASE, "--sandbox", "pivot"], "--sandbox"],
    [[...BASE, "--seccomp", "strict"], "--seccomp"],
    [[...BASE, "--inode-file-handles", "always"], "--inode-file-handles"],
    [[...BASE, "--posix-acl=sometimes"], "--posix-acl"],
    [[...BASE, "--security-label=yes"], "--security-label"],
    [[...BASE, "--cache-timeout", "-1"], "--cache-timeout"],
    [[...BASE, "--cache-timeout", "soon"], "--cache-timeout"],
    [[...BASE, "-o", "timeout=-1"], "-o timeout"],
    [[...BASE, "-o", "max_idle_threads=many"], "-o max_idle_threads"],
    [[...BASE, "-o", "sandbox=jail"], "-o sandbox"],
    [[...BASE, "-o", "loglevel=loud"], "-o loglevel"],
    [[...BASE, "-o", "xattr=1"], "-o xattr=1"],
    [[...BASE, "--killpriv-v2=yes"], "--killpriv-v2"],
    [[...BASE, "-o"], "-o"],
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

// ---- issue 14: a drop-in for every launcher -------------------------------------------------

/** A command line trying one reference flag, with a socket and a shared directory around it. */
function withFlag(r: ReferenceFlag): string[] {
  const e = r.example;
  const socket = e.some((a) => /^--(socket|socket-path|fd)(=|$)/.test(a));
  const dir = e.some((a) => /^(--shared-dir(=|$)|source=)/.test(a));
  return [
    ...(socket ? [] : ["--socket-path", "/run/vfsd.sock"]),
    ...(dir ? [] : ["--shared-dir", "/srv/share"]),
    ...e,
  ];
}

Deno.test("every flag and -o option of Rust virtiofsd 1.14 and C virtiofsd 7.2 is accepted or refused by name", async (t) => {
  const lists: [string, readonly ReferenceFlag[]][] = [
    ["Rust 1.14", RUST_1_14_FLAGS],
    ["Rust 1.14 -o", RUST_1_14_O_OPTIONS],
    ["C 7.2", C_7_2_FLAGS],
    ["C 7.2 -o", C_7_2_O_OPTIONS],
  ];
  const refusedByName: string[] = [];
  for (const [ref, flags] of lists) {
    await t.step(ref, () => {
      for (const r of flags) {
        const args = withFlag(r);
        try {
          parseOptions(args);
        } catch (e) {
          assert.ok(e instanceof UsageError, `${args.join(" ")}: ${e}`);
          assert.match(e.message, /not supported yet/, `${ref} ${r.flag}: ${e.message}`);
          assert.ok(e.message.includes(r.flag.replace(/=$/, "")), `names ${r.flag}: ${e.message}`);
          assert.doesNotMatch(e.message, /unknown option/);
          refusedByName.push(r.flag);
        }
      }
    });
  }
  // What is refused is the sandbox, the id maps and translations, ACLs and labels, xattr
  // mapping, capabilities, migration, daemonizing and allow_root: nothing else.
  assert.deepEqual([...new Set(refusedByName)].sort(), [
    "--daemonize",
    "--migration-confirm-paths",
    "--migration-mode",
    "--migration-on-error",
    "--migration-verify-handles",
    "--posix-acl",
    "--security-label",
    "--translate-gid",
    "--translate-uid",
    "--xattrmap",
    "-o allow_root",
    "-o posix_acl",
    "-o security_label",
    "-o xattrmap=",
  ]);
});

Deno.test("--help and the README's table name every reference flag and -o option", () => {
  const readme = Deno.readTextFileSync(new URL("../../README.md", import.meta.url));
  const table = readme.slice(readme.indexOf("## Options"), readme.indexOf("## As a library"));
  for (const r of [...RUST_1_14_FLAGS, ...C_7_2_FLAGS]) {
    assert.ok(new RegExp(`${r.flag}\\b`).test(HELP), `--help names ${r.flag}`);
    assert.ok(table.includes(`\`${r.flag}`), `README's Options table names ${r.flag}`);
  }
  for (const r of [...RUST_1_14_O_OPTIONS, ...C_7_2_O_OPTIONS]) {
    const name = r.flag.slice(3).replace(/=$/, "");
    assert.ok(HELP.includes(name), `--help names -o ${name}`);
    assert.ok(table.includes(name), `README's Options table names -o ${name}`);
  }
});

const DIR = "/srv/share";

Deno.test("the command lines real launchers generate (fd 3): parsed, or refused by name", async (t) => {
  const fd3 = (o: Options): void => {
    assert.equal(o.fd, 3);
    assert.equal(o.socketPath, undefined);
    assert.equal(o.sharedDir, DIR);
  };
  await t.step("libvirt, old form: --fd=3 -o source=DIR", () => {
    const c = command(["--fd=3", "-o", `source=${DIR}`]);
    fd3(c.options);
    assert.equal(c.options.cache, "auto");
    assert.deepEqual(c.warnings, []);
  });
  await t.step("libvirt, old form: cache=always,xattr,flock,posix_lock, pool, rlimit, -d", () => {
    const c = command([
      "--fd=3",
      "-o",
      `source=${DIR},cache=always,xattr,flock,posix_lock`,
      "--thread-pool-size=16",
      "--rlimit-nofile=4096",
      "-d",
    ]);
    fd3(c.options);
    assert.equal(c.options.cache, "always");
    assert.equal(c.options.xattr, true);
    assert.equal(c.options.threadPoolSize, 16);
    assert.equal(c.options.rlimitNofile, 4096);
    assert.equal(c.options.logLevel, "debug");
    assert.equal(c.warnings.length, 1);
    assert.match(c.warnings[0] ?? "", /^accepted without effect: /);
    for (const w of ["--thread-pool-size 16", "-o flock", "-o posix_lock"]) {
      assert.ok(c.warnings[0]?.includes(w), `the warning names ${w}: ${c.warnings[0]}`);
    }
  });
  await t.step("libvirt, old form: cache=none,no_xattr,no_flock,no_posix_lock", () => {
    const c = command(["--fd=3", "-o", `source=${DIR},cache=none,no_xattr,no_flock,no_posix_lock`]);
    fd3(c.options);
    assert.equal(c.options.cache, "none");
    assert.equal(c.options.xattr, false);
    assert.deepEqual(c.warnings, []);
  });
  await t.step("libvirt, old form: cache=auto,sandbox=chroot,xattr", () => {
    const o = serve(["--fd=3", "-o", `source=${DIR},cache=auto,sandbox=chroot,xattr`]);
    fd3(o);
    assert.equal(o.sandbox, "chroot");
    assert.equal(o.xattr, true);
  });
  await t.step("libvirt, old form: sandbox=namespace", () => {
    const o = serve(["--fd=3", "-o", `source=${DIR},sandbox=namespace`]);
    fd3(o);
    assert.equal(o.sandbox, "namespace");
  });
  await t.step("libvirt, new form: --fd=3 --shared-dir DIR", () => {
    const c = command(["--fd=3", "--shared-dir", DIR]);
    fd3(c.options);
    assert.deepEqual(c.warnings, []);
  });
  await t.step("libvirt, new form: --cache always --xattr", () => {
    const o = serve(["--fd=3", "--shared-dir", DIR, "--cache", "always", "--xattr"]);
    fd3(o);
    assert.equal(o.cache, "always");
    assert.equal(o.xattr, true);
  });
  await t.step("libvirt, new form: --cache never --sandbox chroot ...", () => {
    const o = serve([
      "--fd=3",
      "--shared-dir",
      DIR,
      "--cache",
      "never",
      "--sandbox",
      "chroot",
      "--xattr",
      "--thread-pool-size=16",
      "--rlimit-nofile=4096",
      "--log-level",
      "debug",
    ]);
    fd3(o);
    assert.equal(o.sandbox, "chroot");
    assert.equal(o.cache, "none");
  });
  await t.step("libvirt session: --uid-map and --gid-map (not root)", () => {
    const o = command([
      "--fd=3",
      "--shared-dir",
      DIR,
      "--uid-map=:0:1000:1:",
      "--uid-map=:1:100000:65536:",
      "--gid-map=:0:1000:1:",
      "--gid-map=:1:100000:65536:",
    ], false).options;
    fd3(o);
    assert.equal(o.sandbox, "namespace");
    assert.deepEqual(o.uidMap, [
      { inner: 0, outer: 1000, count: 1 },
      { inner: 1, outer: 100000, count: 65536 },
    ]);
    assert.deepEqual(o.gidMap, o.uidMap);
  });
  await t.step("kata 3.x: --syslog --cache=auto --shared-dir=DIR --fd=3 ...", () => {
    const c = command([
      "--syslog",
      "--cache=auto",
      `--shared-dir=${DIR}`,
      "--fd=3",
      "--thread-pool-size=1",
      "--announce-submounts",
    ]);
    fd3(c.options);
    assert.equal(c.options.syslog, true);
    assert.equal(c.options.cache, "auto");
    assert.equal(c.options.threadPoolSize, 1);
    assert.equal(c.options.announceSubmounts, true);
    assert.match(c.warnings.join("\n"), /--thread-pool-size 1/);
    assert.doesNotMatch(c.warnings.join("\n"), /submounts/);
  });
  await t.step("kata 2.x: --syslog -o cache=auto -o no_posix_lock -o source=DIR ...", () => {
    const c = command([
      "--syslog",
      "-o",
      "cache=auto",
      "-o",
      "no_posix_lock",
      "-o",
      `source=${DIR}`,
      "--fd=3",
      "--thread-pool-size=1",
      "-o",
      "announce_submounts",
    ]);
    fd3(c.options);
    assert.equal(c.options.syslog, true);
    assert.equal(c.options.announceSubmounts, true);
    assert.doesNotMatch(c.warnings.join("\n"), /submounts/);
  });
  await t.step("runcvm: ... -o sandbox=chroot", () => {
    const o = serve([
      "-o",
      "cache=always",
      "-o",
      "announce_submounts",
      "-o",
      "xattr",
      "--fd=3",
      "-o",
      `source=${DIR}`,
      "-o",
      "sandbox=chroot",
    ]);
    fd3(o);
    assert.equal(o.sandbox, "chroot");
  });
  await t.step("virtiofsd docs: --sandbox=namespace --seccomp=kill", () => {
    const o = serve([
      "--fd=3",
      `--shared-dir=${DIR}`,
      "--cache=never",
      "--sandbox=namespace",
      "--seccomp=kill",
      "--log-level=debug",
    ]);
    fd3(o);
    assert.equal(o.sandbox, "namespace");
    assert.equal(o.seccomp, "kill");
  });
  await t.step("virtiofsd docs: --sandbox none --log-level off", () => {
    const o = serve(["--shared-dir", DIR, "--fd=3", "--sandbox", "none", "--log-level", "off"]);
    fd3(o);
    assert.equal(o.logLevel, "off");
  });
  await t.step("virtiofsd docs: --announce-submounts --inode-file-handles=mandatory", () => {
    const o = serve([
      "--fd=3",
      "--shared-dir",
      DIR,
      "--announce-submounts",
      "--inode-file-handles=mandatory",
    ]);
    fd3(o);
    assert.equal(o.inodeFileHandles, "mandatory");
  });
});

Deno.test("parseOptions() --socket is --socket-path, with a deprecation warning", () => {
  const c = command(["--socket", "/run/vfsd.sock", "--shared-dir", DIR]);
  assert.equal(c.options.socketPath, "/run/vfsd.sock");
  assert.match(c.warnings.join("\n"), /--socket is deprecated: use --socket-path/);
  assert.equal(serve(["--socket=/s", "--socket-path=/s", "--shared-dir", DIR]).socketPath, "/s");
  refused(["--socket=/a", "--socket-path=/b", "--shared-dir", DIR], "--socket", "--socket-path");
  refused(["--socket=/a", "--fd", "3", "--shared-dir", DIR], "--socket", "--fd");
  refused(["--socket=", "--shared-dir", DIR], "--socket");
});

Deno.test("parseOptions() --inode-file-handles=fallback is prefer, with a deprecation warning", () => {
  const c = command([...BASE, "--inode-file-handles=fallback"]);
  assert.equal(c.options.inodeFileHandles, "prefer");
  assert.match(c.warnings.join("\n"), /fallback is deprecated: use prefer/);
  assert.equal(serve([...BASE, "--inode-file-handles", "prefer"]).inodeFileHandles, "prefer");
});

Deno.test("parseOptions() --rlimit-nofile 0 leaves the limit alone", () => {
  assert.equal(serve([...BASE, "--rlimit-nofile", "0"]).rlimitNofile, 0);
  assert.equal(serve([...BASE, "--rlimit-nofile=0"]).rlimitNofile, 0);
  assert.equal(serve(BASE).rlimitNofile, undefined);
});

Deno.test("parseOptions() log levels: C's names (err), -o debug, -o loglevel=", () => {
  assert.equal(serve([...BASE, "-o", "log_level=err"]).logLevel, "error");
  assert.equal(serve([...BASE, "-o", "log_level=warn"]).logLevel, "warn");
  assert.equal(serve([...BASE, "-o", "log_level=info"]).logLevel, "info");
  assert.equal(serve([...BASE, "-o", "log_level=debug"]).logLevel, "debug");
  assert.equal(serve([...BASE, "-o", "loglevel=err"]).logLevel, "error");
  assert.equal(serve([...BASE, "--log-level", "err"]).logLevel, "error");
  assert.equal(serve([...BASE, "-o", "debug"]).logLevel, "debug");
  assert.equal(serve([...BASE, "-o", "debug", "-o", "log_level=warn"]).logLevel, "warn");
  assert.equal(serve([...BASE, "--debug"]).logLevel, "debug");
  refused([...BASE, "-o", "debug=1"], "-o debug=1");
});

Deno.test("parseOptions() timeouts take fractions of a second", () => {
  assert.equal(serve([...BASE, "-o", "timeout=0.5"]).timeout, 0.5);
  assert.equal(serve([...BASE, "-o", "timeout=.25"]).timeout, 0.25);
  assert.equal(serve([...BASE, "-o", "timeout=2"]).timeout, 2);
  assert.equal(serve([...BASE, "-o", "timeout=1e-3"]).timeout, 0.001);
  assert.equal(serve([...BASE, "--cache-timeout", "1.5"]).timeout, 1.5);
  assert.equal(serve([...BASE, "--cache-timeout", "0.5", "-o", "timeout=0.5"]).timeout, 0.5);
  refused([...BASE, "--cache-timeout", "1", "-o", "timeout=0.5"], "--cache-timeout", "-o timeout");
  refused([...BASE, "-o", "timeout=1e999"], "-o timeout");
  assert.equal(warnings([...BASE, "-o", "timeout=0.5"]), "");
  assert.match(
    warnings([...BASE, "-o", "cache=always,timeout=0.5"]),
    /-o timeout=0.5 \(it is cache=auto's; cache=always keeps its own\)/,
  );
  assert.match(warnings([...BASE, "--cache", "none", "--cache-timeout", "3"]), /--cache-timeout 3/);
});

Deno.test("splitCompatOptions() follows libfuse's fuse_opt: \\, is a comma inside a value", () => {
  assert.deepEqual(splitCompatOptions("source=/a\\,b,cache=none"), ["source=/a,b", "cache=none"]);
  assert.deepEqual(splitCompatOptions("source=/a\\\\b"), ["source=/a\\b"]);
  assert.deepEqual(splitCompatOptions("source=/a\\x"), ["source=/ax"]);
  assert.deepEqual(splitCompatOptions("source=/a\\054b"), ["source=/a,b"]);
  assert.deepEqual(splitCompatOptions("source=/caf\\303\\251"), ["source=/café"]);
  assert.deepEqual(splitCompatOptions("source=/a\\"), ["source=/a\\"]);
  assert.deepEqual(splitCompatOptions("source=/日本,xattr"), ["source=/日本", "xattr"]);
  assert.deepEqual(splitCompatOptions("source=/😀"), ["source=/😀"]);
  assert.deepEqual(splitCompatOptions(""), [""]);
  assert.equal(serve(["--fd=3", "-o", "source=/a\\,b,xattr"]).sharedDir, "/a,b");
  assert.equal(serve(["--fd=3", "-o", "source=/a\\,b,xattr"]).xattr, true);
  assert.equal(serve(["--fd=3", "-osource=/srv/share"]).sharedDir, "/srv/share");
});

Deno.test("parseOptions() --killpriv-v2, --no-killpriv-v2 and -o killpriv_v2: on by default (as C), the last wins", () => {
  assert.equal(serve(BASE).killprivV2, true);
  assert.equal(serve([...BASE, "--killpriv-v2"]).killprivV2, true);
  assert.equal(serve([...BASE, "--killpriv-v2", "--no-killpriv-v2"]).killprivV2, false);
  assert.equal(serve([...BASE, "--no-killpriv-v2", "--killpriv-v2"]).killprivV2, true);
  assert.equal(serve([...BASE, "-o", "killpriv_v2"]).killprivV2, true);
  assert.equal(serve([...BASE, "-o", "killpriv_v2,no_killpriv_v2"]).killprivV2, false);
  assert.equal(serve([...BASE, "-o", "killpriv_v2", "--no-killpriv-v2"]).killprivV2, false);
});

Deno.test("parseOptions() --no-readdirplus and -o readdirplus / no_readdirplus", () => {
  assert.equal(serve(BASE).readdirplus, undefined, "the cache mode decides");
  assert.equal(serve([...BASE, "--no-readdirplus"]).readdirplus, false);
  assert.equal(serve([...BASE, "-o", "no_readdirplus"]).readdirplus, false);
  assert.equal(serve([...BASE, "-o", "readdirplus"]).readdirplus, true);
  assert.equal(serve([...BASE, "-o", "readdirplus", "--no-readdirplus"]).readdirplus, false);
});

Deno.test("parseOptions() submounts: announced by default; --no-announce-submounts; no warning", () => {
  assert.equal(serve(BASE).announceSubmounts, true);
  assert.equal(serve([...BASE, "--no-announce-submounts"]).announceSubmounts, false);
  assert.deepEqual(command([...BASE, "--no-announce-submounts"]).warnings, []);
  assert.equal(warnings([...BASE, "--announce-submounts"]), "");
  assert.equal(warnings([...BASE, "-o", "announce_submounts"]), "");
  assert.equal(
    warnings([...BASE, "--announce-submounts", "--no-announce-submounts"]),
    "",
    "the last one wins",
  );
});

Deno.test("parseOptions() accepted without effect: one warning line naming each", () => {
  const w = warnings([
    ...BASE,
    "--thread-pool-size",
    "4",
    "-o",
    "flock,posix_lock,max_idle_threads=10",
  ]);
  assert.equal(w.split("\n").length, 1, w);
  for (const n of ["--thread-pool-size 4", "-o flock", "-o posix_lock", "-o max_idle_threads=10"]) {
    assert.ok(w.includes(n), `${w} names ${n}`);
  }
  assert.equal(warnings([...BASE, "--thread-pool-size", "0"]), "", "no pool is what we do");
  assert.equal(warnings([...BASE, "-f", "-o", "no_flock,no_posix_lock"]), "");
});

Deno.test("parseOptions() what the daemon does anyway is accepted: --sandbox none, --posix-acl=never, ...", () => {
  const o = serve([
    ...BASE,
    "--sandbox",
    "none",
    "--seccomp",
    "none",
    "--posix-acl=never",
    "--security-label=never",
    "-o",
    "sandbox=none,no_posix_acl,no_security_label",
    "-f",
  ]);
  assert.equal(o.sharedDir, "/srv/share");
});

Deno.test("parseOptions() --sandbox namespace, -o sandbox=namespace, --modcaps: the capabilities kept", () => {
  const d = serve([...BASE]);
  // As root the namespace sandbox and the seccomp filter, as both virtiofsd; not root, none.
  assert.equal(d.sandbox, "namespace");
  assert.equal(d.seccomp, "kill");
  assert.equal(command([...BASE], false).options.sandbox, "none");
  assert.equal(command([...BASE], false).options.seccomp, "kill");
  assert.equal(command([...BASE, "--uid-map=:0:1000:1:"], false).options.sandbox, "namespace");
  assert.deepEqual([...d.capabilities].sort(), [...RUST_CAPABILITIES].sort());
  assert.equal(serve([...BASE, "--sandbox", "namespace"]).sandbox, "namespace");
  assert.equal(serve([...BASE, "-o", "sandbox=namespace"]).sandbox, "namespace");
  assert.equal(serve([...BASE, "--sandbox=namespace", "--sandbox", "none"]).sandbox, "none");
  // No file handles: no dac_read_search.
  assert.ok(
    !serve([...BASE, "--inode-file-handles=never"]).capabilities.includes("dac_read_search"),
  );
  // virtiofsd's syntax: ':'-separated, cap_ prefix and case accepted; several flags add up.
  const m = serve([
    ...BASE,
    "--sandbox",
    "namespace",
    "--modcaps=+SYS_ADMIN:-chown",
    "-o",
    "modcaps=-cap_mknod",
  ]).capabilities;
  assert.ok(m.includes("sys_admin") && !m.includes("chown") && !m.includes("mknod"), `${m}`);
  for (
    const [args, names] of [
      [["--modcaps=+nonsense"], "--modcaps"],
      [["--modcaps=sys_admin"], "--modcaps"],
      [["-o", "modcaps=+sys_admin:~chown"], "-o modcaps"],
      [["--inode-file-handles=mandatory", "--modcaps=-dac_read_search"], "-dac_read_search"],
    ] as const
  ) {
    assert.throws(
      () => parseOptions([...BASE, ...args]),
      (e: unknown) => e instanceof UsageError && e.message.includes(names),
      args.join(" "),
    );
  }
  // Without the sandbox --modcaps changes nothing: said once.
  const c = command([...BASE, "--sandbox", "none", "--modcaps=+sys_admin"]);
  assert.match(c.warnings.join("\n"), /--modcaps: no effect without --sandbox namespace/);
});

Deno.test("parseOptions() refuses by name what it does not do yet (exit 2, never 'unknown option')", () => {
  const cases: [string[], string][] = [
    [["--translate-uid", "map:0:1000:1"], "--translate-uid"],
    [["--translate-gid", "guest:0:1000:1"], "--translate-gid"],
    [["--xattrmap", ":map::user.virtiofs.:"], "--xattrmap"],
    [["-o", "xattrmap=:map::user.virtiofs.:"], "-o xattrmap"],
    [["--posix-acl"], "--posix-acl"],
    [["--posix-acl=auto"], "--posix-acl=auto"],
    [["--posix-acl=always"], "--posix-acl=always"],
    [["-o", "posix_acl"], "-o posix_acl"],
    [["--security-label"], "--security-label"],
    [["--security-label=auto"], "--security-label=auto"],
    [["-o", "security_label"], "-o security_label"],
    [["--migration-mode", "file-handles"], "--migration-mode"],
    [["--migration-on-error", "guest-error"], "--migration-on-error"],
    [["--migration-verify-handles"], "--migration-verify-handles"],
    [["--migration-confirm-paths"], "--migration-confirm-paths"],
    [["--daemonize"], "--daemonize"],
    [["-o", "allow_root"], "-o allow_root"],
  ];
  for (const [extra, name] of cases) notYet([...BASE, ...extra], name);
});

Deno.test("--print-capabilities: vhost-user.json's fs type, and separate-options for libvirt", () => {
  assert.deepEqual(CAPABILITIES, { type: "fs", features: ["separate-options"] });
  assert.deepEqual(parseOptions(["--print-capabilities", "--sandbox", "chroot"]), {
    kind: "print-capabilities",
  });
});

Deno.test("parseOptions() flags: --flag=value, --flag value, bundled short flags", () => {
  assert.equal(serve(["--fd", "3", "-df", "--shared-dir", DIR]).logLevel, "debug");
  refused([...BASE, "-dx"], "-x", /unknown option/);
  refused([...BASE, "--socket-path"], "--socket-path", /needs a value/);
  refused(["--socket-path", "--shared-dir", DIR], "--socket-path", /needs a value/);
  refused([...BASE, "--"], "'--'");
});

Deno.test("parseOptions() refuses a path holding a NUL byte, naming its flag", () => {
  refused(["--socket-path", "/run/a\0b", "--shared-dir", "/srv"], "--socket-path", /NUL byte/);
  refused(["--socket", "/run/a\0b", "--shared-dir", "/srv"], "--socket", /NUL byte/);
  refused(["--socket-path", "/run/s", "--shared-dir", "/srv\0/x"], "--shared-dir", /NUL byte/);
  refused(["--fd", "3", "-o", "source=/srv\0x"], "-o source", /NUL byte/);
  refused(["--socket-path", "", "--shared-dir", "/srv"], "--socket-path", /empty/);
});
