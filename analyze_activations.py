"""Analyse saved activation records: statistics, comparisons, plots and linear probes.

    python analyze_activations.py --file results/run1/activations/q0001.pkl
    python analyze_activations.py --directory results/run1 --plot --output_dir plots
    python analyze_activations.py --probe results/run1
    python analyze_activations.py --logit_lens results/run1
    python analyze_activations.py --report results/run1 --output run1.html
    python analyze_activations.py --causal results/run1

A thin entry point over activation_eval.analysis, with --causal from activation_eval.experiments (also
installed as `activation-eval-analyze`);
the functions behind each mode are re-exported here for scripts written against this file. Each
returns a typed result (activation_eval/schema/; docs/formats.md): read its fields as attributes.
"""
import sys

from activation_eval.analysis.cli import build_parser, run  # noqa: F401
from activation_eval.analysis.dataset import load_run_layer  # noqa: F401
from activation_eval.analysis.lens import logit_lens_run  # noqa: F401
from activation_eval.analysis.lens.plots import plot_logit_lens  # noqa: F401
from activation_eval.analysis.pca import plot_pca  # noqa: F401
from activation_eval.analysis.plots import (  # noqa: F401
    default_layer,
    plot_compare,
    plot_histograms,
    plot_layer_norms,
    plot_position_heatmap,
)
from activation_eval.analysis.probe import probe_run  # noqa: F401
from activation_eval.analysis.probe.plots import plot_probe  # noqa: F401
from activation_eval.analysis.report import build_report  # noqa: F401
from activation_eval.analysis.stats import (  # noqa: F401
    analyze_directory,
    analyze_file,
    compare_files,
    compare_records,
    describe_record,
    tensor_stats,
)
from activation_eval.analysis.text import format_table  # noqa: F401
from activation_eval.experiments import causal_run, main  # noqa: F401  (the command line, --causal included)

if __name__ == "__main__":
    sys.exit(main())
