/**
 * Basic layers: Linear, Embedding, LayerNorm, RMSNorm and an MLP (GELU or
 * SwiGLU).
 *
 * @module
 */
import { add, gelu, mul, silu } from "../ops/elementwise.ts";
import { gather } from "../ops/index.ts";
import { matmul } from "../ops/matmul.ts";
import { layerNorm } from "../ops/layernorm.ts";
import { rmsNorm } from "../ops/nn.ts";
import type { Tensor } from "../tensor.ts";
import { type ForwardContext, type InitContext, Module } from "./module.ts";

/**
 * How a {@link Linear} computes its output: the seam through which packages
 * above `core` run a layer quantized (or otherwise changed) without `core`
 * importing them. Set `layer.op` to change one layer.
 */
export type LinearOp = (x: Tensor, layer: Linear, ctx?: ForwardContext) => Tensor;

/** The plain f32 linear map `x·W + b`. */
export const plainLinear: LinearOp = (x: Tensor, layer: Linear): Tensor => {
  const y = matmul(x, layer.weight);
  return layer.bias ? add(y, layer.bias) : y;
};

/** Options for {@link Linear}. */
export interface LinearOptions {
  /** Add a bias (default true). */
  bias?: boolean;
  /** Init std of the weight (default 0.02, GPT-2). */
  std?: number;
}

/**
 * y = x·W + b with W stored [in, out] (the layout of GPT-2's Conv1D, so HF
 * GPT-2 checkpoints map one to one).
 */
export class Linear extends Module {
  /** [in, out] weight. */
  readonly weight: Tensor;
  /** [out] bias, or null. */
  readonly bias: Tensor | null;
  /** The computation (default {@link plainLinear}); replace it to quantize this layer. */
  op: LinearOp = plainLinear;
  /**
   * Creates a Linear.
   * @param name dotted name
   * @param init init context
   * @param inFeatures input width
   * @param outFeatures output width
   */
  constructor(
    name: string,
    init: InitContext,
    readonly inFeatures: number,
    readonly outFeatures: number,
    opts: LinearOptions = {},
  ) {
    super(name, init);
    this.weight = this.normalParam("weight", [inFeatures, outFeatures], opts.std ?? 0.02);
    this.bias = opts.bias ?? true ? this.constParam("bias", [outFeatures], 0) : null;
  }
  /** Applies the layer to [..., in] through {@link Linear.op}. */
  forward(x: Tensor, ctx?: ForwardContext): Tensor {
    return this.op(x, this, ctx);
  }
}

/** A lookup table of `count` vectors of width `dim`. */
export class Embedding extends Module {
  /** [count, dim] table. */
  readonly weight: Tensor;
  /**
   * Creates an Embedding.
   * @param name dotted name
   * @param init init context
   * @param count rows
   * @param dim width
   * @param std init std
   */
  constructor(name: string, init: InitContext, readonly count: number, readonly dim: number, std = 0.02) {
    super(name, init);
    this.weight = this.normalParam("weight", [count, dim], std);
  }
  /** Rows for i32 indices of any shape. */
  forward(indices: Tensor): Tensor {
    return gather(this.weight, indices);
  }
}

/** Layer normalisation over the last axis with learned scale and shift. */
export class LayerNorm extends Module {
  /** Scale, init 1. */
  readonly weight: Tensor;
  /** Shift, init 0. */
  readonly bias: Tensor;
  /**
   * Creates a LayerNorm.
   * @param name dotted name
   * @param init init context
   * @param dim width
   * @param eps variance floor
   */
  constructor(name: string, init: InitContext, dim: number, readonly eps = 1e-5) {
    super(name, init);
    this.weight = this.constParam("weight", [dim], 1);
    this.bias = this.constParam("bias", [dim], 0);
  }
  /** Normalises [..., dim]. */
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

/** RMS normalisation over the last axis with a learned scale. */
export class RMSNorm extends Module {
  /** Scale, init 1. */
  readonly weight: Tensor;
  /**
   * Creates a RMSNorm.
   * @param name dotted name
   * @param init init context
   * @param dim width
   * @param eps mean-square floor
   */
  constructor(name: string, init: InitContext, dim: number, readonly eps = 1e-6) {
    super(name, init);
    this.weight = this.constParam("weight", [dim], 1);
  }
  /** Normalises [..., dim]. */
  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, this.eps);
  }
}

/** Options for {@link MLP}. */
export interface MLPOptions {
  /** `gelu` (GPT-2: c_fc → GELU → c_proj) or `swiglu` (Llama: silu(gate)·up → down). */
  activation?: "gelu" | "swiglu";
  /** Biases on the projections (default true for gelu, false for swiglu). */
  bias?: boolean;
  /** Init std of the output projection (GPT-2 scales it by 1/sqrt(2·layers)). */
  outStd?: number;
}

/** Feed-forward block. Names follow HF GPT-2 (`c_fc`, `c_proj`) or Llama (`gate_proj`, `up_proj`, `down_proj`). */
export class MLP extends Module {
  readonly #activation: "gelu" | "swiglu";
  /**
   * Creates a MLP.
   * @param name dotted name
   * @param init init context
   * @param dim model width
   * @param hidden hidden width
   */
  constructor(name: string, init: InitContext, dim: number, hidden: number, opts: MLPOptions = {}) {
    super(name, init);
    this.#activation = opts.activation ?? "gelu";
    const bias = opts.bias ?? this.#activation === "gelu";
    const q = (n: string) => this.qualify(n);
    if (this.#activation === "gelu") {
      this.child(new Linear(q("c_fc"), init, dim, hidden, { bias }));
      this.child(new Linear(q("c_proj"), init, hidden, dim, { bias, std: opts.outStd }));
    } else {
      this.child(new Linear(q("gate_proj"), init, dim, hidden, { bias }));
      this.child(new Linear(q("up_proj"), init, dim, hidden, { bias }));
      this.child(new Linear(q("down_proj"), init, hidden, dim, { bias, std: opts.outStd }));
    }
  }
  /** Applies the block to [..., dim]. */
  forward(x: Tensor, ctx?: ForwardContext): Tensor {
    const run = (local: string, input: Tensor) => this.sub(local).call(input, ctx);
    if (this.#activation === "gelu") return run("c_proj", gelu(run("c_fc", x)));
    return run("down_proj", mul(silu(run("gate_proj", x)), run("up_proj", x)));
  }
}
