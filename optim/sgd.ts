/**
 * SGD with optional (Nesterov) momentum and decoupled weight decay,
 * following PyTorch's `torch.optim.SGD` update rule.
 *
 * @module
 */
import { add, mul, noGrad, sub, type Tensor, tidy } from "@lowp/core";
import {
  checkGradScale,
  decayMatrices,
  type DecayRule,
  loadSlot,
  namedParams,
  type Optimizer,
  type ParamList,
  stateLike,
  type StepOptions,
} from "./optimizer.ts";

/** Options for {@link SGD}. */
export interface SGDOptions {
  /** Momentum factor μ (default 0: plain SGD). */
  momentum?: number;
  /** Use Nesterov momentum (needs momentum > 0). */
  nesterov?: boolean;
  /** L2 penalty added to the gradient, as in PyTorch (default 0). */
  weightDecay?: number;
  /** Which parameters get weight decay. */
  decay?: DecayRule;
}

/**
 * `b ← μ·b + g`, `p ← p − lr·(nesterov ? g + μ·b : b)` (PyTorch's form; the
 * first step sets b = g).
 *
 * @example
 * ```ts
 * import { tensor } from "@lowp/core";
 * import { SGD } from "@lowp/optim";
 * const p = tensor([1], { requiresGrad: true });
 * p.grad = tensor([0.5]).keep();
 * new SGD([p], { momentum: 0.9 }).step(0.1); // p = 0.95
 * ```
 */
export class SGD implements Optimizer {
  readonly #params: [string, Tensor][];
  readonly #buffers = new Map<Tensor, Tensor>();
  #steps = 0;
  /**
   * Creates a SGD.
   * @param params parameters to train
   * @param opts momentum and decay
   */
  constructor(params: ParamList, readonly opts: SGDOptions = {}) {
    this.#params = namedParams(params);
    if (opts.nesterov && !(opts.momentum! > 0)) throw new Error("SGD: nesterov needs momentum > 0");
  }
  /** Steps taken. */
  get steps(): number {
    return this.#steps;
  }
  /** Momentum buffers by `name/momentum`. */
  state(): [string, Tensor][] {
    return this.#params.filter(([, p]) => this.#buffers.has(p)).map((
      [n, p],
    ) => [`${n}/momentum`, this.#buffers.get(p)!]);
  }
  /** Restores momentum buffers saved by {@link SGD.state} and the step count. */
  load(state: ReadonlyMap<string, Tensor>, steps: number): void {
    for (const [n, p] of this.#params) {
      loadSlot(this.#buffers, p, state.get(`${n}/momentum`), `${n}/momentum`);
    }
    this.#steps = steps;
  }

  /** One update with learning rate `lr`; gradients are multiplied by `opts.gradScale` first when given. */
  step(lr: number, opts: StepOptions = {}): void {
    const { momentum = 0, nesterov = false, weightDecay = 0, decay = decayMatrices } = this.opts;
    checkGradScale(opts.gradScale);
    noGrad(() =>
      tidy(() => {
        for (const [name, p] of this.#params) {
          if (!p.grad) continue;
          const grad = opts.gradScale ? mul(p.grad, opts.gradScale) : p.grad;
          let g = weightDecay && decay(name, p) ? add(grad, mul(p, weightDecay)) : grad;
          if (momentum > 0) {
            const prev = this.#buffers.get(p);
            const buf = prev ? prev.assign(add(mul(prev, momentum), g)) : stateLike(p).assign(g);
            this.#buffers.set(p, buf);
            g = nesterov ? add(g, mul(buf, momentum)) : buf;
          }
          p.assign(sub(p, mul(g, lr)));
        }
      })
    );
    this.#steps++;
  }
}
