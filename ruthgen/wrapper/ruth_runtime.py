"""The plugin runtime that runs inside the Triton Python stub (no Triton import here).

:class:`PluginRuntime` reads the entry's manifest record (``ruth_entry.json``), imports and loads
the plugin, runs one warmup inference, then turns each request into
decode -> preprocess -> infer -> postprocess -> schema validation -> JSON. Each phase runs under
its time limit and the isolation guard; a failure becomes a :class:`RuthError` for that request only.

A Triton request carries one frame, or, for a ``batch`` model, a batch (:func:`frame_requests`):
N frames along the batch dimension, described by the ``batch`` and ``frame_lengths`` parameters of
:mod:`ruth_protocol`. The answer of a batch request holds one RESULT element per frame
(:func:`batch_elements`): its JSON, or its error as ``[RUTH:<CODE>] <phase>: <message>``.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import fastjsonschema
import numpy as np
import ruth_loader
from ruth_api import Frame, PluginContext, ScopedLogger, freeze
from ruth_confine import GUARD as GUARD_ONLY
from ruth_confine import Isolation
from ruth_deadline import Deadlines, PhaseTimeout
from ruth_decode import Decoder
from ruth_errors import (
    INFERENCE_ERROR,
    INVALID_INPUT,
    OUTPUT_SCHEMA_VIOLATION,
    POSTPROCESS_ERROR,
    PREPROCESS_ERROR,
    RESOURCE_CODES,
    TIMEOUT,
    LoadError,
    RuthError,
    describe,
    resource_code,
)
from ruth_guard import Guard, Policy
from ruth_metrics import PluginMetrics
from ruth_protocol import BATCH, CAMERA_ID, FRAME_ID, FRAME_LENGTHS, PIXELS, TIMESTAMP_MS, UPSTREAMS

ENTRY_FILE = "ruth_entry.json"
PLUGIN_DIR = "plugin"
LOGGER = logging.getLogger("ruth.runtime")
GUARD = Guard()

DEFAULT_TIMEOUTS_MS = {"preprocess": 1000, "infer": 5000, "postprocess": 1000}
_CONTRACT_TIMEOUT_KEYS = {
    "preprocess": "preprocess_ms",
    "infer": "inference_ms",
    "postprocess": "postprocess_ms",
}
_ENV_TIMEOUT_KEYS = {
    "preprocess": "RUTH_TIMEOUT_PREPROCESS_MS",
    "infer": "RUTH_TIMEOUT_INFERENCE_MS",
    "postprocess": "RUTH_TIMEOUT_POSTPROCESS_MS",
}
LOAD_TIMEOUT_ENV, WARMUP_TIMEOUT_ENV = "RUTH_LOAD_TIMEOUT_MS", "RUTH_WARMUP_TIMEOUT_MS"
DEFAULT_LOAD_TIMEOUT_MS = DEFAULT_WARMUP_TIMEOUT_MS = 60_000
_PHASE_CODES = {"preprocess": PREPROCESS_ERROR, "infer": INFERENCE_ERROR, "postprocess": POSTPROCESS_ERROR}


@dataclass
class FrameRequest:
    """One request as the runtime sees it, whatever transport brought it."""

    frame: np.ndarray | None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    sequence_start: bool = False
    correlation_id: str | None = None


Outcome = str | RuthError  # the RESULT JSON, or the error of that request
_NO_UPSTREAMS: Mapping[str, Any] = MappingProxyType({})

def read_entry(version_dir: Path) -> dict[str, Any]:
    """The entry's manifest record (``ruth_entry.json`` beside the wrapper)."""
    return json.loads((version_dir / ENTRY_FILE).read_text(encoding="utf-8"))


def frame_requests(
    frame: np.ndarray | None,
    parameters: Mapping[str, Any],
    sequence_start: bool = False,
    correlation_id: str | None = None,
) -> list[FrameRequest]:
    """The frames of one Triton request: itself, or the N frames of a batch request."""
    items = parameters.get(BATCH)
    if items is None:
        return [FrameRequest(frame, parameters, sequence_start, correlation_id)]
    try:
        metadata = json.loads(items)
        lengths = parameters.get(FRAME_LENGTHS)
        sizes = [int(n) for n in str(lengths).split(",")] if lengths else None
    except (TypeError, ValueError) as exc:
        raise RuthError(INVALID_INPUT, "decode", f"unreadable batch parameters: {exc}") from None
    count = len(metadata) if isinstance(metadata, list) else -1
    if frame is None or count < 1 or frame.shape[0] != count or (sizes and len(sizes) != count):
        shape = None if frame is None else tuple(frame.shape)
        raise RuthError(INVALID_INPUT, "decode", f"a batch of {count} frames does not match FRAME {shape}")
    return [
        FrameRequest(
            frame[i] if sizes is None else frame[i, : sizes[i]], meta if isinstance(meta, dict) else {}
        )
        for i, meta in enumerate(metadata)
    ]


def batch_elements(outcomes: Sequence[Outcome]) -> list[bytes]:
    """RESULT's elements for a batch request: each frame's JSON, or its error's message."""
    return [(o if isinstance(o, str) else str(o)).encode("utf-8") for o in outcomes]


def phase_timeouts(contract: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, float]:
    """Seconds per phase: defaults < ``timeouts`` of model.yaml < ``RUTH_TIMEOUT_*_MS``."""
    declared = contract.get("timeouts") or {}
    limits = {}
    for phase, default in DEFAULT_TIMEOUTS_MS.items():
        from_env = _env_ms(environ, _ENV_TIMEOUT_KEYS[phase])
        value = from_env or declared.get(_CONTRACT_TIMEOUT_KEYS[phase]) or default
        limits[phase] = float(value) / 1000.0
    return limits


def _env_ms(environ: Mapping[str, str], key: str, default: int = 0) -> int:
    raw = environ.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        LOGGER.warning("ignoring %s=%r: not a whole number of milliseconds", key, raw)
        return default
    return value if value > 0 else default


class PluginRuntime:
    """One model instance: the plugin, its state, its limits and its guard."""

    def __init__(
        self,
        entry: Mapping[str, Any],
        version_dir: Path,
        *,
        device: str = "cpu",
        device_id: int | None = None,
        environ: Mapping[str, str] | None = None,
        metrics_api: Any = None,
        scratch_dir: Path | None = None,
        isolation: Isolation | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        self.entry = entry
        self.contract: Mapping[str, Any] = entry["contract"]
        self.model_id, self.version = str(entry["model_id"]), str(entry["version"])
        self.plugin_dir = (version_dir / PLUGIN_DIR).absolute()
        self.input_type = str(self.contract["input"]["type"])
        self.device = device
        self.device_id = device_id if device == "gpu" else None
        self.metrics = PluginMetrics(self.model_id, self.version, metrics_api)
        self.timeouts = phase_timeouts(self.contract, environ)
        self.load_timeout = _env_ms(environ, LOAD_TIMEOUT_ENV, DEFAULT_LOAD_TIMEOUT_MS) / 1000.0
        self.warmup_timeout = _env_ms(environ, WARMUP_TIMEOUT_ENV, DEFAULT_WARMUP_TIMEOUT_MS) / 1000.0
        network = (self.contract.get("permissions") or {}).get("network", False)
        self.allow_network: bool | list[str] = list(network) if isinstance(network, list) else bool(network)
        self._own_scratch = scratch_dir is None  # made here (tests, tools), removed by close()
        self.scratch_dir = scratch_dir or Path(tempfile.mkdtemp(prefix="ruth-scratch-"))
        self.isolation = isolation or Isolation(GUARD_ONLY, 0, "not confined by the stub")
        self.decoder: Decoder | None = None
        self.context: PluginContext | None = None
        self._package = ruth_loader.package_name(self.model_id, self.version)
        self._modules: ruth_loader.PluginModules | None = None
        self._state: Any = None
        self._validate: Any = None
        self._deadlines = Deadlines()
        self._limits = self.timeouts
        self._post_takes_frame = False

    @classmethod
    def from_version_dir(cls, version_dir: Path, **kwargs: Any) -> PluginRuntime:
        return cls(read_entry(version_dir), version_dir, **kwargs)

    # ---- load ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Import, ``load()`` and warm up the plugin; LoadError names the phase that failed."""
        started = time.monotonic()
        try:
            self._prepare()
            GUARD.install()
            GUARD.activate(Policy(self.plugin_dir, self.scratch_dir, allow_network=self.allow_network))
            with ruth_loader.plugin_on_path(self.plugin_dir):
                self._modules = self._load_step(
                    "import",
                    ruth_loader.import_plugin,
                    self.plugin_dir,
                    self._package,
                    self.contract.get("entry_points") or {},
                )
                self._post_takes_frame = _takes_frame(self._modules.postprocess)
                self.context = self._load_step("config", self._make_context)
                self._state = self._load_step("load", self._modules.load, self.context)
            GUARD.start_serving()
            LOGGER.info(
                "%s:%s loaded in %.0f ms; warming up",
                self.model_id, self.version, (time.monotonic() - started) * 1000,
            )
            warmup_ms = self._warmup()
        except BaseException:
            self.close()
            raise
        LOGGER.info(
            "%s:%s ready in %.0f ms (warmup %.1f ms, decoder %s)",
            self.model_id,
            self.version,
            (time.monotonic() - started) * 1000,
            warmup_ms,
            self.decoder.backend if self.decoder else "-",
        )

    def _prepare(self) -> None:
        try:
            self.decoder = Decoder(self.contract["input"])
            self._validate = fastjsonschema.compile(self.entry["output_json_schema"])
        except Exception as exc:
            raise LoadError("prepare", describe(exc)) from exc

    def _make_context(self) -> PluginContext:
        config = ruth_loader.read_config(self.plugin_dir, self.entry)
        return PluginContext(
            model_id=self.model_id,
            version=self.version,
            model_dir=self.plugin_dir,
            weights_dir=self.plugin_dir / "weights",
            scratch_dir=self.scratch_dir,
            config=freeze(config),
            logger=ScopedLogger(self.model_id, self.version),
            device=self.device,
            device_id=self.device_id,
            metrics=self.metrics,
        )

    def _load_step(self, phase: str, func: Any, *args: Any) -> Any:
        GUARD.take()
        try:
            with self._deadlines.limit(self.load_timeout) as limit:
                value = func(*args)
        except PhaseTimeout:
            raise LoadError(phase, f"exceeded {self.load_timeout * 1000:.0f} ms") from None
        except (Exception, SystemExit) as exc:
            denied = GUARD.take()
            if denied:
                raise LoadError(phase, _denied(denied)) from exc
            raise LoadError(phase, describe(exc, self.plugin_dir), resource_code(exc)) from exc
        denied = GUARD.take()
        if denied:
            raise LoadError(phase, _denied(denied))
        if limit.exceeded:
            raise LoadError(phase, f"exceeded {self.load_timeout * 1000:.0f} ms")
        return value

    def _warmup(self) -> float:
        assert self.decoder is not None
        request = FrameRequest(
            frame=self.decoder.synthetic(),
            parameters={"camera_id": "warmup", "frame_id": "warmup", "timestamp_ms": 0},
            sequence_start=True,
            correlation_id="warmup",
        )
        self._limits = {p: max(s, self.warmup_timeout) for p, s in self.timeouts.items()}
        started = time.monotonic()
        try:
            (outcome,) = self.execute([request])
        finally:
            self._limits = self.timeouts
        if isinstance(outcome, RuthError):
            resource = outcome.code if outcome.code in RESOURCE_CODES else None
            raise LoadError(f"warmup.{outcome.phase}", outcome.message, resource)
        return (time.monotonic() - started) * 1000

    # ---- execute ------------------------------------------------------------------------------

    def execute(self, requests: Sequence[FrameRequest], timings: list[float] | None = None) -> list[Outcome]:
        """One outcome per request, in order; never raises for a plugin's failure.

        ``timings``, when given, gets each request's own time in milliseconds appended (decode,
        pre, infer, post and validation): not the time it waited behind the requests before it.
        The frames of a ``batch`` model share one ``infer``: each gets the whole batch's time.
        """
        if self.input_type == "batch":
            started = time.perf_counter()
            outcomes = self._execute_batch(requests)
            if timings is not None:
                timings.extend([(time.perf_counter() - started) * 1000.0] * len(outcomes))
            return outcomes
        if timings is None:
            return [self._execute_one(request) for request in requests]
        outcomes = []
        for request in requests:
            started = time.perf_counter()
            outcomes.append(self._execute_one(request))
            timings.append((time.perf_counter() - started) * 1000.0)
        return outcomes

    def _execute_one(self, request: FrameRequest) -> Outcome:
        try:
            frame = self._frame(request)
            inputs = self._preprocess(frame)
            outputs = self._call("infer", self._modules.infer, self._state, inputs)
            return self._finish(outputs, frame)
        except RuthError as err:
            return err

    def _execute_batch(self, requests: Sequence[FrameRequest]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(requests)
        ready: list[tuple[int, Frame, Any]] = []
        for i, request in enumerate(requests):
            try:
                frame = self._frame(request)
                ready.append((i, frame, self._preprocess(frame)))
            except RuthError as err:
                outcomes[i] = err
        if ready:
            try:
                outputs = self._call("infer", self._modules.infer, self._state, [x for _, _, x in ready])
                if not isinstance(outputs, (list, tuple)) or len(outputs) != len(ready):
                    expected = f"a list of {len(ready)} outputs"
                    raise RuthError(
                        INFERENCE_ERROR, "infer", f"expected {expected}, got {_shape_of(outputs)}"
                    )
            except RuthError as err:
                outputs = [err] * len(ready)
            for (i, frame, _), output in zip(ready, outputs, strict=True):
                try:
                    outcomes[i] = output if isinstance(output, RuthError) else self._finish(output, frame)
                except RuthError as err:
                    outcomes[i] = err
        return [o for o in outcomes if o is not None]

    def _frame(self, request: FrameRequest) -> Frame:
        assert self.decoder is not None
        params = request.parameters
        image = self.decoder.decode(request.frame, params.get(PIXELS))
        camera_id = _text(params.get(CAMERA_ID)) or request.correlation_id
        return Frame(
            image=image,
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            format=self.decoder.format,
            camera_id=camera_id,
            frame_id=_text(params.get(FRAME_ID)),
            timestamp_ms=_timestamp(params.get(TIMESTAMP_MS)),
            sequence_start=bool(request.sequence_start),
            upstreams=_upstreams(params.get(UPSTREAMS)),
        )

    def _preprocess(self, frame: Frame) -> Any:
        if self._modules.preprocess is None:
            return frame
        return self._call("preprocess", self._modules.preprocess, frame, self.context)

    def _finish(self, outputs: Any, frame: Frame) -> str:
        post = self._modules.postprocess
        if post is not None:
            if self._post_takes_frame:
                outputs = self._call("postprocess", post, outputs, self.context, frame)
            else:
                outputs = self._call("postprocess", post, outputs, self.context)
        try:
            result = _jsonable(outputs)
            self._validate(result)
            return json.dumps(result, separators=(",", ":"), allow_nan=False)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise RuthError(OUTPUT_SCHEMA_VIOLATION, "validate", exc.message) from None
        except (TypeError, ValueError) as exc:
            raise RuthError(OUTPUT_SCHEMA_VIOLATION, "validate", f"the result is not JSON: {exc}") from None

    def _call(self, phase: str, func: Any, *args: Any) -> Any:
        seconds = self._limits[phase]
        GUARD.take()
        try:
            with self._deadlines.limit(seconds) as limit:
                value = func(*args)
        except PhaseTimeout:
            GUARD.take()
            raise RuthError(TIMEOUT, phase, f"exceeded {seconds * 1000:.0f} ms") from None
        except (Exception, SystemExit) as exc:
            denied = GUARD.take()
            if denied:
                raise RuthError(_PHASE_CODES[phase], phase, _denied(denied)) from exc
            code = resource_code(exc) or _PHASE_CODES[phase]
            raise RuthError(code, phase, describe(exc, self.plugin_dir)) from exc
        denied = GUARD.take()
        if limit.exceeded:
            raise RuthError(TIMEOUT, phase, f"exceeded {seconds * 1000:.0f} ms")
        if denied:
            raise RuthError(_PHASE_CODES[phase], phase, _denied(denied))
        return value

    # ---- finalize -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop guarding, forget the plugin's modules; the process may load another plugin after."""
        GUARD.deactivate()
        self._deadlines.close()
        ruth_loader.unload(self.plugin_dir, self._package)
        self._modules, self._state = None, None
        self.metrics.close()
        if self._own_scratch:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)


def _denied(reasons: list[str]) -> str:
    return f"permission denied: {reasons[0]}"


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _upstreams(value: Any) -> Mapping[str, Any]:
    """The upstreams' results of one frame: the ``upstreams`` parameter's JSON (a batch item's own
    mapping), ``{model_id: result}``."""
    if value is None or value == "":
        return _NO_UPSTREAMS
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise RuthError(INVALID_INPUT, "decode", f"unreadable upstreams parameter: {exc}") from None
    if not isinstance(value, dict):
        kind = type(value).__name__
        raise RuthError(INVALID_INPUT, "decode", f"the upstreams parameter is not a mapping: {kind}")
    return value


def _takes_frame(func: Any) -> bool:
    """True when ``postprocess`` takes the frame too: ``postprocess(outputs, context, frame)``."""
    if func is None:
        return False
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


def _timestamp(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RuthError(INVALID_INPUT, "decode", f"timestamp_ms must be an integer, got {value!r}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"object keys must be strings, got {type(key).__name__}")
    return key


def _shape_of(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    return type(value).__name__
