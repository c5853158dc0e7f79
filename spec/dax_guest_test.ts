/**
 * Spec: DAX in a real guest — the design's DAX paragraph, as a Linux 6.1 guest sees it through
 * QEMU 11.1's generic vhost-user device (`vhost-user-test-device-pci`, virtio-id 26), which takes
 * our daemon's cache window:
 *
 * > - For data access inside guest, mmap portion of file in QEMU address space
 * > and guest accesses this memory using dax. That way guest page cache is
 * > bypassed and there is only one copy of data (on host). This will also
 * > enable mmap(MAP_SHARED) between guests.
 *
 * > DAX allows file contents to be accessed without communication with the
 * > hypervisor. [...]
 *
 * The design chosen (README, "DAX"): a plain mount on a device with a window is inode mode; the
 * daemon marks FUSE_ATTR_DAX on a regular file whose size, at the first attributes the guest
 * gets, is a non-zero multiple of 2 MiB (QEMU maps nothing past a file's end, and the guest asks
 * whole 2 MiB ranges), and keeps that decision while the guest knows the node. Every other file
 * is served through FUSE_READ/WRITE. A DAX file that grows to a partial last range gets EIO for
 * that range until the guest forgets the node.
 *
 * - DAX-1 DAX-2: files of 0, 20 bytes, 4 KiB, 3 MiB + 5, 4 MiB, 64 MiB and 1 GiB read back with
 *   the host's MD5; exactly the whole-range ones are DAX in the guest (statx STATX_ATTR_DAX).
 * - DAX-5: reading the 64 MiB file sends no FUSE_READ (the daemon's trace of that step), only
 *   SETUPMAPPINGs.
 * - DAX-3: with `--cache always`, a host write(2) into a DAX file is seen at once by a guest read
 *   (the same write into a non-DAX file is not: the guest keeps its cached page); a guest store
 *   is seen by a host read(2) at once.
 * - WB-DAX-1: with `--writeback`, a store through the window is on the host at once, and sends
 *   no FUSE_WRITE.
 * - DAX-4: two guests, each with its own daemon on one directory, mmap(MAP_SHARED) one file and
 *   see each other's stores.
 * - DAX-GROW: a DAX file grown by 5 bytes from the host and from the guest: its tail reads EIO
 *   (never zeros) while the guest knows the node, and the right bytes once it forgot it; renames
 *   and unlinks (EBUSY while the guest has the file open: a Linux 6.1 guest would hang closing it);
 *   a host truncation of a mapped file: what the guest sees, and the VM lives.
 * - DAX-7: started with `--tag` and `--cache-size`, the daemon still serves QEMU 7.2's and QEMU
 *   11.1's `vhost-user-fs-pci` (neither has a window: the guest logs "No cache capability" and
 *   refuses `-o dax`), and a plain mount works both ways; 11.1's generic device takes the window
 *   (GET_SHMEM_CONFIG) and its tag and queues from the configuration space (GET_CONFIG).
 *
 * QEMU 11.1 comes from Debian sid, unpacked privately by `scripts/setup.ts` (`scripts/qemu_sid.ts`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { pattern } from "./_driver/pattern.ts";
import { type DaemonHandle, startDaemon } from "./_driver/daemon.ts";
import {
  DAX_TAG,
  type PlainMountObservation,
  plainMountWithWindow,
  WINDOW_BOOT,
  windowArgs,
} from "./_driver/dax_guest.ts";
import { QemuGuest } from "./_driver/qemu_guest.ts";
import { qemuSidCommand } from "../scripts/setup.ts";

const MiB = 1 << 20;
const GiB = 1024 * MiB;
/** A guest command that reads a lot under TCG. */
const LONG = { timeoutMs: 300_000 };

function explain(o: PlainMountObservation): string {
  return `error: ${o.error ?? "none"}\nvirtiofs: ${
    o.virtiofsLog.join(" | ")
  }\nmount: ${o.mountOut}\n` +
    `qemu: ${o.qemuStderr}\ndaemon:\n${o.daemonLog}\nconsole:\n${o.consoleTail}`;
}

for (const qemu of ["7.2", "11"] as const) {
  Deno.test(`DAX-7 QEMU ${qemu}'s vhost-user-fs-pci with a daemon offering a window: no window in the guest, and a plain mount works both ways`, async () => {
    const o = await plainMountWithWindow(qemu, "vhost-user-fs-pci");
    assert.equal(o.error, undefined, explain(o));
    assert.ok(o.noCacheCapability, `the guest found no window\n${explain(o)}`);
    assert.ok(o.mounted, explain(o));
    assert.ok(o.hostToGuest, `host to guest\n${explain(o)}`);
    assert.ok(o.guestToHost, `guest to host\n${explain(o)}`);
    assert.equal(o.dax?.accepted, false, "mount -o dax is refused without a window");
    assert.equal(o.daemonExit?.code, 0, explain(o));
  });
}

Deno.test("DAX-7 QEMU 11.1's generic vhost-user device takes the window and the tag from the daemon; a plain mount works both ways", async () => {
  const o = await plainMountWithWindow("11", "generic", { daxIo: false, requestQueues: 2 });
  // Which QEMU ran (setup takes the newest sid offers, at least 11.1).
  console.log(`QEMU from sid: ${qemuSidCommand().versionLine}`);
  assert.equal(o.error, undefined, explain(o));
  assert.equal(o.cacheLen, 64 * MiB, `the guest's virtiofs logs the window\n${explain(o)}`);
  assert.equal(o.noCacheCapability, false);
  assert.ok(o.mounted, explain(o));
  assert.ok(o.hostToGuest, `host to guest\n${explain(o)}`);
  assert.ok(o.guestToHost, `guest to host\n${explain(o)}`);
  assert.equal(o.daemonExit?.code, 0, explain(o));
});

// ---------------------------------------------------------------------------------------------
// DAX through the window, in a guest on QEMU 11.1's generic device.

/** The files every guest run starts with: name → size. The whole-range ones are DAX. */
const FILES: Record<string, number> = {
  empty: 0,
  twenty: 20,
  page: 4096,
  tail: 3 * MiB + 5,
  four: 4 * MiB,
  big: 64 * MiB,
};
const DAX_FILES = ["four", "big"];

/** Writes FILES (and, with `huge`, a 1 GiB file in 1 MiB chunks) into `dir`. */
function makeFiles(dir: string, huge = false): void {
  for (const [name, size] of Object.entries(FILES)) {
    Deno.writeFileSync(join(dir, name), pattern(size, size % 251));
  }
  if (huge) {
    const chunk = pattern(MiB, 7);
    const f = Deno.openSync(join(dir, "huge"), { write: true, create: true });
    try {
      for (let i = 0; i < GiB / MiB; i++) {
        new DataView(chunk.buffer).setUint32(0, i, true); // every chunk differs
        f.writeSync(chunk);
      }
    } finally {
      f.close();
    }
  }
}

function hostMd5(path: string): string {
  const h = createHash("md5");
  const f = Deno.openSync(path);
  try {
    const buf = new Uint8Array(8 * MiB);
    for (;;) {
      const n = f.readSync(buf);
      if (n === null) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    f.close();
  }
  return h.digest("hex");
}

/** A guest command running the Python program `code` (passed base64: no shell quoting). */
function py(code: string, args = ""): string {
  const b64 = btoa(code);
  return `python3 -c "import base64;exec(base64.b64decode('${b64}'))" ${args}`;
}

/** Prints `name dax` per file named in argv, from statx's STATX_ATTR_DAX (bit 21). */
const STATX_DAX = [
  "import ctypes, sys",
  "libc = ctypes.CDLL(None, use_errno=True)",
  "b = ctypes.create_string_buffer(256)",
  "for n in sys.argv[1:]:",
  "    r = libc.syscall(332, -100, n.encode(), 0, 0x7ff, b)",
  '    print(n, (int.from_bytes(b.raw[8:16], "little") >> 21) & 1 if r == 0 else "err")',
].join("\n");

/** Our daemon with a 64 MiB window over `dir`, tracing every request (`more` flags after). */
function startWindowed(dir: string, more: string[] = []): Promise<DaemonHandle> {
  return startDaemon("ours", {
    sharedDir: dir,
    extraArgs: [...windowArgs(DAX_TAG), "--log-level", "trace", ...more],
  });
}

function bootWindowed(d: DaemonHandle): Promise<QemuGuest> {
  return QemuGuest.boot({
    socketPath: d.socketPath,
    tag: DAX_TAG,
    memoryMiB: 1024,
    ...WINDOW_BOOT,
  });
}

/** The requests the daemon traced while `step` ran in the guest: opcode name → count. */
async function traced(d: DaemonHandle, step: () => Promise<unknown>): Promise<Map<string, number>> {
  const before = d.stderrText().length;
  await step();
  await new Promise((r) => setTimeout(r, 300)); // the daemon's last log lines
  const counts = new Map<string, number>();
  for (const m of d.stderrText().slice(before).matchAll(/TRACE\] ([A-Z_]+)\(\d+\) unique/g)) {
    const op = m[1] as string;
    counts.set(op, (counts.get(op) ?? 0) + 1);
  }
  return counts;
}

/** `cmd` in the guest must succeed; its output. */
async function ok(g: QemuGuest, cmd: string, opts = { timeoutMs: 60_000 }): Promise<string> {
  const r = await g.sh(cmd, opts);
  assert.equal(r.status, 0, `guest: ${cmd}\n${r.out}`);
  return r.out;
}

/** Stops the guest and the daemon; returns the daemon's log. */
async function finish(g: QemuGuest | undefined, d: DaemonHandle): Promise<string> {
  await g?.shutdown({ timeoutMs: 60_000 });
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([d.exited, new Promise((r) => timer = setTimeout(r, 5_000))]);
  clearTimeout(timer);
  const log = d.stderrText();
  await d.stop();
  return log;
}

Deno.test("DAX-1 DAX-2 DAX-5 DAX-3 WB-DAX-1 [guest, QEMU 11.1 generic device] files of every size read right, whole-range files through the window with no FUSE_READ, host and guest see each other's writes at once", async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "dax-guest-" });
  makeFiles(dir, true);
  const d = await startWindowed(dir, ["--cache", "always", "--writeback"]);
  let g: QemuGuest | undefined;
  try {
    g = await bootWindowed(d);
    const guest = g;
    await ok(guest, `mount -t virtiofs ${DAX_TAG} /mnt && grep ' /mnt ' /proc/mounts`);

    await t.step(
      "DAX-5 reading the 64 MiB file sends no FUSE_READ, only SETUPMAPPINGs",
      async () => {
        let sum = "";
        const ops = await traced(d, async () => {
          sum = (await ok(guest, "md5sum /mnt/big", LONG)).split(" ")[0] as string;
        });
        assert.equal(sum, hostMd5(join(dir, "big")));
        assert.equal(ops.get("READ") ?? 0, 0, `requests: ${[...ops]}`);
        assert.ok((ops.get("SETUPMAPPING") ?? 0) >= 32, `requests: ${[...ops]}`);
      },
    );

    await t.step(
      "DAX-1 DAX-2 every size reads back with the host's MD5; the whole-range files are DAX",
      async () => {
        const names = [...Object.keys(FILES), "huge"];
        const out = await ok(guest, `cd /mnt && md5sum ${names.join(" ")}`, LONG);
        for (const name of names) {
          const line = out.split("\n").find((l) => l.trim().endsWith(` ${name}`));
          assert.equal(line?.split(" ")[0], hostMd5(join(dir, name)), `${name}\n${out}`);
        }
        const dax = await ok(guest, `cd /mnt && ${py(STATX_DAX, names.join(" "))}`);
        for (const name of names) {
          const want = [...DAX_FILES, "huge"].includes(name) ? "1" : "0";
          assert.match(dax, new RegExp(`^${name} ${want}$`, "m"), `statx DAX of ${name}\n${dax}`);
        }
      },
    );

    await t.step(
      "DAX-3 a host write(2) is seen at once through the window (cache=always keeps a FUSE file's old page)",
      async () => {
        const poke = (name: string, at: number, text: string) => {
          const f = Deno.openSync(join(dir, name), { write: true });
          try {
            f.seekSync(at, Deno.SeekMode.Start);
            f.writeSync(new TextEncoder().encode(text));
          } finally {
            f.close();
          }
        };
        poke("four", MiB, "host-wrote-this");
        poke("tail", MiB, "host-wrote-this");
        const four = await ok(guest, `dd if=/mnt/four bs=1 skip=${MiB} count=15 2>/dev/null`);
        assert.equal(four, "host-wrote-this", "the DAX file shows the host's write at once");
        const tail = await ok(guest, `dd if=/mnt/tail bs=1 skip=${MiB} count=15 2>/dev/null`);
        assert.notEqual(tail, "host-wrote-this", "the FUSE file keeps its cached page");
      },
    );

    await t.step(
      "DAX-3 WB-DAX-1 a guest store through the window is in the host file at once, with no FUSE_WRITE (--writeback on)",
      async () => {
        const ops = await traced(d, async () => {
          await ok(
            guest,
            `printf guest-wrote-this | dd of=/mnt/four bs=1 seek=${
              2 * MiB
            } conv=notrunc 2>/dev/null`,
          );
          // Read on the host while the guest has not synced, closed or unmounted anything since.
          const f = Deno.openSync(join(dir, "four"));
          try {
            const b = new Uint8Array(16);
            f.seekSync(2 * MiB, Deno.SeekMode.Start);
            f.readSync(b);
            assert.equal(new TextDecoder().decode(b), "guest-wrote-this");
          } finally {
            f.close();
          }
        });
        assert.ok((ops.get("OPEN") ?? 0) >= 1, `the step's requests were traced: ${[...ops]}`);
        assert.equal(ops.get("WRITE") ?? 0, 0, `requests: ${[...ops]}`);
      },
    );
  } finally {
    const log = await finish(g, d);
    console.log(log.split("\n").filter((l) => /\] (requests|DAX):/.test(l)).join("\n"));
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("DAX-GROW [guest, QEMU 11.1 generic device] growth, renames, unlinks and host truncation of DAX files: the right bytes or EIO, never zeros, and the VM lives", async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "dax-grow-" });
  makeFiles(dir);
  Deno.copyFileSync(join(dir, "four"), join(dir, "four2"));
  Deno.copyFileSync(join(dir, "big"), join(dir, "big2"));
  const d = await startWindowed(dir);
  let g: QemuGuest | undefined;
  try {
    g = await bootWindowed(d);
    const guest = g;
    await ok(guest, `mount -t virtiofs ${DAX_TAG} /mnt`);
    await ok(guest, "cd /mnt && md5sum four four2 big big2 >/dev/null"); // mapped now
    /** The last `n` bytes of `name` in the guest, as hex, or the error. */
    const tailOf = async (name: string, n: number) => {
      const r = await guest.sh(`tail -c ${n} /mnt/${name} | od -An -tx1 | tr -d ' \\n'`);
      return r.out.trim();
    };
    const hostTail = (name: string, n: number) => {
      const b = Deno.readFileSync(join(dir, name));
      return [...b.subarray(b.length - n)].map((x) => x.toString(16).padStart(2, "0")).join("");
    };
    const forget = () => ok(guest, "sync; echo 2 > /proc/sys/vm/drop_caches");

    await t.step(
      "grown by 5 bytes from the host: EIO for the new tail while known, the right bytes once forgotten",
      async () => {
        const f = Deno.openSync(join(dir, "four"), { append: true });
        f.writeSync(new TextEncoder().encode("HOST5"));
        f.close();
        await new Promise((r) => setTimeout(r, 1_200)); // cache=auto: the guest's size is 1 s old
        const seen = await guest.sh("tail -c 5 /mnt/four");
        assert.ok(
          seen.out === "HOST5" || /Input\/output error/.test(seen.out),
          `the tail is right or EIO, never zeros: ${JSON.stringify(seen.out)}`,
        );
        await forget();
        assert.equal(await tailOf("four", 5), hostTail("four", 5));
        assert.equal(
          (await ok(guest, "md5sum /mnt/four")).split(" ")[0],
          hostMd5(join(dir, "four")),
        );
      },
    );

    await t.step("grown by 5 bytes from the guest: the same", async () => {
      await ok(guest, "printf GUES5 >> /mnt/four2");
      assert.equal(Deno.statSync(join(dir, "four2")).size, 4 * MiB + 5);
      const seen = await guest.sh("tail -c 5 /mnt/four2");
      console.log(`  guest growth, tail while known: ${JSON.stringify(seen.out)}`);
      assert.ok(
        seen.out === "GUES5" || /Input\/output error/.test(seen.out),
        `the tail is right or EIO, never zeros: ${JSON.stringify(seen.out)}`,
      );
      await forget();
      assert.equal(await tailOf("four2", 5), hostTail("four2", 5));
    });

    await t.step("renamed and unlinked in the guest and on the host", async () => {
      await ok(guest, "mv /mnt/big2 /mnt/big3");
      assert.equal(
        (await ok(guest, "md5sum /mnt/big3", LONG)).split(" ")[0],
        hostMd5(join(dir, "big3")),
      );
      Deno.renameSync(join(dir, "big3"), join(dir, "big4"));
      assert.equal(
        (await ok(guest, "md5sum /mnt/big4", LONG)).split(" ")[0],
        hostMd5(join(dir, "big4")),
      );
      // Open in the guest: EBUSY (deleting it would hang the guest when it closes it after a
      // read through the window); once closed, it goes.
      const busy = await guest.sh(
        "exec 3</mnt/big4; md5sum /mnt/big4 >/dev/null; rm /mnt/big4; echo rm=$?; exec 3<&-",
        LONG,
      );
      assert.match(busy.out, /Device or resource busy[\s\S]*rm=1/, busy.out);
      await ok(guest, "rm /mnt/big4");
      assert.throws(() => Deno.statSync(join(dir, "big4")));
      Deno.removeSync(join(dir, "four2"));
      const gone = await guest.sh("cat /mnt/four2 >/dev/null");
      assert.match(gone.out, /No such file/);
    });

    await t.step(
      "truncated on the host while mapped: after its attribute timeout the guest reads the shorter file right",
      async () => {
        // The guest has `big` mapped (read above). Its pages past the new end are gone: a guest
        // access there before it learns the new size would fault in QEMU (SIGBUS kills the VM);
        // the daemon cannot prevent that (README: DAX, host truncation).
        await ok(guest, "md5sum /mnt/big >/dev/null", LONG); // its ranges mapped again
        Deno.truncateSync(join(dir, "big"), 2 * MiB);
        await new Promise((r) => setTimeout(r, 1_200));
        const sum = (await ok(guest, "stat -c %s /mnt/big && md5sum /mnt/big")).trim().split("\n");
        assert.equal(sum[0], String(2 * MiB));
        assert.equal(sum[1]?.split(" ")[0], hostMd5(join(dir, "big")));
        assert.equal(await ok(guest, "echo alive"), "alive\n");
      },
    );
  } finally {
    const log = await finish(g, d);
    console.log(log.split("\n").filter((l) => /\] (requests|DAX):/.test(l)).join("\n"));
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("DAX-4 [guest, QEMU 11.1 generic device] two guests, each with its own daemon on one directory, mmap(MAP_SHARED) one file and see each other's stores", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "dax-two-" });
  makeFiles(dir);
  const daemons = [await startWindowed(dir), await startWindowed(dir)];
  const guests: QemuGuest[] = [];
  try {
    guests.push(...await Promise.all(daemons.map(bootWindowed)));
    for (const g of guests) await ok(g, `mount -t virtiofs ${DAX_TAG} /mnt`);
    // Each guest stores its mark into the shared mapping, then waits for the other's.
    const script = (me: string, other: string, mine: number, theirs: number) =>
      py([
        "import mmap, os, time",
        'f = os.open("/mnt/four", os.O_RDWR)',
        "m = mmap.mmap(f, 4 << 20, mmap.MAP_SHARED)",
        `m[${mine}:${mine + me.length}] = b"${me}"`,
        "t = time.time()",
        `while m[${theirs}:${theirs + other.length}] != b"${other}" and time.time() - t < 60:`,
        "    time.sleep(0.01)",
        `print(m[${theirs}:${theirs + other.length}].decode("latin1"))`,
      ].join("\n"));
    const [ga, gb] = guests as [QemuGuest, QemuGuest];
    const [a, b] = await Promise.all([
      ga.sh(script("guest-A", "guest-B", 3 * MiB, 3 * MiB + 4096), LONG),
      gb.sh(script("guest-B", "guest-A", 3 * MiB + 4096, 3 * MiB), LONG),
    ]);
    assert.equal(a.out.trim(), "guest-B", a.out);
    assert.equal(b.out.trim(), "guest-A", b.out);
    const onHost = Deno.readFileSync(join(dir, "four"));
    assert.equal(new TextDecoder().decode(onHost.subarray(3 * MiB, 3 * MiB + 7)), "guest-A");
  } finally {
    for (const [i, d] of daemons.entries()) {
      const log = await finish(guests[i], d);
      console.log(log.split("\n").filter((l) => /\] DAX:/.test(l)).join("\n"));
    }
    Deno.removeSync(dir, { recursive: true });
  }
});
