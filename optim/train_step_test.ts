/**
 * `trainStep` against the step written out by hand, and every optimizer resuming bit-exactly from a checkpoint
 * written to disk (parameters plus `state()`, restored with `load()`).
 */
import assert from "node:assert/strict";
import { backward, GPT, loadTensors, saveTensors, type Tensor, tensor, tidy, useBackend } from "@lowp/core";
import { gpuBackendOrSkip } from "../tests/helpers.ts";
import { AdamW, gradClip, type Optimizer, SGD, trainStep } from "./mod.ts";

const CFG = { vocabSize: 16, contextLength: 4, dModel: 8, nLayers: 1, nHeads: 2 } as const;
const SHAPE = [2, 4];

/** Deterministic token batch for step `i`. */
function batch(i: number): Int32Array {
  return Int32Array.from({ length: 8 }, (_, k) => (i * 5 + k * 3 + (k >> 2)) % CFG.vocabSize);
}

/** Every parameter's f32 bits, in order. */
async function bits(model: GPT): Promise<number[]> {
  const out: number[] = [];
  for (const [, p] of model.namedParameters()) out.push(...new Uint32Array((await p.data() as Float32Array).buffer));
  return out;
}

function takeSteps(model: GPT, opt: Optimizer, from: number, to: number): void {
  for (let i = from; i < to; i++) {
    const lr = 0.05 / (1 + i);
    trainStep({ model, optimizer: opt, inputs: batch(i), targets: batch(i + 1), shape: SHAPE, lr, gradClip: 0.5 })
      .dispose();
  }
}

const OPTIMIZERS: [string, (model: GPT) => Optimizer][] = [
  ["SGD", (m) => new SGD(m.namedParameters())],
  ["SGD momentum", (m) => new SGD(m.namedParameters(), { momentum: 0.9, weightDecay: 0.01 })],
  ["SGD nesterov", (m) => new SGD(m.namedParameters(), { momentum: 0.9, nesterov: true })],
  ["AdamW", (m) => new AdamW(m.namedParameters(), { betas: [0.9, 0.99], weightDecay: 0.1 })],
];

async function backendNames(): Promise<("cpu" | "webgpu")[]> {
  return (await gpuBackendOrSkip()) ? ["cpu", "webgpu"] : ["cpu"];
}

Deno.test("every optimizer resumes bit-exactly: N steps == k steps, checkpoint, new model and optimizer, N-k steps", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const backend of await backendNames()) {
      await useBackend(backend);
      for (const [name, make] of OPTIMIZERS) {
        const straight = new GPT(CFG, { seed: 7 });
        takeSteps(straight, make(straight), 0, 6);
        const want = await bits(straight);
        straight.dispose();

        const first = new GPT(CFG, { seed: 7 });
        const firstOpt = make(first);
        takeSteps(first, firstOpt, 0, 3);
        const path = `${dir}/${name}.safetensors`;
        const state = firstOpt.state().map(([n, t]) => [`optimizer.${n}`, t] as [string, Tensor]);
        await saveTensors(path, [...first.namedParameters(), ...state], { steps: String(firstOpt.steps) });
        first.dispose();

        const resumed = new GPT(CFG, { seed: 1 }); // another seed: everything must come from the checkpoint
        const opt = make(resumed);
        const { tensors, metadata } = await loadTensors(path);
        for (const [n, p] of resumed.namedParameters()) p.assign(tensors.get(n)!);
        const saved = [...tensors].filter(([n]) => n.startsWith("optimizer.")).map(([n, t]) =>
          [n.slice(10), t] as const
        );
        opt.load(new Map(saved), Number(metadata.steps));
        assert.equal(opt.steps, 3);
        takeSteps(resumed, opt, 3, 6);
        assert.deepEqual(await bits(resumed), want, `${backend} ${name}: resumed parameters differ`);

        if (name !== "SGD") {
          // The check can fail: the same resume without the optimizer state ends elsewhere.
          const fresh = new GPT(CFG, { seed: 1 });
          for (const [n, p] of fresh.namedParameters()) p.assign(tensors.get(n)!);
          takeSteps(fresh, make(fresh), 3, 6);
          assert.notDeepEqual(await bits(fresh), want, `${backend} ${name}: state should matter`);
          fresh.dispose();
        }
        resumed.dispose();
        for (const t of tensors.values()) t.dispose();
      }
    }
  } finally {
    await useBackend("cpu");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("load refuses optimizer state whose shape does not match its parameter", () => {
  const p = tensor([[1, 2]], { requiresGrad: true });
  const opt = new SGD([["w", p]], { momentum: 0.9 });
  assert.throws(() => opt.load(new Map([["w/momentum", tensor([1, 2, 3])]]), 1), /w\/momentum: shape \[3\].*\[1,2\]/);
});

Deno.test("trainStep equals the step written out by hand, bit for bit, and leaves no gradient behind", async () => {
  await useBackend("cpu");
  const byHand = new GPT(CFG, { seed: 3 }), viaStep = new GPT(CFG, { seed: 3 });
  const handOpt = new AdamW(byHand.namedParameters()), stepOpt = new AdamW(viaStep.namedParameters());
  for (let i = 0; i < 3; i++) {
    const handLoss = tidy(() => {
      const loss = byHand.loss(tensor(batch(i), { shape: SHAPE }), tensor(batch(i + 1), { shape: SHAPE }));
      backward(loss);
      handOpt.step(0.01, { gradScale: gradClip(byHand.parameters(), 0.5).scale });
      byHand.zeroGrad();
      return loss;
    });
    const inputs = tensor(batch(i), { shape: SHAPE }), targets = tensor(batch(i + 1), { shape: SHAPE });
    const loss = trainStep({ model: viaStep, optimizer: stepOpt, inputs, targets, lr: 0.01, gradClip: 0.5 });
    assert.equal(await loss.item(), await handLoss.item(), `loss at step ${i}`);
    assert.ok(viaStep.parameters().every((p) => p.grad === null), "gradients are dropped after the update");
    loss.dispose();
    handLoss.dispose();
    inputs.dispose();
    targets.dispose();
  }
  assert.deepEqual(await bits(viaStep), await bits(byHand));
  byHand.dispose();
  viaStep.dispose();
});

Deno.test("trainStep: host ids need a shape; gradClip 0 skips clipping", async () => {
  await useBackend("cpu");
  const model = new GPT(CFG, { seed: 3 });
  const optimizer = new SGD(model.namedParameters());
  assert.throws(
    () => trainStep({ model, optimizer, inputs: batch(0), targets: batch(1), lr: 0.1 }),
    /inputs is an Int32Array, so shape is required/,
  );
  // Unclipped and clipped with a huge bound take the same step, while a tight bound changes it.
  const run = async (gradClip: number) => {
    const m = new GPT(CFG, { seed: 3 });
    takeStepsWithClip(m, new SGD(m.namedParameters()), gradClip);
    const out = await bits(m);
    m.dispose();
    return out;
  };
  assert.deepEqual(await run(0), await run(1e30));
  assert.notDeepEqual(await run(0), await run(1e-3));
  model.dispose();
});

function takeStepsWithClip(model: GPT, optimizer: Optimizer, gradClip: number): void {
  trainStep({ model, optimizer, inputs: batch(0), targets: batch(1), shape: SHAPE, lr: 0.1, gradClip }).dispose();
}
