"""What every analysis command shares: its shape, the options all modes read, plot names, output checks.

A command is one mode of `analyze_activations.py` (--file, --directory, --compare, --probe,
--logit_lens, --report, --export_hf): it declares its mode flag and its own options, computes a
typed result (activation_eval/schema/), and renders its text and plots from that result. cli.py
parses, checks the output folders, dispatches to the one command asked for, and prints.

Public names:
    Command                 the base class: name, flag, add_mode(group), add_options(groups),
                            output_folders(args), run(args, options) -> Outcome, loads_model
    Outcome                 result (a schema dataclass), text, plots (paths written)
    Options                 what every mode reads, parsed once: layers, stratify_by, progress, output_dir
    add_shared_options(groups)   --layers, --color_by, --stratify_by, --reduce and the output flags
    parse_options(args) -> Options
    plot_name(args, kind, base, ext=".png") -> str    a plot's file name (PLOT_OPTIONS: the options in it)
    plot_path(args, options, kind, base) -> str      that name inside --output_dir
    source_name(path) -> str                          a file's stem or a folder's name
    check_output_folder(folder, flag)                 refuse a folder path that is (inside) a file
    PLOT_OPTIONS

Example:
    >>> import argparse
    >>> args = argparse.Namespace(target="category", probe_groups=None, reduce="auto", layers=None, test_run=None,
    ...                           folds=5, seed=0, bootstrap=None, transfer=None, probe_family="logistic", cv_seeds=3)
    >>> plot_name(args, "probe", "probe_run1")          # options at their default are left out
    'probe_run1_target-category.png'
    >>> source_name("results/run1/"), source_name("a/q0001.safetensors")
    ('run1', 'q0001')
"""
import argparse
import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from ...store.atomic import file_in_the_way

Groups = dict[str, Any]       # argparse argument groups by name: "mode", "selection", "output", ...


@dataclass(frozen=True)
class Outcome:
    """What a command gives the command line: its typed result, its text, the plots it wrote."""
    result: Any
    text: str
    plots: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    """The options every mode reads, parsed once."""
    layers: list[str] | None        # --layers (None: all)
    stratify_by: str                # --stratify_by
    progress: bool                  # not --no_progress
    output_dir: str                 # --output_dir


class Command:
    """One analysis mode. Subclasses set name (the mode flag's dest) and implement run()."""
    name = ""
    loads_model = False             # it loads the run's model (--quiet then hides transformers' bars too)

    def add_mode(self, group: Any) -> None:
        """Add the mode flag to the mutually exclusive group."""
        raise NotImplementedError

    def add_options(self, groups: Groups) -> None:
        """Add the command's own options (to a shared group or a group of its own)."""

    def output_folders(self, args: argparse.Namespace) -> list[tuple[str, str]]:
        """(folder, flag) of every folder the command writes into besides --output_dir with --plot."""
        return []

    def run(self, args: argparse.Namespace, options: Options) -> Outcome:
        raise NotImplementedError


def add_shared_options(groups: Groups) -> None:
    """The options several modes read: selection (--layers, --color_by, --stratify_by, --reduce) and output."""
    sel = groups["selection"]
    sel.add_argument("--layers", metavar="NAMES", help="comma-separated layer names to read (default: all)")
    sel.add_argument("--color_by", metavar="FIELD", default="correct",
                     help="PCA plot: colour points by this results field (default: correct); marker = category")
    sel.add_argument("--stratify_by", default="category", metavar="FIELD",
                     help="compare correct vs incorrect within each value of this results field, the pooled "
                          "comparison beside (default: category): logit lens, report, PCA caption")
    sel.add_argument("--reduce", default="auto", metavar="HOW",
                     help="--probe, --export_hf and the run-folder PCA plot: one vector per question from "
                          "auto (default: answer_first when generated positions were captured, else last_prompt), "
                          "last_prompt, mean_prompt, last, answer_first, answer_mean, answer_last or a token index")
    out = groups["output"]
    out.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    out.add_argument("--plot", action="store_true", help="write PNG plots to --output_dir")
    out.add_argument("--output_dir", metavar="O", default="analysis_plots",
                     help="folder for plots (default: ./analysis_plots); --probe always saves its plot here")
    out.add_argument("--no_progress", "--quiet", dest="no_progress", action="store_true", help="no progress bar")
    out.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def parse_options(args: argparse.Namespace) -> Options:
    """The one place --layers and --stratify_by are parsed (and --limit checked)."""
    layers = None
    if args.layers is not None:
        layers = [n.strip() for n in args.layers.split(",") if n.strip()]
        if not layers:
            raise ValueError("--layers is empty")
    stratify_by = args.stratify_by.strip()
    if not stratify_by:
        raise ValueError("--stratify_by is empty: give a results field, e.g. category")
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    return Options(layers=layers, stratify_by=stratify_by, progress=not args.no_progress, output_dir=args.output_dir)


def source_name(path: str | os.PathLike[str]) -> str:
    """A file's stem or a folder's name, for plot file names ("results/run1/" -> "run1")."""
    return os.path.splitext(os.path.basename(os.path.normpath(os.fspath(path))))[0] or "source"


# The options that change each plot (besides its source): a value other than the default goes into
# the file name (e.g. probe_run1_target-category_groups-category.png), so that runs of the command
# with other options never overwrite one another's plots; the same options give the same name.
PLOT_OPTIONS = {
    "norms": ("layers", "limit"), "histograms": ("layers",), "heatmap": ("layers", "tokenizer"),
    "pca": ("color_by", "reduce", "stratify_by"), "compare": ("layers",),
    "logit_lens": ("layers", "model", "stratify_by", "lens_position"), "report": ("layers", "color_by", "model", "stratify_by"),
    "causal": ("causal_layer", "causal_method", "causal_direction", "causal_alphas", "causal_random", "causal_folds",
               "causal_positions", "limit", "shuffle", "seed", "layers"),
    "probe": ("target", "probe_groups", "reduce", "layers", "test_run", "folds", "seed", "bootstrap", "transfer",
              "probe_family", "cv_seeds", "keep_overlap"),
}
_TAGS = {"lens_position": "at", "causal_layer": "layer", "causal_method": "dir", "causal_direction": "from",
         "causal_alphas": "alphas", "causal_random": "random", "causal_folds": "folds", "causal_positions": "at",
         "probe_groups": "groups", "color_by": "color", "test_run": "test", "tokenizer": "tok", "stratify_by": "strat"}
_PATH_OPTIONS = ("test_run", "model", "tokenizer", "causal_direction")


def plot_name(args: argparse.Namespace, kind: str, base: str, ext: str = ".png") -> str:
    """`base` + one `_<option>-<value>` per option of PLOT_OPTIONS[kind] not at its default + ext."""
    from ..cli import build_parser
    defaults = build_parser()
    tags = []
    for option in PLOT_OPTIONS[kind]:
        value = getattr(args, option, None)
        if value is None or value == defaults.get_default(option):
            continue
        text = source_name(value) if option in _PATH_OPTIONS else str(value).replace(",", "+")
        slug = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "x"
        if len(slug) > 40:          # e.g. a long --layers list: its start and a hash of all of it
            slug = f"{slug[:24]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
        tags.append(f"_{_TAGS.get(option, option)}-{slug}")
    return base + "".join(tags) + ext


def plot_path(args: argparse.Namespace, options: Options, kind: str, base: str) -> str:
    """plot_name inside --output_dir."""
    return os.path.join(options.output_dir, plot_name(args, kind, base))


def check_output_folder(folder: str, flag: str) -> None:
    """A folder the command writes into must not be a file, nor lie inside one."""
    blocker = file_in_the_way(folder)
    if blocker:
        where = "is a file" if blocker == os.path.abspath(folder) else f"is inside {blocker}, which is a file"
        raise ValueError(f"{flag} {folder} {where}, not a folder: give a folder path (it is made if missing)")
