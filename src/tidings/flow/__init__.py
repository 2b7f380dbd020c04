"""Flow control: what may start, when, and how many at once, named by when it acts.

``functions/flow_config.py`` reads a function's settings (native or from an Inngest SDK's
registration) into a ``FlowControl``; ``at_route`` applies what is decided when an event creates a
run (rate limit, idempotency, debounce, batching, singleton, priority, ``cancel_on``);
``at_claim`` applies what is decided when a worker claims a run (timeouts, throttle, concurrency)
and what a call's end releases; ``cancel`` cancels runs (``cancel_on``, timeouts, the API);
``status`` says why a run waits. All state lives in the database, so every limit holds across
worker processes.
"""
