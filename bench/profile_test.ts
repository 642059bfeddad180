import assert from "node:assert/strict";
import { cpuBackend, useBackend } from "@lowp/core";
import { byPrimitive, labelOf, profileGptStep } from "./profile.ts";

Deno.test("profile: steady-state calls per step are whole and repeat; host time fits in the step", async () => {
  await useBackend("cpu");
  const matmul = cpuBackend().matmul;
  const [a, b] = [await profileGptStep(cpuBackend(), 2), await profileGptStep(cpuBackend(), 1)];
  assert.ok(a.parts.size > 10, `only ${a.parts.size} labels`);
  for (const [label, part] of a.parts) {
    assert.ok(Number.isInteger(part.calls) && part.calls > 0, `${label}: ${part.calls} calls per step`);
    assert.equal(b.parts.get(label)?.calls, part.calls, `${label}: calls differ between runs`);
    assert.equal(part.gpuUs, undefined);
  }
  // 4 layers x (qkv, scores, weights.v, proj, fc1, fc2) + the head, each with 2 gradient products.
  const matmuls = byPrimitive(a.parts).get("matmul")!;
  assert.equal(matmuls.calls, 3 * (4 * 6 + 1));
  assert.ok(a.hostMs <= a.msPerStep * 1.05, `host ${a.hostMs} ms in a ${a.msPerStep} ms step`);
  assert.equal(a.recordMs, undefined);
  assert.equal(cpuBackend().matmul, matmul, "the backend's methods are restored");
});

Deno.test("profile: labels tell calls apart by operator, kernel, reduction, matmul shape and copy layout", () => {
  const shape = { transA: true, transB: false, m: 2, n: 3, k: 4, batch: 5 };
  assert.equal(labelOf("matmul", [null, null, null, shape]), "matmul:TN:2x3x4x5");
  assert.equal(labelOf("map", [{ name: "add" }, [], [2, 3]]), "map:add:2d");
  assert.equal(labelOf("runWords", [{ name: "adamw_step" }]), "words:adamw_step");
  assert.equal(labelOf("reduce", ["max", null, 8, 1024, 1]), "reduce:max:1024");
  const view = (strides: number[]) => ({ offset: 0, strides });
  assert.equal(
    labelOf("copy", [null, view([1, 512]), null, view([1024, 1]), [512, 1024]]),
    "copy:512x1024:1,512>1024,1",
  );
  assert.equal(labelOf("fill", []), "fill");
});
