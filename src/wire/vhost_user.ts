/**
 * vhost-user wire format: request codes, header flags, feature bits and payload layouts, as
 * QEMU's docs/interop/vhost-user.rst names them. The back-end channel is spelled BACKEND_* as in
 * current QEMU (QEMU 7.2 said SLAVE_*; the old name is given in each comment).
 *
 * @module
 */

/** Front-end requests (front end → back end). */
export const VHOST_USER_GET_FEATURES = 1;
/** Front-end request. */
export const VHOST_USER_SET_FEATURES = 2;
/** Front-end request. */
export const VHOST_USER_SET_OWNER = 3;
/** Front-end request (deprecated). */
export const VHOST_USER_RESET_OWNER = 4;
/** Front-end request. */
export const VHOST_USER_SET_MEM_TABLE = 5;
/** Front-end request. */
export const VHOST_USER_SET_LOG_BASE = 6;
/** Front-end request. */
export const VHOST_USER_SET_LOG_FD = 7;
/** Front-end request. */
export const VHOST_USER_SET_VRING_NUM = 8;
/** Front-end request. */
export const VHOST_USER_SET_VRING_ADDR = 9;
/** Front-end request. */
export const VHOST_USER_SET_VRING_BASE = 10;
/** Front-end request. */
export const VHOST_USER_GET_VRING_BASE = 11;
/** Front-end request. */
export const VHOST_USER_SET_VRING_KICK = 12;
/** Front-end request. */
export const VHOST_USER_SET_VRING_CALL = 13;
/** Front-end request. */
export const VHOST_USER_SET_VRING_ERR = 14;
/** Front-end request. */
export const VHOST_USER_GET_PROTOCOL_FEATURES = 15;
/** Front-end request. */
export const VHOST_USER_SET_PROTOCOL_FEATURES = 16;
/** Front-end request. */
export const VHOST_USER_GET_QUEUE_NUM = 17;
/** Front-end request. */
export const VHOST_USER_SET_VRING_ENABLE = 18;
/** Front-end request. */
export const VHOST_USER_SEND_RARP = 19;
/** Front-end request. */
export const VHOST_USER_NET_SET_MTU = 20;
/** Front-end request: the back-end request channel (SET_SLAVE_REQ_FD in QEMU 7.2). */
export const VHOST_USER_SET_BACKEND_REQ_FD = 21;
/** Front-end request. */
export const VHOST_USER_IOTLB_MSG = 22;
/** Front-end request. */
export const VHOST_USER_SET_VRING_ENDIAN = 23;
/** Front-end request. */
export const VHOST_USER_GET_CONFIG = 24;
/** Front-end request. */
export const VHOST_USER_SET_CONFIG = 25;
/** Front-end request. */
export const VHOST_USER_CREATE_CRYPTO_SESSION = 26;
/** Front-end request. */
export const VHOST_USER_CLOSE_CRYPTO_SESSION = 27;
/** Front-end request. */
export const VHOST_USER_POSTCOPY_ADVISE = 28;
/** Front-end request. */
export const VHOST_USER_POSTCOPY_LISTEN = 29;
/** Front-end request. */
export const VHOST_USER_POSTCOPY_END = 30;
/** Front-end request. */
export const VHOST_USER_GET_INFLIGHT_FD = 31;
/** Front-end request. */
export const VHOST_USER_SET_INFLIGHT_FD = 32;
/** Front-end request. */
export const VHOST_USER_GPU_SET_SOCKET = 33;
/** Front-end request. */
export const VHOST_USER_RESET_DEVICE = 34;
/** Front-end request. */
export const VHOST_USER_VRING_KICK = 35;
/** Front-end request. */
export const VHOST_USER_GET_MAX_MEM_SLOTS = 36;
/** Front-end request. */
export const VHOST_USER_ADD_MEM_REG = 37;
/** Front-end request. */
export const VHOST_USER_REM_MEM_REG = 38;
/** Front-end request. */
export const VHOST_USER_SET_STATUS = 39;
/** Front-end request. */
export const VHOST_USER_GET_STATUS = 40;
/** Front-end request (after 7.2): the sizes of the device's shared memory regions. */
export const VHOST_USER_GET_SHMEM_CONFIG = 44;

/** Back-end requests (back end → front end, on the SET_BACKEND_REQ_FD channel). */
export const VHOST_USER_BACKEND_IOTLB_MSG = 1;
/** Back-end request. */
export const VHOST_USER_BACKEND_CONFIG_CHANGE_MSG = 2;
/** Back-end request. */
export const VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG = 3;
/** Back-end request (after 7.2, PROTOCOL_F_SHMEM): map an fd range into a shared memory region. */
export const VHOST_USER_BACKEND_SHMEM_MAP = 9;
/** Back-end request (after 7.2): unmap a range of a shared memory region. */
export const VHOST_USER_BACKEND_SHMEM_UNMAP = 10;

/** Front-end request names, for logs. */
export const REQUEST_NAMES: Readonly<Record<number, string>> = {
  1: "GET_FEATURES",
  2: "SET_FEATURES",
  3: "SET_OWNER",
  4: "RESET_OWNER",
  5: "SET_MEM_TABLE",
  6: "SET_LOG_BASE",
  7: "SET_LOG_FD",
  8: "SET_VRING_NUM",
  9: "SET_VRING_ADDR",
  10: "SET_VRING_BASE",
  11: "GET_VRING_BASE",
  12: "SET_VRING_KICK",
  13: "SET_VRING_CALL",
  14: "SET_VRING_ERR",
  15: "GET_PROTOCOL_FEATURES",
  16: "SET_PROTOCOL_FEATURES",
  17: "GET_QUEUE_NUM",
  18: "SET_VRING_ENABLE",
  19: "SEND_RARP",
  20: "NET_SET_MTU",
  21: "SET_BACKEND_REQ_FD",
  22: "IOTLB_MSG",
  23: "SET_VRING_ENDIAN",
  24: "GET_CONFIG",
  25: "SET_CONFIG",
  26: "CREATE_CRYPTO_SESSION",
  27: "CLOSE_CRYPTO_SESSION",
  28: "POSTCOPY_ADVISE",
  29: "POSTCOPY_LISTEN",
  30: "POSTCOPY_END",
  31: "GET_INFLIGHT_FD",
  32: "SET_INFLIGHT_FD",
  33: "GPU_SET_SOCKET",
  34: "RESET_DEVICE",
  35: "VRING_KICK",
  36: "GET_MAX_MEM_SLOTS",
  37: "ADD_MEM_REG",
  38: "REM_MEM_REG",
  39: "SET_STATUS",
  40: "GET_STATUS",
  44: "GET_SHMEM_CONFIG",
};

/** `NAME(code)` of a front-end request, for logs. */
export function requestName(code: number): string {
  return `${REQUEST_NAMES[code] ?? "UNKNOWN"}(${code})`;
}

/** Header: `u32 request; u32 flags; u32 size;` then `size` payload bytes. */
export const HEADER_SIZE = 12;
/** Header flags: the protocol version, in bits 0–1. */
export const VHOST_USER_VERSION = 0x1;
/** Header flags: version mask. */
export const VHOST_USER_VERSION_MASK = 0x3;
/** Header flags: this message is a reply. */
export const VHOST_USER_REPLY_MASK = 0x4;
/** Header flags: the sender wants a reply (REPLY_ACK). */
export const VHOST_USER_NEED_REPLY_MASK = 0x8;
/** The largest payload we accept (QEMU's payload union is smaller; a memory table is 264). */
export const MAX_PAYLOAD_SIZE = 4096;

/** SET_VRING_KICK/CALL/ERR payload: the queue index. */
export const VHOST_USER_VRING_IDX_MASK = 0xff;
/** SET_VRING_KICK/CALL/ERR payload: no fd is attached (poll the ring instead). */
export const VHOST_USER_VRING_NOFD_MASK = 0x100;

/** Feature bits vhost-user adds to the device's (the virtio ones are in `virtio.ts`). */
/** vhost-user: the back end speaks protocol features (never shown to the guest). */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
/** Dirty-page logging (migration). */
export const VHOST_F_LOG_ALL = 26;

/** Protocol feature bits (GET/SET_PROTOCOL_FEATURES), QEMU 7.2 numbering. */
export const VHOST_USER_PROTOCOL_F_MQ = 0;
/** Protocol feature. */
export const VHOST_USER_PROTOCOL_F_LOG_SHMFD = 1;
/** Protocol feature. */
export const VHOST_USER_PROTOCOL_F_REPLY_ACK = 3;
/** Protocol feature: the back-end request channel (SLAVE_REQ in QEMU 7.2). */
export const VHOST_USER_PROTOCOL_F_BACKEND_REQ = 5;
/** Protocol feature. */
export const VHOST_USER_PROTOCOL_F_CONFIG = 9;
/** Protocol feature: fds on the back-end channel (SLAVE_SEND_FD in QEMU 7.2). */
export const VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD = 10;
/** Protocol feature. */
export const VHOST_USER_PROTOCOL_F_HOST_NOTIFIER = 11;
/** Protocol feature. */
export const VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD = 12;
/** Protocol feature. */
export const VHOST_USER_PROTOCOL_F_RESET_DEVICE = 13;
/** Protocol feature. */
export const VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS = 14;
/** Protocol feature. */
export const VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS = 15;
/** Protocol feature. */
export const VHOST_USER_PROTOCOL_F_STATUS = 16;
/** Protocol feature (after 7.2). */
export const VHOST_USER_PROTOCOL_F_XEN_MMAP = 17;
/** Protocol feature (after 7.2). */
export const VHOST_USER_PROTOCOL_F_SHARED_OBJECT = 18;
/** Protocol feature (after 7.2). */
export const VHOST_USER_PROTOCOL_F_DEVICE_STATE = 19;
/** Protocol feature (after 7.2): QEMU clears it unless INFLIGHT_SHMFD is offered too. */
export const VHOST_USER_PROTOCOL_F_GET_VRING_BASE_INFLIGHT = 20;
/**
 * Protocol feature (QEMU 11.1: bit 22, measured; older drafts said 20): shared memory regions
 * (GET_SHMEM_CONFIG, SHMEM_MAP / SHMEM_UNMAP).
 */
export const VHOST_USER_PROTOCOL_F_SHMEM = 22;

/** `1n << bit`, for building feature masks. */
export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

/** vring state payload: `u32 index; u32 num;` */
export const VRING_STATE = { size: 8, index: 0, num: 4 } as const;
/** vring address payload: `u32 index; u32 flags; u64 desc, used, avail, log;` */
export const VRING_ADDR = {
  size: 40,
  index: 0,
  flags: 4,
  desc: 8,
  used: 16,
  avail: 24,
  log: 32,
} as const;
/** A u64 payload (features, a queue index with NOFD, ...). */
export function u64Payload(value: bigint | number): Uint8Array {
  const b = new Uint8Array(U64_PAYLOAD_SIZE);
  new DataView(b.buffer).setBigUint64(0, BigInt(value), true);
  return b;
}

/** A vring state payload (SET_VRING_NUM / BASE / ENABLE, GET_VRING_BASE): u32s, wrapped. */
export function vringStatePayload(index: number, num: number): Uint8Array {
  const b = new Uint8Array(VRING_STATE.size);
  const v = new DataView(b.buffer);
  v.setUint32(VRING_STATE.index, index >>> 0, true);
  v.setUint32(VRING_STATE.num, num >>> 0, true);
  return b;
}

/** SET_VRING_ADDR flags: log the used ring (migration). */
export const VHOST_VRING_F_LOG = 0x1;
/** A memory region: `u64 guest_phys_addr, memory_size, userspace_addr, mmap_offset;` */
export const MEMORY_REGION = {
  size: 32,
  guestPhysAddr: 0,
  memorySize: 8,
  userspaceAddr: 16,
  mmapOffset: 24,
} as const;
/** SET_MEM_TABLE payload: `u32 nregions; u32 padding; region[nregions]` (at most 8). */
export const MEMORY_TABLE = { header: 8, nregions: 0, maxRegions: 8 } as const;
/** ADD_MEM_REG / REM_MEM_REG payload: `u64 padding; region`. */
export const SINGLE_MEMORY_REGION = { size: 40, region: 8 } as const;
/** A u64 payload. */
export const U64_PAYLOAD_SIZE = 8;

/** GET_SHMEM_CONFIG reply: `u32 nregions; u32 padding; u64 memory_sizes[256]`. */
export const SHMEM_CONFIG = {
  size: 8 + 8 * 256,
  nregions: 0,
  memorySizes: 8,
  maxRegions: 256,
} as const;
/**
 * SHMEM_MAP / SHMEM_UNMAP payload (VhostUserMMap): `u8 shmid; u8 padding[7]; u64 fd_offset;
 * u64 shm_offset; u64 len; u64 flags;` (the file's fd travels by SCM_RIGHTS with SHMEM_MAP).
 */
export const SHMEM_MAP_MSG = {
  size: 40,
  shmid: 0,
  fdOffset: 8,
  shmOffset: 16,
  len: 24,
  flags: 32,
} as const;
/**
 * GET_CONFIG / SET_CONFIG payload (VhostUserConfig): `u32 offset; u32 size; u32 flags;
 * u8 region[size]` (size at most 256); the reply carries the same header and the bytes.
 */
export const DEVICE_CONFIG = {
  header: 12,
  offset: 0,
  size: 4,
  flags: 8,
  region: 12,
  maxSize: 256,
} as const;
/** SHMEM_MAP flags: bit 0, map the range writable (QEMU 11.1 maps every range read-write). */
export const VHOST_USER_FLAG_MAP_RW = 0x1;
