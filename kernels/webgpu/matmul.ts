/**
 * The WebGPU matmul: tiled, register-blocked, batched, with the transposes and
 * the tiling baked into the WGSL text. A 16x16 workgroup computes a
 * (16·tm) x (16·tn) block of C, each thread a tm x tn register block, stepping
 * K by bk through workgroup memory. Every variant sums each output's k in
 * increasing order with one fma per k, so all tilings give the same bits.
 *
 * @module
 */
import { PRELUDE } from "./context.ts";

/** A matmul tiling. */
export interface MatmulTile {
  /** Rows per thread. */
  readonly tm: number;
  /** Columns per thread. */
  readonly tn: number;
  /** K step staged in workgroup memory. */
  readonly bk: number;
  /**
   * Read the register block from workgroup memory as vec4s (tm and tn multiples of 4): a thread owns
   * 4 adjacent rows (columns) in each 64-row (64-column) band, so a k step costs (tm + tn) / 4 wide
   * reads instead of tm + tn scalar ones.
   */
  readonly vec4?: boolean;
  /** Write the k loop over the staged step out in full (constant tile indices). */
  readonly unroll?: boolean;
}

/**
 * Padding of each k-row of the workgroup tiles: a k-first tile load stores a column of the tile (stride
 * bm + 4 words), so 8 consecutive k land in distinct shared-memory banks. One vec4 wide.
 */
const TILE_PAD = 4;

/**
 * The two tilings {@link chooseMatmulTile} picks from: 64x64 blocks (4x4 per thread) and 128x128 blocks
 * (8x8 per thread). Measured on an H100 (wgpu on Vulkan, n×n·n×n, GFLOP/s; cuBLAS SGEMM 38,060 / 50,330 /
 * 51,680 in the same run):
 *
 * | tiling                           | 1024   | 2048   | 4096   |
 * | -------------------------------- | ------ | ------ | ------ |
 * | 8x8, bk 8, scalar (old large)    | 7,865  | 22,116 | 22,668 |
 * | 8x8, bk 8, vec4, unrolled        | 9,935  | 26,785 | 28,778 |
 * | 8x8, bk 16, vec4                 | 8,101  | 19,262 | 24,288 |
 * | 8x8, bk 16, vec4, unrolled       | 10,547 | 27,524 | 30,174 |
 * | 8x8, bk 32, vec4, unrolled       | 11,097 | 28,735 | 30,825 |
 * | 4x4, bk 16, scalar (old small)   | 10,621 | 15,271 | 16,517 |
 * | 4x4, bk 16, vec4, unrolled       | 13,747 | 20,460 | 22,366 |
 *
 * Unrolling the k loop is the largest single gain. (Loading the next K step into registers during the
 * arithmetic of this one, tried too, gained nothing at 2048 and 1-3% elsewhere: left out.)
 */
export const MATMUL_TILES = {
  small: { tm: 4, tn: 4, bk: 16, vec4: true, unroll: true },
  large: { tm: 8, tn: 8, bk: 32, vec4: true, unroll: true },
} as const satisfies Record<string, MatmulTile>;

/**
 * Large tiles pay only once there are enough 128x128 blocks to fill the GPU: at 1024² (64 blocks) the small
 * tiling is faster on an H100, at 2048² (256 blocks) the large one.
 */
const LARGE_MIN_BLOCKS = 256;

/** Bytes of workgroup memory a tiling stages (both tiles, padding included). */
export function tileStorageBytes(tile: MatmulTile): number {
  return (16 * tile.tm + 16 * tile.tn + 2 * TILE_PAD) * tile.bk * 4;
}

/**
 * The tiling for an m x n (x batch) product: the large one when there are enough blocks and the adapter
 * is a hardware GPU, with the longest K step (32, 16 or 8) whose tiles fit `maxStorageBytes` of workgroup
 * memory (WebGPU guarantees only 16 KiB); else the small one.
 */
export function chooseMatmulTile(
  m: number,
  n: number,
  batch: number,
  adapter: { fallback: boolean; maxStorageBytes: number },
): MatmulTile {
  if (adapter.fallback || Math.ceil(m / 128) * Math.ceil(n / 128) * batch < LARGE_MIN_BLOCKS) {
    return MATMUL_TILES.small;
  }
  return largeTiles.find((t) => tileStorageBytes(t) <= adapter.maxStorageBytes) ?? MATMUL_TILES.small;
}

const largeTiles: MatmulTile[] = [32, 16, 8].map((bk) => ({ ...MATMUL_TILES.large, bk }));

const matmulShaders = new Map<string, string>();

/** Tiled, register-blocked batched matmul for the given transposes and tiling (built once per choice). */
export function matmulShader(transA: boolean, transB: boolean, tile: MatmulTile): string {
  const key = `${transA}|${transB}|${tile.tm}|${tile.tn}|${tile.bk}|${!!tile.vec4}|${!!tile.unroll}`;
  let source = matmulShaders.get(key);
  if (!source) matmulShaders.set(key, source = buildMatmulShader(transA, transB, tile));
  return source;
}

const range = (n: number) => [...Array(n).keys()];

/**
 * The register block is written out with constant indices (generated code, no loops over private
 * arrays) so compilers keep the accumulators in registers.
 */
function buildMatmulShader(transA: boolean, transB: boolean, tile: MatmulTile): string {
  const { tm, tn, bk } = tile;
  const vec4 = tile.vec4 ?? false;
  if (vec4 && (tm % 4 !== 0 || tn % 4 !== 0)) throw new Error(`matmul tile: vec4 needs tm, tn multiples of 4`);
  const bm = 16 * tm, bn = 16 * tn;
  // The 256 threads load the tiles in whole rounds.
  if ((bm * bk) % 256 !== 0 || (bn * bk) % 256 !== 0) {
    throw new Error(`matmul tile ${JSON.stringify(tile)}: 16·tm·bk and 16·tn·bk must be multiples of 256`);
  }
  const loadsA = (bm * bk) / 256, loadsB = (bn * bk) / 256;
  // Row (column) of the block that register x of thread `lid` holds.
  const place = (x: number, lid: string) => vec4 ? `${64 * (x >> 2) + (x & 3)}u + ${lid} * 4u` : `${lid} + ${16 * x}u`;
  const accDecl = range(tm).map((x) => range(tn).map((y) => `var c${x}_${y} = 0.0;`).join(" ")).join("\n  ");
  const perRead = vec4 ? 4 : 1;
  const regs = [
    ...range(tm / perRead).map((g) => `let a${g} = As[kk][lid.y + ${16 * g}u];`),
    ...range(tn / perRead).map((g) => `let b${g} = Bs[kk][lid.x + ${16 * g}u];`),
  ];
  const reg = (name: string, x: number) => vec4 ? `${name}${x >> 2}[${x & 3}]` : `${name}${x}`;
  const fmas = range(tm).map((x) =>
    range(tn).map((y) => `c${x}_${y} = fma(${reg("a", x)}, ${reg("b", y)}, c${x}_${y});`).join(" ")
  );
  const stores = range(tm).flatMap((x) =>
    range(tn).map((y) =>
      `{ let r = row0 + ${place(x, "lid.y")}; let c = col0 + ${place(y, "lid.x")}; ` +
      `if (r < M && c < N) { C[cBase + r * N + c] = c${x}_${y}; } }`
    )
  );
  // Global loads: consecutive threads read consecutive addresses (coalesced). Where K is the contiguous
  // axis (A as [M, K], B as [N, K]) they walk k first, else rows (A) / columns (B). Element l of a thread's
  // share goes through register v{A,B}l: `fetch` fills it from global memory, `park` stores it in the tile;
  // a step issues all its fetches before the first park, so the loads are in flight together.
  const side = (which: "A" | "B") =>
    which === "A"
      ? {
        kFast: !transA,
        width: bm,
        bound: "row0 + mm < M",
        index: transA ? "aBase + p * M + row0 + mm" : "aBase + (row0 + mm) * K + p",
      }
      : {
        kFast: transB,
        width: bn,
        bound: "col0 + mm < N",
        index: transB ? "bBase + (col0 + mm) * K + p" : "bBase + p * N + col0 + mm",
      };
  const element = (which: "A" | "B", l: number) => {
    const { kFast, width } = side(which);
    const split = kFast
      ? `let mm = e / ${bk}u; let kk = e % ${bk}u;`
      : `let kk = e / ${width}u; let mm = e % ${width}u;`;
    return `let e = t + ${l * 256}u; ${split}`;
  };
  const fetch = (which: "A" | "B", l: number) => {
    const { bound, index } = side(which);
    return `{ ${element(which, l)} let p = k0 + kk; ` +
      `if (${bound} && p < K) { v${which}${l} = ${which}[${index}]; } else { v${which}${l} = 0.0; } }`;
  };
  const park = (which: "A" | "B", l: number) =>
    `{ ${element(which, l)} ${which}s[kk]${vec4 ? "[mm / 4u][mm % 4u]" : "[mm]"} = v${which}${l}; }`;
  const loadRegs = [...range(loadsA).map((l) => `var vA${l} = 0.0;`), ...range(loadsB).map((l) => `var vB${l} = 0.0;`)];
  const all = (f: (w: "A" | "B", l: number) => string) =>
    [...range(loadsA).map((l) => f("A", l)), ...range(loadsB).map((l) => f("B", l))].join("\n    ");
  const cell = vec4 ? "vec4<f32>" : "f32";
  const width = (n: number) => vec4 ? n / 4 + TILE_PAD / 4 : n + TILE_PAD;
  const kStep = `${regs.join("\n      ")}\n      ${fmas.join("\n      ")}`;
  const compute = tile.unroll
    ? range(bk).map((k) => `{ let kk = ${k}u;\n      ${kStep}\n    }`).join("\n    ")
    : `for (var kk = 0u; kk < ${bk}u; kk++) {\n      ${kStep}\n    }`;
  return `${PRELUDE}
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
var<workgroup> As: array<array<${cell}, ${width(bm)}>, ${bk}>;
var<workgroup> Bs: array<array<${cell}, ${width(bn)}>, ${bk}>;
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let M = P(0u); let N = P(1u); let K = P(2u);
  let aBase = wg.z * P(3u); let bBase = wg.z * P(4u); let cBase = wg.z * M * N;
  let row0 = wg.y * ${bm}u; let col0 = wg.x * ${bn}u;
  let t = lid.y * 16u + lid.x;
  ${accDecl}
  ${loadRegs.join(" ")}
  for (var k0 = 0u; k0 < K; k0 += ${bk}u) {
    ${all(fetch)}
    ${all(park)}
    workgroupBarrier();
    ${compute}
    workgroupBarrier();
  }
  ${stores.join("\n  ")}
}
`;
}
