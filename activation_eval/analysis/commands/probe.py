"""--probe RUN_DIR: per-layer probes with controls (probe.probe_run -> ProbeResult).

Text: probe/text.py; plots (always written to --output_dir): the probe by layer, the risk-coverage
curves of error detection (binary targets; probe/selective_report.py) and, with a transfer matrix
(--transfer FIELD or --test_run), its heatmap (probe/plots.py).

Public names:
    COMMAND

Several tasks in one folder are probed within each task by default (--probe_strata auto: probe/strata.py);
--probe_strata none pools them, --probe_strata FIELD names another field.

Example:
    $ python analyze_activations.py --probe results/run1 --target category --probe_groups category --json
"""
import argparse

from ...schema.names import parse_reduce
from ..probe import probe_run
from ..probe.models import PROBE_FAMILIES
from ..probe.plots import plot_probe, plot_transfer
from ..probe.selective_report import plot_risk_coverage
from ..probe.text import probe_text
from .base import Command, Groups, Options, Outcome, plot_path


class ProbeCommand(Command):
    name = "probe"

    def add_mode(self, group: argparse._MutuallyExclusiveGroup) -> None:
        group.add_argument("--probe", metavar="RUN_DIR", help="a run folder: per-layer probe of answer correctness")

    def add_options(self, groups: Groups) -> None:
        pr = groups["parser"].add_argument_group("probe (--probe)")
        pr.add_argument("--target", default="correct", metavar="FIELD",
                        help="boolean or categorical field of the results rows to predict (default: correct)")
        pr.add_argument("--test_run", metavar="RUN_DIR",
                        help="also train on all of --probe's run and report transfer to this run's questions")
        pr.add_argument("--keep_overlap", action="store_true",
                        help="keep the test questions that the training questions share (same id or same prompt "
                             "text) in --test_run and --transfer; by default they are left out and counted, since "
                             "scoring them is in-sample (the output says so when kept)")
        pr.add_argument("--probe_groups", metavar="FIELD",
                        help="hold out whole groups of FIELD (e.g. category) per fold instead of stratified folds")
        pr.add_argument("--probe_strata", default="auto", metavar="FIELD",
                        help="keep folds and AUROC pairs within each value of FIELD; auto (default): within each "
                             "task (category) when the folder holds several tasks (lm-eval, Inspect), else off; none: off")
        pr.add_argument("--transfer", metavar="FIELD",
                        help="also train the best layer's probe on each value of FIELD (e.g. category) and test it "
                             "on every other value: an AUROC matrix with intervals (with --test_run: across the two "
                             "runs)")
        pr.add_argument("--probe_family", default="logistic", choices=PROBE_FAMILIES,
                        help="probe of the main sweep: logistic regression (default), mass-mean (difference of the "
                             "class means; binary targets) or mlp (SAPLMA's MLP, 256-128-64 scaled down for small "
                             "runs); the linear families are reported beside it")
        pr.add_argument("--cv_seeds", type=int, default=3, metavar="N",
                        help="cross-validation splits with seeds S, S+1, ... S+N-1, all reported (default 3)")
        pr.add_argument("--folds", type=int, default=5, metavar="K", help="cross-validation folds (default 5)")
        pr.add_argument("--probe_workers", type=int, metavar="N",
                        help="processes that fit the layers (default: one per CPU, at most 4, from 5,000 questions; "
                             "else 1); the figures do not depend on it")
        pr.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the fold shuffling and the bootstrap (default 0)")
        pr.add_argument("--bootstrap", type=int, metavar="B",
                        help="bootstrap resamples, at least 1000 (default: enough for ~10 beyond each "
                             "Bonferroni-adjusted tail, 2000-20000)")

    def output_folders(self, args: argparse.Namespace) -> list[tuple[str, str]]:
        return [(args.output_dir, "--output_dir")]

    def run(self, args: argparse.Namespace, options: Options) -> Outcome:
        if args.folds < 2:
            raise ValueError("--folds must be at least 2")
        if args.bootstrap is not None and args.bootstrap < 1000:
            raise ValueError(f"--bootstrap must be at least 1000 resamples, got {args.bootstrap}")
        if args.cv_seeds < 1:
            raise ValueError("--cv_seeds must be at least 1")
        if args.probe_workers is not None and args.probe_workers < 1:
            raise ValueError(f"--probe_workers must be at least 1, got {args.probe_workers}")
        result = probe_run(args.probe, options.layers, args.folds, args.seed, target=args.target,
                           groups=args.probe_groups, test_run=args.test_run, n_bootstrap=args.bootstrap,
                           reduce=parse_reduce(args.reduce), progress=options.progress, family=args.probe_family,
                           cv_seeds=args.cv_seeds, transfer=args.transfer, keep_overlap=args.keep_overlap,
                           strata=args.probe_strata, workers=args.probe_workers)
        plots = [plot_probe(result, plot_path(args, options, "probe", f"probe_{result.run_name}"))]
        if result.transfer is not None:
            plots.append(plot_transfer(result, plot_path(args, options, "probe", f"transfer_{result.run_name}")))
        if result.error_detection is not None and result.error_detection.selective:
            plots.append(plot_risk_coverage(result, plot_path(args, options, "probe",
                                                              f"risk_coverage_{result.run_name}")))
        return Outcome(result, probe_text(result), plots)


COMMAND = ProbeCommand()
