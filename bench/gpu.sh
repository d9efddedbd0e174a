#!/usr/bin/env bash
# One prepared GPU session (issue 17): every CUDA test (`pytest -m gpu`) and GPU benchmark, in under 8 minutes,
# then a summary (device, test counts, the benchmark records). Run from anywhere:
#     bench/gpu.sh                     # uses .venv/bin/python (make setup); PY=/path/to/python bench/gpu.sh
# Exits 2 at once, saying so, where CUDA is unavailable; otherwise 0 only if every stage passed.
# Time limits per stage (timeout -s INT lets pytest write its report): tests 200 s, benchmarks 240 s.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=.benchmarks/gpu
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "bench/gpu.sh: CUDA is not available to $PY (torch.cuda.is_available() is False); run it on a GPU machine" >&2
    exit 2
fi
mkdir -p "$OUT"
rm -f "$OUT"/*.xml
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
start=$(date +%s)
"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'device: {p.name}, {p.total_memory / 2**30:.0f} GiB,',
          f'{torch.cuda.device_count()} visible, torch {torch.__version__}, CUDA {torch.version.cuda}')"

timeout -s INT 200 "$PY" -m pytest tests -m gpu -q -rs -p no:cacheprovider --junitxml="$OUT/tests.xml"
tests_rc=$?
timeout -s INT 240 "$PY" -m pytest bench/test_vision_gpu.py bench/test_p2pft_gpu.py bench/test_fedavg_loop.py -m gpu \
    -q -s -rs -p no:cacheprovider \
    --junitxml="$OUT/bench.xml"
bench_rc=$?

echo
echo "=== bench/gpu.sh summary ($(( $(date +%s) - start )) s) ==="
"$PY" - "$OUT" "$tests_rc" "$bench_rc" <<'PYEOF'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, codes = Path(sys.argv[1]), {"CUDA tests": int(sys.argv[2]), "GPU benchmarks": int(sys.argv[3])}
for (stage, rc), xml in zip(codes.items(), ("tests.xml", "bench.xml")):
    path = out / xml
    if not path.exists():
        print(f"{stage}: no report (exit {rc}{', stopped by its time limit' if rc in (124, 130) else ''})")
        continue
    suite = ET.parse(path).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    n, f, e, s = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    print(f"{stage}: {n - f - e - s} passed, {f} failed, {e} errors, {s} skipped, exit {rc}")
for rec in sorted(out.parent.glob("*gpu*.json")) + sorted(out.parent.glob("ratio-*cuda*.json")):
    print(f"{rec.name}: {json.dumps(json.loads(rec.read_text()), sort_keys=True)[:400]}")
PYEOF
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
