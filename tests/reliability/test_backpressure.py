"""A slow reader holds the upstream back: the gateway buffers a small, bounded amount per stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from launch_gateway.testing.local_launch import EndpointSpec
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import StackFactory
from tests.waiting import wait_for

TOTAL = 1_000_000
PAYLOAD = "x" * 200


async def test_a_paused_reader_stops_the_upstream(make_stack: StackFactory) -> None:
    produced = 0

    async def firehose() -> AsyncIterator[dict[str, object]]:
        nonlocal produced
        for i in range(TOTAL):
            produced += 1
            yield {"i": i, "pad": PAYLOAD}

    stack = await make_stack([EndpointSpec("firehose", "streaming", firehose)])
    request = pb.StreamPredictRequest(endpoint_name="firehose", request=pb.EndpointRequest(args_json="{}"))
    call = stack.stub.StreamPredict(request, timeout=60)
    await call.read()  # the stream is flowing; now the reader pauses
    # The buffers between fill for a while (TCP and HTTP/2 windows grow); wait, bounded, until the
    # upstream has produced nothing for a second.
    last_change = (produced, time.monotonic())

    def quiet_for_a_second() -> bool:
        nonlocal last_change
        if produced != last_change[0]:
            last_change = (produced, time.monotonic())
        return time.monotonic() - last_change[1] >= 1.0

    await wait_for(quiet_for_a_second, within=10, every=0.25, what="the upstream to produce nothing for a second")
    first = produced
    await asyncio.sleep(0.5)  # an absence: nothing can signal that production stays stopped
    held = produced
    # What sits between the model and the paused reader (two loopback TCP buffers, the HTTP/2 flow-control
    # window, aiohttp's read buffer, the local server's write buffer) is some MB, and it stops growing;
    # a million events of ~230 bytes would be ~230 MB if the gateway read on regardless.
    assert held < TOTAL // 20
    assert held * (len(PAYLOAD) + 30) < 16 * 1024 * 1024
    assert held - first < TOTAL // 100  # filled: the upstream has (all but) stopped
    # Reading again lets the stream continue.
    for _ in range(held + 1000):  # what was held is read, and production resumes
        await call.read()
        if produced > held:
            break
    assert produced > held
    call.cancel()
