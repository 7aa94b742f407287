"""Tiny copies of each dataset's official layout, for the tests of video_data, evaluate and zeroshot.

Each builder writes real (32x32, 16-frame) videos through video_data.write_video into the directory
tree and annotation files the dataset itself ships, and returns what a test needs to check a parser:

    expected = make_ucf101(tmp_path / "ucf101")
    split = video_data.load_split("ucf101", expected["root"], "train", fold=1)
    assert [(r.path, r.label) for r in split.records] == expected["train"][1]

Each class gets its own colour x shape x motion (video_data's synthetic actions), so a model can tell
the classes apart. Every builder returns a dict with "root", "classnames" (the human-readable names
load_split must give) and, per split, lists of (path, label) in annotation-file order.
"""

import csv
import os

import numpy as np

import video_data

FRAMES, SIZE = 16, 32


def tiny_video(path, label, seed):
    """Write a FRAMES x SIZE x SIZE synthetic action video for class `label` to `path`."""
    colour = video_data.COLOURS[label % len(video_data.COLOURS)]
    shape = video_data.SHAPES[(label // len(video_data.COLOURS)) % len(video_data.SHAPES)]
    motion = video_data.MOTIONS[label % len(video_data.MOTIONS)]
    frames = video_data.render_action(colour, shape, motion, np.random.default_rng(seed), FRAMES, SIZE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return video_data.write_video(path, frames, options={"threads": "1"})


def _write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(line + "\n" for line in lines)


def make_ucf101(root, classes=("ApplyEyeMakeup", "Basketball", "YoYo"), videos_per_class=3):
    """UCF-101/<Class>/v_<Class>_gXX_c01.avi (MPEG-4 in AVI, as the real copies) + ucfTrainTestlist/.
    Video k of a class is in group k+1; fold f tests videos with k % 3 == f - 1 (UCF101's splits are
    by group too). Returns root, classnames, train/test: {fold: [(path, label)]}."""
    root = str(root)
    out = {"root": root, "classnames": [video_data.camel_to_words(c) for c in classes],
           "train": {1: [], 2: [], 3: []}, "test": {1: [], 2: [], 3: []}}
    train_lines, test_lines = {1: [], 2: [], 3: []}, {1: [], 2: [], 3: []}
    for label, name in enumerate(classes):
        for k in range(videos_per_class):
            rel = f"{name}/v_{name}_g{k + 1:02d}_c01.avi"
            path = tiny_video(os.path.join(root, "UCF-101", rel), label, seed=label * 100 + k)
            for fold in (1, 2, 3):
                if k % 3 == fold - 1:
                    test_lines[fold].append(rel)
                    out["test"][fold].append((path, label))
                else:
                    train_lines[fold].append(f"{rel} {label + 1}")
                    out["train"][fold].append((path, label))
    lists = os.path.join(root, "ucfTrainTestlist")
    _write_lines(os.path.join(lists, "classInd.txt"), [f"{i + 1} {c}" for i, c in enumerate(classes)])
    for fold in (1, 2, 3):
        _write_lines(os.path.join(lists, f"trainlist0{fold}.txt"), train_lines[fold])
        _write_lines(os.path.join(lists, f"testlist0{fold}.txt"), test_lines[fold])
    return out


def make_hmdb51(root, classes=("sword_exercise", "kick_ball", "brush_hair", "sword", "kick"), videos_per_class=3):
    """<class>/<video>.avi + testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt. In fold f,
    video k is tagged 2 (test) when k % 3 == f - 1, 0 (unused) when k == 3, else 1 (train). The
    default classes include the pairs that the shared label CSV swaps. Returns root, classnames (sorted
    class order), train/test: {fold: [(path, label)]}."""
    root, ordered = str(root), sorted(classes)
    out = {"root": root, "classnames": [c.replace("_", " ") for c in ordered],
           "train": {1: [], 2: [], 3: []}, "test": {1: [], 2: [], 3: []}}
    for label, name in enumerate(ordered):
        videos = [f"{name}_clip_{k}_f_cm_np1_ri_med_{k}.avi" for k in range(videos_per_class)]
        paths = [tiny_video(os.path.join(root, name, v), label, seed=label * 100 + k) for k, v in enumerate(videos)]
        for fold in (1, 2, 3):
            tags = [0 if k == 3 else 2 if k % 3 == fold - 1 else 1 for k in range(videos_per_class)]
            _write_lines(os.path.join(root, "testTrainMulti_7030_splits", f"{name}_test_split{fold}.txt"),
                         [f"{v} {t} " for v, t in zip(videos, tags)])  # the real files end lines with a space
            for path, tag in zip(paths, tags):
                if tag:
                    out["train" if tag == 1 else "test"][fold].append((path, label))
    return out


def make_kinetics(root, classes=("abseiling", "playing guitar", "zumba"), videos_per_class=2, layout="per_class",
                  missing=1, ext=".mp4"):
    """Kinetics CSVs (train.csv, validate.csv, test.csv: label,youtube_id,time_start,time_end,split)
    and videos <id>_<start:06d>_<end:06d><ext> in <split>/<label>/ (layout="per_class") or videos/
    (layout="flat"). `missing` rows per split have no video. Returns root, classnames, missing
    (per split), train/val/test: [(path, label)] of the videos that exist."""
    root = str(root)
    out = {"root": root, "classnames": sorted(classes), "missing": {}}
    for split, csv_name in (("train", "train.csv"), ("val", "validate.csv"), ("test", "test.csv")):
        rows, out[split] = [], []
        for label, name in enumerate(sorted(classes)):
            for k in range(videos_per_class):
                yid = f"{split[:2]}{label}x{k}_Ab-Cd"  # YouTube ids hold '-' and '_'
                stem = f"{yid}_{10 * k:06d}_{10 * k + 10:06d}"
                folder = os.path.join(root, split, name) if layout == "per_class" else os.path.join(root, "videos")
                path = tiny_video(os.path.join(folder, stem + ext), label, seed=label * 100 + k)
                rows.append((name, yid, 10 * k, 10 * k + 10, split))
                out[split].append((path, label))
        for m in range(missing):
            rows.append((sorted(classes)[0], f"gone{m}", 0, 10, split))
        out["missing"][split] = missing
        with open(os.path.join(root, csv_name), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("label", "youtube_id", "time_start", "time_end", "split"))
            writer.writerows(rows)
    return out


_CHARADES_COLUMNS = ("id", "subject", "scene", "quality", "relevance", "verified", "script", "objects",
                     "descriptions", "actions", "length")
_CHARADES_CLASSES = ("Holding some clothes", "Putting clothes somewhere", "Taking a picture of something",
                     "Opening a door", "Sitting in a chair")


def make_charades(root, videos_per_split=4):
    """Charades_v1_classes.txt, Charades_v1_{train,test}.csv and Charades_v1_480/<id>.mp4. Video k
    has actions c00(k%5) and c00((k+2)%5), the last one none. Returns root, classnames, and per split
    [(path, sorted class ids)]."""
    root = str(root)
    out = {"root": root, "classnames": [c[0].lower() + c[1:] for c in _CHARADES_CLASSES]}
    _write_lines(os.path.join(root, "Charades_v1_classes.txt"), [f"c{i:03d} {c}" for i, c in enumerate(_CHARADES_CLASSES)])
    for split in ("train", "test"):
        rows, out[split] = [], []
        for k in range(videos_per_split):
            vid = f"{split[:2].upper()}{k:03d}"
            labels = [] if k == videos_per_split - 1 else sorted({k % 5, (k + 2) % 5})
            actions = ";".join(f"c{c:03d} {1.5 * c:.2f} {1.5 * c + 4:.2f}" for c in labels)
            path = tiny_video(os.path.join(root, "Charades_v1_480", vid + ".mp4"), k, seed=k)
            rows.append({"id": vid, "subject": "S", "scene": "Kitchen", "quality": "6", "relevance": "7",
                         "verified": "Yes", "script": "A person, holding a cup.", "objects": "cup;door",
                         "descriptions": "A person opens a door.", "actions": actions, "length": "30.2"})
            out[split].append((path, labels))
        with open(os.path.join(root, f"Charades_v1_{split}.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=_CHARADES_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return out
