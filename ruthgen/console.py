"""What the commands print for people: ``rich`` tables, coloured on a terminal and plain aligned text
elsewhere (a pipe, a log, a test), where nothing is wrapped and no line ends in spaces; and the
progress of long commands (:func:`progress_for`): live rows on a terminal, a line per step elsewhere."""

from __future__ import annotations

import io
import sys
import threading
from typing import IO, Any

from rich.console import Console
from rich.progress import Progress as RichRows
from rich.progress import ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from ruthgen.progress import PlainProgress, Progress

#: The style of a state word in tables: green when serving, red when broken, yellow on the way.
STATE_STYLES = {"READY": "green", "VALID": "green", "INVALID": "red", "UNAVAILABLE": "red", "FAILED": "red"}


def table(*columns: str) -> Table:
    """A borderless table with these column headers, aligned as the commands always printed them."""
    made = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", highlight=False)
    for column in columns:
        made.add_column(column, overflow="fold")
    return made


def state(text: str) -> Text:
    """A state word in its style (plain text loses it)."""
    return Text(text, style=STATE_STYLES.get(text, "yellow"))


def add_row(to: Table, *cells: str | Text) -> None:
    """A row of literal text (no markup is read in it) and styled words."""
    to.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))


def is_terminal(stream: IO[str]) -> bool:
    return bool(getattr(stream, "isatty", None)) and stream.isatty()


def plain(renderable: Any) -> str:
    """``renderable`` as plain text: as wide as it needs, without colours or trailing spaces."""
    console = Console(file=io.StringIO(), width=100_000, color_system=None, highlight=False)
    with console.capture() as captured:
        console.print(renderable)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())


def show(renderable: Any, stream: IO[str] | None = None) -> None:
    """Print ``renderable`` on ``stream`` (stdout): rich on a terminal, :func:`plain` text otherwise."""
    stream = stream or sys.stdout
    if is_terminal(stream):
        Console(file=stream, highlight=False).print(renderable)
    else:
        stream.write(plain(renderable) + "\n")
        stream.flush()


class _Mark(ProgressColumn):
    """A spinner while the subject runs, then a tick or a cross."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(width=1, no_wrap=True))
        self._spinner = SpinnerColumn()

    def render(self, task: Task) -> Text:
        if not task.finished:
            return self._spinner.render(task)  # type: ignore[return-value]
        return Text("✓", style="green") if task.fields.get("ok", True) else Text("✗", style="red")


class RichProgress(Progress):
    """Live rows on a terminal: mark, subject, step and detail, time taken."""

    def __init__(self, console: Console) -> None:
        self._rows = RichRows(
            _Mark(),
            TextColumn(
                "{task.fields[subject]}", style="bold", markup=False, table_column=Column(no_wrap=True)
            ),
            TextColumn(
                "{task.description}", markup=False,
                table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis"),
            ),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            expand=True,
        )
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()
        self._started = False

    def step(self, subject: str, step: str, detail: str = "") -> None:
        text = f"{step} {detail}" if detail else step
        with self._lock:
            if not self._started:
                self._rows.start()
                self._started = True
            task = self._tasks.get(subject)
            if task is None:
                self._tasks[subject] = self._rows.add_task(text, total=None, subject=subject, ok=True)
            else:
                self._rows.update(task, description=text)

    def done(self, subject: str, outcome: str, ok: bool = True) -> None:
        self.step(subject, outcome)
        with self._lock:
            task = self._tasks.pop(subject)
            self._rows.update(task, total=1, completed=1, ok=ok)
            self._rows.stop_task(task)

    def close(self) -> None:
        with self._lock:
            if self._started:
                self._rows.stop()
                self._started = False


def progress_for(stream: IO[str], quiet: bool = False) -> Progress:
    """Rich rows when ``stream`` is a terminal, plain lines otherwise, nothing when ``quiet``."""
    if quiet:
        return Progress()
    if is_terminal(stream):
        return RichProgress(Console(file=stream, highlight=False))
    return PlainProgress(stream)
