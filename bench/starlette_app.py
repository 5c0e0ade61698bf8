"""A minimal pub/sub SSE server on sse-starlette: the benchmark's Python peer.

Written the idiomatic way: every stream owns an unbounded ``asyncio.Queue`` in
its topic's set; ``POST /publish?topic=T`` puts the body on each of those
queues and the stream's generator yields it as an SSE event. There is no
replay buffer, so a reconnecting client cannot resume (no ``Last-Event-ID``).

    uvicorn bench.starlette_app:app --port 8000
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

# Keep-alive comment interval, matching the heartbeat the suite gives unifrost.
PING_SECONDS = 60

subscribers: defaultdict[str, set[asyncio.Queue[str]]] = defaultdict(set)


async def publish(request: Request) -> Response:
    """``POST /publish?topic=T``: hand the body to every stream of ``T``."""
    topic = request.query_params.get("topic")
    if not topic:
        return PlainTextResponse("missing ?topic=", status_code=400)
    data = (await request.body()).decode("utf-8", errors="replace")
    for queue in subscribers.get(topic, ()):
        queue.put_nowait(data)
    return Response(status_code=202)


async def events(request: Request) -> Response:
    """``GET /events?topic=T``: one SSE stream of ``T``'s messages."""
    topic = request.query_params.get("topic")
    if not topic:
        return PlainTextResponse("missing ?topic=", status_code=400)
    queue: asyncio.Queue[str] = asyncio.Queue()
    # Subscribed before the response starts, so nothing published after the
    # client sees the headers is missed.
    subscribers[topic].add(queue)

    async def stream() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                yield {"data": await queue.get()}
        finally:
            members = subscribers.get(topic)
            if members is not None:
                members.discard(queue)
                if not members:
                    del subscribers[topic]

    return EventSourceResponse(stream(), ping=PING_SECONDS)


app = Starlette(
    routes=[
        Route("/publish", publish, methods=["POST"]),
        Route("/events", events, methods=["GET"]),
    ]
)
