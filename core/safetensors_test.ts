import assert from "node:assert/strict";
import {
  bytesPerElement,
  decodeSafetensors,
  encodeSafetensors,
  MAX_HEADER_BYTES,
  type RawTensor,
  readSafetensors,
  SafetensorsError,
  writeSafetensors,
} from "./safetensors.ts";

const u8 = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function sample(): Record<string, RawTensor> {
  return {
    weight: { dtype: "F32", shape: [2, 3], data: u8(new Float32Array([1, -2, 3.5, Math.PI, -0, NaN])) },
    ids: { dtype: "I32", shape: [3], data: u8(new Int32Array([-1, 0, 2 ** 31 - 1])) },
    mask: { dtype: "U8", shape: [5], data: new Uint8Array([0, 1, 2, 254, 255]) },
    scale: { dtype: "F32", shape: [], data: u8(new Float32Array([0.125])) },
    empty: { dtype: "F16", shape: [0], data: new Uint8Array(0) },
  };
}

/** Builds a file from a literal header object and data bytes, bypassing the writer's validation. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  return withHeaderBytes(json, data);
}

function withHeaderBytes(json: Uint8Array, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function rejects(bytes: Uint8Array, re: RegExp) {
  assert.throws(() => decodeSafetensors(bytes, "bad.safetensors"), (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${e}`);
    assert.equal(e.name, "SafetensorsError");
    assert.match(e.message, /^bad\.safetensors: /);
    assert.match(e.message, re);
    return true;
  });
}

Deno.test("round-trip preserves bytes, shapes, dtypes and metadata", () => {
  const input = sample();
  const meta = { format: "pt", step: "42" };
  const out = decodeSafetensors(encodeSafetensors(input, meta));
  assert.deepEqual(out.metadata, meta);
  assert.deepEqual([...out.tensors.keys()].sort(), Object.keys(input).sort());
  for (const [name, t] of Object.entries(input)) {
    const got = out.tensors.get(name)!;
    assert.equal(got.dtype, t.dtype);
    assert.deepEqual(got.shape, t.shape);
    assert.deepEqual(got.data, new Uint8Array(t.data)); // bit-exact, NaN and -0 included
  }
  assert.deepEqual(out.tensors.get("scale")!.shape, []);
  assert.equal(out.tensors.get("empty")!.data.length, 0);
});

Deno.test("decoded tensors own their bytes", () => {
  const bytes = encodeSafetensors(sample());
  const t = decodeSafetensors(bytes).tensors.get("mask")!;
  assert.notEqual(t.data.buffer, bytes.buffer);
  assert.equal(t.data.byteOffset, 0);
  assert.equal(t.data.buffer.byteLength, 5);
});

Deno.test("encoding is deterministic regardless of insertion order", () => {
  const a = sample();
  const reversed = new Map(Object.entries(a).reverse());
  assert.deepEqual(encodeSafetensors(reversed, { b: "2", a: "1" }), encodeSafetensors(a, { b: "2", a: "1" }));
  // Data buffer is in name order with contiguous offsets.
  const bytes = encodeSafetensors(a);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  let end = 0;
  for (const name of Object.keys(a).sort()) {
    assert.deepEqual(header[name].data_offsets, [end, end + a[name].data.length]);
    end += a[name].data.length;
  }
  assert.equal(bytes.length, 8 + n + end);
});

Deno.test("header is space-padded so data starts 8-byte aligned", () => {
  for (let len = 1; len <= 9; len++) {
    const name = "x".repeat(len); // vary header length across all residues mod 8
    const bytes = encodeSafetensors({ [name]: { dtype: "U8", shape: [1], data: new Uint8Array([7]) } });
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal((8 + n) % 8, 0);
    assert.equal(bytes[8 + n], 7);
    assert.match(new TextDecoder().decode(bytes.subarray(8, 8 + n)), /^\{.*\} *$/);
  }
});

Deno.test("encode rejects data whose length does not match the shape", () => {
  assert.throws(
    () => encodeSafetensors({ w: { dtype: "F32", shape: [2, 2], data: new Uint8Array(12) } }),
    (e: unknown) => e instanceof SafetensorsError && /"w".*12 bytes.*needs 16/.test(e.message),
  );
});

Deno.test("bytesPerElement covers every dtype", () => {
  assert.equal(bytesPerElement("F64"), 8);
  assert.equal(bytesPerElement("BF16"), 2);
  assert.equal(bytesPerElement("BOOL"), 1);
  assert.equal(bytesPerElement("F8_E4M3"), 1);
  assert.equal(bytesPerElement("F8_E5M2"), 1);
  assert.equal(bytesPerElement("U64"), 8);
});

Deno.test("decodes a hand-built byte vector", () => {
  const header = '{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  '; // 54 chars + 2 pad spaces
  assert.equal(header.length, 56);
  const bytes = new Uint8Array([
    ...[56, 0, 0, 0, 0, 0, 0, 0], // u64 LE header length
    ...new TextEncoder().encode(header),
    ...[0x00, 0x00, 0x80, 0x3f], // 1.0f
    ...[0x00, 0x00, 0x00, 0x40], // 2.0f
  ]);
  const { tensors, metadata } = decodeSafetensors(bytes);
  assert.deepEqual(metadata, {});
  const t = tensors.get("t")!;
  assert.equal(t.dtype, "F32");
  assert.deepEqual(t.shape, [2]);
  assert.deepEqual([...new Float32Array(t.data.buffer)], [1, 2]);
  assert.deepEqual(encodeSafetensors(tensors), bytes); // the writer emits exactly this layout
});

Deno.test("write + read through a file leaves no .tmp behind", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = await Deno.makeTempFile({ dir, suffix: ".safetensors" });
    await writeSafetensors(path, sample(), { note: "hi" });
    const out = await readSafetensors(path);
    assert.deepEqual(out.metadata, { note: "hi" });
    assert.deepEqual(out.tensors.get("ids")!.data, sample().ids.data);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), [path.slice(dir.length + 1)]);
    await Deno.writeFile(path, new Uint8Array(3));
    await assert.rejects(readSafetensors(path), (e: unknown) => {
      return e instanceof SafetensorsError && e.message.startsWith(`${path}: truncated`);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const f32 = (begin: number, end: number, shape = [(end - begin) / 4]) => ({
  dtype: "F32",
  shape,
  data_offsets: [begin, end],
});

Deno.test("rejects truncated files", () => {
  rejects(new Uint8Array(5), /truncated: 5 bytes/);
  const good = encodeSafetensors(sample());
  const n = Number(new DataView(good.buffer).getBigUint64(0, true));
  rejects(good.slice(0, 8 + n - 10), /truncated: header needs/); // cut in the header
  rejects(good.slice(0, good.length - 3), /past end of data|gap at end/); // cut in the data
});

Deno.test("rejects huge header length", () => {
  const bytes = new Uint8Array(16);
  new DataView(bytes.buffer).setBigUint64(0, 0xffff_ffff_ffff_ffffn, true);
  rejects(bytes, /header too large/);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(MAX_HEADER_BYTES + 1), true);
  rejects(bytes, /header too large/);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(MAX_HEADER_BYTES), true);
  rejects(bytes, /truncated: header needs 100000000 bytes/);
});

Deno.test("rejects offsets past the end of the data", () => {
  rejects(rawFile({ a: f32(0, 16) }, new Uint8Array(8)), /tensor "a".*past end of data \(8 bytes\)/);
});

Deno.test("rejects overlapping tensors", () => {
  rejects(rawFile({ a: f32(0, 8), b: f32(4, 12) }, new Uint8Array(12)), /tensor "b": overlaps tensor "a"/);
});

Deno.test("rejects gaps between tensors and trailing bytes", () => {
  rejects(rawFile({ a: f32(0, 4), b: f32(8, 12) }, new Uint8Array(12)), /tensor "b": gap in data buffer/);
  rejects(rawFile({ a: f32(4, 8) }, new Uint8Array(8)), /tensor "a": gap in data buffer/);
  rejects(rawFile({ a: f32(0, 4) }, new Uint8Array(8)), /gap at end/);
});

Deno.test("rejects unknown dtype", () => {
  rejects(rawFile({ a: { dtype: "F12", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), /"a".*dtype "F12"/);
});

Deno.test("rejects size mismatch between shape and offsets", () => {
  rejects(rawFile({ a: f32(0, 8, [3]) }, new Uint8Array(8)), /tensor "a": size mismatch.*8 bytes.*needs 12/);
});

Deno.test("rejects bad JSON and non-object headers", () => {
  rejects(withHeaderBytes(new TextEncoder().encode('{"a": ')), /not valid UTF-8 JSON/);
  rejects(withHeaderBytes(new Uint8Array([0x7b, 0xff, 0x7d])), /not valid UTF-8 JSON/);
  rejects(rawFile([1, 2]), /not a JSON object/);
});

Deno.test("rejects negative or non-integer shapes and bad offsets", () => {
  for (const shape of [[-1], [1.5], ["2"], 4]) {
    rejects(rawFile({ a: { dtype: "U8", shape, data_offsets: [0, 0] } }), /tensor "a": shape .* non-negative integers/);
  }
  for (const offs of [[4, 0], [0], [0, 1.5], "0,1"]) {
    rejects(
      rawFile({ a: { dtype: "U8", shape: [1], data_offsets: offs } }, new Uint8Array(4)),
      /tensor "a": data_offsets/,
    );
  }
});

Deno.test("rejects non-string metadata values", () => {
  rejects(rawFile({ __metadata__: { step: 3 } }), /__metadata__\["step"\] is not a string/);
});
