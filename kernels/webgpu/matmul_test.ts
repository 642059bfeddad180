import assert from "node:assert/strict";
import { chooseMatmulTile, MATMUL_TILES, matmulShader, tileStorageBytes } from "./matmul.ts";

const gpu = (maxStorageBytes: number) => ({ fallback: false, maxStorageBytes });

Deno.test("matmul tiling: large blocks only with enough of them on a hardware adapter", () => {
  assert.deepEqual(chooseMatmulTile(1024, 1024, 1, gpu(49152)), MATMUL_TILES.small); // 64 blocks
  assert.deepEqual(chooseMatmulTile(1024, 1024, 4, gpu(49152)), MATMUL_TILES.large); // 256 blocks
  assert.deepEqual(chooseMatmulTile(2048, 2048, 1, gpu(49152)), MATMUL_TILES.large);
  assert.deepEqual(chooseMatmulTile(2048, 1920, 1, gpu(49152)), MATMUL_TILES.small); // 240 blocks
  assert.deepEqual(chooseMatmulTile(4096, 4096, 1, { fallback: true, maxStorageBytes: 49152 }), MATMUL_TILES.small);
});

Deno.test("matmul tiling: the K step shrinks to fit the adapter's workgroup storage", () => {
  assert.equal(tileStorageBytes(MATMUL_TILES.large), (128 + 128 + 8) * 32 * 4);
  assert.equal(chooseMatmulTile(4096, 4096, 1, gpu(33792)).bk, 32);
  assert.equal(chooseMatmulTile(4096, 4096, 1, gpu(33791)).bk, 16);
  assert.equal(chooseMatmulTile(4096, 4096, 1, gpu(16384)).bk, 8); // the WebGPU default limit
  assert.deepEqual(chooseMatmulTile(4096, 4096, 1, gpu(8000)), MATMUL_TILES.small);
  for (const bk of [32, 16, 8]) {
    const tile = { ...MATMUL_TILES.large, bk };
    const [, rows, cols] = matmulShader(false, false, tile).match(
      /var<workgroup> As: array<array<vec4<f32>, (\d+)>, (\d+)>/,
    )!;
    // Two tiles of vec4 rows: the declared arrays are what tileStorageBytes counts.
    assert.equal(2 * Number(rows) * Number(cols) * 16, tileStorageBytes(tile));
  }
});

Deno.test("matmul tiling: shapes the kernel cannot load or read are refused", () => {
  assert.throws(() => matmulShader(false, false, { tm: 6, tn: 8, bk: 8, vec4: true }), /multiples of 4/);
  assert.throws(() => matmulShader(false, false, { tm: 2, tn: 4, bk: 4 }), /multiples of 256/);
  assert.ok(matmulShader(false, false, { tm: 2, tn: 4, bk: 8 }).includes("@compute"));
});
