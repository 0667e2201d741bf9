"""Analyse saved activation records: statistics, comparisons, plots and linear probes.

    python analyze_activations.py --file results/run1/activations/q0001.pkl
    python analyze_activations.py --directory results/run1 --plot --output_dir plots
    python analyze_activations.py --probe results/run1
    python analyze_activations.py --logit_lens results/run1
    python analyze_activations.py --report results/run1 --output run1.html

A thin entry point over activation_eval.analysis (also installed as `activation-eval-analyze`);
the functions behind each mode are re-exported here for scripts written against this file.
"""
import sys

from activation_eval.analysis.cli import build_parser, format_table, main, run  # noqa: F401
from activation_eval.analysis.dataset import load_run_layer  # noqa: F401
from activation_eval.analysis.lens import logit_lens_run  # noqa: F401
from activation_eval.analysis.plots import (  # noqa: F401
    default_layer,
    plot_compare,
    plot_histograms,
    plot_layer_norms,
    plot_logit_lens,
    plot_pca,
    plot_position_heatmap,
    plot_probe,
)
from activation_eval.analysis.probe import probe_run  # noqa: F401
from activation_eval.analysis.report import build_report  # noqa: F401
from activation_eval.analysis.stats import (  # noqa: F401
    analyze_directory,
    analyze_file,
    compare_files,
    compare_records,
    describe_record,
    tensor_stats,
)

if __name__ == "__main__":
    sys.exit(main())
