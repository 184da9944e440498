"""The study report: a summary dict -> one self-contained report.html, and summary.md.

report.html opens with no network: figures are inlined as base64 data URIs and plotly.js once.
Every user string (class names, file paths, experiment names, the dataset source) stays text:
- in HTML, Jinja2's autoescape escapes it;
- in the JSON of an interactive figure, ``script_json`` escapes ``< > &`` and U+2028/2029, so the
  JSON cannot end its ``<script type="application/json">`` element;
- inside plotly, which renders a subset of HTML in names, hover text and titles, ``plotly_text``
  entity-escapes every string first, so a class named ``<b>`` shows as those three characters.
Figures are paths relative to the study folder; a missing or unreadable one becomes a visible
note, never an error: the report of a half-finished study is still a report.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import math
import numbers
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import jinja2
from markupsafe import Markup, escape
from ..files import write_text

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
SPLITS = ("train", "val", "test")
MAX_LISTED = 500  # skipped files listed in the report; summary.json keeps them all
LABELLED_CLASSES = 60  # above this many classes the class-count chart has no per-class labels
MAGIC = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}
SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


# ---- escaping ---------------------------------------------------------------------------------

def script_json(value) -> Markup:
    """JSON that is safe inside a <script> element: no '<', '>' or '&' left to end it."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return Markup(re.sub("[<>&\u2028\u2029]", lambda m: SCRIPT_UNSAFE[m.group()], text))


def plotly_text(value, key: str = ""):
    """A plotly figure with every string entity-escaped, so that plotly shows it as text.

    Keys ending in ``template`` (hovertemplate, texttemplate, layout.template) are format strings
    and themes written by code, left as they are: user strings go in name/text/customdata.
    """
    if isinstance(value, str):
        return value if key.endswith("template") else str(escape(value))
    if isinstance(value, Mapping):
        return {k: v if k.endswith("template") else plotly_text(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [plotly_text(v, key) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON.parse has no NaN; plotly reads null as a gap
    return value


def _safe_js(code: str) -> Markup:
    """Library code inlined in <script>: make sure no '</script' inside it can end the element."""
    return Markup(re.sub(r"</(script)", r"<\\/\1", code, flags=re.IGNORECASE))


# ---- number formatting (every filter takes missing, null and NaN and shows a dash) ------------

def _real(x) -> float | None:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x):
        return None
    return float(x)


def pct(x, digits: int = 2) -> str:
    """0.98421 -> '98.42%'."""
    x = _real(x)
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def secs(x) -> str:
    """12.34 -> '12.3 s', 252 -> '4 min 12 s', 3720 -> '1 h 02 min'."""
    x = _real(x)
    if x is None:
        return "–"
    if x < 60:
        return f"{x:.1f} s"
    if x < 3600:
        return f"{int(x // 60)} min {int(x % 60):02d} s"
    return f"{int(x // 3600)} h {int(x % 3600 // 60):02d} min"


def num(x) -> str:
    """1234567 -> '1,234,567'."""
    x = _real(x)
    return "–" if x is None else f"{x:,.0f}"


def fixed(x, digits: int = 4) -> str:
    x = _real(x)
    return "–" if x is None else f"{x:.{digits}f}"


def words(x) -> str:
    """An augmentation ('standard' or ['crop:4', 'flip']) or any value as one line of text."""
    if isinstance(x, (list, tuple)):
        return ", ".join(map(str, x)) or "none"
    return "–" if x is None or isinstance(x, jinja2.Undefined) else str(x)


def when(x) -> str:
    """'2026-11-21T18:22:28+00:00' -> '2026-11-21 18:22:28 UTC'."""
    return "–" if not isinstance(x, str) else x.replace("T", " ").replace("+00:00", " UTC")


def _items(value) -> list:
    return list(value.items()) if isinstance(value, Mapping) else []


def _seq(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


# ---- figures ----------------------------------------------------------------------------------

def _mime(data: bytes) -> str | None:
    """The MIME type of an image a browser shows in <img>, from its first bytes."""
    for magic, mime in MAGIC.items():
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/svg+xml" if b"<svg" in data[:1000] else None  # SVG scripts never run in an <img>


class Plot(NamedTuple):
    json: Markup | None  # the escaped figure JSON, or None
    note: Markup  # why there is no figure, or empty


class Figures:
    """Inlines figures by path relative to the study folder; a missing one becomes a visible note.

    ``plots`` counts the interactive figures rendered so far: the template reads it at the end to
    inline plotly.js only when a figure needs it.
    """

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.plots = 0
        self.missing: list[str] = []

    def _read(self, rel) -> tuple[bytes | None, str]:
        if not isinstance(rel, str):
            return None, "not a path"
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root):  # a report never inlines files from elsewhere
            return None, "outside the study folder"
        try:
            return path.read_bytes(), ""
        except FileNotFoundError:
            return None, "file missing"
        except OSError as exc:
            return None, exc.strerror or "unreadable"

    def _note(self, rel, why: str) -> Markup:
        self.missing.append(f"{rel} ({why})")
        return Markup('<p class="missing">figure not available: <code>{}</code> ({})</p>').format(rel, why)

    def image(self, rel, alt: str = "") -> Markup:
        """An <img> with a data: URI, a note when the file is missing, nothing when rel is empty."""
        if not rel:
            return Markup("")
        data, why = self._read(rel)
        mime = _mime(data) if data else None
        if mime is None:
            return self._note(rel, why or "not a PNG, JPEG, GIF, WebP or SVG image")
        return Markup('<img src="data:{};base64,{}" alt="{}" decoding="async">').format(
            mime, base64.b64encode(data).decode("ascii"), alt)

    def plotly(self, rel) -> Plot:
        """A plotly figure JSON file, escaped for plotly and for the <script> element it sits in."""
        if not rel:
            return Plot(None, Markup(""))
        data, why = self._read(rel)
        try:
            figure = json.loads(data) if data is not None else None
        except ValueError:
            figure, why = None, "not valid JSON"
        if not isinstance(figure, Mapping) or not isinstance(figure.get("data"), list):
            return Plot(None, self._note(rel, why or "not a plotly figure"))
        self.plots += 1
        return Plot(script_json(plotly_text({"data": figure["data"], "layout": figure.get("layout", {})})),
                    Markup(""))


def class_rows(dataset: Mapping) -> list[dict]:
    """One row per class: its name and its image count in each split (None where unknown)."""
    counts = dataset.get("class_counts") or {}
    rows = []
    for k, name in enumerate(_seq(dataset.get("classes"))):
        row = {"name": name}
        for split in SPLITS:
            values = _seq(counts.get(split))
            row[split] = values[k] if k < len(values) and _real(values[k]) is not None else None
        row["total"] = sum(row[s] for s in SPLITS if row[s] is not None)
        rows.append(row)
    return rows


def class_count_chart(rows: list[dict]) -> Markup:
    """Images per class, stacked by split, as an inline PNG <img> (matplotlib, no pyplot state)."""
    if not rows or not any(r["total"] for r in rows):
        return Markup("")
    import numpy as np
    from matplotlib.figure import Figure

    from ..evaluation.plots import short

    colors = {"train": "#3b6fb6", "val": "#8fb8e8", "test": "#f0a04b"}
    k = len(rows)
    if k <= LABELLED_CLASSES:  # horizontal bars, one labelled row per class, top to bottom
        fig = Figure(figsize=(6.4, min(1.2 + 0.26 * k, 17)), layout="constrained")
        ax = fig.add_subplot()
        left = np.zeros(k)
        for split in SPLITS:
            values = np.array([r[split] or 0 for r in rows], float)
            ax.barh(np.arange(k), values, left=left, color=colors[split], label=split, height=0.75)
            left += values
        ax.set_yticks(np.arange(k), [short(r["name"], 24) for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("images")
    else:  # too many classes to label: the totals sorted, which shows the imbalance at a glance
        fig = Figure(figsize=(6.4, 3.4), layout="constrained")
        ax = fig.add_subplot()
        totals = sorted((r["total"] for r in rows), reverse=True)
        ax.bar(np.arange(k), totals, width=1.0, color=colors["train"], label="all splits")
        ax.set_xlabel(f"{k:,} classes, sorted by image count")
        ax.set_ylabel("images")
    fig.legend(loc="outside upper center", ncols=3, fontsize=8, frameon=False)
    ax.grid(axis="x" if k <= LABELLED_CLASSES else "y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return Markup('<img src="data:image/png;base64,{}" alt="images per class and split">').format(
        base64.b64encode(buffer.getvalue()).decode("ascii"))


# ---- the page ---------------------------------------------------------------------------------

def _environment(markdown: bool = False) -> jinja2.Environment:
    """HTML templates autoescape every value; the Markdown one passes every value through _md."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=not markdown,
                             finalize=_md if markdown else None, undefined=jinja2.ChainableUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(pct=pct, secs=secs, num=num, fixed=fixed, words=words, when=when, items=_items, seq=_seq,
                       real=_real)
    return env


def _best(experiments: list[Mapping]) -> int | None:
    """Index of the experiment with the highest test accuracy (ties: the higher macro F1)."""
    scored = [(_real(e.get("test_accuracy")), _real(e.get("test_macro_f1")) or 0.0, i)
              for i, e in enumerate(experiments)]
    scored = [s for s in scored if s[0] is not None]
    return max(scored)[2] if len(scored) > 1 else None


def _plotly_js() -> Markup:
    from plotly.offline import get_plotlyjs

    return _safe_js(get_plotlyjs())


def render_html(out_dir: Path, summary: Mapping) -> str:
    """The report as one HTML string; figure paths in the summary are relative to out_dir."""
    figures = Figures(out_dir)
    dataset = summary.get("dataset") or {}
    experiments = [e for e in _seq(summary.get("experiments")) if isinstance(e, Mapping)]
    rows = class_rows(dataset)
    html = _environment().get_template("report.html.j2").render(
        s=summary, dataset=dataset, experiments=experiments, fig=figures, class_rows=rows,
        class_chart=class_count_chart(rows), best=_best(experiments), max_listed=MAX_LISTED,
        plotly_js=_plotly_js)
    if figures.missing:
        log.warning("report: %d figure(s) not available: %s", len(figures.missing), "; ".join(figures.missing))
    return html


def write_report(out_dir: Path, summary: Mapping) -> Path:
    """Write out_dir/report.html (a temporary file, then renamed: never half a report); its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_text(out_dir / "report.html", render_html(out_dir, summary))


def write_eda_html(out_dir: Path, eda: Mapping) -> Path:
    """out_dir/eda.html from an eda.json dict whose figure paths are relative to out_dir."""
    out_dir = Path(out_dir)
    figures = Figures(out_dir)
    html = _environment().get_template("eda.html.j2").render(eda=eda, eda_prefix="", fig=figures,
                                                             max_listed=MAX_LISTED)
    if figures.missing:
        log.warning("eda.html: %d figure(s) not available: %s", len(figures.missing), "; ".join(figures.missing))
    return write_text(out_dir / "eda.html", html)


# ---- summary.md -------------------------------------------------------------------------------

def _md(value) -> str:
    """Every value printed into summary.md: pipes, inline HTML, links and emphasis escaped."""
    text = re.sub(r"\s+", " ", "" if isinstance(value, jinja2.Undefined) or value is None else str(value))
    text = re.sub(r"([\\`*\[\]<>|])", r"\\\1", text)
    return re.sub(r"&(?=#?\w+;)", r"\\&", text)  # '&lt;' stays five characters, not '<'


def render_markdown(summary: Mapping) -> str:
    """The comparison table and the observations, for a terminal or a README."""
    dataset = summary.get("dataset") or {}
    experiments = [e for e in _seq(summary.get("experiments")) if isinstance(e, Mapping)]
    return _environment(markdown=True).get_template("summary.md.j2").render(
        s=summary, dataset=dataset, experiments=experiments)
