import assert from "node:assert/strict";
import { isSoftwareAdapter } from "./adapter_kind.ts";

Deno.test("isSoftwareAdapter: CPU renderers by name, on Vulkan and OpenGL, whatever isFallbackAdapter says", () => {
  const software = [
    // Deno on Mesa lavapipe (Vulkan) and llvmpipe (OpenGL): both report the llvmpipe renderer string
    { vendor: "65541", architecture: "", device: "0", description: "llvmpipe (LLVM 15.0.6, 256 bits)" },
    // wgpu's GL backend may put the renderer string in `device`
    { vendor: "Mesa", device: "llvmpipe (LLVM 15.0.6, 256 bits)", description: "" },
    { vendor: "Mesa/X.org", device: "llvmpipe (LLVM 17.0.6, 128 bits)", description: "4.5 (Core Profile) Mesa 24.0.5" },
    { vendor: "65541", device: "lavapipe", description: "Mesa 22.3.6 (LLVM 15.0.6)" },
    { vendor: "Mesa", description: "softpipe" },
    { vendor: "VMware, Inc.", description: "Gallium 0.4 on llvmpipe (LLVM 3.4, 256 bits)" },
    { vendor: "Google Inc.", description: "Google SwiftShader" },
    { vendor: "4203", device: "SwiftShader Device (Subzero)" },
    { vendor: "Microsoft", description: "Microsoft Basic Render Driver" },
    { vendor: "Apple", description: "Apple Software Renderer" },
  ];
  for (const info of software) assert.ok(isSoftwareAdapter(info), JSON.stringify(info));
  assert.ok(isSoftwareAdapter({ vendor: "whatever", isFallbackAdapter: true }));
});

Deno.test("isSoftwareAdapter: GPUs, including Mesa's hardware drivers and virtual GPUs, are not software", () => {
  const hardware = [
    { vendor: "nvidia", architecture: "hopper", device: "", description: "NVIDIA H100 80GB HBM3" },
    { vendor: "4318", device: "8961", description: "NVIDIA GeForce RTX 4090" },
    { vendor: "AMD", description: "AMD Radeon RX 7900 XTX (radeonsi, navi31, LLVM 17.0.6, DRM 3.57)" },
    { vendor: "Intel", description: "Mesa Intel(R) UHD Graphics 620 (KBL GT2)" },
    { vendor: "apple", architecture: "metal-3", description: "Apple M2" },
    { vendor: "Mesa", description: "virgl (NVIDIA GeForce GTX 1080)" },
    { vendor: "", architecture: "", device: "", description: "" },
    {},
  ];
  for (const info of hardware) {
    assert.ok(!isSoftwareAdapter({ ...info, isFallbackAdapter: false }), JSON.stringify(info));
  }
});
