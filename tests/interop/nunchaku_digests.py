"""Golden digests of Nunchaku's own packing of a lowbit natural-layout SVDQuant file (run by hand).

Usage:
    python nunchaku_digests.py --nunchaku NUNCHAKU_SRC --natural LOWBIT.safetensors --out DIGESTS.json
                               [--deepcompressor DEEPCOMPRESSOR_SRC] [--lite]

NUNCHAKU_SRC is a nunchaku source tree (a git checkout or an extracted sdist). Two of its files
are loaded by path, without importing the `nunchaku` package (which needs its CUDA extension):
  nunchaku/lora/flux/packer.py             NunchakuWeightPacker (W4A4 tiles, scale/vector and low-rank order)
  nunchaku/models/text_encoders/tinychat_utils.py   convert_to_tinychat_w4x16y16_linear_weight (AWQ W4A16)
packer.py's relative imports are satisfied by loading nunchaku/lora/flux/utils.py (`pad`) by path and by
a one-function stand-in for `nunchaku.utils` (`ceil_divide`; the real module needs huggingface_hub).

Nunchaku's code does: padding (pad_weight / pad_scale / pad_lowrank_weight), the qweight tile packing,
the per-128-channel permutation of wscales, bias and smooth, the low-rank fragment order, and for AdaLN
modulation layers the TinyChat requantization (q = round((w + 7 s) / s)), nibble/row interleave and the
transposed wscales / wzeros = -(7 s) in BF16. TinyChat pads wscales / wzeros with zero rows to a multiple of
16 groups (ceil_num_groups): none for FLUX (K = 3072, 48 groups), 4 -> 16 rows for K = 256.

This script does (its own code, following deepcompressor backend/nunchaku/{convert,utils}.py):
  * renaming BFL layers to the names of Nunchaku's single-file format (legacy names: qkv_proj, lora_down, ...);
  * splitting single_blocks.N.linear1 along N into qkv_proj (rows < 3H) and mlp_fc1 (the rest), both with the
    same lora_down, and linear2 along K into out_proj (columns < H, zero bias) and mlp_fc2 (the rest, with
    the bias), both with the same lora_up; H = linear2's N;
  * turning lowbit codes into what the packers take: int32 codes for W4A4; the dequantized weight c * s in
    BF16 for TinyChat (it re-rounds to c + 7 exactly); proj_down [K, r] transposed to lora_down's [r, K];
  * for modulation layers: rows interleaved over the S chunks (S = 6 double, 3 single; new row i*S + j is
    old row j*(N/S) + i), and bias + 1 (in BF16) on chunks 1 and S-2 (the "scale" chunks);
  * smooth_orig = smooth (lowbit never fuses the smoothing into the previous layer).

Left out: the biases of mlp_fc2, mlp_context_fc2 and single mlp_fc2. Nunchaku's INT4 runtime feeds these
layers GELU output + 0.171875 as unsigned activations, so the bias must fold the shift out; nunchaku's code
does not compute that fold (deepcompressor does, with the original dense weight, which a natural-layout file
does not hold), and lowbit's fold is its own (formats/nunchaku.md, "fc2 biases"), checked by its effect in
tests/it/nunchaku.rs.

With --deepcompressor, every tensor is also produced by deepcompressor's own
backend/nunchaku/utils.py (convert_to_nunchaku_w4x4y16_linear_weight, convert_to_nunchaku_w4x16_linear_weight,
which does the modulation interleave and +1 itself) and the script fails on any difference.

With --lite, the digests are of diffusers' nunchaku_lite layout (diffusers 0.42.1, quantizers/nunchaku/utils.py:
SVDQW4A4Linear / AWQW4A16Linear) instead, with the same packers. This script's own code then does only:
  * renaming to diffusers module paths + lite parameter names (qweight, wscales, bias, smooth_factor, proj_down,
    proj_up; qweight, wscales, wzeros, bias), no smooth_orig;
  * row splits of the fused BFL layers, one diffusers module each, all with the same smooth and lora_down:
    img_attn.qkv -> attn.to_q / to_k / to_v, txt_attn.qkv -> attn.add_{q,k,v}_proj, single linear1 -> attn.to_q /
    to_k / to_v (H rows each, H = the layer's K) and proj_mlp (the rest); single linear2 -> proj_out, unsplit;
  * the code conversion above. Modulation layers (norm1.linear, norm1_context.linear, single norm.linear):
    TinyChat in natural row order, no interleave and no +1 (diffusers' AdaLayerNormZero chunks and adds 1 itself),
    TinyChat padding rows dropped (the module holds K/64 rows);
  * fc2 biases (ff.net.2, ff_context.net.2, proj_out) included, plain: the lite module's act_unsigned is False.
  deepcompressor's cross-check, if asked, uses adanorm_splits=1 (no interleave, no +1) for the modulation layers.

Output JSON: {"nunchaku_commit", "source_sha256", "tensors": {key: {"dtype", "shape", "sha256"}}}, sha256 over
the tensor's raw little-endian bytes; dtype as safetensors names it (I8, I32, BF16).
"""

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import torch
from safetensors import safe_open

DTYPES = {torch.int8: "I8", torch.int32: "I32", torch.bfloat16: "BF16", torch.float16: "F16"}


# --lite: BFL layer (in a double or single block) -> diffusers modules, rows split in that order (H = K each, the
# last one takes the rest); lite parameter names of the packer's outputs.
LITE_MODULES = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"), "img_attn.proj": ("attn.to_out.0",),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), "txt_attn.proj": ("attn.to_add_out",),
    "img_mlp.0": ("ff.net.0.proj",), "img_mlp.2": ("ff.net.2",), "img_mod.lin": ("norm1.linear",),
    "txt_mlp.0": ("ff_context.net.0.proj",), "txt_mlp.2": ("ff_context.net.2",), "txt_mod.lin": ("norm1_context.linear",),
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), "linear2": ("proj_out",),
    "modulation.lin": ("norm.linear",),
}
LITE_NAMES = {"qweight": "qweight", "wscales": "wscales", "bias": "bias", "smooth": "smooth_factor",
              "lora_down": "proj_down", "lora_up": "proj_up"}


def load_file_as(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def package(name):
    module = types.ModuleType(name)
    module.__path__ = []
    sys.modules[name] = module


def load_nunchaku(root):
    for name in ("nunchaku", "nunchaku.lora", "nunchaku.lora.flux"):
        package(name)
    stand_in = types.ModuleType("nunchaku.utils")
    stand_in.ceil_divide = lambda x, d: (x + d - 1) // d
    stand_in.load_state_dict_in_safetensors = None
    sys.modules["nunchaku.utils"] = stand_in
    load_file_as("nunchaku.lora.flux.utils", root / "nunchaku/lora/flux/utils.py")
    packer = load_file_as("nunchaku.lora.flux.packer", root / "nunchaku/lora/flux/packer.py")
    tinychat = load_file_as("nunchaku_tinychat", root / "nunchaku/models/text_encoders/tinychat_utils.py")
    return packer.NunchakuWeightPacker, tinychat.convert_to_tinychat_w4x16y16_linear_weight


def load_deepcompressor(root):
    for name in ("dcb", "dcb.tinychat", "dcb.nunchaku"):
        package(name)
    base = root / "deepcompressor/backend"
    load_file_as("dcb.utils", base / "utils.py")
    load_file_as("dcb.tinychat.utils", base / "tinychat/utils.py")
    return load_file_as("dcb.nunchaku.utils", base / "nunchaku/utils.py")


def unpack_codes(qweight):
    """lowbit int4 bytes [N, K/2] (even k in the low nibble, two's complement) -> int32 codes [N, K]."""
    b = qweight.view(torch.uint8).to(torch.int32)
    lo, hi = b & 0xF, b >> 4
    codes = torch.stack([lo, hi], dim=-1).reshape(qweight.shape[0], -1)
    return torch.where(codes >= 8, codes - 16, codes)


def w4a4(Packer, c, s, bias, smooth, down, up):
    """c int32 [N, K], s bf16 [N, K/64], bias [N], smooth [K], down [r, K], up [N, r] -> nunchaku tensors."""
    p = Packer(bits=4)
    vec = lambda v: p.pack_scale(p.pad_scale(v.to(torch.bfloat16).reshape(-1, 1), group_size=-1), group_size=-1)
    out = {
        "qweight": p.pack_weight(p.pad_weight(c)),
        "wscales": p.pack_scale(p.pad_scale(s.contiguous(), group_size=64), group_size=64),
        "bias": vec(bias),
        "smooth": vec(smooth),
        "lora_down": p.pack_lowrank_weight(p.pad_lowrank_weight(down.contiguous(), down=True), down=True),
        "lora_up": p.pack_lowrank_weight(p.pad_lowrank_weight(up.contiguous(), down=False), down=False),
    }
    out["smooth_orig"] = out["smooth"].clone()
    return out


def w4a16(tinychat, c, s, bias, splits):
    """c int32 [N, K], s bf16 [N, K/64], bias [N]: interleave + 1-fold (this script; none if splits == 1), pack."""
    n, k = c.shape
    w = (c.float() * s.float().repeat_interleave(64, dim=1)).to(torch.bfloat16)
    if splits > 1:
        w = w.view(splits, n // splits, k).transpose(0, 1).reshape(n, k)
        s = s.view(splits, n // splits, -1).transpose(0, 1).reshape(n, -1)
        delta = torch.zeros(splits, dtype=torch.bfloat16)
        delta[1] = delta[splits - 2] = 1
        bias = bias.view(splits, n // splits).transpose(0, 1) + delta
    q, scale, zero = tinychat(w, s, torch.full_like(s, 7), group_size=64, zero_pre_scaled=True)
    return {"qweight": q.view(torch.int32), "wscales": scale, "wzeros": zero, "bias": bias.reshape(n)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nunchaku", type=Path, required=True)
    ap.add_argument("--natural", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--deepcompressor", type=Path)
    ap.add_argument("--commit", help="the nunchaku commit NUNCHAKU_SRC was extracted from")
    ap.add_argument("--lite", action="store_true", help="diffusers' nunchaku_lite layout instead of the single file")
    args = ap.parse_args()
    Packer, tinychat = load_nunchaku(args.nunchaku)
    dc = load_deepcompressor(args.deepcompressor) if args.deepcompressor else None
    with safe_open(args.natural, "pt") as f:
        schemes = json.loads(f.metadata()["lowbit.schemes"])
        t = {k: f.get_tensor(k) for k in f.keys()}

    def layer(m):  # natural tensors of one BFL layer -> codes, scales [N, K/64], bias, smooth, down [r, K], up
        c = unpack_codes(t[f"{m}.qweight"])
        s = t[f"{m}.wscales"].t().contiguous()
        bias = t.get(f"{m}.bias", torch.zeros(c.shape[0], dtype=torch.bfloat16))
        return c, s, bias, t[f"{m}.smooth_factor"], t[f"{m}.proj_down"].t().contiguous(), t[f"{m}.proj_up"]

    out = {}

    def emit_w4a4(key, c, s, bias, smooth, down, up, keep_bias=True, rename=None):
        got = w4a4(Packer, c, s, bias, smooth, down, up)
        if dc is not None:
            w = (c.float() * s.float().repeat_interleave(64, dim=1)).to(torch.bfloat16)
            ref = dc.convert_to_nunchaku_w4x4y16_linear_weight(
                w, s.reshape(c.shape[0], 1, -1, 1), bias=bias, smooth=smooth, lora=(down, up))
            for name, r in zip(("qweight", "wscales", "bias", "smooth"), ref[:4]):
                assert torch.equal(got[name], r), (key, name)
            assert torch.equal(got["lora_down"], ref[4][0]) and torch.equal(got["lora_up"], ref[4][1]), key
        if not keep_bias:
            del got["bias"]
        if rename:
            got = {rename[n]: v for n, v in got.items() if n in rename}
        out.update({f"{key}.{n}": v for n, v in got.items()})

    def emit_w4a16(key, m, splits):
        c = unpack_codes(t[f"{m}.weight"])
        s = t[f"{m}.weight_scale"].t().contiguous()
        bias = t[f"{m}.bias"]
        got = w4a16(tinychat, c, s, bias, splits)
        if dc is not None:
            w = (c.float() * s.float().repeat_interleave(64, dim=1)).to(torch.bfloat16)
            ref = dc.convert_to_nunchaku_w4x16_linear_weight(
                w, s.reshape(c.shape[0], 1, -1, 1), bias=bias.clone(), adanorm_splits=splits)
            for name, r in zip(("qweight", "wscales", "wzeros", "bias"), ref):  # splits == 1: plain tinychat
                assert torch.equal(got[name], r), (key, name)
        # Nunchaku's runtime holds ceil(K/64) group rows (src/Linear.cpp GEMV_AWQ, AWQW4A16Linear):
        # TinyChat's zero padding rows are not part of the file it loads (none when K/64 is a
        # multiple of 16, as FLUX's 48).
        groups = c.shape[1] // 64
        got["wscales"], got["wzeros"] = got["wscales"][:groups], got["wzeros"][:groups]
        out.update({f"{key}.{n}": v for n, v in got.items()})

    double = {"img_attn.qkv": "qkv_proj", "txt_attn.qkv": "qkv_proj_context", "img_attn.proj": "out_proj",
              "txt_attn.proj": "out_proj_context", "img_mlp.0": "mlp_fc1", "img_mlp.2": "mlp_fc2",
              "txt_mlp.0": "mlp_context_fc1", "txt_mlp.2": "mlp_context_fc2"}
    def emit_lite(m, scheme):  # one BFL layer -> its diffusers module(s), nunchaku_lite names
        parts = m.split(".")
        block = {"double_blocks": "transformer_blocks", "single_blocks": "single_transformer_blocks"}[parts[0]]
        block, modules = f"{block}.{parts[1]}", LITE_MODULES.get(".".join(parts[2:]), ())
        if len(modules) == 1 and modules[0].endswith(".linear") and scheme == "int4:g64":
            emit_w4a16(f"{block}.{modules[0]}", m, 1)
        elif modules and scheme.startswith("svdq"):
            c, s, bias, smooth, down, up = layer(m)
            start = 0
            for i, module in enumerate(modules):  # rows: K each (q, k, v), the last module the rest
                end = c.shape[0] if i == len(modules) - 1 else start + c.shape[1]
                emit_w4a4(f"{block}.{module}", c[start:end], s[start:end], bias[start:end], smooth, down,
                          up[start:end], rename=LITE_NAMES)
                start = end

    for weight, scheme in sorted(schemes.items()):
        m = weight[: -len(".weight")]
        if args.lite:
            emit_lite(m, scheme)
            continue
        kind = scheme.split(":")[0]
        parts = m.split(".")
        if parts[0] == "double_blocks":
            block, local = f"transformer_blocks.{parts[1]}", ".".join(parts[2:])
            if local in ("img_mod.lin", "txt_mod.lin") and scheme == "int4:g64":
                emit_w4a16(f"{block}.{'norm1' if local == 'img_mod.lin' else 'norm1_context'}.linear", m, 6)
            elif local in double and kind.startswith("svdq"):
                name = double[local]
                emit_w4a4(f"{block}.{name}", *layer(m), keep_bias=not name.endswith("fc2"))
        elif parts[0] == "single_blocks":
            block, local = f"single_transformer_blocks.{parts[1]}", ".".join(parts[2:])
            if local == "modulation.lin" and scheme == "int4:g64":
                emit_w4a16(f"{block}.norm.linear", m, 3)
            elif local == "linear1" and kind.startswith("svdq"):
                c, s, bias, smooth, down, up = layer(m)
                h3 = 3 * t[f"single_blocks.{parts[1]}.linear2.qweight"].shape[0]
                emit_w4a4(f"{block}.qkv_proj", c[:h3], s[:h3], bias[:h3], smooth, down, up[:h3])
                emit_w4a4(f"{block}.mlp_fc1", c[h3:], s[h3:], bias[h3:], smooth, down, up[h3:])
            elif local == "linear2" and kind.startswith("svdq"):
                c, s, bias, smooth, down, up = layer(m)
                h = c.shape[0]
                emit_w4a4(f"{block}.out_proj", c[:, :h], s[:, : h // 64], torch.zeros_like(bias), smooth[:h],
                          down[:, :h], up)
                emit_w4a4(f"{block}.mlp_fc2", c[:, h:], s[:, h // 64:], bias, smooth[h:], down[:, h:], up,
                          keep_bias=False)

    try:
        if args.commit:
            raise OSError
        commit = subprocess.run(["git", "-C", str(args.nunchaku), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = args.commit or "unknown; " + (args.nunchaku / "nunchaku/__version__.py").read_text().strip()
    digests = {}
    for key, v in sorted(out.items()):
        raw = v.contiguous().view(torch.uint8).numpy().tobytes()  # little-endian host
        digests[key] = {"dtype": DTYPES[v.dtype], "shape": list(v.shape), "sha256": hashlib.sha256(raw).hexdigest()}
    doc = {"nunchaku_commit": commit, "layout": "nunchaku_lite" if args.lite else "nunchaku", "source_sha256": hashlib.sha256(args.natural.read_bytes()).hexdigest(),
           "tensors": digests}
    args.out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"{len(digests)} tensors -> {args.out}")


if __name__ == "__main__":
    main()
