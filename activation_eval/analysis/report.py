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
    run_summary(run_dir, rows, config) -> Summary   summary.json (this version's), else the one builder's
                                        summary of the rows: overall and per-category accuracy with
                                        Wilson 95% intervals, the metric of each, small-n flags

Example:
    >>> build_report("results/run1", "reports/run1.html")
    'reports/run1.html'
"""
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from ..accuracy import SMALL_N_NOTE
from ..schema.run_config import producer_of
from ..schema.summary import FORMAT_VERSION as SUMMARY_FORMAT
from ..schema.summary import MIXED, PRODUCERS, Summary, build_summary
from ..store.atomic import write_text_atomic
from ..store.run_folder import read_run_config, read_summary
from ..store.run_reader import RunReader, read_run_rows
from .arrays import run_layers
from .causal.saved import causal_section
from .html import esc, failed, pct, png, table
from .lens import logit_lens_run
from .lens.html import lens_html
from .pca import plot_pca
from .plots import default_layer
from .probe import probe_run
from .probe.html import probe_html


def run_summary(run_dir: str, rows: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> Summary:
    """The run's summary (schema/summary.py): its summary.json when written in this version's format,
    else the one builder's summary of its rows (a run that was interrupted, or written by an earlier
    version): either way the figures main.py printed and summary.json holds, never a second method."""
    stored = _read_json(read_summary, run_dir)
    if stored.get("format_version") == SUMMARY_FORMAT and isinstance(stored.get("per_category"), dict):
        return cast(Summary, stored)
    producer = producer_of(config)
    return build_summary([dict(r) for r in rows], producer=producer if producer in PRODUCERS else "main",  # type: ignore[arg-type]
                         model=str(config.get("model") or stored.get("model") or "?"),
                         benchmark=str(config.get("benchmark") or stored.get("benchmark") or "?"), output_dir=run_dir)


def _read_json(read: Callable[[str], Any], run_dir: str) -> dict[str, Any]:
    """read_run_config / read_summary of the run, or {} when it is missing or unreadable."""
    try:
        found = read(run_dir)
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


# ----------------------------------------------------------------------------- sections

def _summary_section(run_dir: str, rows: Sequence[Mapping[str, Any]]) -> str:
    config = _read_json(read_run_config, run_dir)
    summary = run_summary(run_dir, rows, config)
    cats = summary["per_category"]
    norm = any(c["norm"] for c in cats.values())
    metric = any(c["metric"] != "accuracy" for c in cats.values())
    cells = [[name, f'{c["n"]}{"*" if c["small_n"] else ""}', c["correct"], pct(c["accuracy"], _ci(c["ci95"]))]
             + ([c["metric"]] if metric else [])
             + ([pct(c["norm"]["accuracy"], _ci(c["norm"]["ci95"])) if c["norm"] else "-"] if norm else [])
             for name, c in cats.items()]
    settings = [[k, json.dumps(v) if not isinstance(v, str) else v] for k, v in config.items()]
    speed = {"wall_time_s": summary["wall_time_s"], "questions_per_second": summary["questions_per_second"],
             "processes": summary["processes"]}
    settings += [[k, str(v)] for k, v in speed.items() if v is not None]
    settings += [[k, json.dumps(v)] for k, v in summary["details"].items()]
    small = any(c["small_n"] for c in cats.values())
    return (f"<h2>Run</h2><p><b>model</b> {esc(summary['model'])} &nbsp; <b>benchmark</b> "
            f"{esc(summary['benchmark'])} &nbsp; <b>written by</b> {esc(summary['producer'])}</p>"
            f'<p class="big">{_overall(summary)}</p>'
            + table(["category", "n", "correct", "accuracy [95% Wilson CI]"] + (["metric"] if metric else [])
                    + (["acc_norm [95% Wilson CI]"] if norm else []), cells)
            + (f'<p class="note">{esc(SMALL_N_NOTE)}</p>' if small else "")
            + "<details><summary>settings</summary>" + table(["setting", "value"], settings) + "</details>")


def _ci(ci: list[float] | None) -> tuple[float | None, float | None]:
    return (ci[0], ci[1]) if ci else (None, None)


def _overall(summary: Summary) -> str:
    """The overall accuracy line: only for a metric every category shares."""
    if summary["metric"] == MIXED:
        metrics = ", ".join(sorted({c["metric"] for c in summary["per_category"].values()}))
        return esc(f"accuracy: - (the categories are scored by different metrics: {metrics}; see each category)")
    clustered = summary["answers"] > summary["questions"]
    loglik = summary["log_likelihood"]
    return (f'accuracy {esc(pct(summary["accuracy"], _ci(summary["accuracy_ci95"])))} &nbsp; '
            f'({summary["correct"]}/{summary["graded"]} correct'
            + (f' by {esc(summary["metric"])}' if summary["metric"] != "accuracy" else "") + '; 95% Wilson interval'
            + (f', clustered by question: {summary["questions"]} questions' if clustered else "") + ')'
            + (f' &nbsp; acc_norm {esc(pct(loglik["norm"]["accuracy"], _ci(loglik["norm"]["ci95"])))}' if loglik else ""))


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
table{border-collapse:collapse;margin:.6em 0;font-size:.85em;display:block;overflow-x:auto;max-width:100%}
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
                 stratify_by: str = "category", causal_dir: str | None = "causal") -> str:
    """Write the run's HTML report to `output` (default ./<run name>_report.html); -> its path.

    `probe` / `lens` False leave those sections out; `model` / `tokenizer` go to the logit lens
    (a loaded pair, or `model` a local path; default: the run's model from run_config.json when it
    is local; else the lens section says how to pass one and the rest is written); `stratify_by`: the
    results field whose values stratify the correct-vs-incorrect comparisons; `causal_dir`: where
    `--causal RUN` saved its checks (their section; None: no section). Written atomically.
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
        if causal_dir is not None:
            sections.append(causal_section(run_dir, causal_dir))
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
