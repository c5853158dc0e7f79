import assert from "node:assert/strict";
import { RequestStats, SAMPLE_EVERY } from "./request_stats.ts";
import { FUSE_GETATTR, FUSE_LOOKUP, FUSE_WRITE } from "../wire/fuse.ts";

Deno.test("RequestStats counts every request by opcode, most requested first", () => {
  const s = new RequestStats();
  for (let i = 0; i < 5; i++) s.count(FUSE_GETATTR);
  for (let i = 0; i < 2; i++) s.count(FUSE_LOOKUP);
  s.count(4096); // CUSE_INIT: above the table, counted as OTHER
  const sum = s.summary();
  assert.deepEqual(sum.map((x) => [x.opcode, x.count]), [[FUSE_GETATTR, 5], [FUSE_LOOKUP, 2], [
    63,
    1,
  ]]);
  assert.ok(Number.isNaN(sum[0]?.p50), "nothing timed: no percentile");
  assert.equal(s.line(), "GETATTR 5, LOOKUP 2, OTHER 1");
});

Deno.test("RequestStats percentiles come from the timed sample, within a quarter octave", () => {
  const s = new RequestStats();
  // 98 requests of ~10 µs and 2 of ~5 ms.
  for (let i = 0; i < 98; i++) s.sample(FUSE_WRITE, 10);
  s.sample(FUSE_WRITE, 5000);
  s.sample(FUSE_WRITE, 5000);
  s.count(FUSE_WRITE);
  const w = s.summary()[0];
  assert.ok(w !== undefined);
  assert.equal(w.sampled, 100);
  assert.ok(w.p50 >= 10 && w.p50 < 10 * 2 ** 0.25, `p50 ${w.p50}`);
  assert.ok(w.p99 >= 5000 && w.p99 < 5000 * 2 ** 0.25, `p99 ${w.p99}`);
  assert.ok(w.max >= 5000, `max ${w.max}`);
  assert.match(s.line(), /^WRITE 1 \(p50 11 µs, p99 \d+ µs, max \d+ µs\)$/);
  s.clear();
  assert.equal(s.line(), "none");
});

Deno.test("RequestStats.timeNext() picks one request in SAMPLE_EVERY", () => {
  const s = new RequestStats();
  let timed = 0;
  for (let i = 0; i < SAMPLE_EVERY * 100; i++) if (s.timeNext()) timed++;
  assert.equal(timed, 100);
});
