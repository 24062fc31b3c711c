"""diffusers runs lowbit's `bfl:nvfp4` file of a FLUX-shaped transformer on the CPU, and computes
what the original BF16 model computes within 4-bit error; lowbit's `bfl:fp8` of the same model,
on the same inputs, is the yardstick (NVFP4 must be worse than FP8, and not by much).

References lowbit has no part in:
  R   the original: FluxTransformer2DModel.from_single_file(BF16 .safetensors, torch_dtype=float32),
      diffusers' own BFL -> diffusers converter; its output on diffusers_flux.py's fixed inputs
      is out_R (out_R16 computing in bfloat16).
N (`bfl:nvfp4`: U8 weight [N, K/2], F8_E4M3 weight_scale [N, K/16], F32 scalars weight_scale_2
and input_scale) is loaded by from_single_file(..., quantization_config=BFLQuantizationConfig(
compute_dtype=C)), C = bfloat16 (the documented use) and C = float32 (torch_dtype likewise). On
the CPU BFLNVFP4Linear dequantizes (`dequantize_nvfp4`) to C and runs F.linear.
Checks:
  bfloat16  the BFLNVFP4Linear modules are exactly R's nn.Linear modules inside
            transformer_blocks and single_transformer_blocks (what lowbit packs); each has scalar
            weight_scale_2 and input_scale, input_scale 1.0; the forward pass is finite. Its
            errors against out_R16 and out_R are reported, not bounded: the original itself
            computing in bfloat16 is far from its float32 output on this random model.
  float32   every module's dequantize_nvfp4 weight equals the same weight of D =
            from_single_file(`lowbit dequantize --dtype f32` of the file) bit for bit; each
            weight's largest relative row error against R's is at most NVFP4_ROW_BOUND; the
            output error |out - out_R| / |out_R| is at most NVFP4_OUTPUT_BOUND and larger than
            the output error of lowbit's bfl:fp8 file loaded the same way (float32).
  control   a copy of the file with the nibbles of every packed weight swapped (ComfyUI's order
            in a BFL file, the likeliest mix-up between the two layouts) loads and must fail
            both the row bound and the output bound.
Prints one JSON object with every measurement and timing; exits 1 if any check fails.

Usage: python runtimes_nvfp4.py BF16.safetensors NVFP4.safetensors NVFP4_DEQ_F32.safetensors
       FP8.safetensors WORKDIR
"""

import json
import os
import shutil
import struct
import sys
import time

import numpy as np
import torch
from diffusers import BFLQuantizationConfig, FluxTransformer2DModel
from diffusers.quantizers.bfl.utils import BFLFP8RLinear, BFLNVFP4Linear, dequantize_nvfp4

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diffusers_flux import inputs, output_error, write_config  # noqa: E402
from runtimes_diffusers import BLOCKS, block_linears, row_error  # noqa: E402

# Bounds, measured on the full-width test model (seed 11) with diffusers_flux.py's inputs (the
# script prints every measurement), about 1.5 times the measurements: output 0.184 computing in
# float32 (bfl:fp8 of the same model: 0.040; gguf:q4_k_m: 0.108), largest relative row error
# 0.106 (norm1_context.linear), the N(0, 1) weights' NVFP4 error being 0.094. The control
# (nibbles swapped in all 13 weights) measures 1.13 at the output and at least 1.44 in every
# weight. Computing in bfloat16 the output is 0.176 from the original's bfloat16 output and
# 0.52 from out_R, the original itself being 0.45 from it.
NVFP4_OUTPUT_BOUND = 0.28
NVFP4_ROW_BOUND = 0.16


def swapped_copy(src: str, dst: str) -> int:
    """A copy of the safetensors file `src` with the two nibbles of every byte of every U8
    `.weight` tensor exchanged; returns how many tensors were changed."""
    shutil.copyfile(src, dst)
    changed = 0
    with open(dst, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        for name, entry in header.items():
            if name == "__metadata__" or entry["dtype"] != "U8" or not name.endswith(".weight"):
                continue
            start, end = entry["data_offsets"]
            f.seek(8 + n + start)
            b = np.frombuffer(f.read(end - start), dtype=np.uint8)
            f.seek(8 + n + start)
            f.write(((b << 4) | (b >> 4)).astype(np.uint8).tobytes())
            changed += 1
    return changed


def main(src, nvfp4, nvfp4_deq, fp8, work) -> None:
    start = time.time()
    cfg, config_dir = write_config(src, work)
    x = inputs(cfg)

    def forward(model) -> torch.Tensor:
        with torch.no_grad():
            cast = lambda v: v.to(model.dtype) if torch.is_tensor(v) and v.is_floating_point() else v
            return model(**{k: cast(v) for k, v in x.items()})[0]

    def load_q(path, dtype):
        qcfg = BFLQuantizationConfig(compute_dtype=dtype)
        return FluxTransformer2DModel.from_single_file(
            path, config=config_dir, torch_dtype=dtype, quantization_config=qcfg
        )

    seconds = {}
    t = time.time()
    model_r = FluxTransformer2DModel.from_single_file(src, config=config_dir, torch_dtype=torch.float32)
    out_r = forward(model_r)
    linears = block_linears(model_r)
    ref = {n: p.detach().clone() for n, p in model_r.named_parameters() if n.startswith(BLOCKS) and p.dim() == 2}
    out_r16 = forward(model_r.to(torch.bfloat16)).float()
    del model_r
    seconds["reference"] = round(time.time() - t, 1)

    # bfloat16 compute, as documented.
    t = time.time()
    model = load_q(nvfp4, torch.bfloat16)
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, BFLNVFP4Linear)}
    bad_scalars = [
        n
        for n, m in quantized.items()
        if m.weight_scale_2.shape != () or m.input_scale.shape != () or m.input_scale.item() != 1.0
    ]
    out16 = forward(model).float()
    bf16 = {
        "class": "BFLNVFP4Linear",
        "quantized_modules": len(quantized),
        "not_quantized": sorted(linears - quantized.keys()),
        "unexpected_quantized": sorted(quantized.keys() - linears),
        "bad_scalars": bad_scalars,
        "output_error_vs_original_in_bf16": output_error(out16, out_r16),
        "output_error": output_error(out16, out_r),
        "finite": bool(torch.isfinite(out16).all()),
    }
    del model
    seconds["nvfp4_bf16"] = round(time.time() - t, 1)

    # float32 compute: exact comparisons.
    t = time.time()
    model = load_q(nvfp4, torch.float32)
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, BFLNVFP4Linear)}
    deq = dict(FluxTransformer2DModel.from_single_file(nvfp4_deq, config=config_dir, torch_dtype=torch.float32).named_parameters())
    differ, errors = [], {}
    for n, m in quantized.items():
        w = dequantize_nvfp4(m.weight, m.weight_scale, m.weight_scale_2)
        if not torch.equal(w, deq[f"{n}.weight"]):
            differ.append(n)
        errors[n] = row_error(w, ref[f"{n}.weight"])
    del deq
    out = forward(model)
    worst = max(errors, key=errors.get)
    f32 = {
        "quantized_modules": len(quantized),
        "differ_from_lowbit_dequantize": differ,
        "worst_row_error": {"error": errors[worst], "module": worst},
        "output_error": output_error(out, out_r),
        "finite": bool(torch.isfinite(out).all()),
    }
    del model
    seconds["nvfp4_f32"] = round(time.time() - t, 1)

    t = time.time()
    model = load_q(fp8, torch.float32)
    fp8_modules = sum(isinstance(m, BFLFP8RLinear) for m in model.modules())
    fp8_entry = {"quantized_modules": fp8_modules, "output_error": output_error(forward(model), out_r)}
    del model
    seconds["fp8_f32"] = round(time.time() - t, 1)

    t = time.time()
    bad = os.path.join(work, "nvfp4-nibbles-swapped.safetensors")
    changed = swapped_copy(nvfp4, bad)
    model = load_q(bad, torch.float32)
    rows = [
        row_error(dequantize_nvfp4(m.weight, m.weight_scale, m.weight_scale_2), ref[f"{n}.weight"])
        for n, m in model.named_modules()
        if isinstance(m, BFLNVFP4Linear)
    ]
    control = {
        "damage": f"nibbles swapped in {changed} weights",
        "smallest_worst_row_error": min(rows),
        "output_error": output_error(forward(model), out_r),
    }
    del model
    os.remove(bad)
    seconds["control"] = round(time.time() - t, 1)

    ok = bf16["quantized_modules"] > 0 and not (bf16["not_quantized"] or bf16["unexpected_quantized"])
    ok &= not bad_scalars and bf16["finite"] and f32["finite"]
    ok &= f32["quantized_modules"] == bf16["quantized_modules"] and not differ
    ok &= errors[worst] <= NVFP4_ROW_BOUND < control["smallest_worst_row_error"]
    ok &= fp8_entry["output_error"] < f32["output_error"] <= NVFP4_OUTPUT_BOUND < control["output_error"]
    seconds["total"] = round(time.time() - start, 1)
    report = {
        "bfl_nvfp4_bf16": bf16,
        "bfl_nvfp4_f32": f32,
        "bfl_fp8_f32": fp8_entry,
        "control": control,
        "original_bf16_compute_output_error": output_error(out_r16, out_r),
        "bounds": {"nvfp4_output": NVFP4_OUTPUT_BOUND, "nvfp4_row": NVFP4_ROW_BOUND},
        "seconds": seconds,
        "ok": bool(ok),
    }
    print(json.dumps(report))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(*sys.argv[1:6])
