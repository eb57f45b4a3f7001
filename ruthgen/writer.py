"""Writes the Triton model repository from the plugins: atomic, incremental, clean, deterministic.

Per valid plugin version, one entry ``<triton_name>/``::

    config.pbtxt             rendered from templates/config.pbtxt.j2
    env -> <environment>     only when the plugin has requirements (ruthgen.envs.ensure_env)
    1/model.py               rendered from templates/model.py.j2 (the wrapper)
    1/<wrapper files>        ruthgen.wrapper.RUNTIME_FILES
    1/plugin/...             the plugin's own files
    1/ruth_entry.json        the entry's manifest record

and ``ruth-manifest.json`` at the root (see :mod:`ruthgen.manifest`).

* Atomic: changed entries are staged in a sibling folder of the repository (never inside it:
  Triton takes every folder there for a model), then swapped in by renames, the manifest last;
  a failure before or during the swap leaves the previous repository as it was.
* Incremental: an entry whose source digest (plugin files, rendered texts, record, wrapper files,
  environment) equals the manifest's is not rewritten. File digests are cached by
  ``(size, mtime, inode)`` in ``<repository>/.ruthgen-cache.json``.
* Clean: entries of plugins that disappeared (or became invalid) are removed; the generator only
  replaces or removes the entries its manifest names, never other files or folders.
* Deterministic: the same plugins give byte-identical files (sorted keys, no timestamps).
* The plugins' environments are built side by side (up to ``ENV_THREADS``; those with one cache key
  still once, ``ruthgen.envs``); the result, a failure of one included, is that of building them
  one after another.

Library API (stable): ``build_repository(models_dir, out_dir, target="cpu", only=None, progress=None) ->
BuildResult`` (``progress``: a :class:`ruthgen.progress.Progress` told each step, the environments' builds),
and ``build_copy(models_dir, out_dir, model_id, version, name, target="cpu")``, which writes a second
copy of one entry under another Triton name (the sidecar's reload slot) and leaves the manifest alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruthgen import envs, render, wrapper
from ruthgen.discovery import PluginReport, scan, validate_plugin
from ruthgen.errors import BuildError, EnvironmentBuildError, UsageError, ValidationIssue
from ruthgen.fsutil import locked
from ruthgen.manifest import (
    ENTRY_RECORD_FILE,
    MANIFEST_FILE,
    dumps,
    entry_record,
    invalid_record,
    load_manifest,
    new_manifest,
)
from ruthgen.naming import semver_key
from ruthgen.progress import Progress
from ruthgen.repofiles import (
    DigestCache,
    Shared,
    new_stage,
    path_in,
    remove_stale_stages,
    swap,
)
from ruthgen.spec import ModelSpec, build_spec

LOGGER = logging.getLogger(__name__)

#: Bump when the layout of an entry changes, so that every entry is rewritten once.
LAYOUT_VERSION = "1"
CACHE_FILE = ".ruthgen-cache.json"
VERSION_DIR = "1"
PLUGIN_DIR = "plugin"
ENV_LINK = "env"
WRITE_THREADS = 4
#: Plugin environments built at once: mostly downloads and unpacking, several overlap well on 2 cores.
ENV_THREADS = 4
_SKIPPED_NAMES = frozenset({"__pycache__", ".git", ".hg", ".svn", ".DS_Store"})
#: ``_plan_entry``'s default: build the plugin's environment there (no ``_ensure_envs`` outcome)
_BUILD = object()
#: A plugin's environment: its folder, None (no requirements), or why it could not be built
_EnvOutcome = Path | None | EnvironmentBuildError


@dataclass
class _Entry:
    report: PluginReport
    spec: ModelSpec
    files: list[tuple[str, str, os.stat_result]]
    config_text: str
    model_py: str
    record: dict[str, Any]
    env_dir: Path | None
    action: str = "written"


@dataclass
class BuildResult:
    """What a build did. ``written``/``unchanged``/``removed`` hold Triton names."""

    repository: Path
    target: str
    reports: list[PluginReport]
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return f"{len(self.written)} written, {len(self.unchanged)} unchanged, {len(self.removed)} removed"

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` shape of ``ruthgen build``."""
        models = []
        for report in self.reports:
            item = report.to_dict()
            name = report.triton_name
            action = "written" if name in self.written else "unchanged" if name in self.unchanged else None
            item["path"] = str(self.repository / name) if action and name else None
            item["action"] = action
            models.append(item)
        return {
            "repository": str(self.repository),
            "target": self.target,
            "models": models,
            "removed": list(self.removed),
            "warnings": list(self.warnings),
        }


def build_repository(
    models_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    target: str = "cpu",
    only: set[str] | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Build (or update) the repository ``out_dir`` from the plugins under ``models_dir``.

    ``only``: regenerate just these Triton entries (add, rewrite or remove them) and leave every
    other entry and manifest record as it is. Invalid plugins never stop the build; they are
    reported in the result and the manifest. Raises :class:`~ruthgen.errors.BuildError` when the
    repository cannot be written (it is then left unchanged). ``progress`` is told each step.
    """
    progress = progress or Progress()
    subject = str(out_dir)
    progress.step(subject, "validating the plugins in", str(models_dir))
    repo = Path(out_dir).absolute()
    discovery = scan(models_dir, target)
    repo.mkdir(parents=True, exist_ok=True)
    with locked(repo):
        remove_stale_stages(repo)
        old = load_manifest(repo) or new_manifest(target, [])
        if only is not None and old["target"] != target and old["models"]:
            raise UsageError(f"the repository was built for {old['target']}; rebuild it fully for {target}")
        result = BuildResult(
            repository=repo, target=target, reports=discovery.reports, warnings=discovery.warnings
        )
        cache = DigestCache(repo / CACHE_FILE)
        valid = sum(r.valid for r in discovery.reports)
        progress.step(subject, "generating", f"{valid} valid, {len(discovery.reports) - valid} invalid")
        entries, records, removed = _plan(discovery.reports, repo, old, target, only, cache, progress)
        to_write = [e for e in entries if e.action == "written"]
        result.written = sorted(e.report.triton_name for e in to_write)  # type: ignore[misc]
        result.unchanged = sorted(e.report.triton_name for e in entries if e.action == "unchanged")  # type: ignore[misc]
        result.removed = removed
        result.manifest = new_manifest(target, records)
        if to_write or removed or result.manifest != old or not (repo / MANIFEST_FILE).is_file():
            progress.step(subject, "writing", f"{len(to_write)} entr{'y' if len(to_write) == 1 else 'ies'}")
            _apply(repo, to_write, removed, dumps(result.manifest))
        cache.save()
    progress.done(subject, result.summary())
    LOGGER.info("repository %s: %s", repo, result.summary())
    return result


def build_copy(
    models_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    model_id: str,
    version: str,
    name: str,
    target: str = "cpu",
) -> dict[str, Any]:
    """Write the entry of one plugin version into ``out_dir`` as the Triton model ``name``.

    The copy is rendered for that name (``config.pbtxt``, ``model.py`` and its record say ``name``),
    replaces an earlier copy of the same name atomically, and is not listed in the manifest: the
    caller owns it. Returns the copy's record. Raises :class:`~ruthgen.errors.BuildError` when the
    plugin is invalid or the copy cannot be written.
    """
    repo = Path(out_dir).absolute()
    report = validate_plugin(Path(models_dir) / model_id / version, model_id, version, target)
    entry = None
    with locked(repo):
        if report.valid:
            cache = DigestCache(repo / CACHE_FILE)
            entry = _plan_entry(report, repo, target, {name}, _generator_digest(), cache, name=name)
        if entry is None:
            reasons = "; ".join(f"{e.check}: {e.message}" for e in report.errors)
            raise BuildError(f"{model_id} {version} cannot be generated: {reasons or 'invalid plugin'}")
        _apply(repo, [entry], [], None)
    return entry.record


def _plan(
    reports: list[PluginReport],
    repo: Path,
    old: dict[str, Any],
    target: str,
    only: set[str] | None,
    cache: DigestCache,
    progress: Progress,
) -> tuple[list[_Entry], list[dict[str, Any]], list[str]]:
    old_records = {(m["model_id"], m["version"]): m for m in old["models"]}
    owned = {m["path"] for m in old["models"] if m.get("state") == "VALID" and m.get("path")}
    generator = _generator_digest()
    entries: list[_Entry] = []
    records: dict[tuple[str, str], dict[str, Any]] = {}
    in_scope = (lambda name: True) if only is None else (lambda name: name in only)
    # the environments first, side by side; then the entries, in order, as one after another
    to_build = [r for r in reports if r.valid and in_scope(r.triton_name)]
    built = _ensure_envs([r for r in to_build if not _conflicts(repo, r.triton_name, owned)], progress)
    for report in reports:
        key = (report.model_id, report.version)
        if not in_scope(report.triton_name):
            if key in old_records:
                records[key] = old_records[key]
            continue
        entry = None
        if report.valid:
            entry = _plan_entry(
                report, repo, target, owned, generator, cache, progress=progress, env=built.get(key, _BUILD)
            )
        if entry is None:
            records[key] = invalid_record(report)
            continue
        previous = old_records.get(key)
        if (
            previous is not None
            and previous.get("source_digest") == entry.record["source_digest"]
            and (repo / entry.spec.name / VERSION_DIR / ENTRY_RECORD_FILE).is_file()
        ):
            entry.action = "unchanged"
        entries.append(entry)
        records[key] = entry.record
    for key, record in old_records.items():  # records of vanished plugins outside ``only`` stay
        if key not in records and only is not None and not in_scope(record.get("triton_name")):
            records[key] = record
    generated = {r["path"] for r in records.values() if r.get("state") == "VALID" and r.get("path")}
    removed = sorted(name for name in owned - generated if in_scope(name))
    ordered = [records[k] for k in sorted(records, key=_record_order)]
    return entries, ordered, removed


def _record_order(key: tuple[str, str]) -> tuple:
    return (key[0], semver_key(key[1]))


def _plan_entry(
    report: PluginReport,
    repo: Path,
    target: str,
    owned: set[str],
    generator: str,
    cache: DigestCache,
    name: str | None = None,
    progress: Progress | None = None,
    env: object = _BUILD,
) -> _Entry | None:
    """The entry of one valid plugin, or None (its error added to the report). ``env``: its
    environment when already built (``_ensure_envs``); ``_BUILD``, the default: build it here."""
    contract, name = report.contract, name or report.triton_name
    assert contract is not None and name is not None
    if _conflicts(repo, name, owned):
        report.errors.append(
            ValidationIssue(
                "repository_conflict",
                f"{repo / name} exists and was not generated by ruthgen: move it out of the repository",
                "",
            )
        )
        return None
    if env is _BUILD:
        env = _env_outcome(report, progress or Progress())
    if isinstance(env, EnvironmentBuildError):
        report.errors.append(
            ValidationIssue("environment_build_failed", str(env), "dependencies.requirements")
        )
        return None
    env_dir = env if isinstance(env, Path) else None
    spec = build_spec(contract, name, target, has_env=env_dir is not None)
    files = _plugin_files(report.plugin_dir)
    record = entry_record(report, spec, "")
    del record["source_digest"]
    config_text = render.render_config(spec, f"{report.model_id}/{report.version}/model.yaml")
    model_py = render.render_model_py(
        {"entry": record, "model_id": report.model_id, "version": report.version, "triton_name": name}
    )
    digest = hashlib.sha256()
    parts = (LAYOUT_VERSION, generator, str(env_dir or ""), config_text, model_py, _compact(record))
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    for rel, path, info in files:
        digest.update(f"{rel}\0{cache.digest(path, info)}\n".encode())
    record["source_digest"] = "sha256:" + digest.hexdigest()
    return _Entry(report, spec, files, config_text, model_py, record, env_dir)


def _compact(data: Any) -> str:
    """Canonical one-line JSON (sorted keys; the C encoder, unlike ``indent=2``)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _conflicts(repo: Path, name: str | None, owned: set[str]) -> bool:
    """Something not generated by ruthgen is in the way of the entry ``name``."""
    return name is not None and name not in owned and os.path.lexists(repo / name)


def _needs_env(report: PluginReport) -> bool:
    deps = report.contract.dependencies if report.contract is not None else None
    return deps is not None and deps.requirements is not None


def _env_outcome(report: PluginReport, progress: Progress) -> _EnvOutcome:
    """``_ensure_env``, its EnvironmentBuildError returned instead of raised."""
    try:
        return _ensure_env(report, progress)
    except EnvironmentBuildError as exc:
        return exc


def _ensure_envs(reports: list[PluginReport], progress: Progress) -> dict[tuple[str, str], _EnvOutcome]:
    """The environments of these plugins, built side by side (up to ``ENV_THREADS``), by
    ``(model_id, version)``. Plugins without requirements are left out; a plugin whose environment
    fails gets its error, the others are still built. Any other exception is raised once every
    started build has finished (those not started are dropped), the first in the plugins' order."""
    needing = [r for r in reports if _needs_env(r)]
    if len(needing) <= 1 or ENV_THREADS <= 1:
        return {(r.model_id, r.version): _env_outcome(r, progress) for r in needing}
    pool = ThreadPoolExecutor(max_workers=min(ENV_THREADS, len(needing)), thread_name_prefix="ruthgen-env")
    try:
        futures = [((r.model_id, r.version), pool.submit(_env_outcome, r, progress)) for r in needing]
        return {key: future.result() for key, future in futures}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ensure_env(report: PluginReport, progress: Progress) -> Path | None:
    """The plugin's environment (None without requirements); a build is told to ``progress``."""
    contract = report.contract
    if contract is None or contract.dependencies is None or contract.dependencies.requirements is None:
        return None
    subject = f"{report.model_id} {report.version}"
    steps: list[str] = []

    def step(step: str, detail: str = "") -> None:
        steps.append(step)
        progress.step(subject, step, detail)

    try:
        env = Path(envs.ensure_env(report.plugin_dir, contract, report=step)).absolute()
    except EnvironmentBuildError as exc:
        progress.done(subject, f"its environment could not be built: {exc}", ok=False)
        raise
    if steps:  # built now, not found in the cache
        progress.done(subject, "environment built")
    return env


def _plugin_files(root: Path) -> list[tuple[str, str, os.stat_result]]:
    """Every regular file of the plugin as (relative path, path, stat), sorted; symlinks followed,
    caches and VCS folders left out."""
    found: list[tuple[str, str, os.stat_result]] = []
    seen: set[tuple[int, int]] = set()

    def walk(folder: str, prefix: str) -> None:
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop
            return
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if name in _SKIPPED_NAMES or name.endswith((".pyc", ".pyo")):
                    continue
                try:
                    info = entry.stat()
                except OSError:  # a dangling symlink
                    continue
                if stat.S_ISDIR(info.st_mode):
                    walk(entry.path, f"{prefix}{name}/")
                elif stat.S_ISREG(info.st_mode):
                    found.append((f"{prefix}{name}", entry.path, info))

    walk(str(root), "")
    found.sort(key=lambda item: item[0])
    return found


def _runtime_files() -> list[tuple[str, Path]]:
    """``ruthgen.wrapper.RUNTIME_FILES`` as (path inside ``1/``, source) pairs."""
    base = wrapper.RUNTIME_DIR.resolve()
    pairs = []
    for item in wrapper.RUNTIME_FILES:
        path = Path(item).resolve()
        pairs.append((path.relative_to(base).as_posix(), path))
    return sorted(pairs)


def _generator_digest() -> str:
    digest = hashlib.sha256()
    for rel, path in _runtime_files():
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _apply(repo: Path, entries: list[_Entry], removed: list[str], manifest_text: str | None) -> None:
    stage = new_stage(repo)
    try:
        stage.mkdir()
        runtime = _runtime_files()
        shared = Shared(stage / ".shared")
        shared.prepare(src for _, src in runtime)
        if len(entries) > 1:
            # File creation is syscall-bound (the GIL is released): a few threads overlap it.
            with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
                futures = [
                    pool.submit(_write_entry, stage / e.spec.name, e, runtime, shared) for e in entries
                ]
                for future in futures:
                    future.result()
        else:
            for entry in entries:
                _write_entry(stage / entry.spec.name, entry, runtime, shared)
        swap(repo, stage, [e.spec.name for e in entries], removed, manifest_text)
    except OSError as exc:
        raise BuildError(f"cannot write the repository {repo}: {exc}") from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _write_entry(dest: Path, entry: _Entry, runtime: list[tuple[str, Path]], shared: Shared) -> None:
    """Write one complete entry into ``dest`` (a staging folder)."""
    version_dir = dest / VERSION_DIR
    plugin_dir = version_dir / PLUGIN_DIR
    plugin_dir.mkdir(parents=True)
    (dest / "config.pbtxt").write_text(entry.config_text, "utf-8")
    (version_dir / "model.py").write_text(entry.model_py, "utf-8")
    made = {str(version_dir), str(plugin_dir)}
    for rel, src in runtime:
        shared.place(src, path_in(version_dir, rel, made))
    for rel, src, _ in entry.files:
        shutil.copyfile(src, path_in(plugin_dir, rel, made))
    (version_dir / ENTRY_RECORD_FILE).write_text(_compact(entry.record) + "\n", "utf-8")
    if entry.env_dir is not None:
        os.symlink(entry.env_dir, dest / ENV_LINK, target_is_directory=True)
