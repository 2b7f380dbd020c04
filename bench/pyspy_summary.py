"""Summarise a ``py-spy record -f raw`` profile: where the samples are, by function.

``python -m bench.pyspy_summary PROFILE.txt [--top 30] [--thread MainThread] [--grep tidings]``

Prints, per function, the share of samples it is on the stack of ("total") and at the top of
("self"). Every engine benchmark takes ``--profile FILE`` to record the server with py-spy.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")


def frame_key(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['name']} ({path})"


def summarise(path: Path, *, thread: str | None, grep: str | None, startup: bool = False
              ) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    total: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if thread and not any(thread in f for f in frames[:2]):
            continue
        if not startup and any("_find_and_load" in f for f in frames):
            continue
        n = int(count)
        samples += n
        keys = [frame_key(f) for f in frames if not f.startswith(("process ", "thread "))]
        for key in dict.fromkeys(keys):
            if grep is None or grep in key:
                total[key] += n
        if keys:
            own[keys[-1]] += n
    return samples, total, own


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pyspy_summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--thread", default=None, help="only stacks of this thread")
    parser.add_argument("--grep", default=None, help="only functions whose key contains this")
    parser.add_argument("--startup", action="store_true",
                        help="keep the samples of imports (dropped by default)")
    args = parser.parse_args(argv)
    samples, total, own = summarise(args.profile, thread=args.thread, grep=args.grep,
                                        startup=args.startup)
    if not samples:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{samples} samples")
    print("\ntotal  function (on the stack)")
    for key, n in total.most_common(args.top):
        print(f"{n / samples * 100:5.1f}%  {key}")
    print("\n self  function (at the top)")
    for key, n in own.most_common(args.top):
        print(f"{n / samples * 100:5.1f}%  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
