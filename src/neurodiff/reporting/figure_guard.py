"""One figure's failure must never cost a benchmark its results.json and report.

The benchmarks draw their figures after hours of training, inside the output folder that is written
all or nothing; a figure that raises (an odd site name for matplotlib, a metric no method has) would
discard everything. :func:`draw_or_warn` turns that error into a warning that names the figure.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable


def draw_or_warn(name: str, draw: Callable[[], object]) -> None:
    """Call `draw` (which draws and saves one figure); an error becomes a RuntimeWarning naming `name`.

    A pyplot figure the failed drawing left open is closed.
    """
    plt = sys.modules.get("matplotlib.pyplot")  # figures made without pyplot need no closing
    open_before = set(plt.get_fignums()) if plt else set()
    try:
        draw()
    except Exception as error:  # noqa: BLE001 - a figure must never cost the benchmark its report
        plt = sys.modules.get("matplotlib.pyplot")
        for number in set(plt.get_fignums()) - open_before if plt else ():  # the failed figure's, half drawn
            plt.close(number)
        warnings.warn(f"figure {name!r} skipped: {type(error).__name__}: {error}", RuntimeWarning, stacklevel=2)
