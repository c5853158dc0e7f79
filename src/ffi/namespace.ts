/**
 * What the sandbox needs from the kernel: joining a mount namespace, bind mounts, pivot_root,
 * the working directory, and descriptors handed on across exec. The calls throw `ErrnoError`
 * naming the call and its path (start-up code, not a hot path) except `fchdirRaw`.
 *
 * @module
 */
import { libc } from "./_libc.ts";
import { check, errno } from "./errno.ts";
import {
  AT_FDCWD,
  CLONE_NEWNS,
  F_GETFD,
  F_SETFD,
  FD_CLOEXEC,
  MNT_DETACH,
  MS_BIND,
  MS_REC,
  O_CLOEXEC,
  O_RDONLY,
} from "./constants.ts";
import { openat } from "./fs.ts";
import { cString } from "./pointers.ts";
import { SYSCALL_NUMBERS } from "./seccomp.ts";
import { close } from "./io.ts";

/** `fchdir(2)`. Returns 0 or `-errno`. */
export function fchdirRaw(fd: number): number {
  return libc.fchdir(fd) === -1 ? -errno() : 0;
}

/** `chdir(2)`. */
export function chdir(path: string): void {
  check(libc.chdir(cString(path)), "chdir", path);
}

/**
 * Moves the calling thread into the mount namespace `nsPath` names (`/proc/PID/ns/mnt`). The
 * thread must have its own fs_struct first (`unshare(CLONE_FS)`): Linux refuses a shared one.
 */
export function joinMountNamespace(nsPath: string): void {
  const fd = openat(AT_FDCWD, cString(nsPath), O_RDONLY | O_CLOEXEC);
  try {
    check(libc.setns(fd, CLONE_NEWNS), "setns", nsPath);
  } finally {
    close(fd);
  }
}

/** `mount(dir, dir, NULL, MS_BIND | MS_REC, NULL)`: makes `dir` a mount point of its own. */
export function bindOnItself(dir: string): void {
  const c = cString(dir);
  check(libc.mount(c, c, null, BigInt(MS_BIND | MS_REC), null), "mount", dir);
}

/**
 * Makes the working directory the root of the calling thread's mount namespace and detaches the
 * old root (`pivot_root(".", ".")`, then `umount2(".", MNT_DETACH)`). Every task of the
 * namespace whose root or working directory was the old root moves to the new one.
 */
export function pivotRootHere(): void {
  const dot = cString(".");
  check(
    Number(libc.syscall_pivot_root(BigInt(SYSCALL_NUMBERS.pivot_root ?? -1), dot, dot)),
    "pivot_root",
  );
  check(libc.umount2(dot, MNT_DETACH), "umount2", "the old root");
}

/** `chroot(2)`. */
export function chroot(path: string): void {
  check(libc.chroot(cString(path)), "chroot", path);
}

const LINUX_CAPABILITY_VERSION_3 = 0x20080522;

/**
 * Removes capability number `cap` from the calling thread's effective and permitted sets (Linux
 * keeps capabilities per thread: the others keep theirs).
 */
export function dropCapability(cap: number): void {
  const header = new Uint8Array(8);
  new DataView(header.buffer).setUint32(0, LINUX_CAPABILITY_VERSION_3, true);
  // Two struct __user_cap_data_struct { u32 effective, permitted, inheritable; }.
  const data = new Uint8Array(24);
  check(libc.capget(header, data), "capget");
  const v = new DataView(data.buffer);
  const at = cap < 32 ? 0 : 12;
  const bit = ~(1 << (cap % 32));
  v.setUint32(at, v.getUint32(at, true) & bit, true);
  v.setUint32(at + 4, v.getUint32(at + 4, true) & bit, true);
  check(libc.capset(header, data), "capset");
}

/** Clears FD_CLOEXEC on `fd`, so a program this process starts inherits it. */
export function inheritOnExec(fd: number): void {
  const flags = check(libc.fcntl(fd, F_GETFD, 0), "fcntl(F_GETFD)");
  check(libc.fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC), "fcntl(F_SETFD)");
}
