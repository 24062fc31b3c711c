"""Computes, independently of lowbit, what `lowbit diff A.gguf B.safetensors` must report: for each
tensor in both files, the squared error, the squared reference norm and the max absolute error
of A (dequantized by the `gguf` package, or a BF16/F32/F16 safetensors file) against B (a
BF16/F32 safetensors file read with numpy and ml_dtypes), accumulated in float64.
Usage: python diff_metrics.py A.gguf|A.safetensors B.safetensors
Output: {"name": {"sq_error": x, "sq_reference": y, "max_abs_error": z, "params": n}}
"""

import json
import struct
import sys

import gguf
import ml_dtypes
import numpy as np

DTYPES = {"BF16": ml_dtypes.bfloat16, "F32": np.float32, "F16": np.float16}


def safetensors_f32(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        data = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype=DTYPES[e["dtype"]])
        out[name] = data.astype(np.float64).reshape(e["shape"])
    return out


def main(a_path, b_path):
    ref = safetensors_f32(b_path)
    report = {}
    if a_path.endswith(".safetensors"):
        pairs = [(name, v.reshape(-1)) for name, v in safetensors_f32(a_path).items()]
    else:
        pairs = [
            (t.name, gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1))
            for t in gguf.GGUFReader(a_path).tensors
        ]
    for name, a in pairs:
        if name not in ref:
            continue
        b = ref[name].reshape(-1)
        d = a - b
        report[name] = {
            "sq_error": float(np.sum(d * d)),
            "sq_reference": float(np.sum(b * b)),
            "max_abs_error": float(np.max(np.abs(d))),
            "params": int(b.size),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
