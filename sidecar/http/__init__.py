"""The sidecar's HTTP endpoints: health probes, status, capabilities, metrics, admin rescan."""

from sidecar.http.app import create_app

__all__ = ["create_app"]
