#!/usr/bin/env bash
# bench_wrapper.py on a lent GPU machine (no registry there): everything it needs travels in .whl/.
# Prepare here (see benchmarks/README.md, "GPU run"): .whl/ holds the cp312 wheels of numpy<2,
# fastjsonschema, pydantic (+core, annotated-types, typing-inspection), protobuf 4.25, python-rapidjson,
# libpython3.12.so.1.0.xz (a fallback when the image has no shared libpython), tri.tar.xz (tritonserver, its Python backend, the 3.12 stub and libraries from nvidia-pytriton 0.7.0)
# and tritonclient-pure.tgz (tritonclient's Python packages only).
# Then: run with carry [".whl"]; the reports land in $OUT.
set -uo pipefail
export PYTHONPATH=$PWD
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -V; nproc
# A venv whose own numpy 1.26 shadows the image's numpy 2 (the 2.51 stub needs numpy < 2); the image's
# python3 is itself a venv, so its packages come in through a .pth file, after the venv's own.
HOST_SP=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
python3 -m venv --without-pip /tmp/v || exit 1
SP=$(/tmp/v/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SP" .whl/*.whl || exit 1
echo "$HOST_SP" > "$SP/zz_host_packages.pth"
tar -xJf .whl/tri.tar.xz -C "$SP" && touch "$SP/pytriton/__init__.py"
tar -xzf .whl/tritonclient-pure.tgz -C "$SP"
/tmp/v/bin/python -c "import numpy, pydantic, tritonclient.grpc; print('numpy', numpy.__version__)" || exit 1
# The stub links libpython3.12.so.1.0: use the image's own when it has one, else the carried one
# (another 3.12 patch release: enough for this benchmark's plugins, which use no multiprocessing).
if ! /tmp/v/bin/python -c "import ruthgen.embedded.distribution as d; print('libpython in', d.libpython_dir())" 2>/dev/null; then
  mkdir -p /tmp/pylib && xz -dc .whl/libpython3.12.so.1.0.xz > /tmp/pylib/libpython3.12.so.1.0
  export LD_LIBRARY_PATH=/tmp/pylib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  echo "using the carried libpython3.12.so.1.0" | tee -a "$OUT/gpu.txt"
fi
for kind in gpu cpu; do
  timeout 240 /tmp/v/bin/python benchmarks/bench_wrapper.py --kind "$kind" --duration 4 --warmup 1 \
    --rounds 2 --json "$OUT/bench_wrapper_$kind.json" 2>&1 | tee "$OUT/bench_wrapper_$kind.txt"
done
