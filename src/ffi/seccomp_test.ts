import assert from "node:assert/strict";
import { seccompProgram, SYSCALL_NUMBERS } from "./seccomp.ts";

/** Runs a filter of the four instructions `seccompProgram` uses on (arch, nr). */
function run(prog: Uint8Array, arch: number, nr: number): number {
  const v = new DataView(prog.buffer, prog.byteOffset, prog.byteLength);
  let a = 0;
  for (let pc = 0; pc * 8 < prog.byteLength;) {
    const code = v.getUint16(pc * 8, true);
    const jt = v.getUint8(pc * 8 + 2);
    const jf = v.getUint8(pc * 8 + 3);
    const k = v.getUint32(pc * 8 + 4, true);
    if (code === 0x20) {
      a = k === 4 ? arch : k === 0 ? nr : assert.fail(`load at ${k}`);
      pc++;
    } else if (code === 0x15) pc += 1 + (a === k ? jt : jf);
    else if (code === 0x35) pc += 1 + (a >>> 0 >= k ? jt : jf);
    else if (code === 0x06) return k;
    else assert.fail(`opcode ${code}`);
  }
  return assert.fail("ran off the end");
}

const X86_64 = 0xc000003e;
const ALLOW = 0x7fff0000;

Deno.test("seccompProgram(): the listed calls are allowed, the others get the action; other ABIs are killed", () => {
  const allowed = ["read", "write", "futex", "exit_group", "statx", "clone3"];
  for (
    const [action, ret] of [["kill", 0x80000000], ["log", 0x7ffc0000], ["trap", 0x30000]] as const
  ) {
    const prog = seccompProgram(allowed, action);
    for (const name of allowed) {
      assert.equal(run(prog, X86_64, SYSCALL_NUMBERS[name] ?? -1), ALLOW, name);
    }
    for (const nr of [SYSCALL_NUMBERS.personality ?? -1, 2, 59, 165, 999]) {
      assert.equal(run(prog, X86_64, nr), ret, `${action} ${nr}`);
    }
    // The x32 ABI's read, and i386's: never allowed.
    assert.equal(run(prog, X86_64, 0x40000000), ret);
    assert.equal(run(prog, 0x40000003, 0), 0x80000000);
  }
  assert.throws(() => seccompProgram(["read", "no_such_call"], "kill"), /no_such_call/);
});

Deno.test("seccompProgram(): refused calls fail with the errno, the others are as before", () => {
  const allowed = ["read", "write", "futex", "exit_group", "statx", "clone3"];
  // "read" in both lists stays allowed.
  const refused = ["socket", "connect", "read"];
  const ERRNO_EACCES = 0x00050000 | 13;
  const prog = seccompProgram(allowed, "kill", refused);
  for (const name of allowed) assert.equal(run(prog, X86_64, SYSCALL_NUMBERS[name] ?? -1), ALLOW);
  assert.equal(run(prog, X86_64, SYSCALL_NUMBERS.socket ?? -1), ERRNO_EACCES);
  assert.equal(run(prog, X86_64, SYSCALL_NUMBERS.connect ?? -1), ERRNO_EACCES);
  for (const nr of [SYSCALL_NUMBERS.personality ?? -1, 2, 59, 165, 999, 0x40000029]) {
    assert.equal(run(prog, X86_64, nr), 0x80000000, `${nr}`);
  }
  assert.equal(run(seccompProgram(allowed, "log", ["socket"], 1), X86_64, 41), 0x00050001);
});

Deno.test("SYSCALL_NUMBERS are the kernel's x86-64 numbers (asm/unistd_64.h, where installed)", () => {
  // Some of syscall_64.tbl, whatever is installed.
  const anchors = {
    read: 0,
    personality: 135,
    openat: 257,
    statx: 332,
    clone3: 435,
    faccessat2: 439,
  };
  for (const [name, nr] of Object.entries(anchors)) assert.equal(SYSCALL_NUMBERS[name], nr, name);
  let header = "";
  try {
    header = Deno.readTextFileSync("/usr/include/x86_64-linux-gnu/asm/unistd_64.h");
  } catch { /* linux-libc-dev is not installed: the anchors must do */ }
  const kernel = new Map<string, number>();
  for (const m of header.matchAll(/#define __NR_(\w+) (\d+)/g)) {
    kernel.set(m[1] ?? "", Number(m[2]));
  }
  if (kernel.size === 0) return;
  // Calls newer than the installed headers (bookworm's 6.1 has no getxattrat) must lie past them.
  const newest = Math.max(...kernel.values());
  for (const [name, nr] of Object.entries(SYSCALL_NUMBERS)) {
    if (kernel.has(name)) assert.equal(nr, kernel.get(name), name);
    else assert.ok(nr > newest, `${name} (${nr}) is missing from the installed header`);
  }
});
