"""Fixtures shared by every test folder.

``triton_factory`` (function scope) and ``module_triton_factory`` (module scope) start a real
embedded tritonserver on free loopback ports: ``triton = triton_factory(repository, load_models=[...])``
returns a ready `ruthgen.embedded.EmbeddedTriton` (``triton.grpc_url``, ``triton.load(name)``, ...)
and stop it at teardown. A server that cannot start raises, so the test fails: it never skips.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ruthgen.embedded import EmbeddedTriton

TritonFactory = Callable[..., EmbeddedTriton]


def _factory(log_dir: Callable[[], Path]) -> Iterator[TritonFactory]:
    started: list[EmbeddedTriton] = []

    def start(repository: str | Path, **kwargs: Any) -> EmbeddedTriton:
        kwargs.setdefault("log_path", log_dir() / "tritonserver.log")
        triton = EmbeddedTriton(repository, **kwargs)
        started.append(triton)
        return triton.start()

    yield start
    for triton in reversed(started):
        triton.stop()


@pytest.fixture
def triton_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonFactory]:
    yield from _factory(lambda: tmp_path_factory.mktemp("triton"))


@pytest.fixture(scope="module")
def module_triton_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonFactory]:
    yield from _factory(lambda: tmp_path_factory.mktemp("triton"))


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (tests/pki.py)."""
    from tests.pki import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))
