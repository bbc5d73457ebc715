"""PSI and KS on hand-made samples, against values worked out by hand (and scipy for the p-values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from monitoring import stats

NAN = float("nan")


def test_identical_samples_give_zero():
    rng = np.random.default_rng(1)
    sample = rng.normal(size=500)
    assert stats.psi(sample, sample) == 0.0
    assert stats.ks(sample, sample) == (0.0, 1.0)
    with_missing = np.where(rng.random(500) < 0.2, NAN, sample)
    assert stats.psi(with_missing, with_missing) == 0.0


def test_two_bins_hand_worked():
    # Reference median 0.5 splits {0,0,1,1} into two halves; the current sample puts a quarter
    # below and three quarters above: PSI = (.25-.5) ln(.25/.5) + (.75-.5) ln(.75/.5) = .25 ln 3.
    assert stats.psi([0, 0, 1, 1], [0, 1, 1, 1], bins=2) == pytest.approx(0.25 * math.log(3), abs=1e-12)


def test_decile_shift_hand_worked():
    # Reference 0..99: deciles of 10 values each (edges 9.9, 19.8, ..., 89.1). Current 10..109:
    # the first bin empty (floored at EPSILON), bins 2-9 unchanged, the last bin holds 90..109.
    reference = np.arange(100)
    current = reference + 10
    eps = stats.EPSILON
    expected = (eps - 0.1) * math.log(eps / 0.1) + (0.2 - 0.1) * math.log(0.2 / 0.1)
    assert stats.psi(reference, current, bins=10) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.7594, abs=1e-4)


def test_missing_values_are_a_bin_of_their_own():
    # Reference: 2 below the median edge, 2 above, none missing; current: 1, 1 and 2 missing.
    # Bins (below, above, missing): reference (.5, .5, 0 -> EPSILON), current (.25, .25, .5).
    eps = stats.EPSILON
    expected = 2 * (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.5 - eps) * math.log(0.5 / eps)
    assert stats.psi([1, 2, 3, 4], [1, 3, NAN, NAN], bins=2) == pytest.approx(expected, abs=1e-12)
    bins = stats.binned(stats.as_array([1, 2, 3, 4]), stats.as_array([1, 3, NAN, NAN]), 2)
    assert bins.edges == [2.5] and bins.reference == [0.5, 0.5, 0.0] and bins.current == [0.25, 0.25, 0.5]


def test_discrete_feature_has_fewer_bins():
    # A 0/1 feature: nine deciles collapse to three distinct edges (0, the interpolated 0.4, 1);
    # only two bins hold rows, and bins empty on both sides add nothing to the PSI.
    reference = [0] * 60 + [1] * 40
    current = [0] * 40 + [1] * 60
    bins = stats.binned(stats.as_array(reference), stats.as_array(current), 10)
    assert len(bins.edges) == 3
    assert [s for s in bins.reference if s] == [0.6, 0.4] and [s for s in bins.current if s] == [0.4, 0.6]
    expected = (0.4 - 0.6) * math.log(0.4 / 0.6) + (0.6 - 0.4) * math.log(0.6 / 0.4)  # two occupied bins
    assert stats.psi(reference, current) == pytest.approx(expected, abs=1e-12)


def test_ks_hand_worked_and_against_scipy():
    # ECDFs of {1,2,3,4} and {3,4,5,6} differ most at 2 (0.5 against 0): D = 0.5.
    statistic, pvalue = stats.ks([1, 2, 3, 4], [3, 4, 5, 6])
    assert statistic == 0.5
    assert pvalue == pytest.approx(scipy_stats.ks_2samp([1, 2, 3, 4], [3, 4, 5, 6]).pvalue)
    # Disjoint samples: D = 1; exact two-sided p for n = m = 3 is 2 / C(6, 3) = 0.1.
    statistic, pvalue = stats.ks([1, 2, 3], [4, 5, 6])
    assert statistic == 1.0 and pvalue == pytest.approx(0.1)
    # Missing values are left out, not counted as values.
    assert stats.ks([1, 2, NAN, 3], [4, 5, 6, NAN])[0] == 1.0


def test_all_missing_reference_cannot_be_binned():
    with pytest.raises(ValueError):
        stats.psi([NAN, NAN], [1.0, 2.0])
    with pytest.raises(ValueError):
        stats.ks([NAN], [1.0])
