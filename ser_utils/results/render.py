"""A notebook's report page: its navigation, its key numbers first, code folded, no script from elsewhere.

:func:`render_report` renders an executed notebook with nbconvert's "lab" template, minus its CDN scripts and
inline CSS (the page links the site's ``style.css``), and fills the slot the report's header left
(:data:`~ser_utils.results.markers.KEY_NUMBERS_SLOT`, ``report.show_header``) with what the report shows and
its key numbers, read from the result files as they are after the notebook ran.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from ..core.atomic import atomic_write_text
from . import findings
from .glossary import term_link
from .site import REPORTS, cross_corpus_paragraph, nav_html

#: Toggles every folded code cell of a report (inline: the reports load no script from elsewhere).
TOGGLE_SCRIPT = ("<script>function toggleCode(button){const open=button.dataset.open!=='1';"
                 "document.querySelectorAll('details.code').forEach(d=>d.open=open);"
                 "button.dataset.open=open?'1':'0';button.textContent=open?'Hide code':'Show code';}</script>")

#: A report page: nbconvert's "lab" template without its CDN scripts (require.js, MathJax, mermaid) and
#: without its 260 KB of inline CSS; code cells folded into <details>, figures with their alt text.
REPORT_TEMPLATE = r"""
{%- extends 'lab/index.html.j2' -%}
{%- block header -%}
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{{ resources.ser_title | e }}</title>
<link rel="stylesheet" href="style.css">
</head>
{%- endblock header -%}
{%- block body_header -%}
<body>
{{ resources.ser_nav }}
<main>
{%- endblock body_header -%}
{% block body_footer %}
</main>
{{ resources.ser_nav_bottom }}
{{ resources.ser_script }}
</body>
{% endblock body_footer %}
{% block footer_js %}{% endblock footer_js %}
{% block input_group -%}
{%- if cell.source.strip() -%}
<details class="code"><summary>code</summary>
{{ super() }}
</details>
{%- endif -%}
{%- endblock input_group %}
{% block data_png scoped %}
<div class="jp-RenderedImage jp-OutputArea-output">
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}"
 alt="{{ (output | get_metadata('alt', 'image/png')) or 'figure' | e }}">
</div>
{%- endblock data_png %}
"""


def key_numbers_html(name: str, results_dir: Path) -> str:
    """What a report shows and its key numbers, from the result files as they are after its run."""
    purpose = REPORTS.get(name, (name, ""))[1]
    lines = [f"<p><b>This report</b> {html.escape(purpose)}</p>"] if purpose else []
    try:
        lines += _numbers(name, results_dir)
    except (OSError, KeyError, ValueError) as err:  # a report without its numbers still renders
        lines.append(f"<p>(key numbers unavailable: {html.escape(str(err))})</p>")
    return "<div class='key-numbers'>" + "".join(lines) + "</div>"


def _numbers(name: str, results_dir: Path) -> list[str]:
    from .store import read_table

    if name in ("01_download", "02_eda"):
        corpus = read_table(results_dir, "corpus")
        if corpus is None or corpus.empty:
            return []
        counts = corpus["emotion"].value_counts()
        text = (f"{len(corpus):,} clips, {corpus['actor'].nunique()} actors, {corpus['emotion'].nunique()} emotions "
                f"({counts.min()} to {counts.max()} clips each)")
        if "duration" in corpus:
            text += (f"; clips last {corpus['duration'].min():.1f} to {corpus['duration'].max():.1f} s "
                     f"(median {corpus['duration'].median():.1f} s)")
        return [f"<p><b>Key numbers:</b> {text}.</p>"]
    if name == "06_generalisation":
        return [cross_corpus_paragraph(results_dir).removeprefix("<h2>Other corpora</h2>")]
    # 03 and 04 are rendered before 05 rewrites comparison.csv: their numbers come from the per-fold metrics
    # they have just written (a comparison.csv from an earlier run would show the old numbers).
    table = findings.load_summary(results_dir, from_metrics=name != "05_results")
    if table is None:
        return []
    if name == "05_results":
        return ["<ul>" + "".join(f"<li>{s}</li>" for s in findings.takeaways(table)) + "</ul>"]
    types = ("handcrafted",) if name == "03_baselines" else ("frozen", "fine-tuned")
    items = []
    for type_ in types:
        for use in findings.USES:
            found = findings.best(table, use=use, type_=type_)
            if found:
                items.append(f"<li>best {findings.KIND_TITLES[type_]}, {findings.USE_TITLES[use].lower()}: "
                             f"<code>{html.escape(found.system)}</code>, {found.cell} % UAR (actor-kfold)</li>")
    return [f"<p><b>Key numbers</b> ({term_link('uar', 'UAR')} %, mean ± std over folds):</p><ul>{''.join(items)}</ul>"]


def _describe_figures(nb) -> None:
    """Alt text for every figure that has none: the figure's own description when the kernel recorded one
    (``report.describe_figures``), else the section it appears in."""
    heading = "the report"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            titles = re.findall(r"^#+\s*(.+)$", cell.source, flags=re.MULTILINE)
            heading = titles[-1].strip() if titles else heading
            continue
        for output in cell.get("outputs", []):
            if "image/png" not in output.get("data", {}):
                continue
            meta = output.setdefault("metadata", {}).setdefault("image/png", {})
            if not meta.get("alt"):
                meta["alt"] = f"Figure of the section '{heading}'"


def _header_first(nb) -> None:
    """The report's header (the output of the cell that calls ``report.show_header``) before that cell's
    folded code, so that a report opens on its title."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "show_header(" in cell.source and cell.get("outputs"):
            import nbformat

            header = nbformat.v4.new_code_cell("")
            header.outputs, cell.outputs = cell.outputs, []
            nb.cells.insert(i, header)
            return


def render_report(notebook: Path, html_path: Path, name: str, results_dir: Path, notebooks=tuple(REPORTS)) -> Path:
    """Render an executed notebook as a site page: navigation, key numbers first, code folded, no CDN."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    tags = {"parameters", "injected-parameters"}  # shown as one line at the end instead
    nb.cells = [c for c in nb.cells if not tags & set(c.metadata.get("tags", []))]
    parameters = nb.metadata.get("papermill", {}).get("parameters", {})
    if parameters:
        listed = ", ".join(f"`{k}={v!r}`" for k, v in parameters.items())
        nb.cells.append(nbformat.v4.new_markdown_cell(f"*Parameters of this run:* {listed}"))
    _describe_figures(nb)
    _header_first(nb)
    exporter = HTMLExporter(template_name="lab", template_file="ser_report.html.j2",
                            extra_loaders=[DictLoader({"ser_report.html.j2": REPORT_TEMPLATE})],
                            exclude_input_prompt=True, exclude_output_prompt=True)
    title = REPORTS.get(name, (name, ""))[0]
    resources = {"ser_title": f"{title}: SER study", "ser_nav": nav_html(f"{name}.html", notebooks),
                 "ser_nav_bottom": nav_html(f"{name}.html", notebooks, bottom=True), "ser_script": TOGGLE_SCRIPT}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    body = re.sub(r"<div class=.key-numbers-slot.></div>", lambda _: key_numbers_html(name, results_dir), body,
                  count=1)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(html_path, body)
    return html_path

