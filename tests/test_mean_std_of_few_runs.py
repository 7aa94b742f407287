"""The zero-shot spread over few runs: two runs have a sample std, one run has none (NaN, not an
error). Found by mutmut (benchmarks/mutation.py): the by-hand test has three runs, so a sample std
that needed three passed.
"""

import math

import pytest

import zeroshot


def test_two_runs_have_a_sample_std_and_one_run_has_none():
    mean, std, std_sample = zeroshot.mean_std([60.0, 64.0])
    assert (mean, std) == (62.0, 2.0)
    assert std_sample == pytest.approx(math.sqrt(8))                   # (4 + 4) / (2 - 1)
    mean, std, std_sample = zeroshot.mean_std([61.5])
    assert (mean, std) == (61.5, 0.0) and math.isnan(std_sample)
