/**
 * Softmax and log-softmax over the last axis as one row kernel each way
 * (forward, backward) instead of five to eight dispatches, with an optional
 * input scale and causal mask for attention (row i of each [Tq, Tk] block,
 * Tq ≤ Tk, keeps columns 0..Tk−Tq+i: the queries are the last Tq positions, so
 * a square block keeps 0..i; masked entries come out as exactly 0 and their
 * exponentials are never computed). Float arithmetic written twice, TypeScript (every
 * operation rounded to f32) and WGSL, in the same order; row sums run in
 * index order.
 *
 * @module
 */
import { asF32, f32Bits, rangeKernel, type WordKernel, type WordRange } from "@lowp/kernels";
import { emptyTensor, record, type Tensor } from "../tensor.ts";

const fr = Math.fround;

const forwardRows: WordRange = (start, end, ins, outs, p) => {
  const [x] = ins.map(asF32), [y] = outs.map(asF32);
  const d = p[0], isLog = p[1] !== 0, causal = p[2] !== 0, scale = asF32(p)[3], tq = p[4];
  for (let r = start; r < end; r++) {
    const base = r * d, n = causal ? (r % tq) + (d - tq) + 1 : d;
    let m = fr(scale * x[base]);
    for (let j = 1; j < n; j++) m = Math.max(m, fr(scale * x[base + j]));
    // e_j is stored in y first (the WGSL recomputes it: same value), so exp runs once per element here.
    let s = 0;
    for (let j = 0; j < n; j++) {
      const e = fr(Math.exp(fr(fr(scale * x[base + j]) - m)));
      y[base + j] = e;
      s = fr(s + e);
    }
    if (isLog) {
      const ls = fr(Math.log(s));
      for (let j = 0; j < d; j++) y[base + j] = fr(fr(fr(scale * x[base + j]) - m) - ls);
    } else {
      for (let j = 0; j < n; j++) y[base + j] = fr(y[base + j] / s);
      y.fill(0, base + n, base + d);
    }
  }
};

/** Forward: in x; out y. Params [D, log, causal, scale bits, Tq]: y = softmax or log-softmax of scale·x per row. */
const FORWARD: WordKernel = rangeKernel({
  name: "softmax_forward",
  inputs: 1,
  outputs: 1,
  range: forwardRows,
  wgsl: `  let d = Q(0u); let base = i * d; let scale = bitcast<f32>(Q(3u));
  var n = d;
  if (Q(2u) != 0u) { n = i % Q(4u) + (d - Q(4u)) + 1u; }
  var m = scale * bitcast<f32>(in0[base]);
  for (var j = 1u; j < n; j++) { m = max(m, scale * bitcast<f32>(in0[base + j])); }
  var s = 0.0;
  for (var j = 0u; j < n; j++) { s = s + exp(scale * bitcast<f32>(in0[base + j]) - m); }
  if (Q(1u) != 0u) {
    let ls = log(s);
    for (var j = 0u; j < d; j++) { out0[base + j] = bitcast<u32>(scale * bitcast<f32>(in0[base + j]) - m - ls); }
  } else {
    for (var j = 0u; j < d; j++) {
      var y = 0.0;
      if (j < n) { y = exp(scale * bitcast<f32>(in0[base + j]) - m) / s; }
      out0[base + j] = bitcast<u32>(y);
    }
  }`,
});

const backwardRows: WordRange = (start, end, ins, outs, p) => {
  const [g, y] = ins.map(asF32), [dx] = outs.map(asF32);
  const d = p[0], isLog = p[1] !== 0, scale = asF32(p)[3];
  for (let r = start; r < end; r++) {
    const base = r * d;
    let s = 0;
    if (isLog) {
      for (let j = 0; j < d; j++) s = fr(s + g[base + j]);
      for (let j = 0; j < d; j++) dx[base + j] = fr(g[base + j] - fr(fr(Math.exp(y[base + j])) * s));
    } else {
      for (let j = 0; j < d; j++) s = fr(s + fr(g[base + j] * y[base + j]));
      for (let j = 0; j < d; j++) dx[base + j] = fr(scale * fr(y[base + j] * fr(g[base + j] - s)));
    }
  }
};

/**
 * Backward: ins g, y; out dx. Params as the forward. softmax: dx = scale·y·(g − Σ g·y);
 * log-softmax: dx = g − exp(y)·Σ g (scale 1, no mask). Masked entries have y = 0, so their dx is 0.
 */
const BACKWARD: WordKernel = rangeKernel({
  name: "softmax_backward",
  inputs: 2,
  outputs: 1,
  range: backwardRows,
  wgsl: `  let d = Q(0u); let base = i * d; let scale = bitcast<f32>(Q(3u));
  var s = 0.0;
  if (Q(1u) != 0u) {
    for (var j = 0u; j < d; j++) { s = s + bitcast<f32>(in0[base + j]); }
    for (var j = 0u; j < d; j++) {
      out0[base + j] = bitcast<u32>(bitcast<f32>(in0[base + j]) - exp(bitcast<f32>(in1[base + j])) * s);
    }
  } else {
    for (var j = 0u; j < d; j++) { s = s + bitcast<f32>(in0[base + j]) * bitcast<f32>(in1[base + j]); }
    for (var j = 0u; j < d; j++) {
      out0[base + j] = bitcast<u32>(scale * (bitcast<f32>(in1[base + j]) * (bitcast<f32>(in0[base + j]) - s)));
    }
  }`,
});

/** Options of {@link softmaxLastAxis}. */
export interface SoftmaxOptions {
  /** Log-softmax instead of softmax. */
  readonly log?: boolean;
  /** Multiply the input by this first (attention's 1/sqrt(d)); default 1. */
  readonly scale?: number;
  /** Causal mask over [.., Tq, Tk] rows, Tq ≤ Tk: row i keeps columns 0..Tk−Tq+i (softmax only). */
  readonly causal?: boolean;
}

/** Softmax or log-softmax of `scale · x` over the last axis, optionally causal, with its backward. */
export function softmaxLastAxis(x: Tensor, opts: SoftmaxOptions = {}): Tensor {
  const { log = false, scale = 1, causal = false } = opts;
  const name = log ? "logSoftmax" : "softmax";
  if (x.dtype !== "f32") throw new Error(`${name}: ${x.describe()} must be f32`);
  const d = x.shape[x.rank - 1], rows = d === 0 ? 0 : x.size / d;
  const tq = causal ? x.shape[x.rank - 2] : d;
  if (causal && (log || x.rank < 2 || tq > d)) {
    throw new Error(
      `${name}: a causal mask needs [..., Tq, Tk] scores with Tq <= Tk (softmax only), got ${x.describe()}`,
    );
  }
  const y = emptyTensor(x.backend, x.shape);
  const params = [d, log ? 1 : 0, causal ? 1 : 0, f32Bits(scale), tq];
  if (rows > 0) x.backend.runWords(FORWARD, [x.storage], [y.storage], rows, params);
  return record(y, name, [x], (g) => {
    const dx = emptyTensor(x.backend, x.shape);
    if (rows > 0) x.backend.runWords(BACKWARD, [g.storage, y.storage], [dx.storage], rows, params);
    return [dx];
  });
}
