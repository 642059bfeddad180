/**
 * Results must not depend on permissions: the WebAssembly kernels are embedded (`deno task wasm`), so a run
 * without read permission uses them just like one with it.
 */
import assert from "node:assert/strict";

const modUrl = new URL("../mod.ts", import.meta.url).href;
const config = new URL("../deno.json", import.meta.url).pathname;

/** The README's usage example on the CPU backend, 21 steps: the loss every 5 steps, as f32 bits. */
const SNIPPET = `
import { AdamW, backward, cosineSchedule, GPT, gradClip, tensor, tidy, useBackend } from "${modUrl}";

await useBackend("cpu");
const model = new GPT({ vocabSize: 256, contextLength: 32, dModel: 64, nLayers: 2, nHeads: 2 }, { seed: 0 });
const opt = new AdamW(model.namedParameters(), { weightDecay: 0.1 });
const lr = cosineSchedule({ lr: 3e-3, warmup: 10, total: 100 });
const text = new TextEncoder().encode("to be, or not to be, that is the question. ".repeat(20));
const x = tensor(Int32Array.from(text.subarray(0, 32)), { shape: [1, 32] });
const y = tensor(Int32Array.from(text.subarray(1, 33)), { shape: [1, 32] });
const bits = [];
for (let step = 0; step <= 20; step++) {
  const loss = tidy(() => {
    const loss = model.loss(x, y);
    backward(loss);
    opt.step(lr(step), { gradScale: gradClip(model.parameters(), 1.0).scale });
    model.zeroGrad();
    return loss;
  });
  if (step % 5 === 0) bits.push(new Uint32Array(Float32Array.of(await loss.item()).buffer)[0].toString(16));
  loss.dispose();
}
console.log(JSON.stringify(bits));
`;

async function lossBits(flags: string[]): Promise<{ bits: string[]; stderr: string }> {
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(script, SNIPPET);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--config", config, ...flags, script],
      stdin: "null",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    return { bits: JSON.parse(new TextDecoder().decode(out.stdout)), stderr };
  } finally {
    await Deno.remove(script);
  }
}

Deno.test("the README example gives the same loss bits with no permissions as with read and env permission", async () => {
  const granted = await lossBits(["--allow-read", "--allow-env"]);
  const bare = await lossBits([]);
  assert.equal(granted.bits.length, 5);
  assert.deepEqual(bare.bits, granted.bits);
  assert.equal(bare.stderr, "", "a run without permissions must not fall back (or say anything)");
});
