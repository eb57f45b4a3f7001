#!/usr/bin/env bash
# bench_sidecar.py on a lent GPU machine, where the sidecar, Triton and the clients do not share two
# cores. .whl/ holds what bench_wrapper_gpu.sh needs plus the sidecar's pure-Python wheels
# (pydantic-settings, python-dotenv, grpcio-health-checking, grpcio-reflection, fastapi, starlette,
# anyio, idna, annotated-doc, opentelemetry-api, importlib-metadata, zipp, uvicorn, click, h11,
# prometheus-client, typing-extensions, sniffio; see benchmarks/README.md, "GPU run"); grpcio,
# Pillow, Jinja2 and PyYAML come from the image. Run with carry [".whl"]; the reports land in $OUT.
set -uo pipefail
source "$(dirname "$0")/env.sh" || exit 1
/tmp/v/bin/python -c "import grpc, sidecar.main; print('grpcio', grpc.__version__)" || exit 1
timeout 400 /tmp/v/bin/python benchmarks/bench_sidecar.py --models trivial bare --duration 4 --warmup 1 \
  --rounds 2 --json "$OUT/bench_sidecar.json" 2>&1 | tee "$OUT/bench_sidecar.txt"
