"""The lifecycle of one model version: states, allowed transitions, history (docs/architecture.md#states).

Every ``(model_id, version)`` the runtime knows has one :class:`ModelRecord` in the
:class:`ModelRegistry`. Its state changes only through :meth:`ModelRecord.transition`, which refuses
a transition that :data:`TRANSITIONS` does not allow (:class:`IllegalTransition`) and keeps a bounded
history of ``(from, to, at, reason)``.

The graph's transitions beyond the plain path, for rescans and recovery (also in docs/lifecycle.md):

* ``INVALID -> DISCOVERED``: the folder changed, a rescan validates it again (INVALID is terminal
  for one set of files, not for the folder);
* ``INVALID -> UNLOADED``: an invalid folder was deleted;
* ``ERROR -> LOADING`` and ``LOADING -> ERROR``: the automatic recovery reload (a failed
  recovery attempt stays in ERROR for the next retry).

A reload of a READY model (new files, or a zero-drop recovery) keeps the record READY: the new copy
loads beside the serving one, and only the routing switches (see :mod:`sidecar.control.manager`).
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ruthgen.interface import ModelContract, TritonFacts

if TYPE_CHECKING:
    from sidecar.control.isolation import Isolation

LOGGER = logging.getLogger(__name__)


class ModelState(str, enum.Enum):
    DISCOVERED = "DISCOVERED"
    VALIDATING = "VALIDATING"
    INVALID = "INVALID"
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    ERROR = "ERROR"
    UNLOADING = "UNLOADING"
    UNLOADED = "UNLOADED"



def iso_time(at: float) -> str:
    """``at`` (Unix seconds) as ISO 8601 UTC with milliseconds, ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"


TRANSITIONS: dict[ModelState, frozenset[ModelState]] = {
    ModelState.DISCOVERED: frozenset({ModelState.VALIDATING}),
    ModelState.VALIDATING: frozenset({ModelState.LOADING, ModelState.INVALID}),
    # both added: a rescan of a changed or deleted folder
    ModelState.INVALID: frozenset({ModelState.DISCOVERED, ModelState.UNLOADED}),
    # ERROR added: a failed recovery reload
    ModelState.LOADING: frozenset({ModelState.READY, ModelState.FAILED, ModelState.ERROR}),
    ModelState.READY: frozenset({ModelState.ERROR, ModelState.UNLOADING}),
    ModelState.FAILED: frozenset({ModelState.UNLOADING}),
    # LOADING added: the recovery reload
    ModelState.ERROR: frozenset({ModelState.UNLOADING, ModelState.LOADING}),
    ModelState.UNLOADING: frozenset({ModelState.UNLOADED}),
    ModelState.UNLOADED: frozenset({ModelState.DISCOVERED}),
}
DEFAULT_HISTORY = 32


class IllegalTransition(RuntimeError):
    """A state change that the lifecycle does not allow."""


@dataclass(frozen=True)
class Transition:
    source: ModelState | None
    target: ModelState
    at: float  # unix time, seconds
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.source.value if self.source else None,
            "to": self.target.value,
            "at": iso_time(self.at),
            "reason": self.reason,
        }


@dataclass
class RejectedChange:
    """A new copy of a serving model that was refused; the running copy keeps serving."""

    reason: str
    at: float
    source_digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "at": iso_time(self.at), "source_digest": self.source_digest}


@dataclass
class ModelRecord:
    """Everything the runtime keeps about one model version, besides its request health."""

    model_id: str
    version: str
    state: ModelState = ModelState.DISCOVERED
    reason: str = "discovered"
    since: float = field(default_factory=time.time)
    history: deque[Transition] = field(default_factory=lambda: deque(maxlen=DEFAULT_HISTORY))
    #: what the contract declares (None until validated)
    contract: ModelContract | None = None
    #: what the serving copy's config.pbtxt says, and the JSON Schema of its results
    triton: TritonFacts | None = None
    output_schema: dict[str, Any] | None = None
    #: the Triton name requests go to (None when nothing is loaded)
    active_name: str | None = None
    source_digest: str | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    rejected_change: RejectedChange | None = None
    recovery_attempts: int = 0
    fps_capacity: float | None = None
    #: what the runtime finds questionable but not wrong (e.g. limits longer than it allows)
    warnings: list[str] = field(default_factory=list)
    #: how the serving copy's stub is confined, as it reported (None until known)
    isolation: Isolation | None = None
    _listener: Callable[[ModelRecord, Transition], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.history:
            self.history.append(Transition(None, self.state, self.since, self.reason))

    @property
    def key(self) -> tuple[str, str]:
        return (self.model_id, self.version)

    @property
    def input_type(self) -> str | None:
        return self.contract.input.type if self.contract else None

    @property
    def output_schema_version(self) -> str | None:
        """Identifies the output schema (declared, or a hash of it): it changes when the shape does."""
        return self.contract.output_schema_version() if self.contract else None

    @property
    def inference_time_hint_ms(self) -> float | None:
        return self.contract.performance.inference_time_hint_ms if self.contract else None

    @property
    def max_batch_size(self) -> int:
        if self.triton is not None:
            return self.triton.max_batch_size
        return self.contract.performance.recommended_batch_size if self.contract else 0

    @property
    def frames_per_request(self) -> int:
        """The most frames one request may carry: the batch of a ``batch`` model, else one."""
        return max(1, self.max_batch_size) if self.input_type == "batch" else 1

    @property
    def instance_count(self) -> int:
        if self.triton is not None:
            return self.triton.instance_count
        return self.contract.performance.instance_count if self.contract else 1

    def can_transition(self, target: ModelState) -> bool:
        return target in TRANSITIONS[self.state]

    def transition(self, target: ModelState, reason: str) -> Transition:
        """Move to ``target``; raise :class:`IllegalTransition` when the lifecycle forbids it.

        Every state carries a reason: an empty one (a caller's bug) is replaced by one that says so,
        so that INVALID, FAILED and ERROR never reach the backend without a word.
        """
        if not self.can_transition(target):
            raise IllegalTransition(
                f"{self.model_id}:{self.version}: {self.state.value} -> {target.value} is not allowed "
                f"(allowed: {', '.join(sorted(s.value for s in TRANSITIONS[self.state])) or 'none'})"
            )
        if not reason or not reason.strip():
            LOGGER.error("%s:%s -> %s without a reason", self.model_id, self.version, target.value)
            reason = f"{target.value.lower()} (no reason was given: a runtime bug, please report it)"
        step = Transition(self.state, target, time.time(), reason)
        self.state, self.reason, self.since = target, reason, step.at
        self.history.append(step)
        if target in (ModelState.INVALID, ModelState.FAILED, ModelState.ERROR):
            self.note_error(reason, step.at)
        if self._listener is not None:
            self._listener(self, step)
        return step

    def note_error(self, message: str, at: float | None = None) -> None:
        self.last_error, self.last_error_at = message, at if at is not None else time.time()

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "version": self.version,
            "state": self.state.value,
            "reason": self.reason,
            "since": iso_time(self.since),
            "input_type": self.input_type,
            "max_batch_size": self.frames_per_request,
            "output_schema_version": self.output_schema_version,
            "triton_name": self.active_name,
            "last_error": self.last_error,
            "rejected_change": self.rejected_change.to_dict() if self.rejected_change else None,
            "recovery_attempts": self.recovery_attempts,
            "warnings": list(self.warnings),
            "isolation": self.isolation.to_dict() if self.isolation else None,
            "history": [t.to_dict() for t in self.history],
        }


class ModelRegistry:
    """The catalogue of model versions and their lifecycle; tells listeners about every transition."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        self._records: dict[tuple[str, str], ModelRecord] = {}
        self._history = history
        self._listeners: list[Callable[[ModelRecord, Transition], None]] = []

    def add_listener(self, listener: Callable[[ModelRecord, Transition], None]) -> None:
        self._listeners.append(listener)

    def get(self, model_id: str, version: str) -> ModelRecord | None:
        return self._records.get((model_id, version))

    def add(self, model_id: str, version: str, reason: str = "discovered") -> ModelRecord:
        """A new record in DISCOVERED; raise ``ValueError`` if the version is already known."""
        if (model_id, version) in self._records:
            raise ValueError(f"{model_id}:{version} is already registered")
        record = ModelRecord(
            model_id, version, reason=reason, history=deque(maxlen=self._history), _listener=self._notify
        )
        self._records[record.key] = record
        self._notify(record, record.history[-1])
        return record

    def __iter__(self) -> Iterator[ModelRecord]:
        return iter(sorted(self._records.values(), key=lambda r: r.key))

    def __len__(self) -> int:
        return len(self._records)

    def _notify(self, record: ModelRecord, step: Transition) -> None:
        for listener in self._listeners:
            listener(record, step)

