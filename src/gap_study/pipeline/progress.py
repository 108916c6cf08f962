"""One live progress bar per stage over its runs: done, running, failed, elapsed and the
estimated time left, above the log's one line per finished run.

Where the bar goes depends on who runs the stage:

1. Under the stage runner (``dvc repro``), the notebook's output reaches the terminal through
   papermill, which copies the kernel's output streams to its own. The runner says in
   ``GAP_STUDY_PROGRESS`` whether that is a terminal: ``text`` draws tqdm's text bar on the
   kernel's stdout (the stream of the log lines, so that the two never interleave), ``off``
   draws none, so that a log file or CI output holds the lines alone and no carriage-return
   frames. The runner also has the executed notebook's output streams merged with carriage
   returns applied, so that it keeps the bar's last state, not every frame.
2. In JupyterLab (no runner) ``tqdm.auto`` draws an ipywidgets bar; in a plain Python process
   it draws the text bar only when stderr is a terminal (tqdm's ``disable=None``).

The bar is redrawn every ``REFRESH_SECONDS`` while runs compute, so that elapsed time and the
estimate move between finished runs; the estimate is the mean rate of the runs computed in
this stage, not counting kept runs it reused (tqdm's ``initial``), so it does not jump.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from typing import Any

__all__ = ["BAR_FORMAT", "PROGRESS_ENV", "REFRESH_SECONDS", "StageProgress"]

PROGRESS_ENV = "GAP_STUDY_PROGRESS"  # set by gap_study.pipeline.run_notebook: text | off
REFRESH_SECONDS = 1.0
BAR_FORMAT = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} runs done{postfix} "
              "[{elapsed}<{remaining}]")


def _new_bar(name: str, total: int, done: int) -> Any | None:
    """A tqdm bar for ``name`` over ``total`` runs, ``done`` of them already done, where one
    can be seen (module docstring); else ``None``."""
    mode = os.environ.get(PROGRESS_ENV)
    if mode == "off":
        return None
    options: dict[str, Any] = {"desc": name, "total": total, "initial": done,
                               "bar_format": BAR_FORMAT, "smoothing": 0, "leave": True,
                               "postfix": "0 running, 0 failed", "file": sys.stdout}
    if mode == "text":
        from tqdm.std import tqdm

        # 3. The size given, not asked: the kernel's stdout is no terminal, and asking the
        #    terminal behind it can give 0 rows, which makes tqdm hide the bar. One bar: no
        #    height hides it.
        bar = tqdm(disable=False, ncols=shutil.get_terminal_size((100, 24)).columns,
                   nrows=1000, **options)
    else:
        from tqdm.auto import tqdm

        bar = tqdm(disable=None, **options)
    if bar.disable:
        bar.close()
        return None
    return bar


class StageProgress:
    """The bar of a stage named ``name`` (created at the first ``add``) and its log lines."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.running = 0
        self.failed = 0
        self._bar: Any | None = None
        self._started = False
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def add(self, runs: int, reused: int) -> None:
        """``runs`` more runs, ``reused`` of them done already (kept from an earlier attempt)."""
        if not self._started:
            self._started = True
            self._bar = _new_bar(self.name, runs, reused)
            if self._bar is not None:
                self._ticker = threading.Thread(target=self._tick, daemon=True,
                                                name=f"{self.name}-progress")
                self._ticker.start()
        elif self._bar is not None:  # a later round of the stage (the tune stage's)
            self._bar.total += runs
            self._bar.n += reused
            self._bar.initial += reused  # not computed here: no part of the rate
            self._show()

    def update(self, *, running: int, done: int = 0, failed: int = 0) -> None:
        """Runs now computing; ``done`` and ``failed`` more runs finished."""
        self.running = running
        self.failed += failed
        if self._bar is not None:
            self._show(refresh=False)
            self._bar.update(done)  # redraws at most every 0.1 s: drawn here in any case
            self._bar.refresh()

    def line(self, text: str) -> None:
        """A log line (one per finished run), printed above the bar."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def close(self) -> None:
        """Leave the bar in its last state."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._bar is not None:
            self.running = 0
            self._show()
            self._bar.close()

    def _show(self, refresh: bool = True) -> None:
        self._bar.set_postfix_str(f"{self.running} running, {self.failed} failed",
                                  refresh=refresh)

    def _tick(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            self._bar.refresh()
