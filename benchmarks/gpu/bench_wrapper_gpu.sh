#!/usr/bin/env bash
# bench_wrapper.py on a lent GPU machine (no registry there): everything it needs travels in .whl/.
# Prepare here (see benchmarks/README.md, "GPU run"): .whl/ holds the cp312 wheels of numpy<2,
# fastjsonschema, pydantic (+core, annotated-types, typing-inspection), protobuf 4.25, python-rapidjson,
# libpython3.12.so.1.0.xz (a fallback when the image has no shared libpython), tri.tar.xz (tritonserver, its Python backend, the 3.12 stub and libraries from nvidia-pytriton 0.7.0)
# and tritonclient-pure.tgz (tritonclient's Python packages only).
# Then: run with carry [".whl"]; the reports land in $OUT.
set -uo pipefail
source "$(dirname "$0")/env.sh" || exit 1
for kind in gpu cpu; do
  timeout 240 /tmp/v/bin/python benchmarks/bench_wrapper.py --kind "$kind" --duration 4 --warmup 1 \
    --rounds 2 --json "$OUT/bench_wrapper_$kind.json" 2>&1 | tee "$OUT/bench_wrapper_$kind.txt"
done
