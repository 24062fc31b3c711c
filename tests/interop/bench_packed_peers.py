"""The quantizers a user has today for lowbit's packed safetensors schemes, timed on one matrix:
the peers of `cargo xtask bench-packed`.

Usage:
  python bench_packed_peers.py IN.f32 ROWS COLS [REPEATS [all|numpy|bnb]]

IN.f32 holds ROWS x COLS little-endian f32 values (the xtask writes BF16-representable ones: a
BF16 checkpoint's weights as lowbit decodes them), or raw little-endian BF16 (told apart by the
file's size). Every peer runs REPEATS times (default 3) on that matrix; the
best time counts. The last argument picks the numpy/ml_dtypes peers, the bitsandbytes ones, or
all (default). Prints one JSON object on stdout:

  {"python": "3.x", "peers": {NAME: {"mparams": M, "single_thread": bool, "what": "..."}},
   "unavailable": {NAME: "why"}}

Peers whose package is missing from this interpreter are listed under "unavailable" (the xtask
runs the script once with the interop venv, which has ml_dtypes, and once with the torch venv,
which has torch and bitsandbytes). Threads are pinned to one before numpy or torch load
(OMP/OpenBLAS/MKL variables, `torch.set_num_threads(1)`); numpy's elementwise kernels are
single-threaded anyway. "single_thread" says whether the pinning took (torch reports its thread
count).

Peers:
  bnb_nf4, bnb_nf4_dq     bitsandbytes quantize_4bit(quant_type="nf4", blocksize=64) on CPU on
                          the BF16 tensor (as FLUX is loaded), compress_statistics False / True
  bnb_nf4_f32             the same on the f32 tensor
  mldtypes_fp8            np.clip(W, -448, 448).astype(ml_dtypes.float8_e4m3fn)
  mldtypes_fp8_tensor     per-tensor scale amax/448, W / scale, cast (ComfyUI-style)
  mldtypes_fp8_row        per-row scale amax/448, W / scale, cast (BFL fp8r-style)
  numpy_ternary           gamma = mean|W| per row, clip(round(W/gamma), -1, 1), 2-bit packing
  numpy_ternary_tensor    the same with one gamma for the whole tensor (BitNet)
  numpy_int4_g64          groups of 64: scale absmax/7, round, clip to -7..7, nibble packing
"""

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[var] = "1"

import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def best_of(repeats, fn):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def pack2(codes):
    """Four 2-bit codes per byte along the row, first in the low bits (lowbit's ternary)."""
    c = codes.reshape(codes.shape[0], -1, 4)
    return c[..., 0] | (c[..., 1] << 2) | (c[..., 2] << 4) | (c[..., 3] << 6)


def ternary_rows(w):
    gamma = np.maximum(np.abs(w).mean(axis=1, keepdims=True), 1e-5)
    q = np.clip(np.round(w / gamma), -1, 1).astype(np.int8)
    return pack2((q + 1).astype(np.uint8)), gamma.astype(np.float32)


def ternary_tensor(w):
    gamma = max(float(np.abs(w).mean()), 1e-5)
    q = np.clip(np.round(w / gamma), -1, 1).astype(np.int8)
    return pack2((q + 1).astype(np.uint8)), gamma


def int4_g64(w):
    g = w.reshape(w.shape[0], -1, 64)
    scale = np.abs(g).max(axis=2, keepdims=True) / 7.0
    safe = np.where(scale == 0, 1.0, scale)
    q = np.clip(np.round(g / safe), -7, 7).astype(np.int8).reshape(w.shape[0], -1)
    u = q.view(np.uint8) & 0x0F
    packed = u[:, 0::2] | (u[:, 1::2] << 4)
    return packed, scale.astype(np.float32)


def numpy_peers(w, repeats, peers, unavailable):
    peers["numpy_ternary"] = (
        best_of(repeats, lambda: ternary_rows(w)),
        True,
        "numpy absmean per row + 2-bit packing",
    )
    peers["numpy_ternary_tensor"] = (
        best_of(repeats, lambda: ternary_tensor(w)),
        True,
        "numpy absmean per tensor + 2-bit packing",
    )
    peers["numpy_int4_g64"] = (
        best_of(repeats, lambda: int4_g64(w)),
        True,
        "numpy int4 group 64 symmetric + nibble packing",
    )
    try:
        import ml_dtypes
    except ImportError as e:
        for name in ("mldtypes_fp8", "mldtypes_fp8_tensor", "mldtypes_fp8_row"):
            unavailable[name] = f"no ml_dtypes ({e})"
        return
    f8 = ml_dtypes.float8_e4m3fn

    def per_tensor():
        scale = np.float32(np.abs(w).max() / 448.0)
        return (w / scale).astype(f8), scale

    def per_row():
        scale = (np.abs(w).max(axis=1, keepdims=True) / np.float32(448.0)).astype(np.float32)
        return (w / np.where(scale == 0, 1, scale)).astype(f8), scale

    peers["mldtypes_fp8"] = (
        best_of(repeats, lambda: np.clip(w, -448, 448).astype(f8)),
        True,
        f"ml_dtypes {ml_dtypes.__version__} clip + astype(float8_e4m3fn)",
    )
    peers["mldtypes_fp8_tensor"] = (
        best_of(repeats, per_tensor),
        True,
        "numpy per-tensor amax/448 scale + ml_dtypes cast",
    )
    peers["mldtypes_fp8_row"] = (
        best_of(repeats, per_row),
        True,
        "numpy per-row amax/448 scale + ml_dtypes cast",
    )


def bnb_peers(w, repeats, peers, unavailable):
    names = ("bnb_nf4", "bnb_nf4_dq", "bnb_nf4_f32")
    try:
        import torch

        torch.set_num_threads(1)
        import bitsandbytes
        import bitsandbytes.functional as bnbf
    except ImportError as e:
        for name in names:
            unavailable[name] = f"no torch/bitsandbytes ({e})"
        return
    single = torch.get_num_threads() == 1
    t32 = torch.from_numpy(w)
    t16 = t32.to(torch.bfloat16)
    for name, tensor, dq in (
        ("bnb_nf4", t16, False),
        ("bnb_nf4_dq", t16, True),
        ("bnb_nf4_f32", t32, False),
    ):

        def run(tensor=tensor, dq=dq):
            bnbf.quantize_4bit(tensor, blocksize=64, compress_statistics=dq, quant_type="nf4")

        run()  # first call loads the kernels
        peers[name] = (
            best_of(repeats, run),
            single,
            f"bitsandbytes {bitsandbytes.__version__} quantize_4bit nf4 blocksize 64 "
            f"compress_statistics={dq}, CPU, {str(tensor.dtype).removeprefix('torch.')}, "
            f"torch {torch.__version__} threads={torch.get_num_threads()}",
        )


GROUPS = ("all", "numpy", "bnb")


def main():
    if len(sys.argv) not in (4, 5, 6) or (len(sys.argv) == 6 and sys.argv[5] not in GROUPS):
        sys.exit(__doc__)
    path, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    repeats = int(sys.argv[4]) if len(sys.argv) >= 5 else 3
    group = sys.argv[5] if len(sys.argv) == 6 else "all"
    size = os.path.getsize(path)
    if size == rows * cols * 4:
        w = np.fromfile(path, dtype="<f4")
    elif size == rows * cols * 2:  # raw BF16: the high half of an f32
        w = (np.fromfile(path, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        sys.exit(f"bench_packed_peers: {path} is {size} bytes, not {rows}x{cols} f32 or BF16")
    w = w.reshape(rows, cols)
    peers, unavailable = {}, {}
    if group in ("all", "numpy"):
        numpy_peers(w, repeats, peers, unavailable)
    if group in ("all", "bnb"):
        bnb_peers(w, repeats, peers, unavailable)
    n = rows * cols
    out = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "peers": {
            name: {"mparams": n / t / 1e6, "single_thread": single, "what": what}
            for name, (t, single, what) in peers.items()
        },
        "unavailable": unavailable,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
