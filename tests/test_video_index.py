"""zeroshot.py --index / --search / --timeline and util/video_index.py, util/video_pictures.py.

- windows and their frames by hand; the index file read with numpy alone;
- a fixture folder (a corrupt file, a symlinked subfolder) indexed: every window's embedding equals
  an independent computation (a plain sequential PyAV decode, CLIP's image encoder, the mean over
  frames); the corrupt file is listed, not fatal;
- search: the hits are the windows that score highest directly with the model;
- a rerun after adding, changing and deleting videos equals a full index, and embeds only those;
- Ctrl-C keeps what is done; the 2-process torchrun (gloo) index equals the 1-process one;
- the contact sheet holds each hit's frames at their place; the timeline of a concatenated video
  finds its segments (a tiny model trained here), in the CSV and in the picture;
- every new flag's bad values: one line.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import clip_model
import prompts
import video_data
import zeroshot
from test_evaluate import TINY, free_port, one_line_error, one_thread, usage_error  # noqa: F401
from util import video_index, video_pictures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPS, T = 8, 4
WINDOW = ["--window", "4", "--stride", "2", "--frames", str(T)]


def clip(colour, shape, motion, seed, frames=16):
    return video_data.render_action(colour, shape, motion, np.random.default_rng(seed), frames, 32)


def write(path, frames):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return video_data.write_video(str(path), frames, fps=FPS, options=video_data.SYNTHETIC_X264)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """videos/: a.mp4 (2 s), long/long.mp4 (15 s), broken.mp4, notes.txt, and linked/ -> a folder
    outside with b.mp4 (2 s); clip.pt, a tiny CLIP."""
    base = tmp_path_factory.mktemp("index")
    videos = base / "videos"
    write(videos / "a.mp4", clip("red", "circle", "moving left", 0))
    write(videos / "long" / "long.mp4", np.concatenate(
        [clip(c, "square", "moving right", i, 40) for i, c in enumerate(("red", "blue", "green"))]))
    (videos / "broken.mp4").write_bytes(b"not a video at all")
    (videos / "notes.txt").write_text("not a video")
    write(base / "outside" / "b.mp4", clip("blue", "triangle", "growing", 1))
    os.symlink(base / "outside", videos / "linked")
    torch.manual_seed(0)
    torch.save(clip_model.CLIP(**TINY).state_dict(), base / "clip.pt")
    return {"base": base, "videos": str(videos), "weights": str(base / "clip.pt")}


def index_folder(folder, videos, out, *extra):
    zeroshot.main(["--index", videos, "--out", str(out), "--weights", folder["weights"],
                   "--device", "cpu", "--workers", "0", "--batch-size", "3", *WINDOW, *extra])
    return np.load(out)


def decode_all(path):
    """Every frame, by a plain sequential PyAV decode: the reference for read_frames."""
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def reference_embedding(weights, frames):
    """Plain CLIP on each frame (test transform), mean over frames, L2-normalised: (E,)."""
    model = clip_model.CLIP(**TINY)
    model.load_state_dict(torch.load(weights))
    video = video_data.test_transform(32)(torch.from_numpy(frames))  # (T, 3, S, S)
    with torch.no_grad():
        return F.normalize(F.normalize(model.encode_image(video), dim=-1).mean(0), dim=0)


def hand_windows(num_frames, window=4.0, stride=2.0):
    """(start_s, end_s, frame indices) by hand: windows every `stride` s, the last one ending with
    the video; in each, the centre frame of each of T equal segments."""
    duration = num_frames / FPS
    spans = [(0.0, duration)] if duration <= window else \
        [(s, s + window) for s in np.arange(0, duration - window + 1e-9, stride)]
    if spans[-1][1] < duration:
        spans.append((duration - window, duration))
    out = []
    for start, end in spans:
        a, b = round(start * FPS), round(end * FPS)
        out.append((a / FPS, b / FPS, [a + int((s + 0.5) * (b - a) / T) for s in range(T)]))
    return out


# --------------------------------------------------------------------------------------------------
# Windows, by hand


def test_windows_cover_a_video_and_a_short_one_is_one_window():
    assert video_index.window_spans(3.0, 10, 5) == [(0.0, 3.0)]
    assert video_index.window_spans(23.0, 10, 5) == [(0, 10), (5, 15), (10, 20), (13.0, 23.0)]
    assert video_index.window_spans(20.0, 10, 5) == [(0, 10), (5, 15), (10, 20)]
    sample = lambda n, t: video_data.sample_indices(n, t, "test")
    planned = video_index.plan_windows(120, FPS, 4, 2, T, sample)
    assert [(s, e, list(i)) for s, e, i in planned] == hand_windows(120)


# --------------------------------------------------------------------------------------------------
# Index a folder, search it


def test_index_a_folder_every_window_equals_the_model_and_search_ranks_by_it(
        folder, tmp_path, capsys, one_thread):
    out = tmp_path / "v.idx"
    index = index_folder(folder, folder["videos"], out, "--json", str(tmp_path / "i.json"))
    printed = capsys.readouterr().out
    videos = folder["videos"]
    expected_paths = [os.path.join(videos, p) for p in ("a.mp4", "linked/b.mp4", "long/long.mp4")]
    assert index["paths"].tolist() == expected_paths                  # the symlinked folder too
    assert index["unreadable"].tolist() == [os.path.join(videos, "broken.mp4")]
    assert "cannot open" in index["unreadable_reasons"][0]
    assert "1 of 4 videos could not be read" in printed and "broken.mp4: cannot open" in printed
    meta = json.loads(str(index["meta"]))
    assert (meta["frames"], meta["window"], meta["stride"], meta["embed_dim"]) == (T, 4, 2, 64)
    assert index["embeddings"].dtype == np.float16 and index["frame_indices"].dtype == np.int32

    rows = 0
    for f, path in enumerate(index["paths"].tolist()):
        frames = decode_all(path)
        windows = hand_windows(len(frames))
        mine = np.flatnonzero(index["window_file"] == f)
        assert len(mine) == len(windows), path
        for row, (start, end, indices) in zip(mine, windows):
            assert index["start_s"][row] == pytest.approx(start)
            assert index["end_s"][row] == pytest.approx(end)
            assert index["frame_indices"][row].tolist() == indices
            expected = reference_embedding(folder["weights"], frames[indices])
            got = torch.from_numpy(index["embeddings"][row].astype(np.float32))
            assert torch.allclose(got, expected, atol=2e-3), (path, row)
        rows += len(mine)
    assert rows == len(index["embeddings"]) == 2 + 7

    # search: the hits are the windows the model itself scores highest
    query = "a red square moving right"
    result = str(tmp_path / "s.json")
    zeroshot.main(["--search", query, "--index", str(out), "--weights", folder["weights"],
                   "--device", "cpu", "--top", "4", "--json", result])
    hits = json.load(open(result))["hits"]
    model = prompts.ActionCLIP(clip_model.load(folder["weights"]), "meanP", T).eval()
    text = prompts.text_features(model, [query])[:, 0]                # (K, E)
    text = F.normalize(text.mean(0), dim=0)
    direct = torch.from_numpy(index["embeddings"].astype(np.float32)) @ text   # (N,)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    for hit in hits:
        row = next(r for r in range(len(direct)) if index["start_s"][r] == hit["start_s"]
                   and index["paths"][index["window_file"][r]] == hit["path"])
        assert hit["score"] == pytest.approx(float(direct[row]), abs=1e-5)
        assert hit["frame_indices"] == index["frame_indices"][row].tolist()
    assert (direct > scores[-1] + 1e-5).sum() <= 3                    # nothing better left out
    printed = capsys.readouterr().out
    assert f"    1. {scores[0]:.4f}  {hits[0]['path']}" in printed


def test_a_rerun_embeds_only_new_and_changed_videos_and_equals_a_full_index(folder, tmp_path,
                                                                           one_thread):
    videos = tmp_path / "videos"
    shutil.copytree(folder["videos"], videos, symlinks=True)
    index_folder(folder, str(videos), tmp_path / "old.idx")
    write(videos / "new.mp4", clip("green", "circle", "shrinking", 5))   # added
    write(videos / "a.mp4", clip("yellow", "square", "growing", 6))     # changed
    os.remove(videos / "linked")                                         # gone
    summary = tmp_path / "summary.json"
    rerun = index_folder(folder, str(videos), tmp_path / "old.idx", "--json", str(summary))
    full = index_folder(folder, str(videos), tmp_path / "full.idx")
    done = json.load(open(summary))
    assert (done["embedded"], done["kept"], done["removed"]) == (2, 1, 1)
    for name in full.files:
        if name == "meta":
            assert json.loads(str(rerun[name])) == json.loads(str(full[name]))
        elif name == "embeddings":
            assert np.allclose(rerun[name].astype(np.float32), full[name].astype(np.float32),
                               atol=1e-3)
        else:
            assert np.array_equal(rerun[name], full[name]), name
    assert os.path.join(str(videos), "new.mp4") in rerun["paths"].tolist()


def test_ctrl_c_keeps_the_videos_done_and_the_rerun_finishes(tmp_path):
    paths = []
    for name in ("a", "b", "c"):
        paths.append(str(tmp_path / f"{name}.mp4"))
        open(paths[-1], "wb").write(name.encode())
    meta = {"format": video_index.FORMAT, "version": video_index.VERSION, "embed_dim": 2,
            "frames": 1, "size": 8, "window": 10.0, "stride": 5.0, "weights_sha256": "x"}
    embedded = []

    def embed(plans, progress=None, stop_after=None):
        for n, plan in enumerate(plans):
            if n == stop_after:
                raise KeyboardInterrupt
            embedded.append(plan.path)
            yield plan, video_index.Video(plan.size, plan.mtime_ns, plan.fps, plan.num_frames,
                                          np.ones((1, 2), np.float16) * n,
                                          np.zeros(1, np.float32), np.ones(1, np.float32),
                                          np.zeros((1, 1), np.int32)), ""
        if stop_after is not None:                          # Ctrl-C before the run could end
            raise KeyboardInterrupt

    out = str(tmp_path / "v.idx")
    probe = lambda path: (5, 5.0)
    sample = lambda n, t: [0]
    with pytest.raises(KeyboardInterrupt):                            # one process: into out
        video_index.build_index(out, paths, meta, probe, sample,
                                lambda plans, p: embed(plans, p, stop_after=2))
    assert np.load(out)["paths"].tolist() == paths[:2] and not os.path.exists(out + ".part-0")
    summary = video_index.build_index(out, paths, meta, probe, sample, embed)
    assert embedded == paths                                          # a and b were not redone
    assert (summary["embedded"], summary["kept"]) == (1, 2)
    assert np.load(out)["paths"].tolist() == paths

    os.remove(out)                                         # process 1 of 2 (b), stopped at once
    with pytest.raises(KeyboardInterrupt):
        video_index.build_index(out, paths, meta, probe, sample,
                                lambda plans, p: embed(plans, p, stop_after=1),
                                video_index.Shard(rank=1, world_size=2))
    assert np.load(out + ".part-1")["paths"].tolist() == [paths[1]]  # its part, for the next run
    embedded.clear()
    summary = video_index.build_index(out, paths, meta, probe, sample, embed)
    assert embedded == [paths[0], paths[2]] and summary["kept"] == 1
    assert np.load(out)["paths"].tolist() == paths and not os.path.exists(out + ".part-1")


def test_two_processes_index_what_one_process_indexes(folder, tmp_path, one_thread):
    one = index_folder(folder, folder["videos"], tmp_path / "one.idx")
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    two_path = str(tmp_path / "two.idx")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}", os.path.join(REPO, "zeroshot.py"),
                          "--index", folder["videos"], "--out", two_path,
                          "--weights", folder["weights"], "--device", "cpu", "--workers", "0",
                          "--batch-size", "3", *WINDOW],
                         env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count(f"{two_path}: 3 videos, 9 windows") == 1    # process 0 reports
    assert "index: 2/2 windows" in run.stderr     # its share: a.mp4 and b.mp4 (process 1: long)
    two = np.load(two_path)
    for name in one.files:
        if name == "embeddings":
            assert np.allclose(two[name].astype(np.float32), one[name].astype(np.float32),
                               atol=1e-3)
        elif name != "meta":
            assert np.array_equal(two[name], one[name]), name
    assert not [f for f in os.listdir(tmp_path) if ".part-" in f]     # parts merged and removed


# --------------------------------------------------------------------------------------------------
# Pictures


def test_the_contact_sheet_shows_each_hit_s_frames_in_its_row(folder, tmp_path, one_thread):
    out = tmp_path / "v.idx"
    index_folder(folder, folder["videos"], out)
    picture, result = str(tmp_path / "hits.png"), str(tmp_path / "hits.json")
    zeroshot.main(["--search", "a blue triangle", "--index", str(out), "--weights",
                   folder["weights"], "--device", "cpu", "--top", "3", "--picture", picture,
                   "--json", result])
    sheet = np.asarray(Image.open(picture).convert("RGB")).astype(int)
    hits = json.load(open(result))["hits"]
    T_ = video_pictures.THUMB
    assert sheet.shape[0] == video_pictures.GAP + 3 * (T_ + video_pictures.GAP)
    for r, hit in enumerate(hits):
        frames = decode_all(hit["path"])
        shown = video_pictures.shown_indices(hit["frame_indices"])
        assert len(shown) == min(len(hit["frame_indices"]), video_pictures.FRAMES_SHOWN)
        y = video_pictures.GAP + r * (T_ + video_pictures.GAP)
        x = video_pictures.CAPTION
        for i in shown:
            thumb = Image.fromarray(frames[i]).resize((T_, T_), Image.BILINEAR)  # 32 x 32: square
            assert np.abs(sheet[y:y + T_, x:x + T_] - np.asarray(thumb).astype(int)).max() <= 1
            x += T_ + video_pictures.GAP
        caption = sheet[y:y + 40, :video_pictures.CAPTION]
        assert (caption < 128).any()                                  # its text is drawn


def test_timeline_of_a_concatenated_video_finds_its_segments(tmp_path, one_thread):
    from test_zeroshot import CLASSES, train_two_classes
    root = str(tmp_path / "synthetic")
    video_data.make_synthetic_dataset(root, CLASSES, 6, num_frames=8, split="train")
    model = train_two_classes(root)
    checkpoint = str(tmp_path / "two.pt")
    torch.save(prompts.checkpoint_payload(model), checkpoint)
    segments = [0, 1, 1, 0, 1]                                       # class of each 2 s clip
    long = str(tmp_path / "long.mp4")
    write(long, np.concatenate([clip(*CLASSES[c], seed=10 + i) for i, c in enumerate(segments)]))
    labels = [video_data.synthetic_classname(*c) for c in CLASSES]
    timeline = str(tmp_path / "long.csv")
    zeroshot.main(["--checkpoint", checkpoint, "--video", long, "--labels", *labels,
                   "--timeline", timeline, "--window", "2", "--stride", "1", "--frames", "4",
                   "--device", "cpu", "--workers", "0"])
    rows = list(csv.DictReader(open(timeline)))
    assert [float(r["start_s"]) for r in rows] == [float(s) for s in range(9)]
    first = lambda r: segments[int(float(r["start_s"])) // 2]        # class at the window's start
    last = lambda r: segments[(int(float(r["end_s"])) - 1) // 2]     # and in its last second
    inside = [(r, first(r)) for r in rows if first(r) == last(r)]
    assert len(inside) >= 6                                          # 5 aligned, 1 within 1, 1
    for row, c in inside:
        assert row["label_1"] == labels[c], row
        assert float(row["p_1"]) >= float(row["p_2"])
    picture = np.asarray(Image.open(os.path.splitext(timeline)[0] + ".png").convert("RGB"))
    for row, c in inside:                                           # the darkest cell: its label
        x = video_pictures.LABEL_WIDTH + round(
            (float(row["start_s"]) + 0.5) / 10 * video_pictures.PLOT_WIDTH)
        middle = [k * video_pictures.ROW + video_pictures.ROW // 2 for k in range(len(labels))]
        darkness = [255 * 3 - int(picture[y, x].sum()) for y in middle]
        assert int(np.argmax(darkness)) == c, (row, darkness)


# --------------------------------------------------------------------------------------------------
# Bad input: one line each


def test_every_new_flag_s_bad_values_get_one_line(folder, tmp_path, capsys, one_thread):
    videos, weights = folder["videos"], folder["weights"]
    a = os.path.join(videos, "a.mp4")
    out = str(tmp_path / "v.idx")
    usage = {
        ("--index", videos): "--index DIR needs --out NAME.idx",
        ("--search", "x"): "--search needs --index NAME.idx",
        ("--index", videos, "--out", out, "--window", "0"):
            "argument --window: expected a number > 0",
        ("--index", videos, "--out", out, "--stride", "nan"):
            "argument --stride: expected a finite",
        ("--index", videos, "--out", out, "--window", "2", "--stride", "3"):
            "--stride 3 is longer than --window 2",
        ("--index", videos, "--out", str(tmp_path)): "is a folder; give a file name",
        ("--index", videos, "--out", out, "--labels", "a", "b"):
            "--labels has no effect with --index",
        ("--search", "x", "--index", out, "--window", "3"): "--window has no effect with --search",
        ("--search", "x", "--index", out, "--picture", "p.gif"): "give a .png (or .jpg) file name",
        ("--search", "x", "--index", out, "--top", "0"): "argument --top: expected a whole number",
        ("--video", a, a, "--labels", "a", "b", "--timeline", "t.csv"):
            "--timeline needs --video with one video file",
        ("--video", a, "--labels", "a", "b", "--timeline", "t.png"): "give the CSV file's name",
        ("--video", a, "--labels", "a", "b", "--stride", "3"):
            "--stride has no effect with --video",
        ("--dataset", "ucf101", "--window", "3"): "--window has no effect with --protocol splits",
        ("--video", a, "--labels", "a", "b", "--picture", "p.png"):
            "--picture has no effect with --video",
    }
    for argv, expected in usage.items():
        assert expected in usage_error(zeroshot.main, list(argv), capsys), argv
    model = ["--weights", weights, "--device", "cpu"]
    empty = tmp_path / "empty"
    empty.mkdir()
    not_ours = tmp_path / "mine.idx"
    not_ours.write_text("my notes")
    one_line_error(zeroshot.main, ["--index", str(tmp_path / "nowhere"), "--out", out, *model],
                   "nowhere: no such folder")
    one_line_error(zeroshot.main, ["--index", str(empty), "--out", out, *model],
                   r"no video files \(.avi, .mp4")
    one_line_error(zeroshot.main, ["--index", videos, "--out", str(not_ours), *model],
                   "mine.idx is not a video index written by zeroshot.py --index .*another --out")
    assert not_ours.read_text() == "my notes"
    one_line_error(zeroshot.main, ["--search", "x", "--index", out, *model],
                   "no index file at .*v.idx: make one with --index DIR")
    one_line_error(zeroshot.main, ["--search", "x", "--index", videos, *model],
                   "is a folder: --search reads an index file")
    index_folder(folder, videos, out)
    one_line_error(zeroshot.main, ["--search", "  ", "--index", out, *model], "the text is empty")
    other = str(tmp_path / "other.pt")
    torch.manual_seed(1)
    torch.save(clip_model.CLIP(**TINY).state_dict(), other)
    one_line_error(zeroshot.main, ["--search", "x", "--index", out, "--weights", other,
                                   "--device", "cpu"],
                   f"was made with plain CLIP {weights}.*search it with --weights {weights}")
    one_line_error(zeroshot.main, ["--index", videos, "--out", out, "--weights", other,
                                   "--device", "cpu", "--workers", "0", *WINDOW],
                   "v.idx was made with .*weights_sha256 [0-9a-f]{12} then, [0-9a-f]{12} now")
    one_line_error(zeroshot.main, ["--index", videos, "--out", out, *model, "--workers", "0",
                                   "--window", "4", "--stride", "1", "--frames", str(T)],
                   "stride 2.0 then, 1.0 now")


def test_search_orders_near_ties_exactly():
    """fp16 scores tie where fp32 ones differ: the top k is still the exact (fp64) top k."""
    g = torch.Generator().manual_seed(0)
    table = F.normalize(torch.randn(20000, 32, generator=g), dim=1).half()
    table[100:140] = table[7]                                        # 40 copies of row 7 ...
    table[100:140, 0] += torch.arange(1, 41).half() * 1e-3           # ... each a little apart
    embeddings = table.numpy()
    for query in (table[7].float(), F.normalize(torch.randn(32, generator=g), dim=0)):
        exact = embeddings.astype(np.float64) @ query.double().numpy()
        for top in (1, 10, 60):
            scores, rows = video_index.search(embeddings, query, top)
            assert rows.tolist() == np.argsort(-exact, kind="stable")[:top].tolist()
            assert np.allclose(scores, exact[rows], atol=1e-6)
