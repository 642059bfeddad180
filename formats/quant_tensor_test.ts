/**
 * QuantTensor: packed storage equal to `pack`, packed dequantize equal to quantDequant bit for bit (every
 * format with a quantize, both backends; block and group formats also along axis 0 of a 2-D tensor and the
 * middle axis of a 3-D one), re-quantization in place, memory scopes, safetensors both ways.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type Backend, cpuBackend, readSafetensors, tensor, tidy, writeSafetensors } from "@lowp/core";
import { assertSameBits, bitsOf, gpuBackendOrSkip } from "../tests/helpers.ts";
import { dequantRuns } from "./_packed_kernels.ts";
import { pack, packCodes, packedBytes } from "./pack.ts";
import { quantizeFile, restore } from "./quantize_file.ts";
import { loadQuantTensors, QuantTensor, type QuantTensorOptions, saveQuantTensors } from "./quant_tensor.ts";
import { parseFormat } from "./registry.ts";

const CPU = cpuBackend();

/** Finite values over many binades, with exact zeros and a sign mix (no NaN: not every format has a NaN code). */
function values(n: number, seed: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => i % 17 === 5 ? 0 : Math.sin(i * 1.7 + seed) * 2 ** ((i % 13) - 6));
}

interface Case {
  format: string;
  shape: number[];
  opts?: QuantTensorOptions;
}

const INT_CASES: Case[] = [2, 3, 4, 5, 6, 7, 8].flatMap((k) =>
  [`int${k}`, `uint${k}`].flatMap((format) =>
    [
      { format, shape: [5, 37] },
      { format, shape: [5, 37], opts: { granularity: { kind: "channel", axis: 0 } } },
      { format, shape: [3, 5, 7], opts: { granularity: { kind: "channel", axis: 1 } } },
      { format, shape: [3, 64], opts: { granularity: { kind: "group", size: 16 } } },
    ] as Case[]
  )
);

/** Every format with a quantize, with each granularity it offers; sizes not a multiple of 32 codes where allowed. */
const CASES: Case[] = [
  ...["e4m3", "e5m2", "e2m3", "e3m2", "e2m1", "e3m4"].map((format) => ({ format, shape: [5, 37] })),
  ...["e8m0", "ue4m3", "ue5m3"].map((format) => ({ format, shape: [5, 37] })),
  ...INT_CASES,
  ...["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "mxint8"].map((format) => ({
    format,
    shape: [3, 64],
  })),
  { format: "mxfp4", shape: [2, 96], opts: { scaleRounding: "even" } },
  { format: "nvfp4", shape: [3, 48] },
  { format: "nf4", shape: [3, 128] },
  // 300 blocks of 64: two blocks of 256 absmax values in the double quantization, the last one short.
  { format: "nf4", shape: [6, 3200], opts: { doubleQuant: true } },
  { format: "nf4-dq", shape: [2, 192] },
  { format: "flex16+5", shape: [5, 37] },
  // Large enough for the CPU loops' code tables (a table per tensor, per scale code, per channel).
  { format: "e4m3", shape: [16, 64] },
  { format: "int8", shape: [16, 64] },
  { format: "uint8", shape: [16, 64], opts: { granularity: { kind: "channel", axis: 1 } } },
  { format: "mxfp8_e5m2", shape: [4, 512] },
  { format: "e4m3", shape: [4, 40], opts: { rounding: "stochastic", seed: 7, stream: 3, offset: 11 } },
  {
    format: "int4",
    shape: [4, 256],
    opts: { granularity: { kind: "group", size: 128 }, rounding: "stochastic", seed: 9 },
  },
  { format: "mxfp6_e3m2", shape: [2, 64], opts: { rounding: "stochastic", seed: 1, offset: 5 } },
  ...AXIS_CASES(),
];

/**
 * Every block and group format along a non-last axis: axis 0 of a 2-D tensor (the other dimension not a
 * multiple of anything) and the middle axis of a 3-D one (once as -2), NVFP4's 2-D blocks along both axes,
 * stochastic rounding, and sizes where the CPU loop tabulates (and where it does not).
 */
function AXIS_CASES(): Case[] {
  const group = (size: number) => ({ kind: "group", size }) as const;
  const mx = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "mxint8"];
  const ints = [2, 4, 8].flatMap((k) => [`int${k}`, `uint${k}`]);
  return [
    ...mx.flatMap((format) => [
      { format, shape: [64, 3], opts: { axis: 0 } },
      { format, shape: [3, 32, 5], opts: { axis: 1 } },
    ]),
    { format: "mxfp4", shape: [2, 64, 3], opts: { axis: -2, scaleRounding: "even" } },
    { format: "mxfp8_e5m2", shape: [512, 4], opts: { axis: 0 } }, // enough values for the kept 8-bit tables
    { format: "mxfp6_e3m2", shape: [3, 64, 2], opts: { axis: 1, rounding: "stochastic", seed: 2, offset: 3 } },
    { format: "nvfp4", shape: [32, 5], opts: { axis: 0 } },
    { format: "nvfp4", shape: [2, 48, 3], opts: { axis: 1 } },
    { format: "nvfp4", shape: [48, 3], opts: { axis: 0, rounding: "stochastic", seed: 4 } },
    { format: "nvfp4", shape: [32, 48], opts: { block2d: true } },
    { format: "nvfp4", shape: [32, 48], opts: { block2d: true, axis: 0 } },
    { format: "nvfp4", shape: [2, 32, 16], opts: { block2d: true, axis: 1 } },
    { format: "nf4", shape: [128, 3], opts: { axis: 0 } },
    { format: "nf4", shape: [2, 64, 3], opts: { axis: -2 } },
    // 600 blocks along axis 0: three blocks of 256 absmax values in the stored order, the last one short.
    { format: "nf4", shape: [128, 300], opts: { axis: 0, doubleQuant: true } },
    { format: "nf4-dq", shape: [3, 64, 5], opts: { axis: 1 } },
    ...ints.flatMap((format) => [
      { format, shape: [32, 5], opts: { granularity: group(16), axis: 0 } },
      { format, shape: [3, 48, 5], opts: { granularity: group(16), axis: 1 } },
    ]),
    { format: "int4", shape: [256, 3], opts: { granularity: group(128), axis: 0, rounding: "stochastic", seed: 9 } },
    { format: "uint8", shape: [2, 512, 3], opts: { granularity: group(256), axis: 1 } },
  ];
}

const label = (c: Case) => `${c.format} [${c.shape}] ${JSON.stringify(c.opts ?? {})}`;

/** Checks one case on `backend`; returns the packed words and dequantized bits for the cross-backend check. */
async function checkCase(c: Case, backend: Backend): Promise<Uint32Array[]> {
  const q = parseFormat(c.format);
  const n = c.shape.reduce((a, d) => a * d, 1);
  const x = tensor(values(n, c.shape.length + n), { shape: c.shape, backend });
  const qt = QuantTensor.fromTensor(x, c.format, c.opts);
  try {
    // The packed words are exactly what the host packer makes of the u32 codes.
    const want = await pack(q.quantize(x, c.opts));
    const got = await qt.toPacked();
    assert.deepEqual(got.meta, want.meta, label(c));
    assert.deepEqual(got.parts.map((p) => [p.name, p.bits, p.count]), want.parts.map((p) => [p.name, p.bits, p.count]));
    got.parts.forEach((p, k) => assertSameBits(p.words, want.parts[k].words, `${label(c)} part ${p.name}`));
    assert.equal(qt.dataBytes, packedBytes(want), `${label(c)} bytes`);
    // Values straight from the packed bits equal quantDequant's.
    const y = qt.dequantize();
    assert.deepEqual(y.shape, c.shape);
    const bits = await bitsOf(y);
    assertSameBits(bits, await bitsOf(q.quantDequant(x, c.opts)), `${label(c)} on ${backend.name}`);
    return [...got.parts.map((p) => p.words), bits];
  } finally {
    qt.dispose();
  }
}

Deno.test("QuantTensor: packed words equal pack(), dequantize equals quantDequant bit for bit (cpu)", async () => {
  for (const c of CASES) await checkCase(c, CPU);
});

Deno.test("QuantTensor: webgpu gives the same packed words and values as cpu", async () => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  for (const c of CASES) {
    const [cpu, webgpu] = [await checkCase(c, CPU), await checkCase(c, gpu)];
    cpu.forEach((words, k) => assertSameBits(webgpu[k], words, `${label(c)} cpu vs webgpu, array ${k}`));
  }
});

Deno.test("QuantTensor: 4-bit weights take half a byte per value plus their scales", () => {
  const x = tensor(values(64 * 128, 1), { shape: [64, 128] });
  const cases: [string, QuantTensorOptions, number][] = [
    ["nf4", {}, 8192 / 2 + 128 * 4], // codes + f32 absmax per 64
    ["nf4", { doubleQuant: true }, 8192 / 2 + 128 + 4 + 4], // + int8 absmax, one scale, the mean
    ["mxfp4", {}, 8192 / 2 + 256], // + one e8m0 per 32
    ["int4", { granularity: { kind: "group", size: 128 } }, 8192 / 2 + 64 * 4],
    ["e4m3", {}, 8192],
  ];
  for (const [format, opts, bytes] of cases) {
    const qt = QuantTensor.fromTensor(x, format, opts);
    assert.equal(qt.dataBytes, bytes, format);
    assert.equal(qt.byteSize, bytes + new TextEncoder().encode(JSON.stringify(qt.meta)).length, format);
    assert.equal(qt.parts[0].words.size, Math.ceil((8192 * parseFormat(format).elementBits) / 32), format);
    qt.dispose();
  }
});

Deno.test("QuantTensor: memory scopes release it unless kept or returned", () => {
  const x = tensor(values(64, 2), { shape: [1, 64] });
  const live = () => CPU.liveCount();
  const before = live();
  let dropped: QuantTensor | null = null, kept: QuantTensor | null = null;
  const returned = tidy(() => {
    dropped = QuantTensor.fromTensor(x, "nf4");
    kept = QuantTensor.fromTensor(x, "nf4").keep();
    tidy(() => kept!.dequantize()); // a forward pass inside a scope leaves the frozen weight alone
    return QuantTensor.fromTensor(x, "mxfp4");
  });
  assert.equal(dropped!.disposed, true);
  assert.equal(kept!.disposed, false);
  assert.equal(returned.disposed, false);
  assert.throws(() => dropped!.dequantize(), /quant tensor nf4 \[1,64\]: dequantize\(\) after dispose\(\)/);
  kept!.dispose();
  returned.dispose();
  assert.equal(live(), before);
});

Deno.test("QuantTensor.assignFrom: re-quantizes into the same storage, rounding options per call", async () => {
  const cases: [string, QuantTensorOptions, QuantTensorOptions][] = [
    ["e4m3", {}, { rounding: "stochastic", seed: 5, stream: 2, offset: 64 }],
    ["int4", { granularity: { kind: "group", size: 128 } }, { rounding: "stochastic", seed: 3 }],
    ["nf4", { doubleQuant: true }, {}],
    ["mxfp8_e4m3", { scaleRounding: "ceil" }, { rounding: "nearest-away" }],
  ];
  for (const [format, layout, rounding] of cases) {
    const shape = [4, 256];
    const qt = QuantTensor.fromTensor(tensor(values(1024, 1), { shape }), parseFormat(format), layout);
    const storages = qt.parts.map((p) => p.words.storage);
    const x2 = tensor(values(1024, 2), { shape });
    qt.assignFrom(x2, rounding);
    assert.deepEqual(qt.parts.map((p) => p.words.storage), storages, `${format}: same storage`);
    const want = parseFormat(format).quantDequant(x2, { ...layout, ...rounding });
    assertSameBits(await bitsOf(qt.dequantize()), await bitsOf(want), `${format} after assignFrom`);
    assert.throws(() => qt.assignFrom(tensor(values(512, 3), { shape: [2, 256] })), /does not have shape \[4,256\]/);
    qt.dispose();
  }
});

Deno.test("QuantTensor safetensors: a --pack file loads, a saved file restores, both ways bit-exact", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const w = { dtype: "F32" as const, shape: [4, 128], data: new Uint8Array(values(512, 4).buffer) };
    const input = join(dir, "in.safetensors");
    await writeSafetensors(input, new Map([["layer.w", w]]), { note: "kept" });
    for (const format of ["nf4", "mxfp4", "int4", "e2m3", "nvfp4"]) {
      const packedPath = join(dir, `${format}.packed.safetensors`);
      await quantizeFile(input, packedPath, { format, pack: true });
      // quantize --pack → QuantTensor: the same values as restore().
      const loaded = await loadQuantTensors(packedPath);
      assert.deepEqual([...loaded.quant.keys()], ["layer.w"]);
      const qt = loaded.quant.get("layer.w")!;
      const restored = (await restore(packedPath)).tensors.get("layer.w")!;
      assertSameBits(await bitsOf(qt.dequantize()), new Uint32Array(restored.data.slice().buffer), `${format} load`);
      // QuantTensor → file: restore() reads it back, and its parts are the --pack file's bytes.
      const savedPath = join(dir, `${format}.saved.safetensors`);
      await saveQuantTensors(savedPath, loaded.quant, loaded.plain, loaded.metadata);
      const back = (await restore(savedPath)).tensors.get("layer.w")!;
      assert.deepEqual(back.data, restored.data, `${format} save → restore`);
      const [a, b] = [await readSafetensors(packedPath), await readSafetensors(savedPath)];
      for (const [key, raw] of a.tensors) assert.deepEqual(b.tensors.get(key), raw, `${format} ${key}`);
      assert.equal(b.metadata["lowp.packed.layer.w"], a.metadata["lowp.packed.layer.w"]);
      qt.dispose();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("QuantTensor.fromPacked: parts that do not fit the format fail with the part named", async () => {
  const x = tensor(values(256, 5), { shape: [2, 128] });
  const p = await pack(parseFormat("mxfp4").quantize(x));
  const cases: [typeof p, RegExp][] = [
    [{ ...p, parts: p.parts.slice(0, 1) }, /parts are \[codes\], expected \[codes, scales\]/],
    [{ ...p, shape: [4, 128] }, /part 'codes' has 256 codes, expected 512/],
    [{ ...p, parts: [{ ...p.parts[0], bits: 8 }, p.parts[1]] }, /codes are 8 bits wide, the format's are 4/],
    [{ ...p, format: "nope" }, /unknown format 'nope'/],
    [
      { ...p, meta: { ...p.meta, tile: 1 } },
      /meta 'tile' is not understood .* \(known: blockSize, scaleRounding, axis\)/,
    ],
    [{ ...p, meta: { ...p.meta, axis: 2 } }, /\[2,128\]: mxfp4: axis 2 is out of range for shape \[2,128\]/],
    [{ ...p, meta: { ...p.meta, axis: 0 } }, /blocks of 32 run along axis 0 of shape \[2,128\], whose size is not/],
    [{ ...p, meta: { ...p.meta, axis: "1" } }, /meta 'axis' is '1', not a number/],
    [{ ...p, meta: { ...p.meta, blockSize: 16 } }, /meta 'blockSize' is 16, expected 32/],
  ];
  for (const [bad, re] of cases) assert.throws(() => QuantTensor.fromPacked(bad), re);
});

Deno.test("dequantRuns: runs along another axis give the same values over any split of the range", () => {
  // 3 runs of 4 values, 5 apart, repeated twice: value i is in run blockOf(i, 4, 5).
  const [run, stride, n, bits] = [4, 5, 40, 3];
  const codes = packCodes(Array.from({ length: n }, (_, i) => (i * 5 + 3) % 8), bits);
  for (const smallKeys of [false, true]) {
    const spec = {
      run,
      stride,
      smallKeys,
      keyOf: (r: number) => r % 3,
      valueOf: (k: number) => (c: number) => k * 100 + c,
    };
    const whole = new Uint32Array(n);
    dequantRuns(codes, bits, 0, n, whole, spec);
    for (let i = 0; i < n; i++) {
      const r = Math.floor(Math.floor(i / stride) / run) * stride + (i % stride);
      assert.equal(whole[i], (r % 3) * 100 + (i * 5 + 3) % 8, `value ${i}`);
    }
    for (const cut of [1, 7, 19, 33]) {
      const parts = new Uint32Array(n);
      dequantRuns(codes, bits, 0, cut, parts, spec);
      dequantRuns(codes, bits, cut, n, parts, spec);
      assert.deepEqual(parts, whole, `split at ${cut}`);
    }
  }
});

Deno.test("QuantTensor along axis 0: assignFrom keeps the axis, save/load and restore() give quantDequant's bits", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cases: [string, QuantTensorOptions, number[]][] = [
      ["nf4", { axis: 0 }, [128, 6]],
      ["mxfp4", { axis: 0 }, [64, 5]],
      ["nvfp4", { axis: 0, block2d: true }, [32, 16]],
      ["int4", { granularity: { kind: "group", size: 32 }, axis: 0 }, [64, 3]],
    ];
    for (const [format, opts, shape] of cases) {
      const n = shape.reduce((a, d) => a * d, 1), q = parseFormat(format);
      const x = tensor(values(n, 8), { shape }), x2 = tensor(values(n, 9), { shape });
      const qt = QuantTensor.fromTensor(x, format, opts);
      assert.equal(qt.meta.axis, 0, `${format} meta.axis`);
      // The stored axis is the layout: re-quantizing along it needs no options.
      qt.assignFrom(x2);
      const want = await bitsOf(q.quantDequant(x2, opts));
      assertSameBits(await bitsOf(qt.dequantize()), want, `${format} assignFrom along axis 0`);
      const path = join(dir, `${format}.safetensors`);
      await saveQuantTensors(path, new Map([["w", qt]]));
      const loaded = await loadQuantTensors(path);
      const back = loaded.quant.get("w")!;
      assert.equal(back.meta.axis, 0, `${format} loaded meta.axis`);
      assertSameBits(await bitsOf(back.dequantize()), want, `${format} save → load`);
      const restored = (await restore(path)).tensors.get("w")!;
      assertSameBits(new Uint32Array(restored.data.slice().buffer), want, `${format} save → restore`);
      qt.dispose();
      back.dispose();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("QuantTensor.fromPacked: a tensor packed without meta.axis is blocked along its last axis", async () => {
  const x = tensor(values(3 * 128, 6), { shape: [3, 128] });
  for (
    const [format, opts] of [["nf4", {}], ["mxfp8_e4m3", {}], ["nvfp4", {}], ["uint4", {
      granularity: { kind: "group", size: 64 },
    }]] as [string, QuantTensorOptions][]
  ) {
    const q = parseFormat(format);
    const p = await pack(q.quantize(x, opts));
    assert.equal(p.meta.axis, 1, format);
    const { axis: _, ...older } = p.meta;
    const qt = QuantTensor.fromPacked({ ...p, meta: older });
    assertSameBits(await bitsOf(qt.dequantize()), await bitsOf(q.quantDequant(x, opts)), `${format} without axis`);
    qt.assignFrom(x); // the same layout as the re-quantized meta, which names the axis
    assertSameBits(await bitsOf(qt.dequantize()), await bitsOf(q.quantDequant(x, opts)), `${format} assignFrom`);
    qt.dispose();
  }
});

Deno.test("QuantTensor: a --pack file written along axis 0 loads with its axis and gives restore()'s values", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const w = { dtype: "F32" as const, shape: [64, 96], data: new Uint8Array(values(64 * 96, 10).buffer) };
    const input = join(dir, "in.safetensors");
    await writeSafetensors(input, new Map([["w", w]]));
    for (const [format, granularity] of [["nf4"], ["mxfp4"], ["nvfp4"], ["uint4", "group:32"]]) {
      const packedPath = join(dir, `${format}.packed.safetensors`);
      await quantizeFile(input, packedPath, { format, granularity, pack: true, axis: 0 });
      const qt = (await loadQuantTensors(packedPath)).quant.get("w")!;
      assert.equal(qt.meta.axis, 0, format);
      const restored = (await restore(packedPath)).tensors.get("w")!;
      assertSameBits(await bitsOf(qt.dequantize()), new Uint32Array(restored.data.slice().buffer), `${format} load`);
      qt.dispose();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
