"""The speed benchmark runs on the CPU, and its two contestants do the same work on the same weights."""

import json
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import speed  # noqa: E402


def test_contestants_compute_the_same_clip_features():
    state_dict = speed.official_shape_state_dict("tiny-p8")
    ours = speed.build_ours(state_dict, 4, torch.device("cpu")).eval()
    reference = speed.ReferenceVideoCLIP(state_dict, 4).eval()
    video, trimmed, _ = speed.batch_inputs("tiny-p8", 3, 4, torch.device("cpu"), trim=True)
    _, full, _ = speed.batch_inputs("tiny-p8", 3, 4, torch.device("cpu"), trim=False)
    assert trimmed.shape[1] < full.shape[1] == 77
    with torch.no_grad():
        frames = video.flatten(0, 1)
        torch.testing.assert_close(ours.clip.encode_image(frames), reference.clip.encode_image(frames),
                                   rtol=1e-5, atol=1e-5)
        # ours reads trimmed label texts, the reference the padded 77 tokens: the same features
        torch.testing.assert_close(ours.encode_text(trimmed), reference.encode_text(full), rtol=1e-5, atol=1e-5)
    assert speed.video_gflop(ours, "tiny-p8", 4, torch.device("cpu")) > 0


def test_benchmark_runs_on_cpu_shapes(tmp_path):
    out = tmp_path / "speed.json"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "speed.py"), "--small", "--steps", "2",
                             "--warmup", "1", "--loader-workers", "0", "--json", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| tiny-p8 | ours |" in result.stdout and "| tiny-p8 | open_clip |" in result.stdout
    figures = json.loads(out.read_text())
    ours, reference = figures["rows"]
    assert ours["model"] == "ours" and reference["model"] == "open_clip"
    for row in figures["rows"]:
        assert row["infer_videos_s"] > 0 and row["train_videos_s"] > 0
    assert ours["infer_ratio"] == ours["infer_videos_s"] / reference["infer_videos_s"]
    assert any(k.startswith("DataLoader videos/s") and v > 0 for k, v in figures.items())
