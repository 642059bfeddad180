import assert from "node:assert/strict";
import { backward, cpuBackend, mul, softmax, softmaxLastAxis, sum, tensor } from "@lowp/core";

Deno.test("causal scaled softmax: row i keeps columns 0..i (exact zeros beyond) and equals softmax(scale·x) there", async () => {
  const backend = cpuBackend();
  const values = [[1, 2, 3], [0.5, -1, 4], [2, 2, 2]];
  const y = await softmaxLastAxis(tensor(values, { backend }), { scale: 0.5, causal: true }).toArray() as number[][];
  values.forEach((row, i) => {
    const kept = row.slice(0, i + 1).map((v) => v * 0.5);
    const m = Math.max(...kept), e = kept.map((v) => Math.exp(v - m)), s = e.reduce((a, b) => a + b);
    e.forEach((v, j) => assert.ok(Math.abs(y[i][j] - v / s) < 1e-6, `row ${i} col ${j}`));
    for (let j = i + 1; j < row.length; j++) assert.equal(y[i][j], 0);
  });
});

Deno.test("causal scaled softmax: masked scores get no gradient, the rest get scale times the softmax gradient", async () => {
  const backend = cpuBackend();
  const x = tensor([[1, 2], [3, 4]], { backend, requiresGrad: true });
  const w = tensor([[1, 5], [2, -1]], { backend });
  backward(sum(mul(softmaxLastAxis(x, { scale: 2, causal: true }), w)));
  const g = await x.grad!.toArray() as number[][];
  assert.deepEqual(g[0], [0, 0], "row 0 has one kept entry (y = 1): no gradient, and the masked one none");
  const ref = tensor([[3, 4]], { backend, requiresGrad: true });
  backward(sum(mul(softmax(mul(ref, 2)), tensor([[2, -1]], { backend }))));
  const want = (await ref.grad!.toArray() as number[][])[0];
  g[1].forEach((v, j) => assert.ok(Math.abs(v - want[j]) < 1e-6));
});

Deno.test("causal softmax over rectangular scores: the Tq queries are the last of the Tk positions", async () => {
  const backend = cpuBackend();
  // Two queries at positions 1 and 2 of three keys: row 0 keeps columns 0..1, row 1 all three.
  const y = await softmaxLastAxis(tensor([[1, 2, 3], [0.5, -1, 4]], { backend }), { causal: true }).toArray();
  const full = await softmaxLastAxis(tensor([[9, 9, 9], [1, 2, 3], [0.5, -1, 4]], { backend }), { causal: true })
    .toArray() as number[][];
  assert.deepEqual(y, full.slice(1), "the same rows as the square block's last two");
});

Deno.test("causal softmax needs Tq <= Tk and plain softmax", () => {
  const x = tensor([[1], [2]], { backend: cpuBackend() });
  assert.throws(() => softmaxLastAxis(x, { causal: true }), /Tq <= Tk/);
  assert.throws(() => softmaxLastAxis(tensor([[1, 2], [3, 4]]), { causal: true, log: true }), /softmax only/);
});
