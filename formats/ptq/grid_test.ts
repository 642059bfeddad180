/**
 * The per-group scalar grids against `rtnWeight`, bit for bit, for every
 * format GPTQ takes (random weights plus edge cases: an all-zero weight, a
 * dead output column, a zero input row, huge and tiny values), their stored
 * records against `quantizer.quantize`, and one clear error for each format
 * without a grid per group.
 */
import assert from "node:assert/strict";
import { cpuBackend, tensor } from "@lowp/core";
import { philoxWords } from "@lowp/kernels";
import { gridRtn, scalarGrid } from "./grid.ts";
import { parseWeightSpec, rtnWeight, weightQuantOptions } from "./weight_spec.ts";
import { sameRecord } from "./record_check.ts";

const cpu = cpuBackend();
const IN = 128, OUT = 24;

/** Formats and granularities the grids cover (the INT ones with both sharings). */
const CASES: [string, string | undefined][] = [
  ...["int2", "int3", "int4", "int8", "uint3", "uint4", "uint8"].flatMap((f): [string, string][] => [
    [f, "channel"],
    [f, "group:16"],
  ]),
  ["mxfp8_e4m3", undefined],
  ["mxfp8_e5m2", undefined],
  ["mxfp6_e2m3", undefined],
  ["mxfp6_e3m2", undefined],
  ["mxfp4", undefined],
  ["mxint8", undefined],
  ["nvfp4", undefined],
  ["nf4", undefined],
  ["e4m3", undefined],
  ["e5m2", undefined],
  ["e2m3", undefined],
  ["e3m2", undefined],
  ["e2m1", undefined],
];

/** Gaussian-ish weights from Philox words (sum of uniforms), scaled by `scale`, with a few outliers. */
function randomWeight(seed: number, scale: number): Float32Array {
  const words = philoxWords(new Uint32Array(IN * OUT * 4), seed, 0, 0);
  const w = new Float32Array(IN * OUT);
  for (let i = 0; i < w.length; i++) {
    const s = words[4 * i] + words[4 * i + 1] + words[4 * i + 2] + words[4 * i + 3];
    w[i] = (s / 2 ** 32 - 2) * scale;
  }
  for (let k = 0; k < 6; k++) w[(words[k] >>> 0) % w.length] *= 20; // outliers
  return w;
}

/** The edge-case weights: named so a failure says which one. */
function weights(): [string, Float32Array][] {
  const dead = randomWeight(3, 1);
  for (let r = 0; r < IN; r++) dead[r * OUT + 5] = 0; // output column 5 all zero
  dead.fill(0, 7 * OUT, 8 * OUT); // input row 7 all zero
  const mixed = randomWeight(4, 1);
  for (let r = 0; r < IN; r++) {
    mixed[r * OUT] = 3e38 * (r % 2 ? 1 : -1); // near f32's max: ranges overflow
    mixed[r * OUT + 1] = 1e-41 * (r - 60); // subnormals
    mixed[r * OUT + 2] = -1e-30;
  }
  return [
    ["random", randomWeight(1, 0.05)],
    ["random large", randomWeight(2, 1e4)],
    ["zeros", new Float32Array(IN * OUT)],
    ["dead column and row", dead],
    ["huge and tiny", mixed],
  ];
}

Deno.test("grid round-to-nearest equals rtnWeight bit for bit for every format with a grid", async () => {
  for (const [format, granularity] of CASES) {
    const spec = parseWeightSpec(format, granularity);
    for (const [what, w] of weights()) {
      const t = tensor(w, { backend: cpu, shape: [IN, OUT] });
      const rtn = rtnWeight(t, spec);
      const want = new Uint32Array(new Float32Array(await rtn.data()).buffer);
      const got = new Uint32Array(gridRtn(scalarGrid(spec, w, IN, OUT), w, IN).values.buffer);
      const bad = want.findIndex((b, i) => b !== got[i]);
      assert.equal(
        bad,
        -1,
        `${format} ${granularity ?? ""} on ${what}: element ${bad} (row ${Math.floor(bad / OUT)}, column ${
          bad % OUT
        }) is 0x${got[bad]?.toString(16)}, rtnWeight gives 0x${want[bad]?.toString(16)}`,
      );
      t.dispose();
      rtn.dispose();
    }
  }
});

Deno.test("the grid's record of RTN equals quantizer.quantize: parts, codes, scales and meta", async () => {
  for (const [format, granularity] of CASES) {
    const spec = parseWeightSpec(format, granularity);
    const { quantizer, options } = weightQuantOptions(spec);
    for (const [what, w] of weights()) {
      const t = tensor(w, { backend: cpu, shape: [IN, OUT] });
      const grid = scalarGrid(spec, w, IN, OUT);
      const rtn = gridRtn(grid, w, IN);
      const got = grid.record(rtn.groups, rtn.codes, cpu), want = quantizer.quantize(t, options);
      await sameRecord(got, want, `${format} ${granularity ?? ""} on ${what}`);
      for (const p of [...got.parts, ...want.parts]) p.codes.dispose();
      t.dispose();
    }
  }
});

Deno.test("formats without a scalar grid per group give one error naming the format", () => {
  const w = new Float32Array(IN * OUT);
  for (
    const [format, why] of [
      ["e8m0", /scale format/],
      ["ue4m3", /scale format/],
      ["ue5m3", /scale format/],
      ["flex16+5", /history/],
      ["nf4-dq", /double quantization/],
    ] as const
  ) {
    assert.throws(
      () => scalarGrid({ format, sharing: format === "nf4-dq" ? "block" : "none" }, w, IN, OUT, "h.0.mlp.c_fc"),
      (e: Error) =>
        e.message.includes("h.0.mlp.c_fc") && e.message.includes(format) && why.test(e.message) &&
        e.message.includes("no scalar grid"),
      format,
    );
  }
});

Deno.test("a group size that does not divide the input width is an error naming the layer and the width", () => {
  const w = new Float32Array(96 * OUT);
  assert.throws(
    () => scalarGrid(parseWeightSpec("int4", "group:64"), w, 96, OUT, "h.1.attn.c_attn"),
    /h\.1\.attn\.c_attn: int4 group:64 needs an input width that is a multiple of 64; the weight is \[96, 24\]/,
  );
  assert.throws(() => scalarGrid(parseWeightSpec("mxfp4"), new Float32Array(48 * OUT), 48, OUT), /multiple of 32/);
});
