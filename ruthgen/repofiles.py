"""The file mechanics of a repository build: staging beside the repository, the swap that moves
staged entries in (and undoes itself on failure), and the cache of file digests.
:mod:`ruthgen.writer` decides what to write; this module writes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from ruthgen.fsutil import write_atomic
from ruthgen.manifest import MANIFEST_FILE

LOGGER = logging.getLogger(__name__)


def stage_prefix(repo: Path) -> str:
    return f".{repo.name}.ruthgen-"


def stage_parent(repo: Path) -> Path:
    """Where a build stages its entries: beside the repository, or inside it when the repository
    is a mount point (a container's bind mount or volume), because entries are moved in by rename,
    which cannot cross filesystems."""
    try:
        if os.stat(repo).st_dev != os.stat(repo.parent).st_dev:
            return repo
    except OSError:
        pass
    return repo.parent


def new_stage(repo: Path) -> Path:
    return stage_parent(repo) / f"{stage_prefix(repo)}{uuid.uuid4().hex[:12]}"


def remove_stale_stages(repo: Path) -> None:
    """Staging folders left by a build that was killed (none can be in use: we hold the lock)."""
    for path in stage_parent(repo).glob(f"{stage_prefix(repo)}*"):
        if path.is_dir() and not path.is_symlink():
            LOGGER.warning("removing %s, left by an interrupted build", path)
            shutil.rmtree(path, ignore_errors=True)


def path_in(base: Path, rel: str, made: set[str]) -> str:
    """``base/rel`` as a string, its parent folder created once."""
    path = os.path.join(base, rel)
    parent = os.path.dirname(path)
    if parent not in made:
        os.makedirs(parent, exist_ok=True)
        made.add(parent)
    return path


class Shared:
    """Files that every entry of a build holds (the wrapper): copied once, then hard-linked.

    The copy lives in the staging folder, so entries never share an inode with the sources.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.copies: dict[str, str] = {}

    def prepare(self, sources: Iterable[Path]) -> None:
        for index, src in enumerate(sources):
            self.folder.mkdir(exist_ok=True)
            copy = os.path.join(self.folder, f"{index}-{src.name}")
            shutil.copyfile(src, copy)
            self.copies[str(src)] = copy

    def place(self, src: Path, dst: str) -> None:
        copy = self.copies[str(src)]
        try:
            os.link(copy, dst)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(copy, dst)


def swap(repo: Path, stage: Path, names: list[str], removed: list[str], manifest_text: str | None) -> None:
    """Move staged entries in and vanished ones out, then the manifest (unless None); undo everything
    on failure."""
    trash = stage / ".replaced"
    trash.mkdir()
    done: list[tuple[str, str]] = []
    try:
        for name in removed:
            if os.path.lexists(repo / name):
                os.rename(repo / name, trash / name)
                done.append(("out", name))
        for name in names:
            if os.path.lexists(repo / name):
                os.rename(repo / name, trash / name)
                done.append(("out", name))
            os.rename(stage / name, repo / name)
            done.append(("in", name))
        if manifest_text is not None:
            write_atomic(repo / MANIFEST_FILE, manifest_text)
    except BaseException:
        for kind, name in reversed(done):
            if kind == "in":
                os.rename(repo / name, stage / name)
            else:
                os.rename(trash / name, repo / name)
        raise


class DigestCache:
    """sha256 of files, cached by (size, mtime_ns, inode) across builds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.used: dict[str, list] = {}
        try:
            data = json.loads(path.read_text("utf-8"))
            self.known: dict[str, list] = data.get("files", {}) if data.get("version") == 1 else {}
        except (OSError, ValueError, AttributeError):
            self.known = {}
        self.changed = False

    def digest(self, path: str, info: os.stat_result) -> str:
        key = path
        sig = [info.st_size, info.st_mtime_ns, info.st_ino]
        hit = self.known.get(key)
        if hit is not None and hit[:3] == sig:
            self.used[key] = hit
            return hit[3]
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                hasher.update(chunk)
        value = hasher.hexdigest()
        self.used[key] = [*sig, value]
        self.changed = True
        return value

    def save(self) -> None:
        if not self.changed and self.used.keys() == self.known.keys():
            return
        with contextlib.suppress(OSError):
            write_atomic(self.path, json.dumps({"version": 1, "files": self.used}, sort_keys=True))
