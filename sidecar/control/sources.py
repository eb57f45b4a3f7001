"""Where the lifecycle manager's model versions and their Triton entries come from (a strategy).

* :class:`PluginFolderSource`: the plugin folder the sidecar owns (``RUTH_MODELS_DIR``, what
  ``ruthgen up`` runs). It validates plugins and generates their entries into the live repository
  with the generator's plugin builder (:func:`ruthgen.interface.plugin_builder`, loaded only here).
  Each version has two Triton copies so that a reload never replaces the files of a copy
  that is serving: the first copy ``<model_id>__<version>``, written by ``builder.build`` (which keeps the
  manifest up to date), and the second copy ``<model_id>__<version>__b``, written by ``builder.build_copy``
  under that name and never listed in the manifest. ``parse_triton_name`` rejects ``__b`` names;
  :func:`parse_copy_name` maps both back.
* :class:`RepositorySource`: a repository built elsewhere and mounted read-only (the bundle image,
  Compose, Kubernetes). Versions and their validity come from its manifest; each version has one
  copy, which a reload loads again in place.

Both answer the same questions (:class:`EntrySource`); every call may touch the disk, so the
manager runs them in a worker thread.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ruthgen.interface import (
    MANIFEST_FILE,
    EntryNotWritten,
    ManifestEntry,
    ModelContract,
    RuthgenError,
    is_semver,
    load_entries,
    parse_triton_name,
    plugin_builder,
    triton_name,
)

LOGGER = logging.getLogger(__name__)

Key = tuple[str, str]
SECOND_COPY_SUFFIX = "__b"
_SKIPPED = frozenset({"__pycache__", ".git", ".hg", ".svn", ".DS_Store"})


class StageError(Exception):
    """An entry could not be generated or found; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PluginCheck:
    """The validation outcome of one version: INVALID with a reason, or valid with its contract."""

    valid: bool
    reason: str
    contract: ModelContract | None = None


class EntrySource(Protocol):
    """What the lifecycle manager needs to know about the versions it manages."""

    def versions(self) -> set[Key]:
        """Every version present now, valid or not."""

    def digest(self, key: Key) -> str:
        """A fingerprint that changes when the version's files change."""

    def check(self, key: Key) -> PluginCheck: ...

    def copies(self, key: Key) -> tuple[str, ...]:
        """The Triton names a version's copies alternate between (one or two)."""

    def stage(self, key: Key, name: str) -> ManifestEntry:
        """Make copy ``name`` ready to load; its record. Raises :class:`StageError`."""

    def discard(self, name: str) -> None:
        """A copy that is no longer loaded: remove what ``stage`` wrote for it."""

    def forget(self, key: Key) -> None:
        """The version is gone for good: remove its entries."""


def copy_names(model_id: str, version: str) -> tuple[str, str]:
    """The two Triton names one plugin version alternates between."""
    name = triton_name(model_id, version)
    return name, name + SECOND_COPY_SUFFIX


def parse_copy_name(name: str) -> tuple[str, str]:
    """``(model_id, version)`` of either copy's Triton name; raises ``ValueError`` otherwise."""
    return parse_triton_name(name.removesuffix(SECOND_COPY_SUFFIX))


class PluginFolderSource:
    """Validates plugins and writes their entries into the live repository ``repository``."""

    def __init__(
        self, models_dir: str | os.PathLike[str], repository: str | os.PathLike[str], target: str
    ) -> None:
        self.builder = plugin_builder(models_dir, repository, target)
        self.models_dir, self.repository = self.builder.models_dir, self.builder.repository

    def versions(self) -> set[Key]:
        found: set[Key] = set()
        for model_dir in _subdirs(self.models_dir):
            for version_dir in _subdirs(model_dir):
                if is_semver(version_dir.name):
                    found.add((model_dir.name, version_dir.name))
        return found

    def digest(self, key: Key) -> str:
        """A cheap fingerprint of the plugin folder (names, sizes, mtimes), to notice edits."""
        root = self.models_dir.joinpath(*key)
        hasher = hashlib.sha256()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED and not d.startswith("."))
            for name in sorted(filenames):
                if name in _SKIPPED or name.endswith((".pyc", ".pyo")):
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                rel = path.relative_to(root).as_posix()
                hasher.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return "files:" + hasher.hexdigest()[:32]

    def check(self, key: Key) -> PluginCheck:
        contract, reason = self.builder.check(*key)
        return PluginCheck(True, "valid", contract) if contract is not None else PluginCheck(False, reason)

    def copies(self, key: Key) -> tuple[str, ...]:
        return copy_names(*key)

    def stage(self, key: Key, name: str) -> ManifestEntry:
        canonical, second = copy_names(*key)
        if name not in (canonical, second):
            raise ValueError(f"{name!r} is not a copy of {key[0]}:{key[1]}")
        try:
            return self.builder.build(*key) if name == canonical else self.builder.build_copy(*key, name)
        except EntryNotWritten as exc:
            raise StageError(str(exc)) from exc
        except RuthgenError as exc:
            raise StageError(f"cannot generate {name}: {exc}") from exc

    def discard(self, name: str) -> None:
        """Remove a second copy (the first copy is ruthgen's: see :meth:`forget`)."""
        if name.endswith(SECOND_COPY_SUFFIX):
            shutil.rmtree(self.repository / name, ignore_errors=True)

    def forget(self, key: Key) -> None:
        """After the plugin folder is gone: ruthgen removes the first copy and its manifest record."""
        self.discard(copy_names(*key)[1])
        try:
            self.builder.remove(*key)
        except RuthgenError as exc:
            LOGGER.warning("cannot remove the entry of %s:%s: %s", key[0], key[1], exc)


class RepositorySource:
    """A repository built elsewhere (read-only): its manifest says what exists and what is valid."""

    def __init__(self, repository: str | os.PathLike[str]) -> None:
        self.repository = Path(repository).absolute()
        self._signature: tuple[int, int, int] | None = None
        self._entries: dict[Key, ManifestEntry] = {}

    def signature(self) -> tuple[int, int, int] | None:
        """The manifest's (inode, mtime, size), None while there is none: a change means a rebuild."""
        try:
            st = (self.repository / MANIFEST_FILE).stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def entries(self) -> dict[Key, ManifestEntry]:
        """The manifest's records, read again whenever the manifest changed."""
        signature = self.signature()
        if signature != self._signature:
            try:
                records = load_entries(self.repository) or []
            except RuthgenError as exc:
                LOGGER.error("%s; keeping the previous reading", exc)
                return self._entries
            self._entries = {(e.model_id, e.version): e for e in records}
            self._signature = signature
            if signature is None:
                LOGGER.warning("no manifest in %s yet: no models until `ruthgen build` writes one",
                               self.repository)
        return self._entries

    def versions(self) -> set[Key]:
        return set(self.entries())

    def digest(self, key: Key) -> str:
        entry = self.entries().get(key)
        if entry is None:
            return ""
        return entry.digest if entry.valid else "invalid:" + entry.reason

    def check(self, key: Key) -> PluginCheck:
        entry = self.entries().get(key)
        if entry is None:
            return PluginCheck(False, "not in the repository's manifest")
        if not entry.valid:
            return PluginCheck(False, entry.reason or "invalid")
        return PluginCheck(True, "valid", entry.contract)

    def copies(self, key: Key) -> tuple[str, ...]:
        entry = self.entries().get(key)
        return (entry.triton_name or triton_name(*key),) if entry is not None else (triton_name(*key),)

    def stage(self, key: Key, name: str) -> ManifestEntry:
        entry = self.entries().get(key)
        if entry is None or not entry.valid:
            raise StageError(f"{key[0]}:{key[1]} has no generated entry in {self.repository}")
        if name != entry.triton_name or not (self.repository / name / "config.pbtxt").is_file():
            raise StageError(f"the repository {self.repository} has no entry {name}")
        return entry

    def discard(self, name: str) -> None:
        """Nothing to remove: the repository is not the sidecar's to write."""

    def forget(self, key: Key) -> None:
        """Nothing to remove: whoever rebuilt the repository removed the entry."""


def _subdirs(path: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return []
    return [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=True)]
