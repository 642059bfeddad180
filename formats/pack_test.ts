/** Bit packing: exact round trips at every width, the documented layout, exact sizes, the safetensors entries. */
import assert from "node:assert/strict";
import { decodeSafetensors, encodeSafetensors, type RawTensor, tensor } from "@lowp/core";
import { floatQuantizer } from "./float.ts";
import {
  pack,
  packCodes,
  packedBytes,
  packedEntries,
  type PackedPart,
  packedWords,
  unpack,
  unpackCodes,
  unpackFile,
} from "./pack.ts";
import type { Quantized } from "./spec.ts";

/** Deterministic codes below 2^bits (xorshift32; the top bits matter most at width 32). */
function randomCodes(count: number, bits: number, seed: number): Uint32Array {
  let s = seed >>> 0 || 1;
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = bits === 32 ? s : s & (2 ** bits - 1);
  }
  return out;
}

const WIDTHS = [1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 31, 32];
const COUNTS = [0, 1, 7, 31, 32, 33, 100, 1001];

Deno.test("packCodes/unpackCodes: exact round trip at every width, counts not a multiple of 32/bits", () => {
  for (const bits of WIDTHS) {
    for (const count of COUNTS) {
      const codes = randomCodes(count, bits, bits * 1000 + count);
      const words = packCodes(codes, bits);
      assert.equal(words.length, packedWords(count, bits), `words for ${count}×${bits}`);
      assert.deepEqual(unpackCodes(words, count, bits), codes, `${count} codes of ${bits} bits`);
      // The padding above the last value is zero.
      const used = (count * bits) % 32;
      if (used) assert.equal(words[words.length - 1] >>> used, 0, `padding of ${count}×${bits}`);
    }
  }
});

Deno.test("packCodes: the documented little-endian layout", () => {
  const cases: { bits: number; codes: number[]; words: number[] }[] = [
    { bits: 4, codes: [1, 2, 3], words: [0x321] },
    { bits: 8, codes: [1, 2, 3, 4, 5], words: [0x04030201, 0x05] },
    { bits: 16, codes: [0xabcd, 0x1234], words: [0x1234abcd] },
    { bits: 2, codes: [3, 0, 1, 2], words: [0b10_01_00_11] },
    // 11 three-bit 7s: 33 ones, the last one spills into word 1.
    { bits: 3, codes: Array(11).fill(7), words: [0xffffffff, 1] },
    // Value 6 of width 5 sits at bits 30..34: its low 2 bits top word 0, its high 3 bits start word 1.
    { bits: 5, codes: [0, 0, 0, 0, 0, 0, 0b11101], words: [0b01 << 30 >>> 0, 0b111] },
    { bits: 32, codes: [0xdeadbeef, 7], words: [0xdeadbeef, 7] },
  ];
  for (const { bits, codes, words } of cases) {
    assert.deepEqual([...packCodes(codes, bits)], words, `${bits}-bit ${codes}`);
  }
});

Deno.test("packCodes/unpackCodes: bad input throws", () => {
  const cases: [() => unknown, RegExp][] = [
    [() => packCodes([16], 4), /code 16 at index 0 does not fit in 4 bits/],
    [() => packCodes([1.5], 4), /does not fit/],
    [() => packCodes([1], 0), /bits must be an integer from 1 to 32/],
    [() => packCodes([1], 33), /bits must be/],
    [() => unpackCodes(new Uint32Array(1), 9, 4), /9 codes of 4 bits need 2 words, got 1/],
  ];
  for (const [fn, re] of cases) assert.throws(fn, re);
});

Deno.test("packedBytes: Σ ceil(count·bits/8), u32 padding not counted", () => {
  const part = (count: number, bits: number) => ({
    name: "p",
    bits,
    format: "x",
    count,
    shape: [count],
    words: new Uint32Array(packedWords(count, bits)),
  });
  const cases: [PackedPart[], number][] = [
    [[part(3, 4)], 2],
    [[part(33, 3)], 13], // 99 bits
    [[part(0, 7)], 0],
    [[part(5, 32)], 20],
    [[part(4096, 4), part(128, 8)], 2048 + 128], // MXFP4-like: 4-bit codes + one E8M0 scale per 32
    [[part(1, 1), part(1, 1)], 2], // each part rounds up on its own
  ];
  for (const [parts, bytes] of cases) {
    assert.equal(
      packedBytes({ format: "x", shape: [], meta: {}, parts }),
      bytes,
      JSON.stringify(parts.map((p) => [p.count, p.bits])),
    );
  }
});

/** A Quantized with hand-made parts of every width (codes as u32 tensors on the CPU backend). */
function craftedQuantized(count: number): Quantized {
  return {
    format: "test",
    shape: [count],
    meta: { granularity: "group:3", zero: -1.5 },
    parts: WIDTHS.map((bits) => ({
      name: `w${bits}`,
      bits,
      format: `u${bits}`,
      codes: tensor(randomCodes(count, bits, bits), { shape: [count], dtype: "u32" }),
    })),
  };
}

Deno.test("pack/unpack: a Quantized with parts of every width comes back exactly", async () => {
  for (const count of [1, 37, 1000]) {
    const q = craftedQuantized(count);
    const p = await pack(q);
    assert.equal(packedBytes(p), WIDTHS.reduce((s, b) => s + Math.ceil((count * b) / 8), 0));
    const back = unpack(p);
    assert.equal(back.format, "test");
    assert.deepEqual(back.shape, [count]);
    assert.deepEqual(back.meta, q.meta);
    for (const [i, part] of back.parts.entries()) {
      assert.equal(part.codes.dtype, "u32");
      assert.deepEqual(part.codes.shape, [count]);
      assert.deepEqual(await part.codes.data(), await q.parts[i].codes.data(), `part ${part.name}`);
      assert.deepEqual([part.name, part.bits, part.format], [q.parts[i].name, q.parts[i].bits, q.parts[i].format]);
    }
  }
});

Deno.test("pack/unpack: e4m3 codes dequantize to the same bits as quantDequant", async () => {
  const e4m3 = floatQuantizer("e4m3")!;
  const values = Float32Array.from({ length: 203 }, (_, i) => Math.sin(i * 1.7) * 2 ** ((i % 23) - 11));
  const x = tensor(values, { shape: [7, 29] });
  const p = await pack(e4m3.quantize(x));
  assert.equal(packedBytes(p), 203);
  const y = e4m3.dequantize(unpack(p));
  assert.deepEqual(y.shape, [7, 29]);
  const bits = (t: Float32Array) => new Uint32Array(t.buffer, t.byteOffset, t.length);
  assert.deepEqual(bits((await y.data()) as Float32Array), bits((await e4m3.quantDequant(x).data()) as Float32Array));
});

Deno.test("packedEntries/unpackFile: through safetensors bytes and back, other tensors untouched", async () => {
  const q = craftedQuantized(45);
  const p = await pack(q);
  const { tensors, metadata } = packedEntries("layer.0.w", p);
  const other: RawTensor = { dtype: "I32", shape: [2], data: new Uint8Array(8).fill(3) };
  const bytes = encodeSafetensors(new Map([...tensors, ["bias", other]]), {
    [metadata[0]]: metadata[1],
    "lowp.packing": "lsb-first-u8-v1",
    note: "kept",
  });
  const file = decodeSafetensors(bytes, "mem");
  // One U8 tensor per part, exactly ceil(count·bits/8) bytes each.
  for (const bits of WIDTHS) {
    const raw = file.tensors.get(`layer.0.w.w${bits}`)!;
    assert.deepEqual([raw.dtype, raw.shape], ["U8", [Math.ceil((45 * bits) / 8)]]);
  }
  const back = unpackFile(file, "mem");
  assert.deepEqual([...back.plain.keys()], ["bias"]);
  assert.deepEqual(back.metadata, { note: "kept" });
  const restored = back.packed.get("layer.0.w")!;
  assert.deepEqual(restored.meta, p.meta);
  for (const [i, part] of restored.parts.entries()) {
    assert.deepEqual(part.words, p.parts[i].words, part.name);
    assert.deepEqual([part.count, part.shape, part.bits], [45, [45], p.parts[i].bits]);
  }
});

Deno.test("unpackFile: a damaged header or part fails with the tensor named", async () => {
  const p = await pack(craftedQuantized(10));
  const { tensors, metadata } = packedEntries("w", p);
  const header = JSON.parse(metadata[1]);
  const file = (h: unknown, ts = tensors, layout = "lsb-first-u8-v1") => ({
    tensors: new Map(ts),
    metadata: { "lowp.packing": layout, "lowp.packed.w": typeof h === "string" ? h : JSON.stringify(h) },
  });
  const cases: [ReturnType<typeof file>, RegExp][] = [
    [file("{"), /packed tensor 'w': metadata is not JSON/],
    [file({ ...header, parts: "x" }), /needs format, shape and parts/],
    [file(header, tensors, "v0"), /lowp.packing is "v0"/],
    [file({ ...header, parts: [{ ...header.parts[0], count: 11 }] }), /count = shape size/],
    [file(header, tensors.slice(1)), /part tensor 'w.w1' is missing/],
    [
      file({ ...header, parts: [{ ...header.parts[3], tensor: "w.w1" }] }),
      /w.w1': 10 codes of 4 bits need 5 bytes, got 2/,
    ],
  ];
  for (const [f, re] of cases) assert.throws(() => unpackFile(f, "f.safetensors"), re);
});
