"""The demo's pieces: demo.png's layout, curves.png, the prefixed lines of two trainings at once.

(The whole demo, cut down, runs in tests/test_train.py: test_a_fast_demo_learns.)
"""

import io
import json
import os
import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import train
import video_data

TILE = 32 * train.PICTURE_SCALE
MATPLOTLIB_BLUE, MATPLOTLIB_ORANGE = (31, 119, 180), (255, 127, 14)  # its first two line colours
BLOCK_HEIGHT = train.PICTURE_LINE + TILE + train.PICTURE_LINE + train.PICTURE_MARGIN


def solid_frames(colours):
    """uint8 (T, 32, 32, 3), frame t filled with colours[t]."""
    return np.stack([np.full((32, 32, 3), colour, dtype=np.uint8) for colour in colours])


def video(first_colour, label, transf_top):
    """A pictured video whose 4 frames have distinct colours (frame order shows in the pixels)."""
    colours = [(first_colour, 40 * t, 200 - 40 * t) for t in range(4)]
    top3 = {"transf": [(transf_top, 0.9), ("b", 0.05), ("c", 0.05)],
            "meanP": [("b", 0.5), (label, 0.4), ("c", 0.1)]}
    return {"frames": solid_frames(colours), "indices": [1, 5, 9, 13], "length": 16,
            "label": label, "top3": top3}, colours


def block_origin(group_sizes, group, row):
    """Top-left of a video's block (its 'true:' line), from the layout write_demo_picture
    documents: a margin, two legend lines, then per group a margin, its heading line, its blocks."""
    y = train.PICTURE_MARGIN + 2 * train.PICTURE_LINE
    y += sum(train.PICTURE_MARGIN + train.PICTURE_LINE + n * BLOCK_HEIGHT
             for n in group_sizes[:group])
    return train.PICTURE_MARGIN, y + train.PICTURE_MARGIN + train.PICTURE_LINE + row * BLOCK_HEIGHT


def tile_origin(x, y, t):
    """Top-left of frame t in the block at (x, y): under the 'true:' line, left to right."""
    return x + t * (TILE + train.PICTURE_GAP), y + train.PICTURE_LINE


def inked(region):
    """The colours of a region, as a set of (r, g, b)."""
    return {tuple(p) for p in region.reshape(-1, 3)}


def test_the_picture_shows_each_videos_frames_in_time_order_and_its_top3_beside_them(tmp_path):
    a, a_colours = video(250, "red circle moving left", "red circle moving left")
    b, b_colours = video(150, "x", "y")
    c, c_colours = video(50, "unseen one", "unseen one")
    path = tmp_path / "demo.png"
    train.write_demo_picture(str(path), [("held-out", [a, b]), ("unseen", [c])])
    image = np.asarray(Image.open(path).convert("RGB"))
    frames_width = 4 * TILE + 3 * train.PICTURE_GAP
    width = 2 * train.PICTURE_MARGIN + frames_width + 2 * (train.PICTURE_MARGIN
                                                           + train.PICTURE_TOP3)
    height = train.PICTURE_MARGIN + 2 * train.PICTURE_LINE + 2 * (train.PICTURE_MARGIN
                                                                  + train.PICTURE_LINE)
    assert image.shape == (height + 3 * BLOCK_HEIGHT, width, 3)      # one column: no empty half
    for group, row, colours in ((0, 0, a_colours), (0, 1, b_colours), (1, 0, c_colours)):
        x, y = block_origin([2, 1], group, row)
        assert (image[y:y + train.PICTURE_LINE, x:x + frames_width] == train.PICTURE_INK).any()
        for t, colour in enumerate(colours):                          # frame t: the t-th tile
            left, top = tile_origin(x, y, t)
            assert (image[top:top + TILE, left:left + TILE] == colour).all(), (group, row, t)
            number = image[top + TILE:top + TILE + train.PICTURE_LINE, left:left + TILE]
            assert (number != train.PICTURE_BACKGROUND).any(axis=-1).mean() > 0.05, t
            space = train.PICTURE_GAP if t < 3 else train.PICTURE_MARGIN  # the top-3s after it
            gap = image[top:top + TILE, left + TILE:left + TILE + space]
            arrow = (gap == train.PICTURE_INK).all(axis=-1)           # time: an arrow to the next
            assert arrow.any() == (t < 3), t
            if t < 3:                                                 # level, across the gap
                rows, columns = np.nonzero(arrow)
                assert abs(rows.mean() - TILE / 2) < 2 and np.ptp(columns) > train.PICTURE_GAP / 2
        top3 = image[y:y + BLOCK_HEIGHT - train.PICTURE_MARGIN, x + frames_width:]
        assert {train.PICTURE_RIGHT, train.PICTURE_WRONG} <= inked(top3)  # beside the frames
    legend = image[train.PICTURE_MARGIN + train.PICTURE_LINE:
                   train.PICTURE_MARGIN + 2 * train.PICTURE_LINE]
    for colour in (train.PICTURE_RIGHT, train.PICTURE_WRONG):         # a swatch of each: 10 x 10
        assert (legend == colour).all(axis=-1).sum() >= 100, colour


def test_a_prediction_is_green_only_where_it_is_the_true_class(tmp_path):
    wrong, _ = video(250, "red circle moving left", "red circle moving right")
    wrong["top3"]["meanP"] = [("b", 0.5), ("c", 0.4), ("d", 0.1)]      # the true class in no top-3
    train.write_demo_picture(str(tmp_path / "demo.png"), [("held-out", [wrong])])
    image = np.asarray(Image.open(tmp_path / "demo.png").convert("RGB"))
    x, y = block_origin([1], 0, 0)
    block = image[y:y + BLOCK_HEIGHT, x:]
    assert train.PICTURE_WRONG in inked(block) and train.PICTURE_RIGHT not in inked(block)


def write_metrics(folder, losses, top1s):
    folder.mkdir(parents=True)
    with open(folder / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"config": {}}) + "\n")
        for epoch, loss in enumerate(losses, 1):
            f.write(json.dumps({"step": epoch, "epoch": epoch, "loss": loss}) + "\n")
        for epoch, top1 in top1s:
            f.write(json.dumps({"step": epoch, "epoch": epoch, "val": {"top1": top1}}) + "\n")


def test_curves_are_drawn_from_both_runs_metrics_with_matplotlib(tmp_path, monkeypatch):
    for prompt in train.DEMO_PROMPTS:
        write_metrics(tmp_path / prompt, [3.0, 2.0, 1.5, 1.2], [(2, 40.0), (4, 70.0)])
    monkeypatch.setitem(sys.modules, "matplotlib", None)              # not installed: no image
    assert not train.demo_curves(str(tmp_path / "curves.png"), str(tmp_path))
    assert not (tmp_path / "curves.png").exists()
    monkeypatch.undo()
    assert train.demo_curves(str(tmp_path / "curves.png"), str(tmp_path))
    image = np.asarray(Image.open(tmp_path / "curves.png").convert("RGB"))
    assert image.shape[0] > 200 and image.shape[1] > 2 * image.shape[0]  # two panels side by side
    half = image.shape[1] // 2
    for panel in (image[:, :half], image[:, half:]):                  # loss | top-1: both prompts
        colours = {tuple(p) for p in panel.reshape(-1, 3)}
        assert {MATPLOTLIB_BLUE, MATPLOTLIB_ORANGE} <= colours


def test_two_trainings_log_lines_each_start_with_their_prompt():
    out = io.StringIO()
    stream = train.PrefixedLines(out, "transf | ")
    stream.write("epoch 1")                                           # a line in pieces: one prefix
    stream.write(" loss 2.0\nepoch 2 loss 1.0\n")
    stream.write("\nvalidate\n")
    assert out.getvalue() == ("transf | epoch 1 loss 2.0\ntransf | epoch 2 loss 1.0\ntransf | \n"
                              "transf | validate\n")
    assert not stream.isatty()                                        # progress lines come whole


def earlier_demo(folder):
    """A folder as an earlier `--demo` left it: the marker, videos, both runs' checkpoints."""
    for name in ("data/videos", "transf", "meanP"):
        (folder / name).mkdir(parents=True)
    for name in (train.DEMO_MARKER, "data/videos/0000.mp4", "transf/last.pt", "transf/best.pt",
                 "meanP/last.pt", "demo.png"):
        (folder / name).write_bytes(b"x")


def test_a_rerun_names_the_checkpoints_it_deletes_before_deleting_them(tmp_path, monkeypatch,
                                                                        capsys):
    earlier_demo(tmp_path)
    said_before = []                                                  # stdout when each rmtree ran
    real_rmtree = train.shutil.rmtree

    def rmtree(path, *args, **kwargs):
        said_before.append(capsys.readouterr().out)
        real_rmtree(path, *args, **kwargs)
    monkeypatch.setattr(train.shutil, "rmtree", rmtree)
    train.claim_demo_folder(str(tmp_path))
    assert len(said_before) == 3 and not any((tmp_path / n).exists() for n in ("data", "transf"))
    note = said_before[0]                                             # all said before the first
    assert note.count("\n") == 1 and "earlier demo" in note and "--out" in note
    for name in ("data/", "transf/last.pt", "transf/best.pt", "meanP/last.pt"):
        assert name in note
    train.claim_demo_folder(str(tmp_path))                            # nothing left to delete
    assert said_before[1:] == ["", ""] and "earlier demo" not in capsys.readouterr().out


def test_on_a_terminal_ctrl_c_during_the_warning_keeps_the_earlier_demo(tmp_path, monkeypatch,
                                                                         capsys):
    earlier_demo(tmp_path)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    waited = []

    def sleep(seconds):                                               # the user presses Ctrl-C
        waited.append(seconds)
        raise KeyboardInterrupt
    monkeypatch.setattr(train.time, "sleep", sleep)
    with pytest.raises(SystemExit) as stopped:
        train.claim_demo_folder(str(tmp_path))
    assert stopped.value.code == 130 and waited == [train.DEMO_DELETE_DELAY]
    assert (tmp_path / "transf" / "last.pt").exists() and (tmp_path / "data").exists()
    printed = capsys.readouterr()
    assert "transf/last.pt" in printed.out and "Ctrl-C" in printed.out
    assert printed.err.strip() == f"stopped: nothing deleted, {tmp_path} is as it was"


def first_video(root, split, name):
    """The path of the first video of class `name` in the split's list file ('path label')."""
    with open(os.path.join(root, f"{split}_classnames.txt")) as f:
        label = [line.strip() for line in f].index(name)
    with open(os.path.join(root, f"{split}.txt")) as f:
        path = next(p for p, c in map(str.split, f) if int(c) == label)
    return os.path.join(root, path)


def assert_pictured_frames_are_the_test_frames(image, root):
    """Every frame of every video in demo.png (uint8 (H, W, 3)) is, pixel for pixel, the centre of
    its segment [Sec. 4.1] as a plain decode of the whole file gives it, not augmented."""
    groups = [train.DEMO_PICTURED["val"], train.DEMO_PICTURED["unseen"]]
    T = train.DEMO_FRAMES
    by_chance = 1.0                       # how likely one random frame a segment would pass too
    for group, (split, names) in enumerate(zip(("val", "unseen"), groups)):
        for row, name in enumerate(names):
            with av.open(first_video(root, split, name)) as container:
                frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
            n = len(frames)
            centres = [int((s + 0.5) * n / T) for s in range(T)]      # 16 frames: 2, 8, 13
            x, y = block_origin([len(g) for g in groups], group, row)
            for t, index in enumerate(centres):
                segment = frames[t * n // T:(t + 1) * n // T]
                by_chance *= (segment == frames[index]).all(axis=(1, 2, 3)).mean()
                left, top = tile_origin(x, y, t)
                expected = frames[index].repeat(train.PICTURE_SCALE, 0).repeat(
                    train.PICTURE_SCALE, 1)
                assert (image[top:top + TILE, left:left + TILE] == expected).all(), (name, t)
    assert by_chance < 1e-3                                           # the frames tell


def test_demo_png_shows_the_frames_the_models_were_tested_on(tmp_path):
    """demo_picture reads the pictured videos itself: their test frames (segment centres, whole
    frames), as evaluation sampled them, not a training draw (random frames) of them."""
    root = str(tmp_path / "data")
    predictions = {prompt: {} for prompt in train.DEMO_PROMPTS}
    for split in ("val", "unseen"):
        classes = [tuple(name.split(" ", 2)) for name in train.DEMO_PICTURED[split]]
        video_data.make_synthetic_dataset(root, classes, 2, split=split)  # 2: the first is shown
        for prompt in train.DEMO_PROMPTS:
            scores = torch.rand(2 * len(classes), len(classes)).softmax(-1)
            targets = torch.arange(len(classes)).repeat_interleave(2)
            predictions[prompt][split] = evaluate.Predictions(scores, targets,
                                                              torch.ones(len(targets), dtype=bool))
    train.demo_picture(str(tmp_path / "demo.png"), root, predictions)
    image = np.asarray(Image.open(tmp_path / "demo.png").convert("RGB"))
    assert_pictured_frames_are_the_test_frames(image, root)


def test_left_right_counts_a_tie_with_the_mirror_class_as_a_miss():
    """A video scoring its class and the mirror class the same has not been told apart. Ties are
    real: where another class takes all the probability, both underflow to 0.0 (float32)."""
    classnames = ["red circle moving left", "red circle moving right", "red circle growing"]
    logits = torch.tensor([[0.0, 0.0, 200.0],       # moving left, sure it grows: 0.0 against 0.0
                           [4.0, 4.0, 0.0],         # moving right, left and right alike
                           [3.0, 1.0, 0.0],         # moving left, over its mirror: counts
                           [0.0, 0.0, 0.0]])        # moving right, an untrained model
    scores = logits.softmax(dim=-1)
    assert scores[0, 0] == scores[0, 1] == 0
    targets = torch.tensor([0, 1, 0, 1])
    predictions = evaluate.Predictions(scores, targets, torch.ones(4, dtype=torch.bool))
    moving = torch.ones(4, dtype=torch.bool)
    assert train.left_or_right(predictions, classnames, moving) == pytest.approx(25.0)


def test_curves_draw_the_top1_of_a_guess_among_the_seen_classes(tmp_path, monkeypatch):
    from matplotlib.figure import Figure                              # requirements-dev.txt
    for prompt in train.DEMO_PROMPTS:
        write_metrics(tmp_path / prompt, [3.0, 2.0, 1.5, 1.2], [(2, 40.0), (4, 70.0)])
    saved, savefig = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *args, **kwargs: (
        saved.append(self), savefig(self, *args, **kwargs))[1])
    assert train.demo_curves(str(tmp_path / "curves.png"), str(tmp_path))
    image = np.asarray(Image.open(tmp_path / "curves.png").convert("RGB"))
    top1_axes = saved[0].axes[1]                                      # where 2.8 % is, in pixels
    chance = 100 / len(train.demo_classes()[0])
    (left, y), (right, _) = top1_axes.transData.transform([(1, chance), (4, chance)])
    row = image.shape[0] - y                                          # pixel rows count down
    grey = (image == (127, 127, 127)).all(axis=-1)                    # matplotlib's tab:gray
    across = grey[:, int(left):int(right)].sum(axis=1)                # under the top-1 curves
    assert abs(int(across.argmax()) - row) <= 1 and across.max() > 0.4 * (right - left)
