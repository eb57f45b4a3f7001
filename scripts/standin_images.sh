#!/usr/bin/env bash
# Stand-in base images for docker/*.Dockerfile on a machine that cannot pull NVIDIA's or Docker
# Hub's images (no NGC access): both are made from Debian bookworm packages (debootstrap, then
# `docker import`), the Triton one adds the tritonserver of the `nvidia-pytriton` wheel pinned in
# constraints.txt (Triton 2.51.0, the release of NVIDIA's 24.10 image) in NVIDIA's layout.
#
#   scripts/standin_images.sh           build what is missing or out of date, then print the tags
#   scripts/standin_images.sh --force   rebuild both
#
#   ruth-standin/python:3.11-bookworm          for PYTHON_IMAGE (docker/sidecar.Dockerfile)
#   ruth-standin/tritonserver:2.51.0-bookworm  for TRITON_IMAGE (docker/triton.Dockerfile):
#       /opt/tritonserver/bin/tritonserver, /opt/tritonserver/lib (the wheel's nvidia_pytriton.libs,
#       on LD_LIBRARY_PATH), /opt/tritonserver/backends/python with the stub for Python 3.11,
#       python3 with pip and venv (pip may install into it, as in NVIDIA's image), curl.
#
# docker/docker-compose.standin.yml builds the project's images on them. They are CPU-only, and
# their Python is Debian's 3.11 where NVIDIA's 24.10 image has 3.10.
# Needs root (debootstrap), a running Docker engine, `debootstrap`, and pip for the wheel.
# Downloads are kept in ${RUTH_STANDIN_CACHE:-~/.cache/ruth-ai-runtime/standin}; an image whose
# label matches this script, the suite and the wheel's version is not built again.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PYTHON="${PYTHON:-python3}"
CACHE="${RUTH_STANDIN_CACHE:-$HOME/.cache/ruth-ai-runtime/standin}"
PYTHON_TAG=ruth-standin/python:3.11-bookworm
TRITON_VERSION="$(sed -n 's/^nvidia-pytriton==\([^ #]*\).*/\1/p' "$ROOT/constraints.txt")"
TRITON_TAG=ruth-standin/tritonserver:2.51.0-bookworm
LABEL=org.ruth-ai-runtime.standin.recipe
STUB_PYTHON=3.11
# Debian's packages of each image (minbase adds only what dpkg and apt need).
PYTHON_PACKAGES=python3,python3-venv,python-is-python3,libpython3.11,ca-certificates
TRITON_PACKAGES=python3,python3-venv,python3-pip,libpython3.11,ca-certificates,curl
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

die() { echo "standin_images: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || die "no Docker engine answers (start dockerd)"
[ -n "$TRITON_VERSION" ] || die "nvidia-pytriton is not pinned in constraints.txt"

recipe="$( { cat "${BASH_SOURCE[0]}"; echo "$SUITE nvidia-pytriton==$TRITON_VERSION"; } | sha256sum | cut -c1-16)"

current() {  # is image $1 built from this recipe?
  [ "$force" = 0 ] && [ "$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null)" = "$recipe" ]
}

work="$(mktemp -d /var/tmp/ruth-standin.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$CACHE/debs" "$CACHE/wheels"

# A minimal Debian root filesystem with these packages, without apt lists, docs and locales.
rootfs() {  # rootfs DIR PACKAGES
  debootstrap --variant=minbase --include="$2" --cache-dir="$CACHE/debs" "$SUITE" "$1" "$MIRROR" \
    > "$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/* "$1"/var/log/* \
         "$1"/usr/share/locale/* "$1"/usr/share/man/* "$1"/usr/share/info/*
  find "$1/usr/share/doc" -type f ! -name copyright -delete
  mkdir -p "$1/usr/share/ruth-standin"
  chroot "$1" dpkg-query -W -f '${Package} ${Version}\n' > "$1/usr/share/ruth-standin/packages.txt"
}

import() {  # import DIR TAG CHANGE...
  local dir=$1 tag=$2
  shift 2
  local changes=(--change "LABEL $LABEL=$recipe" --change "ENV LANG=C.UTF-8")
  for change in "$@"; do changes+=(--change "$change"); done
  tar --numeric-owner -C "$dir" -c . | docker import "${changes[@]}" - "$tag" > /dev/null
  rm -rf "$dir"
}

if current "$PYTHON_TAG"; then
  echo "$PYTHON_TAG is up to date"
else
  echo "building $PYTHON_TAG (debootstrap $SUITE)"
  rootfs "$work/python" "$PYTHON_PACKAGES"
  import "$work/python" "$PYTHON_TAG" "ENV PATH=$PATH_ENV" 'CMD ["python3"]'
fi

if current "$TRITON_TAG"; then
  echo "$TRITON_TAG is up to date"
else
  echo "building $TRITON_TAG (debootstrap $SUITE, nvidia-pytriton==$TRITON_VERSION)"
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_35_x86_64 \
    -d "$CACHE/wheels" "nvidia-pytriton==$TRITON_VERSION"
  wheel="$(ls "$CACHE"/wheels/nvidia_pytriton-"$TRITON_VERSION"-*.whl | head -1)"
  rootfs "$work/triton" "$TRITON_PACKAGES"
  # NVIDIA's image lets pip install into its Python (Ubuntu 22.04 has no EXTERNALLY-MANAGED marker).
  rm -f "$work"/triton/usr/lib/python3*/EXTERNALLY-MANAGED
  "$PYTHON" - "$wheel" "$work/triton/opt/tritonserver" "$STUB_PYTHON" <<'PY'
import shutil
import stat
import sys
import zipfile
from pathlib import Path

wheel, dest, stub_python = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
parts = {"pytriton/tritonserver/": dest, "nvidia_pytriton.libs/": dest / "lib"}
with zipfile.ZipFile(wheel) as archive:
    for info in archive.infolist():
        for prefix, target in parts.items():
            if info.filename.startswith(prefix) and not info.is_dir():
                path = target / info.filename[len(prefix):]
                path.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(path, "wb") as out:
                    shutil.copyfileobj(src, out)
                mode = stat.S_IMODE(info.external_attr >> 16)
                path.chmod(mode or 0o644)
stubs = dest / "python_backend_stubs"
stub = stubs / stub_python / "triton_python_backend_stub"
if not stub.is_file():
    sys.exit(f"{wheel} has no Python {stub_python} stub")
shutil.copy2(stub, dest / "backends" / "python" / stub.name)
(dest / "backends" / "python" / stub.name).chmod(0o755)
shutil.rmtree(stubs)
for cache in dest.rglob("__pycache__"):
    shutil.rmtree(cache)
PY
  # `--help` exits 1 after printing the usage: the usage is what tells that the binary runs.
  chroot "$work/triton" env LD_LIBRARY_PATH=/opt/tritonserver/lib /opt/tritonserver/bin/tritonserver --help \
    > "$work/help.txt" 2>&1 || true
  grep -q -- '--model-repository' "$work/help.txt" \
    || { cat "$work/help.txt" >&2; die "the wheel's tritonserver does not start on $SUITE"; }
  import "$work/triton" "$TRITON_TAG" \
    "ENV PATH=/opt/tritonserver/bin:$PATH_ENV" \
    "ENV LD_LIBRARY_PATH=/opt/tritonserver/lib" \
    "WORKDIR /opt/tritonserver" \
    'CMD ["tritonserver", "--help"]'
fi

docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep '^ruth-standin/'
