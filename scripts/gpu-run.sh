#!/usr/bin/env bash
# The GPU run: every layout's kernels against the CPU reference (`lowbit validate`), on odd
# shapes and on FLUX.1-dev shapes, the timings against cuBLAS BF16 (`--bench`) and the torch
# peers (`gpu_peers.py`), all in one call on the GPU machine.
#
# Here: `cargo xtask gpu-bundle` (builds target/gpu-bundle/ with this script as run.sh).
# There, from the repository root: `bash target/gpu-bundle/run.sh [quick|flux|full]`
#   quick: the bundled fixture and the odd shapes at 1, 7 and 64 tokens (about a minute and a half);
#   flux:  FLUX.1-dev shapes at 4608 tokens (and 7) with --reference and --bench, and the torch
#          peers;
#   full:  both (the default).
# Results go to $OUT (the device tool's folder) or $LOWBIT_GPU_DATA/out. Exit status 1 when any
# check failed. LOWBIT_FLUX_TARGETS="int4 svdq-w4a4" limits the FLUX.1-dev part to some layouts;
# LOWBIT_SKIP_PEERS=1 skips the torch peers.
set -uo pipefail
mode=${1:-full}
B=$(dirname "$0")
D=${LOWBIT_GPU_DATA:-/tmp/lowbit-gpu}
OUT=${OUT:-$D/out}
mkdir -p "$D" "$OUT"
export LOWBIT_KERNEL_CACHE=$D/kernel-cache
fail=0
log() { echo "== $*" | tee -a "$OUT/run.log"; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/device.txt"
"$B/lowbit" --version | tee -a "$OUT/device.txt"

TARGETS="int4 int4:g32 int4:g128 int4:asym ternary ternary:tensor bitnet nf4 nf4:dq fp8 fp8:e5m2
comfy:fp8 comfy:fp8:e5m2 bfl:fp8 svdq-w4a16 gguf:q8_0 gguf:q4_0 gguf:q4_k gguf:q6_k gguf:tq2_0"

# convert SRC TARGET OUTFILE [extra args]
convert() {
    local src=$1 t=$2 f=$3
    shift 3
    if ! "$B/lowbit" convert "$src" -o "$f" --to "$t" "$@" >>"$OUT/run.log" 2>&1; then
        log "convert $src --to $t FAILED"
        fail=1
        return 1
    fi
}

# validate FILE JSONFILE [args]: appends the JSON document, records failure.
validate() {
    local f=$1 json=$2
    shift 2
    if ! "$B/lowbit" validate "$f" --json "$@" >>"$json" 2>>"$OUT/run.log"; then
        log "validate $f $* FAILED"
        fail=1
    fi
}

t0=$(date +%s)
if [[ $mode != flux ]]; then
    "$B/xtask" gpu-data --out "$D" >>"$OUT/run.log" 2>&1 || { log "gpu-data FAILED"; fail=1; }
fi
[[ $mode == flux ]] || for src in fixtures/flux-tiny-bfl.safetensors "$D/odd.safetensors"; do
    base=$(basename "$src" .safetensors)
    for t in $TARGETS; do
        ext=safetensors
        [[ $t == gguf:* ]] && ext=gguf
        f="$D/$base-${t//:/_}.$ext"
        convert "$src" "$t" "$f" || continue
        for m in 1 7 64; do
            validate "$f" "$OUT/validate-quick.json" --tokens "$m" --reference "$src"
        done
    done
done
log "quick: $(($(date +%s) - t0)) s"

if [[ $mode != quick ]]; then
    t0=$(date +%s)
    "$B/xtask" flux-dev --out "$D" --blocks 1,1 >>"$OUT/run.log" 2>&1 || { log "flux-dev FAILED"; fail=1; }
    src="$D/flux1-dev.safetensors"
    layers="double_blocks.0.img_attn.qkv.weight,double_blocks.0.img_mlp.0.weight,double_blocks.0.img_mlp.2.weight,single_blocks.0.linear1.weight,single_blocks.0.linear2.weight"
    log "flux-dev data: $(($(date +%s) - t0)) s"
    for t in ${LOWBIT_FLUX_TARGETS:-$TARGETS svdq-w4a4}; do
        ext=safetensors
        [[ $t == gguf:* ]] && ext=gguf
        f="$D/flux-${t//:/_}.$ext"
        extra=()
        # SVDQuant with calibrated smoothing (W4A16 then rounds x / λ to BF16 in the kernel).
        [[ $t == svdq-* ]] && extra=(--stats "$D/flux1-dev-stats.safetensors")
        convert "$src" "$t" "$f" "${extra[@]}" || continue
        validate "$f" "$OUT/validate-flux.json" --tokens 4608 --layers "$layers" --reference "$src" --bench
        validate "$f" "$OUT/validate-quick.json" --tokens 7 --layers "$layers"
        rm -f "$f"
    done
    log "flux: $(($(date +%s) - t0)) s"
    if [[ -z ${LOWBIT_SKIP_PEERS:-} ]]; then
        PYTHONUNBUFFERED=1 python3 "$B/gpu_peers.py" --json "$OUT/peers.json" >>"$OUT/run.log" 2>&1 || { log "gpu_peers FAILED"; fail=1; }
    fi
fi

# A compact summary last (the device tool returns the end of the output).
python3 - "$OUT" <<'EOF'
import json, sys, os
out = sys.argv[1]
def docs(path):
    if not os.path.exists(path):
        return []
    text, dec, i, res = open(path).read(), json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return res
        d, i = dec.raw_decode(text, i)
        res.append(d)
worst = {}
bad = []
for name in ("validate-quick.json", "validate-flux.json"):
    for d in docs(os.path.join(out, name)):
        for c in d["checks"]:
            key = (c["storage"], c["kernel"])
            if c["status"] == "FAIL":
                bad.append((c["layer"], c["storage"], c["kernel"], c["shape"], c["rel"], c.get("note")))
            if c["rel"] is not None:
                w = worst.get(key)
                if w is None or c["rel"] > w[0]:
                    worst[key] = (c["rel"], c["tolerance"], c["shape"], c["status"])
print(f"{'storage':<16} {'kernel':<26} {'worst rel':>10} {'tol':>7}  at [M,N,K]")
for (s, k), (r, t, shp, st) in sorted(worst.items()):
    print(f"{s:<16} {k:<26} {r:>10.2e} {t:>7.0e}  {shp} {st}")
for b in bad:
    print("FAIL", *b)
for d in docs(os.path.join(out, "validate-flux.json")):
    for t in d["bench"]:
        print(f"{t['kernel']:<26} M={t['m']:<5} {t['n']}x{t['k']:<6} ours {t['ms']*1e3:8.1f} us  cuBLAS {t['cublas_bf16_ms']*1e3:8.1f} us  {t['speedup']:5.2f}x  {t['tflops']:6.1f} TFLOP/s  {t['weight_gbps']:6.0f} GB/s")
EOF
log "done, failures: $fail"
exit $fail
