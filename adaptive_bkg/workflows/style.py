"""One plot style for every figure: mplhep's ROOT style and the experiment label."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib.pyplot as plt
import mplhep


@contextmanager
def hep_style() -> Iterator[None]:
    """mplhep's ROOT style for the plots made inside (leaves global matplotlib settings alone)."""
    with plt.style.context(mplhep.style.ROOT):
        yield


def experiment_label(ax: Any, rlabel: str = "") -> None:
    """ "Belle II emulated" top left (the detector is the emulator, not basf2), `rlabel` right."""
    mplhep.label.exp_label(exp="Belle II", llabel="emulated", rlabel=rlabel, ax=ax, loc=0)
