"""Table 1's unimodal baseline loss by hand: cross-entropy for class ids, binary cross-entropy per
class for multi-hot targets (Charades). Found by mutmut (benchmarks/mutation.py): the training test
of --unimodal is single-label, so the multi-hot branch could be anything.
"""

import math

import pytest
import torch

import train


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_multi_hot_targets_take_the_mean_binary_cross_entropy_of_every_class():
    logits = [[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]]
    target = [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    terms = [-(t * math.log(sigmoid(x)) + (1 - t) * math.log(1 - sigmoid(x)))
             for row, labels in zip(logits, target) for x, t in zip(row, labels)]
    got = train.classifier_loss(torch.tensor(logits), torch.tensor(target))
    assert got.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_class_ids_take_the_cross_entropy_of_the_softmax():
    logits = [[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]]
    target = [2, 1]
    terms = [-(row[c] - math.log(sum(math.exp(x) for x in row))) for row, c in zip(logits, target)]
    got = train.classifier_loss(torch.tensor(logits), torch.tensor(target))
    assert got.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)
