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
 * lays them out (in header, arguments, out header, reply buffers, 4 KiB pages for data), walked
 * by the same `DescriptorChain` code. The same functions then have their type feedback and
 * optimized code when the guest's first requests arrive. It runs in slices of a few
 * milliseconds from the device's event loop, so a control message or a kick waits at most one
 * slice.
 *
 * @module
 */
import { memfdCreate, O_DIRECTORY, O_RDONLY, O_RDWR, S_IFDIR, S_IFREG } from "../ffi/mod.ts";
import * as A from "../wire/fuse.ts";
import { FuseSession } from "../fuse/session.ts";
import type { FileSystem } from "../filesystem/filesystem.ts";
import { type Logger, silentLogger } from "../log.ts";
import { GuestMemory, type MemoryRegion } from "../memory/guest_memory.ts";
import { DescriptorChain } from "../virtqueue/descriptor_chain.ts";
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../wire/virtio.ts";

/** Rounds of the request mix (each about 40 requests and two 300-entry listings). */
const ROUNDS = 400;
/** Files in the listed directory. */
const ENTRIES = 300;
const PAGE = 4096;

// Private memory: the descriptor table, the request, the reply header and body, data pages.
const GPA = 0x10_0000;
const SIZE = 4 << 20;
const TABLE_AT = 0;
const TABLE_ENTRIES = 512;
const IN_AT = 64 << 10;
const IN_ROOM = 128 << 10;
const OUT_AT = 256 << 10;
const BODY_AT = OUT_AT + 64;
const BODY_ROOM = 64 << 10;
const PAGES_AT = 1 << 20;

/** The warm-up: `step()` until it returns true, then `close()`. */
export class Warmup {
  readonly #dir: string;
  readonly #fs: FileSystem & { close?(): void };
  readonly #session: FuseSession;
  readonly #memory = new GuestMemory();
  readonly #region: MemoryRegion;
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  readonly #chain = new DescriptorChain();
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
   * directory. Throws when the directory or the private memory cannot be made.
   */
  constructor(makeFs: (dir: string, log: Logger) => FileSystem & { close?(): void }) {
    this.#dir = Deno.makeTempDirSync({ prefix: "deno-virtiofsd-warmup-" });
    try {
      Deno.mkdirSync(`${this.#dir}/d`);
      for (let i = 0; i < ENTRIES; i++) {
        Deno.writeFileSync(`${this.#dir}/d/entry-${i}`, new Uint8Array(0));
      }
      Deno.writeFileSync(`${this.#dir}/f`, new Uint8Array(1 << 20).fill(0x5a));
      // (add() closes the memfd: the mapping keeps the memory.)
      const region = this.#memory.add(
        { guestPhysAddr: GPA, memorySize: SIZE, userspaceAddr: GPA, mmapOffset: 0 },
        memfdCreate("deno-virtiofsd-warmup", SIZE),
      );
      this.#region = region;
      this.#bytes = region.bytes;
      this.#view = new DataView(region.bytes.buffer, region.bytes.byteOffset, SIZE);
      this.#fs = makeFs(this.#dir, silentLogger);
      this.#session = new FuseSession(silentLogger, this.#fs);
    } catch (e) {
      this.#memory.clear();
      Deno.removeSync(this.#dir, { recursive: true });
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

  /** Ends the private session and removes the temporary directory. */
  close(): void {
    try {
      this.#session.reset();
      this.#fs.close?.();
    } finally {
      this.#memory.clear();
      Deno.removeSync(this.#dir, { recursive: true });
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
      const len = v.getUint32(OUT_AT + A.OUT_HEADER.len, true) - A.OUT_HEADER.size;
      if (len <= 0) break;
      // Walk the records: the last one's offset resumes; READDIRPLUS entries are forgotten.
      let at = 0;
      let last = -1;
      while (at < len) {
        const dirent = plus ? at + A.DIRENTPLUS.dirent : at;
        const namelen = v.getUint32(BODY_AT + dirent + A.DIRENT.namelen, true);
        if (plus) {
          const nodeid = v.getUint32(BODY_AT + at + A.ENTRY_OUT.nodeid, true);
          if (nodeid !== 0) this.#forgetLater(nodeid);
        }
        last = dirent;
        at = dirent + ((A.DIRENT.size + namelen + 7) & ~7);
      }
      if (last < 0) break;
      offLo = v.getUint32(BODY_AT + last + A.DIRENT.off, true);
      offHi = v.getUint32(BODY_AT + last + A.DIRENT.off + 4, true);
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
    const at = IN_AT + A.IN_HEADER.size + fixed;
    const n = this.#enc.encodeInto(name, this.#bytes.subarray(at, at + 255)).written;
    this.#bytes[at + n] = 0;
    return this.#send(opcode, parent, fixed + n + 1, reply);
  }

  // ------------------------------------------------------------------ the chain

  /** Where the arguments go (after the in header); `size` bytes of them are zeroed. */
  #args(size: number): number {
    const at = IN_AT + A.IN_HEADER.size;
    this.#bytes.fill(0, at, at + size);
    return at;
  }

  /** The reply body's u32 at `at`. */
  #replyU32(at: number): number {
    return this.#view.getUint32(BODY_AT + at, true);
  }

  /**
   * Lays the request out (in header and arguments in two buffers, then the out header and a
   * body buffer, or `reply` bytes of pages when `pages`; no reply at all when `reply` is -1),
   * walks it and serves it. Returns the reply's error (0 when there is no reply).
   */
  #send(opcode: number, nodeid: number, argLen: number, reply: number, pages = false): number {
    const v = this.#view;
    const h = IN_AT;
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
    let d = 0;
    d = this.#desc(d, GPA + h, A.IN_HEADER.size, 0);
    if (argLen > 0) d = this.#desc(d, GPA + h + A.IN_HEADER.size, Math.min(argLen, IN_ROOM), 0);
    if (reply >= 0) {
      d = this.#desc(d, GPA + OUT_AT, A.OUT_HEADER.size, VIRTQ_DESC_F_WRITE);
      if (pages) {
        for (let p = 0; p * PAGE < reply && d < TABLE_ENTRIES; p++) {
          d = this.#desc(d, GPA + PAGES_AT + p * PAGE, PAGE, VIRTQ_DESC_F_WRITE);
        }
      } else if (reply > 0) {
        d = this.#desc(d, GPA + BODY_AT, Math.min(reply, BODY_ROOM), VIRTQ_DESC_F_WRITE);
      }
    }
    // The last descriptor ends the chain.
    const lastFlags = TABLE_AT + (d - 1) * 16 + 12;
    v.setUint16(lastFlags, v.getUint16(lastFlags, true) & ~VIRTQ_DESC_F_NEXT, true);
    v.setUint32(OUT_AT + A.OUT_HEADER.error, 0, true);
    const problem = this.#chain.walk(
      this.#memory,
      { region: this.#region, offset: this.#region.base + TABLE_AT, entries: TABLE_ENTRIES },
      0,
      TABLE_ENTRIES,
    );
    if (problem !== undefined) throw new Error(`warm-up chain: ${problem}`);
    this.#session.handle(this.#chain);
    this.requests++;
    const error = reply >= 0 ? v.getInt32(OUT_AT + A.OUT_HEADER.error, true) : 0;
    if (error !== 0 && !this.#expectError) {
      if (this.unexpectedErrors++ === 0) this.firstUnexpected = `opcode ${opcode}: errno ${-error}`;
    }
    return error;
  }

  /** Descriptor `d` (chained to `d + 1`); returns `d + 1`. */
  #desc(d: number, gpa: number, len: number, flags: number): number {
    const v = this.#view;
    const at = TABLE_AT + d * 16;
    v.setUint32(at, gpa, true);
    v.setUint32(at + 4, 0, true);
    v.setUint32(at + 8, len, true);
    v.setUint16(at + 12, flags | VIRTQ_DESC_F_NEXT, true);
    v.setUint16(at + 14, d + 1, true);
    return d + 1;
  }
}
