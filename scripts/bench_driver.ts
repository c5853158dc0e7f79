/**
 * The wire benchmark's driver: a virtqueue driven by hand with preallocated descriptor chains
 * (`LeanQueue`), the request sequences of each benchmark row (`Row`), and the two measuring loops
 * (one request in flight, and `depth` in flight).
 *
 * Chains are laid out as Linux 6.1's virtio-fs lays them out: the in header and each argument in
 * a buffer of its own, file data in page-sized buffers, the out header and each reply argument in
 * a buffer of its own, all through one indirect table (a FORGET is one direct 48-byte buffer).
 * Every chain of a row is built before the row starts; a request in flight only has a few words
 * patched (an offset, a handle, a nodeid), so the measuring loops allocate nothing.
 *
 * The queue is set up by the test driver (`VhostUserFrontend.connect`, `FuseClient.init`); from
 * then on `LeanQueue` owns its rings and the front end's `GuestQueue` must not be used again.
 *
 * @module
 */
import {
  Epoll,
  EPOLLET,
  EPOLLIN,
  eventfdSignal,
  O_CREAT,
  O_DIRECTORY,
  O_EXCL,
  O_RDONLY,
  O_RDWR,
} from "../src/ffi/mod.ts";
import * as A from "../src/wire/fuse.ts";
import {
  availEventOffset,
  availRingBytes,
  descTableBytes,
  usedEventOffset,
  usedRingBytes,
  VIRTQ_AVAIL,
  VIRTQ_DESC,
  VIRTQ_DESC_ALIGN,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED,
  vringNeedEvent,
} from "../src/wire/virtio.ts";
import type { VhostUserFrontend } from "../src/driver/frontend.ts";
import type { CacheWindow } from "../src/driver/cache_window.ts";
import { type GuestQueue, writeDescriptorAt } from "../src/driver/guest_queue.ts";
import type {
  GuestRam,
  GuestRamOptions,
  GuestRegion,
  GuestRegionSpec,
} from "../src/driver/guest_ram.ts";

export type { GuestRam, GuestRamOptions, GuestRegion, GuestRegionSpec };

/** Bytes per guest page: file data travels in buffers of this size, as Linux sends it. */
export const PAGE = 4096;

/** One preallocated request: its buffers in guest memory and where each part is. */
export interface Chain {
  /** The ring descriptor index that heads it (the used element's id). */
  readonly head: number;
  /** Its FUSE opcode. */
  readonly opcode: number;
  /** Offset of the in header in the guest memory's bytes. */
  readonly inAt: number;
  /** Offset of the first argument buffer (-1: none). */
  readonly argAt: number;
  /** Offsets of every argument buffer after the header. */
  readonly args: readonly number[];
  /** Offset of the out header (-1: the request takes no reply). */
  readonly outAt: number;
  /** Offsets of the reply buffers after the out header. */
  readonly body: readonly number[];
  /** The low 32 bits of the unique the request carries (checked in its reply). */
  readonly uniqueLo: number;
  /** The allocation holding the buffers and the table (freed by `LeanQueue.free`). */
  readonly alloc: { gpa: number; len: number };
}

/** How a chain is laid out: the request and its buffer sizes. */
export interface ChainSpec {
  /** FUSE opcode. */
  opcode: number;
  /** The target nodeid. */
  nodeid: bigint;
  /** Argument buffers after the in header: a size, or initial bytes. */
  args: readonly (number | Uint8Array)[];
  /** Reply buffers after the out header (sizes); `null`: no reply at all (FORGET). */
  reply: readonly number[] | null;
  /** One contiguous direct buffer for header and arguments (FORGET on the hiprio queue). */
  contiguous?: boolean;
}

/** Replies whose out header said an error, by errno; and replies whose unique was wrong. */
export interface ReplyFaults {
  /** Count by "OPCODE errno N". */
  errors: Map<string, number>;
  /** Replies carrying another request's unique. */
  badUnique: number;
}

/**
 * One virtqueue driven by hand: a preallocating variant of the driver's {@linkcode GuestQueue}
 * that takes over the rings the front end set up. Chains are placed once, each at a fixed head,
 * and reused; `add` + `commit` publish them (kicking when the device asked, EVENT_IDX), `reap`
 * harvests used elements (sleeping on the call eventfd, edge-triggered, so a wait costs one
 * `epoll_wait`). The ring layout is src/wire/virtio.ts's; the head descriptors are written through
 * the `GuestQueue`, the buffers and indirect tables allocated in its `GuestRam`. The hot path
 * (`add`, `commit`, `reap`) works on ring offsets computed once and allocates nothing.
 */
export class LeanQueue {
  /** Guest memory. */
  readonly mem: GuestRam;
  /** All of guest memory's bytes. */
  readonly bytes: Uint8Array;
  /** A DataView over `bytes`. */
  readonly view: DataView;
  /** Used element ids of the last `reap` (valid up to its return value). */
  readonly ids: Int32Array;
  /** Reply faults seen so far. */
  readonly faults: ReplyFaults = { errors: new Map(), badUnique: 0 };
  readonly #queue: GuestQueue;
  readonly #index: number;
  readonly #u16: Uint16Array;
  readonly #size: number;
  /** Byte offsets in `bytes` (`…At`) and u16 indices in `#u16` (`…Word`) of the ring fields. */
  readonly #availIdxWord: number;
  readonly #availRingAt: number;
  readonly #usedEventWord: number;
  readonly #usedIdxWord: number;
  readonly #usedRingAt: number;
  readonly #availEventWord: number;
  readonly #kickFd: number;
  readonly #epoll: Epoll;
  readonly #chains: (Chain | undefined)[];
  /** The front end whose back-end channel `reap` services while it sleeps (DAX maps). */
  #servicer: VhostUserFrontend | undefined;
  #servicedFd = -1;
  #availIdx: number;
  #published: number;
  #lastUsed: number;
  /** Kicks sent (eventfd writes). */
  kicks = 0;
  /** Sleeps on the call eventfd. */
  sleeps = 0;

  /**
   * Takes over queue `index` of `fe`: every chain the test driver placed must be back, and
   * EVENT_IDX negotiated. From here on the front end's `GuestQueue` must not drive this queue.
   */
  constructor(fe: VhostUserFrontend, index: number) {
    const queue = fe.queue(index);
    if (queue.outstanding !== 0) {
      throw new Error(`queue ${index} has ${queue.outstanding} chains outstanding`);
    }
    if (!queue.eventIdx) throw new Error("the benchmark needs VIRTIO_RING_F_EVENT_IDX");
    this.#queue = queue;
    this.#index = index;
    this.mem = fe.memory;
    this.bytes = this.mem.bytes;
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
    this.#u16 = new Uint16Array(
      this.bytes.buffer,
      this.bytes.byteOffset,
      this.bytes.byteLength >> 1,
    );
    const n = queue.size;
    this.#size = n;
    const avail = this.mem.offsetOf(queue.availGpa, availRingBytes(n));
    const used = this.mem.offsetOf(queue.usedGpa, usedRingBytes(n));
    this.#availIdxWord = (avail + VIRTQ_AVAIL.idx) >> 1;
    this.#availRingAt = avail + VIRTQ_AVAIL.ring;
    this.#usedEventWord = (avail + usedEventOffset(n)) >> 1;
    this.#usedIdxWord = (used + VIRTQ_USED.idx) >> 1;
    this.#usedRingAt = used + VIRTQ_USED.ring;
    this.#availEventWord = (used + availEventOffset(n)) >> 1;
    this.#availIdx = queue.availIdx;
    this.#published = this.#availIdx;
    this.#lastUsed = queue.lastUsedIdx;
    this.#kickFd = fe.kickFd(index);
    this.#epoll = new Epoll(2);
    this.#epoll.add(fe.callFd(index), EPOLLIN | EPOLLET, 1);
    this.ids = new Int32Array(n);
    this.#chains = new Array(n).fill(undefined);
  }

  /** Queue size. */
  get size(): number {
    return this.#size;
  }

  /**
   * With `fe`, `reap` also wakes for the front end's back-end channel and services it (answers
   * the daemon's SHMEM_MAP / SHMEM_UNMAP, as QEMU does): a SETUPMAPPING is answered only after
   * that. `undefined` stops it (a measuring loop without DAX pays no extra syscall).
   */
  serviceWith(fe: VhostUserFrontend | undefined): void {
    if (this.#servicedFd >= 0) this.#epoll.remove(this.#servicedFd);
    this.#servicer = fe;
    this.#servicedFd = fe?.backendChannelFd ?? -1;
    // Level-triggered: whatever servicing leaves behind wakes the next wait.
    if (this.#servicedFd >= 0) this.#epoll.add(this.#servicedFd, EPOLLIN, 2);
  }

  /** The chain headed by `head`. */
  chain(head: number): Chain {
    const c = this.#chains[head];
    if (c === undefined) throw new Error(`queue ${this.#index}: no chain at head ${head}`);
    return c;
  }

  /**
   * Places a chain at ring descriptor `head`: allocates its buffers (pages page-aligned) and
   * indirect table, writes the in header (len, opcode, unique = 2·(head+1), nodeid, uid/gid 0)
   * and the arguments.
   */
  place(head: number, spec: ChainSpec): Chain {
    if (head < 0 || head >= this.#size) throw new RangeError(`head ${head} is outside the ring`);
    if (this.#chains[head] !== undefined) this.free(head);
    const argSizes = spec.args.map((a) => typeof a === "number" ? a : a.byteLength);
    const argLen = argSizes.reduce((n, s) => n + s, 0);
    const reply = spec.reply;
    // Layout in one allocation: buffers first (pages aligned to a page), then the table.
    const sizes: number[] = spec.contiguous
      ? [A.IN_HEADER.size + argLen]
      : [A.IN_HEADER.size, ...argSizes];
    const readable = sizes.length;
    if (reply !== null) sizes.push(A.OUT_HEADER.size, ...reply);
    const at: number[] = [];
    let end = 0;
    for (const s of sizes) {
      const align = s >= PAGE ? PAGE : 8;
      end = Math.ceil(end / align) * align;
      at.push(end);
      end += Math.max(s, 1);
    }
    const direct = sizes.length === 1;
    end = Math.ceil(end / VIRTQ_DESC_ALIGN) * VIRTQ_DESC_ALIGN;
    const tableAt = end;
    if (!direct) end += descTableBytes(sizes.length);
    const gpa = this.mem.alloc(end, PAGE);
    const base = this.mem.offsetOf(gpa, end);
    const v = this.view;
    const inAt = base + (at[0] ?? 0);
    const unique = 2 * (head + 1);
    v.setUint32(inAt + A.IN_HEADER.len, A.IN_HEADER.size + argLen, true);
    v.setUint32(inAt + A.IN_HEADER.opcode, spec.opcode, true);
    v.setBigUint64(inAt + A.IN_HEADER.unique, BigInt(unique), true);
    v.setBigUint64(inAt + A.IN_HEADER.nodeid, spec.nodeid, true);
    v.setUint32(inAt + A.IN_HEADER.pid, 1, true);
    const args: number[] = [];
    let argAt = inAt + A.IN_HEADER.size;
    spec.args.forEach((a, i) => {
      const off = spec.contiguous ? argAt : base + (at[i + 1] ?? 0);
      if (typeof a !== "number") this.bytes.set(a, off);
      args.push(off);
      argAt += argSizes[i] ?? 0;
    });
    if (direct) {
      this.#queue.writeDescriptor(head, {
        addr: gpa + (at[0] ?? 0),
        len: sizes[0] ?? 0,
        flags: 0,
        next: 0,
      });
    } else {
      sizes.forEach((s, i) => {
        const last = i === sizes.length - 1;
        writeDescriptorAt(this.mem, gpa + tableAt + VIRTQ_DESC.size * i, {
          addr: gpa + (at[i] ?? 0),
          len: s,
          flags: (last ? 0 : VIRTQ_DESC_F_NEXT) | (i >= readable ? VIRTQ_DESC_F_WRITE : 0),
          next: last ? 0 : i + 1,
        });
      });
      this.#queue.writeDescriptor(head, {
        addr: gpa + tableAt,
        len: descTableBytes(sizes.length),
        flags: VIRTQ_DESC_F_INDIRECT,
        next: 0,
      });
    }
    const chain: Chain = {
      head,
      opcode: spec.opcode,
      inAt,
      argAt: args[0] ?? -1,
      args,
      outAt: reply === null ? -1 : base + (at[readable] ?? 0),
      body: reply === null ? [] : reply.map((_, i) => base + (at[readable + 1 + i] ?? 0)),
      uniqueLo: unique,
      alloc: { gpa, len: end },
    };
    this.#chains[head] = chain;
    return chain;
  }

  /** Frees the chain at `head` (it must not be in flight). */
  free(head: number): void {
    const c = this.#chains[head];
    if (c === undefined) return;
    this.mem.free(c.alloc.gpa, c.alloc.len);
    this.#chains[head] = undefined;
  }

  /** Frees every chain. */
  freeAll(): void {
    for (let h = 0; h < this.#size; h++) this.free(h);
  }

  /** Puts chain `head` in the next avail slot (invisible to the device until `commit`). */
  add(head: number): void {
    const slot = this.#availIdx & (this.#size - 1);
    this.view.setUint16(this.#availRingAt + VIRTQ_AVAIL.entrySize * slot, head, true);
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
  }

  /** Publishes what `add` placed and kicks when the device asked (vring_need_event). */
  commit(): void {
    const old = this.#published;
    const now = this.#availIdx;
    if (old === now) return;
    Atomics.store(this.#u16, this.#availIdxWord, now);
    this.#published = now;
    if (vringNeedEvent(Atomics.load(this.#u16, this.#availEventWord), now, old)) {
      this.kicks++;
      eventfdSignal(this.#kickFd);
    }
  }

  /**
   * Harvests used elements into `ids`, checking each reply's out header (error, unique).
   * Returns how many; with `block`, sleeps until there is at least one (5 s at most).
   */
  reap(block: boolean): number {
    const u16 = this.#u16;
    const v = this.view;
    const mask = this.#size - 1;
    const idAt = this.#usedRingAt + VIRTQ_USED.id;
    const entrySize = VIRTQ_USED.entrySize;
    for (;;) {
      const usedIdx = Atomics.load(u16, this.#usedIdxWord);
      const n = (usedIdx - this.#lastUsed) & 0xffff;
      if (n > 0) {
        for (let i = 0; i < n; i++) {
          const slot = (this.#lastUsed + i) & mask;
          const id = v.getUint32(idAt + entrySize * slot, true);
          this.ids[i] = id;
          const c = this.#chains[id];
          if (c === undefined) throw new Error(`queue ${this.#index}: used id ${id} is no chain`);
          if (c.outAt >= 0) {
            const error = v.getInt32(c.outAt + A.OUT_HEADER.error, true);
            if (error !== 0) this.#fault(c.opcode, error);
            if (v.getUint32(c.outAt + A.OUT_HEADER.unique, true) !== c.uniqueLo) {
              this.faults.badUnique++;
            }
          }
        }
        this.#lastUsed = usedIdx;
        return n;
      }
      if (!block) return 0;
      // Ask for an interrupt at the next used element (used_event), re-check, then sleep.
      Atomics.store(u16, this.#usedEventWord, this.#lastUsed);
      if (Atomics.load(u16, this.#usedIdxWord) !== this.#lastUsed) continue;
      this.sleeps++;
      const woke = this.#epoll.wait(5000);
      if (this.#servicer !== undefined) this.#servicer.serviceBackendChannel(0);
      if (woke === 0) {
        if (Atomics.load(u16, this.#usedIdxWord) !== this.#lastUsed) continue;
        throw new Error(`no reply on queue ${this.#index} within 5 s`);
      }
    }
  }

  #fault(opcode: number, error: number): void {
    const key = `${A.opcodeName(opcode)} errno ${-error}`;
    this.faults.errors.set(key, (this.faults.errors.get(key) ?? 0) + 1);
  }

  /**
   * Frees every chain and closes the epoll. The rings' indices have moved under the front end's
   * `GuestQueue`, so it must not drive this queue again: close the front end next.
   */
  close(): void {
    this.serviceWith(undefined);
    this.freeAll();
    this.#epoll.close();
  }
}

/** What a row needs of the shared directory, as looked up and opened through the daemon. */
export interface Handles {
  /** A regular file already looked up (LOOKUP and GETATTR target). */
  warm: bigint;
  /** The file read by the READ rows. */
  data: bigint;
  /** Its handle (O_RDONLY). */
  dataFh: bigint;
  /** The file written by the WRITE rows. */
  wfile: bigint;
  /** Its handle (O_RDWR). */
  wfileFh: bigint;
  /** Size of `data` and `wfile`. */
  fileSize: number;
  /** The directory CREATE+RELEASE+UNLINK works in. */
  cru: bigint;
  /** The directory READDIRPLUS walks. */
  dir: bigint;
  /** Entries in `dir` (without "." and ".."). */
  dirEntries: number;
  /** For the inode-count phase: a directory of files named `f000000`, `f000001`, ... */
  many?: bigint;
}

/**
 * One row of the benchmark as a request sequence per slot. Slot `s` owns heads
 * `s·steps .. s·steps+steps-1`; an iteration starts at `start(s)` and each reply names the next
 * request (`reply` returns its head) until the iteration is done (-1).
 */
export interface RowRun {
  /** Chains per slot. */
  readonly steps: number;
  /** Payload bytes moved so far (READ/WRITE data, READDIRPLUS replies). */
  bytes: number;
  /** The first head of a new iteration of slot `slot` (its request patched as needed). */
  start(slot: number): number;
  /** The reply to `head` (of `slot`) is in: the next head, or -1 when the iteration is done. */
  reply(slot: number, head: number): number;
  /** Stopping: the next head after `head` that ends the iteration cleanly (or -1). */
  stop(slot: number, head: number, next: number): number;
  /** Checks after a run; returns problems (e.g. a walk that saw too few entries). */
  problems(): string[];
}

/** A benchmark row: how to build its run on a connection. */
export interface Row {
  /** Short id (JSON key). */
  readonly id: string;
  /** Label in the table. */
  readonly label: string;
  /** "fixed": cost fixed per request; "bulk": bound by the copy or the host file system. */
  readonly kind: "fixed" | "bulk";
  /** Requests per iteration (for the label of the latency column). */
  readonly unit: string;
  /** Whether MiB/s means anything for it. */
  readonly moves: boolean;
  /** Places the chains for `depth` slots. */
  build(q: LeanQueue, hiprio: LeanQueue, h: Handles, depth: number): RowRun;
}

function readIn(fh: bigint, offset: number, size: number, flags: number): Uint8Array {
  const b = new Uint8Array(A.READ_IN.size);
  const v = new DataView(b.buffer);
  v.setBigUint64(A.READ_IN.fh, fh, true);
  v.setBigUint64(A.READ_IN.offset, BigInt(offset), true);
  v.setUint32(A.READ_IN.sizeField, size, true);
  v.setUint32(A.READ_IN.flags, flags, true);
  return b;
}

function cstr(s: string): Uint8Array {
  return new TextEncoder().encode(s + "\0");
}

const pages = (bytes: number): number[] => new Array<number>(Math.ceil(bytes / PAGE)).fill(PAGE);

/** A row of one request per iteration, the same request again and again. */
class SingleRow implements RowRun {
  readonly steps = 1;
  bytes = 0;
  readonly #perRequest: number;
  constructor(perRequest: number) {
    this.#perRequest = perRequest;
  }
  start(slot: number): number {
    return slot;
  }
  reply(): number {
    this.bytes += this.#perRequest;
    return -1;
  }
  stop(_slot: number, _head: number, next: number): number {
    return next;
  }
  problems(): string[] {
    return [];
  }
}

/** READ of `size` bytes at a per-slot offset: the reply's length is checked and counted. */
class ReadRow implements RowRun {
  readonly steps = 1;
  bytes = 0;
  readonly #q: LeanQueue;
  readonly #size: number;
  #short = 0;
  constructor(q: LeanQueue, size: number) {
    this.#q = q;
    this.#size = size;
  }
  start(slot: number): number {
    return slot;
  }
  reply(_slot: number, head: number): number {
    const c = this.#q.chain(head);
    const got = this.#q.view.getUint32(c.outAt + A.OUT_HEADER.len, true) - A.OUT_HEADER.size;
    if (got !== this.#size) this.#short++;
    this.bytes += got > 0 ? got : 0;
    return -1;
  }
  stop(_slot: number, _head: number, next: number): number {
    return next;
  }
  problems(): string[] {
    return this.#short > 0 ? [`${this.#short} READ replies were not ${this.#size} bytes`] : [];
  }
}

/** CREATE → RELEASE → UNLINK, then a FORGET of the node on the hiprio queue (as Linux). */
class CreateRow implements RowRun {
  readonly steps = 3;
  bytes = 0;
  readonly #q: LeanQueue;
  readonly #hi: LeanQueue;
  readonly #forgetPending: Uint8Array;
  constructor(q: LeanQueue, hi: LeanQueue) {
    this.#q = q;
    this.#hi = hi;
    this.#forgetPending = new Uint8Array(hi.size);
  }
  start(slot: number): number {
    return 3 * slot;
  }
  reply(slot: number, head: number): number {
    const q = this.#q;
    const b = q.bytes;
    const step = head - 3 * slot;
    if (step === 0) {
      // CREATE's reply: the nodeid goes into RELEASE's header, the fh into its release_in.
      const create = q.chain(head);
      const release = q.chain(head + 1);
      const nodeidAt = create.body[0] ?? 0;
      const fhAt = create.body[1] ?? 0;
      b.copyWithin(release.inAt + A.IN_HEADER.nodeid, nodeidAt, nodeidAt + 8);
      b.copyWithin(release.argAt + A.RELEASE_IN.fh, fhAt + A.OPEN_OUT.fh, fhAt + 8);
      return head + 1;
    }
    if (step === 1) return head + 1;
    // UNLINK's reply: the guest drops the inode, and FORGET goes out on the hiprio queue. The
    // slot's FORGET chain is patched only once its last use is back.
    const hi = this.#hi;
    while (this.#forgetPending[slot] !== 0) this.#reapForgets(true);
    const forget = hi.chain(slot);
    const release = q.chain(head - 1);
    b.copyWithin(
      forget.inAt + A.IN_HEADER.nodeid,
      release.inAt + A.IN_HEADER.nodeid,
      release.inAt + A.IN_HEADER.nodeid + 8,
    );
    this.#forgetPending[slot] = 1;
    hi.add(slot);
    hi.commit();
    this.#reapForgets(false);
    return -1;
  }
  #reapForgets(block: boolean): void {
    const n = this.#hi.reap(block);
    for (let i = 0; i < n; i++) this.#forgetPending[this.#hi.ids[i] ?? 0] = 0;
  }
  stop(_slot: number, _head: number, next: number): number {
    return next;
  }
  /** Waits for every FORGET to come back. */
  drain(): void {
    while (this.#forgetPending.some((p) => p !== 0)) this.#reapForgets(true);
  }
  problems(): string[] {
    this.drain();
    return [];
  }
}

/** OPENDIR → READDIRPLUS from each reply's last offset until an empty reply → RELEASEDIR. */
class ReaddirRow implements RowRun {
  readonly steps = 3;
  bytes = 0;
  readonly #q: LeanQueue;
  readonly #expect: number;
  readonly #seen: Float64Array;
  readonly #aborted: Uint8Array;
  #walks = 0;
  #minSeen = Infinity;
  #maxSeen = 0;
  constructor(q: LeanQueue, depth: number, expect: number) {
    this.#q = q;
    this.#expect = expect;
    this.#seen = new Float64Array(depth);
    this.#aborted = new Uint8Array(depth);
  }
  start(slot: number): number {
    this.#seen[slot] = 0;
    this.#aborted[slot] = 0;
    return 3 * slot;
  }
  reply(slot: number, head: number): number {
    const q = this.#q;
    const b = q.bytes;
    const v = q.view;
    const step = head - 3 * slot;
    if (step === 0) {
      const open = q.chain(head);
      const rd = q.chain(head + 1);
      const rel = q.chain(head + 2);
      const fhAt = open.body[0] ?? 0;
      b.copyWithin(rd.argAt + A.READ_IN.fh, fhAt, fhAt + 8);
      b.copyWithin(rel.argAt + A.RELEASE_IN.fh, fhAt, fhAt + 8);
      v.setUint32(rd.argAt + A.READ_IN.offset, 0, true);
      v.setUint32(rd.argAt + A.READ_IN.offset + 4, 0, true);
      return head + 1;
    }
    if (step === 2) {
      if (this.#aborted[slot] !== 0) return -1;
      const seen = this.#seen[slot] ?? 0;
      this.#walks++;
      if (seen < this.#minSeen) this.#minSeen = seen;
      if (seen > this.#maxSeen) this.#maxSeen = seen;
      return -1;
    }
    const rd = q.chain(head);
    const len = v.getUint32(rd.outAt + A.OUT_HEADER.len, true) - A.OUT_HEADER.size;
    if (len <= 0 || v.getInt32(rd.outAt + A.OUT_HEADER.error, true) !== 0) return head + 1;
    this.bytes += len;
    const page = rd.body[0] ?? 0;
    let at = 0;
    let last = -1;
    let n = 0;
    while (at + A.DIRENTPLUS.size <= len) {
      const namelen = v.getUint32(page + at + A.DIRENTPLUS.dirent + A.DIRENT.namelen, true);
      last = at;
      n++;
      at += (A.DIRENTPLUS.size + namelen + 7) & ~7;
    }
    this.#seen[slot] = (this.#seen[slot] ?? 0) + n;
    if (last < 0) return head + 1;
    const offAt = page + last + A.DIRENTPLUS.dirent + A.DIRENT.off;
    b.copyWithin(rd.argAt + A.READ_IN.offset, offAt, offAt + 8);
    return head;
  }
  stop(slot: number, head: number, next: number): number {
    // A walk in progress is cut short: straight to RELEASEDIR (not counted as a walk).
    if (next === head && head === 3 * slot + 1) {
      this.#aborted[slot] = 1;
      return head + 1;
    }
    return next;
  }
  problems(): string[] {
    if (this.#walks > 0 && this.#minSeen < this.#expect) {
      return [`a READDIRPLUS walk saw ${this.#minSeen} entries of ${this.#expect}`];
    }
    return [];
  }
  /** Walks completed, and the fewest and most entries one saw. */
  get walks(): { walks: number; minEntries: number; maxEntries: number } {
    return { walks: this.#walks, minEntries: this.#minSeen, maxEntries: this.#maxSeen };
  }
}

/** LOOKUP of `f000000`, `f000001`, ... in `parent`: each slot patches its name's digits. */
class ManyLookupRow implements RowRun {
  readonly steps = 1;
  bytes = 0;
  readonly #q: LeanQueue;
  #next = 0;
  constructor(q: LeanQueue) {
    this.#q = q;
  }
  start(slot: number): number {
    const name = this.#q.chain(slot).argAt + 1;
    let n = this.#next++;
    for (let i = 5; i >= 0; i--) {
      this.#q.bytes[name + i] = 0x30 + (n % 10);
      n = Math.floor(n / 10);
    }
    return slot;
  }
  reply(): number {
    return -1;
  }
  stop(_slot: number, _head: number, next: number): number {
    return next;
  }
  problems(): string[] {
    return [];
  }
}

function getattrIn(): Uint8Array {
  return new Uint8Array(A.GETATTR_IN.size);
}

function writeIn(fh: bigint, offset: number, size: number): Uint8Array {
  const b = new Uint8Array(A.WRITE_IN.size);
  const v = new DataView(b.buffer);
  v.setBigUint64(A.WRITE_IN.fh, fh, true);
  v.setBigUint64(A.WRITE_IN.offset, BigInt(offset), true);
  v.setUint32(A.WRITE_IN.sizeField, size, true);
  v.setUint32(A.WRITE_IN.flags, O_RDWR, true);
  return b;
}

/** Offset of slot `slot`'s `size`-byte request in a file of `fileSize` bytes. */
function slotOffset(slot: number, size: number, fileSize: number): number {
  const slots = Math.max(1, Math.floor(fileSize / size));
  return (slot % slots) * size;
}

const readRow = (id: string, label: string, size: number, kind: "fixed" | "bulk"): Row => ({
  id,
  label,
  kind,
  unit: "request",
  moves: true,
  build(q, _hi, h, depth) {
    for (let s = 0; s < depth; s++) {
      q.place(s, {
        opcode: A.FUSE_READ,
        nodeid: h.data,
        args: [readIn(h.dataFh, slotOffset(s, size, h.fileSize), size, O_RDONLY)],
        reply: pages(size),
      });
    }
    return new ReadRow(q, size);
  },
});

const writeRow = (id: string, label: string, size: number, kind: "fixed" | "bulk"): Row => ({
  id,
  label,
  kind,
  unit: "request",
  moves: true,
  build(q, _hi, h, depth) {
    const fill = new Uint8Array(PAGE).fill(0x5a);
    for (let s = 0; s < depth; s++) {
      q.place(s, {
        opcode: A.FUSE_WRITE,
        nodeid: h.wfile,
        args: [
          writeIn(h.wfileFh, slotOffset(s, size, h.fileSize), size),
          ...pages(size).map(() => fill),
        ],
        reply: [A.WRITE_OUT.size],
      });
    }
    return new SingleRow(size);
  },
});

/** The rows of the wire benchmark, in the order they run. */
export const ROWS: readonly Row[] = [
  {
    id: "lookup",
    label: "LOOKUP",
    kind: "fixed",
    unit: "request",
    moves: false,
    build(q, _hi, _h, depth) {
      for (let s = 0; s < depth; s++) {
        q.place(s, {
          opcode: A.FUSE_LOOKUP,
          nodeid: 1n,
          args: [cstr("warm")],
          reply: [A.ENTRY_OUT.size],
        });
      }
      return new SingleRow(0);
    },
  },
  {
    id: "getattr",
    label: "GETATTR",
    kind: "fixed",
    unit: "request",
    moves: false,
    build(q, _hi, h, depth) {
      for (let s = 0; s < depth; s++) {
        q.place(s, {
          opcode: A.FUSE_GETATTR,
          nodeid: h.warm,
          args: [getattrIn()],
          reply: [A.ATTR_OUT.size],
        });
      }
      return new SingleRow(0);
    },
  },
  readRow("read4k", "READ 4 KiB", PAGE, "fixed"),
  readRow("read1m", "READ 1 MiB", 1 << 20, "bulk"),
  writeRow("write4k", "WRITE 4 KiB", PAGE, "fixed"),
  writeRow("write1m", "WRITE 1 MiB", 1 << 20, "bulk"),
  {
    id: "create",
    label: "CREATE+RELEASE+UNLINK",
    kind: "fixed",
    unit: "3 requests",
    moves: false,
    build(q, hi, h, depth) {
      for (let s = 0; s < depth; s++) {
        const name = cstr(`c${String(s).padStart(4, "0")}`);
        const createIn = new Uint8Array(A.CREATE_IN.size);
        const cv = new DataView(createIn.buffer);
        cv.setUint32(A.CREATE_IN.flags, O_CREAT | O_EXCL | O_RDWR, true);
        cv.setUint32(A.CREATE_IN.mode, 0o100644, true);
        cv.setUint32(A.CREATE_IN.umask, 0o022, true);
        q.place(3 * s, {
          opcode: A.FUSE_CREATE,
          nodeid: h.cru,
          args: [createIn, name],
          reply: [A.ENTRY_OUT.size, A.OPEN_OUT.size],
        });
        const releaseIn = new Uint8Array(A.RELEASE_IN.size);
        new DataView(releaseIn.buffer).setUint32(A.RELEASE_IN.flags, O_RDWR, true);
        q.place(3 * s + 1, { opcode: A.FUSE_RELEASE, nodeid: 0n, args: [releaseIn], reply: [] });
        q.place(3 * s + 2, { opcode: A.FUSE_UNLINK, nodeid: h.cru, args: [name], reply: [] });
        const forgetIn = new Uint8Array(A.FORGET_IN.size);
        new DataView(forgetIn.buffer).setBigUint64(A.FORGET_IN.nlookup, 1n, true);
        hi.place(s, {
          opcode: A.FUSE_FORGET,
          nodeid: 0n,
          args: [forgetIn],
          reply: null,
          contiguous: true,
        });
      }
      return new CreateRow(q, hi);
    },
  },
  {
    id: "readdirplus",
    label: "READDIRPLUS",
    kind: "bulk",
    unit: "walk",
    moves: true,
    build(q, _hi, h, depth) {
      for (let s = 0; s < depth; s++) {
        const openIn = new Uint8Array(A.OPEN_IN.size);
        new DataView(openIn.buffer).setUint32(A.OPEN_IN.flags, O_RDONLY | O_DIRECTORY, true);
        q.place(3 * s, {
          opcode: A.FUSE_OPENDIR,
          nodeid: h.dir,
          args: [openIn],
          reply: [A.OPEN_OUT.size],
        });
        q.place(3 * s + 1, {
          opcode: A.FUSE_READDIRPLUS,
          nodeid: h.dir,
          args: [readIn(0n, 0, PAGE, O_RDONLY | O_DIRECTORY)],
          reply: [PAGE],
        });
        const releaseIn = new Uint8Array(A.RELEASE_IN.size);
        new DataView(releaseIn.buffer).setUint32(A.RELEASE_IN.flags, O_RDONLY | O_DIRECTORY, true);
        q.place(3 * s + 2, {
          opcode: A.FUSE_RELEASEDIR,
          nodeid: h.dir,
          args: [releaseIn],
          reply: [],
        });
      }
      return new ReaddirRow(q, depth, h.dirEntries);
    },
  },
];

/** LOOKUP of distinct files `f000000`... in `h.many` (the inode-count phase). */
export const MANY_LOOKUPS: Row = {
  id: "lookup-many",
  label: "LOOKUP (distinct files)",
  kind: "fixed",
  unit: "request",
  moves: false,
  build(q, _hi, h, depth) {
    if (h.many === undefined) throw new Error("no directory of many files");
    for (let s = 0; s < depth; s++) {
      q.place(s, {
        opcode: A.FUSE_LOOKUP,
        nodeid: h.many,
        args: [cstr("f000000")],
        reply: [A.ENTRY_OUT.size],
      });
    }
    return new ManyLookupRow(q);
  },
};

/** Latency at depth 1: one sample per iteration, in µs. */
export interface LatencyRun {
  /** Samples taken. */
  n: number;
  /** Median µs per iteration. */
  p50: number;
  /** 99th percentile µs per iteration. */
  p99: number;
  /** Mean µs per iteration. */
  mean: number;
}

/** Throughput at depth N over the measured window. */
export interface ThroughputRun {
  /** Requests answered on the request queue per second. */
  reqPerS: number;
  /** Payload MiB per second. */
  mibPerS: number;
  /** Iterations completed per second. */
  itersPerS: number;
  /** Seconds measured. */
  seconds: number;
  /** Requests counted. */
  requests: number;
}

const sampleBuffer = { data: new Float64Array(1 << 20) };

/**
 * One iteration at a time on slot 0 for `seconds` (and at least `minIters` iterations), after
 * `warmSeconds` of unmeasured ones; each sample is one iteration's wall time.
 */
export function runLatency(
  q: LeanQueue,
  run: RowRun,
  seconds: number,
  minIters: number,
  warmSeconds: number,
  onWindow?: (start: boolean) => void,
): LatencyRun {
  const one = (): void => {
    let head = run.start(0);
    for (;;) {
      q.add(head);
      q.commit();
      q.reap(true);
      const next = run.reply(0, head);
      if (next < 0) return;
      head = next;
    }
  };
  const warmEnd = performance.now() + warmSeconds * 1000;
  while (performance.now() < warmEnd) one();
  const samples = sampleBuffer.data;
  let n = 0;
  onWindow?.(true);
  let prev = performance.now();
  const end = prev + seconds * 1000;
  while (n < samples.length) {
    one();
    const t = performance.now();
    samples[n++] = t - prev;
    prev = t;
    if (t >= end && n >= minIters) break;
  }
  onWindow?.(false);
  const sorted = samples.subarray(0, n).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i] ?? 0;
  const pick = (p: number): number => (sorted[Math.min(n - 1, Math.floor(p * n))] ?? 0) * 1000;
  return { n, p50: pick(0.5), p99: pick(0.99), mean: (sum / n) * 1000 };
}

/**
 * `depth` iterations in flight, each slot starting a new one as soon as its last ends, for
 * `warmSeconds` unmeasured then `seconds` measured (or, with `maxIters`, until that many
 * iterations have started); then the iterations in flight are ended cleanly.
 * `onWindow(start)` is called at the start (true) and end (false) of the measured window.
 */
export function runThroughput(
  q: LeanQueue,
  run: RowRun,
  depth: number,
  seconds: number,
  warmSeconds: number,
  opts: { maxIters?: number; onWindow?: (start: boolean) => void } = {},
): ThroughputRun {
  const steps = run.steps;
  const ids = q.ids;
  const maxIters = opts.maxIters ?? Infinity;
  let started = 0;
  let active = 0;
  for (let s = 0; s < depth && started < maxIters; s++) {
    q.add(run.start(s));
    started++;
    active++;
  }
  q.commit();
  let requests = 0;
  let iters = 0;
  let t0 = performance.now();
  const warmEnd = t0 + warmSeconds * 1000;
  let end = warmEnd + seconds * 1000;
  let measuring = warmSeconds <= 0;
  let stopping = false;
  let r0 = 0, b0 = 0, i0 = 0;
  let r1 = 0, b1 = 0, i1 = 0, t1 = 0;
  if (measuring) opts.onWindow?.(true);
  while (active > 0) {
    const n = q.reap(true);
    requests += n;
    for (let i = 0; i < n; i++) {
      const head = ids[i] ?? 0;
      const slot = (head / steps) | 0;
      let next = run.reply(slot, head);
      if (next < 0) {
        iters++;
        if (stopping || started >= maxIters) {
          active--;
          continue;
        }
        next = run.start(slot);
        started++;
      } else if (stopping) {
        next = run.stop(slot, head, next);
        if (next < 0) {
          active--;
          continue;
        }
      }
      q.add(next);
    }
    q.commit();
    if (!stopping) {
      const t = performance.now();
      if (!measuring && t >= warmEnd) {
        measuring = true;
        t0 = t;
        end = t + seconds * 1000;
        r0 = requests;
        b0 = run.bytes;
        i0 = iters;
        opts.onWindow?.(true);
      } else if (measuring && (t >= end || started >= maxIters)) {
        stopping = true;
        t1 = t;
        r1 = requests;
        b1 = run.bytes;
        i1 = iters;
        opts.onWindow?.(false);
      }
    }
  }
  if (!stopping) {
    // maxIters reached before the window closed.
    t1 = performance.now();
    r1 = requests;
    b1 = run.bytes;
    i1 = iters;
    opts.onWindow?.(false);
  }
  const secs = (t1 - t0) / 1000;
  return {
    reqPerS: (r1 - r0) / secs,
    mibPerS: (b1 - b0) / secs / (1 << 20),
    itersPerS: (i1 - i0) / secs,
    seconds: secs,
    requests: r1 - r0,
  };
}

// ---- DAX: reading a file through the cache window, against FUSE_READ -------------------------

/** One DAX range (Linux's FUSE_DAX_SZ, 2 MiB): what one SETUPMAPPING maps. */
export const DAX_RANGE = 1 << A.FUSE_DAX_SHIFT;
/** Linux's REMOVEMAPPING batch. */
const REMOVE_BATCH = A.FUSE_REMOVEMAPPING_MAX_ENTRY;

/**
 * Fills `chunk` with the DAX file's bytes from file offset `at` (a multiple of PAGE): each page
 * starts with its page number and its complement (u32 each), then a fixed pattern. One word per
 * page tells whether a read (through the window or by FUSE_READ) got the right page.
 */
export function fillDaxChunk(chunk: Uint8Array, at: number): void {
  const v = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 2654435761) >>> 24;
  for (let off = 0; off + 8 <= chunk.length; off += PAGE) {
    const page = (at + off) / PAGE;
    v.setUint32(off, page >>> 0, true);
    v.setUint32(off + 4, ~page >>> 0, true);
  }
}

/** Pages of `v` (`bytes` long, file offset `at`) whose stamp is not their page number. */
function badPages(v: DataView, bytes: number, at: number): number {
  let bad = 0;
  for (let off = 0; off + 8 <= bytes; off += PAGE) {
    const page = (at + off) / PAGE;
    if (v.getUint32(off, true) !== page >>> 0 || v.getUint32(off + 4, true) !== ~page >>> 0) {
      bad++;
    }
  }
  return bad;
}

/** Sets a u64 field of guest memory from a number below 2^53 (no BigInt: nothing allocated). */
function setU64(v: DataView, at: number, x: number): void {
  v.setUint32(at, x >>> 0, true);
  v.setUint32(at + 4, Math.floor(x / 0x1_0000_0000), true);
}

function getU64(v: DataView, at: number): number {
  return v.getUint32(at + 4, true) * 0x1_0000_0000 + v.getUint32(at, true);
}

/** The window half of the DAX row: maps, two passes over the window, the unmap. */
export interface DaxWindowRun {
  /** Bytes mapped and read (the file's and the window's size). */
  bytes: number;
  /** SETUPMAPPINGs sent (one per 2 MiB range), one at a time. */
  ranges: number;
  /** Seconds for all of them (each answered after the front end mapped the range). */
  setupSeconds: number;
  /** Seconds of the first pass over the window: every page touched for the first time. */
  coldSeconds: number;
  /** Seconds of the second pass. */
  warmSeconds: number;
  /** Seconds of the REMOVEMAPPINGs of every range (256 ranges per request, as Linux batches). */
  removeSeconds: number;
  /** Wrong pages, mappings left, refusals. */
  problems: string[];
}

/**
 * Maps `bytes` of file `nodeid` (from offset 0) into the window at offset 0 with one
 * SETUPMAPPING per 2 MiB range (`fh` -1 and FLAG_READ, as Linux maps for a read), one at a
 * time; reads the whole window twice by copying it, 2 MiB at a time, into a buffer in guest
 * memory (what a guest's read(2) of a DAX file does: a memcpy from the window into the user's
 * pages); then unmaps every range with REMOVEMAPPING. `q` must serve the front end's back-end
 * channel meanwhile (`LeanQueue.serviceWith`, set here for the maps and the unmaps only).
 * Heads 0 .. 1 + bytes / 512 MiB are used and freed. The copy loops allocate nothing.
 */
export function runDaxWindow(
  q: LeanQueue,
  fe: VhostUserFrontend,
  nodeid: bigint,
  bytes: number,
): DaxWindowRun {
  const problems: string[] = [];
  const window: CacheWindow = fe.window;
  const n = Math.floor(bytes / DAX_RANGE);
  if (n * DAX_RANGE !== bytes || bytes > window.size) {
    throw new RangeError(`${bytes} bytes is not a whole number of ranges in the window`);
  }
  const v = q.view;
  // SETUPMAPPING at head 0, patched per range.
  const setupIn = new Uint8Array(A.SETUPMAPPING_IN.size);
  const sv = new DataView(setupIn.buffer);
  sv.setBigUint64(A.SETUPMAPPING_IN.fh, 0xffff_ffff_ffff_ffffn, true);
  sv.setBigUint64(A.SETUPMAPPING_IN.len, BigInt(DAX_RANGE), true);
  sv.setBigUint64(A.SETUPMAPPING_IN.flags, A.FUSE_SETUPMAPPING_FLAG_READ, true);
  const setup = q.place(0, {
    opcode: A.FUSE_SETUPMAPPING,
    nodeid,
    args: [setupIn],
    reply: [],
  });
  // REMOVEMAPPING of every range, 256 per request, at heads 1...
  const batches = Math.ceil(n / REMOVE_BATCH);
  for (let b = 0; b < batches; b++) {
    const count = Math.min(REMOVE_BATCH, n - b * REMOVE_BATCH);
    const removeIn = new Uint8Array(A.REMOVEMAPPING_IN.size + count * A.REMOVEMAPPING_ONE.size);
    const rv = new DataView(removeIn.buffer);
    rv.setUint32(A.REMOVEMAPPING_IN.count, count, true);
    for (let i = 0; i < count; i++) {
      const at = A.REMOVEMAPPING_IN.size + i * A.REMOVEMAPPING_ONE.size;
      const off = (b * REMOVE_BATCH + i) * DAX_RANGE;
      rv.setBigUint64(at + A.REMOVEMAPPING_ONE.moffset, BigInt(off), true);
      rv.setBigUint64(at + A.REMOVEMAPPING_ONE.len, BigInt(DAX_RANGE), true);
    }
    q.place(1 + b, { opcode: A.FUSE_REMOVEMAPPING, nodeid: 1n, args: [removeIn], reply: [] });
  }
  // The destination: 2 MiB of guest memory, touched before (a user buffer the guest reuses).
  const dstGpa = q.mem.alloc(DAX_RANGE, PAGE);
  const dstAt = q.mem.offsetOf(dstGpa, DAX_RANGE);
  const dst = q.bytes.subarray(dstAt, dstAt + DAX_RANGE);
  dst.fill(0);
  const refusedBefore = fe.windowStats.refused;
  try {
    q.serviceWith(fe);
    const foffsetAt = setup.argAt + A.SETUPMAPPING_IN.foffset;
    const moffsetAt = setup.argAt + A.SETUPMAPPING_IN.moffset;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      setU64(v, foffsetAt, i * DAX_RANGE);
      setU64(v, moffsetAt, i * DAX_RANGE);
      q.add(0);
      q.commit();
      q.reap(true);
    }
    const t1 = performance.now();
    q.serviceWith(undefined);
    const live = window.mappings().length;
    if (live !== n) problems.push(`${live} mappings live after ${n} SETUPMAPPINGs`);
    let coldSeconds = NaN;
    let warmSeconds = NaN;
    if (live === n && window.isMapped(0, bytes)) {
      const whole = window.view(0, bytes);
      const src = Array.from(
        { length: n },
        (_, i) => whole.subarray(i * DAX_RANGE, (i + 1) * DAX_RANGE),
      );
      const c0 = performance.now();
      for (let i = 0; i < n; i++) dst.set(src[i] as Uint8Array);
      const c1 = performance.now();
      for (let i = 0; i < n; i++) dst.set(src[i] as Uint8Array);
      const c2 = performance.now();
      coldSeconds = (c1 - c0) / 1000;
      warmSeconds = (c2 - c1) / 1000;
      const bad = badPages(new DataView(whole.buffer, whole.byteOffset, bytes), bytes, 0);
      if (bad > 0) problems.push(`${bad} pages read through the window were not the file's`);
      const last = badPages(
        new DataView(dst.buffer, dst.byteOffset, DAX_RANGE),
        DAX_RANGE,
        bytes - DAX_RANGE,
      );
      if (last > 0) problems.push(`${last} pages copied out of the window were wrong`);
    }
    q.serviceWith(fe);
    const r0 = performance.now();
    for (let b = 0; b < batches; b++) q.add(1 + b);
    q.commit();
    for (let got = 0; got < batches;) got += q.reap(true);
    const r1 = performance.now();
    const left = window.mappings().length;
    if (left > 0) problems.push(`${left} mappings left after REMOVEMAPPING of every range`);
    const refused = fe.windowStats.refused - refusedBefore;
    if (refused > 0) {
      problems.push(
        `the front end refused ${refused} SHMEM requests (${fe.windowStats.lastRefusal})`,
      );
    }
    return {
      bytes,
      ranges: n,
      setupSeconds: (t1 - t0) / 1000,
      coldSeconds,
      warmSeconds,
      removeSeconds: (r1 - r0) / 1000,
      problems,
    };
  } finally {
    q.serviceWith(undefined);
    q.mem.free(dstGpa, DAX_RANGE);
    for (let h = 0; h <= batches; h++) q.free(h);
  }
}

/** One sweep of FUSE_READ over a file. */
export interface SweepRun {
  /** Seconds from the first request published to the last reply taken. */
  seconds: number;
  /** Bytes the replies carried. */
  bytes: number;
  /** Requests answered. */
  requests: number;
  /** Short replies, wrong pages. */
  problems: string[];
}

/**
 * FUSE_READ of all `fileSize` bytes of `nodeid` (handle `fh`) in `chunk`-byte requests from
 * offset 0 up, `depth` in flight (chains at heads `firstHead` ...; freed at the end), after one
 * unmeasured lap of `depth` requests (every reply buffer touched once). Each reply's length and
 * the stamp of its first page are checked (one word per request). Allocates nothing while it
 * measures.
 */
export function runReadSweep(
  q: LeanQueue,
  nodeid: bigint,
  fh: bigint,
  fileSize: number,
  chunk: number,
  depth: number,
  firstHead: number,
): SweepRun {
  for (let k = 0; k < depth; k++) {
    q.place(firstHead + k, {
      opcode: A.FUSE_READ,
      nodeid,
      args: [readIn(fh, 0, chunk, O_RDONLY)],
      reply: pages(chunk),
    });
  }
  const v = q.view;
  const ids = q.ids;
  let short = 0;
  let wrong = 0;
  const sweep = (total: number): { seconds: number; bytes: number; requests: number } => {
    let next = 0;
    let inFlight = 0;
    let bytes = 0;
    let requests = 0;
    const t0 = performance.now();
    for (let k = 0; k < depth && next < total; k++) {
      setU64(v, q.chain(firstHead + k).argAt + A.READ_IN.offset, next);
      q.add(firstHead + k);
      next += chunk;
      inFlight++;
    }
    q.commit();
    while (inFlight > 0) {
      const got = q.reap(true);
      for (let i = 0; i < got; i++) {
        const head = ids[i] ?? 0;
        const c = q.chain(head);
        const len = v.getUint32(c.outAt + A.OUT_HEADER.len, true) - A.OUT_HEADER.size;
        const offset = getU64(v, c.argAt + A.READ_IN.offset);
        if (len !== chunk) short++;
        else if (v.getUint32(c.body[0] ?? 0, true) !== (offset / PAGE) >>> 0) wrong++;
        if (len > 0) bytes += len;
        requests++;
        inFlight--;
        if (next < total) {
          setU64(v, c.argAt + A.READ_IN.offset, next);
          q.add(head);
          next += chunk;
          inFlight++;
        }
      }
      q.commit();
    }
    return { seconds: (performance.now() - t0) / 1000, bytes, requests };
  };
  try {
    sweep(Math.min(fileSize, depth * chunk));
    short = 0;
    wrong = 0;
    const r = sweep(fileSize);
    const problems: string[] = [];
    if (short > 0) problems.push(`${short} READ replies were not ${chunk} bytes`);
    if (wrong > 0) problems.push(`${wrong} READ replies carried the wrong pages`);
    return { ...r, problems };
  } finally {
    for (let k = 0; k < depth; k++) q.free(firstHead + k);
  }
}
