"""The generator's interface to the sidecar: everything the sidecar uses of ruthgen, in one place.

* What every runtime reads, and light (pydantic, psutil and the standard library): the contract
  and the rules derived from it, the repository manifest, Triton names, what the sidecar and the
  generated wrapper agree on (tensor names, request parameters, error codes), this machine's
  hardware, and file and process helpers.
* :func:`plugin_builder`: validates plugin folders and writes their repository entries. It needs
  Jinja2, YAML and the plugins' environments, so it is imported on first use: a sidecar that serves
  a repository built elsewhere never loads it.

``make lint`` keeps the sidecar to this module (an import contract in pyproject.toml).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ruthgen.children import bound_to_parent
from ruthgen.contract import (
    DEFAULT_REQUEST_TIMEOUT_MS,
    ModelContract,
    declared_limits_ms,
    timeout_warnings,
    upstream_issues,
)
from ruthgen.embedded.stubs import find_server, kill_processes, stub_processes
from ruthgen.errors import EntryNotWritten, RuthgenError
from ruthgen.fsutil import write_atomic
from ruthgen.hardware import GpuInfo, HardwareInfo, HardwareProbe, detected_target
from ruthgen.manifest import MANIFEST_FILE, ManifestEntry, TritonFacts, load_entries
from ruthgen.naming import is_semver, parse_triton_name, semver_key, triton_name
from ruthgen.spec import INPUT_NAME, MODEL_MS_NAME
from ruthgen.wrapper import ruth_protocol
from ruthgen.wrapper.ruth_errors import REQUEST_CODES, load_resource_code, parse_message
from ruthgen.wrapper.ruth_protocol import ENCODED_FORMATS, INPUT_FORMATS, INPUT_TYPES

if TYPE_CHECKING:
    from ruthgen.builder import PluginBuilder


def plugin_builder(
    models_dir: str | os.PathLike[str], repository: str | os.PathLike[str], target: str
) -> PluginBuilder:
    """The builder of ``models_dir``'s versions into the live ``repository`` (imported now)."""
    from ruthgen.builder import PluginBuilder

    return PluginBuilder(models_dir, repository, target)


__all__ = [
    "DEFAULT_REQUEST_TIMEOUT_MS",
    "ENCODED_FORMATS",
    "INPUT_FORMATS",
    "INPUT_NAME",
    "INPUT_TYPES",
    "MANIFEST_FILE",
    "MODEL_MS_NAME",
    "REQUEST_CODES",
    "EntryNotWritten",
    "GpuInfo",
    "HardwareInfo",
    "HardwareProbe",
    "ManifestEntry",
    "ModelContract",
    "RuthgenError",
    "TritonFacts",
    "bound_to_parent",
    "declared_limits_ms",
    "detected_target",
    "find_server",
    "is_semver",
    "kill_processes",
    "load_entries",
    "load_resource_code",
    "parse_message",
    "parse_triton_name",
    "plugin_builder",
    "ruth_protocol",
    "semver_key",
    "stub_processes",
    "timeout_warnings",
    "triton_name",
    "upstream_issues",
    "write_atomic",
]
