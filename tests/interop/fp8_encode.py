"""Prints ml_dtypes' FP8 codes of every BF16 bit pattern, clipped to the format's largest finite
value first (the saturating rule lowbit follows), as hex strings per format (JSON)."""

import json

import ml_dtypes
import numpy as np

bits = np.arange(65536, dtype=np.uint32) << 16
values = bits.view(np.float32)
out = {}
for name, top in [("float8_e4m3fn", 448.0), ("float8_e5m2", 57344.0)]:
    finite = np.isfinite(values)
    clipped = np.where(finite, np.clip(values, -top, top), 0.0).astype(np.float32)
    codes = clipped.astype(getattr(ml_dtypes, name)).view(np.uint8)
    out[name] = codes.tobytes().hex()
print(json.dumps(out))
