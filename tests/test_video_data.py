"""video_data.py as a specification: exact frames out of the decoder and the sampler, each dataset's
own files parsed right, one augmentation draw per clip, and no bad file that can stop a long job.

Fixture videos show their own frame index as 8 black/white stripes (bit b of the index in stripe b),
so every decoded frame says which frame it is. They are written with PyAV in the containers and
codecs real dataset copies use: MPEG-4 Part 2 in AVI (UCF101, HMDB51), H.264 with B-frames in MP4
and MKV, VP9 in WebM (some Kinetics copies).
"""

import dataclasses
import glob
import hashlib
import json
import logging
import os
import pickle
import shutil
import struct
import warnings

import av
import numpy as np
import pytest
import torch
import torchvision.io
from torch.utils.data import DataLoader, DistributedSampler

import dataset_fixtures
import video_data

NUM_FRAMES, W, H, BITS = 90, 64, 48, 8
FORMATS = {  # name: (file, codec, keyframe interval, max B-frames)
    "avi-mpeg4": ("clip.avi", "mpeg4", 12, 2),
    "mp4-h264-bframes": ("clip.mp4", "libx264", 24, 3),
    "mkv-h264-bframes": ("clip.mkv", "libx264", 16, 3),
    "webm-vp9": ("clip.webm", "libvpx-vp9", 12, None),
}


def index_frame(i):
    """(H, W, 3) uint8 frame whose stripe b is white when bit b of i is set."""
    frame = np.zeros((H, W, 3), np.uint8)
    for b in range(BITS):
        if (i >> b) & 1:
            frame[:, b * W // BITS:(b + 1) * W // BITS] = 255
    return frame


def frame_number(frame):
    """The index an index_frame shows, read back from a decoded (H, W, 3) frame (stripe centres)."""
    stripe = W // BITS
    return sum(1 << b for b in range(BITS) if frame[:, b * stripe + 2:(b + 1) * stripe - 2].float().mean() > 127)


def write_with_audio_first(path, frames):
    """An MP4 whose stream 0 is AAC audio and stream 1 H.264 video with B-frames (as many downloads)."""
    with av.open(path, "w") as container:
        audio = container.add_stream("aac", rate=16000)
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        video.codec_context.gop_size, video.codec_context.max_b_frames = 24, 3
        for i, frame in enumerate(frames):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            sound = av.AudioFrame.from_ndarray(np.zeros((1, 534), np.float32), format="fltp", layout="mono")
            sound.sample_rate, sound.pts = 16000, i * 534
            container.mux(audio.encode(sound))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """{format name: path} of NUM_FRAMES-frame index videos, plus a frame folder under 'frames'."""
    folder = tmp_path_factory.mktemp("index_videos")
    frames = [index_frame(i) for i in range(NUM_FRAMES)]
    out = {}
    for name, (file, codec, gop, bframes) in FORMATS.items():
        out[name] = video_data.write_video(str(folder / file), frames, codec=codec, gop=gop, bframes=bframes)
    out["mp4-audio-first"] = write_with_audio_first(str(folder / "with_audio.mp4"), frames)
    out["frames"] = str(folder / "frame_folder")
    os.makedirs(out["frames"])
    for i, frame in enumerate(frames):
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its JPEG codec
            warnings.simplefilter("ignore", DeprecationWarning)
            jpeg = torchvision.io.encode_jpeg(torch.from_numpy(frame).permute(2, 0, 1), quality=95)
        (folder / "frame_folder" / video_data.FRAME_NAME.format(i + 1)).write_bytes(jpeg.numpy().tobytes())
    return out


ALL_FORMATS = [*FORMATS, "mp4-audio-first", "frames"]
REQUESTS = {
    "first": [0],
    "last": [NUM_FRAMES - 1],
    "spread": [3, 17, 30, 44, 55, 67, 80, 89],
    "out of order, repeated": [50, 3, 77, 3, 0, 89, 50, 24],
    "inside one keyframe interval": [25, 26, 27, 40],
    "every frame": list(range(NUM_FRAMES)),
}


# ----------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("fmt", ALL_FORMATS)
@pytest.mark.parametrize("request_name", REQUESTS)
def test_read_frames_returns_exactly_the_asked_frames(videos, fmt, request_name):
    indices = REQUESTS[request_name]
    clip = video_data.read_frames(videos[fmt], indices)
    assert clip.dtype == torch.uint8 and clip.shape == (len(indices), H, W, 3)
    assert [frame_number(f) for f in clip] == indices


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_read_frames_exact_for_random_train_samples(videos, fmt):
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        indices = video_data.sample_indices(NUM_FRAMES, 8, "train", generator=generator)
        assert [frame_number(f) for f in video_data.read_frames(videos[fmt], indices)] == indices


@pytest.mark.parametrize("fmt", [*FORMATS, "mp4-audio-first"])
def test_frames_are_pixel_identical_to_a_full_decode(videos, fmt):
    """Skipped non-reference frames, seeks and drains change nothing: every pixel equals what
    decoding the whole file in order gives, with one decoder thread and with several."""
    with av.open(videos[fmt]) as container:
        full = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # (N, H, W, 3)
    generator = torch.Generator().manual_seed(2)
    for threads in (1, 0):
        for _ in range(3):
            indices = video_data.sample_indices(NUM_FRAMES, 8, "train", generator=generator)
            assert np.array_equal(video_data.read_frames(videos[fmt], indices, threads).numpy(), full[indices])


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_count_frames(videos, fmt):
    assert video_data.count_frames(videos[fmt]) == NUM_FRAMES


def test_fixture_formats_are_the_real_ones(videos):
    """The fixtures must exercise B-frames and a keyframe interval >= 12, as the issue asks."""
    with av.open(videos["mp4-h264-bframes"]) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        assert stream.codec_context.name == "h264"
        assert any(p.pts != p.dts for p in packets)  # reordered: B-frames
        keys = [i for i, p in enumerate(packets) if p.is_keyframe]
        assert len(keys) > 1 and min(np.diff(keys)) >= 12
    with av.open(videos["avi-mpeg4"]) as container:
        stream = container.streams.video[0]
        assert container.format.name == "avi" and stream.codec_context.name == "mpeg4"
        assert any(video_data._mpeg4_is_nonref(p) for p in container.demux(stream) if p.size)  # B-VOPs
    with av.open(videos["webm-vp9"]) as container:
        assert container.streams.video[0].codec_context.name == "vp9"


def test_read_frames_seeks_instead_of_decoding_everything(videos, monkeypatch):
    """The last frames of a clip with a keyframe every <= 24 frames: decode from the keyframe before
    them, not from 0."""
    decoded = []
    run_frames = video_data._run_frames

    def counting(*args):
        for frame in run_frames(*args):
            decoded.append(frame)
            yield frame

    monkeypatch.setattr(video_data, "_run_frames", counting)
    assert frame_number(video_data.read_frames(videos["mp4-h264-bframes"], [85])[0]) == 85
    key = max(k for k in video_data._video_index(videos["mp4-h264-bframes"]).keyframes if k <= 85)
    assert 0 < key and len(decoded) <= 85 - key + 1
    decoded.clear()
    video_data.read_frames(videos["mp4-h264-bframes"], [5, 30, 60, 85])  # 4 runs, one per interval
    assert len(decoded) < NUM_FRAMES // 2


def test_a_seek_that_lands_late_is_noticed_and_nothing_is_remembered(videos, monkeypatch):
    """If a demuxer seeks past the keyframe asked for, the reader notices (the packet it lands on
    is another keyframe's) and reads from the start: still exact, and the next read seeks as a
    fresh process would (no read changes how a later one decodes)."""
    path = videos["mp4-h264-bframes"]
    true = video_data._build_index(path)
    assert len(true.keyframes) >= 3
    late = true.key_ts[1:] + true.key_ts[-1:]  # each keyframe's timestamps are the next one's
    monkeypatch.setattr(video_data, "_build_index",
                        lambda p: dataclasses.replace(true, key_ts=late))
    video_data._INDEX_CACHE.clear()
    wanted = [true.keyframes[1] + 1, true.keyframes[2] + 2, 2]
    assert [frame_number(f) for f in video_data.read_frames(path, wanted)] == wanted
    assert video_data._video_index(path).key_ts == late  # nothing flipped to "decode in order"
    assert [frame_number(f) for f in video_data.read_frames(path, [89, 50])] == [89, 50]
    video_data._INDEX_CACHE.clear()


def test_read_frames_rejects_bad_indices(videos):
    with pytest.raises(ValueError, match="indices"):
        video_data.read_frames(videos["mp4-h264-bframes"], [])
    with pytest.raises(ValueError, match="indices"):
        video_data.read_frames(videos["mp4-h264-bframes"], [-1])


# The display matrix in the MP4 track header (tkhd), as QuickTime defines it: (a, b, u, c, d, v, x,
# y, w), 16.16 fixed point (u, v, w 2.30). A phone's portrait video carries the first: a quarter
# turn clockwise.
DISPLAY_MATRIX = {-90: (0, 1 << 16, 0, -1 << 16, 0, 0, 0, 0, 1 << 30),   # shown turned clockwise
                  90: (0, -1 << 16, 0, 1 << 16, 0, 0, 0, 0, 1 << 30),   # counter-clockwise
                  180: (-1 << 16, 0, 0, 0, -1 << 16, 0, 0, 0, 1 << 30)}
PLAYER_TURNS = {-90: -1, 90: 1, 180: 2}  # a player shows np.rot90(frame, k); k > 0: anticlockwise


def tkhd_matrix(path):
    data = open(path, "rb").read()
    box = data.find(b"tkhd")
    start = box + 4 + 4 + (32 if data[box + 4] == 1 else 20) + 8 + 8  # flags, times, ids, reserved
    return struct.unpack(">9i", data[start:start + 36])


def write_rotated(path, frames, degrees):
    """An H.264 MP4 of `frames` whose display matrix says: show it `degrees` anticlockwise."""
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"threads": "1"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.set_display_rotation(degrees)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("degrees", [-90, 90, 180])
def test_rotated_videos_are_read_upright_as_a_player_shows_them(tmp_path, degrees):
    frames = [index_frame(i) for i in range(12)]
    plain = write_rotated(str(tmp_path / "plain.mp4"), frames, 0)
    rotated = write_rotated(str(tmp_path / "rotated.mp4"), frames, degrees)
    assert tkhd_matrix(plain) == (1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
    assert tkhd_matrix(rotated) == DISPLAY_MATRIX[degrees]          # the flag is really in the file
    stored = video_data.read_frames(plain, [0, 5, 11]).numpy()  # same pixels, no flag: (3, H, W, 3)
    expected = np.rot90(stored, PLAYER_TURNS[degrees], axes=(1, 2))
    assert np.array_equal(video_data.read_frames(rotated, [0, 5, 11]).numpy(), expected)
    video_data._INDEX_CACHE.clear()                              # the in-order path turns them too
    assert np.array_equal(video_data._decode(rotated, 12, [0, 5, 11], 1)[0][5], expected[1])


@pytest.mark.parametrize("form", ["frames", "video"])
def test_prepare_writes_rotated_videos_upright(tmp_path, form):
    frames = [index_frame(i) for i in range(12)]
    plain = write_rotated(str(tmp_path / "plain.mp4"), frames, 0)
    rotated = write_rotated(str(tmp_path / "phone.mp4"), frames, -90)
    dst = str(tmp_path / "prepared") + (".mp4" if form == "video" else "")
    assert video_data._prepare_one((rotated, dst, form, 256, 95, 4)) == (rotated, None, False)
    upright = np.rot90(video_data.read_frames(plain, range(12)).numpy(), -1, axes=(1, 2))
    copy = video_data.read_frames(dst, range(12)).numpy()
    assert copy.shape == upright.shape == (12, W, H, 3)
    assert np.abs(copy.astype(int) - upright).mean() < 4                # JPEG / re-encoding: near
    assert [frame_number(torch.from_numpy(np.rot90(f, 1).copy())) for f in copy] == list(range(12))
    if form == "video":                                                 # no flag to apply twice
        with av.open(dst) as container:
            assert next(container.decode(video=0)).rotation == 0


# ----------------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("num_frames", [8, 9, 90, 301])
def test_train_sampling_one_random_frame_per_segment(num_frames):
    T, generator = 8, torch.Generator().manual_seed(1)
    seen = set()
    for _ in range(200):
        indices = video_data.sample_indices(num_frames, T, "train", generator=generator)
        assert len(indices) == T and indices == sorted(indices)
        for s, i in enumerate(indices):
            assert s * num_frames // T <= i < (s + 1) * num_frames // T  # inside its own segment
        seen.update(indices)
    assert seen == set(range(num_frames))  # every frame can be drawn


def test_train_sampling_follows_the_generator():
    a = video_data.sample_indices(300, 8, "train", generator=torch.Generator().manual_seed(5))
    b = video_data.sample_indices(300, 8, "train", generator=torch.Generator().manual_seed(5))
    assert a == b


def test_test_sampling_takes_segment_centres():
    assert video_data.sample_indices(80, 8, "test") == [5, 15, 25, 35, 45, 55, 65, 75]
    assert video_data.sample_indices(300, 8, "test") == video_data.sample_indices(300, 8, "test")
    assert video_data.sample_indices(1, 4, "test") == [0, 0, 0, 0]


@pytest.mark.parametrize("mode", ["train", "test"])
def test_short_videos_repeat_frames_in_order(mode):
    assert video_data.sample_indices(3, 8, mode) == [0, 0, 0, 1, 1, 1, 2, 2]
    assert video_data.sample_indices(3, 8, mode) == video_data.sample_indices(3, 8, mode)  # no randomness
    assert sorted(set(video_data.sample_indices(5, 8, mode))) == [0, 1, 2, 3, 4]


def test_multi_clip_test_sampling_is_evenly_spread():
    N, T, n = 4, 8, 320
    indices = video_data.sample_indices(n, T, "test", num_clips=N)
    clips = [indices[c * T:(c + 1) * T] for c in range(N)]  # clip-major
    assert len(indices) == N * T
    segment = n // T
    for c, clip in enumerate(clips):
        assert clip == [s * segment + (2 * c + 1) * segment // (2 * N) for s in range(T)]
    assert video_data.sample_indices(n, T, "test", num_clips=1) == [s * segment + segment // 2 for s in range(T)]
    ten = video_data.sample_indices(30, 8, "test", num_clips=10)  # the paper's 10 clips, short video
    assert len(ten) == 80 and max(ten) < 30


def test_sampling_rejects_nonsense():
    with pytest.raises(ValueError, match="mode"):
        video_data.sample_indices(10, 8, "val")
    with pytest.raises(ValueError, match="num_frames"):
        video_data.sample_indices(0, 8, "train")


# --------------------------------------------------------------------------------------------- transforms


def still_clip(T=4, h=120, w=160, seed=0):
    """T identical frames of random colours: any difference between output frames is a per-frame draw."""
    frame = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return frame.expand(T, h, w, 3).contiguous()


@pytest.mark.parametrize("randaugment", [False, True])
def test_train_transform_draws_once_per_clip(randaugment):
    transform = video_data.train_transform(64, randaugment=randaugment)
    torch.manual_seed(0)
    for seed in range(20):
        out = transform(still_clip(seed=seed))
        assert out.shape == (4, 3, 64, 64) and out.dtype == torch.float32
        for t in range(1, 4):
            torch.testing.assert_close(out[t], out[0], rtol=0, atol=1e-6)


def test_train_transform_varies_between_clips():
    transform = video_data.train_transform(64)
    torch.manual_seed(0)
    outs = [transform(still_clip()) for _ in range(10)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_train_transform_normalises_with_clip_mean_and_std():
    transform = video_data.train_transform(32, flip=False, color_jitter=False, grayscale=False)
    clip = torch.full((2, 40, 50, 3), 200, dtype=torch.uint8)
    out = transform(clip)
    expected = (200 / 255 - torch.tensor(video_data.CLIP_MEAN)) / torch.tensor(video_data.CLIP_STD)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), expected, rtol=0, atol=1e-4)


def test_multi_scale_crop_uses_tsn_scales_and_offsets():
    torch.manual_seed(0)
    for _ in range(200):
        left, top, w, h = video_data._msc_box(340, 256, 224, video_data.MSC_SCALES)
        sides = {256, 224, 192, 168}  # 256 x (1, .875, .75, .66)
        assert w in sides and h in sides and left + w <= 340 and top + h <= 256
        assert (left, top) in video_data._tsn_offsets(340, 256, w, h)


def moving_clip(seed, T=4, h=40, w=50):
    """T different frames of random colours."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (T, h, w, 3), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("randaugment", [False, True])
def test_device_colour_work_equals_the_cpu_transform_on_the_same_draws(randaugment):
    """The workers' uint8 half plus finish_batch's batched float half is today's CPU transform:
    each video its own jitter (order and factors), grayscale and normalisation."""
    cpu = video_data.train_transform(32, randaugment=randaugment)
    device = video_data.train_transform(32, randaugment=randaugment, on_device=True)
    expected, parts = [], []
    for seed in range(24):
        torch.manual_seed(seed)
        expected.append(cpu(moving_clip(seed)))                       # (T, 3, S, S) float
        torch.manual_seed(seed)
        parts.append(device(moving_clip(seed)))                       # DeviceClip
    batch = torch.utils.data.default_collate(parts)
    assert isinstance(batch, video_data.DeviceClip) and batch.pixels.dtype == torch.uint8
    assert batch.pixels.shape == (24, 4, 3, 32, 32)
    assert batch.colour.shape == (24, video_data.COLOUR_DRAWS)
    jittered, gray = batch.colour[:, 0], batch.colour[:, 9]
    assert 0 < jittered.sum() < 24 and 0 < gray.sum() < 24           # both sides of each coin
    orders = {tuple(order) for order in batch.colour[jittered == 1, 1:5].tolist()}
    assert len(orders) > 1
    out = video_data.finish_batch(batch, torch.device("cpu"))
    torch.testing.assert_close(out, torch.stack(expected), rtol=0, atol=2e-6)


def test_jpeg_frames_decoded_on_the_device_equal_the_frames_decoded_by_workers(videos):
    """jpeg_bytes=True: workers read the files and draw; decode_batch (here on the CPU, the same
    torchvision.io.decode_jpeg call as on CUDA) then crops and flips: the same pixels and draws."""
    records = [video_data.VideoRecord(videos["frames"], 0)] * 12
    transform = video_data.train_transform(32, on_device=True)
    decoded = video_data.VideoDataset(records, 4, "train", transform)
    undecoded = video_data.VideoDataset(records, 4, "train", transform, jpeg_bytes=True)
    workers, device = [], []
    for seed in range(12):
        torch.manual_seed(seed)
        workers.append(decoded[seed])
        torch.manual_seed(seed)
        device.append(undecoded[seed])
    (pixels, *rest), (jpegs, *rest_jpeg) = video_data.collate(workers), video_data.collate(device)
    assert isinstance(jpegs, video_data.JpegClip) and jpegs.jpegs.dtype == torch.uint8
    assert jpegs.lengths.shape == (12, 4)
    assert 0 < jpegs.geometry[:, 4].sum() < 12                       # flipped and not flipped
    assert torch.equal(video_data.decode_batch(jpegs, "cpu"), pixels.pixels)
    assert torch.equal(jpegs.colour, pixels.colour) and all(map(torch.equal, rest, rest_jpeg))
    assert torch.equal(video_data.finish_batch(jpegs, torch.device("cpu")),
                       video_data.finish_batch(pixels, torch.device("cpu")))


def test_a_truncated_jpeg_frame_is_an_unreadable_video_before_the_device_decodes(videos, tmp_path):
    """Decoding on the device comes after the worker: a truncated frame file must be caught in the
    worker (a VideoReadError: replaced, or --strict's error), not fail the training step."""
    folder = tmp_path / "cut"
    shutil.copytree(videos["frames"], folder)
    for name in os.listdir(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])          # a disk that filled up
    transform = video_data.train_transform(32, on_device=True)
    dataset = video_data.VideoDataset([video_data.VideoRecord(str(folder), 0)], 4, "train",
                                      transform, jpeg_bytes=True, strict=True)
    with pytest.raises(video_data.VideoReadError, match="truncated or not a JPEG"):
        dataset[0]


def test_jpeg_size_reads_the_frame_header(videos):
    for w, h in ((64, 48), (33, 71)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            jpeg = torchvision.io.encode_jpeg(torch.zeros(3, h, w, dtype=torch.uint8))
        assert video_data.jpeg_size(jpeg) == (w, h)
    with pytest.raises(ValueError, match="RandAugment"):
        jpegs = video_data.read_jpeg_bytes(videos["frames"], [0, 1])
        video_data.train_transform(32, randaugment=True)(jpegs)


def test_uint8_test_views_normalised_on_the_device_equal_the_cpu_views():
    for crops in (1, 3):
        clip = moving_clip(0, T=3, h=60, w=90)
        views = video_data.test_transform(32, crops, on_device=True)(clip)
        assert views.dtype == torch.uint8
        out = video_data.finish_batch(views[None], torch.device("cpu"))[0]
        assert torch.equal(out, video_data.test_transform(32, crops)(clip))


def test_test_transform_is_deterministic_centre_crop():
    transform = video_data.test_transform(32)
    clip = still_clip(T=3, h=60, w=90)
    out = transform(clip)
    assert out.shape == (3, 3, 32, 32)
    assert torch.equal(out, transform(clip))
    assert transform.scale_size == 37 and video_data.test_transform(224).scale_size == 256
    assert video_data.test_transform(336).scale_size == 384


def test_three_crops_run_along_the_long_side():
    ramp = torch.linspace(0, 255, 160).to(torch.uint8)  # brighter to the right
    clip = ramp.view(1, 1, 160, 1).expand(2, 100, 160, 3).contiguous()
    out = video_data.test_transform(64, num_crops=3)(clip)
    assert out.shape == (3, 2, 3, 64, 64)
    left, centre, right = out.mean(dim=(1, 2, 3, 4))
    assert left < centre < right
    portrait = clip.transpose(1, 2).contiguous()  # (T, 160, 100, 3): brighter towards the bottom
    top, middle, bottom = video_data.test_transform(64, num_crops=3)(portrait).mean(dim=(1, 2, 3, 4))
    assert top < middle < bottom


def test_transforms_reject_the_wrong_layout():
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        video_data.test_transform(32)(torch.zeros(2, 3, 40, 40, dtype=torch.uint8))


# ----------------------------------------------------------------------------------------------- parsers


def pairs(split):
    return [(r.path, r.label) for r in split.records]


@pytest.fixture(scope="module")
def ucf101(tmp_path_factory):
    return dataset_fixtures.make_ucf101(tmp_path_factory.mktemp("ucf101"))


@pytest.mark.parametrize("fold", [1, 2, 3])
def test_ucf101(ucf101, fold):
    for split in ("train", "test"):
        got = video_data.load_split("ucf101", ucf101["root"], split, fold)
        assert pairs(got) == ucf101[split][fold]
        assert got.classnames == ["apply eye makeup", "basketball", "yo yo"] == ucf101["classnames"]
        assert all(os.path.isfile(r.path) for r in got.records)
    assert pairs(video_data.load_split("ucf101", ucf101["root"], "val", fold)) == ucf101["test"][fold]


def test_camel_case_names():
    assert video_data.camel_to_words("ApplyEyeMakeup") == "apply eye makeup"
    assert video_data.camel_to_words("YoYo") == "yo yo"
    assert video_data.camel_to_words("PlayingDaf") == "playing daf"


def test_ucf101_wrong_label_names_file_and_line(ucf101, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(os.path.join(ucf101["root"], "ucfTrainTestlist"), root / "ucfTrainTestlist")
    (root / "UCF-101").mkdir()
    lines = (root / "ucfTrainTestlist" / "trainlist01.txt").read_text().splitlines()
    lines[1] = lines[1].rsplit(" ", 1)[0] + " 3"  # a Basketball video labelled YoYo
    (root / "ucfTrainTestlist" / "trainlist01.txt").write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"trainlist01.txt, line 2"):
        video_data.load_split("ucf101", str(root), "train", 1)


@pytest.fixture(scope="module")
def hmdb51(tmp_path_factory):
    return dataset_fixtures.make_hmdb51(tmp_path_factory.mktemp("hmdb51"), videos_per_class=4)


@pytest.mark.parametrize("fold", [1, 2, 3])
def test_hmdb51(hmdb51, fold):
    for split in ("train", "test"):
        assert pairs(video_data.load_split("hmdb51", hmdb51["root"], split, fold)) == hmdb51[split][fold]
    names = video_data.load_split("hmdb51", hmdb51["root"], "train", fold).classnames
    # sorted class-name order: kick before kick_ball, sword before sword_exercise (unlike the shared CSV)
    assert names == ["brush hair", "kick", "kick ball", "sword", "sword exercise"] == hmdb51["classnames"]


@pytest.mark.parametrize("layout", ["per_class", "flat"])
def test_kinetics(tmp_path, layout, caplog):
    expected = dataset_fixtures.make_kinetics(tmp_path / layout, layout=layout, missing=2, ext=".mkv")
    with caplog.at_level(logging.WARNING, logger="video_data"):
        for split in ("train", "val", "test"):
            got = video_data.load_split("kinetics400", expected["root"], split)
            assert pairs(got) == expected[split]
            assert got.missing == 2 and got.classnames == ["abseiling", "playing guitar", "zumba"]
    assert sum("2 of 8 listed videos are missing" in r.message for r in caplog.records) == 3  # once per split


def test_kinetics_evaluation_only_copy_and_wrong_video_folder(tmp_path, caplog):
    """A copy with only the validation CSV takes its classes from it; a video folder that does not
    exist, or holds none of the listed videos, is a clear error rather than an empty split."""
    expected = dataset_fixtures.make_kinetics(tmp_path / "k", layout="flat", missing=0)
    os.remove(os.path.join(expected["root"], "train.csv"))
    with caplog.at_level(logging.WARNING, logger="video_data"):
        got = video_data.load_split("kinetics400", expected["root"], "val")
    assert pairs(got) == expected["val"] and got.classnames == expected["classnames"]
    assert any("no train CSV" in r.message for r in caplog.records)
    with pytest.raises(FileNotFoundError, match="video folder not found"):
        video_data.load_split("kinetics400", expected["root"], "val", videos_dir=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="none of the 6 listed videos were found under .*empty"):
        video_data.load_split("kinetics400", expected["root"], "val", videos_dir=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"\[kinetics400_\]\{test\}.csv"):
        os.remove(os.path.join(expected["root"], "test.csv"))
        video_data.load_split("kinetics400", expected["root"], "test")


def test_ucf101_class_ids_must_run_from_one(ucf101, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(os.path.join(ucf101["root"], "ucfTrainTestlist"), root / "ucfTrainTestlist")
    (root / "UCF-101").mkdir()
    index = root / "ucfTrainTestlist" / "classInd.txt"
    index.write_text(index.read_text().replace("2 ", "5 ", 1))
    with pytest.raises(ValueError, match=r"classInd.txt: class ids must be 1..3"):
        video_data.load_split("ucf101", str(root), "train", 1)


def test_class_name_csv_with_or_without_header(tmp_path):
    (tmp_path / "plain.csv").write_text("0,yoga\n1,zumba\n")
    (tmp_path / "header.csv").write_text("id,name\n0,yoga\n1,zumba\n")
    (tmp_path / "twice.csv").write_text("id,name\n0,yoga\n0,zumba\n")
    assert video_data.read_classnames(str(tmp_path / "plain.csv")) == ["yoga", "zumba"]
    assert video_data.read_classnames(str(tmp_path / "header.csv")) == ["yoga", "zumba"]
    with pytest.raises(ValueError, match="twice.csv, line 3: expected each class id once"):
        video_data.read_classnames(str(tmp_path / "twice.csv"))


def test_charades_multi_hot(tmp_path):
    expected = dataset_fixtures.make_charades(tmp_path / "charades")
    for split in ("train", "test"):
        got = video_data.load_split("charades", expected["root"], split)
        assert got.multilabel and pairs(got) == expected[split]
        assert got.classnames[0] == "holding some clothes" and len(got.classnames) == 5
    dataset = video_data.VideoDataset(got, 4, "test", video_data.test_transform(32))
    for i, (path, labels) in enumerate(expected["test"]):
        video, target, index, ok, _ = dataset[i]
        assert ok and index == i and target.dtype == torch.float32
        assert target.tolist() == [1.0 if c in labels else 0.0 for c in range(5)]
    assert dataset[len(expected["test"]) - 1][1].sum() == 0  # a video with no action


def test_charades_bad_actions_name_file_and_line(tmp_path):
    expected = dataset_fixtures.make_charades(tmp_path / "charades")
    csv_path = os.path.join(expected["root"], "Charades_v1_train.csv")
    text = open(csv_path).read().replace("c000 0.00 4.00", "c000 oops", 1)
    open(csv_path, "w").write(text)
    with pytest.raises(ValueError, match=r"Charades_v1_train.csv, line \d"):
        video_data.load_split("charades", expected["root"], "train")


def test_generic_list_files(tmp_path, videos):
    root = tmp_path
    shutil.copy(videos["mp4-h264-bframes"], root / "a.mp4")
    shutil.copy(videos["mp4-h264-bframes"], root / "b.mp4")
    shutil.copytree(videos["frames"], root / "a_frames")
    (root / "videos.txt").write_text("a.mp4 1\n\nb.mp4 0\n")
    (root / "frames.txt").write_text(f"a_frames {NUM_FRAMES} 1\n")
    (root / "names.txt").write_text("walking\nplaying guitar\n")
    (root / "names.csv").write_text('id,name\n0,walking\n1,"playing guitar, badly"\n')
    got = video_data.load_split("list", str(root), list_file="videos.txt", classnames_file="names.txt")
    assert pairs(got) == [(str(root / "a.mp4"), 1), (str(root / "b.mp4"), 0)]
    assert got.classnames == ["walking", "playing guitar"]
    got = video_data.load_split("list", str(root), list_file="frames.txt", classnames_file="names.csv")
    assert got.records == [video_data.VideoRecord(str(root / "a_frames"), 1, NUM_FRAMES)]
    assert got.classnames == ["walking", "playing guitar, badly"]
    (root / "bad.txt").write_text("a.mp4 1\na.mp4 one\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 2"):
        video_data.load_split("list", str(root), list_file="bad.txt", classnames_file="names.txt")
    (root / "range.txt").write_text("a.mp4 7\n")
    with pytest.raises(ValueError, match="label 7"):
        video_data.load_split("list", str(root), list_file="range.txt", classnames_file="names.txt")


@pytest.mark.parametrize("dataset, name", [("ucf101", "ucfTrainTestlist"), ("hmdb51", "_test_split1.txt"),
                                           ("kinetics400", "train.csv"), ("charades", "Charades_v1_classes.txt"),
                                           ("synthetic", "train.txt")])
def test_missing_annotations_name_the_expected_file(tmp_path, dataset, name):
    with pytest.raises(FileNotFoundError, match=name):
        video_data.load_split(dataset, str(tmp_path), "train")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        video_data.load_split(dataset, str(tmp_path / "nowhere"), "train")


def test_unknown_dataset_and_split(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        video_data.load_split("ucf", str(tmp_path))
    with pytest.raises(ValueError, match="split"):
        video_data.load_split("ucf101", str(tmp_path), "validation")


# -------------------------------------------------------------------------------------- Dataset, loading


def test_dataset_items_train_and_test(ucf101):
    split = video_data.load_split("ucf101", ucf101["root"], "train", 1)
    train = video_data.VideoDataset(split, 8, "train", video_data.train_transform(32))
    video, target, index, ok, _ = train[0]
    assert video.shape == (8, 3, 32, 32) and target.dtype == torch.int64 and index == 0 and ok
    test = video_data.VideoDataset(split, 8, "test", video_data.test_transform(32, 3), num_clips=2, num_crops=3)
    video, target, index, ok, _ = test[1]
    assert video.shape == (6, 8, 3, 32, 32) and int(target) == split.records[1].label and ok
    single = video_data.VideoDataset(split, 8, "test", video_data.test_transform(32))
    assert single[0][0].shape == (1, 8, 3, 32, 32)


def test_dataset_views_match_the_sampled_frames(videos):
    """Test item = transform of the frames sample_indices names, clip by clip (clip-major order)."""
    records = [video_data.VideoRecord(videos["mp4-h264-bframes"], 0)]
    transform = video_data.test_transform(32)
    dataset = video_data.VideoDataset(records, 4, "test", transform, num_clips=3)
    indices = video_data.sample_indices(NUM_FRAMES, 4, "test", num_clips=3)
    frames = video_data.read_frames(videos["mp4-h264-bframes"], indices)
    expected = torch.stack([transform(frames[c * 4:(c + 1) * 4]) for c in range(3)])
    assert torch.equal(dataset[0][0], expected)


def test_in_memory_cache_gives_the_same_items(ucf101):
    split = video_data.load_split("ucf101", ucf101["root"], "test", 1)
    plain = video_data.VideoDataset(split, 8, "test", video_data.test_transform(32))
    cached = video_data.VideoDataset(split, 8, "test", video_data.test_transform(32), in_memory=True)
    assert torch.equal(plain[0][0], cached[0][0]) and torch.equal(cached[0][0], cached[0][0])
    assert len(cached.read._frames) == 1


def test_dataloader_workers_pinned_persistent_distributed(ucf101, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(ucf101["root"], root)
    split = video_data.load_split("ucf101", str(root), "train", 1)
    dataset = video_data.VideoDataset(split, 4, "train", video_data.train_transform(32))
    pickle.loads(pickle.dumps(dataset))
    shutil.rmtree(root / "ucfTrainTestlist")  # items never re-read annotation files
    sampler = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=2, persistent_workers=True,
                        pin_memory=torch.cuda.is_available())
    for epoch in range(2):
        sampler.set_epoch(epoch)
        seen = []
        for video, target, index, ok, _ in loader:
            assert video.shape[1:] == (4, 3, 32, 32) and ok.all()
            seen += index.tolist()
        assert sorted(seen) == sorted(list(sampler))


class _ReadFrames(torch.utils.data.Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return video_data.read_frames(self.paths[i], [0, 3, 7], threads=1)


def test_forked_workers_decode_after_the_parent_has_decoded(videos):
    """PyAV 19 + FFmpeg 8 hung here: the parent's per-thread swscale context (with its thread pool)
    was inherited by forked DataLoader workers, which then waited forever on their first frame.
    The loader's timeout turns such a hang into a failure instead of a stuck suite."""
    path = videos["mp4-h264-bframes"]
    expected = video_data.read_frames(path, [0, 3, 7])  # the parent converts frames first
    loader = DataLoader(_ReadFrames([path] * 4), batch_size=2, num_workers=2, timeout=60,
                        multiprocessing_context="fork")
    for batch in loader:
        assert torch.equal(batch, expected.expand(2, *expected.shape))


# ------------------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, videos):
    """{case: path} for every kind of bad input of the issue's item 6."""
    folder = tmp_path_factory.mktemp("bad")
    out = {"missing": str(folder / "missing.mp4"), "empty": str(folder / "empty.mp4")}
    open(out["empty"], "wb").close()
    out["random bytes"] = str(folder / "random.avi")
    open(out["random bytes"], "wb").write(np.random.default_rng(0).bytes(50_000))
    data = open(videos["mp4-h264-bframes"], "rb").read()
    out["truncated"] = str(folder / "truncated.mp4")  # the index (moov) is at the end: cut off
    open(out["truncated"], "wb").write(data[: len(data) // 2])
    faststart = video_data.write_video(str(folder / "faststart.mp4"), [index_frame(i) for i in range(NUM_FRAMES)],
                                       options={"crf": "0"}, container_options={"movflags": "+faststart"})
    data = open(faststart, "rb").read()
    out["truncated, index first"] = str(folder / "truncated_faststart.mp4")  # packets promised, bytes gone
    open(out["truncated, index first"], "wb").write(data[: len(data) * 2 // 5])
    out["audio only"] = str(folder / "audio.m4a")
    with av.open(out["audio only"], "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for k in range(5):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, k * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out


@pytest.mark.parametrize("case", ["missing", "empty", "random bytes", "truncated", "audio only"])
def test_bad_files_raise_video_read_error_naming_the_path(bad_files, case):
    with pytest.raises(video_data.VideoReadError) as error:
        video_data.read_frames(bad_files[case], [0, 1])
    assert bad_files[case] in str(error.value) and error.value.path == bad_files[case]


def test_truncated_with_index_first_reads_what_is_there(bad_files):
    """The sample table promises every frame, but only the frames that decode from the packets
    still on disk are counted (the last packet, cut short, decodes to nothing), and all of them
    read."""
    path = bad_files["truncated, index first"]
    count = video_data.count_frames(path)
    assert 1 < count < NUM_FRAMES
    wanted = [1, 0, count - 1]
    assert [frame_number(f) for f in video_data.read_frames(path, wanted)] == wanted
    with pytest.raises(video_data.VideoTooShortError, match=f"has {count} frames, frame {count}"):
        video_data.read_frames(path, [count])


def test_too_few_frames(videos):
    with pytest.raises(video_data.VideoTooShortError, match="has 90 frames"):
        video_data.read_frames(videos["webm-vp9"], [NUM_FRAMES])
    with pytest.raises(video_data.VideoTooShortError):
        video_data.read_frames(videos["frames"], [NUM_FRAMES + 5])


def test_short_video_gives_a_full_clip(tmp_path):
    path = video_data.write_video(str(tmp_path / "three.mp4"), [index_frame(i) for i in range(3)])
    dataset = video_data.VideoDataset([video_data.VideoRecord(path, 0)], 8, "test", video_data.test_transform(32))
    video, _, _, ok, _ = dataset[0]
    assert ok and video.shape == (1, 8, 3, 32, 32)


def bad_records(bad_files, good):
    return [video_data.VideoRecord(bad_files[c], 0) for c in
            ("missing", "empty", "random bytes", "truncated", "audio only")] + [video_data.VideoRecord(good, 1)]


def test_training_replaces_bad_videos_and_logs_each_once(bad_files, videos, caplog):
    records = bad_records(bad_files, videos["mp4-h264-bframes"])
    dataset = video_data.VideoDataset(records, 4, "train", video_data.train_transform(32), seed=3)
    with caplog.at_level(logging.WARNING, logger="video_data"):
        for _ in range(2):
            for i in range(len(records)):
                video, target, index, ok, _ = dataset[i]
                assert ok and index == len(records) - 1 and int(target) == 1 and video.shape == (4, 3, 32, 32)
    for case in ("missing", "empty", "random bytes", "truncated", "audio only"):
        assert sum(bad_files[case] in r.getMessage() for r in caplog.records) == 1


def test_a_bad_path_is_logged_once_across_workers_and_epochs(bad_files, videos, tmp_path):
    """A DataLoader starts new worker processes every epoch, each with its own dataset copy."""
    good = video_data.VideoRecord(videos["mp4-h264-bframes"], 1)
    records = [video_data.VideoRecord(bad_files["empty"], 0), good, good, good]
    dataset = video_data.VideoDataset(records, 4, "train", video_data.train_transform(32))
    handler = logging.FileHandler(tmp_path / "log.txt")       # forked workers inherit it: one file
    logger = logging.getLogger("video_data")
    logger.addHandler(handler)
    try:
        for _ in range(3):                                            # epochs
            assert len(list(DataLoader(dataset, batch_size=1, num_workers=2))) == 4
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert (tmp_path / "log.txt").read_text().count(bad_files["empty"]) == 1


def test_a_folder_of_pngs_says_what_a_frame_folder_holds(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i:04d}.png").write_bytes(b"a png")
    expected = (r"pngs: is a folder without img_\*.jpg files \(it holds 3 other files, "
                r"e.g. 0000.png\); "
                r"a frame folder holds JPEGs named img_00001.jpg")
    with pytest.raises(video_data.VideoReadError, match=expected):
        video_data.VideoDataset([video_data.VideoRecord(str(folder), 0)], 4, "test", strict=True)[0]
    with pytest.raises(video_data.VideoReadError, match=expected):
        video_data.read_frames(str(folder), [0])


def test_training_replacement_is_deterministic(bad_files, videos):
    records = [video_data.VideoRecord(bad_files["missing"], 0)] + [
        video_data.VideoRecord(videos[f], k) for k, f in enumerate(FORMATS, 1)]
    picks = [video_data.VideoDataset(records, 4, "train", video_data.train_transform(32), seed=7)[0][2]
             for _ in range(2)]
    assert picks[0] == picks[1] != 0


def test_training_survives_a_frame_count_that_lies(bad_files, videos, tmp_path):
    """A truncated file, and a TSN list that overstates a frame folder: the frames on disk are
    trusted, the clip resampled, the video kept."""
    folder = tmp_path / "ten"
    shutil.copytree(videos["frames"], folder)
    for i in range(11, NUM_FRAMES + 1):
        os.remove(folder / video_data.FRAME_NAME.format(i))
    records = [video_data.VideoRecord(bad_files["truncated, index first"], 0),
               video_data.VideoRecord(str(folder), 1, num_frames=NUM_FRAMES)]
    dataset = video_data.VideoDataset(records, 8, "train", video_data.train_transform(32))
    torch.manual_seed(0)
    for i in (0, 1):
        assert dataset[i][2] == i and dataset[i][3]


def test_evaluation_counts_failures_and_strict_raises(bad_files, videos):
    records = bad_records(bad_files, videos["mp4-h264-bframes"])
    dataset = video_data.VideoDataset(records, 4, "test", video_data.test_transform(32, 3), num_clips=2, num_crops=3)
    results = [dataset[i] for i in range(len(records))]
    assert [ok for _, _, _, ok, _ in results] == [False] * 5 + [True]
    for video, target, index, ok, _ in results:
        assert video.shape == (6, 4, 3, 32, 32)
        if not ok:
            assert not video.any()
    assert video_data.unreadable_report(5, 6) == "5 of 6 videos could not be read"
    strict = video_data.VideoDataset(records, 4, "test", video_data.test_transform(32), strict=True)
    with pytest.raises(video_data.VideoReadError, match="missing.mp4"):
        strict[0]


# ----------------------------------------------------------------------------------- synthetic videos


def test_synthetic_classnames_and_composition():
    assert video_data.synthetic_classname("red", "circle", "moving left") == "red circle moving left"
    assert {"moving left", "moving right", "growing", "shrinking"} <= set(video_data.MOTIONS)


@pytest.mark.parametrize("motion, opposite", [("moving left", "moving right"), ("growing", "shrinking")])
def test_direction_only_orders_the_same_frames(motion, opposite):
    """Same draws, opposite motion = the same frames in reverse: no single frame and no frame average
    can tell the two apart; only their order can."""
    for seed in range(5):
        a = video_data.render_action("red", "triangle", motion, np.random.default_rng(seed))
        b = video_data.render_action("red", "triangle", opposite, np.random.default_rng(seed))
        assert np.array_equal(a, b[::-1]) and not np.array_equal(a, b)


def test_synthetic_shapes_move_and_colours_survive_h264(tmp_path):
    frames = video_data.render_action("blue", "square", "moving right", np.random.default_rng(0), 16, 32)
    path = video_data.write_video(str(tmp_path / "blue.mp4"), frames)
    decoded = video_data.read_frames(path, range(16)).numpy().astype(int)
    mask = (frames != video_data._BACKGROUND).any(-1)
    assert mask.any(axis=(1, 2)).all()
    assert np.abs(decoded - frames).mean() < 6
    r, g, b = decoded[mask].mean(0)
    assert b > 180 and r < 110 and g < 140  # still clearly blue at 32 px after 4:2:0 chroma
    xs = [np.nonzero(m.any(0))[0].mean() for m in mask]
    assert xs[-1] > xs[0] + 5  # it moved right


def test_make_synthetic_dataset(tmp_path):
    classes = [("red", "circle", "moving left"), ("green", "square", "growing"), ("yellow", "triangle", "shrinking")]
    list_file = video_data.make_synthetic_dataset(str(tmp_path), classes, 2, num_frames=8, split="train")
    video_data.make_synthetic_dataset(str(tmp_path), classes[:1], 1, num_frames=8, split="unseen")
    assert list_file == str(tmp_path / "train.txt")
    split = video_data.load_split("synthetic", str(tmp_path), "train")
    assert [r.label for r in split.records] == [0, 0, 1, 1, 2, 2]
    assert split.classnames == ["red circle moving left", "green square growing", "yellow triangle shrinking"]
    assert video_data.count_frames(split.records[0].path) == 8
    same = video_data.load_split("list", str(tmp_path), list_file="train.txt", classnames_file="train_classnames.txt")
    assert pairs(same) == pairs(split)
    assert video_data.load_split("synthetic", str(tmp_path), "unseen").classnames == ["red circle moving left"]
    with pytest.raises(ValueError, match="purple"):
        video_data.make_synthetic_dataset(str(tmp_path), [("purple", "circle", "growing")], 1)


def test_the_same_seed_writes_the_same_videos(tmp_path):
    """A seed fixes the demo's videos byte for byte, so it fixes the demo's figures. (x264's
    lookahead wrote about 1 file in 100 differently from the same frames: several here, before
    video_data.SYNTHETIC_X264 turned it off.)"""
    classes = [(c, s, "moving left") for c in ("red", "green") for s in ("circle", "square")]
    digests = []
    for run_ in ("a", "b"):
        video_data.make_synthetic_dataset(str(tmp_path / run_), classes, 50, split="train")
        files = sorted(glob.glob(str(tmp_path / run_ / "videos" / "train" / "*" / "*.mp4")))
        digests.append([hashlib.md5(open(f, "rb").read()).hexdigest() for f in files])
    assert len(digests[0]) == 200 and digests[0] == digests[1]


def test_write_video_needs_even_sizes(tmp_path):
    with pytest.raises(ValueError, match="even"):
        video_data.write_video(str(tmp_path / "odd.mp4"), np.zeros((2, 31, 32, 3), np.uint8))


# ------------------------------------------------------------------------------------------------ prepare


@pytest.mark.parametrize("form", ["frames", "video"])
def test_prepare_then_read_the_prepared_form(ucf101, tmp_path, form):
    out = str(tmp_path / "prepared")
    converted, skipped, failed, damaged = video_data.prepare("ucf101", ucf101["root"], out, form,
                                                             short_side=24, workers=1)
    assert (converted, skipped, failed, damaged) == (9, 0, [], [])
    split = video_data.load_split("ucf101", ucf101["root"], "train", 2, prepared=out)
    original = video_data.load_split("ucf101", ucf101["root"], "train", 2)
    assert [r.label for r in split.records] == [r.label for r in original.records]
    for r, o in zip(split.records, original.records):
        assert r.path.startswith(out) and (os.path.isdir(r.path) if form == "frames" else r.path.endswith(".mp4"))
        assert video_data.count_frames(r.path) == video_data.count_frames(o.path) == dataset_fixtures.FRAMES
        assert video_data.read_frames(r.path, [0]).shape == (1, 24, 24, 3)  # 32 -> short side 24
    video, _, _, ok, _ = video_data.VideoDataset(split, 8, "test", video_data.test_transform(32))[0]
    assert ok and video.shape == (1, 8, 3, 32, 32)
    again = video_data.prepare("ucf101", ucf101["root"], out, form, short_side=24, workers=1)
    assert again == (0, 9, [], [])
    with pytest.raises(FileNotFoundError, match="prepared folder .* not found: expected .*prepraed"):  # a typo
        video_data.load_split("ucf101", ucf101["root"], "train", 2, prepared=str(tmp_path / "prepraed"))


def test_prepared_video_has_a_short_keyframe_interval(tmp_path, videos):
    dst = str(tmp_path / "short_gop.mp4")
    src, error, _ = video_data._prepare_one((videos["mp4-h264-bframes"], dst, "video", 256, 90, 8))
    assert error is None and src == videos["mp4-h264-bframes"]
    index = video_data._video_index(dst)
    assert max(np.diff(index.keyframes)) <= 8 and index.num_frames == NUM_FRAMES
    assert [frame_number(f) for f in video_data.read_frames(dst, [0, 33, 89])] == [0, 33, 89]


def test_prepare_cli_resumes_and_survives_bad_videos(ucf101, tmp_path, capsys):
    root = tmp_path / "ucf"
    shutil.copytree(ucf101["root"], root)
    victim = ucf101["train"][1][0][0].replace(ucf101["root"], str(root))
    open(victim, "wb").write(b"not a video")
    out = tmp_path / "frames"
    stale = out / os.path.relpath(os.path.splitext(victim)[0], root)
    os.makedirs(str(stale) + ".tmp999")  # left behind by a killed run
    args = ["prepare", "--dataset", "ucf101", "--root", str(root), "--out", str(out), "--workers", "2",
            "--short-side", "32"]
    assert video_data.main(args) == 0
    assert "prepared 8 videos" in capsys.readouterr().out
    assert not os.path.exists(str(stale) + ".tmp999") and not os.path.exists(stale)
    assert video_data.main(args) == 0
    assert "prepared 0 videos" in capsys.readouterr().out  # the 8 finished ones are skipped


def test_prepare_into_its_own_kinetics_root_twice_keeps_reading_the_originals(tmp_path, capsys):
    """The issue's case: --out inside a Kinetics root, whose videos are found by walking it (in
    sorted order: below train/, val/ and test/, the copies would be found last and win)."""
    data = dataset_fixtures.make_kinetics(tmp_path / "k4", videos_per_class=1, missing=0)
    out = os.path.join(data["root"], "videos_256")
    args = ["prepare", "--dataset", "kinetics400", "--root", data["root"], "--out", out,
            "--form", "video", "--workers", "1"]
    assert video_data.main(args) == 0
    assert "prepared 9 videos" in capsys.readouterr().out
    assert video_data.main(args) == 0                                   # the rerun: all done
    assert "prepared 0 videos into" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(out, "videos_256"))          # no copies of copies
    for split in ("train", "val", "test"):                           # the originals, not the copies
        assert pairs(video_data.load_split("kinetics400", data["root"], split)) == data[split]
        prepared = video_data.load_split("kinetics400", data["root"], split, prepared=out)
        assert all(r.path.startswith(out + os.sep) for r in prepared.records)
    with pytest.raises(SystemExit, match=r"--out .* is the dataset's --root folder"):
        video_data.main(args[:-4] + ["--out", data["root"], "--form", "video"])


@pytest.mark.parametrize("flag, value", [("--short-side", "0"), ("--short-side", "-8"),
                                         ("--quality", "0"), ("--quality", "101"), ("--gop", "0"),
                                         ("--workers", "-1")])
def test_prepare_rejects_bad_settings_before_reading_anything(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as error:
        video_data.main(["prepare", "--dataset", "ucf101", "--root", str(tmp_path / "nowhere"),
                         "--out", str(tmp_path / "out"), flag, value])
    assert error.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected a whole number from" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "out")


def test_prepare_rerun_with_other_settings_is_refused(ucf101, tmp_path, capsys):
    out = tmp_path / "frames"
    args = ["prepare", "--dataset", "ucf101", "--root", ucf101["root"], "--out", str(out),
            "--workers", "1"]
    assert video_data.main(args + ["--short-side", "24"]) == 0
    with pytest.raises(SystemExit, match=r"--out .* other settings \(short_side 24 then, 16 now"):
        video_data.main(args + ["--short-side", "16"])
    assert json.load(open(out / video_data.PREPARED_RECORD))["short_side"] == 24   # still true
    with pytest.raises(SystemExit, match=r"--out .* settings \(form 'frames' then, 'video' now"):
        video_data.main(args + ["--short-side", "24", "--form", "video"])
    assert video_data.main(args + ["--short-side", "24"]) == 0          # the same settings: resumed
    with pytest.raises(SystemExit, match=r"--out .*test_video_data.py is a file"):
        video_data.main(args[:5] + ["--out", __file__])
    with pytest.raises(SystemExit):
        video_data.main(["prepare", "--dataset", "list", "--root", ucf101["root"],
                         "--out", str(out), "--list-file", "train.txt"])
    err = capsys.readouterr().err
    assert "--dataset list needs --list-file FILE and --classnames-file FILE (in --root)" in err


def test_read_errors_survive_pickling_across_worker_processes():
    for error in (video_data.VideoReadError("a.mp4", "no video stream"), video_data.VideoTooShortError("b.mp4", 5, 9)):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and copy.path == error.path
    assert pickle.loads(pickle.dumps(video_data.VideoTooShortError("b.mp4", 5, 9))).available == 5


def test_strict_failure_in_a_dataloader_worker_names_the_video(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    dataset = video_data.VideoDataset([video_data.VideoRecord(str(bad), 0)], 4, "test",
                                      video_data.test_transform(32), strict=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=1)
    with pytest.raises(video_data.VideoReadError, match="broken.mp4") as error:
        next(iter(loader))
    message = str(error.value)                                        # one line, not a traceback
    assert message.startswith(str(bad) + ": cannot open") and "\n" not in message


def test_packets_numbered_otherwise_after_a_seek_are_noticed(videos, monkeypatch):
    """A demuxer that gives other packets after a seek than in one pass from the start (here: an
    index whose keyframes are each claimed one packet later) must not shift the tags that name
    the frames: the reader checks every packet's size against the pass's, and reads in order."""
    path = videos["mkv-h264-bframes"]
    true = video_data._build_index(path)
    shifted = (true.key_packets[0],) + tuple(k + 1 for k in true.key_packets[1:])
    monkeypatch.setattr(video_data, "_build_index",
                        lambda p: dataclasses.replace(true, key_packets=shifted))
    video_data._INDEX_CACHE.clear()
    wanted = [k + 3 for k in true.keyframes[1:]]
    assert [frame_number(f) for f in video_data.read_frames(path, wanted, 1)] == wanted
    video_data._INDEX_CACHE.clear()


# --------------------------------------------------------------------------------------------------
# Issue #24: the crop's aspect, and what PREPARED.json must record


def test_multi_scale_crop_distorts_the_aspect_by_one_scale_step_at_most():
    """TSN's rule (max_distort=1): width and height are two of the scaled sides 256 x (1, .875,
    .75, .66) at most one place apart in that list; every such pair, and only those, is drawn."""
    sides = [256, 224, 192, 168]                                      # the short side 256, scaled
    allowed = {(w, h) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= 1}
    assert len(allowed) == 10 and (256, 192) not in allowed          # two steps: never
    torch.manual_seed(0)
    drawn = {video_data._msc_box(340, 256, 224, video_data.MSC_SCALES)[2:] for _ in range(1000)}
    assert drawn == allowed


def test_prepare_rerun_with_another_quality_or_gop_is_refused(ucf101, tmp_path, capsys):
    """--quality shapes frame folders and --gop prepared videos: a rerun into the same --out with
    another value would mix two kinds of copies under one PREPARED.json, so it is refused."""
    video = os.path.relpath(ucf101["test"][1][0][0], ucf101["root"])   # one video, listed
    (tmp_path / "list.txt").write_text(f"{video} 0\n")
    (tmp_path / "names.txt").write_text("a\n")
    common = ["prepare", "--dataset", "list", "--root", ucf101["root"], "--list-file",
              str(tmp_path / "list.txt"), "--classnames-file", str(tmp_path / "names.txt"),
              "--workers", "1", "--short-side", "16"]
    for form, flag, first, second in (("frames", "--quality", "90", "50"),
                                      ("video", "--gop", "4", "8")):
        out = tmp_path / form
        args = common + ["--out", str(out), "--form", form]
        assert video_data.main(args + [flag, first]) == 0
        with pytest.raises(SystemExit, match=rf"other settings \({flag[2:]} {first} then, "
                                             rf"{second} now"):
            video_data.main(args + [flag, second])
        assert json.load(open(out / video_data.PREPARED_RECORD))[flag[2:]] == int(first)
        assert video_data.main(args + [flag, first]) == 0            # the same: resumed
