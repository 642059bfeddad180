/**
 * Where the tiny-GPT training step's time goes, by backend primitive.
 *
 * ```sh
 * deno task profile                          # CPU backend
 * deno task profile --backend webgpu         # WebGPU: host split + GPU time per kernel
 * deno task profile --steps 30 --top 40
 * deno task profile --precision quartet     # the step under a training precision preset
 * deno task profile --backend webgpu --no-replay   # host split only (a software adapter replays slowly)
 * ```
 *
 * Prints JSON lines:
 * - `{"profile": "step", backend, adapter, ms_per_step, host_ms_per_step, ...}`: the step's wall time and
 *   the host time inside backend calls. On WebGPU also `record_ms_per_step` (building dispatches: bind
 *   groups, uniforms) and `submit_ms_per_step` (queue submits).
 * - `{"profile": "primitive", name, calls_per_step, host_ms_per_step, gpu_us_per_step?, share}`: the parts
 *   summed per backend primitive (all matmuls, all word kernels, ...), largest first.
 * - `{"profile": "part", label, calls_per_step, host_ms_per_step, gpu_us_per_step?, share}`, largest first.
 *   A label is the primitive plus what tells its calls apart: the map operator and rank, the word kernel,
 *   the reduction, the matmul's transposes and m x n x k x batch, the copy's shape and both views' strides
 *   (`copy:512x1024:1,512>1024,1` is a transpose).
 *
 * The CPU backend computes inside each call, so host time is the cost. On WebGPU a call only records work;
 * the GPU time of each kernel comes from replaying every dispatch of one recorded step on its own,
 * (t(21 copies) − t(1 copy)) / 20 between two queue drains. Replayed alone, a kernel cannot overlap its
 * neighbours and waits on its own previous copy, so these figures rank the kernels but can add up to more
 * than the pipelined step takes.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type Backend, useBackend } from "@lowp/core";
import type { Dispatch, GpuContext } from "@lowp/kernels";
import { benchGptStep, type StepTiming } from "./gpt.ts";
import { machine } from "./report.ts";

/** Backend methods that do work (the rest only move storage in and out). */
const PRIMITIVES = [
  "map",
  "reduce",
  "matmul",
  "copy",
  "gather",
  "scatterAddRows",
  "oneHot",
  "runWords",
  "fill",
  "randomUniform",
] as const;

/** The label of one backend call (see the module doc). */
export function labelOf(method: string, args: readonly unknown[]): string {
  // deno-lint-ignore no-explicit-any
  const a = args as any[];
  switch (method) {
    case "map":
      return `map:${a[0].name}:${a[2].length}d`;
    case "runWords":
      return `words:${a[0].name}`;
    case "reduce":
      return `reduce:${a[0]}:${a[3]}`;
    case "matmul": {
      const s = a[3];
      return `matmul:${s.transA ? "T" : "N"}${s.transB ? "T" : "N"}:${s.m}x${s.n}x${s.k}x${s.batch}`;
    }
    case "copy": // shape, then the source's and the destination's strides
      return `copy:${a[4].join("x")}:${a[1].strides.join(",")}>${a[3].strides.join(",")}`;
    default:
      return method;
  }
}

/** One label's totals over the profiled steps. */
export interface Part {
  /** Calls per step. */
  calls: number;
  /** Host milliseconds per step inside these calls. */
  hostMs: number;
  /** GPU microseconds per step (WebGPU replay only). */
  gpuUs?: number;
}

/** Sums parts per backend primitive (the label up to its first `:`). */
export function byPrimitive(parts: ReadonlyMap<string, Part>): Map<string, Part> {
  const out = new Map<string, Part>();
  for (const [label, p] of parts) {
    const name = label.split(":")[0];
    const sum = out.get(name) ?? { calls: 0, hostMs: 0 };
    sum.calls += p.calls, sum.hostMs += p.hostMs;
    if (p.gpuUs !== undefined) sum.gpuUs = (sum.gpuUs ?? 0) + p.gpuUs;
    out.set(name, sum);
  }
  return out;
}

/** What {@link profileGptStep} measured. */
export interface StepProfile {
  /** Wall milliseconds per step (queue drained at the end). */
  msPerStep: number;
  /** Host milliseconds per step inside backend primitives. */
  hostMs: number;
  /** WebGPU: milliseconds per step building dispatches and submitting them. */
  recordMs?: number;
  /** WebGPU: milliseconds per step in queue submits. */
  submitMs?: number;
  /** Per label, per step. */
  parts: Map<string, Part>;
}

/**
 * Profiles `steps` timed training steps of the tiny GPT on `backend` (which must be the active backend).
 * On WebGPU, `replay` (default true) adds each kernel's GPU time; it takes a few seconds on a hardware GPU
 * and far longer on a software adapter.
 */
export async function profileGptStep(
  backend: Backend,
  steps: number,
  replay = true,
  precision = "f32",
): Promise<StepProfile> {
  const ctx = (backend as Backend & { context?: GpuContext }).context;
  const run = (timing: StepTiming) => benchGptStep(backend, timing, precision);
  await run({ steps: 1, targetS: 1, minSteps: 1, maxSteps: 1 }); // compile, fill the pools
  const parts = new Map<string, Part>();
  let label = "";
  // benchGptStep syncs after each of its two warm-up steps and after the timed ones: only the calls
  // after the second sync are counted (model set-up and the optimizer's first step are not steady state).
  let syncs = 0, phase: "off" | "count" | "record" = "off";
  const steady = () => phase !== "off" && syncs >= 2;
  const restore: (() => void)[] = [];
  const patch = <T extends object, K extends keyof T>(obj: T, key: K, wrap: (f: T[K]) => T[K]) => {
    const original = obj[key];
    obj[key] = wrap(original);
    restore.push(() => obj[key] = original);
  };
  patch(backend, "sync", (f) => async () => {
    await f.call(backend);
    syncs++;
  });
  for (const method of PRIMITIVES) {
    // deno-lint-ignore no-explicit-any
    patch(backend as any, method, (f: (...a: unknown[]) => unknown) => (...args: unknown[]) => {
      if (!steady()) return f(...args);
      label = labelOf(method, args);
      if (phase === "record") return f(...args);
      const t = performance.now();
      const r = f(...args);
      const part = parts.get(label) ?? { calls: 0, hostMs: 0 };
      part.calls++, part.hostMs += performance.now() - t;
      parts.set(label, part);
      return r;
    });
  }
  let recordMs = 0, submitMs = 0;
  const recorded: { label: string; d: Dispatch }[] = [];
  if (ctx) {
    patch(ctx, "dispatch", (f) => (d: Dispatch) => {
      if (!steady()) return f.call(ctx, d);
      if (phase === "record") recorded.push({ label, d: { ...d, params: d.params.slice() } });
      const t = performance.now();
      f.call(ctx, d);
      if (phase === "count") recordMs += performance.now() - t;
    });
    patch(ctx, "flush", (f) => () => {
      const t = performance.now();
      f.call(ctx);
      if (steady() && phase === "count") submitMs += performance.now() - t;
    });
  }
  try {
    syncs = 0, phase = "count";
    const timed = await run({ steps, targetS: 1, minSteps: steps, maxSteps: steps });
    let hostMs = 0;
    for (const p of parts.values()) p.calls /= steps, p.hostMs /= steps, hostMs += p.hostMs;
    const profile: StepProfile = { msPerStep: timed.msPerStep, hostMs, parts };
    if (ctx) profile.recordMs = recordMs / steps, profile.submitMs = submitMs / steps;
    if (ctx && replay) {
      // Record the dispatches of one steady step, then replay them one by one.
      syncs = 0, phase = "record";
      await run({ steps: 1, targetS: 1, minSteps: 1, maxSteps: 1 });
      phase = "off";
      for (const { label, d } of recorded) {
        const part = parts.get(label)!;
        part.gpuUs = (part.gpuUs ?? 0) + await replayMicroseconds(ctx, d);
      }
    }
    return profile;
  } finally {
    for (const undo of restore.reverse()) undo();
  }
}

/** GPU microseconds of one dispatch: the best of 3 (t(21 copies) − t(1 copy)) / 20. */
async function replayMicroseconds(ctx: GpuContext, d: Dispatch): Promise<number> {
  const time = async (copies: number) => {
    await ctx.sync();
    const t0 = performance.now();
    for (let i = 0; i < copies; i++) ctx.dispatch(d);
    await ctx.sync();
    return performance.now() - t0;
  };
  let best = Infinity;
  for (let r = 0; r < 3; r++) best = Math.min(best, ((await time(21)) - (await time(1))) / 20);
  return Math.max(0, best * 1000);
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      backend: { type: "string", default: "cpu" },
      steps: { type: "string" },
      top: { type: "string", default: "30" },
      "no-replay": { type: "boolean", default: false },
      precision: { type: "string", default: "f32" },
    },
  });
  const choice = values.backend;
  if (choice !== "cpu" && choice !== "webgpu") throw new Error(`--backend must be cpu or webgpu, got '${choice}'`);
  const steps = Number(values.steps ?? (choice === "cpu" ? 5 : 30));
  const top = Number(values.top);
  for (const [flag, v] of [["--steps", steps], ["--top", top]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${flag} must be a positive integer, got '${v}'`);
  }
  const backend = await useBackend(choice);
  console.error(`[profile] ${steps} tiny-GPT steps (${values.precision}) on ${backend.name} (${backend.adapter})`);
  const p = await profileGptStep(backend, steps, !values["no-replay"], values.precision);
  const round = (x: number | undefined, d = 3) => x === undefined ? undefined : +x.toFixed(d);
  console.log(JSON.stringify({
    profile: "step",
    backend: backend.name,
    adapter: backend.adapter,
    machine,
    precision: values.precision,
    steps,
    ms_per_step: round(p.msPerStep),
    host_ms_per_step: round(p.hostMs),
    record_ms_per_step: round(p.recordMs),
    submit_ms_per_step: round(p.submitMs),
  }));
  // Ranked by GPU time where it was measured, else by host time.
  const cost = (x: Part) => x.gpuUs ?? x.hostMs;
  const print = (kind: "primitive" | "part", key: "name" | "label", parts: Map<string, Part>, limit: number) => {
    const total = [...parts.values()].reduce((s, x) => s + cost(x), 0);
    for (const [k, x] of [...parts].sort((a, b) => cost(b[1]) - cost(a[1])).slice(0, limit)) {
      console.log(JSON.stringify({
        profile: kind,
        [key]: k,
        calls_per_step: round(x.calls, 2),
        host_ms_per_step: round(x.hostMs),
        gpu_us_per_step: round(x.gpuUs, 1),
        share: round(cost(x) / total),
      }));
    }
  };
  print("primitive", "name", byPrimitive(p.parts), Infinity);
  print("part", "label", p.parts, top);
}
