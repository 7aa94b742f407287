"""What a new user's data does to video_data, train.py, evaluate.py and zeroshot.py (issue #23,
round 2): nothing silently wrong.

- prepare: videos that share a stem ('clip.avi', 'clip.mp4') get distinct prepared forms, read
  back as their own; a place inside another video's frame folder is refused before any work;
- symbolic links to split and class folders are followed (a loop ends), and a class left without
  videos is named in a warning;
- list files: paths with spaces; a video listed twice counts once (warned), with two labels it is
  an error naming both lines; --shots above a class's videos is said, once per class;
- a file name holding a newline stays on one line in every report;
- --sample-by time: segments of equal duration on a variable frame rate file written here with
  PyAV, the frame times checked against a plain sequential decode;
- test views of a 2000x20 frame are cut out before scaling: no frame-sized intermediate.
"""

import itertools
import json
import logging
import os
import shutil
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

import clip_model
import dataset_fixtures
import evaluate
import prompts
import train
import video_data
import zeroshot
from test_evaluate import TINY, tiny_clip
from test_video_data import frame_number, index_frame


def flat_video(path, value, frames=8, size=32):
    """A video of `frames` grey frames of brightness `value` (codec from the extension)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return video_data.write_video(str(path), np.full((frames, size, size, 3), value, np.uint8))


def brightness(path):
    return float(video_data.read_frames(path, [0]).float().mean())


def pairs(split):
    return [(r.path, r.label) for r in split.records]


# -------------------------------------------------------------------- prepare: one stem, two videos


@pytest.mark.parametrize("form", ["frames", "video"])
def test_prepare_keeps_videos_that_share_a_stem_apart(tmp_path, capsys, form):
    root, out = tmp_path / "data", tmp_path / "prepared"
    flat_video(root / "clips" / "clip.avi", 40)
    flat_video(root / "clips" / "clip.mp4", 200)
    flat_video(root / "clips" / "other.mp4", 120)
    (root / "train.txt").write_text("clips/clip.avi 0\nclips/clip.mp4 1\nclips/other.mp4 1\n")
    (root / "names.txt").write_text("dark\nbright\n")
    lists = ["--list-file", "train.txt", "--classnames-file", "names.txt"]
    argv = ["prepare", "--dataset", "list", "--root", str(root), "--out", str(out), "--form", form,
            "--workers", "1", *lists]
    assert video_data.main(argv) == 0
    assert "prepared 3 videos" in capsys.readouterr().out
    split = video_data.load_split("list", str(root), "train", prepared=str(out),
                                  list_file="train.txt", classnames_file="names.txt")
    paths = [r.path for r in split.records]
    assert len(set(paths)) == 3 and all(p.startswith(str(out) + os.sep) for p in paths)
    for record, value in zip(split.records, (40, 200, 120)):      # each reads its own source
        assert abs(brightness(record.path) - value) < 4
    assert video_data.main(argv) == 0                                # a rerun finds all three done
    assert "prepared 0 videos" in capsys.readouterr().out


def test_prepare_refuses_a_copy_inside_another_videos_frame_folder(tmp_path, capsys):
    root, out = tmp_path / "data", tmp_path / "prepared"
    flat_video(root / "a.mp4", 40)
    flat_video(root / "a" / "b.mp4", 200)          # its frame folder would be inside a.mp4's
    (root / "train.txt").write_text("a.mp4 0\na/b.mp4 0\n")
    (root / "names.txt").write_text("one\n")
    argv = ["prepare", "--dataset", "list", "--root", str(root), "--out", str(out), "--workers",
            "1", "--list-file", "train.txt", "--classnames-file", "names.txt"]
    with pytest.raises(SystemExit, match=r"^error: prepare: .*b\.mp4 would be prepared inside the "
                                         r"frame folder of .*a\.mp4; rename"):
        video_data.main(argv)
    assert not os.path.exists(out / "a")                             # refused before any work
    assert video_data.main(argv + ["--form", "video"]) == 0          # files, not folders: fine
    assert "prepared 2 videos" in capsys.readouterr().out


# -------------------------------------------------------------------- symbolic links, empty classes


def test_linked_split_and_class_folders_are_followed_and_a_loop_ends(tmp_path, caplog):
    data = dataset_fixtures.make_kinetics(tmp_path / "k4", missing=0)
    root, disk = data["root"], tmp_path / "disk2"
    disk.mkdir()
    shutil.move(os.path.join(root, "val"), disk / "val")           # a split on another disk
    os.symlink(disk / "val", os.path.join(root, "val"))
    shutil.move(os.path.join(root, "train", "zumba"), disk / "zumba")  # one class folder too
    os.symlink(disk / "zumba", os.path.join(root, "train", "zumba"))
    os.symlink(root, os.path.join(root, "train", "loop"))          # a link to a folder above
    with caplog.at_level(logging.WARNING, logger="video_data"):
        for split in ("train", "val", "test"):
            got = video_data.load_split("kinetics400", root, split)
            assert pairs(got) == data[split] and got.missing == 0
    assert not caplog.records
    ucf = dataset_fixtures.make_ucf101(tmp_path / "ucf")           # listed paths: links work too
    folder = os.path.join(ucf["root"], "UCF-101", "YoYo")
    shutil.move(folder, disk / "YoYo")
    os.symlink(disk / "YoYo", folder)
    assert pairs(video_data.load_split("ucf101", ucf["root"], "train")) == ucf["train"][1]


def test_a_class_without_videos_is_named(tmp_path, caplog):
    data = dataset_fixtures.make_kinetics(tmp_path / "k4", missing=0)
    shutil.rmtree(os.path.join(data["root"], "train", "playing guitar"))
    with caplog.at_level(logging.WARNING, logger="video_data"):
        split = video_data.load_split("kinetics400", data["root"], "train")
    assert len(split.records) == 4
    warned = [r.getMessage() for r in caplog.records if "have no videos" in r.getMessage()]
    assert warned == ["kinetics400 train: 1 of 3 classes have no videos ('playing guitar'): check "
                      "that their videos are there (a link that cannot be followed? a copy not "
                      "finished?)"]


# --------------------------------------------------------------------------------------- list files


def test_list_paths_may_hold_spaces(tmp_path, caplog):
    root = tmp_path
    flat_video(root / "my clips" / "take one.mp4", 40)
    os.makedirs(root / "jump 3")                                     # a frame folder, 2 frames
    flat_video(root / "src.mp4", 90, frames=2)
    video_data._write_frame_folder(str(root / "src.mp4"), str(root / "jump 3" / "f"), 256, 90)
    for name in os.listdir(root / "jump 3" / "f"):
        os.rename(root / "jump 3" / "f" / name, root / "jump 3" / name)
    os.rmdir(root / "jump 3" / "f")
    os.rename(flat_video(root / "take 2.mp4", 200), root / "take 2")  # a name ending in a number
    (root / "list.txt").write_text("my clips/take one.mp4 1\njump 3 2 0\ntake 2 1\n")
    (root / "names.txt").write_text("a\nb\n")
    split = video_data.load_split("list", str(root), list_file="list.txt",
                                  classnames_file="names.txt")
    assert [(r.path, r.label, r.num_frames) for r in split.records] == [
        (str(root / "my clips" / "take one.mp4"), 1, None), (str(root / "jump 3"), 0, 2),
        (str(root / "take 2"), 1, None)]
    assert video_data.VideoDataset(split, 2, "test", video_data.test_transform(32))[1][3]
    (root / "bad.txt").write_text("my clips/take one.mp4\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 1: expected .*\(the label a whole number, "
                                         r"the last field\), got 'my clips/take one.mp4'"):
        video_data.load_split("list", str(root), list_file="bad.txt", classnames_file="names.txt")


def test_a_video_listed_twice_counts_once_and_two_labels_are_an_error(tmp_path, caplog):
    for name in ("a.mp4", "b.mp4"):
        flat_video(tmp_path / name, 40)
    (tmp_path / "names.txt").write_text("one\ntwo\n")
    (tmp_path / "twice.txt").write_text("a.mp4 1\nb.mp4 0\n./a.mp4 1\na.mp4 1\n")
    with caplog.at_level(logging.WARNING, logger="video_data"):
        split = video_data.load_split("list", str(tmp_path), list_file="twice.txt",
                                      classnames_file="names.txt")
    assert pairs(split) == [(str(tmp_path / "a.mp4"), 1), (str(tmp_path / "b.mp4"), 0)]
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'twice.txt'}: 2 lines repeat a video listed before (e.g. line 3 repeats "
        f"line 1); each video is counted once"]
    (tmp_path / "labels.txt").write_text("a.mp4 1\nb.mp4 0\na.mp4 0\n")
    with pytest.raises(ValueError, match=r"labels.txt, lines 1 and 3: .*a.mp4 has label 1, then 0; "
                                         r"a video has one class: remove the wrong line"):
        video_data.load_split("list", str(tmp_path), list_file="labels.txt",
                              classnames_file="names.txt")


def test_shots_above_a_class_s_videos_is_said_once_per_class(tmp_path, capsys):
    root = tmp_path / "data"
    lines = []
    for label, count in enumerate((4, 1, 6)):
        for k in range(count):
            flat_video(root / f"c{label}" / f"{k}.mp4", 40 * label, frames=2)
            lines.append(f"c{label}/{k}.mp4 {label}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "val.txt").write_text("c0/0.mp4 0\n")
    (root / "classnames.txt").write_text("zero\none\ntwo\n")
    args = train.parse_args(["--dataset", "list", "--root", str(root), "--shots", "5"])
    train_split, _ = train.load_splits(args)
    assert sorted(r.label for r in train_split.records) == [0] * 4 + [1] + [2] * 5
    assert capsys.readouterr().err.splitlines() == [
        "--shots 5: class 'zero' has 4 training videos; it trains on those",
        "--shots 5: class 'one' has 1 training videos; it trains on those"]


# -------------------------------------------------------------------------- names holding a newline


def test_a_name_with_a_newline_stays_on_one_line_in_every_report(tmp_path, capsys, caplog):
    folder = tmp_path / "odd\nname"
    bad = folder / "broken\n.mp4"
    folder.mkdir()
    bad.write_bytes(b"not a video")
    good = flat_video(folder / "fine\tclip.mp4", 120, frames=4)
    error = pytest.raises(video_data.VideoReadError, video_data.read_frames, str(bad), [0]).value
    assert "\n" not in str(error) and repr(str(bad)) in str(error) and error.path == str(bad)
    with caplog.at_level(logging.WARNING, logger="video_data"):         # training's replacement
        dataset = video_data.VideoDataset([video_data.VideoRecord(str(bad), 0),
                                           video_data.VideoRecord(good, 0)], 2, "train",
                                          video_data.train_transform(32))
        dataset[0]
    assert [r.getMessage().count("\n") for r in caplog.records] == [0]
    weights = str(tmp_path / "clip.pt")
    torch.save(clip_model.CLIP(**TINY).state_dict(), weights)
    json_path = tmp_path / "ranks.json"
    zeroshot.main(["--video", str(bad), good, "--weights", weights, "--labels", "a", "b",
                   "--workers", "0", "--device", "cpu", "--frames", "2", "--json",
                   str(json_path)])
    out = capsys.readouterr().out.splitlines()
    assert repr(str(bad)) in out and repr(good) in out                # each name one line
    assert [v["path"] for v in json.loads(json_path.read_text())["videos"]] == [str(bad), good]
    with pytest.raises(SystemExit) as stop:                          # --strict, from a worker
        zeroshot.main(["--video", good, str(bad), "--weights", weights, "--labels", "a", "b",
                       "--workers", "1", "--device", "cpu", "--frames", "2", "--strict"])
    assert str(stop.value).startswith(f"error: {str(bad)!r}: cannot open (")
    assert "\n" not in str(stop.value)
    data = dataset_fixtures.make_kinetics(tmp_path / "k4", videos_per_class=1, missing=0)
    with open(os.path.join(data["root"], "train.csv"), "a", newline="") as f:
        f.write('zumba,"odd\nid",0,10,train\n')                        # a quoted id, a newline
    bad_copy = os.path.join(data["root"], "train", "zumba", "odd\nid_000000_000010.mp4")
    shutil.copy(bad, bad_copy)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="video_data"):
        assert video_data.main(["prepare", "--dataset", "kinetics400", "--root", data["root"],
                                "--out", str(tmp_path / "prepared\nhere"), "--workers", "1"]) == 0
    assert capsys.readouterr().out.count("\n") == 1                   # the one summary line
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and repr(bad_copy) in warned[0] and "\n" not in warned[0]


# ------------------------------------------------------------------------------ variable frame rate


def write_vfr(path, pts_ms):
    """An H.264 MP4 of index frames (frame i shows i) whose frame i starts at pts_ms[i] ms."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        stream.options = {"crf": "10"}
        for i, pts in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(index_frame(i), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return str(path)


# 30 frames in the first 87 ms (a burst), then 10 frames 200 ms apart: 1.95 s in all
VFR_PTS = [3 * i for i in range(30)] + [100 + 200 * k for k in range(10)]


@pytest.fixture
def vfr(tmp_path):
    return write_vfr(tmp_path / "vfr.mp4", VFR_PTS)


def shown_at(times, t):
    """The frame on screen at time t: the last one that started at or before it."""
    return max(i for i, start in enumerate(times) if start <= t)


def test_frame_times_are_the_decoded_frames_times(vfr):
    with av.open(vfr) as container:                                   # a plain sequential decode
        decoded = [(frame.time, frame_number(torch.from_numpy(frame.to_ndarray(format="rgb24"))))
                   for frame in container.decode(video=0)]
    assert [number for _, number in decoded] == list(range(len(VFR_PTS)))
    assert video_data.frame_times(vfr) == pytest.approx([time for time, _ in decoded])
    assert video_data.count_frames(vfr) == len(VFR_PTS)


def test_time_sampling_takes_the_frames_shown_at_equal_times(vfr):
    times, T = [t / 1000 for t in VFR_PTS], 8
    end = times[-1] + (times[-1] - times[0]) / (len(times) - 1)       # the mean frame's length on
    centres = [shown_at(times, (s + 0.5) / T * end) for s in range(T)]
    assert centres == [30, 31, 32, 33, 34, 36, 37, 38]
    for sample_by, expected in (("frame", [2, 7, 12, 17, 22, 27, 32, 37]), ("time", centres)):
        reader = video_data.ClipReader(T, "test", sample_by=sample_by)
        frames = reader(video_data.VideoRecord(vfr, 0))
        assert [frame_number(f) for f in frames] == expected
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):                                               # train: one per time segment
        picked = video_data.sample_indices(len(times), T, "train", generator=generator,
                                           times=video_data.frame_times(vfr))
        assert all(shown_at(times, s / T * end) <= i <= shown_at(times, (s + 1) / T * end)
                   for s, i in enumerate(picked))


def test_time_sampling_at_a_constant_frame_rate_takes_the_frame_sampling_s_frames(tmp_path):
    path = video_data.write_video(str(tmp_path / "cfr.mp4"), [index_frame(i) for i in range(90)],
                                  fps=Fraction(30000, 1001), bframes=3)
    times = video_data.frame_times(path)
    assert len(times) == 90 and times[1] == pytest.approx(1001 / 30000)
    for T in (3, 7, 8, 16):
        for clips in (1, 2, 3):
            assert video_data.sample_indices(90, T, "test", clips, times=times) == \
                video_data.sample_indices(90, T, "test", clips)
    for n, step, T in itertools.product(range(16, 300), (0.04, 0.1), (4, 8)):  # 25 and 10 fps
        times = [i * step for i in range(n)]    # a start on a sampled point can round below it
        assert video_data.sample_indices(n, T, "test", times=times) == \
            video_data.sample_indices(n, T, "test"), (n, step, T)


def test_sample_by_time_is_one_flag_in_train_evaluate_and_zeroshot(vfr, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(vfr, root / "vfr.mp4")
    for name in ("train.txt", "val.txt"):
        (root / name).write_text("vfr.mp4 0\n")
    (root / "classnames.txt").write_text("bursting\n")
    times, T = [t / 1000 for t in VFR_PTS], 8
    end = times[-1] + (times[-1] - times[0]) / (len(times) - 1)
    centres = [shown_at(times, (s + 0.5) / T * end) for s in range(T)]
    frames = video_data.read_frames(str(root / "vfr.mp4"), centres)
    args = train.parse_args(["--dataset", "list", "--root", str(root), "--frames", "8",
                             "--sample-by", "time"])
    items, _, val = train.build_data(args, train.Dist(), *train.load_splits(args), 32)
    expected = video_data.test_transform(32, on_device=True)(frames)
    assert torch.equal(val[0][0][0], expected)                        # validation: the centres
    for _ in range(5):                                                # training: one per segment
        picked = [frame_number(f) for f in items.videos.read(items.videos.records[0])]
        assert all(shown_at(times, s / T * end) <= i <= shown_at(times, (s + 1) / T * end)
                   for s, i in enumerate(picked))
    model = prompts.ActionCLIP(tiny_clip(), "meanP", T)               # 32 px
    data_flags = ["--dataset", "list", "--root", str(root), "--list-file", "val.txt",
                  "--classnames-file", "classnames.txt", "--sample-by", "time"]
    for flags in (evaluate.parse_args(["--checkpoint", "x.pt", *data_flags]),
                  zeroshot.parse_args(["--video", vfr, "--labels", "a", "--sample-by", "time"])):
        split = video_data.DatasetSplit([video_data.VideoRecord(vfr, 0)], ["bursting"])
        assert torch.equal(evaluate.eval_dataset(split, model, flags)[0][0][0], expected)


# ------------------------------------------------------------------------ test views of long frames


def test_a_long_frame_is_cut_into_views_before_it_is_scaled(monkeypatch):
    """2000x20 frames at size 32: scaled whole they would be 3700x37; each view is cut out first.
    The views equal those of scaling the whole frame, up to resampling at the crop's edges."""
    across = torch.linspace(0, 255, 2000).view(1, 2000, 1).expand(20, 2000, 1)
    down = torch.linspace(0, 255, 20).view(20, 1, 1).expand(20, 2000, 1)
    clip = torch.cat([across, down, 255 - across], -1).to(torch.uint8)
    clip = clip.expand(3, 20, 2000, 3).contiguous()                   # (T, h, w, 3)
    whole = TF.resize(clip.permute(0, 3, 1, 2), [37], antialias=True)  # the reference: (T, 3, h, w)
    assert whole.shape[-2:] == (37, 3700)
    references = {1: [TF.center_crop(whole, [32, 32])],
                  3: [TF.crop(whole, top, left, 32, 32)
                      for left, top in video_data._three_crop_boxes(3700, 37, 32)]}
    sizes = []
    for name in ("resize", "resized_crop"):                           # every scaled tensor's size
        def recorded(*args, _scale=getattr(TF, name), **kw):
            out = _scale(*args, **kw)
            sizes.append(out[0].numel())
            return out
        monkeypatch.setattr(TF, name, recorded)
    for crops, reference in references.items():
        views = video_data.test_transform(32, crops, on_device=True)(clip)
        views = views if crops == 3 else views[None]
        assert views.shape == (crops, 3, 3, 32, 32)
        assert (views.float() - torch.stack(reference).float()).abs().mean() < 2
    assert sizes and max(sizes) == 3 * 32 * 32                        # one frame of one view
