"""Fixtures of the analysis tests."""
import pytest

from activation_eval.analysis import plots


@pytest.fixture
def figures(monkeypatch):
    """Every figure a plot function saves (it is still written to disk)."""
    saved = []
    real = plots._save

    def keep(fig, path):
        saved.append(fig)
        return real(fig, path)
    monkeypatch.setattr(plots, "_save", keep)
    return saved
