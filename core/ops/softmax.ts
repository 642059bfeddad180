/**
 * Softmax and log-softmax over the last axis as one row kernel each way
 * (forward, backward) instead of five to eight dispatches. Float arithmetic
 * written twice, TypeScript (every operation rounded to f32) and WGSL, in the
 * same order; row sums run in index order.
 *
 * @module
 */
import { asF32, rangeKernel, type WordKernel } from "@lowp/kernels";
import { emptyTensor, record, type Tensor } from "../tensor.ts";

const fr = Math.fround;

/** Forward: in x; out y. Params [D, log (0/1)]. y = softmax or log-softmax of each row, max-shifted. */
const FORWARD: WordKernel = rangeKernel({
  name: "softmax_forward",
  inputs: 1,
  outputs: 1,
  range: forwardRows,
  wgsl: `  let d = Q(0u); let base = i * d;
  var m = bitcast<f32>(in0[base]);
  for (var j = 1u; j < d; j++) { m = max(m, bitcast<f32>(in0[base + j])); }
  var s = 0.0;
  for (var j = 0u; j < d; j++) { s = s + exp(bitcast<f32>(in0[base + j]) - m); }
  if (Q(1u) != 0u) {
    let ls = log(s);
    for (var j = 0u; j < d; j++) { out0[base + j] = bitcast<u32>(bitcast<f32>(in0[base + j]) - m - ls); }
  } else {
    for (var j = 0u; j < d; j++) { out0[base + j] = bitcast<u32>(exp(bitcast<f32>(in0[base + j]) - m) / s); }
  }`,
});

function forwardRows(
  start: number,
  end: number,
  ins: readonly Uint32Array[],
  outs: readonly Uint32Array[],
  p: Uint32Array,
) {
  const [x] = ins.map(asF32), [y] = outs.map(asF32);
  const d = p[0], isLog = p[1] !== 0;
  for (let r = start; r < end; r++) {
    const base = r * d;
    let m = x[base];
    for (let j = 1; j < d; j++) m = Math.max(m, x[base + j]);
    // e_j is stored in y first (the WGSL recomputes it: same value), so exp runs once per element here.
    let s = 0;
    for (let j = 0; j < d; j++) {
      const e = fr(Math.exp(fr(x[base + j] - m)));
      y[base + j] = e;
      s = fr(s + e);
    }
    if (isLog) {
      const ls = fr(Math.log(s));
      for (let j = 0; j < d; j++) y[base + j] = fr(fr(x[base + j] - m) - ls);
    } else {
      for (let j = 0; j < d; j++) y[base + j] = fr(y[base + j] / s);
    }
  }
}

/**
 * Backward: ins g, y; out dx. Params [D, log]. softmax: dx = y·(g − Σ g·y);
 * log-softmax: dx = g − exp(y)·Σ g.
 */
const BACKWARD: WordKernel = rangeKernel({
  name: "softmax_backward",
  inputs: 2,
  outputs: 1,
  range: backwardRows,
  wgsl: `  let d = Q(0u); let base = i * d;
  var s = 0.0;
  if (Q(1u) != 0u) {
    for (var j = 0u; j < d; j++) { s = s + bitcast<f32>(in0[base + j]); }
    for (var j = 0u; j < d; j++) {
      out0[base + j] = bitcast<u32>(bitcast<f32>(in0[base + j]) - exp(bitcast<f32>(in1[base + j])) * s);
    }
  } else {
    for (var j = 0u; j < d; j++) { s = s + bitcast<f32>(in0[base + j]) * bitcast<f32>(in1[base + j]); }
    for (var j = 0u; j < d; j++) {
      out0[base + j] = bitcast<u32>(bitcast<f32>(in1[base + j]) * (bitcast<f32>(in0[base + j]) - s));
    }
  }`,
});

function backwardRows(
  start: number,
  end: number,
  ins: readonly Uint32Array[],
  outs: readonly Uint32Array[],
  p: Uint32Array,
) {
  const [g, y] = ins.map(asF32), [dx] = outs.map(asF32);
  const d = p[0], isLog = p[1] !== 0;
  for (let r = start; r < end; r++) {
    const base = r * d;
    let s = 0;
    if (isLog) {
      for (let j = 0; j < d; j++) s = fr(s + g[base + j]);
      for (let j = 0; j < d; j++) dx[base + j] = fr(g[base + j] - fr(fr(Math.exp(y[base + j])) * s));
    } else {
      for (let j = 0; j < d; j++) s = fr(s + fr(g[base + j] * y[base + j]));
      for (let j = 0; j < d; j++) dx[base + j] = fr(y[base + j] * fr(g[base + j] - s));
    }
  }
}

/** Softmax (log = false) or log-softmax (log = true) over the last axis with its backward. */
export function softmaxLastAxis(x: Tensor, log: boolean): Tensor {
  if (x.dtype !== "f32") throw new Error(`${log ? "logSoftmax" : "softmax"}: ${x.describe()} must be f32`);
  const d = x.shape[x.rank - 1], rows = d === 0 ? 0 : x.size / d;
  const y = emptyTensor(x.backend, x.shape);
  const params = [d, log ? 1 : 0];
  if (rows > 0) x.backend.runWords(FORWARD, [x.storage], [y.storage], rows, params);
  return record(y, log ? "logSoftmax" : "softmax", [x], (g) => {
    const dx = emptyTensor(x.backend, x.shape);
    if (rows > 0) x.backend.runWords(BACKWARD, [g.storage, y.storage], [dx.storage], rows, params);
    return [dx];
  });
}
