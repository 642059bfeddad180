/**
 * A fork-join thread pool for synchronous CPU kernels. Every participant (the
 * main thread plus `workers - 1` worker threads) holds its own instance of one
 * WebAssembly module over one shared `WebAssembly.Memory`; {@link CpuPool.run}
 * splits a range of items (rows of a matmul, ...) into fixed contiguous chunks,
 * runs them in parallel and returns only when all are written, so callers stay
 * synchronous.
 *
 * Results never depend on the worker count as long as the wasm function
 * computes each item on its own: the split only decides who computes an item,
 * never how.
 *
 * Threads are `node:worker_threads` workers rather than web `Worker`s: in Deno
 * 2.9 only they have `unref()`, so a forgotten pool does not keep the process
 * alive (a live web Worker always does). Neither kind's `terminate()` stops a
 * thread that is busy or blocked in `Atomics.wait`, so {@link CpuPool.close}
 * first asks the workers' loops to return.
 *
 * @module
 */
import { Worker } from "node:worker_threads";

/** Most participants (main thread included) a pool may have. */
export const MAX_WORKERS = 64;
/** Most arguments (before the item range) a {@link CpuPool.run} call may pass. */
export const MAX_ARGS = 16;
/** Environment variable that overrides the default worker count. */
export const WORKERS_ENV = "LOWP_CPU_WORKERS";

const ARGS_BYTE = (8 + MAX_WORKERS) * 4;
const ERR_BYTE = ARGS_BYTE + MAX_ARGS * 8;
const ERR_CAP = 1024;

/**
 * @internal Layout of the control block, a SharedArrayBuffer of {@link Ctl.BYTES} bytes shared with the
 * workers (kernels/cpu_worker.ts). Int32 words, all accessed with Atomics except where noted:
 *
 * | word | name | meaning |
 * | ---- | ---- | ------- |
 * | 0 | SEQ | job number; bumped (seq-cst) after the job's fields are written, workers wait for it to change |
 * | 1 | FN | index of the job's function among the module's function exports, or an {@link Op} (plain) |
 * | 2 | ITEMS | the job's item count (plain) |
 * | 3 | NARGS | the job's argument count (plain) |
 * | 4 | PENDING | workers that have not finished the job; the main thread waits for 0 |
 * | 5 | STARTED | workers that left the starting state (ready or dead) |
 * | 6 | ERR_ID | 0, or the id of the first worker that failed the job (claimed with compareExchange) |
 * | 7 | ERR_LEN | length of the error text, in UTF-16 units |
 * | 8 + id | STATE | worker `id`'s {@link State} |
 *
 * Then the job's args, f64 (any JS number survives), at byte {@link Ctl.ARGS_BYTE}, and the error text
 * (UTF-16) at byte {@link Ctl.ERR_BYTE}.
 */
export const Ctl = {
  SEQ: 0,
  FN: 1,
  ITEMS: 2,
  NARGS: 3,
  PENDING: 4,
  STARTED: 5,
  ERR_ID: 6,
  ERR_LEN: 7,
  STATE: 8,
  ARGS_BYTE: ARGS_BYTE,
  ERR_BYTE: ERR_BYTE,
  ERR_CAP: ERR_CAP,
  BYTES: ERR_BYTE + ERR_CAP * 2,
} as const;

/** @internal A worker's state word. */
export const State = { STARTING: 0, READY: 1, STOPPED: 2, DEAD: 3 } as const;
/** @internal Control jobs, in place of a function index. */
export const Op = { STOP: -1, CRASH: -2 } as const;

/** @internal What the worker entry receives as `workerData`. */
export interface WorkerInit {
  /** Participant id, 1 to workers - 1 (the main thread is 0). */
  readonly id: number;
  /** Number of participants, main thread included. */
  readonly workers: number;
  /** The control block. */
  readonly control: SharedArrayBuffer;
  /** The shared memory, imported as `env.memory`. */
  readonly memory: WebAssembly.Memory;
  /** The compiled kernel module. */
  readonly module: WebAssembly.Module;
  /** How long to poll SEQ after a job before parking (0 when the pool has more threads than cores). */
  readonly spinMs: number;
}

/** Options of {@link createPool}. */
export interface PoolOptions {
  /**
   * Participants, main thread included (1 to {@link MAX_WORKERS}). Default: {@link defaultWorkerCount}, or 1
   * without read permission on the worker entry (asking for more than 1 then throws).
   */
  readonly workers?: number;
  /** Shared memory (`shared: true`) that the module imports as `env.memory`. */
  readonly memory: WebAssembly.Memory;
  /** Module whose exported functions take `(...args, itemStart, itemEnd)`; it may import only `env.memory`. */
  readonly module: WebAssembly.Module;
  /** How long the first {@link CpuPool.run} waits for the workers to start; default 30000 ms. */
  readonly startTimeoutMs?: number;
}

/** A fork-join pool over one wasm module and one shared memory. */
export interface CpuPool {
  /** Participants, main thread included (1: everything runs on the main thread, no threads exist). */
  readonly workers: number;
  /** True once {@link CpuPool.close} ran (or a worker died). */
  readonly closed: boolean;
  /**
   * Runs exported function `fn` over items `[0, items)`: participant `p` of
   * `P` calls `fn(...args, start, end)` on its chunk from {@link partition}
   * (the main thread takes chunk 0; an empty chunk is skipped). Returns when
   * every participant is done.
   *
   * If `fn` throws or traps anywhere, `run` throws an Error naming `fn`, the
   * participant and its item range, once all participants finished; the pool
   * stays usable (the job's outputs are unspecified). If a worker died, the
   * pool closes itself and `run` throws.
   */
  run(fn: string, args: readonly number[], items: number): void;
  /** Stops the workers and releases their threads; idempotent. `run` throws afterwards. */
  close(): void;
}

/**
 * Chunk `[start, end)` of participant `index` of `participants` over `items`
 * items: contiguous, in participant order, sizes differing by at most one.
 */
export function partition(items: number, participants: number, index: number): [number, number] {
  return [Math.floor(items * index / participants), Math.floor(items * (index + 1) / participants)];
}

/**
 * Parses a worker count as given in {@link WORKERS_ENV}: undefined or blank
 * gives `fallback`; otherwise a whole number from 1 to {@link MAX_WORKERS};
 * anything else throws (a typo should not silently change the thread count).
 */
export function parseWorkerCount(value: string | undefined, fallback: number): number {
  const text = value?.trim() ?? "";
  if (text === "") return fallback;
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= MAX_WORKERS)) {
    throw new RangeError(`${WORKERS_ENV} must be a whole number from 1 to ${MAX_WORKERS}, got "${value}"`);
  }
  return n;
}

let cachedDefault: number | undefined;

/**
 * Default participant count: `min(2, navigator.hardwareConcurrency)`,
 * overridden by {@link WORKERS_ENV}. Read once per process; without env
 * permission the variable is ignored (queried first, so it never prompts).
 */
export function defaultWorkerCount(): number {
  if (cachedDefault === undefined) {
    const fallback = Math.max(1, Math.min(2, navigator.hardwareConcurrency || 1));
    const granted = Deno.permissions.querySync({ name: "env", variable: WORKERS_ENV }).state === "granted";
    cachedDefault = parseWorkerCount(granted ? Deno.env.get(WORKERS_ENV) : undefined, fallback);
  }
  return cachedDefault;
}

const WORKER_URL = new URL("./cpu_worker.ts", import.meta.url);

/**
 * Whether worker threads can start: `node:worker_threads` (unlike a web Worker) needs read permission on its
 * entry file, else `new Worker` throws. Queried, so that it never prompts.
 */
function canStartWorkers(): boolean {
  return WORKER_URL.protocol === "file:" &&
    Deno.permissions.querySync({ name: "read", path: WORKER_URL }).state === "granted";
}

/**
 * Creates a pool: instantiates `module` on the main thread and starts
 * `workers - 1` worker threads that instantiate it over the same memory.
 * Synchronous: workers start in the background and the first
 * {@link CpuPool.run} waits for them. The threads are unref'd, so a pool that
 * is never closed does not keep the process alive; still call
 * {@link CpuPool.close} to free them (and in tests, for the sanitizers).
 */
export function createPool(options: PoolOptions): CpuPool {
  let workers = options.workers ?? defaultWorkerCount();
  if (!Number.isInteger(workers) || workers < 1 || workers > MAX_WORKERS) {
    throw new RangeError(`cpu pool: workers must be a whole number from 1 to ${MAX_WORKERS}, got ${workers}`);
  }
  if (!(options.memory.buffer instanceof SharedArrayBuffer)) {
    throw new TypeError("cpu pool: memory must be a shared WebAssembly.Memory ({ shared: true })");
  }
  if (workers > 1 && !canStartWorkers()) {
    // Threads change only the speed, never the bits: degrade the default quietly, refuse an explicit count.
    if (options.workers !== undefined) {
      throw new Error(
        `cpu pool: worker threads need read access to ${WORKER_URL.href} (--allow-read); or use workers: 1`,
      );
    }
    workers = 1;
  }
  return new Pool(workers, options);
}

/** Test hook: makes every worker of `pool` die as if from an unexpected error; the next `run` must report it. */
export function crashWorkersForTesting(pool: CpuPool): void {
  if (!(pool instanceof Pool)) throw new TypeError("not a pool from createPool");
  pool.crashForTesting();
}

/**
 * How long the main thread polls PENDING before parking, and a worker polls SEQ after a job. A worker
 * finishing within the first is seen without a futex round trip (~30-50 µs on the 2-vCPU dev VM), and
 * kernels issued back to back (a training step issues many, with a little JS between them) start in ~1 µs.
 * Short, so that an idle worker soon stops holding a core. No spinning with more threads than cores: a
 * spinning thread would take the core from the one it waits for.
 */
const SPIN_MS = { main: 0.1, worker: 0.2 };

class Pool implements CpuPool {
  readonly workers: number;
  closed = false;
  readonly #fns: ((...args: number[]) => unknown)[];
  readonly #index: Map<string, number>;
  readonly #ctl: Int32Array;
  readonly #args: Float64Array;
  readonly #err: Uint16Array;
  readonly #threads: Worker[] = [];
  readonly #startTimeoutMs: number;
  readonly #spinMs: number;
  #ready: boolean;
  /** Worker 'error' events; delivered only when the main thread's event loop gets to run. */
  readonly #threadErrors: string[] = [];

  constructor(workers: number, options: PoolOptions) {
    const { memory, module } = options;
    this.workers = workers;
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    // Function exports in module order: workers derive the same list, so a job names its function by index.
    const names = WebAssembly.Module.exports(module).filter((e) => e.kind === "function").map((e) => e.name);
    this.#fns = names.map((name) => instance.exports[name] as (...args: number[]) => unknown);
    this.#index = new Map(names.map((name, i) => [name, i]));
    const control = new SharedArrayBuffer(Ctl.BYTES);
    this.#ctl = new Int32Array(control);
    this.#args = new Float64Array(control, Ctl.ARGS_BYTE, MAX_ARGS);
    this.#err = new Uint16Array(control, Ctl.ERR_BYTE, Ctl.ERR_CAP);
    this.#startTimeoutMs = options.startTimeoutMs ?? 30_000;
    this.#ready = workers === 1;
    const oversubscribed = workers > navigator.hardwareConcurrency;
    this.#spinMs = oversubscribed ? 0 : SPIN_MS.main;
    const spinMs = oversubscribed ? 0 : SPIN_MS.worker;
    for (let id = 1; id < workers; id++) {
      const workerData: WorkerInit = { id, workers, control, memory, module, spinMs };
      const thread = new Worker(WORKER_URL, { workerData });
      thread.on("error", (e: unknown) => this.#threadErrors.push(`worker ${id}: ${e}`));
      thread.unref();
      this.#threads.push(thread);
    }
  }

  run(fn: string, args: readonly number[], items: number): void {
    if (this.closed) throw new Error(`cpu pool: run("${fn}") on a closed pool`);
    const f = this.#index.get(fn);
    if (f === undefined) throw new TypeError(`cpu pool: the module exports no function "${fn}"`);
    if (args.length > MAX_ARGS) throw new RangeError(`cpu pool: ${fn}: ${args.length} args (at most ${MAX_ARGS})`);
    if (!Number.isInteger(items) || items < 0 || items > 0x7fffffff) {
      throw new RangeError(`cpu pool: ${fn}: items must be a whole number in [0, 2^31), got ${items}`);
    }
    const [start, end] = partition(items, this.workers, 0);
    let mainError: unknown;
    if (this.workers > 1) this.#publish(f, args, items);
    try {
      if (end > start) this.#fns[f](...args, start, end);
    } catch (e) {
      mainError = e;
    }
    if (this.workers === 1) {
      if (mainError !== undefined) throw jobError(fn, 0, start, end, String(mainError), mainError);
      return;
    }
    // Wait for every worker even if our chunk failed: the next job must not overlap this one.
    this.#awaitWorkers(fn);
    if (mainError !== undefined) throw jobError(fn, 0, start, end, String(mainError), mainError);
    const failed = Atomics.load(this.#ctl, Ctl.ERR_ID);
    if (failed !== 0) {
      const [s, e] = partition(items, this.workers, failed);
      throw jobError(fn, failed, s, e, this.#errorText());
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.#threads.length === 0) return;
    // terminate() alone cannot stop a thread blocked in Atomics.wait: ask the loops to return first.
    this.#signal(Op.STOP);
    for (const thread of this.#threads) thread.terminate();
  }

  /** See {@link crashWorkersForTesting}: returns once every worker is dead, so no later job can overtake it. */
  crashForTesting(): void {
    if (this.closed || this.workers === 1) return;
    if (!this.#ready) this.#awaitStart();
    this.#signal(Op.CRASH);
    const deadline = performance.now() + 10_000;
    for (let id = 1; id < this.workers; id++) {
      while (Atomics.load(this.#ctl, Ctl.STATE + id) !== State.DEAD && performance.now() < deadline) {
        Atomics.wait(this.#ctl, Ctl.PENDING, Atomics.load(this.#ctl, Ctl.PENDING), 10);
      }
    }
  }

  /** Writes a job into the control block and wakes the workers. */
  #publish(f: number, args: readonly number[], items: number): void {
    if (!this.#ready) this.#awaitStart();
    const ctl = this.#ctl;
    ctl[Ctl.FN] = f;
    ctl[Ctl.ITEMS] = items;
    ctl[Ctl.NARGS] = args.length;
    for (let i = 0; i < args.length; i++) this.#args[i] = args[i];
    ctl[Ctl.ERR_ID] = 0;
    Atomics.store(ctl, Ctl.PENDING, this.workers - 1);
    // The seq-cst add publishes the plain writes above to every worker that reads the new SEQ.
    Atomics.add(ctl, Ctl.SEQ, 1);
    Atomics.notify(ctl, Ctl.SEQ);
  }

  /** Broadcasts a control job to every worker without waiting. */
  #signal(op: number): void {
    this.#ctl[Ctl.FN] = op;
    this.#ctl[Ctl.ITEMS] = 0;
    this.#ctl[Ctl.ERR_ID] = 0;
    Atomics.add(this.#ctl, Ctl.SEQ, 1);
    Atomics.notify(this.#ctl, Ctl.SEQ);
  }

  /** Blocks until every worker left the starting state; throws if one died or some did not start in time. */
  #awaitStart(): void {
    const ctl = this.#ctl;
    const deadline = performance.now() + this.#startTimeoutMs;
    for (let n; (n = Atomics.load(ctl, Ctl.STARTED)) < this.workers - 1;) {
      const left = deadline - performance.now();
      if (left <= 0) this.#fail(`${this.workers - 1 - n} worker(s) did not start within ${this.#startTimeoutMs} ms`);
      Atomics.wait(ctl, Ctl.STARTED, n, Math.min(left, 1000));
    }
    this.#checkAlive("starting");
    this.#ready = true;
  }

  /**
   * Blocks until PENDING reaches 0: a short spin, then parking with a 1 s timeout. A dying worker wakes us
   * (it notifies PENDING), and the state check runs on every wake-up, so a dead worker is reported, not awaited.
   */
  #awaitWorkers(fn: string): void {
    const ctl = this.#ctl;
    spinWhile(ctl, Ctl.PENDING, (v) => v !== 0, this.#spinMs);
    for (let p; (p = Atomics.load(ctl, Ctl.PENDING)) !== 0;) {
      this.#checkAlive(`running "${fn}"`);
      Atomics.wait(ctl, Ctl.PENDING, p, 1000);
    }
  }

  #checkAlive(what: string): void {
    for (let id = 1; id < this.workers; id++) {
      if (Atomics.load(this.#ctl, Ctl.STATE + id) === State.DEAD) {
        this.#fail(`worker ${id} died while ${what}: ${this.#errorText()}`);
      }
    }
  }

  #fail(message: string): never {
    const events = this.#threadErrors.length > 0 ? ` (${this.#threadErrors.join("; ")})` : "";
    this.close();
    throw new Error(`cpu pool: ${message}${events}; the pool is closed`);
  }

  #errorText(): string {
    const n = Math.min(Atomics.load(this.#ctl, Ctl.ERR_LEN), Ctl.ERR_CAP);
    return String.fromCharCode(...this.#err.subarray(0, n));
  }
}

/**
 * @internal Polls `ctl[index]` while `busy(value)` holds, for at most `ms`; returns the last value read.
 * Reads the clock only every 64 loads: a load is ~6 ns, `performance.now()` several times that.
 */
export function spinWhile(ctl: Int32Array, index: number, busy: (v: number) => boolean, ms: number): number {
  const t0 = performance.now();
  let v = Atomics.load(ctl, index);
  for (let i = 1; busy(v); i++) {
    if ((i & 63) === 0 && performance.now() - t0 > ms) break;
    v = Atomics.load(ctl, index);
  }
  return v;
}

function jobError(fn: string, id: number, start: number, end: number, text: string, cause?: unknown): Error {
  const where = id === 0 ? "the main thread" : `worker ${id}`;
  return new Error(`cpu pool: ${fn} failed on ${where} for items [${start}, ${end}): ${text}`, { cause });
}
