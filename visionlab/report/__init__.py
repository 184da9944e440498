"""The comparative report: a study summary -> one self-contained report.html and summary.md.

    from visionlab.report import write_report, render_markdown
    write_report(out_dir, summary)      # out_dir/report.html; figure paths are relative to out_dir
    render_markdown(summary)            # the comparison table and observations as Markdown
"""
from .html import render_markdown, write_eda_html, write_report

__all__ = ["render_markdown", "write_eda_html", "write_report"]
