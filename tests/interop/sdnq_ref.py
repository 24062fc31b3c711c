"""lowbit's SDNQ exports against sdnq 0.2.8's own quantizer, byte for byte.

References lowbit has no part in:
  R  FluxTransformer2DModel.from_single_file(BF16 .safetensors, torch_dtype=bfloat16): diffusers'
     own BFL -> diffusers converter, saved as a BF16 diffusers folder;
  S  FluxTransformer2DModel.from_pretrained(that folder, quantization_config=
     diffusers.SDNQConfig(weights_dtype="uint4"), torch_dtype=bfloat16), saved with
     save_pretrained: sdnq's own choice of layers, its quantizer, its files;
  SV the same with use_svd=True (torch.svd_lowrank: its branch is random, so only the names,
     dtypes and shapes of its files are compared);
  Q  sdnq.quantizer.sdnq_quantize_layer_weight(residual, "Linear", "uint4",
     using_pre_calculated_svd=True) on the residual W - svd_up @ svd_down of lowbit's own branch
     (float64 product, as formats/sdnq.md specifies).
Checks:
  uint4  lowbit's folder holds exactly S's tensors (names, dtypes, shapes) and every byte equals
         S's; its config.json quantization_config equals S's (modules_to_not_convert as a set).
  svd    lowbit's folder holds exactly SV's names, dtypes and shapes; for every quantized layer
         weight, scale and zero_point equal Q's bytes; the quantization_config equals SV's.
Prints one JSON object with the counts; exits 1 if any check fails.

Usage: python sdnq_ref.py BF16.safetensors UINT4_DIR UINT4_SVD_DIR WORKDIR
"""

import json
import os
import sys

import torch
from diffusers import FluxTransformer2DModel, SDNQConfig
from safetensors import safe_open
from sdnq.quantizer import sdnq_quantize_layer_weight

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diffusers_flux import write_config  # noqa: E402

MODEL = "diffusion_pytorch_model.safetensors"


def tensors(folder: str) -> dict:
    with safe_open(os.path.join(folder, MODEL), framework="pt") as f:
        return {n: f.get_tensor(n) for n in f.keys()}


def qconfig(folder: str) -> dict:
    with open(os.path.join(folder, "config.json")) as f:
        q = json.load(f)["quantization_config"]
    q["modules_to_not_convert"] = sorted(set(q["modules_to_not_convert"]))
    return q


def raw(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def signature(ts: dict) -> dict:
    return {n: (str(t.dtype), tuple(t.shape)) for n, t in ts.items()}


def sdnq_folder(bf16_dir: str, out: str, **kw) -> None:
    m = FluxTransformer2DModel.from_pretrained(
        bf16_dir, quantization_config=SDNQConfig(weights_dtype="uint4", **kw), torch_dtype=torch.bfloat16
    )
    m.save_pretrained(out)


def main(src, u4, svd, work) -> None:
    torch.manual_seed(0)
    _, config_dir = write_config(src, work)
    bf16_dir = os.path.join(work, "bf16")
    r = FluxTransformer2DModel.from_single_file(src, config=config_dir, torch_dtype=torch.bfloat16)
    r.save_pretrained(bf16_dir)
    ref = {n: p.detach() for n, p in r.state_dict().items()}
    del r
    s_dir, sv_dir = os.path.join(work, "sdnq"), os.path.join(work, "sdnq-svd")
    sdnq_folder(bf16_dir, s_dir)
    sdnq_folder(bf16_dir, sv_dir, use_svd=True)
    result = {"ok": True, "failures": []}

    def fail(msg):
        result["ok"] = False
        result["failures"].append(msg)

    # uint4: the whole file.
    s, low = tensors(s_dir), tensors(u4)
    if signature(s) != signature(low):
        fail(f"uint4 tensors differ: only sdnq {sorted(set(s) - set(low))[:5]}, only lowbit {sorted(set(low) - set(s))[:5]}, "
             f"shapes {[n for n in s if n in low and signature(s)[n] != signature(low)[n]][:5]}")
    same = differ = 0
    differing = []
    for n in s:
        if n not in low:
            continue
        a, b = raw(s[n]), raw(low[n])
        if a == b:
            same += 1
        else:
            differ += 1
            differing.append(n)
    quantized = sorted(n[: -len(".zero_point")] for n in s if n.endswith(".zero_point"))
    packed_bytes = sum(len(raw(s[f"{m}.weight"])) for m in quantized)
    result["uint4"] = {"tensors": len(s), "identical": same, "differ": differing[:10],
                       "quantized_layers": len(quantized), "packed_weight_bytes": packed_bytes}
    if differ:
        fail(f"uint4: {differ} tensors differ from sdnq's")
    if qconfig(s_dir) != qconfig(u4):
        fail(f"uint4 quantization_config differs: sdnq {qconfig(s_dir)} lowbit {qconfig(u4)}")

    # uint4-svd: structure against sdnq's own, quantized part against sdnq on lowbit's residual.
    sv, lsv = tensors(sv_dir), tensors(svd)
    if signature(sv) != signature(lsv):
        fail(f"svd tensors differ: only sdnq {sorted(set(sv) - set(lsv))[:5]}, only lowbit {sorted(set(lsv) - set(sv))[:5]}")
    layers = sorted(n[: -len(".svd_up")] for n in lsv if n.endswith(".svd_up"))
    checked = same_bytes = total_bytes = 0
    bad = []
    for m in layers:
        w = ref[f"{m}.weight"]
        up, down = lsv[f"{m}.svd_up"], lsv[f"{m}.svd_down"]
        res = (w.double() - up.double() @ down.double()).float()
        _, q = sdnq_quantize_layer_weight(res, layer_class_name="Linear", weights_dtype="uint4",
                                          using_pre_calculated_svd=True, torch_dtype=torch.bfloat16)
        for part in ("weight", "scale", "zero_point"):
            a, b = raw(q[part]), raw(lsv[f"{m}.{part}"])
            checked += 1
            total_bytes += len(a)
            same_bytes += sum(x == y for x, y in zip(a, b)) if a != b else len(a)
            if a != b:
                bad.append(f"{m}.{part}")
    result["uint4_svd"] = {"layers": len(layers), "tensors_checked": checked, "differ": bad[:10],
                           "bytes": total_bytes, "identical_bytes": same_bytes}
    if bad or not layers:
        fail(f"svd: {len(bad)} of {checked} quantized tensors differ from sdnq on lowbit's residual")
    if qconfig(sv_dir) != qconfig(svd):
        fail(f"svd quantization_config differs: sdnq {qconfig(sv_dir)} lowbit {qconfig(svd)}")
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main(*sys.argv[1:5])
