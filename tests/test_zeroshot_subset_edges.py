"""Zero-shot class subsets at their edges: more classes than feature dimensions (Kinetics-600's
600 against a width of 512), and a subset with no video (its split counts none and reports
n/a). Found by mutmut (benchmarks/mutation.py): the subset test has 4 classes of width 8, each
subset with videos.
"""

import torch
import torch.nn.functional as F

import evaluate
import prompts
import zeroshot


def test_more_classes_than_feature_dimensions():
    g = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(5, 1, 4, generator=g), dim=-1)   # (M, V, E = 4)
    text = F.normalize(torch.randn(1, 6, 4, generator=g), dim=-1)       # (K, C = 6, E)
    targets = torch.tensor([5, 4, 0, 5, 1])
    preds = zeroshot.subset_predictions(features, targets, torch.ones(5, dtype=torch.bool), text,
                                        50.0, [4, 5])
    keep = torch.tensor([0, 1, 3])                                     # the videos of classes 4, 5
    expected = prompts.ensemble_scores(features[keep, 0], text[:, [4, 5]], 50.0)
    assert torch.allclose(preds.scores, expected, atol=1e-6)
    assert preds.targets.tolist() == [1, 0, 1]


def test_a_subset_without_videos_has_no_predictions_and_undefined_accuracy():
    features = F.normalize(torch.randn(3, 1, 8), dim=-1)
    text = F.normalize(torch.randn(2, 4, 8), dim=-1)
    preds = zeroshot.subset_predictions(features, torch.tensor([0, 1, 0]),
                                        torch.ones(3, dtype=torch.bool), text, 50.0, [2, 3])
    assert preds.scores.shape == (0, 2) and preds.targets.numel() == 0 and preds.ok.numel() == 0
    result = evaluate.summarize(preds, ["c", "d"])
    assert result["evaluated"] == 0 and result["top1"] is None
    assert "top5" not in result and "top5_omitted" in result          # 2 classes: no top-5
