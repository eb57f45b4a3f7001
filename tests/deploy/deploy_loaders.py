"""Readers for the deployment files, for the tests beside this module.

Nothing here runs Docker or Kubernetes: compose files are read as YAML (with Compose's `!reset`
tag), overlays are merged the way Compose and kustomize do for the few constructs our files use
(the tests refuse any other construct, so a file cannot silently outgrow these readers), and
Dockerfiles are split into instructions.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib.metadata
import inspect
import re
import shlex
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"


# --- YAML and Compose --------------------------------------------------------------------------


class Reset:
    """Compose's `!reset` tag: the attribute is removed from the merged model."""

    def __repr__(self) -> str:
        return "!reset"


class _ComposeLoader(yaml.SafeLoader):
    pass


_ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_ComposeLoader)  # a SafeLoader subclass


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def without_resets(node: Any) -> Any:
    """The file as Compose validates it on its own: reset attributes dropped."""
    if isinstance(node, dict):
        return {k: without_resets(v) for k, v in node.items() if not isinstance(v, Reset)}
    if isinstance(node, list):
        return [without_resets(v) for v in node]
    return node


def merge_compose(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Compose's merge for mappings, `!reset` and whole-value replacement of other values.

    Compose merges some sequences (ports, volumes, environment lists) by key; callers check that
    an override only replaces sequences whose Compose rule is replacement (e.g. `command`).
    """
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Reset):
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_compose(merged[key], value)
        else:
            merged[key] = copy.deepcopy(without_resets(value))
    return merged


def sequences_in(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths of every sequence or scalar in an override (what `merge_compose` replaces)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from sequences_in(value, (*path, key))
    elif not isinstance(node, Reset):
        yield path


# --- kustomize ---------------------------------------------------------------------------------

#: The kustomization fields the renderer below understands; any other field fails the tests.
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "patches"}


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Render a kustomization made of `resources` and JSON 6902 `patches` with a kind/name target."""
    kustomization = load_yaml(directory / "kustomization.yaml")
    unknown = set(kustomization) - KUSTOMIZE_FIELDS
    if unknown:
        raise ValueError(f"{directory}: kustomization fields this renderer does not know: {sorted(unknown)}")
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        resources.extend(kustomize(path) if path.is_dir() else load_yaml_documents(path))
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        if set(patch) != {"target", "patch"} or set(target) - {"kind", "name"}:
            raise ValueError(f"{directory}: only inline JSON 6902 patches with a kind/name target: {patch}")
        operations = yaml.safe_load(patch["patch"])
        if not isinstance(operations, list):
            raise ValueError(f"{directory}: a strategic-merge patch is not supported here: {patch}")
        matches = [
            i
            for i, resource in enumerate(resources)
            if resource["kind"] == target["kind"] and resource["metadata"]["name"] == target["name"]
        ]
        if len(matches) != 1:
            raise ValueError(f"{directory}: patch target {target} matches {len(matches)} resources")
        resources[matches[0]] = jsonpatch.apply_patch(resources[matches[0]], operations)
    return resources


def find(resources: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def container(pod_spec: dict[str, Any], name: str, key: str = "containers") -> dict[str, Any]:
    found = [c for c in pod_spec.get(key, []) if c["name"] == name]
    assert len(found) == 1, f"expected one container {name!r} in {key}"
    return found[0]


# --- Dockerfiles -------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    value: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def runs(self) -> list[str]:
        """The commands of the RUN instructions, without their leading ``--mount=...`` flags."""
        return [_run_split(i.value)[1] for i in self.instructions if i.keyword == "RUN"]

    def run_flags(self) -> list[tuple[list[str], str]]:
        """(flags, command) of every RUN instruction."""
        return [_run_split(i.value) for i in self.instructions if i.keyword == "RUN"]

    def values(self, keyword: str) -> list[str]:
        return [i.value for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def resolve(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.args.get(m[1] or m[2], m[0]), text)


def _run_split(value: str) -> tuple[list[str], str]:
    flags = []
    while value.startswith("--"):
        flag, _, value = value.partition(" ")
        flags.append(flag)
        value = value.lstrip()
    return flags, value


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions with their continuation lines joined; global ARG defaults; the stages."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for text in logical:
        keyword, _, value = text.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "FROM":
            words = value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif keyword == "ARG" and not stages:
            key, _, default = value.partition("=")
            args[key] = default
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, value))
    return Dockerfile(args=args, stages=stages)


def pip_installs(run: str) -> list[list[str]]:
    """The argument lists of every `pip install` in one RUN instruction."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|"}:
            commands.append([])
        else:
            commands[-1].append(token)
    installs = []
    for words in commands:
        for i, word in enumerate(words[:-1]):
            if word.endswith("pip") and words[i + 1] == "install":
                installs.append(words[i + 2 :])
    return installs


def requirement_names(arguments: list[str]) -> tuple[list[Requirement], list[str], list[str]]:
    """The requirements named, the options (with their values) and the local folders installed
    (``.``, ``.[sidecar]``, ``/opt/ruth/src[generator]``) of one `pip install` argument list."""
    requirements: list[Requirement] = []
    options: list[str] = []
    folders: list[str] = []
    takes_value = {"-c", "-r", "--constraint", "--requirement", "-i", "--index-url", "--target"}
    skip = False
    for word in arguments:
        if skip:
            options.append(word)
            skip = False
        elif word.startswith("-"):
            options.append(word)
            skip = word in takes_value
        elif word.startswith(("/", ".")):
            folders.append(word)
        else:
            requirements.append(Requirement(word))
    return requirements, options, folders


# --- the project's lock and its dependency graph -----------------------------------------------


def constraints(python_version: str = "3.11") -> dict[str, str]:
    """The project's lock for that Python (`constraints/py3.X.txt`) as {canonical name: version}."""
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints" / f"py{python_version}.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def closure(requirements: Iterable[Requirement], python_version: str) -> set[str]:
    """Every distribution `pip install` brings for these requirements on that Python (canonical names).

    The dependency graph is read from the installed distributions' metadata; a distribution not
    installed here contributes its name only.
    """
    environment = default_environment()
    environment.update(python_version=python_version, python_full_version=f"{python_version}.0")
    seen: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in requirements]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        key = name + "[" + ",".join(sorted(extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            child = Requirement(text)
            if child.marker is not None and not any(
                child.marker.evaluate({**environment, "extra": extra}) for extra in (extras or {""})
            ):
                continue
            todo.append((child, frozenset(child.extras)))
    return {key.split("[", 1)[0] for key in seen}


# --- what the code imports ---------------------------------------------------------------------

#: Modules provided by Triton's Python backend inside the stub, not by a package.
TRITON_PROVIDED = {"triton_python_backend_utils", "c_python_backend_utils"}


def third_party_imports(files: Iterable[Path], local: set[str]) -> tuple[set[str], set[str]]:
    """(required, optional) top-level modules imported by these files, neither stdlib nor `local`.

    An import inside a `try` whose handler catches ImportError (or a base of it) is optional; one under
    `if TYPE_CHECKING:` is ignored.
    """
    required: set[str] = set()
    optional: set[str] = set()
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, guarded in _imports(tree, guarded=False):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if node.level == 0
                else []
            )
            for name in names:
                top = name.split(".", 1)[0]
                if top and top not in sys.stdlib_module_names and top not in local | TRITON_PROVIDED:
                    (optional if guarded else required).add(top)
    return required, optional - required


def _imports(node: ast.AST, guarded: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            yield from (pair for stmt in child.orelse for pair in _imports_of(stmt, guarded))
            continue
        if isinstance(child, ast.Try):
            catches = {ast.unparse(h.type) if h.type is not None else "" for h in child.handlers}
            import_guard = (
                any(
                    word in catch
                    for catch in catches
                    for word in ("ImportError", "ModuleNotFoundError", "Exception", "BaseException")
                )
                or "" in catches
            )
            for stmt in child.body:
                yield from _imports_of(stmt, guarded or import_guard)
            for part in (*child.handlers, *child.orelse, *child.finalbody):
                yield from _imports_of(part, guarded)
            continue
        yield from _imports_of(child, guarded)


def _imports_of(node: ast.AST, guarded: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, guarded
    else:
        yield from _imports(node, guarded)


def distributions_of(module: str) -> set[str]:
    """Canonical names of the installed distributions that provide a top-level module."""
    return _providers().get(module, set())


@functools.cache
def _providers() -> dict[str, set[str]]:
    """{top-level module: distributions}, from ``top_level.txt`` or else the distribution's RECORD, as
    Python 3.11's ``packages_distributions`` reads them (3.10's reads only ``top_level.txt``, which
    wheels built by e.g. pdm-backend or hatchling lack)."""
    found: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions():
        declared = (dist.read_text("top_level.txt") or "").split()
        names = declared or {_top_level(file) for file in dist.files or ()}
        for name in names:
            if "." not in name:
                found.setdefault(name, set()).add(canonicalize_name(dist.metadata["Name"]))
    return found


def _top_level(file: importlib.metadata.PackagePath) -> str:
    return file.parts[0] if len(file.parts) > 1 else inspect.getmodulename(str(file)) or str(file)


# --- what every deployment agrees on -----------------------------------------------------------

#: Paths inside the tritonserver container (docker/triton.Dockerfile).
REPOSITORY = "/opt/ruth/model_repository"
ENVS = "/opt/ruth/envs"
BACKENDS = "/opt/tritonserver/backends"
#: Triton's own ports inside the container or pod (its defaults).
TRITON_HTTP, TRITON_GRPC, TRITON_METRICS = 8000, 8001, 8002
#: Seconds Triton waits for in-flight requests at shutdown; the orchestrator's grace is longer.
EXIT_TIMEOUT_S = 25
#: The uid both containers run as, so that the sidecar may signal a hung stub.
RUNTIME_UID = 10001
#: NGC container release of each Triton server version (the embedded one is tritonclient's).
NGC_RELEASE = {"2.51": "24.10"}


def expected_triton_command() -> list[str]:
    """The tritonserver command line of every container deployment, from the one list of flags."""
    from ruthgen.embedded.flags import ALL_MODELS, server_args

    return [
        "tritonserver",
        *server_args(
            REPOSITORY,
            BACKENDS,
            "0.0.0.0",
            TRITON_HTTP,
            TRITON_GRPC,
            TRITON_METRICS,
            ALL_MODELS,
            exit_timeout_s=EXIT_TIMEOUT_S,
        ),
    ]


def ngc_release() -> str:
    """The NGC release matching the pinned Triton client/server version (24.10 for 2.51.x)."""
    major, minor, *_ = constraints()["tritonclient"].split(".")
    return NGC_RELEASE[f"{major}.{minor}"]


def local_modules(entries: Iterable[Path], packages: set[str]) -> set[Path]:
    """The project files reachable by imports (at any depth of the code) from the entry files."""
    todo = list(entries)
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen or not path.exists():
            continue
        seen.add(path)
        package = path.parent.relative_to(ROOT).parts
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package[: len(package) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                if target.split(".", 1)[0] in packages:
                    todo.extend(_module_files(target))
    return seen


def _module_files(dotted: str) -> list[Path]:
    parts = dotted.split(".")
    files = [ROOT.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts) + 1)]
    files.append(ROOT.joinpath(*parts).with_suffix(".py"))
    return [f for f in files if f.exists()]


_PROBE = """
import json, sys
baseline = {n.split(".")[0] for n in sys.modules}
from ruthgen.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    files = sorted({getattr(m, "__file__", None) or "" for n, m in list(sys.modules.items())
                    if n.split(".")[0] == "ruthgen"} - {""})
    tops = sorted({n.split(".")[0] for n in sys.modules} - baseline)
    print("\\nPROBE" + json.dumps({"files": files, "modules": tops}))
"""


def generator_imports(arguments: list[str], cwd: Path) -> tuple[list[Path], set[str]]:
    """Run `ruthgen <arguments>` in a fresh interpreter: (ruthgen files loaded, top-level modules)."""
    import json
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *arguments], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.rsplit("\nPROBE", 1)[1])
    return [Path(f) for f in report["files"]], set(report["modules"])
