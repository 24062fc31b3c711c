"""lowbit's ternary and BitNet layouts (formats/ternary.md, formats/bitnet.md), written in numpy
from the specs alone, to check lowbit's quantizer and decoder against.

Usage:
  python ternary_ref.py check FILE
      FILE holds cases `<case>.x` (F32 [N, K] input), `<case>.weight`, `<case>.weight_scale`
      (as stored) and `<case>.decoded` (F32, lowbit's decode), with <case> starting with
      `channel`, `tensor` (lowbit ternary) or `bitnet`. Prints JSON per case: decode mismatches
      against numpy's decode, code and scale mismatches against numpy's quantization of x, and
      how many quotients x/gamma were exact ties (+-0.5).
  python ternary_ref.py file CONVERTED DEQUANTIZED SOURCE
      Decodes every ternary or BitNet weight of CONVERTED (per its `lowbit.schemes` metadata)
      and prints JSON per weight: mismatches against DEQUANTIZED (F32, `lowbit dequantize`),
      and code and scale mismatches against numpy's quantization of the weight in SOURCE.
"""

import json
import sys

import ml_dtypes  # noqa: F401  (lets safetensors.numpy read BF16)
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

BF16 = ml_dtypes.bfloat16


def bf16_to_f32(a):
    """BF16 (as numpy bfloat16 or its uint16 bits) to float32: the bits shifted up 16."""
    bits = np.asarray(a).view(np.uint16).astype(np.uint32) << 16
    return bits.view(np.float32)


def unpack_k(weight, k):
    """[N, K/4] bytes -> [N, K] codes: element k in bits 2*(k mod 4) of byte k/4."""
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)
    codes = (weight[:, :, None] >> shifts) & 3
    return codes.reshape(weight.shape[0], k)


def unpack_rows(weight):
    """[N/4, K] bytes -> [N, K] codes: bits 2i..2i+1 of packed row r are row i*N/4 + r."""
    return np.concatenate([(weight >> (2 * i)) & 3 for i in range(4)], axis=0)


def decode(kind, weight, scale, n, k):
    """The logical weight in float32, or raises on a code 3."""
    codes = unpack_rows(weight) if kind == "bitnet" else unpack_k(weight, k)
    assert codes.shape == (n, k), (codes.shape, n, k)
    if (codes == 3).any():
        raise ValueError("code 3")
    q = codes.astype(np.float32) - np.float32(1)
    s = bf16_to_f32(scale).reshape(-1)
    if kind == "bitnet":
        return q / s[0]
    if kind == "tensor":
        assert s.shape == (1,)
        return q * s[0]
    assert s.shape == (n,)
    return q * s[:, None]


def gamma(x, axis):
    """mean |x|: each row's sum in float64 in index order (add.accumulate), the row sums then
    added in row order; to float32, >= 1e-5."""
    a = np.abs(x.astype(np.float64))
    if axis is None:
        rows = np.add.accumulate(a.reshape(a.shape[0], -1), axis=1)[:, -1]
        total = np.add.accumulate(rows)[-1]
        mean = np.float32(total / a.size)
    else:
        total = np.add.accumulate(a, axis=1)[:, -1]
        mean = (total / a.shape[1]).astype(np.float32)
    return np.maximum(mean, np.float32(1e-5))


def quantize(kind, x):
    """(codes q+1 [N, K], stored scale bits uint16, tie count) by the absmean rule."""
    g = gamma(x, None if kind in ("tensor", "bitnet") else 1)
    t = x / (g if np.ndim(g) == 0 else g[:, None])
    assert t.dtype == np.float32
    codes = (np.clip(np.rint(t), -1, 1) + 1).astype(np.uint8)
    ties = int((np.abs(t) == np.float32(0.5)).sum())
    stored = np.float32(1) / g if kind == "bitnet" else g
    scale = np.atleast_1d(np.asarray(stored, dtype=np.float32).astype(BF16)).view(np.uint16)
    return codes, scale, ties


def kind_of(case):
    for kind in ("channel", "tensor", "bitnet"):
        if case.startswith(kind):
            return kind
    raise ValueError(case)


def check(path):
    t = load_file(path)
    report = {}
    for case in sorted({name.rsplit(".", 1)[0] for name in t}):
        kind = kind_of(case)
        x, weight, scale = t[case + ".x"], t[case + ".weight"], t[case + ".weight_scale"]
        n, k = x.shape
        ours = t[case + ".decoded"]
        ref = decode(kind, weight, scale, n, k)
        codes, ref_scale, ties = quantize(kind, x)
        stored = unpack_rows(weight) if kind == "bitnet" else unpack_k(weight, k)
        report[case] = {
            "decode_mismatches": int((ref.view(np.uint32) != ours.view(np.uint32)).sum()),
            "code_mismatches": int((codes != stored).sum()),
            "scale_mismatches": int((ref_scale != scale.view(np.uint16)).sum()),
            "ties": ties,
            "nonzero_codes": int((stored != 1).sum()),
        }
    print(json.dumps(report, sort_keys=True))


def check_file(converted, dequantized, source):
    with safe_open(converted, "np") as f:
        schemes = json.loads(f.metadata()["lowbit.schemes"])
        deq = load_file(dequantized)
        src = load_file(source)
        report = {}
        for name, scheme in sorted(schemes.items()):
            kind = {"ternary": "channel", "ternary:tensor": "tensor", "bitnet": "bitnet"}.get(scheme)
            if kind is None:
                continue
            module = name[: -len(".weight")]
            weight = f.get_tensor(module + ".weight")
            scale = f.get_tensor(module + ".weight_scale")
            ours = deq[name]
            n, k = ours.shape
            ref = decode(kind, weight, scale, n, k)
            codes, ref_scale, _ = quantize(kind, src[name].astype(np.float32))
            stored = unpack_rows(weight) if kind == "bitnet" else unpack_k(weight, k)
            report[name] = {
                "scheme": scheme,
                "mismatches": int((ref.astype(np.float32) != ours.astype(np.float32)).sum()),
                "code_mismatches": int((codes != stored).sum()),
                "scale_mismatches": int((ref_scale != scale.view(np.uint16).reshape(-1)).sum()),
            }
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(sys.argv[2])
    elif sys.argv[1] == "file":
        check_file(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(__doc__)
