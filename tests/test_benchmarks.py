"""The speed benchmark runs on the CPU, and its two contestants do the same work on the same weights."""

import json
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import pipeline  # noqa: E402
import speed  # noqa: E402
import video_data  # noqa: E402
import video_decoding  # noqa: E402


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


def test_decode_floor_is_exactly_the_work_an_exact_reader_needs(tmp_path):
    """The decoding benchmark's floor decodes only the packets the sampled frames depend on, and
    those packets are enough: the frames it yields equal read_frames' pixel for pixel."""
    path = video_data.write_video(str(tmp_path / "clip.mp4"), list(video_decoding.textured_clip(64, 48, seed=0))[:90],
                                  codec="libx264", gop=40, bframes=3)
    video_data._INDEX_CACHE.clear()
    (indices,) = video_decoding.train_draws(path, 1, seed=3)
    codec, extradata, runs, wanted = video_decoding.required_packets(path, indices)
    decoded = video_decoding.decode_floor(codec, extradata, runs, wanted)

    ours = video_data.read_frames(path, indices).numpy()
    floor = [decoded[i] for i in sorted(decoded)]
    assert len(floor) == len(set(indices))
    for i, frame in zip(sorted(set(indices)), floor):
        assert (ours[indices.index(i)] == frame).all()
    sent = sum(len(run) for run in runs)
    index = video_data._video_index(path)
    assert index.keyframes[:2] == (0, 40)
    assert len(runs) == len({index.keyframe_at_or_before(i) for i in indices}) >= 2  # one run per keyframe used
    assert sent < max(indices) + 1  # unwanted non-reference frames were left out


def test_pipeline_end_to_end_rate_counts_validation_and_epoch_boundaries(tmp_path):
    """From metrics.jsonl's rate over the run so far: 2 steps an epoch of 4 videos, 1 s a step, and
    a 3 s validation after each epoch; from the end of epoch 1 to step 6: 16 videos in 4 + 6 s."""
    finished = {1: 1, 2: 2, 3: 6, 4: 7, 5: 11, 6: 12}               # step: seconds since the start
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for step, seconds in finished.items():
            record = {"step": step, "videos_per_s": 4.0, "videos_per_s_run": 4 * step / seconds}
            f.write(json.dumps(record) + "\n")
        f.write(json.dumps({"step": 6, "epoch": 3, "val": {}}) + "\n")
    assert abs(pipeline.end_to_end_rate(str(tmp_path), 4, 2) - 16 / 10) < 1e-9
