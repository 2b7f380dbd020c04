"""Apps served by the official Inngest SDKs: what they register (``config``), the record of
each app (``records``), and syncing them (``sync``: the register endpoint's logic, pinging an
app, the dev server's polling and discovery). Their signing keys are in ``tidings.keys``; the
engine calls their functions through ``engine.http_driver``."""
