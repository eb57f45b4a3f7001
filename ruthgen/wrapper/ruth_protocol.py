"""What the sidecar and the generated wrapper agree on, besides the tensors (docs/internals.md).

Triton request parameters (strings unless noted):

* ``frame_id``, ``camera_id``, ``timestamp_ms``: one frame's ids;
* ``sequence_id``, ``sequence_start`` (bool): a temporal model's sequence (Triton reads them);
* ``batch``: a batch request's frames, a JSON list of ``{"frame_id", "camera_id", "timestamp_ms"}``,
  one per element of the FRAME tensor's batch dimension;
* ``frame_lengths``: encoded frames of a batch padded to one length: each frame's own, ``"a,b,..."``;
* ``upstreams``: the results of the model's declared upstreams for this frame, a JSON object
  ``{model_id: result}`` (in a batch, each frame's ``upstreams`` key of its ``batch`` item);
* ``pixels``: ``"<width>x<height>"`` when FRAME holds the frame already decoded, RGB pixels
  (``width * height * 3`` bytes), for a model that takes an encoded format: the sidecar decoded the
  frame once for several models (in a batch, the ``pixels`` key of a ``batch`` item).

The answer of a batch request holds one RESULT element per frame: the frame's JSON, or its error
message ``[RUTH:<CODE>] <phase>: <message>`` (:mod:`ruth_errors`).

The input types and image formats a model may declare (``model.yaml``'s ``input``) are listed here
once: the contract, the generator's CLI, the Triton entries, the wrapper's decoder and the sidecar
all read them from here (the backend-facing ``ImageFormat`` enum names the same formats, a test
checks it).
"""

#: How a model takes frames: one at a time, several per call, or one camera's frames in order.
INPUT_TYPES: tuple[str, ...] = ("frame", "batch", "temporal")
#: Formats the wrapper decodes (FRAME holds the file's bytes) ...
ENCODED_FORMATS: tuple[str, ...] = ("jpeg", "png")
#: ... and formats whose FRAME is already ``height x width x 3`` pixels.
RAW_FORMATS: tuple[str, ...] = ("raw_rgb", "raw_bgr")
INPUT_FORMATS: tuple[str, ...] = ENCODED_FORMATS + RAW_FORMATS

FRAME_ID = "frame_id"
CAMERA_ID = "camera_id"
TIMESTAMP_MS = "timestamp_ms"
SEQUENCE_ID = "sequence_id"
SEQUENCE_START = "sequence_start"
BATCH = "batch"
FRAME_LENGTHS = "frame_lengths"
UPSTREAMS = "upstreams"
PIXELS = "pixels"
