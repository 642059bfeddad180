/**
 * Finite-difference gradient checks of every differentiable op on the CPU
 * reference backend (cases in `helpers.ts`, shared with the parity test), and
 * the autograd engine's bookkeeping: accumulation, retainGrad, noGrad, detach.
 */
import assert from "node:assert/strict";
import * as core from "@lowp/core";
import { add, backward, detach, mul, noGrad, square, sum, type Tensor, tensor, useBackend } from "@lowp/core";
import { gradCheck, hostInputs, OP_CASES } from "./helpers.ts";

await useBackend("cpu");

for (const c of OP_CASES) {
  Deno.test(`gradcheck ${c.name}`, () => gradCheck(c.fn, hostInputs(c), { label: c.name }));
}

/** Exports of core/ops that have no gradient (or are helpers rather than ops); everything else needs a case. */
const NOT_DIFFERENTIABLE = new Set([
  // masks, signs and indices: zero or undefined derivative
  "sign",
  "equal",
  "notEqual",
  "less",
  "lessEqual",
  "greater",
  "greaterEqual",
  "argmax",
  "argmin",
  "oneHot",
  "fullLike",
  // blocks gradients by design (tested below)
  "detach",
  // shape and index helpers
  "broadcastShapes",
  "broadcastStrides",
  "normalizeAxis",
  "sameShape",
  "checkIndices",
]);

Deno.test("gradcheck covers every differentiable op exported by core", async () => {
  const covered = new Set(OP_CASES.map((c) => c.op));
  const exported = new Map(Object.entries(core));
  const missing: string[] = [];
  for await (const entry of Deno.readDir(new URL("../core/ops/", import.meta.url))) {
    if (!entry.name.endsWith(".ts") || entry.name.endsWith("_test.ts")) continue;
    const module = await import(new URL(`../core/ops/${entry.name}`, import.meta.url).href);
    for (const [name, value] of Object.entries(module)) {
      if (typeof value !== "function" || exported.get(name) !== value) continue;
      if (!covered.has(name) && !NOT_DIFFERENTIABLE.has(name)) missing.push(`${entry.name}: ${name}`);
    }
  }
  assert.deepEqual(missing, [], "ops without a gradcheck case (add one to OP_CASES in tests/helpers.ts)");
});

const leaf = (values: number[]) => tensor(values, { requiresGrad: true });
const values = async (t: Tensor | null) => Array.from(await t!.data());

Deno.test("autograd: a second backward adds to .grad", async () => {
  const x = leaf([1, -2, 3]);
  backward(sum(square(x)));
  backward(sum(square(x)));
  assert.deepEqual(await values(x.grad), [4, -8, 12]);
});

Deno.test("autograd: a value used twice gets both contributions", async () => {
  const x = leaf([1, 2]);
  backward(sum(add(mul(x, 3), mul(x, x))));
  assert.deepEqual(await values(x.grad), [5, 7]);
});

Deno.test("autograd: retainGrad() keeps a non-leaf gradient; others stay null", async () => {
  const x = leaf([1, 2, 3]);
  const h = mul(x, 2).retainGrad();
  const other = add(h, 1);
  backward(sum(square(other)));
  assert.deepEqual(await values(h.grad), [6, 10, 14]); // 2·(h + 1)
  assert.deepEqual(await values(x.grad), [12, 20, 28]);
  assert.equal(other.grad, null);
});

Deno.test("autograd: noGrad records nothing", () => {
  const x = leaf([1, 2]);
  const y = noGrad(() => sum(mul(x, x)));
  assert.equal(y.requiresGrad, false);
  assert.equal(y.node, null);
  assert.throws(() => backward(y), /does not require gradients/);
  assert.equal(x.grad, null);
});

Deno.test("autograd: detach blocks the gradient", async () => {
  const x = leaf([2, 3]);
  const d = detach(x);
  assert.equal(d.requiresGrad, false);
  backward(sum(mul(d, x))); // d/dx (c·x) with c = x held constant
  assert.deepEqual(await values(x.grad), [2, 3]);
});

Deno.test("autograd: backward on a non-scalar needs an explicit gradient", async () => {
  const x = leaf([1, 2, 3]);
  assert.throws(() => backward(mul(x, 2)), /is not a scalar; pass the output gradient explicitly/);
  backward(mul(x, 2), tensor([1, 10, 100]));
  assert.deepEqual(await values(x.grad), [2, 20, 200]);
});
