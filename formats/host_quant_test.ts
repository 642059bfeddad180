/**
 * The fused host kernels (host_quant.ts) against the reference word kernels, bit for bit: every format
 * they take, on values built to break a float-domain shortcut: exact ties at every mantissa position,
 * f32 subnormals, ±0, NaN with any payload, ±Inf, values at and past each format's largest value, blocks
 * of zeros, blocks on an exact grid (ties after scaling), and block exponents from 2^-149 to 2^127 (MX
 * scales at both clamps, NVFP4 tensor scales that are subnormal or whose reciprocals overflow). The
 * fused side runs on a CPU backend whose word kernels throw, so a case that silently fell back to the
 * reference would fail rather than compare the reference with itself.
 */
import assert from "node:assert/strict";
import { type Backend, compileKernel, type CpuStorage, createCpuBackend, philoxWords } from "@lowp/kernels";
import { emptyTensor, type Tensor } from "@lowp/core";
import { assertSameBits, bitsOf } from "../tests/helpers.ts";
import { HOST_QUANT_AVAILABLE } from "./host_quant.ts";
import { NF4_CODE_BITS, NF4_MIDPOINT_BITS } from "./nf4.ts";
import { nvfp4Quantizer } from "./nvfp4.ts";
import { flexQuantizer } from "./flex.ts";
import { parseFormat } from "./registry.ts";
import { parseGranularity, type QuantizeOptions } from "./spec.ts";
import { QUANT_WASM } from "./wasm/quant_wasm.ts";

const reference = createCpuBackend({ kernels: "reference" });
/** A CPU backend on which only the fused path can produce a result. */
const fusedOnly: Backend = {
  ...createCpuBackend(),
  runWords(kernel) {
    throw new Error(`word kernel '${kernel.name}' ran: the fused host path did not apply`);
  },
};

/** Words of a Philox stream, consumed in order. */
function wordSource(seed: number): () => number {
  const words = new Uint32Array(1 << 16);
  let at = words.length, offset = 0;
  return () => {
    if (at === words.length) {
      philoxWords(words, seed, 7, offset);
      offset += words.length;
      at = 0;
    }
    return words[at++];
  };
}

const F = new Float32Array(1), U = new Uint32Array(F.buffer);
const bits = (v: number) => (F[0] = v, U[0]);
/** f32 bits of m · 2^e (m a small integer) for e in the f32 range, else of 0. */
const scaled = (m: number, e: number) => bits(m * 2 ** e);

/**
 * f32 bits for `n` values in blocks of `block`, each block with its own exponent in [lo, hi]. `specials`
 * adds NaN and ±Inf; `grid` blocks hold an exact power-of-two maximum with values on a grid of 2^-6 of it
 * (halfway points included), or the given fractions of it (NF4's codes and midpoints).
 */
function adversarial(
  n: number,
  seed: number,
  o: { block: number; lo: number; hi: number; specials: boolean; grid?: readonly number[] },
): Uint32Array {
  const word = wordSource(seed), out = new Uint32Array(n);
  const inRange = (e: number) => Math.min(254, Math.max(1, e + 127));
  for (let b0 = 0; b0 < n; b0 += o.block) {
    const e = o.lo + (word() % (o.hi - o.lo + 1)), kind = word() % 8;
    for (let i = b0; i < Math.min(n, b0 + o.block); i++) {
      const w = word(), sign = (word() & 1) << 31;
      let v: number;
      if (kind === 0) v = 0; // a zero block (signs vary)
      else if (kind === 1) v = w & 0x7fffff; // f32 subnormals
      else if (kind === 2 && o.grid) v = i === b0 ? scaled(1, e) : bits(o.grid[w % o.grid.length] * 2 ** e);
      else if (kind === 2) v = i === b0 ? scaled(1, e) : scaled((w % 129) / 2, e - 6);
      else {
        const r = w % 16;
        if (r === 0) v = 0;
        else if (r === 1 && o.specials) v = word() % 3 === 0 ? 0x7f800000 : 0x7f800000 | (word() & 0x7fffff) | 1;
        else if (r === 2) v = w & 0x7fffff;
        else if (r <= 6) {
          // an exact tie at mantissa position p: the dropped bits are 100…0
          const p = 1 + (word() % 23);
          v = (inRange(e - (word() % 4)) << 23) | ((word() & 0x7fffff) & ~((1 << p) - 1)) | (1 << (p - 1));
        } else if (r === 7 && e >= 0) v = bits([448, 464, 480, 6, 7, 5.75, 57344, 61440, 7.5, 28, 30][word() % 11]);
        else if (r === 8 && e >= 0) v = 0x7f7fffff - (word() % 4); // f32's largest values (only in blocks of e >= 0)
        else v = (inRange(e - (word() % 8)) << 23) | (word() & 0x7fffff);
      }
      out[i] = (v | sign) >>> 0;
    }
  }
  return out;
}

function tensorOf(backend: Backend, words: Uint32Array, shape: number[]): Tensor {
  const t = emptyTensor(backend, shape, "f32");
  (t.storage as CpuStorage).u32.set(words); // both backends here are CPU backends
  return t;
}

interface Case {
  format: string;
  opts?: QuantizeOptions & { doubleQuant?: boolean };
  granularity?: string;
}

const ELEMENT_CASES: Case[] = [
  ...["e4m3", "e5m2", "e2m3", "e3m2", "e2m1", "e3m4", "e6m9", "e4m3fn", "e5m2none"].map((format) => ({ format })),
  { format: "e4m3", opts: { saturate: false } },
  { format: "e5m2", opts: { saturate: false } },
  { format: "e3m4", opts: { saturate: false } },
];
/**
 * Stochastic rounding: word offsets off a block boundary, crossing 2^32 (the low counter word wraps) and
 * past 2^34 (the high counter word is not 0) exercise the word indexing.
 */
const DRAWS: QuantizeOptions[] = [
  { rounding: "stochastic", seed: 7, stream: 3, offset: 0 },
  { rounding: "stochastic", seed: 1234567, stream: 0, offset: 2 ** 32 - 2 },
  { rounding: "stochastic", seed: 99, stream: 5, offset: 3 * 2 ** 34 + 1 },
];
/** `cases` again with each stochastic draw. */
const withDraws = (cases: Case[]): Case[] =>
  cases.flatMap((c) => DRAWS.map((d) => ({ ...c, opts: { ...c.opts, ...d } })));

const MX_CASES: Case[] = [
  ...["mxfp4", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2"].map((format) => ({ format })),
  { format: "mxfp8_e4m3", opts: { saturate: false } },
  { format: "mxfp8_e5m2", opts: { saturate: false } },
  // rceil (the E8M0 scale under which nothing clips) also runs fused.
  ...["mxfp4", "mxfp8_e4m3", "mxfp6_e3m2"].map((format) => ({ format, opts: { scaleRounding: "rceil" } })),
];
const INT_CASES: Case[] = ["int2", "int3", "int4", "int8", "uint2", "uint4", "uint8"].flatMap((format) =>
  ["group:4", "group:32", "group:128", "channel:0", "tensor"].map((granularity) => ({ format, granularity }))
);

/** Runs `c` on both backends over `words` (shape `shape`) and compares the bits. */
async function compare(c: Case, words: Uint32Array, shape: number[], label: string): Promise<void> {
  const q = parseFormat(c.format);
  const opts = { ...c.opts, ...(c.granularity ? { granularity: parseGranularity(c.granularity) } : {}) };
  const want = await bitsOf(q.quantDequant(tensorOf(reference, words, shape), opts));
  const got = await bitsOf(q.quantDequant(tensorOf(fusedOnly, words, shape), opts));
  assertSameBits(got, want, `${c.format} ${JSON.stringify(opts)} ${label}`);
}

Deno.test("the fused kernels were built", () => {
  assert.ok(HOST_QUANT_AVAILABLE, "wasm/quant_wasm.ts did not compile (see stderr)");
});

Deno.test("the module's Philox words (four blocks at a time in SIMD, the ends one block at a time) = philoxWords", () => {
  const module = compileKernel(QUANT_WASM, "quant.wat");
  const k = new WebAssembly.Instance(module, {}).exports as unknown as {
    memory: WebAssembly.Memory;
    philox(out: number, count: number, seed: number, stream: number, lo: number, hi: number): void;
  };
  // Offsets on and off a group of 16 words, counts below and above one group, and counters whose low word
  // wraps (block 2^32 − 1 then 2^32: words 2^34 − 4 …).
  const offsets = [0, 1, 3, 15, 16, 17, 1000, 2 ** 32 + 5, 2 ** 34 - 20, 2 ** 34 - 3, 2 ** 40 + 7];
  for (const offset of offsets) {
    for (const count of [0, 1, 5, 16, 17, 33, 100, 1027]) {
      for (const [seed, stream] of [[0, 0], [0xffffffff, 7], [12345, 0x80000001]]) {
        const out = new Uint32Array(k.memory.buffer, 64, count + 4).fill(0xa5a5a5a5);
        k.philox(64, count, seed, stream, offset % 2 ** 32, Math.floor(offset / 2 ** 32));
        const want = philoxWords(new Uint32Array(count), seed, stream, offset);
        assert.deepEqual(out.slice(0, count), want, `offset ${offset}, count ${count}, key (${seed}, ${stream})`);
        assert.deepEqual([...out.slice(count)], [0xa5a5a5a5, 0xa5a5a5a5, 0xa5a5a5a5, 0xa5a5a5a5], "past the end");
      }
    }
  }
});

Deno.test("element formats, nearest and stochastic: fused = reference, also on lengths not a multiple of 4", async () => {
  const words = adversarial(64 * 1031, 1, { block: 64, lo: -150, hi: 127, specials: true });
  for (const c of [...ELEMENT_CASES, ...withDraws(ELEMENT_CASES)]) {
    await compare(c, words, [64, 1031], "wide exponents");
    await compare(c, words.subarray(0, 21), [3, 7], "21 values");
  }
});

Deno.test("MX, nearest and stochastic: fused = reference across scale clamps, NaN/Inf and grid blocks", async () => {
  const words = adversarial(64 * 1024, 2, { block: 32, lo: -150, hi: 127, specials: true });
  for (const c of [...MX_CASES, ...withDraws(MX_CASES)]) await compare(c, words, [64, 1024], "wide exponents");
});

Deno.test("NVFP4: fused = reference for tensor scales from subnormal to huge, and an all-NaN tensor", async () => {
  for (const nvfp4 of [{ format: "nvfp4" }, ...withDraws([{ format: "nvfp4" }])]) {
    const ranges: [number, number, string][] = [
      [-20, 20, "moderate"],
      [-149, -110, "subnormal s_t"],
      [-149, -130, "all subnormal: 1/(6·s_t) overflows"],
      [-149, 127, "wide"],
    ];
    for (const [lo, hi, label] of ranges) {
      await compare(nvfp4, adversarial(32 * 1024, 3, { block: 16, lo, hi, specials: false }), [32, 1024], label);
    }
    const nan = adversarial(32 * 1024, 4, { block: 16, lo: -20, hi: 20, specials: true });
    await compare(nvfp4, nan, [32, 1024], "NaN");
    await compare(nvfp4, new Uint32Array(1024).fill(0x80000000), [4, 256], "all -0");
  }
});

Deno.test("NF4: fused = reference on midpoints, code values and specials", async () => {
  const grid = [...NF4_CODE_BITS, ...NF4_MIDPOINT_BITS].flatMap((b) => {
    F[0] = 0;
    U[0] = b;
    const v = F[0];
    return [v, Math.fround(v * (1 + 2 ** -23)), Math.fround(v * (1 - 2 ** -24))]; // on, just above, just below
  });
  const words = adversarial(64 * 1024, 5, { block: 64, lo: -150, hi: 127, specials: true, grid });
  await compare({ format: "nf4" }, words, [64, 1024], "wide exponents");
});

Deno.test("INT-k, symmetric and with zero points: fused = reference for every group shape it takes", async () => {
  const words = adversarial(64 * 1024, 6, { block: 32, lo: -150, hi: 127, specials: true });
  const finite = adversarial(64 * 1024, 7, { block: 4, lo: -150, hi: 127, specials: false });
  const drawn = INT_CASES.filter((c) => ["int4", "uint4", "int8"].includes(c.format) && c.granularity !== "tensor");
  for (const c of [...INT_CASES, ...withDraws(drawn)]) {
    await compare(c, words, [64, 1024], "wide exponents");
    await compare(c, finite, [64, 1024], "finite");
  }
});

Deno.test("stochastic rounding: a random word equal to the threshold rounds down, one below rounds up", async () => {
  // e2m1 has quantum 1/2 on [1, 2): x = 1 + w/2^33 has frac(x / quantum) · 2^32 = w exactly when w is a
  // multiple of 2^10. Such words get x at their threshold (down: w < w is false) or one step above.
  const draw = { rounding: "stochastic" as const, seed: 5, stream: 1, offset: 0 };
  const words = philoxWords(new Uint32Array(1 << 16), draw.seed, draw.stream, draw.offset);
  const x = new Uint32Array(words.length).fill(bits(1.25));
  let crafted = 0;
  words.forEach((w, i) => {
    if (w % 1024 !== 0 || w === 0) return;
    x[i] = bits(1 + (w + (i % 2 ? 1024 : 0)) / 2 ** 33); // odd i: the threshold is above w, so it rounds up
    crafted++;
  });
  assert.ok(crafted > 20, `only ${crafted} words were multiples of 2^10`);
  await compare({ format: "e2m1", opts: draw }, x, [64, 1024], "thresholds on the words");
});

Deno.test("empty tensors come back empty on the fused path", async () => {
  for (const c of [...ELEMENT_CASES.slice(0, 1), ...MX_CASES.slice(0, 1), { format: "nvfp4" }, { format: "nf4" }]) {
    await compare(c, new Uint32Array(0), [0, 64], "empty");
  }
  await compare({ format: "int4", granularity: "group:32" }, new Uint32Array(0), [0, 64], "empty");
});

Deno.test("cases the fused kernels do not take go to the word kernels", () => {
  const x = tensorOf(fusedOnly, adversarial(256, 8, { block: 32, lo: -4, hi: 4, specials: false }), [4, 64]);
  const refused: [string, QuantizeOptions & { scaleRounding?: string; doubleQuant?: boolean }][] = [
    ["e4m3", { rounding: "nearest-away" }],
    ["e8m7", {}], // quanta below f32's normal range
    ["mxint8", {}],
    ["mxfp4", { scaleRounding: "ceil" }],
    ["int4", { granularity: parseGranularity("channel:1") }], // strided groups
    ["nf4", { doubleQuant: true }],
  ];
  for (const [format, opts] of refused) {
    assert.throws(() => parseFormat(format).quantDequant(x, opts), /word kernel .* ran/, format);
  }
  // MX's rceil runs fused (so the MX cases above compare the fused kernel, not the word kernel with itself).
  parseFormat("mxfp4").quantDequant(x, { scaleRounding: "rceil" } as QuantizeOptions);
});

Deno.test("INT-k and Flexpoint under one given scale: fused = reference, tails, saturation, both roundings", async () => {
  const flex = flexQuantizer("flex16+5")!;
  const int8 = parseFormat("int8");
  // 3·2^16 + 3 values: several chunks and a tail of 3 outside the four-lane loop.
  const n = 3 * 65536 + 3;
  const finite = adversarial(n, 8, { block: 64, lo: -40, hi: 20, specials: false });
  for (const opts of [{}, { rounding: "stochastic" as const, seed: 5, offset: 11 }]) {
    const runs: [string, (t: Tensor) => Tensor][] = [
      ["flex, own exponent", (t) => flex.quantDequant(t, opts)],
      ["flex, exponent -20 (saturates)", (t) => flex.quantDequantWith(t, -20, opts)],
      ["flex, exponent -31", (t) => flex.quantDequantWith(t, -31, opts)],
      // Above the fused INT-k kernel's largest group: the per-tensor scale comes from the range kernels.
      ["int8 per tensor", (t) => int8.quantDequant(t, { ...opts, granularity: parseGranularity("tensor") })],
    ];
    for (const [what, run] of runs) {
      const shape = what.startsWith("int8") ? [2 ** 21 + 4] : [n];
      const words = what.startsWith("int8")
        ? adversarial(2 ** 21 + 4, 9, { block: 64, lo: -4, hi: 4, specials: false })
        : finite;
      const [got, want] = [createCpuBackend(), reference].map((b) => run(tensorOf(b, words, shape)));
      assertSameBits(await bitsOf(got), await bitsOf(want), `${what} ${opts.rounding ?? "nearest"}`);
    }
  }
});

Deno.test("NVFP4 16×16 tiles: fused = reference along either axis (nearest; stochastic stays on the word kernels)", async () => {
  const q = nvfp4Quantizer("nvfp4")!;
  const shape = [96, 272]; // 6 × 17 tiles; several chunks
  for (
    const [what, words] of [
      ["finite", adversarial(96 * 272, 12, { block: 16, lo: -30, hi: 30, specials: false })],
      ["with NaN/Inf", adversarial(96 * 272, 13, { block: 16, lo: -30, hi: 30, specials: true })],
    ] as const
  ) {
    for (const opts of [{ axis: -1 }, { axis: 0 }, { axis: 0, rounding: "stochastic" as const, seed: 3 }]) {
      const [got, want] = [createCpuBackend(), reference].map((b) =>
        q.quantDequant(tensorOf(b, words, shape), { ...opts, block2d: true })
      );
      assertSameBits(await bitsOf(got), await bitsOf(want), `${what} ${JSON.stringify(opts)}`);
    }
  }
});
