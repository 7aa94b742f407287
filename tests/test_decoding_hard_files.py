"""Files a player shows but a naive reader gets wrong (issue #23, items 2, 10, 11): several video
streams, a stream that starts mid-GOP, a corrupt keyframe. The reference is what FFmpeg's decoder
outputs decoding the file from the start (a player, `ffmpeg -i`), packets it rejects skipped.
"""

import logging
import os

import av
import numpy as np
import pytest
import torch

import video_data
from test_frame_conformance import remux, stripes


def frame_number(frame):
    """The number a stripes() frame shows (any size: stripe b spans columns b*w/8 to (b+1)*w/8)."""
    w = frame.shape[1]
    frame = np.asarray(frame)
    stripe = [frame[:, b * w // 8 + 2:(b + 1) * w // 8 - 2] for b in range(8)]
    return sum(1 << b for b in range(8) if stripe[b].mean() > 127)


def player_frames(path):
    """RGB frames of the main stream decoded from the start on one thread, rejected packets
    skipped (as ffmpeg does), with the video stream FFmpeg itself picks as best."""
    with av.open(path) as container:
        stream = container.streams.video[container.streams.best("video").index]
        stream.codec_context.thread_count = 1
        frames = []
        for packet in container.demux(stream):
            try:
                frames += packet.decode()
            except av.InvalidDataError:
                continue
        return [f.to_ndarray(format="rgb24") for f in frames]


def write_two_streams(path, default=None):
    """An MKV: track 0 of 4 frames at 32x32, track 1 of 32 frames at 64x48 (both H.264); `default`
    is the track flagged as the default one, if any."""
    with av.open(path, "w", options={"default_mode": "passthrough"}) as container:
        small, large = (container.add_stream("libx264", rate=30) for _ in range(2))
        for stream, (w, h) in ((small, (32, 32)), (large, (64, 48))):
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if default is not None:
            (small, large)[default].disposition = av.stream.Disposition.default
        for i in range(32):
            frame = av.VideoFrame.from_ndarray(stripes(i), format="rgb24")
            container.mux(large.encode(frame))
            if i < 4:
                container.mux(small.encode(frame.reformat(32, 32)))
        container.mux(large.encode(None))
        container.mux(small.encode(None))
    return path


@pytest.mark.parametrize("default", [None, 1])
def test_the_stream_a_player_picks_is_read_everywhere(tmp_path, caplog, default):
    path = write_two_streams(str(tmp_path / "two.mkv"), default)
    with av.open(path) as container:
        assert [s.frames or 0 for s in container.streams.video][:1] != [32]  # track 0 is the small
    video_data._INDEX_CACHE.clear()
    with caplog.at_level(logging.WARNING, logger="video_data"):
        assert video_data.count_frames(path) == 32
        for _ in range(2):
            clip = video_data.read_frames(path, [0, 17, 31])
            assert clip.shape == (3, 48, 64, 3) and [frame_number(f) for f in clip] == [0, 17, 31]
    said = [r.getMessage() for r in caplog.records if path in r.getMessage()]
    assert len(said) == 1 and "2 video streams; reading stream 1 (64x48" in said[0]  # once a file
    dst = str(tmp_path / "prepared")
    assert video_data._prepare_one((path, dst, "frames", 256, 95, 4)) == (path, None, False)
    assert video_data.count_frames(dst) == 32


def test_a_default_stream_is_preferred_to_a_larger_one(tmp_path):
    """FFmpeg's choice: the default disposition first, then the largest picture."""
    path = write_two_streams(str(tmp_path / "two.mkv"), default=0)
    assert video_data.count_frames(path) == 4
    assert video_data.read_frames(path, [3]).shape == (1, 32, 32, 3)


def cut_at_start(src, dst, packets_cut):
    """dst: src's stream copied without its first packets, as a recording cut mid-GOP starts."""
    return remux(src, dst, lambda packets: packets[packets_cut:])


@pytest.mark.parametrize("ext, bframes", [(".mkv", 0), (".mp4", 3)])
def test_a_stream_that_starts_mid_gop_reads_what_a_player_shows(tmp_path, ext, bframes):
    src = video_data.write_video(str(tmp_path / f"whole{ext}"), [stripes(i) for i in range(40)],
                                 gop=8, bframes=bframes)
    path = cut_at_start(src, str(tmp_path / f"cut{ext}"), 3)
    shown = player_frames(path)
    assert 20 <= len(shown) < 37  # frames before the first keyframe are not shown
    video_data._INDEX_CACHE.clear()
    assert video_data.count_frames(path) == len(shown)
    every = video_data.read_frames(path, range(len(shown))).numpy()
    assert all(np.array_equal(a, b) for a, b in zip(every, shown))
    video_data._INDEX_CACHE.clear()
    assert np.array_equal(video_data.read_frames(path, [len(shown) - 1, 0]).numpy(),
                          np.stack([shown[-1], shown[0]]))
    dataset = video_data.VideoDataset([video_data.VideoRecord(path, 0)], 8, "test",
                                      video_data.test_transform(32), strict=True)
    assert dataset[0][3]


def corrupt_keyframe(src, dst, which=1):
    """dst: src with the payload of its `which`-th keyframe overwritten by noise (its length and
    its first bytes, the headers, kept)."""
    data = bytearray(open(src, "rb").read())
    with av.open(src) as container:
        keys = [p for p in container.demux(video=0) if p.size and p.is_keyframe]
    start, size = keys[which].pos, keys[which].size
    noise = np.random.default_rng(0).integers(0, 256, size - 40, dtype=np.uint8).tobytes()
    data[start + 40:start + size] = noise
    open(dst, "wb").write(bytes(data))
    return dst


@pytest.mark.parametrize("ext, codec", [(".avi", "mpeg4"), (".mkv", "libx264")])
def test_a_corrupt_keyframe_skips_what_cannot_be_decoded(tmp_path, caplog, ext, codec):
    src = video_data.write_video(str(tmp_path / f"good{ext}"), [stripes(i) for i in range(48)],
                                 codec=codec, gop=12, bframes=0)
    path = corrupt_keyframe(src, str(tmp_path / f"bad{ext}"))
    shown = player_frames(path)
    video_data._INDEX_CACHE.clear()
    n = video_data.count_frames(path)
    assert n == len(shown) and n >= 36  # the other keyframe intervals decode
    indices = [0, 5, 13, 20, 30, n - 1]
    got = video_data.read_frames(path, indices).numpy()
    assert all(np.array_equal(got[k], shown[i]) for k, i in enumerate(indices))
    records = [video_data.VideoRecord(path, 0)]
    for mode in ("train", "test"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="video_data"):
            dataset = video_data.VideoDataset(records, 8, mode, video_data.test_transform(32),
                                              strict=True)
            assert all(dataset[0][3] and dataset[0][2] == 0 and dataset[0][4] for _ in range(2))
        said = [r.getMessage() for r in caplog.records if path in r.getMessage()]
        assert len(said) == 1 and "could not be decoded" in said[0]  # once a run, not silently
    dst = str(tmp_path / "prepared")
    assert video_data._prepare_one((path, dst, "frames", 256, 95, 4)) == (path, None, True)
    assert video_data.count_frames(dst) == n
