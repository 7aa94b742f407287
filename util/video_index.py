"""A folder of videos as an index of embeddings: build it, update it, shard it, search it, draw it.

zeroshot.py's --index, --search and --timeline run on this. It imports no method file: the model
comes in as functions (`encode`: a uint8 batch of frames -> L2-normalised embeddings; `read`: a
path and frame indices -> uint8 frames; `sample`: a frame count and T -> T frame indices).

The index file (NAME.idx) is an uncompressed .npz, read with numpy alone:

    import json, numpy as np
    index = np.load("videos.idx")
    meta = json.loads(str(index["meta"]))           # model, weights hash, sampling settings
    E = index["embeddings"].astype(np.float32)      # (N, E): one row per window, L2-normalised
    path = index["paths"][index["window_file"]]     # (N,): the video of each window
    index["start_s"], index["end_s"]                # (N,): the window's time range in seconds
    index["frame_indices"]                          # (N, T): the frames the model saw (0-based)

Per video (F of them, in path order): paths, sizes and mtimes_ns (a rerun re-embeds a video only
when these change), fps, num_frames. Videos that could not be read: unreadable, unreadable_reasons.
N windows of E dimensions take N x (2E + 8 + 4T + 4) bytes: 1.07 GB for a million windows of a
ViT-B/16 (E = 512) at T = 8.
"""

import dataclasses
import hashlib
import json
import math
import os
import sys
import time

import av
import numpy as np
import torch

FORMAT = "actionclip video index"
VERSION = 1
# Settings an index is made with: a rerun or a search with other values would mix incomparable rows.
SAME_SETTINGS = ("weights_sha256", "frames", "size", "window", "stride")


# --------------------------------------------------------------------------------------------------
# Finding videos and planning their windows


def list_videos(root, extensions):
    """Every file under `root` whose extension is in `extensions`, sorted; symlinked folders are
    followed, each real folder once (a link back up would loop)."""
    found, seen = [], set()
    root = os.path.abspath(root)
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        subfolders.sort()
        found += [os.path.join(folder, f) for f in files
                  if os.path.splitext(f)[1].lower() in extensions]
    return sorted(found)


def file_stamp(path):
    """(size, mtime_ns): a video whose stamp is unchanged is not embedded again."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def frame_rate(path):
    """Frames per second of a video file's first video stream (its container's claim)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.guessed_rate or stream.average_rate  # PyAV 19: unset is a falsy AVRational
        if not rate:
            raise ValueError(f"{path}: the video states no frame rate")
        return float(rate)


def window_spans(duration, window, stride):
    """[(start, end)] seconds: windows of `window` s every `stride` s, the last one moved back to
    end with the video so that its tail is covered; a video no longer than a window is one span."""
    if duration <= window:
        return [(0.0, duration)]
    count = int(math.floor((duration - window) / stride + 1e-9)) + 1
    spans = [(k * stride, k * stride + window) for k in range(count)]
    if spans[-1][1] < duration - 1e-6:
        spans.append((duration - window, duration))
    return spans


def plan_windows(num_frames, fps, window, stride, frames, sample):
    """[(start_s, end_s, frame indices)] of one video: the test sampling `sample(n, frames)` of each
    window's frames [a, b), a = round(start x fps)."""
    planned = []
    for start, end in window_spans(num_frames / fps, window, stride):
        a = min(int(round(start * fps)), num_frames - 1)
        b = max(min(int(round(end * fps)), num_frames), a + 1)
        indices = [a + i for i in sample(b - a, frames)]
        planned.append((a / fps, b / fps, indices))
    return planned


@dataclasses.dataclass
class Video:
    """One video of the index: its stamp, its timing, and its windows' rows."""

    size: int
    mtime_ns: int
    fps: float
    num_frames: int
    embeddings: np.ndarray     # (w, E) float16
    start_s: np.ndarray        # (w,) float32
    end_s: np.ndarray          # (w,) float32
    frame_indices: np.ndarray  # (w, T) int32


# --------------------------------------------------------------------------------------------------
# The index file: written atomically, read with numpy alone


class VideoIndex:
    """videos {path: Video}, unreadable {path: reason}, meta (the model and sampling settings)."""

    def __init__(self, meta, videos=None, unreadable=None):
        self.meta, self.videos, self.unreadable = meta, dict(videos or {}), dict(unreadable or {})

    def arrays(self):
        paths = sorted(self.videos)
        rows = [self.videos[p] for p in paths]
        E, T = self.meta["embed_dim"], self.meta["frames"]
        cat = (lambda name, empty: np.concatenate([getattr(v, name) for v in rows])
               if rows else empty)
        return {
            "meta": np.array(json.dumps(self.meta, sort_keys=True)),
            "embeddings": cat("embeddings", np.zeros((0, E), np.float16)),
            "window_file": np.concatenate([np.full(len(v.start_s), f, np.int32)
                                           for f, v in enumerate(rows)]) if rows else
            np.zeros(0, np.int32),
            "start_s": cat("start_s", np.zeros(0, np.float32)),
            "end_s": cat("end_s", np.zeros(0, np.float32)),
            "frame_indices": cat("frame_indices", np.zeros((0, T), np.int32)),
            "paths": np.array(paths, dtype=str),
            "sizes": np.array([v.size for v in rows], np.int64),
            "mtimes_ns": np.array([v.mtime_ns for v in rows], np.int64),
            "fps": np.array([v.fps for v in rows], np.float64),
            "num_frames": np.array([v.num_frames for v in rows], np.int64),
            "unreadable": np.array(sorted(self.unreadable), dtype=str),
            "unreadable_reasons": np.array([self.unreadable[p] for p in sorted(self.unreadable)],
                                           dtype=str),
        }

    def save(self, path):
        save_atomically(path, self.arrays())

    @classmethod
    def load(cls, path):
        """The whole index, split back into videos (to update it; a search reads read_index)."""
        a = read_index(path)
        bounds = np.searchsorted(a["window_file"], np.arange(len(a["paths"]) + 1))
        videos = {}
        for f, p in enumerate(a["paths"].tolist()):
            rows = slice(bounds[f], bounds[f + 1])
            videos[p] = Video(int(a["sizes"][f]), int(a["mtimes_ns"][f]), float(a["fps"][f]),
                              int(a["num_frames"][f]), a["embeddings"][rows], a["start_s"][rows],
                              a["end_s"][rows], a["frame_indices"][rows])
        unreadable = dict(zip(a["unreadable"].tolist(), a["unreadable_reasons"].tolist()))
        return cls(a["meta"], videos, unreadable)


def save_atomically(path, arrays):
    """np.savez into a temporary file beside `path`, fsync, rename: a reader (or a crash) sees the
    old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)


def read_index(path):
    """{name: array} of an index file, meta parsed; ValueError (naming the file) if not one."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(str(arrays["meta"]))
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise ValueError(f"{path} is not a video index written by zeroshot.py --index ({e})")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{path} is not a version-{VERSION} video index (its meta says "
                         f"{meta.get('format')!r} version {meta.get('version')!r}); index the "
                         f"folder again")
    arrays["meta"] = meta
    return arrays


def settings_differ(old, new):
    """The names of SAME_SETTINGS that differ between two metas: 'frames 8 then, 16 now'."""
    shown = lambda k, v: str(v)[:12] if k == "weights_sha256" else v
    return [f"{k} {shown(k, old.get(k))} then, {shown(k, new.get(k))} now" for k in SAME_SETTINGS
            if old.get(k) != new.get(k)]


def weights_sha256(state_dict):
    """A hash of a model's weights (names, shapes, dtypes, bytes), to refuse mixing models."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name} {tuple(t.shape)} {t.dtype}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Embedding windows: decoding in DataLoader workers, the model in this process


class WindowDataset(torch.utils.data.Dataset):
    """Item i: (read(path, indices) transformed, i, ok, reason) of the i-th (path, indices) window.

    A window that cannot be read gives zeros of `shape` (uint8) and ok False with the reason: a
    long job never dies on one bad video.
    """

    def __init__(self, windows, read, transform, shape):
        self.windows, self.read, self.transform, self.shape = windows, read, transform, shape

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, i):
        path, indices = self.windows[i]
        try:
            return self.transform(self.read(path, indices)), i, True, ""
        except Exception as e:  # noqa: BLE001 (any decoder failure): the reason is kept and listed
            return torch.zeros(self.shape, dtype=torch.uint8), i, False, reason_of(e)


def reason_of(error):
    """Why a video could not be read, without its path (the report names it)."""
    return getattr(error, "reason", None) or str(error) or repr(error)


class Progress:
    """'index: 120/450 windows, 3.2 windows/s, elapsed 00:37, left 01:43' on stderr, redrawn in
    place on a terminal, a line every `every` s in a log."""

    def __init__(self, total, label, every=30.0, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total, self.label, self.every = total, label, 0.2 if self.tty else every
        self.done, self.start, self.last = 0, time.time(), -math.inf

    def update(self, n):
        self.done += n
        now = time.time()
        if now - self.last < self.every and self.done < self.total:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else math.inf
        line = (f"{self.label}: {self.done}/{self.total} windows, {rate:.3g} windows/s, elapsed "
                f"{clock(now - self.start)}, left {clock(left)}")
        end = "\n" if self.done >= self.total or not self.tty else ""
        print(("\r" if self.tty else "") + line, end=end, file=self.stream, flush=True)


def clock(seconds):
    if not math.isfinite(seconds):
        return "--:--"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


@dataclasses.dataclass
class Planned:
    """A video to embed: its stamp, timing and windows [(start_s, end_s, frame indices)]."""

    path: str
    size: int
    mtime_ns: int
    fps: float
    num_frames: int
    windows: list


@dataclasses.dataclass
class Embedder:
    """What embedding needs from the model's side: read(path, indices) -> uint8 (T, h, w, 3);
    transform: -> uint8 (T, 3, S, S) = shape; make_loader(dataset) -> an in-order DataLoader;
    encode(batch) -> (B, E) L2-normalised float embeddings."""

    read: object
    transform: object
    shape: tuple
    make_loader: object
    encode: object

    def __call__(self, plans, progress=None):
        """Yield (plan, Video or None, reason) for each plan in order, once its windows are in.
        A video keeps the windows that could be read; with none, it is None and `reason` says
        why."""
        windows = [(p.path, w[2]) for p in plans for w in p.windows]
        ends = np.cumsum([len(p.windows) for p in plans])
        loader = self.make_loader(WindowDataset(windows, self.read, self.transform, self.shape))
        feats, good, reasons, done, v = [None] * len(windows), [False] * len(windows), {}, 0, 0
        for video, index, ok, reason in loader:
            out = self.encode(video).to(torch.float16).cpu().numpy()
            for row, i in enumerate(index.tolist()):
                feats[i], good[i] = out[row], bool(ok[row])
                if not good[i]:
                    reasons[i] = reason[row]
            done = int(index.max()) + 1
            if progress:
                progress.update(len(index))
            while v < len(plans) and ends[v] <= done:
                yield finished(plans[v], range(ends[v] - len(plans[v].windows), ends[v]), feats,
                               good, reasons)
                v += 1


def finished(plan, rows, feats, good, reasons):
    """(plan, Video of the windows in `rows` that were read, or None, reason)."""
    kept = [i for i in rows if good[i]]
    if not kept:
        return plan, None, reasons[rows[0]]
    windows = [plan.windows[i - rows[0]] for i in kept]
    return plan, Video(plan.size, plan.mtime_ns, plan.fps, plan.num_frames,
                       np.stack([feats[i] for i in kept]),
                       np.array([w[0] for w in windows], np.float32),
                       np.array([w[1] for w in windows], np.float32),
                       np.array([w[2] for w in windows], np.int32)), ""


# --------------------------------------------------------------------------------------------------
# Building and updating an index: new or changed videos only, sharded over processes


class IndexMismatch(ValueError):
    """An index (or a part of one) made with another model or other sampling settings."""


def part_files(out):
    """Leftover per-process parts of `out` (NAME.idx.part-R): this run's or an interrupted one's."""
    folder, name = os.path.split(os.path.abspath(out))
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.startswith(name + ".part-") and ".tmp-" not in f)


def check_same(path, old_meta, meta):
    differ = settings_differ(old_meta, meta)
    if differ:
        raise IndexMismatch(f"{path} was made with {old_meta.get('model')} and other settings "
                            f"({'; '.join(differ)}): index into another --out, or use the model "
                            f"and settings it was made with")


def fold_parts(out, meta):
    """Merge leftover parts into `out` (an interrupted run's work is kept), then remove them."""
    parts = part_files(out)
    if not parts:
        return
    index = VideoIndex.load(out) if os.path.exists(out) else VideoIndex(meta)
    check_same(out, index.meta, meta)
    for path in parts:
        part = VideoIndex.load(path)
        check_same(path, part.meta, meta)
        index.videos.update(part.videos)
        for p in part.videos:
            index.unreadable.pop(p, None)
        index.unreadable.update(part.unreadable)
    index.save(out)
    for path in parts:
        os.remove(path)


def plan_videos(paths, probe, meta, sample):
    """(plans, unreadable {path: reason}): each video's windows; probe(path) -> (frames, fps)."""
    plans, unreadable = [], {}
    for path in paths:
        try:
            size, mtime_ns = file_stamp(path)
            num_frames, fps = probe(path)
        except Exception as e:  # noqa: BLE001 (any decoder failure): listed, never fatal
            unreadable[path] = reason_of(e)
            continue
        windows = plan_windows(num_frames, fps, meta["window"], meta["stride"], meta["frames"],
                               sample)
        plans.append(Planned(path, size, mtime_ns, fps, num_frames, windows))
    return plans, unreadable


def videos_to_embed(paths, old):
    """The videos of `paths` that `old` (a VideoIndex or None) lacks or has with another stamp."""
    def unchanged(path):
        video = old.videos.get(path) if old else None
        try:
            return video is not None and (video.size, video.mtime_ns) == file_stamp(path)
        except OSError:
            return False
    return [p for p in paths if not unchanged(p)]


@dataclasses.dataclass
class Shard:
    """This process's place among torchrun's: rank, world_size, and barrier() (a no-op alone)."""

    rank: int = 0
    world_size: int = 1
    barrier: object = lambda: None


def build_index(out, paths, meta, probe, sample, embed, shard=Shard(), save_every=300.0,
                label="index"):
    """Bring `out` up to date with `paths`: keep unchanged videos, embed new and changed ones (this
    process: every world_size-th of them), drop videos no longer there. Every process saves its
    part every `save_every` s and when interrupted (KeyboardInterrupt is re-raised: the next run
    folds the parts in; a single process folds its own at once); process 0 merges the parts into
    `out`. Returns process 0's summary dict."""
    if shard.rank == 0:
        fold_parts(out, meta)
    shard.barrier()
    old = VideoIndex.load(out) if os.path.exists(out) else None
    if old is not None:
        check_same(out, old.meta, meta)
    todo = videos_to_embed(paths, old)
    plans, unreadable = plan_videos(todo[shard.rank::shard.world_size], probe, meta, sample)
    part_path = f"{out}.part-{shard.rank}"
    part = VideoIndex(meta, unreadable=unreadable)
    total = sum(len(p.windows) for p in plans)
    progress = Progress(total, label) if shard.rank == 0 and total else None
    last_save = time.time()
    try:
        for plan, video, reason in embed(plans, progress):
            if video is None:
                part.unreadable[plan.path] = reason
            else:
                part.videos[plan.path] = video
            if time.time() - last_save > save_every:
                part.save(part_path)
                last_save = time.time()
    except KeyboardInterrupt:
        part.save(part_path)
        if shard.world_size == 1:                  # alone: into `out` now, searchable at once
            fold_parts(out, meta)
        raise
    part.save(part_path)
    shard.barrier()
    if shard.rank != 0:
        return None
    return merge_parts(out, paths, old, meta, todo)


def merge_parts(out, paths, old, meta, todo):
    """Process 0: `old`'s unchanged videos still in `paths`, plus every part; saved to `out`."""
    wanted, redo = set(paths), set(todo)
    kept = {p: v for p, v in (old.videos.items() if old else ()) if p in wanted and p not in redo}
    index, embedded = VideoIndex(meta, kept), 0
    for path in part_files(out):
        part = VideoIndex.load(path)
        index.videos.update(part.videos)
        index.unreadable.update(part.unreadable)
        embedded += len(part.videos)
    index.save(out)
    for path in part_files(out):
        os.remove(path)
    removed = len(old.videos.keys() - wanted) if old else 0
    return {"videos": len(index.videos), "windows": sum(len(v.start_s) for v in
                                                         index.videos.values()),
            "embedded": embedded, "kept": len(kept), "removed": removed,
            "unreadable": index.unreadable}


# --------------------------------------------------------------------------------------------------
# Search: one matrix product and a top-k


# An fp16 score (accumulated in fp32, rounded once) is off by at most half an fp16 step, 5e-4 for
# |score| <= 1, plus ~1e-4 from the query's rounding; rows this close to the k-th are rescored.
RESCORE_MARGIN = 2e-3


def search(embeddings, query, top):
    """(scores, rows) of the `top` rows of embeddings (N, E) float16 most similar (cosine, both
    L2-normalised) to query (E,), best first.

    One pass over the table in fp16 (torch's half matrix-vector product runs near memory speed;
    converting the table to fp32 first was far slower, BENCHMARKS.md), then the few rows that can
    be in the top k rescored in fp32, so that near-ties are ordered exactly.
    """
    table = torch.from_numpy(np.ascontiguousarray(embeddings))             # (N, E) fp16
    q = torch.as_tensor(query, dtype=torch.float32)
    rough = torch.mv(table, q.half())                                       # (N,) fp16
    k = min(top, len(rough))
    if k == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    m = min(len(rough), 4 * k + 64)                    # a top-m is cheap; a full compare is not
    head = rough.topk(m)
    floor = float(head.values[k - 1]) - RESCORE_MARGIN
    if m < len(rough) and float(head.values[-1]) >= floor:   # more near-ties than the head holds
        candidates = torch.nonzero(rough.float() >= floor)[:, 0]
    else:
        candidates = head.indices[head.values.float() >= floor]            # (M,), M >= k
    exact = table[candidates].float() @ q                                   # (M,)
    best = exact.topk(k)
    return best.values.numpy(), candidates[best.indices].numpy()
