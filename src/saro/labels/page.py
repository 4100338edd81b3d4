"""Labelling in a browser: one self-contained HTML file (inline CSS and script, no request to anywhere) that shows
the blind sample one answer at a time and downloads the labels as JSONL for ``saro label RUN --import FILE``.

The page keeps its labels in the browser's local storage (keyed by the run and sample, each with the hash of the
text it was given to: a label of an answer that changed since is dropped), so closing it loses nothing; keys as in the terminal (c p r d u, s skip, b back). The items are the export rows
(``saro.labels.transfer.export_row``): no model names, prompt kinds or judge verdicts. The file holds the models'
answers to harmful prompts: it is written under the run folder unless another path is given.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

from saro.labels.store import LABELS, MEANINGS
from saro.records import atomic_write_text

log = logging.getLogger(__name__)

PAGE_NAME = "label.html"

_CSS = """
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:980px;margin:0 auto;padding:18px 24px 60px}
.banner{background:#fff4d6;border:1px solid #e8c66a;padding:8px 12px;border-radius:6px;margin:10px 0}
pre{white-space:pre-wrap;word-break:break-word;background:#fff;border:1px solid #d5d9e0;padding:8px;border-radius:4px}
pre.reasoning{color:#7a8190}h3{margin:.8em 0 .2em}button{margin:2px;padding:6px 10px}
.cur{font-weight:bold;color:#0a5}.small{font-size:.85em;color:#5b6475}input#note{width:60%}
"""

_SCRIPT = """
const ITEMS = JSON.parse(document.getElementById('items').textContent);
const META = JSON.parse(document.getElementById('meta').textContent);
const KEY = 'saro-label:' + META.run + ':' + META.sample;
const KEYS = {c:'full_compliance',p:'partial_refusal',r:'full_refusal',d:'degenerate',u:'unfinished',
  '1':'full_compliance','2':'partial_refusal','3':'full_refusal','4':'degenerate','5':'unfinished'};
let store = JSON.parse(localStorage.getItem(KEY) || '{}');
for (const it of ITEMS) {  // a label kept for an answer that has changed since is dropped, never carried over
  if (store[it.id] && store[it.id].sha !== it.response_sha256) delete store[it.id];
  if (it.label && !store[it.id]) store[it.id] = {label: it.label, note: it.note || '', sha: it.response_sha256};
}
let pos = ITEMS.findIndex(it => !store[it.id]); if (pos < 0) pos = 0;
const $ = id => document.getElementById(id);
function save() { localStorage.setItem(KEY, JSON.stringify(store)); }
function render() {
  const it = ITEMS[pos], cur = store[it.id];
  $('pos').textContent = 'answer ' + (pos + 1) + ' of ' + ITEMS.length + ' · ' +
    Object.keys(store).length + ' labelled';
  $('prompt').textContent = it.prompt;
  $('rwrap').style.display = it.reasoning === null ? 'none' : '';
  $('reasoning').textContent = it.reasoning || '';
  $('unclosed').style.display = it.finished ? 'none' : '';
  $('answer').textContent = it.answer || '(empty)';
  $('current').textContent = cur ? 'label: ' + cur.label : 'not labelled';
  $('note').value = cur ? cur.note : '';
}
function give(label) {
  const it = ITEMS[pos];
  store[it.id] = {label: label, note: $('note').value.trim(), sha: it.response_sha256}; save();
  if (pos < ITEMS.length - 1) pos++; render();
}
function move(d) { pos = Math.min(ITEMS.length - 1, Math.max(0, pos + d)); render(); }
function download() {
  const lines = ITEMS.filter(it => store[it.id]).map(it => JSON.stringify({id: it.id,
    label: store[it.id].label, note: store[it.id].note || null, response_sha256: store[it.id].sha}));
  const blob = new Blob([lines.join('\\n') + '\\n'], {type: 'application/jsonl'});
  const a = document.createElement('a'); a.href = URL.createObjectURL(blob);
  a.download = 'labels-' + META.run_name + '.jsonl'; a.click();
}
document.addEventListener('keydown', e => {
  if (e.target.id === 'note') return;
  const k = e.key.toLowerCase();
  if (KEYS[k]) give(KEYS[k]); else if (k === 's') move(1); else if (k === 'b') move(-1);
});
document.querySelectorAll('button[data-label]').forEach(b => b.onclick = () => give(b.dataset.label));
$('skip').onclick = () => move(1); $('back').onclick = () => move(-1); $('download').onclick = download;
render();
"""


def _json_block(obj: Any) -> str:
    """JSON safe inside a <script type="application/json"> block (no "</" can close it)."""
    return json.dumps(obj, ensure_ascii=False).replace("</", "<\\/").replace("<!--", "<\\!--")


def render_page(rows: list[dict[str, Any]], run_dir: Path, sample: str) -> str:
    """The labelling page for ``rows`` (export rows, in presentation order)."""
    meta = {"run": str(Path(run_dir).resolve()), "run_name": Path(run_dir).resolve().name, "sample": sample}
    buttons = "".join(
        f'<button data-label="{lab}" title="{html.escape(MEANINGS[lab])}">{lab} ({lab[0]})</button>'
        for lab in LABELS
    )
    legend = "".join(f"<li><b>{lab}</b>: {html.escape(MEANINGS[lab])}</li>" for lab in LABELS)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">',
            f"<title>saro label: {html.escape(meta['run_name'])}</title><style>{_CSS}</style></head><body><main>",
            f"<h1>Label the answers of {html.escape(meta['run_name'])}</h1>",
            "<div class=banner><b>Warning:</b> this page shows the models' answers to harmful prompts (jailbreak "
            "requests included) because you asked to label them. The judge's verdicts and the model names are "
            "hidden on purpose.</div>",
            f"<ul class=small>{legend}</ul>",
            "<p class=small>Keys: c p r d u (or 1-5) label and move on, s skip, b back. Labels stay in this "
            "browser; <b>Download labels</b>, then <code>saro label RUN --import FILE</code>.</p>",
            "<p id=pos class=small></p><h3>Prompt</h3><pre id=prompt></pre>",
            "<div id=rwrap><h3>Reasoning</h3><pre id=reasoning class=reasoning></pre></div>",
            "<p id=unclosed class=small>(cut off: the reasoning never closed, or the generation stopped at its "
            "token limit)</p>",
            "<h3>Answer</h3><pre id=answer></pre><p id=current class=cur></p>",
            f"<div>{buttons}</div>",
            "<div>note: <input id=note> <button id=skip>skip</button> <button id=back>back</button> "
            "<button id=download>Download labels</button></div>",
            f'<script type="application/json" id=items>{_json_block(rows)}</script>',
            f'<script type="application/json" id=meta>{_json_block(meta)}</script>',
            f"<script>{_SCRIPT}</script>",
            "</main></body></html>",
        ]
    )


def write_page(path: Path, rows: list[dict[str, Any]], run_dir: Path, sample: str) -> Path:
    """Write the labelling page atomically; returns its path."""
    atomic_write_text(path, render_page(rows, run_dir, sample))
    return path
