"""The reports as a small offline site: front page, every result, glossary, and each notebook's report.

Every page links one shared stylesheet (``style.css``), carries the same navigation bar (front page,
previous and next report, all results, glossary) and loads no script from elsewhere, so the folder reads
the same offline. Numbers come from the result files through :mod:`ser_utils.results.findings`.

Pages written into ``reports_dir``: ``index.html`` (the study's answer: takeaway, headline table, figure),
``results.html`` (every system under every protocol), ``glossary.html``, ``style.css``, and one
``<notebook>.html`` per executed notebook (:func:`ser_utils.results.render.render_report`: code folded away,
key numbers first).
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path

import pandas as pd

from ..core.atomic import atomic_write_text
from ..core.config import Profile
from . import findings
from .glossary import glossary_html, term_link
from .markers import smoke_banner_html

#: Each report: its title in the navigation and on the front page, and what it shows (one line).
REPORTS = {
    "01_download": ("01 · The data", "gets RAVDESS and checks it: 1,440 clips, 24 actors, 8 emotions."),
    "02_eda": ("02 · The corpus", "what is in the corpus: classes, actors, genders, durations, loudness and "
               "spectrograms."),
    "03_baselines": ("03 · Handcrafted baselines", "MFCC-style and eGeMAPS features with four classifiers, "
                     "under both protocols, with and without speaker normalization."),
    "04_pretrained_encoders": ("04 · Pretrained encoders", "Whisper-base (and wav2vec 2.0 when its weights are "
                               "there): frozen with several heads, partially fine-tuned, speaker-normalized."),
    "05_results": ("05 · Results", "every system compared: where they fail, per class and per actor, whether the "
                   "differences are real, and the published numbers beside."),
    "06_generalisation": ("06 · Other corpora", "the exported models on other corpora, with corpus or speaker "
                          "adaptation."),
}
SITE_PAGES = {"index.html": "Front page", "results.html": "All results", "glossary.html": "Glossary"}

STYLE = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa; --accent: #0b5cad; }
* { box-sizing: border-box; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); margin: 0; }
main, .page { max-width: 1180px; margin: 0 auto; padding: 0 20px 40px; }
a { color: var(--accent); }
h1 { font-size: 1.7em; line-height: 1.25; margin: 0.6em 0 0.3em; }
h2 { font-size: 1.3em; margin: 1.1em 0 0.4em; border-bottom: 1px solid var(--line); padding-bottom: 0.2em; }
h3 { font-size: 1.1em; }
code { font-size: 0.9em; background: var(--soft); padding: 0 0.25em; border-radius: 3px; }
nav.site { background: var(--soft); border-bottom: 1px solid var(--line); font-size: 0.92em; }
nav.site .inner { max-width: 1180px; margin: 0 auto; padding: 8px 20px; display: flex; flex-wrap: wrap;
  gap: 4px 18px; align-items: center; }
nav.site .here { font-weight: 600; }
nav.site .step { margin-left: auto; display: flex; gap: 18px; }
nav.site button { font: inherit; font-size: 0.95em; cursor: pointer; }
nav.bottom { border-top: 1px solid var(--line); border-bottom: none; margin-top: 2em; }
.lede { color: var(--muted); margin-top: 0; }
.banner { background: #fff3cd; border: 1px solid #e0c060; padding: 0.6em 0.9em; margin: 0.8em 0; }
.takeaway ul { margin: 0.3em 0; padding-left: 1.2em; }
.takeaway li { margin: 0.25em 0; }
.key-numbers { background: var(--soft); border-left: 4px solid var(--accent); padding: 0.5em 1em; margin: 0.8em 0; }
.key-numbers p { margin: 0.3em 0; }
.key-numbers ul { margin: 0.3em 0; padding-left: 1.2em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.6em 0; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
thead th { background: var(--soft); }
td.num, th.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
tr.group th { background: #e8eef5; font-weight: 600; }
tr.published td { color: var(--muted); font-style: italic; }
.what { display: block; color: var(--muted); font-size: 0.88em; }
.what.inline { display: inline; }
table.headline td, table.headline th { padding: 3px 8px; }
.ci { display: block; color: var(--muted); font-size: 0.85em; }
.scroll { overflow-x: auto; max-width: 100%; }
figure { margin: 1em 0; }
figure svg, figure img { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 0.92em; }
ul.not-run summary { cursor: pointer; }
dl.glossary dt { font-weight: 600; margin-top: 0.9em; }
dl.glossary dd { margin-left: 1.2em; }
dl.glossary dt:target { background: #fff3cd; }
details.provenance summary, details.code summary { color: var(--muted); cursor: pointer; font-size: 0.85em; }
details.code { margin: 0.2em 0; }
details.code > summary { list-style-position: inside; }
details.code[open] > summary { margin-bottom: 0.3em; }
/* notebook reports (nbconvert's "lab" classes) */
.jp-Cell { margin: 0.4em 0; }
.jp-InputPrompt, .jp-OutputPrompt, .jp-Collapser { display: none; }
.jp-OutputArea-output { overflow-x: auto; max-width: 100%; }
.jp-RenderedText pre, .highlight pre { background: var(--soft); padding: 0.5em 0.8em; overflow-x: auto;
  font-size: 0.85em; line-height: 1.4; margin: 0.3em 0; }
.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"] pre { background: #fff5f5; }
.jp-RenderedImage img { max-width: 100%; height: auto; }
.jp-RenderedHTMLCommon table, table.dataframe { font-size: 0.85em; }
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { text-align: right; }
.jp-RenderedHTMLCommon tbody th { text-align: left; }
a.anchor-link { display: none; }
@media print { nav.site { display: none; } details.code { display: none; } }
"""

def style_css() -> str:
    """The shared stylesheet: the site's rules and Pygments' for highlighted code."""
    from pygments.formatters import HtmlFormatter

    return STYLE + HtmlFormatter(style="default").get_style_defs(".highlight")


def nav_html(current: str, notebooks=tuple(REPORTS), *, bottom: bool = False) -> str:
    """The navigation bar: front page, all results, glossary, then previous / next report (``current`` is a
    page file name, e.g. ``"03_baselines.html"`` or ``"index.html"``)."""
    links = [f"<a href='{page}'{' class=here' if page == current else ''}>{html.escape(label)}</a>"
             for page, label in SITE_PAGES.items()]
    names = [n for n in notebooks]
    step = []
    stem = current.removesuffix(".html")
    if stem in names:
        i = names.index(stem)
        if i > 0:
            step.append(f"<a rel='prev' href='{names[i - 1]}.html'>← {html.escape(_short(names[i - 1]))}</a>")
        if i + 1 < len(names):
            step.append(f"<a rel='next' href='{names[i + 1]}.html'>{html.escape(_short(names[i + 1]))} →</a>")
        if not bottom:
            step.append("<button type='button' onclick='toggleCode(this)'>Show code</button>")
    else:
        step.append(f"<a rel='next' href='{names[0]}.html'>Reports: {html.escape(_short(names[0]))} →</a>")
    cls = "site bottom" if bottom else "site"
    return (f"<nav class='{cls}' aria-label='reports'><div class='inner'>{' '.join(links)}"
            f"<span class='step'>{' '.join(step)}</span></div></nav>")


def _short(name: str) -> str:
    return REPORTS.get(name, (name, ""))[0]


def page(title: str, body: str, current: str, notebooks=tuple(REPORTS)) -> str:
    """A whole site page around ``body`` (HTML)."""
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1.0'>"
            f"<title>{html.escape(title)}</title><link rel='stylesheet' href='style.css'></head><body>"
            f"{nav_html(current, notebooks)}<div class='page'>{body}</div>"
            f"{nav_html(current, notebooks, bottom=True)}</body></html>")


# ---------------------------------------------------------------------------------------------- front page

def headline_table_html(table: pd.DataFrame) -> str:
    """The headline table: per test-speaker use, the best system of each kind and the published rows."""
    rows = findings.headline_rows(table)
    head = ("<thead><tr><th>kind</th><th>system</th>"
            f"<th class='num'>UAR %, unseen actors<br>({term_link('actor-kfold', 'actor-kfold')})</th>"
            f"<th class='num'>UAR %, actors seen<br>({term_link('random-80-20', 'random-80-20')})</th></tr></thead>")
    anchors = {"nothing": "inductive", "enrolment": "spknorm-k10", "all clips": "spknorm"}
    body, use = [], None
    for row in rows:
        if row["use"] != use:
            use = row["use"]
            body.append(f"<tr class='group'><th colspan='4'>{term_link(anchors[use], findings.USE_TITLES[use])}"
                        "</th></tr>")
        if row["kind"] == "published":
            body.append(f"<tr class='published'><td>published ({html.escape(row['source'])})</td>"
                        f"<td>{html.escape(row['what'])}</td><td class='num'>{row['primary']}</td><td></td></tr>")
            continue
        body.append(f"<tr><td>{html.escape(row['kind'])}</td><td><code>{html.escape(row['system'])}</code>"
                    f" <span class='what inline'>{html.escape(row['what'])}</span></td>"
                    f"<td class='num'>{row['primary']}</td><td class='num'>{row['secondary']}</td></tr>")
    return f"<div class='scroll'><table class='headline'>{head}<tbody>{''.join(body)}</tbody></table></div>"


def not_run_html(table: pd.DataFrame) -> str:
    """One line per reason a system has no number, its systems folded away."""
    groups = findings.not_run(table)
    if not groups:
        return ""
    items = "".join(f"<li><details><summary><b>{len(systems)} system{'s' if len(systems) > 1 else ''}</b>: "
                    f"{html.escape(reason)}.</summary><code>{'</code>, <code>'.join(map(html.escape, systems))}"
                    "</code></details></li>" for reason, systems in groups)
    return f"<h2>Not run on the machine that made these reports</h2><ul class='not-run'>{items}</ul>"


def headline_figure_svg(table: pd.DataFrame) -> str:
    """Actor-kfold UAR of every system that ran, sorted, coloured by what it uses of the test speaker,
    with EmoBox's best published frozen encoder as a line; an inline SVG (sharp at any width)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = findings.results(table).iloc[::-1]
    if rows.empty:
        return ""
    colours = {"nothing": "#0b5cad", "enrolment": "#e69f00", "all clips": "#9e9e9e"}
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(rows) + 1.4), dpi=100)
    ax.barh(rows["system"], rows["uar"], xerr=rows["std"].fillna(0), color=rows["use"].map(colours),
            error_kw={"elinewidth": 0.8, "ecolor": "#444"})
    for y, value in enumerate(rows["uar"]):
        ax.text(1, y, f"{value:.1f}", va="center", ha="left", color="white", fontsize=9, fontweight="bold")
    published = max(uar for _, use, uar, source in findings.PUBLISHED_ROWS if source == "EmoBox")
    ax.axvline(published, color="#b00020", linestyle="--", linewidth=1)
    ax.axvline(12.5, color="#444", linestyle=":", linewidth=1)
    ax.set_xlim(0, 100)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("UAR % on unseen actors (actor-kfold, mean ± std over 6 folds)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    handles += [plt.Line2D([], [], color="#b00020", linestyle="--"), plt.Line2D([], [], color="#444", linestyle=":")]
    ax.legend(handles, ["uses nothing of the test speaker", "10 enrolment clips per speaker",
                        "all of the speaker's clips (transductive)",
                        f"EmoBox's best frozen encoder, published ({published:.1f})", "chance (12.5)"],
              loc="lower right", fontsize=9, frameon=True, framealpha=1)
    ax.tick_params(axis="y", labelsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]


def _reports_list(profile: Profile, notebooks) -> str:
    record = profile.results.table("provenance")
    records = json.loads(record.read_text()) if record.is_file() else {}
    items, rows = [], []
    for name in notebooks:
        title, purpose = REPORTS.get(name, (name, ""))
        made = (profile.reports_dir / f"{name}.html").is_file()
        link = f"<a href='{name}.html'>{html.escape(title)}</a>" if made else f"{html.escape(title)} (not run yet)"
        items.append(f"<li>{link}: {html.escape(purpose)}</li>")
        info = records.get(name, {})
        cells = [info.get(k, "-") for k in ("profile", "data", "backbones", "device", "commit", "date")]
        rows.append(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
                    + "</tr>")
    provenance = ("<details class='provenance'><summary>How each report was made (profile, data, backbones, "
                  "device, commit, date)</summary><div class='scroll'><table><thead><tr><th>report</th>"
                  "<th>profile</th><th>data</th><th>backbones</th><th>device</th><th>commit</th><th>date</th></tr>"
                  f"</thead><tbody>{''.join(rows)}</tbody></table></div></details>")
    return f"<h2>The reports</h2><ol>{''.join(items)}</ol>{provenance}"


def index_body(profile: Profile, table: pd.DataFrame | None, notebooks) -> str:
    parts = [f"<h1>{html.escape(findings.title(table))}</h1>",
             "<p class='lede'>8 emotions, RAVDESS speech (1,440 clips, 24 actors). Numbers: "
             f"{term_link('uar', 'UAR')} % (chance 12.5 %), mean ± std over the six folds of "
             f"{term_link('actor-kfold', 'actors never seen in training')} unless said.</p>"]
    if profile.is_smoke:
        parts.append(smoke_banner_html())
    if table is None:
        parts.append("<p>No results yet: run the notebooks (<code>make all</code>).</p>")
        return "".join(parts) + _reports_list(profile, notebooks)
    sentences = "".join(f"<li>{s}</li>" for s in findings.takeaways(table))
    parts.append(f"<section class='takeaway'><h2>What it found</h2><ul>{sentences}</ul></section>")
    parts.append("<h2>The best system of each kind</h2>" + headline_table_html(table))
    parts.append("<p class='lede'>Rows are grouped by what a system may use of a test speaker at test time. "
                 "Published rows are as their authors report them (EmoBox: the same six folds; Pepino et al.: "
                 "another split and 7 classes). Every system with accuracy, macro-F1 and 95 % intervals: "
                 "<a href='results.html'>all results</a>; terms: <a href='glossary.html'>glossary</a>.</p>")
    parts.append(not_run_html(table))
    svg = headline_figure_svg(table)
    if svg:
        parts.append("<h2>Every system on unseen actors</h2><figure role='img' aria-label='Bar chart of the "
                     "actor-kfold UAR of every system, sorted'>" + svg +
                     "<figcaption>UAR (%) on actors never seen in training, every system that ran, best at the top; "
                     "bars: mean over the six EmoBox folds, whiskers: standard deviation over folds. Blue systems use "
                     "nothing of the test speaker; orange ones 10 unlabelled enrolment clips; grey ones all of the "
                     "speaker's clips (transductive). Dashed red: EmoBox's best published frozen encoder on the same "
                     "folds; dotted: chance (12.5 %).</figcaption></figure>")
    parts.append(cross_corpus_paragraph(profile.results_dir))
    return "".join(parts) + _reports_list(profile, notebooks)


def cross_corpus_paragraph(results: Path) -> str:
    """One paragraph on the cross-corpus evaluation (notebook 06), from ``cross_corpus.csv``."""
    from .store import read_table

    table = read_table(results, "cross_corpus")
    ok = None if table is None else table[table["status"] == "ok"] if "status" in table else table
    if ok is None or ok.empty:
        return ("<h2>Other corpora</h2><p>None evaluated (<a href='06_generalisation.html'>06 · Other corpora</a>): "
                "name manifests in <code>SER_EXTRA_CORPORA</code>.</p>")
    best = ok.loc[ok["uar"].idxmax()]
    return (f"<h2>Other corpora</h2><p>{ok['corpus'].nunique()} evaluated "
            f"(<a href='06_generalisation.html'>06 · Other corpora</a>); best UAR {100 * best['uar']:.1f} % "
            f"({html.escape(str(best['model']))} on {html.escape(str(best['corpus']))}, adaptation "
            f"{html.escape(str(best['adapt']))}, {html.escape(str(best['labels']))} labels).</p>")


# ---------------------------------------------------------------------------------------------- all results

METRIC_COLUMNS = (("actor-kfold", "uar", "UAR %"), ("actor-kfold", "accuracy", "WA %"),
                  ("actor-kfold", "macro_f1", "macro-F1 %"), ("random-80-20", "uar", "UAR %"),
                  ("random-80-20", "accuracy", "WA %"))


def _metric_cell(row: pd.Series | None, metric: str) -> str:
    if row is None:
        return "<td class='num'>-</td>"
    mean, std = 100 * float(row[f"{metric}_mean"]), 100 * float(row[f"{metric}_std"])
    low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    ci = (f"<span class='ci'>[{100 * float(low):.1f}, {100 * float(high):.1f}]</span>"
          if pd.notna(low) and pd.notna(high) else "")
    return f"<td class='num'>{findings.pct(mean, std)}{ci}</td>"


def full_table_body(table: pd.DataFrame | None) -> str:
    if table is None:
        return "<h1>All results</h1><p>No results yet.</p>"
    parts = ["<h1>All results: every system under both protocols</h1>",
             f"<p class='lede'>In %: mean ± standard deviation over folds ({term_link('actor-kfold', 'actor-kfold')}"
             f": six folds of unseen actors) or seeds ({term_link('random-80-20', 'random-80-20')}), and below it the "
             f"{term_link('interval', '95 % bootstrap interval')} over test clips. {term_link('uar', 'UAR')}, "
             f"{term_link('wa', 'WA')}, {term_link('macro-f1', 'macro-F1')}: see the glossary. "
             "Machine-readable: <a href='results/comparison.csv'>results/comparison.csv</a>.</p>"]
    head = ("<thead><tr><th rowspan='2'>system</th><th colspan='3'>unseen actors (actor-kfold)</th>"
            "<th colspan='2'>actors seen (random-80-20)</th></tr><tr>"
            + "".join(f"<th class='num'>{label}</th>" for _, _, label in METRIC_COLUMNS) + "</tr></thead>")
    ran = findings.results(table)
    anchors = {"nothing": "inductive", "enrolment": "spknorm-k10", "all clips": "spknorm"}
    body = []
    for use in findings.USES:
        group = ran[ran["use"] == use]
        if group.empty:
            continue
        body.append(f"<tr class='group'><th colspan='6'>{term_link(anchors[use], findings.USE_TITLES[use])}</th></tr>")
        for system in group["system"]:
            cells = []
            for protocol, metric, _ in METRIC_COLUMNS:
                match = table[(table["system"] == system) & (table["protocol"] == protocol) & (table["status"] == "ok")]
                cells.append(_metric_cell(None if match.empty else match.iloc[0], metric))
            body.append(f"<tr><td><code>{html.escape(system)}</code><span class='what'>"
                        f"{html.escape(findings.describe(system))}</span></td>{''.join(cells)}</tr>")
    parts.append(f"<div class='scroll'><table class='full'>{head}<tbody>{''.join(body)}</tbody></table></div>")
    parts.append(not_run_html(table))
    return "".join(parts)


# ---------------------------------------------------------------------------------------------- the site

def write_site(profile: Profile, notebooks=tuple(REPORTS)) -> Path:
    """Write ``style.css``, ``index.html``, ``results.html`` and ``glossary.html`` into the reports folder;
    returns the front page's path."""
    reports = profile.reports_dir
    reports.mkdir(parents=True, exist_ok=True)
    table = findings.load_summary(profile.results_dir)
    atomic_write_text(reports / "style.css", style_css())
    atomic_write_text(reports / "glossary.html", page(
        "Glossary", "<h1>Glossary</h1><p class='lede'>The terms of the tables and reports.</p>" + glossary_html(),
        "glossary.html", notebooks))
    atomic_write_text(reports / "results.html", page("All results", full_table_body(table), "results.html", notebooks))
    index = reports / "index.html"
    front = index_body(profile, table, notebooks)
    atomic_write_text(index, page(findings.title(table), front, "index.html", notebooks))
    return index
