"""The segmentation report: a metrics record -> an HTML section, and a self-contained segment.html.

``render_section`` returns the section (a <section> element) that a larger report can embed;
``write_report`` wraps it in a page with the study report's stylesheet. Figures are inlined as
base64 data URIs by the study report's ``Figures`` (a missing one becomes a visible note), and
every value passes Jinja2's autoescape: a class named ``<b>`` shows as those three characters.
"""
from __future__ import annotations

from pathlib import Path

import jinja2
from markupsafe import Markup

from ..report.html import TEMPLATES, Figures, fixed, num, pct, secs
from ..files import write_text

SECTION = """
<section class="card" id="segmentation">
  <h2>Segmentation: {{ r.model }} on {{ r.data }}</h2>
  <table class="kv">
    <tr><th>mean IoU ({{ r.classes_present|length }} classes present)</th><td><b>{{ r.miou|fixed }}</b></td></tr>
    <tr><th>pixel accuracy</th><td>{{ r.pixel_accuracy|pct }}</td></tr>
    <tr><th>images ({{ r.split }} split)</th><td>{{ r.n_images|num }} ({{ r.n_pixels|num }} labelled pixels)</td></tr>
    <tr><th>class map</th><td>{{ r.class_map }}</td></tr>
    {% if r.trained_on %}<tr><th>model trained on</th><td>{{ r.trained_on }}</td></tr>{% endif %}
    {% if r.epochs %}<tr><th>training</th><td>{{ r.epochs }} epochs, best {{ r.best_epoch }},
      {{ r.train_seconds|secs }}, {{ r.train_images_per_second|fixed(1) }} images/s, {{ r.precision }} on
      {{ r.device }}; augmentation: {{ r.augment }}</td></tr>
    <tr><th>weights</th><td>{{ r.params|num }} parameters; {{ r.pretrained_note }}</td></tr>{% endif %}
    <tr><th>version</th><td>visionlab {{ r.visionlab_version }}{% if r.git_revision %} ({{ r.git_revision }}){% endif %},
      torch {{ r.torch_version }}</td></tr>
  </table>
  <p class="muted">Every score comes from one confusion matrix over all pixels of the split (pixels labelled 255
    left out), not from per-image averages. mIoU averages the classes that are true or predicted somewhere.</p>
  {% if cross %}
  <h3>Cross-dataset: trained on {{ cross.source }}, evaluated on {{ cross.target }}</h3>
  <p>Mapping: {{ cross.mapping }}. Over the {{ cross.shared_classes|length }} classes scored on both:
    mIoU {{ cross.source_miou_shared|fixed }} on the training data's val split,
    {{ cross.target_miou_shared|fixed }} on the target.</p>
  <div class="scroll"><table>
    <thead><tr><th class="l">class</th><th>IoU, training data</th><th>IoU, target</th><th>change</th></tr></thead>
    <tbody>{% for row in cross.rows if row.source_iou is not none or row.target_iou is not none %}
    <tr><td class="l text">{{ row.class }}</td><td>{{ row.source_iou|fixed(3) }}</td>
      <td>{{ row.target_iou|fixed(3) }}</td><td>{% if row.source_iou is not none and row.target_iou is not none %}
      {{ (row.target_iou - row.source_iou)|signed }}{% else %}–{% endif %}</td></tr>
    {% endfor %}</tbody>
  </table></div>
  <p class="muted">Classes scored on neither dataset are not listed; a dash: the class is absent from that one.</p>
  <figure>{{ fig.image(r.figures.cross_dataset, "cross-dataset per-class IoU") }}</figure>
  {% endif %}
  <h3>Per class</h3>
  <div class="scroll"><table>
    <thead><tr><th class="l">class</th><th>IoU</th><th>precision</th><th>recall</th></tr></thead>
    <tbody>{% for name in r.classes %}
    <tr><td class="l text">{{ name }}</td><td>{{ r.per_class_iou[name]|fixed(3) }}</td>
      <td>{{ r.per_class_precision[name]|fixed(3) }}</td><td>{{ r.per_class_recall[name]|fixed(3) }}</td></tr>
    {% endfor %}</tbody>
  </table></div>
  <p class="muted">A dash: the class is never true (recall), never predicted (precision), or neither (IoU).</p>
  <figure>{{ fig.image(r.figures.iou_bars, "per-class IoU") }}</figure>
  <h3>Image, ground truth, prediction</h3>
  <figure>{{ fig.image(r.figures.overlays, "overlays") }}</figure>
  <h3>Failure cases: the lowest-IoU images</h3>
  <figure>{{ fig.image(r.figures.failures, "failure cases") }}</figure>
  <figure>{{ fig.image(r.figures.confusion, "confusion matrix") }}</figure>
  {% if r.figures.curves %}<figure>{{ fig.image(r.figures.curves, "training curves") }}</figure>{% endif %}
</section>
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>visionlab segmentation: {{ r.model }} on {{ r.data }}</title>
<style>{{ css }}</style></head>
<body><main>
{{ section }}
</main></body></html>
"""


def signed(x: float, digits: int = 3) -> str:
    """0.0213 -> '+0.021'; a change that rounds to zero reads '0.000', not '-0.000'."""
    x = round(float(x), digits)
    return f"{x:+.{digits}f}" if x else f"{0:.{digits}f}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=pct, fixed=fixed, num=num, secs=secs, signed=signed)
    return env


def render_section(out_dir: Path, record: dict) -> Markup:
    """The report section for a metrics.json record; figure paths are relative to out_dir."""
    html = _environment().from_string(SECTION).render(r=record, cross=record.get("cross_dataset"),
                                                      fig=Figures(out_dir))
    return Markup(html)


def write_report(out_dir: Path, record: dict) -> Path:
    """out_dir/segment.html: one file, no network needed (written whole, then renamed)."""
    out_dir = Path(out_dir)
    page = _environment().from_string(PAGE).render(r=record, section=render_section(out_dir, record),
                                                   css=Markup((TEMPLATES / "report.css").read_text()))
    return write_text(out_dir / "segment.html", page)
