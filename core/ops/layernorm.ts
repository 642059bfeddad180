/**
 * Layer normalisation as a few kernels (forward per row; backward per row for
 * dx, and for dw, db the products g·x̂ then the backend's column sums) instead
 * of some thirty elementwise and reduction dispatches. Float arithmetic written
 * twice, TypeScript (every operation rounded to f32) and WGSL, in the same
 * order; sums run in a fixed order, so each backend is deterministic and the
 * two agree within a few ulp.
 *
 * @module
 */
import { asF32, f32Bits, rangeKernel, type WordKernel, type WordRange } from "@lowp/kernels";
import { emptyTensor, record, sameBackend, type Tensor } from "../tensor.ts";

const fr = Math.fround;

const forwardRows: WordRange = (start, end, ins, outs, p) => {
  const [x, w, b] = ins.map(asF32), [y, means, rstds] = outs.map(asF32);
  const d = p[0], eps = new Float32Array(p.buffer, p.byteOffset + 4, 1)[0];
  for (let r = start; r < end; r++) {
    const base = r * d;
    let s = 0;
    for (let j = 0; j < d; j++) s = fr(s + x[base + j]);
    const mean = fr(s / d);
    let q = 0;
    for (let j = 0; j < d; j++) {
      const c = fr(x[base + j] - mean);
      q = fr(q + fr(c * c));
    }
    const rstd = fr(1 / fr(Math.sqrt(fr(fr(q / d) + eps))));
    for (let j = 0; j < d; j++) {
      let v = fr(fr(x[base + j] - mean) * rstd);
      if (p[2]) v = fr(v * w[j]);
      if (p[3]) v = fr(v + b[j]);
      y[base + j] = v;
    }
    means[r] = mean;
    rstds[r] = rstd;
  }
};

/** Forward: ins x, w, b; outs y, mean, rstd (per row). Params: [D, eps bits, has w, has b]. */
const FORWARD: WordKernel = rangeKernel({
  name: "layernorm_forward",
  inputs: 3,
  outputs: 3,
  range: forwardRows,
  wgsl: `  let d = Q(0u); let eps = bitcast<f32>(Q(1u)); let base = i * d;
  var s = 0.0;
  for (var j = 0u; j < d; j++) { s = s + bitcast<f32>(in0[base + j]); }
  let mean = s / f32(d);
  var q = 0.0;
  for (var j = 0u; j < d; j++) { let c = bitcast<f32>(in0[base + j]) - mean; q = q + c * c; }
  let rstd = 1.0 / sqrt(q / f32(d) + eps);
  for (var j = 0u; j < d; j++) {
    var y = (bitcast<f32>(in0[base + j]) - mean) * rstd;
    if (Q(2u) != 0u) { y = y * bitcast<f32>(in1[j]); }
    if (Q(3u) != 0u) { y = y + bitcast<f32>(in2[j]); }
    out0[base + j] = bitcast<u32>(y);
  }
  out1[i] = bitcast<u32>(mean);
  out2[i] = bitcast<u32>(rstd);`,
});

const backwardRows: WordRange = (start, end, ins, outs, p) => {
  const [g, x, w, means, rstds] = ins.map(asF32), [dx] = outs.map(asF32);
  const d = p[0];
  const gh = (base: number, j: number) => (p[1] ? fr(g[base + j] * w[j]) : g[base + j]);
  for (let r = start; r < end; r++) {
    const base = r * d, mean = means[r], rstd = rstds[r];
    let s1 = 0, s2 = 0;
    for (let j = 0; j < d; j++) {
      const h = gh(base, j), xh = fr(fr(x[base + j] - mean) * rstd);
      s1 = fr(s1 + h);
      s2 = fr(s2 + fr(h * xh));
    }
    const m1 = fr(s1 / d), m2 = fr(s2 / d);
    for (let j = 0; j < d; j++) {
      const h = gh(base, j), xh = fr(fr(x[base + j] - mean) * rstd);
      dx[base + j] = fr(rstd * fr(fr(h - m1) - fr(xh * m2)));
    }
  }
};

/** dx per row: ins g, x, w, mean, rstd; out dx. Params [D, has w]. */
const BACKWARD_ROWS: WordKernel = rangeKernel({
  name: "layernorm_backward_rows",
  inputs: 5,
  outputs: 1,
  range: backwardRows,
  wgsl: `  let d = Q(0u); let base = i * d;
  let mean = bitcast<f32>(in3[i]); let rstd = bitcast<f32>(in4[i]);
  var s1 = 0.0; var s2 = 0.0;
  for (var j = 0u; j < d; j++) {
    var gh = bitcast<f32>(in0[base + j]);
    if (Q(1u) != 0u) { gh = gh * bitcast<f32>(in2[j]); }
    let xh = (bitcast<f32>(in1[base + j]) - mean) * rstd;
    s1 = s1 + gh; s2 = s2 + gh * xh;
  }
  let m1 = s1 / f32(d); let m2 = s2 / f32(d);
  for (var j = 0u; j < d; j++) {
    var gh = bitcast<f32>(in0[base + j]);
    if (Q(1u) != 0u) { gh = gh * bitcast<f32>(in2[j]); }
    let xh = (bitcast<f32>(in1[base + j]) - mean) * rstd;
    out0[base + j] = bitcast<u32>(rstd * (gh - m1 - xh * m2));
  }`,
});

const weightGradTerms: WordRange = (start, end, ins, outs, p) => {
  const [g, x, means, rstds] = ins.map(asF32), [terms] = outs.map(asF32);
  const d = p[0];
  for (let i = start; i < end; i++) {
    const r = Math.floor(i / d);
    terms[i] = fr(g[i] * fr(fr(x[i] - means[r]) * rstds[r]));
  }
};

/** The terms of dw, g·x̂ per element: ins g, x, mean, rstd; out the terms. Params [D]. */
const WEIGHT_GRAD_TERMS: WordKernel = rangeKernel({
  name: "layernorm_weight_grad_terms",
  inputs: 4,
  outputs: 1,
  range: weightGradTerms,
  wgsl: `  let r = i / Q(0u);
  let xh = (bitcast<f32>(in1[i]) - bitcast<f32>(in2[r])) * bitcast<f32>(in3[r]);
  out0[i] = bitcast<u32>(bitcast<f32>(in0[i]) * xh);`,
});

/**
 * Layer normalisation over the last axis: (x − mean)/sqrt(var + eps) · weight
 * + bias, with the population variance (as PyTorch).
 *
 * @example
 * ```ts
 * import { layerNorm, tensor } from "@lowp/core";
 * const y = layerNorm(tensor([[1, 2, 3]]), null, null); // ≈ [[-1.2247, 0, 1.2247]]
 * ```
 */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  const d = x.shape[x.rank - 1];
  const backend = sameBackend("layerNorm", ...[x, weight, bias].filter((t): t is Tensor => t !== null));
  for (const [what, t] of [["weight", weight], ["bias", bias]] as const) {
    if (t && (t.rank !== 1 || t.shape[0] !== d)) throw new Error(`layerNorm: ${what} ${t.describe()} must be [${d}]`);
  }
  if (x.dtype !== "f32") throw new Error(`layerNorm: ${x.describe()} must be f32`);
  const rows = x.size / d;
  const y = emptyTensor(backend, x.shape), mean = emptyTensor(backend, [rows]), rstd = emptyTensor(backend, [rows]);
  // Absent weight/bias are passed as x (never read: the flags say so).
  const ins = [x, weight ?? x, bias ?? x].map((t) => t.storage);
  if (x.size > 0) {
    backend.runWords(FORWARD, ins, [y.storage, mean.storage, rstd.storage], rows, [
      d,
      f32Bits(eps),
      weight ? 1 : 0,
      bias ? 1 : 0,
    ]);
  }
  const inputs = [x, ...(weight ? [weight] : []), ...(bias ? [bias] : [])];
  return record(y, "layerNorm", inputs, (g) => {
    const dx = emptyTensor(backend, x.shape);
    const dw = weight ? emptyTensor(backend, [d]) : null, db = bias ? emptyTensor(backend, [d]) : null;
    if (x.size > 0) {
      const rowIns = [g, x, weight ?? x, mean, rstd].map((t) => t.storage);
      backend.runWords(BACKWARD_ROWS, rowIns, [dx.storage], rows, [d, weight ? 1 : 0]);
    }
    // dw and db are column sums over the rows (the backend's sum runs a long column in parallel lanes).
    if (dw) {
      const terms = emptyTensor(backend, x.shape);
      if (x.size > 0) {
        backend.runWords(WEIGHT_GRAD_TERMS, [g, x, mean, rstd].map((t) => t.storage), [terms.storage], x.size, [d]);
      }
      backend.reduce("sum", terms.storage, 1, rows, d, dw.storage);
      terms.dispose();
    }
    if (db) backend.reduce("sum", g.storage, 1, rows, d, db.storage);
    return [dx, ...(dw ? [dw] : []), ...(db ? [db] : [])];
  });
}
