"""Writes tiny packed-layout safetensors files from the formulas the ecosystem documents (not from
lowbit), and prints, as JSON, the values each layer must decode to, for tests/it/dequantize.rs.

- comfy.safetensors: ComfyUI FP8 (comfy_kitchen's per-tensor recipe): scale = amax/448 (f32
  scalar), q = clamp(x * bf16(1/scale), +-448) as float8_e4m3fn, a `comfy_quant` JSON marker;
  decodes to bf16(q) * bf16(scale) rounded to bf16. A dense BF16 bias rides along.
- bfl.safetensors: BFL fp8r as diffusers' quantizers/bfl/utils.py writes it: per-row scale
  = max(amax_row/448, 1e-12) f32 [N], q = clamp(x/scale, +-448) as e4m3; decodes to
  q.float() * scale (f32).
- nf4.safetensors: bitsandbytes NF4, blocksize 64, no double quantization, shape (3, 33) so that
  the last block is partial and the element count odd: absmax per block, nearest code (ties to
  the lower one), packed high nibble first, padding code 7; decodes to code * absmax (f32),
  then to the source dtype (bf16).
- fp8.safetensors: a plain F8_E5M2 matrix (diffusers' layerwise casting); decodes exactly.

Usage: python packed_files.py OUTDIR
Output: {"file.safetensors": {"layer name": {"bf16": [bits...]} or {"f32": [bits...]}}}, layers
listed in the order of the file.
"""

import json
import struct
import sys

import ml_dtypes
import numpy as np

E4M3 = ml_dtypes.float8_e4m3fn
E5M2 = ml_dtypes.float8_e5m2
BF16 = ml_dtypes.bfloat16

# bitsandbytes' NF4 table (the normal-float quantiles of QLoRA, as bnb stores them).
NF4 = np.array(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    dtype=np.float32,
)


def write(path, tensors, meta=None):
    """A safetensors file: 8-byte header length, JSON header padded with spaces, data."""
    header = {"__metadata__": meta} if meta else {}
    data = b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def bf16(x):
    return np.asarray(x, dtype=np.float32).astype(BF16)


def bf16_bits(x):
    return bf16(x).view(np.uint16).reshape(-1).tolist()


def f32_bits(x):
    return np.asarray(x, dtype=np.float32).view(np.uint32).reshape(-1).tolist()


def weights(rng, shape):
    """BF16-representable weights with a few large values."""
    w = rng.normal(0.0, 0.05, size=shape).astype(np.float32)
    w.reshape(-1)[:: 7] *= 6.0
    return bf16(w).astype(np.float32)


def comfy(out, rng):
    w = weights(rng, (8, 32))
    scale = np.float32(np.abs(w).max() / np.float32(448.0))
    inv = bf16(np.float32(1.0) / scale).astype(np.float32)
    q = np.clip(w * inv, -448, 448).astype(E4M3)
    deq = bf16(q.astype(np.float32) * bf16(scale).astype(np.float32))
    bias = weights(rng, (8,))
    marker = json.dumps({"format": "float8_e4m3fn"}).encode()
    write(
        f"{out}/comfy.safetensors",
        [
            ("blk.a.weight", "F8_E4M3", [8, 32], q.tobytes()),
            ("blk.a.weight_scale", "F32", [], np.float32(scale).tobytes()),
            ("blk.a.comfy_quant", "U8", [len(marker)], marker),
            ("blk.a.bias", "BF16", [8], bf16(bias).tobytes()),
        ],
    )
    return {"blk.a.weight": {"bf16": bf16_bits(deq)}, "blk.a.bias": {"bf16": bf16_bits(bias)}}


def bfl(out, rng):
    w = weights(rng, (6, 16))
    scale = np.maximum(np.abs(w).max(axis=1) / np.float32(448.0), np.float32(1e-12)).astype(np.float32)
    q = np.clip(w / scale[:, None], -448, 448).astype(E4M3)
    deq = q.astype(np.float32) * scale[:, None]
    write(
        f"{out}/bfl.safetensors",
        [
            ("img_in.weight", "F8_E4M3", [6, 16], q.tobytes()),
            ("img_in.weight_scale", "F32", [6], scale.tobytes()),
        ],
    )
    return {"img_in.weight": {"f32": f32_bits(deq)}}


def nf4(out, rng):
    shape = (3, 33)
    x = weights(rng, shape).reshape(-1)
    n = x.size
    blocks = -(-n // 64)
    absmax = np.array([np.abs(x[i * 64 : (i + 1) * 64]).max() for i in range(blocks)], dtype=np.float32)
    mids = (NF4[1:] + NF4[:-1]) / 2
    codes = []
    for i, v in enumerate(x):
        am = absmax[i // 64]
        s = np.float32(0.0) if am == 0 else np.clip(v / am, -1, 1)
        # The first midpoint not below s: a value on a midpoint takes the lower code.
        codes.append(int(np.searchsorted(mids, s, side="left")))
    if n % 2:
        codes.append(7)
    packed = bytes((codes[2 * i] << 4) | codes[2 * i + 1] for i in range(len(codes) // 2))
    deq = np.array([NF4[c] * absmax[i // 64] for i, c in enumerate(codes[:n])], dtype=np.float32)
    state = json.dumps({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": list(shape)}).encode()
    write(
        f"{out}/nf4.safetensors",
        [
            ("double_blocks.0.img_mlp.0.weight", "U8", [len(packed), 1], packed),
            ("double_blocks.0.img_mlp.0.weight.absmax", "F32", [blocks], absmax.tobytes()),
            ("double_blocks.0.img_mlp.0.weight.quant_map", "F32", [16], NF4.tobytes()),
            ("double_blocks.0.img_mlp.0.weight.quant_state.bitsandbytes__nf4", "U8", [len(state)], state),
        ],
    )
    return {"double_blocks.0.img_mlp.0.weight": {"bf16": bf16_bits(deq)}}


def plain(out, rng):
    w = weights(rng, (4, 8)).astype(E5M2)
    write(f"{out}/fp8.safetensors", [("p.weight", "F8_E5M2", [4, 8], w.tobytes())])
    return {"p.weight": {"f32": f32_bits(w.astype(np.float32))}}


def main(out):
    rng = np.random.default_rng(20260)
    report = {
        "comfy.safetensors": comfy(out, rng),
        "bfl.safetensors": bfl(out, rng),
        "nf4.safetensors": nf4(out, rng),
        "fp8.safetensors": plain(out, rng),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
