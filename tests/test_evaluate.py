"""evaluate.py: metrics against hand computations, view averaging, every video counted once.

- top-1 / top-5, per-class accuracy and mAP on small score tables worked out by hand;
- multi-view: a 2-view video scores the mean of its views' ensemble scores, computed here by hand
  (and not the scores of its mean feature);
- predict_videos returns every video once, in dataset order, when the count is not a multiple of the
  batch;
- a 2-process gloo torchrun gives the metrics and per-video scores of 1 process, on a fixture whose
  video count is a multiple of neither the batch size nor the number of processes;
- end to end on the UCF101 / Charades fixtures (official layouts): this project's checkpoint, an
  official-format release, a unimodal classifier; an unreadable video is counted, --strict stops.
"""

import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
from torch import nn

import clip_model
import evaluate
import prompts
import video_data
from dataset_fixtures import make_charades, make_ucf101
from evaluate import (Predictions, average_precision, mean_average_precision, per_class_accuracy,
                      predict_videos, summarize, topk_accuracy)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny CLIP of the tests: ViT width 64, 2 layers, patch 8, 32 px; text width 64, 1 layer.
TINY = dict(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
            context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=1)


def tiny_clip(seed=0):
    torch.manual_seed(seed)
    return clip_model.build_model(clip_model.CLIP(**TINY).state_dict())


def save_checkpoint(path, visual_prompt="transf", num_frames=4, seed=0):
    """This project's checkpoint format (prompts.checkpoint_payload) around a tiny random CLIP."""
    torch.manual_seed(seed)
    model = prompts.ActionCLIP(tiny_clip(seed), visual_prompt, num_frames)
    torch.save(prompts.checkpoint_payload(model), path)
    return str(path)


# --------------------------------------------------------------------------------------------------
# Metrics by hand


def table(rows):
    """Scores whose ranking is what each row lists: row = class ids, best first."""
    C = len(rows[0])
    scores = torch.zeros(len(rows), C)
    for i, ranking in enumerate(rows):
        scores[i, torch.tensor(ranking)] = torch.linspace(1, 0.1, C)
    return scores


def test_topk_and_per_class_accuracy_by_hand():
    scores = table([
        [2, 0, 1, 3, 4, 5],  # target 2 first:        top-1 and top-5 hit
        [4, 3, 0, 1, 2, 5],  # target 0 third:        top-5 only
        [0, 1, 2, 3, 4, 5],  # target 5 sixth:        neither
        [0, 1, 2, 3, 4, 5],  # target 1 second:       top-5 only
        [1, 2, 0, 3, 4, 5],  # target 2 second:       top-5 only
    ])
    targets = torch.tensor([2, 0, 5, 1, 2])
    assert topk_accuracy(scores, targets) == pytest.approx({"top1": 20.0, "top5": 80.0})
    per_class = per_class_accuracy(scores, targets, 6)
    assert per_class[:3] == [0.0, 0.0, 50.0] and per_class[5] == 0.0
    assert math.isnan(per_class[3]) and math.isnan(per_class[4])  # no videos: undefined, not 0
    assert topk_accuracy(scores[:, :3], torch.tensor([0, 1, 2, 0, 1]))["top5"] == 100.0  # k capped at C


def test_average_precision_by_hand():
    scores = torch.tensor([[0.9, 0.2, 0.5], [0.8, 0.7, 0.5], [0.3, 0.6, 0.5], [0.1, 0.4, 0.5]])
    multi_hot = torch.tensor([[1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]]).float()
    # class 0: positives at ranks 1 and 3 -> (1/1 + 2/3) / 2; class 1: its positive ranks 3rd -> 1/3
    assert average_precision(scores[:, 0], multi_hot[:, 0] > 0) == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert average_precision(scores[:, 1], multi_hot[:, 1] > 0) == pytest.approx(100 / 3)
    assert math.isnan(average_precision(scores[:, 2], multi_hot[:, 2] > 0))  # no positive: left out of the mean
    assert mean_average_precision(scores, multi_hot) == pytest.approx(100 * ((1 + 2 / 3) / 2 + 1 / 3) / 2)


def test_summarize_leaves_unreadable_videos_out():
    scores = table([[0, 1], [1, 0], [1, 0]])
    preds = Predictions(scores, torch.tensor([0, 0, 1]), torch.tensor([True, False, True]))
    result = summarize(preds, ["a", "b"])
    assert (result["total"], result["unreadable"], result["evaluated"]) == (3, 1, 2)
    assert result["top1"] == 100.0                                    # the unreadable (wrong) one is not counted
    assert result["per_class"] == [{"class": "a", "videos": 1, "top1": 100.0},
                                   {"class": "b", "videos": 1, "top1": 100.0}]
    json.dumps(result, allow_nan=False)                               # NaN-free: a missing class is null


# --------------------------------------------------------------------------------------------------
# Views and batches, on a model whose features are written in the video


class PixelModel(nn.Module):
    """encode_video returns pixels [0, 0, 0, :E] of each video: features set by hand. exp(logit_scale) = ln 3."""

    def __init__(self, E=2):
        super().__init__()
        self.E = E
        self.logit_scale = nn.Parameter(torch.tensor(math.log(math.log(3))))

    def encode_video(self, video):                                    # (B, T, 3, S, S)
        return video[:, 0, 0, 0, :self.E]                             # (B, E)


class ListDataset(torch.utils.data.Dataset):
    """VideoDataset's test items, (video (V, T, 3, S, S), target, index, ok, damaged), from a list
    of videos."""

    def __init__(self, videos, targets):
        self.videos, self.targets = videos, targets

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        return self.videos[i], torch.tensor(self.targets[i]), i, True, False


def views(*features, S=4):
    """One video (V, T=1, 3, S, S) whose view v has features[v] as its first pixels."""
    video = torch.zeros(len(features), 1, 3, S, S)
    for v, f in enumerate(features):
        video[v, 0, 0, 0, :len(f)] = torch.tensor(f, dtype=torch.float)
    return video


def test_two_views_average_their_scores_by_hand():
    # Text features: one template, class 0 along (1, 0), class 1 along (0, 1); logit scale ln 3.
    text = torch.eye(2)[None]                                         # (K=1, C=2, E=2)
    # View 1 points at class 0: cosines (1, 0), softmax(ln3 * (1, 0)) = (3, 1) / 4 = (0.75, 0.25).
    # View 2 lies between them: cosines equal, softmax (0.5, 0.5). Mean over views: (0.625, 0.375).
    dataset = ListDataset([views((1.0, 0.0), (1.0, 1.0))], [0])
    loader = evaluate.eval_loader(dataset, batch_size=1, workers=0)
    preds = predict_videos(PixelModel(), loader, text, torch.device("cpu"), progress=None)
    assert torch.allclose(preds.scores, torch.tensor([[0.625, 0.375]]))
    # Averaging the features instead, (1.707, 0.707), would give softmax(ln3 * (0.924, 0.383)) = (0.644, 0.356).
    assert not torch.allclose(preds.scores, torch.tensor([[0.644, 0.356]]), atol=5e-3)


def test_every_video_once_in_order_with_a_short_last_batch():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(7, 3, generator=g)
    dataset = ListDataset([views(f.tolist()) for f in features], [0, 1, 2, 0, 1, 2, 0])
    text = torch.nn.functional.normalize(torch.randn(2, 3, 3, generator=g), dim=-1)  # K=2, C=3, E=3
    model = PixelModel(E=3)
    loader = evaluate.eval_loader(dataset, batch_size=3, workers=0)
    preds = predict_videos(model, loader, text, torch.device("cpu"), progress=None)
    expected = prompts.ensemble_scores(features, text, model.logit_scale.exp())
    assert preds.scores.shape == (7, 3) and torch.allclose(preds.scores, expected, atol=1e-6)
    assert preds.targets.tolist() == [0, 1, 2, 0, 1, 2, 0] and preds.ok.all()


# --------------------------------------------------------------------------------------------------
# End to end on fixture datasets in the official layouts


@pytest.fixture
def one_thread():
    """Tiny models on 2 shared cores run far faster on one thread (no spinning between threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ucf101(tmp_path_factory):
    return make_ucf101(tmp_path_factory.mktemp("ucf101"), videos_per_class=5)  # fold 1: 6 test, 9 train videos


def run_main(argv, tmp_path, name="out"):
    """evaluate.main in this process; returns its JSON and its saved scores."""
    out, scores = str(tmp_path / f"{name}.json"), str(tmp_path / f"{name}_scores.pt")
    evaluate.main(argv + ["--workers", "0", "--device", "cpu", "--json", out, "--save-scores", scores])
    return json.load(open(out)), torch.load(scores)


def test_checkpoint_on_ucf101_multi_view_equals_the_mean_of_single_views(ucf101, tmp_path, capsys, one_thread):
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    common = ["--checkpoint", checkpoint, "--dataset", "ucf101", "--root", ucf101["root"], "--batch-size", "4"]
    result, saved = run_main(common + ["--clips", "2", "--crops", "3"], tmp_path)
    printed = capsys.readouterr().out
    assert "ucf101 split 1 test; 2 clips x 3 crops = 6 views" in printed
    assert "0 of 6 videos could not be read" in printed
    assert result["total"] == result["evaluated"] == 6 and result["unreadable"] == 0
    assert [row["class"] for row in result["per_class"]] == ucf101["classnames"]
    assert saved["paths"] == [path for path, _ in ucf101["test"][1]]
    assert saved["targets"].tolist() == [label for _, label in ucf101["test"][1]]
    # the same 6 views, scored one at a time by hand: the multi-view score is their mean
    model = prompts.load_actionclip(checkpoint)
    dataset = video_data.VideoDataset(video_data.load_split("ucf101", ucf101["root"], "test"), 4, "test",
                                      video_data.test_transform(32, 3), num_clips=2, num_crops=3)
    text = prompts.text_features(model, ucf101["classnames"])
    with torch.no_grad():
        for i in range(len(dataset)):
            views = dataset[i][0]                                     # (6, T, 3, S, S)
            per_view = [prompts.ensemble_scores(model.encode_video(v[None]), text, model.logit_scale.exp())
                        for v in views]
            assert torch.allclose(saved["scores"][i], torch.cat(per_view).mean(dim=0), atol=1e-5)
    expected = evaluate.topk_accuracy(saved["scores"], saved["targets"])
    assert result["top1"] == pytest.approx(expected["top1"]) and "top5" not in result  # 3 classes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_numbers_of_one(ucf101, tmp_path, one_thread):
    """9 videos, batch 4, 2 processes: shards of 5 and 4, short last batches; gathered back in order."""
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    args = ["--checkpoint", checkpoint, "--dataset", "ucf101", "--root", ucf101["root"], "--split", "train",
            "--batch-size", "4", "--clips", "2"]
    single, single_scores = run_main(args, tmp_path, "single")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    out, scores = str(tmp_path / "two.json"), str(tmp_path / "two_scores.pt")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}", os.path.join(REPO, "evaluate.py"), *args, "--workers", "0",
                          "--device", "cpu", "--json", out, "--save-scores", scores],
                         env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    double, double_scores = json.load(open(out)), torch.load(scores)
    assert single["total"] == double["total"] == 9
    assert "processes: 2" in double["header"][-1]
    for key in ("total", "unreadable", "evaluated", "top1", "top5_omitted", "mean_class_top1",
                "per_class"):
        assert double[key] == single[key], key
    assert double_scores["paths"] == single_scores["paths"]
    assert torch.equal(double_scores["targets"], single_scores["targets"])
    assert torch.allclose(double_scores["scores"], single_scores["scores"], atol=1e-6)


def test_official_release_checkpoint_evaluates(ucf101, tmp_path, capsys, one_thread):
    from test_prompts import TINY_2_HEADS, official_clip_state_dict, official_transf_fusion, save_official
    path = str(tmp_path / "official.pt")
    save_official(path, official_clip_state_dict(TINY_2_HEADS), official_transf_fusion(128))  # the release's layout
    result, saved = run_main(["--checkpoint", path, "--dataset", "ucf101", "--root", ucf101["root"]], tmp_path)
    assert "transf visual prompt, 8 frames" in capsys.readouterr().out  # official files do not record T: 8
    assert result["evaluated"] == 6 and saved["scores"].shape == (6, 3)
    assert torch.allclose(saved["scores"].sum(dim=1), torch.ones(6), atol=1e-5)


def test_unimodal_classifier_checkpoint_evaluates(ucf101, tmp_path, capsys, one_thread):
    model = prompts.VideoClassifier(prompts.ActionCLIP(tiny_clip(), "meanP", 4), num_classes=3)
    torch.save(prompts.checkpoint_payload(model), tmp_path / "unimodal.pt")
    result, saved = run_main(["--checkpoint", str(tmp_path / "unimodal.pt"), "--dataset", "ucf101",
                              "--root", ucf101["root"]], tmp_path)
    assert "text: classifier, no text" in capsys.readouterr().out
    assert result["evaluated"] == 6 and saved["scores"].shape == (6, 3)


def test_unreadable_videos_are_counted_and_strict_stops(tmp_path, capsys, one_thread):
    data = make_ucf101(tmp_path / "ucf101")                           # fold 1 tests 3 videos
    broken = data["test"][1][1][0]
    with open(broken, "wb") as f:
        f.write(b"not a video")
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    args = ["--checkpoint", checkpoint, "--dataset", "ucf101", "--root", data["root"]]
    result, saved = run_main(args, tmp_path)
    assert (result["total"], result["unreadable"], result["evaluated"]) == (3, 1, 2)
    assert saved["ok"].tolist() == [True, False, True]
    assert "1 of 3 videos could not be read" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"error: .*(not a video|cannot open).*--strict stops"):
        evaluate.main(args + ["--workers", "0", "--device", "cpu", "--strict"])
    for path, _ in data["test"][1]:                                   # nothing readable: the run fails
        with open(path, "wb") as f:
            f.write(b"not a video")
    with pytest.raises(SystemExit, match="none of the 3 videos could be read"):
        evaluate.main(args + ["--workers", "0", "--device", "cpu"])
    assert "3 of 3 videos could not be read" in capsys.readouterr().out   # the report is still written


def test_charades_reports_map(tmp_path, capsys, one_thread):
    data = make_charades(tmp_path / "charades")
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt", visual_prompt="meanP")
    result, saved = run_main(["--checkpoint", checkpoint, "--dataset", "charades", "--root", data["root"]], tmp_path)
    assert "top1" not in result and result["evaluated"] == 4
    assert saved["targets"].shape == (4, 5)                           # multi-hot; the last video has no action
    assert result["mAP"] == pytest.approx(mean_average_precision(saved["scores"], saved["targets"]))
    assert "mAP" in capsys.readouterr().out


def test_errors_name_what_is_missing(tmp_path, ucf101):
    with pytest.raises(SystemExit, match="no checkpoint at .*nowhere.pt: train one with train.py"):
        evaluate.main(["--checkpoint", str(tmp_path / "nowhere.pt"), "--dataset", "ucf101", "--root", ucf101["root"]])
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    with pytest.raises(SystemExit, match=r"ucf101 root folder not found: expected .*no_such_dir"):
        evaluate.main(["--checkpoint", checkpoint, "--dataset", "ucf101", "--root", str(tmp_path / "no_such_dir")])
    os.makedirs(tmp_path / "empty")
    with pytest.raises(SystemExit, match=r"expected .*empty/ucfTrainTestlist"):
        evaluate.main(["--checkpoint", checkpoint, "--dataset", "ucf101", "--root", str(tmp_path / "empty")])
    no_dir = tmp_path / "no_dir"
    for bad in (["--clips", "0"], ["--frames", "-3"], ["--batch-size", "0"], ["--workers", "-1"],
                ["--json", str(no_dir / "out.json")], ["--save-scores", str(no_dir / "s.pt")]):
        with pytest.raises(SystemExit):                               # argparse's usage error, before any work
            evaluate.parse_args(["--checkpoint", checkpoint, "--dataset", "ucf101", *bad])


def usage_error(main, argv, capsys):
    """The one-line argparse error that `main(argv)` exits with (status 2), before any work."""
    with pytest.raises(SystemExit) as exit:
        main(argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "Traceback" not in err
    return err.strip().splitlines()[-1]


def one_line_error(main, argv, match):
    """The error `main(argv)` ends with: one line, matching `match`."""
    with pytest.raises(SystemExit, match=match) as exit:
        main(argv)
    assert "\n" not in str(exit.value) and str(exit.value).startswith("error: ")


def test_unimodal_checkpoint_of_other_classes_is_refused(ucf101, tmp_path, one_thread):
    import train
    names = ucf101["classnames"]                                  # eye makeup, basketball, yo yo
    args = ["--dataset", "ucf101", "--root", ucf101["root"], "--workers", "0", "--device", "cpu"]
    train_args = train.parse_args(["--arch", "tiny", "--root", "x", "--unimodal", "--frames", "4"])
    for num_classes, classnames, expected in (
            (4, None, "unimodal classifier of 4 classes, the split has 3"),
            (3, [names[0], names[2], names[1]],
             "class 1 is 'yo yo'; the split's class 1 is 'basketball'")):
        # as train.py builds it
        model = train.build_video_model(train_args, num_classes, classnames)
        path = str(tmp_path / f"unimodal{num_classes}.pt")
        torch.save(prompts.checkpoint_payload(model), path)
        one_line_error(evaluate.main, ["--checkpoint", path, *args], f"--checkpoint .*{expected}")


def test_output_files_are_checked_before_the_run(ucf101, tmp_path, capsys):
    common = ["--checkpoint", str(tmp_path / "not_loaded.pt"), "--dataset", "ucf101",
              "--root", ucf101["root"]]
    err = usage_error(evaluate.main, common + ["--json", str(tmp_path)], capsys)
    assert f"--json {tmp_path} is a folder; give a file name" in err
    same = str(tmp_path / "out")
    err = usage_error(evaluate.main, common + ["--json", same, "--save-scores", same], capsys)
    assert f"--json and --save-scores both name {same}: the run would overwrite one with" in err
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    err = usage_error(evaluate.main, ["--checkpoint", checkpoint, *common[2:],
                                      "--save-scores", checkpoint], capsys)
    assert f"--checkpoint and --save-scores both name {checkpoint}: the run would overwrite it" \
        in err


def test_flags_are_checked_before_any_data_or_model(ucf101, tmp_path, capsys, monkeypatch):
    common = ["--checkpoint", str(tmp_path / "not_loaded.pt"), "--root", ucf101["root"]]
    err = usage_error(evaluate.main, common + ["--dataset", "list", "--list-file", "t.txt"], capsys)
    assert "--dataset list needs --list-file FILE ('path label' lines) and --classnames-file" in err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = usage_error(evaluate.main, common + ["--dataset", "ucf101", "--device", "cuda"], capsys)
    assert "--device cuda: torch sees no CUDA GPU here" in err and "use --device cpu" in err


def list_dataset(tmp_path, ucf101, classnames, broken=0):
    """--dataset list over the UCF101 fixture's fold-1 test videos, the first `broken` of them
    replaced by a file that is no video. Returns the evaluate.py flags that read it."""
    lines = [f"{path} {label}" for path, label in ucf101["test"][1]]
    for k in range(broken):
        bad = tmp_path / f"broken{k}.mp4"
        bad.write_bytes(b"not a video")
        lines[k] = f"{bad} {ucf101['test'][1][k][1]}"
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "names.txt").write_bytes(classnames)
    return ["--dataset", "list", "--root", str(tmp_path), "--list-file", "list.txt",
            "--classnames-file", "names.txt"]


def test_class_name_files_utf8_bom_non_utf8_folder(ucf101, tmp_path, one_thread):
    names = "\n".join(ucf101["classnames"]).encode()
    args = list_dataset(tmp_path, ucf101, b"\xef\xbb\xbf" + names)  # a byte-order mark (Windows)
    args = ["--checkpoint", save_checkpoint(tmp_path / "ckpt.pt"), *args]
    split = evaluate.load_dataset_split(evaluate.parse_args(args), "test")
    assert split.classnames == ucf101["classnames"]
    (tmp_path / "names.txt").write_bytes(names.replace(b"yo yo", b"yo-yo \xe9"))  # Latin-1
    one_line_error(evaluate.main, args, r"names.txt is not UTF-8 text .*save it as UTF-8")
    os.remove(tmp_path / "names.txt")
    os.makedirs(tmp_path / "names.txt")
    one_line_error(evaluate.main, args, r"names.txt is a folder; expected a text file")


def test_a_class_name_too_long_for_the_text_encoder(ucf101, tmp_path, one_thread):
    names = ucf101["classnames"][:2] + ["yo yo " * 40]
    args = list_dataset(tmp_path, ucf101, "\n".join(names).encode())
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    one_line_error(evaluate.main, ["--checkpoint", checkpoint, *args, "--workers", "0"],
                   r"the class name 'yo yo .* makes a prompt longer than the text encoder's 77")


def test_strict_in_a_worker_process_ends_with_one_line(ucf101, tmp_path, one_thread):
    args = list_dataset(tmp_path, ucf101, "\n".join(ucf101["classnames"]).encode(), broken=1)
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    one_line_error(evaluate.main, ["--checkpoint", checkpoint, *args, "--workers", "1",
                                   "--device", "cpu", "--strict"],
                   r"broken0.mp4: cannot open .*\(--strict stops")


def test_confusion_matrix_image_only_with_matplotlib(ucf101, tmp_path, capsys, one_thread):
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    png = tmp_path / "confusion.png"
    run_main(["--checkpoint", checkpoint, "--dataset", "ucf101", "--root", ucf101["root"], "--confusion", str(png)],
             tmp_path)
    try:
        import matplotlib  # noqa: F401
        assert png.stat().st_size > 0
    except ImportError:
        assert not png.exists() and "matplotlib is not installed" in capsys.readouterr().err
    matrix = evaluate.confusion_matrix(torch.eye(3)[[0, 1, 1]], torch.tensor([0, 1, 2]), 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]      # row: true class, column: predicted


# --------------------------------------------------------------------------------------------------
# What a checkpoint was trained with, an empty list, more frames than trained, top-5 of few classes


def trained_checkpoint(path, *train_flags):
    """save_checkpoint's model with the configuration train.py saves beside it (its `args`)."""
    import train
    checkpoint = torch.load(save_checkpoint(path), weights_only=True)
    checkpoint["args"] = vars(train.parse_args(["--root", "x", "--frames", "4", *train_flags]))
    torch.save(checkpoint, path)
    return str(path)


def test_the_texts_default_to_what_the_checkpoint_was_trained_with(ucf101, tmp_path, capsys,
                                                                  one_thread):
    from test_options import hand_scores
    checkpoint = trained_checkpoint(tmp_path / "bare.pt", "--no-text-prompts")
    model = prompts.load_actionclip(checkpoint)
    common = ["--checkpoint", checkpoint, "--dataset", "ucf101", "--root", ucf101["root"]]
    capsys.readouterr()
    result, saved = run_main(common, tmp_path, "default")
    printed = capsys.readouterr().out
    assert torch.allclose(saved["scores"], hand_scores(model, saved["paths"], 4,
                                                       prompts.LABEL_ONLY), atol=1e-5)
    assert "text: bare class names (as trained)" in printed and "as asked" not in printed
    assert result["header"][2].endswith("text: bare class names (as trained)")
    result, saved = run_main(common + ["--templates", "--frames", "2"], tmp_path, "asked")
    printed = capsys.readouterr().out.splitlines()
    assert torch.allclose(saved["scores"], hand_scores(model, saved["paths"], 2,
                                                       prompts.TEMPLATES), atol=1e-5)
    assert f"--templates: the 16-template ensemble, as asked; {checkpoint} was trained and " \
           f"validated with bare class names" in printed
    assert f"--frames 2: 2 frames per video, as asked; {checkpoint} was trained and validated " \
           f"with 4" in printed
    templated = trained_checkpoint(tmp_path / "templates.pt")      # trained on the templates
    result, saved = run_main(["--checkpoint", templated, *common[2:]], tmp_path, "templated")
    assert result["header"][2].endswith("16-template ensemble (mean of per-template softmax) "
                                        "(as trained)")


def test_zeroshot_texts_default_to_what_the_checkpoint_was_trained_with(ucf101, tmp_path, capsys,
                                                                       one_thread):
    import zeroshot
    checkpoint = trained_checkpoint(tmp_path / "bare.pt", "--no-text-prompts")
    video = ucf101["test"][1][0][0]
    common = ["--checkpoint", checkpoint, "--video", video, "--labels", *ucf101["classnames"],
              "--workers", "0", "--device", "cpu"]
    for extra, templates in (([], prompts.LABEL_ONLY), (["--templates"], prompts.TEMPLATES)):
        out = str(tmp_path / "zs.json")
        zeroshot.main(common + extra + ["--json", out])
        probabilities = json.load(open(out))["videos"][0]["probabilities"]
        model = prompts.load_actionclip(checkpoint)
        transform = video_data.test_transform(32)
        indices = video_data.sample_indices(video_data.count_frames(video), 4, "test")
        frames = transform(video_data.read_frames(video, indices))    # (T, 3, S, S), normalised
        with torch.no_grad():
            text = prompts.text_features(model, ucf101["classnames"], templates)
            expected = prompts.ensemble_scores(model.encode_video(frames[None]), text,
                                               model.logit_scale.exp())[0]
        assert list(probabilities.values()) == pytest.approx(expected.tolist(), abs=1e-5), extra
    printed = capsys.readouterr().out
    assert "(bare labels as trained)" in printed and "--templates: the 16-template ensemble, as " \
        "asked" in printed


def test_an_empty_list_file_gets_one_line(ucf101, tmp_path):
    import zeroshot
    args = list_dataset(tmp_path, ucf101, "\n".join(ucf101["classnames"]).encode())
    (tmp_path / "list.txt").write_text("")
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    expected = (f"error: --list-file {tmp_path / 'list.txt'} lists no videos: there is nothing to "
                f"evaluate; give a list with at least one video")
    for main in (evaluate.main, zeroshot.main):
        with pytest.raises(SystemExit) as exit:
            main(["--checkpoint", checkpoint, *args, "--workers", "0", "--device", "cpu"])
        assert exit.value.code == expected


def test_more_frames_than_the_checkpoint_s_positions_name_the_frames_flag(ucf101, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt", "transf", num_frames=4)
    with pytest.raises(SystemExit) as exit:
        evaluate.main(["--checkpoint", checkpoint, "--dataset", "ucf101", "--root", ucf101["root"],
                       "--frames", "8"])
    assert exit.value.code == (f"error: --frames 8: {checkpoint} has per-frame position tables "
                               f"for 4 frames only (its visual prompt, like every transf, "
                               f"transf_cls and joint, runs at most the frames it was trained "
                               f"with); pass --frames 4 or fewer, or leave --frames out")


def test_top5_only_where_it_means_something(ucf101, tmp_path, capsys, one_thread):
    import zeroshot
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    result, _ = run_main(["--checkpoint", checkpoint, "--dataset", "ucf101", "--root",
                          ucf101["root"]], tmp_path)
    printed = capsys.readouterr().out
    assert "top5" not in result and "top-5" not in printed.replace("no top-5", "")
    why = "with 3 classes every video's class is among its top 5"
    assert result["top5_omitted"] == why and f"; no top-5: {why})" in printed
    out = str(tmp_path / "zs.json")
    zeroshot.main(["--checkpoint", checkpoint, "--dataset", "ucf101", "--root", ucf101["root"],
                   "--workers", "0", "--device", "cpu", "--json", out])
    printed, report = capsys.readouterr().out, json.load(open(out))
    assert "top-5" not in printed.replace("no top-5", "") and f"no top-5: {why}" in printed
    assert all("top5" not in part for part in (report["mean"], report["std"], *report["runs"]))
    six = table([[2, 0, 1, 3, 4, 5], [4, 3, 0, 1, 2, 5], [0, 1, 2, 3, 4, 5]])  # 6 classes
    predictions = Predictions(six, torch.tensor([2, 0, 5]), torch.ones(3, dtype=torch.bool))
    summary = summarize(predictions, list("abcdef"))                 # top-5: 2 of 3 by hand
    assert summary["top5"] == pytest.approx(200 / 3) and "top5_omitted" not in summary
    assert "top-5  66.67" in evaluate.headline(summary)
