"""Fixtures of the analysis tests."""
import pytest

from activation_eval.analysis import plot_base


@pytest.fixture
def figures(monkeypatch):
    """Every figure a plot function saves (it is still written to disk)."""
    saved = []
    real = plot_base.save_png

    def keep(fig, path):
        saved.append(fig)
        return real(fig, path)
    monkeypatch.setattr(plot_base, "save_png", keep)
    return saved
