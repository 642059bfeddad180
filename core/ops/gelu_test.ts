/**
 * GELU keeps its tanh for the backward when a gradient is needed: the forward values must not depend on
 * that (same bits with and without it), on the CPU and, where there is an adapter, on WebGPU.
 */
import { type Backend, cpuBackend, gelu, noGrad, randn } from "@lowp/core";
import { assertSameBits, bitsOf, gpuBackendOrSkip } from "../../tests/helpers.ts";

const backends: Backend[] = [cpuBackend()];
const gpu = await gpuBackendOrSkip();
if (gpu) backends.push(gpu);

Deno.test("gelu: the forward that saves tanh gives the plain forward's bits", async () => {
  for (const backend of backends) {
    const x = randn([64, 129], { seed: 3, stream: 0 }, 3, { backend });
    const plain = await bitsOf(noGrad(() => gelu(x)));
    x.requiresGrad = true;
    const saving = gelu(x);
    if (!saving.node) throw new Error("gelu recorded no backward for a tensor that requires a gradient");
    assertSameBits(await bitsOf(saving), plain, `gelu on ${backend.name}`);
  }
});
