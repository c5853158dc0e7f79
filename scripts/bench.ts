/**
 * `deno task bench`: the cost of one FUSE request through each daemon, measured in one run
 * against ours, C virtiofsd 7.2 and Rust virtiofsd 1.13, by the same lean front end.
 *
 * The test driver sets up each connection (negotiation, memory, rings, FUSE_INIT); then a tight
 * loop drives the request queue by hand with preallocated GETATTR chains, so the front end adds
 * little: no allocation per request, one kick and one wait on the call eventfd per round.
 *
 * - latency: one GETATTR in flight, round trip (µs)
 * - throughput: 64 in flight (requests/s)
 * - daemon CPU: the daemon's utime+stime (all threads, /proc/PID/stat) per request (µs)
 *
 * Run pinned to one CPU, as the reference numbers were measured (`deno task bench` does:
 * `taskset -c 0`). Flags: `--daemons ours,c,rust` `--seconds S` (per phase, default 3).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { eventfdConsume, eventfdSignal, poll, POLLIN } from "../src/ffi/mod.ts";
import { FUSE_GETATTR, IN_HEADER, OUT_HEADER } from "../src/fuse/abi.ts";
import { type DaemonKind, startDaemon } from "../spec/_driver/daemon.ts";
import { VhostUserFrontend } from "../spec/_driver/frontend.ts";
import { FuseClient } from "../spec/_driver/fuse_client.ts";

const GETATTR_IN_SIZE = 16;
const ATTR_OUT_SIZE = 104;
const DEPTH = 64;

interface Result {
  kind: DaemonKind;
  latencyUs: number;
  throughput: number;
  /** Daemon CPU per request with one in flight, and with 64. */
  cpuUs: [number, number];
  errors: string;
}

/** utime + stime of `pid` and all its descendants (C virtiofsd serves from a forked child). */
function cpuTicks(pid: number): number {
  let ticks = 0;
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15)
    for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
      const children = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/children`).trim();
      for (const child of children.split(" ").filter(Boolean)) ticks += cpuTicks(Number(child));
    }
  } catch { /* the process is gone */ }
  return ticks;
}
const TICKS_PER_SECOND = 100;

/** A request queue driven by hand: `DEPTH` fixed GETATTR chains, reused round after round. */
class LeanQueue {
  readonly #q: number;
  readonly #u16: Uint16Array;
  readonly #view: DataView;
  readonly #size: number;
  readonly #availIdxAt: number;
  readonly #availRingAt: number;
  readonly #usedIdxAt: number;
  readonly #usedRingAt: number;
  readonly #usedEventAt: number;
  readonly #availEventAt: number;
  readonly #replyAt: number[] = [];
  #availIdx: number;
  #lastUsed: number;
  readonly #kickFd: number;
  readonly #callFd: number;
  errors = new Map<number, number>();

  constructor(fe: VhostUserFrontend, q: number) {
    this.#q = q;
    const queue = fe.queue(q);
    const mem = fe.memory;
    const bytes = mem.bytes;
    this.#u16 = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 1);
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#size = queue.size;
    const avail = mem.offsetOf(queue.availGpa);
    const used = mem.offsetOf(queue.usedGpa);
    this.#availIdxAt = avail + 2;
    this.#availRingAt = avail + 4;
    this.#usedEventAt = avail + 4 + 2 * this.#size;
    this.#usedIdxAt = used + 2;
    this.#usedRingAt = used + 4;
    this.#availEventAt = used + 4 + 8 * this.#size;
    this.#availIdx = queue.availIdx;
    this.#lastUsed = queue.usedIdx;
    this.#kickFd = fe.kickFd(q);
    this.#callFd = fe.callFd(q);
    // Chain k: descriptor 2k (in header + getattr_in, readable) -> 2k+1 (reply, writable).
    for (let k = 0; k < DEPTH; k++) {
      const inLen = IN_HEADER.size + GETATTR_IN_SIZE;
      const outLen = OUT_HEADER.size + ATTR_OUT_SIZE;
      const inGpa = mem.alloc(inLen);
      const outGpa = mem.alloc(outLen);
      const hdr = new Uint8Array(inLen);
      const hv = new DataView(hdr.buffer);
      hv.setUint32(IN_HEADER.len, inLen, true);
      hv.setUint32(IN_HEADER.opcode, FUSE_GETATTR, true);
      hv.setBigUint64(IN_HEADER.unique, BigInt(2 * (k + 1)), true);
      hv.setBigUint64(IN_HEADER.nodeid, 1n, true);
      mem.write(inGpa, hdr);
      queue.writeDescriptor(2 * k, { addr: inGpa, len: inLen, flags: 1, next: 2 * k + 1 });
      queue.writeDescriptor(2 * k + 1, { addr: outGpa, len: outLen, flags: 2, next: 0 });
      this.#replyAt[k] = mem.offsetOf(outGpa);
    }
  }

  /** Makes chains `first .. first+count-1` (mod DEPTH) available and kicks if the device asked (EVENT_IDX or flags). */
  publish(first: number, count: number): void {
    const old = this.#availIdx;
    for (let i = 0; i < count; i++) {
      const k = (first + i) % DEPTH;
      this.#view.setUint16(this.#availRingAt + 2 * (this.#availIdx % this.#size), 2 * k, true);
      this.#availIdx = (this.#availIdx + 1) & 0xffff;
    }
    Atomics.store(this.#u16, this.#availIdxAt >> 1, this.#availIdx);
    const event = Atomics.load(this.#u16, this.#availEventAt >> 1);
    if (((this.#availIdx - event - 1) & 0xffff) < ((this.#availIdx - old) & 0xffff)) {
      eventfdSignal(this.#kickFd);
    }
  }

  /** Waits for at least one used element; returns how many arrived. */
  reap(): number {
    for (;;) {
      const usedIdx = Atomics.load(this.#u16, this.#usedIdxAt >> 1);
      const n = (usedIdx - this.#lastUsed) & 0xffff;
      if (n > 0) {
        for (let i = 0; i < n; i++) {
          const slot = (this.#lastUsed + i) % this.#size;
          const id = this.#view.getUint32(this.#usedRingAt + 8 * slot, true);
          const error = this.#view.getInt32((this.#replyAt[id >> 1] ?? 0) + 4, true);
          if (error !== 0) this.errors.set(error, (this.errors.get(error) ?? 0) + 1);
        }
        this.#lastUsed = usedIdx;
        return n;
      }
      // Ask for an interrupt at the next used element, re-check, then sleep on the call fd.
      Atomics.store(this.#u16, this.#usedEventAt >> 1, this.#lastUsed);
      if (Atomics.load(this.#u16, this.#usedIdxAt >> 1) !== this.#lastUsed) continue;
      const [rev] = poll([this.#callFd], POLLIN, 5000);
      if (rev === 0) throw new Error(`no reply on queue ${this.#q} within 5 s`);
      eventfdConsume(this.#callFd);
    }
  }
}

async function measure(kind: DaemonKind, seconds: number): Promise<Result> {
  const shared = await Deno.makeTempDir({ prefix: "bench-" });
  const daemon = await startDaemon(kind, { sharedDir: shared, extraArgs: [] });
  try {
    const fe = await VhostUserFrontend.connect(daemon.socketPath, { queueSize: 1024 });
    const client = new FuseClient(fe);
    client.init();
    const lean = new LeanQueue(fe, client.queue);

    // Latency: one in flight.
    for (let i = 0; i < 2000; i++) { // warm-up
      lean.publish(0, 1);
      lean.reap();
    }
    let n = 0;
    let t0 = performance.now();
    const c0 = cpuTicks(daemon.pid);
    while (performance.now() - t0 < seconds * 1000) {
      for (let i = 0; i < 1000; i++) {
        lean.publish(0, 1);
        lean.reap();
      }
      n += 1000;
    }
    const latencyUs = (performance.now() - t0) * 1000 / n;
    const cpuLatency = (cpuTicks(daemon.pid) - c0) / TICKS_PER_SECOND * 1e6 / n;

    // Throughput: DEPTH in flight, refilled as replies come.
    let next = 0;
    lean.publish(next, DEPTH);
    next += DEPTH;
    let done = 0;
    t0 = performance.now();
    const c1 = cpuTicks(daemon.pid);
    while (performance.now() - t0 < seconds * 1000) {
      const got = lean.reap();
      done += got;
      lean.publish(next, got);
      next += got;
    }
    const elapsed = (performance.now() - t0) / 1000;
    const cpuThroughput = (cpuTicks(daemon.pid) - c1) / TICKS_PER_SECOND * 1e6 / done;
    const errors = [...lean.errors].map(([e, c]) => `${e}×${c}`).join(" ") || "none";
    fe.close();
    return {
      kind,
      latencyUs,
      throughput: done / elapsed,
      cpuUs: [cpuLatency, cpuThroughput],
      errors,
    };
  } finally {
    await daemon.stop();
    await Deno.remove(shared, { recursive: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      daemons: { type: "string", default: "ours,c,rust" },
      seconds: { type: "string", default: "3" },
    },
  });
  const kinds = (values.daemons ?? "").split(",").filter(Boolean) as DaemonKind[];
  const seconds = Number(values.seconds);
  const cpus = Deno.readTextFileSync("/proc/self/status").match(/Cpus_allowed_list:\s*(\S+)/)?.[1];
  console.log(`GETATTR of the root, ${seconds} s per phase, CPUs allowed: ${cpus}`);
  console.log(
    "daemon  latency(µs)  64-in-flight(req/s)  daemon-CPU µs/req (1 / 64 in flight)  reply errors",
  );
  for (const kind of kinds) {
    const r = await measure(kind, seconds);
    console.log(
      `${kind.padEnd(6)}  ${r.latencyUs.toFixed(1).padStart(11)}  ${
        Math.round(r.throughput).toString().padStart(19)
      }  ${`${r.cpuUs[0].toFixed(2)} / ${r.cpuUs[1].toFixed(2)}`.padStart(36)}  ${r.errors}`,
    );
  }
}
