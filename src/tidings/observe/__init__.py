"""What an operator sees of a Tidings process: log set-up and fields (``logs``), the options
that set them (``options``), the access log (``access``).

It sits at the bottom of the layers and knows nothing of the flow: the engine
(``engine/telemetry.py``), the drivers and the server report through a handful of calls into
it, with plain values.
"""
