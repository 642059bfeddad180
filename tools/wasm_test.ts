import assert from "node:assert/strict";
import { assembleWat, expectedModule, exportNameOf, findWatFiles, generatedModuleOf } from "./wasm.ts";

const wats = await findWatFiles();

Deno.test("the WebAssembly kernels of the packages are found (sgemm.wat and quant.wat at least)", () => {
  const names = wats.map((u) => u.pathname.split("/").slice(-3).join("/"));
  for (const want of ["kernels/wasm/sgemm.wat", "formats/wasm/quant.wat"]) assert.ok(names.includes(want), want);
});

for (const wat of wats) {
  const name = wat.pathname.split("/").slice(-3).join("/");
  Deno.test(`${name}: the committed module holds a fresh assembly of it (else run \`deno task wasm\`)`, async () => {
    const target = generatedModuleOf(wat);
    const committed = await Deno.readTextFile(target).catch(() => "");
    assert.ok(committed !== "", `${target.pathname} is missing: run \`deno task wasm\``);
    const fresh = await assembleWat(name, await Deno.readTextFile(wat));
    const module = await import(target.href);
    assert.deepEqual(module[exportNameOf(wat)], fresh, `${target.pathname} is stale: run \`deno task wasm\``);
    assert.equal(committed, await expectedModule(wat), `${target.pathname} differs from the generator's text`);
  });
}

Deno.test("assembleWat names the file and line of a syntax error", async () => {
  await assert.rejects(assembleWat("broken.wat", "(module\n  (func (result i32) (i32.nope)))"), /broken\.wat:2/);
});

Deno.test("exportNameOf and generatedModuleOf derive the module's names from the .wat file's", () => {
  const wat = new URL("file:///x/kernels/wasm/sgemm.wat");
  assert.equal(exportNameOf(wat), "SGEMM_WASM");
  assert.equal(generatedModuleOf(wat).pathname, "/x/kernels/wasm/sgemm_wasm.ts");
  assert.equal(exportNameOf(new URL("file:///x/quant-4.wat")), "QUANT_4_WASM");
});
