"""The demo's pieces: demo.png's layout, curves.png, the prefixed lines of two trainings at once.

(The whole demo, cut down, runs in tests/test_train.py: test_a_fast_demo_learns.)
"""

import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

import train

TILE = 32 * train.PICTURE_SCALE
MATPLOTLIB_BLUE, MATPLOTLIB_ORANGE = (31, 119, 180), (255, 127, 14)  # its first two line colours


def solid_frames(colours):
    """uint8 (T, 32, 32, 3), frame t filled with colours[t]."""
    return np.stack([np.full((32, 32, 3), colour, dtype=np.uint8) for colour in colours])


def video(first_colour, label, transf_top):
    """A pictured video whose 4 frames have distinct colours (frame order shows in the pixels)."""
    colours = [(first_colour, 40 * t, 200 - 40 * t) for t in range(4)]
    top3 = {"transf": [(transf_top, 0.9), ("b", 0.05), ("c", 0.05)],
            "meanP": [("b", 0.5), (label, 0.4), ("c", 0.1)]}
    return {"frames": solid_frames(colours), "label": label, "top3": top3}, colours


def block_origin(column, row):
    """Top-left of a video's block, from the layout write_demo_picture documents."""
    block_height = TILE + 5 * train.PICTURE_LINE + train.PICTURE_MARGIN
    x = train.PICTURE_MARGIN + column * (train.PICTURE_COLUMN + train.PICTURE_MARGIN)
    y = (train.PICTURE_MARGIN + train.PICTURE_LINE + row * (block_height + train.PICTURE_MARGIN)
         + train.PICTURE_MARGIN // 2)
    return x, y, block_height


def test_the_picture_shows_each_videos_frames_in_order_with_its_labels_under_them(tmp_path):
    a, a_colours = video(250, "red circle moving left", "red circle moving left")
    b, b_colours = video(150, "x", "y")
    c, c_colours = video(50, "unseen one", "unseen one")
    path = tmp_path / "demo.png"
    train.write_demo_picture(str(path), [("held-out", [a, b]), ("unseen", [c])])
    image = np.asarray(Image.open(path).convert("RGB"))
    _, _, block_height = block_origin(0, 0)
    height = train.PICTURE_MARGIN + train.PICTURE_LINE + 2 * (block_height + train.PICTURE_MARGIN)
    width = train.PICTURE_MARGIN + 2 * (train.PICTURE_COLUMN + train.PICTURE_MARGIN)
    assert image.shape == (height, width, 3)
    for column, row, colours in ((0, 0, a_colours), (0, 1, b_colours), (1, 0, c_colours)):
        x, y, _ = block_origin(column, row)
        for t, colour in enumerate(colours):                          # frame t: the t-th tile
            left = x + t * (TILE + train.PICTURE_GAP)
            assert (image[y:y + TILE, left:left + TILE] == colour).all(), (column, row, t)
            gap = image[y:y + TILE, left + TILE:left + TILE + train.PICTURE_GAP]
            assert (gap == train.PICTURE_BACKGROUND).all()
        text = image[y + TILE:y + block_height - train.PICTURE_MARGIN, x:x + train.PICTURE_COLUMN]
        assert (text != train.PICTURE_BACKGROUND).any(axis=-1).mean() > 0.02  # labels written
        inked = {tuple(p) for p in text.reshape(-1, 3)}
        assert train.PICTURE_RIGHT in inked and train.PICTURE_WRONG in inked  # true: green
    x, y, _ = block_origin(1, 1)                                      # no 2nd unseen video: blank
    assert (image[y:y + block_height, x:x + train.PICTURE_COLUMN] == train.PICTURE_BACKGROUND).all()


def test_a_prediction_is_green_only_where_it_is_the_true_class(tmp_path):
    wrong, _ = video(250, "red circle moving left", "red circle moving right")
    wrong["top3"]["meanP"] = [("b", 0.5), ("c", 0.4), ("d", 0.1)]      # the true class in no top-3
    train.write_demo_picture(str(tmp_path / "demo.png"), [("held-out", [wrong])])
    image = np.asarray(Image.open(tmp_path / "demo.png").convert("RGB"))
    x, y, block_height = block_origin(0, 0)
    text = image[y + TILE:y + block_height, x:x + train.PICTURE_COLUMN]
    inked = {tuple(p) for p in text.reshape(-1, 3)}
    assert train.PICTURE_WRONG in inked and train.PICTURE_RIGHT not in inked


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
