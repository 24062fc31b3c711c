"""comfy-kitchen dequantizes every `comfy_quant` layer of lowbit's `comfy:fp8` file to what
`lowbit dequantize` writes.

For each `<m>.comfy_quant` (U8 JSON, ComfyUI's per-layer marker): the JSON's `format` must be
FORMAT; `<m>.weight` (FP8) and `<m>.weight_scale` (F32 scalar) are wrapped as ComfyUI's
mixed-precision ops wrap them, `comfy_kitchen.tensor.QuantizedTensor(weight,
"TensorCoreFP8Layout", TensorCoreFP8Layout.Params(scale, orig_dtype=bfloat16, orig_shape))`,
and `.dequantize()` runs comfy-kitchen's eager (CPU) `dequantize_per_tensor_fp8`:
bf16(q) * bf16(scale), a BF16 product. That must equal, bit for bit, both
`lowbit dequantize --dtype bf16` and `--dtype f32` of the same file (lowbit's decoding applies the
same BF16 rounding, so its F32 output holds BF16 values). Every tensor without a marker must be
the same in both files too.

Prints JSON {layers, differ, formats, ok}; exits 1 if any check fails.

Usage: python runtimes_comfy.py COMFY.safetensors DEQ_BF16.safetensors DEQ_F32.safetensors FORMAT
"""

import json
import sys

import torch
from comfy_kitchen.tensor import QuantizedTensor, TensorCoreFP8Layout
from safetensors.torch import load_file


def main(path: str, deq_bf16: str, deq_f32: str, fmt: str) -> None:
    st = load_file(path)
    bf16, f32 = load_file(deq_bf16), load_file(deq_f32)
    markers = sorted(k[: -len(".comfy_quant")] for k in st if k.endswith(".comfy_quant"))
    differ, formats = [], set()
    for m in markers:
        quant = json.loads(bytes(st[f"{m}.comfy_quant"].tolist()).decode())
        formats.add(quant["format"])
        q, scale = st[f"{m}.weight"], st[f"{m}.weight_scale"]
        assert q.dtype == getattr(torch, quant["format"]) and scale.dtype == torch.float32 and scale.dim() == 0, m
        params = TensorCoreFP8Layout.Params(scale=scale, orig_dtype=torch.bfloat16, orig_shape=tuple(q.shape))
        w = QuantizedTensor(q, "TensorCoreFP8Layout", params).dequantize()
        assert w.dtype == torch.bfloat16 and tuple(w.shape) == tuple(q.shape), m
        name = f"{m}.weight"
        if not (torch.equal(w, bf16[name]) and torch.equal(w.float(), f32[name])):
            differ.append(name)
    # Tensors with no marker: stored as is, so both decodings hold the stored values.
    companions = {f"{m}.{s}" for m in markers for s in ("weight", "weight_scale", "comfy_quant")}
    plain = [k for k in st if k not in companions]
    for k in plain:
        if not (torch.equal(st[k].to(torch.bfloat16), bf16[k]) and torch.equal(st[k].float(), f32[k])):
            differ.append(k)
    ok = bool(markers) and not differ and formats == {fmt}
    ok &= set(bf16) == set(f32) == {f"{m}.weight" for m in markers} | set(plain)
    report = {"layers": len(markers), "plain": len(plain), "differ": differ, "formats": sorted(formats)}
    print(json.dumps({**report, "ok": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(*sys.argv[1:5])
