"""Check a `lowbit convert --to nunchaku-lite:int4` folder against diffusers' own nunchaku_lite loader (CPU, offline).

Usage:
    python nunchaku_lite.py LITE_FOLDER        (LITE_FOLDER/config.json + LITE_FOLDER/diffusion_pytorch_model.safetensors)

What it does, following diffusers' ModelMixin.from_pretrained for a pre-quantized config (diffusers 0.42.1):
  1. config.json -> DiffusersAutoQuantizer.from_config(config["quantization_config"], pre_quantized=True): the dict goes
     through NunchakuLiteQuantizationConfig.from_dict, i.e. its post_init validation (precision, group_size, rank,
     targets). validate_environment is skipped (it needs CUDA and the `kernels` package); update_torch_dtype(None)
     gives the load dtype, compute_dtype.
  2. The model is built as from_pretrained builds it: default dtype = that load dtype, empty (meta) weights,
     FluxTransformer2DModel.from_config(config); then quantizer.preprocess_model(model), which runs diffusers'
     replace_with_nunchaku_linear(model, quantization_config.to_dict(), compute_dtype) on every target.
  3. diffusers' check_strict_state_dict_match(model, file keys) (the key-set check the quantizer runs when given a
     state dict; from_pretrained itself only warns about missing/unexpected keys, so this is stricter).
  4. Every tensor's dtype and shape (safetensors header) == the patched model's parameter. Floating non-replaced
     parameters are expected in the load dtype: the model is created with that default dtype and diffusers'
     loader casts floating checkpoint tensors to it (load_model_dict_into_meta), so a lowbit file whose source is
     BF16 must hold them as BF16; a differing float dtype would load (cast) but is reported here as a mismatch.
     Replaced modules' parameters: qweight I8 / I32, everything else compute_dtype. (diffusers itself raises on a
     shape mismatch when loading.)
  5. Controls, in memory on the same header: one key dropped, one extra key, one 2-D shape transposed, one dtype
     changed. Each must be caught, or the run fails.

diffusers.quantizers.nunchaku.utils downloads its CUDA kernel at import (kernels.get_kernel); a stub `kernels`
module answers instead, only for that import. Nothing is downloaded.
Prints one JSON object; exits 1 on any failure.
"""

import json
import os
import struct
import sys
import types
from pathlib import Path

os.environ["DIFFUSERS_TRUST_REMOTE_KERNELS"] = "true"
import torch  # noqa: E402
import diffusers  # noqa: E402
import diffusers.utils.import_utils as import_utils  # noqa: E402
from diffusers import FluxTransformer2DModel  # noqa: E402
from diffusers.quantizers import DiffusersAutoQuantizer  # noqa: E402

ST_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.int8: "I8",
             torch.int32: "I32", torch.uint8: "U8", torch.float8_e4m3fn: "F8_E4M3"}


def import_nunchaku_utils():
    saved = import_utils._kernels_available, import_utils._kernels_version
    import_utils._kernels_available, import_utils._kernels_version = True, "0.14.0"
    stub = types.ModuleType("kernels")
    stub.get_kernel = lambda *a, **kw: types.SimpleNamespace(ops=None)
    sys.modules["kernels"] = stub
    try:
        from diffusers.quantizers.nunchaku import utils
    finally:
        del sys.modules["kernels"]
        import_utils._kernels_available, import_utils._kernels_version = saved
    return utils


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return {k: (v["dtype"], list(v["shape"])) for k, v in header.items()}


def build_model(folder):
    config = FluxTransformer2DModel.load_config(folder)
    quantizer = DiffusersAutoQuantizer.from_config(config["quantization_config"], pre_quantized=True)
    load_dtype = quantizer.update_torch_dtype(None)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(load_dtype)
    try:
        with torch.device("meta"):
            model = FluxTransformer2DModel.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    quantizer.preprocess_model(model=model, device_map=None, keep_in_fp32_modules=[])
    return config, quantizer, load_dtype, model


def check(nl, model, header):
    """All disagreements between a safetensors header {key: (dtype, shape)} and the patched model."""
    errors = []
    try:
        nl.check_strict_state_dict_match(model, dict.fromkeys(header))
    except ValueError as e:
        errors.append(f"check_strict_state_dict_match: {e}")
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if name in header:
            want = (ST_DTYPES.get(p.dtype, str(p.dtype)), list(p.shape))
            if header[name] != want:
                errors.append(f"{name}: file {header[name]} != model {want}")
    return errors


def main():
    folder = Path(sys.argv[1])
    nl = import_nunchaku_utils()
    config, quantizer, load_dtype, model = build_model(folder)
    qc = quantizer.quantization_config
    header = read_header(folder / "diffusion_pytorch_model.safetensors")
    errors = check(nl, model, header)

    svdq, awq = nl.SVDQW4A4Linear, nl.AWQW4A16Linear
    mods = dict(model.named_modules())
    blocks = ("transformer_blocks.", "single_transformer_blocks.")
    left_dense = sorted(n for n, m in mods.items() if isinstance(m, torch.nn.Linear) and n.startswith(blocks))
    for n in left_dense:
        errors.append(f"{n}: block linear not quantized (neither svdq_w4a4 nor awq_w4a16 target)")
    ranks = {m.rank for m in mods.values() if isinstance(m, svdq)}
    dense_dtypes = sorted({header[n][0] for n, _ in model.named_parameters()
                           if n in header and not isinstance(mods[n.rpartition(".")[0]], (svdq, awq))})

    # Controls: each mutation of the header must be caught.
    keys = sorted(header)
    two_d = next(k for k in keys if len(header[k][1]) == 2 and header[k][1][0] != header[k][1][1])
    bf16 = next(k for k in keys if header[k][0] == "BF16")
    mutations = {
        "drop_key": {k: v for k, v in header.items() if k != keys[0]},
        "extra_key": {**header, keys[0] + "_extra": header[keys[0]]},
        "transpose_shape": {**header, two_d: (header[two_d][0], header[two_d][1][::-1])},
        "dtype_change": {**header, bf16: ("F32", header[bf16][1])},
    }
    controls = {}
    for what, mutated in mutations.items():
        found = check(nl, model, mutated)
        controls[what] = {"caught": bool(found), "first": found[0][:160] if found else None}
        if not found:
            errors.append(f"control {what} not caught")

    report = {
        "folder": str(folder),
        "diffusers": diffusers.__version__,
        "quantization_config": {"compute_dtype": str(qc.compute_dtype), "svdq_targets": len(qc.svdq_w4a4["targets"]),
                                "awq_targets": len(qc.awq_w4a16["targets"]), "rank": qc.svdq_w4a4["rank"]},
        "load_dtype": str(load_dtype),
        "flux": {k: config[k] for k in ("num_layers", "num_single_layers", "num_attention_heads",
                                        "attention_head_dim", "joint_attention_dim", "pooled_projection_dim")},
        "file_tensors": len(header),
        "model_tensors": sum(1 for _ in model.named_parameters()) + sum(1 for _ in model.named_buffers()),
        "svdq_modules": sum(isinstance(m, svdq) for m in mods.values()),
        "awq_modules": sum(isinstance(m, awq) for m in mods.values()),
        "svdq_ranks": sorted(ranks),
        "dense_file_dtypes": dense_dtypes,
        "controls": controls,
        "errors": errors,
        "ok": not errors,
    }
    print(json.dumps(report, indent=1))
    sys.exit(0 if not errors else 1)


if __name__ == "__main__":
    main()
