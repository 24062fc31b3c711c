"""Quantizes a BF16 weight [N, K] (raw little-endian file) with bitsandbytes' quantize_4bit
(nf4, blocksize 64, CPU), without and with compress_statistics, and prints every tensor of
QuantState.as_dict(packed=True) in hex, the offset's bits, and bitsandbytes' dequantization of
the same bytes in F32 (JSON)."""

import json
import os
import sys

# bitsandbytes wraps its reference dequantization in torch.compile; plain eager is the same math.
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import numpy as np
import torch
import bitsandbytes.functional as F
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

path, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
raw = np.fromfile(path, dtype="<i2").reshape(n, k)
w = torch.from_numpy(raw.copy()).view(torch.bfloat16)

out = {}
for name, dq in [("plain", False), ("dq", True)]:
    packed, state = F.quantize_4bit(w, blocksize=64, compress_statistics=dq, quant_type="nf4")
    tensors = {key: v for key, v in state.as_dict(packed=True).items()}
    entry = {key: v.contiguous().numpy().tobytes().hex() for key, v in tensors.items()}
    entry["weight"] = packed.numpy().tobytes().hex()
    entry["weight_shape"] = list(packed.shape)
    if dq:
        entry["offset_bits"] = int(np.float32(state.offset.item()).view(np.uint32))
    # bitsandbytes' reference dequantization (backends/default): its CPU kernel
    # (dequantize_4bit "cpu") indexes absmax per row and misreads rows whose length is not a
    # multiple of 64, so the torch formula it falls back to is the reference here.
    absmax = state.absmax
    if dq:
        absmax = F.dequantize_blockwise(state.absmax, state.state2) + state.offset
    deq = _dequantize_4bit_compute(packed.reshape(-1), absmax.float(), state.code, 64, state.shape, torch.float32)
    entry["dequant"] = deq.to(torch.float32).numpy().tobytes().hex()
    out[name] = entry
print(json.dumps(out))
