"""Zero-shot action recognition [Sec. 4.4, Fig. 3]: classes never trained on, named only in text.

    python zeroshot.py --dataset ucf101              # plain CLIP ViT-B/16, data/ucf101, 3 splits
    python zeroshot.py --dataset hmdb51 --root data/hmdb51 --checkpoint runs/k400/last.pt
    python zeroshot.py --dataset ucf101 --protocol half-classes
    python zeroshot.py --dataset kinetics600 --root data/k600 --checkpoint runs/k400/last.pt \\
        --k600-splits k600_novel_split1.csv k600_novel_split2.csv k600_novel_split3.csv
    python zeroshot.py --video a.mp4 b.mp4 --labels "playing guitar" "riding a bike" "juggling"

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
import json
import math
import os

import numpy as np
import torch
import torch.distributed as dist

import clip_model
import evaluate
import prompts
import video_data

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
        return f"ActionCLIP {args.checkpoint}: {evaluate.describe_model(model)}"
    return (f"plain CLIP {args.weights}, no temporal module: the {model.config['num_frames']} "
            f"frame features are averaged (meanP)")


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


def single_label_split(args, split_name, fold=None):
    """evaluate.load_dataset_split, for single-label datasets only: zero-shot here reports top-k."""
    split = evaluate.load_dataset_split(args, split_name, fold)
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
    for split_name, fold in names:
        split = single_label_split(args, split_name, fold)
        classnames = split.classnames
        for record in split.records:
            records.setdefault(record.path, record)
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
        return f"{path}\n  could not be read (the warning on stderr says why)"
    probability, order = scores.sort(descending=True)
    width = max(len(label) for label in labels)
    rows = [f"  {rank:>2}. {labels[i]:<{width}}  {100 * p:6.2f}%"
            for rank, (p, i) in enumerate(zip(probability[:top].tolist(), order[:top].tolist()), 1)]
    return "\n".join([path] + rows)


def write_json(path, payload):
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=1)


# --------------------------------------------------------------------------------------------------
# Command line


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
                        help="--video: how many labels to print per video")
    args = parser.parse_args(argv)
    if not args.video and not args.dataset:
        parser.error("give --dataset (a benchmark), or --video with --labels / --labels-file")
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
    evaluate.check_output_files(parser, args, "--json",
                                inputs=("--checkpoint", "--weights", "--labels-file"))
    protocol = "--video" if args.video else choose_protocol(args)
    ignored = sorted(IGNORED_BY[protocol].intersection(evaluate.given_flags(parser, argv)))
    if ignored:
        flags = ", ".join("--" + dest.replace("_", "-") for dest in ignored)
        used = protocol if args.video else "--protocol " + protocol
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
        raise SystemExit(f"error: --video: no such file: {', '.join(missing)}")
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
    if not args.video:
        evaluate.dataset_root(args)                        # so does a dataset that is not there
    rank, world_size, device = evaluate.setup_distributed(args.device)
    model = load_model(args, device)
    dtype = evaluate.autocast_dtype(device, "fp32" if args.fp32 else "auto")
    ctx = Context(args, model, device, dtype, distributed=world_size > 1)
    try:
        if args.video:
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
