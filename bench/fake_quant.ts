/**
 * Fake-quantization throughput: elements/s of `quantDequant` for a few
 * formats on one backend.
 *
 * A [2048, 2048] f32 tensor (4M elements; [512, 512] on a software WebGPU
 * adapter such as llvmpipe, which runs on the CPU; its lines say so in
 * `note`). `perSync` calls are issued back to back and followed by
 * one `await backend.sync()` inside the timed region; `perSync` grows until a
 * batch lasts the target time; `value` is the median of `reps` batches.
 * Formats load through the registry at run time, so a format that does not
 * load (or fails) gives an `error` line instead of stopping the bench.
 *
 * `fake_quant_axis` lines measure the block formats along axis 0 of the same
 * tensor (blocks of values a row apart, as a `W[in, out]` weight is blocked
 * along `in`) against the last axis, back to back in the same run: `value`
 * is the axis-0 rate, `last_axis_value` the last-axis one, and
 * `ratio_vs_last_axis` their quotient (1 = blocking along a strided axis
 * costs nothing extra).
 *
 * @module
 */
import { type Backend, randn, type Tensor, tidy } from "@lowp/core";
import type { QuantizeOptions } from "@lowp/formats";
import { usesHostKernels } from "@lowp/kernels";
import { emit, type Line, median, messageOf, progress, round } from "./report.ts";

/** One measured format: its name and the granularity it runs with (if any). */
export interface FakeQuantCase {
  /** Format name, as `parseFormat` takes it. */
  format: string;
  /** Granularity text (`group:128`), for scaled formats. */
  granularity?: string;
}

/** The formats measured (the torch peer in bench/peers.py mirrors each one). */
export const FAKE_QUANT_CASES: readonly FakeQuantCase[] = [
  { format: "e4m3" },
  { format: "mxfp4" },
  { format: "nvfp4" },
  { format: "nf4" },
  { format: "int4", granularity: "group:128" },
];

/** The formats measured along axis 0 against the last axis (`fake_quant_axis` lines). */
export const FAKE_QUANT_AXIS_CASES: readonly FakeQuantCase[] = [
  { format: "mxfp4" },
  { format: "nvfp4" },
  { format: "nf4" },
  { format: "int4", granularity: "group:128" },
];

/** Tensor shape on the CPU backend and hardware adapters. */
export const FAKE_QUANT_SHAPE: readonly number[] = [2048, 2048];
/** Tensor shape on a software WebGPU adapter. */
export const FAKE_QUANT_SOFTWARE_SHAPE: readonly number[] = [512, 512];

/** Timing knobs (as bench/matmul.ts). */
export interface FakeQuantTiming {
  /** Timed repetitions of a batch. */
  reps: number;
  /** Seconds a batch should last at least. */
  targetS: number;
  /** Upper bound on calls per sync. */
  maxPerSync: number;
}

/** What peers.py is told for its torch version of the same measurement. */
export function fakeQuantPeerConfig(t: FakeQuantTiming): Record<string, unknown> {
  return {
    run: true,
    shape: [...FAKE_QUANT_SHAPE],
    cases: FAKE_QUANT_CASES.map((c) => ({ ...c })),
    reps: t.reps,
    target_s: t.targetS,
    max_per_sync: t.maxPerSync,
  };
}

async function timeBatch(backend: Backend, run: () => Tensor, count: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < count; i++) tidy(() => void run()); // outputs and temporaries go back to the pool at once
  await backend.sync();
  return (performance.now() - t0) / 1000;
}

/** What {@link measureCalls} reports. */
export interface CallRate {
  /** Median elements/s. */
  value: number;
  /** Fastest batch, elements/s. */
  best: number;
  /** Calls per sync. */
  perSync: number;
  /** Median milliseconds per call. */
  msPerCall: number;
}

/** Median elements/s of `run` (each call producing `elements` values, released at once), with the batch size used. */
export async function measureCalls(
  backend: Backend,
  run: () => Tensor,
  elements: number,
  t: FakeQuantTiming,
): Promise<CallRate> {
  await timeBatch(backend, run, 1); // warm-up: pipelines, pool buffers
  let perSync = 1;
  for (;;) {
    const s = await timeBatch(backend, run, perSync);
    if (s >= t.targetS || perSync >= t.maxPerSync) break;
    perSync = Math.min(t.maxPerSync, perSync * Math.max(2, Math.ceil(t.targetS / Math.max(s, 1e-4) / 2)));
  }
  const times: number[] = [];
  for (let r = 0; r < t.reps; r++) times.push(await timeBatch(backend, run, perSync));
  const mid = median(times);
  return {
    value: (elements * perSync) / mid,
    best: (elements * perSync) / Math.min(...times),
    perSync,
    msPerCall: (mid * 1000) / perSync,
  };
}

/**
 * Emits one `fake_quant` line per format for `backend`. `head` carries backend/adapter fields; `peers`
 * are the peer lines (torch-cpu / torch-cuda `fake_quant` lines get matched by format for `ratio_vs_torch`).
 */
export async function benchFakeQuant(
  backend: Backend,
  kind: "cpu" | "software" | "hardware",
  head: Line,
  t: FakeQuantTiming,
  peers: readonly Line[],
): Promise<void> {
  const shape = kind === "software" ? FAKE_QUANT_SOFTWARE_SHAPE : FAKE_QUANT_SHAPE;
  const elements = shape.reduce((a, d) => a * d, 1);
  const note = kind === "software"
    ? { note: `software adapter (runs on the CPU): [${shape}] instead of [${FAKE_QUANT_SHAPE}]` }
    : {};
  // The registry imports every format family; load it lazily so a missing one becomes error lines.
  let formats: typeof import("@lowp/formats") | null = null;
  let loadError = "";
  try {
    formats = await import("@lowp/formats");
  } catch (e) {
    loadError = `formats do not load: ${messageOf(e).split("\n")[0]}`; // the first line; the rest is a stack
  }
  const torchPeer = kind === "hardware" ? "torch-cuda" : "torch-cpu";
  const x = randn(shape, { seed: 11, stream: 0 }, 1, { backend }).keep();
  try {
    for (const c of FAKE_QUANT_CASES) {
      const line: Line = { ...head, bench: "fake_quant", format: c.format, elements, shape: [...shape] };
      if (c.granularity) line.granularity = c.granularity;
      if (!formats) {
        emit({ ...line, error: loadError });
        continue;
      }
      progress(`${backend.name} fake_quant ${c.format}${c.granularity ? ` ${c.granularity}` : ""}`);
      try {
        const quantizer = formats.parseFormat(c.format);
        const opts: QuantizeOptions = c.granularity ? { granularity: formats.parseGranularity(c.granularity) } : {};
        const r = await measureCalls(backend, () => quantizer.quantDequant(x, opts), x.size, t);
        const peer = peers.find((p) => p.bench === "fake_quant" && p.backend === torchPeer && p.format === c.format);
        const ratio = typeof peer?.value === "number"
          ? { ratio_vs_torch: round(r.value / peer.value, 3), torch_peer: torchPeer }
          : {};
        if (peer && peer.elements !== elements) Object.assign(ratio, { torch_elements: peer.elements });
        // Which implementation ran on the CPU: the fused WebAssembly kernels where they apply, else word kernels.
        const cpuPath = backend.name === "cpu"
          ? { kernels: formats.HOST_QUANT_AVAILABLE && usesHostKernels(backend) ? "fused-wasm-simd" : "word-kernels" }
          : {};
        emit({
          ...line,
          ...cpuPath,
          value: round(r.value),
          unit: "elements/s",
          best: round(r.best),
          per_sync: r.perSync,
          reps: t.reps,
          ms_per_call: round(r.msPerCall),
          ...ratio,
          ...note,
        });
      } catch (e) {
        emit({ ...line, error: messageOf(e) });
      }
    }
    if (formats) await benchAxis(backend, formats, x, { ...head, elements, shape: [...shape], ...note }, t);
  } finally {
    x.dispose();
  }
}

/** One `fake_quant_axis` line per {@link FAKE_QUANT_AXIS_CASES} entry: axis 0 vs the last axis of `x`. */
async function benchAxis(
  backend: Backend,
  formats: typeof import("@lowp/formats"),
  x: Tensor,
  head: Line,
  t: FakeQuantTiming,
): Promise<void> {
  for (const c of FAKE_QUANT_AXIS_CASES) {
    const line: Line = { ...head, bench: "fake_quant_axis", format: c.format, axis: 0 };
    if (c.granularity) line.granularity = c.granularity;
    progress(`${backend.name} fake_quant_axis ${c.format}${c.granularity ? ` ${c.granularity}` : ""}`);
    try {
      const quantizer = formats.parseFormat(c.format);
      const opts: QuantizeOptions = c.granularity ? { granularity: formats.parseGranularity(c.granularity) } : {};
      const last = await measureCalls(backend, () => quantizer.quantDequant(x, opts), x.size, t);
      const first = await measureCalls(backend, () => quantizer.quantDequant(x, { ...opts, axis: 0 }), x.size, t);
      emit({
        ...line,
        value: round(first.value),
        unit: "elements/s",
        ms_per_call: round(first.msPerCall),
        last_axis_value: round(last.value),
        last_axis_ms_per_call: round(last.msPerCall),
        ratio_vs_last_axis: round(first.value / last.value, 3),
        reps: t.reps,
      });
    } catch (e) {
      emit({ ...line, error: messageOf(e) });
    }
  }
}
