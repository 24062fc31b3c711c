"""Prints, as JSON, what the `gguf` package's GGUFReader sees in each GGUF file given: metadata
values typed as the package decodes them (numbers, strings, lists), and the values of tensors it
can dequantize (as float32 bit patterns), so lowbit's reading can be compared.
Usage: python gguf_read.py FILE...
"""

import json
import sys

import gguf
import numpy as np


def main(paths: list[str]) -> None:
    report = {}
    for path in paths:
        r = gguf.GGUFReader(path)
        kv = {}
        for f in r.fields.values():
            if f.name.startswith("GGUF."):
                continue
            value = f.contents()
            kv[f.name] = value.tolist() if hasattr(value, "tolist") else value
        tensors = []
        for t in r.tensors:
            entry = {
                "name": t.name,
                "shape": [int(d) for d in reversed(t.shape.tolist())],
                "type": t.tensor_type.name,
                "params": int(t.n_elements),
                "bytes": int(t.n_bytes),
            }
            try:
                values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
                entry["f32_bits"] = values.reshape(-1).view(np.uint32).tolist()
            except NotImplementedError:
                pass
            tensors.append(entry)
        report[path] = {"kv": kv, "tensors": tensors}
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
