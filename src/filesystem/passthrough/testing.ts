/**
 * Test helpers for driving a FileSystem directly: READ/WRITE buffers that do what the session's
 * do (preadv/pwritev straight into a stable buffer), READDIR sinks sized like the guest's, a
 * temporary shared directory, and a count of this process's open descriptors.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  addressOf,
  ErrnoError,
  IOVEC,
  preadvRaw,
  pwritevRaw,
  setU64,
  stableBytes,
} from "../../ffi/mod.ts";
import type {
  Context,
  DirentPlusSink,
  DirentSink,
  Entry,
  ReadDestination,
  WriteSource,
} from "../filesystem.ts";
import { type PassthroughConfig, PassthroughFs } from "./passthrough_fs.ts";

/** The guest's root. */
export const ROOT_CTX: Context = { uid: 0, gid: 0, pid: 1 };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** UTF-8 bytes of `s`. */
export function bytes(s: string): Uint8Array {
  return encoder.encode(s);
}

/** `b` decoded as UTF-8. */
export function text(b: Uint8Array): string {
  return decoder.decode(b);
}

/** A READ destination over a plain stable buffer: preadv(2) straight into it. */
export class BufferDestination implements ReadDestination {
  /** The bytes read land here. */
  readonly buf: Uint8Array;
  readonly #iov = stableBytes(IOVEC.size);
  readonly capacity: number;

  /** Room for `capacity` bytes. */
  constructor(capacity: number) {
    this.capacity = capacity;
    this.buf = stableBytes(capacity);
  }

  preadv(fd: number, offset: bigint, size: number): number {
    const n = Math.min(size, this.capacity);
    const v = new DataView(this.#iov.buffer);
    setU64(v, IOVEC.base, addressOf(this.buf));
    setU64(v, IOVEC.len, n);
    return preadvRaw(fd, this.#iov, 1, offset);
  }

  write(data: Uint8Array): number {
    const n = Math.min(data.length, this.capacity);
    this.buf.set(data.subarray(0, n));
    return n;
  }
}

/** A WRITE source over a plain stable buffer: pwritev(2) straight from it. */
export class BufferSource implements WriteSource {
  readonly #buf: Uint8Array;
  readonly #iov = stableBytes(IOVEC.size);
  readonly size: number;

  /** Writes `data`. */
  constructor(data: Uint8Array | string) {
    const d = typeof data === "string" ? bytes(data) : data;
    this.#buf = stableBytes(d.length);
    this.#buf.set(d);
    this.size = d.length;
  }

  pwritev(fd: number, offset: bigint): number {
    if (this.size === 0) return 0;
    const v = new DataView(this.#iov.buffer);
    setU64(v, IOVEC.base, addressOf(this.#buf));
    setU64(v, IOVEC.len, this.size);
    return pwritevRaw(fd, this.#iov, 1, offset);
  }

  read(dst: Uint8Array): number {
    const n = Math.min(dst.length, this.size);
    dst.set(this.#buf.subarray(0, n));
    return n;
  }
}

/** One entry a sink took. */
export interface Listed {
  ino: bigint;
  off: bigint;
  type: number;
  name: string;
  /** READDIRPLUS: the entry's nodeid (0 for "." and ".."). */
  nodeid: bigint;
}

function align8(n: number): number {
  return (n + 7) & ~7;
}

/** A READDIR sink holding `limit` bytes of `struct fuse_dirent` records, as the guest's. */
export class ListSink implements DirentSink {
  readonly entries: Listed[] = [];
  #used = 0;

  /** A buffer of `limit` bytes. */
  constructor(readonly limit: number) {}

  add(ino: bigint, off: bigint, type: number, name: Uint8Array): boolean {
    const len = align8(24 + name.length);
    if (this.#used + len > this.limit) return false;
    this.#used += len;
    this.entries.push({ ino, off, type, name: text(name), nodeid: 0n });
    return true;
  }
}

/** A READDIRPLUS sink holding `limit` bytes of `struct fuse_direntplus` records. */
export class PlusSink implements DirentPlusSink {
  readonly entries: Listed[] = [];
  #used = 0;

  /** A buffer of `limit` bytes. */
  constructor(readonly limit: number) {}

  fits(nameLength: number): boolean {
    return this.#used + 152 + align8(nameLength) <= this.limit;
  }

  add(entry: Entry, off: bigint, type: number, name: Uint8Array): void {
    if (!this.fits(name.length)) throw new Error("add() of an entry that does not fit");
    this.#used += 152 + align8(name.length);
    this.entries.push({ ino: entry.attr.ino, off, type, name: text(name), nodeid: entry.nodeid });
  }
}

/** How many descriptors this process has open. */
export function openFdCount(): number {
  let n = 0;
  for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
  return n;
}

/** The open flags (fdinfo `flags:`) of every non-O_PATH descriptor of `path`. */
export function openFlagsOf(path: string): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    let target: string;
    try {
      target = Deno.readLinkSync(`/proc/self/fd/${e.name}`);
    } catch {
      continue;
    }
    if (target !== path) continue;
    const info = Deno.readTextFileSync(`/proc/self/fdinfo/${e.name}`);
    const m = /^flags:\s+([0-7]+)$/m.exec(info);
    const flags = m?.[1] === undefined ? 0 : parseInt(m[1], 8);
    if ((flags & 0o10000000) === 0) out.push(flags);
  }
  return out;
}

/** A temporary shared directory with a PassthroughFs on it. */
export interface Share {
  /** The host directory. */
  dir: string;
  /** The file system serving it. */
  fs: PassthroughFs;
  /** Closes the file system and removes the directory. */
  [Symbol.dispose](): void;
}

/** A new empty shared directory (mode 0755) served with `config`. */
export function tempShare(config: Omit<PassthroughConfig, "sharedDir"> = {}): Share {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough_test_" });
  Deno.chmodSync(dir, 0o755);
  const fs = new PassthroughFs({ sharedDir: dir, ...config });
  return {
    dir,
    fs,
    [Symbol.dispose]() {
      fs.close();
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

/**
 * Whether this kernel has getxattrat(2) and its siblings (Linux 6.13): the xattr calls then hold
 * no working directory of their own.
 */
export function kernelHasXattrAt(): boolean {
  const [major = 0, minor = 0] = Deno.osRelease().split(/[.-]/).map(Number);
  return major > 6 || (major === 6 && minor >= 13);
}

/** Asserts that `fn` throws an ErrnoError with `expected` (compared by name: EAGAIN, ...). */
export function assertErrno(fn: () => unknown, expected: number, message?: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ErrnoError, `${e}`);
    assert.equal(e.code, new ErrnoError(expected).code, message ?? e.message);
    return true;
  });
}
