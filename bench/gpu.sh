#!/usr/bin/env bash
# One prepared GPU session (issues 17, 27): every CUDA test (`pytest -m gpu`) and GPU benchmark, then AEDFL at scale
# (bench/profile_sim.py --memory: AEDFL at 100 and 1,000 devices, and AEDFL in the 100-device Table 1 setting with
# its evaluation), in under 10 minutes, then a summary (device, test counts, the benchmark records, a markdown row
# per scale run: device-steps/s, peak RSS and CUDA memory, for bench/RESULTS.md). Run from anywhere:
#     bench/gpu.sh                     # uses .venv/bin/python (make setup); PY=/path/to/python bench/gpu.sh
#     SCALE_ONLY=1 bench/gpu.sh        # only the scale stage
#     DEVICE=cpu SCALE_ONLY=1 SCALE_DEVICES=8 SCALE_UPDATES=1 TABLE1_UPDATES=1 bench/gpu.sh    # its CPU fallback
# The scale stage reads Fashion-MNIST's idx .gz files from DATA_DIR (default: Debian's
# /usr/share/datasets/fashion-mnist; a GPU machine without it needs a copy carried in a git-ignored folder, e.g.
# DATA_DIR=.benchmarks/fashion-mnist), or DATASET=npz:PATH; its records go to SCALE_JSON (default
# .benchmarks/gpu/scale.jsonl). Exits 2 at once, saying so, where DEVICE=cuda (the default) and CUDA is unavailable;
# otherwise 0 only if every stage passed. Time limits per stage (timeout -s INT lets pytest write its report): tests 200 s,
# benchmarks 240 s, each scale run 150 s.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=.benchmarks/gpu
DEVICE=${DEVICE:-cuda}
SCALE_ONLY=${SCALE_ONLY:-0}
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "bench/gpu.sh: CUDA is not available to $PY (torch.cuda.is_available() is False); run it on a GPU machine" >&2
    exit 2
fi
mkdir -p "$OUT"
SCALE_JSON=${SCALE_JSON:-$OUT/scale.jsonl}
rm -f "$OUT"/*.xml "$SCALE_JSON"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
start=$(date +%s)
tests_rc=0
bench_rc=0
if [ "$DEVICE" = cuda ]; then
    "$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'device: {p.name}, {p.total_memory / 2**30:.0f} GiB,',
              f'{torch.cuda.device_count()} visible, torch {torch.__version__}, CUDA {torch.version.cuda}')"
fi
if [ "$SCALE_ONLY" != 1 ]; then
    timeout -s INT 200 "$PY" -m pytest tests -m gpu -q -rs -p no:cacheprovider --junitxml="$OUT/tests.xml"
    tests_rc=$?
    timeout -s INT 240 "$PY" -m pytest bench/test_vision_gpu.py bench/test_p2pft_gpu.py bench/test_fedavg_loop.py -m gpu \
        -q -s -rs -p no:cacheprovider \
        --junitxml="$OUT/bench.xml"
    bench_rc=$?
fi

# AEDFL at scale (issue 27): one process per run, so each peak memory is its own
DATASET=${DATASET:-fashion-mnist}
DATA_DIR=${DATA_DIR:-/usr/share/datasets/fashion-mnist}
scale_rc=0
scale() {
    timeout -s INT 150 "$PY" bench/profile_sim.py --memory --device "$DEVICE" --dataset "$DATASET" \
        --data-dir "$DATA_DIR" --json "$SCALE_JSON" "$@" || scale_rc=1
}
for d in ${SCALE_DEVICES:-100 1000}; do
    scale --method aedfl --devices "$d" --updates "${SCALE_UPDATES:-5}"
done
scale --method aedfl --devices "${TABLE1_DEVICES:-100}" --updates "${TABLE1_UPDATES:-10}" --evaluate

echo
echo "=== bench/gpu.sh summary ($(( $(date +%s) - start )) s) ==="
"$PY" - "$OUT" "$tests_rc" "$bench_rc" "$SCALE_ONLY" "$SCALE_JSON" <<'PYEOF'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, codes = Path(sys.argv[1]), {"CUDA tests": int(sys.argv[2]), "GPU benchmarks": int(sys.argv[3])}
for (stage, rc), xml in zip(codes.items(), ("tests.xml", "bench.xml")):
    path = out / xml
    if sys.argv[4] == "1":
        break
    if not path.exists():
        print(f"{stage}: no report (exit {rc}{', stopped by its time limit' if rc in (124, 130) else ''})")
        continue
    suite = ET.parse(path).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    n, f, e, s = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    print(f"{stage}: {n - f - e - s} passed, {f} failed, {e} errors, {s} skipped, exit {rc}")
for rec in sorted(out.parent.glob("*gpu*.json")) + sorted(out.parent.glob("ratio-*cuda*.json")):
    print(f"{rec.name}: {json.dumps(json.loads(rec.read_text()), sort_keys=True)[:400]}")
scale = Path(sys.argv[5])
print("| device | method | devices | T | evaluations | device-steps/s | peak RSS (MB) | peak CUDA (MB) |")
for r in map(json.loads, scale.read_text().splitlines() if scale.exists() else []):
    print(f"| {r.get('gpu', r['device'])} | {r['method']} | {r['devices']} | {r['updates']} | {r['evaluations']} | "
          f"{r['device_steps_per_s']} | {r['peak_rss_mb']} | {r.get('peak_cuda_mb', '-')} |")
PYEOF
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$scale_rc" -eq 0 ]
