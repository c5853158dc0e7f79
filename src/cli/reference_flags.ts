/**
 * Every flag and `-o` option of the two reference daemons, each with a typical use, for the
 * test that each is either accepted or refused by name (`options_test.ts`), and for the README's
 * table.
 *
 * Where the lists come from:
 * - Rust virtiofsd 1.14.0 (Debian sid's `virtiofsd_1.14.0-4`, unpacked privately): its `--help`;
 *   its `-o` options from its `parse_compat` (main.rs), each checked against the binary (an
 *   unknown one exits 2, "Invalid compat argument").
 * - C virtiofsd of QEMU 7.2 (`/usr/lib/qemu/virtiofsd`): its `--help`, plus the hidden
 *   `--debug` of its option table; its `-o` options from `--help` and the option tables of
 *   helper.c and passthrough_ll.c, each checked against the binary (an unknown one exits 1,
 *   "fuse: unknown option(s)").
 *
 * @module
 */

/** One flag of a reference daemon. */
export interface ReferenceFlag {
  /** The flag as the reference spells it (`--cache`, `-o cache=`). */
  readonly flag: string;
  /** A command-line fragment using it, with a value the reference takes. */
  readonly example: readonly string[];
}

function o(option: string): ReferenceFlag {
  const eq = option.indexOf("=");
  return { flag: `-o ${eq < 0 ? option : option.slice(0, eq + 1)}`, example: ["-o", option] };
}

/** Rust virtiofsd 1.14.0's flags (`virtiofsd --help`), in its order. */
export const RUST_1_14_FLAGS: readonly ReferenceFlag[] = [
  { flag: "--shared-dir", example: ["--shared-dir", "/srv/share"] },
  { flag: "--tag", example: ["--tag", "myfs"] },
  { flag: "--socket", example: ["--socket", "/run/vfsd.sock"] },
  { flag: "--socket-path", example: ["--socket-path", "/run/vfsd.sock"] },
  { flag: "--socket-group", example: ["--socket-group", "kvm"] },
  { flag: "--fd", example: ["--fd", "3"] },
  { flag: "--thread-pool-size", example: ["--thread-pool-size", "16"] },
  { flag: "--xattr", example: ["--xattr"] },
  { flag: "--posix-acl", example: ["--posix-acl=auto"] },
  { flag: "--xattrmap", example: ["--xattrmap", ":map::user.virtiofs.:"] },
  { flag: "--sandbox", example: ["--sandbox", "namespace"] },
  { flag: "--readonly", example: ["--readonly"] },
  { flag: "--seccomp", example: ["--seccomp", "kill"] },
  { flag: "--announce-submounts", example: ["--announce-submounts"] },
  { flag: "--no-announce-submounts", example: ["--no-announce-submounts"] },
  { flag: "--inode-file-handles", example: ["--inode-file-handles=mandatory"] },
  { flag: "--cache", example: ["--cache", "never"] },
  { flag: "--allow-mmap", example: ["--allow-mmap"] },
  { flag: "--no-readdirplus", example: ["--no-readdirplus"] },
  { flag: "--writeback", example: ["--writeback"] },
  { flag: "--allow-direct-io", example: ["--allow-direct-io"] },
  { flag: "--print-capabilities", example: ["--print-capabilities"] },
  { flag: "--modcaps", example: ["--modcaps=+sys_admin:-chown"] },
  { flag: "--log-level", example: ["--log-level", "debug"] },
  { flag: "--syslog", example: ["--syslog"] },
  { flag: "--rlimit-nofile", example: ["--rlimit-nofile", "0"] },
  { flag: "-o", example: ["-o", "cache=auto"] },
  { flag: "-d", example: ["-d"] },
  { flag: "--no-killpriv-v2", example: ["--no-killpriv-v2"] },
  { flag: "--killpriv-v2", example: ["--killpriv-v2"] },
  { flag: "-f", example: ["-f"] },
  { flag: "--security-label", example: ["--security-label"] },
  { flag: "--uid-map", example: ["--uid-map=:0:100000:65536:"] },
  { flag: "--gid-map", example: ["--gid-map=:0:100000:65536:"] },
  { flag: "--translate-uid", example: ["--translate-uid", "map:0:1000:1"] },
  { flag: "--translate-gid", example: ["--translate-gid", "map:0:1000:1"] },
  { flag: "--preserve-noatime", example: ["--preserve-noatime"] },
  { flag: "--migration-mode", example: ["--migration-mode", "find-paths"] },
  { flag: "--migration-on-error", example: ["--migration-on-error", "abort"] },
  { flag: "--migration-verify-handles", example: ["--migration-verify-handles"] },
  { flag: "--migration-confirm-paths", example: ["--migration-confirm-paths"] },
  { flag: "-h", example: ["-h"] },
  { flag: "--help", example: ["--help"] },
  { flag: "-V", example: ["-V"] },
  { flag: "--version", example: ["--version"] },
];

/** Rust virtiofsd 1.14.0's `-o` options (its `parse_compat`). */
export const RUST_1_14_O_OPTIONS: readonly ReferenceFlag[] = [
  o("xattrmap=:map::user.virtiofs.:"),
  o("cache=metadata"),
  o("loglevel=warn"),
  o("sandbox=chroot"),
  o("source=/srv/share"),
  o("modcaps=+sys_admin"),
  o("xattr"),
  o("no_xattr"),
  o("readdirplus"),
  o("no_readdirplus"),
  o("writeback"),
  o("no_writeback"),
  o("allow_direct_io"),
  o("no_allow_direct_io"),
  o("announce_submounts"),
  o("killpriv_v2"),
  o("no_killpriv_v2"),
  o("posix_acl"),
  o("no_posix_acl"),
  o("security_label"),
  o("no_security_label"),
  o("no_posix_lock"),
  o("no_flock"),
];

/** C virtiofsd 7.2's flags (`virtiofsd --help`, and the hidden `--debug`). */
export const C_7_2_FLAGS: readonly ReferenceFlag[] = [
  { flag: "-h", example: ["-h"] },
  { flag: "--help", example: ["--help"] },
  { flag: "-V", example: ["-V"] },
  { flag: "--version", example: ["--version"] },
  { flag: "--print-capabilities", example: ["--print-capabilities"] },
  { flag: "-d", example: ["-d"] },
  { flag: "--debug", example: ["--debug"] },
  { flag: "--syslog", example: ["--syslog"] },
  { flag: "-f", example: ["-f"] },
  { flag: "--daemonize", example: ["--daemonize"] },
  { flag: "-o", example: ["-o", "source=/srv/share"] },
  { flag: "--rlimit-nofile", example: ["--rlimit-nofile=4096"] },
  { flag: "--socket-path", example: ["--socket-path=/run/vfsd.sock"] },
  { flag: "--socket-group", example: ["--socket-group=kvm"] },
  { flag: "--fd", example: ["--fd=3"] },
  { flag: "--thread-pool-size", example: ["--thread-pool-size=16"] },
];

/** C virtiofsd 7.2's `-o` options. */
export const C_7_2_O_OPTIONS: readonly ReferenceFlag[] = [
  o("debug"),
  o("cache=none"),
  o("flock"),
  o("no_flock"),
  o("log_level=err"),
  o("max_idle_threads=10"),
  o("posix_lock"),
  o("no_posix_lock"),
  o("readdirplus"),
  o("no_readdirplus"),
  o("sandbox=namespace"),
  o("timeout=0.5"),
  o("writeback"),
  o("no_writeback"),
  o("xattr"),
  o("no_xattr"),
  o("xattrmap=:map::user.virtiofs.:"),
  o("modcaps=+sys_admin:-chown"),
  o("allow_direct_io"),
  o("no_allow_direct_io"),
  o("announce_submounts"),
  o("posix_acl"),
  o("no_posix_acl"),
  o("security_label"),
  o("no_security_label"),
  o("killpriv_v2"),
  o("no_killpriv_v2"),
  o("source=/srv/share"),
  o("allow_root"),
];
