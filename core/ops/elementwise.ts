/**
 * Elementwise ops with NumPy broadcasting. Each op is defined once: its scalar
 * formula in TypeScript (CPU reference) and WGSL (WebGPU), next to its
 * derivative. Binary ops accept a plain number on either side; the number
 * travels as a uniform, so no upload happens.
 *
 * @module
 */
import { asF32, type MapInput, type MapOp, rangeKernel, sizeOf, type WordKernel } from "@lowp/kernels";
import { isGradEnabled } from "../runtime.ts";
import { emptyTensor, record, sameBackend, type Tensor } from "../tensor.ts";
import { broadcastShapes, broadcastStrides } from "./broadcast.ts";
import { sumTo } from "./reduce.ts";

/** A tensor or a plain number standing for a broadcast scalar. */
export type Operand = Tensor | number;

function requireF32(op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.dtype !== "f32") throw new Error(`${op}: ${t.describe()} must be f32`);
}

/** Runs `op` over broadcast tensor inputs; numbers go in as p0/p1. */
function runMap(op: MapOp, inputs: Tensor[], p0 = 0, p1 = 0): Tensor {
  requireF32(op.name, ...inputs);
  const backend = sameBackend(op.name, ...inputs);
  const shape = broadcastShapes(op.name, ...inputs.map((t) => t.shape));
  const out = emptyTensor(backend, shape);
  if (sizeOf(shape) > 0) {
    const ins: MapInput[] = inputs.map((t) => ({ storage: t.storage, strides: broadcastStrides(t.shape, shape) }));
    backend.map(op, ins, shape, out.storage, p0, p1);
  }
  return out;
}

// ---------------------------------------------------------------- unary

interface UnaryDef {
  name: string;
  cpu: (a: number, p0: number) => number;
  wgsl: string;
  /** d(out)/d(x) applied to the incoming gradient; absent for ops with zero or no derivative. */
  grad?: (x: Tensor, y: Tensor, g: Tensor, p0: number) => Tensor;
}

function unaryOp(def: UnaryDef): (x: Tensor, p0?: number) => Tensor {
  const op: MapOp = { name: def.name, arity: 1, cpu: (a, _b, _c, p0) => def.cpu(a, p0), wgsl: def.wgsl };
  return (x, p0 = 0) => {
    const y = runMap(op, [x], p0);
    if (!def.grad) return y;
    const grad = def.grad;
    return record(y, def.name, [x], (g) => [grad(x, y, g, p0)]);
  };
}

const SQRT_2_OVER_PI = 0.7978845608028654;
const GELU_C = 0.044715;
/** tanh saturates to ±1 in f32 beyond |x| = 15; clamping avoids inf/inf in some WGSL tanh implementations. */
const tanhClamped = (a: number) => Math.tanh(Math.min(15, Math.max(-15, a)));
const sigmoidCpu = (a: number) => 1 / (1 + Math.exp(-a));
const geluInner = (a: number) => SQRT_2_OVER_PI * (a + GELU_C * a * a * a);
const GELU_TANH_WGSL = `tanh(clamp(${SQRT_2_OVER_PI} * (a + ${GELU_C} * a * a * a), -15.0, 15.0))`;

/** -x. */
export const neg: (x: Tensor) => Tensor = unaryOp({
  name: "neg",
  cpu: (a) => -a,
  wgsl: "-a",
  grad: (_x, _y, g) => neg(g),
});
/** e^x. */
export const exp: (x: Tensor) => Tensor = unaryOp({
  name: "exp",
  cpu: Math.exp,
  wgsl: "exp(a)",
  grad: (_x, y, g) => mul(g, y),
});
/** Natural logarithm. */
export const log: (x: Tensor) => Tensor = unaryOp({
  name: "log",
  cpu: Math.log,
  wgsl: "log(a)",
  grad: (x, _y, g) => div(g, x),
});
/** Square root. */
export const sqrt: (x: Tensor) => Tensor = unaryOp({
  name: "sqrt",
  cpu: Math.sqrt,
  wgsl: "sqrt(a)",
  grad: (_x, y, g) => div(mul(g, 0.5), y),
});
/** 1/sqrt(x). */
export const rsqrt: (x: Tensor) => Tensor = unaryOp({
  name: "rsqrt",
  cpu: (a) => 1 / Math.sqrt(a),
  wgsl: "inverseSqrt(a)",
  grad: (_x, y, g) => mul(g, mul(-0.5, mul(y, mul(y, y)))),
});
/** x². */
export const square: (x: Tensor) => Tensor = unaryOp({
  name: "square",
  cpu: (a) => a * a,
  wgsl: "a * a",
  grad: (x, _y, g) => mul(g, mul(x, 2)),
});
/** Hyperbolic tangent. */
export const tanh: (x: Tensor) => Tensor = unaryOp({
  name: "tanh",
  cpu: tanhClamped,
  wgsl: "tanh(clamp(a, -15.0, 15.0))",
  grad: (_x, y, g) => mul(g, sub(1, square(y))),
});
/** Logistic sigmoid 1/(1+e^-x). */
export const sigmoid: (x: Tensor) => Tensor = unaryOp({
  name: "sigmoid",
  cpu: sigmoidCpu,
  wgsl: "1.0 / (1.0 + exp(-a))",
  grad: (_x, y, g) => mul(g, mul(y, sub(1, y))),
});
const stepPositive = unaryOp({ name: "step_positive", cpu: (a) => (a > 0 ? 1 : 0), wgsl: "select(0.0, 1.0, a > 0.0)" });
/** max(x, 0). */
export const relu: (x: Tensor) => Tensor = unaryOp({
  name: "relu",
  cpu: (a) => (a > 0 ? a : 0),
  wgsl: "select(0.0, a, a > 0.0)",
  grad: (x, _y, g) => mul(g, stepPositive(x)),
});
/** g · gelu'(x) in one pass from x, t = tanh(√(2/π)(x + c·x³)) (saved by the forward) and g. */
const GELU_BACKWARD: MapOp = {
  name: "gelu_backward",
  arity: 3,
  cpu: (a, t, g) => g * (0.5 * (1 + t) + 0.5 * a * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * GELU_C * a * a)),
  wgsl: `c * (0.5 * (1.0 + b) + 0.5 * a * (1.0 - b * b) * ${SQRT_2_OVER_PI} * (1.0 + ${3 * GELU_C} * a * a))`,
};
const GELU_OP: MapOp = {
  name: "gelu",
  arity: 1,
  cpu: (a) => 0.5 * a * (1 + tanhClamped(geluInner(a))),
  wgsl: `0.5 * a * (1.0 + ${GELU_TANH_WGSL})`,
};
/** GELU that also stores t = tanh(…) for the backward (ins x; outs y, t); y has the bits of {@link GELU_OP}. */
const GELU_SAVING_TANH: WordKernel = rangeKernel({
  name: "gelu_saving_tanh",
  inputs: 1,
  outputs: 2,
  range: (start, end, ins, outs) => {
    const [x] = ins.map(asF32), [y, t] = outs.map(asF32);
    for (let i = start; i < end; i++) {
      const a = x[i], th = tanhClamped(geluInner(a));
      y[i] = 0.5 * a * (1 + th);
      t[i] = th;
    }
  },
  wgsl: `  let a = bitcast<f32>(in0[i]);
  let t = ${GELU_TANH_WGSL};
  out0[i] = bitcast<u32>(0.5 * a * (1.0 + t));
  out1[i] = bitcast<u32>(t);`,
});
/**
 * GELU, tanh approximation (GPT-2's `gelu_new`). When a gradient will be needed, the forward also keeps
 * the tanh it computed, so the backward needs no second tanh (the CPU's costliest elementwise step).
 */
export function gelu(x: Tensor): Tensor {
  if (!isGradEnabled() || !x.requiresGrad) return runMap(GELU_OP, [x]);
  requireF32("gelu", x);
  const y = emptyTensor(x.backend, x.shape), t = emptyTensor(x.backend, x.shape);
  if (x.size > 0) x.backend.runWords(GELU_SAVING_TANH, [x.storage], [y.storage, t.storage], x.size, []);
  return record(y, "gelu", [x], (g) => [runMap(GELU_BACKWARD, [x, t, g])]);
}
const siluGrad = unaryOp({
  name: "silu_grad",
  cpu: (a) => {
    const s = sigmoidCpu(a);
    return s * (1 + a * (1 - s));
  },
  wgsl: "(1.0 / (1.0 + exp(-a))) * (1.0 + a * (1.0 - 1.0 / (1.0 + exp(-a))))",
});
/** SiLU / swish: x·sigmoid(x). */
export const silu: (x: Tensor) => Tensor = unaryOp({
  name: "silu",
  cpu: (a) => a * sigmoidCpu(a),
  wgsl: "a / (1.0 + exp(-a))",
  grad: (x, _y, g) => mul(g, siluGrad(x)),
});
/** Sign: -1, 0 or 1 (no gradient: zero almost everywhere). */
export const sign: (x: Tensor) => Tensor = unaryOp({ name: "sign", cpu: Math.sign, wgsl: "sign(a)" });
/** |x|. */
export const abs: (x: Tensor) => Tensor = unaryOp({
  name: "abs",
  cpu: Math.abs,
  wgsl: "abs(a)",
  grad: (x, _y, g) => mul(g, sign(x)),
});

// ---------------------------------------------------------------- binary

interface BinaryDef {
  name: string;
  cpu: (a: number, b: number) => number;
  wgsl: (a: string, b: string) => string;
  /** Gradients for a and b before un-broadcasting; null where none flows. */
  grad?: (a: Operand, b: Operand, y: Tensor, g: Tensor) => [Tensor | null, Tensor | null];
}

/** A binary op over tensors and/or numbers. */
export type BinaryFn = (a: Operand, b: Operand) => Tensor;

function binaryOp(def: BinaryDef): BinaryFn {
  const both: MapOp = { name: def.name, arity: 2, cpu: (a, b) => def.cpu(a, b), wgsl: def.wgsl("a", "b") };
  const right: MapOp = {
    name: `${def.name}_s`,
    arity: 1,
    cpu: (a, _b, _c, p) => def.cpu(a, p),
    wgsl: def.wgsl("a", "p0"),
  };
  const left: MapOp = {
    name: `s_${def.name}`,
    arity: 1,
    cpu: (a, _b, _c, p) => def.cpu(p, a),
    wgsl: def.wgsl("p0", "a"),
  };
  return (a, b) => {
    if (typeof a === "number" && typeof b === "number") {
      throw new Error(`${def.name}: at least one operand must be a tensor`);
    }
    const y = typeof b === "number"
      ? runMap(right, [a as Tensor], b)
      : typeof a === "number"
      ? runMap(left, [b], a)
      : runMap(both, [a, b]);
    if (!def.grad) return y;
    const grad = def.grad;
    const inputs = [a, b].filter((t): t is Tensor => typeof t !== "number");
    return record(y, def.name, inputs, (g) => {
      const [ga, gb] = grad(a, b, y, g);
      const out: (Tensor | null)[] = [];
      if (typeof a !== "number") out.push(ga && sumTo(ga, a.shape));
      if (typeof b !== "number") out.push(gb && sumTo(gb, b.shape));
      return out;
    });
  };
}

/** a + b. */
export const add: BinaryFn = binaryOp({
  name: "add",
  cpu: (a, b) => a + b,
  wgsl: (a, b) => `${a} + ${b}`,
  grad: (_a, _b, _y, g) => [g, g],
});
/** a - b. */
export const sub: BinaryFn = binaryOp({
  name: "sub",
  cpu: (a, b) => a - b,
  wgsl: (a, b) => `${a} - ${b}`,
  grad: (_a, _b, _y, g) => [g, neg(g)],
});
/** a · b. */
export const mul: BinaryFn = binaryOp({
  name: "mul",
  cpu: (a, b) => a * b,
  wgsl: (a, b) => `${a} * ${b}`,
  grad: (a, b, _y, g) => [mul(g, b), mul(g, a)],
});
/** a / b. */
export const div: BinaryFn = binaryOp({
  name: "div",
  cpu: (a, b) => a / b,
  wgsl: (a, b) => `${a} / ${b}`,
  grad: (_a, b, y, g) => [div(g, b), typeof b === "number" ? null : neg(div(mul(g, y), b))],
});
/** a^b, defined for a ≥ 0 (as WGSL's pow; a negative base gives NaN on every backend). */
export const pow: BinaryFn = binaryOp({
  name: "pow",
  cpu: (a, b) => (a < 0 ? NaN : Math.pow(a, b)),
  wgsl: (a, b) => `pow(${a}, ${b})`,
  grad: (a, b, y, g) => [
    typeof a === "number" ? null : mul(g, mul(b, pow(a, typeof b === "number" ? b - 1 : sub(b, 1)))),
    typeof b === "number" ? null : mul(g, mul(y, typeof a === "number" ? Math.log(a) : log(a))),
  ],
});
const geMask = binaryOp({
  name: "ge_mask",
  cpu: (a, b) => (a >= b ? 1 : 0),
  wgsl: (a, b) => `select(0.0, 1.0, ${a} >= ${b})`,
});
const leMask = binaryOp({
  name: "le_mask",
  cpu: (a, b) => (a <= b ? 1 : 0),
  wgsl: (a, b) => `select(0.0, 1.0, ${a} <= ${b})`,
});
/** Elementwise maximum; on ties the gradient goes to `a`. */
export const maximum: BinaryFn = binaryOp({
  name: "maximum",
  cpu: (a, b) => (a >= b ? a : b),
  wgsl: (a, b) => `select(${b}, ${a}, ${a} >= ${b})`,
  grad: (a, b, _y, g) => {
    const m = geMask(a, b);
    return [mul(g, m), mul(g, sub(1, m))];
  },
});
/** Elementwise minimum; on ties the gradient goes to `a`. */
export const minimum: BinaryFn = binaryOp({
  name: "minimum",
  cpu: (a, b) => (a <= b ? a : b),
  wgsl: (a, b) => `select(${b}, ${a}, ${a} <= ${b})`,
  grad: (a, b, _y, g) => {
    const m = leMask(a, b);
    return [mul(g, m), mul(g, sub(1, m))];
  },
});

function comparison(name: string, cmp: (a: number, b: number) => boolean, wgslOp: string): BinaryFn {
  return binaryOp({
    name,
    cpu: (a, b) => (cmp(a, b) ? 1 : 0),
    wgsl: (a, b) => `select(0.0, 1.0, ${a} ${wgslOp} ${b})`,
  });
}
/** 1 where a == b, else 0 (f32 mask, no gradient). */
export const equal: BinaryFn = comparison("equal", (a, b) => a === b, "==");
/** 1 where a != b, else 0. */
export const notEqual: BinaryFn = comparison("not_equal", (a, b) => a !== b, "!=");
/** 1 where a < b, else 0. */
export const less: BinaryFn = comparison("less", (a, b) => a < b, "<");
/** 1 where a <= b, else 0. */
export const lessEqual: BinaryFn = comparison("less_equal", (a, b) => a <= b, "<=");
/** 1 where a > b, else 0. */
export const greater: BinaryFn = comparison("greater", (a, b) => a > b, ">");
/** 1 where a >= b, else 0. */
export const greaterEqual: BinaryFn = comparison("greater_equal", (a, b) => a >= b, ">=");

// ---------------------------------------------------------------- where

const WHERE_OPS = {
  tt: { name: "where", arity: 3, cpu: (c, a, b) => (c !== 0 ? a : b), wgsl: "select(c, b, a != 0.0)" },
  ts: { name: "where_ts", arity: 2, cpu: (c, a, _b, p) => (c !== 0 ? a : p), wgsl: "select(p0, b, a != 0.0)" },
  st: { name: "where_st", arity: 2, cpu: (c, b, _c, p) => (c !== 0 ? p : b), wgsl: "select(b, p0, a != 0.0)" },
} satisfies Record<string, MapOp>;

/**
 * `cond != 0 ? a : b` elementwise with broadcasting; `a` or `b` may be a number.
 *
 * @example
 * ```ts
 * import { tensor, where } from "@lowp/core";
 * const y = where(tensor([1, 0]), tensor([5, 6]), -1); // [5, -1]
 * ```
 */
export function where(cond: Tensor, a: Operand, b: Operand): Tensor {
  if (typeof a === "number" && typeof b === "number") return where(cond, fullLike(cond, a), b);
  // The kernel's inputs are (cond, x, y): "a" in the WGSL text is the condition.
  const y = typeof b === "number"
    ? runMap(WHERE_OPS.ts, [cond, a as Tensor], b)
    : typeof a === "number"
    ? runMap(WHERE_OPS.st, [cond, b], a)
    : runMap(WHERE_OPS.tt, [cond, a, b]);
  const inputs = [a, b].filter((t): t is Tensor => typeof t !== "number");
  return record(y, "where", inputs, (g) => {
    const out: Tensor[] = [];
    if (typeof a !== "number") out.push(sumTo(where(cond, g, 0), a.shape));
    if (typeof b !== "number") out.push(sumTo(where(cond, 0, g), b.shape));
    return out;
  });
}

const FILL_OP: MapOp = { name: "fill_like", arity: 1, cpu: (_a, _b, _c, p) => p, wgsl: "p0" };
/** A tensor shaped like `t` filled with `value` (no gradient). */
export function fullLike(t: Tensor, value: number): Tensor {
  return runMap(FILL_OP, [t], value);
}
