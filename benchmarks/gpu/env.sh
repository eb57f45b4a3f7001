# Sourced by the scripts in this folder on a lent GPU machine: a venv at /tmp/v with what .whl/ carries
# (see benchmarks/README.md, "GPU run"); $OUT exists afterwards and gpu.txt names the machine.
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
