"""Out-of-memory and CUDA errors of the frameworks a plugin may use, recognised by their types and texts.

The exception classes below carry the names (and bases) of the real ones, in modules named like the
real ones, since neither PyTorch nor CuPy nor ONNX Runtime is installed here; the messages are the
ones those libraries print.
"""

from __future__ import annotations

import pytest
from ruth_errors import GPU_ERROR, RESOURCE_EXHAUSTED, LoadError, load_resource_code, resource_code
from wrapper_testlib import encode, request, solid


def _named(name: str, module: str, base: type[BaseException]) -> type[BaseException]:
    return type(name, (base,), {"__module__": module})


TORCH_OOM = _named("OutOfMemoryError", "torch.cuda", RuntimeError)
CUPY_OOM = _named("OutOfMemoryError", "cupy.cuda.memory", MemoryError)
CUPY_RUNTIME = _named("CUDARuntimeError", "cupy_backends.cuda.api.runtime", RuntimeError)
ORT_RUNTIME = _named("RuntimeException", "onnxruntime.capi.onnxruntime_pybind11_state", Exception)
TF_OOM = _named("ResourceExhaustedError", "tensorflow.python.framework.errors_impl", Exception)

RESOURCE_CASES = [
    (TORCH_OOM("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 15.74 GiB total capacity)"),
     RESOURCE_EXHAUSTED),
    (RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
     RESOURCE_EXHAUSTED),
    (CUPY_OOM("Out of memory allocating 8,589,934,592 bytes (allocated so far: 0 bytes)."),
     RESOURCE_EXHAUSTED),
    (CUPY_RUNTIME("cudaErrorMemoryAllocation: out of memory"), RESOURCE_EXHAUSTED),
    (ORT_RUNTIME("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running "
                 "Conv node. Status Message: bfc_arena.cc:376 onnxruntime::BFCArena::AllocateRawInternal "
                 "Failed to allocate memory for requested buffer of size 1073741824"), RESOURCE_EXHAUSTED),
    (ORT_RUNTIME("CUDA failure 2: out of memory ; GPU=0 ; hostname=h ; expr=cudaMalloc((void**)&p, size);"),
     RESOURCE_EXHAUSTED),
    (TF_OOM("OOM when allocating tensor with shape[1024,1024,1024]"), RESOURCE_EXHAUSTED),
    (MemoryError(), RESOURCE_EXHAUSTED),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), GPU_ERROR),
    (CUPY_RUNTIME("cudaErrorIllegalAddress: an illegal memory access was encountered"), GPU_ERROR),
    (ORT_RUNTIME("CUDA failure 700: an illegal memory access was encountered ; GPU=0"), GPU_ERROR),
    (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_INITIALIZED"), GPU_ERROR),
    (RuntimeError("CUDA error: device-side assert triggered"), GPU_ERROR),
    (ValueError("shapes (3,) and (4,) not aligned"), None),
    (KeyError("boxes"), None),
]


@pytest.mark.parametrize(("exc", "code"), RESOURCE_CASES, ids=lambda v: type(v).__name__ if v else "none")
def test_resource_code_recognises_framework_errors_by_type_and_message(exc, code):
    assert resource_code(exc) == code


def test_resource_code_follows_the_chain_when_a_plugin_wraps_the_error():
    try:
        try:
            raise TORCH_OOM("CUDA out of memory. Tried to allocate 2.00 GiB")
        except RuntimeError as inner:
            raise ValueError("detector failed") from inner
    except ValueError as outer:
        assert resource_code(outer) == RESOURCE_EXHAUSTED


def test_load_error_names_its_resource_code_so_the_sidecar_finds_it():
    error = LoadError("load", "OutOfMemoryError: CUDA out of memory", RESOURCE_EXHAUSTED)
    reason = f"load failed for model 'm': version 1 is at UNAVAILABLE state: Internal: {error}"
    assert load_resource_code(reason) == RESOURCE_EXHAUSTED
    assert load_resource_code(str(LoadError("load", "ValueError: out of range"))) is None


OOM_PLUGIN = {
    "inference.py": """
        class OutOfMemoryError(RuntimeError):
            pass

        OutOfMemoryError.__module__ = "torch.cuda"

        def load(context):
            return None

        def infer(state, frame):
            if frame.frame_id == "big":
                raise OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            if frame.frame_id == "gpu":
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return {"ok": True}
    """
}


def test_runtime_answers_resource_codes_when_the_plugin_runs_out_of_memory(runtime):
    rt = runtime(OOM_PLUGIN, output={"schema": {"ok": {"type": "boolean"}}})
    frame = encode(solid(8, 8, (1, 2, 3)))
    big, gpu, fine = rt.execute([request(frame, frame_id="big"), request(frame, frame_id="gpu"),
                                 request(frame, frame_id="ok")])
    assert (big.code, big.phase) == (RESOURCE_EXHAUSTED, "infer") and "CUDA out of memory" in big.message
    assert (gpu.code, gpu.phase) == (GPU_ERROR, "infer")
    assert fine == '{"ok":true}'


def test_load_out_of_memory_fails_the_load_with_its_resource_code(runtime):
    plugin = {"inference.py": """
        def load(context):
            raise MemoryError("Unable to allocate 64.0 GiB for an array with shape (8589934592,)")

        def infer(state, frame):
            return {"ok": True}
    """}
    with pytest.raises(LoadError) as caught:
        runtime(plugin, output={"schema": {"ok": {"type": "boolean"}}})
    assert caught.value.resource == RESOURCE_EXHAUSTED
    assert load_resource_code(str(caught.value)) == RESOURCE_EXHAUSTED
