"""Connect: Inngest SDK workers that dial out to Tidings over a WebSocket and take their calls
down it (``docs/CONNECT.md``). ``api`` answers ``/v0/connect/start`` and ``/flush``, ``gateway``
takes the sockets, ``session`` speaks the protocol on one, ``hub`` routes the HTTP driver's
calls to them; ``wire.proto`` holds the messages."""
