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
import { type ForwardContext, type InitContext, Module } from "./module.ts";

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

/** Rotary position embedding on [B, H, T, hd] at positions `position`.. (HF Llama's rotate-half convention). */
function applyRope(x: Tensor, position: number): Tensor {
  const [t, hd] = x.shape.slice(-2);
  let [cos, sin] = ropeTable(x, position + t, hd);
  if (position > 0) [cos, sin] = [cos, sin].map((table) => slice(table, [position, 0], [t, hd]));
  const [x1, x2] = split(x, [hd / 2, hd / 2], -1);
  return add(mul(x, cos), mul(concat([neg(x2), x1], -1), sin));
}

/** The absolute position of the first token of this call, checked against the context length. */
function startPosition(cfg: GPTConfig, t: number, ctx?: ForwardContext): number {
  const position = ctx?.position ?? ctx?.cache?.length ?? 0;
  if (!Number.isInteger(position) || position < 0 || position + t > cfg.contextLength) {
    throw new Error(
      `GPT: ${t} tokens at position ${position} do not fit the context length ${cfg.contextLength}`,
    );
  }
  return position;
}

/** Causal multi-head self-attention with a fused QKV projection (HF GPT-2 `attn.c_attn`, `attn.c_proj`). */
export class CausalSelfAttention extends Module {
  /**
   * Creates a CausalSelfAttention.
   * @param name dotted name
   * @param init init context
   * @param cfg model config
   * @param outStd init std of c_proj
   */
  constructor(name: string, init: InitContext, readonly cfg: GPTConfig, outStd: number) {
    super(name, init);
    this.child(new Linear(this.qualify("c_attn"), init, cfg.dModel, 3 * cfg.dModel));
    this.child(new Linear(this.qualify("c_proj"), init, cfg.dModel, cfg.dModel, { std: outStd }));
  }
  /**
   * [B, T, D] → [B, T, D]. With `ctx.cache`, the keys and values of earlier
   * positions come from the cache and this call's are appended to it.
   */
  forward(x: Tensor, ctx?: ForwardContext): Tensor {
    const [b, t, d] = x.shape;
    const h = this.cfg.nHeads, hd = d / h;
    const position = ctx?.position ?? ctx?.cache?.lengthOf(this.name) ?? 0;
    // [B, T, 3, H, hd] → [3, B, H, T, hd], then one slice per projection.
    const qkv = permute(reshape(this.sub("c_attn").call(x, ctx), [b, t, 3, h, hd]), [2, 0, 3, 1, 4]);
    const part = (i: number) => reshape(slice(qkv, [i, 0, 0, 0, 0], [1, b, h, t, hd]), [b, h, t, hd]);
    let q = part(0), k = part(1), v = part(2);
    if (this.cfg.position === "rope") [q, k] = [applyRope(q, position), applyRope(k, position)];
    if (ctx?.cache) [k, v] = ctx.cache.append(this.name, k, v);
    const y = attention(q, k, v, { causal: true });
    return this.sub("c_proj").call(reshape(permute(y, [0, 2, 1, 3]), [b, t, d]), ctx);
  }
}

/** Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). */
export class Block extends Module {
  /**
   * Creates a Block.
   * @param name dotted name
   * @param init init context
   * @param cfg model config
   */
  constructor(name: string, init: InitContext, cfg: GPTConfig) {
    super(name, init);
    const outStd = 0.02 / Math.sqrt(2 * cfg.nLayers); // GPT-2's scaled init of residual projections
    this.child(makeNorm(cfg, this.qualify("ln_1"), init));
    this.child(new CausalSelfAttention(this.qualify("attn"), init, cfg, outStd));
    this.child(makeNorm(cfg, this.qualify("ln_2"), init));
    const hidden = Math.round((cfg.mlpRatio ?? 4) * cfg.dModel);
    this.child(new MLP(this.qualify("mlp"), init, cfg.dModel, hidden, { activation: cfg.mlp, outStd }));
  }
  /** [B, T, D] → [B, T, D]. */
  forward(x: Tensor, ctx?: ForwardContext): Tensor {
    const run = (local: string, input: Tensor) => this.sub(local).call(input, ctx);
    const h = add(x, run("attn", run("ln_1", x)));
    return add(h, run("mlp", run("ln_2", h)));
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
    for (let i = 0; i < cfg.nLayers; i++) this.child(new Block(`transformer.h.${i}`, init, cfg));
    this.child(makeNorm(cfg, "transformer.ln_f", init));
    this.#head = cfg.tieEmbeddings ?? true
      ? this.wte.weight
      : this.normalParam("lm_head.weight", [cfg.vocabSize, cfg.dModel], 0.02);
  }

  /**
   * Logits [B, T, vocab] for i32 tokens [B, T]. With `ctx.cache` the tokens
   * continue the cached positions (prefill, then one-token decode steps);
   * `ctx.position` overrides where they start.
   */
  forward(tokens: Tensor, ctx?: ForwardContext): Tensor {
    const t = tokens.shape[1];
    if (tokens.rank !== 2 || tokens.dtype !== "i32") {
      throw new Error(`GPT: tokens ${tokens.describe()} must be i32 [batch, T]`);
    }
    const position = startPosition(this.cfg, t, ctx);
    let x = this.wte.call(tokens, ctx);
    if (this.wpe) x = add(x, slice(this.wpe.weight, [position, 0], [t, this.cfg.dModel]));
    for (let i = 0; i < this.cfg.nLayers; i++) x = this.sub(`transformer.h.${i}`).call(x, ctx);
    return matmul(this.sub("transformer.ln_f").call(x, ctx), this.#head, { transB: true });
  }

  /** Mean next-token cross-entropy of `tokens` predicting `targets` (both i32 [B, T]). */
  loss(tokens: Tensor, targets: Tensor, ctx?: ForwardContext): Tensor {
    return crossEntropy(this.forward(tokens, ctx), targets);
  }
}
