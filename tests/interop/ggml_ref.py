"""ggml's own C quantizers, built from a pinned source and called through ctypes: the reference
that lowbit's ggml block types must match byte for byte.

Usage:
  python ggml_ref.py build
      Fetch llama-cpp-python's sdist with pip (pinned by version and sha256), extract ggml's quantization sources
      and compile them with tests/interop/ggml_shim.c into target/ggml-ref/libggml-quants.so.
      Cached: nothing happens when the library exists and was built from the same sdist, shim
      and flags. Prints the library's path.
  python ggml_ref.py quantize TYPE N_PER_ROW IN.f32 OUT.bin
      Quantize raw little-endian f32 rows of N_PER_ROW values as ggml_quantize_chunk does
      without an importance matrix.
  python ggml_ref.py dequantize TYPE IN.bin OUT.f32
      Decode packed blocks with ggml's dequantize_row_*.
  python ggml_ref.py bench TYPE ROWS N_PER_ROW THREADS REPEATS [IN.f32]
      Time ggml's quantizer on a ROWS x N_PER_ROW matrix (read from IN.f32, or N(0, 1/N_PER_ROW)
      from numpy when absent) with THREADS threads; prints Mparam/s, best of REPEATS.

TYPE is a ggml type name: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K TQ1_0
TQ2_0. Only the standard library is needed, except for bench without an input file.

Nothing from ggml is committed: the download, the extracted sources and the library all live
under target/ggml-ref/.
"""

import ctypes
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "target" / "ggml-ref"
LIB = OUT_DIR / "libggml-quants.so"
STAMP = OUT_DIR / "libggml-quants.stamp.json"
SHIM = Path(__file__).resolve().parent / "ggml_shim.c"

# llama-cpp-python vendors llama.cpp, and with it ggml, in its sdist: a pinned, checksummed
# source of ggml that the package index keeps forever. pip fetches it by name and version.
# `--no-binary llama-cpp-python` (rather than `:all:`) asks for this one package's sdist while
# letting pip take its build requirements as wheels: pip prepares the sdist's metadata, and with
# `:all:` it would first compile cmake from source to do so, which takes many minutes.
SDIST_PACKAGE = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SDIST_PREFIX = "llama_cpp_python-0.3.36/vendor/llama.cpp/"

# -O3 without -march: baseline x86-64, so no F16C and no AVX paths in ggml's headers; ggml's
# portable scalar code is what gets compiled. (Where ggml converts an infinite or NaN float to an
# integer, which C leaves undefined, the bytes are x86-64's; an aarch64 build would differ.)
# -ffp-contract=off: the compiler may not fuse a*b+c into one FMA instruction. Fusing skips a
# rounding, which changes results; ggml's reference semantics are separate multiply and add, and
# lowbit follows them, so the reference library must not fuse either.
# -DNDEBUG: as ggml's release builds (CMake's Release type, the llama.cpp and llama-cpp-python
# binaries) compile it. Without it, assert() in ggml's nearest_int aborts on blocks whose scaled
# values pass 2^22 (subnormal inputs, for one), where release builds go on deterministically.
# -Wl,--no-undefined: a symbol of ggml.c that the shim lacks fails here, not when loading.
CFLAGS = ["-O3", "-DNDEBUG", "-std=gnu11", "-fPIC", "-shared", "-ffp-contract=off",
          "-Wl,--no-undefined"]

# ggml type: (id in enum ggml_type, elements per block). Byte sizes come from the library itself
# (ggml_type_size, i.e. ggml's block structs).
TYPES = {
    "F32": (0, 1),
    "F16": (1, 1),
    "BF16": (30, 1),
    "Q4_0": (2, 32),
    "Q4_1": (3, 32),
    "Q5_0": (6, 32),
    "Q5_1": (7, 32),
    "Q8_0": (8, 32),
    "Q2_K": (10, 256),
    "Q3_K": (11, 256),
    "Q4_K": (12, 256),
    "Q5_K": (13, 256),
    "Q6_K": (14, 256),
    "TQ1_0": (34, 256),
    "TQ2_0": (35, 256),
}

# The dense types' row conversions in ggml_shim.c, named as ggml.c names them.
SHIM_NAMES = {"F16": "fp16", "BF16": "bf16"}


def log(msg: str) -> None:
    print(f"ggml_ref: {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- build -------------------------------------------------------------------------------------


def download_sdist() -> Path:
    """The verified sdist under target/ggml-ref/, fetched with pip when missing or damaged."""
    path = OUT_DIR / SDIST_NAME
    if path.exists() and sha256_file(path) == SDIST_SHA256:
        return path
    staging = OUT_DIR / "download"
    staging.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
           "--no-deps", "--no-binary", SDIST_PACKAGE, "--dest", str(staging),
           f"{SDIST_PACKAGE}=={SDIST_VERSION}"]
    last_error = None
    for attempt in range(1, 4):
        log(f"pip download {SDIST_PACKAGE}=={SDIST_VERSION} (attempt {attempt})")
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if run.returncode == 0 and (staging / SDIST_NAME).exists():
            break
        last_error = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
        time.sleep(2 * attempt)
    else:
        sys.exit(f"ggml_ref: pip could not download {SDIST_PACKAGE}=={SDIST_VERSION}: {last_error[0]}")
    part = staging / SDIST_NAME
    got = sha256_file(part)
    if got != SDIST_SHA256:
        part.unlink()
        sys.exit(f"ggml_ref: {SDIST_NAME} has sha256 {got}, expected {SDIST_SHA256}")
    part.replace(path)
    return path


def wanted(rel: str) -> bool:
    """Whether a path under vendor/llama.cpp/ is needed to compile ggml-quants.c."""
    if rel == "LICENSE":  # ggml's MIT licence travels with its sources
        return True
    parent, _, name = rel.rpartition("/")
    if parent == "ggml/include":
        return name.endswith(".h")
    if parent == "ggml/src":
        return name.endswith(".h") or name == "ggml-quants.c"
    if parent == "ggml/src/ggml-cpu":
        return name.endswith(".h")
    return False


def extract(sdist: Path, dest: Path) -> Path:
    """Writes the needed members of the sdist under dest and returns dest/ggml.

    Members are copied by hand (no tarfile.extractall), so no path in the archive can point
    outside dest."""
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            if not member.isfile() or not member.name.startswith(SDIST_PREFIX):
                continue
            rel = member.name[len(SDIST_PREFIX):]
            if ".." in rel.split("/") or not wanted(rel):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    ggml = dest / "ggml"
    if not (ggml / "src" / "ggml-quants.c").exists():
        sys.exit(f"ggml_ref: {SDIST_NAME} has no ggml/src/ggml-quants.c under {SDIST_PREFIX}")
    return ggml


def build_key(cc: str) -> dict:
    """Everything the library depends on; a change in any of it rebuilds."""
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        sys.exit(f"ggml_ref: no C compiler `{cc}` (install gcc, or set CC)")
    return {
        "sdist_sha256": SDIST_SHA256,
        "shim_sha256": sha256_file(SHIM),
        "cc": cc,
        "cc_version": version.stdout.splitlines()[0] if version.stdout else "",
        "cflags": CFLAGS,
    }


def build() -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    cc = os.environ.get("CC", "gcc")
    # One builder at a time (tests and benchmarks may start together); the others wait here and
    # then find the library built.
    with open(OUT_DIR / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        key = build_key(cc)
        if LIB.exists() and STAMP.exists() and json.loads(STAMP.read_text()) == key:
            return LIB
        sdist = download_sdist()
        src = OUT_DIR / f"src-{SDIST_SHA256[:12]}"
        ggml = extract(sdist, src)
        tmp = LIB.with_suffix(".so.tmp")
        cmd = [cc, *CFLAGS, f"-I{ggml}/include", f"-I{ggml}/src",
               str(ggml / "src" / "ggml-quants.c"), str(SHIM), "-lm", "-o", str(tmp)]
        log("$ " + " ".join(cmd))
        try:
            subprocess.run(cmd, check=True)
        except FileNotFoundError:
            sys.exit(f"ggml_ref: no C compiler `{cc}` (install gcc, or set CC)")
        except subprocess.CalledProcessError as e:
            sys.exit(f"ggml_ref: compiling ggml-quants.c failed ({e.returncode})")
        tmp.replace(LIB)
        STAMP.write_text(json.dumps(key, indent=1) + "\n")
        return LIB


# --- calling the library -----------------------------------------------------------------------


def load() -> ctypes.CDLL:
    if not LIB.exists():
        sys.exit(f"ggml_ref: {LIB} is missing; run `python {__file__} build` first")
    lib = ctypes.CDLL(str(LIB))
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_type_size.restype = ctypes.c_size_t
    lib.ggml_type_size.argtypes = [ctypes.c_int]
    return lib


def type_info(name: str) -> tuple[int, int]:
    if name not in TYPES:
        sys.exit(f"ggml_ref: unknown type {name}; known: {' '.join(TYPES)}")
    return TYPES[name]


def quantizer(lib: ctypes.CDLL, name: str):
    """f(src, dst, nrow, n_per_row): ggml_quantize_chunk's work for one type, without imatrix.

    Block types call ggml's quantize_<type>(src, dst, nrow, n_per_row, NULL), as
    ggml_quantize_chunk does; with no importance matrix these run quantize_row_<type>_ref.
    F16 and BF16 use ggml.c's row conversions as repeated in the shim; F32 is a copy."""
    if name == "F32":
        return lambda src, dst, nrow, n_per_row: ctypes.memmove(dst, src, nrow * n_per_row * 4)
    if name in ("F16", "BF16"):
        f = getattr(lib, f"lowbit_ref_fp32_to_{SHIM_NAMES[name]}_row")
        f.restype = None
        f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        return lambda src, dst, nrow, n_per_row: f(src, dst, nrow * n_per_row)
    # ggml's function names keep the K of K-quants upper case: quantize_q4_K, quantize_tq1_0.
    f = getattr(lib, "quantize_" + name.lower().replace("_k", "_K"))
    f.restype = ctypes.c_size_t
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lambda src, dst, nrow, n_per_row: f(src, dst, nrow, n_per_row, None)


def dequantizer(lib: ctypes.CDLL, name: str):
    """f(blocks, out, k): ggml's dequantize_row_<type>, or ggml.c's row conversion for F16/BF16."""
    if name == "F32":
        return lambda src, dst, k: ctypes.memmove(dst, src, k * 4)
    if name in ("F16", "BF16"):
        f = getattr(lib, f"lowbit_ref_{SHIM_NAMES[name]}_to_fp32_row")
    else:
        f = getattr(lib, "dequantize_row_" + name.lower().replace("_k", "_K"))
    f.restype = None
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return f


def row_bytes(lib: ctypes.CDLL, name: str, n_per_row: int) -> int:
    type_id, block = type_info(name)
    if n_per_row <= 0 or n_per_row % block:
        sys.exit(f"ggml_ref: {name} rows must be a positive multiple of {block}, not {n_per_row}")
    return lib.ggml_row_size(type_id, n_per_row)


def quantize(name: str, n_per_row: int, src_path: str, dst_path: str) -> None:
    lib = load()
    data = Path(src_path).read_bytes()
    if len(data) % (4 * n_per_row):
        sys.exit(f"ggml_ref: {src_path}: {len(data)} bytes are not whole rows of {n_per_row} f32")
    nrow = len(data) // (4 * n_per_row)
    src = ctypes.create_string_buffer(data, len(data))
    dst = ctypes.create_string_buffer(nrow * row_bytes(lib, name, n_per_row))
    quantizer(lib, name)(src, dst, nrow, n_per_row)
    Path(dst_path).write_bytes(dst.raw)


def dequantize(name: str, src_path: str, dst_path: str) -> None:
    lib = load()
    type_id, block = type_info(name)
    data = Path(src_path).read_bytes()
    size = lib.ggml_type_size(type_id)
    if len(data) % size:
        sys.exit(f"ggml_ref: {src_path}: {len(data)} bytes are not whole {name} blocks of {size}")
    k = len(data) // size * block
    src = ctypes.create_string_buffer(data, len(data))
    dst = ctypes.create_string_buffer(4 * k)
    dequantizer(lib, name)(src, dst, k)
    Path(dst_path).write_bytes(dst.raw)


# --- bench -------------------------------------------------------------------------------------


def bench(name: str, rows: int, n_per_row: int, threads: int, repeats: int, src_path=None) -> None:
    lib = load()
    if src_path is not None:
        data = Path(src_path).read_bytes()
        if len(data) != 4 * rows * n_per_row:
            sys.exit(f"ggml_ref: {src_path} holds {len(data)} bytes, not {rows}x{n_per_row} f32")
    else:
        import numpy as np  # only here: the other commands need nothing outside the stdlib

        rng = np.random.default_rng(0)
        x = rng.standard_normal((rows, n_per_row), dtype=np.float32) / np.float32(n_per_row**0.5)
        data = x.tobytes()
    src = ctypes.create_string_buffer(data, len(data))
    rb = row_bytes(lib, name, n_per_row)
    dst = ctypes.create_string_buffer(rows * rb)
    f = quantizer(lib, name)
    base_src, base_dst = ctypes.addressof(src), ctypes.addressof(dst)

    # Thread t quantizes rows [lo, hi): contiguous slices, like ggml's own row chunks. ctypes
    # releases the GIL for the length of each C call, so the threads really run in parallel.
    bounds = [rows * t // threads for t in range(threads + 1)]

    def work(lo: int, hi: int) -> None:
        if hi > lo:
            f(base_src + lo * n_per_row * 4, base_dst + lo * rb, hi - lo, n_per_row)

    best = float("inf")
    for _ in range(repeats):
        pool = [threading.Thread(target=work, args=(bounds[t], bounds[t + 1])) for t in range(threads)]
        start = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        best = min(best, time.perf_counter() - start)
    mparams = rows * n_per_row / best / 1e6
    print(f"{mparams:.3f}")
    log(f"{name}: {rows}x{n_per_row}, {threads} threads, best of {repeats}: "
        f"{best * 1e3:.1f} ms, {mparams:.1f} Mparam/s")


def main(argv: list[str]) -> None:
    match argv:
        case ["build"]:
            print(build())
        case ["quantize", name, n_per_row, src, dst]:
            quantize(name, int(n_per_row), src, dst)
        case ["dequantize", name, src, dst]:
            dequantize(name, src, dst)
        case ["bench", name, rows, n_per_row, threads, repeats, *rest] if len(rest) <= 1:
            bench(name, int(rows), int(n_per_row), int(threads), int(repeats), *rest)
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
