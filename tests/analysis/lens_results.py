"""LensResults with chosen numbers, for the plot and text tests: built as --json writes them and read
back with jsonio.from_json (the lens itself needs a model; its own numbers are tested in test_lens.py)."""
from activation_eval.analysis.jsonio import from_json, to_json
from activation_eval.analysis.stratify import stratified_difference
from activation_eval.schema.lens import LensResult

CURVE = {"n": 3, "median_rank": 5.0, "median_rank_ci": [2.0, 9.0], "mean_prob": 0.1, "mean_prob_ci": [0.0, 0.2]}


def lens_result(names, stratified=None, run_dir="r", questions_used=6, curve=CURVE):
    """A LensResult over layers `names`: every group's curve `curve`; `stratified` {layer: Difference} (the same
    difference for ln rank and probability; default: a small two-category comparison)."""
    if stratified is None:
        one = stratified_difference([1.0, 2.0, 3.0, 5.0], [True, False, True, False], ["a", "a", "b", "b"],
                                    n_boot=200, by="category")
        stratified = dict.fromkeys(names, one)
    data = {"format_version": 2, "run_dir": str(run_dir), "model": "m", "reading": "answer",
            "position": "the position that emits the answer's first token", "skipped_no_answer_span": 0,
            "at_response_start": {"correct": 0, "incorrect": 0}, "min_per_class": 10, "caveats": [],
            "gold": "first token", "interval": "95%", "questions_used": questions_used, "skipped_no_position": 0,
            "without_gold": 0, "vocab_size": 99, "chance_rank": 50.0, "chance_prob_per_token": 0.01,
            "layer_names": list(names),
            "layers": {n: {"correct": curve, "incorrect": curve, "all": curve} for n in names},
            "stratified_by": "category", "stratified_method": "within each category",
            "stratified": {n: {"log_rank": to_json(d), "prob": to_json(d)} for n, d in stratified.items()},
            "questions": []}
    return from_json(LensResult, data)
