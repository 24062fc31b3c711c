"""Checks that a GGUF file written from a BF16 safetensors checkpoint holds every tensor's values
exactly, as the `gguf` package decodes them (`gguf.quants.dequantize`): the reference for
already-ternary weights stored as TQ1_0/TQ2_0.

Usage: python ternary_tq.py SOURCE.safetensors FILE.gguf
Prints JSON: {"types": {type: count}, "missing": [names], "mismatched": {name: count}}.
"""

import json
import sys

import gguf
import ml_dtypes  # noqa: F401  (lets safetensors.numpy read BF16)
import numpy as np
from safetensors.numpy import load_file


def main(source, path):
    src = load_file(source)
    r = gguf.GGUFReader(path)
    types, mismatched, seen = {}, {}, set()
    for t in r.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        want = src[t.name].astype(np.float32)
        seen.add(t.name)
        values = values.reshape(want.shape)
        bad = int((values != want).sum())
        if bad:
            mismatched[t.name] = bad
    missing = sorted(set(src) - seen)
    print(json.dumps({"types": types, "missing": missing, "mismatched": mismatched}, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
