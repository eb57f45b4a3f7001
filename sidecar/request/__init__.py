"""The request path: routes, the one prepare -> send -> settle pipeline, the stream session, the
Triton messages and image headers. It knows nothing of the lifecycle: the control plane publishes a
:class:`~sidecar.request.routes.Route` per model version and hears every outcome through a callback."""
