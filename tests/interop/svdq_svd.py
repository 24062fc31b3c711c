"""SVDQuant layers of a lowbit file checked in numpy, from the stored tensors alone.

Usage:
  python svdq_svd.py svd SOURCE.safetensors CONVERTED.safetensors
      For each svdq weight of CONVERTED (per `lowbit.schemes`; converted without statistics, so
      λ = 1 and proj_down holds the right singular vectors): W from SOURCE (BF16 -> float64),
      the optimal rank-r residual ‖W − W_r‖_F from numpy.linalg.svd (LAPACK), and the residual
      of lowbit's branch ‖W − proj_up · proj_downᵀ‖_F. Then the int4 part: tests/interop/
      int4_ref.py's quantizer (symmetric, group 64, written from formats/int4.md) applied to
      R = W − proj_up · proj_downᵀ computed in float32 from the stored BF16 factors; its codes
      and scales against the stored qweight and wscales. Prints JSON per weight.
  python svdq_svd.py dense CONVERTED.safetensors DEQUANTIZED.safetensors
      For each svdq weight: the dense weight of timestep group 0,
      W = codes · wscales / λ + proj_up · proj_downᵀ, in float64 from the stored tensors,
      against `lowbit dequantize --dtype f32`'s: relative Frobenius error. Prints JSON per weight.
"""

import json
import pathlib
import sys

import ml_dtypes  # noqa: F401  (lets safetensors.numpy read BF16)
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from int4_ref import bf16_to_f32, quantize, unpack  # noqa: E402

SUFFIXES = ("qweight", "wscales", "smooth_factor", "proj_down", "proj_up")


def svdq_layers(path):
    with safe_open(path, "np") as f:
        schemes = json.loads(f.metadata()["lowbit.schemes"])
    st = load_file(path)
    for name, scheme in sorted(schemes.items()):
        if not scheme.startswith("svdq-"):
            continue
        m = name[: -len(".weight")]
        t = {s: st[f"{m}.{s}"] for s in SUFFIXES}
        if t["qweight"].ndim == 3:  # timestep groups: group 0
            t = {s: v[0] for s, v in t.items()}
        yield name, scheme, t


def as_f32(t):
    """(codes [N, K] int8, wscales [K/64, N], λ [K], down [K, r], up [N, r]) in float32."""
    n, k = t["qweight"].shape[0], t["qweight"].shape[1] * 2
    codes = unpack(t["qweight"], n, k)
    f = {s: bf16_to_f32(t[s]) for s in SUFFIXES[1:]}
    return n, k, codes, f["wscales"], f["smooth_factor"], f["proj_down"], f["proj_up"]


def svd(source, converted):
    src = load_file(source)
    report = {}
    for name, scheme, t in svdq_layers(converted):
        n, k, codes, wscales, smooth, down, up = as_f32(t)
        r = up.shape[1]
        w32 = bf16_to_f32(src[name])
        w = w32.astype(np.float64)
        sigma = np.linalg.svd(w, compute_uv=False)
        optimum = float(np.sqrt(np.sum(sigma[r:] ** 2)))
        ours = float(np.linalg.norm(w - up.astype(np.float64) @ down.astype(np.float64).T))
        residual = w32 - up @ down.T
        assert residual.dtype == np.float32
        ref_codes, ref_scales, _, _ = quantize(residual, 64, False)
        diff = ref_codes.astype(np.int32) - codes.astype(np.int32)
        report[name] = {
            "scheme": scheme,
            "shape": [n, k],
            "rank": r,
            "smooth_all_ones": bool(np.all(smooth == 1.0)),
            "optimum": optimum,
            "ours": ours,
            "ratio": ours / optimum,
            "norm": float(np.linalg.norm(w)),
            "codes": int(codes.size),
            "code_mismatches": int((diff != 0).sum()),
            "max_code_diff": int(np.abs(diff).max()),
            "scale_mismatches": int((ref_scales != t["wscales"].view(np.uint16)).sum()),
        }
    print(json.dumps(report, sort_keys=True))


def dense(converted, dequantized):
    deq = load_file(dequantized)
    report = {}
    for name, scheme, t in svdq_layers(converted):
        n, k, codes, wscales, smooth, down, up = as_f32(t)
        s = np.repeat(wscales.astype(np.float64).T, 64, axis=1)  # [N, K]
        w = codes.astype(np.float64) * s / smooth.astype(np.float64)[None, :]
        w += up.astype(np.float64) @ down.astype(np.float64).T
        ours = deq[name]
        assert ours.dtype == np.float32 and ours.shape == (n, k), (name, ours.dtype, ours.shape)
        report[name] = {
            "scheme": scheme,
            "rel_error": float(np.linalg.norm(ours.astype(np.float64) - w) / np.linalg.norm(w)),
            "smooth_min": float(smooth.min()),
            "smooth_max": float(smooth.max()),
        }
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    if sys.argv[1] == "svd":
        svd(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "dense":
        dense(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
