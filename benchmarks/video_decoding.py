"""How fast video_data.py turns videos into training clips (issue #3's acceptance numbers).

Makes 10 s, 30 fps H.264 clips with PyAV (libx264 defaults: crf 23, preset medium, up to 3 B-frames)
at 320x240 and 604x340 (16:9 "340p"), keyframe interval 250 (x264's default) and 30 (one a second),
with textured, moving content. It measures per video
  every frame    decoding and converting every frame to RGB with PyAV's defaults (the baseline)
  read_frames    our reader on 8 frames drawn by train sampling [Sec. 4.1]
as CPU time on ONE core (pinned, one decoder thread: what a DataLoader worker spends), and as wall
time with all cores (read_frames' default threaded decoding against PyAV's defaults), and, for the
prepared forms (`python video_data.py prepare`, short side 256, never up), the full
per-video training cost: read_frames + train_transform(224) (multi-scale crop, flip, colour jitter,
grayscale, normalisation), as videos/s per core.

    python benchmarks/video_decoding.py               # about 4 minutes (2 busy cores)
    python benchmarks/video_decoding.py --repeats 3   # quicker, noisier
    python benchmarks/video_decoding.py --loader-workers 16   # also a 16-worker DataLoader (to the GPU)
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import av
import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import video_data  # noqa: E402

SIZES = ((320, 240), (604, 340))
GOPS = (250, 30)
SECONDS, FPS, T = 10, 30, 8


def textured_clip(width, height, seed):
    """(H, W, 3) uint8 frames: a detailed background panning diagonally, two moving blobs, sensor noise."""
    rng = np.random.default_rng(seed)
    grid = torch.tensor(rng.integers(0, 256, (3, height // 4 + 40, width // 4 + 80)), dtype=torch.float32)
    texture = torch.nn.functional.interpolate(grid[None], scale_factor=4, mode="bicubic")[0].permute(1, 2, 0).numpy()
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(SECONDS * FPS):
        dy, dx = int(40 + 40 * np.sin(i / 40)), i // 2
        frame = texture[dy:dy + height, dx:dx + width].copy()
        for k, colour in enumerate(((220, 40, 40), (40, 60, 230))):
            cx = width / 2 + width / 3 * np.sin(i / (17 + 6 * k) + k)
            cy = height / 2 + height / 4 * np.cos(i / (13 + 4 * k))
            frame[((xx - cx) / (width / 10)) ** 2 + ((yy - cy) / (height / 8)) ** 2 < 1] = colour
        frame += rng.normal(0, 4, frame.shape)
        yield np.clip(frame, 0, 255).astype(np.uint8)


def make_clip(folder, width, height, gop, seed):
    path = os.path.join(folder, f"clip_{width}x{height}_gop{gop}_{seed}.mp4")
    if not os.path.exists(path):
        video_data.write_video(path, textured_clip(width, height, seed), fps=FPS, codec="libx264", gop=gop,
                               options={"crf": "23"})
    return path


def every_frame(path):
    """The baseline: PyAV's defaults, every frame decoded and converted to RGB."""
    with av.open(path) as container:
        for frame in container.decode(video=0):
            frame.to_ndarray(format="rgb24")


def median_ms(fn, paths, repeats, clock=time.process_time):
    """Median milliseconds of fn(path) over paths x repeats (after one warm-up call per path)."""
    for p in paths:
        fn(p)
    times = []
    for _ in range(repeats):
        for p in paths:
            start = clock()
            fn(p)
            times.append(clock() - start)
    return 1000 * statistics.median(times)


def our_reader(path, threads=1):
    n = video_data.count_frames(path)  # cached after the warm-up, as in training
    video_data.read_frames(path, video_data.sample_indices(n, T, "train"), threads=threads)


def index_ms(paths):
    """CPU ms to build the per-video index (one demux pass, once per video and process)."""
    start = time.process_time()
    for p in paths:
        video_data._INDEX_CACHE.clear()
        video_data.count_frames(p)
    return 1000 * (time.process_time() - start) / len(paths)


def prepared_paths(folder, clips, form):
    out = []
    for src in clips:
        dst = os.path.join(folder, "prepared", os.path.splitext(os.path.basename(src))[0]) + (
            ".mp4" if form == "video" else "")
        if not os.path.exists(dst):
            _, error = video_data._prepare_one((src, dst, form, 256, 90, video_data.PREPARED_GOP))
            assert error is None, error
        out.append(dst)
    return out


def training_cost(paths, repeats):
    transform = video_data.train_transform(224)

    def one(path):
        n = video_data.count_frames(path)
        transform(video_data.read_frames(path, video_data.sample_indices(n, T, "train"), threads=1))

    return median_ms(one, paths, repeats)


def size_kb(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) / 1024
    return os.path.getsize(path) / 1024


def wall_ratio(clips, repeats):
    """(baseline, ours) wall milliseconds with every core: PyAV defaults vs read_frames(threads=0)."""
    base = median_ms(every_frame, clips, repeats, time.perf_counter)
    return base, median_ms(lambda p: our_reader(p, threads=0), clips, repeats, time.perf_counter)


def bench_source(clips, width, height, gop, repeats, wall):
    """One table row: baseline vs our reader on one clip configuration, one core (CPU time) and wall."""
    base = median_ms(every_frame, clips, repeats)
    ours = median_ms(our_reader, clips, repeats)
    kbps = statistics.mean(os.path.getsize(c) * 8 / 1000 / SECONDS for c in clips)
    return (f"| {width}x{height} | {gop} | {kbps:.0f} | {base:.1f} | {ours:.1f} | **{base / ours:.2f}x** "
            f"| {wall[0]:.1f} | {wall[1]:.1f} | **{wall[0] / wall[1]:.2f}x** | {index_ms(clips):.1f} |")


def loader_videos_per_s(paths, workers, batches=30, batch_size=32):
    """Videos/s through a DataLoader of `workers` processes (pinned memory, moved to the GPU if
    there is one), train sampling and transforms at 224, after a warm-up of two batches per worker."""
    records = [video_data.VideoRecord(p, 0) for p in paths] * (batches * batch_size // len(paths) * 2 + 1)
    dataset = video_data.VideoDataset(records, T, "train", video_data.train_transform(224))
    loader = DataLoader(dataset, batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=torch.cuda.is_available(), persistent_workers=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch_iter = iter(loader)
    for _ in range(2 * workers):
        next(batch_iter)
    start = time.perf_counter()
    for _ in range(batches):
        videos = next(batch_iter)[0].to(device, non_blocking=True)  # (B, T, 3, 224, 224)
    if device == "cuda":
        torch.cuda.synchronize()
    assert videos.shape == (batch_size, T, 3, 224, 224)
    return batches * batch_size / (time.perf_counter() - start)


def bench_prepared(folder, width, height, clips, repeats):
    rows = []
    for form in ("frames", "video"):
        paths = prepared_paths(folder, clips, form)
        ms = training_cost(paths, repeats)
        h, w = video_data.read_frames(paths[0], [0]).shape[1:3]
        rows.append(f"| {width}x{height} | {form} ({w}x{h}) | {statistics.mean(map(size_kb, paths)):.0f} "
                    f"| {ms:.1f} | {1000 / ms:.1f} |")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=3, help="clips per configuration")
    parser.add_argument("--repeats", type=int, default=10, help="timed reads per clip")
    parser.add_argument("--dir", default=None, help="where to keep the clips (default: a temporary folder)")
    parser.add_argument("--loader-workers", type=int, default=0,
                        help="also measure a DataLoader with this many workers on the prepared forms (0: skip)")
    args = parser.parse_args()
    folder = args.dir or tempfile.mkdtemp(prefix="video_bench_")
    os.makedirs(folder, exist_ok=True)
    configs = [(w, h, gop) for w, h in SIZES for gop in GOPS]
    clips = {c: [make_clip(folder, *c, seed) for seed in range(args.clips)] for c in configs}
    cores, load = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    wall = {c: wall_ratio(clips[c], args.repeats) for c in configs}  # all cores, before pinning
    loader_rows = []
    for workers in filter(None, [args.loader_workers]):
        for (w, h, gop) in configs[::2]:  # the keyframe interval 250 sources
            for form in ("frames", "video"):
                rate = loader_videos_per_s(prepared_paths(folder, clips[w, h, gop], form), workers)
                loader_rows.append(f"| {w}x{h} | {form} | {workers} | {rate:.0f} | {rate / workers:.1f} |")
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # then one core, honestly
    torch.set_num_threads(1)
    source_rows, prepared_rows = [], []
    for c in configs:
        source_rows.append(bench_source(clips[c], *c, args.repeats, wall[c]))
        if c[2] == 250:
            prepared_rows += bench_prepared(folder, c[0], c[1], clips[c], args.repeats)
    print(f"PyAV {av.__version__}, torch {torch.__version__}, {args.clips} clips x {args.repeats} reads per row, "
          f"median per video; one core = pinned, one decoder thread, CPU time; wall = {cores} cores, load "
          f"average {load:.1f} when timing began (wall times mean something only on an idle machine)\n")
    print("| source | keyframe interval | kbit/s | every frame, one core (ms) | read_frames, one core (ms) "
          "| speed-up, one core | every frame, wall (ms) | read_frames, wall (ms) | speed-up, wall "
          "| index, once (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(source_rows))
    print("\n| source | prepared form | size per video (KiB) | decode + train transforms at 224 (ms) "
          "| videos/s per core |")
    print("|---|---|---|---|---|")
    print("\n".join(prepared_rows))
    if loader_rows:
        print(f"\nDataLoader, train sampling + transforms at 224, batches of 32{' to the GPU' if torch.cuda.is_available() else ''}"
              f" ({torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'})\n")
        print("| source | prepared form | workers | videos/s | videos/s per worker |")
        print("|---|---|---|---|---|")
        print("\n".join(loader_rows))


if __name__ == "__main__":
    main()
