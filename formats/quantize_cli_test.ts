/**
 * `deno task quantize` end to end, as a subprocess on small generated files:
 * the table and JSON reports, values bit-identical to a direct `quantDequant`,
 * `--pack` files restored exactly, and bad input that fails with one line,
 * exit code 1 and no output file.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  cpuBackend,
  randn,
  type RawTensor,
  readSafetensors,
  tensor,
  webgpuBackend,
  writeSafetensors,
} from "@lowp/core";
import { packedBytes, unpackFile } from "./pack.ts";
import { parseFormat } from "./registry.ts";
import { restore, tensorStream } from "./quantize_file.ts";
import type { QuantizeOptions } from "./spec.ts";
import { runScript } from "../tests/helpers.ts";

const CLI = new URL("./quantize_cli.ts", import.meta.url).pathname;

const quantize = (args: string[]) => runScript(CLI, args);

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "quantize_cli_test" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** N(0,1) f32 values from the engine's seeded generator. */
async function normal(shape: number[], seed: number): Promise<Float32Array> {
  return (await randn(shape, { seed, stream: 0 }, 1, { backend: cpuBackend() }).data()) as Float32Array;
}

const bytesOf = (a: Float32Array | Int32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const bitsOf = (raw: RawTensor) => new Uint32Array(raw.data.slice().buffer);

/** A small model-like file: two F32 tensors whose last dims suit every block format, and an I32 counter. */
async function writeInput(path: string): Promise<Map<string, RawTensor>> {
  const tensors = new Map<string, RawTensor>([
    ["layer.0.weight", { dtype: "F32", shape: [32, 128], data: bytesOf(await normal([32, 128], 1)) }],
    ["layer.0.bias", { dtype: "F32", shape: [128], data: bytesOf(await normal([128], 2)) }],
    ["step", { dtype: "I32", shape: [1], data: bytesOf(new Int32Array([7])) }],
  ]);
  await writeSafetensors(path, tensors, { origin: "test" });
  return tensors;
}

/** The values a direct in-process call gives, as raw F32 bytes' words. */
async function direct(format: string, raw: RawTensor, name: string, opts: QuantizeOptions = {}): Promise<Uint32Array> {
  const x = tensor(new Float32Array(raw.data.slice().buffer), { shape: raw.shape, backend: cpuBackend() });
  const y = parseFormat(format).quantDequant(x, { ...opts, stream: tensorStream(name) });
  return new Uint32Array(((await y.data()) as Float32Array).buffer);
}

Deno.test("quantize CLI: table report, values equal to a direct quantDequant, other tensors copied", async () => {
  await withTempDir(async (dir) => {
    const [inp, out] = [join(dir, "in.safetensors"), join(dir, "out.safetensors")];
    const input = await writeInput(inp);
    const r = await quantize(["--format", "e4m3", "--backend", "cpu", inp, out]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split("\n");
    assert.match(lines[0], /^e4m3, rounding nearest, fake-quantized F32, on cpu /);
    assert.match(lines[1], /^tensor\s+shape\s+elements\s+MSE\s+SQNR dB\s+max \|err\|\s+bytes before → after$/);
    assert.match(lines[2], /^layer\.0\.bias\s+\[128\]\s+128\s+\S+e-\d\s+\d+\.\d\d\s+\S+\s+512 → 512$/);
    assert.match(lines[3], /^layer\.0\.weight\s+\[32,128\]\s+4096\s+.*16384 → 16384$/);
    assert.match(lines[4], /^step\s+\[1\]\s+1\s+-\s+-\s+-\s+4 → 4\s+skipped \(dtype I32\)$/);
    assert.match(
      lines[5],
      /^total: 3 tensors \(2 quantized, 1 skipped\), 4225 elements, MSE .* dB, tensor bytes 16900 → 16900, file \d+ bytes$/,
    );
    assert.equal(lines.length, 6);

    const file = await readSafetensors(out);
    for (const name of ["layer.0.weight", "layer.0.bias"]) {
      const got = file.tensors.get(name)!;
      assert.deepEqual([got.dtype, got.shape], ["F32", input.get(name)!.shape]);
      assert.deepEqual(bitsOf(got), await direct("e4m3", input.get(name)!, name), name);
    }
    assert.deepEqual(file.tensors.get("step"), input.get("step"));
    assert.equal(file.metadata.origin, "test");
    assert.deepEqual(JSON.parse(file.metadata["lowp.quantize"]), {
      format: "e4m3",
      granularity: null,
      rounding: "nearest",
      seed: 0,
      pack: false,
    });
  });
});

Deno.test("quantize CLI: --json report with a plausible e4m3 SQNR and exact statistics", async () => {
  await withTempDir(async (dir) => {
    const [inp, out] = [join(dir, "in.safetensors"), join(dir, "out.safetensors")];
    const input = await writeInput(inp);
    const r = await quantize(["--format", "e4m3", "--json", "--backend", "cpu", inp, out]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.deepEqual([report.format, report.backend, report.pack], ["e4m3", "cpu", false]);
    const w = report.tensors.find((t: { name: string }) => t.name === "layer.0.weight");
    // 3 mantissa bits with RNE on N(0,1): about 31 dB (each bit is worth ~6 dB).
    assert.ok(w.sqnr_db > 29 && w.sqnr_db < 33, `e4m3 SQNR ${w.sqnr_db} dB`);
    const x = new Float32Array(input.get("layer.0.weight")!.data.slice().buffer);
    const q = new Float32Array((await direct("e4m3", input.get("layer.0.weight")!, "layer.0.weight")).buffer);
    let noise = 0, signal = 0, maxErr = 0;
    x.forEach((v, i) => {
      noise += (v - q[i]) ** 2;
      signal += v * v;
      maxErr = Math.max(maxErr, Math.abs(v - q[i]));
    });
    assert.equal(w.mse, noise / x.length);
    assert.equal(w.sqnr_db, 10 * Math.log10(signal / noise));
    assert.equal(w.max_abs_error, maxErr);
    assert.deepEqual(report.tensors.find((t: { name: string }) => t.name === "step"), {
      name: "step",
      shape: [1],
      dtype: "I32",
      elements: 1,
      skipped: "dtype I32",
      bytes_before: 4,
      bytes_after: 4,
    });
    assert.deepEqual([report.total.tensors, report.total.quantized, report.total.elements], [3, 2, 4225]);
    assert.equal(report.total.file_bytes, (await Deno.stat(out)).size);
  });
});

Deno.test("quantize CLI: stochastic rounding draws per tensor stream, as a direct call with the same key", async () => {
  await withTempDir(async (dir) => {
    const [inp, out] = [join(dir, "in.safetensors"), join(dir, "out.safetensors")];
    const input = await writeInput(inp);
    const r = await quantize([
      "--format",
      "e2m1",
      "--rounding",
      "stochastic",
      "--seed",
      "5",
      "--backend",
      "cpu",
      inp,
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const got = bitsOf((await readSafetensors(out)).tensors.get("layer.0.weight")!);
    const raw = input.get("layer.0.weight")!;
    assert.deepEqual(got, await direct("e2m1", raw, "layer.0.weight", { rounding: "stochastic", seed: 5 }));
    assert.notDeepEqual(got, await direct("e2m1", raw, "layer.0.weight", { rounding: "stochastic", seed: 6 }));
  });
});

// Packed runs: restore() must give back exactly the file the unpacked run writes.
const PACK_CASES: { format: string; args?: string[]; bytes: Record<string, number> }[] = [
  // 4096 + 128 one-byte codes.
  { format: "e4m3", bytes: { "layer.0.weight": 4096, "layer.0.bias": 128 } },
  // FP4 codes (n/2 bytes) + one E8M0 byte per 32 values.
  { format: "mxfp4", bytes: { "layer.0.weight": 2048 + 128, "layer.0.bias": 64 + 4 } },
  // FP6 codes (n·6/8 bytes) + one E8M0 byte per 32 values.
  { format: "mxfp6_e2m3", bytes: { "layer.0.weight": 3072 + 128, "layer.0.bias": 96 + 4 } },
  // FP4 codes + one UE4M3 byte per 16 values + a 4-byte f32 tensor scale.
  { format: "nvfp4", bytes: { "layer.0.weight": 2048 + 256 + 4, "layer.0.bias": 64 + 8 + 4 } },
  // 4-bit codes + an f32 absmax per 64 values.
  { format: "nf4", bytes: { "layer.0.weight": 2048 + 256, "layer.0.bias": 64 + 8 } },
  // 4-bit codes + an f32 scale per group of 128.
  { format: "int4", args: ["--granularity", "group:128"], bytes: { "layer.0.weight": 2048 + 128, "layer.0.bias": 68 } },
  // Asymmetric: 4-bit codes + f32 scales + 4-bit zero points, per group of 64.
  {
    format: "uint4",
    args: ["--granularity", "group:64"],
    bytes: { "layer.0.weight": 2048 + 256 + 32, "layer.0.bias": 73 },
  },
  // 3-bit codes straddle words; one f32 scale per row (channel 0) of the weight, one per value of the bias.
  {
    format: "int3",
    args: ["--granularity", "channel:0"],
    bytes: { "layer.0.weight": 1536 + 128, "layer.0.bias": 48 + 512 },
  },
];

Deno.test("quantize CLI: --pack stores exact packed sizes and restores the fake-quantized values bit for bit", async () => {
  await withTempDir(async (dir) => {
    const inp = join(dir, "in.safetensors");
    const input = await writeInput(inp);
    for (const { format, args = [], bytes } of PACK_CASES) {
      const [plain, packed] = [join(dir, `${format}.safetensors`), join(dir, `${format}.packed.safetensors`)];
      const a = await quantize(["--format", format, ...args, "--backend", "cpu", inp, plain]);
      assert.equal(a.code, 0, a.stderr);
      const b = await quantize(["--format", format, ...args, "--pack", "--json", "--backend", "cpu", inp, packed]);
      assert.equal(b.code, 0, b.stderr);
      const report = JSON.parse(b.stdout);
      const file = await readSafetensors(packed);
      const { packed: parts, plain: rest } = unpackFile(file, packed);
      for (const [name, size] of Object.entries(bytes)) {
        const row = report.tensors.find((t: { name: string }) => t.name === name);
        assert.equal(row.bytes_after, size, `${format} ${name}`);
        assert.equal(packedBytes(parts.get(name)!), size, `${format} ${name}`);
      }
      assert.deepEqual(rest.get("step"), input.get("step"));
      // Same statistics as the unpacked run: dequantize(quantize(x)) = quantDequant(x).
      const ref = await readSafetensors(plain);
      const restored = await restore(packed, cpuBackend());
      assert.deepEqual([...restored.tensors.keys()], [...ref.tensors.keys()], format);
      for (const [name, raw] of ref.tensors) {
        assert.deepEqual(restored.tensors.get(name)!.shape, raw.shape, `${format} ${name}`);
        assert.deepEqual(bitsOf(restored.tensors.get(name)!), bitsOf(raw), `${format} ${name}`);
      }
      assert.deepEqual(JSON.parse(restored.metadata["lowp.quantize"]), {
        ...JSON.parse(ref.metadata["lowp.quantize"]),
        pack: true,
      });
    }
  });
});

Deno.test("quantize CLI: --axis runs blocks and groups along it, --pack records it, restore reads it back", async () => {
  await withTempDir(async (dir) => {
    const inp = join(dir, "in.safetensors");
    const input = new Map<string, RawTensor>();
    for (const [name, shape] of [["w", [64, 96]], ["conv", [2, 64, 3]]] as [string, number[]][]) {
      input.set(name, { dtype: "F32", shape, data: bytesOf(await normal(shape, name.length)) });
    }
    await writeSafetensors(inp, input);
    const cases: [string, string[], QuantizeOptions][] = [
      ["nf4", [], {}],
      ["mxfp4", [], {}],
      ["nvfp4", [], {}],
      ["int4", ["--granularity", "group:32"], { granularity: { kind: "group", size: 32 } }],
    ];
    for (const [format, args, opts] of cases) {
      const [plain, packed] = [join(dir, `${format}.safetensors`), join(dir, `${format}.packed.safetensors`)];
      // -2: axis 0 of w, axis 1 of conv (64 each; their last dimensions do not tile blocks of 64).
      const a = await quantize(["--format", format, ...args, "--axis", "-2", "--backend", "cpu", inp, plain]);
      assert.equal(a.code, 0, a.stderr);
      assert.match(a.stdout.split("\n")[0], new RegExp(`^${format}.* along axis -2, rounding nearest`));
      const b = await quantize([
        "--format",
        format,
        ...args,
        "--axis",
        "-2",
        "--pack",
        "--backend",
        "cpu",
        inp,
        packed,
      ]);
      assert.equal(b.code, 0, b.stderr);
      const [ref, file] = [await readSafetensors(plain), await readSafetensors(packed)];
      assert.equal(JSON.parse(ref.metadata["lowp.quantize"]).axis, -2, format);
      const restored = await restore(packed, cpuBackend());
      for (const [name, raw] of input) {
        const want = await direct(format, raw, name, { ...opts, axis: -2 });
        assert.deepEqual(bitsOf(ref.tensors.get(name)!), want, `${format} ${name}`);
        assert.deepEqual(bitsOf(restored.tensors.get(name)!), want, `${format} ${name} restored`);
        const meta = JSON.parse(file.metadata[`lowp.packed.${name}`]).meta;
        assert.equal(meta.axis, raw.shape.length - 2, `${format} ${name} meta.axis`);
      }
    }
  });
});

Deno.test("quantize CLI: --backend webgpu writes the same bytes as cpu", async () => {
  const { backend } = await webgpuBackend();
  if (!backend) {
    if (Deno.env.get("REQUIRE_WEBGPU") === "1") throw new Error("webgpu: required by REQUIRE_WEBGPU=1 but unavailable");
    return console.error("webgpu: skipped (no adapter)");
  }
  await withTempDir(async (dir) => {
    const inp = join(dir, "in.safetensors");
    await writeInput(inp);
    for (const backendName of ["cpu", "webgpu"]) {
      const r = await quantize([
        "--format",
        "nvfp4",
        "--pack",
        "--backend",
        backendName,
        inp,
        join(dir, `${backendName}.st`),
      ]);
      assert.equal(r.code, 0, r.stderr);
    }
    assert.deepEqual(await Deno.readFile(join(dir, "webgpu.st")), await Deno.readFile(join(dir, "cpu.st")));
  });
});

/** Each bad input: its arguments (IN/OUT placeholders) and the one line expected. */
const ERROR_CASES: { what: string; args: string[]; error: RegExp }[] = [
  {
    what: "unknown format",
    args: ["--format", "fp5", "IN", "OUT"],
    error: /unknown format 'fp5': expected one of e4m3, .*mxfp4/,
  },
  {
    what: "granularity for a block format",
    args: ["--format", "mxfp4", "--granularity", "group:32", "IN", "OUT"],
    error: /format 'mxfp4' has fixed blocks of 32 values and takes no --granularity/,
  },
  {
    what: "granularity for a plain element format",
    args: ["--format", "e4m3", "--granularity", "tensor", "IN", "OUT"],
    error: /'e4m3' is a plain element format/,
  },
  {
    what: "negative seed",
    args: ["--format", "e4m3", "--seed", "-1", "IN", "OUT"],
    error: /--seed '-1': expected an integer/,
  },
  {
    what: "seed too large",
    args: ["--format", "e4m3", "--seed", "4294967296", "IN", "OUT"],
    error: /--seed 4294967296/,
  },
  { what: "unknown rounding", args: ["--format", "e4m3", "--rounding", "up", "IN", "OUT"], error: /--rounding 'up'/ },
  {
    what: "unknown backend",
    args: ["--format", "e4m3", "--backend", "tpu", "IN", "OUT"],
    error: /--backend must be cpu, webgpu or auto/,
  },
  { what: "missing --format", args: ["IN", "OUT"], error: /--format is required/ },
  { what: "one path", args: ["--format", "e4m3", "IN"], error: /expected IN.safetensors OUT.safetensors, got 1 path/ },
  { what: "unknown option", args: ["--format", "e4m3", "--fast", "IN", "OUT"], error: /Unknown option '--fast'/ },
  {
    what: "missing input",
    args: ["--format", "e4m3", "MISSING", "OUT"],
    error: /cannot read '.*missing.safetensors': no such file/,
  },
  {
    what: "hostile input",
    args: ["--format", "e4m3", "HOSTILE", "OUT"],
    error: /hostile.safetensors: tensor "w": data_offsets \[0, 4096\] past end/,
  },
  { what: "output is the input", args: ["--format", "e4m3", "IN", "IN"], error: /is the input file/ },
  { what: "output is a link to the input", args: ["--format", "e4m3", "IN", "LINK"], error: /is the input file/ },
  {
    what: "output directory missing",
    args: ["--format", "e4m3", "IN", "NODIR"],
    error: /directory '.*nodir' does not exist/,
  },
  {
    what: "shape not a multiple of the block",
    args: ["--format", "mxfp4", "ODD", "OUT"],
    error: /tensor 'odd\.weight' \[3,48\]: format 'mxfp4' needs the last dimension divisible by its block size 32/,
  },
  {
    what: "groups that do not tile the last axis",
    args: ["--format", "int4", "--granularity", "group:100", "IN", "OUT"],
    error: /tensor 'layer\.0\.bias' \[128\]: --granularity group:100 needs the last dimension divisible by 100/,
  },
  {
    what: "channel axis out of range",
    args: ["--format", "int8", "--granularity", "channel:1", "IN", "OUT"],
    error: /tensor 'layer\.0\.bias' \[128\]: --granularity channel:1 needs an axis in \[-1, 1\)/,
  },
  {
    what: "rounding the format does not offer",
    args: ["--format", "nf4", "--rounding", "stochastic", "IN", "OUT"],
    error: /format 'nf4' with these options: .*only 'nearest' rounding/,
  },
  {
    what: "--axis for a plain element format",
    args: ["--format", "e4m3", "--axis", "0", "IN", "OUT"],
    error: /--axis applies to block formats and --granularity group:G; format 'e4m3' has no blocks or groups/,
  },
  {
    what: "--axis with per-channel scales",
    args: ["--format", "int8", "--granularity", "channel:0", "--axis", "0", "IN", "OUT"],
    error: /format 'int8' with --granularity channel:0 has no blocks or groups/,
  },
  { what: "--axis not an integer", args: ["--format", "nf4", "--axis", "1.5", "IN", "OUT"], error: /--axis '1\.5'/ },
  {
    what: "--axis out of range for a tensor",
    args: ["--format", "mxfp4", "--axis", "-2", "IN", "OUT"],
    error: /tensor 'layer\.0\.bias' \[128\]: --axis: axis -2 is out of range for shape \[128\] \(rank 1\)/,
  },
  {
    what: "--axis along a dimension the blocks do not tile",
    args: ["--format", "nf4", "--axis", "0", "IN", "OUT"],
    error: /tensor 'layer\.0\.weight' \[32,128\]: format 'nf4' needs dimension 0 \(--axis 0\) divisible by its block/,
  },
  {
    what: "scalar for a block format",
    args: ["--format", "nvfp4", "SCALAR", "OUT"],
    error: /tensor 'scale' \[\]: format 'nvfp4'/,
  },
];

Deno.test("quantize CLI: bad input gives exit 1, one error line and no output file", async () => {
  await withTempDir(async (dir) => {
    const p = (name: string) => join(dir, name);
    await writeInput(p("in.safetensors"));
    await Deno.symlink(p("in.safetensors"), p("link.safetensors"));
    // A header that promises more data than the file holds.
    const header = new TextEncoder().encode(
      JSON.stringify({ w: { dtype: "F32", shape: [1024], data_offsets: [0, 4096] } }),
    );
    const bytes = new Uint8Array(8 + header.length + 16);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(header.length), true);
    bytes.set(header, 8);
    await Deno.writeFile(p("hostile.safetensors"), bytes);
    const f32 = (shape: number[]) => ({
      dtype: "F32" as const,
      shape,
      data: new Uint8Array(4 * shape.reduce((a, d) => a * d, 1)),
    });
    await writeSafetensors(p("odd.safetensors"), { "odd.weight": f32([3, 48]), "ok.weight": f32([2, 32]) });
    await writeSafetensors(p("scalar.safetensors"), { scale: f32([]) });
    const paths: Record<string, string> = {
      IN: p("in.safetensors"),
      OUT: p("out.safetensors"),
      LINK: p("link.safetensors"),
      MISSING: p("missing.safetensors"),
      HOSTILE: p("hostile.safetensors"),
      NODIR: p("nodir/out.safetensors"),
      ODD: p("odd.safetensors"),
      SCALAR: p("scalar.safetensors"),
    };
    const before = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    for (const { what, args, error } of ERROR_CASES) {
      const r = await quantize(args.map((a) => paths[a] ?? a));
      assert.equal(r.code, 1, `${what}: exit code`);
      assert.equal(r.stdout, "", `${what}: stdout`);
      const lines = r.stderr.trimEnd().split("\n");
      assert.equal(lines.length, 1, `${what}: one line, got ${JSON.stringify(r.stderr)}`);
      assert.match(lines[0], /^error: /, what);
      assert.match(lines[0], error, what);
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), before, `${what}: nothing written`);
    }
    // The input is untouched by the OUT = IN attempts.
    assert.equal((await readSafetensors(p("in.safetensors"))).tensors.size, 3);
  });
});
