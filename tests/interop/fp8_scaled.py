"""Quantizes a BF16 weight [N, K] (raw little-endian file) with a reference FP8 recipe and
prints the codes, the scale(s) and the reference's dequantized values (as F32) in hex (JSON).

Usage: fp8_scaled.py MODE IN N K, MODE one of
  comfy-e4m3, comfy-e5m2: comfy-kitchen's TensorCoreFP8Layout.quantize / dequantize (eager, CPU);
  bfl: diffusers' quantizers.bfl.utils.quantize_fp8r / dequantize_fp8r."""

import json
import sys

import numpy as np
import torch

mode, path, n, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
raw = np.fromfile(path, dtype="<i2").reshape(n, k)
w = torch.from_numpy(raw.copy()).view(torch.bfloat16)

if mode.startswith("comfy"):
    from comfy_kitchen.tensor.fp8 import TensorCoreFP8Layout

    dtype = torch.float8_e4m3fn if mode == "comfy-e4m3" else torch.float8_e5m2
    q, params = TensorCoreFP8Layout.quantize(w, dtype=dtype)
    scale = params.scale.reshape(-1)
    dq = TensorCoreFP8Layout.dequantize(q, params)
elif mode == "bfl":
    from diffusers.quantizers.bfl.utils import dequantize_fp8r, quantize_fp8r

    q, scale = quantize_fp8r(w)
    dq = dequantize_fp8r(q, scale)
else:
    raise SystemExit(f"unknown mode {mode}")

print(json.dumps({
    "codes": q.view(torch.uint8).numpy().tobytes().hex(),
    "scale": scale.to(torch.float32).numpy().tobytes().hex(),
    "dequant": dq.to(torch.float32).numpy().tobytes().hex(),
}))
