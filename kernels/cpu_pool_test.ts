import assert from "node:assert/strict";
import wabtInit from "wabt";
import {
  crashWorkersForTesting,
  createPool,
  defaultWorkerCount,
  MAX_WORKERS,
  parseWorkerCount,
  partition,
  type PoolOptions,
} from "./cpu_pool.ts";

// A test kernel module over an imported shared memory. Every function takes (...args, start, end).
const WAT = `(module
  (import "env" "memory" (memory 1 256 shared))
  ;; out[i] = in[i] * 2 + i (f32), then 16 rounds of x = x * 0.75 + in[i]: enough f32 rounding to catch a
  ;; partition that changed how an item is computed.
  (func (export "affine") (param $in i32) (param $out i32) (param $start i32) (param $end i32)
    (local $i i32) (local $x f32) (local $v f32) (local $r i32)
    (local.set $i (local.get $start))
    (block $done (loop $next
      (br_if $done (i32.ge_s (local.get $i) (local.get $end)))
      (local.set $v (f32.load (i32.add (local.get $in) (i32.shl (local.get $i) (i32.const 2)))))
      (local.set $x (f32.add (f32.mul (local.get $v) (f32.const 2)) (f32.convert_i32_s (local.get $i))))
      (local.set $r (i32.const 0))
      (block $r_done (loop $r_next
        (br_if $r_done (i32.ge_s (local.get $r) (i32.const 16)))
        (local.set $x (f32.add (f32.mul (local.get $x) (f32.const 0.75)) (local.get $v)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $r_next)))
      (f32.store (i32.add (local.get $out) (i32.shl (local.get $i) (i32.const 2))) (local.get $x))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next))))
  ;; Each call takes a ticket from the atomic counter at $counter and writes ticket + 1 to its items.
  (func (export "tag") (param $counter i32) (param $out i32) (param $start i32) (param $end i32)
    (local $t i32) (local $i i32)
    (local.set $t (i32.add (i32.atomic.rmw.add (local.get $counter) (i32.const 1)) (i32.const 1)))
    (local.set $i (local.get $start))
    (block $done (loop $next
      (br_if $done (i32.ge_s (local.get $i) (local.get $end)))
      (i32.store (i32.add (local.get $out) (i32.shl (local.get $i) (i32.const 2))) (local.get $t))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next))))
  ;; Traps if item $bad is in [start, end).
  (func (export "trap") (param $bad i32) (param $start i32) (param $end i32)
    (if (i32.and (i32.ge_s (local.get $bad) (local.get $start)) (i32.lt_s (local.get $bad) (local.get $end)))
      (then unreachable)))
  (func (export "nop") (param i32 i32)))`;

const wabt = await wabtInit();
const parsed = wabt.parseWat("pool_test.wat", WAT, { threads: true });
const BYTES = new Uint8Array(parsed.toBinary({}).buffer);
parsed.destroy();
const MODULE = new WebAssembly.Module(BYTES);

function options(workers: number): PoolOptions {
  return { workers, memory: new WebAssembly.Memory({ initial: 16, maximum: 256, shared: true }), module: MODULE };
}

/** Runs `affine` on `n` items with `workers` participants and returns the output bits. */
function affineBits(workers: number, n: number): Uint32Array {
  const opts = options(workers);
  const pool = createPool(opts);
  try {
    const input = new Float32Array(opts.memory.buffer, 0, n);
    for (let i = 0; i < n; i++) input[i] = Math.sin(i) * 1000;
    const out = n * 4;
    pool.run("affine", [0, out], n);
    return new Uint32Array(opts.memory.buffer, out, n).slice();
  } finally {
    pool.close();
  }
}

Deno.test("partition: contiguous chunks covering every item once", () => {
  for (const [items, p] of [[0, 3], [1, 3], [7, 2], [100, 3], [2 ** 31 - 1, 64]]) {
    let next = 0;
    for (let i = 0; i < p; i++) {
      const [s, e] = partition(items, p, i);
      assert.equal(s, next);
      assert.ok(e >= s && e - s <= Math.ceil(items / p));
      next = e;
    }
    assert.equal(next, items);
  }
});

Deno.test("results are bit-identical with 1, 2 and 3 workers", () => {
  const n = 10_007;
  const one = affineBits(1, n);
  // Spot-check the kernel against a JS f32 reference on the single-thread result.
  for (const i of [0, 1, 5000, n - 1]) {
    const v = Math.fround(Math.sin(i) * 1000);
    let x = Math.fround(Math.fround(v * 2) + i);
    for (let r = 0; r < 16; r++) x = Math.fround(Math.fround(x * 0.75) + v);
    assert.equal(new Float32Array(one.buffer)[i], x);
  }
  assert.deepEqual(affineBits(2, n), one);
  assert.deepEqual(affineBits(3, n), one);
});

Deno.test("a large job runs on every participant, each on its own chunk", () => {
  for (const workers of [2, 3]) {
    const opts = options(workers);
    const pool = createPool(opts);
    try {
      const n = 100_000;
      pool.run("tag", [0, 64], n);
      const tags = new Int32Array(opts.memory.buffer, 64, n);
      const seen = new Set(tags);
      assert.equal(seen.size, workers, `tags seen with ${workers} workers: ${[...seen]}`);
      // Each participant wrote exactly its chunk: the tag only changes at chunk boundaries.
      for (let p = 0; p < workers; p++) {
        const [s, e] = partition(n, workers, p);
        assert.ok(tags.subarray(s, e).every((t) => t === tags[s]), `chunk ${p} has one tag`);
      }
    } finally {
      pool.close();
    }
  }
});

Deno.test("small and empty jobs: fewer items than participants, zero items, repeated runs", () => {
  const opts = options(3);
  const pool = createPool(opts);
  try {
    pool.run("tag", [0, 64], 0);
    assert.equal(new Int32Array(opts.memory.buffer)[0], 0, "no participant called for 0 items");
    pool.run("tag", [0, 64], 1);
    assert.equal(new Int32Array(opts.memory.buffer)[0], 1, "one call for 1 item");
    // Back-to-back jobs of varying size: every item is written by the time run returns, nothing past the end.
    const tags = new Int32Array(opts.memory.buffer, 64, 5001);
    for (let i = 0; i < 300; i++) {
      const n = (i * 7919) % 5000;
      tags.fill(0);
      pool.run("tag", [0, 64], n);
      assert.ok(tags.subarray(0, n).every((t) => t !== 0) && tags[n] === 0, `run ${i}: ${n} items`);
    }
  } finally {
    pool.close();
  }
});

Deno.test("a trap in a worker throws from run, naming the function and range; the pool stays usable", () => {
  const pool = createPool(options(3));
  try {
    // Item 90 of 100 belongs to worker 2: [66, 100).
    assert.throws(
      () => pool.run("trap", [90], 100),
      /cpu pool: trap failed on worker 2 for items \[66, 100\): .*unreachable/,
    );
    assert.throws(() => pool.run("trap", [10], 100), /cpu pool: trap failed on the main thread for items \[0, 33\)/);
    pool.run("trap", [-1], 100);
    assert.equal(pool.closed, false);
  } finally {
    pool.close();
  }
  const single = createPool(options(1));
  try {
    assert.throws(() => single.run("trap", [3], 10), /trap failed on the main thread for items \[0, 10\)/);
  } finally {
    single.close();
  }
});

Deno.test("a dead worker makes run throw and close the pool instead of hanging", () => {
  const pool = createPool(options(2));
  try {
    pool.run("nop", [], 10);
    crashWorkersForTesting(pool);
    assert.throws(
      () => pool.run("nop", [], 10),
      /worker 1 died while running "nop": .*crash requested.*the pool is closed/,
    );
    assert.equal(pool.closed, true);
    assert.throws(() => pool.run("nop", [], 10), /closed pool/);
  } finally {
    pool.close();
  }
});

Deno.test("argument and option validation", () => {
  assert.throws(() => createPool({ ...options(2), workers: 0 }), RangeError);
  assert.throws(() => createPool({ ...options(2), workers: MAX_WORKERS + 1 }), RangeError);
  const unshared = new WebAssembly.Memory({ initial: 1 });
  assert.throws(() => createPool({ workers: 2, memory: unshared, module: MODULE }), /shared WebAssembly.Memory/);
  const pool = createPool(options(2));
  try {
    assert.throws(() => pool.run("missing", [], 1), /exports no function "missing"/);
    assert.throws(() => pool.run("nop", [], -1), RangeError);
    assert.throws(() => pool.run("nop", [], 1.5), RangeError);
    assert.throws(() => pool.run("nop", new Array(17).fill(0), 1), RangeError);
  } finally {
    pool.close();
  }
  pool.close(); // idempotent
});

Deno.test("close before the workers started; close right after creation", () => {
  for (let i = 0; i < 3; i++) createPool(options(3)).close();
});

Deno.test("parseWorkerCount", () => {
  assert.equal(parseWorkerCount(undefined, 2), 2);
  assert.equal(parseWorkerCount("", 2), 2);
  assert.equal(parseWorkerCount("  ", 1), 1);
  assert.equal(parseWorkerCount("1", 2), 1);
  assert.equal(parseWorkerCount(" 4 ", 2), 4);
  assert.equal(parseWorkerCount(String(MAX_WORKERS), 2), MAX_WORKERS);
  for (const bad of ["0", "-1", "1.5", "two", "2x", String(MAX_WORKERS + 1), "1e1"]) {
    assert.throws(() => parseWorkerCount(bad, 2), /LOWP_CPU_WORKERS must be a whole number from 1 to 64/, bad);
  }
  const n = defaultWorkerCount();
  assert.ok(n >= 1 && n <= MAX_WORKERS);
});

/** Runs `code` in a fresh `deno run` (stdin) with `flags` and `env`; the code may import `POOL`. */
async function deno(code: string, flags: string[], env: Record<string, string>) {
  const poolUrl = new URL("./cpu_pool.ts", import.meta.url).href;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--quiet", ...flags, "-"],
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(code.replaceAll("POOL", JSON.stringify(poolUrl))));
  await writer.close();
  const t0 = performance.now();
  const out = await child.output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr), ms: performance.now() - t0 };
}

Deno.test("LOWP_CPU_WORKERS: read with env permission, ignored without it, invalid values throw", async () => {
  const print = `import { defaultWorkerCount } from POOL; console.log(defaultWorkerCount());`;
  const fallback = String(Math.min(2, navigator.hardwareConcurrency));
  assert.equal((await deno(print, ["--allow-env"], { LOWP_CPU_WORKERS: "3" })).stdout, "3");
  assert.equal((await deno(print, [], { LOWP_CPU_WORKERS: "3" })).stdout, fallback);
  assert.equal((await deno(print, ["--allow-env"], {})).stdout, fallback);
  const bad = await deno(print, ["--allow-env"], { LOWP_CPU_WORKERS: "lots" });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /LOWP_CPU_WORKERS must be a whole number/);
});

const WASM_B64 = btoa(String.fromCharCode(...BYTES));
const SETUP = `import { createPool } from POOL;
  const module = new WebAssembly.Module(Uint8Array.from(atob("${WASM_B64}"), (c) => c.charCodeAt(0)));
  const memory = new WebAssembly.Memory({ initial: 16, maximum: 256, shared: true });`;

Deno.test("a pool that is never closed does not keep the process alive", async () => {
  const code = `${SETUP}
    const pool = createPool({ workers: 3, memory, module });
    pool.run("tag", [0, 64], 1000);
    console.log(new Set(new Int32Array(memory.buffer, 64, 1000)).size);`;
  const res = await deno(code, ["--allow-read"], {});
  assert.equal(res.stderr, "");
  assert.equal(res.code, 0);
  assert.equal(res.stdout, "3");
  assert.ok(res.ms < 10_000, `exited after ${res.ms} ms`);
});

Deno.test("without read permission the default pool runs on the main thread; an explicit count throws", async () => {
  const code = `${SETUP}
    const pool = createPool({ memory, module });
    pool.run("tag", [0, 64], 1000);
    console.log(pool.workers, new Set(new Int32Array(memory.buffer, 64, 1000)).size);
    try { createPool({ workers: 2, memory, module }); } catch (e) { console.log(String(e)); }`;
  const res = await deno(code, [], {});
  assert.equal(res.code, 0, res.stderr);
  const [counts, error] = res.stdout.split("\n");
  assert.equal(counts, "1 1");
  assert.match(error, /worker threads need read access to .*cpu_worker.ts \(--allow-read\)/);
});
