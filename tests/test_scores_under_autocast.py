"""Test-time class scores are computed in fp32 even inside autocast, as view_averaged_scores says:
in bf16, logits of 100 x cosine (~30) would round to steps of 1/8. The evaluation tests run without
autocast, so they passed with that fp32 guard removed.
"""

import torch

import evaluate


def test_view_averaged_scores_under_bf16_autocast_equal_fp32():
    g = torch.Generator().manual_seed(0)
    normalize = torch.nn.functional.normalize
    features = normalize(torch.randn(8, 2, 64, generator=g), dim=-1)        # (B, V, E)
    text = normalize(torch.randn(16, 10, 64, generator=g), dim=-1)          # (K, C, E)
    scale = torch.tensor(100.0)
    # by hand, in fp64: a softmax per template, then the mean over templates and views
    logits = 100.0 * torch.einsum("bve,kce->bvkc", features.double(), text.double())
    expected = logits.softmax(dim=-1).mean(dim=(1, 2))
    plain = evaluate.view_averaged_scores(features, text, scale)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = evaluate.view_averaged_scores(features, text, scale)
    assert mixed.dtype == torch.float32
    assert torch.allclose(plain.double(), expected, atol=1e-6)
    assert torch.allclose(mixed.double(), expected, atol=1e-6)
