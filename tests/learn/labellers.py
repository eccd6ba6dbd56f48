"""Reference calculators for the loop's tests, importable as ``labellers:NAME`` (``--calculator``)."""
from __future__ import annotations

import os
import signal

from ase.calculators.emt import EMT

#: Environment variable: the number of calculations after which :func:`emt_killed` kills its process.
KILL_AFTER = "PBCGNN_TEST_KILL_AFTER"


def emt() -> EMT:
    """ASE's EMT (it has parameters for H and O): a cheap, deterministic stand-in for DFT."""
    return EMT()


class _FailingOnce(EMT):
    """EMT that raises on its second calculation."""

    calls = 0

    def calculate(self, *args, **kwargs):
        type(self).calls += 1
        if type(self).calls == 2:
            raise RuntimeError("SCF did not converge")
        super().calculate(*args, **kwargs)


def failing_second() -> EMT:
    """EMT whose second calculation raises (a failed reference calculation)."""
    _FailingOnce.calls = 0
    return _FailingOnce()


class Crash(BaseException):
    """Not an ``Exception``: the loop does not catch it, as it cannot catch a kill."""


class _Crashing(EMT):
    """EMT that crashes the process (``Crash``, or SIGKILL) on calculation ``after + 1``."""

    def __init__(self, after: int, kill: bool) -> None:
        super().__init__()
        self.after, self.kill, self.calls = after, kill, 0

    def calculate(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.after:
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise Crash(f"crashed after {self.after} labels")
        super().calculate(*args, **kwargs)


def emt_killed() -> EMT:
    """EMT that kills its process with SIGKILL after ``$PBCGNN_TEST_KILL_AFTER`` calculations (plain
    EMT without the variable)."""
    after = os.environ.get(KILL_AFTER)
    return EMT() if after is None else _Crashing(int(after), kill=True)


def raising() -> EMT:
    raise RuntimeError("no licence for the reference code")


def not_a_calculator() -> int:
    return 42


#: Environment variable: the number of calculations after which :func:`emt_crash` raises :class:`Crash`.
CRASH_AFTER = "PBCGNN_TEST_CRASH_AFTER"


def emt_crash() -> EMT:
    """EMT that raises :class:`Crash` after ``$PBCGNN_TEST_CRASH_AFTER`` calculations (plain EMT without it)."""
    after = os.environ.get(CRASH_AFTER)
    return EMT() if after is None else _Crashing(int(after), kill=False)
