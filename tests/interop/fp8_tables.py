"""Prints every FP8 code decoded by ml_dtypes, as float32 bit patterns (JSON)."""

import json

import ml_dtypes
import numpy as np

codes = np.arange(256, dtype=np.uint8)
print(json.dumps({
    name: codes.view(getattr(ml_dtypes, name)).astype(np.float32).view(np.uint32).tolist()
    for name in ["float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu"]
}))
