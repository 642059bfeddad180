/**
 * Modules: a tree of named layers, PyTorch style. Every parameter gets its
 * full dotted name (HF layout where one exists) at construction, and its
 * initial values come from the Philox stream keyed by (seed, hash(name)): the
 * same seed gives the same weights on every backend, whatever order the
 * modules are built in.
 *
 * The tree is open: {@link Module.namedModules} lists it, {@link Module.setModule}
 * swaps a child (a quantized or LoRA layer for a `Linear`), {@link Module.freeze}
 * stops gradients to parameters, and {@link Module.onForward} captures a
 * module's inputs and outputs (calibration for GPTQ/AWQ).
 *
 * @module
 */
import { full, randn, type RandomKey } from "../creation.ts";
import type { Disposable } from "../runtime.ts";
import type { Tensor } from "../tensor.ts";
import type { KVCache } from "./kv_cache.ts";

/** Shared construction context: the seed and the backend-independent init rules. */
export interface InitContext {
  /** Seed for every parameter's Philox stream. */
  readonly seed: number;
}

/**
 * What a forward pass may need besides its input: the training step and an
 * RNG seed (so stochastic rounding and random Hadamard signs differ per step
 * and per layer, yet replay exactly on resume; see {@link randomKey}),
 * training vs evaluation, and a KV cache for incremental decoding.
 */
export interface ForwardContext {
  /** Training step index (default 0). */
  readonly step?: number;
  /** Seed of every random draw inside the forward pass (default 0). */
  readonly seed?: number;
  /** True while training (default false: evaluation). */
  readonly training?: boolean;
  /** Keys and values of earlier positions; attention appends this call's to it. */
  readonly cache?: KVCache;
  /** Absolute position of the first input token (default: the cache's length, else 0). */
  readonly position?: number;
}

/**
 * The Philox key of the draw `role` (e.g. `weight`, `grad_output`) of module
 * `name` at the context's step: the stream hashes (name, role, step), so every
 * layer, role and step draws different words, and a resumed run draws the same.
 */
export function randomKey(ctx: ForwardContext | undefined, name: string, role: string): RandomKey {
  return { seed: ctx?.seed ?? 0, stream: streamOf(`${name}/${role}@${ctx?.step ?? 0}`), offset: 0 };
}

/** Called after a module's forward with its full name, input and output. */
export type ForwardHook = (name: string, input: Tensor, output: Tensor) => void;

/** FNV-1a hash of a parameter name: its Philox stream id. */
export function streamOf(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * A name pattern: a RegExp, or a dotted glob where `*` matches within one
 * segment and `**` across segments. A pattern matches a name when it matches
 * the whole name or a leading run of its segments, so `transformer.h.0` covers
 * every parameter of block 0 and `transformer.h.*.mlp.*` every MLP projection.
 */
export type NamePattern = string | RegExp;

const globCache = new Map<string, RegExp>();

/** True when `pattern` ({@link NamePattern}) matches `name` or one of its dotted prefixes. */
export function matchesName(pattern: NamePattern, name: string): boolean {
  if (pattern instanceof RegExp) return pattern.test(name);
  let re = globCache.get(pattern);
  if (!re) {
    const body = pattern.split(/(\*\*|\*)/).map((part) =>
      part === "**" ? ".*" : part === "*" ? "[^.]*" : part.replace(/[.+?^${}()|[\]\\]/g, "\\$&")
    ).join("");
    re = new RegExp(`^${body}(\\..*)?$`);
    globCache.set(pattern, re);
  }
  return re.test(name);
}

/** Filter of {@link Module.namedParameters}. */
export interface ParameterFilter {
  /** true: only trainable parameters; false: only frozen ones; absent: all. */
  readonly trainable?: boolean;
}

/** Base class: holds parameters and child modules under dotted names. */
export abstract class Module {
  readonly #params = new Map<string, Tensor>();
  readonly #buffers = new Map<string, Tensor>();
  readonly #children = new Map<string, Module>();
  readonly #hooks = new Set<ForwardHook>();
  readonly #owned = new Set<Disposable>();

  /** This module's full dotted name ("" for the root). */
  readonly name: string;
  /** The shared init context. */
  readonly init: InitContext;
  /**
   * Creates a Module.
   * @param name this module's full dotted name ("" for the root)
   * @param init shared init context
   */
  constructor(name: string, init: InitContext) {
    this.name = name;
    this.init = init;
  }

  /** The module's computation; parents run children through {@link Module.call} so hooks see it. */
  abstract forward(x: Tensor, ctx?: ForwardContext): Tensor;

  /** Runs {@link Module.forward}, then the forward hooks (PyTorch's `module(x)`). */
  call(x: Tensor, ctx?: ForwardContext): Tensor {
    const y = this.forward(x, ctx);
    for (const hook of this.#hooks) hook(this.name, x, y);
    return y;
  }

  /**
   * Calls `hook(name, input, output)` after every forward of this module;
   * returns a function that removes it.
   */
  onForward(hook: ForwardHook): () => void {
    this.#hooks.add(hook);
    return () => this.#hooks.delete(hook);
  }

  /** Full dotted name of a member of this module. */
  protected qualify(local: string): string {
    return this.name ? `${this.name}.${local}` : local;
  }

  /** Registers a trainable parameter drawn from N(0, std²). */
  protected normalParam(local: string, shape: readonly number[], std: number): Tensor {
    const name = this.qualify(local);
    return this.#register(name, randn(shape, { seed: this.init.seed, stream: streamOf(name) }, std));
  }

  /** Registers a trainable parameter filled with `value`. */
  protected constParam(local: string, shape: readonly number[], value: number): Tensor {
    return this.#register(this.qualify(local), full(shape, value));
  }

  /** Registers a child module (its name must extend this one's) so it is listed, found and swappable. */
  protected child<M extends Module>(m: M): M {
    const prefix = this.name ? `${this.name}.` : "";
    if (!m.name.startsWith(prefix) || m.name === prefix) {
      throw new Error(`module '${this.name}': child '${m.name}' must be named '${prefix}<local>'`);
    }
    this.#children.set(m.name.slice(prefix.length), m);
    return m;
  }

  /** The current child at local name `local` (after any {@link Module.setModule}). */
  protected sub(local: string): Module {
    const m = this.#children.get(local);
    if (!m) throw new Error(`module '${this.name}' has no child '${local}'`);
    return m;
  }

  #register(name: string, t: Tensor): Tensor {
    t.name = name;
    t.keep().requireGrad();
    this.#params.set(name, t);
    return t;
  }

  /**
   * Registers (or replaces) `t` as a trainable parameter under `local`, PyTorch's `register_parameter`: for
   * parameters that a package above `core` adds to an existing module (e.g. the learned quantizer steps of
   * LSQ on a `Linear`). It is named `<module>.<local>`, kept past scopes, marked as requiring gradients and
   * listed by {@link Module.namedParameters} (after the module's own), so checkpoints and optimizers built
   * afterwards include it. A parameter it replaces is disposed. Returns `t`.
   */
  registerParameter(local: string, t: Tensor): Tensor {
    const name = this.qualify(local);
    const old = this.#params.get(name);
    if (old && old !== t) old.dispose();
    return this.#register(name, t);
  }

  /** The parameter registered under `local` (own, not a child's), or undefined. */
  parameter(local: string): Tensor | undefined {
    return this.#params.get(this.qualify(local));
  }

  /**
   * Removes the parameter under `local` (own, not a child's) and returns it, undisposed; undefined when there
   * is none. Optimizers built before keep their reference: build them after changing the parameters.
   */
  removeParameter(local: string): Tensor | undefined {
    const name = this.qualify(local);
    const t = this.#params.get(name);
    this.#params.delete(name);
    return t;
  }

  /**
   * Registers (or replaces) non-trainable state under `local`, PyTorch's
   * `register_buffer`: e.g. the amax history of delayed scaling. Buffers are
   * kept past scopes, listed by {@link Module.namedBuffers} and saved with
   * checkpoints. Returns the tensor.
   */
  registerBuffer(local: string, t: Tensor): Tensor {
    const name = this.qualify(local);
    const old = this.#buffers.get(name);
    if (old && old !== t) old.dispose();
    t.name = name;
    this.#buffers.set(name, t.keep());
    return t;
  }

  /** The buffer registered under `local`, or undefined. */
  buffer(local: string): Tensor | undefined {
    return this.#buffers.get(this.qualify(local));
  }

  /** Removes the buffer under `local` and returns it, undisposed; undefined when there is none. */
  removeBuffer(local: string): Tensor | undefined {
    const name = this.qualify(local);
    const t = this.#buffers.get(name);
    this.#buffers.delete(name);
    return t;
  }

  /**
   * Registers buffer `name` (a full dotted name, as {@link Module.namedBuffers} lists it) on the module whose
   * name is its longest prefix, e.g. when restoring a checkpoint. Returns the tensor.
   */
  setBuffer(name: string, t: Tensor): Tensor {
    const [, owner] = this.namedModules().reduce((best, [n, m]) =>
      n.length > best[0].length && name.startsWith(`${n}.`) ? [n, m] as [string, Module] : best
    );
    const local = owner.name ? name.slice(owner.name.length + 1) : name;
    return owner.registerBuffer(local, t);
  }

  /** Every buffer with its full name: own first, then each child's, in registration order. */
  namedBuffers(): [string, Tensor][] {
    return [...this.#buffers.entries(), ...[...this.#children.values()].flatMap((c) => c.namedBuffers())];
  }

  /** This module and every descendant with its full name, parents first, in construction order (PyTorch's). */
  namedModules(): [string, Module][] {
    return [[this.name, this], ...[...this.#children.values()].flatMap((c) => c.namedModules())];
  }

  /** The module with full name `name`; throws naming the closest known names. */
  getModule(name: string): Module {
    const found = this.namedModules().find(([n]) => n === name);
    if (!found) throw new Error(unknownModule(this, name));
    return found[1];
  }

  /**
   * Replaces the descendant named `name` with `module`, which must carry the
   * same name (its parameters are then named like the ones it replaces).
   * Returns the module it replaced, whose parameters stay allocated: dispose
   * it when it is no longer needed.
   */
  setModule(name: string, module: Module): Module {
    if (module.name !== name) {
      throw new Error(`setModule: the replacement of '${name}' is named '${module.name}'; build it with that name`);
    }
    for (const [, parent] of this.namedModules()) {
      for (const [local, c] of parent.#children) {
        if (c.name !== name) continue;
        parent.#children.set(local, module);
        return c;
      }
    }
    throw new Error(unknownModule(this, name));
  }

  /**
   * Replaces every descendant whose name matches `pattern` and that `select`
   * accepts with `make(old)`; returns the replaced names (an error when none
   * matched, since a pattern that selects nothing is a mistake).
   */
  replaceModules<M extends Module>(
    pattern: NamePattern,
    select: (m: Module) => m is M,
    make: (old: M) => Module,
  ): string[] {
    const targets = this.namedModules().filter(([n, m]) => n !== this.name && matchesName(pattern, n) && select(m));
    if (!targets.length) throw new Error(`replaceModules: no module matches '${String(pattern)}'`);
    for (const [n, m] of targets) this.setModule(n, make(m as M));
    return targets.map(([n]) => n);
  }

  /**
   * Parameters with their full names: own first, then each child's, in
   * construction order. `{ trainable: true }` lists only those that receive
   * gradients (not frozen), `{ trainable: false }` only the frozen ones.
   */
  namedParameters(filter: ParameterFilter = {}): [string, Tensor][] {
    const all: [string, Tensor][] = [
      ...this.#params.entries(),
      ...[...this.#children.values()].flatMap((c) => c.namedParameters()),
    ];
    return filter.trainable === undefined ? all : all.filter(([, t]) => t.requiresGrad === filter.trainable);
  }

  /** Parameters (as {@link Module.namedParameters}, without names). */
  parameters(filter: ParameterFilter = {}): Tensor[] {
    return this.namedParameters(filter).map(([, t]) => t);
  }

  /** Number of scalars in the parameters the filter selects (default: all). */
  parameterCount(filter: ParameterFilter = {}): number {
    return this.parameters(filter).reduce((n, t) => n + t.size, 0);
  }

  /**
   * Freezes the parameters matching `pattern` (default: all): no gradient is
   * computed or kept for them, and optimizers built from
   * `namedParameters({ trainable: true })` skip them. Returns the frozen names;
   * throws when a pattern matches nothing.
   */
  freeze(pattern?: NamePattern): string[] {
    return this.#setTrainable(pattern, false);
  }

  /** Undoes {@link Module.freeze} for the parameters matching `pattern` (default: all); returns their names. */
  unfreeze(pattern?: NamePattern): string[] {
    return this.#setTrainable(pattern, true);
  }

  #setTrainable(pattern: NamePattern | undefined, trainable: boolean): string[] {
    const hits = this.namedParameters().filter(([n]) => pattern === undefined || matchesName(pattern, n));
    if (!hits.length) {
      throw new Error(`${trainable ? "unfreeze" : "freeze"}: no parameter matches '${String(pattern)}'`);
    }
    for (const [, p] of hits) {
      p.requiresGrad = trainable;
      if (!trainable) {
        p.grad?.dispose();
        p.grad = null;
      }
    }
    return hits.map(([n]) => n);
  }

  /** Drops every parameter's gradient. */
  zeroGrad(): void {
    for (const p of this.parameters()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /**
   * Makes this module release `resource` when the module tree is disposed: state that is neither a parameter
   * nor a buffer, e.g. a frozen base weight held packed by a package above `core`. Returns a function that
   * hands it back (no longer released with the module).
   */
  own(resource: Disposable): () => void {
    this.#owned.add(resource);
    return () => this.#owned.delete(resource);
  }

  /** Frees all parameters, buffers and owned resources of this module and its descendants. */
  dispose(): void {
    for (const p of this.parameters()) p.dispose();
    for (const [, b] of this.namedBuffers()) b.dispose();
    for (const [, m] of this.namedModules()) for (const r of m.#owned) r.dispose();
  }
}

/** "no module 'x'" with the names that share the longest prefix with it. */
function unknownModule(root: Module, name: string): string {
  const names = root.namedModules().map(([n]) => n).filter((n) => n);
  const common = (n: string) => {
    let i = 0;
    while (i < n.length && n[i] === name[i]) i++;
    return i;
  };
  const best = Math.max(0, ...names.map(common));
  const near = names.filter((n) => common(n) === best).slice(0, 6);
  return `no module '${name}'${near.length ? `; nearest: ${near.join(", ")}` : ""}`;
}
