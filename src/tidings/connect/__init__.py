"""Connect: Inngest SDK workers that dial out to Tidings over a WebSocket and take their calls
down it (``docs/CONNECT.md``). ``gateway`` takes the sockets, ``session`` speaks the protocol on
one, ``hub`` routes the HTTP driver's calls to them, ``tokens`` are the session tokens;
``wire.proto`` holds the messages. The HTTP side is ``server/connect_api.py``."""
