"""The HTML page and PNGs of a report or a comparison (DESIGN §6): one self-contained page
that inlines the Vega / Vega-Lite / vega-embed bundle of vl-convert once (no network needed)
and embeds each section's Vega-Lite spec, and one PNG per chart rendered by vl-convert.

A section may carry text instead of (or beside) a chart: bullet points and a small table (the
report's Findings). Every chart gets the same legible fonts (`styled`) and vega-embed's export
menu (PNG/SVG and the spec).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import altair as alt
import pandas as pd

from core.provenance import SIM_PACKAGES, json_default

VL_VERSION = "6.4"
PAGE_PACKAGES = (*SIM_PACKAGES, "vl-convert-python")  # versions a page's run record keeps

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
.caption{max-width:900px;color:#333;font-size:.93em}.meta{color:#666;font-size:.85em}
.chart{overflow-x:auto}
.findings li{margin:.35em 0;max-width:1000px}
table.numbers{border-collapse:collapse;font-size:.9em;margin:1em 0}
table.numbers td,table.numbers th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
table.numbers td:first-child,table.numbers th:first-child{text-align:left}
"""
FONT_SIZE, TITLE_SIZE = 13, 15  # px: legible in a browser at 100% zoom
# the export menu (PNG, SVG, the spec) of vega-embed; the online editor needs a network
EMBED_OPTIONS = {"renderer": "svg",
                 "actions": {"export": True, "source": True, "compiled": False, "editor": False}}


@dataclass
class Section:
    """One chart of a page: anchor, heading, chart, caption, and the inputs it came from."""

    slug: str
    title: str
    chart: alt.TopLevelMixin | None
    caption: str
    inputs: list[str] = field(default_factory=list)
    points: list[str] = field(default_factory=list)  # bullet points above the chart
    table: pd.DataFrame | None = None  # a small table of numbers above the chart


def styled(chart: alt.TopLevelMixin) -> dict:
    """The chart's spec with the page's font sizes (axes, legends, titles, facet headers)."""
    return chart.configure_axis(labelFontSize=FONT_SIZE, titleFontSize=FONT_SIZE).configure_legend(
        labelFontSize=FONT_SIZE, titleFontSize=FONT_SIZE, labelLimit=320).configure_title(
        fontSize=TITLE_SIZE, subtitleFontSize=FONT_SIZE).configure_header(
        labelFontSize=FONT_SIZE, titleFontSize=FONT_SIZE).to_dict()


def _body(s: Section) -> str:
    parts = []
    if s.points:
        parts.append("<ul class='findings'>" + "".join(f"<li>{html.escape(p)}</li>"
                                                        for p in s.points) + "</ul>")
    if s.table is not None and len(s.table):
        parts.append(s.table.to_html(index=False, escape=True, na_rep="–",
                                     classes="numbers", border=0))
    if s.chart is not None:
        parts.append(f"<div class='chart' id='chart-{s.slug}'></div>")
    return "".join(parts)

def _script_json(obj: object) -> str:
    return json.dumps(obj, default=json_default).replace("</", "<\\/")


def render_html(sections: list[Section], title: str, meta: str) -> str:
    """The self-contained page: the Vega bundle once, then a div + spec per section."""
    import vl_convert as vlc

    bundle = vlc.javascript_bundle(vl_version=VL_VERSION).replace("</script", "<\\/script")
    parts = ["<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
             f"<title>{html.escape(title)}</title><style>{_STYLE}</style>",
             f"<script>{bundle}</script></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p class='meta'>{html.escape(meta)}</p>", "<nav><ul>"]
    parts += [f"<li><a href='#{s.slug}'>{html.escape(s.title)}</a></li>" for s in sections]
    parts.append("</ul></nav>")
    specs = {}
    for s in sections:
        caption = f"<p class='caption'>{html.escape(s.caption)}</p>" if s.caption else ""
        parts.append(f"<section id='{s.slug}'><h2>{html.escape(s.title)}</h2>{_body(s)}"
                     f"{caption}</section>")
        if s.chart is not None:
            specs[s.slug] = styled(s.chart)
    parts.append(f"<script>const SPECS = {_script_json(specs)};\n"
                 f"const EMBED = {_script_json(EMBED_OPTIONS)};\n" + """
for (const [slug, spec] of Object.entries(SPECS)) {
  const el = document.getElementById('chart-' + slug);
  vegaEmbed(el, spec, EMBED)
    .then(() => { el.setAttribute('data-rendered', 'ok'); })
    .catch((err) => { el.setAttribute('data-rendered', 'error');
                      console.error('Vega error in ' + slug + ': ' + err); });
}
</script></body></html>""")
    return "\n".join(parts)


def write_page(sections: list[Section], path: Path, title: str, meta: str) -> Path:
    path.write_text(render_html(sections, title, meta), encoding="utf-8")
    return path


def write_pngs(sections: list[Section], out_dir: Path, scale: float = 1.5) -> list[Path]:
    """<out_dir>/<slug>.png per section with a chart, rendered by vl-convert."""
    import vl_convert as vlc

    paths = []
    for s in sections:
        if s.chart is None:
            continue
        png = out_dir / f"{s.slug}.png"
        png.write_bytes(vlc.vegalite_to_png(styled(s.chart), vl_version=VL_VERSION,
                                            scale=scale))
        paths.append(png)
    return paths
