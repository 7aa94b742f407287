"""zeroshot.py: the protocols, their mean and std, and any video against any labels.

- labels: duplicates (as the tokenizer sees them), empty entries and blank lines are errors;
- half-class draws are Text4Vis's (numpy seeds), each half of the classes, reproducible;
- mean +- std: population std, checked by hand;
- UCF101 / HMDB51 fixtures in the official layouts: all three test splits evaluated, each equal to
  evaluate.py's numbers on that split, and the JSON's mean and std those of the three;
- half-classes and Kinetics-600 novel classes: only the drawn / listed classes are candidates;
- --video --labels: a tiny ActionCLIP trained here (150 steps) on two synthetic classes ranks the
  right label first for held-out videos of each class, as a checkpoint and as plain CLIP weights (meanP);
- helpful errors: missing dataset root, weights not found.
"""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clip_model
import evaluate
import prompts
import video_data
import zeroshot
from dataset_fixtures import make_hmdb51, make_kinetics, make_ucf101
from test_evaluate import TINY, one_thread, save_checkpoint  # noqa: F401 (one_thread: a fixture)

# ----------------------------------------------------------------------------------------------------
# Labels, draws, statistics


def test_labels_must_be_distinct_and_non_empty(tmp_path):
    assert zeroshot.check_labels(["playing guitar", "riding a bike"], "--labels") == ["playing guitar", "riding a bike"]
    with pytest.raises(ValueError, match=r"duplicate labels \('playing guitar' and 'Playing  Guitar'\)"):
        zeroshot.check_labels(["playing guitar", "riding a bike", "Playing  Guitar"], "--labels")
    with pytest.raises(ValueError, match=r"entries \[2\] are empty"):
        zeroshot.check_labels(["playing guitar", " ", "riding a bike"], "--labels")
    with pytest.raises(ValueError, match="two or more"):
        zeroshot.check_labels(["playing guitar"], "--labels")
    path = tmp_path / "labels.txt"
    path.write_text("playing guitar\n\nriding a bike\n")
    with pytest.raises(ValueError, match=r"lines \[2\] are blank"):
        zeroshot.read_labels(str(path))
    path.write_text("playing guitar\nriding a bike\n")
    assert zeroshot.read_labels(str(path)) == ["playing guitar", "riding a bike"]


def test_bad_labels_fail_before_any_model_is_loaded(capsys):
    with pytest.raises(SystemExit, match="duplicate labels"):
        zeroshot.main(["--video", "missing.mp4", "--weights", "nowhere.pt", "--labels", "a", "a"])


def test_label_flags_and_files_fail_in_one_line_before_any_model(tmp_path, capsys, monkeypatch):
    from test_evaluate import one_line_error, usage_error
    video = ["--video", "missing.mp4", "--weights", "nowhere.pt"]  # not opened: labels fail first
    err = usage_error(zeroshot.main, video + ["--labels", "a", "--labels-file", "l.txt"], capsys)
    assert "--labels and --labels-file both give the candidate labels: give one of them" in err
    one_line_error(zeroshot.main, video + ["--labels-file", str(tmp_path)],
                   f"--labels-file {tmp_path} is a folder; expected a text file")
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9 au lait\nriding a bike\n")
    one_line_error(zeroshot.main, video + ["--labels-file", str(latin)],
                   r"latin.txt is not UTF-8 text .*save it as UTF-8")
    one_line_error(zeroshot.main, video + ["--labels", "riding a bike", "playing " * 80],
                   r"--labels: the label 'playing playing .*'... is too long: .* 77-token text")
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfplaying guitar\nriding a bike\n")   # as Windows editors save it
    assert zeroshot.read_labels(str(bom)) == ["playing guitar", "riding a bike"]
    err = usage_error(zeroshot.main, ["--dataset", "list", "--root", str(tmp_path),
                                      "--list-file", "l.txt"], capsys)
    assert "--dataset list needs --list-file FILE ('path label' lines) and --classnames-file" in err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = usage_error(zeroshot.main, video + ["--labels", "a", "b", "--device", "cuda"], capsys)
    assert "--device cuda: torch sees no CUDA GPU here" in err
    err = usage_error(zeroshot.main, video + ["--labels", "a", "--json", str(tmp_path)], capsys)
    assert "is a folder; give a file name" in err


def test_video_that_cannot_be_read_is_an_error(tmp_path, capsys):
    weights = str(tmp_path / "clip.pt")
    torch.save(clip_model.CLIP(**TINY).state_dict(), weights)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(SystemExit, match=r"none of the 1 videos could be read .*was ranked"):
        zeroshot.main(["--video", str(bad), "--weights", weights, "--labels", "a", "b",
                       "--workers", "0", "--device", "cpu", "--frames", "4"])
    assert "could not be read" in capsys.readouterr().out          # the report is still printed


def test_half_class_draws_are_text4vis_draws():
    draws = zeroshot.half_class_draws(101, draws=10, seed=0)
    for i, half in enumerate(draws):
        np.random.seed(i)                                             # Text4Vis's multi_split_test
        assert half == sorted(np.random.permutation(101)[:101 // 2].tolist())
        assert len(set(half)) == 50
    assert len({tuple(h) for h in draws}) == 10                       # ten different halves
    assert zeroshot.half_class_draws(101, 10, 0) == draws             # reproducible


def test_mean_and_std_by_hand():
    mean, std, std_sample = zeroshot.mean_std([60.0, 62.0, 67.0])
    assert mean == pytest.approx(63.0)
    assert std == pytest.approx(math.sqrt((9 + 1 + 16) / 3))          # population: divide by n
    assert std_sample == pytest.approx(math.sqrt((9 + 1 + 16) / 2))   # sample: divide by n - 1


def test_subset_predictions_use_only_the_subset_as_candidates():
    g = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(6, 1, 8, generator=g), dim=-1)  # (M, V, E)
    text = F.normalize(torch.randn(2, 4, 8, generator=g), dim=-1)    # (K, C, E)
    targets = torch.tensor([0, 1, 2, 3, 2, 0])
    preds = zeroshot.subset_predictions(features, targets, torch.ones(6, dtype=torch.bool), text, 50.0, [0, 2])
    keep = torch.tensor([0, 2, 4, 5])                                 # the videos of classes 0 and 2
    expected = prompts.ensemble_scores(features[keep, 0], text[:, [0, 2]], 50.0)  # softmax over 2 classes only
    assert torch.allclose(preds.scores, expected, atol=1e-6)
    assert preds.targets.tolist() == [0, 1, 1, 0]                     # renumbered within the subset


# ----------------------------------------------------------------------------------------------------
# Any video, any labels: a model that knows two synthetic classes

CLASSES = [("red", "circle", "moving left"), ("blue", "square", "moving right")]


def train_two_classes(root, steps=150):
    """A tiny meanP ActionCLIP trained from scratch to match 6 videos of each class with its name, in a
    random template each step (as in training [Sec. 3.2]); cross-entropy over the two class texts."""
    split = video_data.load_split("synthetic", root, "train")
    dataset = video_data.VideoDataset(split, 4, "test", video_data.test_transform(32))
    videos = torch.stack([dataset[i][0][0] for i in range(len(dataset))])  # (N, T, 3, S, S)
    labels = torch.tensor([r.label for r in split.records])
    torch.manual_seed(0)
    model = prompts.ActionCLIP(clip_model.CLIP(**TINY), "meanP", 4).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        tokens = clip_model.tokenize([prompts.random_prompt(name, g) for name in split.classnames])
        loss = F.cross_entropy(model(videos, tokens), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_video_labels_ranks_the_known_class_first(tmp_path, capsys, one_thread):
    root = str(tmp_path / "synthetic")
    video_data.make_synthetic_dataset(root, CLASSES, 6, num_frames=8, split="train")
    video_data.make_synthetic_dataset(root, CLASSES, 2, num_frames=8, split="test")  # held out
    model = train_two_classes(root)
    checkpoint, weights = str(tmp_path / "two.pt"), str(tmp_path / "two_clip.pt")
    torch.save(prompts.checkpoint_payload(model), checkpoint)
    torch.save(model.clip.state_dict(), weights)                      # the same CLIP as plain weights

    test = video_data.load_split("synthetic", root, "test")
    labels = ["yellow triangle growing", "blue square moving right", "red circle moving left"]  # not class order
    outputs = {}
    for flag, path in (("--checkpoint", checkpoint), ("--weights", weights)):
        out = str(tmp_path / f"{flag[2:]}.json")
        zeroshot.main([flag, path, "--video", *[r.path for r in test.records], "--labels", *labels,
                       "--frames", "4", "--workers", "0", "--device", "cpu", "--json", out])
        outputs[flag] = json.load(open(out))
    printed = capsys.readouterr().out
    for record, result in zip(test.records, outputs["--checkpoint"]["videos"]):
        best = max(result["probabilities"], key=result["probabilities"].get)
        assert best == test.classnames[record.label], (record.path, result["probabilities"])
        assert sum(result["probabilities"].values()) == pytest.approx(1.0)
    # plain CLIP weights are wrapped in meanP: the very model trained here, so the same probabilities
    for a, b in zip(outputs["--checkpoint"]["videos"], outputs["--weights"]["videos"]):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)
    assert "   1. red circle moving left" in printed and "   1. blue square moving right" in printed


# ----------------------------------------------------------------------------------------------------
# Benchmarks on fixture datasets in the official layouts


def test_benchmark_mean_and_std_over_runs_by_hand():
    right, wrong = torch.tensor([[0.9, 0.1]]), torch.tensor([[0.1, 0.9]])
    run = lambda rows: evaluate.Predictions(torch.cat(rows), torch.zeros(len(rows), dtype=torch.long),
                                            torch.ones(len(rows), dtype=torch.bool))
    runs = [("split 1", ["a", "b"], run([right, right])), ("split 2", ["a", "b"], run([right, wrong])),
            ("split 3", ["a", "b"], run([wrong, wrong]))]                 # top-1: 100, 50, 0
    results, summary = zeroshot.benchmark_results(runs)
    assert [r["top1"] for r in results] == [100.0, 50.0, 0.0]
    assert summary["mean"]["top1"] == pytest.approx(50.0)
    assert summary["std"]["top1"] == pytest.approx(math.sqrt((50 ** 2 + 0 + 50 ** 2) / 3))  # 40.82
    assert summary["std_sample"]["top1"] == pytest.approx(50.0)
    assert "top5" not in summary["std"]                         # top-5 of 2 classes: always 100


def zeroshot_json(argv, tmp_path, name="zs"):
    out = str(tmp_path / f"{name}.json")
    zeroshot.main(argv + ["--workers", "0", "--device", "cpu", "--json", out])
    return json.load(open(out))


def test_ucf101_three_splits_each_equal_to_evaluate(tmp_path, capsys, one_thread):
    data = make_ucf101(tmp_path / "ucf101")                           # 3 test videos per split
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    result = zeroshot_json(["--checkpoint", checkpoint, "--dataset", "ucf101", "--root", data["root"]], tmp_path)
    printed = capsys.readouterr().out
    assert result["protocol"] == "splits" and "the three official test splits, all 3 classes" in printed
    assert [r["name"] for r in result["runs"]] == ["split 1", "split 2", "split 3"]
    for fold, run in enumerate(result["runs"], 1):
        assert run["evaluated"] == len(data["test"][fold]) == 3
        out = str(tmp_path / f"evaluate{fold}.json")
        evaluate.main(["--checkpoint", checkpoint, "--dataset", "ucf101", "--root", data["root"], "--fold", str(fold),
                       "--workers", "0", "--device", "cpu", "--json", out])
        expected = json.load(open(out))
        for key in ("top1", "top5_omitted", "per_class", "evaluated"):
            assert run[key] == expected[key], (fold, key)
    top1 = [r["top1"] for r in result["runs"]]
    assert result["mean"]["top1"] == pytest.approx(np.mean(top1))
    assert result["std"]["top1"] == pytest.approx(np.std(top1, ddof=0), abs=1e-9)
    assert "mean +- std over 3 (population std (ddof=0))" in printed


def test_hmdb51_splits_with_plain_clip_weights(tmp_path, capsys, one_thread):
    data = make_hmdb51(tmp_path / "hmdb51")
    weights = str(tmp_path / "clip.pt")
    torch.manual_seed(0)
    torch.save(clip_model.CLIP(**TINY).state_dict(), weights)           # a plain CLIP state dict
    result = zeroshot_json(["--weights", weights, "--dataset", "hmdb51", "--root", data["root"]], tmp_path)
    assert [r["evaluated"] for r in result["runs"]] == [len(data["test"][f]) for f in (1, 2, 3)]
    assert all(r["num_classes"] == 5 for r in result["runs"])
    assert "no temporal module: the 8 frame features are averaged (meanP)" in capsys.readouterr().out


def test_half_classes_candidates_are_the_drawn_half(tmp_path, one_thread):
    data = make_hmdb51(tmp_path / "hmdb51")                           # 5 classes x 3 videos, all in some list
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    result = zeroshot_json(["--checkpoint", checkpoint, "--dataset", "hmdb51", "--root", data["root"],
                            "--protocol", "half-classes", "--draws", "3"], tmp_path)
    halves = zeroshot.half_class_draws(5, 3)
    assert len(result["runs"]) == 3
    for run, half in zip(result["runs"], halves):
        assert [row["class"] for row in run["per_class"]] == [data["classnames"][c] for c in half]
        assert run["num_classes"] == 2 and run["evaluated"] == 2 * 3  # every video of the two classes
    assert "3 random halves of the 5 classes" in result["header"][1]


def test_kinetics600_novel_class_subsets(tmp_path, one_thread):
    names = ("abseiling", "acting in play", "adjusting glasses", "air drumming", "alligator wrestling", "zumba")
    data = make_kinetics(tmp_path / "k600", classes=names)            # 2 test videos per class, 1 missing
    subset_csv, subset_txt = tmp_path / "split1.csv", tmp_path / "split2.txt"
    subset_csv.write_text("id,name\n0,zumba\n1,acting in play\n2,air drumming\n")  # X-CLIP / Text4Vis format
    subset_txt.write_text("abseiling\nadjusting glasses\n")
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    args = ["--checkpoint", checkpoint, "--dataset", "kinetics600", "--root", data["root"]]
    result = zeroshot_json(args + ["--k600-splits", str(subset_csv), str(subset_txt)], tmp_path)
    assert result["protocol"] == "k600-novel"
    first, second = result["runs"]
    assert [row["class"] for row in first["per_class"]] == ["acting in play", "air drumming", "zumba"]
    assert [row["class"] for row in second["per_class"]] == ["abseiling", "adjusting glasses"]
    assert (first["evaluated"], second["evaluated"]) == (6, 4)
    subset_txt.write_text("abseiling\nskydiving\n")
    with pytest.raises(SystemExit, match=r"split2.txt: 1 of its 2 classes are not classes of the dataset.*skydiving"):
        zeroshot.main(args + ["--k600-splits", str(subset_txt), "--workers", "0"])


def test_errors_say_where_and_how(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                                       # no data/ucf101 here
    weights = str(tmp_path / "clip.pt")
    torch.save(clip_model.CLIP(**TINY).state_dict(), weights)
    with pytest.raises(SystemExit, match=r"ucf101 root folder not found: expected data/ucf101 .*pass --root"):
        zeroshot.main(["--dataset", "ucf101", "--weights", weights])
    os.makedirs(tmp_path / "data" / "ucf101")                         # from here on, the models are what is wrong
    with pytest.raises(SystemExit, match=r"neither an official CLIP model name .* ~/.cache/clip"):
        zeroshot.main(["--dataset", "ucf101", "--weights", "ViT-B-16-missing.pt"])
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    with pytest.raises(SystemExit, match="pass it with --checkpoint"):
        zeroshot.main(["--dataset", "ucf101", "--weights", checkpoint])
    with pytest.raises(SystemExit, match="no checkpoint at .*: train one with train.py"):
        zeroshot.main(["--dataset", "ucf101", "--checkpoint", "missing.pt"])
    with pytest.raises(SystemExit, match="no such file: missing.mp4"):
        zeroshot.main(["--video", "missing.mp4", "--weights", weights, "--labels", "a", "b"])
    with pytest.raises(SystemExit):                                   # argparse: a whole number >= 1
        zeroshot.parse_args(["--video", "a.mp4", "--labels", "a", "b", "--top", "-1"])
    with pytest.raises(SystemExit):                                   # found before the run, not after it
        zeroshot.parse_args(["--dataset", "ucf101", "--json", str(tmp_path / "no_dir" / "out.json")])
    for ignored in (["--fold", "2"], ["--split=val"], ["--draws", "3"]):   # the default protocol, splits, runs all
        with pytest.raises(SystemExit):                                     # three test splits and no draws
            zeroshot.parse_args(["--dataset", "ucf101", *ignored])
    assert zeroshot.parse_args(["--dataset", "ucf101", "--protocol", "half-classes", "--draws", "3"]).draws == 3
    assert zeroshot.parse_args(["--dataset", "kinetics400", "--split", "val"]).split == "val"


def test_half_classes_score_every_listed_video_of_the_drawn_classes(tmp_path, one_thread):
    """UCF101's groups 22-25 are in no test list, only in the train lists: the half-classes
    protocol scores every video either kind of list names, each once. Here the g03 videos are taken
    out of every test list; the videos of each drawn class are counted from the list files."""
    data = make_ucf101(tmp_path / "ucf101")                           # 3 classes x 3 videos
    lists = os.path.join(data["root"], "ucfTrainTestlist")
    for fold in (1, 2, 3):
        path = os.path.join(lists, f"testlist0{fold}.txt")
        kept = [line for line in open(path) if "_g03_" not in line]
        open(path, "w").writelines(kept)
    listed = set()
    for kind in ("trainlist", "testlist"):
        for fold in (1, 2, 3):
            listed |= {line.split()[0] for line in open(os.path.join(lists, f"{kind}0{fold}.txt"))}
    result = zeroshot_json(["--checkpoint", save_checkpoint(tmp_path / "ckpt.pt"), "--dataset",
                            "ucf101", "--root", data["root"], "--protocol", "half-classes",
                            "--draws", "2", "--seed", "1"], tmp_path)
    for run in result["runs"]:
        (row,) = run["per_class"]                                     # 3 // 2 = 1 drawn class
        folder = ["ApplyEyeMakeup", "Basketball", "YoYo"][data["classnames"].index(row["class"])]
        expected = sum(path.startswith(folder + "/") for path in listed)
        assert expected == 3 and row["videos"] == expected and run["evaluated"] == expected, row


def test_half_classes_needs_one_listed_video_in_all_lists_not_in_each(tmp_path):
    """Half-classes joins the train and test lists of every fold: one empty list is fine (the test
    above), all of them empty is one line, nothing evaluated."""
    data = make_ucf101(tmp_path / "ucf101")
    lists = os.path.join(data["root"], "ucfTrainTestlist")
    for name in os.listdir(lists):
        if name.startswith(("trainlist", "testlist")):
            open(os.path.join(lists, name), "w").close()
    with pytest.raises(SystemExit) as stop:
        zeroshot.main(["--checkpoint", save_checkpoint(tmp_path / "ckpt.pt"), "--dataset", "ucf101",
                       "--root", data["root"], "--protocol", "half-classes"])
    assert str(stop.value.code) == ("error: none of the ucf101 lists (6 split files) names a "
                                    "video on disk: there is nothing to evaluate")
