/**
 * The device side of a split virtqueue (virtio 1.2 §2.7) in guest memory: taking descriptor chains
 * from the avail ring, returning them on the used ring, and deciding when the driver needs an
 * interrupt (VIRTIO_RING_F_EVENT_IDX or the NO_INTERRUPT flag).
 *
 * @module
 */
import type { GuestMemory, MemoryRegion } from "../memory/guest_memory.ts";
import { DescriptorChain } from "./descriptor_chain.ts";
import {
  availEventOffset,
  availRingBytes,
  descTableBytes,
  usedEventOffset,
  usedRingBytes,
  VIRTQ_AVAIL,
  VIRTQ_DESC_ALIGN,
  VIRTQ_USED,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "../wire/virtio.ts";

/** Where the three parts of a ring are, in front-end virtual addresses. */
export interface RingAddresses {
  /** Descriptor table. */
  desc: number;
  /** Avail (driver) ring. */
  avail: number;
  /** Used (device) ring. */
  used: number;
}

/** Counters a queue keeps for logs and tests. */
export interface QueueStats {
  /** Chains taken from the avail ring and answered. */
  chains: number;
  /** Chains refused as malformed (returned with length 0 when the head was valid). */
  badChains: number;
  /** Interrupts sent to the driver. */
  interrupts: number;
  /** Interrupts the driver's used_event (or NO_INTERRUPT) let us skip. */
  interruptsSuppressed: number;
}

interface Part {
  region: MemoryRegion;
  offset: number;
}

/**
 * A split virtqueue's device side. `map()` resolves the ring addresses against guest memory;
 * after any change to guest memory call it again before `pop()`.
 */
export class SplitQueue {
  readonly size: number;
  readonly eventIdx: boolean;
  /** Next avail ring slot to read (what GET_VRING_BASE returns). */
  lastAvailIdx: number;
  /** Next used ring slot to write. */
  usedIdx = 0;
  readonly stats: QueueStats = { chains: 0, badChains: 0, interrupts: 0, interruptsSuppressed: 0 };
  /** The chain `pop()` took last (the same object each time until `replaceChain`). */
  get chain(): DescriptorChain {
    return this.#chain;
  }
  #chain: DescriptorChain = new DescriptorChain();
  readonly #addresses: RingAddresses;
  #desc: Part | undefined;
  #avail: Part | undefined;
  #used: Part | undefined;
  #directTable: { region: MemoryRegion; offset: number; entries: number } | undefined;
  #signalledUsed = 0;
  #signalledUsedValid = false;
  /** Set when the driver broke the ring's rules; the queue takes nothing more until re-set. */
  broken: string | undefined;

  constructor(size: number, addresses: RingAddresses, base: number, eventIdx: boolean) {
    this.size = size;
    this.#addresses = { ...addresses };
    this.lastAvailIdx = base & 0xffff;
    this.eventIdx = eventIdx;
  }

  /**
   * Resolves the rings in `memory`. Returns undefined, or why the rings cannot be used (a part
   * outside every region or misaligned); the queue is then unusable until mapped again.
   */
  map(memory: GuestMemory): string | undefined {
    this.#desc = this.#avail = this.#used = undefined;
    const n = this.size;
    const parts = [
      ["descriptor table", this.#addresses.desc, descTableBytes(n), VIRTQ_DESC_ALIGN],
      ["avail ring", this.#addresses.avail, availRingBytes(n), VIRTQ_AVAIL.align],
      ["used ring", this.#addresses.used, usedRingBytes(n), VIRTQ_USED.align],
    ] as const;
    const found: Part[] = [];
    for (const [name, uva, len, align] of parts) {
      const t = memory.translateUva(uva, len);
      if (t === undefined) {
        return `${name} at user address 0x${uva.toString(16)} (+${len}) is outside guest memory`;
      }
      const offset = t.region.base + t.offset;
      if (offset % align !== 0 || uva % align !== 0) {
        return `${name} at user address 0x${uva.toString(16)} is not ${align}-byte aligned`;
      }
      found.push({ region: t.region, offset });
    }
    [this.#desc, this.#avail, this.#used] = found;
    const desc = found[0] as Part;
    this.#directTable = { region: desc.region, offset: desc.offset, entries: this.size };
    return undefined;
  }

  /** True once `map()` succeeded and the driver has not broken the ring. */
  get usable(): boolean {
    return this.#used !== undefined && this.broken === undefined;
  }

  /** Reads the used ring's index from guest memory (where a restarted ring resumes). */
  syncUsedIdx(): void {
    const used = this.#used;
    if (used !== undefined) {
      this.usedIdx = Atomics.load(used.region.u16, (used.offset + VIRTQ_USED.idx) / 2);
    }
  }

  /** The driver's avail index. */
  availIdx(): number {
    const avail = this.#avail as Part;
    return Atomics.load(avail.region.u16, (avail.offset + VIRTQ_AVAIL.idx) / 2);
  }

  /**
   * Takes the next chain into `this.chain`. Returns true when a chain was taken and is well
   * formed, false when the ring is empty or broken. A malformed chain is counted, handed to
   * `onBadChain` with the reason, and (when its head index is valid) returned to the driver with
   * length 0; the caller then simply calls `pop()` again.
   */
  pop(memory: GuestMemory, onBadChain: (reason: string) => void): boolean {
    const avail = this.#avail;
    const table = this.#directTable;
    if (avail === undefined || table === undefined || this.broken !== undefined) return false;
    for (;;) {
      const availIdx = this.availIdx();
      if (availIdx === this.lastAvailIdx) return false;
      const pending = (availIdx - this.lastAvailIdx) & 0xffff;
      if (pending > this.size) {
        this.broken = `guest moved avail index from ${this.lastAvailIdx} to ${availIdx}, ` +
          `more than the queue size ${this.size} ahead`;
        onBadChain(this.broken);
        return false;
      }
      const slot = avail.offset + VIRTQ_AVAIL.ring +
        VIRTQ_AVAIL.entrySize * (this.lastAvailIdx % this.size);
      const head = avail.region.view.getUint16(slot, true);
      this.lastAvailIdx = (this.lastAvailIdx + 1) & 0xffff;
      const problem = this.#chain.walk(memory, table, head, this.size);
      if (problem === undefined) {
        this.stats.chains++;
        return true;
      }
      this.stats.badChains++;
      onBadChain(`chain at head ${head}: ${problem}`);
      if (head < this.size) this.pushUsed(head, 0);
    }
  }

  /**
   * Gives the chain `pop()` took last to the caller (a request still being served after this
   * queue moved on) and pops into `spare` from now on. Returns the chain given away.
   */
  replaceChain(spare: DescriptorChain): DescriptorChain {
    const taken = this.#chain;
    this.#chain = spare;
    return taken;
  }

  /** Puts chain `head` on the used ring with `len` bytes written, then publishes the index. */
  pushUsed(head: number, len: number): void {
    const used = this.#used;
    if (used === undefined) return;
    const at = used.offset + VIRTQ_USED.ring + VIRTQ_USED.entrySize * (this.usedIdx % this.size);
    used.region.view.setUint32(at + VIRTQ_USED.id, head, true);
    used.region.view.setUint32(at + VIRTQ_USED.len, len, true);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    // A sequentially consistent store: the element is visible before the new index.
    Atomics.store(used.region.u16, (used.offset + VIRTQ_USED.idx) / 2, this.usedIdx);
  }

  /**
   * Whether the driver wants an interrupt for the used entries added since the last one
   * (`vring_need_event` with EVENT_IDX, else the NO_INTERRUPT flag). Counts the decision.
   */
  needsInterrupt(): boolean {
    const avail = this.#avail;
    if (avail === undefined) return false;
    let need: boolean;
    if (this.eventIdx) {
      const usedEvent = avail.region.view.getUint16(
        avail.offset + usedEventOffset(this.size),
        true,
      );
      const old = this.#signalledUsed;
      const now = this.usedIdx;
      const valid = this.#signalledUsedValid;
      this.#signalledUsed = now;
      this.#signalledUsedValid = true;
      if (now === old && valid) return false;
      need = !valid || vringNeedEvent(usedEvent, now, old);
    } else {
      need = (avail.region.view.getUint16(avail.offset + VIRTQ_AVAIL.flags, true) &
        VRING_AVAIL_F_NO_INTERRUPT) === 0;
    }
    if (need) this.stats.interrupts++;
    else this.stats.interruptsSuppressed++;
    return need;
  }

  /**
   * Asks the driver to kick for anything it adds after what we have taken (avail_event with
   * EVENT_IDX), then reports whether more chains arrived meanwhile: if so, process them before
   * sleeping, or a kick may be lost.
   */
  armKick(): boolean {
    const used = this.#used;
    if (used === undefined || this.#avail === undefined || this.broken !== undefined) return false;
    if (this.eventIdx) {
      Atomics.store(
        used.region.u16,
        (used.offset + availEventOffset(this.size)) / 2,
        this.lastAvailIdx,
      );
    } else {
      const flags = Atomics.load(used.region.u16, (used.offset + VIRTQ_USED.flags) / 2);
      Atomics.store(
        used.region.u16,
        (used.offset + VIRTQ_USED.flags) / 2,
        flags & ~VRING_USED_F_NO_NOTIFY,
      );
    }
    return this.availIdx() !== this.lastAvailIdx;
  }
}
