"""lowbit's BitNet packing against transformers' own code (integrations/bitnet.py of the pinned
transformers): `unpack_weights` of our `weight`, `pack_weights` of our codes, a `BitLinear`
loaded with our `weight` and `weight_scale` against x @ decoded.T, and `BitNetQuantConfig` from
our `quantization_config` metadata.

Usage: python bitnet_hf.py FILE
  FILE holds `codes` (I8 [N, K], q in {-1, 0, 1}), `weight` (U8 [N/4, K]), `weight_scale`
  (BF16 [1]), `decoded` (F32 [N, K], lowbit's decode) and metadata `quantization_config`.
Prints one JSON line.
"""

import json
import os
import sys

# transformers wraps unpack_weights and BitLinear's helpers in torch.compile; run them eagerly.
os.environ["TORCH_COMPILE_DISABLE"] = "1"

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import BitNetQuantConfig  # noqa: E402
from transformers.integrations.bitnet import BitLinear, pack_weights, unpack_weights  # noqa: E402


def main(path):
    t = load_file(path)
    with safe_open(path, "pt") as f:
        config = json.loads(f.metadata()["quantization_config"])
    codes, weight, scale, decoded = t["codes"], t["weight"], t["weight_scale"], t["decoded"]
    n, k = codes.shape

    unpacked = unpack_weights(weight, dtype=torch.float32)
    unpack_mismatches = int((unpacked != codes.to(torch.float32)).sum())
    packed = pack_weights(codes.clone())
    pack_mismatches = int((packed != weight).sum())

    reference = BitNetQuantConfig()
    loaded = BitNetQuantConfig.from_dict(config)
    as_json = lambda c: json.loads(c.to_json_string(use_diff=False))  # noqa: E731
    config_equal = as_json(loaded) == as_json(reference) and set(config) == set(reference.to_dict())

    layer = BitLinear(k, n, bias=False, dtype=torch.float32)
    layer.weight.copy_(weight)
    layer.weight_scale.copy_(scale.to(torch.float32))
    torch.manual_seed(0)
    x = torch.randn(3, k, dtype=torch.float32)
    with torch.no_grad():
        y = layer(x)
        xq, xs = layer.activation_quant(x)
        want = (xq.to(torch.float64) @ decoded.to(torch.float64).T) / xs.to(torch.float64)
    rel = float(((y.to(torch.float64) - want).abs().max() / want.abs().max()).item())

    print(
        json.dumps(
            {
                "unpack_mismatches": unpack_mismatches,
                "pack_mismatches": pack_mismatches,
                "config_equal": config_equal,
                "bitlinear_max_rel_err": rel,
                "nonzero_codes": int((codes != 0).sum()),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
