"""One self-contained HTML report of a run: summary, probe, logit lens, PCA, per-question table.

Self-contained: figures are inline base64 PNGs, the small sort/filter script and the styles are
inline, and a Content-Security-Policy meta tag forbids the page any network access. Every text
from the run (questions, answers, model output) is escaped with html.escape; the script only
shows, hides and reorders rows that are already in the page, and reads its initial filter from
the URL fragment (#q=paris&correct=false&category=geography&sort=3: filter, then sort by the 4th
column), so a filtered view can be shared.

A section that cannot be computed (a probe on a run with one class, a logit lens whose model
weights are not on this machine) says why in its place; the rest of the report is still written.

Public names:
    build_report(run_dir, output=None, layers=None, color_by="correct", probe=True, lens=True,
                 progress=True, model=None, tokenizer=None, stratify_by="category") -> path of the HTML file
    accuracy_table(rows) -> dict        overall and per-category accuracy (and acc_norm) with the summary's
                                        Wilson 95% intervals and small-n flags

Example:
    >>> build_report("results/run1", "reports/run1.html")
    'reports/run1.html'
"""
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..accuracy import SMALL_N_NOTE, accuracy_stats
from ..store.atomic import write_text_atomic
from ..store.run_folder import read_run_config, read_summary
from ..store.run_reader import RunReader, read_run_rows
from .arrays import run_layers
from .html import esc, failed, pct, png, table
from .lens import logit_lens_run
from .lens.html import lens_html
from .pca import plot_pca
from .plots import default_layer
from .probe import probe_run
from .probe.html import probe_html


def accuracy_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """{"overall": {...}, "per_category": {name: {...}}}; each {n, correct, accuracy, ci, small_n} with the
    95% interval of summary.json (accuracy.accuracy_stats: Wilson, clustered by question when a
    question has several answers), over the rows graded True / False (ungraded rows are not counted);
    small_n: fewer than accuracy.SMALL_N questions. Rows scored by log-likelihood add "norm": the same
    figures for acc_norm (their correct_norm)."""
    def stats(rs: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
        graded = [r for r in rs if isinstance(r.get(key), bool)]
        ids = [r["id"] if r.get("id") is not None else ("row", i) for i, r in enumerate(graded)]
        s = accuracy_stats([r[key] for r in graded], questions=ids)
        return {"n": s["n"], "correct": s["correct"], "accuracy": s["accuracy"],
                "ci": tuple(s["ci95"]) if s["ci95"] else (None, None), "small_n": s["small_n"],
                **({"questions": s["questions"]} if "questions" in s else {})}

    def cell(rs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out = stats(rs, "correct")
        if any(isinstance(r.get("correct_norm"), bool) for r in rs):
            out["norm"] = stats(rs, "correct_norm")
        return out
    cats = sorted({str(r.get("category") or "uncategorized") for r in rows})
    return {"overall": cell(rows),
            "per_category": {c: cell([r for r in rows if str(r.get("category") or "uncategorized") == c])
                             for c in cats}}


def _read_json(read: Callable[[str], Any], run_dir: str) -> dict[str, Any]:
    """read_run_config / read_summary of the run, or {} when it is missing or unreadable."""
    try:
        found = read(run_dir)
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


# ----------------------------------------------------------------------------- sections

def _summary_section(run_dir: str, rows: Sequence[Mapping[str, Any]]) -> str:
    config, summary = _read_json(read_run_config, run_dir), _read_json(read_summary, run_dir)
    acc = accuracy_table(rows)
    o = acc["overall"]
    settings = [[k, json.dumps(v) if not isinstance(v, str) else v] for k, v in config.items()]
    for key in ("wall_time_s", "questions_per_second", "processes", "batch_size"):
        if summary.get(key) is not None:
            settings.append([key, summary[key]])
    norm = "norm" in o
    cats = [[c, f'{v["n"]}{"*" if v["small_n"] else ""}', v["correct"], pct(v["accuracy"], v["ci"])]
            + ([pct(v["norm"]["accuracy"], v["norm"]["ci"]) if "norm" in v else "-"] if norm else [])
            for c, v in acc["per_category"].items()]
    small = any(v["small_n"] for v in acc["per_category"].values())
    return (f"<h2>Run</h2><p><b>model</b> {esc(str(config.get('model') or summary.get('model') or '?'))}"
            f" &nbsp; <b>benchmark</b> {esc(str(summary.get('benchmark') or config.get('benchmark') or '?'))}</p>"
            f'<p class="big">accuracy {esc(pct(o["accuracy"], o["ci"]))} &nbsp; '
            f'({o["correct"]}/{o["n"]} correct; 95% Wilson interval'
            + (f', clustered by question: {o["questions"]} questions' if "questions" in o else "") + ')'
            + (f' &nbsp; acc_norm {esc(pct(o["norm"]["accuracy"], o["norm"]["ci"]))}' if norm else "") + '</p>'
            + table(["category", "n", "correct", "accuracy [95% Wilson CI]"]
                     + (["acc_norm [95% Wilson CI]"] if norm else []), cats)
            + (f'<p class="note">{esc(SMALL_N_NOTE)}</p>' if small else "")
            + "<details><summary>settings</summary>" + table(["setting", "value"], settings) + "</details>")


def _probe_section(run_dir: str, layers: list[str] | None) -> str:
    try:
        # transfer across categories when the run has several (the field asks whether a probe generalises)
        cats = [r.get("category") for r in read_run_rows(run_dir)]
        several = None not in cats and len(set(map(str, cats))) > 1
        return probe_html(probe_run(run_dir, layers=layers, transfer="category" if several else None))
    except Exception as exc:  # noqa: BLE001 - the report still shows everything else
        return "<h2>Probe</h2>" + failed("The probe", exc)


def _lens_section(run_dir: str, layers: list[str] | None, progress: bool, model: Any, tokenizer: Any,
                  stratify_by: str = "category") -> str:
    try:
        res = logit_lens_run(run_dir, layers, model=model, tokenizer=tokenizer, progress=progress,
                             stratify_by=stratify_by)
    except Exception as exc:  # noqa: BLE001 - e.g. the model's weights are not on this machine
        return "<h2>Logit lens</h2>" + failed("The logit lens", exc)
    return lens_html(res)


def _pca_section(run_dir: str, layers: list[str] | None, color_by: str, stratify_by: str = "category") -> str:
    try:
        layer = default_layer(layers or run_layers(run_dir))
        return "<h2>PCA</h2>" + png(plot_pca, run_dir, layer=layer, color_by=color_by, stratify_by=stratify_by)
    except Exception as exc:  # noqa: BLE001
        return "<h2>PCA</h2>" + failed("The PCA", exc)


def _gold(row: Mapping[str, Any]) -> str:
    answer = row.get("answer")
    return " | ".join(map(str, answer)) if isinstance(answer, (list, tuple)) else str(answer if answer is not None else "")


def _questions_section(rows: Sequence[Mapping[str, Any]]) -> str:
    cats = sorted({str(r.get("category") or "uncategorized") for r in rows})
    body = []
    for i, r in enumerate(rows):
        correct = r.get("correct")
        mark = "yes" if correct is True else "no" if correct is False else "-"
        cat = str(r.get("category") or "uncategorized")
        cells = [str(i + 1), str(r.get("id", "")), cat, str(r.get("question", "")), _gold(r),
                 str(r.get("response", "")), str(r.get("extracted") if r.get("extracted") is not None else ""), mark]
        body.append(f'<tr data-correct="{esc(str(correct).lower())}" data-category="{esc(cat)}">'
                    + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    heads = ["#", "id", "category", "question", "gold", "response", "extracted", "correct"]
    options = "".join(f'<option value="{esc(c)}">{esc(c)}</option>' for c in cats)
    return ("<h2>Questions</h2>"
            '<div class="filters"><input id="q" type="search" placeholder="filter text"> '
            '<select id="correct"><option value="">correct and incorrect</option>'
            '<option value="true">correct</option><option value="false">incorrect</option></select> '
            f'<select id="category"><option value="">every category</option>{options}</select> '
            f'<span id="shown">{len(rows)} of {len(rows)} shown</span> (click a column title to sort)</div>'
            '<table id="questions"><thead><tr>'
            + "".join(f'<th data-col="{i}">{esc(h)}</th>' for i, h in enumerate(heads))
            + "</tr></thead><tbody>" + "".join(body) + "</tbody></table>")


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
td,th{border:1px solid #ddd;padding:3px 7px;vertical-align:top;text-align:left}
th{background:#f3f3f3}#questions th{cursor:pointer;user-select:none}
#questions td{max-width:28em;white-space:pre-wrap;word-break:break-word}
#questions td:nth-child(-n+3),#questions td:last-child{white-space:nowrap;word-break:normal}
img{max-width:100%;height:auto;display:block;margin:.6em 0}
table.probe td{white-space:nowrap}
.big{font-size:1.2em}.note{color:#a33}.verdict{background:#f5f5dc;padding:.5em}
.filters{margin:.5em 0}.filters input{width:18em}
"""

# sorts and filters the rows already in the page; never builds HTML from data
SCRIPT = r"""
(function(){
  var table=document.getElementById('questions'); if(!table) return;
  var tbody=table.tBodies[0], rows=Array.prototype.slice.call(tbody.rows);
  var q=document.getElementById('q'), cor=document.getElementById('correct'),
      cat=document.getElementById('category'), shown=document.getElementById('shown');
  function apply(){
    var text=q.value.toLowerCase(), n=0;
    rows.forEach(function(r){
      var ok=(!text||r.textContent.toLowerCase().indexOf(text)>=0)
        &&(!cor.value||r.getAttribute('data-correct')===cor.value)
        &&(!cat.value||r.getAttribute('data-category')===cat.value);
      r.hidden=!ok; if(ok) n++;
    });
    shown.textContent=n+' of '+rows.length+' shown';
    document.body.setAttribute('data-shown', n);
  }
  var dir={};
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th){
    th.addEventListener('click',function(){
      var c=+th.getAttribute('data-col'); dir[c]=-(dir[c]||-1);
      rows.sort(function(a,b){
        var x=a.cells[c].textContent, y=b.cells[c].textContent, nx=parseFloat(x), ny=parseFloat(y);
        var d=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);
        return d*dir[c];
      });
      rows.forEach(function(r){tbody.appendChild(r);});
    });
  });
  var hash=new URLSearchParams(location.hash.slice(1));
  if(hash.has('q')) q.value=hash.get('q');
  if(hash.has('correct')) cor.value=hash.get('correct');
  if(hash.has('category')) cat.value=hash.get('category');
  if(hash.has('sort')){var th=table.tHead.rows[0].cells[+hash.get('sort')]; if(th) th.click();}
  [q,cor,cat].forEach(function(e){e.addEventListener('input',apply);e.addEventListener('change',apply);});
  apply();
})();
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _hashable_id(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """`row`, or a copy whose id (a hostile JSON list or object) is its JSON text: ids are cluster keys."""
    qid = row.get("id")
    if qid is None or isinstance(qid, (str, int, float, bool)):
        return row
    return dict(row, id=json.dumps(qid, sort_keys=True, default=str))


def _unreadable_notes(run_dir: str) -> str:
    """A note for run_config.json / summary.json when one exists but cannot be read (nested too deep,
    not JSON, a FIFO): the summary section shows the rest without it."""
    notes = []
    for read in (read_run_config, read_summary):
        try:
            read(run_dir)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            notes.append(failed("part of the run's settings and summary", exc))
    return "".join(notes)


def build_report(run_dir: str | os.PathLike[str], output: str | os.PathLike[str] | None = None,
                 layers: list[str] | None = None, color_by: str = "correct", probe: bool = True, lens: bool = True,
                 progress: bool = True, model: Any = None, tokenizer: Any = None,
                 stratify_by: str = "category") -> str:
    """Write the run's HTML report to `output` (default ./<run name>_report.html); -> its path.

    `probe` / `lens` False leave those sections out; `model` / `tokenizer` go to the logit lens
    (a loaded pair, or `model` a local path; default: the run's model from run_config.json when it
    is local; else the lens section says how to pass one and the rest is written); `stratify_by`: the
    results field whose values stratify the correct-vs-incorrect comparisons. Written atomically.
    """
    run_dir = os.fspath(run_dir)
    reader = RunReader(run_dir)
    rows = reader.rows
    if not rows:
        raise ValueError(f"{run_dir} has no results rows to report")
    name = os.path.basename(os.path.normpath(run_dir))
    output = os.fspath(output) if output else f"{name}_report.html"
    captured = reader.has_records()
    sections = [_summary_section(run_dir, [_hashable_id(row) for row in rows]) + _unreadable_notes(run_dir)]
    if captured:
        if probe:
            sections.append(_probe_section(run_dir, layers))
        if lens:
            sections.append(_lens_section(run_dir, layers, progress, model, tokenizer, stratify_by))
        sections.append(_pca_section(run_dir, layers, color_by, stratify_by))
    else:
        sections.append('<p class="note">This run saved no activations (main.py --capture_activations): '
                        "no probe, logit lens or PCA.</p>")
    sections.append(_questions_section(rows))
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>{esc(name)} - run report</title><style>{STYLE}</style></head><body>"
            f"<h1>Run report: {esc(name)}</h1><p>{esc(os.path.abspath(run_dir))}</p>"
            + "".join(sections) + f"<script>{SCRIPT}</script></body></html>\n")
    return write_text_atomic(output, page)
