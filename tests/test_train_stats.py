"""Success figures carry n and a 95 % Wilson interval (rig/train/stats.py)."""

import pytest

from rig.train.stats import SuccessFigure, best_figure, trials_for_halfwidth, wilson


def test_wilson_matches_the_textbook_values():
    # Reference values (Newcombe 1998, table I: 81/263 -> 0.2553-0.3662)
    lo, hi = wilson(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-4) and hi == pytest.approx(0.3662, abs=1e-4)
    lo, hi = wilson(13, 20)
    assert lo == pytest.approx(0.433, abs=1e-3) and hi == pytest.approx(0.819, abs=1e-3)


def test_wilson_keeps_width_at_the_ends():
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_trials_for_halfwidth_gives_an_interval_that_narrow():
    n = trials_for_halfwidth(0.15)
    lo, hi = wilson(n // 2, n)
    assert (hi - lo) / 2 <= 0.15 + 1e-9
    lo, hi = wilson((n - 1) // 2, n - 1)
    assert (hi - lo) / 2 > 0.15
    assert 35 <= n <= 45  # 39 at p = 0.5


def test_figure_text_and_dict():
    f = SuccessFigure("realtime", 13, 20)
    assert f.text() == "13/20 = 65 % (95 % CI 43-82 %, n=20)"
    d = f.to_dict()
    assert d["trials"] == 20 and d["ci95"][0] == pytest.approx(0.433, abs=1e-3)
    assert not f.projectable  # 39 points wide: too wide to project from
    assert SuccessFigure("fastsim", 40, 50).projectable  # 67-89 %
    assert SuccessFigure("fastsim", 0, 0).text() == "no trials yet"
    with pytest.raises(ValueError):
        SuccessFigure("vibes", 1, 2)


def test_best_figure_leads_with_the_arms():
    figs = [SuccessFigure("fastsim", 40, 50), SuccessFigure("realtime", 15, 20),
            SuccessFigure("arms", 2, 3), SuccessFigure("demo", 10, 10)]
    assert best_figure(figs).kind == "arms"
    assert best_figure(figs[:2]).kind == "realtime"
    assert best_figure([SuccessFigure("demo", 10, 10)]) is None
