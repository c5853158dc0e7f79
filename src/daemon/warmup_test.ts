import assert from "node:assert/strict";
import { PassthroughFs } from "../filesystem/passthrough/passthrough_fs.ts";
import { Warmup } from "./warmup.ts";

Deno.test("warm-up: serves its request mix to a private file system without an unexpected error, then leaves nothing behind", () => {
  let dir = "";
  const warmup = new Warmup((d, log) => {
    dir = d;
    return new PassthroughFs({ sharedDir: d, cache: "auto", log });
  });
  assert.ok(Deno.statSync(`${dir}/d`).isDirectory);
  let slices = 0;
  while (!warmup.step(5)) slices++;
  warmup.close();
  assert.ok(slices > 1, `ran in ${slices + 1} slices`);
  assert.ok(warmup.requests > 10_000, `${warmup.requests} requests`);
  assert.equal(warmup.unexpectedErrors, 0, warmup.firstUnexpected);
  assert.throws(() => Deno.statSync(dir), Deno.errors.NotFound);
});
