"""NVFP4 by the runtimes' own code, for tests/it/nvfp4.rs.

References (pinned in requirements-torch.txt), run on the CPU:
  bfl:   diffusers 0.42.1 quantizers/bfl/utils.py quantize_nvfp4 / dequantize_nvfp4;
  comfy: comfy-kitchen 0.2.40 TensorCoreNVFP4Layout.quantize (global scale amax / 2688 on the
         BF16 tensor, then the eager backend's quantize_nvfp4 with pad_16x, pack_uint4 and
         to_blocked), checked equal to comfy_kitchen.backends.eager.quantization.quantize_nvfp4
         called directly; dequantized by QuantizedTensor(...).dequantize() to BF16.

Modes:
  tensor KIND IN N K
      IN holds a BF16 weight [N, K] (raw little-endian). Prints JSON with the packed codes, the
      block scales as stored (BFL row-major, ComfyUI swizzled), the F32 global scale and the
      dequantized weight as F32, all in hex, and whether any block scale is NaN.
  files KIND ORIG LOWBIT DEQ OUT
      ORIG is a BF16 checkpoint, LOWBIT lowbit's `--to KIND:nvfp4` conversion of it, DEQ
      `lowbit dequantize --dtype f32` of LOWBIT. For every weight LOWBIT's `lowbit.schemes` lists,
      quantizes ORIG's weight with the reference and compares each stored tensor (name, dtype,
      shape, bytes) with LOWBIT's, and the reference's dequantization with DEQ's, bit for bit;
      also checks that every other tensor of LOWBIT is ORIG's, unchanged. Writes OUT: ORIG with
      those weights replaced by the reference's tensors and no lowbit metadata (a file made by
      someone else; BFL's input_scale there is 0.01, a calibrated-looking value). Prints JSON
      {layers, compared, differ, dequant_differ, plain_differ, ok}; exits 1 if any check fails.
"""

import json
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

MARKER = json.dumps({"format": "nvfp4"}).encode()


def hexs(t: torch.Tensor) -> str:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes().hex()


def bfl(w: torch.Tensor):
    from diffusers.quantizers.bfl.utils import dequantize_nvfp4, quantize_nvfp4

    q, s, g = quantize_nvfp4(w)
    return {"weight": q, "weight_scale": s, "weight_scale_2": g}, dequantize_nvfp4(q, s, g)


def comfy(w: torch.Tensor):
    from comfy_kitchen.backends.eager.quantization import quantize_nvfp4
    from comfy_kitchen.tensor import QuantizedTensor, TensorCoreNVFP4Layout

    q, params = TensorCoreNVFP4Layout.quantize(w)
    padded = TensorCoreNVFP4Layout.get_padded_shape(tuple(w.shape)) != tuple(w.shape)
    q2, s2 = quantize_nvfp4(w, params.scale, pad_16x=padded)
    same = torch.equal(q, q2) and torch.equal(params.block_scale.view(torch.uint8), s2.view(torch.uint8))
    assert same, "the layout did not dispatch to the eager quantize_nvfp4"
    dq = QuantizedTensor(q, "TensorCoreNVFP4Layout", params).dequantize()
    assert dq.dtype == torch.bfloat16 and tuple(dq.shape) == tuple(w.shape)
    return {"weight": q, "weight_scale": params.block_scale, "weight_scale_2": params.scale}, dq.float()


def tensor_mode(kind: str, path: str, n: int, k: int) -> None:
    raw = np.fromfile(path, dtype="<i2").reshape(n, k)
    w = torch.from_numpy(raw.copy()).view(torch.bfloat16)
    stored, dq = (bfl if kind == "bfl" else comfy)(w)
    print(json.dumps({
        "codes": hexs(stored["weight"]),
        "scales": hexs(stored["weight_scale"]),
        "scales_shape": list(stored["weight_scale"].shape),
        "global": hexs(stored["weight_scale_2"].to(torch.float32).reshape(())),
        "dequant": hexs(dq.to(torch.float32)),
        "scale_nan": bool(torch.isnan(stored["weight_scale"].float()).any()),
    }))


def files_mode(kind: str, orig: str, lowbit: str, deq: str, out: str) -> None:
    src, ours, dec = load_file(orig), load_file(lowbit), load_file(deq)
    with safe_open(lowbit, framework="pt") as f:
        schemes = json.loads(f.metadata()["lowbit.schemes"])
    differ, dequant_differ, compared = [], [], 0
    third = dict(src)
    companions = set()
    for name, scheme in sorted(schemes.items()):
        if scheme != f"{kind}:nvfp4":
            differ.append(f"{name}: scheme {scheme}")
            continue
        module = name[: -len(".weight")]
        stored, dq = (bfl if kind == "bfl" else comfy)(src[name])
        if kind == "bfl":
            stored["input_scale"] = torch.tensor(1.0, dtype=torch.float32)
        else:
            stored["comfy_quant"] = torch.tensor(list(MARKER), dtype=torch.uint8)
        for suffix, ref in stored.items():
            key = f"{module}.{suffix}"
            companions.add(key)
            got = ours.get(key)
            ok = got is not None and got.dtype == ref.dtype and got.shape == ref.shape
            if not (ok and hexs(got) == hexs(ref)):
                differ.append(key)
            compared += 1
        if not torch.equal(dq.to(torch.float32), dec[name]):
            dequant_differ.append(name)
        del third[name]
        for suffix, ref in stored.items():
            third[f"{module}.{suffix}"] = ref.clone()
        if kind == "bfl":
            third[f"{module}.input_scale"] = torch.tensor(0.01, dtype=torch.float32)
    plain_differ = [
        k for k in ours if k not in companions and not (k in src and torch.equal(ours[k], src[k]))
    ]
    save_file(third, out, metadata={"format": "pt"})
    ok = bool(schemes) and not differ and not dequant_differ and not plain_differ
    report = {
        "layers": len(schemes),
        "compared": compared,
        "differ": differ,
        "dequant_differ": dequant_differ,
        "plain_differ": plain_differ,
    }
    print(json.dumps({**report, "ok": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "tensor":
        tensor_mode(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif mode == "files":
        files_mode(*sys.argv[2:7])
    else:
        raise SystemExit(f"unknown mode {mode}")
