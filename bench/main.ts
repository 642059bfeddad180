/**
 * Benchmarks of the engine, one JSON line per measurement on stdout
 * (progress and notes go to stderr).
 *
 * Run:
 *
 * ```sh
 * deno task bench                    # everything: CPU, WebGPU (if an adapter exists), Python peers
 * deno task bench --quick            # fewer/shorter repetitions (~1-2 min on a small CPU-only box)
 * deno task bench --backend webgpu   # cpu | webgpu | all (default all)
 * deno task bench --sizes 256,2048   # matmul sizes (default 256,512,1024); named sizes run on every backend
 * deno task bench --large            # adds 2048 and 4096 for a hardware WebGPU adapter / CUDA
 * deno task bench --steps 20         # fixed number of timed training steps (default: chosen from a warm step)
 * deno task bench --no-peers         # skip numpy/PyTorch (the in-process tfjs-wasm peer still runs)
 * deno task bench --quick > bench.jsonl   # keep the lines, watch progress on the terminal
 * ```
 *
 * Lines (every line also has `machine`: "hostname, os, arch, cpu model, N cores"):
 *
 * - `{"bench": "matmul_f32", "backend": "cpu"|"webgpu", "adapter", "size": n, "value", "unit": "GFLOP/s", ...}`:
 *   square f32 matmul, 2·n³ flops each. `per_sync` matmuls are issued back to back and followed by one
 *   `await backend.sync()` inside the timed region (throughput; a GPU's submit latency is amortised);
 *   `value` is the median of `reps` such batches, `best` the fastest, `ms_per_matmul` the median per matmul.
 * - `{"bench": "matmul_f32_single", "backend": "webgpu", ...}`: one matmul then one sync per timing
 *   (latency-bound; on llvmpipe a submit+wait costs ~12 ms by itself). `ms_per_call` is its median.
 * - `{"bench": "gpt_train_step", "size": "d128-L4-H4-T64-B16", "value", "unit": "tokens/s", ...}`: one training
 *   step of the tiny GPT (vocab 256, d_model 128, 4 layers, 4 heads, context 64, batch 16, AdamW, clip 1.0)
 *   as recipes/trainer.ts takes it; 2 warm-up steps, then `steps` timed steps with one sync at the end and
 *   one loss readback after the clock stops (`final_loss`). tokens/s = steps·16·64 / seconds. WebGPU adds
 *   `dispatches_per_step`.
 * - `{"bench": "gpt_train_step_precision", "precision", "value", "f32_value", "step_time_vs_f32", "pairs", ...}`: the same
 *   step with every linear layer under a precision preset (formats/precision.ts; also `qat-int8+lsq` and
 *   `qat-int4+lsq`, the QAT presets with learned steps), each timed right after an f32 step measured the same way,
 *   `pairs` times: `step_time_vs_f32` is the median of the pairs' ratios, `ms_per_step` and `f32_ms_per_step` the
 *   medians of each side.
 * - `{"bench": "qlora_train_step", "r": 8, "alpha": 16, "value", "full_value", "tokens_per_s_vs_full", "state_bytes",
 *   "full_state_bytes", "state_bytes_vs_full", ...}`: a QLoRA training step of the same tiny GPT (every linear weight
 *   frozen in nf4-dq, adapters r 8, α 16 on all linear layers, AdamW on the adapters only) against full fine-tuning
 *   (AdamW on every weight), timed in `pairs` interleaved pairs as the precision lines (medians; the ratio is
 *   full step time / QLoRA step time, > 1: QLoRA is faster). Bytes of state: `frozen_bytes` (f32 frozen parameters
 *   and the packed bases) + `trainable_bytes` (f32 trainable weights and AdamW's moments) for each side.
 * - `{"bench": "fake_quant", "format", "elements", "shape", "value", "unit": "elements/s", ...}`: `quantDequant`
 *   throughput of e4m3, mxfp4, nvfp4, nf4 and int4 (`granularity: "group:128"`) on a [2048, 2048] tensor
 *   ([512, 512] on a software adapter, said in `note`), timed like matmul_f32 (bench/fake_quant.ts); the torch
 *   peer runs the same quantize-dequantize written with plain tensor ops (`torch_elements` when its size differs). CPU
 *   lines say which implementation ran: `kernels: "fused-wasm-simd"` (formats/host_quant.ts) or `"word-kernels"`.
 * - `{"bench": "packed_dequant", "format", "options", "value", "quant_dequant", "ratio_vs_quant_dequant",
 *   "packed_bytes", "f32_bytes", ...}`: `QuantTensor.dequantize()` (reading packed codes) vs `quantDequant` of
 *   the same tensor in the same run, elements/s, shapes and timing as fake_quant (bench/packed_dequant.ts).
 * - `{"bench": "gptq", "size": "512x512"|"2048x2048", "calibration": "128 sequences x 32 tokens", "value", "unit":
 *   "s", "hessian_s", "quantize_s", "torch_value", "vs_torch", ...}`: Hessian accumulation (8 batches of 16
 *   sequences) plus `gptqQuantize` (int4 per channel, blocks of 128, 1% dampening) of one layer, median of `reps`
 *   runs, against the reference algorithm (IST-DASLab/gptq) in PyTorch run by peers.py with the same threads
 *   (`vs_torch` = torch seconds / ours; > 1 is faster). `--quick` runs 512 only; a software WebGPU adapter
 *   gets a `skipped` line (bench/gptq.ts).
 * - Peers, when `python3` has them (bench/peers.py): `"backend": "numpy"`, `"torch-cpu"`, `"torch-cuda"` (TF32
 *   off) with the same timing scheme. Our lines then carry `ratio_vs_torch` (ours / torch; > 1 is faster) with
 *   `torch_peer` naming the peer compared against (torch-cuda for a hardware adapter, torch-cpu for the CPU
 *   backend and for a software adapter such as llvmpipe, which runs on the CPU too), and `ratio_vs_numpy`
 *   for matmuls on the CPU or a software adapter. The peers run with as many threads as our CPU backend has
 *   matmul workers (`LOWP_CPU_WORKERS`, default 2); CPU lines on both sides say `threads`. bench/peers.ts looks
 *   for torch in every `python3` on PATH and in /usr/bin (`LOWP_PEER_PYTHON` names one to try first).
 * - `{"bench": "matmul_f32", "backend": "tfjs-wasm", ...}`: TensorFlow.js's WebAssembly backend (XNNPACK) in this
 *   process, timed the same way (bench/tfjs_peer.ts), whenever the CPU backend runs; our CPU matmul lines then
 *   carry `ratio_vs_tfjs_wasm` (ours / tfjs; > 1 is faster). Its `adapter` says its thread count.
 * - `{"bench": ..., "skipped": "<reason>"}` where something was not measured (no adapter, python3 or
 *   torch missing, sizes left out on a software backend), `{"bench": ..., "error": "<message>"}` where a
 *   measurement failed.
 *
 * On a software WebGPU adapter (`fallback_adapter: true`, e.g. llvmpipe) matmul sizes above 512 are skipped
 * unless `--large` or `--sizes` asks for them; the `--large` sizes run only on hardware adapters (and
 * torch-cuda) unless named in `--sizes`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type Backend, cpuBackend, useBackend, webgpuBackend } from "@lowp/core";
import { applyQLora, type LinearPrecision, PRECISION_NAMES, PRECISION_PRESETS, withLearnedSteps } from "@lowp/formats";
import { defaultWorkerCount } from "@lowp/kernels";
import { benchGptStep, TINY_GPT, TINY_OPT } from "./gpt.ts";
import { benchFakeQuant, fakeQuantPeerConfig } from "./fake_quant.ts";
import { benchGptq, gptqPeerConfig } from "./gptq.ts";
import { benchPackedDequant } from "./packed_dequant.ts";
import { benchMatmul, type MatmulTiming } from "./matmul.ts";
import { runPeers } from "./peers.ts";
import { runTfjsWasmPeer } from "./tfjs_peer.ts";
import { emit, type Line, messageOf, progress, round } from "./report.ts";

const USAGE = "usage: deno task bench [--backend cpu|webgpu|all] [--sizes 256,512,1024] [--quick] [--large] " +
  "[--steps N] [--no-peers]";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    backend: { type: "string", default: "all" },
    sizes: { type: "string" },
    quick: { type: "boolean", default: false },
    large: { type: "boolean", default: false },
    steps: { type: "string" },
    "no-peers": { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.error(USAGE);
  Deno.exit(0);
}
const choice = values.backend;
if (choice !== "cpu" && choice !== "webgpu" && choice !== "all") {
  console.error(`--backend must be cpu, webgpu or all, got '${choice}'\n${USAGE}`);
  Deno.exit(2);
}
const positive = (s: string, what: string) => {
  const n = Number(s);
  if (!Number.isInteger(n) || n <= 0) {
    console.error(`${what}: '${s}' is not a positive integer\n${USAGE}`);
    Deno.exit(2);
  }
  return n;
};
const quick = values.quick;
const baseSizes = values.sizes ? values.sizes.split(",").map((s) => positive(s.trim(), "--sizes")) : [256, 512, 1024];
const largeSizes = values.large ? [2048, 4096].filter((n) => !baseSizes.includes(n)) : [];
const fixedSteps = values.steps === undefined ? undefined : positive(values.steps, "--steps");

const MATMUL: MatmulTiming = quick
  ? { reps: 3, targetS: 0.15, maxPerSync: 256 }
  : { reps: 7, targetS: 0.5, maxPerSync: 256 };
const STEPS = quick
  ? { steps: fixedSteps, targetS: 8, minSteps: 2, maxSteps: 50 }
  : { steps: fixedSteps, targetS: 30, minSteps: 5, maxSteps: 300 };
/** GPTQ layer sizes and timed runs per size. */
const GPTQ_SIZES = quick ? [512] : [512, 2048];
const GPTQ_REPS = quick ? 1 : 3;
const GPT_SIZE = `d${TINY_GPT.dModel}-L${TINY_GPT.nLayers}-H${TINY_GPT.nHeads}-T${TINY_GPT.context}-B${TINY_GPT.batch}`;
const GPT_TOKENS_PER_STEP = TINY_GPT.batch * TINY_GPT.context;
/** f32/preset pairs timed per precision line. */
const PAIRS = 3;
/** QLoRA as the finding-3 recipes run it: nf4-dq base, r 8, α 16 on every linear layer. */
const QLORA = { r: 8, alpha: 16 } as const;

type Kind = "cpu" | "software" | "hardware";

/** Matmul sizes to run on a backend kind, and the ones skipped with why. */
function plan(kind: Kind): { run: number[]; skip: [number, string][] } {
  if (kind === "hardware") return { run: [...baseSizes, ...largeSizes], skip: [] };
  const skip: [number, string][] = largeSizes.map((n) => [
    n,
    `--large sizes are for hardware GPUs; this backend runs on the CPU (name ${n} in --sizes to force it)`,
  ]);
  if (kind === "cpu") return { run: baseSizes, skip };
  const keep = (n: number) => n <= 512 || values.large || values.sizes !== undefined;
  for (const n of baseSizes.filter((n) => !keep(n))) {
    skip.push([n, "software WebGPU adapter (slow): sizes above 512 are skipped unless --large or --sizes"]);
  }
  return { run: baseSizes.filter(keep), skip };
}

const started = performance.now();
const elapsed = () => `${((performance.now() - started) / 1000).toFixed(1)} s`;

// Backends.
const targets: { backend: Backend; kind: Kind }[] = [];
if (choice !== "webgpu") targets.push({ backend: cpuBackend(), kind: "cpu" });
if (choice !== "cpu") {
  progress("requesting a WebGPU adapter");
  const { backend, reason, fallback } = await webgpuBackend();
  if (backend) {
    targets.push({ backend, kind: fallback ? "software" : "hardware" });
    progress(`webgpu adapter: ${backend.adapter}${fallback ? " (software fallback)" : ""}`);
  } else {
    const why = reason === "navigator.gpu is not available"
      ? `${reason} (run with --unstable-webgpu, as deno task bench does)`
      : reason;
    for (const bench of ["matmul_f32", "gpt_train_step", "fake_quant", "packed_dequant"]) {
      emit({ bench, backend: "webgpu", skipped: why });
    }
  }
}

// Peers first, so our lines can carry ratios.
const peerValues = new Map<string, number>();
const peerLines: Line[] = [];
const peerKey = (bench: string, backend: string, size: number | string) => `${bench}|${backend}|${size}`;
if (values["no-peers"]) {
  emit({ bench: "peers", peer: "torch", skipped: "--no-peers" });
} else {
  progress("running Python peers (bench/peers.py)");
  const lines = await runPeers(Object.assign({
    cpu_sizes: baseSizes,
    cuda_sizes: [...baseSizes, ...largeSizes],
    matmul: { reps: MATMUL.reps, target_s: MATMUL.targetS, max_per_sync: MATMUL.maxPerSync },
    gpt: {
      run: true,
      size: GPT_SIZE,
      arch: { ...TINY_GPT },
      opt: { ...TINY_OPT },
      steps: fixedSteps,
      target_s: STEPS.targetS,
      min_steps: STEPS.minSteps,
      max_steps: STEPS.maxSteps,
    },
  }, { fake_quant: fakeQuantPeerConfig(MATMUL), gptq: gptqPeerConfig(GPTQ_SIZES, GPTQ_REPS) }));
  for (const line of lines) {
    emit(line);
    peerLines.push(line);
    if (typeof line.value === "number" && typeof line.backend === "string") {
      peerValues.set(peerKey(line.bench, line.backend, line.size as number | string), line.value);
    }
  }
  progress(`peers done (${elapsed()})`);
}
if (choice !== "webgpu") {
  progress("running the tfjs-wasm peer (bench/tfjs_peer.ts)");
  for (const line of await runTfjsWasmPeer(baseSizes, MATMUL)) {
    emit(line);
    if (typeof line.value === "number") {
      peerValues.set(peerKey(line.bench, "tfjs-wasm", line.size as number), line.value);
    }
  }
}

/** ratio_vs_torch / ratio_vs_numpy / ratio_vs_tfjs_wasm fields for one of our measurements. */
function ratios(bench: string, kind: Kind, size: number | string, value: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const torchPeer = kind === "hardware" ? "torch-cuda" : "torch-cpu";
  const torch = peerValues.get(peerKey(bench, torchPeer, size));
  if (torch) Object.assign(out, { ratio_vs_torch: round(value / torch, 3), torch_peer: torchPeer });
  const numpy = kind === "hardware" ? undefined : peerValues.get(peerKey(bench, "numpy", size));
  if (numpy) out.ratio_vs_numpy = round(value / numpy, 3);
  const tfjs = kind === "cpu" ? peerValues.get(peerKey(bench, "tfjs-wasm", size)) : undefined;
  if (tfjs) out.ratio_vs_tfjs_wasm = round(value / tfjs, 3);
  return out;
}

for (const { backend, kind } of targets) {
  const head: Line = { bench: "", backend: backend.name, adapter: backend.adapter };
  if (kind !== "cpu") head.fallback_adapter = kind === "software";
  else head.threads = defaultWorkerCount(); // the matmul workers; the peers run with as many threads
  await useBackend(backend.name);

  const { run, skip } = plan(kind);
  const skipped = new Map(skip);
  for (const n of [...new Set([...run, ...skipped.keys()])].sort((a, b) => a - b)) {
    if (skipped.has(n)) {
      emit({ ...head, bench: "matmul_f32", size: n, skipped: skipped.get(n) });
      continue;
    }
    progress(`${backend.name} matmul ${n} (${elapsed()})`);
    try {
      const r = await benchMatmul(backend, n, MATMUL, backend.name === "webgpu");
      emit({
        ...head,
        bench: "matmul_f32",
        size: n,
        value: round(r.gflops),
        unit: "GFLOP/s",
        best: round(r.bestGflops),
        per_sync: r.perSync,
        reps: MATMUL.reps,
        ms_per_matmul: round(r.msPerMatmul),
        ...ratios("matmul_f32", kind, n, r.gflops),
      });
      if (r.single) {
        emit({
          ...head,
          bench: "matmul_f32_single",
          size: n,
          value: round(r.single.gflops),
          unit: "GFLOP/s",
          per_sync: 1,
          ms_per_call: round(r.single.ms),
        });
      }
    } catch (e) {
      emit({ ...head, bench: "matmul_f32", size: n, error: messageOf(e) });
    }
  }

  progress(`${backend.name} tiny GPT training step (${elapsed()})`);
  try {
    const r = await benchGptStep(backend, STEPS);
    const line: Line = {
      ...head,
      bench: "gpt_train_step",
      size: GPT_SIZE,
      value: round(r.tokensPerS),
      unit: "tokens/s",
      ms_per_step: round(r.msPerStep),
      steps: r.steps,
      final_loss: round(r.finalLoss, 6),
      params: r.params,
    };
    if (r.dispatchesPerStep !== undefined) line.dispatches_per_step = round(r.dispatchesPerStep, 6);
    if (!Number.isFinite(r.finalLoss)) line.warning = "loss is not finite";
    emit({ ...line, ...ratios("gpt_train_step", kind, GPT_SIZE, r.tokensPerS) });
  } catch (e) {
    emit({ ...head, bench: "gpt_train_step", size: GPT_SIZE, error: messageOf(e) });
  }
  await benchPrecisions(backend, head);
  await benchQLora(backend, head);

  await benchFakeQuant(backend, kind, head, MATMUL, peerLines);
  await benchPackedDequant(backend, kind, head, MATMUL);
  if (kind === "software") {
    emit({ ...head, bench: "gptq", skipped: "software WebGPU adapter (slow): GPTQ runs on the CPU backend and GPUs" });
  } else await benchGptq(backend, head, GPTQ_SIZES, GPTQ_REPS, peerLines);
}
progress(`done in ${elapsed()}`);

/**
 * One `gpt_train_step_precision` line per preset (and `qat-int8+lsq`, `qat-int4+lsq`), with the f32 step measured
 * right before it (same run).
 */
async function benchPrecisions(backend: Backend, head: Line): Promise<void> {
  const arms: [string, string | LinearPrecision][] = PRECISION_NAMES.filter((p) => p !== "f32").flatMap((p) =>
    p.startsWith("qat-") ? [[p, p], [`${p}+lsq`, withLearnedSteps(PRECISION_PRESETS[p].precision)]] : [[p, p]]
  );
  for (const [precision, record] of arms) {
    progress(`${backend.name} training step under ${precision} (${elapsed()})`);
    const line: Line = { ...head, bench: "gpt_train_step_precision", size: GPT_SIZE, precision };
    try {
      // f32 and the preset back to back, PAIRS times: the ratio is the median of the pairs' ratios, so a
      // machine whose speed drifts during the run (a shared VM) moves both sides of each pair alike.
      const pairs: { f32: number; r: Awaited<ReturnType<typeof benchGptStep>> }[] = [];
      const timing = { ...STEPS, targetS: STEPS.targetS / PAIRS }; // the same time in all as one long pair
      for (let i = 0; i < PAIRS; i++) {
        const f32 = await benchGptStep(backend, timing);
        pairs.push({ f32: f32.msPerStep, r: await benchGptStep(backend, timing, record) });
      }
      const mid = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
      const ms = mid(pairs.map((p) => p.r.msPerStep)), f32Ms = mid(pairs.map((p) => p.f32));
      const last = pairs[pairs.length - 1].r;
      emit({
        ...line,
        value: round((GPT_TOKENS_PER_STEP * 1000) / ms),
        unit: "tokens/s",
        ms_per_step: round(ms),
        steps: last.steps,
        pairs: PAIRS,
        f32_value: round((GPT_TOKENS_PER_STEP * 1000) / f32Ms),
        f32_ms_per_step: round(f32Ms),
        step_time_vs_f32: round(mid(pairs.map((p) => p.r.msPerStep / p.f32)), 3),
        final_loss: round(last.finalLoss, 6),
      });
    } catch (e) {
      emit({ ...line, error: messageOf(e) });
    }
  }
}

/**
 * The `qlora_train_step` line: a QLoRA training step against full fine-tuning of the same model (f32 AdamW on
 * every weight), timed in interleaved pairs like the precision lines, with the bytes of state of each.
 */
async function benchQLora(backend: Backend, head: Line): Promise<void> {
  progress(`${backend.name} QLoRA training step vs full fine-tuning (${elapsed()})`);
  const line: Line = { ...head, bench: "qlora_train_step", size: GPT_SIZE, r: QLORA.r, alpha: QLORA.alpha };
  try {
    const timing = { ...STEPS, targetS: STEPS.targetS / PAIRS };
    const pairs: { full: Awaited<ReturnType<typeof benchGptStep>>; qlora: Awaited<ReturnType<typeof benchGptStep>> }[] =
      [];
    for (let i = 0; i < PAIRS; i++) {
      const full = await benchGptStep(backend, timing);
      pairs.push({ full, qlora: await benchGptStep(backend, timing, "f32", (m) => applyQLora(m, QLORA)) });
    }
    const mid = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const ms = mid(pairs.map((p) => p.qlora.msPerStep)), fullMs = mid(pairs.map((p) => p.full.msPerStep));
    const { full, qlora } = pairs[pairs.length - 1];
    const bytes = qlora.frozenBytes + qlora.trainableBytes, fullBytes = full.frozenBytes + full.trainableBytes;
    emit({
      ...line,
      value: round((GPT_TOKENS_PER_STEP * 1000) / ms),
      unit: "tokens/s",
      full_value: round((GPT_TOKENS_PER_STEP * 1000) / fullMs),
      tokens_per_s_vs_full: round(mid(pairs.map((p) => p.full.msPerStep / p.qlora.msPerStep)), 3),
      ms_per_step: round(ms),
      full_ms_per_step: round(fullMs),
      pairs: PAIRS,
      steps: qlora.steps,
      trainable_params: qlora.trainableParams,
      full_trainable_params: full.trainableParams,
      frozen_bytes: qlora.frozenBytes,
      trainable_bytes: qlora.trainableBytes,
      state_bytes: bytes,
      full_frozen_bytes: full.frozenBytes,
      full_trainable_bytes: full.trainableBytes,
      full_state_bytes: fullBytes,
      state_bytes_vs_full: round(bytes / fullBytes, 4),
      final_loss: round(qlora.finalLoss, 6),
    });
  } catch (e) {
    emit({ ...line, error: messageOf(e) });
  }
}
