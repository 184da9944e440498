"""The study report: summary.json -> one self-contained report.html (and summary.md).

Jinja2 with autoescape renders every user string (class names, paths, experiment names) as
text. Figures are inlined as base64 data URIs and plotly.js once, so the file opens with no
network. JSON embedded for the interactive t-SNE goes through ``script_json``, which escapes
``<``, ``>`` and ``&`` so that a class named ``</script>`` cannot end the script element.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import jinja2
from markupsafe import Markup

TEMPLATES = Path(__file__).parent / "templates"


def script_json(value) -> Markup:
    """JSON safe inside <script type="application/json">: no way to close the element."""
    text = json.dumps(value, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return Markup(text)


def _pct(x) -> str:
    return "–" if x is None or x != x else f"{100 * x:.2f}%"


def _secs(x) -> str:
    return "–" if x is None else f"{x:,.1f} s"


def _num(x) -> str:
    return "–" if x is None else f"{x:,.0f}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=_pct, secs=_secs, num=_num, script_json=script_json)
    return env


class _Figures:
    """Inlines figures by path relative to the study folder; a missing one becomes a note."""

    def __init__(self, root: Path):
        self.root = root

    def image(self, rel: str | None, alt: str = "") -> Markup:
        if not rel:
            return Markup("")
        path = self.root / rel
        if not path.is_file():
            return Markup('<p class="missing">figure missing: {}</p>').format(rel)
        data = base64.b64encode(path.read_bytes()).decode()
        return Markup('<img src="data:image/png;base64,{}" alt="{}" loading="lazy">').format(data, alt)

    def plotly(self, rel: str | None) -> Markup | None:
        if not rel or not (self.root / rel).is_file():
            return None
        return script_json(json.loads((self.root / rel).read_text()))


def write_report(out_dir: Path, summary: dict) -> Path:
    """Render out_dir/report.html from the summary (written to a temporary file, then renamed)."""
    from plotly.offline import get_plotlyjs

    out_dir = Path(out_dir)
    figures = _Figures(out_dir)
    experiments = summary.get("experiments", [])
    has_plotly = any(figures.plotly(e.get("figures", {}).get("tsne_3d_plotly")) is not None for e in experiments)
    html = _environment().get_template("report.html.j2").render(
        s=summary, fig=figures, experiments=experiments, dataset=summary.get("dataset", {}),
        plotly_js=Markup(get_plotlyjs()) if has_plotly else None)
    path = out_dir / "report.html"
    tmp = out_dir / ".report.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(summary: dict) -> str:
    """The comparison table and the observations, for a terminal or a README."""
    d = summary.get("dataset", {})
    lines = [f"# {_md(summary.get('title', 'visionlab study'))}", "",
             f"Dataset: {_md(d.get('source', ''))}, {len(d.get('classes', []))} classes, "
             f"images {'x'.join(map(str, d.get('image_shape', [])))}, "
             f"train/val/test {'/'.join(str(v) for v in d.get('splits', {}).values())}", "",
             "| experiment | model | augmentation | params | epochs | train time | images/s | val acc | test acc "
             "| macro F1 | errors nearer predicted centroid |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in summary.get("experiments", []):
        closer = e.get("misclassification", {}).get("closer_to_predicted_fraction")
        lines.append(f"| {_md(e['name'])} | {_md(e['model'])} | {_md(e['augment'])} | {_num(e.get('params'))} | "
                     f"{e.get('epochs')} | {_secs(e.get('train_seconds'))} | {_num(e.get('train_images_per_second'))} "
                     f"| {_pct(e.get('val_accuracy'))} | {_pct(e.get('test_accuracy'))} | "
                     f"{e.get('test_macro_f1', 0):.4f} | {_pct(closer)} |")
    if summary.get("observations"):
        lines += ["", "Observations (generated from the measured numbers):", ""]
        lines += [f"- {_md(o)}" for o in summary["observations"]]
    return "\n".join(lines) + "\n"
