"""``tidings`` with a fault switch, for tests: ``python -m tests.reliability.faulty_cli dev ...``
runs the real command line in a process whose SQLite connections fail while the file named
by ``TIDINGS_TEST_FAULTS`` exists (``tests/faults.py`` says how)."""

from __future__ import annotations

from tests.faults import switch_from_env

if __name__ == "__main__":
    switch = switch_from_env()
    if switch is not None:
        switch.install()
    from tidings.cli import main

    main()
