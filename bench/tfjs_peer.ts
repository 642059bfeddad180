/**
 * TensorFlow.js's WebAssembly backend (XNNPACK kernels) as an in-process peer for the CPU matmul:
 * `tf.matMul` of square f32 matrices, timed like bench/matmul.ts (batches of `perSync` matmuls grown to the
 * target time; median and best of `reps`). Bench-only: nothing in the engine imports it.
 *
 * The backend's .wasm files are loaded from the installed npm package (`setWasmPaths` with their paths
 * under node_modules), so nothing is downloaded at run time; if the package or its files are missing, or the
 * backend does not start, the peer returns one `skipped` line with the reason.
 *
 * @module
 */
import { defaultWorkerCount } from "@lowp/kernels";
import type { MatmulTiming } from "./matmul.ts";
import { type Line, median, messageOf, round } from "./report.ts";

const VERSION = "4.22.0";
const FILES = ["tfjs-backend-wasm.wasm", "tfjs-backend-wasm-simd.wasm", "tfjs-backend-wasm-threaded-simd.wasm"];

/** Paths of the backend's .wasm files inside node_modules, or throws why they are not there. */
async function wasmFiles(): Promise<Record<string, string>> {
  const url = new URL(import.meta.resolve(`@tensorflow/tfjs-backend-wasm/dist/${FILES[0]}`));
  if (url.protocol !== "file:") throw new Error(`the .wasm files resolve to ${url.href}, not a local file`);
  const paths: Record<string, string> = {};
  for (const file of FILES) {
    const path = new URL(file, url).pathname;
    await Deno.stat(path); // throws NotFound before tfjs would try to fetch it
    paths[file] = path;
  }
  return paths;
}

/** Times `tf.matMul` at each size on the tfjs wasm backend; lines as bench/main.ts prints them. */
export async function runTfjsWasmPeer(
  sizes: readonly number[],
  t: MatmulTiming,
  wantThreads: number = defaultWorkerCount(),
): Promise<Line[]> {
  const head = { bench: "matmul_f32", backend: "tfjs-wasm" };
  let tf: typeof import("@tensorflow/tfjs-core");
  let threads = 1;
  try {
    const paths = await wasmFiles();
    tf = await import("@tensorflow/tfjs-core");
    const wasm = await import("@tensorflow/tfjs-backend-wasm");
    wasm.setWasmPaths(paths);
    wasm.setThreadsCount(wantThreads); // takes effect only where the threaded build loads (see `threads`)
    if (!(await tf.setBackend("wasm"))) throw new Error("tf.setBackend('wasm') failed");
    await tf.ready();
    threads = wasm.getThreadsCount();
  } catch (e) {
    return [{ ...head, skipped: `tfjs wasm backend unavailable: ${messageOf(e)}` }];
  }
  const simd = await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT");
  const adapter = `tfjs-backend-wasm ${VERSION} (XNNPACK${simd ? ", SIMD" : ""}, ${threads} thread${
    threads > 1 ? "s" : ""
  })`;
  const lines: Line[] = [];
  for (const n of sizes) {
    const a = tf.randomNormal([n, n], 0, 1, "float32", 7), b = tf.randomNormal([n, n], 0, 1, "float32", 8);
    // The wasm backend computes at the call; reading one element at the end makes sure, at negligible cost.
    const batch = (count: number) => {
      const t0 = performance.now();
      for (let i = 0; i < count - 1; i++) tf.tidy(() => void tf.matMul(a, b));
      tf.tidy(() => void tf.slice(tf.matMul(a, b), [0, 0], [1, 1]).dataSync());
      return (performance.now() - t0) / 1000;
    };
    try {
      batch(1); // warm-up
      let perSync = 1;
      for (;;) {
        const s = batch(perSync);
        if (s >= t.targetS || perSync >= t.maxPerSync) break;
        perSync = Math.min(t.maxPerSync, perSync * Math.max(2, Math.ceil(t.targetS / Math.max(s, 1e-4) / 2)));
      }
      const times = Array.from({ length: t.reps }, () => batch(perSync));
      const flops = 2 * n ** 3 * perSync;
      lines.push({
        ...head,
        adapter,
        threads,
        size: n,
        value: round(flops / median(times) / 1e9),
        unit: "GFLOP/s",
        best: round(flops / Math.min(...times) / 1e9),
        per_sync: perSync,
        reps: t.reps,
        ms_per_matmul: round((median(times) * 1000) / perSync),
      });
    } catch (e) {
      lines.push({ ...head, adapter, size: n, error: messageOf(e) });
    } finally {
      a.dispose();
      b.dispose();
    }
  }
  return lines;
}
