"""Logit lens: what every captured layer would predict as the answer's first token.

Each layer's activation at the position that emits the extracted answer's first token (the one
before the answer span's first token: "The capital of France is Paris" is read at "is"; reading.py;
position="last_prompt" reads the last prompt token P-1 instead, labelled) goes through the model's
final norm and unembedding (lm_head, also when it is tied to the input embeddings; Gemma-2 style
final logit soft-capping applied); `final_norm` is already normed and goes through the unembedding
only. So the lens at `final_norm` (or at the last layer, through the norm) is the model's own
next-token distribution at the position read. The model is the run's
when it is local, else the one passed (`model=`, the CLI's --model); the analysis never downloads.

Modules:
    run          logit_lens_run(run_dir, layers=None, model=None, tokenizer=None, top_k=5, progress=True,
                                n_resamples=1000, seed=0, stratify_by="category", position="auto")
                                 -> LensResult (schema/lens.py)
    reading      resolve_reading(rows, reading), read_position(...), lens_caveats(...): where it reads, caveats
    projection   project(model, hidden, layer_names), gold_first_tokens(tokenizer, row), ranks(logits, ids)
    model        is_local_model(name), ModelNotLocalError, load_run_model(run_dir, model=None)
    compare      lens_comparison(result): the correct-vs-incorrect table (stratified first, pooled beside)
    text         lens_text(result): the command line's output
    html         lens_html(result): the report's section
    plots        plot_logit_lens(result, path)

The package's front holds the names a script needs: logit_lens_run, lens_comparison, project,
gold_first_tokens, is_local_model, ModelNotLocalError.

Example:
    >>> res = logit_lens_run("results/mc", progress=False)       # the run's model (a local folder), or model=...
    >>> rank = res.layers["layer_20"].all.median_rank             # groups: correct, incorrect, all
    >>> res.chance_rank, 1 <= rank <= res.vocab_size               # a random model: near chance (1 = top)
    (150.5, True)
    >>> res.reading, res.caveats[0][:23]          # scored by log-likelihood: no answer span, the last prompt token
    ('last_prompt', 'the comparison rests on')
    >>> cmp = res.stratified["layer_20"].log_rank                  # incorrect - correct, mean ln(rank)
    >>> res.stratified_by, cmp.level, lens_comparison(res).line    # this run's questions are all of one category
    ('category', 0.95, "not stratified: one stratum (category 'multiple_choice')")
    >>> top = res.questions[0].layers["layer_29"].top             # [(token, probability), ...], best first
    >>> len(top), top[0][1] >= top[1][1], all(0 < p < 1 for _, p in top)
    (5, True, True)
"""
from .compare import lens_comparison
from .model import ModelNotLocalError, is_local_model
from .projection import gold_first_tokens, project
from .run import logit_lens_run

__all__ = ["logit_lens_run", "lens_comparison", "project", "gold_first_tokens", "is_local_model", "ModelNotLocalError"]
