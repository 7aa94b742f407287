"""Charades' average precision at its edges: tied scores and a split without any positive.
Found by mutmut (benchmarks/mutation.py): the by-hand test has no ties and a positive in every
split, so an unstable sort and a mean over no classes passed it.
"""

import math

import pytest
import torch

import evaluate


def test_tied_scores_rank_in_video_order():
    """Ties are broken by video order, so AP does not depend on how the sort orders equal keys
    (torch's default CPU sort reorders 50 equal keys)."""
    scores = torch.zeros(50)
    positives = torch.zeros(50, dtype=torch.bool)
    positives[[0, 1, 2, 3, 4]] = True                   # the first five videos: ranks 1-5
    assert evaluate.average_precision(scores, positives) == pytest.approx(100.0)
    positives = torch.zeros(50, dtype=torch.bool)
    positives[[10, 49]] = True                          # ranks 11 and 50: (1/11 + 2/50) / 2
    expected = 100 * (1 / 11 + 2 / 50) / 2
    assert evaluate.average_precision(scores, positives) == pytest.approx(expected)


def test_map_without_any_positive_is_undefined_not_an_error():
    scores = torch.rand(4, 3)
    multi_hot = torch.zeros(4, 3)
    assert math.isnan(evaluate.mean_average_precision(scores, multi_hot))
    preds = evaluate.Predictions(scores, multi_hot, torch.ones(4, dtype=torch.bool))
    result = evaluate.summarize(preds, ["a", "b", "c"], multilabel=True)
    assert result["mAP"] is None and [row["AP"] for row in result["per_class"]] == [None] * 3
