"""diffusers (with sdnq 0.2.8) loads lowbit's SDNQ folders of a FLUX-shaped transformer on the
CPU and computes what the original BF16 model computes, within 4-bit error.

References lowbit has no part in:
  R  the original: FluxTransformer2DModel.from_single_file(BF16 .safetensors, torch_dtype=
     float32), diffusers' own converter; out_R its output on diffusers_flux.py's fixed inputs.
L (`sdnq:uint4`) and V (`sdnq:uint4-svd`) are loaded with FluxTransformer2DModel.from_pretrained(
folder, torch_dtype=float32): diffusers reads config.json's quantization_config and sdnq builds
its SDNQ layers from the stored tensors (dequantize_fp32).
Checks:
  layers   every quantized module of L and V is an sdnq layer (has `sdnq_dequantizer`), and they
           are exactly the modules whose weights lowbit's file quantizes;
  decoder  sdnq's own dequantization of every layer of L and V (dequantize_sdnq_model) equals
           `lowbit dequantize --dtype f32` of the same file within 1e-6 relative per row (the
           reader side: lowbit's decoder against sdnq's);
  forward  |out - out_R| / |out_R| is at most OUTPUT_BOUND for L and V;
  control  a copy of L with the two nibbles of every packed byte swapped loads and must exceed
           OUTPUT_BOUND (and its decoded weights the row bound).
Prints one JSON object with every measurement; exits 1 if any check fails.

Usage: python runtimes_sdnq.py BF16.safetensors UINT4_DIR UINT4_DEQ_F32 SVD_DIR SVD_DEQ_F32 WORKDIR
"""

import copy
import json
import os
import shutil
import sys

import torch
from diffusers import FluxTransformer2DModel
from safetensors import safe_open
from sdnq.dequantizer import dequantize_sdnq_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diffusers_flux import inputs, output_error, write_config  # noqa: E402
from runtimes_diffusers import row_error  # noqa: E402
from runtimes_nvfp4 import swapped_copy  # noqa: E402

MODEL = "diffusion_pytorch_model.safetensors"
# Measured on the full-width test model (seed 11) with diffusers_flux.py's inputs, computing in
# float32: output error 0.155 (uint4) and 0.156 (uint4-svd); largest relative row error 0.184
# (uint4) and 0.107 (uint4-svd); bounds about 1.5 times those. The control (nibbles swapped in
# all 19 packed weights) measures 1.11 at the output and at least 1.45 in every weight.
OUTPUT_BOUND = 0.25
ROW_BOUND = 0.28
# lowbit's decoder against sdnq's dequantizer (both f32, different operation order at most).
DECODER_BOUND = 1e-6


def main(src, u4, u4_deq, svd, svd_deq, work) -> None:
    torch.manual_seed(0)
    cfg, config_dir = write_config(src, work)
    x = inputs(cfg)
    r = FluxTransformer2DModel.from_single_file(src, config=config_dir, torch_dtype=torch.float32)
    ref = {n: p.detach() for n, p in r.state_dict().items()}
    with torch.no_grad():
        out_r = r(**x)[0]
    del r
    result = {"ok": True, "failures": []}

    def fail(msg):
        result["ok"] = False
        result["failures"].append(msg)

    def check(name, folder, deq):
        with safe_open(os.path.join(folder, MODEL), framework="pt") as f:
            packed = {n[: -len(".zero_point")] for n in f.keys() if n.endswith(".zero_point")}
        m = FluxTransformer2DModel.from_pretrained(folder, torch_dtype=torch.float32)
        sdnq_layers = {n for n, mod in m.named_modules() if hasattr(mod, "sdnq_dequantizer")}
        if sdnq_layers != packed or not packed:
            fail(f"{name}: sdnq layers {sorted(sdnq_layers ^ packed)[:5]} differ from the file's")
        with torch.no_grad():
            out = m(**x)[0]
        err = output_error(out, out_r)
        dense = dequantize_sdnq_model(copy.deepcopy(m))
        weights = {n: mod.weight.detach().float() for n, mod in dense.named_modules() if n in packed}
        with safe_open(deq, framework="pt") as f:
            dec = max(row_error(f.get_tensor(f"{n}.weight"), w) for n, w in weights.items())
        rows = max(row_error(w, ref[f"{n}.weight"]) for n, w in weights.items())
        if dec > DECODER_BOUND:
            fail(f"{name}: lowbit dequantize is {dec} from sdnq's dequantizer")
        return {"sdnq_layers": len(sdnq_layers), "output_error": err, "worst_row_error": rows,
                "lowbit_decoder_vs_sdnq": dec}

    result["uint4"] = check("uint4", u4, u4_deq)
    result["uint4_svd"] = check("uint4-svd", svd, svd_deq)
    for k in ("uint4", "uint4_svd"):
        if not result[k]["output_error"] <= OUTPUT_BOUND:
            fail(f"{k}: output error {result[k]['output_error']} above {OUTPUT_BOUND}")
        if not result[k]["worst_row_error"] <= ROW_BOUND:
            fail(f"{k}: row error {result[k]['worst_row_error']} above {ROW_BOUND}")

    # Control: nibbles swapped (element 0 in the high nibble, the likeliest layout mistake).
    ctl = os.path.join(work, "swapped")
    os.makedirs(ctl, exist_ok=True)
    shutil.copyfile(os.path.join(u4, "config.json"), os.path.join(ctl, "config.json"))
    changed = swapped_copy(os.path.join(u4, MODEL), os.path.join(ctl, MODEL))
    m = FluxTransformer2DModel.from_pretrained(ctl, torch_dtype=torch.float32)
    with torch.no_grad():
        err = output_error(m(**x)[0], out_r)
    dense = dequantize_sdnq_model(m)
    rows = min(row_error(mod.weight.detach().float(), ref[f"{n}.weight"])
               for n, mod in dense.named_modules() if f"{n}.weight" in ref and isinstance(mod, torch.nn.Linear)
               and n.startswith(("transformer_blocks.", "single_transformer_blocks."))
               and n != "single_transformer_blocks.0.norm.linear")
    result["control_swapped_nibbles"] = {"tensors_changed": changed, "output_error": err,
                                         "smallest_worst_row_error": rows}
    if not (changed > 0 and err > OUTPUT_BOUND and rows > ROW_BOUND):
        fail(f"control: swapped nibbles pass the bounds ({err}, {rows})")
    result["bounds"] = {"output": OUTPUT_BOUND, "row": ROW_BOUND, "decoder": DECODER_BOUND}
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main(*sys.argv[1:7])
