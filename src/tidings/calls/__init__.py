"""One call of a function: the host the engine gives it (``host``), the outcome it ends in
(``outcomes``) and the error records it leaves (``error_records``). Below both the SDK and the
engine, so each can import it."""
