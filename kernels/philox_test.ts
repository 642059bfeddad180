/**
 * Philox-4x32-10: Random123 known-answer vectors, the WGSL twin against the
 * TypeScript one word for word (raw u32s from a small test shader), and the
 * uniform mapping's statistics.
 */
import assert from "node:assert/strict";
import type { Backend } from "./backend.ts";
import { philox4x32, PHILOX_WGSL, philoxWords, wordToUniform } from "./philox.ts";
import { ENTRY_1D, type GpuContext, grid1d, PRELUDE } from "./webgpu/context.ts";
import { gpuBackendOrSkip } from "../tests/helpers.ts";

const hex = (words: ArrayLike<number>) => Array.from(words, (w) => (w >>> 0).toString(16).padStart(8, "0")).join(" ");

/** Random123 kat_vectors for philox4x32_R(10): counter, key, expected output. */
const KAT: { ctr: number[]; key: number[]; out: string }[] = [
  { ctr: [0, 0, 0, 0], key: [0, 0], out: "6627e8d5 e169c58d bc57ac4c 9b00dbd8" },
  {
    ctr: [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
    key: [0xffffffff, 0xffffffff],
    out: "408f276d 41c83b0e a20bc7c6 6d5451fd",
  },
  {
    ctr: [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
    key: [0xa4093822, 0x299f31d0],
    out: "d16cfe09 94fdcceb 5001e420 24126ea1",
  },
];

for (const { ctr, key, out } of KAT) {
  Deno.test(`philox4x32-10 known answer (${hex(ctr)}), (${hex(key)})`, () => {
    assert.equal(hex(philox4x32(ctr, key)), out);
  });
}

Deno.test("philoxWords lays words out as counter (offset >> 2, high bits) lane (offset & 3)", () => {
  assert.equal(hex(philoxWords(new Uint32Array(4), 0, 0, 0)), KAT[0].out);
  const offset = 2 ** 34 + 5; // block 2^32 + 1: the counter's second word is 1
  const words = philoxWords(new Uint32Array(3), 7, 9, offset);
  const block = philox4x32([1, 1, 0, 0], [7, 9]);
  assert.equal(hex(words), hex([block[1], block[2], block[3]]));
});

Deno.test("wordToUniform maps to [0, 1) with 24-bit resolution", () => {
  assert.equal(wordToUniform(0), 0);
  assert.equal(wordToUniform(0xffffffff), 1 - 2 ** -24);
  assert.equal(wordToUniform(0x00000100), 2 ** -24);
});

Deno.test("uniform draws: mean and variance of 1e5 draws", () => {
  const n = 100_000;
  const words = philoxWords(new Uint32Array(n), 1234, 0, 0);
  let sum = 0, sumSq = 0;
  for (const w of words) {
    const u = wordToUniform(w);
    assert.ok(u >= 0 && u < 1);
    sum += u;
    sumSq += u * u;
  }
  const mean = sum / n, variance = sumSq / n - mean * mean;
  // The standard error of the mean is sqrt(1/12 / n) ≈ 9e-4, so 0.005 is a 5.5-sigma bound.
  assert.ok(Math.abs(mean - 0.5) < 0.005, `mean ${mean}`);
  assert.ok(Math.abs(variance - 1 / 12) < 0.002, `variance ${variance}`);
});

// ---------------------------------------------------------------- WGSL twin

const gpu = await gpuBackendOrSkip();

/** One thread per output word: `philox_word(seed, stream, offset_lo, offset_hi, i)`. */
const WORDS_SHADER = `${PRELUDE}${PHILOX_WGSL}
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
${ENTRY_1D}
  if (i >= P(0u)) { return; }
  out[i] = philox_word(P(1u), P(2u), P(3u), P(4u), i);
}
`;

/** One block straight from `philox4x32(counter, key)`; params are the counter then the key. */
const BLOCK_SHADER = `${PRELUDE}${PHILOX_WGSL}
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
${ENTRY_1D}
  if (i >= 4u) { return; }
  out[i] = philox4x32(vec4<u32>(P(0u), P(1u), P(2u), P(3u)), vec2<u32>(P(4u), P(5u)))[i];
}
`;

/** Runs a one-output-buffer shader over `n` threads and reads the u32s back. */
async function runShader(backend: Backend, source: string, params: number[], n: number): Promise<Uint32Array> {
  const ctx = (backend as Backend & { context: GpuContext }).context;
  const out = ctx.acquire(n);
  try {
    ctx.dispatch({ source, buffers: [out.buffer], params: Uint32Array.from(params), workgroups: grid1d(n) });
    return new Uint32Array(await ctx.read(out));
  } finally {
    ctx.release(out);
  }
}

for (const { ctr, key, out } of KAT) {
  Deno.test({
    name: `WGSL philox4x32 known answer (${hex(ctr)}), (${hex(key)})`,
    ignore: !gpu,
    async fn() {
      assert.equal(hex(await runShader(gpu!, BLOCK_SHADER, [...ctr, ...key], 4)), out);
    },
  });
}

/** [seed, stream, offset, n]: offsets around the 32-bit word boundary and the 32-bit block-counter boundary. */
const STREAMS: [number, number, number, number][] = [
  [0, 0, 0, 8],
  [0x12345678, 3, 3, 37],
  [1, 2, 2 ** 32 - 2, 16],
  [0xffffffff, 0xffffffff, 2 ** 34 - 6, 16],
  [99, 7, 2 ** 40 + 12345, 9],
  [5, 1, 17, 300_000], // many workgroups
];

for (const [seed, stream, offset, n] of STREAMS) {
  Deno.test({
    name: `WGSL philox_word matches philoxWords: seed ${seed} stream ${stream} offset ${offset} n ${n}`,
    ignore: !gpu,
    async fn() {
      const params = [n, seed, stream, offset % 2 ** 32, Math.floor(offset / 2 ** 32)];
      const got = await runShader(gpu!, WORDS_SHADER, params, n);
      const want = philoxWords(new Uint32Array(n), seed, stream, offset);
      const first = got.findIndex((w, i) => w !== want[i]);
      assert.equal(
        first,
        -1,
        `first difference at word ${first}: got ${hex([got[first]])}, want ${hex([want[first]])}`,
      );
    },
  });
}
