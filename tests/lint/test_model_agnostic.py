"""No runtime code names a model (docs/architecture.md#invariants, I3, I4, I7).

Every model is served through the same path, so the code of the generator, the sidecar, the stack,
the templates and the backend-facing contract holds no model id: not in an identifier, not in a
string the code uses. Docstrings and comments may show one as an example.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("ruthgen", "ruthstack", "sidecar", "templates")
GENERATED = ROOT / "sidecar" / "_proto"
MODEL_IDS = sorted(p.name for p in (ROOT / "ai" / "models").iterdir() if (p.is_dir() and any(p.iterdir())))


def _docstrings(tree: ast.AST) -> set[int]:
    """The ``id`` of every docstring constant of a module, class or function."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _python_words(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every identifier and every string constant but docstrings."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    words = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            words.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            words.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            words.append((node.lineno, node.attr))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            words.append((node.lineno, node.name))
        elif isinstance(node, ast.arg):
            words.append((node.lineno, node.arg))
        elif isinstance(node, ast.alias):
            words.append((getattr(node, "lineno", 0), node.asname or node.name))
    return words


def _text_words(source: str, comment: str | None) -> list[tuple[int, str]]:
    lines = source.splitlines()
    if comment:
        lines = [line.split(comment, 1)[0] for line in lines]
    return list(enumerate(lines, start=1))


def model_ids_named(path: Path, source: str, model_ids: list[str]) -> list[str]:
    """``path:line: model_id`` for each model id the code names."""
    if path.suffix == ".py":
        words = _python_words(source)
    else:
        words = _text_words(source, "//" if path.suffix in {".proto", ".js"} else None)
    # an underscore separates words here: special_fall_detection_path names fall_detection
    pattern = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, model_ids)) + r")(?![A-Za-z0-9])")
    return [f"{path}:{line}: {m.group(1)}" for line, text in words for m in pattern.finditer(text)]


def runtime_files() -> list[Path]:
    files = [ROOT / "proto" / "ruth" / "airuntime" / "v1" / "airuntime.proto"]
    for top in RUNTIME:
        for path in sorted((ROOT / top).rglob("*")):
            wanted = path.suffix in {".py", ".j2", ".js", ".html"}
            if wanted and path.is_file() and GENERATED not in path.parents:
                files.append(path)
    return files


def test_the_reference_models_are_there_to_look_for():
    assert len(MODEL_IDS) >= 5, MODEL_IDS


def test_no_runtime_code_names_a_model():
    named = []
    for path in runtime_files():
        named += model_ids_named(path.relative_to(ROOT), path.read_text(), MODEL_IDS)
    assert not named, "runtime code names a model:\n" + "\n".join(named)


def test_a_model_named_in_code_is_found_and_one_in_a_docstring_or_comment_is_not():
    source = (
        '"""Serves fall_detection, for example."""\n'
        "def route(model):\n"
        '    """fall_detection is only an example here."""\n'
        "    # fall_detection in a comment\n"
        '    if model == "fall_detection":\n'
        "        return special_fall_detection_path(model)\n"
        '    return "crowd_counter"\n'
    )
    found = model_ids_named(Path("x.py"), source, ["fall_detection", "crowd_count"])
    assert sorted(found) == ["x.py:5: fall_detection", "x.py:6: fall_detection"], found


def test_a_model_named_in_a_template_or_outside_a_proto_comment_is_found():
    template = "{% if model_id == 'person_detection' %}special{% endif %}\n"
    assert model_ids_named(Path("t.j2"), template, ["person_detection"]) == ["t.j2:1: person_detection"]
    proto = "// e.g. person_detection\nstring person_detection_only = 1;\n"
    assert model_ids_named(Path("a.proto"), proto, ["person_detection"]) == ["a.proto:2: person_detection"]
