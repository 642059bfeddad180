import { backward, GPT, tensor, tidy, useBackend } from "../mod.ts";
import { AdamW, gradClip } from "../mod.ts";
import { applyPrecision, PRECISION_NAMES } from "../mod.ts";
await useBackend((Deno.args[0] ?? "cpu") as "cpu");
const B = 16, T = 64;
const x = tensor(Int32Array.from({ length: B * T }, (_, i) => (i * 31) % 256), { shape: [B, T] });
const y = tensor(Int32Array.from({ length: B * T }, (_, i) => (i * 31 + 7) % 256), { shape: [B, T] });
for (const name of PRECISION_NAMES) {
  const model = new GPT({ vocabSize: 256, contextLength: 64, dModel: 128, nLayers: 4, nHeads: 4 }, { seed: 1 });
  applyPrecision(model, name);
  const opt = new AdamW(model.namedParameters(), { weightDecay: 0.1 });
  let ms = 0;
  for (let s = 0; s < 6; s++) {
    const t0 = performance.now();
    const loss = tidy(() => {
      const l = model.loss(x, y, { step: s, training: true });
      backward(l);
      opt.step(1e-3, { gradScale: gradClip(model.parameters(), 1).scale });
      model.zeroGrad();
      return l;
    });
    await loss.item();
    loss.dispose();
    if (s >= 2) ms += performance.now() - t0;
  }
  console.log(name, (ms / 4).toFixed(1), "ms/step");
  model.dispose();
}
