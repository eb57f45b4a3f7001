"""What each install of the distribution brings covers what its part of the code imports: the default
install the light client, ``[generator]`` the generator, ``[sidecar]`` the sidecar, ``[embedded]``
all of it. (tests/integration/test_light_client.py installs the client alone and calls a sidecar.)"""

from __future__ import annotations

import pytest
from deploy_loaders import ROOT, closure, distributions_of, local_modules, third_party_imports

from tests.distribution import requirements

PACKAGES = {"ruthgen", "ruthstack", "sidecar"}


def _imports(*entries: str) -> tuple[set[str], set[str]]:
    """(required, optional) third-party modules reachable from these files or folders (the generated
    wrapper, which runs inside Triton's stub, left out)."""
    files = [p for entry in entries for p in ([ROOT / entry] if entry.endswith(".py") else
                                              (ROOT / entry).rglob("*.py"))]
    reached = {p for p in local_modules(files, PACKAGES) if "wrapper" not in p.relative_to(ROOT).parts}
    return third_party_imports(reached, PACKAGES)


def _missing(modules: set[str], extras: tuple[str, ...]) -> list[str]:
    provided = closure(requirements(*extras), "3.11")
    return sorted(m for m in modules if not distributions_of(m) & provided)


@pytest.mark.parametrize(
    ("entries", "extras", "some_imports"),
    [
        (("sidecar/client.py",), (), {"grpc", "google"}),
        (("ruthgen",), ("generator",), {"typer", "jinja2", "tritonclient"}),
        (("sidecar",), ("sidecar",), {"fastapi", "grpc_status", "tritonclient"}),
        (("ruthgen", "ruthstack", "sidecar"), ("embedded",), {"typer", "fastapi"}),
    ],
    ids=["client", "generator", "sidecar", "embedded"],
)
def test_install_provides_every_module_its_code_imports(entries, extras, some_imports):
    required, optional = _imports(*entries)
    assert some_imports <= required
    assert _missing(required, extras) == []
    if "embedded" in extras:  # the whole runtime: video (cv2) and GPU telemetry (pynvml) too
        assert {"cv2", "pynvml"} <= optional
        assert _missing(optional, extras) == []


def test_light_client_is_grpcio_and_protobuf_only():
    assert sorted(str(r) for r in requirements()) == ["grpcio>=1.62", "protobuf<5,>=4.25"]
    brought = closure(requirements(), "3.11")
    assert not brought & {"tritonclient", "nvidia-pytriton", "numpy", "fastapi", "gevent", "pyzmq"}
