import { abs, max, randn, tidy, transpose, useBackend } from "../mod.ts";
import { currentScale, hadamard, parseFormat, questQuantDequant, scaledQuantDequant } from "../mod.ts";
await useBackend("cpu");
const x = randn([1024, 512], { seed: 1, stream: 2 });
const time = async (name: string, fn: () => unknown) => {
  const t0 = performance.now();
  for (let i = 0; i < 5; i++) {
    const r = tidy(() => fn()) as { dispose?: () => void; data?: () => Promise<unknown> };
    if (r && (r as any).data) await (r as any).data();
  }
  console.log(name, ((performance.now() - t0) / 5).toFixed(2), "ms");
};
await time("transpose", () => transpose(x));
await time("hadamard32", () => hadamard(x, { block: 32 }));
await time("hadamard32 signs", () => hadamard(x, { block: 32, signs: { seed: 1, stream: 5 } }));
await time("quest", () => questQuantDequant(x).values);
await time("mxfp4 rtn", () => parseFormat("mxfp4").quantDequant(x));
await time("mxfp4 sr rceil", () => parseFormat("mxfp4").quantDequant(x, { rounding: "stochastic", scaleRounding: "rceil" } as any));
await time("amax", () => max(abs(x)));
await time("fp8 current", () => scaledQuantDequant(x, "e4m3", currentScale(x, "e4m3")));
await time("e4m3 plain", () => parseFormat("e4m3").quantDequant(x));
await time("nvfp4", () => parseFormat("nvfp4").quantDequant(x));
await time("flex", () => parseFormat("flex16+5").quantDequant(x));
await time("mxfp4 sr floor", () => parseFormat("mxfp4").quantDequant(x, { rounding: "stochastic" }));
await time("mxfp4 rtn rceil", () => parseFormat("mxfp4").quantDequant(x, { scaleRounding: "rceil" } as any));
await time("e4m3 sr", () => parseFormat("e4m3").quantDequant(x, { rounding: "stochastic" }));
