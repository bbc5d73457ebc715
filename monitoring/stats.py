"""The statistics of drift, on plain numpy arrays (NaN = missing): PSI, Kolmogorov-Smirnov, missing shares.

Population stability index (PSI) on the reference's quantile bins:

    edges   the distinct `bins - 1` inner quantiles of the reference's non-missing values
            (a discrete feature such as flag_own_car has fewer distinct edges, so fewer bins);
            bin i holds the values v with edges[i-1] <= v < edges[i] (open at both ends)
    missing values are a bin of their own, present when either side has any
    PSI     sum over bins of (current - reference) * ln(current / reference), with the two
            shares of each bin floored at EPSILON so that an empty bin counts as a large
            but finite change instead of an infinite one

Identical samples give 0. The KS statistic and p-value are scipy's `ks_2samp` on the
non-missing values (two-sided, exact for small samples, asymptotic otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPSILON = 1e-4


@dataclass(frozen=True)
class Bins:
    """The reference's quantile bins and both samples' shares in them (the last share is the missing bin, if any)."""

    edges: list[float]
    reference: list[float]
    current: list[float]
    has_missing_bin: bool

    def as_dict(self) -> dict:
        return {
            "edges": self.edges,
            "reference": self.reference,
            "current": self.current,
            "missing_bin": self.has_missing_bin,
        }


def as_array(values) -> np.ndarray:
    """Any sequence of numbers (None or NaN for missing) as float64."""
    array = np.asarray(values, dtype=np.float64)
    return array.reshape(-1)


def missing_share(values: np.ndarray) -> float:
    return float(np.isnan(values).mean()) if len(values) else float("nan")


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    present = reference[~np.isnan(reference)]
    if len(present) == 0:
        raise ValueError("the reference has no non-missing value to bin")
    inner = np.quantile(present, np.arange(1, bins) / bins)
    return np.unique(inner)


def shares(values: np.ndarray, edges: np.ndarray, missing_bin: bool) -> np.ndarray:
    """Share of `values` in each bin of `edges` (plus the missing bin at the end when asked)."""
    present = values[~np.isnan(values)]
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1).astype(np.float64)
    if missing_bin:
        counts = np.append(counts, len(values) - len(present))
    return counts / len(values)


def psi_of_shares(reference: np.ndarray, current: np.ndarray) -> float:
    ref = np.maximum(reference, EPSILON)
    cur = np.maximum(current, EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def binned(reference: np.ndarray, current: np.ndarray, bins: int) -> Bins:
    edges = quantile_edges(reference, bins)
    missing_bin = bool(np.isnan(reference).any() or np.isnan(current).any())
    return Bins(
        edges=[float(e) for e in edges],
        reference=[float(s) for s in shares(reference, edges, missing_bin)],
        current=[float(s) for s in shares(current, edges, missing_bin)],
        has_missing_bin=missing_bin,
    )


def psi(reference, current, bins: int = 10) -> float:
    """PSI of `current` against `reference` on the reference's quantile bins (see the module docstring)."""
    result = binned(as_array(reference), as_array(current), bins)
    return psi_of_shares(np.array(result.reference), np.array(result.current))


def ks(reference, current) -> tuple[float, float]:
    """(statistic, p-value) of the two-sample Kolmogorov-Smirnov test on the non-missing values."""
    from scipy.stats import ks_2samp

    ref, cur = as_array(reference), as_array(current)
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError("KS needs non-missing values on both sides")
    result = ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue)
