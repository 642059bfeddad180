/**
 * A small decoder-only transformer. Defaults are GPT-2 (learned positions,
 * LayerNorm, GELU MLP, tied embeddings) with HF GPT-2 parameter names
 * (`transformer.h.0.attn.c_attn.weight`, ...); Llama-style options swap in
 * RMSNorm, RoPE and SwiGLU.
 *
 * @module
 */
import { Tensor } from "../tensor.ts";
import { add, mul } from "../ops/elementwise.ts";
import { attention, crossEntropy } from "../ops/nn.ts";
import { concat, permute, reshape, slice, split } from "../ops/shape.ts";
import { matmul } from "../ops/matmul.ts";
import { neg } from "../ops/elementwise.ts";
import { Embedding, LayerNorm, Linear, MLP, RMSNorm } from "./layers.ts";
import { type InitContext, Module } from "./module.ts";

/** Architecture of a {@link GPT}. */
export interface GPTConfig {
  /** Vocabulary size (256 for bytes). */
  vocabSize: number;
  /** Longest sequence the model sees. */
  contextLength: number;
  /** Model width. */
  dModel: number;
  /** Transformer blocks. */
  nLayers: number;
  /** Attention heads (must divide dModel). */
  nHeads: number;
  /** MLP hidden width as a multiple of dModel (default 4). */
  mlpRatio?: number;
  /** `layernorm` (GPT-2, default) or `rmsnorm` (Llama). */
  norm?: "layernorm" | "rmsnorm";
  /** `gelu` (GPT-2, default) or `swiglu` (Llama). */
  mlp?: "gelu" | "swiglu";
  /** `learned` position embeddings (GPT-2, default) or `rope` (rotary, Llama). */
  position?: "learned" | "rope";
  /** Share the output projection with the token embedding (default true). */
  tieEmbeddings?: boolean;
}

type Norm = LayerNorm | RMSNorm;

function makeNorm(cfg: GPTConfig, name: string, init: InitContext): Norm {
  return cfg.norm === "rmsnorm" ? new RMSNorm(name, init, cfg.dModel) : new LayerNorm(name, init, cfg.dModel);
}

/** Host-computed rotary tables [T, headDim] per backend and size, kept for the process's life. */
const ropeTables = new WeakMap<object, Map<string, [Tensor, Tensor]>>();
function ropeTable(like: Tensor, t: number, hd: number): [Tensor, Tensor] {
  const perBackend = ropeTables.get(like.backend) ?? new Map<string, [Tensor, Tensor]>();
  ropeTables.set(like.backend, perBackend);
  const key = `${t}x${hd}`;
  let tables = perBackend.get(key);
  if (!tables) {
    const cos = new Float32Array(t * hd), sin = new Float32Array(t * hd);
    const half = hd / 2;
    for (let p = 0; p < t; p++) {
      for (let i = 0; i < half; i++) {
        const angle = p / Math.pow(10000, (2 * i) / hd);
        cos[p * hd + i] = cos[p * hd + i + half] = Math.cos(angle);
        sin[p * hd + i] = sin[p * hd + i + half] = Math.sin(angle);
      }
    }
    const upload = (a: Float32Array) => new Tensor(like.backend, like.backend.upload(a), [t, hd], "f32").keep();
    tables = [upload(cos), upload(sin)];
    perBackend.set(key, tables);
  }
  return tables;
}

/** Rotary position embedding on [B, H, T, hd] (HF Llama's rotate-half convention). */
function applyRope(x: Tensor): Tensor {
  const [t, hd] = x.shape.slice(-2);
  const [cos, sin] = ropeTable(x, t, hd);
  const [x1, x2] = split(x, [hd / 2, hd / 2], -1);
  return add(mul(x, cos), mul(concat([neg(x2), x1], -1), sin));
}

/** Causal multi-head self-attention with a fused QKV projection (HF GPT-2 `attn.c_attn`, `attn.c_proj`). */
export class CausalSelfAttention extends Module {
  readonly #qkv: Linear;
  readonly #proj: Linear;
  /**
   * Creates a CausalSelfAttention.
   * @param name dotted name
   * @param init init context
   * @param cfg model config
   * @param outStd init std of c_proj
   */
  constructor(name: string, init: InitContext, readonly cfg: GPTConfig, outStd: number) {
    super(name, init);
    this.#qkv = this.child(new Linear(this.qualify("c_attn"), init, cfg.dModel, 3 * cfg.dModel));
    this.#proj = this.child(new Linear(this.qualify("c_proj"), init, cfg.dModel, cfg.dModel, { std: outStd }));
  }
  /** [B, T, D] → [B, T, D]. */
  forward(x: Tensor): Tensor {
    const [b, t, d] = x.shape;
    const h = this.cfg.nHeads, hd = d / h;
    // [B, T, 3, H, hd] → [3, B, H, T, hd], then one slice per projection.
    const qkv = permute(reshape(this.#qkv.forward(x), [b, t, 3, h, hd]), [2, 0, 3, 1, 4]);
    const part = (i: number) => reshape(slice(qkv, [i, 0, 0, 0, 0], [1, b, h, t, hd]), [b, h, t, hd]);
    let q = part(0), k = part(1);
    if (this.cfg.position === "rope") [q, k] = [applyRope(q), applyRope(k)];
    const y = attention(q, k, part(2), { causal: true });
    return this.#proj.forward(reshape(permute(y, [0, 2, 1, 3]), [b, t, d]));
  }
}

/** Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). */
export class Block extends Module {
  readonly #ln1: Norm;
  readonly #attn: CausalSelfAttention;
  readonly #ln2: Norm;
  readonly #mlp: MLP;
  /**
   * Creates a Block.
   * @param name dotted name
   * @param init init context
   * @param cfg model config
   */
  constructor(name: string, init: InitContext, cfg: GPTConfig) {
    super(name, init);
    const outStd = 0.02 / Math.sqrt(2 * cfg.nLayers); // GPT-2's scaled init of residual projections
    this.#ln1 = this.child(makeNorm(cfg, this.qualify("ln_1"), init));
    this.#attn = this.child(new CausalSelfAttention(this.qualify("attn"), init, cfg, outStd));
    this.#ln2 = this.child(makeNorm(cfg, this.qualify("ln_2"), init));
    const hidden = Math.round((cfg.mlpRatio ?? 4) * cfg.dModel);
    this.#mlp = this.child(new MLP(this.qualify("mlp"), init, cfg.dModel, hidden, { activation: cfg.mlp, outStd }));
  }
  /** [B, T, D] → [B, T, D]. */
  forward(x: Tensor): Tensor {
    const h = add(x, this.#attn.forward(this.#ln1.forward(x)));
    return add(h, this.#mlp.forward(this.#ln2.forward(h)));
  }
}

/**
 * The model. `forward` maps i32 tokens [B, T] to logits [B, T, vocab];
 * `loss` adds the next-token cross-entropy.
 *
 * @example
 * ```ts
 * import { GPT, tensor } from "@lowp/core";
 * const model = new GPT({ vocabSize: 16, contextLength: 8, dModel: 16, nLayers: 1, nHeads: 2 }, { seed: 0 });
 * const logits = model.forward(tensor([[1, 2, 3]], { dtype: "i32" })); // [1, 3, 16]
 * ```
 */
export class GPT extends Module {
  /** Token embedding `transformer.wte`. */
  readonly wte: Embedding;
  /** Learned positions `transformer.wpe` (null with RoPE). */
  readonly wpe: Embedding | null;
  readonly #blocks: Block[];
  readonly #lnF: Norm;
  readonly #head: Tensor;
  /**
   * Creates a GPT.
   * @param cfg architecture
   * @param init seed for the weights
   */
  constructor(readonly cfg: GPTConfig, init: InitContext) {
    super("", init);
    if (cfg.dModel % cfg.nHeads !== 0) {
      throw new Error(`GPT: dModel ${cfg.dModel} is not divisible by nHeads ${cfg.nHeads}`);
    }
    if (cfg.position === "rope" && (cfg.dModel / cfg.nHeads) % 2 !== 0) {
      throw new Error("GPT: RoPE needs an even head dim");
    }
    this.wte = this.child(new Embedding("transformer.wte", init, cfg.vocabSize, cfg.dModel));
    this.wpe = cfg.position === "rope"
      ? null
      : this.child(new Embedding("transformer.wpe", init, cfg.contextLength, cfg.dModel, 0.01));
    this.#blocks = Array.from(
      { length: cfg.nLayers },
      (_, i) => this.child(new Block(`transformer.h.${i}`, init, cfg)),
    );
    this.#lnF = this.child(makeNorm(cfg, "transformer.ln_f", init));
    this.#head = cfg.tieEmbeddings ?? true
      ? this.wte.weight
      : this.normalParam("lm_head.weight", [cfg.vocabSize, cfg.dModel], 0.02);
  }

  /** Logits [B, T, vocab] for i32 tokens [B, T]. */
  forward(tokens: Tensor): Tensor {
    const t = tokens.shape[1];
    if (tokens.rank !== 2 || t > this.cfg.contextLength) {
      throw new Error(`GPT: tokens ${tokens.describe()} must be [batch, T] with T <= ${this.cfg.contextLength}`);
    }
    let x = this.wte.forward(tokens);
    if (this.wpe) x = add(x, slice(this.wpe.weight, [0, 0], [t, this.cfg.dModel]));
    for (const block of this.#blocks) x = block.forward(x);
    return matmul(this.#lnF.forward(x), this.#head, { transB: true });
  }

  /** Mean next-token cross-entropy of `tokens` predicting `targets` (both i32 [B, T]). */
  loss(tokens: Tensor, targets: Tensor): Tensor {
    return crossEntropy(this.forward(tokens), targets);
  }
}
