"""Loads a lowbit GGUF of a FLUX-shaped transformer in diffusers and checks its forward pass.

Two models run on the same seeded inputs:
  A. diffusers' own GGUF path: FluxTransformer2DModel.from_single_file(GGUF,
     quantization_config=GGUFQuantizationConfig(compute_dtype=float32)), which keeps the quantized
     blocks and dequantizes inside every Linear with diffusers' torch kernels;
  B. the dequantized model: every GGUF tensor dequantized by the `gguf` package, renamed by
     diffusers' own BFL-to-diffusers converter, loaded strictly into a float32 model.
diffusers dequantizes GGUF blocks to float16 before casting to the compute dtype (its
`dequantize_gguf_tensor` defaults to float16), so A's weights are B's rounded to half precision.
The checks therefore are:
  - every weight A holds, dequantized the way diffusers does, is within float16 rounding
    (relative 2^-9) of B's: a wrong name, split or swapped half would be off by order 1;
  - A's output matches B's within 2e-2 relative, and B16's (B with its weights rounded to
    float16) within 2e-2, or within 1e-5 with --exact-fp16 (for Q8_0, whose dequantized values
    d·q are computed exactly and rounded once in float16, so A and B16 hold identical weights;
    K-quants dequantize in several float16 steps, each rounding);
  - quantized weights really stayed quantized in A (GGUFParameter of a quantized type).
Prints one JSON line with the measurements.

Usage: python diffusers_flux.py MODEL.gguf [--exact-fp16]
"""

import json
import sys
import tempfile

import gguf
import numpy as np
import torch
from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig
from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers


def config_from_gguf(reader: gguf.GGUFReader) -> dict:
    shapes = {t.name: [int(d) for d in reversed(t.shape.tolist())] for t in reader.tensors}
    hidden = shapes["img_in.weight"][0]
    n_double = 1 + max(int(n.split(".")[1]) for n in shapes if n.startswith("double_blocks."))
    n_single = 1 + max(int(n.split(".")[1]) for n in shapes if n.startswith("single_blocks."))
    head_dim = shapes["double_blocks.0.img_attn.norm.query_norm.scale"][0]
    return {
        "_class_name": "FluxTransformer2DModel",
        "attention_head_dim": head_dim,
        "num_attention_heads": hidden // head_dim,
        "axes_dims_rope": [16, 56, 56],
        "guidance_embeds": "guidance_in.in_layer.weight" in shapes,
        "in_channels": shapes["img_in.weight"][1],
        "joint_attention_dim": shapes["txt_in.weight"][1],
        "pooled_projection_dim": shapes["vector_in.in_layer.weight"][1],
        "num_layers": n_double,
        "num_single_layers": n_single,
        "patch_size": 1,
    }


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


def main(path: str, exact_fp16: bool) -> None:
    torch.manual_seed(0)
    reader = gguf.GGUFReader(path)
    cfg = config_from_gguf(reader)
    with tempfile.TemporaryDirectory() as config_dir:
        with open(f"{config_dir}/config.json", "w") as f:
            json.dump(cfg, f)
        model_a = FluxTransformer2DModel.from_single_file(
            path,
            quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32),
            config=config_dir,
            torch_dtype=torch.float32,
        )
    quantized = sum(1 for p in model_a.parameters() if type(p).__name__ == "GGUFParameter" and p.quant_type not in (0, 1, 30))

    bfl = {}
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        bfl[t.name] = torch.from_numpy(np.ascontiguousarray(values))
    state = convert_flux_transformer_checkpoint_to_diffusers(bfl)
    model_b = FluxTransformer2DModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    model_b.load_state_dict(state, strict=True)

    from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

    worst_weight = 0.0
    worst_name = ""
    for name, p in model_a.named_parameters():
        w = dequantize_gguf_tensor(p).float() if type(p).__name__ == "GGUFParameter" else p.float()
        ref = state[name]
        rel = ((w - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
        if rel > worst_weight:
            worst_weight, worst_name = rel, name

    model_b16 = FluxTransformer2DModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    model_b16.load_state_dict({k: v.to(torch.float16).to(torch.float32) for k, v in state.items()}, strict=True)

    x = inputs(cfg)
    with torch.no_grad():
        out_a = model_a(**x)[0]
        out_b = model_b(**x)[0]
        out_b16 = model_b16(**x)[0]
    scale = out_b.abs().max().item()
    rel_b = (out_a - out_b).abs().max().item() / scale
    rel_b16 = (out_a - out_b16).abs().max().item() / scale
    report = {
        "quantized_parameters": quantized,
        "output_shape": list(out_a.shape),
        "weights_max_rel_diff": worst_weight,
        "weights_worst": worst_name,
        "output_rel_diff_vs_dequantized": rel_b,
        "output_rel_diff_vs_dequantized_fp16": rel_b16,
        "finite": bool(torch.isfinite(out_a).all()),
    }
    print(json.dumps(report))
    ok = (
        report["finite"]
        and quantized > 0
        and worst_weight <= 2**-9
        and rel_b <= 2e-2
        and rel_b16 <= (1e-5 if exact_fp16 else 2e-2)
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(sys.argv[1], "--exact-fp16" in sys.argv[2:])
