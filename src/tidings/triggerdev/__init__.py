"""Trigger.dev v2 on Tidings: the official ``@trigger.dev/sdk`` 2.x client talks to this server
unmodified.

- ``keys``: the ``tr_<env>_...`` keys, sealed (the server presents an app its own key);
- ``wire``: the client's bodies in, the records its zod schemas parse out;
- ``events``: v2's event semantics (ids unique for good, re-sending reschedules, cancel);
- ``server/trigger_api.py`` has the routes (``/api/v1/events``, ``/api/v2/events/{id}``, ...
"""
