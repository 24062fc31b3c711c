"""comfy-kitchen's eager SVDQuant W4A4 reference runs every svdq-w4a4 layer of a lowbit file.

For each weight that `lowbit.schemes` marks `svdq-w4a4`, the five stored tensors
(`<m>.qweight` I8 [N, K/2], `<m>.wscales` [K/64, N], `<m>.smooth_factor` [K], `<m>.proj_down`
[K, r], `<m>.proj_up` [N, r]) and the dense `<m>.bias` are loaded with
`safetensors.torch.load_file` and converted to float32 (exact: BF16 ⊂ F32). An input x [7, K] is
drawn with numpy (seeded by the layer's position): Gaussian per channel, scaled by the layer's
calibration absmax / 3, so the statistics' outlier channels are outliers of x too. Then, in
float32 on the CPU:

    q_act, ascales, lora_act = quantize_svdquant_w4a4(x, smooth, proj_down)
    y = scaled_mm_svdquant_w4a4(q_act, qweight, ascales, wscales, lora_act, proj_up, bias)

(comfy_kitchen.backends.eager.svdquant, the pure-PyTorch reference of its CUDA kernels), and
the same with smooth replaced by ones (`y_ones`: a negative control, the file's λ ignored).
Rows beyond the 7 real tokens (comfy-kitchen pads M to 256) are dropped.

Writes `<m>.x`, `<m>.y`, `<m>.y_ones` (F32) to OUT and prints JSON {layers: [...]}.

Usage: python svdq_comfy.py LOWBIT.safetensors STATS.safetensors OUT.safetensors
"""

import json
import sys

import numpy as np
import torch
from comfy_kitchen.backends.eager.svdquant import (
    quantize_svdquant_w4a4,
    scaled_mm_svdquant_w4a4,
)
from safetensors import safe_open
from safetensors.torch import load_file, save_file

TOKENS = 7


def main(path: str, stats_path: str, out_path: str) -> None:
    with safe_open(path, "pt") as f:
        schemes = json.loads(f.metadata()["lowbit.schemes"])
    st = load_file(path)
    stats = load_file(stats_path)
    out, layers = {}, []
    for i, (name, scheme) in enumerate(sorted(schemes.items())):
        if scheme.split(":")[0] != "svdq-w4a4":
            continue
        m = name[: -len(".weight")]
        t = {s: st[f"{m}.{s}"].float() for s in ("qweight", "wscales", "smooth_factor", "proj_down", "proj_up")}
        qweight = st[f"{m}.qweight"]
        assert qweight.dtype == torch.int8, m
        bias = st[f"{m}.bias"].float()
        n, k = qweight.shape[0], qweight.shape[1] * 2
        absmax = stats[m].numpy().reshape(-1)[-k:].astype(np.float64)
        rng = np.random.default_rng(1000 + i)
        x = torch.from_numpy((rng.standard_normal((TOKENS, k)) * absmax / 3).astype(np.float32))

        def run(smooth):
            q_act, ascales, lora_act = quantize_svdquant_w4a4(x, smooth, t["proj_down"])
            y = scaled_mm_svdquant_w4a4(q_act, qweight, ascales, t["wscales"], lora_act, t["proj_up"], bias)
            assert y.dtype == torch.float32 and y.shape[1] == n, (m, y.dtype, y.shape)
            return y[:TOKENS].contiguous()

        out[f"{m}.x"] = x
        out[f"{m}.y"] = run(t["smooth_factor"])
        out[f"{m}.y_ones"] = run(torch.ones_like(t["smooth_factor"]))
        layers.append(name)
    save_file(out, out_path)
    print(json.dumps({"layers": layers}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
