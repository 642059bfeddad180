/**
 * What ECO and its baselines share: a weight format (any `@lowp/formats`
 * quantizer with its granularity), the rounding of weights after a step
 * (stochastic rounding keyed so that a resumed run draws the same words),
 * the Adam or SGD-EMA update of the moments, named state for checkpoints,
 * and the report of bytes per parameter as if packed.
 *
 * @module
 */
import { clone, streamOf, type Tensor, tidy, zeros } from "@lowp/core";
import { type Granularity, parseFormat, parseGranularity, type Quantizer, type Rounding } from "@lowp/formats";
import { adamwUpdate } from "./adamw_kernel.ts";
import { sgdEmaUpdate } from "./eco_kernels.ts";
import {
  checkGradScale,
  decayMatrices,
  type DecayRule,
  namedParams,
  type Optimizer,
  type ParamList,
  type StepOptions,
} from "./optimizer.ts";

/** The update the moments follow: AdamW's (PyTorch's, bias-corrected) or SGD with EMA momentum (ECO Algorithm 2). */
export type WeightUpdate = "adamw" | "sgd";

/** Options shared by {@link EcoAdam}, {@link EcoSGD}, {@link MasterWeights} and {@link NaiveQuantized}. */
export interface QuantizedWeightOptions {
  /**
   * The weight format: a name `parseFormat` knows (`e4m3`, `int4`, `mxfp4`, …) or a {@link Quantizer}
   * (a quantizer object is taken as given, e.g. an identity quantizer in a test). Full-precision names
   * (`f32`, `e8m23`, …) are refused.
   */
  readonly format: string | Quantizer;
  /** Scale sharing for scaled formats, e.g. `group:128` for INT4-g128 (block formats fix their own). */
  readonly granularity?: Granularity | string;
  /** Rounding of the weights after a step (defaults: see each optimizer). */
  readonly rounding?: Rounding;
  /** Philox seed of stochastic rounding (default 0). */
  readonly seed?: number;
  /** Which parameters live in the weight format (default: rank ≥ 2); the others train in f32 with the plain update. */
  readonly quantize?: (name: string, param: Tensor) => boolean;
  /** Adam: (β1, β2), default (0.9, 0.999). */
  readonly betas?: readonly [number, number];
  /** Adam: ε, default 1e-8. */
  readonly eps?: number;
  /** SGD: β of the EMA momentum `m ← β·m + (1-β)·g`, default 0.9. */
  readonly momentum?: number;
  /** Decoupled weight decay λ (`p ← p·(1 - η·λ) - η·update`); default 0.01 for Adam (PyTorch's AdamW), 0 for SGD. */
  readonly weightDecay?: number;
  /** Which parameters get weight decay (default: rank ≥ 2). */
  readonly decay?: DecayRule;
}

/** Bytes of weights and optimizer state, counted as if packed (see {@link QuantizedWeightOptimizer.memory}). */
export interface MemoryReport {
  /** Number of parameter elements. */
  readonly parameters: number;
  /** Bytes of the weights: the format's codes and scales at their bit widths; f32 for unquantized parameters. */
  readonly weightBytes: number;
  /** Bytes of optimizer state: f32 moments, the exact variant's error buffer, the f32 master copy. */
  readonly stateBytes: number;
  /** (weightBytes + stateBytes) / parameters. */
  readonly bytesPerParameter: number;
}

/** Format names that keep full f32 precision: no quantized-weight optimizer takes them. */
const FULL_PRECISION = new Set(["f32", "fp32", "float32", "float", "e8m23"]);

/**
 * The quantizer of a weight format for optimizer `who`, with one clear error for an unknown name or a
 * full-precision format (ECO without quantization is AdamW/SGD: use those).
 */
export function resolveWeightFormat(format: string | Quantizer, who: string): Quantizer {
  if (typeof format !== "string") return format;
  const fullPrecision = () =>
    new Error(
      `${who}: weight format '${format}' is full precision; quantized-weight optimizers need a low-precision ` +
        `format (e.g. e4m3, or int4 with granularity group:128); use adamw or sgd for f32 weights`,
    );
  if (FULL_PRECISION.has(format.toLowerCase())) throw fullPrecision();
  let q: Quantizer;
  try {
    q = parseFormat(format);
  } catch (e) {
    throw new Error(`${who}: ${(e as Error).message}`);
  }
  if (q.elementBits >= 32) throw fullPrecision();
  return q;
}

/**
 * Throws unless the configured peak learning rate is positive: ECO divides by the learning rate, and a
 * run whose peak is ≤ 0 never moves (a recipe-level check, before anything is written).
 */
export function checkPeakLearningRate(peakLr: number, who: string): void {
  if (!(Number.isFinite(peakLr) && peakLr > 0)) {
    throw new Error(`${who}: learning rate ${peakLr} must be positive (ECO folds rounding errors in with 1/lr)`);
  }
}

/** One parameter and what the optimizer keeps about it. */
export interface QuantizedParam {
  /** Its name (state keys are `name/slot`). */
  readonly name: string;
  /** The parameter tensor (its values are the weights the forward sees). */
  readonly param: Tensor;
  /** Whether it lives in the weight format. */
  readonly quantized: boolean;
  /** Philox stream of its stochastic rounding. */
  readonly stream: number;
  /** Bytes of its weight as if packed. */
  readonly weightBytes: number;
}

/** Weight and moments after one update of a parameter: W̃, M̃ and (Adam) Ṽ. */
export interface UpdatedMoments {
  /** The updated weight before rounding, W̃. */
  readonly weight: Tensor;
  /** The updated first moment M̃. */
  readonly m: Tensor;
  /** The updated second moment Ṽ (Adam), or null. */
  readonly v: Tensor | null;
}

/**
 * The shared machinery; subclasses say what one parameter's step does ({@link QuantizedWeightOptimizer.stepParam})
 * and which extra state slots they keep. Constructing one rounds every quantized parameter into the
 * format (round to nearest), so the forward sees quantized weights from the first step, and a bad format,
 * granularity or shape fails here with the parameter's name.
 */
export abstract class QuantizedWeightOptimizer implements Optimizer {
  /** The weight format's quantizer. */
  readonly quantizer: Quantizer;
  /** The update rule of the moments. */
  readonly update: WeightUpdate;
  /** Rounding of weights after a step. */
  readonly rounding: Rounding;
  /** The parameters, in the order given. */
  protected readonly entries: readonly QuantizedParam[];
  /** The granularity passed to the quantizer (undefined: the format's default). */
  protected readonly granularity: Granularity | undefined;
  readonly #state = new Map<string, Tensor>();
  #steps = 0;

  /**
   * Resolves the format, rounds every quantized parameter into it and notes its packed size.
   * @param who the class name, for messages
   * @param params parameters to train
   * @param opts format, rounding and update options
   * @param update Adam or SGD-EMA
   * @param defaultRounding rounding when `opts.rounding` is absent
   */
  protected constructor(
    readonly who: string,
    params: ParamList,
    readonly opts: QuantizedWeightOptions,
    update: WeightUpdate,
    defaultRounding: Rounding,
  ) {
    this.update = update;
    this.quantizer = resolveWeightFormat(opts.format, who);
    this.granularity = typeof opts.granularity === "string" ? parseGranularity(opts.granularity) : opts.granularity;
    this.rounding = opts.rounding ?? defaultRounding;
    const [b1, b2] = opts.betas ?? [0.9, 0.999];
    const beta = update === "adamw" ? b1 : opts.momentum ?? 0.9;
    if (!(beta > 0 && beta < 1) || !(b2 >= 0 && b2 < 1)) {
      throw new Error(`${who}: momentum β must lie in (0, 1) and β2 in [0, 1), got β=${beta}, β2=${b2}`);
    }
    const quantize = opts.quantize ?? ((_: string, p: Tensor) => p.rank >= 2);
    this.entries = namedParams(params).map(([name, param]) => {
      const quantized = quantize(name, param);
      return {
        name,
        param,
        quantized,
        // A stream of its own: the parameter's initialisation draws (seed, streamOf(name)) from offset 0.
        stream: streamOf(`${name}/weight_rounding`),
        weightBytes: quantized ? this.#packedBytes(name, param) : 4 * param.size,
      };
    });
    tidy(() => {
      for (const e of this.entries) if (e.quantized) this.initParam(e, this.#quantDequant(e, e.param, "nearest"));
    });
  }

  /** Steps taken. */
  get steps(): number {
    return this.#steps;
  }

  /** β of the first moment: β1 (Adam) or the EMA momentum (SGD). */
  protected get beta(): number {
    return this.update === "adamw" ? (this.opts.betas ?? [0.9, 0.999])[0] : this.opts.momentum ?? 0.9;
  }

  /** Called once per quantized parameter at construction with its round-to-nearest value; the default stores it. */
  protected initParam(e: QuantizedParam, rounded: Tensor): void {
    e.param.assign(rounded);
  }

  /** State slots kept per parameter by the moments: `exp_avg`, `exp_avg_sq` (Adam) or `momentum` (SGD). */
  protected momentSlots(): string[] {
    return this.update === "adamw" ? ["exp_avg", "exp_avg_sq"] : ["momentum"];
  }

  /** Extra slots per quantized parameter (e.g. `error`, `master`). */
  protected extraSlots(): string[] {
    return [];
  }

  /** Bytes of optimizer state per element of a quantized parameter (f32 moments + extra slots). */
  protected stateBytesPerElement(quantized: boolean): number {
    return 4 * (this.momentSlots().length + (quantized ? this.extraSlots().length : 0));
  }

  /** State tensors by `name/slot`: moments as AdamW names them (`exp_avg`, `exp_avg_sq`), or `momentum`, plus extras. */
  state(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const e of this.entries) {
      for (const slot of [...this.momentSlots(), ...(e.quantized ? this.extraSlots() : [])]) {
        const t = this.#state.get(`${e.name}/${slot}`);
        if (t) out.push([`${e.name}/${slot}`, t]);
      }
    }
    return out;
  }

  /** Restores state saved by {@link QuantizedWeightOptimizer.state} and the step count (parameters come from the checkpoint). */
  load(state: Map<string, Tensor>, steps: number): void {
    if (!Number.isSafeInteger(steps) || steps < 0) {
      throw new Error(`${this.who}.load: steps ${steps} must be an integer ≥ 0`);
    }
    for (const e of this.entries) {
      for (const slot of [...this.momentSlots(), ...(e.quantized ? this.extraSlots() : [])]) {
        const key = `${e.name}/${slot}`, t = state.get(key);
        if (!t) {
          this.missingOnLoad(e, slot);
          continue;
        }
        if (t.dtype !== "f32" || t.shape.join() !== e.param.shape.join()) {
          throw new Error(`${this.who}.load: '${key}' is ${t.describe()}, expected f32 [${e.param.shape.join(",")}]`);
        }
        this.slot(e, slot).assign(t);
      }
    }
    this.#steps = steps;
  }

  /** What a missing slot means on load; the default: the parameter had not been stepped yet (as AdamW), so it starts fresh. */
  protected missingOnLoad(e: QuantizedParam, slot: string): void {
    const key = `${e.name}/${slot}`;
    this.#state.get(key)?.dispose();
    this.#state.delete(key);
  }

  /** Bytes of weights and state as if packed; see {@link MemoryReport}. */
  memory(): MemoryReport {
    let parameters = 0, weightBytes = 0, stateBytes = 0;
    for (const e of this.entries) {
      parameters += e.param.size;
      weightBytes += e.weightBytes;
      stateBytes += e.param.size * this.stateBytesPerElement(e.quantized);
    }
    return { parameters, weightBytes, stateBytes, bytesPerParameter: (weightBytes + stateBytes) / parameters };
  }

  /** Weight + optimizer-state bytes per parameter as if packed, e.g. e4m3 weights with Adam: 1 + 8 = 9. */
  bytesPerParameter(): number {
    return this.memory().bytesPerParameter;
  }

  /** One update with learning rate `lr` (finite, ≥ 0); gradients are multiplied by `opts.gradScale` first when given. */
  step(lr: number, opts: StepOptions = {}): void {
    if (!(Number.isFinite(lr) && lr >= 0)) {
      throw new Error(`${this.who}.step: learning rate ${lr} must be a finite number ≥ 0`);
    }
    checkGradScale(opts.gradScale);
    const t = this.#steps + 1;
    tidy(() => {
      for (const e of this.entries) if (e.param.grad) this.stepParam(e, t, lr, opts.gradScale);
    });
    this.#steps = t;
  }

  /** One parameter's step t (1-based) with learning rate `lr`. */
  protected abstract stepParam(e: QuantizedParam, t: number, lr: number, gradScale: Tensor | undefined): void;

  /** The state tensor `name/slot` of a parameter, created as zeros (kept) on first use. */
  protected slot(e: QuantizedParam, slot: string): Tensor {
    const key = `${e.name}/${slot}`;
    let t = this.#state.get(key);
    if (!t) {
      t = zeros(e.param.shape, { backend: e.param.backend }).keep();
      this.#state.set(key, t);
    }
    return t;
  }

  /** Sets a state slot to a copy of `value` (used for the master copy at construction). */
  protected setSlot(e: QuantizedParam, slot: string, value: Tensor): void {
    this.slot(e, slot).assign(clone(value));
  }

  /** Whether the slot exists yet. */
  protected hasSlot(e: QuantizedParam, slot: string): boolean {
    return this.#state.has(`${e.name}/${slot}`);
  }

  /** λ for this parameter. */
  protected decayOf(e: QuantizedParam): number {
    const wd = this.opts.weightDecay ?? (this.update === "adamw" ? 0.01 : 0);
    return wd && (this.opts.decay ?? decayMatrices)(e.name, e.param) ? wd : 0;
  }

  /**
   * The plain update of `weight` with the gradient of `e` at step t: W̃, M̃, Ṽ from the AdamW kernel
   * (`adamwUpdate`, so with nothing rounded the result is AdamW's bit for bit) or the SGD-EMA kernel.
   * The moment slots are read, not written.
   */
  protected updateMoments(
    e: QuantizedParam,
    weight: Tensor,
    t: number,
    lr: number,
    gradScale?: Tensor,
  ): UpdatedMoments {
    const g = e.param.grad!, weightDecay = this.decayOf(e);
    if (this.update === "adamw") {
      const [b1, b2] = this.opts.betas ?? [0.9, 0.999];
      const constants = { betas: [b1, b2] as const, eps: this.opts.eps ?? 1e-8, step: t, lr, weightDecay, gradScale };
      const [w, m, v] = adamwUpdate(weight, g, this.slot(e, "exp_avg"), this.slot(e, "exp_avg_sq"), constants);
      return { weight: w, m, v };
    }
    const [w, m] = sgdEmaUpdate(weight, g, this.slot(e, "momentum"), {
      momentum: this.beta,
      lr,
      weightDecay,
      gradScale,
    });
    return { weight: w, m, v: null };
  }

  /** Stores M̃ (and Ṽ) as the new moments. */
  protected storeMoments(e: QuantizedParam, m: Tensor, v: Tensor | null): void {
    this.slot(e, this.update === "adamw" ? "exp_avg" : "momentum").assign(m);
    if (v) this.slot(e, "exp_avg_sq").assign(v);
  }

  /**
   * q(x) at step t: the format's quantize-dequantize with its granularity and this optimizer's rounding.
   * Stochastic rounding draws Philox words keyed (seed, the parameter's stream) at offset (t-1)·size, so
   * every step draws fresh words and a run resumed at step t draws the same ones.
   */
  protected round(e: QuantizedParam, x: Tensor, t: number): Tensor {
    return this.#quantDequant(e, x, this.rounding, (t - 1) * e.param.size);
  }

  #quantDequant(e: QuantizedParam, x: Tensor, rounding: Rounding, offset = 0): Tensor {
    try {
      return this.quantizer.quantDequant(x, {
        rounding,
        granularity: this.granularity,
        seed: this.opts.seed ?? 0,
        stream: e.stream,
        offset,
      });
    } catch (err) {
      throw new Error(`${this.who}: parameter '${e.name}': ${(err as Error).message}`);
    }
  }

  /** Bytes of `param` in the format as if packed: Σ over the stored parts (codes, scales, …) of count × bits / 8. */
  #packedBytes(name: string, param: Tensor): number {
    return tidy(() => {
      let q;
      try {
        q = this.quantizer.quantize(param, { granularity: this.granularity });
      } catch (err) {
        throw new Error(`${this.who}: parameter '${name}': ${(err as Error).message}`);
      }
      return q.parts.reduce((sum, part) => sum + (part.codes.size * part.bits) / 8, 0);
    });
  }
}
