"""The report as one self-contained HTML page beside its Markdown: tables rendered, local
figures embedded as data URIs."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import markdown

from gap_study.pipeline.io import write_text

__all__ = ["markdown_to_html", "write_report"]

_HTML_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2rem auto; padding: 0 1rem; line-height: 1.5; color: #222; }}
.table-wrap {{ overflow-x: auto; margin: 1rem 0; }}
table {{ border-collapse: collapse; font-size: 0.85rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left;
          white-space: nowrap; }}
th {{ background: #f3f3f3; }}
tr:nth-child(even) td {{ background: #fafafa; }}
img {{ max-width: 100%; height: auto; display: block; margin: 1rem 0; }}
code {{ background: #f3f3f3; padding: 0 0.2rem; }}
pre {{ background: #f6f6f6; padding: 0.6rem; overflow-x: auto; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def markdown_to_html(text: str, base_dir: str | Path) -> str:
    """A single self-contained HTML page: Markdown rendered, local PNGs embedded as data URIs."""
    base_dir = Path(base_dir)
    # toc: every heading gets the id the report's contents list links to
    body = markdown.markdown(text, extensions=["tables", "fenced_code", "toc"])

    def embed(match: re.Match) -> str:
        src = match.group(1)
        if src.startswith(("data:", "http:", "https:")):
            return match.group(0)
        encoded = base64.b64encode((base_dir / src).read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{encoded}"'

    body = re.sub(r'src="([^"]+\.png)"', embed, body)
    # a wide table scrolls sideways in its own box instead of wrapping every cell
    body = body.replace("<table>", '<div class="table-wrap"><table>').replace(
        "</table>", "</table></div>")
    title_match = re.search(r"<h1[^>]*>(.*?)</h1>", body)
    title = re.sub("<[^>]+>", "", title_match.group(1)) if title_match else "Report"
    return _HTML_PAGE.format(title=title, body=body)


def write_report(markdown_path: str | Path, html_path: str | Path, text: str) -> None:
    """Write the Markdown report and its self-contained HTML twin (images resolved beside it)."""
    write_text(markdown_path, text)
    write_text(html_path, markdown_to_html(text, Path(markdown_path).parent))
