/** Optimizers against their formulas (written out in f64 here), on both backends. */
import assert from "node:assert/strict";
import { type Backend, cpuBackend, tensor } from "@lowp/core";
import { gpuBackendOrSkip } from "../tests/helpers.ts";
import { AdamW, clipGradNorm, cosineSchedule, SGD } from "./mod.ts";

const P0 = [0.5, -1.25, 2, 0.001], G = [[0.1, -0.2, 0.3, 0], [-0.05, 0.4, 0.1, 1e-3], [0.2, 0.2, -0.3, -1]];

/** PyTorch's AdamW in f64. */
function adamwReference(lr: number, b1: number, b2: number, eps: number, wd: number): number[] {
  const p = [...P0], m = P0.map(() => 0), v = P0.map(() => 0);
  G.forEach((g, s) => {
    const t = s + 1;
    for (let i = 0; i < p.length; i++) {
      p[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const mHat = m[i] / (1 - b1 ** t), vHat = v[i] / (1 - b2 ** t);
      p[i] -= lr * mHat / (Math.sqrt(vHat) + eps);
    }
  });
  return p;
}

/** PyTorch's SGD (momentum, optional Nesterov, L2 weight decay) in f64. */
function sgdReference(lr: number, mu: number, nesterov: boolean, wd: number): number[] {
  const p = [...P0], buf: number[] = [];
  G.forEach((gRaw, s) => {
    for (let i = 0; i < p.length; i++) {
      const g = gRaw[i] + wd * p[i];
      buf[i] = s === 0 ? g : mu * buf[i] + g;
      p[i] -= lr * (nesterov ? g + mu * buf[i] : buf[i]);
    }
  });
  return p;
}

async function train(backend: Backend, make: (p: ReturnType<typeof tensor>) => { step(lr: number): void }, lr: number) {
  const p = tensor([P0], { backend, requiresGrad: true }); // rank 2, so weight decay applies by default
  const opt = make(p);
  for (const g of G) {
    p.grad?.dispose();
    p.grad = tensor([g], { backend }).keep();
    opt.step(lr);
  }
  return Array.from(await p.data());
}

async function backends(): Promise<Backend[]> {
  const gpu = await gpuBackendOrSkip();
  return gpu ? [cpuBackend(), gpu] : [cpuBackend()];
}

Deno.test("AdamW follows PyTorch's update (bias correction, decoupled decay) on every backend", async () => {
  const want = adamwReference(0.1, 0.9, 0.99, 1e-8, 0.1);
  for (const b of await backends()) {
    const got = await train(b, (p) => new AdamW([p], { betas: [0.9, 0.99], weightDecay: 0.1 }), 0.1);
    // f32 arithmetic vs the f64 formula: a few ulp of values O(1).
    got.forEach((g, i) => assert.ok(Math.abs(g - want[i]) < 1e-6, `${b.name}: ${g} vs ${want[i]} at ${i}`));
  }
});

Deno.test("SGD with momentum and with Nesterov follows PyTorch's rule on every backend", async () => {
  for (const nesterov of [false, true]) {
    const want = sgdReference(0.1, 0.9, nesterov, 0.01);
    for (const b of await backends()) {
      const got = await train(b, (p) => new SGD([p], { momentum: 0.9, nesterov, weightDecay: 0.01 }), 0.1);
      got.forEach((g, i) => assert.ok(Math.abs(g - want[i]) < 1e-6, `${b.name} nesterov=${nesterov} at ${i}`));
    }
  }
});

Deno.test("clipGradNorm scales by maxNorm/‖g‖ only when the norm is larger, and returns the norm", async () => {
  for (const b of await backends()) {
    const a = tensor([3, 0], { backend: b, requiresGrad: true }),
      c = tensor([[0, 4]], { backend: b, requiresGrad: true });
    a.grad = tensor([3, 0], { backend: b }).keep();
    c.grad = tensor([[0, 4]], { backend: b }).keep();
    assert.ok(Math.abs(await clipGradNorm([a, c], 1).item() - 5) < 1e-6);
    const scaled = [...await a.grad.data(), ...await c.grad.data()];
    [0.6, 0, 0, 0.8].forEach((w, i) => assert.ok(Math.abs(scaled[i] - w) < 1e-6, `${b.name} at ${i}`));
    assert.ok(Math.abs(await clipGradNorm([a, c], 10).item() - 1) < 1e-6, "norm 1 stays as it is");
    assert.ok(Math.abs((await a.grad.data())[0] - 0.6) < 1e-6);
  }
});

Deno.test("cosine schedule: linear warm-up, cosine to minLr, held after the end", () => {
  const lr = cosineSchedule({ lr: 1, warmup: 10, total: 110, minLr: 0.1 });
  assert.equal(lr(0), 0.1);
  assert.equal(lr(9), 1);
  assert.equal(lr(10), 1);
  assert.ok(Math.abs(lr(60) - 0.55) < 1e-12);
  assert.ok(Math.abs(lr(110) - 0.1) < 1e-12);
  assert.equal(lr(500), lr(110));
  assert.throws(() => cosineSchedule({ lr: 1, warmup: 10, total: 10 }), /must exceed warmup/);
});
