#!/usr/bin/env bash
# The project's lock, one constraints file per supported Python: constraints/py3.X.txt
# (constraints.txt is a link to constraints/py3.11.txt, the development default). Every file is
# resolved from the same input, pyproject.toml with its dev extra plus requirements-plugins.txt, for
# Linux x86-64 with glibc >= 2.35 (nvidia-pytriton 0.7.0 has no wheel for older).
#
#   scripts/lock.sh              keep every pin that still resolves; add, drop or move only what must
#   scripts/lock.sh --upgrade    take the newest versions the input allows
#
# Only wheels are accepted, so that a fresh machine builds nothing, with one exception:
# geventhttpclient, which tritonclient 2.51 caps at 2.0.2, has no wheel for 3.12 (pip builds it
# there, with the C compiler and the Python headers). constraints/overrides.txt leaves out what
# the plugins' packages declare but never import. Python 3.13 is left out: numpy < 2, which
# tritonclient 2.51 and Triton 2.51's Python backend need, has no build for it (see the Makefile).
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
VERSIONS=(3.10 3.11 3.12)
PLATFORM=x86_64-manylinux_2_35

tool="${XDG_CACHE_HOME:-$HOME/.cache}/ruth-ai-runtime/uv-$UV_VERSION"
if [ ! -x "$tool/bin/uv" ]; then
    rm -rf "$tool.tmp"
    python3 -m venv "$tool.tmp"
    "$tool.tmp/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
    rm -rf "$tool"
    mv "$tool.tmp" "$tool"
fi

for version in "${VERSIONS[@]}"; do
    out="constraints/py$version.txt"
    echo "Python $version -> $out"
    "$tool/bin/uv" pip compile --quiet --no-config \
        pyproject.toml requirements-plugins.txt --extra dev \
        --override constraints/overrides.txt \
        --python-version "$version" --python-platform "$PLATFORM" \
        --only-binary :all: --no-binary geventhttpclient \
        --annotation-style line \
        --custom-compile-command "scripts/lock.sh  # Python $version, Linux x86-64" \
        --output-file "$out" "$@"
done
