/**
 * Modules: named parameter registries with deterministic initialisation.
 * Every parameter gets its full dotted name (HF layout where one exists) at
 * construction, and its initial values come from the Philox stream keyed by
 * (seed, hash(name)): the same seed gives the same weights on every backend,
 * whatever order the modules are built in.
 *
 * @module
 */
import { full, randn } from "../creation.ts";
import type { Tensor } from "../tensor.ts";

/** Shared construction context: the seed and the backend-independent init rules. */
export interface InitContext {
  /** Seed for every parameter's Philox stream. */
  readonly seed: number;
}

/** FNV-1a hash of a parameter name: its Philox stream id. */
export function streamOf(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** Base class: holds parameters and child modules under dotted names. */
export abstract class Module {
  readonly #params = new Map<string, Tensor>();
  readonly #children: Module[] = [];

  /** This module's dotted name prefix ("" for the root). */
  readonly name: string;
  /** The shared init context. */
  readonly init: InitContext;
  /**
   * Creates a Module.
   * @param name this module's dotted name prefix ("" for the root)
   * @param init shared init context
   */
  constructor(name: string, init: InitContext) {
    this.name = name;
    this.init = init;
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

  /** Registers a child module so its parameters are listed under this one. */
  protected child<M extends Module>(m: M): M {
    this.#children.push(m);
    return m;
  }

  #register(name: string, t: Tensor): Tensor {
    t.name = name;
    t.keep().requireGrad();
    this.#params.set(name, t);
    return t;
  }

  /** All parameters with their full names, in construction order. */
  namedParameters(): [string, Tensor][] {
    return [...this.#params.entries(), ...this.#children.flatMap((c) => c.namedParameters())];
  }

  /** All parameters in construction order. */
  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** Number of trainable scalars. */
  parameterCount(): number {
    return this.parameters().reduce((n, t) => n + t.size, 0);
  }

  /** Drops every parameter's gradient. */
  zeroGrad(): void {
    for (const p of this.parameters()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** Frees all parameters. */
  dispose(): void {
    for (const p of this.parameters()) p.dispose();
  }
}
