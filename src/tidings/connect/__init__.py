"""Connect: Inngest SDK workers that dial out to Tidings over a WebSocket and take their calls
down it (``docs/CONNECT.md``). ``gateway``
takes the sockets, ``session`` speaks the protocol on one, ``hub`` routes the HTTP driver's
calls to them; ``wire.proto`` holds the messages."""
