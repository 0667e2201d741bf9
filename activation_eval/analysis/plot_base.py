"""What every plot of the analysis shares: plain text, a headless figure, saving, the layer axis.

Public names:
    plain_text(plot)            decorator: the plot runs with mathtext and TeX off (names drawn as written)
    new_figure(w, h)            a headless Agg figure (no pyplot), constrained layout
    save_png(fig, path) -> path the PNG written (its folder made)
    layer_axis(ax, names)       x axis labelled with the layer names

Example:
    >>> fig = new_figure(4, 3); ax = fig.subplots(); layer_axis(ax, ["layer_0", "layer_1"])
    >>> ax.get_xlabel(), save_png(fig, "plots/empty.png")
    ('layer', 'plots/empty.png')
"""
import functools
import os


def plain_text(plot):
    """`plot` run with every text drawn as plain text: matplotlib's mathtext and TeX off
    (text.parse_math, text.usetex), so that a category, layer, model or run name holding "$"
    is drawn as it is (`$\\foo{$` made savefig raise; "$5 and $6" was typeset as math). Text
    objects read the setting when they are made: every title, label, legend and tick of the
    figure is made inside this context, up to savefig."""
    @functools.wraps(plot)
    def run(*args, **kwargs):
        import matplotlib
        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return plot(*args, **kwargs)
    return run


def new_figure(w, h):
    """A headless Agg figure (no pyplot, no global backend switch)."""
    from matplotlib.figure import Figure
    return Figure(figsize=(w, h), layout="constrained")


def save_png(fig, path):
    """Write `fig` as a PNG to `path` (creating its folder); returns the path."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    return os.fspath(path)


def layer_axis(ax, names):
    """Label the x axis of `ax` with the layer names (rotated when there are many)."""
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center",
                       fontsize=8 if len(names) > 20 else 9)
    ax.set_xlabel("layer")
