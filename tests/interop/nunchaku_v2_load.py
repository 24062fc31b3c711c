"""Does Nunchaku's own v2 FLUX loader accept a lowbit `nunchaku:int4` file? (run by hand, not in CI)

Usage:
    python nunchaku_v2_load.py --nunchaku NUNCHAKU_SRC --file LOWBIT_NUNCHAKU_INT4.safetensors [--commit SHA]

NUNCHAKU_SRC is a nunchaku source tree (git checkout or extracted sdist). As in nunchaku_digests.py, the
`nunchaku` package cannot be imported normally (its __init__ pulls in the CUDA extension `nunchaku._C`), so:
  * `nunchaku`, `nunchaku.models`, `nunchaku.models.transformers` are registered as bare packages whose
    __path__ is the tree's directory (their __init__.py, which import every model family, are skipped);
    every other module, transformer_flux_v2.py and its real imports included, is Nunchaku's own file;
  * `nunchaku._C` / `nunchaku._C.ops` are stubs (kernels, only called in forward(), which is never run);
  * torch.cuda.get_device_capability returns (8, 9) (an Ada GPU), so Nunchaku's own get_precision() picks
    "int4" and check_hardware_compatibility() runs its int4 branch. Nothing else is stubbed.

Then Nunchaku's unmodified NunchakuFluxTransformer2DModelV2.from_pretrained(FILE, device="cpu") runs:
_build_model (json.loads(metadata["config"]) -> from_config on meta), rank from metadata["quantization_config"],
_patch_model (SVDQW4A4Linear / AWQW4A16Linear), to_empty(cpu), convert_flux_state_dict, patch_scale_key
(asserts every model key is present and has the same dtype) and load_state_dict(strict=True) (missing /
unexpected keys, shapes). Around Nunchaku's patch_scale_key this script records its own itemized diff (keys,
shapes, dtypes) so that a failure names every offender, and after loading it checks that every loaded tensor
equals the file's tensor. Metadata: config keys all accepted by diffusers' FluxTransformer2DModel;
quantization_config parsed by Nunchaku's get_precision_from_quantization_config / check_hardware_compatibility,
rank = proj_down's rank, and the text equal to what nunchaku/merge_safetensors.py writes; model_class equal to
what Nunchaku's published FLUX files carry (read by ComfyUI-nunchaku, not by these loaders).

Controls (each must make from_pretrained fail): drop a key, rename a key, an extra int4-foreign `.wtscale`
key (only load_state_dict(strict=True) can catch it), a wrong dtype, a wrong shape,
rank 16 in quantization_config, num_single_layers + 1 in config.

Prints one JSON object; exit 1 on any failure (or on a control that is not caught).
"""

import argparse
import importlib
import json
import subprocess
import sys
import traceback
import types
from pathlib import Path

import torch


def install(src: Path):
    torch.cuda.get_device_capability = lambda *a, **k: (8, 9)
    for name in ("nunchaku", "nunchaku.models", "nunchaku.models.transformers"):
        m = types.ModuleType(name)
        m.__path__ = [str(src / name.replace(".", "/"))]
        sys.modules[name] = m

    def kernel(name):
        def f(*a, **k):
            raise RuntimeError(f"stub nunchaku._C.ops.{name} called")
        return f

    c, ops = types.ModuleType("nunchaku._C"), types.ModuleType("nunchaku._C.ops")
    ops.__getattr__ = lambda name: kernel(name) if not name.startswith("__") else (_ for _ in ()).throw(AttributeError(name))
    c.ops = ops
    sys.modules["nunchaku._C"], sys.modules["nunchaku._C.ops"] = c, ops
    v2 = importlib.import_module("nunchaku.models.transformers.transformer_flux_v2")
    return v2, importlib.import_module("nunchaku.models.transformers.utils"), importlib.import_module("nunchaku.utils")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nunchaku", type=Path, required=True)
    ap.add_argument("--file", type=Path, required=True)
    ap.add_argument("--commit", help="the tree's commit, to record when NUNCHAKU_SRC is not a git checkout")
    args = ap.parse_args()
    src = args.nunchaku.resolve()
    v2, tutils, nutils = install(src)
    from diffusers import FluxTransformer2DModel
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()

    commit = args.commit or subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    version = (src / "nunchaku/__version__.py").read_text().strip()
    real_load, real_patch = tutils.load_state_dict_in_safetensors, v2.patch_scale_key
    base_sd, base_meta = real_load(args.file, return_metadata=True)
    state = {}

    def load_hook(path, return_metadata=False, **kw):  # what _build_model calls; applies the current mutation
        sd, meta = dict(base_sd), dict(base_meta)
        state["mutate"](sd, meta)
        state["sd"] = sd
        return (sd, meta) if return_metadata else sd

    def patch_hook(model, converted):  # record an itemized diff, then run Nunchaku's own patch_scale_key
        want = model.state_dict()
        state["diff"] = {
            "missing": sorted(set(want) - set(converted)),
            "unexpected": sorted(set(converted) - set(want)),
            "shape": {k: [list(converted[k].shape), list(want[k].shape)] for k in want
                      if k in converted and converted[k].shape != want[k].shape},
            "dtype": {k: [str(converted[k].dtype), str(want[k].dtype)] for k in want
                      if k in converted and converted[k].dtype != want[k].dtype},
        }
        state["converted"] = dict(converted)
        return real_patch(model, converted)

    tutils.load_state_dict_in_safetensors = load_hook
    v2.patch_scale_key = patch_hook

    def attempt(mutate):
        state.clear()
        state["mutate"] = mutate
        try:
            model = v2.NunchakuFluxTransformer2DModelV2.from_pretrained(args.file, device="cpu")
            err = None
        except Exception as e:  # AssertionError from patch_scale_key, RuntimeError from load_state_dict, ...
            fr = traceback.extract_tb(e.__traceback__)[-1]  # bare asserts have no message: name the line
            model, err = None, f"{type(e).__name__}: {str(e)[:600] or f'{Path(fr.filename).name}:{fr.lineno}: {fr.line}'}"
        return model, err, state.get("diff")

    # --- the file as written ---
    model, err, diff = attempt(lambda sd, meta: None)
    failures = []
    result = {"nunchaku_commit": commit, "nunchaku_version": version, "file": str(args.file), "tensors": len(base_sd), "loader_error": err, "diff": diff}
    if err:
        failures.append("from_pretrained failed: " + err)
    if diff and any(diff.values()):
        failures.append("state dict differs from the v2 model")
    if model is not None:
        msd = model.state_dict()
        bad = [k for k, v in state["converted"].items() if k in msd and not torch.equal(msd[k], v)]
        result["loaded_tensors_equal_file"] = not bad
        result["model_params"] = len(msd)
        if bad:
            failures.append(f"loaded tensors differ from file: {bad[:10]}")
        del model, msd

    # --- metadata, read the way Nunchaku reads it ---
    meta = {}
    try:
        cfg = json.loads(base_meta["config"])
        _, unused, _ = FluxTransformer2DModel.extract_init_dict(dict(cfg))
        unused = sorted(k for k in unused if not k.startswith("_"))
        meta["config"] = {"class_name": cfg.get("_class_name"), "unused_keys": unused,
                          "num_layers": cfg.get("num_layers"), "num_single_layers": cfg.get("num_single_layers")}
        if unused or cfg.get("_class_name") != "FluxTransformer2DModel":
            failures.append(f"config: unused keys {unused} / _class_name {cfg.get('_class_name')}")
    except Exception as e:
        failures.append(f"config unreadable: {e!r}")
    try:
        qc_text = base_meta["quantization_config"]
        qc = json.loads(qc_text)
        prec = nutils.get_precision_from_quantization_config(qc)
        nutils.check_hardware_compatibility(qc, "cuda")  # sm 89 -> must be int4
        ranks = sorted({v.shape[1] for k, v in base_sd.items() if k.endswith(".lora_down")})
        expect = json.dumps({"method": "svdquant",
                             "weight": {"dtype": "int4", "scale_dtype": None, "group_size": 64},
                             "activation": {"dtype": "int4", "scale_dtype": None, "group_size": 64},
                             "rank": ranks[0] if ranks else 32})
        meta["quantization_config"] = {"precision": prec, "rank": qc.get("rank"), "lora_ranks": ranks,
                                       "text_equals_merge_safetensors": qc_text == expect}
        if prec != "int4" or ranks != [qc.get("rank")] or qc_text != expect:
            failures.append(f"quantization_config: {qc_text!r} (merge_safetensors would write {expect!r})")
    except Exception as e:
        failures.append(f"quantization_config rejected: {e!r}")
    mc = base_meta.get("model_class")
    v1_src = (src / "nunchaku/models/transformers/transformer_flux.py").read_text()
    meta["model_class"] = {"value": mc, "class_in_tree": f"class {mc}(" in v1_src}
    if mc != "NunchakuFluxTransformer2dModel" or not meta["model_class"]["class_in_tree"]:
        failures.append(f"model_class {mc!r}")
    meta["other_keys"] = sorted(set(base_meta) - {"config", "quantization_config", "model_class"})
    result["metadata"] = meta

    # --- controls: each must be rejected by Nunchaku's loader ---
    qkey = next(k for k in sorted(base_sd) if k.endswith(".qweight") and k.startswith("transformer_blocks."))
    bkey = next(k for k in sorted(base_sd) if k.endswith(".smooth"))

    def drop(sd, m): sd.pop(qkey)
    def rename(sd, m): sd[qkey.replace(".qkv_proj.", ".qkv_proj_ctx.").replace(".qweight", ".qweights")] = sd.pop(qkey)
    def extra(sd, m): sd[qkey.replace(".qweight", ".wtscale")] = torch.ones((), dtype=torch.bfloat16)
    def dtype(sd, m): sd[bkey] = sd[bkey].to(torch.float16)
    def shape(sd, m): sd[bkey] = sd[bkey][:-64]
    def rank16(sd, m): m["quantization_config"] = m["quantization_config"].replace('"rank": 32', '"rank": 16')
    def layers(sd, m):
        c = json.loads(m["config"]); c["num_single_layers"] += 1; m["config"] = json.dumps(c)

    controls = {}
    for name, fn, target in [("drop_key", drop, qkey), ("rename_key", rename, qkey),
                             ("extra_wtscale_key", extra, qkey.replace(".qweight", ".wtscale")), ("wrong_dtype_fp16", dtype, bkey),
                             ("wrong_shape", shape, bkey), ("rank_16_in_metadata", rank16, None),
                             ("extra_single_layer_in_config", layers, None)]:
        m, e, d = attempt(fn)
        caught = m is None
        controls[name] = {"target": target, "caught": caught, "error": (e or "")[:200],
                          "diff": {k: (v if isinstance(v, list) else list(v))[:3] for k, v in (d or {}).items() if v}}
        if not caught:
            failures.append(f"control {name} not caught")
        del m
    result["controls"] = controls
    result["ok"] = not failures
    result["failures"] = failures
    print(json.dumps(result, indent=1))
    sys.exit(0 if not failures else 1)


if __name__ == "__main__":
    main()
