"""scripts/collect_stats.py's Collector records what formats/calibration.md says, checked against
a reference that shares none of its code.

A tiny randomly initialised diffusers FluxTransformer2DModel (float32, CPU, fixed seed) is called
directly, with random inputs, at timesteps spread over both groups of G = 2 (boundaries
[1000, 500, 0]: group 0 holds 1000 >= t > 500, group 1 holds 500 >= t >= 0; 500 itself is in
group 1). Meanwhile plain forward hooks, registered independently, keep every nn.Linear's full
input of every call. The expected statistic of a layer for group g is then, in numpy, the maximum
of |x| over every row of every input of the calls whose timestep (chosen here, not read back from
the collector) falls in g. Checks:
  * every nn.Linear of the model has a tensor, named by its module path, F32, shape [2, K] with K
    its in_features, equal to the expected values exactly (max and abs are exact in float32);
  * a call in group 1 leaves group 0's rows unchanged (snapshot before and after);
  * the metadata: version 1, statistic absmax, naming diffusers, groups 2, boundaries
    [1000, 500, 0], calls = the number of calls made, and the fields passed to save().
Also writes the tiny model's state dict (diffusers names, BF16) so that the Rust side can compare
the statistics' K with the real weights' columns.

Usage: python collect_stats_check.py STATS.safetensors MODEL.safetensors
Prints one JSON object; exits 1 if any check fails.
"""

import json
import pathlib
import sys

import numpy as np
import torch
from diffusers import FluxTransformer2DModel
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
from collect_stats import Collector  # noqa: E402

L, T = 12, 5
# (timestep in 0..1, batch size); the group follows the rule above.
CALLS = [(0.9, 1), (0.75, 2), (1.0, 1), (0.2, 1), (0.5, 1), (0.0, 1), (0.6, 1)]


def group(t):
    return 0 if t * 1000 > 500 else 1


def main():
    stats_path, model_path = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    ).eval()
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}

    seen = {name: [] for name in linears}  # name -> [(call index, input)]
    current = {}

    def keep(name):
        def hook(module, inputs, output):
            seen[name].append((current["call"], inputs[0].detach().clone().numpy()))

        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in linears.items()]
    collector = Collector(model, groups=2)
    collector.attach()

    failures = []
    snapshot = None
    with torch.no_grad():
        for i, (t, batch) in enumerate(CALLS):
            current["call"] = i
            if i == 3:  # the first group-1 call: group 0 must not move from here on
                snapshot = {n: v[0].clone() for n, v in collector.tensors().items()}
            kwargs = dict(
                hidden_states=torch.randn(batch, L, 16) * (1 + i),
                encoder_hidden_states=torch.randn(batch, T, 32),
                pooled_projections=torch.randn(batch, 32),
                timestep=torch.full((batch,), t, dtype=torch.float32),
                img_ids=torch.randn(L, 3),
                txt_ids=torch.zeros(T, 3),
                guidance=torch.full((batch,), 3.5),
                return_dict=False,
            )
            if i == 2:  # timestep passed positionally: hidden, encoder, pooled, timestep
                args = [kwargs.pop(k) for k in ("hidden_states", "encoder_hidden_states",
                                                "pooled_projections", "timestep")]
                model(*args, **kwargs)
            else:
                model(**kwargs)
            if i == 3:
                after = {n: v[0] for n, v in collector.tensors().items()}
                moved = [n for n in snapshot if not torch.equal(snapshot[n], after[n])]
                if moved:
                    failures.append(f"a group-1 call changed group 0 of {moved}")
    collector.detach()
    for h in handles:
        h.remove()
    extra = {"prompts": ["none: direct calls"], "steps": len(CALLS), "guidance": 3.5, "model": "tiny"}
    collector.save(stats_path, extra)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()},
              model_path)

    with safe_open(stats_path, "np") as f:
        meta = json.loads(f.metadata()["lowbit.calibration"])
        names = set(f.keys())
        got = {n: f.get_tensor(n) for n in names}
    want_meta = dict(extra, version=1, statistic="absmax", naming="diffusers", groups=2,
                     boundaries=[1000.0, 500.0, 0.0], calls=len(CALLS))
    if meta != want_meta:
        failures.append(f"metadata {meta} != {want_meta}")
    if names != set(linears):
        failures.append(f"names differ: missing {set(linears) - names}, extra {names - set(linears)}")
    groups_hit = set()
    for name, m in linears.items():
        k = m.in_features
        want = np.zeros((2, k), dtype=np.float32)
        for i, x in seen[name]:
            g = group(CALLS[i][0])
            groups_hit.add(g)
            want[g] = np.maximum(want[g], np.abs(x.reshape(-1, k)).max(axis=0))
        if len(seen[name]) != len(CALLS):
            failures.append(f"{name} ran {len(seen[name])} times, not {len(CALLS)}")
        g = got.get(name)
        if g is None:
            continue
        if g.dtype != np.float32 or g.shape != (2, k):
            failures.append(f"{name}: {g.dtype} {g.shape}, want float32 (2, {k})")
        elif not np.array_equal(g, want):
            failures.append(f"{name}: differs from the reference by {np.abs(g - want).max()}")
        elif not (want > 0).all():
            failures.append(f"{name}: a zero channel makes the check weak")
    if groups_hit != {0, 1}:
        failures.append(f"calls hit groups {groups_hit}")
    print(json.dumps({"layers": len(linears), "calls": len(CALLS), "failures": failures}))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
