"""Prints, as JSON, for every tensor of each GGUF file given: its type, torch-order shape, and the
SHA-256 of the float32 values the `gguf` package's dequantizer produces (little-endian bytes).
lowbit computes the same digest from its own dequantizer, so equal digests mean equal values.
Usage: python gguf_digest.py FILE...
"""

import hashlib
import json
import sys

import gguf
import numpy as np


def main(paths: list[str]) -> None:
    report = {}
    for path in paths:
        r = gguf.GGUFReader(path)
        tensors = {}
        for t in r.tensors:
            values = gguf.quants.dequantize(t.data, t.tensor_type).astype("<f4")
            tensors[t.name] = {
                "type": t.tensor_type.name,
                "shape": [int(d) for d in reversed(t.shape.tolist())],
                "sha256": hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest(),
            }
        fields = {f.name: str(f.contents()) for f in r.fields.values() if not f.name.startswith("GGUF.")}
        report[path] = {"tensors": tensors, "kv": fields}
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
