"""Converts a BFL-named FLUX checkpoint to diffusers naming with diffusers' own converter.

`convert_flux_transformer_checkpoint_to_diffusers` (diffusers.loaders.single_file_utils) is what
`FluxTransformer2DModel.from_single_file` runs on a BFL checkpoint, so its output is the
independent reference for lowbit's naming in both directions. It hard-codes FLUX's width (3072),
so the input must have it.

Writes OUT (one file) and the same tensors as N shards plus
`diffusion_pytorch_model.safetensors.index.json` in SHARD_DIR, dealt in the converter's order and
switching shards when one passes its share of the bytes.

Usage: python diffusers_convert.py BFL.safetensors OUT.safetensors SHARD_DIR N
"""

import json
import os
import sys

from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers
from safetensors.torch import load_file, save_file


def save(tensors: dict, path: str) -> None:
    save_file(tensors, path, metadata={"format": "pt"})


def main(src: str, out: str, shard_dir: str, n: int) -> None:
    converted = convert_flux_transformer_checkpoint_to_diffusers(load_file(src))
    # torch.chunk/split return views; the converter's torch.cat copies them, but make sure.
    converted = {k: v.contiguous() for k, v in converted.items()}
    save(converted, out)

    os.makedirs(shard_dir, exist_ok=True)
    total = sum(v.numel() * v.element_size() for v in converted.values())
    per_shard = -(-total // n)
    shards = [{} for _ in range(n)]
    filled = 0
    for name, v in converted.items():
        shards[min(filled // per_shard, n - 1)][name] = v
        filled += v.numel() * v.element_size()
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"diffusion_pytorch_model-{i + 1:05d}-of-{n:05d}.safetensors"
        save(shard, os.path.join(shard_dir, file))
        weight_map.update({name: file for name in shard})
    index = os.path.join(shard_dir, "diffusion_pytorch_model.safetensors.index.json")
    with open(index, "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    print(json.dumps({"tensors": len(converted), "shards": [len(s) for s in shards]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
