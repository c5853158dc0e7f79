/**
 * Test data whose bytes depend on their offset and a seed: no two 4 KiB pages alike, so a page out
 * of place, a short read or a range of zeros shows in a comparison or a digest.
 *
 * @module
 */

/** `size` bytes of the pattern for `seed` (a linear congruential sequence, top byte). */
export function pattern(size: number, seed: number): Uint8Array {
  const b = new Uint8Array(size);
  let x = (seed * 2654435761) >>> 0;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}
