"""Fault injection for crash-safety tests: kill this process at a named point.

Set ``FAIRSHARE_FAILPOINT=<name>`` (optionally ``<name>:<n>`` to fire on the n-th pass, 1-based)
and the process sends itself SIGKILL when it reaches that point: no cleanup, no ``finally``, the
same as a power cut. Unset (the normal case) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "FAIRSHARE_FAILPOINT"
_passes: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Die here (SIGKILL) when ``FAIRSHARE_FAILPOINT`` names this point."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
