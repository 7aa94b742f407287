"""zeroshot.py --index / --search / --timeline: speed against their floors, and quality, in one run.

    python benchmarks/video_index.py indexing   # indexing rate / model-only rate, same batches
    python benchmarks/video_index.py search     # search over 1,000,000 windows / one read of them
    python benchmarks/video_index.py quality --demo runs/demo   # after `python train.py --demo`

indexing: ViT-B/16 of the official shape with random weights (the speed is the same), plain CLIP,
8 frames, batch 4, on the CPU. Videos: 320 x 240, 25 fps, x264's default keyframe interval (250),
moving shapes on a textured background. The model-only rate encodes the very batches the index's
DataLoader produced, decoded beforehand; the two are timed alternately, repeat by repeat, so that a
busy machine slows both alike.
search: random unit vectors in fp16, E = 512, as the index stores them; the floor is one pass over
them (torch's sum of the fp16 table); the file is written and read back for its size.
quality: the demo's transf checkpoint; its held-out videos indexed, each seen class's name searched
(recall@5: its videos among the top 5); a long video of 12 recognised classes, each one continuous,
slower action (no jump at a clip's end), through --timeline (the share of windows whose top label
is the class of the segment holding most of the window), then the same at other speeds and windows.
"""

import argparse
import contextlib
import csv
import io
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import clip_model  # noqa: E402
import prompts  # noqa: E402
import video_data  # noqa: E402
import zeroshot  # noqa: E402
from util import video_index  # noqa: E402

VIT_B16 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
               vision_patch_size=16, context_length=77, vocab_size=49408, transformer_width=512,
               transformer_heads=8, transformer_layers=12)


def machine():
    return (f"{os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f} at start")


# --------------------------------------------------------------------------------------------------
# Indexing against the model alone


def textured_video(path, seconds, fps=25, size=(240, 320), seed=0):
    rng = np.random.default_rng(seed)
    h, w = size
    background = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    frames = []
    for i in range(int(seconds * fps)):
        frame = np.roll(background, i, axis=1).copy()
        x, y = (20 + 3 * i) % (w - 40), (40 + i) % (h - 40)
        frame[y:y + 40, x:x + 40] = (230, 40, 40)
        frames.append(frame)
    return video_data.write_video(path, frames, fps=fps)


def index_args(folder, out, workers):
    return zeroshot.parse_args(["--index", folder, "--out", out, "--weights", "unused.pt",
                                "--device", "cpu", "--workers", str(workers), "--batch-size", "4",
                                "--frames", "8"])


def indexing(args):
    work = tempfile.mkdtemp(prefix="video_index_bench_")
    for k in range(args.videos):
        textured_video(os.path.join(work, f"v{k}.mp4"), args.seconds, seed=k)
    torch.manual_seed(0)
    model = prompts.ActionCLIP(clip_model.CLIP(**VIT_B16), "meanP", 8).eval()
    videos = video_index.list_videos(work, video_data.VIDEO_EXTS)
    a = index_args(work, os.path.join(work, "x.idx"), args.workers)
    ctx = zeroshot.Context(a, model, torch.device("cpu"), None, distributed=False)
    meta = zeroshot.index_meta(a, model)
    embedder = zeroshot.window_embedder(a, ctx)
    plans, _ = video_index.plan_videos(videos, zeroshot.probe_video, meta, zeroshot.window_sampling)
    windows = sum(len(p.windows) for p in plans)
    decoded = [video for video, *_ in
               embedder.make_loader(video_index.WindowDataset(
                   [(p.path, w[2]) for p in plans for w in p.windows], zeroshot.read_window,
                   embedder.transform, embedder.shape))]                # the same batches, decoded

    def model_only():
        for video in decoded:
            embedder.encode(video)

    def index():
        out = os.path.join(work, "x.idx")
        if os.path.exists(out):
            os.remove(out)
        video_index.build_index(out, videos, meta, zeroshot.probe_video, zeroshot.window_sampling,
                                embedder)

    times = {"model only": [], "index (decode in workers)": []}
    model_only()                                                       # warm-up
    for _ in range(args.repeats):
        for name, fn in zip(times, (model_only, index)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    rates = {name: windows / statistics.median(t) for name, t in times.items()}
    print(f"{machine()}\nViT-B/16 (random weights), plain CLIP meanP, 8 frames, batch 4, "
          f"{args.workers} DataLoader worker(s); {len(videos)} videos of {args.seconds:g} s = "
          f"{windows} windows (10 s every 5 s); median of {args.repeats}\n")
    print("| path | windows/s | frames/s | ratio |\n| --- | --- | --- | --- |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.3f} | {8 * rate:.2f} | "
              f"{rate / rates['model only']:.2f} |")
    print(f"\nall times (s): {json.dumps({k: [round(x, 2) for x in v] for k, v in times.items()})}")


# --------------------------------------------------------------------------------------------------
# Search over a million windows against one read of them


def search(args):
    N, E = args.windows, 512
    g = torch.Generator().manual_seed(0)
    table = torch.empty(N, E, dtype=torch.float16)
    for i in range(0, N, 1 << 16):
        rows = torch.randn(min(1 << 16, N - i), E, generator=g)
        table[i:i + len(rows)] = torch.nn.functional.normalize(rows, dim=1).half()
    embeddings = table.numpy()
    query = torch.nn.functional.normalize(torch.randn(E, generator=g), dim=0)
    times = {"floor: one read (fp16 sum)": [], "search, top 10": []}
    for _ in range(args.repeats):
        for name, fn in zip(times, (lambda: table.sum(),
                                    lambda: video_index.search(embeddings, query, 10))):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    scores, rows = video_index.search(embeddings, query, 10)
    q64 = query.double().numpy()
    exact = np.argsort(-np.concatenate([chunk.astype(np.float64) @ q64 for chunk in
                                        np.array_split(embeddings, 64)]))[:10]
    floor = statistics.median(times["floor: one read (fp16 sum)"])
    print(f"{machine()}\n{N:,} windows, E = {E}, fp16 ({embeddings.nbytes / 1e9:.3f} GB); "
          f"median of {args.repeats}\n")
    print("| what | s | GB/s | ratio to the floor |\n| --- | --- | --- | --- |")
    for name, t in times.items():
        m = statistics.median(t)
        print(f"| {name} | {m:.3f} | {embeddings.nbytes / m / 1e9:.2f} | {m / floor:.2f} |")
    print(f"\ntop 10 equal to an fp64 ranking: {rows.tolist() == exact.tolist()}")
    index_size(N, E)


def index_size(N, E, T=8):
    """Write an index of N windows (1,000 videos), read it back: its size on disk and in memory."""
    meta = {"format": video_index.FORMAT, "version": video_index.VERSION, "embed_dim": E,
            "frames": T, "size": 224, "window": 10.0, "stride": 5.0, "weights_sha256": "x"}
    per = N // 1000
    videos = {f"/data/videos/some_folder/video_{k:05d}.mp4": video_index.Video(
        1, 1, 25.0, 25 * 5 * per, np.zeros((per, E), np.float16), np.zeros(per, np.float32),
        np.zeros(per, np.float32), np.zeros((per, T), np.int32)) for k in range(1000)}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "million.idx")
        video_index.VideoIndex(meta, videos).save(path)
        disk = os.path.getsize(path)
        memory = sum(a.nbytes for a in np.load(path).values())
    print(f"index of {N:,} windows (1,000 videos, T = {T}): {disk / 1e9:.3f} GB on disk, "
          f"{memory / 1e9:.3f} GB of arrays in memory")


# --------------------------------------------------------------------------------------------------
# Quality on the demo's synthetic videos


def demo_model_args(demo, extra):
    checkpoint = os.path.join(demo, "transf", "best.pt")
    return ["--checkpoint", checkpoint, "--device", "cpu", "--workers", "1", *extra]


def quality(args):
    data = os.path.join(args.demo, "data")
    split = video_data.load_split("synthetic", data, "val")
    work = tempfile.mkdtemp(prefix="video_index_quality_")
    out = os.path.join(work, "val.idx")
    zeroshot.main(["--index", os.path.join(data, "videos", "val"), "--out", out,
                   *demo_model_args(args.demo, [])])
    index = np.load(out)
    label_of = {os.path.abspath(r.path): r.label for r in split.records}
    truth = np.array([label_of[p] for p in index["paths"][index["window_file"]]])
    hit, share = [], []
    for c, name in enumerate(split.classnames):
        result = os.path.join(work, "hits.json")
        zeroshot.main(["--search", name, "--index", out, "--top", "5", "--json", result,
                       "--no-templates", *demo_model_args(args.demo, [])[:4]])
        hits = json.load(open(result))["hits"]
        found = sum(truth[hit_row(index, h)] == c for h in hits)
        hit.append(found > 0)
        share.append(found / min(5, int((truth == c).sum())))
    hit, share = np.array(hit), np.array(share)
    known = recognised(args, split, index, truth)
    print(f"\n{len(split.classnames)} seen classes, {int((truth == 0).sum())} held-out videos "
          f"each; the checkpoint recognises {known.sum()} (per-class top-1 >= 50% on them)")
    print("| classes | R@5 (a video of the class in the top 5) | share of the top 5 that are the "
          "class's |\n| --- | --- | --- |")
    for what, keep in (("recognised", known), ("all", np.ones_like(known))):
        print(f"| {what} ({keep.sum()}) | {hit[keep].mean():.3f} | {share[keep].mean():.3f} |")
    timeline(args, split, known, work)
    sweep(args, split, known, work)


def sweep(args, split, known, work):
    """The same long video's construction at other speeds and windows: a window short against
    its segment sees too little of the (slow) motion; a long one crosses a cut more often."""
    print("\nother settings (segment frames at 30 fps, window s, stride s): windows right, "
          "inside one segment / across a cut / all")
    print("| segment | window | stride | inside one segment | across a cut | all |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for frames, window, stride in ((32, 0.5, 0.25), (48, 1.6, 0.4), (48, 1, 0.25),
                                   (96, 2, 0.5), (160, 1, 0.5), (160, 2, 0.5), (240, 3, 0.5)):
        folder = os.path.join(work, f"sweep_{frames}_{window:g}_{stride:g}")
        os.makedirs(folder)
        setting = argparse.Namespace(**{**vars(args), "segment_frames": frames,
                                        "window": window, "stride": stride})
        result = timeline(setting, split, known, folder, quiet=True)
        print(f"| {frames} ({frames / 30:.2f} s) | {window:g} | {stride:g} | " + " | ".join(
            f"{right:.3f} of {count}" for count, right in result.values()) + " |")


def recognised(args, split, index, truth):
    """Per class: does the checkpoint classify at least half of its held-out videos right (the
    index's embeddings against the bare class names, as the demo trained)?"""
    model = prompts.load_actionclip(demo_model_args(args.demo, [])[1])
    text = prompts.text_features(model, split.classnames, prompts.LABEL_ONLY)[0]   # (C, E)
    predicted = (torch.from_numpy(index["embeddings"].astype(np.float32)) @ text.T).argmax(1)
    return np.array([(predicted.numpy()[truth == c] == c).mean() >= 0.5
                     for c in range(len(split.classnames))])


def hit_row(index, hit):
    f = index["paths"].tolist().index(hit["path"])
    rows = np.flatnonzero((index["window_file"] == f) & (index["start_s"] == hit["start_s"]))
    return int(rows[0])


def timeline(args, split, known, work, quiet=False):
    """A long video of --segments recognised classes, each one continuous action (no jump back)
    rendered as the demo renders its videos (32 px, 30 fps, the same travel) but over
    --segment-frames frames instead of 16, so slower; --timeline with windows of --window s every
    --stride s. A window is scored against the class of the segment that holds most of it. The
    defaults are what a user who knows the actions last about 1.6 s would pick: a window holding
    most of one action (1.2 s, which the demo model needs to see the motion), slid by a quarter of
    it (0.3 s), so not aligned to the cuts."""
    rng = np.random.default_rng(0)
    classes = rng.permutation(np.flatnonzero(known))[:args.segments]
    frames = []
    for c in classes:
        colour, shape, motion = split.classnames[c].split(" ", 2)
        frames.append(video_data.render_action(colour, shape, motion, rng,
                                               num_frames=args.segment_frames))
    fps = 30                                                  # write_video's default, as the demo's
    long = video_data.write_video(os.path.join(work, "long.mp4"), np.concatenate(frames), fps=fps,
                                  options=video_data.SYNTHETIC_X264)
    csv_path = os.path.join(work, "long.csv")
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        zeroshot.main(["--video", long, "--labels", *split.classnames, "--timeline", csv_path,
                       "--window", f"{args.window:g}", "--stride", f"{args.stride:g}",
                       "--no-templates", *demo_model_args(args.demo, [])])
    rows = list(csv.DictReader(open(csv_path)))
    segment = args.segment_frames / fps
    duration = len(classes) * segment
    kinds = {"inside one segment": [], "across a cut": []}
    for row in rows:                                   # segment k is [k * segment, (k+1) * segment)
        start, end = float(row["start_s"]), min(float(row["end_s"]), duration)
        edges = np.arange(len(classes) + 1) * segment
        overlap = np.clip(np.minimum(edges[1:], end) - np.maximum(edges[:-1], start), 0, None)
        inside = np.count_nonzero(overlap > 1e-6) == 1
        most = np.flatnonzero(overlap > overlap.max() - 1e-6)       # two on a tie: either counts
        kinds["inside one segment" if inside else "across a cut"].append(
            row["label_1"] in {split.classnames[classes[k]] for k in most})
    everything = kinds["inside one segment"] + kinds["across a cut"]
    if quiet:
        return {kind: (len(right), float(np.mean(right))) for kind, right in
                (*kinds.items(), ("all", everything))}
    print(f"\ntimeline: {duration:g} s, {len(classes)} recognised classes, each one continuous "
          f"action of {args.segment_frames} frames at {fps} fps ({segment:.2f} s; a demo video is "
          f"16 frames, {16 / fps:.2f} s); windows of {args.window:g} s every {args.stride:g} s; "
          f"files in {work}\nsegments in order: " + ", ".join(split.classnames[c] for c in classes))
    print("| windows | count | top label is the class of the segment holding most of the window "
          "|\n| --- | --- | --- |")
    for kind, right in (*kinds.items(), ("all", everything)):
        print(f"| {kind} | {len(right)} | {np.mean(right):.3f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("indexing", "search", "quality"))
    parser.add_argument("--videos", type=int, default=2, help="indexing: videos")
    parser.add_argument("--seconds", type=float, default=40, help="indexing: seconds per video")
    parser.add_argument("--workers", type=int, default=1, help="indexing: DataLoader workers")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each, alternated")
    parser.add_argument("--windows", type=int, default=1_000_000, help="search: index rows")
    parser.add_argument("--demo", default=os.path.join("runs", "demo"), help="quality: the demo's "
                        "--out (its data/ and transf/best.pt)")
    parser.add_argument("--segments", type=int, default=12, help="quality: classes in the long "
                        "video")
    parser.add_argument("--segment-frames", type=int, default=48, help="quality: frames of each "
                        "class's continuous action in the long video (30 fps)")
    parser.add_argument("--window", type=float, default=1.2, help="quality: --timeline's window")
    parser.add_argument("--stride", type=float, default=0.3, help="quality: --timeline's stride")
    args = parser.parse_args()
    {"indexing": indexing, "search": search, "quality": quality}[args.part](args)


if __name__ == "__main__":
    main()
