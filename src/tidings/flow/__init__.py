"""Flow control: what may start, when, and how many at once.

``config`` reads a function's settings (native or from an Inngest SDK's registration) into a
``FlowControl``; ``routing`` applies what is decided when an event creates a run (rate limit,
idempotency, debounce, batching, singleton, priority, ``cancel_on``); ``admission`` applies what
is decided when a worker claims a run (timeouts, throttle, concurrency) and what a call's end
releases. All state lives in the database, so every limit holds across worker processes.
"""
