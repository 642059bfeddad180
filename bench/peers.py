"""Peer measurements for bench/main.ts: numpy and PyTorch matmul, PyTorch tiny-GPT training step,
PyTorch fake quantization (quantize-dequantize with plain tensor ops, as bench/fake_quant.ts times ours),
the reference GPTQ algorithm in PyTorch (IST-DASLab/gptq, as bench/gptq.ts times ours).

Run by bench/peers.ts as `<python> bench/peers.py '<json config>'` (it picks the Python that has torch).
Prints JSON lines on stdout (the TS side adds the machine field) and progress on stderr. Uses whatever
of numpy/torch is importable and prints a {"bench": "peers", "peer": ..., "skipped": ...} line for the rest.
The timing scheme mirrors bench/matmul.ts and bench/gpt.ts.

Threads: CFG["threads"] (the CPU backend's worker count). bench/peers.ts also sets OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS, MKL_NUM_THREADS, ... in our environment, which the BLAS libraries read when they
load; torch gets torch.set_num_threads, numpy's BLAS threadpoolctl where it is installed. Every CPU line
carries `threads` (as the library reports it where it can) and `threads_set_by`.
"""

import json
import math
import sys
import time

CFG = json.loads(sys.argv[1])
THREADS = int(CFG.get("threads") or 1)


def emit(**line):
    print(json.dumps(line), flush=True)


def log(msg):
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def median(xs):
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def rnd(x, digits=4):
    return float(f"{x:.{digits}g}")


def timed_batches(run, sync, t):
    """Batched timing as in matmul.ts: grow `per_sync` calls of `run` (then one sync) until a batch lasts
    `target_s`, then time `reps` such batches. Returns (per_sync, times)."""

    def batch(count):
        t0 = time.perf_counter()
        for _ in range(count):
            run()
        sync()
        return time.perf_counter() - t0

    batch(1)
    per_sync = 1
    while True:
        s = batch(per_sync)
        if s >= t["target_s"] or per_sync >= t["max_per_sync"]:
            break
        per_sync = min(t["max_per_sync"], per_sync * max(2, math.ceil(t["target_s"] / max(s, 1e-4) / 2)))
    return per_sync, [batch(per_sync) for _ in range(t["reps"])]


def bench_matmul(mm, sync, a, b, n, t):
    """`per_sync` matmuls then one sync per timed repetition."""
    per_sync, times = timed_batches(lambda: mm(a, b), sync, t)
    flops = 2 * n**3
    mid = median(times)
    return {
        "value": rnd(flops * per_sync / mid / 1e9),
        "unit": "GFLOP/s",
        "best": rnd(flops * per_sync / min(times) / 1e9),
        "per_sync": per_sync,
        "ms_per_matmul": rnd(mid * 1000 / per_sync),
    }


def loaded_blas():
    """The BLAS library this process has loaded, from /proc/self/maps (Linux; "" elsewhere): Debian's
    libblas.so.3 may be the unoptimised reference BLAS or OpenBLAS, which differ about tenfold."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if ".so" in line}
    except OSError:
        return ""
    names = []
    for path in sorted(paths):
        low = path.lower()
        if "openblas" in low:
            names.append("OpenBLAS")
        elif "mkl" in low and "libmkl" in low:
            names.append("MKL")
        elif "blis" in low:
            names.append("BLIS")
        elif low.endswith("/blas/libblas.so.3"):
            names.append("reference BLAS")
    return "+".join(sorted(set(names)))


def numpy_peer():
    try:
        import numpy as np
    except Exception as e:  # noqa: BLE001
        emit(bench="peers", peer="numpy", skipped=f"numpy not importable: {e}")
        return
    blas = ""
    try:
        blas = np.__config__.CONFIG["Build Dependencies"]["blas"]["name"]
    except Exception:  # noqa: BLE001
        pass
    threads = numpy_threads()
    np.ones((2, 2), dtype=np.float32) @ np.ones((2, 2), dtype=np.float32)  # loads the BLAS
    blas = blas or loaded_blas()
    rng = np.random.default_rng(7)
    for n in CFG["cpu_sizes"]:
        log(f"numpy matmul {n}")
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        r = bench_matmul(np.matmul, lambda: None, a, b, n, CFG["matmul"])
        emit(bench="matmul_f32", backend="numpy", adapter=f"numpy {np.__version__} ({blas or 'blas?'})", size=n,
             **threads, **r)


_limits = None  # threadpoolctl's context, kept alive so its limit holds


def numpy_threads():
    """Caps numpy's BLAS at THREADS: threadpoolctl where installed (it also reports the count in effect),
    else the *_NUM_THREADS environment bench/peers.ts set before numpy loaded its BLAS."""
    global _limits
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except Exception:  # noqa: BLE001
        return {"threads": THREADS, "threads_set_by": "environment (OMP/OPENBLAS/MKL_NUM_THREADS)"}
    _limits = threadpool_limits(limits=THREADS, user_api="blas")
    counts = {p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"}
    return {"threads": counts.pop() if len(counts) == 1 else sorted(counts), "threads_set_by": "threadpoolctl"}


def causal_attention(q, k, v):
    """PyTorch >= 2.0 has a fused kernel; Debian's 1.13 gets the plain masked softmax."""
    import torch
    import torch.nn.functional as F

    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    t = q.shape[-2]
    mask = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v


def tiny_gpt(torch, device):
    import torch.nn as nn
    import torch.nn.functional as F

    arch = CFG["gpt"]["arch"]
    V, D, L, H, T = arch["vocab"], arch["dModel"], arch["nLayers"], arch["nHeads"], arch["context"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(D)
            self.c_attn = nn.Linear(D, 3 * D)
            self.c_proj = nn.Linear(D, D)
            self.ln_2 = nn.LayerNorm(D)
            self.c_fc = nn.Linear(D, 4 * D)
            self.mlp_proj = nn.Linear(4 * D, D)

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).view(b, t, 3, H, d // H).permute(2, 0, 3, 1, 4)
            y = causal_attention(q, k, v)
            x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, d))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        """GPT-2 style: learned positions, pre-LN blocks, tanh GELU, tied embeddings."""

        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(V, D)
            self.wpe = nn.Embedding(T, D)
            self.h = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(D)
            for p in self.parameters():
                if p.dim() >= 2:
                    nn.init.normal_(p, std=0.02)

        def forward(self, idx, targets):
            t = idx.shape[1]
            x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
            for block in self.h:
                x = block(x)
            logits = self.ln_f(x) @ self.wte.weight.T
            return F.cross_entropy(logits.view(-1, V), targets.view(-1))

    return GPT().to(device)


def bench_gpt(torch, device, sync):
    g, o = CFG["gpt"], CFG["gpt"]["opt"]
    torch.manual_seed(1234)
    model = tiny_gpt(torch, device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": o["weightDecay"]}, {"params": rest, "weight_decay": 0.0}],
        lr=o["lr"],
        betas=tuple(o["betas"]),
    )
    b, t, v = g["arch"]["batch"], g["arch"]["context"], g["arch"]["vocab"]
    gen = torch.Generator().manual_seed(0)

    def batch():
        x = torch.randint(0, v, (b, t), generator=gen)
        return x, torch.roll(x, -1, 1)

    def step(x, y):
        loss = model(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o["clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    warm = 0.0
    for _ in range(2):
        t0 = time.perf_counter()
        step(*batch())
        sync()
        warm = time.perf_counter() - t0
    n = g.get("steps") or min(g["max_steps"], max(g["min_steps"], round(g["target_s"] / max(warm, 1e-4))))
    batches = [batch() for _ in range(n)]
    t0 = time.perf_counter()
    for x, y in batches:
        loss = step(x, y)
    sync()
    seconds = time.perf_counter() - t0
    return {
        "value": rnd(n * b * t / seconds),
        "unit": "tokens/s",
        "ms_per_step": rnd(seconds * 1000 / n),
        "steps": n,
        "final_loss": rnd(loss.item(), 6),
        "params": sum(p.numel() for p in model.parameters()),
    }


# NF4 levels (QLoRA, Dettmers et al. 2023; bitsandbytes' table).
NF4_LEVELS = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
]


def fake_quant_fns(torch):
    """quantize-dequantize per format along the last axis, written with plain tensor ops (no float8 dtypes,
    which torch 1.x lacks). Same arithmetic as formats/*.ts: on N(0,1) data all five give the same bits as
    ours; specials (NaN/Inf, all-zero blocks, f32 underflow) are not handled alike."""

    def round_float(x, mbits, emin, maxv):
        # Round to a float grid with `mbits` mantissa bits, smallest normal exponent `emin`, RNE, saturating.
        a = x.abs().clamp(max=maxv)
        e = torch.frexp(a).exponent.clamp(min=emin + 1) - 1  # frexp: a = m·2^exp, m in [0.5, 1)
        step = torch.exp2((e - mbits).to(x.dtype))
        return torch.copysign((torch.round(a / step) * step).clamp(max=maxv), x)

    def e4m3(x):
        return round_float(x, 3, -6, 448.0)

    def e2m1(x):
        return round_float(x, 1, 0, 6.0)

    def mxfp4(x):
        b = x.reshape(-1, 32)
        amax = b.abs().amax(-1, keepdim=True)
        shared = (torch.frexp(amax).exponent - 1 - 2).clamp(-127, 127)  # floor(log2 amax) - emax(E2M1)
        scale = torch.exp2(shared.to(x.dtype))
        return (e2m1(b / scale) * scale).reshape(x.shape)

    def nvfp4(x):
        # Multiplies by correctly rounded reciprocals, as formats/nvfp4.ts (and TransformerEngine) do.
        b = x.reshape(-1, 16)
        s_t = x.abs().amax() * (1.0 / 2688.0)
        s_b = e4m3(b.abs().amax(-1, keepdim=True) * (1.0 / (6.0 * s_t)))
        s = s_b * s_t
        q = e2m1(b * (1.0 / torch.where(s == 0, torch.ones_like(s), s)))
        return ((q * s_b) * s_t).reshape(x.shape)

    levels = torch.tensor(NF4_LEVELS)
    mids = (levels[1:] + levels[:-1]) / 2

    def nf4(x):
        lv, md = levels.to(x.device), mids.to(x.device)
        b = x.reshape(-1, 64)
        amax = b.abs().amax(-1, keepdim=True)
        n = b / torch.where(amax == 0, torch.ones_like(amax), amax)
        return (lv[torch.bucketize(n, md)] * amax).reshape(x.shape)

    def int4_group(g):
        def fq(x):
            b = x.reshape(-1, g)
            s = b.abs().amax(-1, keepdim=True) * (1.0 / 7.0)  # symmetric, restricted range ±7
            q = torch.round(b / torch.where(s == 0, torch.ones_like(s), s)).clamp(-8, 7)
            return (q * s).reshape(x.shape)

        return fq

    return {"e4m3": lambda g: e4m3, "mxfp4": lambda g: mxfp4, "nvfp4": lambda g: nvfp4, "nf4": lambda g: nf4,
            "int4": int4_group}


def bench_fake_quant(torch, device, backend, adapter, sync, extra):
    """elements/s of each format's quantize-dequantize; batched timing as bench/fake_quant.ts."""
    cfg = CFG.get("fake_quant") or {}
    if not cfg.get("run", True):
        return
    shape = cfg.get("shape", [2048, 2048])
    t = {"reps": cfg.get("reps", 5), "target_s": cfg.get("target_s", 0.3), "max_per_sync": cfg.get("max_per_sync", 64)}
    cases = cfg.get("cases", [{"format": f} for f in ("e4m3", "mxfp4", "nvfp4", "nf4")] + [
        {"format": "int4", "granularity": "group:128"}])
    fns = fake_quant_fns(torch)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(11)).to(device)
    elements = x.numel()
    for case in cases:
        fmt, gran = case["format"], case.get("granularity")
        head = {"bench": "fake_quant", "backend": backend, "adapter": adapter, "format": fmt, "elements": elements,
                "shape": shape, **extra}
        if gran:
            head["granularity"] = gran
        log(f"{backend} fake_quant {fmt}")
        try:
            if fmt not in fns:
                raise ValueError(f"no torch version of {fmt}")
            g = int(gran.split(":")[1]) if gran and gran.startswith("group:") else None
            fq = fns[fmt](g)

            with torch.no_grad():
                per_sync, times = timed_batches(lambda: fq(x), sync, t)
            mid = median(times)
            emit(**head, value=rnd(elements * per_sync / mid), unit="elements/s",
                 best=rnd(elements * per_sync / min(times)), per_sync=per_sync, reps=t["reps"],
                 ms_per_call=rnd(mid * 1000 / per_sync))
        except Exception as e:  # noqa: BLE001
            emit(**head, error=str(e))


def gptq_reference(torch, W, H, blocksize=128, percdamp=0.01, bits=4):
    """IST-DASLab/gptq `fasterquant` (gptq.py) with its `Quantizer` (quant.py): symmetric, per channel, no
    groups, no act-order; W is [out, in] (torch's Linear layout), f32 throughout. Returns Q and the Losses sum."""
    maxq = 2**bits - 1
    W = W.clone().float()
    columns = W.shape[1]
    # Quantizer.find_params(W, weight=True), sym=True, perchannel=True
    zeros = torch.zeros(W.shape[0])
    xmin = torch.minimum(W.min(1)[0], zeros)
    xmax = torch.maximum(W.max(1)[0], zeros)
    xmax = torch.maximum(torch.abs(xmin), xmax)
    tmp = xmin < 0
    if torch.any(tmp):
        xmin[tmp] = -xmax[tmp]
    tmp = (xmin == 0) & (xmax == 0)
    xmin[tmp] = -1
    xmax[tmp] = +1
    scale = ((xmax - xmin) / maxq).unsqueeze(1)
    zero = torch.full_like(scale, (maxq + 1) / 2)

    def quantize(x):
        q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
        return scale * (q - zero)

    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    Losses = torch.zeros_like(W)
    Q = torch.zeros_like(W)
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            q = quantize(w.unsqueeze(1)).flatten()
            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d**2
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        Losses[:, i1:i2] = Losses1 / 2
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return Q, torch.sum(Losses).item()


def bench_gptq(torch, backend, adapter, extra):
    """Seconds of the reference Hessian accumulation (`add_batch`, batches of `batch` sequences) plus
    `fasterquant` for an n x n layer; median of `reps` runs after one warm-up, as bench/gptq.ts."""
    cfg = CFG.get("gptq") or {}
    if not cfg.get("run", False):
        return
    seqs, tokens, batch, reps = cfg["sequences"], cfg["tokens"], cfg["batch"], cfg["reps"]
    for n in cfg["sizes"]:
        head = {"bench": "gptq", "backend": backend, "adapter": adapter, "size": f"{n}x{n}",
                "calibration": f"{seqs} sequences x {tokens} tokens", "format": "int4 channel", **extra}
        log(f"{backend} gptq {n}x{n}")
        try:
            gen = torch.Generator().manual_seed(21)
            W = torch.randn(n, n, generator=gen)
            batches = [torch.randn(batch, tokens, n, generator=gen) for _ in range(seqs // batch)]

            def once():
                t0 = time.perf_counter()
                H = torch.zeros(n, n)
                nsamples = 0
                for inp in batches:  # GPTQ.add_batch for a Linear layer
                    tmp = inp.shape[0]
                    inp = inp.reshape((-1, inp.shape[-1])).t()
                    H *= nsamples / (nsamples + tmp)
                    nsamples += tmp
                    inp = math.sqrt(2 / nsamples) * inp.float()
                    H += inp.matmul(inp.t())
                t1 = time.perf_counter()
                gptq_reference(torch, W, H)
                return t1 - t0, time.perf_counter() - t1

            with torch.no_grad():
                once()
                runs = [once() for _ in range(reps)]
            emit(**head, value=rnd(median([a + b for a, b in runs])), unit="s",
                 hessian_s=rnd(median([a for a, _ in runs])), quantize_s=rnd(median([b for _, b in runs])),
                 reps=reps)
        except Exception as e:  # noqa: BLE001
            emit(**head, error=str(e))


def torch_peer():
    if CFG.get("torch_missing"):
        emit(bench="peers", peer="torch", skipped=CFG["torch_missing"])
        return
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        emit(bench="peers", peer="torch", skipped=f"torch not importable in {sys.executable}: {e}")
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.set_num_threads(THREADS)
    threads = {"threads": torch.get_num_threads(), "threads_set_by": "torch.set_num_threads"}
    torch.ones(2, 2) @ torch.ones(2, 2)  # loads the BLAS
    blas = loaded_blas()
    cpu_name = f"torch {torch.__version__} cpu{f' ({blas})' if blas else ''}, {torch.get_num_threads()} threads"
    devices = [("cpu", "torch-cpu", cpu_name, lambda: None)]
    if torch.cuda.is_available():
        name = f"torch {torch.__version__} {torch.cuda.get_device_name(0)} (TF32 off)"
        devices.append(("cuda", "torch-cuda", name, torch.cuda.synchronize))
    else:
        emit(bench="peers", peer="torch-cuda", skipped="torch.cuda.is_available() is False")
    for device, backend, adapter, sync in devices:
        cpu = threads if device == "cpu" else {}
        sizes = CFG["cuda_sizes"] if device == "cuda" else CFG["cpu_sizes"]
        gen = torch.Generator().manual_seed(7)
        for n in sizes:
            log(f"{backend} matmul {n}")
            try:
                a = torch.randn(n, n, generator=gen).to(device)
                b = torch.randn(n, n, generator=gen).to(device)
                r = bench_matmul(torch.matmul, sync, a, b, n, CFG["matmul"])
                emit(bench="matmul_f32", backend=backend, adapter=adapter, size=n, **cpu, **r)
            except Exception as e:  # noqa: BLE001
                emit(bench="matmul_f32", backend=backend, adapter=adapter, size=n, **cpu, error=str(e))
        if CFG["gpt"]["run"]:
            log(f"{backend} tiny GPT training step")
            head = {"bench": "gpt_train_step", "backend": backend, "adapter": adapter, "size": CFG["gpt"]["size"],
                    **cpu}
            try:
                emit(**head, **bench_gpt(torch, device, sync))
            except Exception as e:  # noqa: BLE001
                emit(**head, error=str(e))
        bench_fake_quant(torch, device, backend, adapter, sync, cpu)
        if device == "cpu":
            bench_gptq(torch, backend, adapter, cpu)


if __name__ == "__main__":
    numpy_peer()
    torch_peer()
