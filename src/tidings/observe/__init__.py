"""What an operator sees of a Tidings process: logs (``logs``), and the options that set them
(``options``).

The engine, the drivers and the server report through a handful of calls into this package;
nothing here reaches back into them.
"""
