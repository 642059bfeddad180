/**
 * Worker entry of the CPU thread pool (kernels/cpu_pool.ts): instantiates the
 * kernel module over the shared memory, then loops on the control block,
 * computing its fixed chunk of each job. It never returns to its event loop
 * while the pool is open; it leaves the loop on a stop job.
 *
 * @module
 */
import { workerData } from "node:worker_threads";
import { Ctl, MAX_ARGS, Op, partition, spinWhile, State, type WorkerInit } from "./cpu_pool.ts";

const { id, workers, control, memory, module, spinMs } = workerData as WorkerInit;
const ctl = new Int32Array(control);
const args = new Float64Array(control, Ctl.ARGS_BYTE, MAX_ARGS);
const err = new Uint16Array(control, Ctl.ERR_BYTE, Ctl.ERR_CAP);

/** Claims the error slot for this job (first failure wins) and writes `text` there. */
function reportError(text: string): void {
  if (Atomics.compareExchange(ctl, Ctl.ERR_ID, 0, id) !== 0) return;
  const n = Math.min(text.length, Ctl.ERR_CAP);
  for (let i = 0; i < n; i++) err[i] = text.charCodeAt(i);
  Atomics.store(ctl, Ctl.ERR_LEN, n);
}

/** Runs jobs until a stop job. Failures of a job are reported and the loop goes on; anything else escapes. */
function serve(fns: ((...a: number[]) => unknown)[]): void {
  // SEQ starts at 0 and the first job waits for every worker to start, but close() may already have sent a stop.
  let seen = 0;
  for (;;) {
    let seq = spinWhile(ctl, Ctl.SEQ, (v) => v === seen, spinMs);
    while (seq === seen) {
      Atomics.wait(ctl, Ctl.SEQ, seen);
      seq = Atomics.load(ctl, Ctl.SEQ);
    }
    seen = seq;
    const f = ctl[Ctl.FN];
    if (f === Op.STOP) return;
    if (f === Op.CRASH) throw new Error("crash requested by crashWorkersForTesting");

    const [start, end] = partition(ctl[Ctl.ITEMS], workers, id);
    if (end > start) {
      try {
        fns[f](...args.subarray(0, ctl[Ctl.NARGS]), start, end);
      } catch (e) {
        reportError(String(e));
      }
    }
    if (Atomics.sub(ctl, Ctl.PENDING, 1) === 1) Atomics.notify(ctl, Ctl.PENDING);
  }
}

let started = false;
try {
  const instance = new WebAssembly.Instance(module, { env: { memory } });
  const fns = WebAssembly.Module.exports(module).filter((e) => e.kind === "function")
    .map((e) => instance.exports[e.name] as (...a: number[]) => unknown);
  Atomics.store(ctl, Ctl.STATE + id, State.READY);
  started = true;
  Atomics.add(ctl, Ctl.STARTED, 1);
  Atomics.notify(ctl, Ctl.STARTED);
  serve(fns);
  Atomics.store(ctl, Ctl.STATE + id, State.STOPPED);
} catch (e) {
  // Fatal for this worker: leave the reason where the main thread looks, mark it dead and wake the main thread.
  reportError(String(e));
  Atomics.store(ctl, Ctl.STATE + id, State.DEAD);
  if (!started) Atomics.add(ctl, Ctl.STARTED, 1);
  Atomics.notify(ctl, Ctl.STARTED);
  Atomics.notify(ctl, Ctl.PENDING);
}
