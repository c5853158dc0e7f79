/**
 * The virtio vocabulary both sides of a virtio-fs device share: feature bits, the split virtqueue's
 * layout in guest memory (virtio 1.2 §2.7) and the file-system device's configuration space and
 * queue numbering (virtio 1.2 §5.11). Names follow the virtio specification and Linux's
 * include/uapi/linux/virtio_ring.h.
 *
 * @module
 */

// ---------------------------------------------------------------------------------------------
// Feature bits (GET/SET_FEATURES), as bit numbers.

/** Feature bit: interrupt when the avail ring is empty even if suppressed (legacy). */
export const VIRTIO_F_NOTIFY_ON_EMPTY = 24;
/** Feature bit: the driver may use indirect descriptor tables. */
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
/** Feature bit: used_event / avail_event notification suppression. */
export const VIRTIO_RING_F_EVENT_IDX = 29;
/** Feature bit: a virtio 1.0 (non-legacy) device. */
export const VIRTIO_F_VERSION_1 = 32;

// ---------------------------------------------------------------------------------------------
// Descriptor table.

/** Descriptor flag: the chain continues with `next`. */
export const VIRTQ_DESC_F_NEXT = 1;
/** Descriptor flag: the buffer is device-writable. */
export const VIRTQ_DESC_F_WRITE = 2;
/** Descriptor flag: the buffer is a table of descriptors. */
export const VIRTQ_DESC_F_INDIRECT = 4;

/** A descriptor: `le64 addr; le32 len; le16 flags; le16 next;` (16 bytes, byte offsets). */
export const VIRTQ_DESC = { size: 16, addr: 0, len: 8, flags: 12, next: 14 } as const;
/** Bytes per descriptor. */
export const DESCRIPTOR_SIZE: number = VIRTQ_DESC.size;
/** The largest queue a split ring may have (and so the largest indirect table). */
export const MAX_QUEUE_SIZE = 32768;
/** The largest indirect table the device walks (the largest queue a split ring may have). */
export const MAX_INDIRECT_DESCRIPTORS: number = MAX_QUEUE_SIZE;

// ---------------------------------------------------------------------------------------------
// Avail (driver) ring: `le16 flags; le16 idx; le16 ring[size]; le16 used_event;`

/** avail.flags: the driver asks for no interrupts (without EVENT_IDX). */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
/** Avail ring byte offsets; entry `i` is at `ring + 2 * i`, used_event at `ring + 2 * size`. */
export const VIRTQ_AVAIL = { flags: 0, idx: 2, ring: 4, entrySize: 2, align: 2 } as const;

// ---------------------------------------------------------------------------------------------
// Used (device) ring: `le16 flags; le16 idx; {le32 id; le32 len} ring[size]; le16 avail_event;`

/** used.flags: the device asks for no kicks (without EVENT_IDX). */
export const VRING_USED_F_NO_NOTIFY = 1;
/** Used ring byte offsets; element `i` is at `ring + 8 * i`, avail_event at `ring + 8 * size`. */
export const VIRTQ_USED = {
  flags: 0,
  idx: 2,
  ring: 4,
  entrySize: 8,
  id: 0,
  len: 4,
  align: 4,
} as const;
/** The descriptor table's alignment in guest memory. */
export const VIRTQ_DESC_ALIGN = 16;

/** Bytes of a descriptor table of `size` entries. */
export function descTableBytes(size: number): number {
  return VIRTQ_DESC.size * size;
}

/** Bytes of an avail ring of `size` entries, used_event included. */
export function availRingBytes(size: number): number {
  return VIRTQ_AVAIL.ring + VIRTQ_AVAIL.entrySize * size + 2;
}

/** Bytes of a used ring of `size` elements, avail_event included. */
export function usedRingBytes(size: number): number {
  return VIRTQ_USED.ring + VIRTQ_USED.entrySize * size + 2;
}

/** Byte offset of used_event in an avail ring of `size` entries. */
export function usedEventOffset(size: number): number {
  return VIRTQ_AVAIL.ring + VIRTQ_AVAIL.entrySize * size;
}

/** Byte offset of avail_event in a used ring of `size` elements. */
export function availEventOffset(size: number): number {
  return VIRTQ_USED.ring + VIRTQ_USED.entrySize * size;
}

/**
 * `vring_need_event`: whether moving an index from `old` to `now` passes `event`, the index the
 * other side asked to be told about (all u16, wrapping).
 */
export function vringNeedEvent(event: number, now: number, old: number): boolean {
  return ((now - event - 1) & 0xffff) < ((now - old) & 0xffff);
}

/** Why a queue size is refused, or undefined: it must be a power of 2 from 1 to 32768. */
export function queueSizeProblem(size: number): string | undefined {
  if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0) {
    return `queue size ${size} is not a power of 2 from 1 to ${MAX_QUEUE_SIZE}`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The file-system device (virtio 1.2 §5.11).

/** The virtio device ID of a file-system device. */
export const VIRTIO_ID_FS = 26;
/** The file-system device's high-priority queue (FORGET, INTERRUPT); request queues follow it. */
export const HIPRIO_QUEUE = 0;
/** The first request queue. */
export const FIRST_REQUEST_QUEUE = 1;
/** Bytes of the tag in the configuration space (NUL-padded, not NUL-terminated when full). */
export const VIRTIO_FS_TAG_SIZE = 36;
/** Configuration space: `u8 tag[36]; le32 num_request_queues;` (40 bytes). */
export const VIRTIO_FS_CONFIG = { size: 40, tag: 0, numRequestQueues: 36 } as const;
/** The device's shared memory region ID of the DAX cache window. */
export const VIRTIO_FS_SHMCAP_ID_CACHE = 0;
