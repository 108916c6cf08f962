"""gap_study.report.html: the self-contained HTML twin of the Markdown report."""

import re

from gap_study.report.html import markdown_to_html, write_report


def test_html_report_is_one_file_with_images_embedded(tmp_path):
    (tmp_path / "figures").mkdir()
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 16
    (tmp_path / "figures" / "a.png").write_bytes(png)
    text = "# Title here\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![A figure](figures/a.png)\n"
    html = markdown_to_html(text, tmp_path)
    assert "<title>Title here</title>" in html
    # a wide table scrolls in its own box rather than squeezing its cells
    assert '<div class="table-wrap"><table>' in html and "</table></div>" in html
    assert 'src="data:image/png;base64,' in html
    assert not re.search(r'src="(?!data:)', html)  # nothing loaded from elsewhere


def test_write_report_writes_the_markdown_and_its_html_beside_it(tmp_path):
    write_report(tmp_path / "report.md", tmp_path / "report.html", "# Results\n\nText.\n")
    assert (tmp_path / "report.md").read_text() == "# Results\n\nText.\n"
    assert '<h1 id="results">Results</h1>' in (tmp_path / "report.html").read_text()


def test_every_heading_gets_the_id_a_contents_link_points_at(tmp_path):
    text = "# Title\n\n- [The claims, tested](#the-claims-tested)\n\n## The claims, tested\n"
    html = markdown_to_html(text, tmp_path)
    assert '<a href="#the-claims-tested">' in html and '<h2 id="the-claims-tested">' in html
