"""The baseline: a bare ASGI app that reads the request body and answers a fixed JSON body, run
on the same uvicorn stack as ``tidings dev`` (uvloop, httptools, no access log, one worker).

``python -m bench.bare --port 8000``
"""

from __future__ import annotations

import argparse
from typing import Any

BODY = b'{"ids":["01J00000000000000000000000"],"status":200}'
HEALTH = b'{"status":200,"message":"OK"}'
REPLY = {
    False: [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))],
    True: [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(HEALTH))],
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    health = scope["path"] == "/health"
    await send({"type": "http.response.start", "status": 200, "headers": REPLY[health]})
    await send({"type": "http.response.body", "body": HEALTH if health else BODY})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools",
                lifespan="off", access_log=False, log_level="warning", workers=1)


if __name__ == "__main__":
    main()
