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
"""

FRAME_ID = "frame_id"
CAMERA_ID = "camera_id"
TIMESTAMP_MS = "timestamp_ms"
SEQUENCE_ID = "sequence_id"
SEQUENCE_START = "sequence_start"
BATCH = "batch"
FRAME_LENGTHS = "frame_lengths"
UPSTREAMS = "upstreams"
PIXELS = "pixels"
