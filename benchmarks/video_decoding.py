"""How fast video_data.py turns videos into training clips (issue #3's acceptance numbers).

Makes 10 s, 30 fps H.264 clips with PyAV (libx264 defaults: crf 23, preset medium, up to 3 B-frames)
at 320x240 and 604x340 (16:9 "340p"), keyframe interval 250 (x264's default) and 30 (one a second),
with textured, moving content. It measures per video
  every frame    decoding and converting every frame to RGB with PyAV's defaults (the baseline)
  read_frames    our reader on 8 frames drawn by train sampling [Sec. 4.1]
  decode floor   decoding, from memory, only the packets those 8 frames depend on (no file, seek or
                 RGB conversion): a lower bound for ANY exact reader built on FFmpeg's decoder, so
                 every frame / decode floor bounds the speed-up such a reader can reach
as CPU time on ONE core (pinned, one decoder thread: what a DataLoader worker spends), and as wall
time with all cores (read_frames' default threaded decoding against PyAV's defaults), and, for the
prepared forms (`python video_data.py prepare`, short side 256, never up), the full
per-video training cost: read_frames + train_transform(224) (multi-scale crop, flip, colour jitter,
grayscale, normalisation), as videos/s per core.

    python benchmarks/video_decoding.py               # about 4 minutes (2 busy cores)
    python benchmarks/video_decoding.py --draws 3     # quicker, noisier
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


def fastest_ms(fn, tries=3, clock=time.process_time):
    """Milliseconds of fn(), the fastest of `tries` calls (the first also warms caches)."""
    times = []
    for _ in range(tries):
        start = clock()
        fn()
        times.append(clock() - start)
    return 1000 * min(times)


def train_draws(path, draws, seed):
    """`draws` fixed sets of 8 train-sampled frame indices [Sec. 4.1]: every contestant reads the same."""
    generator = torch.Generator().manual_seed(seed)
    n = video_data.count_frames(path)  # cached from here on, as in training
    return [video_data.sample_indices(n, T, "train", generator=generator) for _ in range(draws)]


# ----------------------------------------------------------------------------------------------------
# The decode floor: what any exact reader built on FFmpeg's decoder must spend


def required_packets(path, indices):
    """(codec name, extradata, runs, wanted): the packets an exact reader must decode for `indices`.

    For each keyframe that wanted frames follow, the packets from that keyframe in decode order up
    to the last wanted frame's, less the unwanted frames no other frame is predicted from (which
    read_frames skips too). Every other packet before the last wanted one is a reference frame that a
    wanted frame may depend on: no decoder can tell which it will need without decoding it. Packets
    carry their decode-order number as pts, as read_frames tags them; wanted maps a tag to its
    frame."""
    index = video_data._video_index(path)
    with av.open(path) as container:
        stream = video_data._main_stream(path, container)
        is_nonref = video_data._nonref_test(stream) if index.skip_nonref else None
        packets = [p for p in container.demux(stream) if p.size]
        codec, extradata = stream.codec_context.name, stream.codec_context.extradata
    for number, packet in enumerate(packets):
        packet.pts = number
    runs, todo = [], sorted(set(indices))
    while todo:
        key = index.keyframe_at_or_before(todo[0])
        run = {w for w in todo if index.keyframe_at_or_before(w) == key}
        pending = {int(index.source[w]) for w in run}
        start, chosen = index.key_packets[key] if key >= 0 else 0, []
        for packet in packets[start:]:
            if packet.pts not in pending and is_nonref is not None and is_nonref(packet):
                continue
            chosen.append(packet)
            pending.discard(packet.pts)
            if not pending:
                break
        runs.append(chosen)
        todo = [w for w in todo if w not in run]
    wanted = {int(index.source[i]): i for i in set(indices)}
    return codec, extradata, runs, wanted


def decode_floor(codec, extradata, runs, wanted):
    """Decode `runs` of in-memory packets with one thread and convert the wanted frames to RGB: no
    file, demuxer, seek or Python bookkeeping. Returns {frame index: (H, W, 3) uint8} of the wanted
    frames."""
    decoder = av.CodecContext.create(codec, "r")
    decoder.extradata = extradata
    decoder.thread_count = 1
    out = {}
    for run in runs:
        for packet in run + [None]:  # None drains the decoder at the end of each run
            for frame in decoder.decode(packet):
                if frame.pts in wanted:
                    out[wanted[frame.pts]] = frame.to_ndarray(format="rgb24")
        decoder.flush_buffers()
    return out


def our_reader(path, indices, threads=1):
    video_data.read_frames(path, indices, threads=threads)


def one_core_ms(clips, draws):
    """Mean CPU ms per video, one core: (every frame, read_frames, decode floor); the sampled two
    on the same fixed draws."""
    base = statistics.mean(fastest_ms(lambda: every_frame(p)) for p in clips)
    ours, floor = [], []
    for seed, path in enumerate(clips):
        for indices in train_draws(path, draws, seed):
            work = required_packets(path, indices)
            ours.append(fastest_ms(lambda: our_reader(path, indices)))
            floor.append(fastest_ms(lambda: decode_floor(*work)))
    return base, statistics.mean(ours), statistics.mean(floor)


def wall_ms(clips, draws):
    """Mean wall ms per video with every core: (PyAV's defaults on every frame, read_frames with
    PyAV's threaded decoding)."""
    base = statistics.mean(fastest_ms(lambda: every_frame(p), clock=time.perf_counter) for p in clips)
    ours = [fastest_ms(lambda: our_reader(path, indices, threads=0), clock=time.perf_counter)
            for seed, path in enumerate(clips) for indices in train_draws(path, draws, seed)]
    return base, statistics.mean(ours)


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
            job = (src, dst, form, 256, 90, video_data.PREPARED_GOP)
            _, error, _ = video_data._prepare_one(job)
            assert error is None, error
        out.append(dst)
    return out


def training_cost(paths, draws):
    """Mean CPU ms per video of read_frames + train_transform(224), on fixed train draws."""
    transform = video_data.train_transform(224)
    return statistics.mean(fastest_ms(lambda: transform(video_data.read_frames(path, indices, threads=1)))
                           for seed, path in enumerate(paths) for indices in train_draws(path, draws, seed))


def size_kb(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) / 1024
    return os.path.getsize(path) / 1024


def bench_source(clips, width, height, gop, draws):
    """One table row: baseline, our reader and the decode floor on one clip configuration, one core."""
    base, ours, floor = one_core_ms(clips, draws)
    kbps = statistics.mean(os.path.getsize(c) * 8 / 1000 / SECONDS for c in clips)
    return (f"| {width}x{height} | {gop} | {kbps:.0f} | {base:.1f} | {ours:.1f} | **{base / ours:.2f}x** "
            f"| {floor:.1f} | {base / floor:.2f}x | {index_ms(clips):.1f} |")


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


def bench_prepared(folder, width, height, clips, draws):
    rows = []
    for form in ("frames", "video"):
        paths = prepared_paths(folder, clips, form)
        ms = training_cost(paths, draws)
        h, w = video_data.read_frames(paths[0], [0]).shape[1:3]
        rows.append(f"| {width}x{height} | {form} ({w}x{h}) | {statistics.mean(map(size_kb, paths)):.0f} "
                    f"| {ms:.1f} | {1000 / ms:.1f} |")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=3, help="clips per configuration")
    parser.add_argument("--draws", type=int, default=10,
                        help="train-sampled frame sets per clip (each read timed as the fastest of 3)")
    parser.add_argument("--dir", default=None, help="where to keep the clips (default: a temporary folder)")
    parser.add_argument("--loader-workers", type=int, default=0,
                        help="also measure a DataLoader with this many workers on the prepared forms (0: skip)")
    args = parser.parse_args()
    folder = args.dir or tempfile.mkdtemp(prefix="video_bench_")
    os.makedirs(folder, exist_ok=True)
    configs = [(w, h, gop) for w, h in SIZES for gop in GOPS]
    clips = {c: [make_clip(folder, *c, seed) for seed in range(args.clips)] for c in configs}
    cores, load = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    wall = {c: wall_ms(clips[c], args.draws) for c in configs}  # all cores, before pinning
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
        source_rows.append(bench_source(clips[c], *c, args.draws))
        if c[2] == 250:
            prepared_rows += bench_prepared(folder, c[0], c[1], clips[c], args.draws)
    print(f"PyAV {av.__version__}, torch {torch.__version__}, {args.clips} clips x {args.draws} train draws per row, "
          f"each read timed as the fastest of 3, means per video. One core: pinned, one decoder thread, CPU time.\n")
    print("| source | keyframe interval | kbit/s | every frame (ms) | read_frames (ms) | speed-up "
          "| decode floor (ms) | best possible speed-up | index, once (ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(source_rows))
    print(f"\nWall time with all {cores} cores: PyAV's defaults against read_frames' threaded decoding "
          f"(load average {load:.1f} when timing began; wall times mean something only on an idle machine)\n")
    print("| source | keyframe interval | every frame, wall (ms) | read_frames, wall (ms) | speed-up, wall |")
    print("|---|---|---|---|---|")
    print("\n".join(f"| {w}x{h} | {gop} | {wall[w, h, gop][0]:.1f} | {wall[w, h, gop][1]:.1f} "
                    f"| **{wall[w, h, gop][0] / wall[w, h, gop][1]:.2f}x** |" for w, h, gop in configs))
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
