/**
 * The wire benchmark's ceiling: a vhost-user-fs back end that answers every FUSE request with a
 * canned reply of the right size, so that what the benchmark measures against it is the driver
 * (and the kernel's eventfd and scheduling costs), not a file system.
 *
 * The control plane is the daemon's own (`VhostUserBackend`: negotiation, memory, vrings); the
 * data plane is a few lines over src/memory's `GuestMemory` and src/wire/virtio.ts's ring layout:
 * take the head from the avail ring, find the in header, the first argument and the reply
 * buffers in the (indirect) table, write the out header and a prebuilt body, put the head on the
 * used ring, interrupt when EVENT_IDX asks (`vringNeedEvent`). READ claims its `size`
 * bytes without writing them; READDIRPLUS returns pages of prebuilt entries (offsets patched)
 * until `--entries` (+ "." and "..") have been listed.
 *
 * Usage: `deno run -A scripts/canned_backend.ts --socket-path PATH [--entries N]`. It serves one
 * front end and exits when it disconnects (or on SIGTERM).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { accept, Epoll, EPOLLET, EPOLLIN, EPOLLRDHUP, eventfdSignal } from "../src/ffi/mod.ts";
import * as A from "../src/wire/fuse.ts";
import { SUPPORTED_INIT_FLAGS } from "../src/fuse/session.ts";
import { stderrLogger } from "../src/log.ts";
import type { GuestMemory, MemoryRegion } from "../src/memory/guest_memory.ts";
import {
  availEventOffset,
  availRingBytes,
  descTableBytes,
  usedEventOffset,
  usedRingBytes,
  VIRTQ_AVAIL,
  VIRTQ_DESC,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED,
  vringNeedEvent,
} from "../src/wire/virtio.ts";
import {
  PROTOCOL_FEATURES,
  VhostUserBackend,
  VIRTIO_FS_FEATURES,
  type Vring,
} from "../src/vhost_user/backend.ts";
import { Connection } from "../src/vhost_user/connection.ts";
import { listenOnPath } from "../src/vhost_user/listener.ts";

/** Writable buffers remembered per chain (out header and reply arguments; READ's pages beyond). */
const MAX_WRITABLE = 4;
const TOKEN_CONNECTION = 1;
const TOKEN_KICK = 0x100;

/** Prebuilt reply bodies. */
class Canned {
  readonly entry = new Uint8Array(A.ENTRY_OUT.size);
  readonly attr = new Uint8Array(A.ATTR_OUT.size);
  readonly open = new Uint8Array(A.OPEN_OUT.size);
  readonly create = new Uint8Array(A.ENTRY_OUT.size + A.OPEN_OUT.size);
  readonly init = new Uint8Array(A.INIT_OUT.size);
  readonly writeOut = new Uint8Array(A.WRITE_OUT.size);
  readonly writeOutView = new DataView(this.writeOut.buffer);
  /** A page of READDIRPLUS records; `recordLen` bytes each. */
  readonly dirPage = new Uint8Array(4096);
  readonly dirPageView = new DataView(this.dirPage.buffer);
  readonly recordLen: number;
  readonly perPage: number;

  constructor() {
    const attr = (v: DataView, at: number): void => {
      v.setBigUint64(at + A.ATTR.ino, 2n, true);
      v.setBigUint64(at + A.ATTR.sizeField, 4096n, true);
      v.setBigUint64(at + A.ATTR.blocks, 8n, true);
      v.setUint32(at + A.ATTR.mode, 0o100644, true);
      v.setUint32(at + A.ATTR.nlink, 1, true);
      v.setUint32(at + A.ATTR.blksize, 4096, true);
    };
    const entry = (v: DataView, at: number): void => {
      v.setBigUint64(at + A.ENTRY_OUT.nodeid, 2n, true);
      v.setBigUint64(at + A.ENTRY_OUT.entryValid, 1n, true);
      v.setBigUint64(at + A.ENTRY_OUT.attrValid, 1n, true);
      attr(v, at + A.ENTRY_OUT.attr);
    };
    entry(new DataView(this.entry.buffer), 0);
    const av = new DataView(this.attr.buffer);
    av.setBigUint64(A.ATTR_OUT.attrValid, 1n, true);
    attr(av, A.ATTR_OUT.attr);
    new DataView(this.open.buffer).setBigUint64(A.OPEN_OUT.fh, 1n, true);
    const cv = new DataView(this.create.buffer);
    entry(cv, 0);
    cv.setBigUint64(A.ENTRY_OUT.size + A.OPEN_OUT.fh, 1n, true);
    // Records named like the benchmark's directory entries ("entry-00000").
    const name = new TextEncoder().encode("entry-00000");
    this.recordLen = A.direntAlign(A.DIRENTPLUS.size + name.length);
    this.perPage = Math.floor(4096 / this.recordLen);
    const dv = this.dirPageView;
    for (let i = 0; i < this.perPage; i++) {
      const at = i * this.recordLen;
      entry(dv, at);
      const d = at + A.DIRENTPLUS.dirent;
      dv.setBigUint64(d + A.DIRENT.ino, 2n, true);
      dv.setUint32(d + A.DIRENT.namelen, name.length, true);
      dv.setUint32(d + A.DIRENT.type, 8, true);
      this.dirPage.set(name, d + A.DIRENT.name);
    }
  }
}

/**
 * The data plane of one started queue: the device side of the split ring, with the layout and
 * flags of src/wire/virtio.ts. (The daemon's `SplitQueue` + `DescriptorChain` would serve here
 * too, but their general walk, every segment recorded and checked, costs the ceiling about 10 %
 * of its depth-64 rate (a 5-descriptor indirect chain: 97 ns against 62 ns for this walk, which
 * finds only the buffers a canned reply needs).)
 */
class CannedQueue {
  readonly #size: number;
  readonly #desc: { region: MemoryRegion; at: number };
  /** Byte offsets (`…At`) and u16 indices (`…Word`) of the ring fields in the rings' region. */
  readonly #availIdxWord: number;
  readonly #availRingAt: number;
  readonly #usedEventAt: number;
  readonly #usedIdxWord: number;
  readonly #usedRingAt: number;
  readonly #availEventWord: number;
  readonly #rings: MemoryRegion;
  readonly #memory: GuestMemory;
  readonly #vring: Vring;
  readonly #eventIdx: boolean;
  readonly #canned: Canned;
  readonly #entries: number;
  #lastAvail: number;
  #usedIdx: number;
  #signalled = 0;
  #signalledValid = false;
  // The chain being answered: its in header, first argument, writable buffers.
  #inRegion: MemoryRegion | undefined;
  #inAt = 0;
  #inLen = 0;
  #argRegion: MemoryRegion | undefined;
  #argAt = 0;
  #argLen = 0;
  readonly #wRegion: (MemoryRegion | undefined)[] = new Array(MAX_WRITABLE).fill(undefined);
  readonly #wAt = new Float64Array(MAX_WRITABLE);
  readonly #wLen = new Float64Array(MAX_WRITABLE);
  #wCount = 0;
  #wTotal = 0;
  /** The region the last buffer was in (a new queue is made after every memory change). */
  #lastRegion: MemoryRegion | undefined;
  /** Chains answered. */
  served = 0;

  constructor(
    memory: GuestMemory,
    addresses: { desc: number; avail: number; used: number },
    size: number,
    base: number,
    vring: Vring,
    eventIdx: boolean,
    canned: Canned,
    entries: number,
  ) {
    this.#memory = memory;
    this.#size = size;
    const t = (uva: number, len: number) => {
      const r = memory.translateUva(uva, len);
      if (r === undefined) throw new Error(`ring at 0x${uva.toString(16)} is outside memory`);
      return r;
    };
    const d = t(addresses.desc, descTableBytes(size));
    const a = t(addresses.avail, availRingBytes(size));
    const u = t(addresses.used, usedRingBytes(size));
    if (a.region !== u.region) throw new Error("avail and used rings in different regions");
    this.#desc = { region: d.region, at: d.region.base + d.offset };
    this.#rings = a.region;
    const avail = a.region.base + a.offset;
    const used = u.region.base + u.offset;
    this.#availIdxWord = (avail + VIRTQ_AVAIL.idx) >> 1;
    this.#availRingAt = avail + VIRTQ_AVAIL.ring;
    this.#usedEventAt = avail + usedEventOffset(size);
    this.#usedIdxWord = (used + VIRTQ_USED.idx) >> 1;
    this.#usedRingAt = used + VIRTQ_USED.ring;
    this.#availEventWord = (used + availEventOffset(size)) >> 1;
    this.#vring = vring;
    this.#eventIdx = eventIdx;
    this.#canned = canned;
    this.#entries = entries;
    this.#lastAvail = base & 0xffff;
    this.#usedIdx = Atomics.load(a.region.u16, this.#usedIdxWord);
  }

  /** Answers everything on the avail ring, re-arms the kick, interrupts if the driver wants. */
  serve(): void {
    const rings = this.#rings;
    const u16 = rings.u16;
    const view = rings.view;
    const mask = this.#size - 1;
    const before = this.#usedIdx;
    for (;;) {
      let avail = Atomics.load(u16, this.#availIdxWord);
      while (avail !== this.#lastAvail) {
        const head = view.getUint16(
          this.#availRingAt + VIRTQ_AVAIL.entrySize * (this.#lastAvail & mask),
          true,
        );
        this.#lastAvail = (this.#lastAvail + 1) & 0xffff;
        const len = this.#answer(head);
        const at = this.#usedRingAt + VIRTQ_USED.entrySize * (this.#usedIdx & mask);
        view.setUint32(at + VIRTQ_USED.id, head, true);
        view.setUint32(at + VIRTQ_USED.len, len, true);
        this.#usedIdx = (this.#usedIdx + 1) & 0xffff;
        Atomics.store(u16, this.#usedIdxWord, this.#usedIdx);
        this.served++;
        if (avail === this.#lastAvail) avail = Atomics.load(u16, this.#availIdxWord);
      }
      // avail_event: kick me for anything after what I took; then look once more.
      if (this.#eventIdx) Atomics.store(u16, this.#availEventWord, this.#lastAvail);
      if (Atomics.load(u16, this.#availIdxWord) === this.#lastAvail) break;
    }
    if (this.#usedIdx === before) return;
    const now = this.#usedIdx;
    let need = true;
    if (this.#eventIdx) {
      const usedEvent = view.getUint16(this.#usedEventAt, true);
      need = !this.#signalledValid || vringNeedEvent(usedEvent, now, this.#signalled);
      this.#signalled = now;
      this.#signalledValid = true;
    }
    // The call descriptor may come after the kick (QEMU's order): read it each time.
    const callFd = this.#vring.callFd;
    if (need && callFd >= 0) eventfdSignal(callFd);
  }

  /** The region holding `gpa`: the last buffer's, or looked up. */
  #region(gpa: number): MemoryRegion {
    const last = this.#lastRegion;
    if (
      last !== undefined && gpa >= last.guestPhysAddr && gpa - last.guestPhysAddr < last.memorySize
    ) return last;
    const r = this.#memory.regionOfGpa(gpa);
    if (r === undefined) throw new Error(`buffer 0x${gpa.toString(16)} is outside memory`);
    this.#lastRegion = r;
    return r;
  }

  /** Finds the chain's in header, first argument and writable buffers. */
  #walk(head: number): void {
    let table = this.#desc.region;
    let tableAt = this.#desc.at;
    let view = table.view;
    let at = tableAt + VIRTQ_DESC.size * head;
    let flags = view.getUint16(at + VIRTQ_DESC.flags, true);
    if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
      const gpa = view.getUint32(at + VIRTQ_DESC.addr + 4, true) * 0x1_0000_0000 +
        view.getUint32(at + VIRTQ_DESC.addr, true);
      table = this.#region(gpa);
      tableAt = table.base + (gpa - table.guestPhysAddr);
      view = table.view;
      at = tableAt;
    }
    this.#inRegion = undefined;
    this.#argRegion = undefined;
    this.#wCount = 0;
    this.#wTotal = 0;
    let readable = 0;
    for (;;) {
      const gpa = view.getUint32(at + VIRTQ_DESC.addr + 4, true) * 0x1_0000_0000 +
        view.getUint32(at + VIRTQ_DESC.addr, true);
      const len = view.getUint32(at + VIRTQ_DESC.len, true);
      flags = view.getUint16(at + VIRTQ_DESC.flags, true);
      if ((flags & VIRTQ_DESC_F_WRITE) !== 0) {
        this.#wTotal += len;
        const i = this.#wCount;
        if (i < MAX_WRITABLE) {
          const r = this.#region(gpa);
          this.#wRegion[i] = r;
          this.#wAt[i] = r.base + (gpa - r.guestPhysAddr);
          this.#wLen[i] = len;
          this.#wCount = i + 1;
        }
      } else if (readable < 2) {
        const r = this.#region(gpa);
        if (readable === 0) {
          this.#inRegion = r;
          this.#inAt = r.base + (gpa - r.guestPhysAddr);
          this.#inLen = len;
        } else {
          this.#argRegion = r;
          this.#argAt = r.base + (gpa - r.guestPhysAddr);
          this.#argLen = len;
        }
        readable++;
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      at = tableAt + VIRTQ_DESC.size * view.getUint16(at + VIRTQ_DESC.next, true);
    }
    // A contiguous header + arguments (FORGET): the argument follows the header.
    if (this.#argRegion === undefined && this.#inLen > A.IN_HEADER.size) {
      this.#argRegion = this.#inRegion;
      this.#argAt = this.#inAt + A.IN_HEADER.size;
      this.#argLen = this.#inLen - A.IN_HEADER.size;
    }
  }

  /** Copies `n` bytes of `body` into the writable buffers after the out header. */
  #scatter(body: Uint8Array, n: number): void {
    let done = 0;
    let skip: number = A.OUT_HEADER.size;
    for (let i = 0; i < this.#wCount && done < n; i++) {
      const len = this.#wLen[i] ?? 0;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const r = this.#wRegion[i] as MemoryRegion;
      const k = Math.min(len - skip, n - done);
      const at = (this.#wAt[i] ?? 0) - r.base + skip;
      r.bytes.set(k === body.byteLength ? body : body.subarray(done, done + k), at);
      done += k;
      skip = 0;
    }
  }

  /** Answers the chain at `head`; returns the used length. */
  #answer(head: number): number {
    this.#walk(head);
    const inR = this.#inRegion;
    if (inR === undefined || this.#inLen < A.IN_HEADER.size) return 0;
    const iv = inR.view;
    const opcode = iv.getUint32(this.#inAt + A.IN_HEADER.opcode, true);
    if (opcode === A.FUSE_FORGET || opcode === A.FUSE_BATCH_FORGET) return 0;
    if (this.#wCount === 0 || (this.#wLen[0] ?? 0) < A.OUT_HEADER.size) return 0;
    const c = this.#canned;
    const av = this.#argRegion?.view;
    const argAt = this.#argAt;
    let body = 0;
    let error = 0;
    switch (opcode) {
      case A.FUSE_LOOKUP:
        body = this.#put(c.entry);
        break;
      case A.FUSE_GETATTR:
      case A.FUSE_SETATTR:
        body = this.#put(c.attr);
        break;
      case A.FUSE_OPEN:
      case A.FUSE_OPENDIR:
        body = this.#put(c.open);
        break;
      case A.FUSE_CREATE:
        body = this.#put(c.create);
        break;
      case A.FUSE_READ:
        // The data is claimed, not written: the ceiling is the driver's, not a memcpy's.
        body = av === undefined ? 0 : av.getUint32(argAt + A.READ_IN.sizeField, true);
        body = Math.min(body, this.#wTotal - A.OUT_HEADER.size);
        break;
      case A.FUSE_WRITE:
        if (av !== undefined) {
          c.writeOutView.setUint32(0, av.getUint32(argAt + A.WRITE_IN.sizeField, true), true);
        }
        body = this.#put(c.writeOut);
        break;
      case A.FUSE_READDIRPLUS:
        body = av === undefined ? 0 : this.#readdirplus(av, argAt);
        break;
      case A.FUSE_INIT:
        body = av === undefined ? 0 : this.#init(av, argAt);
        break;
      case A.FUSE_RELEASE:
      case A.FUSE_RELEASEDIR:
      case A.FUSE_UNLINK:
      case A.FUSE_FLUSH:
      case A.FUSE_DESTROY:
        break;
      default:
        error = -38; // ENOSYS
    }
    const ov = (this.#wRegion[0] as MemoryRegion).view;
    const out = this.#wAt[0] ?? 0;
    ov.setUint32(out + A.OUT_HEADER.len, A.OUT_HEADER.size + body, true);
    ov.setInt32(out + A.OUT_HEADER.error, error, true);
    ov.setUint32(
      out + A.OUT_HEADER.unique,
      iv.getUint32(this.#inAt + A.IN_HEADER.unique, true),
      true,
    );
    ov.setUint32(
      out + A.OUT_HEADER.unique + 4,
      iv.getUint32(this.#inAt + A.IN_HEADER.unique + 4, true),
      true,
    );
    return A.OUT_HEADER.size + body;
  }

  #put(body: Uint8Array): number {
    const n = Math.min(body.byteLength, this.#wTotal - A.OUT_HEADER.size);
    this.#scatter(body, n);
    return n;
  }

  #readdirplus(av: DataView, argAt: number): number {
    const c = this.#canned;
    const total = this.#entries + 2;
    const offset = av.getUint32(argAt + A.READ_IN.offset, true);
    const room = Math.min(av.getUint32(argAt + A.READ_IN.sizeField, true), 4096);
    if (offset >= total || av.getUint32(argAt + A.READ_IN.offset + 4, true) !== 0) return 0;
    const count = Math.min(Math.floor(room / c.recordLen), c.perPage, total - offset);
    for (let i = 0; i < count; i++) {
      c.dirPageView.setUint32(
        i * c.recordLen + A.DIRENTPLUS.dirent + A.DIRENT.off,
        offset + i + 1,
        true,
      );
    }
    return this.#put(c.dirPage.subarray(0, count * c.recordLen));
  }

  #init(av: DataView, argAt: number): number {
    const c = this.#canned;
    const o = new DataView(c.init.buffer);
    const minor = av.getUint32(argAt + A.INIT_IN.minor, true);
    let flags = BigInt(av.getUint32(argAt + A.INIT_IN.flags, true));
    if ((flags & A.FUSE_INIT_EXT) !== 0n && this.#argLen >= A.INIT_IN.flags2 + 4) {
      flags |= BigInt(av.getUint32(argAt + A.INIT_IN.flags2, true)) << 32n;
    }
    const granted = flags & SUPPORTED_INIT_FLAGS & ~A.FUSE_WRITEBACK_CACHE;
    o.setUint32(A.INIT_OUT.major, A.FUSE_KERNEL_VERSION, true);
    o.setUint32(A.INIT_OUT.minor, Math.min(minor, A.FUSE_KERNEL_MINOR_VERSION), true);
    o.setUint32(A.INIT_OUT.maxReadahead, av.getUint32(argAt + A.INIT_IN.maxReadahead, true), true);
    o.setUint32(A.INIT_OUT.flags, Number(granted & 0xffffffffn), true);
    o.setUint16(A.INIT_OUT.maxBackground, 512, true);
    o.setUint16(A.INIT_OUT.congestionThreshold, 384, true);
    o.setUint32(A.INIT_OUT.maxWrite, A.MAX_WRITE, true);
    o.setUint32(A.INIT_OUT.timeGran, 1, true);
    o.setUint16(A.INIT_OUT.maxPages, A.MAX_PAGES, true);
    o.setUint32(A.INIT_OUT.flags2, Number(granted >> 32n), true);
    return this.#put(c.init);
  }
}

/** Serves one front end on `socketPath` until it disconnects. Returns the chains answered. */
export function runCannedBackend(socketPath: string, entries: number): number {
  const log = stderrLogger("warn", "canned-backend");
  const listenFd = listenOnPath(socketPath, log);
  const canned = new Canned();
  const epoll = new Epoll(16);
  const queues: (CannedQueue | undefined)[] = [];
  const ready: boolean[] = [];
  const backend: VhostUserBackend = new VhostUserBackend(
    {
      queues: 2,
      features: VIRTIO_FS_FEATURES,
      protocolFeatures: PROTOCOL_FEATURES,
      maxMemSlots: 32,
    },
    {
      kickChanged: (index, fd) => {
        const old = backend.vrings[index]?.kickFd ?? -1;
        if (old >= 0) epoll.remove(old);
        if (fd >= 0) epoll.add(fd, EPOLLIN | EPOLLET, TOKEN_KICK + index);
      },
      queueReady: (index) => {
        const v = backend.vrings[index];
        if (v === undefined || v.addresses === undefined || v.queue === undefined) return;
        queues[index] = new CannedQueue(
          backend.memory,
          v.addresses,
          v.num,
          v.queue.lastAvailIdx,
          v,
          v.queue.eventIdx,
          canned,
          entries,
        );
        ready[index] = true;
      },
      queueStopped: (index) => {
        queues[index] = undefined;
      },
    },
    log,
  );
  const fd = accept(listenFd);
  try {
    Deno.removeSync(socketPath);
  } catch { /* already gone */ }
  const conn = new Connection(fd);
  epoll.add(fd, EPOLLIN | EPOLLRDHUP, TOKEN_CONNECTION);
  let served = 0;
  try {
    for (;;) {
      const n = epoll.wait(-1);
      for (let i = 0; i < n; i++) {
        const token = epoll.token(i);
        if (token >= TOKEN_KICK) ready[token - TOKEN_KICK] = true;
        else if (token === TOKEN_CONNECTION) {
          const msg = conn.receive();
          if (msg === undefined) return served;
          backend.handle(msg, conn);
        }
      }
      for (let q = 0; q < ready.length; q++) {
        if (!ready[q]) continue;
        ready[q] = false;
        const cq = queues[q];
        if (cq !== undefined && backend.isRunning(q)) {
          const before = cq.served;
          cq.serve();
          served += cq.served - before;
        }
      }
    }
  } finally {
    conn.close();
    epoll.close();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      "socket-path": { type: "string" },
      entries: { type: "string", default: "10000" },
    },
  });
  const path = values["socket-path"];
  if (path === undefined) {
    console.error("usage: canned_backend.ts --socket-path PATH [--entries N]");
    Deno.exit(2);
  }
  const served = runCannedBackend(path, Number(values.entries));
  console.error(`canned back end: answered ${served} chains`);
}
