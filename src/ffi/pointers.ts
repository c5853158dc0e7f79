/**
 * Addresses of JS memory, for the structs that hold pointers (iovec, msghdr).
 *
 * @module
 */

/**
 * A zero-filled byte buffer whose memory never moves: its backing store is an `ArrayBuffer`
 * of its own, never V8's on-heap storage for small typed arrays, so its address may be stored in
 * a struct and used by a later call.
 */
export function stableBytes(size: number): Uint8Array {
  return new Uint8Array(new ArrayBuffer(Math.max(size, 1)));
}

/** The address of a view's first byte (its byteOffset included), as a number. */
export function addressOf(view: ArrayBufferView): number {
  const ptr = Deno.UnsafePointer.of(view as BufferSource);
  return ptr === null ? 0 : Number(Deno.UnsafePointer.value(ptr));
}

/** The address a pointer holds, as a number (0 for NULL). */
export function pointerValue(ptr: Deno.PointerValue): number {
  return ptr === null ? 0 : Number(Deno.UnsafePointer.value(ptr));
}

const encoder = new TextEncoder();

/** A NUL-terminated copy of `s` in UTF-8, for `const char *` parameters. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(s);
  const out = new Uint8Array(new ArrayBuffer(bytes.length + 1));
  out.set(bytes);
  return out;
}

/** Writes a 64-bit address or size held in a number (below 2^53) into a DataView, little-endian. */
export function setU64(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, value >>> 0, true);
  view.setUint32(offset + 4, Math.floor(value / 0x1_0000_0000), true);
}

/** Reads a little-endian 64-bit value as a number; exact below 2^53. */
export function getU64(view: DataView, offset: number): number {
  return view.getUint32(offset + 4, true) * 0x1_0000_0000 + view.getUint32(offset, true);
}
