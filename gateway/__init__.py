"""launch-gateway: call Scale Launch model endpoints over gRPC."""

from __future__ import annotations

__version__ = "0.1.0"
