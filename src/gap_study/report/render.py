"""The report from its facts: ``templates/report.md.j2`` rendered with Jinja2 (the filters
below format numbers; the template holds every sentence), a table of contents linking to
every section, and the wide tables written as CSV files beside the report."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import jinja2
import pandas as pd
from markdown.extensions.toc import slugify

from gap_study.pipeline.io import write_csv
from gap_study.report.facts import ReportFacts
from gap_study.report.formatting import markdown_table
from gap_study.report.mechanism_distance import Effect
from gap_study.stages.untrained import listed

__all__ = ["CONTENTS", "TEMPLATE", "contents", "render_report", "write_tables"]

TEMPLATE = "report.md.j2"
# the line of the rendered template that the table of contents replaces
CONTENTS = "<!-- contents -->"


def _percent(value: float, decimals: int = 1) -> str:
    """A share as a percentage: ``0.675`` -> ``67.5%``."""
    return f"{value * 100:.{decimals}f}%"


def _signed(value: float) -> str:
    """A difference of shares in points, signed, one decimal, never "-0.0"."""
    return f"{round(value * 100, 1) + 0.0:+.1f}"


def _effect(effect: Effect, unit: bool = True) -> str:
    """A paired effect: ``+1.0 pts [+0.5, +1.5]``, or its mean alone with one seed; without
    `` pts`` if not ``unit`` (where the sentence names the unit once)."""
    mean = f"{_signed(effect.mean)}{' pts' if unit else ''}"
    if math.isnan(effect.low):
        return f"{mean} (one seed: no interval)"
    return f"{mean} [{_signed(effect.low)}, {_signed(effect.high)}]"


def _names(heads: Sequence[str]) -> str:
    """``a``, ``a` and `b``, ``a`, `b` and `c``, in backticks."""
    return listed([f"`{h}`" for h in heads])


def _cell(cell: Sequence[str]) -> str:
    """A mechanism cell: ```max`, `zeros```."""
    return ", ".join(f"`{level}`" for level in cell)


def _table(frame: pd.DataFrame) -> str:
    return markdown_table(frame)


def environment() -> jinja2.Environment:
    """The Jinja2 environment of the report's template, with its filters."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("gap_study.report", "templates"),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True,
                             autoescape=False)  # Markdown, not HTML
    env.filters.update(pct=_percent, signed=_signed, effect=_effect, names=_names, cell=_cell,
                       table=_table, share=lambda v: f"{v:.0%}",
                       fmt=lambda v, spec: format(v, spec))
    return env


def contents(text: str) -> str:
    """A list of links to the ``##`` sections of ``text`` (``###`` nested), with the anchors
    Python-Markdown's ``toc`` extension (and GitHub) give them."""
    lines = []
    for hashes, title in re.findall(r"^(##+) (.+)$", text, flags=re.MULTILINE):
        if len(hashes) <= 3:
            indent = "    " * (len(hashes) - 2)  # 4 spaces: Python-Markdown nests at 4
            lines.append(f"{indent}- [{title}](#{slugify(title, '-')})")
    return "\n".join(lines)


def _reflow(block: str) -> str:
    """A paragraph on one line; a list with one line per item; anything else as it is. The
    template wraps its prose to be read as a template, the report keeps one paragraph a line."""
    lines = block.splitlines()
    if lines[0].startswith(("|", "#", "![", "<!--")):
        return block
    if lines[0].startswith("- "):
        items: list[str] = []
        for line in lines:
            if re.match(r"\s*- ", line):
                items.append(line.rstrip())
            else:
                items[-1] += " " + line.strip()
        return "\n".join(re.sub(r"(?<=\S) {2,}", " ", item) for item in items)
    return re.sub(r" {2,}", " ", " ".join(line.strip() for line in lines))


def render_report(facts: ReportFacts) -> str:
    """The report as Markdown: the template rendered, its paragraphs one line each, its
    contents list filled in."""
    text = environment().get_template(TEMPLATE).render(facts=facts)
    blocks = [_reflow(b) for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    head, _, body = "\n\n".join(blocks).partition(CONTENTS)
    return head + contents(body) + body + "\n"


def write_tables(facts: ReportFacts, folder: str | Path) -> dict[str, Path]:
    """Write ``facts.csv`` as ``<folder>/<name>.csv`` and remove any other CSV there (a table
    of an earlier run's report, e.g. one whose study trained with shifts); returns the paths
    by name."""
    paths = {name: Path(folder) / f"{name}.csv" for name in facts.csv}
    for name, frame in facts.csv.items():
        write_csv(paths[name], frame)
    for stale in set(Path(folder).glob("*.csv")) - set(paths.values()):
        stale.unlink()
    return paths
