import assert from "node:assert/strict";
import {
  backward,
  GPT,
  type GPTConfig,
  Linear,
  type LinearOp,
  matchesName,
  Module,
  mul,
  plainLinear,
  randomKey,
  tensor,
  tidy,
  useBackend,
} from "@lowp/core";

const CFG: GPTConfig = { vocabSize: 32, contextLength: 16, dModel: 16, nLayers: 2, nHeads: 2 };
const tokens = () => tensor([[1, 2, 3, 4, 5, 6]], { dtype: "i32" });
const targets = () => tensor([[2, 3, 4, 5, 6, 7]], { dtype: "i32" });

await useBackend("cpu");

Deno.test("namedModules lists the tree with HF GPT-2 names, parents first; getModule finds each", () => {
  const model = new GPT(CFG, { seed: 0 });
  const names = model.namedModules().map(([n]) => n);
  assert.deepEqual(names.slice(0, 8), [
    "",
    "transformer.wte",
    "transformer.wpe",
    "transformer.h.0",
    "transformer.h.0.ln_1",
    "transformer.h.0.attn",
    "transformer.h.0.attn.c_attn",
    "transformer.h.0.attn.c_proj",
  ]);
  assert.ok(names.includes("transformer.h.1.mlp.c_fc") && names.includes("transformer.ln_f"));
  for (const [n, m] of model.namedModules()) assert.equal(model.getModule(n), m);
  assert.ok(model.getModule("transformer.h.1.mlp.c_proj") instanceof Linear);
  assert.throws(
    () => model.getModule("transformer.h.0.attn.q_proj"),
    /no module 'transformer.h.0.attn.q_proj'; nearest/,
  );
  // Every parameter belongs to exactly one listed module (the tied head is wte's weight).
  const owned = model.namedModules().flatMap(([, m]) => m === model ? [] : [m]);
  assert.equal(owned.length, names.length - 1);
  assert.deepEqual(
    model.namedParameters().map(([n]) => n).slice(0, 3),
    ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight"],
  );
});

Deno.test("matchesName: * stays inside a segment, ** crosses them, a prefix covers a module's parameters", () => {
  assert.ok(matchesName("transformer.h.*.mlp.*", "transformer.h.3.mlp.c_fc.weight"));
  assert.ok(!matchesName("transformer.h.*.mlp.*", "transformer.h.3.attn.c_attn.weight"));
  assert.ok(matchesName("transformer.h.0", "transformer.h.0.ln_1.bias"));
  assert.ok(!matchesName("transformer.h.1", "transformer.h.10.ln_1.bias"));
  assert.ok(matchesName("**.c_proj", "transformer.h.2.attn.c_proj"));
  assert.ok(!matchesName("*.c_proj", "transformer.h.2.attn.c_proj"));
  assert.ok(matchesName(/c_attn\.weight$/, "transformer.h.0.attn.c_attn.weight"));
});

Deno.test("freeze: frozen parameters get no gradient, the others the same gradient as before", async () => {
  const full = new GPT(CFG, { seed: 3 });
  tidy(() => backward(full.loss(tokens(), targets())));
  const frozen = new GPT(CFG, { seed: 3 });
  const names = frozen.freeze("transformer.h.*.mlp.*");
  assert.equal(names.length, 2 * 4); // two blocks × (c_fc, c_proj) × (weight, bias)
  assert.deepEqual(frozen.namedParameters({ trainable: false }).map(([n]) => n), names);
  assert.equal(frozen.namedParameters({ trainable: true }).length, frozen.namedParameters().length - names.length);
  tidy(() => backward(frozen.loss(tokens(), targets())));
  for (const [n, p] of frozen.namedParameters()) {
    if (names.includes(n)) assert.equal(p.grad, null, n);
    else {
      const want = full.namedParameters().find(([m]) => m === n)![1].grad!;
      assert.deepEqual(await p.grad!.data(), await want.data(), `${n}: same gradient with the MLPs frozen`);
    }
  }
  assert.equal(frozen.parameterCount({ trainable: false }), 2 * (16 * 64 + 64 + 64 * 16 + 16));
  frozen.unfreeze();
  assert.equal(frozen.namedParameters({ trainable: false }).length, 0);
  assert.throws(() => frozen.freeze("transformer.h.9"), /freeze: no parameter matches 'transformer.h.9'/);
});

Deno.test("freeze: a frozen weight's gradient is not computed at all (matmul returns none for it)", async () => {
  const lin = new Linear("probe", { seed: 0 }, 2, 3, { bias: false });
  const x = tensor([[1, 1]], { requiresGrad: true });
  const grads = (frozen: boolean) =>
    tidy(() => {
      lin.weight.requiresGrad = !frozen;
      const y = lin.call(x);
      assert.equal(y.node!.op, "matmul");
      return y.node!.backward(tensor([[1, 1, 1]]));
    });
  const [gx, gw] = grads(true);
  assert.equal(gw, null);
  assert.deepEqual(await gx!.data(), await grads(false)[0]!.data());
  assert.notEqual(grads(false)[1], null);
});

/** A layer that doubles another layer's output: stands in for a quantized or LoRA wrapper. */
class Doubled extends Module {
  constructor(readonly inner: Linear) {
    super(inner.name, inner.init);
  }
  forward(x: Parameters<Linear["forward"]>[0]) {
    return mul(this.inner.call(x), 2);
  }
}

Deno.test("setModule swaps a child that the parent then runs; replaceModules by pattern; errors", async () => {
  const model = new GPT(CFG, { seed: 1 });
  const before = await tidy(() => model.forward(tokens())).data();
  const old = model.getModule("transformer.h.0.mlp.c_proj") as Linear;
  const replaced = model.setModule("transformer.h.0.mlp.c_proj", new Doubled(old));
  assert.equal(replaced, old);
  assert.ok(model.getModule("transformer.h.0.mlp.c_proj") instanceof Doubled);
  const after = await tidy(() => model.forward(tokens())).data();
  assert.notDeepEqual(after, before, "the parent runs the new child");
  assert.throws(
    () => model.setModule("transformer.h.0.mlp.c_fc", new Linear("elsewhere", { seed: 0 }, 16, 64)),
    /the replacement of 'transformer.h.0.mlp.c_fc' is named 'elsewhere'/,
  );
  const swapped = model.replaceModules(
    "transformer.h.*.attn.*",
    (m): m is Linear => m instanceof Linear,
    (m) => new Doubled(m),
  );
  assert.deepEqual(swapped, [
    "transformer.h.0.attn.c_attn",
    "transformer.h.0.attn.c_proj",
    "transformer.h.1.attn.c_attn",
    "transformer.h.1.attn.c_proj",
  ]);
  assert.throws(
    () => model.replaceModules("transformer.h.*.q_proj", (m): m is Linear => m instanceof Linear, (m) => m),
    /no module matches 'transformer.h.\*.q_proj'/,
  );
});

Deno.test("Linear.op is the layer seam: a replaced op runs with the forward context", async () => {
  const model = new GPT(CFG, { seed: 2 });
  const seen: [string, number | undefined][] = [];
  const spy: LinearOp = (x, layer, ctx) => {
    seen.push([layer.name, ctx?.step]);
    return plainLinear(x, layer, ctx);
  };
  for (const [, m] of model.namedModules()) if (m instanceof Linear) m.op = spy;
  const want = await tidy(() => new GPT(CFG, { seed: 2 }).forward(tokens())).data();
  const got = await tidy(() => model.forward(tokens(), { step: 7 })).data();
  assert.deepEqual(got, want, "the plain op gives the same bits");
  assert.equal(seen.length, 2 * 4);
  assert.ok(seen.every(([, step]) => step === 7));
  assert.equal(seen[0][0], "transformer.h.0.attn.c_attn");
});

Deno.test("onForward hooks see each call's input and output, and can be removed", async () => {
  const model = new GPT(CFG, { seed: 0 });
  const captured: [string, readonly number[], readonly number[]][] = [];
  const remove = model.getModule("transformer.h.1.mlp.c_fc").onForward((name, input, output) => {
    captured.push([name, input.shape, output.shape]);
  });
  tidy(() => model.forward(tokens()));
  assert.deepEqual(captured, [["transformer.h.1.mlp.c_fc", [1, 6, 16], [1, 6, 64]]]);
  remove();
  tidy(() => model.forward(tokens()));
  assert.equal(captured.length, 1);
  await Promise.resolve();
});

Deno.test("randomKey differs per layer, role and step, and is the same for the same ones", () => {
  const a = randomKey({ step: 3, seed: 9 }, "transformer.h.0.mlp.c_fc", "weight");
  assert.deepEqual(a, randomKey({ step: 3, seed: 9 }, "transformer.h.0.mlp.c_fc", "weight"));
  assert.equal(a.seed, 9);
  for (
    const other of [
      randomKey({ step: 4, seed: 9 }, "transformer.h.0.mlp.c_fc", "weight"),
      randomKey({ step: 3, seed: 9 }, "transformer.h.1.mlp.c_fc", "weight"),
      randomKey({ step: 3, seed: 9 }, "transformer.h.0.mlp.c_fc", "grad_output"),
    ]
  ) assert.notEqual(other.stream, a.stream);
});

Deno.test("registerParameter adds a trainable parameter to a module; replace, find, remove; buffers too", async () => {
  const model = new GPT(CFG, { seed: 0 });
  const layer = model.getModule("transformer.h.1.mlp.c_fc") as Linear;
  const count = model.namedParameters().length;
  const step = layer.registerParameter("extra.step", tensor([0.5, 0.25]));
  assert.equal(step.name, "transformer.h.1.mlp.c_fc.extra.step");
  assert.ok(step.requiresGrad);
  assert.equal(layer.parameter("extra.step"), step);
  const names = model.namedParameters({ trainable: true }).map(([n]) => n);
  assert.equal(names.length, count + 1);
  assert.ok(names.includes("transformer.h.1.mlp.c_fc.extra.step"));
  assert.deepEqual(model.freeze("**.extra"), ["transformer.h.1.mlp.c_fc.extra.step"]);
  const replacement = layer.registerParameter("extra.step", tensor([1, 2]));
  assert.equal(layer.parameter("extra.step"), replacement);
  assert.ok(replacement.requiresGrad, "a registered parameter is trainable");
  assert.throws(() => step.data(), /used after dispose/, "the replaced one is disposed");
  assert.equal(layer.removeParameter("extra.step"), replacement);
  assert.equal(model.namedParameters().length, count);
  assert.equal(layer.removeParameter("extra.step"), undefined);
  assert.deepEqual([...await replacement.data()], [1, 2], "removed, not disposed");
  layer.registerBuffer("flag", tensor([1]));
  assert.equal(layer.removeBuffer("flag")?.name, "transformer.h.1.mlp.c_fc.flag");
  assert.equal(layer.buffer("flag"), undefined);
  model.dispose();
});
