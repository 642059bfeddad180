/**
 * GPTQ time for one linear layer: Hessian accumulation over the calibration
 * inputs plus `gptqQuantize` (int4, one scale per output channel, block size
 * 128, 1% dampening, no act-order), against bench/peers.py running the
 * reference algorithm (IST-DASLab/gptq `add_batch` + `fasterquant`) in
 * PyTorch, f32, with as many threads as our CPU backend has matmul workers.
 *
 * Inputs on both sides: a [n, n] weight and 128 calibration sequences of
 * `GPTQ_TOKENS` tokens (N(0, 1) entries, from each side's own generator: the
 * time does not depend on the values), fed in batches of 16 sequences.
 * `value` is the median of `reps` runs in seconds (lower is better),
 * `hessian_s` and `quantize_s` its two parts; `vs_torch` = torch seconds /
 * ours (> 1: we are faster).
 *
 * @module
 */
import { type Backend, randn, type Tensor } from "@lowp/core";
import { emit, type Line, median, messageOf, progress, round } from "./report.ts";

/** Tokens per calibration sequence. */
export const GPTQ_TOKENS = 32;
/** Calibration sequences (the 128). */
export const GPTQ_SEQUENCES = 128;
/** Sequences per Hessian batch. */
export const GPTQ_BATCH = 16;

/** What peers.py is told for its torch version. */
export function gptqPeerConfig(sizes: readonly number[], reps: number): Record<string, unknown> {
  return {
    run: true,
    sizes: [...sizes],
    sequences: GPTQ_SEQUENCES,
    tokens: GPTQ_TOKENS,
    batch: GPTQ_BATCH,
    reps,
  };
}

/** The calibration text of a line: "128 sequences x 32 tokens". */
export const GPTQ_CALIBRATION = `${GPTQ_SEQUENCES} sequences x ${GPTQ_TOKENS} tokens`;

/** One timed run: seconds of the Hessian and of the quantization. */
async function runOnce(
  formats: typeof import("@lowp/formats"),
  weight: Tensor,
  batches: readonly Tensor[],
  n: number,
): Promise<{ hessian: number; quantize: number }> {
  const t0 = performance.now();
  const acc = new formats.HessianAccumulator(n);
  for (const b of batches) await acc.add(b);
  const h = acc.hessian();
  const t1 = performance.now();
  const r = await formats.gptqQuantize(weight, h, { format: "int4", sharing: "channel" });
  await r.weight.data();
  const t2 = performance.now();
  r.weight.dispose();
  for (const part of r.quantized.parts) part.codes.dispose();
  return { hessian: (t1 - t0) / 1000, quantize: (t2 - t1) / 1000 };
}

/** Emits one `gptq` line per size for `backend`, with the torch-cpu peer's seconds where present. */
export async function benchGptq(
  backend: Backend,
  head: Line,
  sizes: readonly number[],
  reps: number,
  peers: readonly Line[],
): Promise<void> {
  const formats = await import("@lowp/formats");
  for (const n of sizes) {
    const size = `${n}x${n}`;
    const line: Line = { ...head, bench: "gptq", size, calibration: GPTQ_CALIBRATION, format: "int4 channel" };
    progress(`${backend.name} gptq ${size}`);
    const weight = randn([n, n], { seed: 21, stream: 0 }, 1, { backend }).keep();
    const batches = Array.from(
      { length: GPTQ_SEQUENCES / GPTQ_BATCH },
      (_, k) => randn([GPTQ_BATCH, GPTQ_TOKENS, n], { seed: 21, stream: 1 + k }, 1, { backend }).keep(),
    );
    try {
      await runOnce(formats, weight, batches, n); // warm-up: kernels, pool buffers
      const runs = [];
      for (let r = 0; r < reps; r++) runs.push(await runOnce(formats, weight, batches, n));
      const total = runs.map((r) => r.hessian + r.quantize);
      const value = median(total);
      const peer = backend.name === "cpu"
        ? peers.find((p) => p.bench === "gptq" && p.backend === "torch-cpu" && p.size === size)
        : undefined;
      const vs = typeof peer?.value === "number"
        ? { torch_value: peer.value, vs_torch: round(peer.value / value, 3), torch_peer: "torch-cpu" }
        : {};
      emit({
        ...line,
        value: round(value),
        unit: "s",
        hessian_s: round(median(runs.map((r) => r.hessian))),
        quantize_s: round(median(runs.map((r) => r.quantize))),
        reps,
        ...vs,
      });
    } catch (e) {
      emit({ ...line, error: messageOf(e) });
    } finally {
      weight.dispose();
      batches.forEach((b) => b.dispose());
    }
  }
}
