/**
 * WGSL sources for the primitive kernels. Shapes travel as uniforms, so one
 * source (and one cached pipeline) serves every shape; only structural choices
 * (operator, arity, transposes) change the text.
 *
 * @module
 */
import { type MapOp, type ReduceOp, SUM_LANES, type WordKernel } from "../backend.ts";
import { PHILOX_WGSL } from "../philox.ts";
import { ENTRY_1D, PRELUDE } from "./context.ts";

/** Highest tensor rank the strided kernels accept. */
export const MAX_RANK = 8;

// Uniform layout of strided kernels: [n, rank, x, y, shape[8], strides0[8], strides1[8], strides2[8]].
const STRIDED_HELPERS = /* wgsl */ `
fn dim(d: u32) -> u32 { return P(4u + d); }
fn stride(which: u32, d: u32) -> u32 { return P(12u + which * 8u + d); }
`;

/** Elementwise kernel for `op`; `contiguous` skips index math when no input broadcasts. */
function buildMapShader(op: MapOp, contiguous: boolean): string {
  const names = ["a", "b", "c"].slice(0, op.arity);
  const bindings = names.map((n, k) => `@group(0) @binding(${k + 2}) var<storage, read> in_${n}: array<f32>;`);
  const offsets = contiguous ? names.map((n) => `let off_${n} = i;`) : [
    ...names.map((n) => `var off_${n} = 0u;`),
    `var rest = i;`,
    `for (var d = i32(P(1u)) - 1; d >= 0; d--) {`,
    `  let dd = u32(d); let coord = rest % dim(dd); rest = rest / dim(dd);`,
    ...names.map((n, k) => `  off_${n} += coord * stride(${k}u, dd);`),
    `}`,
  ];
  return `${PRELUDE}${STRIDED_HELPERS}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
${bindings.join("\n")}
fn op(a: f32, b: f32, c: f32, p0: f32, p1: f32) -> f32 { return ${op.wgsl}; }
${ENTRY_1D}
  if (i >= P(0u)) { return; }
  ${offsets.join("\n  ")}
  out[i] = op(${
    names.map((n) => `in_${n}[off_${n}]`).concat(["0.0", "0.0", "0.0"]).slice(0, 3).join(", ")
  }, PF(2u), PF(3u));
}
`;
}

/** Strided copy of 4-byte words: uniform strides set 0 is the source, set 1 the destination; x, y are offsets. */
export const COPY_SHADER = `${PRELUDE}${STRIDED_HELPERS}
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
${ENTRY_1D}
  if (i >= P(0u)) { return; }
  var s = P(2u); var t = P(3u); var rest = i;
  for (var d = i32(P(1u)) - 1; d >= 0; d--) {
    let dd = u32(d); let coord = rest % dim(dd); rest = rest / dim(dd);
    s += coord * stride(0u, dd); t += coord * stride(1u, dd);
  }
  dst[t] = src[s];
}
`;

/** Reduction over the middle axis of [outer, size, inner]; params [outer*inner, size, inner]. */
function buildReduceShader(op: ReduceOp): string {
  const arg = op === "argmax" || op === "argmin";
  const cmp = op === "max" || op === "argmax" ? ">" : "<";
  const body = op === "sum"
    ? `var acc = 0.0; for (var r = 0u; r < size; r++) { acc = acc + x[base + r * inner]; } out[i] = acc;`
    : `var best = x[base]; var at = 0u;
       for (var r = 1u; r < size; r++) {
         let v = x[base + r * inner];
         if (!is_nan(best) && (is_nan(v) || v ${cmp} best)) { best = v; at = r; }
       }
       out[i] = ${arg ? "i32(at)" : "best"};`;
  // NaN is tested on the bits: WGSL lets compilers assume floats are never NaN, and lavapipe folds v != v to false.
  return `${PRELUDE}
fn is_nan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<${arg ? "i32" : "f32"}>;
${ENTRY_1D}
  if (i >= P(0u)) { return; }
  let size = P(1u); let inner = P(2u);
  let o = i / inner; let j = i % inner;
  let base = o * size * inner + j;
  ${body}
}
`;
}

/**
 * A long `sum` (see `splitSum`): one workgroup of SUM_LANES threads per output; thread t adds elements
 * t, t + 256, … in order, then the workgroup combines the lanes pairwise. Params [outputs, size, inner].
 */
export const SPLIT_SUM_SHADER = `${PRELUDE}
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
var<workgroup> lanes: array<f32, ${SUM_LANES}>;
@compute @workgroup_size(${SUM_LANES})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let i = wg.x + wg.y * nwg.x;
  if (i >= P(0u)) { return; }
  let size = P(1u); let inner = P(2u);
  let base = (i / inner) * size * inner + i % inner;
  var acc = 0.0;
  for (var r = t; r < size; r += ${SUM_LANES}u) { acc = acc + x[base + r * inner]; }
  lanes[t] = acc;
  workgroupBarrier();
  for (var s = ${SUM_LANES / 2}u; s > 0u; s = s >> 1u) {
    if (t < s) { lanes[t] = lanes[t] + lanes[t + s]; }
    workgroupBarrier();
  }
  if (t == 0u) { out[i] = lanes[0]; }
}
`;

/** out[i, j] = table[idx[i], j] (zeros when out of range); params [count*len, len, rows]. */
export const GATHER_SHADER = `${PRELUDE}
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
${ENTRY_1D}
  if (i >= P(0u)) { return; }
  let len = P(1u); let row = idx[i / len];
  out[i] = select(0.0, table[u32(row) * len + i % len], row >= 0 && u32(row) < P(2u));
}
`;

/** out[r, j] = Σ_{n: idx[n] = r} grad[n, j] in increasing n; params [rows*len, len, count]. */
export const SCATTER_ADD_ROWS_SHADER = `${PRELUDE}
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
${ENTRY_1D}
  if (i >= P(0u)) { return; }
  let len = P(1u); let r = i32(i / len); let j = i % len;
  var acc = 0.0;
  for (var n = 0u; n < P(2u); n++) { if (idx[n] == r) { acc = acc + grad[n * len + j]; } }
  out[i] = acc;
}
`;

/** out[n, j] = idx[n] == j; params [count*depth, depth]. */
export const ONE_HOT_SHADER = `${PRELUDE}
@group(0) @binding(1) var<storage, read> idx: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
${ENTRY_1D}
  if (i >= P(0u)) { return; }
  out[i] = select(0.0, 1.0, idx[i / P(1u)] == i32(i % P(1u)));
}
`;

/** Fills with one 32-bit pattern; params [n, bits]. */
export const FILL_SHADER = `${PRELUDE}
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
${ENTRY_1D}
  if (i >= P(0u)) { return; }
  out[i] = P(1u);
}
`;

/** Philox uniforms; params [n, seed, stream, offset_lo, offset_hi]. */
export const RANDOM_UNIFORM_SHADER = `${PRELUDE}${PHILOX_WGSL}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
${ENTRY_1D}
  if (i >= P(0u)) { return; }
  out[i] = philox_uniform(philox_word(P(1u), P(2u), P(3u), P(4u), i));
}
`;

/** The shader of a {@link WordKernel}: params [items, ...kernel params]; `Q(k)` reads kernel parameter k. */
export function wordKernelShader(k: WordKernel): string {
  const cached = wordShaders.get(k);
  if (cached) return cached;
  const ins = Array.from(
    { length: k.inputs },
    (_, j) => `@group(0) @binding(${j + 1}) var<storage, read> in${j}: array<u32>;`,
  );
  const outs = Array.from(
    { length: k.outputs },
    (_, j) => `@group(0) @binding(${k.inputs + j + 1}) var<storage, read_write> out${j}: array<u32>;`,
  );
  const source = `${PRELUDE}
fn Q(k: u32) -> u32 { return P(1u + k); }
${ins.join("\n")}
${outs.join("\n")}
${k.wgslHelpers ?? ""}
fn item(i: u32) {
${k.wgsl}
}
${ENTRY_1D}
  if (i >= P(0u)) { return; }
  item(i);
}
`;
  wordShaders.set(k, source);
  return source;
}
const wordShaders = new WeakMap<WordKernel, string>();

// Shader sources are built once per structural choice: the backends ask for them on every dispatch.
const mapShaders = new WeakMap<MapOp, [string?, string?]>();
const reduceShaders = new Map<ReduceOp, string>();

/** Elementwise kernel for `op`; `contiguous` skips index math when no input broadcasts. */
export function mapShader(op: MapOp, contiguous: boolean): string {
  const pair = mapShaders.get(op) ?? [];
  mapShaders.set(op, pair);
  const k = contiguous ? 1 : 0;
  return pair[k] ??= buildMapShader(op, contiguous);
}

/** Reduction over the middle axis of [outer, size, inner]; params [outer*inner, size, inner]. */
export function reduceShader(op: ReduceOp): string {
  let source = reduceShaders.get(op);
  if (!source) reduceShaders.set(op, source = buildReduceShader(op));
  return source;
}
