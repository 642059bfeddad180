/**
 * Block and group quantizers along any axis (option `axis`): for every such format, quantizing along a
 * non-last axis gives the same bits as moving that axis last (on the host), quantizing along the last
 * axis and moving it back, in every rounding mode the format offers (stochastic draws follow the blocked
 * order); codes and scales are the transposed route's too, with scales shaped `shape[axis] / block`;
 * `dequantize(quantize(x))` equals `quantDequant(x)`; and the fused CPU path (strided tiles), the CPU
 * word kernels and WebGPU agree bit for bit. Shapes: a 2-D `W[in, out]` along axis 0 (`out` not a
 * multiple of 4, so tiles have ragged rows) and a 3-D tensor along its middle axis.
 *
 * @module
 */
import assert from "node:assert/strict";
import { type Tensor, tensor } from "@lowp/core";
import { type Backend, createCpuBackend, philoxWords } from "@lowp/kernels";
import { assertSameBits, bitsOf, gpuBackendOrSkip } from "../tests/helpers.ts";
import type { Rounding } from "./element.ts";
import { fakeQuant } from "./fake_quant.ts";
import { HOST_QUANT_AVAILABLE } from "./host_quant.ts";
import { nvfp4BlockScaleBits, nvfp4Quantizer } from "./nvfp4.ts";
import { parseFormat } from "./registry.ts";
import { encodeScaleBits, SCALE_FORMATS } from "./scales.ts";
import { type Granularity, parseGranularity, type Quantized, type QuantizeOptions } from "./spec.ts";

/** One format setting: its name, block (or group) size along the axis, options, and roundings offered. */
interface AxisCase {
  readonly format: string;
  readonly block: number;
  readonly opts?: QuantizeOptions & { scaleRounding?: string; doubleQuant?: boolean };
  readonly roundings: readonly Rounding[];
}

const ALL: readonly Rounding[] = ["nearest", "nearest-away", "stochastic"];
const group = (text: string): { granularity: Granularity } => ({ granularity: parseGranularity(text) });

/** Every blocked or grouped quantizer (the fused CPU path covers the MX floats, NVFP4, NF4 and INT-k). */
const CASES: readonly AxisCase[] = [
  ...["mxfp4", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxint8"].map((format) => ({
    format,
    block: 32,
    roundings: ALL,
  })),
  { format: "mxfp8_e4m3", block: 32, opts: { scaleRounding: "rceil" }, roundings: ["nearest"] },
  { format: "nvfp4", block: 16, roundings: ALL },
  { format: "nf4", block: 64, roundings: ["nearest"] },
  { format: "int4", block: 32, opts: group("group:32"), roundings: ALL },
  { format: "int8", block: 64, opts: group("group:64"), roundings: ["nearest", "stochastic"] },
  { format: "uint4", block: 8, opts: group("group:8"), roundings: ["nearest", "stochastic"] },
  { format: "int3", block: 2, opts: group("group:2"), roundings: ["nearest"] }, // not a multiple of 4: word kernels
];

/** [shape, axis] pairs: W[in, out] along `in`, a 3-D tensor along its middle axis (given as -2). */
const SHAPES: readonly [number[], number][] = [
  [[128, 21], 0],
  [[3, 192, 5], -2],
];

/** Values whose magnitudes vary along every axis (so blocks along different axes differ), with zeros and ties. */
function inputs(n: number, seed: number): Float32Array {
  const w = philoxWords(new Uint32Array(2 * n), seed, 0xa1, 0);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const mag = 2 ** ((w[2 * i] % 13) - 6);
    const frac = i % 11 === 0 ? 0.5 + (w[2 * i + 1] % 8) / 16 : w[2 * i + 1] / 2 ** 32; // ties on the grids
    out[i] = i % 37 === 0 ? 0 : (w[2 * i] & 1 ? -1 : 1) * frac * mag;
  }
  return out;
}

/** `data` of `shape` with `axis` moved last (row-major), and the new shape. */
function moveAxisLast<T extends Float32Array | Uint32Array>(
  data: T,
  shape: readonly number[],
  axis: number,
): [T, number[]] {
  const before = shape.slice(0, axis).reduce((a, b) => a * b, 1), len = shape[axis];
  const after = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const out = new (data.constructor as new (n: number) => T)(data.length);
  for (let o = 0; o < before; o++) {
    for (let l = 0; l < len; l++) {
      for (let j = 0; j < after; j++) out[(o * after + j) * len + l] = data[(o * len + l) * after + j];
    }
  }
  return [out, [...shape.slice(0, axis), ...shape.slice(axis + 1), len]];
}

/** Inverse of {@link moveAxisLast}: `data` of the moved shape put back to `shape`. */
function moveLastTo(data: Uint32Array, shape: readonly number[], axis: number): Uint32Array {
  const before = shape.slice(0, axis).reduce((a, b) => a * b, 1), len = shape[axis];
  const after = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const out = new Uint32Array(data.length);
  for (let o = 0; o < before; o++) {
    for (let l = 0; l < len; l++) {
      for (let j = 0; j < after; j++) out[(o * len + l) * after + j] = data[(o * after + j) * len + l];
    }
  }
  return out;
}

const part = (q: Quantized, name: string): Tensor => q.parts.find((p) => p.name === name)!.codes;

/** Everything one backend gives for one case, shape and rounding (bits, all in x's layout). */
interface Result {
  values: Uint32Array;
  transposed: Uint32Array;
  codes: Uint32Array;
  transposedCodes: Uint32Array;
  roundTrip: Uint32Array;
  scales: Uint32Array;
  transposedScales: Uint32Array;
  scaleShape: readonly number[];
}

async function run(backend: Backend, c: AxisCase, shape: number[], axis: number, rounding: Rounding): Promise<Result> {
  const q = parseFormat(c.format);
  const a = axis < 0 ? axis + shape.length : axis;
  const data = inputs(shape.reduce((p, d) => p * d, 1), 7 + a);
  const [moved, movedShape] = moveAxisLast(data, shape, a);
  const opts = { ...c.opts, rounding, seed: 5, stream: 2, offset: 9 };
  const x = tensor(data, { shape, backend }), xt = tensor(moved, { shape: movedShape, backend });
  const stored = q.quantize(x, { ...opts, axis }), storedT = q.quantize(xt, opts);
  const scaleName = stored.parts[1].name;
  const scaleShape = part(stored, scaleName).shape;
  const scalesT = await bitsOf(part(storedT, scaleName));
  // Scales of the moved route have shape [..., shape[a] / block]; put that axis back where `a` was.
  const movedScaleShape = [...shape.slice(0, a), ...shape.slice(a + 1), shape[a] / c.block];
  const scaleLayout = [...shape.slice(0, a), shape[a] / c.block, ...shape.slice(a + 1)];
  const result: Result = {
    values: await bitsOf(q.quantDequant(x, { ...opts, axis })),
    transposed: moveLastTo(await bitsOf(q.quantDequant(xt, opts)), shape, a),
    codes: await bitsOf(part(stored, "codes")),
    transposedCodes: moveLastTo(await bitsOf(part(storedT, "codes")), shape, a),
    roundTrip: await bitsOf(q.dequantize(stored)),
    scales: await bitsOf(part(stored, scaleName)),
    transposedScales: scalesT.length === 1 ? scalesT : moveLastTo(scalesT, scaleLayout, a),
    scaleShape,
  };
  assert.equal(
    part(storedT, scaleName).size,
    movedScaleShape.reduce((p, d) => p * d, 1),
    `${c.format}: moved scales`,
  );
  assert.equal(stored.meta.axis, a, `${c.format}: meta.axis`);
  return result;
}

const label = (c: AxisCase, shape: number[], axis: number, r: Rounding) =>
  `${c.format}${c.opts ? ` ${JSON.stringify(c.opts)}` : ""} [${shape}] axis ${axis} ${r}`;

/** Runs every case on `backend`, checks the transpose identity and the round trip, returns the results by label. */
async function checkBackend(backend: Backend): Promise<Map<string, Result>> {
  const out = new Map<string, Result>();
  for (const c of CASES) {
    for (const [shape, axis] of SHAPES) {
      for (const r of c.roundings) {
        const what = `${backend.name}: ${label(c, shape, axis, r)}`;
        const got = await run(backend, c, shape, axis, r);
        assertSameBits(got.values, got.transposed, `${what}: values vs the transposed route`);
        assertSameBits(got.codes, got.transposedCodes, `${what}: codes vs the transposed route`);
        assertSameBits(got.scales, got.transposedScales, `${what}: scales vs the transposed route`);
        assertSameBits(got.roundTrip, got.values, `${what}: dequantize(quantize(x)) vs quantDequant(x)`);
        const a = axis < 0 ? axis + shape.length : axis;
        const want = c.format === "nf4"
          ? [shape.reduce((p, d) => p * d, 1) / c.block]
          : shape.map((d, k) => k === a ? d / c.block : d);
        assert.deepEqual(got.scaleShape, want, `${what}: scale shape`);
        out.set(label(c, shape, axis, r), got);
      }
    }
  }
  return out;
}

const fused = createCpuBackend();
const reference = createCpuBackend({ kernels: "reference" });

Deno.test("axis: every block and group format along a non-last axis equals the transposed route (CPU, both paths)", async () => {
  const a = await checkBackend(reference);
  const b = await checkBackend(fused);
  for (const [k, r] of a) {
    assertSameBits(b.get(k)!.values, r.values, `fused vs reference: ${k}`);
    assertSameBits(b.get(k)!.codes, r.codes, `fused vs reference codes: ${k}`);
  }
});

Deno.test("axis: the fused CPU path takes strided blocks itself (no word kernel runs)", async () => {
  if (!HOST_QUANT_AVAILABLE) return console.error("axis: fused host kernels unavailable; skipped");
  const fusedOnly: Backend = {
    ...createCpuBackend(),
    runWords(kernel) {
      throw new Error(`word kernel '${kernel.name}' ran: the fused host path did not apply`);
    },
  };
  const x = (shape: number[], backend: Backend) =>
    tensor(inputs(shape.reduce((p, d) => p * d, 1), 3), { shape, backend });
  // [64, 1030]: rows longer than one tile (CHUNK / block columns), so tiles split rows and the last is short.
  for (const shape of [[128, 24], [64, 1030]]) {
    for (const [format, opts] of [["mxfp4", {}], ["nvfp4", {}], ["nf4", {}], ["int4", group("group:32")]] as const) {
      for (const rounding of format === "nf4" ? ["nearest" as const] : ["nearest" as const, "stochastic" as const]) {
        const o = { ...opts, rounding, seed: 4, axis: 0 };
        const y = parseFormat(format).quantDequant(x(shape, fusedOnly), o);
        const want = parseFormat(format).quantDequant(x(shape, reference), o);
        assertSameBits(await bitsOf(y), await bitsOf(want), `${format} [${shape}] ${rounding}`);
      }
    }
  }
});

Deno.test("webgpu: quantizers along a non-last axis are bit-identical to the CPU", async () => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  const cpu = await checkBackend(reference);
  const got = await checkBackend(gpu);
  for (const [k, r] of cpu) {
    assertSameBits(got.get(k)!.values, r.values, `webgpu vs cpu: ${k}`);
    assertSameBits(got.get(k)!.codes, r.codes, `webgpu vs cpu codes: ${k}`);
    assertSameBits(got.get(k)!.scales, r.scales, `webgpu vs cpu scales: ${k}`);
  }
});

Deno.test("axis: the default is the last axis (no axis, -1 and rank - 1 give the same bits; meta.axis is rank - 1)", async () => {
  const shape = [4, 64], x = tensor(inputs(256, 1), { shape, backend: reference });
  for (const c of CASES) {
    const q = parseFormat(c.format), opts = { ...c.opts, rounding: "stochastic" as Rounding, seed: 3 };
    if (!c.roundings.includes("stochastic")) opts.rounding = "nearest";
    const plain = await bitsOf(q.quantDequant(x, opts));
    assertSameBits(await bitsOf(q.quantDequant(x, { ...opts, axis: -1 })), plain, `${c.format} axis -1`);
    assertSameBits(await bitsOf(q.quantDequant(x, { ...opts, axis: 1 })), plain, `${c.format} axis 1`);
    const stored = q.quantize(x, opts);
    assert.equal(stored.meta.axis, 1, `${c.format}: meta.axis of the default`);
  }
});

Deno.test("axis: an axis out of range or not divisible by the block throws naming format, shape and axis", () => {
  const x = tensor(new Float32Array(64 * 6), { shape: [64, 6], backend: reference });
  for (
    const [format, opts] of [
      ["mxfp4", {}],
      ["nvfp4", {}],
      ["nf4", {}],
      ["int4", group("group:32")],
      ["e4m3", {}],
      ["int8", {}],
      ["flex16+5", {}],
      ["e8m0", {}],
    ] as const
  ) {
    for (const axis of [2, -3, 0.5]) {
      assert.throws(
        () => parseFormat(format).quantDequant(x, { ...opts, axis }),
        (e: Error) => e.message.includes(format) && e.message.includes("[64,6]") && e.message.includes(`axis ${axis}`),
        `${format} axis ${axis}`,
      );
    }
  }
  for (const format of ["mxfp4", "nvfp4", "nf4"]) {
    assert.throws(
      () => parseFormat(format).quantDequant(x, { axis: 1 }),
      (e: Error) => e.message.includes(format) && e.message.includes("6]"),
      `${format}: 6 values along axis 1`,
    );
  }
  assert.throws(() => parseFormat("int4").quantDequant(x, { ...group("group:4"), axis: 1 }), /group size 4/);
});

Deno.test("axis: formats without blocks ignore an in-range axis; channel:AXIS keeps one scale per index of AXIS", async () => {
  const x = tensor(inputs(64 * 6, 2), { shape: [64, 6], backend: reference });
  for (
    const [format, opts] of [
      ["e4m3", {}],
      ["int8", {}],
      ["int8", group("channel:1")],
      ["flex16+5", {}],
      ["ue4m3", {}],
    ] as const
  ) {
    const q = parseFormat(format);
    assertSameBits(
      await bitsOf(q.quantDequant(x, { ...opts, axis: 0 })),
      await bitsOf(q.quantDequant(x, opts)),
      format,
    );
  }
  const perColumn = parseFormat("int8").quantize(x, group("channel:1"));
  assert.deepEqual(perColumn.parts[1].codes.shape, [6]);
});

Deno.test("axis: nf4 double quantization along axis 0 keeps the transposed route's codes and round-trips", async () => {
  const q = parseFormat("nf4-dq");
  for (const backend of [reference, fused]) {
    const shape = [256, 9], data = inputs(256 * 9, 4);
    const [moved, movedShape] = moveAxisLast(data, shape, 0);
    const stored = q.quantize(tensor(data, { shape, backend }), { axis: 0 });
    const storedT = q.quantize(tensor(moved, { shape: movedShape, backend }));
    assertSameBits(
      await bitsOf(part(stored, "codes")),
      moveLastTo(await bitsOf(part(storedT, "codes")), shape, 0),
      "nf4-dq codes",
    );
    const x = tensor(data, { shape, backend });
    assertSameBits(
      await bitsOf(q.dequantize(stored)),
      await bitsOf(q.quantDequant(x, { axis: 0 })),
      "nf4-dq round trip",
    );
  }
});

/** The f32 of bits `bits` (for messages). */
const f32 = (bits: number) => new Float32Array(Uint32Array.of(bits).buffer)[0];

Deno.test("nvfp4 block2d: one scale per 16 × 16 tile, the same bits along either axis and after a transpose", async () => {
  const q = nvfp4Quantizer("nvfp4")!;
  const gpu = await gpuBackendOrSkip();
  for (const backend of [reference, fused, ...(gpu ? [gpu] : [])]) {
    for (const shape of [[64, 48], [2, 32, 16]]) {
      const rank = shape.length, rows = shape[rank - 2], cols = shape[rank - 1];
      const data = inputs(shape.reduce((p, d) => p * d, 1), 11);
      const x = tensor(data, { shape, backend });
      const what = `${backend.name} [${shape}]`;
      const alongLast = await bitsOf(q.quantDequant(x, { block2d: true }));
      assertSameBits(await bitsOf(q.quantDequant(x, { block2d: true, axis: -2 })), alongLast, `${what}: axis -2 vs -1`);
      const [moved, movedShape] = moveAxisLast(data, shape, rank - 2); // swaps the last two axes
      const t = await bitsOf(q.quantDequant(tensor(moved, { shape: movedShape, backend }), { block2d: true }));
      assertSameBits(moveLastTo(t, shape, rank - 2), alongLast, `${what}: transposed route`);
      for (const rounding of ["nearest", "stochastic"] as const) {
        const opts = { block2d: true, axis: -2, rounding, seed: 8 };
        const stored = q.quantize(x, opts);
        assertSameBits(
          await bitsOf(q.dequantize(stored)),
          await bitsOf(q.quantDequant(x, opts)),
          `${what} ${rounding}`,
        );
        assert.equal(stored.meta.block2d, 1);
      }
      // Scales (one per 1 × 16 block along the last axis) are those of the tile's amax: the reference formula.
      const stored = q.quantize(x, { block2d: true });
      const scales = await bitsOf(part(stored, "scales"));
      const st = (await bitsOf(part(stored, "tensor_scale")))[0];
      const words = new Uint32Array(data.buffer);
      for (let b = 0; b < scales.length; b++) {
        const per = cols / 16, col = (b % per) * 16, row = Math.floor(b / per) % rows, mat = Math.floor(b / per / rows);
        const top = row - (row % 16);
        let amax = 0;
        for (let r = top; r < top + 16; r++) {
          for (let c = col; c < col + 16; c++) amax = Math.max(amax, words[(mat * rows + r) * cols + c] & 0x7fffffff);
        }
        const want = encodeScaleBits(nvfp4BlockScaleBits(amax, st), SCALE_FORMATS.ue4m3);
        assert.equal(scales[b], want, `${what}: scale ${b} (tile amax ${f32(amax)})`);
      }
    }
  }
  const x = tensor(new Float32Array(64 * 24), { shape: [64, 24], backend: reference });
  assert.throws(() => q.quantDequant(x, { block2d: true, axis: 0 }), /block2d.*\[64,24\]/);
  const y = tensor(new Float32Array(32 * 2 * 16), { shape: [32, 2, 16], backend: reference });
  assert.throws(() => q.quantDequant(y, { block2d: true, axis: 0 }), /block2d.*axis 0/);
});

Deno.test("axis: fakeQuant passes the axis to its quantizer (forward equals quantDequant along that axis)", async () => {
  const x = tensor(inputs(128 * 64, 6), { shape: [128, 64], backend: fused });
  for (const format of ["mxfp4", "nvfp4", "nf4"]) {
    const q = parseFormat(format);
    const want = await bitsOf(q.quantDequant(x, { axis: 0 }));
    assertSameBits(await bitsOf(fakeQuant(x, q, { axis: 0 })), want, format);
    assert.notDeepEqual(await bitsOf(fakeQuant(x, q)), want, `${format}: the last axis gives other bits`);
  }
});
