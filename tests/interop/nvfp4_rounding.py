"""Rounds F32 values (a raw little-endian file) to E2M1 and to E4M3 with ml_dtypes' own casts and
prints the codes in hex (JSON), for tests/it/nvfp4.rs.

- "e2m1": x.astype(ml_dtypes.float4_e2m1fn), one code per byte (bit 3 the sign); ml_dtypes
  rounds to nearest even and saturates at +-6 (the format has no infinity or NaN).
- "e4m3": clip(x, -448, 448).astype(ml_dtypes.float8_e4m3fn): the clip is the saturation
  lowbit's encoder applies (ml_dtypes' own cast turns overflow into NaN).

Usage: python nvfp4_rounding.py IN.f32
"""

import json
import sys

import ml_dtypes
import numpy as np

x = np.fromfile(sys.argv[1], dtype="<f4")
if not np.isfinite(x).all():
    raise SystemExit("inputs must be finite")
e2m1 = x.astype(ml_dtypes.float4_e2m1fn).view(np.uint8)
e4m3 = np.clip(x, -448.0, 448.0).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
print(json.dumps({"count": int(x.size), "e2m1": e2m1.tobytes().hex(), "e4m3": e4m3.tobytes().hex()}))
