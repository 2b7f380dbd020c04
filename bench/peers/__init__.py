"""The peers the engine benchmarks compare Tidings with: Celery (Redis) and DBOS."""
