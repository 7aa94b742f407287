"""Evaluate an ActionCLIP checkpoint on a dataset split: top-1 / top-5 (mAP for Charades), by class.

Recognition picks the class whose text matches the video best [Eq. 1]. The test of the paper
[Sec. 4.1]: T frames sampled from the centres of T equal segments, the short side resized to 256
for a 224 crop. Single view (1 clip x 1 centre crop) is the paper's default; its best numbers use
10 clips x 3 crops, the class scores averaged over the 30 views. On the text side every class name
is wrapped in each of the 16 templates of prompts.py; a class scores the mean over templates of its
softmax over classes [Sec. 3.2] (the official test). Texts are encoded once per run. A checkpoint
of train.py is tested as it was trained and validated: bare class names if it trained on them
(--no-text-prompts), its frames; --templates, --no-templates and --frames override that.

    python evaluate.py --checkpoint runs/ucf101/last.pt --dataset ucf101 --root data/ucf101 --fold 1
    python evaluate.py --checkpoint best.pt --dataset kinetics400 --root data/k400 --clips 10 \\
        --crops 3
    # an official release
    python evaluate.py --checkpoint vit-b-16-8f.pt --dataset kinetics400 --root data/k400
    torchrun --standalone --nproc_per_node=4 evaluate.py --checkpoint best.pt \
        --dataset kinetics400 ...

Under torchrun each process scores the videos i with i % world_size == rank (no padding, nothing
dropped), and process 0 gathers the scores, puts them back in dataset order and reports: every
video counts once. Videos that cannot be decoded are counted and left out of the metrics; --strict
stops at the first one.

train.py (validation) and zeroshot.py use this file's pieces: the metrics (topk_accuracy,
mean_average_precision, per_class_accuracy), eval_loader, predict_videos, encode_videos and
summarize.

Read from the top: prediction (views, template ensemble), the metrics [Eq. 1], the reports; then
the machinery (progress, processes, the command line).

Shapes: B videos in a batch, V views per video (clips x crops), T frames per video, S image side in
pixels, K templates, C classes, E joint embedding dimension. "videos": all the videos of a split.
"""

import argparse
import json
import math
import os
import sys
import textwrap
import time
from contextlib import ExitStack, nullcontext
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

import prompts
import video_data


# --------------------------------------------------------------------------------------------------
# Prediction: every view's class scores, averaged over views [Sec. 3.2, 4.1]


class Predictions(NamedTuple):
    scores: torch.Tensor   # (videos, C) class scores, averaged over the views of each video
    targets: torch.Tensor  # (videos,) class ids, or (videos, C) multi-hot
    ok: torch.Tensor       # (videos,) bool: False where the video could not be read (its scores
                           # mean nothing)
    damaged: torch.Tensor = None  # (videos,) bool: True where a damaged video was read as a player
                                  # shows it (packets skipped); None: none was


def encode_views(model, video):                                       # (B, V, T, 3, S, S)
    """L2-normalised features of every view of every video: (B, V, E), fp32."""
    B, V = video.shape[:2]
    features = model.encode_video(video.flatten(0, 1))   # (B*V, E): views are videos to the model
    return torch.nn.functional.normalize(features.float(), dim=-1).view(B, V, -1)


def view_averaged_scores(features, text_feats, logit_scale):           # (B, V, E), (K, C, E)
    """Ensemble scores of every view [Sec. 3.2], then their mean over views [Sec. 4.1]: (B, C).

    Scores are averaged, not features: each view votes with its own softmax, as in the official
    test. Computed in fp32 even under autocast: in bf16, logits of 100 x cosine (~30) would round to
    steps of 1/8.
    """
    B, V, E = features.shape
    with torch.autocast(features.device.type, enabled=False):
        scores = prompts.ensemble_scores(features.flatten(0, 1), text_feats,
                                         logit_scale)                           # (B*V, C)
    return scores.view(B, V, -1).mean(dim=1)                           # (B, C)


def score_views(model, video, text_feats):                             # (B, V, T, 3, S, S)
    """Class scores (B, C) of a batch. text_feats None: the model is a VideoClassifier (Table 1's
    baseline)."""
    if text_feats is None:
        B, V = video.shape[:2]
        return model(video.flatten(0, 1)).float().softmax(dim=-1).view(B, V, -1).mean(dim=1)
    return view_averaged_scores(encode_views(model, video),
                                text_feats, model.logit_scale.exp().float())


def predict_videos(model, loader, text_feats, device, dtype=None, progress="predict"):
    """Class scores of every video of loader.dataset, in dataset order, views averaged: Predictions.

    text_feats: (K, C, E) from prompts.text_features (on `device`), or None for a VideoClassifier.
    dtype: of autocast (autocast_dtype), None for none.
    """
    model.eval()
    scores, targets, ok, damaged = run_loader(
        loader, lambda video: score_views(model, video, text_feats), device, dtype, progress)
    return Predictions(scores, targets, ok.bool(), damaged.bool())


def encode_videos(model, loader, device, dtype=None, progress="encode"):
    """Normalised features (videos, V, E) of every view of every video, with targets (videos, ...),
    ok and damaged (videos,)."""
    model.eval()
    features, targets, ok, damaged = run_loader(loader, lambda video: encode_views(model, video),
                                                device, dtype, progress)
    return features, targets, ok.bool(), damaged.bool()


@torch.no_grad()
def run_loader(loader, fn, device, dtype=None, progress="predict"):
    """fn(video (B, V, T, 3, S, S) on device) -> (B, ...) for every video of loader.dataset.

    Returns (outputs, targets, ok, damaged), each in dataset order. A sharded loader
    (eval_loader(distributed=True)) is gathered from every process, so every process must call this.
    progress: a label, or None.
    """
    sharded = isinstance(loader.sampler, ShardSampler)
    world_size = dist.get_world_size() if sharded else 1
    shown = progress and (not sharded or dist.get_rank() == 0)
    bar = Progress(len(loader.dataset), progress) if shown else None
    columns = [], [], [], [], []
    for video, target, index, ok, damaged in loader:
        video = video_data.finish_batch(video, device)                 # uint8: normalised here
        if video.ndim == 5:                                   # a train-mode dataset: no view axis
            video = video[:, None]                                     # (B, 1, T, 3, S, S)
        with autocast(device, dtype):
            out = fn(video)
        for column, value in zip(columns, (index, out.float().cpu(), target, ok, damaged)):
            column.append(value)
        if bar:
            bar.update(len(index) * world_size)                # process 0's pace stands for all
    part = tuple(torch.cat(column) for column in columns) if columns[0] else None
    if sharded:
        return gather_in_order(part, len(loader.dataset))
    if part is None:
        raise ValueError("the loader has no videos")
    order = part[0].argsort()                            # dataset order, whatever the sampler's
    return tuple(column[order] for column in part[1:])


def autocast_dtype(device, precision="auto"):
    """The dtype of autocast, or None for none (fp32). precision: auto (bf16 on GPUs that have it,
    else fp16; none on the CPU), bf16, fp16 or fp32 (train.py's --precision; evaluate.py's --fp32
    is fp32). Parameters stay fp32 either way."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def autocast(device, dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


# --------------------------------------------------------------------------------------------------
# Metrics [Eq. 1]. Scores (videos, C), one row per video; targets (videos,) class ids, or
# (videos, C) multi-hot (Charades).


def topk_accuracy(scores, targets, ks=(1, 5)):
    """Percent of videos whose class is among their k highest scores, for each k:
    {"top1": .., "top5": ..}. Top-1 is Eq. 1's recognition: the class whose text matches best.

    k is capped at the number of classes (top-5 of 3 classes is 100%). No videos: NaN.
    """
    if len(targets) == 0:
        return {f"top{k}": math.nan for k in ks}
    k_max = min(max(ks), scores.shape[1])
    ranked = scores.topk(k_max, dim=1).indices         # (videos, k_max), best first: [Eq. 1]
    hits = ranked == targets[:, None]                                   # (videos, k_max)
    return {f"top{k}": 100 * hits[:, :k].any(dim=1).double().mean().item() for k in ks}


def per_class_accuracy(scores, targets, num_classes):
    """Top-1 accuracy (%) of the videos of each class; NaN for a class without videos."""
    correct = targets[scores.argmax(dim=1) == targets]                  # [Eq. 1]: the best match
    total = torch.bincount(targets, minlength=num_classes).double()     # (C,)
    correct_per_class = torch.bincount(correct, minlength=num_classes).double()
    return (100 * correct_per_class / total).tolist()                   # 0/0 = NaN


def average_precision(scores, positives):
    """Non-interpolated AP (%) of one class: the mean, over its positives, of the precision at
    their rank.

    As Charades' official Charades_v1_classify.m (and sklearn's average_precision_score without
    ties). NaN for a class without positives.
    """
    hits = positives[scores.argsort(descending=True, stable=True)].double()  # (videos,), ranked
    if hits.sum() == 0:
        return math.nan
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1)        # precision at each rank
    return 100 * ((precision * hits).sum() / hits.sum()).item()


def per_class_average_precision(scores, multi_hot):
    return [average_precision(scores[:, c], multi_hot[:, c] > 0) for c in range(scores.shape[1])]


def mean_average_precision(scores, multi_hot):
    """mAP (%) of a multi-label split (Charades, Table 9): mean AP over the classes that have a
    positive."""
    aps = [ap for ap in per_class_average_precision(scores, multi_hot) if not math.isnan(ap)]
    return sum(aps) / len(aps) if aps else math.nan


def confusion_matrix(scores, targets, num_classes):
    """(C, C) counts: row = true class, column = top-1 prediction."""
    predicted = scores.argmax(dim=1)                                    # [Eq. 1]
    pairs = targets * num_classes + predicted
    return torch.bincount(pairs, minlength=num_classes ** 2).view(num_classes, -1)


# --------------------------------------------------------------------------------------------------
# Reports


def json_number(x):
    """JSON has no NaN: an undefined metric (a class without videos) is null."""
    return None if isinstance(x, float) and math.isnan(x) else x


def top5_omitted(num_classes):
    """Why top-5 is left out of a report of `num_classes` classes, or None when it means something:
    with 5 classes or fewer every video's class is among its top 5."""
    if num_classes <= 5:
        return f"with {num_classes} classes every video's class is among its top 5"
    return None


def summarize(preds, classnames, multilabel=False):
    """Metrics of the readable videos: top-1/top-5 (mAP for multi-label), per class, and the
    counts.

    {"total", "unreadable", "damaged", "evaluated", "top1", "top5", "mean_class_top1" | "mAP",
    "per_class": [...]}. Unreadable videos are left out of every metric and counted in "unreadable".
    "damaged": videos read as a player shows them, packets skipped (in every metric).
    Top-5 of 5 classes or fewer is always 100: "top5_omitted" says so instead.
    """
    scores, targets = preds.scores[preds.ok], preds.targets[preds.ok]
    C = len(classnames)
    damaged = 0 if preds.damaged is None else int(preds.damaged.sum())
    result = {"total": len(preds.ok), "unreadable": int((~preds.ok).sum()), "damaged": damaged,
              "evaluated": len(scores)}
    if multilabel:
        result["mAP"] = mean_average_precision(scores, targets)
        per_class = per_class_average_precision(scores, targets)
        counts = (targets > 0).sum(dim=0).tolist()                     # positives per class
        result["per_class"] = [{"class": name, "positives": n, "AP": json_number(ap)}
                               for name, n, ap in zip(classnames, counts, per_class)]
    else:
        result.update(topk_accuracy(scores, targets, (1, 5)))
        if top5_omitted(C):
            result["top5_omitted"] = top5_omitted(C)
            del result["top5"]
        per_class = per_class_accuracy(scores, targets, C)
        defined = [a for a in per_class if not math.isnan(a)]
        result["mean_class_top1"] = sum(defined) / len(defined) if defined else math.nan
        counts = torch.bincount(targets, minlength=C).tolist()
        result["per_class"] = [{"class": name, "videos": n, "top1": json_number(acc)}
                               for name, n, acc in zip(classnames, counts, per_class)]
    return {k: json_number(v) for k, v in result.items()}


def format_score(x):
    """A metric in 6 characters: 2 decimals, or n/a for an undefined one (None)."""
    return "   n/a" if x is None else f"{x:6.2f}"


def views_text(clips, crops):
    return f"{clips} clip{'s' * (clips > 1)} x {crops} crop{'s' * (crops > 1)}"


def headline(result):
    """One line: the split's metrics and how many videos they cover."""
    if "mAP" in result:
        metrics = f"mAP {format_score(result['mAP'])}"
    else:
        top5 = f"top-5 {format_score(result['top5'])}  " if "top5" in result else ""
        metrics = (f"top-1 {format_score(result['top1'])}  {top5}"
                   f"mean class top-1 {format_score(result['mean_class_top1'])}")
    omitted = f"; no top-5: {result['top5_omitted']}" if "top5_omitted" in result else ""
    read = video_data.unreadable_report(result["unreadable"], result["total"],
                                        result.get("damaged", 0))
    return f"{metrics}   ({result['evaluated']} video{'s' * (result['evaluated'] != 1)}; " \
           f"{read}{omitted})"


def format_report(header, result):
    """The human report: what was evaluated, a per-class table, the headline last (where the eye
    lands)."""
    metric = "AP" if "mAP" in result else "top1"
    count = "positives" if "mAP" in result else "videos"
    width = max(len("class"), *(len(row["class"]) for row in result["per_class"]))
    lines = header + ["", f"  {'class':<{width}}  {metric:>6}  {count}"]
    lines += [f"  {row['class']:<{width}}  {format_score(row[metric])}  {row[count]}"
              for row in result["per_class"]]
    return "\n".join(lines + ["", headline(result)])


# What a confusion matrix image prints in its non-empty cells, by the number of classes C: the cell
# side is about 0.18 inch (13 pt) up to 190 classes, and 40 inches / C beyond (Kinetics-400: 7 pt).
CONFUSION_PERCENT_UP_TO = 20   # the count over its share of the row, in 8 pt
CONFUSION_COUNT_UP_TO = 120    # the count alone, in 5 pt (UCF101, HMDB51); beyond: colour alone
CONFUSION_DARK = 0.5           # cells above this share get white digits, the others black


def confusion_cell_texts(matrix, rates):
    """{(true, predicted): text} for the non-empty cells (empty ones stay blank, so that mistakes
    stand out), and the font size; nothing beyond CONFUSION_COUNT_UP_TO classes."""
    C = len(matrix)
    if C > CONFUSION_COUNT_UP_TO:
        return {}, 0
    cells = [(i, j) for i, j in zip(*torch.nonzero(matrix, as_tuple=True))]
    if C <= CONFUSION_PERCENT_UP_TO:
        return {(int(i), int(j)): f"{matrix[i, j]}\n{rates[i, j]:.0%}" for i, j in cells}, 8
    return {(int(i), int(j)): f"{matrix[i, j]}" for i, j in cells}, 5


def confusion_note(C):
    """The title's last line: what colours and numbers mean."""
    numbers = ("numbers: videos, and their share of the row" if C <= CONFUSION_PERCENT_UP_TO else
               "numbers: videos" if C <= CONFUSION_COUNT_UP_TO else
               f"no numbers at {C} classes (too small to read): see --json or --save-scores")
    return f"rows: true class (videos in brackets); colour: share of its videos; {numbers}"


def save_confusion_png(matrix, classnames, path, title=()):
    """A row-normalised confusion matrix as an image, where matplotlib is installed (False
    otherwise): a colour bar, `title` (lines: the run, the split, the scores) over it, the counts
    in the cells where they fit (confusion_cell_texts)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    C = len(classnames)
    rates = matrix.float() / matrix.sum(dim=1, keepdim=True).clamp(min=1)  # true class: sums to 1
    size = min(5 + C * 0.18, 40)
    fig, ax = plt.subplots(figsize=(size + 1, size + 0.6), layout="constrained")  # bar; title
    shown = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    bar = fig.colorbar(shown, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("share of the true class's videos (each row sums to 1)", fontsize=8)
    bar.ax.tick_params(labelsize=8)
    texts, fontsize = confusion_cell_texts(matrix, rates)
    for (i, j), text in texts.items():
        white = rates[i, j] > CONFUSION_DARK
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                color="white" if white else "black")
    if C <= CONFUSION_COUNT_UP_TO:                                     # readable tick labels only
        rows = [f"{name} ({n})" for name, n in zip(classnames, matrix.sum(dim=1).tolist())]
        ax.set_xticks(range(C), classnames, rotation=90, fontsize=6)
        ax.set_yticks(range(C), rows, fontsize=6)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    width = int((size + 1) * 72 / 5.5)                                 # characters of 9 pt a line
    lines = [*title, confusion_note(C)]
    wrapped = [textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False)
               for line in lines]                                     # paths stay whole
    fig.suptitle("\n".join(wrapped), x=0.02, ha="left", fontsize=9)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------------
# Progress: videos done, rate, time left (written by hand: no tqdm dependency)


def clock(seconds):
    if not math.isfinite(seconds):
        return "--:--"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes >= 60:
        return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
    return f"{minutes:02d}:{seconds:02d}"


class Progress:
    """A progress line on stderr. On a terminal one line redrawn in place; in a log, a line every
    `every` s."""

    def __init__(self, total, label, every=30.0, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total, self.label, self.every = total, label, 0.2 if self.tty else every
        self.done, self.start, self.last = 0, time.time(), -math.inf

    def update(self, n):
        self.done = min(self.done + n, self.total)
        now = time.time()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else math.inf
            line = (f"{self.label}: {self.done}/{self.total} videos, {rate:.1f} videos/s, "
                    f"elapsed {clock(now - self.start)}, left {clock(eta)}")
            end = "\n" if self.done == self.total or not self.tty else ""
            print(("\r" if self.tty else "") + line, end=end, file=self.stream, flush=True)


# --------------------------------------------------------------------------------------------------
# Distributed: torchrun starts one process per GPU; each scores a shard, process 0 reports


def setup_distributed(device_name=None):
    """(rank, world_size, device). Plain `python` runs one process; torchrun sets RANK, WORLD_SIZE,
    LOCAL_RANK."""
    on_gpu = torch.cuda.is_available() and device_name != "cpu"
    if "WORLD_SIZE" not in os.environ:
        return 0, 1, torch.device(device_name or ("cuda" if on_gpu else "cpu"))
    rank, world_size, local_rank = (int(os.environ[k])
                                    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if on_gpu:
        torch.cuda.set_device(local_rank)  # all_gather_object under nccl: on the current device
    dist.init_process_group("nccl" if on_gpu else "gloo")
    return rank, world_size, torch.device(f"cuda:{local_rank}" if on_gpu else "cpu")


class ShardSampler(Sampler):
    """Process `rank` of `world_size` takes videos rank, rank + world_size, ...: every video
    exactly once.

    torch's DistributedSampler pads the last shard with repeated videos, which would count them
    twice.
    """

    def __init__(self, size, rank, world_size):
        self.indices = range(rank, size, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def eval_loader(dataset, batch_size, workers, distributed=False, persistent=False):
    """A DataLoader over every video of `dataset`, in order (this process's shard when
    `distributed`).

    No drop_last, no padding: the last batch may be short. Decoding runs in `workers` processes,
    which live on between passes when `persistent` (train.py validates with one loader per run).
    Batches are pinned on CUDA machines, for run_loader's non-blocking copies.
    """
    sampler = None
    if distributed:
        sampler = ShardSampler(len(dataset), dist.get_rank(), dist.get_world_size())
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                      num_workers=workers, pin_memory=torch.cuda.is_available(), drop_last=False,
                      persistent_workers=persistent and workers > 0,
                      worker_init_fn=video_data.ignore_stop_signals)


def gather_in_order(part, size):
    """The (indices, outputs, targets, ok, damaged) of every process, concatenated and put in
    dataset order."""
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, part)                               # CPU tensors, pickled
    columns = zip(*[p for p in parts if p is not None])
    indices, outputs, targets, ok, damaged = (torch.cat(column) for column in columns)
    order = indices.argsort()
    if not torch.equal(indices[order], torch.arange(size)):
        raise RuntimeError(f"the processes scored {len(indices)} videos "
                           f"({len(indices.unique())} distinct) for a dataset of {size}: each "
                           f"process needs eval_loader(..., distributed=True)")
    return outputs[order], targets[order], ok[order], damaged[order]


# --------------------------------------------------------------------------------------------------
# Command line

CHECKPOINT_HELP = ("train one with train.py (it writes <out>/last.pt and best.pt), or download an "
                   "official ActionCLIP release (links in github.com/sallymmx/ActionCLIP's README)")
DEFAULT_SPLIT = {"ucf101": "test", "hmdb51": "test", "charades": "test", "list": "test",
                 "synthetic": "test"}


def positive_int(text):
    """argparse type: an int >= 1."""
    if not text.lstrip("+").isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def count_int(text):
    """argparse type: an int >= 0."""
    if not text.lstrip("+").isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def given_flags(parser, argv=None):
    """The flags given on the command line, without the defaults: {dest: value}. Spends `parser`
    (its defaults are suppressed): pass one that has done its own parsing."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def check_output_files(parser, args, *flags, inputs=()):
    """Each output file given must be a file (not a folder) in an existing, writable folder, and no
    two flags may name the same file, nor an output an input file (flags `inputs`): found now, not
    after the whole run."""
    given = {os.path.realpath(path): flag for flag in inputs
             if (path := getattr(args, flag.lstrip("-").replace("-", "_")))}
    for flag in flags:
        path = getattr(args, flag.lstrip("-").replace("-", "_"))
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            parser.error(f"{flag} {path}: the folder {folder} does not exist; create it first")
        if os.path.isdir(path):
            example = os.path.join(path, "results")
            parser.error(f"{flag} {path} is a folder; give a file name, e.g. {example}")
        if not os.access(folder, os.W_OK):
            parser.error(f"{flag} {path}: the folder {folder} is not writable; choose another")
        same = given.setdefault(os.path.realpath(path), flag)
        if same != flag:
            parser.error(f"{same} and {flag} both name {path}: the run would overwrite "
                         f"{'it' if same in inputs else 'one with the other'}; give two files")


def output_locks(args, *flags):
    """An OutputLock on each output file given, held until the returned stack closes: a second run
    writing the same report ends with one line naming the first. Process 0 alone writes reports,
    so it alone takes them."""
    locks = ExitStack()
    if int(os.environ.get("RANK", 0)) != 0:
        return locks
    for flag in flags:
        path = getattr(args, flag.lstrip("-").replace("-", "_"))
        if not path:
            continue
        try:
            locks.enter_context(video_data.OutputLock.file(path, flag))
        except ValueError as e:                        # in use, or not writable
            locks.close()
            raise SystemExit(f"error: {e}") from None
    return locks


def check_device(parser, args):
    """--device cuda needs a GPU that torch can see."""
    if getattr(args, "device", None) == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is "
                     "False); use --device cpu, or leave --device out to use a GPU when there is "
                     "one")


def check_dataset_flags(parser, args):
    """--dataset list reads its videos and class names from two files that have no default here."""
    if args.dataset == "list" and not (args.list_file and args.classnames_file):
        parser.error("--dataset list needs --list-file FILE ('path label' lines) and "
                     "--classnames-file FILE (class names), both relative to --root")


def add_data_args(parser):
    """The dataset flags evaluate.py and zeroshot.py share."""
    parser.add_argument("--dataset", choices=video_data.DATASETS,
                        help="which dataset's own annotation files to read")
    parser.add_argument("--root",
                        help="the dataset folder in its official layout (default: data/<dataset>)")
    parser.add_argument("--fold", type=int, default=1, choices=(1, 2, 3),
                        help="UCF101/HMDB51: which of the three official splits (default 1)")
    parser.add_argument("--videos-dir",
                        help="Kinetics/Charades: where the videos are, if not below --root")
    parser.add_argument("--list-file",
                        help="--dataset list: 'path label' lines (relative to --root)")
    parser.add_argument("--classnames-file",
                        help="--dataset list: class names, one per line or an 'id,name' CSV")
    parser.add_argument("--prepared",
                        help="folder written by `python video_data.py prepare` for this dataset")
    parser.add_argument("--frames", type=positive_int,
                        help="frames per video, T (default: what a checkpoint was trained with; "
                        "plain CLIP: 8, the paper's)")
    parser.add_argument("--clips", type=positive_int, default=1,
                        help="temporal clips per video, scores averaged over views (default 1, "
                        "the paper's single view; its best results use 10) [Sec. 4.1]")
    parser.add_argument("--crops", type=int, default=1, choices=(1, 3),
                        help="spatial crops per clip: 1 centre crop (default, the paper's) or 3 "
                        "along the long side (its best results)")
    parser.add_argument("--sample-by", choices=video_data.SAMPLE_BY, default="frame",
                        help="frame: T segments of equal frame count (default; the paper's TSN "
                        "sampling); time: of equal duration, by the file's timestamps (variable "
                        "frame rate video, e.g. from phones)")
    parser.add_argument("--no-templates", action="store_true", default=None,
                        help="bare class names instead of the 16-template ensemble (Table 3's "
                        "ablation; the default for a checkpoint trained with --no-text-prompts)")
    parser.add_argument("--templates", dest="no_templates", action="store_false",
                        help="the 16-template ensemble, even for a checkpoint trained on bare "
                        "class names (default: what the checkpoint was trained with; else on)")
    parser.add_argument("--batch-size", type=positive_int, default=16,
                        help="videos per step per process, default 16 (each is clips x crops x "
                        "frames images)")
    parser.add_argument("--workers", type=count_int, default=min(8, os.cpu_count() or 1),
                        help="DataLoader processes decoding videos (default: up to 8, one per "
                        "core)")
    parser.add_argument("--device", choices=("cuda", "cpu"),
                        help="default: cuda when available, else cpu")
    parser.add_argument("--fp32", action="store_true",
                        help="no bf16 autocast on the GPU (the CPU always runs fp32)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first video that cannot be read")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="this project's checkpoint (train.py) or an official ActionCLIP "
                        "release (.pt)")
    add_data_args(parser)
    parser.add_argument("--split", choices=("train", "val", "test"),
                        help="which split (default: test for UCF101/HMDB51/Charades, val for "
                        "Kinetics)")
    parser.add_argument("--save-scores", metavar="FILE",
                        help="write every video's scores, targets and path (torch.save) e.g. to "
                        "fuse two models")
    parser.add_argument("--confusion", metavar="PNG",
                        help="write a confusion matrix image (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.dataset is None:
        parser.error("--dataset is required")
    check_dataset_flags(parser, args)
    check_device(parser, args)
    check_output_files(parser, args, "--json", "--save-scores", "--confusion",
                       inputs=("--checkpoint",))
    return args


def texts_name(bare):
    return "bare class names" if bare else f"the {len(prompts.TEMPLATES)}-template ensemble"


def follow_training(args, checkpoint):
    """Default --no-templates / --templates to what `checkpoint` was trained and validated with (the
    configuration train.py saves in it); a flag that departs from it, or from its frames, gets a
    line saying so. An official release records none of it: the defaults apply."""
    try:
        saved = prompts.read_checkpoint(checkpoint, mmap=True) if checkpoint else {}
    except (FileNotFoundError, ValueError):
        saved = {}                                     # load_checkpoint says what is wrong with it
    trained = dict(saved.get("args") or {})
    frames = (saved.get("model_config") or {}).get("num_frames")
    trained_bare = trained.get("no_text_prompts")
    if args.no_templates is None:
        args.no_templates = bool(trained_bare)
    elif trained_bare is not None and args.no_templates != trained_bare:
        flag = "--no-templates" if args.no_templates else "--templates"
        print(f"{flag}: {texts_name(args.no_templates)}, as asked; {checkpoint} was trained and "
              f"validated with {texts_name(trained_bare)}")
    if args.frames and frames and args.frames != frames:
        print(f"--frames {args.frames}: {args.frames} frames per video, as asked; {checkpoint} was "
              f"trained and validated with {frames}")
    args.texts_as_trained = trained_bare is not None and args.no_templates == trained_bare


def load_checkpoint(path, device, num_frames=None):
    """prompts.load_actionclip, with errors that say how to get a checkpoint."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: no checkpoint at {path}: {CHECKPOINT_HELP}")
    try:
        return prompts.load_actionclip(path, device, num_frames)
    except prompts.TooFewFrames as e:
        raise SystemExit(f"error: --frames {num_frames}: {frames_beyond_training(path, e)}; pass "
                         f"--frames {e.covered} or fewer, or leave --frames out") from None
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def frames_beyond_training(path, error):
    """Why a checkpoint cannot run at more frames than its per-frame tables cover."""
    return (f"{path} has per-frame position tables for {error.covered} frames only (its visual "
            f"prompt, like every transf, transf_cls and joint, runs at most the frames it was "
            f"trained with)")


def dataset_root(args):
    """--root, or data/<dataset>; a folder that is not there ends the run, named, before any model
    loads."""
    root = args.root or os.path.join("data", args.dataset)
    if os.path.isfile(root):
        raise SystemExit(f"error: --root {root} is a file; expected the {args.dataset} folder")
    if not os.path.isdir(root):
        hint = "" if args.root else " (pass --root to say where the dataset is)"
        raise SystemExit(f"error: {args.dataset} root folder not found: expected {root}{hint}")
    return root


def load_dataset_split(args, split, fold=None, may_be_empty=False):
    """video_data.load_split with the command line's dataset flags; a missing file ends the run,
    named, and so does a split without videos (unless `may_be_empty`: one of several joined)."""
    root = dataset_root(args)
    extra = {k: v for k, v in (("videos_dir", args.videos_dir), ("list_file", args.list_file),
                               ("classnames_file", args.classnames_file)) if v}
    try:
        loaded = video_data.load_split(args.dataset, root, split, fold or args.fold, args.prepared,
                                       **extra)
    except (FileNotFoundError, ValueError) as e:
        hint = "" if args.root else " (pass --root to say where the dataset is)"
        raise SystemExit(f"error: {args.dataset} {split}: {e}{hint}") from None
    if not loaded.records and not may_be_empty:        # nothing to evaluate: said before any model
        listed = f"--list-file {os.path.join(root, args.list_file)}" if args.dataset == "list" \
            else f"the {args.dataset} {split} split"
        raise SystemExit(f"error: {no_videos(loaded, listed)}: there is nothing to evaluate; "
                         f"give a list with at least one video")
    return loaded


def no_videos(split, listed):
    """Why `split` (read from `listed`, a file or a split's name) has no videos, for an error."""
    if split.missing:
        return f"none of the {split.missing} videos {listed} lists is on disk"
    return f"{listed} lists no videos"


def clip_of(model):
    return model.actionclip.clip if isinstance(model, prompts.VideoClassifier) else model.clip


def eval_dataset(split, model, args):
    """Test-mode clips of `split` at the model's resolution: (V, T, 3, S, S), V = clips x crops."""
    size = clip_of(model).input_resolution
    transform = video_data.test_transform(size, args.crops, on_device=True)  # uint8 from workers
    return video_data.VideoDataset(split, model.config["num_frames"], "test", transform,
                                   num_clips=args.clips, num_crops=args.crops, strict=args.strict,
                                   sample_by=args.sample_by)


def check_classifier_classes(model, split, checkpoint):
    """A unimodal VideoClassifier scores the classes it was trained on: the evaluated classes must
    be those, in the same order (checkpoints without names are checked by count)."""
    if not isinstance(model, prompts.VideoClassifier):
        return                                                        # texts name the classes
    trained, names = model.config["num_classes"], model.config.get("classnames")
    wanted = split.classnames
    what = f"error: --checkpoint {checkpoint} is a unimodal classifier"
    todo = "evaluate it on the class list it was trained on"
    if trained != len(wanted):
        raise SystemExit(f"{what} of {trained} classes, the split has {len(wanted)}: {todo}")
    if names is not None and list(names) != list(wanted):
        c = next(i for i, (a, b) in enumerate(zip(names, wanted)) if a != b)
        raise SystemExit(f"{what} whose class {c} is {names[c]!r}; the split's class {c} is "
                         f"{wanted[c]!r}: {todo}")


def class_text_features(model, classnames, args, device, dtype):
    """(K, C, E) for every template and class, once per run; None for a unimodal VideoClassifier."""
    if isinstance(model, prompts.VideoClassifier):
        return None
    templates = prompts.LABEL_ONLY if args.no_templates else prompts.TEMPLATES
    try:
        with autocast(device, dtype):
            return prompts.text_features(model, classnames, templates, device=device)
    except ValueError as e:                                           # a class name too long
        raise SystemExit(f"error: {e}") from None


def describe_model(model):
    clip = clip_of(model)
    kind = "ViT" if hasattr(clip.visual, "proj") else "ResNet"
    unimodal = isinstance(model, prompts.VideoClassifier)
    return (f"{kind} CLIP ({clip.input_resolution} px, embed {clip.embed_dim}) + "
            f"{model.config['visual_prompt']} visual prompt, {model.config['num_frames']} frames"
            + (", linear classifier (unimodal)" if unimodal else ""))


def describe_protocol(args, split_name, num_templates):
    views = args.clips * args.crops
    if num_templates is None:
        texts = "classifier, no text"
    else:
        texts = "bare class names" if args.no_templates else \
            f"{num_templates}-template ensemble (mean of per-template softmax)"
        texts += " (as trained)" * getattr(args, "texts_as_trained", False)
    fold = f" split {args.fold}" if args.dataset in ("ucf101", "hmdb51") else ""
    return (f"{args.dataset}{fold} {split_name}; {views_text(args.clips, args.crops)} = "
            f"{views} view{'s' * (views > 1)}{', scores averaged over views' * (views > 1)}; "
            f"text: {texts}")


def write_outputs(args, header, result, preds, split):
    """Text report on stdout; JSON, scores and confusion image where asked."""
    print(format_report(header, result))
    if split.missing:
        print(f"({split.missing} videos listed in the annotations are missing on disk and were "
              f"skipped)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "missing_on_disk": split.missing, **result}, f, indent=1)
    if args.save_scores:
        torch.save({"scores": preds.scores, "targets": preds.targets, "ok": preds.ok,
                    "paths": [r.path for r in split.records], "classnames": split.classnames},
                   args.save_scores)
    if args.confusion and not split.multilabel:
        matrix = confusion_matrix(preds.scores[preds.ok], preds.targets[preds.ok],
                                  len(split.classnames))
        title = [header[0], header[2], headline(result)]             # the run, the split, scores
        if not save_confusion_png(matrix, split.classnames, args.confusion, title):
            print("matplotlib is not installed: no confusion matrix image written (pip install "
                  "matplotlib)", file=sys.stderr)


def positive_float(text):
    """argparse type: a finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def nonnegative_float(text):
    """argparse type: a finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def finite_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def one_line_errors(parser):
    """Make parser.error print one line, `prog: error: message`, without the usage block above."""
    def error(message):
        parser.exit(2, f"{parser.prog}: error: {message}\n")
    parser.error = error
    return parser


def main(argv=None):
    args = parse_args(argv)
    with output_locks(args, "--json", "--save-scores", "--confusion"):
        evaluate_checkpoint(args)


def evaluate_checkpoint(args):
    """main(), once the output files are this run's."""
    rank, world_size, device = setup_distributed(args.device)
    split_name = args.split or DEFAULT_SPLIT.get(args.dataset, "val")
    split = load_dataset_split(args, split_name)          # a data problem is found before loading
    follow_training(args, args.checkpoint)
    model = load_checkpoint(args.checkpoint, device, args.frames)
    check_classifier_classes(model, split, args.checkpoint)
    loader = eval_loader(eval_dataset(split, model, args), args.batch_size, args.workers,
                         distributed=world_size > 1)
    dtype = autocast_dtype(device, "fp32" if args.fp32 else "auto")
    text_feats = class_text_features(model, split.classnames, args, device, dtype)
    try:
        preds = predict_videos(model, loader, text_feats, device, dtype, progress="evaluate")
    except video_data.VideoReadError as e:                            # only with --strict
        raise SystemExit(f"error: {e} (--strict stops at the first video that cannot be "
                         f"read)") from None
    if rank == 0:
        num_templates = None if text_feats is None else len(text_feats)
        header = [f"ActionCLIP evaluation of {video_data.shown_path(args.checkpoint)}",
                  f"model: {describe_model(model)}",
                  f"protocol: {describe_protocol(args, split_name, num_templates)}",
                  f"processes: {world_size}, device: {device.type}"]
        result = summarize(preds, split.classnames, split.multilabel)
        write_outputs(args, header, result, preds, split)
    if dist.is_initialized():
        dist.destroy_process_group()
    if not preds.ok.any():
        raise SystemExit(f"error: none of the {len(preds.ok)} videos could be read: nothing was "
                         f"evaluated")


if __name__ == "__main__":
    main()
