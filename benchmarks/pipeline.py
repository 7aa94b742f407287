"""Does the data path feed the model? train.py and evaluate.py end to end against the model alone
(issue 11).

    python benchmarks/pipeline.py --cpu-only   # worker ms per training video, before/after (1 min)
    python benchmarks/pipeline.py --json benchmarks/results/h200_pipeline.json   # GPU: both parts
    python benchmarks/pipeline.py --small      # the GPU part's code on the CPU, tiny CLIP (3 min)

Data: synthetic coloured shapes (video_data.make_synthetic_dataset), 256 px H.264 clips of 60
frames, in four forms: the raw video, `prepare --form video` (keyframe every 8), `prepare --form
frames` (JPEG) decoded by the workers, and the same frames decoded on the device (train.py
--decode-on-device on). A few distinct clips are listed many times over, so a large dataset costs
little to make; every listed video is still read and decoded anew.

CPU part: each worker's CPU milliseconds per training video (train.py's own TrainItems, from
train.build_data, and its collate: decode, crop, flip, colour, normalise, batch), with one torch
thread as in a worker, for the float path every worker ran before (video_data.train_transform, all
on the CPU) and for today's (uint8 out, colour work left to the device), alternated in one run.

GPU part (CUDA only): train.train itself, over several epochs with per-epoch validation, gives the
end-to-end videos/s (from metrics.jsonl: the rate over the run so far at each step, which counts
epoch boundaries and validations, from the end of the first epoch, compilation excluded); the same
run's model then trains on one batch already on the device: the model-only videos/s. Then
evaluate.predict_videos end to end against score_views on a batch on the device, for 1 view
and 10 clips x 3 crops. Each figure is end to end / model-only, measured in the same run.
"""

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clip_model  # noqa: E402
import evaluate  # noqa: E402
import prompts  # noqa: E402
import train  # noqa: E402
import video_data  # noqa: E402

FORMS = ("video", "prepared video", "frames", "frames, decoded on device")
CLASSES = [(c, s, m) for c in video_data.COLOURS for s in video_data.SHAPES[:2]
           for m in video_data.MOTIONS]                               # 32 classes
TEXT = dict(context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
            transformer_layers=12)
ARCHS = {"ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                          vision_patch_size=16, **TEXT),
         "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                          vision_patch_size=32, **TEXT)}


# --------------------------------------------------------------------------------------------------
# Data: one synthetic dataset, in the four forms


def repeat_list(root, split, times):
    """List every video of root/<split>.txt `times` times: a large split from a few clips."""
    path = os.path.join(root, f"{split}.txt")
    lines = open(path).readlines()
    with open(path, "w") as f:
        f.writelines(lines * times)


def make_data(root, distinct, train_repeat, val_repeat, workers, size=256):
    """{form: flags that point train.py at it} for the synthetic dataset written under `root`."""
    per_class = max(1, distinct // len(CLASSES))
    for split, videos in (("train", per_class), ("val", max(1, per_class // 2))):
        video_data.make_synthetic_dataset(root, CLASSES, videos, 60, size, split=split)  # 60 frames
    for form in ("video", "frames"):                                  # every split at once
        video_data.prepare("synthetic", root, os.path.join(root, f"prepared_{form}"), form,
                           short_side=size, workers=workers)
    repeat_list(root, "train", train_repeat)
    repeat_list(root, "val", val_repeat)
    base = ["--dataset", "synthetic", "--root", root]
    frames = base + ["--prepared", os.path.join(root, "prepared_frames"), "--decode-on-device"]
    video = base + ["--prepared", os.path.join(root, "prepared_video")]
    return {"video": base, "prepared video": video,
            "frames": frames + ["off"], "frames, decoded on device": frames + ["on"]}


# --------------------------------------------------------------------------------------------------
# CPU: what a worker spends per training video


def training_items(flags, size=224):
    """train.py's TrainItems for these flags (the --arch is not built: only the data path runs)."""
    args = train.parse_args(flags + ["--augment", "official", "--out", os.devnull])
    return train.build_data(args, train.Dist(), *train.load_splits(args), size)[0], args


def worker_ms(items, batch, batches):
    """CPU ms per video of items[(0, i)] for `batches` batches, collated as in training."""
    start = time.process_time()
    for b in range(batches):
        video_data.collate([items[(0, b * batch + k)] for k in range(batch)])
    return 1000 * (time.process_time() - start) / (batch * batches)


def cpu_part(data, repeats, batch, batches):
    """{form: before and after ms}: the float CPU transform and today's, alternated."""
    torch.set_num_threads(1)                                          # as in a DataLoader worker
    figures = {}
    for form in FORMS:
        items, args = training_items(data[form])
        today = items.videos.transform
        float_path = video_data.train_transform(224, randaugment=args.randaugment)  # all on the CPU
        runs = []
        for _ in range(repeats):
            for transform in (float_path, today):
                items.videos.transform = transform
                if transform is float_path:
                    items.videos.read.jpeg_bytes = False              # workers decoded JPEG frames
                else:
                    items.videos.read.jpeg_bytes = "on" in args.decode_on_device
                runs.append(worker_ms(items, batch, batches))
        before, after = min(runs[0::2]), min(runs[1::2])              # the least disturbed of each
        figures[form] = dict(before_ms=round(before, 2), after_ms=round(after, 2),
                             ratio=round(before / after, 2))
        print(f"| {form} | {before:.2f} | {after:.2f} | {before / after:.2f} |", flush=True)
    return figures


# --------------------------------------------------------------------------------------------------
# GPU: end to end against the model alone, in one run


def random_clip_file(arch, folder):
    """A CLIP file of `arch`'s official shape, random weights (train.py --arch takes a file)."""
    if arch == "tiny":
        return arch
    path = os.path.join(folder, arch.replace("/", "-") + ".pt")
    if not os.path.exists(path):
        torch.save(clip_model.CLIP(**ARCHS[arch]).state_dict(), path)
    return path


def end_to_end_rate(out, batch, steps_per_epoch):
    """Videos/s of a finished train.py run from the end of its first epoch to its last step, from
    the rate over the run so far that metrics.jsonl records at every step (validation included)."""
    records = map(json.loads, open(os.path.join(out, "metrics.jsonl")))
    elapsed = {r["step"]: r["step"] * batch / r["videos_per_s_run"]   # seconds since step 0
               for r in records if "videos_per_s_run" in r}
    first, last = steps_per_epoch, max(elapsed)
    return (last - first) * batch / (elapsed[last] - elapsed[first])


def model_only_train_rate(run, steps=20, warmup=3):
    """Videos/s of the same run's optimiser step on one normalised batch already on the device."""
    B, T, S = run.micro_batch, run.args.frames, run.model.clip.input_resolution
    video = torch.randn(B, T, 3, S, S, device=run.ddp.device)
    labels = torch.arange(B, device=run.ddp.device) % len(run.classnames)
    templates = torch.zeros_like(labels)                 # template 0 around each video's class
    batches = itertools.repeat((video, labels, templates, labels))  # float input: passed through
    for _ in range(warmup):
        train.train_step(run, batches)
    start = time.perf_counter()
    for _ in range(steps):
        train.train_step(run, batches)                  # ends with .item(): synchronised
    return steps * run.args.batch_size / (time.perf_counter() - start)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_part(flags, arch, folder, epochs, workers, batch):
    out = tempfile.mkdtemp(dir=folder)
    shutil.rmtree(out)
    compile_ = ["--compile"] if torch.cuda.is_available() else []
    args = train.parse_args(flags + compile_ + [
        "--arch", random_clip_file(arch, folder), "--frames", "8", "--batch-size", str(batch),
        "--epochs", str(epochs), "--workers", str(workers), "--log-every", "1",
        "--augment", "official", "--no-randaugment", "--out", out])
    run = train.train(args)
    end_to_end = end_to_end_rate(out, batch, run.steps_per_epoch)
    model_only = model_only_train_rate(run)
    return run, dict(arch=arch, steps_per_epoch=run.steps_per_epoch,
                     end_to_end=round(end_to_end, 1), model_only=round(model_only, 1),
                     ratio=round(end_to_end / model_only, 3))


def evaluate_part(run, clips, crops, batch, workers):
    """evaluate.predict_videos end to end on the run's validation split, against score_views on a
    batch already on the device."""
    model, device = run.model.eval(), run.ddp.device
    dtype = run.dtype                                        # None: fp32, as train.predict
    split = video_data.DatasetSplit(run.val.records, run.classnames)
    views = argparse.Namespace(crops=crops, clips=clips, strict=False, sample_by="frame")
    dataset = evaluate.eval_dataset(split, model, views)
    with run.autocast:
        text = prompts.text_features(model, run.classnames, run.templates, device=device)
    loader = evaluate.eval_loader(dataset, batch, workers)
    # warm-up: the page cache
    evaluate.predict_videos(model, loader, text, device, dtype, progress=None)
    start = time.perf_counter()
    evaluate.predict_videos(model, loader, text, device, dtype, progress=None)
    end_to_end = len(dataset) / (time.perf_counter() - start)
    S, V = model.clip.input_resolution, clips * crops
    video = torch.randn(batch, V, run.args.frames, 3, S, S, device=device)
    with torch.no_grad(), run.autocast:
        for _ in range(3):
            evaluate.score_views(model, video, text)
        synchronize(device)
        start, steps = time.perf_counter(), max(5, 400 // (batch * V) + 1)
        for _ in range(steps):
            evaluate.score_views(model, video, text)
        synchronize(device)
    model_only = steps * batch / (time.perf_counter() - start)
    return dict(views=f"{clips}x{crops}", end_to_end=round(end_to_end, 1),
                model_only=round(model_only, 1), ratio=round(end_to_end / model_only, 3))


def gpu_part(data, folder, args, save):
    large, small = ("tiny", "tiny") if args.small else ("ViT-B/16", "ViT-B/32")
    figures, batch = [], 8 if args.small else 32
    plan = [(large, form, []) for form in args.forms]
    plan += [(large, "prepared video", ["--shots", str(batch // 4)])]  # 32 x batch/4: 8 steps
    plan += [(small, form, []) for form in ("frames", "frames, decoded on device")]
    for arch, form, extra in plan:
        run, row = train_part(data[form] + extra, arch, folder, args.epochs, args.workers, batch)
        row.update(form=form, shots=bool(extra))
        print(json.dumps(row), flush=True)
        figures.append(row)
        if arch == large and form == "prepared video" and not extra:
            for clips, crops, eval_batch in ((1, 1, batch), (10, 3, max(1, batch // 16))):
                row = evaluate_part(run, clips, crops, eval_batch, args.workers)
                row.update(form=form, arch=arch)
                print(json.dumps(row), flush=True)
                figures.append(row)
        del run
        torch._dynamo.reset()  # the next run compiles afresh, not against this run's guards
        save(figures)
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distinct", type=int, default=None,
                        help="distinct training clips (default: 128 on CUDA, 32 on the CPU)")
    parser.add_argument("--videos", type=int, default=1024,
                        help="listed training videos (GPU part)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs of each training run (GPU part)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="DataLoader workers (GPU part)")
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS),
                        help="data forms (GPU part)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="CPU part: alternated repeats of before and after")
    parser.add_argument("--cpu-only", action="store_true",
                        help="skip the GPU part even where CUDA exists")
    parser.add_argument("--small", action="store_true",
                        help="run the GPU part's code here, CUDA or not: a tiny CLIP, 64 px clips, "
                        "128 videos, batch 8 (checks the code, not the speed)")
    parser.add_argument("--json", help="write every figure to this JSON file")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.cpu_only
    gpu = cuda or args.small
    if args.small:
        args.videos, args.distinct = 128, args.distinct or 32
    distinct = args.distinct or (128 if cuda else 32)
    machine = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)"
    figures = {"machine": machine, "torch": torch.__version__, "cpu_cores": os.cpu_count()}
    def save():
        if args.json:
            json.dump(figures, open(args.json, "w"), indent=1)
    with tempfile.TemporaryDirectory() as folder:
        root = os.path.join(folder, "data")
        repeat = max(1, args.videos // distinct) if gpu else 1
        data = make_data(root, distinct, repeat, 2 if gpu else 1, os.cpu_count(),
                         size=64 if args.small else 256)
        print("| form | before: worker ms per video | after | before / after |\n|---|---|---|---|")
        figures["worker_ms_per_training_video"] = cpu_part(data, args.repeats, batch=8, batches=4)
        save()
        if gpu:
            figures["gpu"] = gpu_part(data, folder, args,
                                      lambda rows: (figures.update(gpu=rows), save()))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
