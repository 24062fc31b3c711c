"""lowbit's group-wise int4 layout (formats/int4.md), written in numpy from the spec alone, to
check lowbit's quantizer and decoder against.

Usage:
  python int4_ref.py check FILE
      FILE holds cases `<case>.x` (F32 [N, K] input), `<case>.weight` (I8 [N, K/2]),
      `<case>.weight_scale` (BF16 [K/g, N]), for asymmetric cases `<case>.weight_zero`, and
      `<case>.decoded` (F32, lowbit's decode); <case> is `g<group>_<sym|asym>_<anything>`.
      Prints JSON per case: decode mismatches against numpy's decode, code, scale and zero
      mismatches against numpy's quantization of x, and how many quotients were exact ties.
  python int4_ref.py file CONVERTED DEQUANTIZED SOURCE
      Decodes every int4 weight of CONVERTED (per its `lowbit.schemes` metadata) and prints
      JSON per weight: mismatches against DEQUANTIZED (F32, `lowbit dequantize`), and code,
      scale and zero mismatches against numpy's quantization of the weight in SOURCE.
"""

import json
import sys

import ml_dtypes  # noqa: F401  (lets safetensors.numpy read BF16)
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

BF16 = ml_dtypes.bfloat16
F32 = np.float32


def bf16_to_f32(a):
    """BF16 (as numpy bfloat16 or its uint16 bits) to float32: the bits shifted up 16."""
    bits = np.asarray(a).view(np.uint16).astype(np.uint32) << 16
    return bits.view(np.float32)


def to_bf16(a):
    """float32 to BF16, round to nearest even (ml_dtypes' cast), as float32 values."""
    return np.asarray(a, dtype=F32).astype(BF16).astype(F32)


def unpack(weight, n, k):
    """[N, K/2] bytes -> [N, K] signed codes: even k in the low nibble, two's complement."""
    w = np.asarray(weight).view(np.uint8).reshape(n, k // 2)
    codes = np.empty((n, k), dtype=np.int8)
    codes[:, 0::2] = ((w & 15) ^ 8).astype(np.int8) - 8
    codes[:, 1::2] = ((w >> 4) ^ 8).astype(np.int8) - 8
    return codes


def decode(weight, scale, zero, group, n, k):
    """The logical weight in float32: c * scale (+ zero), scales stored [K/g, N]."""
    c = unpack(weight, n, k).astype(F32)
    s = np.repeat(bf16_to_f32(scale).reshape(k // group, n).T, group, axis=1)
    out = c * s
    if zero is not None:
        out = out + np.repeat(bf16_to_f32(zero).reshape(k // group, n).T, group, axis=1)
    return out


def quantize(x, group, asym):
    """(codes [N, K], scale bits [K/g, N], zero bits or None, ties) by the spec's rule."""
    n, k = x.shape
    xg = x.reshape(n, k // group, group)
    if asym:
        mn, mx = xg.min(axis=-1), xg.max(axis=-1)
        s = to_bf16((mx - mn) / F32(15))
        z = to_bf16(mn + F32(8) * s)
        lo = -8
    else:
        s = to_bf16(np.abs(xg).max(axis=-1) / F32(7))
        z = np.zeros_like(s)
        lo = -7
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (xg - z[..., None]) / s[..., None]
    assert t.dtype == np.float32
    zero_scale = (s == 0)[..., None]
    codes = np.where(zero_scale, 0, np.clip(np.rint(t), lo, 7)).astype(np.int8)
    in_range = (t >= lo) & (t <= 7) & ~zero_scale
    ties = int((in_range & (np.abs(t - np.floor(t)) == F32(0.5))).sum())
    bits = lambda v: v.astype(BF16).view(np.uint16).T  # noqa: E731  [N, K/g] -> [K/g, N]
    return codes.reshape(n, k), bits(s), bits(z) if asym else None, ties


def check(path):
    t = load_file(path)
    report = {}
    for case in sorted({name.rsplit(".", 1)[0] for name in t}):
        group_name, mode = case.split("_")[:2]
        group, asym = int(group_name[1:]), mode == "asym"
        x = t[case + ".x"]
        n, k = x.shape
        zero = t.get(case + ".weight_zero")
        assert (zero is not None) == asym, case
        ours = t[case + ".decoded"]
        ref = decode(t[case + ".weight"], t[case + ".weight_scale"], zero, group, n, k)
        codes, scale, ref_zero, ties = quantize(x, group, asym)
        stored = unpack(t[case + ".weight"], n, k)
        report[case] = {
            "decode_mismatches": int((ref.view(np.uint32) != ours.view(np.uint32)).sum()),
            "code_mismatches": int((codes != stored).sum()),
            "scale_mismatches": int((scale != t[case + ".weight_scale"].view(np.uint16)).sum()),
            "zero_mismatches": 0 if zero is None else int((ref_zero != zero.view(np.uint16)).sum()),
            "ties": ties,
            "distinct_codes": len(np.unique(stored)),
        }
    print(json.dumps(report, sort_keys=True))


def check_file(converted, dequantized, source):
    with safe_open(converted, "np") as f:
        schemes = json.loads(f.metadata()["lowbit.schemes"])
        deq = load_file(dequantized)
        src = load_file(source)
        report = {}
        for name, scheme in sorted(schemes.items()):
            parts = scheme.split(":")
            if parts[0] != "int4":
                continue
            group = int(parts[1][1:])
            asym = "asym" in parts[2:]
            module = name[: -len(".weight")]
            zero = f.get_tensor(module + ".weight_zero") if asym else None
            ours = deq[name]
            n, k = ours.shape
            weight, scale = f.get_tensor(module + ".weight"), f.get_tensor(module + ".weight_scale")
            ref = decode(weight, scale, zero, group, n, k)
            codes, ref_scale, ref_zero, _ = quantize(src[name].astype(np.float32), group, asym)
            report[name] = {
                "scheme": scheme,
                "mismatches": int((ref != ours.astype(np.float32)).sum()),
                "code_mismatches": int((codes != unpack(weight, n, k)).sum()),
                "scale_mismatches": int((ref_scale != scale.view(np.uint16)).sum()),
                "zero_mismatches": 0 if zero is None else int((ref_zero != zero.view(np.uint16)).sum()),
            }
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(sys.argv[2])
    elif sys.argv[1] == "file":
        check_file(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(__doc__)
