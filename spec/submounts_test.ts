/**
 * Spec: a share that spans several host file systems. Rust virtiofsd's `--announce-submounts`
 * (its default, and ours):
 *
 * > Tell the guest which directories are mount points
 *
 * and our claims (SUBMOUNTS-): each mount below the share is a submount in the guest, with a
 * device number of its own, so that no two files share (st_dev, st_ino); without submounts the
 * inode numbers still never collide (files of other host devices get mapped numbers, see
 * `src/filesystem/passthrough/inode_numbers.ts`); and syncfs(2) in the guest reaches the host
 * file system the file is on, with or without submounts.
 *
 * The collision is made certain: each share holds two fresh tmpfs (`tmpfs1`, `tmpfs2`), whose
 * files get the same host inode numbers (root 1, then 2, 3, ...). One Linux 6.1 guest under QEMU
 * 7.2 mounts every daemon's share at once (one device per daemon, one boot):
 *
 * - `ours`: our daemon as it starts by default (submounts announced);
 * - `ours-nosub`: ours with `--no-announce-submounts`;
 * - `c`: QEMU 7.2's C virtiofsd with `-o announce_submounts`;
 * - `rust`: Rust virtiofsd 1.13 as it starts by default (submounts announced);
 * - `c-nosub`, `rust-nosub`: C as it starts by default (no submounts), Rust with
 *   `--no-announce-submounts`. Their known departures, checked so that a change shows (observed
 *   with C 7.2 and Rust 1.13): the guest sees the host's numbers, so `tmpfs1/f` and `tmpfs2/f`
 *   (and the two roots, and `d`) are one (st_dev, st_ino); and SYNCFS of the root (the guest's
 *   only superblock) is one syncfs(2) of the share's own file system, never of the tmpfs.
 *
 * With submounts, all four daemons agree: each tmpfs is a `virtiofs` line of its own in the
 * guest's /proc/mounts, with its own st_dev, the host's inode numbers and the tmpfs' statfs; and
 * `sync -f` of a file in it makes the daemon call syncfs(2) on that tmpfs (the guest sends
 * SYNCFS with the submount root's nodeid).
 *
 * `DAEMONS` chooses among ours (two devices), c and rust (two each). SYNCFS is seen from the
 * host: `strace -f -y -e trace=syncfs` attached to each daemon shows which file system its
 * syncfs(2) calls reached (the step is skipped without strace). Needs root (mount(2)).
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type DaemonHandle,
  type DaemonKind,
  daemonsUnderTest,
  startDaemon,
} from "./_driver/daemon.ts";
import { QemuGuest } from "./_driver/qemu_guest.ts";

/** One device of the guest: a daemon serving its own share. */
interface Variant {
  /** The device's tag, and the guest's mount point `/mnt/TAG`. */
  tag: string;
  kind: DaemonKind;
  /** Arguments after the daemon's defaults. */
  args: string[];
  /** Whether the guest is to see submounts. */
  submounts: boolean;
  /**
   * A reference's known departure (checked, so that a change shows): without submounts, the
   * guest sees the host's numbers, and the two tmpfs' first files collide.
   */
  collides?: true;
  /** A reference's known departure: syncfs(2) never reaches the tmpfs. */
  syncsRootOnly?: true;
}

const ALL_VARIANTS: readonly Variant[] = [
  { tag: "ours", kind: "ours", args: [], submounts: true },
  { tag: "ours-nosub", kind: "ours", args: ["--no-announce-submounts"], submounts: false },
  { tag: "c", kind: "c", args: ["-o", "announce_submounts"], submounts: true },
  { tag: "rust", kind: "rust", args: [], submounts: true },
  { tag: "c-nosub", kind: "c", args: [], submounts: false, collides: true, syncsRootOnly: true },
  {
    tag: "rust-nosub",
    kind: "rust",
    args: ["--no-announce-submounts"],
    submounts: false,
    collides: true,
    syncsRootOnly: true,
  },
];

/** The host tmpfs mounted in each share. */
const TMPFS = ["tmpfs1", "tmpfs2"] as const;
/** The paths compared, files first (walking into a submount mounts it), then directories. */
const PATHS = ["top", "tmpfs1/f", "tmpfs2/f", "tmpfs1/d", "tmpfs2/d", ".", "tmpfs1", "tmpfs2"];

async function run(cmd: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

function hasCommand(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    try {
      if (Deno.statSync(join(dir, name)).isFile) return true;
    } catch { /* not here */ }
  }
  return false;
}

/** `pid` and every process below it (C virtiofsd serves from a child in its sandbox). */
function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    const p = out[i] as number;
    for (const task of Deno.readDirSync(`/proc/${p}/task`)) {
      let children = "";
      try {
        children = Deno.readTextFileSync(`/proc/${p}/task/${task.name}/children`);
      } catch { /* gone */ }
      for (const c of children.trim().split(/\s+/)) if (c !== "") out.push(Number(c));
    }
  }
  return out;
}

/** strace of syncfs(2) in a daemon's processes, every thread, descriptors shown as paths. */
class SyncfsTrace {
  readonly #child: Deno.ChildProcess;
  readonly #file: string;

  private constructor(child: Deno.ChildProcess, file: string) {
    this.#child = child;
    this.#file = file;
  }

  static async attach(pid: number, file: string): Promise<SyncfsTrace> {
    const tree = processTree(pid);
    const pids = tree.flatMap((p) => ["-p", String(p)]);
    const child = new Deno.Command("strace", {
      args: ["-f", "-y", "-e", "trace=syncfs", "-o", file, ...pids],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // strace reports each process it attaches to (all its threads) on stderr: wait for all.
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    const deadline = Date.now() + 10_000;
    while ([...text.matchAll(/attached/g)].length < tree.length) {
      const next = await Promise.race([
        reader.read(),
        new Promise<"late">((r) => setTimeout(() => r("late"), Math.max(0, deadline - Date.now()))),
      ]);
      if (next === "late" || next.done) {
        throw new Error(`strace did not attach to all of ${tree.join(", ")}:\n${text}`);
      }
      text += next.value;
    }
    // Keep draining its stderr, so that it never blocks on a full pipe.
    (async () => {
      while (!(await reader.read()).done) { /* discard */ }
    })().catch(() => {});
    return new SyncfsTrace(child, file);
  }

  /** Detaches; returns the syncfs(2) lines. */
  async stop(): Promise<string[]> {
    try {
      this.#child.kill("SIGINT");
    } catch { /* gone */ }
    await this.#child.status;
    return Deno.readTextFileSync(this.#file).split("\n").filter((l) => l.includes("syncfs("));
  }
}

/** `stat -c '%n %d %i'` of every path of PATHS below `/mnt/TAG`: path → "dev ino". */
async function guestIds(g: QemuGuest, tag: string): Promise<Map<string, string>> {
  const out = await g.shOk(`cd /mnt/${tag} && stat -c '%n %d %i' ${PATHS.join(" ")}`);
  return new Map(
    out.trim().split("\n").map((l) => {
      const [name, dev, ino] = l.split(" ");
      return [name ?? "", `${dev} ${ino}`];
    }),
  );
}

Deno.test({
  name: "SUBMOUNTS [guest] mounts below the share: distinct (st_dev, st_ino), submounts, SYNCFS",
  ignore: Deno.uid() !== 0,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const kinds = daemonsUnderTest();
    const variants = ALL_VARIANTS.filter((v) => kinds.includes(v.kind));
    const work = await Deno.makeTempDir({ prefix: "spec-submounts-" });
    const mounted: string[] = [];
    const daemons = new Map<string, DaemonHandle>();
    let g: QemuGuest | undefined;
    try {
      for (const v of variants) {
        const share = join(work, v.tag);
        await Deno.mkdir(share);
        await Deno.writeTextFile(join(share, "top"), "top\n");
        for (const m of TMPFS) {
          const dir = join(share, m);
          await Deno.mkdir(dir);
          await run("mount", "-t", "tmpfs", "-o", "size=8m,mode=755", "none", dir);
          mounted.push(dir);
          await Deno.writeTextFile(join(dir, "f"), `${m}\n`);
          await Deno.mkdir(join(dir, "d"));
        }
        daemons.set(v.tag, await startDaemon(v.kind, { sharedDir: share, extraArgs: v.args }));
      }
      const [first, ...more] = variants;
      assert.ok(first !== undefined, "DAEMONS names no daemon");
      g = await QemuGuest.boot({
        socketPath: daemons.get(first.tag)?.socketPath ?? "",
        tag: first.tag,
        extraQemuArgs: more.flatMap((v, i) => [
          ...["-chardev", `socket,id=sm${i},path=${daemons.get(v.tag)?.socketPath}`],
          ...["-device", `vhost-user-fs-pci,chardev=sm${i},tag=${v.tag},queue-size=1024`],
        ]),
      });
      const guest = g;
      for (const v of variants) {
        await guest.shOk(`mkdir -p /mnt/${v.tag} && mount -t virtiofs ${v.tag} /mnt/${v.tag}`);
      }

      await t.step(
        "SUBMOUNTS-0 on the host, the two tmpfs number their first file alike",
        async () => {
          for (const v of variants) {
            const a = await Deno.stat(join(work, v.tag, "tmpfs1", "f"));
            const b = await Deno.stat(join(work, v.tag, "tmpfs2", "f"));
            assert.equal(a.ino, b.ino, v.tag);
            assert.notEqual(a.dev, b.dev, v.tag);
          }
        },
      );

      await t.step("SUBMOUNTS-1 no two files share (st_dev, st_ino) in the guest", async () => {
        for (const v of variants) {
          assert.equal(
            await guest.shOk(`cat /mnt/${v.tag}/tmpfs1/f /mnt/${v.tag}/tmpfs2/f`),
            "tmpfs1\ntmpfs2\n",
          );
          const ids = await guestIds(guest, v.tag);
          const byId = new Map<string, string>();
          const same: string[] = [];
          for (const [path, id] of ids) {
            const other = byId.get(id);
            if (other !== undefined) same.push(`${path} and ${other} are both (${id})`);
            byId.set(id, path);
          }
          if (v.collides) {
            console.log(`${v.tag} (known departure): ${same.join("; ")}`);
            assert.ok(
              same.includes(`tmpfs2/f and tmpfs1/f are both (${ids.get("tmpfs1/f")})`),
              `${v.tag}: the departure is gone`,
            );
          } else {
            assert.deepEqual(same, [], v.tag);
          }
          const dev = (p: string): string => (ids.get(p) ?? "").split(" ")[0] ?? "";
          const ino = (p: string): string => (ids.get(p) ?? "").split(" ")[1] ?? "";
          if (v.submounts) {
            // Each tmpfs is a device of its own, and its files keep the host's numbers.
            assert.notEqual(dev("tmpfs1"), dev("."), v.tag);
            assert.notEqual(dev("tmpfs2"), dev("."), v.tag);
            assert.notEqual(dev("tmpfs1"), dev("tmpfs2"), v.tag);
            assert.equal(dev("tmpfs1/f"), dev("tmpfs1"), v.tag);
            assert.equal(dev("top"), dev("."), v.tag);
            const host = await Deno.stat(join(work, v.tag, "tmpfs1", "f"));
            assert.equal(ino("tmpfs1/f"), String(host.ino), `${v.tag}: the host's number`);
          } else {
            // One device; the tmpfs' files get numbers of their own.
            for (const p of PATHS) assert.equal(dev(p), dev("."), `${v.tag}: ${p}`);
          }
        }
      });

      await t.step("SUBMOUNTS-2 each tmpfs is a submount in the guest's /proc/mounts", async () => {
        const mounts = await guest.shOk("cat /proc/mounts");
        for (const v of variants) {
          for (const m of TMPFS) {
            const line = mounts.split("\n").find((l) => l.split(" ")[1] === `/mnt/${v.tag}/${m}`);
            if (v.submounts) {
              assert.ok(line !== undefined, `${v.tag}: no submount at /mnt/${v.tag}/${m}`);
              assert.equal(line.split(" ")[2], "virtiofs", line);
            } else {
              assert.equal(line, undefined, `${v.tag}: a submount at /mnt/${v.tag}/${m}`);
            }
          }
        }
        // A submount is a file system of its own: statfs sees the 8 MiB tmpfs.
        for (const v of variants) {
          assert.equal(await guest.shOk(`stat -f -c '%b %S' /mnt/${v.tag}/tmpfs1`), "2048 4096\n");
        }
      });

      await t.step({
        name: "SUBMOUNTS-3 syncfs of a file in a tmpfs reaches that tmpfs on the host",
        ignore: !hasCommand("strace"),
        async fn() {
          const traces = new Map<string, SyncfsTrace>();
          try {
            for (const v of variants) {
              const d = daemons.get(v.tag) as DaemonHandle;
              traces.set(v.tag, await SyncfsTrace.attach(d.pid, join(work, `${v.tag}.strace`)));
            }
            for (const v of variants) {
              await guest.shOk(
                `echo more >> /mnt/${v.tag}/tmpfs1/f && sync -f /mnt/${v.tag}/tmpfs1/f`,
              );
            }
          } finally {
            const lines = new Map<string, string[]>();
            for (const [tag, tr] of traces) lines.set(tag, await tr.stop());
            for (const v of variants) {
              const l = (lines.get(v.tag) ?? []).map((s) => s.replace(/^\d+\s+/, ""));
              console.log(`${v.tag}: ${l.length} syncfs(2): ${l.join("; ")}`);
            }
            for (const v of variants) {
              const l = lines.get(v.tag) ?? [];
              const reached = l.some((s) =>
                /syncfs\(\d+<[^>]*\/tmpfs1(\/[^>]*)?>\)\s*=\s*0/.test(s)
              );
              assert.equal(reached, !v.syncsRootOnly, `${v.tag}: ${JSON.stringify(l)}`);
            }
          }
        },
      });

      for (const v of variants) await guest.shOk(`umount -R /mnt/${v.tag}`);
    } finally {
      await g?.shutdown();
      for (const d of daemons.values()) await d.stop();
      for (const m of mounted.reverse()) await run("umount", m).catch((e) => console.error(e));
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
