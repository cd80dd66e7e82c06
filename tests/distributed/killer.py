"""``python -m killer train ...`` is ``python -m localearn train ...``, except that the rank named
by ``$LOCALEARN_TEST_KILL`` (``RANK:SAVES``) SIGKILLs itself right after writing its SAVES-th
checkpoint, in the first round of a torchrun job only (the restarted round runs to the end).
A kill at a known point of the loop, not at a time a test guesses."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from localearn import snapshot
from localearn.cli import main


def arm() -> None:
    spec = os.environ.get("LOCALEARN_TEST_KILL")
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    rank, saves = (int(v) for v in spec.split(":"))
    if int(os.environ.get("RANK", "0")) != rank:
        return
    save, written = snapshot.save, [0]

    def save_then_die(trainer: Any) -> None:
        save(trainer)
        written[0] += 1
        if written[0] == saves and trainer.out_dir is not None:
            os.kill(os.getpid(), signal.SIGKILL)

    snapshot.save = save_then_die


if __name__ == "__main__":
    arm()
    sys.exit(main())
