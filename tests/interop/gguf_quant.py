"""The `gguf` package's numpy quantizers and dequantizers over raw files: a second reference for
lowbit's ggml block types, next to ggml's C code (ggml_ref.py).

Usage:
  python gguf_quant.py quantize TYPE N_PER_ROW IN.f32 OUT.bin
      gguf.quants.quantize on the rows of N_PER_ROW little-endian f32 values in IN.f32.
  python gguf_quant.py dequantize TYPE IN.bin OUT.f32
      gguf.quants.dequantize of packed blocks, written as little-endian f32.
  python gguf_quant.py bench TYPE ROWS N_PER_ROW REPEATS IN.f32
      Time gguf.quants.quantize on the ROWS x N_PER_ROW matrix in IN.f32 (numpy, one thread);
      prints Mparam/s, best of REPEATS.

The package quantizes F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 TQ1_0 TQ2_0 and dequantizes every
ggml type lowbit writes; anything else exits with an error saying so.
"""

import sys
import time
from pathlib import Path

import gguf
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType


def qtype(name: str) -> GGMLQuantizationType:
    try:
        return GGMLQuantizationType[name]
    except KeyError:
        sys.exit(f"gguf_quant: unknown type {name}")


def read_rows(path: str, n_per_row: int) -> np.ndarray:
    x = np.fromfile(path, dtype="<f4")
    if x.size % n_per_row:
        sys.exit(f"gguf_quant: {path}: {x.size} values are not whole rows of {n_per_row}")
    return x.reshape(-1, n_per_row)


def quantize_rows(x: np.ndarray, t: GGMLQuantizationType) -> bytes:
    try:
        q = gguf.quants.quantize(x, t)
    except NotImplementedError as e:
        sys.exit(f"gguf_quant: gguf {gguf.__name__} cannot quantize {t.name}: {e}")
    return np.ascontiguousarray(q).tobytes()


def quantize(name: str, n_per_row: int, src: str, dst: str) -> None:
    Path(dst).write_bytes(quantize_rows(read_rows(src, n_per_row), qtype(name)))


def dequantize(name: str, src: str, dst: str) -> None:
    t = qtype(name)
    block, type_size = GGML_QUANT_SIZES[t]
    raw = np.fromfile(src, dtype=np.uint8)
    if raw.size % type_size:
        sys.exit(f"gguf_quant: {src}: {raw.size} bytes are not whole {name} blocks")
    # One row of all the blocks; the package works on the last axis in bytes.
    try:
        x = gguf.quants.dequantize(raw.reshape(1, -1), t)
    except NotImplementedError as e:
        sys.exit(f"gguf_quant: gguf cannot dequantize {name}: {e}")
    assert x.size == raw.size // type_size * block
    Path(dst).write_bytes(np.ascontiguousarray(x, dtype="<f4").tobytes())


def bench(name: str, rows: int, n_per_row: int, repeats: int, src: str) -> None:
    t = qtype(name)
    x = read_rows(src, n_per_row)
    if x.shape[0] != rows:
        sys.exit(f"gguf_quant: {src} has {x.shape[0]} rows, not {rows}")
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        quantize_rows(x, t)
        best = min(best, time.perf_counter() - start)
    mparams = x.size / best / 1e6
    print(f"{mparams:.3f}")
    print(f"gguf_quant: {name}: {rows}x{n_per_row}, best of {repeats}: {best * 1e3:.1f} ms, "
          f"{mparams:.1f} Mparam/s", file=sys.stderr)


def main(argv: list[str]) -> None:
    match argv:
        case ["quantize", name, n_per_row, src, dst]:
            quantize(name, int(n_per_row), src, dst)
        case ["dequantize", name, src, dst]:
            dequantize(name, src, dst)
        case ["bench", name, rows, n_per_row, repeats, src]:
            bench(name, int(rows), int(n_per_row), int(repeats), src)
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
