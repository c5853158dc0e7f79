/**
 * JIT warm-up. V8 runs a function in its interpreter until it has been called a few thousand
 * times, and only then compiles it with its optimizing compiler. A guest under load sends that
 * many requests in a second, but the first `ls` of a large directory, or the first seconds of a
 * new workload after the daemon starts, would run interpreted: several times slower per request
 * (a 2,000-entry listing took twice as long on its first pass as on the next ones).
 *
 * So while the device has nothing else to do (before the front end connects, and while the
 * guest boots), it serves requests of its own: a private FUSE session over a private file
 * system of the same kind and configuration, on a temporary directory of its own (never the
 * shared one; removed afterwards), with requests laid out in private memory as a Linux guest
 * lays them out (in header, arguments, out header, reply buffers, 4 KiB pages for data). The
 * requests travel on a split virtqueue of its own: placed and published by the driver side
 * (`GuestQueue` over `GuestRam`, the test driver's, with EVENT_IDX), taken, served and returned
 * by the device's own path (`SplitQueue.pop`, `FuseSession.handle`, `pushUsed`, over a
 * `GuestMemory` mapping the same memfd, as the device maps the guest's). The same functions
 * then have their type feedback and optimized code when the guest's first requests arrive. It
 * runs in slices of a few milliseconds from the device's event loop, so a control message or a
 * kick waits at most one slice.
 *
 * @module
 */
import { O_DIRECTORY, O_RDONLY, O_RDWR, S_IFDIR, S_IFREG } from "../ffi/mod.ts";
import * as A from "../wire/fuse.ts";
import { FuseSession } from "../fuse/session.ts";
import type { FileSystem } from "../filesystem/filesystem.ts";
import { type Logger, silentLogger } from "../log.ts";
import { GuestMemory } from "../memory/guest_memory.ts";
import { SplitQueue } from "../virtqueue/split_queue.ts";
import { GuestRam } from "../driver/guest_ram.ts";
import { GuestQueue } from "../driver/guest_queue.ts";

/** Rounds of the request mix (each about 40 requests and two 300-entry listings). */
const ROUNDS = 400;
/** Files in the listed directory. */
const ENTRIES = 300;
const PAGE = 4096;

// Private memory: the rings, the request, the reply header and body, data pages.
const GPA = 0x10_0000;
const SIZE = 1 << 20;
/** The queue's size (a chain has at most 3 + READ_PAGES descriptors; one is in flight). */
const QUEUE_SIZE = 256;
/** Room for the arguments after the in header. */
const IN_ROOM = 128 << 10;
const BODY_ROOM = 64 << 10;
/** Data pages of the largest READ. */
const READ_PAGES = 32;

/** The warm-up: `step()` until it returns true, then `close()`. */
export class Warmup {
  readonly #dir: string;
  /** The directory is ours to remove (we made it). */
  readonly #owned: boolean;
  readonly #fs: FileSystem & { close?(): void };
  readonly #session: FuseSession;
  /** The driver side: private guest memory and the queue placed in it. */
  readonly #ram: GuestRam;
  readonly #driver: GuestQueue;
  /** The device side: the same memory mapped again, and the same queue. */
  readonly #memory = new GuestMemory();
  readonly #queue: SplitQueue;
  /** Guest memory's bytes (the driver's mapping), and a DataView over them. */
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  /** The buffers: guest-physical addresses, and offsets in `#bytes`. */
  readonly #inGpa: number;
  readonly #outGpa: number;
  readonly #bodyGpa: number;
  readonly #pagesGpa: number;
  readonly #in: number;
  readonly #out: number;
  readonly #body: number;
  /** Why the device refused a chain (a bug of the warm-up's own), or "". */
  #badChain = "";
  readonly #onBadChain = (why: string): void => {
    this.#badChain = why;
  };
  readonly #enc = new TextEncoder();
  #unique = 1;
  #round = 0;
  /** Nodeids a READDIRPLUS reply looked up, forgotten with one BATCH_FORGET. */
  readonly #pending: number[] = [];
  /** The request being sent is expected to fail (its error is not counted). */
  #expectError = false;
  #started = false;
  /** Requests served so far. */
  requests = 0;
  /** Replies with an error that the mix did not expect (its one absent name aside). */
  unexpectedErrors = 0;
  /** The first of them: opcode and errno. */
  firstUnexpected = "";

  /**
   * A warm-up serving `makeFs(dir)`, a file system like the device's on a new temporary
   * directory, or on the empty directory `dir` (which its maker removes: the sandbox's, made
   * outside it). Throws when the directory or the private memory cannot be made.
   */
  constructor(makeFs: (dir: string, log: Logger) => FileSystem & { close?(): void }, dir?: string) {
    this.#owned = dir === undefined;
    this.#dir = dir ?? Deno.makeTempDirSync({ prefix: "deno-virtiofsd-warmup-" });
    let ram: GuestRam | undefined;
    try {
      Deno.mkdirSync(`${this.#dir}/d`);
      for (let i = 0; i < ENTRIES; i++) {
        Deno.writeFileSync(`${this.#dir}/d/entry-${i}`, new Uint8Array(0));
      }
      Deno.writeFileSync(`${this.#dir}/f`, new Uint8Array(1 << 20).fill(0x5a));
      ram = GuestRam.create({
        regions: [{ guestPhysAddr: GPA, size: SIZE }],
        name: "deno-virtiofsd-warmup",
      });
      this.#ram = ram;
      const q = new GuestQueue(ram, { size: QUEUE_SIZE, eventIdx: true });
      this.#driver = q;
      this.#inGpa = ram.alloc(A.IN_HEADER.size + IN_ROOM);
      this.#outGpa = ram.alloc(A.OUT_HEADER.size);
      this.#bodyGpa = ram.alloc(BODY_ROOM);
      this.#pagesGpa = ram.alloc(READ_PAGES * PAGE, PAGE);
      this.#bytes = ram.bytes;
      this.#view = new DataView(ram.bytes.buffer, ram.bytes.byteOffset, ram.bytes.byteLength);
      this.#in = ram.offsetOf(this.#inGpa, A.IN_HEADER.size + IN_ROOM);
      this.#out = ram.offsetOf(this.#outGpa, A.OUT_HEADER.size);
      this.#body = ram.offsetOf(this.#bodyGpa, BODY_ROOM);
      // The device's view, as a front end hands the guest's memory over (add() closes the fd).
      for (const r of ram.regions) this.#memory.add(r, ram.dupFd());
      this.#queue = new SplitQueue(
        QUEUE_SIZE,
        {
          desc: ram.gpaToUserspace(q.descGpa),
          avail: ram.gpaToUserspace(q.availGpa),
          used: ram.gpaToUserspace(q.usedGpa),
        },
        0,
        true,
      );
      const problem = this.#queue.map(this.#memory);
      if (problem !== undefined) throw new Error(`Cannot map the warm-up's queue: ${problem}`);
      this.#fs = makeFs(this.#dir, silentLogger);
      this.#session = new FuseSession(silentLogger, this.#fs);
    } catch (e) {
      this.#memory.clear();
      ram?.close();
      if (this.#owned) Deno.removeSync(this.#dir, { recursive: true });
      throw e;
    }
  }

  /** Runs the mix for about `sliceMs` milliseconds. Returns true when the warm-up is done. */
  step(sliceMs: number): boolean {
    const end = performance.now() + sliceMs;
    if (!this.#started) {
      this.#started = true;
      this.#init();
    }
    while (this.#round < ROUNDS) {
      this.#mix(this.#round++);
      if (performance.now() >= end) break;
    }
    return this.#round >= ROUNDS;
  }

  /** Ends the private session and removes the temporary directory (if it made it). */
  close(): void {
    try {
      this.#session.reset();
      this.#fs.close?.();
    } finally {
      this.#memory.clear();
      this.#ram.close();
      if (this.#owned) Deno.removeSync(this.#dir, { recursive: true });
    }
  }

  // ------------------------------------------------------------------ the request mix

  #init(): void {
    const a = this.#args(A.INIT_IN.size);
    this.#view.setUint32(a + A.INIT_IN.major, A.FUSE_KERNEL_VERSION, true);
    this.#view.setUint32(a + A.INIT_IN.minor, A.FUSE_KERNEL_MINOR_VERSION, true);
    this.#view.setUint32(a + A.INIT_IN.maxReadahead, 1 << 20, true);
    this.#view.setUint32(a + A.INIT_IN.flags, 0xffff_ffff, true);
    this.#send(A.FUSE_INIT, 0, A.INIT_IN.size, A.INIT_OUT.size);
  }

  /** One round: lookups, attributes, a file's reads and writes, listings, a file and a directory made and removed. */
  #mix(round: number): void {
    const dir = this.#lookup(1, "d");
    const file = this.#lookup(1, "f");
    this.#expectError = true;
    this.#lookup(1, "missing");
    this.#expectError = false;
    this.#getattr(dir);
    this.#getattr(file);
    // A file's data: reads of 4 KiB and 128 KiB (in pages), writes of 4 KiB.
    const fh = this.#open(file, O_RDWR);
    this.#read(file, fh, (round % 64) * PAGE, PAGE);
    this.#read(file, fh, 0, 32 * PAGE);
    this.#write(file, fh, (round % 16) * PAGE, PAGE);
    this.#fhOp(A.FUSE_FLUSH, file, fh, A.FLUSH_IN.size);
    this.#fhOp(A.FUSE_RELEASE, file, fh, A.RELEASE_IN.size);
    // Listings: READDIR every round, READDIRPLUS every other (its entries are forgotten).
    this.#list(dir, false);
    if (round % 2 === 0) this.#list(dir, true);
    // Made and removed.
    const made = this.#create(1, "new");
    if (made.nodeid !== 0) {
      this.#write(made.nodeid, made.fh, 0, PAGE);
      this.#truncate(made.nodeid);
      this.#fhOp(A.FUSE_RELEASE, made.nodeid, made.fh, A.RELEASE_IN.size);
      this.#forget(made.nodeid, 1);
    }
    this.#name(A.FUSE_UNLINK, 1, "new", 0, 0);
    const sub = this.#mkdir(1, "sub");
    if (sub !== 0) this.#forget(sub, 1);
    this.#name(A.FUSE_RMDIR, 1, "sub", 0, 0);
    this.#send(A.FUSE_STATFS, 1, 0, A.KSTATFS.size);
    if (dir !== 0) this.#forget(dir, 1);
    if (file !== 0) this.#forget(file, 1);
  }

  #lookup(parent: number, name: string): number {
    const error = this.#name(A.FUSE_LOOKUP, parent, name, 0, A.ENTRY_OUT.size);
    return error === 0 ? this.#replyU32(A.ENTRY_OUT.nodeid) : 0;
  }

  #getattr(nodeid: number): void {
    if (nodeid === 0) return;
    this.#args(A.GETATTR_IN.size);
    this.#send(A.FUSE_GETATTR, nodeid, A.GETATTR_IN.size, A.ATTR_OUT.size);
  }

  #open(nodeid: number, flags: number): number {
    const a = this.#args(A.OPEN_IN.size);
    this.#view.setUint32(a + A.OPEN_IN.flags, flags, true);
    const opcode = (flags & O_DIRECTORY) !== 0 ? A.FUSE_OPENDIR : A.FUSE_OPEN;
    return this.#send(opcode, nodeid, A.OPEN_IN.size, A.OPEN_OUT.size) === 0
      ? this.#replyU32(A.OPEN_OUT.fh)
      : 0;
  }

  #readIn(fh: number, offset: number, size: number, flags: number): void {
    const a = this.#args(A.READ_IN.size);
    const v = this.#view;
    v.setUint32(a + A.READ_IN.fh, fh, true);
    v.setUint32(a + A.READ_IN.offset, offset, true);
    v.setUint32(a + A.READ_IN.sizeField, size, true);
    v.setUint32(a + A.READ_IN.flags, flags, true);
  }

  #read(nodeid: number, fh: number, offset: number, size: number): void {
    if (nodeid === 0) return;
    this.#readIn(fh, offset, size, O_RDWR);
    this.#send(A.FUSE_READ, nodeid, A.READ_IN.size, size, true);
  }

  #write(nodeid: number, fh: number, offset: number, size: number): void {
    if (nodeid === 0) return;
    const a = this.#args(A.WRITE_IN.size + size);
    const v = this.#view;
    v.setUint32(a + A.WRITE_IN.fh, fh, true);
    v.setUint32(a + A.WRITE_IN.offset, offset, true);
    v.setUint32(a + A.WRITE_IN.sizeField, size, true);
    v.setUint32(a + A.WRITE_IN.flags, O_RDWR, true);
    this.#send(A.FUSE_WRITE, nodeid, A.WRITE_IN.size + size, A.WRITE_OUT.size);
  }

  #fhOp(opcode: number, nodeid: number, fh: number, size: number): void {
    if (nodeid === 0) return;
    const a = this.#args(size);
    this.#view.setUint32(a, fh, true);
    this.#send(opcode, nodeid, size, 0);
  }

  /** OPENDIR, READDIR(PLUS) of page-sized replies from each reply's last offset, RELEASEDIR. */
  #list(dir: number, plus: boolean): void {
    if (dir === 0) return;
    const fh = this.#open(dir, O_RDONLY | O_DIRECTORY);
    let offLo = 0;
    let offHi = 0;
    for (let guard = 0; guard < 2 * ENTRIES; guard++) {
      const a = this.#args(A.READ_IN.size);
      const v = this.#view;
      v.setUint32(a + A.READ_IN.fh, fh, true);
      v.setUint32(a + A.READ_IN.offset, offLo, true);
      v.setUint32(a + A.READ_IN.offset + 4, offHi, true);
      v.setUint32(a + A.READ_IN.sizeField, PAGE, true);
      v.setUint32(a + A.READ_IN.flags, O_RDONLY | O_DIRECTORY, true);
      const opcode = plus ? A.FUSE_READDIRPLUS : A.FUSE_READDIR;
      if (this.#send(opcode, dir, A.READ_IN.size, PAGE) !== 0) break;
      const len = v.getUint32(this.#out + A.OUT_HEADER.len, true) - A.OUT_HEADER.size;
      if (len <= 0) break;
      // Walk the records: the last one's offset resumes; READDIRPLUS entries are forgotten.
      let at = 0;
      let last = -1;
      while (at < len) {
        const dirent = plus ? at + A.DIRENTPLUS.dirent : at;
        const namelen = v.getUint32(this.#body + dirent + A.DIRENT.namelen, true);
        if (plus) {
          const nodeid = v.getUint32(this.#body + at + A.ENTRY_OUT.nodeid, true);
          if (nodeid !== 0) this.#forgetLater(nodeid);
        }
        last = dirent;
        at = dirent + ((A.DIRENT.size + namelen + 7) & ~7);
      }
      if (last < 0) break;
      offLo = v.getUint32(this.#body + last + A.DIRENT.off, true);
      offHi = v.getUint32(this.#body + last + A.DIRENT.off + 4, true);
      this.#flushForgets();
    }
    this.#flushForgets();
    this.#fhOp(A.FUSE_RELEASEDIR, dir, fh, A.RELEASE_IN.size);
  }

  #forgetLater(nodeid: number): void {
    this.#pending.push(nodeid);
  }

  #flushForgets(): void {
    if (this.#pending.length === 0) return;
    // BATCH_FORGET, as Linux sends a reply's worth of them.
    const n = this.#pending.length;
    const a = this.#args(A.BATCH_FORGET_IN.size + n * A.FORGET_ONE.size);
    const v = this.#view;
    v.setUint32(a + A.BATCH_FORGET_IN.count, n, true);
    for (let i = 0; i < n; i++) {
      const at = a + A.BATCH_FORGET_IN.size + i * A.FORGET_ONE.size;
      v.setUint32(at + A.FORGET_ONE.nodeid, this.#pending[i] ?? 0, true);
      v.setUint32(at + A.FORGET_ONE.nodeid + 4, 0, true);
      v.setUint32(at + A.FORGET_ONE.nlookup, 1, true);
      v.setUint32(at + A.FORGET_ONE.nlookup + 4, 0, true);
    }
    this.#pending.length = 0;
    this.#send(A.FUSE_BATCH_FORGET, 0, A.BATCH_FORGET_IN.size + n * A.FORGET_ONE.size, -1);
  }

  #forget(nodeid: number, nlookup: number): void {
    const a = this.#args(A.FORGET_IN.size);
    this.#view.setUint32(a + A.FORGET_IN.nlookup, nlookup, true);
    this.#send(A.FUSE_FORGET, nodeid, A.FORGET_IN.size, -1);
  }

  #create(parent: number, name: string): { nodeid: number; fh: number } {
    const a = this.#args(A.CREATE_IN.size);
    const v = this.#view;
    v.setUint32(a + A.CREATE_IN.flags, O_RDWR, true);
    v.setUint32(a + A.CREATE_IN.mode, S_IFREG | 0o644, true);
    v.setUint32(a + A.CREATE_IN.umask, 0o022, true);
    const error = this.#name(
      A.FUSE_CREATE,
      parent,
      name,
      A.CREATE_IN.size,
      A.ENTRY_OUT.size + A.OPEN_OUT.size,
    );
    if (error !== 0) return { nodeid: 0, fh: 0 };
    return {
      nodeid: this.#replyU32(A.ENTRY_OUT.nodeid),
      fh: this.#replyU32(A.ENTRY_OUT.size + A.OPEN_OUT.fh),
    };
  }

  #mkdir(parent: number, name: string): number {
    const a = this.#args(A.MKDIR_IN.size);
    this.#view.setUint32(a + A.MKDIR_IN.mode, S_IFDIR | 0o755, true);
    this.#view.setUint32(a + A.MKDIR_IN.umask, 0o022, true);
    const error = this.#name(A.FUSE_MKDIR, parent, name, A.MKDIR_IN.size, A.ENTRY_OUT.size);
    return error === 0 ? this.#replyU32(A.ENTRY_OUT.nodeid) : 0;
  }

  #truncate(nodeid: number): void {
    const a = this.#args(A.SETATTR_IN.size);
    this.#view.setUint32(a + A.SETATTR_IN.valid, A.FATTR_SIZE, true);
    this.#send(A.FUSE_SETATTR, nodeid, A.SETATTR_IN.size, A.ATTR_OUT.size);
  }

  /**
   * A request whose arguments (`fixed` bytes already written by the caller) end with `name`
   * and its NUL. Returns the reply's error.
   */
  #name(opcode: number, parent: number, name: string, fixed: number, reply: number): number {
    if (fixed === 0) this.#args(0);
    const at = this.#in + A.IN_HEADER.size + fixed;
    const n = this.#enc.encodeInto(name, this.#bytes.subarray(at, at + 255)).written;
    this.#bytes[at + n] = 0;
    return this.#send(opcode, parent, fixed + n + 1, reply);
  }

  // ------------------------------------------------------------------ the chain

  /** Where the arguments go (after the in header); `size` bytes of them are zeroed. */
  #args(size: number): number {
    const at = this.#in + A.IN_HEADER.size;
    this.#bytes.fill(0, at, at + size);
    return at;
  }

  /** The reply body's u32 at `at`. */
  #replyU32(at: number): number {
    return this.#view.getUint32(this.#body + at, true);
  }

  /**
   * Lays the request out (in header and arguments in two buffers, then the out header and a
   * body buffer, or `reply` bytes of pages when `pages`; no reply at all when `reply` is -1) as
   * one chain on the private queue, publishes it, has the device serve the queue, and takes the
   * used element back. Returns the reply's error (0 when there is no reply).
   */
  #send(opcode: number, nodeid: number, argLen: number, reply: number, pages = false): number {
    const v = this.#view;
    const h = this.#in;
    v.setUint32(h + A.IN_HEADER.len, A.IN_HEADER.size + argLen, true);
    v.setUint32(h + A.IN_HEADER.opcode, opcode, true);
    v.setUint32(h + A.IN_HEADER.unique, this.#unique++, true);
    v.setUint32(h + A.IN_HEADER.unique + 4, 0, true);
    v.setUint32(h + A.IN_HEADER.nodeid, nodeid, true);
    v.setUint32(h + A.IN_HEADER.nodeid + 4, 0, true);
    v.setUint32(h + A.IN_HEADER.uid, 0, true);
    v.setUint32(h + A.IN_HEADER.gid, 0, true);
    v.setUint32(h + A.IN_HEADER.pid, 1, true);
    v.setUint32(h + A.IN_HEADER.totalExtlen, 0, true);
    const q = this.#driver;
    q.beginChain();
    q.appendBuffer(this.#inGpa, A.IN_HEADER.size, false);
    if (argLen > 0) {
      q.appendBuffer(this.#inGpa + A.IN_HEADER.size, Math.min(argLen, IN_ROOM), false);
    }
    if (reply >= 0) {
      q.appendBuffer(this.#outGpa, A.OUT_HEADER.size, true);
      if (pages) {
        for (let p = 0; p * PAGE < reply && p < READ_PAGES; p++) {
          q.appendBuffer(this.#pagesGpa + p * PAGE, PAGE, true);
        }
      } else if (reply > 0) {
        q.appendBuffer(this.#bodyGpa, Math.min(reply, BODY_ROOM), true);
      }
    }
    const head = q.endChain();
    v.setUint32(this.#out + A.OUT_HEADER.error, 0, true);
    // Published: the kick the driver would send is this call.
    q.publish();
    this.#serve();
    const id = q.harvestNext();
    if (this.#badChain !== "") throw new Error(`warm-up chain: ${this.#badChain}`);
    if (id !== head) throw new Error(`warm-up chain ${head} came back as ${id}`);
    this.requests++;
    const error = reply >= 0 ? v.getInt32(this.#out + A.OUT_HEADER.error, true) : 0;
    if (error !== 0 && !this.#expectError) {
      if (this.unexpectedErrors++ === 0) this.firstUnexpected = `opcode ${opcode}: errno ${-error}`;
    }
    return error;
  }

  /** What the device does on a kick: serves the queue until it is empty, then the interrupt. */
  #serve(): void {
    const queue = this.#queue;
    const session = this.#session;
    for (;;) {
      while (queue.pop(this.#memory, this.#onBadChain)) {
        queue.pushUsed(queue.chain.head, session.handle(queue.chain));
      }
      if (!queue.armKick()) break;
    }
    queue.needsInterrupt();
  }
}
