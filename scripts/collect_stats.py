#!/usr/bin/env python3
"""Collect the activation statistics SVDQuant smoothing needs, for lowbit.

For every torch.nn.Linear of a diffusers FLUX transformer, this records the per-input-channel
absolute maximum of the layer's input, max |x[..., k]| over all tokens, batch items and guidance
branches of every transformer call, kept separately for G timestep groups (G = --groups). It runs
the diffusers FluxPipeline on your prompts and writes a safetensors file in the format of
formats/calibration.md, which lowbit reads (`lowbit_convert::Calibration`):

  * one F32 tensor of shape [G, K] per Linear, named by its module path without `.weight`
    (diffusers naming, e.g. `transformer_blocks.0.attn.to_q`);
  * `__metadata__["lowbit.calibration"]`, a JSON object: version 1, statistic "absmax",
    naming "diffusers", groups G, boundaries [1000, ..., 0] (descending, diffusers' timestep
    scale; group g holds b_g >= t > b_{g+1}, t = 0 in the last group, so group 0 is the
    noisiest), prompts, steps, guidance, model, and calls (transformer calls recorded).

The timestep of each call is the one the transformer receives (FluxPipeline passes t / 1000) times
1000. Running maxima are kept in float32 on the model's device and copied to the CPU only when
saving. A group no call fell into stays all zeros, and lowbit refuses such a file: choose --steps
and --groups so that every group gets steps (the default schedule of FLUX.1 spreads 28 or more
steps over all of 0..1000).

Example (FLUX.1-dev on one GPU, 16 prompts, 4 groups):

  python scripts/collect_stats.py --model black-forest-labs/FLUX.1-dev --prompts prompts.txt \\
      --steps 28 --guidance 3.5 --groups 4 --device cuda --dtype bfloat16 -o flux-dev-stats.safetensors

Needs torch, diffusers (0.42 tested), safetensors and, for the pipeline's text encoders,
transformers, sentencepiece and protobuf. As a library:

  collector = Collector(pipe.transformer, groups=4)
  collector.attach()
  pipe(...)
  collector.detach()
  collector.save("stats.safetensors", {"model": "...", "prompts": [...]})
"""

import argparse
import inspect
import json
import sys

import torch

FORMAT_KEY = "lowbit.calibration"


def boundaries(groups):
    """G + 1 descending timesteps splitting 1000..0 into G equal groups."""
    return [1000.0 * (groups - i) / groups for i in range(groups + 1)]


def group_of(t, bounds):
    """The group of timestep t (0..1000 scale): g with b_g >= t > b_{g+1}; t <= 0 is the last."""
    last = len(bounds) - 2
    for g in range(last):
        if t > bounds[g + 1]:
            return g
    return last


class Collector:
    """Per-channel input absmax of every nn.Linear of `transformer`, per timestep group."""

    def __init__(self, transformer, groups=1):
        if groups < 1:
            raise ValueError(f"groups must be at least 1, not {groups}")
        self.transformer = transformer
        self.groups = groups
        self.bounds = boundaries(groups)
        self.linears = {
            name: m for name, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)
        }
        if not self.linears:
            raise ValueError("the transformer has no torch.nn.Linear module")
        self.stats = {}  # module name -> float32 [G, K] on the device of its inputs
        self.calls = 0
        self.group_calls = [0] * groups
        self.group = None
        self.handles = []
        params = list(inspect.signature(transformer.forward).parameters)
        self.timestep_index = params.index("timestep") if "timestep" in params else None

    def _timestep(self, args, kwargs):
        t = kwargs.get("timestep")
        if t is None and self.timestep_index is not None and len(args) > self.timestep_index:
            t = args[self.timestep_index]
        if t is None:
            raise RuntimeError("the transformer was called without a timestep")
        if torch.is_tensor(t):
            t = t.detach().flatten()[0].float().item()
        return float(t) * 1000.0

    def _on_transformer(self, module, args, kwargs):
        self.group = group_of(self._timestep(args, kwargs), self.bounds)
        self.calls += 1
        self.group_calls[self.group] += 1

    def _on_linear(self, name):
        def hook(module, args, kwargs):
            if self.group is None:
                raise RuntimeError(f"{name} ran outside a call of the transformer")
            x = args[0] if args else kwargs["input"]
            k = x.shape[-1]
            amax = x.detach().abs().reshape(-1, k).amax(dim=0).to(torch.float32)
            s = self.stats.get(name)
            if s is None:
                s = torch.zeros((self.groups, k), dtype=torch.float32, device=amax.device)
                self.stats[name] = s
            s[self.group] = torch.maximum(s[self.group], amax.to(s.device))

        return hook

    def attach(self):
        """Registers the hooks; calls of the transformer are recorded until detach()."""
        if self.handles:
            return
        self.handles.append(
            self.transformer.register_forward_pre_hook(self._on_transformer, with_kwargs=True)
        )
        for name, m in self.linears.items():
            self.handles.append(m.register_forward_pre_hook(self._on_linear(name), with_kwargs=True))

    def detach(self):
        """Removes the hooks; the statistics gathered so far are kept."""
        for h in self.handles:
            h.remove()
        self.handles = []
        self.group = None

    def tensors(self):
        """The statistics as CPU float32 tensors [G, K] by module name (zeros if never called)."""
        out = {}
        for name, m in self.linears.items():
            s = self.stats.get(name)
            if s is None:
                s = torch.zeros((self.groups, m.in_features), dtype=torch.float32)
            out[name] = s.detach().to("cpu").contiguous()
        return out

    def save(self, path, metadata=None):
        """Writes the statistics file; `metadata` adds fields (prompts, steps, guidance, model)."""
        from safetensors.torch import save_file

        meta = dict(metadata or {})
        meta.update(
            version=1,
            statistic="absmax",
            naming="diffusers",
            groups=self.groups,
            boundaries=self.bounds,
            calls=self.calls,
        )
        save_file(self.tensors(), str(path), metadata={FORMAT_KEY: json.dumps(meta)})
        return meta


def read_prompts(args):
    prompts = list(args.prompt or [])
    if args.prompts:
        with open(args.prompts, encoding="utf-8") as f:
            prompts += [line.strip() for line in f if line.strip()]
    return prompts


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Record per-channel input absmax of every Linear of a FLUX transformer, per "
        "timestep group, while diffusers' FluxPipeline runs your prompts; writes the statistics "
        "file lowbit's SVDQuant smoothing reads (formats/calibration.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="diffusers FLUX model id or folder")
    p.add_argument("--prompts", help="text file, one prompt per line (blank lines skipped)")
    p.add_argument("--prompt", action="append", help="a prompt; may be repeated")
    p.add_argument("--steps", type=int, default=28, help="inference steps per prompt")
    p.add_argument("--guidance", type=float, default=3.5, help="guidance scale")
    p.add_argument("--groups", type=int, default=1, help="timestep groups G")
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0, help="seed of the first prompt; +1 per prompt")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("-o", "--output", required=True, help="statistics file to write (.safetensors)")
    args = p.parse_args(argv)
    prompts = read_prompts(args)
    if not prompts:
        p.error("give prompts with --prompts FILE or --prompt TEXT")
    if args.groups < 1:
        p.error("--groups must be at least 1")

    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(args.model, torch_dtype=getattr(torch, args.dtype))
    pipe = pipe.to(args.device)
    collector = Collector(pipe.transformer, groups=args.groups)
    collector.attach()
    try:
        for i, prompt in enumerate(prompts):
            print(f"[{i + 1}/{len(prompts)}] {prompt}", file=sys.stderr)
            pipe(
                prompt,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                height=args.height,
                width=args.width,
                generator=torch.Generator(args.device).manual_seed(args.seed + i),
            )
    finally:
        collector.detach()
    empty = [g for g, n in enumerate(collector.group_calls) if n == 0]
    if empty:
        print(f"warning: no step fell in group(s) {empty}; lowbit will refuse the file", file=sys.stderr)
    meta = collector.save(
        args.output,
        {"prompts": prompts, "steps": args.steps, "guidance": args.guidance, "model": args.model},
    )
    print(f"{args.output}: {len(collector.linears)} layers, {meta['calls']} calls", file=sys.stderr)


if __name__ == "__main__":
    main()
