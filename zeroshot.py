"""Zero-shot action recognition [Sec. 4.4, Fig. 3]: classes never trained on, named only in text.

    python zeroshot.py --dataset ucf101              # plain CLIP ViT-B/16, data/ucf101, 3 splits
    python zeroshot.py --dataset hmdb51 --root data/hmdb51 --checkpoint runs/k400/last.pt
    python zeroshot.py --dataset ucf101 --protocol half-classes
    python zeroshot.py --dataset kinetics600 --root data/k600 --checkpoint runs/k400/last.pt \\
        --k600-splits k600_novel_split1.csv k600_novel_split2.csv k600_novel_split3.csv
    python zeroshot.py --video a.mp4 b.mp4 --labels "playing guitar" "riding a bike" "juggling"
    python zeroshot.py --index my_videos/ --out my_videos.idx     # embeddings of every video
    python zeroshot.py --search "someone jumping on a trampoline" --index my_videos.idx --top 10
    python zeroshot.py --video long.mp4 --labels-file labels.txt --timeline long.csv

The number depends heavily on the protocol, so each run states its own. Protocols (--protocol):
  splits        UCF101 / HMDB51 (default there): the three official test splits, all 101 / 51
                classes as candidates, reported per split and as mean +- std over the splits
                (X-CLIP, ViFi-CLIP).
  half-classes  10 draws of half the classes; the videos of those classes (every video of the
                dataset's official train and test lists for UCF101/HMDB51, else those of --split),
                only the drawn classes as candidates; mean +- std over the draws (E2E, Text4Vis).
                Draw i picks the first C // 2 classes of numpy's permutation under
                np.random.seed(seed + i), as Text4Vis does.
  k600-novel    Kinetics-600 classes absent from Kinetics-400, in the three 160-class subsets of
                ER-ZSAR (Chen & Huang, 2021) that X-CLIP and Text4Vis use, one file each
                (--k600-splits: one class name per line, or an 'id,name' CSV as those repositories
                ship); the videos of those classes in --split (default test); mean +- std over the
                subsets.
  all-classes   any other dataset (default there): one split, all of its classes.
std is the population std (ddof=0; numpy's np.std, as Text4Vis computes it); the JSON also has the
sample std (ddof=1). With 3 splits the two differ by a factor of sqrt(3/2).

The model: plain CLIP (--weights, any clip_model.load name or file; frame features averaged,
"meanP": no temporal module, no new parameters) or a fine-tuned ActionCLIP (--checkpoint, with its
own visual prompt). Class texts: the 16-template ensemble of prompts.py (bare labels for a
checkpoint trained on them, as evaluate.py), encoded once per run.
Under torchrun the videos are split over processes as in evaluate.py. A video's class is the
candidate whose text matches it best [Eq. 1], among classes it never trained on [Sec. 4.4].

Shapes: V views per video (clips x crops), K templates, C classes, E joint embedding dimension;
"videos": all the videos of a split.
"""

import argparse
import csv
import json
import math
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

import clip_model
import evaluate
import prompts
import video_data
from util import video_index, video_pictures

PROTOCOLS = ("auto", "splits", "half-classes", "k600-novel", "all-classes")
PROTOCOL_TEXT = {
    "splits": "the three official test splits, all {C} classes; per split and mean +- std over the "
              "splits (X-CLIP, ViFi-CLIP)",
    "half-classes": "{draws} random halves of the {C} classes (numpy seeds {seed}..{last}), the "
                    "videos of those classes ({videos}); mean +- std over the draws (E2E, "
                    "Text4Vis)",
    "k600-novel": "Kinetics-600 novel classes: {runs} class subsets from {files}, the {split} "
                  "videos of those classes; mean +- std over the subsets (ER-ZSAR splits, as "
                  "X-CLIP and Text4Vis)",
    "all-classes": "the {split} videos, all {C} classes",
}
STD_TEXT = "population std (ddof=0)"
CLIP_CONTEXT = 77  # tokens of text every CLIP model reads
WEIGHTS_HELP = ("official names download to ~/.cache/clip (one-off, needs internet); offline, copy "
                "the file there from a machine that has it, or pass its path")

# --------------------------------------------------------------------------------------------------
# The model and the scores


def load_model(args, device):
    """A fine-tuned ActionCLIP (--checkpoint), or plain CLIP (--weights) with meanP over the
    frames."""
    if args.checkpoint:
        model = evaluate.load_checkpoint(args.checkpoint, device, args.frames)
        if isinstance(model, prompts.VideoClassifier):
            raise SystemExit(f"error: {args.checkpoint} is a unimodal classifier (train.py "
                             f"--unimodal): it has no text encoder to name new classes with, so "
                             f"it cannot run zero-shot")
        return model
    try:
        clip = clip_model.load(args.weights, device)
    except FileNotFoundError as e:
        raise SystemExit(f"error: --weights: {e}. {WEIGHTS_HELP}") from None
    except RuntimeError as e:                         # a failed download says what to fetch
        raise SystemExit(f"error: --weights {args.weights}: {e}") from None
    except ValueError as e:
        raise SystemExit(f"error: --weights {args.weights}: {e}. If it is an ActionCLIP "
                         f"checkpoint, pass it with --checkpoint") from None
    model = prompts.ActionCLIP(clip, "meanP", args.frames or 8)              # no new parameters
    return model.to(device).eval()


def describe_zeroshot_model(args, model):
    """--checkpoint's ActionCLIP (evaluate.describe_model), or plain CLIP (--weights)."""
    if args.checkpoint:
        return f"ActionCLIP {video_data.shown_path(args.checkpoint)}: " \
               f"{evaluate.describe_model(model)}"
    return (f"plain CLIP {video_data.shown_path(args.weights)}, no temporal module: the "
            f"{model.config['num_frames']} frame features are averaged (meanP)")


def subset_predictions(features, targets, ok, text_feats, logit_scale, classes, damaged=None):
    """Scores of the videos of `classes` with only those classes as candidates [Sec. 4.4],
    targets renumbered.

    features (videos, V, E) from evaluate.encode_videos; text_feats (K, C, E); classes: ids into C.
    damaged (videos,): as encode_videos gives it, or None.
    """
    classes = torch.as_tensor(classes)
    position = torch.full((text_feats.shape[1],), -1)
    position[classes] = torch.arange(len(classes))                    # class id -> candidate index
    keep = position[targets] >= 0
    if keep.any():
        candidates = text_feats[:, classes]                           # (K, len(classes), E)
        scores = torch.cat([evaluate.view_averaged_scores(chunk, candidates, logit_scale)
                            for chunk in features[keep].split(4096)])
    else:
        scores = torch.zeros(0, len(classes))
    return evaluate.Predictions(scores, position[targets[keep]], ok[keep],
                                None if damaged is None else damaged[keep])


# --------------------------------------------------------------------------------------------------
# Protocols [Sec. 4.4]: each returns (runs, facts): runs = [(name, candidate class names,
# Predictions)], and the facts that fill in its PROTOCOL_TEXT


class Context:
    """What every protocol needs: the arguments, the model on its device, the autocast dtype,
    distribution."""

    def __init__(self, args, model, device, dtype, distributed):
        self.args, self.model, self.device = args, model, device
        self.dtype, self.distributed = dtype, distributed

    def dataset(self, split):
        return evaluate.eval_dataset(split, self.model, self.args)

    def loader(self, split):
        return evaluate.eval_loader(self.dataset(split), self.args.batch_size, self.args.workers,
                                    self.distributed)

    def text_features(self, classnames):                              # (K, C, E), once per run
        return evaluate.class_text_features(self.model, classnames, self.args, self.device,
                                            self.dtype)

    def predict(self, split, text_feats, label):
        return evaluate.predict_videos(self.model, self.loader(split), text_feats, self.device,
                                       self.dtype, progress=label)

    def encode(self, split, label):
        return evaluate.encode_videos(self.model, self.loader(split), self.device, self.dtype,
                                      progress=label)

    def logit_scale(self):
        return self.model.logit_scale.exp().float().cpu()


def single_label_split(args, split_name, fold=None, may_be_empty=False):
    """evaluate.load_dataset_split, for single-label datasets only: zero-shot here reports top-k."""
    split = evaluate.load_dataset_split(args, split_name, fold, may_be_empty)
    if split.multilabel:
        raise SystemExit(f"error: {args.dataset} is multi-label; zero-shot here reports the top-k "
                         f"accuracy of single-label datasets: use evaluate.py for its mAP")
    return split


def run_splits(ctx):
    """The three official test splits, all classes (the class list is the same in each)."""
    if ctx.args.dataset not in ("ucf101", "hmdb51"):
        raise SystemExit(f"error: --protocol splits: only UCF101 and HMDB51 have three official "
                         f"splits, {ctx.args.dataset} has not; use --protocol all-classes")
    runs, text_feats = [], None
    for fold in (1, 2, 3):
        split = single_label_split(ctx.args, "test", fold)
        if text_feats is None:                                        # once per run
            text_feats = ctx.text_features(split.classnames)
        predictions = ctx.predict(split, text_feats, f"split {fold}")
        runs.append((f"split {fold}", split.classnames, predictions))
    return runs, {"C": len(split.classnames)}


def union_split(args, names):
    """The videos of several (split, fold)s, each once, in a first-seen order."""
    records, classnames = {}, None
    for split_name, fold in names:                     # one list may be empty, not all of them
        split = single_label_split(args, split_name, fold, may_be_empty=True)
        classnames = split.classnames
        for record in split.records:
            records.setdefault(record.path, record)
    if not records:
        raise SystemExit(f"error: none of the {args.dataset} lists ({len(names)} split files) "
                         f"names a video on disk: there is nothing to evaluate")
    return video_data.DatasetSplit(list(records.values()), classnames)


def run_subsets(ctx, split, subsets, names):
    """Encode the videos of `split` once, then score each subset of classes with only its
    classes."""
    features, targets, ok, damaged = ctx.encode(split, "encode")
    text_feats, scale = ctx.text_features(split.classnames).cpu(), ctx.logit_scale()
    return [(name, [split.classnames[c] for c in classes],
             subset_predictions(features, targets, ok, text_feats, scale, classes, damaged))
            for name, classes in zip(names, subsets)]


def run_half_classes(ctx):
    """The half-classes protocol [Sec. 4.4]: a random half of the classes as the only
    candidates, in each of --draws draws."""
    args = ctx.args
    if args.dataset in ("ucf101", "hmdb51"):
        split = union_split(args, [(s, f) for f in (1, 2, 3) for s in ("train", "test")])
        videos = f"the {len(split.records)} videos of the official train and test lists"
    else:
        split_name = args.split or evaluate.DEFAULT_SPLIT.get(args.dataset, "val")
        split = single_label_split(args, split_name)
        videos = f"the {len(split.records)} videos of the {split_name} split"
    halves = half_class_draws(len(split.classnames), args.draws, args.seed)
    names = [f"draw {i} (seed {args.seed + i})" for i in range(args.draws)]
    runs = run_subsets(ctx, split, halves, names)
    return runs, {"C": len(split.classnames), "draws": args.draws, "seed": args.seed,
                  "last": args.seed + args.draws - 1, "videos": videos}


def run_k600_novel(ctx):
    args = ctx.args
    if not args.k600_splits:
        raise SystemExit("error: --protocol k600-novel needs --k600-splits FILE [FILE ...]: the "
                         "class names of each novel-class subset (one per line, or an 'id,name' "
                         "CSV)")
    split_name = args.split or "test"
    split = single_label_split(args, split_name)
    try:
        subsets = [read_class_subset(path, split.classnames) for path in args.k600_splits]
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: --k600-splits: {e}") from None
    wanted = set().union(*subsets)                     # decode only the novel classes' videos
    records = [r for r in split.records if r.label in wanted]
    if not records:
        raise SystemExit(f"error: --k600-splits: the {split_name} split has no video of their "
                         f"classes: there is nothing to evaluate")
    split = video_data.DatasetSplit(records, split.classnames)
    names = [f"subset {i + 1} ({os.path.basename(p)})" for i, p in enumerate(args.k600_splits)]
    facts = {"runs": len(subsets), "files": ", ".join(args.k600_splits), "split": split_name}
    return run_subsets(ctx, split, subsets, names), facts


def run_all_classes(ctx):
    split_name = ctx.args.split or evaluate.DEFAULT_SPLIT.get(ctx.args.dataset, "val")
    split = single_label_split(ctx.args, split_name)
    preds = ctx.predict(split, ctx.text_features(split.classnames), split_name)
    facts = {"C": len(split.classnames), "split": split_name}
    return [(split_name, split.classnames, preds)], facts


# Flags a protocol does not read: given anyway, they are an error rather than silently ignored.
IGNORED_BY = {
    "splits": {"fold", "split", "draws", "seed", "k600_splits"},    # it runs all three test splits
    "half-classes": {"fold", "k600_splits"},
    "k600-novel": {"fold", "draws", "seed"},
    "all-classes": {"draws", "seed", "k600_splits"},
    "--video": {"protocol", "fold", "split", "draws", "seed", "k600_splits"},
}
RUNNERS = {"splits": run_splits, "half-classes": run_half_classes, "k600-novel": run_k600_novel,
           "all-classes": run_all_classes}


def choose_protocol(args):
    if args.protocol != "auto":
        return args.protocol
    if args.dataset in ("ucf101", "hmdb51"):
        return "splits"
    return "k600-novel" if args.k600_splits else "all-classes"


# --------------------------------------------------------------------------------------------------
# Labels and class subsets


def check_labels(labels, source):
    """Raise ValueError unless `labels` are >= 2 non-empty texts, distinct as the tokenizer sees
    them."""
    empty = [i for i, label in enumerate(labels, 1) if not label.strip()]
    if empty:
        raise ValueError(f"{source}: entries {empty} are empty; every label must name a class")
    seen, duplicates = {}, []
    for label in labels:
        key = " ".join(label.lower().split())      # CLIP's tokenizer ignores case and spacing
        if key in seen:
            duplicates.append(f"{seen[key]!r} and {label!r}")
        seen.setdefault(key, label)
    if duplicates:
        raise ValueError(f"{source}: duplicate labels ({'; '.join(duplicates)}): each class once, "
                         f"please")
    if len(labels) < 2:
        raise ValueError(f"{source}: one label always gets probability 1; give two or more to rank")
    return labels


def read_labels(path):
    """One label per line. A blank line is an error (it would be an empty class), named by line
    number."""
    lines = video_data.read_text(path, "--labels-file").splitlines()  # UTF-8, without a BOM
    blank = [n for n, line in enumerate(lines, 1) if not line.strip()]
    if blank:
        raise ValueError(f"{path}: lines {blank} are blank; remove them (one label per line)")
    return check_labels([line.strip() for line in lines], path)


def check_label_lengths(labels, source, templates):
    """Every label, in every template, must fit CLIP's text context (checked before any model)."""
    for label in labels:
        try:
            prompts.tokenize_prompts([label], templates, CLIP_CONTEXT)
        except ValueError:
            shown = f"{label[:60]!r}{'...' * (len(label) > 60)}"
            raise ValueError(f"{source}: the label {shown} is too long: in a template it exceeds "
                             f"CLIP's {CLIP_CONTEXT}-token text context; shorten it") from None
    return labels


def read_class_subset(path, classnames):
    """Class ids, in `classnames`, of the names listed in `path` (one per line, or an 'id,name'
    CSV)."""
    names = video_data.read_classnames(path)       # raises FileNotFoundError naming the path
    ids = {" ".join(name.lower().split()): i for i, name in enumerate(classnames)}
    unknown = [name for name in names if " ".join(name.lower().split()) not in ids]
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} of its {len(names)} classes are not classes of "
                         f"the dataset, e.g. {unknown[:5]}; expected names as in the annotation "
                         f"CSVs, e.g. {classnames[:3]}")
    return sorted(ids[" ".join(name.lower().split())] for name in names)


def half_class_draws(num_classes, draws=10, seed=0):
    """Draw i: the sorted first C // 2 classes of np.random.permutation(C) after
    np.random.seed(seed + i).

    Text4Vis's draws exactly (its test_zeroshot.py multi_split_test), so the halves, and so the
    numbers, are comparable with the ones it reports.
    """
    halves = []
    for i in range(draws):
        np.random.seed(seed + i)
        halves.append(sorted(np.random.permutation(num_classes)[:num_classes // 2].tolist()))
    return halves


def mean_std(values):
    """(mean, population std, sample std) of a list of numbers; the stds are 0 / NaN for one
    value."""
    x = np.asarray(values, dtype=float)
    return x.mean(), x.std(ddof=0), x.std(ddof=1) if len(x) > 1 else math.nan


# --------------------------------------------------------------------------------------------------
# Reports


def benchmark_results(runs):
    """Per-run metrics (evaluate.summarize) and their mean and stds over runs."""
    results = [{"name": name, "num_classes": len(classnames),
                **evaluate.summarize(preds, classnames)} for name, classnames, preds in runs]
    summary = {"mean": {}, "std": {}, "std_sample": {}}
    for metric in ("top1", "top5"):
        if any(metric not in r for r in results):             # top5_omitted: too few classes
            continue
        values = [math.nan if r[metric] is None else r[metric] for r in results]
        mean, std, std_sample = mean_std(values)
        summary["mean"][metric], summary["std"][metric], summary["std_sample"][metric] = \
            (evaluate.json_number(float(v)) for v in (mean, std, std_sample))
    return results, summary


def format_benchmark(header, results, summary):
    score = evaluate.format_score
    width = max(len(r["name"]) for r in results)
    lines = header + [""]
    for r in results:
        top5 = f"top-5 {score(r['top5'])}   " if "top5" in r else ""
        lines.append(f"  {r['name']:<{width}}  top-1 {score(r['top1'])}  {top5}"
                     f"{r['num_classes']} classes, {r['evaluated']} videos; "
                     f"{video_data.unreadable_report(r['unreadable'], r['total'], r['damaged'])}")
    if len(results) > 1:
        mean, std = summary["mean"], summary["std"]
        top5 = (f"  top-5 {score(mean['top5'])} +- {score(std['top5']).strip()}"
                if "top5" in mean else "")
        lines += ["", f"  mean +- std over {len(results)} ({STD_TEXT}):  "
                      f"top-1 {score(mean['top1'])} +- {score(std['top1']).strip()}{top5}"]
    omitted = next((r["top5_omitted"] for r in results if "top5_omitted" in r), None)
    if omitted:
        lines += ["", f"  no top-5: {omitted}"]
    return "\n".join(lines)


def format_ranking(path, scores, labels, ok, top):
    """One video's labels, most probable first: '  1. playing guitar   87.31%'."""
    if not ok:
        shown = video_data.shown_path(path)
        return f"{shown}\n  could not be read (the warning on stderr says why)"
    probability, order = scores.sort(descending=True)
    width = max(len(label) for label in labels)
    rows = [f"  {rank:>2}. {labels[i]:<{width}}  {100 * p:6.2f}%"
            for rank, (p, i) in enumerate(zip(probability[:top].tolist(), order[:top].tolist()), 1)]
    return "\n".join([video_data.shown_path(path)] + rows)


def write_json(path, payload):
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=1)


# --------------------------------------------------------------------------------------------------
# Your videos as an index: embeddings out (--index), text-to-video search (--search), a timeline of
# labels over a long video (--timeline). The machinery (file format, windows, sharding, pictures)
# is util/video_index.py and util/video_pictures.py; here are the model's side and the reports.

DEFAULT_WINDOW, DEFAULT_STRIDE = 10.0, 5.0  # s: Kinetics-length windows, each moment in two
INDEX_FLAGS = {"index", "out", "window", "stride", "search", "picture", "timeline"}
MODEL_FLAGS = {"weights", "checkpoint", "device", "fp32"}
# What each of these runs reads; any other flag given is an error rather than silently ignored.
INDEX_MODE_READS = {
    "--index": MODEL_FLAGS | {"index", "out", "window", "stride", "frames", "batch_size",
                              "workers", "json"},
    "--search": MODEL_FLAGS | {"index", "search", "top", "picture", "no_templates", "json"},
    "--timeline": MODEL_FLAGS | {"video", "labels", "labels_file", "timeline", "window", "stride",
                                 "frames", "top", "no_templates", "batch_size", "workers"},
}
SAMPLING_TEXT = ("test sampling in each window: the centre frame of each of T equal segments "
                 "(video_data.sample_indices)")


def read_window(path, indices):
    """video_data.read_frames; one decoder thread in a DataLoader worker (workers are the
    parallelism)."""
    in_worker = torch.utils.data.get_worker_info() is not None
    return video_data.read_frames(path, indices, 1 if in_worker else 0)


def probe_video(path):
    """(frames, frames per second) of a video file; VideoReadError if it cannot be read."""
    return video_data.count_frames(path), video_index.frame_rate(path)


def window_sampling(num_frames, frames):
    """The test sampling [Sec. 4.1] of a window's `num_frames` frames: `frames` indices."""
    return video_data.sample_indices(num_frames, frames, "test")


def window_embedder(args, ctx):
    """video_index.Embedder for ctx's model: windows decoded in --workers processes, one view each,
    encoded as evaluate.py encodes a test view."""
    model, device, dtype = ctx.model, ctx.device, ctx.dtype
    size, T = evaluate.clip_of(model).input_resolution, model.config["num_frames"]

    @torch.no_grad()
    def encode(video):                                                # uint8 (B, T, 3, S, S)
        with evaluate.autocast(device, dtype):
            video = video_data.finish_batch(video, device)[:, None]    # (B, 1, T, 3, S, S)
            return evaluate.encode_views(model, video)[:, 0]           # (B, E), normalised

    return video_index.Embedder(
        read_window, video_data.test_transform(size, on_device=True), (T, 3, size, size),
        lambda dataset: evaluate.eval_loader(dataset, args.batch_size, args.workers), encode)


def index_meta(args, model):
    """What an index records of the model and the sampling (its SAME_SETTINGS must match)."""
    clip = evaluate.clip_of(model)
    return {"format": video_index.FORMAT, "version": video_index.VERSION,
            "model": describe_zeroshot_model(args, model),
            "model_flags": ["--checkpoint", args.checkpoint] if args.checkpoint else
            ["--weights", args.weights],
            "weights_sha256": video_index.weights_sha256(model.state_dict()),
            "embed_dim": clip.embed_dim, "frames": model.config["num_frames"],
            "size": clip.input_resolution, "window": args.window, "stride": args.stride,
            "sampling": SAMPLING_TEXT, "root": os.path.abspath(args.index or "")}


def index_inputs(args):
    """Before any model loads: --index's videos (a list), or --search's index ({name: array})."""
    if args.search:
        try:
            if os.path.isdir(args.index):
                raise ValueError(f"{args.index} is a folder: --search reads an index file; make "
                                 f"one with --index {args.index} --out NAME.idx")
            if not os.path.isfile(args.index):
                raise ValueError(f"no index file at {args.index}: make one with --index DIR "
                                 f"--out {args.index}")
            return video_index.read_index(args.index)
        except ValueError as e:
            raise SystemExit(f"error: --index {e}") from None
    if not os.path.isdir(args.index):
        raise SystemExit(f"error: --index {args.index}: no such folder; give the folder of videos "
                         f"to index")
    if os.path.exists(args.out):
        try:
            video_index.read_index(args.out)
        except ValueError as e:                        # never overwrite a file that is not ours
            raise SystemExit(f"error: --out {e}: give another --out") from None
    videos = video_index.list_videos(args.index, video_data.VIDEO_EXTS)
    if not videos:
        kinds = ", ".join(video_data.VIDEO_EXTS)
        raise SystemExit(f"error: --index {args.index}: no video files ({kinds}) under it")
    return videos


def build_video_index(args, ctx, videos):
    """--index DIR --out NAME.idx: embed the new and changed videos (this process's share under
    torchrun), keep the rest; report."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    shard = video_index.Shard(rank, dist.get_world_size(), dist.barrier) \
        if dist.is_initialized() else video_index.Shard()
    meta = index_meta(args, ctx.model)
    try:
        summary = video_index.build_index(args.out, videos, meta, probe_video, window_sampling,
                                          window_embedder(args, ctx), shard)
    except video_index.IndexMismatch as e:
        raise SystemExit(f"error: --out {e}") from None
    except KeyboardInterrupt:
        kept = args.out if shard.world_size == 1 else f"{args.out}.part-{rank}"
        print(f"\ninterrupted: the videos embedded so far are kept in {kept}; run the same "
              f"command again to finish", file=sys.stderr)
        raise SystemExit(130) from None
    if summary is not None:
        report_index(args, meta, summary, len(videos))


def report_index(args, meta, summary, total):
    print(f"{args.out}: {summary['videos']} videos, {summary['windows']} windows of "
          f"{meta['frames']} frames ({args.window:g} s every {args.stride:g} s); "
          f"{summary['embedded']} embedded now, {summary['kept']} unchanged, "
          f"{summary['removed']} gone from {args.index} and dropped; model: {meta['model']}")
    bad = summary["unreadable"]
    if bad:
        print(f"{video_data.unreadable_report(len(bad), total)}:")
        print("\n".join(f"  {path}: {reason}" for path, reason in sorted(bad.items())))
    write_json(args.json, {"index": args.out, **{k: v for k, v in summary.items()}})
    if not summary["videos"]:
        raise SystemExit(f"error: none of the {total} videos under {args.index} could be read: "
                         f"the index is empty")


def query_feature(args, ctx, text):
    """The query's text embedding (E,): the mean of its template embeddings, L2-normalised (CLIP's
    prompt ensemble), or the bare text with --no-templates."""
    feats = ctx.text_features([text])[:, 0].float().cpu()                    # (K, E)
    return torch.nn.functional.normalize(feats.mean(0), dim=0)


def search_index(args, ctx, index):
    """--search TEXT --index NAME.idx: the --top windows whose embedding is closest to the text."""
    meta = index["meta"]
    if meta["weights_sha256"] != video_index.weights_sha256(ctx.model.state_dict()):
        raise SystemExit(f"error: --index {args.index} was made with {meta['model']}, not with "
                         f"this run's {describe_zeroshot_model(args, ctx.model)}: search it with "
                         f"{' '.join(meta['model_flags'])}")
    scores, rows = video_index.search(index["embeddings"], query_feature(args, ctx, args.search),
                                      args.top)
    hits = [{"rank": r, "score": float(score), "path": str(index["paths"][index["window_file"][i]]),
             "start_s": float(index["start_s"][i]), "end_s": float(index["end_s"][i]),
             "frame_indices": index["frame_indices"][i].tolist()}
            for r, (score, i) in enumerate(zip(scores, rows), 1)]
    print(f"search {args.search!r} in {args.index} ({len(index['start_s'])} windows of "
          f"{len(index['paths'])} videos; cosine similarity)\n")
    for hit in hits:
        print(f"  {hit['rank']:>3}. {hit['score']:.4f}  {hit['path']}  "
              f"{clock_range(hit['start_s'], hit['end_s'])}")
    write_json(args.json, {"query": args.search, "index": args.index, "hits": hits})
    if args.picture:
        sheet, _ = video_pictures.contact_sheet(hits, read_window)
        sheet.save(args.picture)
        print(f"\nwrote {args.picture}")


def clock_range(start, end):
    """'01:02.5-01:12.5'"""
    return "-".join(f"{int(t // 60):02d}:{t % 60:04.1f}" for t in (start, end))


def video_timeline(args, ctx, labels):
    """--video V --labels ... --timeline T.csv: every window's top labels, as CSV and T.png."""
    path = args.video[0]
    settings = {"window": args.window, "stride": args.stride,
                "frames": ctx.model.config["num_frames"]}
    plans, unreadable = video_index.plan_videos([path], probe_video, settings, window_sampling)
    if unreadable:
        raise SystemExit(f"error: --video {path}: {unreadable[path]}")
    progress = video_index.Progress(len(plans[0].windows), "timeline")
    (_, video, reason), = window_embedder(args, ctx)(plans, progress)
    if video is None:
        raise SystemExit(f"error: --video {path}: no window could be read ({reason})")
    feats = torch.from_numpy(video.embeddings).float()[:, None]       # (W, 1, E): one view
    probs = evaluate.view_averaged_scores(feats, ctx.text_features(labels).float().cpu(),
                                          ctx.logit_scale().detach())  # (W, C)
    rows = timeline_rows(video, probs, labels, min(args.top, len(labels)))
    write_timeline(args.timeline, rows, min(args.top, len(labels)))
    picture = os.path.splitext(args.timeline)[0] + ".png"
    image, _ = video_pictures.timeline_picture(video.start_s, video.end_s, probs.numpy(), labels,
                                               plans[0].num_frames / plans[0].fps)
    image.save(picture)
    for row in rows:
        print(f"  {clock_range(row[0], row[1])}  {row[2]} ({100 * row[3]:.1f}%)")
    print(f"wrote {args.timeline}, {picture}")


def timeline_rows(video, probs, labels, top):
    """[start_s, end_s, label 1, p 1, ..., label top, p top] per window."""
    rows = []
    for start, end, p in zip(video.start_s.tolist(), video.end_s.tolist(), probs):
        best = p.topk(top)
        row = [round(start, 3), round(end, 3)]
        for value, c in zip(best.values.tolist(), best.indices.tolist()):
            row += [labels[c], round(value, 4)]
        rows.append(row)
    return rows


def write_timeline(path, rows, top):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["start_s", "end_s"] + [f"{name}_{k}" for k in range(1, top + 1)
                                                for name in ("label", "p")])
        writer.writerows(rows)


# --------------------------------------------------------------------------------------------------
# Command line


def add_index_args(parser):
    g = parser.add_argument_group("your videos as an index (see the README, 'Search your videos')")
    g.add_argument("--index", metavar="PATH",
                   help="with --out: the folder of videos to index (all below it, symlinks "
                   "followed); with --search: the index file to search")
    g.add_argument("--out", metavar="NAME.idx",
                   help="--index: the index file to write; if it exists, only new and changed "
                   "videos are embedded")
    g.add_argument("--window", type=evaluate.positive_float, default=DEFAULT_WINDOW,
                   metavar="SECONDS",
                   help=f"--index, --timeline: one embedding per window of this many seconds of a "
                   f"longer video (default {DEFAULT_WINDOW:g}); a shorter video is one window")
    g.add_argument("--stride", type=evaluate.positive_float, default=DEFAULT_STRIDE,
                   metavar="SECONDS",
                   help=f"--index, --timeline: seconds from one window's start to the next "
                   f"(default {DEFAULT_STRIDE:g}; at most --window)")
    g.add_argument("--search", metavar="TEXT",
                   help="the windows of --index NAME.idx that match this text best, --top of them")
    g.add_argument("--picture", metavar="PNG",
                   help="--search: draw the hits as a contact sheet (frames, score, time range)")
    g.add_argument("--timeline", metavar="CSV",
                   help="--video (one) with --labels: the --top labels of every window, as CSV "
                   "and as a picture beside it (the same name, .png)")


def index_mode(parser, args):
    """'--search', '--index', '--timeline', or None (a benchmark, or --video's ranking)."""
    if args.search is not None:
        if not args.index:
            parser.error("--search needs --index NAME.idx: the index to search (made with --index "
                         "DIR --out NAME.idx)")
        if args.picture and not args.picture.lower().endswith((".png", ".jpg", ".jpeg")):
            parser.error(f"--picture {args.picture}: give a .png (or .jpg) file name")
        return "--search"
    if args.index:
        if not args.out:
            parser.error("--index DIR needs --out NAME.idx: the index file to write (or update)")
        if args.stride > args.window:
            parser.error(f"--stride {args.stride:g} is longer than --window {args.window:g}: the "
                         f"windows would leave gaps; give a stride at most the window")
        return "--index"
    if args.timeline:
        if not args.video or len(args.video) != 1:
            parser.error("--timeline needs --video with one video file (and --labels)")
        if args.timeline.lower().endswith(".png"):
            parser.error(f"--timeline {args.timeline}: give the CSV file's name; the picture is "
                         f"written beside it as .png")
        if args.stride > args.window:
            parser.error(f"--stride {args.stride:g} is longer than --window {args.window:g}: the "
                         f"windows would leave gaps; give a stride at most the window")
        return "--timeline"
    return None


def search_text(args):
    """--search's text: not blank, and it fits CLIP's text context in every template."""
    if not args.search.strip():
        raise SystemExit("error: --search: the text is empty; say what to find, e.g. --search "
                         "\"someone jumping on a trampoline\"")
    templates = prompts.LABEL_ONLY if args.no_templates else prompts.TEMPLATES
    try:
        check_label_lengths([args.search], "--search", templates)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="ViT-B/16",
                        help=f"plain CLIP: {', '.join(clip_model.available_models())} or a file "
                             f"(default: ViT-B/16, the paper's main model); frame features "
                             f"averaged (meanP)")
    parser.add_argument("--checkpoint",
                        help="a fine-tuned ActionCLIP (train.py's, or an official release) "
                        "instead of plain CLIP; it keeps its own visual prompt")
    evaluate.add_data_args(parser)
    parser.add_argument("--protocol", choices=PROTOCOLS, default="auto",
                        help="auto: splits for UCF101/HMDB51, k600-novel when --k600-splits is "
                        "given, else all-classes (see above)")
    parser.add_argument("--split", choices=("train", "val", "test"),
                        help="the split of all-classes / k600-novel (default: test for "
                        "k600-novel, else as evaluate.py: test for UCF101/HMDB51, val for "
                        "Kinetics)")
    parser.add_argument("--draws", type=evaluate.positive_int, default=10,
                        help="half-classes: how many random halves (Text4Vis: 10)")
    parser.add_argument("--seed", type=int, default=0,
                        help="half-classes: numpy seed of the first draw (Text4Vis: 0)")
    parser.add_argument("--k600-splits", nargs="+", metavar="FILE",
                        help="k600-novel: one file per class subset (ER-ZSAR's 3 x 160 novel "
                        "classes)")
    parser.add_argument("--video", nargs="+", metavar="FILE", help="rank --labels for these videos")
    parser.add_argument("--labels", nargs="+", metavar="TEXT", help="--video: the candidate labels")
    parser.add_argument("--labels-file", metavar="FILE",
                        help="--video: candidate labels, one per line")
    parser.add_argument("--top", type=evaluate.positive_int, default=5,
                        help="--video: how many labels to print per video (per window with "
                        "--timeline); --search: how many windows")
    add_index_args(parser)
    args = parser.parse_args(argv)
    mode = index_mode(parser, args)
    if not args.video and not args.dataset and not mode:
        parser.error("give --dataset (a benchmark), --video with --labels / --labels-file, "
                     "--index DIR --out NAME.idx, or --search TEXT --index NAME.idx")
    if args.video and args.dataset:
        parser.error("--video and --dataset are two different runs: give one")
    if args.labels and args.labels_file:
        parser.error("--labels and --labels-file both give the candidate labels: give one of them")
    if args.video and not (args.labels or args.labels_file):
        parser.error("--video needs its candidate labels: --labels TEXT [TEXT ...] or "
                     "--labels-file FILE")
    if args.dataset:
        evaluate.check_dataset_flags(parser, args)
    evaluate.check_device(parser, args)
    evaluate.check_output_files(parser, args, "--json", "--out", "--picture", "--timeline",
                                inputs=("--checkpoint", "--weights", "--labels-file", "--index"))
    protocol = mode or ("--video" if args.video else choose_protocol(args))
    given = evaluate.given_flags(parser, argv)
    if mode:
        ignored = sorted(set(given) - INDEX_MODE_READS[mode])
    else:
        ignored = sorted((IGNORED_BY[protocol] | INDEX_FLAGS).intersection(given))
    if ignored:
        flags = ", ".join("--" + dest.replace("_", "-") for dest in ignored)
        used = protocol if args.video or mode else "--protocol " + protocol
        parser.error(f"{flags} has no effect with {used}: drop it")
    return args


def video_labels(args):
    templates = prompts.LABEL_ONLY if args.no_templates else prompts.TEMPLATES
    try:
        if args.labels_file:
            labels = read_labels(args.labels_file)
        else:
            labels = check_labels(args.labels, "--labels")
        return check_label_lengths(labels, args.labels_file or "--labels", templates)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None


def rank_videos(args, ctx, labels):
    """--video: every video against every label; a ranked table per video."""
    missing = [path for path in args.video if not os.path.exists(path)]
    if missing:
        raise SystemExit(f"error: --video: no such file: "
                         f"{', '.join(map(video_data.shown_path, missing))}")
    records = [video_data.VideoRecord(path, 0) for path in args.video]  # label unused
    preds = ctx.predict(video_data.DatasetSplit(records, labels), ctx.text_features(labels),
                        "videos")
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    texts = "bare labels" if args.no_templates else f"{len(prompts.TEMPLATES)}-template ensemble"
    texts += " as trained" * getattr(args, "texts_as_trained", False)
    model = describe_zeroshot_model(args, ctx.model)
    print(f"zero-shot: {len(labels)} labels ({texts}); model: {model}; "
          f"{evaluate.views_text(args.clips, args.crops)}\n")
    print("\n\n".join(format_ranking(path, scores, labels, ok, args.top)
                      for path, scores, ok in zip(args.video, preds.scores, preds.ok)))
    if not preds.ok.all() or preds.damaged.any():
        print("\n" + video_data.unreadable_report(int((~preds.ok).sum()), len(preds.ok),
                                                  int(preds.damaged.sum())))
    write_json(args.json, {"labels": labels, "model": model, "videos": [
        {"path": path, "ok": bool(ok), "damaged": bool(damaged),
         "probabilities": dict(zip(labels, scores.tolist())) if ok else None}
        for path, scores, ok, damaged in zip(args.video, preds.scores, preds.ok, preds.damaged)]})
    if not preds.ok.any():
        raise SystemExit(f"error: none of the {len(preds.ok)} videos could be read (the warnings "
                         f"above say why): nothing was ranked")


def run_benchmark(args, ctx):
    protocol = choose_protocol(args)
    runs, facts = RUNNERS[protocol](ctx)
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    results, summary = benchmark_results(runs)
    texts = "bare class names" if args.no_templates else \
        f"{len(prompts.TEMPLATES)}-template ensemble"
    texts += " (as trained)" * getattr(args, "texts_as_trained", False)
    header = [f"Zero-shot {args.dataset} [Sec. 4.4]",
              f"protocol: {protocol}: " + PROTOCOL_TEXT[protocol].format(**facts),
              f"model: {describe_zeroshot_model(args, ctx.model)}",
              f"views: {evaluate.views_text(args.clips, args.crops)}; text: {texts}"]
    print(format_benchmark(header, results, summary))
    write_json(args.json, {"protocol": protocol, "header": header, "std_kind": STD_TEXT, **summary,
                           "runs": results})
    if not any(r["evaluated"] for r in results):
        total = sum(r["total"] for r in results)
        raise SystemExit(f"error: none of the {total} videos could be read: nothing was evaluated")


def main(argv=None):
    args = parse_args(argv)
    with evaluate.output_locks(args, "--json"):
        run_zeroshot(args)


def run_zeroshot(args):
    """main(), once --json is this run's."""
    evaluate.follow_training(args, args.checkpoint)        # its texts, unless a flag says otherwise
    labels = video_labels(args) if args.video else None    # a bad label list fails before loading
    if args.dataset:
        evaluate.dataset_root(args)                        # so does a dataset that is not there
    found = index_inputs(args) if args.index else None     # and a folder or index that is not
    if args.search:
        search_text(args)
    rank, world_size, device = evaluate.setup_distributed(args.device)
    model = load_model(args, device)
    dtype = evaluate.autocast_dtype(device, "fp32" if args.fp32 else "auto")
    ctx = Context(args, model, device, dtype, distributed=world_size > 1)
    try:
        if args.search:
            search_index(args, ctx, found)
        elif args.index:
            build_video_index(args, ctx, found)
        elif args.timeline:
            video_timeline(args, ctx, labels)
        elif args.video:
            rank_videos(args, ctx, labels)
        else:
            run_benchmark(args, ctx)
    except video_data.VideoReadError as e:                            # only with --strict
        raise SystemExit(f"error: {e} (--strict stops at the first video that cannot be "
                         f"read)") from None
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
