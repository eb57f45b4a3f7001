"""The runtime as one stack on one machine: the commands that use both the generator and the sidecar.

``ruthgen up`` (build, the embedded tritonserver, the sidecar owning the plugin folder) and
``ruthgen infer`` (images through the sidecar) live here, so that ``ruthgen`` itself never imports
``sidecar``; :mod:`ruthstack.cli` is the ``ruthgen`` console script.
"""
