// Child of training_test.ts: prints the loss curve of a few CPU training steps as JSON (f32 bits exactly).
import { useBackend } from "@lowp/core";
import { loadCorpus, trainLM } from "@lowp/recipes";
import { smallRecipe } from "./recipe_fixture.ts";

await useBackend("cpu");
const corpus = await loadCorpus({ corpus: "brown", maxBytes: 200_000, valFraction: 0.05 });
const r = smallRecipe({ steps: 6 });
r.model = { ...r.model, d_model: 64, context: 32 }; // large enough for the threaded WebAssembly matmul
const { metrics } = await trainLM(r, corpus);
console.log(JSON.stringify(metrics.filter((m) => m.loss !== undefined).map((m) => m.loss)));
