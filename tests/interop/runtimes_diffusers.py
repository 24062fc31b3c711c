"""diffusers runs lowbit's `bfl:fp8` file and lowbit's NF4 diffusers folder of a FLUX-shaped
transformer on the CPU, and computes what the original BF16 model computes within each type's
error. One process, so the BF16 original is loaded and run once for both.

References lowbit has no part in:
  R   the original: FluxTransformer2DModel.from_single_file(BF16 .safetensors, torch_dtype=float32),
      diffusers' own BFL -> diffusers converter; its output on fixed random inputs is out_R.
BFL FP8 (`bfl:fp8`, BFL names, F8_E4M3 weight + F32 per-row weight_scale):
  loaded by from_single_file(..., quantization_config=BFLQuantizationConfig(compute_dtype=float32),
  torch_dtype=float32). On the CPU BFLFP8RLinear dequantizes (`dequantize_fp8r`: f32(q) * scale)
  to compute_dtype and runs F.linear; float32 keeps that product unrounded, so it can be compared
  with `lowbit dequantize --dtype f32` exactly (compute_dtype=bfloat16 with torch_dtype=bfloat16
  also loads and runs on the CPU, measured; it rounds the product to BF16 once more).
  Checks: the BFLFP8RLinear modules are exactly R's nn.Linear modules inside transformer_blocks
  and single_transformer_blocks (what lowbit packs), every one of their dequantized weights equals
  the same weight of D = from_single_file(`lowbit dequantize --dtype f32` of the file) bit for
  bit; every such weight is within E4M3's rounding of R's (per row, |w - r| <= 2^-4 |r| + the
  subnormal half-step sqrt(K) * scale * 2^-10); the output error |out - out_R| / |out_R| is at
  most FP8_OUTPUT_BOUND. Control: a copy of the file with one layer's weight_scale doubled loads
  and must fail both the weight check and the output bound.
NF4 (`nf4`, lowbit's diffusers folder with bitsandbytes' quantization_config):
  loaded by FluxTransformer2DModel.from_pretrained(DIR, torch_dtype=bfloat16). diffusers 0.42.1
  refuses any machine without CUDA/XPU/MPS in BnB4BitDiffusersQuantizer.validate_environment
  ("No GPU found"), also for pre-quantized files, and update_device_map asks for
  torch.cuda.current_device(); both are monkeypatched here (shared/reference/ecosystem-2026.md
  §1.5) so the model loads on the CPU. Nothing else is patched.
  Checks: every nn.Linear of R is a bnb.nn.Linear4bit whose quant_state is nf4, blocksize 64,
  dtype bfloat16, the layer's shape, no nested statistics; bitsandbytes.functional.
  dequantize_4bit(weight, quant_state) equals `lowbit dequantize --dtype bf16` of the folder's
  file bit for bit (taken before any forward pass: bnb's CPU forward repacks the weights); every
  such weight is within NF4_ROW_BOUND of R's (largest relative row error) and to_k's is not within
  it of to_v's (control); the forward pass computing in float32 (the same file loaded with
  torch_dtype=float32 and each Linear4bit's compute dtype set to float32) is within
  NF4_OUTPUT_BOUND of out_R. The bfloat16 forward pass is run and its errors reported.
Prints one JSON object with every measurement and timing; exits 1 if any check fails.

Usage: python runtimes_diffusers.py BF16.safetensors FP8.safetensors FP8_DEQ_F32.safetensors
       NF4_DIR NF4_DEQ_BF16.safetensors WORKDIR
"""

import json
import math
import os
import shutil
import struct
import sys
import time

import bitsandbytes as bnb
import bitsandbytes.functional as bnbf
import torch
from diffusers import BFLQuantizationConfig, FluxTransformer2DModel
from diffusers.quantizers.bfl.utils import BFLFP8RLinear, dequantize_fp8r
from diffusers.quantizers.bitsandbytes.bnb_quantizer import BnB4BitDiffusersQuantizer
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diffusers_flux import inputs, output_error, write_config  # noqa: E402

# Bounds, measured on the full-width test model (seed 11) with diffusers_flux.py's inputs (the
# script prints every measurement). FP8 output: 0.040 measured, twice that allowed; doubling one
# layer's scales measures 0.21. NF4 quantizes every linear, embedders included, and this random
# model amplifies weight error: the output measures 0.41 computing in float32 (0.40 with lowbit's
# NF4 weights unrounded in a plain float32 model), 1.5 times that allowed. The original itself
# computing in bfloat16 is 0.45 from its float32 output, so bfloat16 outputs are reported, not
# bounded. NF4 weights: largest relative row error 0.21 (x_embedder), 0.3 allowed; the control
# (to_k's weight against to_v's original) measures 2.2.
FP8_OUTPUT_BOUND = 0.08
NF4_OUTPUT_BOUND = 0.6
NF4_ROW_BOUND = 0.3
# The layer whose weight_scale the FP8 control doubles.
CONTROL_SCALE = "single_blocks.0.linear2.weight_scale"
BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")


def block_linears(model) -> set:
    return {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(BLOCKS)}


def fp8_row_excess(w: torch.Tensor, r: torch.Tensor, scale: torch.Tensor) -> float:
    """Largest (|w - r| - bound) / |r| over rows, bound = 2^-4 |r| + sqrt(K) scale 2^-10: E4M3
    rounds a normal value to within half a step (2^-4 relative) and a subnormal one to within
    2^-10 times the row's scale. Positive means a row is outside FP8's rounding."""
    k = r.shape[1]
    err = (w.double() - r.double()).norm(dim=1)
    norm = r.double().norm(dim=1)
    bound = norm / 16 + math.sqrt(k) * scale.double() / 1024
    return ((err - bound) / norm.clamp_min(1e-30)).max().item()


def patched_copy(src: str, dst: str, name: str, factor: float) -> None:
    """A copy of the safetensors file `src` with the F32 tensor `name` multiplied by `factor`."""
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        entry = json.loads(f.read(n))[name]
        assert entry["dtype"] == "F32", entry
        start, end = entry["data_offsets"]
        f.seek(8 + n + start)
        values = torch.frombuffer(bytearray(f.read(end - start)), dtype=torch.float32) * factor
        f.seek(8 + n + start)
        f.write(values.numpy().tobytes())


def fp8_checks(fp8: str, fp8_deq: str, config_dir: str, ref_weights: dict, linears: set, forward, out_r, work):
    qcfg = BFLQuantizationConfig(compute_dtype=torch.float32)

    def load_q(path):
        return FluxTransformer2DModel.from_single_file(
            path, config=config_dir, torch_dtype=torch.float32, quantization_config=qcfg
        )

    t = time.time()
    model = load_q(fp8)
    timings = {"load": round(time.time() - t, 1)}
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, BFLFP8RLinear)}
    t = time.time()
    deq = FluxTransformer2DModel.from_single_file(fp8_deq, config=config_dir, torch_dtype=torch.float32)
    deq = dict(deq.named_parameters())
    timings["load_lowbit_dequantized"] = round(time.time() - t, 1)
    differ, excess = [], {}
    for n, m in quantized.items():
        assert m.weight.dtype == torch.float8_e4m3fn and m.weight_scale.shape == (m.out_features,)
        w = dequantize_fp8r(m.weight, m.weight_scale)
        if not torch.equal(w, deq[f"{n}.weight"]):
            differ.append(n)
        excess[n] = fp8_row_excess(w, ref_weights[f"{n}.weight"], m.weight_scale)
    del deq
    t = time.time()
    out = forward(model)
    timings["forward"] = round(time.time() - t, 1)
    entry = {
        "class": "BFLFP8RLinear",
        "quantized_modules": len(quantized),
        "not_quantized": sorted(linears - quantized.keys()),
        "unexpected_quantized": sorted(quantized.keys() - linears),
        "differ_from_lowbit_dequantize": differ,
        "worst_row_excess_over_fp8_rounding": max(excess.values()),
        "output_error": output_error(out, out_r),
        "finite": bool(torch.isfinite(out).all()),
    }
    del model
    # Control: one layer's scales doubled in a copy of the file.
    bad = os.path.join(work, "fp8-scale-doubled.safetensors")
    patched_copy(fp8, bad, CONTROL_SCALE, 2.0)
    t = time.time()
    model = load_q(bad)
    m = model.get_submodule("single_transformer_blocks.0.proj_out")
    w = dequantize_fp8r(m.weight, m.weight_scale)
    entry["control"] = {
        "damage": f"{CONTROL_SCALE} x 2",
        "row_excess": fp8_row_excess(w, ref_weights["single_transformer_blocks.0.proj_out.weight"], m.weight_scale),
        "output_error": output_error(forward(model), out_r),
    }
    timings["control"] = round(time.time() - t, 1)
    os.remove(bad)
    del model
    entry["seconds"] = timings
    ok = not (entry["not_quantized"] or entry["unexpected_quantized"] or differ)
    ok &= entry["quantized_modules"] > 0 and entry["worst_row_excess_over_fp8_rounding"] <= 0
    ok &= entry["finite"] and entry["output_error"] <= FP8_OUTPUT_BOUND
    ok &= entry["control"]["row_excess"] > 0 and entry["control"]["output_error"] > FP8_OUTPUT_BOUND
    return entry, ok


def row_error(w: torch.Tensor, r: torch.Tensor) -> float:
    return ((w.double() - r.double()).norm(dim=1) / r.double().norm(dim=1).clamp_min(1e-30)).max().item()


def nf4_checks(nf4_dir: str, nf4_deq: str, ref: dict, linears_all: set, forward, out_r, out_r_bf16):
    # diffusers refuses CPU-only machines even for pre-quantized files (see the module docstring).
    BnB4BitDiffusersQuantizer.validate_environment = lambda self, *a, **k: None
    BnB4BitDiffusersQuantizer.update_device_map = lambda self, device_map: device_map or {"": "cpu"}
    t = time.time()
    model = FluxTransformer2DModel.from_pretrained(nf4_dir, torch_dtype=torch.bfloat16)
    timings = {"load": round(time.time() - t, 1)}
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    deq = load_file(nf4_deq)
    differ, bad_state, errors = [], [], {}
    # Before any forward pass: bnb's CPU forward repacks the weights in place.
    for n, m in quantized.items():
        qs = m.weight.quant_state
        state = (qs.quant_type, qs.blocksize, qs.dtype, tuple(qs.shape), qs.nested)
        if state != ("nf4", 64, torch.bfloat16, (m.out_features, m.in_features), False):
            bad_state.append([n, str(state)])
        w = bnbf.dequantize_4bit(m.weight.data, qs)
        if not torch.equal(w, deq[f"{n}.weight"]):
            differ.append(n)
        errors[n] = row_error(w, ref[f"{n}.weight"])
        if n == "transformer_blocks.0.attn.to_k":
            # Control: a weight compared with its neighbour's original must fail the row bound.
            control = row_error(w, ref["transformer_blocks.0.attn.to_v.weight"])
    del deq
    t = time.time()
    out = forward(model)
    timings["forward_bf16"] = round(time.time() - t, 1)
    del model
    # The same file computing in float32: non-linear parameters loaded as float32 and each
    # Linear4bit's compute dtype (bnb_4bit_compute_dtype, bfloat16 in the file) set to float32.
    model = FluxTransformer2DModel.from_pretrained(nf4_dir, torch_dtype=torch.float32)
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.compute_dtype, m.compute_type_is_set = torch.float32, True
    t = time.time()
    out32 = forward(model)
    timings["forward_f32"] = round(time.time() - t, 1)
    worst = max(errors, key=errors.get)
    entry = {
        "class": "bnb.nn.Linear4bit",
        "quantized_modules": len(quantized),
        "not_quantized": sorted(linears_all - quantized.keys()),
        "unexpected_quantized": sorted(quantized.keys() - linears_all),
        "bad_quant_state": bad_state,
        "differ_from_lowbit_dequantize": differ,
        "worst_row_error": {"error": errors[worst], "module": worst},
        "control_row_error_to_k_vs_to_v": control,
        "output_error_f32_compute": output_error(out32, out_r),
        "output_error_bf16_compute": output_error(out.float(), out_r),
        "output_error_bf16_compute_vs_original_in_bf16": output_error(out.float(), out_r_bf16),
        "finite": bool(torch.isfinite(out).all() and torch.isfinite(out32).all()),
        "seconds": timings,
    }
    ok = not (entry["not_quantized"] or entry["unexpected_quantized"] or bad_state or differ)
    ok &= entry["quantized_modules"] > 0 and entry["finite"]
    ok &= errors[worst] <= NF4_ROW_BOUND < control
    ok &= entry["output_error_f32_compute"] <= NF4_OUTPUT_BOUND
    return entry, ok


def main(src, fp8, fp8_deq, nf4_dir, nf4_deq, work) -> None:
    start = time.time()
    cfg, config_dir = write_config(src, work)
    x = inputs(cfg)

    def forward(model) -> torch.Tensor:
        with torch.no_grad():
            cast = lambda v: v.to(model.dtype) if torch.is_tensor(v) and v.is_floating_point() else v
            return model(**{k: cast(v) for k, v in x.items()})[0]

    t = time.time()
    model_r = FluxTransformer2DModel.from_single_file(src, config=config_dir, torch_dtype=torch.float32)
    # R's weights are BF16 values widened to float32; BF16 holds them exactly in half the memory.
    ref = {n: p.detach().to(torch.bfloat16) for n, p in model_r.named_parameters()}
    out_r = forward(model_r)
    linears = block_linears(model_r)
    linears_all = {n for n, m in model_r.named_modules() if isinstance(m, torch.nn.Linear)}
    # The original computing in bfloat16, for scale: this random model is sensitive to precision.
    out_r_bf16 = forward(model_r.to(torch.bfloat16)).float()
    del model_r
    report = {"seconds": {"reference": round(time.time() - start, 1)}}

    ref_f32 = {n: v.float() for n, v in ref.items() if n.startswith(BLOCKS) and v.dim() == 2}
    report["bfl_fp8"], ok_fp8 = fp8_checks(fp8, fp8_deq, config_dir, ref_f32, linears, forward, out_r, work)
    del ref_f32
    report["nf4"], ok_nf4 = nf4_checks(nf4_dir, nf4_deq, ref, linears_all, forward, out_r, out_r_bf16)
    report["original_bf16_compute_output_error"] = output_error(out_r_bf16, out_r)
    report["bounds"] = {"fp8_output": FP8_OUTPUT_BOUND, "nf4_output": NF4_OUTPUT_BOUND, "nf4_row": NF4_ROW_BOUND}
    report["seconds"]["total"] = round(time.time() - start, 1)
    report["ok"] = bool(ok_fp8 and ok_nf4)
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main(*sys.argv[1:7])
