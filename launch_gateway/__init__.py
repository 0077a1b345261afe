"""launch-gateway: call Scale Launch model endpoints over gRPC.

The package's top level is the Python SDK, shaped like the Launch client:

    from launch_gateway import GatewayClient, EndpointRequest
    endpoint = GatewayClient("localhost:50051").get_model_endpoint("my-endpoint")
    response = endpoint.predict(EndpointRequest(args={"x": 1}))

The asyncio flavour is `launch_gateway.client.aio`. The server lives in `launch_gateway.server.app` and is imported
only by the `launch-gateway` command.
"""

from __future__ import annotations

from launch_gateway.client import *  # noqa: F403 - the SDK is the package's top level
from launch_gateway.client import __all__ as __all__

__version__ = "0.1.0"
