"""Render the chain report: stages, metrics, every PNG a stage produced, artifacts with fingerprints.

The page is self-contained (images inlined as data URIs, no scripts, no external links), so a CI job
can publish it as a single file.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import re
from pathlib import Path

from internlm_chain.chain.artifacts import Endpoint
from internlm_chain.chain.manifest import Manifest, StageRecord

MAX_IMAGES_PER_STAGE = 12
MAX_TRANSCRIPT_CHARS = 20_000

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} h2{border-bottom:2px solid #eee;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem} td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left;
vertical-align:top;font-size:.9rem} th{background:#f6f6f6}
.state-done,.state-up{color:#137333;font-weight:600}.state-failed,.state-interrupted{color:#b3261e;font-weight:600}
img{max-width:100%;border:1px solid #eee;margin:.3rem 0} code,pre{font-family:ui-monospace,monospace;font-size:.8rem}
pre{background:#f8f8f8;padding:.6rem;overflow:auto;max-height:28rem} .muted{color:#777}
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _figure(caption: str, b64: str) -> str:
    return (f'<figure><img alt="{_esc(caption)}" src="data:image/png;base64,{b64}">'
            f'<figcaption class="muted">{_esc(caption)}</figcaption></figure>')


_EMBEDDED = re.compile(r"<img[^>]*?alt=['\"]([^'\"]*)['\"][^>]*?src=['\"]data:image/png;base64,([A-Za-z0-9+/=]+)['\"]")


def _images(stage_dir: Path) -> list[str]:
    """PNG files a stage wrote, and the PNGs inlined in its own HTML reports."""
    figures = [_figure(p.name, base64.b64encode(p.read_bytes()).decode("ascii"))
               for p in sorted(stage_dir.rglob("*.png"))]
    for page in sorted(stage_dir.rglob("*.html")):
        for alt, data in _EMBEDDED.findall(page.read_text(encoding="utf-8", errors="replace")):
            figures.append(_figure(f"{page.name}: {alt}", data))
    return figures[:MAX_IMAGES_PER_STAGE]


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _metrics_table(metrics: dict) -> str:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, (dict, list)):
            text = json.dumps(value, ensure_ascii=False)
            if len(text) > 400:
                text = text[:400] + " …"
        else:
            text = str(value)
        rows.append(f"<tr><th>{_esc(key)}</th><td><code>{_esc(text)}</code></td></tr>")
    return "<table>" + "".join(rows) + "</table>" if rows else ""


def _short(fingerprint: str) -> str:
    """Enough of a content hash to tell artifacts apart; the whole one is the cell's title (hover, copy)."""
    algo, _, digest = fingerprint.partition(":")
    return f"{algo}:{digest[:16]}…" if digest and len(digest) > 16 else fingerprint


def _outputs_table(record: StageRecord) -> str:
    rows = []
    for name, art in record.outputs.items():
        extra = f" (served as <code>{_esc(art.served_name)}</code>)" if isinstance(art, Endpoint) else ""
        rows.append(f"<tr><td>{_esc(name)}</td><td>{_esc(art.kind)}</td><td><code>{_esc(art.path)}</code>{extra}"
                    f"</td><td><code title='{_esc(art.fingerprint)}'>{_esc(_short(art.fingerprint))}</code></td><td>{_esc(art.chat_template or '')}</td></tr>")
    if not rows:
        return ""
    return ("<table><tr><th>output</th><th>kind</th><th>where</th><th>fingerprint</th><th>chat template</th></tr>"
            + "".join(rows) + "</table>")


def _transcripts(stage_dir: Path) -> str:
    parts = []
    for path in sorted(stage_dir.rglob("*transcript*.json"))[:5]:
        text = path.read_text(encoding="utf-8", errors="replace")[:MAX_TRANSCRIPT_CHARS]
        parts.append(f"<h4>{_esc(path.name)}</h4><pre>{_esc(text)}</pre>")
    return "".join(parts)


def _stage_section(name: str, record: StageRecord, stage_dir: Path) -> str:
    body = [f'<h2 id="{_esc(name)}">{_esc(name)} — <span class="state-{_esc(record.state)}">{_esc(record.state)}</span></h2>',
            f"<p class='muted'>started {_esc(_when(record.started))}, took {_esc(record.duration_s)} s, "
            f"fingerprint <code>{_esc(record.fingerprint[:16])}</code></p>"]
    if record.error:
        body.append(f"<p class='state-failed'>{_esc(record.error)}</p>")
    body.append(_metrics_table(record.metrics))
    body.append(_outputs_table(record))
    if stage_dir.is_dir():
        body.extend(_images(stage_dir))
        body.append(_transcripts(stage_dir))
    if record.commands:
        body.append("<details><summary>commands</summary><pre>" + _esc("\n\n".join(record.commands)) + "</pre></details>")
    return "\n".join(b for b in body if b)


def render_report(workdir: Path, title: str | None = None) -> str:
    manifest = Manifest.load(workdir)
    title = title or f"internlm-chain report: {manifest.chain or workdir.name}"
    summary = ["<table><tr><th>stage</th><th>state</th><th>duration (s)</th><th>ended</th></tr>"]
    for name, rec in manifest.stages.items():
        summary.append(f'<tr><td><a href="#{_esc(name)}">{_esc(name)}</a></td><td class="state-{_esc(rec.state)}">'
                       f"{_esc(rec.state)}</td><td>{_esc(rec.duration_s or '')}</td><td>{_esc(_when(rec.ended))}</td></tr>")
    summary.append("</table>")
    sections = [_stage_section(name, rec, workdir / name) for name, rec in manifest.stages.items()]
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{_esc(title)}</h1>"
            f"<p class='muted'>chain file <code>{_esc(manifest.chain_file)}</code>, internlm-chain {_esc(manifest.version)}, "
            f"workdir <code>{_esc(workdir)}</code></p>" + "".join(summary) + "\n".join(sections) + "</body></html>\n")
