"""The comparative report: summary.json -> self-contained report.html and summary.md."""
from .html import render_markdown, script_json, write_report

__all__ = ["render_markdown", "script_json", "write_report"]
