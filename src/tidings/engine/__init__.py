"""The engine: the run queue, the executor that drives runs step by step, and its drivers."""
