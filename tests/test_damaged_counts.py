"""Damaged videos (issue #23, item 11) are counted in each run's summary, once per video:
evaluate.py's report and JSON (with DataLoader workers, and gathered from 2 gloo processes),
zeroshot.py's reports, train.py's validation line and metrics.jsonl, and `video_data.py prepare`'s
closing line.

The fixture: UCF101's layout, fold 1's 3 test videos being one damaged (a corrupt keyframe: read as
a player shows it), one that cannot be read (not a video) and one intact. The reference count is 1
damaged, 1 unreadable, by construction.
"""

import json
import os
import subprocess
import sys

import pytest

import evaluate
import train
import video_data
import zeroshot
from dataset_fixtures import make_ucf101
from test_decoding_hard_files import corrupt_keyframe
from test_evaluate import REPO, free_port, one_thread, save_checkpoint  # noqa: F401 (a fixture)
from test_frame_conformance import stripes
from test_train import TINY, save_clip

COUNTS = "1 of 3 videos could not be read; 1 damaged, read as a player shows them"


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("damaged")
    data = make_ucf101(tmp / "ucf101")
    (damaged, _), (unreadable, _), _ = data["test"][1]
    good = video_data.write_video(str(tmp / "good.avi"), [stripes(i) for i in range(48)],
                                  codec="mpeg4", gop=12, bframes=0)
    corrupt_keyframe(good, damaged)
    with open(unreadable, "wb") as f:
        f.write(b"not a video" * 100)
    data["damaged"] = damaged
    assert video_data.damaged_packets(damaged) > 0 and video_data.count_frames(damaged) >= 36
    return data


def test_evaluate_counts_a_damaged_video_in_its_report_and_json(ucf, tmp_path, capsys, one_thread):
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    out = str(tmp_path / "out.json")
    evaluate.main(["--checkpoint", checkpoint, "--dataset", "ucf101", "--root", ucf["root"],
                   "--clips", "2", "--workers", "1", "--device", "cpu", "--json", out])
    assert COUNTS in capsys.readouterr().out            # read in a DataLoader worker, counted here
    result = json.load(open(out))
    counts = result["total"], result["unreadable"], result["damaged"], result["evaluated"]
    assert counts == (3, 1, 1, 2)


def test_two_processes_count_a_damaged_video_once(ucf, tmp_path, one_thread):
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    path = os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    out = str(tmp_path / "two.json")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}", os.path.join(REPO, "evaluate.py"),
                          "--checkpoint", checkpoint, "--dataset", "ucf101", "--root", ucf["root"],
                          "--batch-size", "1", "--workers", "0", "--device", "cpu", "--json", out],
                         env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.load(open(out))
    assert "processes: 2" in result["header"][-1]
    assert (result["total"], result["unreadable"], result["damaged"]) == (3, 1, 1)
    assert run.stdout.count(COUNTS) == 1                                # process 0 reports


def test_zeroshot_reports_count_a_damaged_video(ucf, tmp_path, capsys, one_thread):
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    out = str(tmp_path / "zs.json")
    zeroshot.main(["--checkpoint", checkpoint, "--dataset", "ucf101", "--root", ucf["root"],
                   "--workers", "0", "--device", "cpu", "--json", out])
    printed = capsys.readouterr().out
    runs = json.load(open(out))["runs"]
    assert [(r["unreadable"], r["damaged"]) for r in runs] == [(1, 1), (0, 0), (0, 0)]  # in split 1
    assert COUNTS in [line for line in printed.splitlines() if "split 1" in line][-1]
    intact = ucf["test"][2][0][0]
    zeroshot.main(["--checkpoint", checkpoint, "--video", ucf["damaged"], intact, "--labels", "a",
                   "b", "--workers", "0", "--device", "cpu", "--json", out])
    said = capsys.readouterr().out
    assert "0 of 2 videos could not be read; 1 damaged, read as a player shows them" in said
    videos = json.load(open(out))["videos"]
    assert [(v["ok"], v["damaged"]) for v in videos] == [(True, True), (True, False)]


def test_train_validation_counts_a_damaged_video(ucf, tmp_path, capsys):
    clip = save_clip(tmp_path / "clip.pt", dict(TINY, image_resolution=32))
    out = tmp_path / "out"
    train.train(train.parse_args(["--arch", clip, "--dataset", "ucf101", "--root", ucf["root"],
                                  "--val-split", "test", "--frames", "2", "--epochs", "1",
                                  "--batch-size", "4", "--workers", "1", "--augment", "crop",
                                  "--out", str(out)]))
    lines = capsys.readouterr().out.splitlines()
    assert COUNTS in [line for line in lines if line.startswith("epoch 1/1")][-1]
    records = map(json.loads, open(out / "metrics.jsonl"))
    val = [record["val"] for record in records if "val" in record]
    assert [(v["unreadable"], v["damaged"]) for v in val] == [(1, 1)]


def test_prepare_counts_a_damaged_video(ucf, tmp_path, capsys):
    out = str(tmp_path / "prepared")
    assert video_data.main(["prepare", "--dataset", "ucf101", "--root", ucf["root"], "--out", out,
                            "--workers", "2", "--short-side", "16"]) == 0
    said = capsys.readouterr().out
    assert "1 of 9 videos could not be read; 1 damaged, read as a player shows them" in said
    record = json.load(open(os.path.join(out, video_data.PREPARED_RECORD)))
    assert record["damaged"] == [ucf["damaged"]]
