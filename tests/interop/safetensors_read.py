"""Prints, as JSON, the name, dtype and shape of every tensor the `safetensors` package sees.
Usage: python safetensors_read.py FILE
"""

import json
import sys

from safetensors import safe_open

with safe_open(sys.argv[1], framework="np") as f:
    print(json.dumps({k: {"dtype": f.get_slice(k).get_dtype(), "shape": f.get_slice(k).get_shape()} for k in f.keys()}))
