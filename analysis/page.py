"""The HTML page and PNGs of a report or a comparison (DESIGN §6): one self-contained page
that inlines the Vega / Vega-Lite / vega-embed bundle of vl-convert once (no network needed)
and embeds each section's Vega-Lite spec, and one PNG per chart rendered by vl-convert.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import altair as alt

from core.provenance import SIM_PACKAGES, json_default

VL_VERSION = "6.4"
PAGE_PACKAGES = (*SIM_PACKAGES, "vl-convert-python")  # versions a page's run record keeps

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
.caption{max-width:900px;color:#333;font-size:.93em}.meta{color:#666;font-size:.85em}
.chart{overflow-x:auto}
"""


@dataclass
class Section:
    """One chart of a page: anchor, heading, chart, caption, and the inputs it came from."""

    slug: str
    title: str
    chart: alt.TopLevelMixin
    caption: str
    inputs: list[str] = field(default_factory=list)


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
        parts.append(f"<section id='{s.slug}'><h2>{html.escape(s.title)}</h2>"
                     f"<div class='chart' id='chart-{s.slug}'></div>"
                     f"<p class='caption'>{html.escape(s.caption)}</p></section>")
        specs[s.slug] = s.chart.to_dict()
    parts.append(f"<script>const SPECS = {_script_json(specs)};\n" + """
for (const [slug, spec] of Object.entries(SPECS)) {
  const el = document.getElementById('chart-' + slug);
  vegaEmbed(el, spec, {renderer: 'svg', actions: false})
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
    """<out_dir>/<slug>.png per section, rendered by vl-convert."""
    import vl_convert as vlc

    paths = []
    for s in sections:
        png = out_dir / f"{s.slug}.png"
        png.write_bytes(vlc.vegalite_to_png(s.chart.to_dict(), vl_version=VL_VERSION,
                                            scale=scale))
        paths.append(png)
    return paths
