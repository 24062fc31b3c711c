"""Writes one small FLUX-named GGUF file per ggml type with the `gguf` package, then prints, as
JSON, what the package's own GGUFReader sees in each: the reference for `lowbit inspect`.

Types the package can quantize are quantized from random data; the others (K-quants, IQ types,
integers) get random bytes of the right size, which is all a header reader needs.
Usage: python gguf_files.py OUTDIR
"""

import json
import sys

import gguf
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

QUANTIZABLE = {T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.TQ1_0, T.TQ2_0}
# Torch order, outermost first. img_in rows (64) are not a multiple of 256: K-quant files keep it F32.
SHAPES = {
    "double_blocks.0.img_attn.qkv.weight": (768, 256),
    "double_blocks.0.img_attn.qkv.bias": (768,),
    "double_blocks.0.img_attn.proj.weight": (256, 256),
    "single_blocks.0.linear2.weight": (256, 768),
    "img_in.weight": (256, 64),
}
# gguf 0.19.0 sizes Q8_1 as 40 bytes per block; ggml's block_q8_1 is 36. Q8_1 never appears in
# model files, and lowbit follows ggml, so it is left out here.
SKIP = {T.Q8_1}


def main(out: str) -> None:
    rng = np.random.default_rng(0)
    report = {}
    for qt, (block, type_size) in GGML_QUANT_SIZES.items():
        if qt in SKIP:
            continue
        path = f"{out}/flux-{qt.name.lower()}.gguf"
        w = gguf.GGUFWriter(path, "flux")
        w.add_quantization_version(2)
        for name, shape in SHAPES.items():
            ty = qt if len(shape) == 2 and shape[-1] % block == 0 else T.F32
            x = rng.standard_normal(shape).astype(np.float32)
            if ty in QUANTIZABLE:
                w.add_tensor(name, gguf.quants.quantize(x, ty), raw_dtype=ty)
            else:
                nbytes = shape[-1] // block * type_size
                raw = rng.integers(0, 256, size=(*shape[:-1], nbytes), dtype=np.uint8)
                w.add_tensor(name, raw, raw_dtype=ty)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        r = gguf.GGUFReader(path)
        report[path] = [
            {
                "name": t.name,
                "shape": [int(d) for d in reversed(t.shape.tolist())],
                "type": t.tensor_type.name,
                "params": int(t.n_elements),
                "bytes": int(t.n_bytes),
            }
            for t in r.tensors
        ]
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
