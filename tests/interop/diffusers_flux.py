"""diffusers loads lowbit's GGUF files of a FLUX-shaped transformer and computes what the original
BF16 model computes, within the error of each type.

Everything is compared with references lowbit has no part in:
  R  the original: FluxTransformer2DModel.from_single_file(the BF16 .safetensors,
     torch_dtype=float32), that is diffusers' own converter on the BFL checkpoint;
  G  the `gguf` package's own GGUF of the same source: every tensor quantized by
     gguf.quants.quantize and written by gguf.GGUFWriter, BFL names, and the per-tensor types of
     formats/recipe.md for gguf:q8_0 (1-D or at most 1024 elements F32; img_in, txt_in, time_in,
     vector_in, guidance_in and final_layer at the source's BF16; other 2-D weights Q8_0).
L8 (lowbit's Q8_0 file), L4 (lowbit's Q4_K_M file) and G are loaded the same way:
from_single_file(GGUF, quantization_config=GGUFQuantizationConfig(compute_dtype=float32)).

Checks:
  Q8_0   every tensor of L8 has G's name, type, shape and bytes; L8 and G give identical outputs.
  both   every weight, dequantized as diffusers does it, is within its type's bound of R's: for
         each row, |w - r| / |r| (Euclidean norms over the row; 1-D tensors are one row), maximum
         over rows, at most ROW_BOUND[type]. F32 and BF16 tensors must equal R's exactly.
         The output |out - out_R| / |out_R| (over all elements) is at most OUTPUT_BOUND[file].
  controls  the same checks after damaging the loaded model the ways a naming bug would: two
         same-shape weights swapped (to_k and to_v of the double block: a wrong qkv split), one
         weight's rows reversed (a wrong row order), and the two halves of norm_out.linear swapped
         (the shift/scale split diffusers' converter undoes). Each must fail the weight check of
         L8 and of L4, and (run on L8) the output check against the larger of the two output
         bounds, which shows the bounds tight enough to catch them.
Prints one JSON object with every measurement; exits 1 if any check fails.

Usage: python diffusers_flux.py BF16.safetensors Q8_0.gguf Q4_K_M.gguf WORKDIR
"""

import json
import os
import sys
import time

import gguf
import numpy as np
import torch
from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig
from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor
from safetensors import safe_open

T = gguf.GGMLQuantizationType

# Largest relative row error (see above) allowed per GGUF type, about twice the maxima measured on
# the full-width test model (seed 11): Q8_0 0.0126, Q5_K 0.053, Q4_K 0.120. F32 and BF16 hold the
# source exactly. The controls' damaged weights measure 2.1 to 2.35.
ROW_BOUND = {T.F32: 0.0, T.BF16: 0.0, T.Q8_0: 0.025, T.Q5_K: 0.1, T.Q4_K: 0.2}
# Relative output error allowed against the BF16 original, about three times the measured 0.0155
# (Q8_0) and twice the measured 0.108 (Q4_K_M): a random model amplifies weight error through
# attention. The controls measure 0.52 to 1.36.
OUTPUT_BOUND = {"q8_0": 0.05, "q4_k_m": 0.25}

EMBEDDERS = ("img_in.", "txt_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer.")


def config(shapes: dict) -> dict:
    hidden, in_channels = shapes["img_in.weight"]
    head_dim = shapes["double_blocks.0.img_attn.norm.query_norm.scale"][0]
    blocks = lambda kind: 1 + max(int(n.split(".")[1]) for n in shapes if n.startswith(kind))
    return {
        "_class_name": "FluxTransformer2DModel",
        "attention_head_dim": head_dim,
        "num_attention_heads": hidden // head_dim,
        "axes_dims_rope": [16, 56, 56],
        "guidance_embeds": "guidance_in.in_layer.weight" in shapes,
        "in_channels": in_channels,
        "joint_attention_dim": shapes["txt_in.weight"][1],
        "pooled_projection_dim": shapes["vector_in.in_layer.weight"][1],
        "num_layers": blocks("double_blocks."),
        "num_single_layers": blocks("single_blocks."),
        "patch_size": 1,
    }


def write_config(src: str, work: str) -> tuple:
    """The diffusers config of the BFL checkpoint `src`, written as `work/config/config.json`;
    returns (config, its folder)."""
    with safe_open(src, framework="pt") as f:
        shapes = {n: tuple(f.get_slice(n).get_shape()) for n in f.keys()}
    cfg = config(shapes)
    config_dir = os.path.join(work, "config")
    os.makedirs(config_dir, exist_ok=True)
    with open(os.path.join(config_dir, "config.json"), "w") as f:
        json.dump(cfg, f)
    return cfg, config_dir


def inputs(cfg: dict) -> dict:
    g = torch.Generator().manual_seed(0)
    img_tokens, txt_tokens = 16, 8
    return {
        "hidden_states": torch.randn(1, img_tokens, cfg["in_channels"], generator=g),
        "encoder_hidden_states": torch.randn(1, txt_tokens, cfg["joint_attention_dim"], generator=g),
        "pooled_projections": torch.randn(1, cfg["pooled_projection_dim"], generator=g),
        "timestep": torch.tensor([0.5]),
        "img_ids": torch.zeros(img_tokens, 3),
        "txt_ids": torch.zeros(txt_tokens, 3),
        "guidance": torch.tensor([3.5]) if cfg["guidance_embeds"] else None,
        "return_dict": False,
    }


def recipe_type(name: str, shape: tuple) -> T:
    """formats/recipe.md's type for a BF16 source tensor converted to gguf:q8_0."""
    if len(shape) == 1 or int(np.prod(shape)) <= 1024:
        return T.F32
    if name.startswith(EMBEDDERS):
        return T.BF16
    return T.Q8_0


def write_gguf_py(src: str, out: str) -> None:
    """G: the same source quantized and written by the `gguf` package alone."""
    w = gguf.GGUFWriter(out, arch="flux", use_temp_file=True)
    with safe_open(src, framework="pt") as f:
        for name in f.keys():
            values = f.get_tensor(name).float().numpy()
            qtype = recipe_type(name, values.shape)
            w.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def compare_files(ours: str, theirs: str) -> dict:
    a = {t.name: t for t in gguf.GGUFReader(ours).tensors}
    b = {t.name: t for t in gguf.GGUFReader(theirs).tensors}
    differ = sorted(
        n
        for n in a.keys() | b.keys()
        if n not in a
        or n not in b
        or a[n].tensor_type != b[n].tensor_type
        or a[n].shape.tolist() != b[n].shape.tolist()
        or not np.array_equal(a[n].data.view(np.uint8).ravel(), b[n].data.view(np.uint8).ravel())
    )
    types = sorted({a[n].tensor_type.name for n in a})
    return {"tensors": len(a), "types": types, "differing": differ}


def load(path: str, config_dir: str, quantized: bool) -> FluxTransformer2DModel:
    extra = {"quantization_config": GGUFQuantizationConfig(compute_dtype=torch.float32)} if quantized else {}
    return FluxTransformer2DModel.from_single_file(path, config=config_dir, torch_dtype=torch.float32, **extra)


def quant_type(p) -> T:
    if type(p).__name__ == "GGUFParameter":
        return T(int(p.quant_type))
    return {torch.float32: T.F32, torch.float16: T.F16}[p.dtype]


def row_error(w: torch.Tensor, ref: torch.Tensor) -> float:
    rows = 1 if ref.dim() == 1 else ref.shape[0]
    w, ref = w.reshape(rows, -1), ref.reshape(rows, -1)
    return ((w - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-30)).max().item()


def check_weights(model, ref: dict, names=None) -> dict:
    """Largest relative row error per weight, with its type and whether it is within bound."""
    out = {}
    for name, p in model.named_parameters():
        if names is not None and name not in names:
            continue
        ty = quant_type(p)
        w = dequantize_gguf_tensor(p).float() if type(p).__name__ == "GGUFParameter" else p.float()
        r = ref[name].float()
        err = 0.0 if torch.equal(w, r) else row_error(w, r)
        out[name] = {"type": ty.name, "row_error": err, "ok": err <= ROW_BOUND[ty]}
    return out


def output_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def controls(model, ref: dict, baseline: dict, run=None) -> tuple:
    """Damages the loaded quantized model three ways and measures each with the weight check and,
    given `run` (inputs → relative output error), the output check. Returns the measurements and
    whether the model is intact again afterwards (every damaged weight as in `baseline`)."""
    params = dict(model.named_parameters())

    def raw(n: str) -> torch.Tensor:  # the parameter's storage: packed blocks for GGUF tensors
        p = params[n]
        return p.as_tensor() if type(p).__name__ == "GGUFParameter" else p.data

    def swap(a: str, b: str):
        t = raw(a).clone()
        raw(a).copy_(raw(b))
        raw(b).copy_(t)

    def reverse(a: str):
        raw(a).copy_(raw(a).flip(0))

    def swap_halves(a: str):
        h = raw(a).shape[0] // 2
        raw(a).copy_(torch.cat([raw(a)[h:], raw(a)[:h]]))

    k, v = "transformer_blocks.0.attn.to_k.weight", "transformer_blocks.0.attn.to_v.weight"
    mlp = "single_transformer_blocks.0.proj_mlp.weight"
    mod = "norm_out.linear.weight"
    cases = [
        ("swap to_k and to_v", [k, v], lambda: swap(k, v)),
        ("reverse the rows of proj_mlp", [mlp], lambda: reverse(mlp)),
        ("swap the halves of norm_out.linear", [mod], lambda: swap_halves(mod)),
    ]
    results = []
    with torch.no_grad():
        for label, names, damage in cases:
            damage()
            weights = check_weights(model, ref, set(names))
            result = {
                "control": label,
                "row_error": {n: w["row_error"] for n, w in weights.items()},
                "weight_check_fails": not all(w["ok"] for w in weights.values()),
            }
            if run is not None:
                result["output_error"] = run(model)
                result["output_check_fails"] = result["output_error"] > max(OUTPUT_BOUND.values())
            damage()  # each damage is its own inverse
            results.append(result)
    restored = check_weights(model, ref, {k, v, mlp, mod})
    return results, all(restored[n] == baseline[n] for n in restored)


def main(src: str, q8: str, q4km: str, work: str) -> None:
    start = time.time()
    cfg, config_dir = write_config(src, work)
    x = inputs(cfg)

    def forward(model) -> torch.Tensor:
        with torch.no_grad():
            return model(**x)[0]

    model_r = load(src, config_dir, quantized=False)
    # R's weights are BF16 values widened to float32, so BF16 holds them exactly in half the memory.
    ref = {n: p.detach().to(torch.bfloat16) for n, p in model_r.named_parameters()}
    assert all(torch.equal(ref[n].float(), p) for n, p in model_r.named_parameters())
    out_r = forward(model_r)
    del model_r

    gguf_py = os.path.join(work, "gguf-py-q8_0.gguf")
    write_gguf_py(src, gguf_py)
    files = compare_files(q8, gguf_py)
    report = {"q8_0_vs_gguf_py": files}
    ok = not files["differing"] and files["types"] == ["BF16", "F32", "Q8_0"]
    out_g = forward(load(gguf_py, config_dir, quantized=True))

    for target, path in [("q8_0", q8), ("q4_k_m", q4km)]:
        model = load(path, config_dir, quantized=True)
        weights = check_weights(model, ref)
        out = forward(model)
        worst = {}
        for name, w in weights.items():
            if w["row_error"] >= worst.get(w["type"], (0.0, ""))[0]:
                worst[w["type"]] = (w["row_error"], name)
        entry = {
            "gguf_parameters": sum(1 for p in model.parameters() if type(p).__name__ == "GGUFParameter"),
            "parameters": len(weights),
            "worst_row_error": {t: {"error": e, "tensor": n} for t, (e, n) in sorted(worst.items())},
            "weights_failing": sorted(n for n, w in weights.items() if not w["ok"]),
            "output_error": output_error(out, out_r),
            "output_shape": list(out.shape),
            "finite": bool(torch.isfinite(out).all()),
        }
        ok &= not entry["weights_failing"] and entry["output_error"] <= OUTPUT_BOUND[target]
        ok &= entry["finite"] and entry["gguf_parameters"] >= 10
        if target == "q8_0":
            entry["output_identical_to_gguf_py"] = bool(torch.equal(out, out_g))
            entry["output_max_abs_diff_to_gguf_py"] = (out - out_g).abs().max().item()
            ok &= entry["output_identical_to_gguf_py"]
        # The output check of the controls runs once (on Q8_0) against the larger output bound;
        # a K-quant forward pass is slow on the CPU, and the damage dwarfs either type's error.
        run = (lambda m: output_error(forward(m), out_r)) if target == "q8_0" else None
        entry["controls"], undone = controls(model, ref, weights, run)
        ok &= undone
        ok &= all(c["weight_check_fails"] and c.get("output_check_fails", True) for c in entry["controls"])
        report[target] = entry
        del model

    report["bounds"] = {"row": {t.name: b for t, b in ROW_BOUND.items()}, "output": OUTPUT_BOUND}
    report["seconds"] = round(time.time() - start, 1)
    report["ok"] = bool(ok)
    print(json.dumps(report))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(*sys.argv[1:5])
