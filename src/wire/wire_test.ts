/**
 * src/wire against the kernel's own headers: every FUSE constant and struct layout of `fuse.ts`
 * and the split ring and virtio-fs layouts of `virtio.ts` are compared with what the C compiler
 * makes of Linux's <linux/fuse.h>, <linux/virtio_ring.h> and <linux/virtio_fs.h> (Debian's
 * linux-libc-dev). A value typed wrong here would otherwise be written and read back with the
 * same wrong offset by both our device and our driver, and no other test would notice.
 *
 * vhost-user has no system header (its numbers are QEMU's docs/interop/vhost-user.rst); those are
 * pinned by the control-plane specs against QEMU and the reference daemons.
 */
import assert from "node:assert/strict";
import * as F from "./fuse.ts";
import * as V from "./virtio.ts";

const HEADERS = ["/usr/include/linux/fuse.h", "/usr/include/linux/virtio_ring.h"];

/** A layout object of fuse.ts whose struct is not `fuse_<lower-case name>`. */
const STRUCT_OF: Record<string, string> = {
  ATTR: "fuse_attr",
  KSTATFS: "fuse_kstatfs",
  DIRENT: "fuse_dirent",
  DIRENTPLUS: "fuse_direntplus",
};
/** A field whose C name is not the snake_case of ours. */
const FIELD_OF: Record<string, string> = { sizeField: "size", entry: "entry_out" };
/** Fields of ours that are sizes or positions, not members: their C expression. */
const EXPR_OF: Record<string, string> = {
  "SETXATTR_IN.compatSize": "FUSE_COMPAT_SETXATTR_IN_SIZE",
  // fuse_init_in before 7.36 ended where flags2 now starts.
  "INIT_IN.compatSize": "offsetof(struct fuse_init_in, flags2)",
};

function snake(s: string): string {
  return s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** The members of `struct name { ... }` in `text`, or undefined. */
function structMembers(text: string, name: string): Set<string> | undefined {
  const m = text.match(new RegExp(`struct ${name} \\{([^}]*)\\}`));
  if (m === null) return undefined;
  const body = (m[1] ?? "").replace(/\/\*[\s\S]*?\*\//g, "");
  const names = new Set<string>();
  for (const decl of body.split(";")) {
    const w = decl.trim().match(/(\w+)\s*(\[[^\]]*\])?\s*$/);
    if (w !== null && w[1] !== undefined) names.add(w[1]);
  }
  return names;
}

/** Names `#define`d or enumerated in `text`. */
function cNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/^#define\s+(\w+)\s/gm)) names.add(m[1] ?? "");
  for (const e of text.matchAll(/enum \w+ \{([^}]*)\}/g)) {
    for (const m of (e[1] ?? "").matchAll(/^\s*(\w+)\s*=/gm)) names.add(m[1] ?? "");
  }
  return names;
}

interface Check {
  /** What is printed by the C program and looked up in `ours`. */
  key: string;
  /** The C expression. */
  expr: string;
  /** Our value. */
  ours: number | bigint;
}

function fuseChecks(header: string): { checks: Check[]; unmapped: string[] } {
  const checks: Check[] = [];
  const unmapped: string[] = [];
  const names = cNames(header);
  for (const [name, value] of Object.entries(F)) {
    if (typeof value === "number" || typeof value === "bigint") {
      if (names.has(name)) checks.push({ key: name, expr: `(long long)(${name})`, ours: value });
      continue;
    }
    if (typeof value !== "object" || value === null || !("size" in value)) continue;
    const struct = STRUCT_OF[name] ?? `fuse_${name.toLowerCase()}`;
    const members = structMembers(header, struct);
    if (members === undefined) {
      unmapped.push(`${name}: no struct ${struct}`);
      continue;
    }
    for (const [field, off] of Object.entries(value as Record<string, number>)) {
      if (field === "size") {
        checks.push({ key: `${name}.size`, expr: `sizeof(struct ${struct})`, ours: off });
        continue;
      }
      const expr = EXPR_OF[`${name}.${field}`];
      if (expr !== undefined) {
        checks.push({ key: `${name}.${field}`, expr, ours: off });
        continue;
      }
      const c = FIELD_OF[field] ?? snake(field);
      if (!members.has(c)) {
        unmapped.push(`${name}.${field}: no member ${c} in struct ${struct}`);
        continue;
      }
      checks.push({ key: `${name}.${field}`, expr: `offsetof(struct ${struct}, ${c})`, ours: off });
    }
  }
  return { checks, unmapped };
}

/** The virtio checks: our names are the virtio spec's, Linux's are VRING_*. */
const VIRTIO_CHECKS: readonly Check[] = [
  { key: "VIRTQ_DESC_F_NEXT", expr: "VRING_DESC_F_NEXT", ours: V.VIRTQ_DESC_F_NEXT },
  { key: "VIRTQ_DESC_F_WRITE", expr: "VRING_DESC_F_WRITE", ours: V.VIRTQ_DESC_F_WRITE },
  { key: "VIRTQ_DESC_F_INDIRECT", expr: "VRING_DESC_F_INDIRECT", ours: V.VIRTQ_DESC_F_INDIRECT },
  {
    key: "VRING_AVAIL_F_NO_INTERRUPT",
    expr: "VRING_AVAIL_F_NO_INTERRUPT",
    ours: V.VRING_AVAIL_F_NO_INTERRUPT,
  },
  { key: "VRING_USED_F_NO_NOTIFY", expr: "VRING_USED_F_NO_NOTIFY", ours: V.VRING_USED_F_NO_NOTIFY },
  {
    key: "VIRTIO_RING_F_INDIRECT_DESC",
    expr: "VIRTIO_RING_F_INDIRECT_DESC",
    ours: V.VIRTIO_RING_F_INDIRECT_DESC,
  },
  {
    key: "VIRTIO_RING_F_EVENT_IDX",
    expr: "VIRTIO_RING_F_EVENT_IDX",
    ours: V.VIRTIO_RING_F_EVENT_IDX,
  },
  {
    key: "VIRTIO_F_NOTIFY_ON_EMPTY",
    expr: "VIRTIO_F_NOTIFY_ON_EMPTY",
    ours: V.VIRTIO_F_NOTIFY_ON_EMPTY,
  },
  { key: "VIRTIO_F_VERSION_1", expr: "VIRTIO_F_VERSION_1", ours: V.VIRTIO_F_VERSION_1 },
  { key: "VIRTIO_ID_FS", expr: "VIRTIO_ID_FS", ours: V.VIRTIO_ID_FS },
  {
    key: "VIRTIO_FS_SHMCAP_ID_CACHE",
    expr: "VIRTIO_FS_SHMCAP_ID_CACHE",
    ours: V.VIRTIO_FS_SHMCAP_ID_CACHE,
  },
  { key: "VIRTQ_DESC.size", expr: "sizeof(struct vring_desc)", ours: V.VIRTQ_DESC.size },
  { key: "VIRTQ_DESC.addr", expr: "offsetof(struct vring_desc, addr)", ours: V.VIRTQ_DESC.addr },
  { key: "VIRTQ_DESC.len", expr: "offsetof(struct vring_desc, len)", ours: V.VIRTQ_DESC.len },
  { key: "VIRTQ_DESC.flags", expr: "offsetof(struct vring_desc, flags)", ours: V.VIRTQ_DESC.flags },
  { key: "VIRTQ_DESC.next", expr: "offsetof(struct vring_desc, next)", ours: V.VIRTQ_DESC.next },
  { key: "VIRTQ_DESC_ALIGN", expr: "VRING_DESC_ALIGN_SIZE", ours: V.VIRTQ_DESC_ALIGN },
  {
    key: "VIRTQ_AVAIL.flags",
    expr: "offsetof(struct vring_avail, flags)",
    ours: V.VIRTQ_AVAIL.flags,
  },
  { key: "VIRTQ_AVAIL.idx", expr: "offsetof(struct vring_avail, idx)", ours: V.VIRTQ_AVAIL.idx },
  { key: "VIRTQ_AVAIL.ring", expr: "offsetof(struct vring_avail, ring)", ours: V.VIRTQ_AVAIL.ring },
  { key: "VIRTQ_AVAIL.entrySize", expr: "sizeof(__virtio16)", ours: V.VIRTQ_AVAIL.entrySize },
  { key: "VIRTQ_AVAIL.align", expr: "VRING_AVAIL_ALIGN_SIZE", ours: V.VIRTQ_AVAIL.align },
  { key: "VIRTQ_USED.flags", expr: "offsetof(struct vring_used, flags)", ours: V.VIRTQ_USED.flags },
  { key: "VIRTQ_USED.idx", expr: "offsetof(struct vring_used, idx)", ours: V.VIRTQ_USED.idx },
  { key: "VIRTQ_USED.ring", expr: "offsetof(struct vring_used, ring)", ours: V.VIRTQ_USED.ring },
  {
    key: "VIRTQ_USED.entrySize",
    expr: "sizeof(struct vring_used_elem)",
    ours: V.VIRTQ_USED.entrySize,
  },
  { key: "VIRTQ_USED.id", expr: "offsetof(struct vring_used_elem, id)", ours: V.VIRTQ_USED.id },
  { key: "VIRTQ_USED.len", expr: "offsetof(struct vring_used_elem, len)", ours: V.VIRTQ_USED.len },
  { key: "VIRTQ_USED.align", expr: "VRING_USED_ALIGN_SIZE", ours: V.VIRTQ_USED.align },
  {
    key: "VIRTIO_FS_CONFIG.size",
    expr: "sizeof(struct virtio_fs_config)",
    ours: V.VIRTIO_FS_CONFIG.size,
  },
  {
    key: "VIRTIO_FS_CONFIG.tag",
    expr: "offsetof(struct virtio_fs_config, tag)",
    ours: V.VIRTIO_FS_CONFIG.tag,
  },
  {
    key: "VIRTIO_FS_CONFIG.numRequestQueues",
    expr: "offsetof(struct virtio_fs_config, num_request_queues)",
    ours: V.VIRTIO_FS_CONFIG.numRequestQueues,
  },
  {
    key: "VIRTIO_FS_TAG_SIZE",
    expr: "sizeof(((struct virtio_fs_config *)0)->tag)",
    ours: V.VIRTIO_FS_TAG_SIZE,
  },
  {
    key: "usedEventOffset(256)",
    expr: "(char *)&vring_used_event(&r) - (char *)r.avail",
    ours: V.usedEventOffset(256),
  },
  {
    key: "availEventOffset(256)",
    expr: "(char *)&vring_avail_event(&r) - (char *)r.used",
    ours: V.availEventOffset(256),
  },
  {
    key: "vringNeedEvent(5,10,3)",
    expr: "vring_need_event(5, 10, 3)",
    ours: V.vringNeedEvent(5, 10, 3) ? 1 : 0,
  },
  {
    key: "vringNeedEvent(65534,2,65530)",
    expr: "vring_need_event(65534, 2, 65530)",
    ours: V.vringNeedEvent(65534, 2, 65530) ? 1 : 0,
  },
  {
    key: "vringNeedEvent(12,10,3)",
    expr: "vring_need_event(12, 10, 3)",
    ours: V.vringNeedEvent(12, 10, 3) ? 1 : 0,
  },
];

function program(checks: readonly Check[]): string {
  const lines = checks.map((c) => `  P("${c.key}", ${c.expr});`);
  return `#include <stdio.h>
#include <stddef.h>
#include <linux/fuse.h>
#include <linux/virtio_ring.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_fs.h>
/* FUSE_REMOVEMAPPING_MAX_ENTRY is PAGE_SIZE-based; x86-64 guests have 4 KiB pages. */
#define PAGE_SIZE 4096
#define P(name, value) printf("%s %lld\\n", name, (long long)(value))
int main(void) {
  struct vring r;
  vring_init(&r, 256, (void *)0x100000, 4096);
${lines.join("\n")}
  return 0;
}
`;
}

Deno.test("src/wire: FUSE and virtio constants and layouts match Linux's uapi headers", async () => {
  for (const h of HEADERS) {
    assert.ok((await Deno.stat(h).catch(() => undefined)) !== undefined, `${h} (linux-libc-dev)`);
  }
  const fuseH = await Deno.readTextFile("/usr/include/linux/fuse.h");
  const { checks, unmapped } = fuseChecks(fuseH);
  assert.deepEqual(unmapped, [], "every layout of fuse.ts names a struct and members of fuse.h");
  // The FUSE opcodes and flags really were found (the header parse did not silently miss them).
  assert.ok(checks.length > 200, `only ${checks.length} FUSE checks`);
  console.log(`${checks.length} FUSE and ${VIRTIO_CHECKS.length} virtio values compared`);
  const all = [...checks, ...VIRTIO_CHECKS];
  const dir = await Deno.makeTempDir({ prefix: "wire-test-" });
  try {
    await Deno.writeTextFile(`${dir}/wire.c`, program(all));
    const cc = await new Deno.Command("cc", { args: ["-o", `${dir}/wire`, `${dir}/wire.c`] })
      .output();
    assert.equal(cc.code, 0, new TextDecoder().decode(cc.stderr));
    const out = await new Deno.Command(`${dir}/wire`).output();
    assert.equal(out.code, 0);
    const c = new Map<string, bigint>();
    for (const line of new TextDecoder().decode(out.stdout).trim().split("\n")) {
      const [k, v] = line.split(" ");
      // `(1 << 31)` is a negative int in C: the flag word it belongs to is a u32.
      const n = BigInt(v ?? "NaN");
      c.set(k ?? "", n < 0n && n >= -(1n << 31n) ? n + (1n << 32n) : n);
    }
    const wrong = all.filter((k) => c.get(k.key) !== BigInt(k.ours))
      .map((k) => `${k.key}: ours ${k.ours}, Linux ${c.get(k.key)}`);
    assert.deepEqual(wrong, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
