"""P12's P2 in one process: what ``encrypt_data`` costs a 500-event request where P12's noise
is smaller. The ASGI app (``tidings dev``'s, on a fresh SQLite file) is called directly with
``POST /e/{key}`` by 4 tasks at a time, no sockets; sealing is switched off and on (the
default setting, as ``--encrypt-data`` sets it) between alternating rounds in the same
process, pinned to the server's core, and each round's CPU per event is split by thread
(``bench.harness.threads_cpu``). To compare two checkouts, run it on each in turn
(``PYTHONPATH=<other>/src``).

``python -m bench.p12_inproc [--rounds 8] [--n 200]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
from pathlib import Path

from bench.p1_inproc import cpu_per, on_the_server_core, posts, show
from bench.p2_batch import BATCH, batch_body

CONCURRENCY = 4
BODY = batch_body()
MODES = ("off", "on")


async def measure(rounds: int, n: int) -> dict[str, list[dict[str, float]]]:
    from tidings.core import Core
    from tidings.events.env_settings import DEFAULT, switch_sealing
    from tidings.ids import now_ms
    from tidings.server import create_app
    from tidings.settings import Settings

    found: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        settings = Settings(mode="dev", database_url=f"sqlite:///{Path(tmp) / 'tidings.db'}",
                            data_dir=Path(tmp) / "data", encrypt_data=True)
        core = await Core.start(settings)
        try:
            app = create_app(core.settings, core)
            await posts(app, concurrency=CONCURRENCY, body=BODY, total=4 * CONCURRENCY)
            gc.freeze()  # as ``tidings dev`` does once started
            for _ in range(rounds):
                for mode in MODES:
                    on = mode == "on"
                    await core.storage.write(
                        lambda tx, on=on: switch_sealing(tx, DEFAULT, on, now_ms()))
                    await posts(app, concurrency=CONCURRENCY, body=BODY, total=2 * CONCURRENCY)
                    found[mode].append(await cpu_per(app, n, BATCH, body=BODY,
                                                     concurrency=CONCURRENCY))
        finally:
            await core.close()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.p12_inproc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--n", type=int, default=200, help="measured requests per round")
    args = parser.parse_args(argv)
    on_the_server_core()
    found = asyncio.run(measure(args.rounds, args.n))
    print(f"CPU µs per event, medians of {args.rounds} rounds (min of all in brackets)")
    show(found, digits=2)
    ratios = [off["all"] / on["all"] for off, on in zip(found["off"], found["on"], strict=True)]
    print(f"  on/off by CPU: {statistics.median(one['all'] for one in found['off']) / statistics.median(one['all'] for one in found['on']):.3f} (medians), "  # noqa: E501
          f"{statistics.median(ratios):.3f} (per round)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
