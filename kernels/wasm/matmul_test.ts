/**
 * The WebAssembly matmul against the JS reference, its bit-determinism under any split of the work between
 * threads, and the CPU backend's wiring (threshold, LOWP_CPU_KERNELS, no permissions needed).
 *
 * Tolerance. Both paths sum the k terms of an output in order p = 0..k-1 in f32. The reference rounds once
 * per step (f64 `a·b + acc`, exact product, stored to f32: relative error ≤ u' = 2^-24 + 2^-53 even with the
 * double rounding); the kernel rounds the product and then the sum (f32x4.mul, f32x4.add), but its first sum
 * 0 + a0·b0 is exact. Either way each term passes through at most k roundings of relative size ≤ u', so
 * with S = Σ_p |a_p|·|b_p| each path is within γ_k·S of the exact sum, γ_k = k·u'/(1 - k·u') (Higham,
 * recursive summation), and the two differ by at most 2·γ_k·S. The test checks exactly that bound (S in f64);
 * at k = 1 it demands equality, and typical differences are far below it (errors grow like √k, not k).
 */
import assert from "node:assert/strict";
import type { MatmulShape } from "../backend.ts";
import { CpuStorage, createCpuBackend, referenceMatmul, WASM_MATMUL_MIN_MACS } from "../cpu.ts";
import { createPool } from "../cpu_pool.ts";
import { compileKernel, instantiateSgemm, sgemmKernelModule, sgemmModule } from "./loader.ts";
import {
  pooledExecutor,
  sgemmBatchArgs,
  type SgemmExecutor,
  sgemmItemCount,
  singleThreadExecutor,
  wasmMatmul,
} from "./matmul.ts";

/** Deterministic values in [-1, 1) (xorshift32), so failures reproduce. */
function random(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 31 - 1;
  });
}

const shapeOf = (batch: number, m: number, n: number, k: number, transA = false, transB = false, broadcast = "") => ({
  batch,
  m,
  n,
  k,
  transA,
  transB,
  strideA: broadcast.includes("A") ? 0 : m * k,
  strideB: broadcast.includes("B") ? 0 : k * n,
});

function operands(s: MatmulShape, seed: number) {
  const a = random(s.strideA ? s.batch * s.strideA : s.m * s.k, seed);
  const b = random(s.strideB ? s.batch * s.strideB : s.k * s.n, seed + 1);
  return { a, b };
}

/** out of the wasm path with `executor` (default: this thread). */
function viaWasm(s: MatmulShape, a: Float32Array, b: Float32Array, executor?: SgemmExecutor): Float32Array {
  const out = new Float32Array(s.batch * s.m * s.n).fill(NaN); // every element must be written
  wasmMatmul(a, b, out, s, executor);
  return out;
}

/** Checks |wasm - reference| ≤ 2·γ_k·Σ|a||b| for every output (see the module doc). */
function assertWithinBound(s: MatmulShape, a: Float32Array, b: Float32Array, label: string): void {
  const got = viaWasm(s, a, b);
  const want = new Float32Array(got.length);
  referenceMatmul(a, b, want, s);
  const u = 2 ** -24 + 2 ** -53;
  const gamma = (s.k * u) / (1 - s.k * u);
  const { m, n, k } = s;
  for (let bi = 0; bi < s.batch; bi++) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let terms = 0; // Σ|a||b| in f64
        for (let p = 0; p < k; p++) {
          const av = a[bi * s.strideA + (s.transA ? p * m + i : i * k + p)];
          const bv = b[bi * s.strideB + (s.transB ? j * k + p : p * n + j)];
          terms += Math.abs(av * bv);
        }
        const at = (bi * m + i) * n + j;
        const diff = Math.abs(got[at] - want[at]);
        if (!(diff <= 2 * gamma * terms)) {
          assert.fail(
            `${label}: out[${bi}][${i}][${j}] = ${got[at]}, reference ${want[at]}, bound ${2 * gamma * terms}`,
          );
        }
      }
    }
  }
}

const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);
const bitsEqual = (x: Float32Array, y: Float32Array, label: string) => assert.deepEqual(bits(x), bits(y), label);

const SHAPES: [number, number, number][] = [[1, 1, 1], [3, 5, 7], [4, 8, 4], [65, 33, 70], [17, 9, 301], [
  256,
  256,
  256,
]];
const TRANSPOSES: [boolean, boolean][] = [[false, false], [true, false], [false, true], [true, true]];

for (const [m, n, k] of SHAPES) {
  Deno.test(`wasm matmul ${m}x${n}x${k} (all four transposes) is within 2·γ_k·Σ|a||b| of the reference`, () => {
    for (const [transA, transB] of TRANSPOSES) {
      const s = shapeOf(1, m, n, k, transA, transB);
      const { a, b } = operands(s, m * 1000 + n * 10 + k);
      assertWithinBound(s, a, b, `${m}x${n}x${k} transA=${transA} transB=${transB}`);
    }
  });
}

Deno.test("wasm matmul: batches, stride-0 broadcasts and k = 0 / n = 0 edge cases", () => {
  for (const broadcast of ["", "A", "B", "AB"]) {
    for (const [transA, transB] of TRANSPOSES) {
      const s = shapeOf(3, 21, 19, 37, transA, transB, broadcast);
      const { a, b } = operands(s, 42);
      const label = `batch 3, broadcast '${broadcast}', transA=${transA} transB=${transB}`;
      assertWithinBound(s, a, b, label);
      // Each matrix of the batch is bit for bit the same product done alone.
      const all = viaWasm(s, a, b);
      for (let bi = 0; bi < s.batch; bi++) {
        const one = viaWasm(
          { ...s, batch: 1 },
          a.subarray(bi * s.strideA, bi * s.strideA + s.m * s.k),
          b.subarray(bi * s.strideB, bi * s.strideB + s.k * s.n),
        );
        bitsEqual(all.subarray(bi * s.m * s.n, (bi + 1) * s.m * s.n), one, `${label}: matrix ${bi}`);
      }
    }
  }
  const empty = shapeOf(2, 5, 3, 0);
  assert.deepEqual(Array.from(viaWasm(empty, new Float32Array(0), new Float32Array(0))), new Array(30).fill(0));
  assert.equal(viaWasm(shapeOf(2, 5, 0, 4), random(40, 1), new Float32Array(0)).length, 0);
});

/** An executor that computes the items in `parts` ranges, each on its own instance over the same memory. */
function splitExecutor(parts: number): SgemmExecutor {
  const { arena } = singleThreadExecutor();
  const kernels = Array.from({ length: parts }, () => instantiateSgemm(arena.memory, sgemmKernelModule()));
  return {
    arena,
    run(call) {
      const items = sgemmItemCount(call);
      // Ranges in reverse order, so no range can lean on work that another has not done yet.
      for (let p = parts - 1; p >= 0; p--) {
        const start = Math.floor((items * p) / parts), end = Math.floor((items * (p + 1)) / parts);
        kernels[p].sgemm_batch(...sgemmBatchArgs(call), start, end);
      }
    },
  };
}

Deno.test("wasm matmul: the same bits whether the work is split in 1, 2 or 3 ranges, or rows at odd boundaries", () => {
  const cases = [shapeOf(1, 65, 33, 70), shapeOf(2, 130, 70, 300, true, false), shapeOf(3, 5, 12, 9, false, true, "B")];
  for (const s of cases) {
    const { a, b } = operands(s, s.m + s.k);
    const one = viaWasm(s, a, b, splitExecutor(1));
    for (const parts of [2, 3]) bitsEqual(viaWasm(s, a, b, splitExecutor(parts)), one, `${parts} ranges`);
    // Row ranges that cut tiles (a tile is then computed twice, each time storing only its own rows).
    const { arena } = singleThreadExecutor();
    const cuts = [0, 1, Math.floor(s.m / 2) | 1, s.m];
    const kernel = instantiateSgemm(arena.memory, sgemmKernelModule());
    const rows: SgemmExecutor = {
      arena,
      run(call) {
        for (let i = 0; i < call.count; i++) {
          for (let r = cuts.length - 2; r >= 0; r--) {
            const at = (base: number, stride: number) => base + i * stride;
            kernel.sgemm(
              at(call.a, call.strideA),
              at(call.b, call.strideB),
              at(call.c, call.strideC),
              call.m,
              call.n,
              call.k,
              call.ldc,
              cuts[r],
              cuts[r + 1],
            );
          }
        }
      },
    };
    bitsEqual(viaWasm(s, a, b, rows), one, `row cuts ${cuts}`);
  }
});

Deno.test("wasm matmul on the CPU thread pool: 2 and 3 workers give the 1-thread bits", () => {
  const s = shapeOf(2, 97, 75, 260, false, true);
  const { a, b } = operands(s, 7);
  const want = viaWasm(s, a, b);
  for (const workers of [2, 3]) {
    const { arena } = splitExecutor(1); // any arena: the pool only needs its memory
    const pool = createPool({ workers, memory: arena.memory, module: sgemmKernelModule() });
    try {
      bitsEqual(viaWasm(s, a, b, pooledExecutor(arena, pool)), want, `${workers} workers`);
    } finally {
      pool.close();
    }
  }
});

Deno.test("the CPU backend's matmul: WebAssembly from WASM_MATMUL_MIN_MACS up, the reference below", () => {
  const backend = createCpuBackend();
  for (const [m, n, k] of [[15, 16, 16], [16, 16, 16], [64, 48, 40]]) {
    const s = shapeOf(1, m, n, k, true, false);
    const { a, b } = operands(s, m * n * k);
    const out = new CpuStorage(m * n);
    backend.matmul(backend.upload(a), backend.upload(b), out, s);
    const want = new Float32Array(m * n);
    if (sgemmModule && m * n * k >= WASM_MATMUL_MIN_MACS) wasmMatmul(a, b, want, s);
    else referenceMatmul(a, b, want, s);
    bitsEqual(out.f32, want, `${m}x${n}x${k}`);
  }
});

const loaderUrl = new URL("./loader.ts", import.meta.url).href;
const config = new URL("../../deno.json", import.meta.url).pathname;

async function deno(args: string[], env: Record<string, string> = {}) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), { args, env, stdin: "null" }).output();
  const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code, stdout: text(stdout), stderr: text(stderr) };
}

Deno.test("LOWP_CPU_KERNELS=reference skips the kernel; without any permission it is there, and nothing is said", async () => {
  const probe = `import { CPU_KERNELS, sgemmModule } from "${loaderUrl}"; console.log(CPU_KERNELS, !!sgemmModule);`;
  const forced = await deno(["eval", "--config", config, probe], { LOWP_CPU_KERNELS: "reference" });
  assert.equal(forced.stdout.trim(), "reference false", forced.stderr);
  const normal = await deno(["eval", "--config", config, probe], { LOWP_CPU_KERNELS: "" });
  assert.equal(normal.stdout.trim(), "auto true", normal.stderr);
  // No permissions at all: no file is read, so the kernel loads, nothing prompts and nothing is printed.
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(script, probe);
    const bare = await deno(["run", "--no-prompt", "--config", config, script]);
    assert.equal(bare.code, 0, bare.stderr);
    assert.equal(bare.stdout.trim(), "auto true", bare.stderr);
    assert.equal(bare.stderr, "");
  } finally {
    await Deno.remove(script);
  }
});

Deno.test("a kernel that does not compile is an error naming LOWP_CPU_KERNELS=reference, not a quiet fallback", () => {
  assert.throws(
    () => compileKernel(Uint8Array.from([0, 0x61, 0x73, 0x6d, 9, 0, 0, 0]), "test kernel"),
    /WebAssembly test kernel does not compile in this runtime .*LOWP_CPU_KERNELS=reference/,
  );
});
