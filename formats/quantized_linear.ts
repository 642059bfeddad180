/**
 * A linear layer run under a {@link LinearPrecision}: one autograd op whose
 * forward quantizes `x` and `W` along the reduction axis and whose backward
 * quantizes the operands of the two gradient GEMMs along theirs (composing
 * `fakeQuant` around `matmul` cannot do the latter). {@link applyPrecision}
 * switches a model's `Linear` layers to it through the layer seam
 * (`Linear.op`), like torchao's `quantize_(model, config)`.
 *
 * Operand sources. A backward operand left out of the record reuses what the
 * forward GEMM used: the quantized `W` or `x` (as autograd of fake-quant
 * would), and the f32 output gradient. With every role left out the op is
 * `Linear`'s own, bit for bit. A forward operand rotated by a Hadamard
 * transform cannot be reused along another axis, so then the backward
 * operands must be given.
 *
 * Randomness (stochastic rounding, Hadamard signs) is keyed by
 * `randomKey(ctx, layer, role)`: it differs per step, layer and role, and
 * replays exactly on resume. Delayed scaling keeps its amax history and scale
 * as buffers of the layer (`fp8.<gemm>.<operand>.amax_history`, `.scale`),
 * and Autoflex its state (`flex.<gemm>.<operand>.state`: exponent, count and
 * max-abs history, formats/autoflex.ts), both updated only in training
 * (`ctx.training`); evaluation uses them without moving them.
 *
 * LSQ (`lsq: true` on a forward int operand, formats/lsq.ts): the steps are
 * `s = u·θ`, θ a parameter of the layer (`lsq.forward.input`: one;
 * `lsq.forward.weight`: one per scale, flattened to 1-D, so it stays f32
 * under quantized-weight optimizers and gets no weight decay) starting at 1,
 * and u the step's initial value, buffer `lsq.forward.<operand>.unit`. θ's
 * gradient is `g·(∂L/∂s)/u`: SGD then moves s exactly as the paper's
 * `s ← s − lr·g·∂L/∂s`, while Adam, which ignores a gradient's scale (and so
 * the paper's g), moves s by about lr·u a step rather than lr: with s itself
 * as the parameter, steps near 0.01 (int8 inputs) take updates of up to lr,
 * and a `qat-int4` run at lr 5e-3 (tests/training_test.ts's resume recipe)
 * went NaN at step 4. {@link applyPrecision} creates both (weights:
 * u = the paper's `2·mean(|w|)/sqrt(Qp)` per scale). The input's unit is 0
 * until the first training batch sets it (so it is also the "initialised"
 * flag, and a resumed run keeps it); an evaluation before that takes the
 * step from its own batch without storing it.
 *
 * @module
 */
import {
  abs,
  add,
  div,
  type ForwardContext,
  full,
  lessEqual,
  Linear,
  type LinearOp,
  matchesName,
  matmul,
  type Module,
  mul,
  type NamePattern,
  noGrad,
  plainLinear,
  randomKey,
  record,
  reshape,
  setBaseOp,
  sumTo,
  type Tensor,
  tensor,
  transpose,
  where,
  zeros,
} from "@lowp/core";
import {
  lsqGradScale,
  type LsqGroupOptions,
  lsqInitialStep,
  lsqLayout,
  type LsqParts,
  lsqQuantDequant,
  lsqStepGrad,
  lsqValueGrad,
} from "./lsq.ts";
import { parseFloatFormat } from "./element.ts";
import { hadamard, type HadamardOptions, inverseHadamard } from "./hadamard.ts";
import type { MxQuantizeOptions } from "./mx.ts";
import type { Nvfp4Options } from "./nvfp4.ts";
import {
  autoflexOptionsOf,
  isQuantized,
  type LinearPrecision,
  OPERAND_ROLES,
  operandOf,
  type OperandPrecision,
  operandProblems,
  resolvePrecision,
} from "./precision.ts";
import { questQuantDequant } from "./quest.ts";
import { autoflexQuantDequant, autoflexState } from "./autoflex.ts";
import { parseFormat } from "./registry.ts";
import { parseGranularity } from "./spec.ts";
import { currentScale, delayedScale, pushAmax, scaledQuantDequant } from "./tensor_scale.ts";

/** A GEMM operand: the matrix is `trans ? tᵀ : t`. */
interface Operand {
  readonly t: Tensor;
  readonly trans: boolean;
}

/** A quantized operand in reduction-last layout, with the STE mask when the forward asked for one. */
interface Quantized {
  readonly q: Tensor;
  readonly mask: Tensor | null;
}

function gemm(a: Operand, b: Operand): Tensor {
  return matmul(a.t, b.t, { transA: a.trans, transB: b.trans });
}

/** The Hadamard options of a GEMM: both operands rotate alike (the same signs), so it cancels in the product. */
function rotation(op: OperandPrecision, layer: Linear, gemmName: string, ctx?: ForwardContext): HadamardOptions {
  if (!op.random_signs) return { block: op.hadamard! };
  const key = randomKey(ctx, layer.name, `${gemmName}/signs`);
  return { block: op.hadamard!, signs: { seed: key.seed, stream: key.stream, offset: key.offset } };
}

/**
 * Quantizes the 2-D `r` as `op` says, along its reduction axis `axis` (1: `r` is [rows, k]; 0: `r` is [k, rows]).
 * Block and group scales run along that axis in place (no transposed copy); QuEST needs axis 1.
 */
function quantizeRows(
  r: Tensor,
  axis: 0 | 1,
  op: OperandPrecision,
  layer: Linear,
  role: string,
  ctx: ForwardContext | undefined,
  steMask: "none" | "clipped" | "trust",
): Quantized {
  const key = randomKey(ctx, layer.name, `${role}/rounding`);
  const rounding = { rounding: op.rounding ?? "nearest", seed: key.seed, stream: key.stream, offset: key.offset };
  if (op.scale_rule === "quest") {
    const { values, trust } = questQuantDequant(r, rounding);
    if (steMask === "trust") return { q: values, mask: trust };
    trust.dispose();
    return { q: values, mask: null };
  }
  let q: Tensor;
  if (op.scaling === "current") q = scaledQuantDequant(r, op.format, currentScale(r, op.format, op.margin), rounding);
  else if (op.scaling === "delayed") q = delayedQuant(r, op, layer, role, ctx, rounding);
  else if (op.scaling === "autoflex") q = autoflexQuant(r, op, layer, role, ctx, rounding);
  else {
    // `channel` is one scale per row: per output channel of a weight, per token of an activation.
    const granularity = op.granularity === undefined
      ? undefined
      : parseGranularity(op.granularity === "channel" ? `channel:${1 - axis}` : op.granularity);
    const opts: MxQuantizeOptions & Nvfp4Options = {
      ...rounding,
      granularity,
      axis,
      scaleRounding: op.scale_rule as MxQuantizeOptions["scaleRounding"],
      ...(op.block2d ? { block2d: true } : {}),
    };
    q = parseFormat(op.format).quantDequant(r, opts);
  }
  if (steMask !== "clipped") return { q, mask: null };
  const range = parseFloatFormat(op.format)!.maxNormal;
  return { q, mask: where(lessEqual(abs(r), range), 1, 0) };
}

/** Delayed scaling: the scale from the layer's amax history; in training the history and scale move on. */
function delayedQuant(
  r: Tensor,
  op: OperandPrecision,
  layer: Linear,
  role: string,
  ctx: ForwardContext | undefined,
  rounding: MxQuantizeOptions,
): Tensor {
  const local = `fp8.${role}`;
  const history = layer.buffer(`${local}.amax_history`) ??
    layer.registerBuffer(`${local}.amax_history`, zeros([op.amax_history_len ?? 1024], { backend: r.backend }));
  const previous = layer.buffer(`${local}.scale`) ??
    layer.registerBuffer(`${local}.scale`, tensor([1, 1], { backend: r.backend }));
  const scale = delayedScale(history, previous, op.format, op.amax_compute_algo ?? "max", op.margin);
  const q = scaledQuantDequant(r, op.format, scale, rounding);
  if (ctx?.training) {
    layer.registerBuffer(`${local}.amax_history`, pushAmax(history, r));
    layer.registerBuffer(`${local}.scale`, scale);
  }
  return q;
}

/**
 * Autoflex (flex16+5): the shared exponent from the layer's Autoflex state (`flex.<gemm>.<operand>.state`, created
 * empty on first use: then the tensor's own exponent); in training the state moves on.
 */
function autoflexQuant(
  r: Tensor,
  op: OperandPrecision,
  layer: Linear,
  role: string,
  ctx: ForwardContext | undefined,
  rounding: MxQuantizeOptions,
): Tensor {
  const local = `flex.${role}.state`, settings = autoflexOptionsOf(op);
  const state = layer.buffer(local) ?? layer.registerBuffer(local, autoflexState(r.backend, settings));
  const { values, state: next } = autoflexQuantDequant(r, state, { ...settings, ...rounding, update: !!ctx?.training });
  if (next) layer.registerBuffer(local, next);
  return values;
}

/**
 * Quantizes operand `o` of a GEMM for role `gemm.name`: the A side (`side`
 * "a", reduction along columns of A) or the B side (reduction along rows of
 * B). Returns the operand to multiply and, for forward operands, the STE mask
 * in reduction-last layout. A Hadamard transform, QuEST or an STE mask works
 * on the reduction-last layout (a transposed copy where the operand is stored
 * the other way); otherwise the quantizer runs along the stored layout's
 * reduction axis in place.
 */
function prepare(
  o: Operand,
  side: "a" | "b",
  op: OperandPrecision | undefined,
  layer: Linear,
  gemmName: string,
  operand: string,
  ctx: ForwardContext | undefined,
  steMask: "none" | "clipped" | "trust" = "none",
): { operand: Operand; mask: Tensor | null } {
  if (!op) return { operand: o, mask: null };
  const role = `${gemmName}.${operand}`;
  // Reduction-last layout: A as [rows, k], B as Bᵀ = [cols, k].
  const reductionLast = side === "a" ? !o.trans : o.trans;
  if (!reductionLast && !op.hadamard && op.scale_rule !== "quest" && steMask === "none") {
    checkReduction(o.t.shape[0], op, layer, role);
    const { q } = quantizeRows(o.t, 0, op, layer, role, ctx, steMask);
    return { operand: { t: q, trans: o.trans }, mask: null };
  }
  let r = reductionLast ? o.t : transpose(o.t);
  checkReduction(r.shape[1], op, layer, role);
  if (op.hadamard) r = hadamard(r, rotation(op, layer, gemmName, ctx));
  const { q, mask } = quantizeRows(r, 1, op, layer, role, ctx, steMask);
  return { operand: { t: q, trans: side === "b" }, mask };
}

/** Runtime check of the reduction length `k` (the token axis is only known here). */
function checkReduction(k: number, op: OperandPrecision, layer: Linear, role: string): void {
  const problems = operandProblems(op, k, role);
  if (problems.length) throw new Error(`${layer.name} ${role}: ${problems.join("; ")}`);
}

/** Puts a gradient (reduction-last layout of the forward operand) through the forward's rotation and STE mask. */
function masked(g: Tensor, mask: Tensor | null, op: OperandPrecision | undefined, rot: HadamardOptions | null): Tensor {
  if (!mask) return g;
  if (!op?.hadamard || !rot) return mul(g, mask);
  return inverseHadamard(mul(hadamard(g, rot), mask), rot);
}

/** The layer-local name of the learned step parameter of forward operand `operand`. */
const lsqLocal = (operand: "input" | "weight") => `lsq.forward.${operand}`;
/** The layer-local name of the buffer holding the operand's step unit (0: not initialised yet). */
const unitLocal = (operand: "input" | "weight") => `${lsqLocal(operand)}.unit`;
/** Unit buffers this module set itself from a batch, so known to be non-zero: no check on the device needed. */
const initialisedUnits = new WeakSet<Tensor>();

/** LSQ options of a weight stored [in, out], quantized along `in`: `channel` is one step per output channel. */
function weightLsq(op: OperandPrecision): LsqGroupOptions {
  const g = op.granularity ?? "tensor";
  return { format: op.format, granularity: parseGranularity(g === "channel" ? "channel:1" : g), axis: 0 };
}

/** An LSQ operand of one forward: values and step terms, the parameter it trains (null: none), unit and scale. */
interface LsqOperand extends LsqParts {
  /** The step parameter θ (s = unit·θ), or null when this forward trains none. */
  readonly theta: Tensor | null;
  /** The unit u of the steps (1-D, one per step or one for all). */
  readonly unit: Tensor;
  /** The paper's g. */
  readonly gradScale: number;
}

/** The step parameter and unit buffer of an LSQ operand; throws when the layer was not switched by applyPrecision. */
function lsqStateOf(layer: Linear, operand: "input" | "weight"): { theta: Tensor; unit: Tensor } {
  const theta = layer.parameter(lsqLocal(operand)), unit = layer.buffer(unitLocal(operand));
  if (!theta || !unit) {
    throw new Error(
      `${layer.name}: forward.${operand} learns its step (lsq) but has none; apply it with applyPrecision`,
    );
  }
  return { theta, unit };
}

/** The weight under its learned steps; N of the step's gradient scale: the weights sharing a step. */
function lsqWeight(w: Tensor, op: OperandPrecision, layer: Linear): LsqOperand {
  const { theta, unit } = lsqStateOf(layer, "weight");
  const parts = lsqQuantDequant(w, mul(unit, theta), weightLsq(op));
  return { ...parts, theta, unit, gradScale: lsqGradScale(parts.layout.n / parts.layout.channels, op.format) };
}

/**
 * The input [m, k] under its learned step. While the unit is 0 it comes from this batch (in training it is
 * stored). N of the gradient scale: the k features of one token (the paper's feature count of a layer; the
 * loss already averages over tokens).
 */
function lsqInput(x2: Tensor, op: OperandPrecision, layer: Linear, ctx: ForwardContext | undefined): LsqOperand {
  const opts: LsqGroupOptions = { format: op.format };
  let { theta, unit } = lsqStateOf(layer, "input") as { theta: Tensor | null; unit: Tensor };
  if (!initialisedUnits.has(unit)) {
    // Decided on the device (no readback): the stored unit where it is set, else this batch's initial step.
    unit = where(unit, unit, lsqInitialStep(x2, opts));
    if (ctx?.training) initialisedUnits.add(layer.registerBuffer(unitLocal("input"), unit));
    else theta = null; // an evaluation before any training step trains nothing
  }
  const step = theta ? mul(unit, theta) : unit;
  const parts = lsqQuantDequant(x2, step, opts);
  return { ...parts, theta, unit, gradScale: lsqGradScale(x2.shape[1], op.format) };
}

/**
 * The gradient the step parameter θ gets: `g·(∂L/∂s)/u`, so that a plain gradient step on θ moves s = u·θ by
 * exactly the paper's `-lr·g·∂L/∂s` (the chain rule would give `u·∂L/∂s`; like g, the factor is a choice of
 * the step's learning rate, see the module doc).
 */
function thetaGrad(grad: Tensor, o: LsqOperand): Tensor {
  return div(lsqStepGrad(grad, o.terms, o.layout, o.gradScale), o.unit);
}

/** The format and granularity each step parameter was made for (θ is assigned in place on resume, so it stays). */
const lsqMadeFor = new WeakMap<Tensor, string>();

/**
 * Creates (or keeps, when they were made for the same format and granularity) the learned steps of the layer's
 * LSQ forward operands, and removes those of operands without `lsq`.
 */
function attachLsq(layer: Linear, p: LinearPrecision): void {
  const backend = layer.weight.backend;
  for (const operand of ["input", "weight"] as const) {
    const op = p.forward?.[operand], local = lsqLocal(operand);
    if (!op?.lsq) {
      layer.removeParameter(local)?.dispose();
      layer.removeBuffer(unitLocal(operand))?.dispose();
      continue;
    }
    const size = operand === "input" ? 1 : lsqLayout(layer.weight.shape, weightLsq(op)).channels;
    const madeFor = `${op.format}/${op.granularity ?? "tensor"}`, old = layer.parameter(local);
    if (old && lsqMadeFor.get(old) === madeFor && layer.buffer(unitLocal(operand))?.size === size) continue;
    const unit = operand === "input" ? zeros([1], { backend }) : lsqInitialStep(layer.weight, weightLsq(op));
    layer.registerBuffer(unitLocal(operand), unit);
    lsqMadeFor.set(layer.registerParameter(local, full([size], 1, { backend })), madeFor);
  }
}

/** The autograd op of a linear layer under `precision` (see the module doc). */
export function quantizedLinear(precision: LinearPrecision): LinearOp {
  if (!isQuantized(precision)) return plainLinear;
  checkBackwardSources(precision);
  const ste = precision.ste ?? "plain";
  const steMask = ste === "plain" ? "none" : ste;
  const fwd = precision.forward ?? {}, gin = precision.grad_input ?? {}, gw = precision.grad_weight ?? {};
  return (x, layer, ctx) => {
    const w = layer.weight, k = layer.inFeatures, n = layer.outFeatures;
    if (x.shape[x.rank - 1] !== k) throw new Error(`${layer.name}: input ${x.describe()} does not end in ${k}`);
    const m = x.size / k;
    const forwardParts = noGrad(() => {
      const x2 = reshape(x, [m, k]);
      const lsqIn = fwd.input?.lsq ? lsqInput(x2, fwd.input, layer, ctx) : null;
      const lsqW = fwd.weight?.lsq ? lsqWeight(w, fwd.weight, layer) : null;
      const xa = lsqIn
        ? { operand: { t: lsqIn.values, trans: false }, mask: null }
        : prepare({ t: x2, trans: false }, "a", fwd.input, layer, "forward", "input", ctx, steMask);
      const wb = lsqW
        ? { operand: { t: lsqW.values, trans: false }, mask: null }
        : prepare({ t: w, trans: false }, "b", fwd.weight, layer, "forward", "weight", ctx, steMask);
      let y = gemm(xa.operand, wb.operand);
      if (layer.bias) y = add(y, layer.bias);
      return { x2, xa, wb, lsqIn, lsqW, y: reshape(y, [...x.shape.slice(0, -1), n]) };
    });
    const { x2, xa, wb, lsqIn, lsqW, y } = forwardParts;
    const stepIn = lsqIn?.theta ?? null, stepW = lsqW?.theta ?? null;
    const steps = [stepIn, stepW].filter((s): s is Tensor => s !== null);
    const inputs = [x, w, ...(layer.bias ? [layer.bias] : []), ...steps];
    return record(y, `quantizedLinear(${layer.name})`, inputs, (g) => {
      const g2 = reshape(g, [m, n]);
      // dx = dy·Wᵀ: A = dy [m, n], B = Wᵀ (stored as W [k, n], trans).
      let dx: Tensor | null = null, dStepIn: Tensor | null = null;
      if (x.requiresGrad || stepIn?.requiresGrad) {
        const wSource: Operand = gin.weight ? { t: w, trans: true } : { t: wb.operand.t, trans: !wb.operand.trans };
        const a = prepare({ t: g2, trans: false }, "a", gin.grad_output, layer, "grad_input", "grad_output", ctx);
        const b = prepare(wSource, "b", gin.weight, layer, "grad_input", "weight", ctx);
        let d = gemm(a.operand, b.operand); // [m, k]: the gradient of the (quantized) input
        if (lsqIn) {
          if (stepIn?.requiresGrad) dStepIn = thetaGrad(d, lsqIn);
          d = lsqValueGrad(d, lsqIn.terms);
        } else {
          d = masked(d, xa.mask, fwd.input, fwd.input?.hadamard ? rotation(fwd.input, layer, "forward", ctx) : null);
        }
        if (x.requiresGrad) dx = reshape(d, x.shape);
      }
      // dW = xᵀ·dy: A = xᵀ (stored as x [m, k], trans), B = dy [m, n].
      let dw: Tensor | null = null, dStepW: Tensor | null = null;
      if (w.requiresGrad || stepW?.requiresGrad) {
        const xSource: Operand = gw.input ? { t: x2, trans: true } : { t: xa.operand.t, trans: true };
        const a = prepare(xSource, "a", gw.input, layer, "grad_weight", "input", ctx);
        const b = prepare({ t: g2, trans: false }, "b", gw.grad_output, layer, "grad_weight", "grad_output", ctx);
        dw = gemm(a.operand, b.operand); // [k, n]: the gradient of the (quantized) weight
        if (lsqW) {
          if (stepW?.requiresGrad) dStepW = thetaGrad(dw, lsqW);
          dw = lsqValueGrad(dw, lsqW.terms);
        } else if (wb.mask) {
          const rot = fwd.weight?.hadamard ? rotation(fwd.weight, layer, "forward", ctx) : null;
          dw = transpose(masked(transpose(dw), wb.mask, fwd.weight, rot));
        }
        if (!w.requiresGrad) dw = null;
      }
      const db = layer.bias?.requiresGrad ? sumTo(g, [n]) : null;
      const stepGrads = [stepIn ? dStepIn : undefined, stepW ? dStepW : undefined].filter((s) => s !== undefined);
      return [dx, dw, ...(layer.bias ? [db] : []), ...stepGrads];
    });
  };
}

/** A forward operand rotated by a Hadamard transform cannot stand in for a backward operand along another axis. */
function checkBackwardSources(p: LinearPrecision): void {
  const rotated = (op?: OperandPrecision) => op?.hadamard !== undefined;
  const problems: string[] = [];
  if (rotated(p.forward?.weight) && !p.grad_input?.weight) {
    problems.push("forward.weight uses a Hadamard transform, so grad_input.weight must be given");
  }
  if (rotated(p.forward?.input) && !p.grad_weight?.input) {
    problems.push("forward.input uses a Hadamard transform, so grad_weight.input must be given");
  }
  for (const gemmName of ["forward", "grad_input", "grad_weight"] as const) {
    const ops = Object.values((p as Record<string, Record<string, OperandPrecision> | undefined>)[gemmName] ?? {});
    const blocks = new Set(ops.map((o) => `${o.hadamard ?? "none"}/${o.random_signs ?? false}`));
    if (blocks.size > 1 || (ops.length === 1 && ops[0].hadamard)) {
      problems.push(`${gemmName}: both operands need the same hadamard and random_signs (it cancels only then)`);
    }
  }
  for (const [gemmName, role] of OPERAND_ROLES) {
    const op = operandOf(p, gemmName, role);
    if (op?.lsq) {
      problems.push(...operandProblems(op, null, `${gemmName}.${role}`).map((q) => `${gemmName}.${role}: ${q}`));
    }
  }
  if (p.ste === "trust" && !["input", "weight"].some((r) => operandOf(p, "forward", r)?.scale_rule === "quest")) {
    problems.push("ste trust needs a forward operand with scale_rule quest");
  }
  if (p.ste === "clipped") {
    for (const r of ["input", "weight"]) {
      const op = operandOf(p, "forward", r);
      if (op && (!parseFloatFormat(op.format) || op.scaling)) {
        problems.push(`ste clipped needs plain unscaled element formats; forward.${r} is '${op.format}'`);
      }
    }
  }
  if (problems.length) throw new Error(`precision: ${problems.join("; ")}`);
}

/** Options of {@link applyPrecision}. */
export interface ApplyPrecisionOptions {
  /** Linear layers whose names match are left in f32 (default: none). The embedding and tied head are no Linear. */
  readonly skip?: NamePattern;
}

/**
 * Switches every `Linear` of `model` (except those `skip` matches) to the
 * quantized op of `precision` (a preset name or a record), after checking
 * the record against every layer's widths: one error lists every problem
 * (unknown format, a group or block that does not divide a width, a Hadamard
 * block larger than the reduction axis). Returns the names of the layers
 * switched. With `f32` the layers get the plain op back.
 *
 * LSQ operands get their learned steps as parameters of the layer (see the
 * module doc): created here (weights: `2·mean(|w|)/sqrt(Qp)` per scale) or
 * kept when the layer already has steps made for the same format and
 * granularity (applying again, or converting, keeps what was learned);
 * steps of operands without `lsq` are removed. Build optimizers after
 * applying.
 */
export function applyPrecision(
  model: Module,
  precision: string | LinearPrecision,
  opts: ApplyPrecisionOptions = {},
): string[] {
  const p = resolvePrecision(precision);
  const layers = model.namedModules().filter(([name, m]) =>
    m instanceof Linear && !(opts.skip !== undefined && matchesName(opts.skip, name))
  ) as [string, Linear][];
  // One line per (role, problem), naming the layers it concerns.
  const problems = new Map<string, string[]>();
  const packed = layers.filter(([, layer]) => layer.parameter("weight") === undefined).map(([name]) => name);
  if (packed.length) {
    problems.set("the weight is frozen packed (a QLoRA base), not an f32 parameter a precision can run on", packed);
  }
  for (const [name, layer] of layers) {
    for (const [gemmName, role] of OPERAND_ROLES) {
      const op = operandOf(p, gemmName, role);
      if (!op) continue;
      // Reduction lengths: forward along in, grad_input along out, grad_weight along tokens (checked when run).
      const k = gemmName === "forward" ? layer.inFeatures : gemmName === "grad_input" ? layer.outFeatures : null;
      for (const problem of operandProblems(op, k, `${gemmName}.${role}`)) {
        const key = `${gemmName}.${role}: ${problem}`;
        problems.set(key, [...(problems.get(key) ?? []), name]);
      }
    }
  }
  if (problems.size) {
    const lines = [...problems].map(([what, names]) =>
      `${what} (${names.slice(0, 3).join(", ")}${names.length > 3 ? `, and ${names.length - 3} more layers` : ""})`
    );
    throw new Error(`precision: ${lines.join("; ")}`);
  }
  const op = quantizedLinear(p);
  for (const [, layer] of layers) {
    setBaseOp(layer, op); // under a LoRA adapter when the layer has one
    noGrad(() => attachLsq(layer, p));
  }
  return layers.map(([name]) => name);
}

/**
 * QAT's convert step (torchao's `step="convert"`): replaces the weights of
 * every layer `applyPrecision` switched with their quantized values (the
 * forward weight quantizer's, along the input axis), and switches the layers
 * to the same precision without `forward.weight`, so the model computes the
 * same logits from real quantized weights. Returns the converted layers'
 * names. A forward weight quantizer with a Hadamard transform or delayed
 * scaling has no plain quantized weight to store: that is an error. With
 * `lsq` the weights are stored quantized with their learned steps (created
 * as {@link applyPrecision} would when the model has none), and the steps
 * are then removed; a learned input step stays.
 */
export function convertPrecision(
  model: Module,
  precision: string | LinearPrecision,
  opts: ApplyPrecisionOptions = {},
): string[] {
  const p = resolvePrecision(precision);
  const op = p.forward?.weight;
  if (!op) throw new Error("convertPrecision: the precision quantizes no forward weight");
  if (op.hadamard || op.scaling === "delayed" || op.scaling === "autoflex" || op.rounding === "stochastic") {
    throw new Error(
      "convertPrecision: a forward weight with a Hadamard, delayed scaling, Autoflex or stochastic rounding has " +
        "no fixed quantized value to store",
    );
  }
  const { weight: _, ...forward } = p.forward!;
  // Applying the full record first checks it and gives LSQ weights their steps (kept when learned).
  const names = applyPrecision(model, p, opts);
  noGrad(() => {
    for (const name of names) {
      const layer = model.getModule(name) as Linear;
      if (op.lsq) {
        const { values, terms } = lsqWeight(layer.weight, op, layer);
        terms.dispose();
        layer.weight.assign(values);
        continue;
      }
      const stored = prepare({ t: layer.weight, trans: false }, "b", op, layer, "forward", "weight", undefined);
      layer.weight.assign(stored.operand.trans ? transpose(stored.operand.t) : stored.operand.t);
    }
  });
  applyPrecision(model, { ...p, forward }, opts);
  return names;
}
