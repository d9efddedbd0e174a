"""Seconds from process start to the first round of a `dflbench` command (issue 17's start-up target).

    T0=$(date +%s.%N) python bench/startup.py aedfl --methods fedavg --devices 100 \\
        --dataset npz:/work/shared/data/cifar10-subset.npz --max-updates 1 --out /tmp/run

Runs the CLI with the given arguments and, at the simulator's first event (after imports, data loading, model and
simulator construction and the round-0 evaluation), prints the time since T0 (the shell's clock before python
started; this script's own start when T0 is unset, which leaves out the interpreter's start) and exits.
"""

import os
import sys
import time

T0 = float(os.environ.get("T0", time.time()))

from dflbench.cli.main import main  # noqa: E402  (timed from T0)
from dflbench.engines.async_sim import AsyncSimulator  # noqa: E402


def first_event(self, event) -> None:
    print(f"first round at {time.time() - T0:.2f} s after process start", flush=True)
    os._exit(0)


if __name__ == "__main__":
    AsyncSimulator._handle = first_event
    sys.argv = ["dflbench"] + sys.argv[1:]
    main()
