"""Videos on disk -> normalised (T, 3, S, S) clips, for every dataset ActionCLIP uses.

Sections, in order (the method first, the machinery after):
  constants      CLIP's normalisation, file extensions, the TSN frame-folder naming
  sampling       sample_indices: segment-based sampling [Sec. 4.1], multi-clip test views
  transforms     train_transform / test_transform on whole clips, one random draw per video
                 [Sec. 4.1]; their float half batched on the model's device (finish_batch)
  dataset        VideoDataset, ClipReader, collate: what a DataLoader sees; survives bad files
  decoding       the interface: read_frames / count_frames; then the machinery: each video
                 decoded once to learn which packet each frame comes from, frame-exact PyAV
                 decoding with keyframe seeks (H.264 / MPEG-4 frames nothing depends on are
                 skipped), frames upright as a player shows them; JPEG frame folders, decoded in
                 the worker or in a batch on the device
  parsers        load_split: UCF101, HMDB51, Kinetics-400/600/700, Charades, generic list files
  synthetic      coloured shapes that move, written as real .mp4 files (demo and tests)
  locks          OutputLock: one command at a time writes a run folder or a report
  prepare        convert a dataset once into frame folders or short-GOP videos (decoding is the
                 bottleneck)
  CLI            python video_data.py prepare ...

Shapes: B videos in a batch, T frames per video, V views per video (clips x crops), C classes,
S image side in pixels (after the crop); h, w a frame's height and width as decoded (any size).

Frame indices are 0-based everywhere; frame folders hold `img_00001.jpg` (1-based, the
TSN/official format).

Prepare a dataset once, then read the prepared form transparently:
    python video_data.py prepare --dataset ucf101 --root data/ucf101 --out data/ucf101_frames \\
        --form frames --short-side 256 --workers 16
    split = load_split("ucf101", "data/ucf101", "train", fold=1, prepared="data/ucf101_frames")

This file depends on no sibling file of the project.
"""

import argparse
import bisect
import collections
import csv
import fcntl
import functools
import glob
import hashlib
import io
import itertools
import json
import logging
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import warnings
import weakref
import zlib
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import av
import numpy as np
import torch
import torchvision.io
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

log = logging.getLogger("video_data")


# --- Constants ------------------------------------------------------------------------------------

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # video_data depends on no sibling: its own copy
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

VIDEO_EXTS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v")
FRAME_NAME = "img_{:05d}.jpg"  # TSN / official ActionCLIP frame folders, 1-based
FRAME_GLOB = "img_*.jpg"
PREPARED_RECORD = "PREPARED.json"  # in each folder `prepare` writes: its settings; walks skip it
TEST_SCALE = 256 / 224  # test: short side resized to 256 for a 224 crop (384 for 336) [Sec. 4.1]
MSC_SCALES = (1, 0.875, 0.75, 0.66)  # TSN multi-scale crop scales, as in the official code
DATASETS = ("ucf101", "hmdb51", "kinetics400", "kinetics600", "kinetics700", "charades", "list",
            "synthetic")


# --- Segment sampling [Sec. 4.1] ------------------------------------------------------------------


def _segment_bounds(num_frames, num_segments):
    """[start, end) of each of T equal segments (empty when T > num_frames; starts then repeat)."""
    edges = [i * num_frames // num_segments for i in range(num_segments + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _train_indices(num_frames, num_segments, generator):
    """One uniformly random frame in each of T equal segments."""
    return [start + int(torch.randint(end - start, (1,), generator=generator))
            for start, end in _segment_bounds(num_frames, num_segments)]


def _test_indices(num_frames, num_segments, num_clips):
    """num_clips clips of T frames, clip-major; clip c takes the point (c + 0.5) / num_clips of
    each segment.

    With one clip this is the centre of each segment; num_clips clips are evenly spaced temporal
    shifts of the same segment grid (the TSN/official multi-clip scheme), each covering the whole
    video.
    """
    return [
        min(int((s + (c + 0.5) / num_clips) * num_frames / num_segments), num_frames - 1)
        for c in range(num_clips)
        for s in range(num_segments)
    ]


def _time_indices(times, num_segments, mode, num_clips, generator):
    """As _train_indices / _test_indices, with T segments of equal duration: the frame shown at a
    random point of each (train), or at the points of each clip (test). `times`: each frame's start
    in seconds, ascending; the last frame lasts as long as the mean frame."""
    start, n = times[0], len(times)
    frame_length = (times[-1] - start) / (n - 1)               # the mean frame's
    if mode == "train":
        points = [s + float(torch.rand((), generator=generator)) for s in range(num_segments)]
    else:
        points = [s + (c + 0.5) / num_clips for c in range(num_clips) for s in range(num_segments)]
    # a point on a frame's start is that frame's, also where rounding puts it a hair before: so
    # at a constant frame rate these are the frames of _train_indices / _test_indices
    instants = [start + (p / num_segments * n + 1e-6) * frame_length for p in points]
    return [bisect.bisect_right(times, t) - 1 for t in instants]


def sample_indices(num_frames, num_segments, mode="train", num_clips=1, generator=None,
                   times=None):
    """Frame indices to read from a video of `num_frames` frames [Sec. 4.1].

    train: T indices, one uniformly random frame in each of T equal segments (torch RNG, or
    `generator`, a torch.Generator). test: num_clips*T indices, clip-major, segment centres for
    one clip.
    Segments are equal in frame count; given `times` (frame_times: num_frames start times,
    ascending), equal in duration instead, which differs for variable frame rate video.
    Videos with fewer than T frames repeat frames deterministically and in order (3 frames, T = 8:
    0,0,0,1,1,1,2,2), in both modes.
    """
    if num_frames < 1 or num_segments < 1 or num_clips < 1:
        raise ValueError(f"sample_indices: need num_frames, num_segments, num_clips >= 1, "
                         f"got {num_frames}, {num_segments}, {num_clips}")
    if mode not in ("train", "test"):
        raise ValueError(f"sample_indices: mode must be 'train' or 'test', got {mode!r}")
    if num_frames < num_segments:  # as the official code: frame i * n // T, the same in both modes
        starts = [start for start, _ in _segment_bounds(num_frames, num_segments)]
        return starts * (num_clips if mode == "test" else 1)
    if times is not None and len(times) == num_frames > 1 and times[-1] > times[0]:
        return _time_indices(times, num_segments, mode, num_clips, generator)
    if mode == "train":
        return _train_indices(num_frames, num_segments, generator)
    return _test_indices(num_frames, num_segments, num_clips)


# --- Transforms [Sec. 4.1]: whole clips, one random draw per video --------------------------------


def _normalise_float(video):
    """float (..., 3, h, w) in [0, 1] -> CLIP mean/std normalised."""
    mean = torch.tensor(CLIP_MEAN, device=video.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, device=video.device).view(3, 1, 1)
    return (video - mean) / std


def _normalise(video):
    """uint8 (..., 3, h, w) -> float, CLIP mean/std normalised."""
    return _normalise_float(video.float() / 255)


def _as_tchw(clip):
    """Clips arrive as read_frames gives them, uint8 (T, h, w, 3); transforms work on
    (T, 3, h, w)."""
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 clip (T, H, W, 3), got {tuple(clip.shape)} "
                         f"{clip.dtype}")
    return clip.permute(0, 3, 1, 2)  # (T, 3, h, w)


def _tsn_offsets(image_w, image_h, crop_w, crop_h):
    """The 13 fixed crop positions of TSN's multi-scale crop (more_fix_crop=True): corners,
    centre, edge centres and quarter points."""
    w, h = (image_w - crop_w) // 4, (image_h - crop_h) // 4
    grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0),
            (1, 1), (3, 1), (1, 3), (3, 3)]
    return [(a * w, b * h) for a, b in grid]


def _msc_box(image_w, image_h, size, scales):
    """Draw a TSN multi-scale crop box (left, top, w, h) [Sec. 4.1]: side lengths from `scales` of
    the short side, aspect distorted by at most one scale step, at one of the fixed offsets."""
    base = min(image_w, image_h)
    sides = [int(base * s) for s in scales]
    sides = [size if abs(s - size) < 3 else s for s in sides]  # TSN snaps near-size crops to size
    pairs = [(w, h) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= 1]
    crop_w, crop_h = pairs[int(torch.randint(len(pairs), (1,)))]
    offsets = _tsn_offsets(image_w, image_h, crop_w, crop_h)
    left, top = offsets[int(torch.randint(len(offsets), (1,)))]
    return left, top, crop_w, crop_h


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _rotate_hue(video, turns):
    """Rotate hues of a float (T, 3, S, S) clip in [0, 1] by `turns` (a fraction of a full turn).

    official: torchvision's HSV round trip costs ~22 ms per 8 x 224^2 clip on one core, two thirds
    of a video's whole budget; a rotation about the grey axis in YIQ space (NVIDIA DALI's hue) is
    one 3x3 colour matrix, ~2 ms. Same range, a slightly different hue circle.
    """
    angle = torch.tensor(2 * torch.pi * turns)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.tensor([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
    matrix = torch.linalg.inv(_RGB_TO_YIQ) @ rotation @ _RGB_TO_YIQ  # (3, 3), acts on RGB
    return torch.einsum("ij,tjhw->tihw", matrix, video).clamp_(0, 1)


def _adjust_contrast(video, factor):
    """Contrast about the mean grey of the whole clip. official: torchvision's, about each frame's
    own mean, which would make the change differ from frame to frame."""
    mean = TF.rgb_to_grayscale(video).mean()
    return (factor * video + (1 - factor) * mean).clamp_(0, 1)


JITTER = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue ranges: official config


class ClipColorJitter:
    """Colour jitter with one draw per clip [Sec. 4.1]: brightness, contrast, saturation and hue,
    in a random order, on a float (T, 3, S, S) clip in [0, 1]. Brightness and saturation are
    torchvision v2's."""

    def __init__(self, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1):
        self.ranges = (brightness, contrast, saturation, hue)

    def __call__(self, video):
        ops = (TF.adjust_brightness, _adjust_contrast, TF.adjust_saturation, _rotate_hue)
        for k in torch.randperm(4).tolist():
            r = self.ranges[k]
            if r:
                centre = 0.0 if k == 3 else 1.0  # hue shifts around 0, the others scale around 1
                video = ops[k](video, float(torch.empty(()).uniform_(centre - r, centre + r)))
        return video


class TrainTransform:
    """Training augmentation of the official code, drawn once per clip [Sec. 4.1].

    uint8 (T, h, w, 3) -> float (T, 3, S, S), S = size: TSN multi-scale crop (relative to the short
    side, so the same geometry at 240p or 720p), horizontal flip, optional RandAugment(2, 9), colour
    jitter (0.4, 0.4, 0.2, 0.1) with p=0.8, grayscale p=0.2, CLIP normalisation.
    official: GroupRandomColorJitter re-draws the jitter for every frame; here all frames of a clip
    share one draw, so augmentation never fakes motion.

    on_device=True stops after the uint8 part (crop, flip, RandAugment) and returns a DeviceClip:
    the pixels and the colour draws, from the same RNG in the same order. finish_batch then does
    the float work, batched, on the model's device: a quarter of the bytes through shared memory,
    no float work in the workers, the same distribution (a test compares the two on one draw).
    """

    def __init__(self, size, flip=True, color_jitter=True, grayscale=True, randaugment=False,
                 scales=MSC_SCALES, on_device=False):
        self.size, self.flip, self.scales = size, flip, tuple(scales)
        self.color_jitter, self.grayscale = color_jitter, grayscale
        # v2 transforms given a (T, 3, S, S) tensor draw their parameters once for all T frames
        self.randaugment = v2.RandAugment(num_ops=2, magnitude=9) if randaugment else None
        self.jitter = ClipColorJitter(*JITTER)
        self.on_device = on_device

    def _geometry(self, video):
        """The uint8 part: multi-scale crop, flip, RandAugment. (T, 3, h, w) -> (T, 3, S, S)."""
        left, top, w, h = _msc_box(video.shape[-1], video.shape[-2], self.size, self.scales)
        video = TF.resized_crop(video, top, left, h, w, [self.size, self.size], antialias=True)
        if self.flip and torch.rand(()) < 0.5:  # horizontal flip [Sec. 4.1]
            video = TF.horizontal_flip(video)
        if self.randaugment is not None:
            video = self.randaugment(video)
        return video

    def _jpeg_clip(self, jpegs):
        """Undecoded frames: the draws of _geometry (same RNG, same order) and the colour draws."""
        if self.randaugment is not None:
            raise ValueError("RandAugment needs decoded pixels: decode JPEG frames in the workers")
        image_w, image_h = jpeg_size(jpegs[0])
        left, top, w, h = _msc_box(image_w, image_h, self.size, self.scales)
        flip = bool(self.flip and torch.rand(()) < 0.5)
        return JpegClip(torch.cat(jpegs), torch.tensor([len(jpeg) for jpeg in jpegs]),
                        torch.tensor([left, top, w, h, flip, self.size]), self._colour_draws())

    def _colour_draws(self):
        """The colour draws of __call__'s CPU path, in its order, from its RNG: (COLOUR_DRAWS,)."""
        draws = torch.tensor([0.0, 0, 1, 2, 3, 1, 1, 1, 0, 0])  # no jitter: factors 1, hue 0
        if self.color_jitter and torch.rand(()) < 0.8:
            draws[0] = 1
            draws[1:5] = torch.randperm(4).float()  # the order of the four adjustments
            for k in draws[1:5].long().tolist():
                r = self.jitter.ranges[k]
                if r:
                    centre = 0.0 if k == 3 else 1.0
                    draws[5 + k] = float(torch.empty(()).uniform_(centre - r, centre + r))
        if self.grayscale and torch.rand(()) < 0.2:
            draws[9] = 1
        return draws

    def __call__(self, clip):
        if isinstance(clip, list):  # JPEG files' bytes (VideoDataset(jpeg_bytes=True)): draws only
            return self._jpeg_clip(clip)
        video = self._geometry(_as_tchw(clip))  # (T, 3, S, S) uint8
        if self.on_device:
            return DeviceClip(video, self._colour_draws())
        video = video.float() / 255  # (T, 3, S, S) in [0, 1]
        if self.color_jitter and torch.rand(()) < 0.8:  # colour jitter [Sec. 4.1]
            video = self.jitter(video)
        if self.grayscale and torch.rand(()) < 0.2:  # grayscale [Sec. 4.1]
            video = TF.rgb_to_grayscale(video, num_output_channels=3)
        return _normalise_float(video)  # (T, 3, S, S)


def _three_crop_boxes(image_w, image_h, size):
    """(left, top) of 3 test crops along the long side (left/centre/right or top/centre/bottom),
    centred on the short side [Sec. 4.1]: TSN's GroupFullResSample without flips."""
    if image_w >= image_h:
        top = (image_h - size) // 2
        return [(x, top) for x in (0, (image_w - size) // 2, image_w - size)]
    left = (image_w - size) // 2
    return [(left, y) for y in (0, (image_h - size) // 2, image_h - size)]


MAX_TEST_ASPECT = 4  # test views of frames longer than 4:1 are cut out before they are scaled


class TestTransform:
    """Deterministic test views [Sec. 4.1]: resize the short side to size * 256/224, then a centre
    crop (num_crops=1 -> (T, 3, S, S)) or 3 crops along the long side (num_crops=3 ->
    (3, T, 3, S, S)). Input: uint8 (T, h, w, 3). on_device=True leaves the views uint8, for
    finish_batch.

    Memory: a frame more than MAX_TEST_ASPECT times longer than wide is not scaled whole (a 4000x16
    frame would become 64000x256, 0.75 GB for 8 frames): each crop is cut from the frame as decoded
    and scaled alone. So a view never holds more than T frames of scale_size x 4 * scale_size
    pixels, whatever the aspect ratio.
    """

    __test__ = False  # not a pytest class

    def __init__(self, size, num_crops=1, on_device=False):
        if num_crops not in (1, 3):
            raise ValueError(f"test_transform: num_crops must be 1 or 3, got {num_crops}")
        self.size, self.num_crops = size, num_crops
        self.scale_size = round(size * TEST_SCALE)  # 256 for 224, 384 for 336
        self.on_device = on_device

    def finish(self, views):
        return views if self.on_device else _normalise(views)

    def _crops_first(self, video):
        """The same views of a very long frame, each cut out of the frame as decoded, then scaled:
        (T, 3, S, S) or (3, T, 3, S, S)."""
        h, w = video.shape[-2:]
        scale = self.scale_size / min(h, w)
        sh, sw = (self.scale_size, int(w * scale)) if h <= w else (int(h * scale), self.scale_size)
        if self.num_crops == 1:                                  # TF.center_crop's box
            boxes = [(round((sw - self.size) / 2), round((sh - self.size) / 2))]
        else:
            boxes = _three_crop_boxes(sw, sh, self.size)
        fy, fx = sh / h, sw / w                                  # scaled pixels per pixel
        crops = []
        for left, top in boxes:
            crop_h, crop_w = max(1, round(self.size / fy)), max(1, round(self.size / fx))
            top, left = min(round(top / fy), h - crop_h), min(round(left / fx), w - crop_w)
            crops.append(TF.resized_crop(video, top, left, crop_h, crop_w,
                                         [self.size, self.size], antialias=True))
        return crops[0] if self.num_crops == 1 else torch.stack(crops)

    def __call__(self, clip):
        video = _as_tchw(clip)                                       # (T, 3, h, w)
        if max(video.shape[-2:]) > MAX_TEST_ASPECT * min(video.shape[-2:]):
            return self.finish(self._crops_first(video))
        video = TF.resize(video, [self.scale_size], antialias=True)  # short side -> scale_size
        if self.num_crops == 1:
            return self.finish(TF.center_crop(video, [self.size, self.size]))  # (T, 3, S, S)
        boxes = _three_crop_boxes(video.shape[-1], video.shape[-2], self.size)
        crops = [TF.crop(video, top, left, self.size, self.size) for left, top in boxes]
        return self.finish(torch.stack(crops))  # (3, T, 3, S, S)


def train_transform(size, flip=True, color_jitter=True, grayscale=True, randaugment=False,
                    scales=MSC_SCALES, on_device=False):
    """The training transform (see TrainTransform): uint8 (T, h, w, 3) -> float (T, 3, S, S),
    or with on_device=True a DeviceClip, whose colour work finish_batch does on the device."""
    return TrainTransform(size, flip, color_jitter, grayscale, randaugment, scales, on_device)


def test_transform(size, num_crops=1, on_device=False):
    """The test transform (see TestTransform): uint8 (T, h, w, 3) -> (T, 3, S, S) or
    (3, T, 3, S, S), float and normalised, or uint8 with on_device=True (for finish_batch)."""
    return TestTransform(size, num_crops, on_device)


test_transform.__test__ = False  # not a pytest test


# --- Transforms, the float half: batched on the model's device (workers stay in uint8) ------------


COLOUR_DRAWS = 10  # jitter on, the order of its 4 adjustments, their 4 factors, grayscale on


class DeviceClip(NamedTuple):
    """A training clip whose colour work is left to finish_batch; collated field by field."""
    pixels: torch.Tensor  # uint8 (T, 3, S, S), cropped, flipped, RandAugmented
    colour: torch.Tensor  # (COLOUR_DRAWS,) float: TrainTransform._colour_draws


class JpegClip(NamedTuple):
    """A training clip still in JPEG files (prepared frame folders), decoded by finish_batch. The
    files travel as one tensor: passing each as its own costs B*T file descriptors a batch."""
    jpegs: torch.Tensor     # uint8 (n,): the T files' bytes, one after the other (a batch: all B*T)
    lengths: torch.Tensor   # (T,) int64: the length of each file ((B, T) once collated)
    geometry: torch.Tensor  # (6,) int64: crop left, top, width, height; flip; output size
    colour: torch.Tensor    # (COLOUR_DRAWS,) float: TrainTransform._colour_draws


def decode_batch(clips, device):
    """Collated JpegClips -> uint8 (B, T, 3, S, S) on `device`: every frame of the batch decoded in
    one torchvision.io.decode_jpeg call there (nvJPEG on CUDA), then each video cropped, flipped."""
    files = torch.split(clips.jpegs, clips.lengths.flatten().tolist())  # B*T 1-D views, clip-major
    frames = _decode_jpegs(list(files), device=device)
    T, videos = clips.lengths.shape[1], []
    for b, (left, top, w, h, flip, size) in enumerate(clips.geometry.tolist()):
        video = torch.stack(frames[b * T:(b + 1) * T])                  # (T, 3, h, w)
        video = TF.resized_crop(video, top, left, h, w, [size, size], antialias=True)
        videos.append(TF.horizontal_flip(video) if flip else video)
    return torch.stack(videos)                                        # (B, T, 3, S, S)


def _per_video(factors, video):
    """Factors (B,) shaped to broadcast over a (B, T, 3, S, S) batch."""
    return factors.view(-1, 1, 1, 1, 1).to(video.device, video.dtype)


def _brightness(video, f):   # TF.adjust_brightness, each video with its own factor
    return (video * _per_video(f, video)).clamp_(0, 1)


def _contrast(video, f):     # _adjust_contrast: about the mean grey of each whole clip
    mean = TF.rgb_to_grayscale(video).mean(dim=(1, 2, 3, 4), keepdim=True)  # (B, 1, 1, 1, 1)
    f = _per_video(f, video)
    return (f * video + (1 - f) * mean).clamp_(0, 1)


def _saturation(video, f):   # TF.adjust_saturation
    f = _per_video(f, video)
    return (video * f + TF.rgb_to_grayscale(video) * (1 - f)).clamp_(0, 1)


def _hue(video, turns):      # _rotate_hue, one matrix per video
    angle = (2 * torch.pi * turns.double()).float()  # as _rotate_hue's torch.tensor(2 pi turns)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(turns), 3, 3)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    matrix = torch.linalg.inv(_RGB_TO_YIQ) @ rotation @ _RGB_TO_YIQ  # (B, 3, 3), acts on RGB
    return torch.einsum("bij,btjhw->btihw", matrix.to(video.device), video).clamp_(0, 1)


def colour_batch(pixels, colour):
    """uint8 (B, T, 3, S, S) on any device, with (B, COLOUR_DRAWS) CPU draws -> float, normalised.

    Exactly TrainTransform's float half, video by video: its colour jitter in its own order,
    grayscale [Sec. 4.1], CLIP normalisation. Which videos an adjustment touches is read from the
    CPU draws, so nothing waits for the device.
    """
    video = pixels.float() / 255                                    # (B, T, 3, S, S) in [0, 1]
    colour = colour.cpu()
    jittered = colour[:, 0] == 1
    for position in range(4):
        for k, adjust in enumerate((_brightness, _contrast, _saturation, _hue)):
            chosen = (jittered & (colour[:, 1 + position] == k)).nonzero().flatten()
            if len(chosen):
                rows = chosen.to(video.device, non_blocking=True)
                video[rows] = adjust(video[rows], colour[chosen, 5 + k])
    gray = colour[:, 9].nonzero().flatten()
    if len(gray):
        rows = gray.to(video.device, non_blocking=True)
        video[rows] = TF.rgb_to_grayscale(video[rows], num_output_channels=3)
    return _normalise_float(video)


def finish_batch(video, device):
    """A collated DataLoader batch -> the model's float input on `device`, normalised.

    uint8 test views (test_transform(on_device=True)) are normalised there, DeviceClips get their
    colour work there, JpegClips (collated by `collate`) are decoded there first; float batches
    (the CPU transforms) are only moved. Copies are non-blocking: pin the loader's memory
    (pin_memory=True) for them to overlap.
    """
    if isinstance(video, DeviceClip):
        return colour_batch(video.pixels.to(device, non_blocking=True), video.colour)
    if isinstance(video, JpegClip):
        return colour_batch(decode_batch(video, device), video.colour)
    video = video.to(device, non_blocking=True)
    return _normalise_float(video.float() / 255) if video.dtype == torch.uint8 else video


# --- The dataset: what a DataLoader sees ----------------------------------------------------------


@dataclass
class VideoRecord:
    """One video: a file or frame folder, its class id (a list of ids for multi-label datasets)
    and, when the list file gives it, its frame count."""

    path: str
    label: int | list
    num_frames: int | None = None


@dataclass
class DatasetSplit:
    """The videos of one split and the human-readable class names (index = class id)."""

    records: list
    classnames: list
    multilabel: bool = False
    missing: int = 0  # videos listed in the annotations but not found on disk (Kinetics)


MAX_REPLACEMENTS = 20  # a training item tries this many other videos before giving up


def shown_path(path):
    """`path` as reports print it: as is, or quoted with Python's escapes when it holds a newline,
    a tab or another character that is not printable (a name that is not UTF-8), so that one
    record stays one line and the name can still be told apart from every other."""
    path = os.fsdecode(path)
    return path if path.isprintable() else repr(path)


def unreadable_report(num_failed, num_total, num_damaged=0):
    """The line an evaluation prints about unreadable videos, and damaged ones read (if any)."""
    damaged = f"; {num_damaged} damaged, read as a player shows them" if num_damaged else ""
    return f"{num_failed} of {num_total} videos could not be read{damaged}"


class FirstTime:
    """first(key) is True only the first time any process sharing this object asks about `key`:
    the process that made it and its DataLoader workers, in every epoch (a DataLoader starts new
    workers each epoch, each with a fresh copy of the dataset, so a set in the dataset forgets).
    The keys are files created exclusively in a temporary folder, removed when its maker ends."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="video_data_seen_")
        weakref.finalize(self, _remove_own_folder, self.folder, os.getpid())

    def first(self, key):
        name = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()
        try:
            os.close(os.open(os.path.join(self.folder, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        except OSError:  # the folder is gone (a cleaned /tmp): say it again rather than never
            return True
        return True


def _remove_own_folder(folder, pid):
    if os.getpid() == pid:  # not from a forked worker's copy
        shutil.rmtree(folder, ignore_errors=True)


SAMPLE_BY = ("frame", "time")  # segments equal in frame count (TSN, official) or in duration


@functools.lru_cache(maxsize=20_000)
def _frame_times(path, size, mtime_ns):
    try:
        with av.open(path, options={"skip_frame": "all"}, **_METADATA_ERRORS) as container:
            stream = container.streams.video[0]
            pts = [p.pts for p in container.demux(stream) if p.size and not p.is_discard]
            time_base = stream.time_base
    except (av.FFmpegError, IndexError, OSError, UnicodeDecodeError):
        return None
    if not pts or None in pts or len(set(pts)) < len(pts) or time_base is None:
        return None
    return tuple(float(t * time_base) for t in sorted(pts))


def frame_times(path):
    """The start of each frame of a video file in seconds, in read_frames' order (presentation
    order), from the timestamps the file gives its frames; None for a frame folder, or a file
    whose frames lack distinct timestamps. Read by demuxing, without decoding; cached per file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return None if os.path.isdir(path) else _frame_times(path, st.st_size, st.st_mtime_ns)


class ClipReader:
    """The sampled uint8 frames (num_clips*T, h, w, 3), clip-major, of a VideoRecord [Sec. 4.1].

    Frame counts come from the record, else count_frames; when a video ends before its packets said
    (a truncated file, a list that overstates a frame folder), the frames on disk are trusted and
    the clip resampled once. in_memory=True keeps every decoded video (for tiny datasets).
    jpeg_bytes=True reads frame folders' JPEG files undecoded: a list of T (n,) uint8 tensors.
    sample_by='time': segments of equal duration, by frame_times (video files whose timestamps
    count every frame; others keep segments of equal frame count: frame folders, and `prepare`'s
    copies, written at a constant rate, carry no timing of the original).
    """

    def __init__(self, num_frames, mode, num_clips=1, in_memory=False, jpeg_bytes=False,
                 sample_by="frame"):
        if sample_by not in SAMPLE_BY:
            raise ValueError(f"ClipReader: sample_by must be one of {SAMPLE_BY}, got {sample_by!r}")
        self.num_frames, self.mode, self.num_clips = num_frames, mode, num_clips
        self.in_memory, self.jpeg_bytes, self.sample_by = in_memory, jpeg_bytes, sample_by
        self._frames = {}  # path -> decoded uint8 video
        self._counts = {}  # path -> corrected frame count

    def _count(self, record):
        n = self._counts.get(record.path) or record.num_frames or count_frames(record.path)
        if n < 1:
            folder = os.path.isdir(record.path)
            reason = _no_frames_reason(record.path) if folder else "has no frames"
            raise VideoReadError(record.path, reason)
        return n

    def _read(self, record):
        n = self._count(record)
        times = frame_times(record.path) if self.sample_by == "time" else None
        indices = sample_indices(n, self.num_frames, self.mode, self.num_clips, times=times)
        in_worker = torch.utils.data.get_worker_info() is not None
        threads = 1 if in_worker else 0  # workers are the parallelism
        if self.jpeg_bytes and os.path.isdir(record.path):
            return _whole_jpegs(record.path, read_jpeg_bytes(record.path, indices))
        if not self.in_memory:
            return read_frames(record.path, indices, threads)
        if record.path not in self._frames:
            self._frames[record.path] = read_frames(record.path, range(n), threads)
        return self._frames[record.path][indices]

    def __call__(self, record):
        try:
            return self._read(record)
        except VideoTooShortError as e:
            if e.available < 1 or record.path in self._counts:
                raise
            self._counts[record.path] = e.available
            return self._read(record)


class VideoDataset(torch.utils.data.Dataset):
    """Sampled, transformed clips of a DatasetSplit (or a list of VideoRecords) [Sec. 4.1].

    __getitem__(i) -> (video, target, index, ok, damaged):
      train: video (T, 3, S, S). A bad video is replaced by another one (a deterministic choice
             from `seed` and i), its path logged once (across DataLoader workers and epochs;
             once per process under torchrun); index is the video returned.
      test:  video (V, T, 3, S, S), V = num_clips * num_crops, clip-major. A bad video gives zeros
             of that shape and ok=False; strict=True raises VideoReadError (naming the path)
             instead.
      target: int64 class id, or a float multi-hot (C,) for multi-label splits.
      damaged: True for a damaged video read as a player shows it (logged once a run), so that a
             run's summary counts it: a count kept here would stay in a DataLoader worker.
    Annotations are parsed once, before; items only decode. Picklable for DataLoader workers, where
    decoding uses one thread per worker. Default transforms: train_transform(224),
    test_transform(224).
    jpeg_bytes=True (train mode, frame folders): items carry JpegClips, decoded on the model's
    device by finish_batch; a DataLoader needs collate_fn=collate for them.
    sample_by: 'frame' (segments of equal frame count) or 'time' (of equal duration; ClipReader).
    """

    def __init__(self, split_or_records, num_frames, mode="train", transform=None, num_clips=1,
                 num_crops=1, strict=False, in_memory=False, seed=0, jpeg_bytes=False,
                 sample_by="frame"):
        if mode not in ("train", "test"):
            raise ValueError(f"VideoDataset: mode must be 'train' or 'test', got {mode!r}")
        split = split_or_records
        if not isinstance(split, DatasetSplit):
            split = DatasetSplit(list(split_or_records), [])
        self.records, self.classnames = split.records, split.classnames
        self.multilabel = split.multilabel
        self.num_frames, self.mode, self.strict, self.seed = num_frames, mode, strict, seed
        self.num_clips, self.num_crops = (1, 1) if mode == "train" else (num_clips, num_crops)
        if transform is None:
            transform = train_transform(224) if mode == "train" else test_transform(224, num_crops)
        self.transform = transform
        if jpeg_bytes and (mode != "train" or in_memory):
            raise ValueError("VideoDataset: jpeg_bytes is for training clips read from disk "
                             "(mode='train', in_memory=False)")
        self.read = ClipReader(num_frames, mode, self.num_clips, in_memory, jpeg_bytes, sample_by)
        self._bad = set()  # indices found unreadable
        self._blank = None  # zeros for a failed test item
        self._logged = FirstTime()  # each bad path logged once, whatever the workers and epochs

    def __len__(self):
        return len(self.records)

    def _target(self, i):
        label = self.records[i].label
        if not self.multilabel:
            return torch.tensor(label, dtype=torch.int64)
        target = torch.zeros(len(self.classnames))  # (C,) multi-hot
        target[label] = 1
        return target

    def _note_bad(self, i, error, action):
        if self.strict:
            raise error
        if i not in self._bad and self._logged.first(self.records[i].path):
            log.warning("unreadable video (%s): %s", action, error)
        self._bad.add(i)

    def _note_damaged(self, i):
        """True if video i is damaged (logged the first time)."""
        path = self.records[i].path
        damaged = damaged_packets(path)
        if damaged and self._logged.first("damaged " + path):
            log.warning("damaged video (read): %s: %d packets could not be decoded or decoded "
                        "with errors; its frames are those a player shows", path, damaged)
        return damaged > 0

    def _train_item(self, i):
        rng = random.Random(self.seed * 1_000_003 + i)  # replacements: a fixed order per (seed, i)
        for j in [i] + [rng.randrange(len(self.records)) for _ in range(MAX_REPLACEMENTS)]:
            if j not in self._bad:
                try:
                    video = self.transform(self.read(self.records[j]))
                    return video, self._target(j), j, True, self._note_damaged(j)
                except VideoReadError as e:
                    self._note_bad(j, e, "replaced by another training video")
        raise RuntimeError(f"VideoDataset: video {i} and {MAX_REPLACEMENTS} replacements could not "
                           f"be read; check the dataset root (first: {self.records[i].path})")

    def _views(self, frames):
        """uint8 (num_clips*T, h, w, 3) -> (V, T, 3, S, S): each clip transformed, crops flattened
        in."""
        # (clips, T, h, w, 3), clips = num_clips
        clips = frames.view(self.num_clips, self.num_frames, *frames.shape[1:])
        views = torch.stack([self.transform(clip) for clip in clips])  # (clips, [3,] T, 3, S, S)
        views = views.flatten(0, 1) if views.ndim == 6 else views      # (V, T, 3, S, S)
        if len(views) != self.num_clips * self.num_crops:
            crops = len(views) // self.num_clips
            raise ValueError(f"VideoDataset: transform gave {crops} crops per clip, num_crops="
                             f"{self.num_crops}; pass test_transform(size, "
                             f"num_crops={self.num_crops})")
        return views

    def _test_item(self, i):
        try:
            views = self._views(self.read(self.records[i]))
            return views, self._target(i), i, True, self._note_damaged(i)
        except VideoReadError as e:
            self._note_bad(i, e, "counted as failed")
            if self._blank is None:  # zeros shaped like a view: a black clip transformed once
                self._blank = torch.zeros_like(self._views(torch.zeros(
                    self.num_clips * self.num_frames, 256, 256, 3, dtype=torch.uint8)))
            return self._blank.clone(), self._target(i), i, False, False

    def __getitem__(self, i):
        return self._train_item(i) if self.mode == "train" else self._test_item(i)


def collate(items):
    """default_collate, except that JpegClips' bytes are concatenated (files differ in length)."""
    if not isinstance(items[0][0], JpegClip):
        return torch.utils.data.default_collate(items)
    clips = [item[0] for item in items]
    fields = JpegClip._fields[1:]
    stacked = (torch.stack([getattr(clip, field) for clip in clips]) for field in fields)
    video = JpegClip(torch.cat([clip.jpegs for clip in clips]), *stacked)
    return (video, *torch.utils.data.default_collate([item[1:] for item in items]))


def ignore_stop_signals(worker_id=None):
    """DataLoader worker_init_fn: a worker outlives SIGINT and SIGTERM from outside its loader.

    Ctrl-C in a terminal reaches the whole process group, and a scheduler's SIGTERM (SLURM's
    preemption) every process of the job: stopping is the main process's to handle (train.py
    finishes the step in flight, saves and exits), and the workers end with their loader. SIGTERM
    from the loader's own process still ends a worker at once: the loader's shutdown, and Python's
    exit, stop workers with it (ignoring it outright hung the exit). Torch's handler tells the two
    apart in the same way, but lets an outside SIGTERM kill the worker, and the step with it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()      # the loader's process, under forkserver too
    loader = {os.getppid(), parent.pid if parent else os.getppid()}
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_sigterm_from, args=(loader,), daemon=True).start()


def _sigterm_from(loader):
    """A worker's thread that takes its SIGTERMs (blocked in every thread): exit if the loader's."""
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid in loader:
            os._exit(0)            # as torch's handler: a 0 status, so the loader reports no error


# --- Decoding, the interface: read_frames, count_frames and their errors --------------------------


class VideoReadError(RuntimeError):
    """A video (or frame folder) that cannot give the frames asked for; `path` names it."""

    # one argument: the whole message (how DataLoader re-raises)
    def __init__(self, path, reason=None):
        if reason is None and "\n" in path:  # DataLoader's re-raise: the worker's traceback
            last = path.rstrip().rsplit("\n", 1)[-1]  # 'video_data.VideoReadError: <our message>'
            path = last.split(": ", 1)[-1]
        super().__init__(path if reason is None else f"{shown_path(path)}: {reason}")
        self.path, self.reason = path, reason

    # rebuilt from (path, reason), so it crosses DataLoader worker boundaries intact
    def __reduce__(self):
        return VideoReadError, (self.path, self.reason)


class VideoTooShortError(VideoReadError):
    """The video has fewer frames than asked for; `available` is how many it has."""

    def __init__(self, path, available=None, wanted=None):
        reason = f"has {available} frames, frame {wanted} was asked for"
        super().__init__(path, None if available is None else reason)
        self.available, self.wanted = available, wanted

    def __reduce__(self):
        return VideoTooShortError, (self.path, self.available, self.wanted)


def count_frames(path):
    """Number of frames in a video file or TSN frame folder, counted once per process and cached.

    Container metadata is not trusted (AVI headers count dropped frames, Matroska has none): the
    count is the number of frames the decoder outputs, decoding the file once from the start
    (as long as a full decode of the video, without the conversion to RGB).
    """
    if os.path.isdir(path):
        return _frame_folder_count(path)
    return _video_index(path).num_frames


def read_frames(path, indices, threads=0):
    """Exactly the frames at `indices` (0-based, any order, repeats allowed) -> uint8 (T, h, w, 3).

    `path` is a video file (decoded with PyAV, seeking to the keyframe before a wanted frame when
    that skips work; frames turned upright by the file's display rotation, as a player shows them)
    or a TSN frame folder. Frame i of a video is the i-th frame its decoder outputs decoding the
    file from the start (what a player shows, `ffmpeg -i video %06d.png` writes, count_frames
    counts), whatever the container's timestamps; packets the decoder rejects are skipped.
    `threads`: decoder threads, 0 = one per core (use 1 in DataLoader workers). Raises
    VideoReadError (VideoTooShortError if the video ends too soon).
    """
    indices = [int(i) for i in indices]
    if not indices or min(indices) < 0:
        raise ValueError(f"read_frames({path!r}): indices must be a non-empty list of ints >= 0, "
                         f"got {indices}")
    wanted = sorted(set(indices))
    if os.path.isdir(path):
        out = _read_folder(path, wanted)
    else:
        out = _read_video(path, wanted, threads)
    try:  # numpy stacks: torch.stack of a few frames is slow when intra-op threads share few cores
        return torch.from_numpy(np.stack([out[i] for i in indices]))  # (T, h, w, 3)
    except ValueError as e:
        raise VideoReadError(path, f"frame size changes within the video ({e})") from e


def damaged_packets(path):
    """How many packets of a video the decoder rejected or decoded with errors: 0 for an intact
    video and for frame folders. Such a video's frames are those that decode (what a player
    shows); frames after a damaged keyframe show the decoder's repair, as in a player."""
    return 0 if os.path.isdir(path) else _video_index(path).damaged


def read_jpeg_bytes(path, indices):
    """The JPEG files of frames `indices` (0-based) of a frame folder, undecoded: [(n,) uint8]."""
    indices = [int(i) for i in indices]
    _check_folder(path, sorted(set(indices)))
    try:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates read_file with its codecs
            warnings.simplefilter("ignore", DeprecationWarning)
            files = [os.path.join(path, FRAME_NAME.format(i + 1)) for i in indices]
            return [torchvision.io.read_file(file) for file in files]
    except (RuntimeError, OSError) as e:
        raise VideoReadError(path, f"cannot read frames ({e})") from e


# --- Decoding machinery: which frames a video has, found once by decoding it ---------------------


@dataclass(frozen=True)
class _VideoIndex:
    """The frames of one video stream, found once per process by decoding it from the start.

    Frame i is the i-th frame the decoder outputs: what a player shows, whatever the container's
    timestamps say (AVI has none of its own, cameras write wrong ones, edit lists hide frames).
    Each packet is tagged with its decode-order number before it is decoded; the decoder passes a
    packet's pts on to the frame it makes from it, so `source[i]` is the number of the packet that
    frame i came from, and a later read recognises its frames by that tag alone. Reads start at
    a keyframe: `keyframes` (their frame indices, ascending), `key_packets` (their packet numbers),
    `key_ids` (what recognises the packet after a seek), `key_ts` (what container.seek finds it by).
    `sizes` (every packet's size) checks that a read numbers the packets as this pass did.
    """

    num_frames: int
    source: np.ndarray | None  # (num_frames,) int32: packet number of each frame
    keyframes: tuple
    key_packets: tuple
    key_ids: tuple
    key_ts: tuple
    sizes: np.ndarray  # (packets,) int32
    skip_nonref: bool  # unwanted frames no other frame depends on may be left undecoded
    damaged: int  # packets the decoder rejected or decoded with errors (0 for an intact file)

    def keyframe_at_or_before(self, i):
        """Position in `keyframes` of the keyframe a read of frame i starts from, -1 for the start
        of the file: the last one that comes before frame i both in decode order and on screen (a
        frame shown before its keyframe, in an open GOP, may depend on the frames before it)."""
        k = bisect.bisect_right(self.keyframes, i) - 1
        while k >= 0 and self.key_packets[k] > self.source[i]:
            k -= 1
        return k


# (path, size, mtime) -> _VideoIndex or frame folder count; per process and DataLoader worker.
# Bounded (a few KB an entry): building an index decodes the whole video once, a read only a part.
_INDEX_CACHE = collections.OrderedDict()
INDEX_CACHE_SIZE = 20_000


def _cache_key(path):
    """Cache entries die with the file: a rewritten video gets a new key."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise VideoReadError(path, f"cannot access ({e.strerror})") from e
    return path, st.st_size, st.st_mtime_ns


def _cached(key, build):
    """_INDEX_CACHE[key], built by build() on a miss; least recently used entries leave first."""
    if key in _INDEX_CACHE:
        _INDEX_CACHE.move_to_end(key)
    else:
        _INDEX_CACHE[key] = build()
        if len(_INDEX_CACHE) > INDEX_CACHE_SIZE:
            _INDEX_CACHE.popitem(last=False)
    return _INDEX_CACHE[key]


# PyAV < 19 decodes container metadata strictly as UTF-8 and raises on a stray byte unless told to
# ignore it; PyAV 19 removed the argument and always decodes with surrogateescape (never raises).
_METADATA_ERRORS = {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}
_SEVERAL_STREAMS_SAID = set()  # paths whose choice of video stream was logged by this process


def _main_stream(path, container):
    """The video stream a player shows (FFmpeg's choice): a default one before others, then the
    largest picture, then the first; cover art is never one. Logged once when there are several."""
    Disposition = av.stream.Disposition
    streams = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    if not streams:
        return None
    stream = max(streams, key=lambda s: (bool(s.disposition & Disposition.default),
                                         s.codec_context.width * s.codec_context.height, -s.index))
    if len(streams) > 1 and path not in _SEVERAL_STREAMS_SAID:
        _SEVERAL_STREAMS_SAID.add(path)
        log.warning("%s has %d video streams; reading stream %d (%dx%d%s), as a player does",
                    path, len(streams), stream.index, stream.codec_context.width,
                    stream.codec_context.height,
                    ", the default" if stream.disposition & Disposition.default else "")
    return stream


def _open_video(path, threads=0):
    """Open `path` and return (container, its main video stream) set up for threaded decoding."""
    if not os.path.isfile(path):
        raise VideoReadError(path, "no such file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(path, "empty file")
    try:
        # skip_frame=all: FFmpeg's stream probing need not decode a frame (saves ~2 ms per open);
        # our own decoder is unaffected.
        container = av.open(path, options={"skip_frame": "all"}, **_METADATA_ERRORS)
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise VideoReadError(path, f"cannot open ({e})") from e
    stream = _main_stream(path, container)
    if stream is None:
        container.close()
        raise VideoReadError(path, "has no video stream (audio-only?)")
    stream.thread_type = "AUTO"  # frame + slice threads
    stream.codec_context.thread_count = threads  # 0 = one per core
    return container, stream


def _decoded(packet, context):
    """(frames, 1 if the decoder rejected the packet else 0): a damaged packet is skipped, as
    players skip it, and decoding goes on with the next. None drains the decoder."""
    try:
        return context.decode(packet), 0
    except av.FFmpegError:
        return [], 1


def _packed_vops(stream, packet):
    """True for an MPEG-4 Part 2 packet holding two VOPs (DivX/Xvid 'packed B-frames'): its B-VOP
    is decoded with the next packet, so no packet of such a stream may be left out."""
    return stream.codec_context.name == "mpeg4" and bytes(packet).count(b"\x00\x00\x01\xb6") > 1


def _index_threads():
    return 1 if torch.utils.data.get_worker_info() is not None else 0  # workers: one core each


def _decode_all(path):
    """Decode `path` once from the start with tagged packets -> (frame tags, keyframe rows
    (number, id, timestamps), packed, tags of frames decoded with errors, packets rejected,
    packet sizes)."""
    container, stream = _open_video(path, _index_threads())
    # The pixels are not kept: no deblocking (10-15% of an H.264 decode); order and errors are
    # decided before it.
    stream.codec_context.options = {"skip_loop_filter": "all"}
    tags, keys, packed, corrupt, undecodable, sizes = [], [], False, set(), 0, []
    try:
        # None after the last packet drains the decoder; the demuxer's empty packet is left out
        for packet in itertools.chain((p for p in container.demux(stream) if p.size), [None]):
            if packet is not None:
                if packet.is_keyframe:
                    keys.append((len(sizes), (packet.pos, packet.size), (packet.pts, packet.dts)))
                packed = packed or _packed_vops(stream, packet)
                packet.pts = len(sizes)  # the tag
                sizes.append(packet.size)
            frames, failed = _decoded(packet, stream.codec_context)
            tags.extend(f.pts for f in frames)
            corrupt.update(f.pts for f in frames if f.is_corrupt)
            undecodable += failed
    except av.FFmpegError as e:
        raise VideoReadError(path, f"cannot demux ({e})") from e
    finally:
        container.close()
    return tags, keys, packed, corrupt, undecodable, sizes


def _usable_keyframes(keys, position, corrupt):
    """Keyframes a read may start from: each one's own frame shown intact (not cut by an edit list,
    not damaged: the frames after a damaged one depend on what was decoded before it), shown after
    the one before, recognisable by its (byte position, size): a demuxer that gives no position
    leaves only reads from the start."""
    ids = collections.Counter(key_id for _, key_id, _ in keys)
    usable = []
    for number, key_id, stamps in keys:
        i = position.get(number)
        unknown_pos = key_id[0] is None or key_id[0] < 0
        if i is None or number in corrupt or ids[key_id] > 1 or unknown_pos:
            continue
        if not usable or i > usable[-1][0]:
            usable.append((i, number, key_id, stamps))
    return usable


def _build_index(path):
    """Decode `path` once -> _VideoIndex (None in place of `source` when the frames cannot be told
    apart by their tags: then every read decodes in order, counting frames)."""
    tags, keys, packed, corrupt, undecodable, sizes = _decode_all(path)
    if not sizes:
        raise VideoReadError(path, "has no video frames (empty or truncated)")
    if not tags:
        raise VideoReadError(path, f"none of its {len(sizes)} packets decodes to a frame")
    damaged, sizes = undecodable + len(corrupt), np.array(sizes, dtype=np.int32)
    position = {tag: i for i, tag in enumerate(tags)}
    if len(position) < len(tags) or None in position:  # a decoder that drops or copies pts
        return _VideoIndex(len(tags), None, (), (), (), (), sizes, False, damaged)
    columns = tuple(zip(*_usable_keyframes(keys, position, corrupt))) or ((),) * 4
    return _VideoIndex(len(tags), np.array(tags, dtype=np.int32), *columns, sizes,
                       skip_nonref=not packed, damaged=damaged)


def _video_index(path):
    """The cached _VideoIndex of a video file."""
    return _cached(_cache_key(path), lambda: _build_index(path))


# --- Decoding machinery: a decoded frame as upright RGB -------------------------------------------


def upright(rgb, rotation):
    """A decoded (h, w, 3) frame as a player shows it: turned by the container's display rotation
    (degrees counter-clockwise, PyAV's `frame.rotation`). Phones store portrait video sideways with
    such a flag; a rotation that is not a multiple of 90 is rounded to one; mirroring is ignored."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb  # counter-clockwise turns


def _to_rgb(frame, **size):
    """(h, w, 3) uint8 RGB of a decoded frame, upright (scaled bilinearly to `size`'s width/height
    before turning, if given).

    The conversion uses a single-threaded swscale context of this thread and process, never PyAV's
    shared one: PyAV 19 keeps one SwsContext per thread, and FFmpeg 8 gives it a thread pool, so a
    DataLoader worker forked after its parent converted a frame inherits a pool whose threads do
    not exist, and hangs on its first frame.
    """
    if getattr(_REFORMATTER, "pid", None) != os.getpid():
        _REFORMATTER.pid, _REFORMATTER.it = os.getpid(), av.video.reformatter.VideoReformatter()
    reformat = _REFORMATTER.it.reformat
    rgb = reformat(frame, format="rgb24", interpolation="BILINEAR", threads=1, **size)
    return upright(rgb.to_ndarray(), frame.rotation)


_REFORMATTER = threading.local()  # .pid, .it: one VideoReformatter per thread and process


# --- Decoding machinery: packets no other frame depends on (H.264, MPEG-4 Part 2) -----------------


def _h264_length_size(stream):
    """NAL length-prefix size of an H.264 stream stored AVCC-style (MP4, MKV), else None."""
    extra = stream.codec_context.extradata
    if stream.codec_context.name != "h264" or not extra or len(extra) < 5 or extra[0] != 1:
        return None
    return (extra[4] & 3) + 1


def _h264_is_nonref(packet, length_size):
    """True when every slice in the packet has nal_ref_idc == 0: no other frame is predicted from
    it, so it need not be decoded unless wanted (x264's default B-frames are mostly such)."""
    data, pos, slices = memoryview(packet), 0, 0
    while pos + length_size < len(data):
        size = int.from_bytes(data[pos:pos + length_size], "big")
        header = data[pos + length_size]  # NAL header: forbidden bit, nal_ref_idc (2), type (5)
        if header & 0x1F in (1, 5):  # coded slice (non-IDR / IDR); both fields of a pair count
            if header >> 5:
                return False
            slices += 1
        pos += length_size + size
    return slices > 0


def _h264_annexb_is_nonref(packet):
    """_h264_is_nonref for H.264 stored with start codes (Annex B: AVI, MPEG-TS, raw .h264)."""
    data, slices = bytes(packet), 0
    for at in (m.end() for m in re.finditer(b"\x00\x00\x01", data)):
        header = data[at] if at < len(data) else 0  # NAL header, as in _h264_is_nonref
        if header & 0x1F in (1, 5):
            if header >> 5:
                return False
            slices += 1
    return slices > 0


def _mpeg4_is_nonref(packet):
    """True when the packet's first VOP is a B-VOP: MPEG-4 Part 2 (Xvid, DivX) never predicts from
    B-VOPs. A packed-bitstream packet (P- and B-VOP together) starts with its P-VOP: kept."""
    data = bytes(packet)
    vop = data.find(b"\x00\x00\x01\xb6")  # VOP start code; the next 2 bits are its coding type
    return vop >= 0 and vop + 4 < len(data) and data[vop + 4] >> 6 == 2


def _nonref_test(stream):
    """A function telling whether a packet of `stream` is a frame no other frame depends on, or
    None for codecs where we do not tell (VP9 and others: every packet is decoded)."""
    length_size = _h264_length_size(stream)
    if length_size:
        return lambda packet: _h264_is_nonref(packet, length_size)
    return {"h264": _h264_annexb_is_nonref, "mpeg4": _mpeg4_is_nonref}.get(
        stream.codec_context.name)


# --- Decoding machinery: seek to the keyframe before a run of frames, or decode in order ----------


class _Reader:
    """An open video whose packets are numbered in decode order, as _build_index numbered them."""

    def __init__(self, path, threads):
        self.path, self.threads = path, threads
        self.container, self.stream = _open_video(path, threads)
        self.fresh = True  # nothing demuxed yet: the next packet is number 0

    def packets(self):
        """The packets from the current position on (the empty flush packet left out)."""
        self.fresh = False
        return (p for p in self.container.demux(self.stream) if p.size)

    def reopen(self):
        self.close()
        self.container, self.stream = _open_video(self.path, self.threads)
        self.fresh = True

    def close(self):
        self.container.close()


def _numbered_from(reader, index, key):
    """(number, packet) from the packet of keyframe `key` on (-1: from the first packet). A seek
    is checked by the packet it lands on: a keyframe before the one asked for is walked forward
    from (demuxing only); anything else, and a file without usable timestamps, reopens at 0."""
    target = 0 if key < 0 else index.key_packets[key]
    if not (reader.fresh and target == 0):
        known = dict(zip(index.key_ids, index.key_packets))
        stamps = index.key_ts[key] if key >= 0 else ()
        for ts in dict.fromkeys(t for t in stamps if t is not None):  # pts, then dts
            reader.container.seek(ts, stream=reader.stream, backward=True, any_frame=False)
            packets = reader.packets()
            first = next(packets, None)
            number = None if first is None else known.get((first.pos, first.size))
            if number is not None and number <= target:
                numbered = zip(itertools.count(number), itertools.chain([first], packets))
                return itertools.dropwhile(lambda pair: pair[0] < target, numbered)
        reader.reopen()
    return itertools.dropwhile(lambda pair: pair[0] < target,
                               zip(itertools.count(), reader.packets()))


def _run_frames(numbered, stream, index, tags):
    """Decoded frames from the numbered packets until the decoder has had every packet that the
    wanted frames' `tags` name, then drained. Unwanted non-reference frames (H.264, and MPEG-4
    Part 2 B-VOPs unless packed) are not decoded at all. A packet that is not the one its number
    names (a demuxer that splits packets otherwise after a seek) ends the run undrained: the
    frames not given yet are then read in order."""
    is_nonref = _nonref_test(stream) if index.skip_nonref else None
    pending, context = set(tags), stream.codec_context
    for number, packet in numbered:
        if number >= len(index.sizes) or packet.size != index.sizes[number]:
            return
        if is_nonref and number not in pending and is_nonref(packet):
            continue
        packet.pts = number  # the tag _build_index gave it
        yield from _decoded(packet, context)[0]
        pending.discard(number)
        if not pending:
            break
    yield from _decoded(None, context)[0]


def _convert_run(frames, run, tags, out):
    """Convert the frames of `run` (frame indices, their packets' `tags`) into `out`, each
    recognised by its tag: never by arrival order or the file's timestamps."""
    want = dict(zip(tags, run))
    for frame in frames:
        i = want.pop(frame.pts, None)
        if i is not None:
            out[i] = _to_rgb(frame)
            if not want:
                return


def _read_seeking(reader, index, wanted):
    """Frames `wanted` (sorted, unique) of a video with tags. The wanted frames are read in runs
    that share a keyframe: seek to that keyframe (unless the reader is there already, at the
    start), decode forward to the run's last packet, drain. Returns (frames, frames not found)."""
    out, todo = {}, list(wanted)
    while todo:
        key = index.keyframe_at_or_before(todo[0])
        run = [w for w in todo if index.keyframe_at_or_before(w) == key]
        tags = [int(index.source[w]) for w in run]
        frames = _run_frames(_numbered_from(reader, index, key), reader.stream, index, tags)
        _convert_run(frames, run, tags, out)
        todo = [w for w in todo if w not in set(run)]
    return out, [w for w in wanted if w not in out]


def _frames_in_order(packets, context, damage=None):
    """Every frame the decoder outputs from `packets`, drained at the end: what a player shows.
    A packet it rejects, and a frame decoded with errors, adds one to the list `damage`."""
    for packet in itertools.chain(packets, [None]):  # None drains the decoder
        frames, failed = _decoded(packet, context)
        if damage is not None:
            damage += [1] * (failed + sum(f.is_corrupt for f in frames))
        yield from frames


def _read_in_order(reader, wanted):
    """Frames `wanted` (sorted, unique) by decoding from the start and counting the frames out:
    the definition of frame i, for videos whose frames tags cannot tell apart."""
    out, todo = {}, list(wanted)
    for i, frame in enumerate(_frames_in_order(reader.packets(), reader.stream.codec_context)):
        if i == todo[0]:
            out[todo.pop(0)] = _to_rgb(frame)
            if not todo:
                break
    return out, todo


def _decode(path, index, wanted, threads):
    """Open, read `wanted` (sorted, unique) by seeking (an index with tags) or in order (an int:
    the frame count), close. Frames a seek did not give are read in order from the start."""
    reader = _Reader(path, threads)
    try:
        if isinstance(index, int) or index.source is None:
            return _read_in_order(reader, wanted)
        out, missing = _read_seeking(reader, index, wanted)
        if missing:  # a decoder that drops, after a seek, a frame it showed from the start
            reader.reopen()
            more, missing = _read_in_order(reader, missing)
            out.update(more)
        return out, missing
    except av.FFmpegError as e:
        raise VideoReadError(path, f"cannot decode ({e})") from e
    finally:
        reader.close()


def _read_video(path, wanted, threads):
    """Frames `wanted` (sorted, unique) of a video file as a dict index -> (h, w, 3) uint8 array."""
    index = _video_index(path)
    if wanted[-1] >= index.num_frames:
        raise VideoTooShortError(path, index.num_frames, wanted[-1])
    # a decoder repairs damage differently with frame threads: one thread gives one answer
    out, missing = _decode(path, index, wanted, 1 if index.damaged else threads)
    if missing:  # the decoder gave fewer frames than when the index was built
        raise VideoTooShortError(path, missing[0], missing[0])
    return out


# --- Decoding machinery: JPEG frame folders -------------------------------------------------------


def _frame_folder_count(path):
    return _cached(_cache_key(path),
                   lambda: len(glob.glob(os.path.join(glob.escape(path), FRAME_GLOB))))


def _no_frames_reason(folder):
    """Why a folder gives no frames: what it holds instead, and what a frame folder holds."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        return f"cannot be listed ({e.strerror})"
    found = f"it holds {len(names)} other files, e.g. {names[0]}" if names else "it is empty"
    return (f"is a folder without {FRAME_GLOB} files ({found}); a frame folder holds JPEGs named "
            f"{FRAME_NAME.format(1)}, {FRAME_NAME.format(2)}, ... as `video_data.py prepare` "
            f"writes them")


def _check_folder(path, wanted):
    count = _frame_folder_count(path)
    if count == 0:
        raise VideoReadError(path, _no_frames_reason(path))
    if wanted[-1] >= count:
        raise VideoTooShortError(path, count, wanted[-1])


def _decode_jpegs(data, path=None, device="cpu"):
    """JPEG files' bytes [(n,) uint8] -> [(3, h, w) uint8 RGB] on `device`, one batched call."""
    try:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its (libjpeg-turbo) codecs
            warnings.simplefilter("ignore", DeprecationWarning)
            rgb = torchvision.io.ImageReadMode.RGB
            return torchvision.io.decode_jpeg(data, mode=rgb, device=device)
    except (RuntimeError, OSError) as e:
        raise VideoReadError(path or "a JPEG frame", f"cannot read frames ({e})") from e


def _read_folder(path, wanted):
    """Frames `wanted` (0-based) of a TSN frame folder (img_00001.jpg is frame 0)."""
    images = _decode_jpegs(read_jpeg_bytes(path, wanted), path)  # [(3, h, w)]
    return {i: img.permute(1, 2, 0).numpy() for i, img in zip(wanted, images)}  # (h, w, 3) views


_JPEG_FRAME_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0-15: not DHT, JPG, DAC


def jpeg_size(data):
    """(width, height) of a JPEG file's bytes, read from its frame header without decoding."""
    data, at = bytes(data[:65536].numpy()), 2  # headers precede the image data; skip the SOI marker
    while at + 9 <= len(data) and data[at] == 0xFF:
        marker, length = data[at + 1], int.from_bytes(data[at + 2:at + 4], "big")
        if marker in _JPEG_FRAME_MARKERS:  # length, precision, height, width
            height, width = data[at + 5:at + 7], data[at + 7:at + 9]
            return int.from_bytes(width, "big"), int.from_bytes(height, "big")
        at += 2 + length
    raise VideoReadError("a JPEG frame", "no frame header in its first 64 KiB")


def _whole_jpegs(path, files):
    """The files of a clip decoded later, in a batch on the device, checked now, in the worker, so
    that a bad folder is replaced like any unreadable video rather than failing the step: each file
    ends with the JPEG end-of-image marker (trailing zero padding allowed), all of one size."""
    sizes = set()
    for i, data in enumerate(files):
        if not bytes(data[-64:].numpy()).rstrip(b"\0").endswith(b"\xff\xd9"):
            raise VideoReadError(path, f"frame file {i + 1} of the clip is truncated or not a JPEG")
        try:
            sizes.add(jpeg_size(data))
        except VideoReadError as e:
            raise VideoReadError(path, f"frame file {i + 1} of the clip: {e}") from None
    if len(sizes) > 1:
        raise VideoReadError(path, f"frame size changes within the video ({sorted(sizes)})")
    return files


# --- Dataset parsers: each reads the files the dataset itself ships -------------------------------


def _require(path, what):
    """`path` itself, or a FileNotFoundError that says what was expected there."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: expected {path}")
    return path


def read_text(path, what="annotation file"):
    """The text of a UTF-8 file, without a byte-order mark (Windows editors add one); every error
    names the file and says what to do."""
    _require(path, what)
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except IsADirectoryError:
        raise ValueError(f"{what} {path} is a folder; expected a text file") from None
    except UnicodeDecodeError as e:
        byte = e.object[e.start]
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {e.start} is {byte:#04x}): "
                         f"save it as UTF-8") from None
    except OSError as e:
        raise ValueError(f"{what} {path} cannot be read ({e.strerror})") from None


def _read_lines(path):
    """(line number, stripped text) of the non-blank lines of a text file."""
    lines = read_text(path).split("\n")
    return [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]


def _bad_line(path, n, line, expected):
    return ValueError(f"{path}, line {n}: expected {expected}, got {line!r}. Fix or remove the "
                      f"line.")


def _names_by_id(path, rows, first_id):
    """[name of id first_id, name of first_id + 1, ...] from (line number, line, id, name) rows;
    every id from first_id up must appear exactly once."""
    names = {}
    for n, line, i, name in rows:
        if i in names:
            raise _bad_line(path, n, line, f"each class id once; {i} is used twice")
        names[i] = name
    expected = list(range(first_id, first_id + len(names)))
    if sorted(names) != expected:
        raise ValueError(f"{path}: class ids must be {first_id}..{first_id + len(names) - 1}, "
                         f"each once; got {sorted(names)}. Renumber the lines.")
    return [names[i] for i in expected]


def _first_existing(*paths):
    return next((p for p in paths if os.path.exists(p)), paths[0])


def camel_to_words(name):
    """UCF101 class names: 'ApplyEyeMakeup' -> 'apply eye makeup', 'YoYo' -> 'yo yo'."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name).lower()


def _check_split(dataset, split, allowed):
    if split not in allowed:
        raise ValueError(f"load_split({dataset!r}): split must be one of {allowed}, got {split!r}")


def _check_fold(dataset, fold):
    if fold not in (1, 2, 3):
        raise ValueError(f"load_split({dataset!r}): fold must be 1, 2 or 3 (the official splits), "
                         f"got {fold!r}")


# UCF101 -------------------------------------------------------------------------------------------


def _ucf101_classes(list_dir):
    """classInd.txt ('1 ApplyEyeMakeup') -> folder names in class-id order."""
    path = os.path.join(list_dir, "classInd.txt")
    rows = []
    for n, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise _bad_line(path, n, line, "'<id> <ClassName>'")
        rows.append((n, line, int(parts[0]), parts[1]))
    return _names_by_id(path, rows, first_id=1)


def _ucf101_list(path, video_dir, class_ids):
    """trainlist ('Class/v_X.avi 1') or testlist ('Class/v_X.avi') -> records; the label comes
    from the class folder, and a train-list label that disagrees with it is an error."""
    records = []
    for n, line in _read_lines(path):
        parts = line.split()
        folder = parts[0].split("/")[0]
        bad_id = len(parts) == 2 and not parts[1].isdigit()
        if len(parts) > 2 or folder not in class_ids or bad_id:
            raise _bad_line(path, n, line, "'<Class>/<video>.avi [<class id>]' with a class from "
                                           "classInd.txt")
        if len(parts) == 2 and int(parts[1]) - 1 != class_ids[folder]:
            raise _bad_line(path, n, line, f"class id {class_ids[folder] + 1} for {folder} "
                                           f"(classInd.txt)")
        records.append(VideoRecord(os.path.join(video_dir, parts[0]), class_ids[folder]))
    return records


def load_ucf101(root, split="train", fold=1):
    """UCF101 [Sec. 4.1]: root holds UCF-101/<Class>/v_<Class>_gXX_cYY.avi and ucfTrainTestlist/
    (classInd.txt, trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt). 'val' is the test list: UCF101
    has no validation split. Names: 'ApplyEyeMakeup' -> 'apply eye makeup'."""
    _check_split("ucf101", split, ("train", "test", "val"))
    _check_fold("ucf101", fold)
    list_dir = _require(os.path.join(root, "ucfTrainTestlist"), "UCF101 split folder")
    video_dir = _require(os.path.join(root, "UCF-101"), "UCF101 video folder")
    folders = _ucf101_classes(list_dir)
    name = f"trainlist0{fold}.txt" if split == "train" else f"testlist0{fold}.txt"
    class_ids = {c: i for i, c in enumerate(folders)}
    records = _ucf101_list(os.path.join(list_dir, name), video_dir, class_ids)
    return DatasetSplit(records, [camel_to_words(c) for c in folders])


# HMDB51 -------------------------------------------------------------------------------------------

_HMDB_TAGS = {"train": "1", "test": "2", "val": "2"}  # 0 = unused in this split


def _hmdb51_split_dir(root):
    return _first_existing(os.path.join(root, "testTrainMulti_7030_splits"),
                           os.path.join(root, "splits"), root)


def _hmdb51_split_files(split_dir, fold):
    """{class name: its split file}, classes from the `<class>_test_split<fold>.txt` names."""
    suffix = f"_test_split{fold}.txt"
    files = sorted(f for f in os.listdir(split_dir) if f.endswith(suffix))
    if not files:
        raise FileNotFoundError(f"HMDB51 split files not found: expected <class>{suffix} in "
                                f"{split_dir}")
    return {f[: -len(suffix)]: os.path.join(split_dir, f) for f in files}


def load_hmdb51(root, split="train", fold=1):
    """HMDB51 [Sec. 4.1]: root holds <class>/<video>.avi and the split files
    <class>_test_split{1,2,3}.txt ('<video>.avi <tag>', 1 = train, 2 = test, 0 = unused), directly
    or in testTrainMulti_7030_splits/ or splits/. 'val' is the test split.

    Class ids follow sorted class names. The label CSV shared by ActionCLIP, X-CLIP and ViFi-CLIP
    swaps kick/kick_ball and sword/sword_exercise relative to that order; we do not.
    """
    _check_split("hmdb51", split, ("train", "test", "val"))
    _check_fold("hmdb51", fold)
    _require(root, "HMDB51 root")
    files = _hmdb51_split_files(_hmdb51_split_dir(root), fold)
    classes = sorted(files)
    records = []
    for label, name in enumerate(classes):
        for n, line in _read_lines(files[name]):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise _bad_line(files[name], n, line, "'<video>.avi <0|1|2>'")
            if parts[1] == _HMDB_TAGS[split]:
                records.append(VideoRecord(os.path.join(root, name, parts[0]), label))
    return DatasetSplit(records, [c.replace("_", " ") for c in classes])


# Kinetics -----------------------------------------------------------------------------------------

_KINETICS_CSV = {"train": ("train",), "val": ("val", "validate"), "test": ("test",)}


def _kinetics_csv(root, dataset, split):
    """The annotation CSV of a split: <root>/[annotations/]{train,val|validate,test}.csv, or with a
    'kinetics400_' / 'kinetics-400_' prefix."""
    number = dataset[len("kinetics"):]
    candidates = [
        os.path.join(root, sub, prefix + name + ".csv")
        for sub in ("annotations", "")
        for prefix in ("", f"kinetics{number}_", f"kinetics-{number}_", f"kinetics_{number}_")
        for name in _KINETICS_CSV[split]
    ]
    path = _first_existing(*candidates)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{dataset} {split} annotation CSV (label,youtube_id,time_start,time_end,split) not "
            f"found: expected {os.path.join(root, '[annotations/]')}[kinetics{number}_]"
            f"{{{','.join(_KINETICS_CSV[split])}}}.csv, e.g. {candidates[0]}")
    return path


def _read_kinetics_csv(path):
    """Rows of a Kinetics CSV as (label, file stem '<id>_<start:06d>_<end:06d>')."""
    rows = []
    for n, row in enumerate(csv.DictReader(io.StringIO(read_text(path), newline="")), 2):
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            stem = f"{row['youtube_id']}_{start:06d}_{end:06d}"
            rows.append((row["label"], stem))
        except (KeyError, TypeError, ValueError):
            raise _bad_line(path, n, row, "columns label,youtube_id,time_start,time_end") from None
    return rows


def _find_videos(video_dir):
    """{file stem: path} of every video file below video_dir (per-class folders or flat), walked in
    sorted order (a stem found twice: the last one, on every machine). Symbolic links to folders
    are followed (a split or class folder linked from another disk), each real folder walked once,
    so a link to a folder above it ends no walk in a loop. A subfolder holding a PREPARED_RECORD is
    a copy `prepare` wrote, not originals: it is not walked."""
    found, walked = {}, set()
    for folder, subfolders, files in os.walk(video_dir, followlinks=True):
        real = os.path.realpath(folder)
        if real in walked or (PREPARED_RECORD in files and folder != video_dir):
            subfolders.clear()
            continue
        walked.add(real)
        subfolders.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_EXTS:
                found[stem] = os.path.join(folder, name)
    return found


def load_kinetics(root, dataset="kinetics400", split="train", videos_dir=None):
    """Kinetics-400/600/700 [Sec. 4.1]: root holds the annotation CSVs (see _kinetics_csv) and
    the videos '<youtube_id>_<start:06d>_<end:06d>.<ext>' anywhere below `videos_dir` (default
    root), in per-class folders or flat. Classes: sorted labels of the train CSV, names as written.
    Videos listed but missing (often 5-10% of a copy; also rows whose label the train CSV lacks) are
    counted, reported once, and skipped. Copies `prepare` wrote below root are not read as videos.
    """
    _check_split(dataset, split, ("train", "val", "test"))
    _require(root, f"{dataset} root")
    video_dir = _require(videos_dir or root, f"{dataset} video folder")
    rows = _read_kinetics_csv(_kinetics_csv(root, dataset, split))
    try:
        train_rows = _read_kinetics_csv(_kinetics_csv(root, dataset, "train"))
        classes = sorted({label for label, _ in train_rows})
    except FileNotFoundError:  # an evaluation-only copy: the classes its own split names
        classes = sorted({label for label, _ in rows})
        log.warning("%s: no train CSV under %s; the %d classes are those the %s CSV names", dataset,
                    root, len(classes), split)
    class_ids = {c: i for i, c in enumerate(classes)}
    videos = _find_videos(video_dir)
    records, missing = [], 0
    for label, stem in rows:
        if stem in videos and label in class_ids:
            records.append(VideoRecord(videos[stem], class_ids[label]))
        else:
            missing += 1
    if not records:
        raise ValueError(f"{dataset} {split}: none of the {missing} listed videos were found under "
                         f"{video_dir} (files named <youtube_id>_<start:06d>_<end:06d>.<ext>): "
                         f"check --root / --videos-dir")
    if missing:
        log.warning("%s %s: %d of %d listed videos are missing under %s", dataset, split, missing,
                    missing + len(records), shown_path(video_dir))
    return DatasetSplit(records, classes, missing=missing)


# Charades -----------------------------------------------------------------------------------------


def _charades_classes(path):
    """Charades_v1_classes.txt ('c000 Holding some clothes') -> names, first letter lower-cased."""
    names = []
    for n, line in _read_lines(path):
        code, _, text = line.partition(" ")
        if code != f"c{len(names):03d}" or not text:
            raise _bad_line(path, n, line, f"'c{len(names):03d} <class name>'")
        names.append(text[0].lower() + text[1:])
    return names


def _charades_labels(actions, path, n):
    """'c092 11.90 21.20;c147 0.00 12.60' -> sorted unique class ids [92, 147] ('' -> [])."""
    labels = set()
    for action in filter(None, actions.split(";")):
        parts = action.split()
        if len(parts) != 3 or not re.fullmatch(r"c\d{3}", parts[0]):
            raise _bad_line(path, n, actions, "actions like 'c092 11.90 21.20;c147 0.00 12.60'")
        labels.add(int(parts[0][1:]))
    return sorted(labels)


def load_charades(root, split="train", videos_dir=None):
    """Charades (multi-label, Table 9): root holds Charades_v1_{train,test}.csv (columns id and
    actions), Charades_v1_classes.txt, and the videos <id>.mp4 in `videos_dir` (default:
    Charades_v1_480/, else root). Labels are lists of class ids; targets become multi-hot. 'val'
    is the test split."""
    _check_split("charades", split, ("train", "test", "val"))
    classes = _charades_classes(os.path.join(root, "Charades_v1_classes.txt"))
    videos_dir = videos_dir or _first_existing(os.path.join(root, "Charades_v1_480"), root)
    csv_name = f"Charades_v1_{'train' if split == 'train' else 'test'}.csv"
    path = _require(os.path.join(root, csv_name), "Charades CSV")
    records = []
    for n, row in enumerate(csv.DictReader(io.StringIO(read_text(path), newline="")), 2):
        if not row.get("id") or row.get("actions") is None:
            raise _bad_line(path, n, row, "columns id and actions")
        labels = _charades_labels(row["actions"], path, n)
        records.append(VideoRecord(os.path.join(videos_dir, row["id"] + ".mp4"), labels))
    return DatasetSplit(records, classes, multilabel=True)


# Generic list files -------------------------------------------------------------------------------


def read_classnames(path):
    """Class names from a text file (one per line, line i = class i) or an 'id,name' CSV (the
    official code's label files), ids 0..C-1."""
    lines = _read_lines(path)
    if not path.endswith(".csv") and not (lines and lines[0][1].replace(" ", "") == "id,name"):
        return [line for _, line in lines]
    if lines and not lines[0][1].split(",")[0].strip().isdigit():
        lines = lines[1:]  # a header line ('id,name')
    rows = []
    for (n, _), row in zip(lines, csv.reader(line for _, line in lines)):
        if len(row) != 2 or not row[0].strip().isdigit():
            raise _bad_line(path, n, ",".join(row), "'<id>,<name>'")
        rows.append((n, ",".join(row), int(row[0]), row[1].strip()))
    return _names_by_id(path, rows, first_id=0)


_LIST_LINE = re.compile(r"(?P<video>.*?\S)(?:\s+(?P<frames>\d+))?\s+(?P<label>\d+)")


def _parse_list_line(path, n, line, root):
    """'path label' (video file) or 'path num_frames label' (TSN frame folder) -> VideoRecord.

    The label is the last field and a frame count the one before it, so a path may hold spaces.
    'clip 120 3' is the frame folder 'clip' of 120 frames, unless only 'clip 120' exists.
    """
    match = _LIST_LINE.fullmatch(line)
    if not match:
        raise _bad_line(path, n, line, "'<path> <label>' or '<path> <num_frames> <label>' (the "
                                       "label a whole number, the last field)")
    video, frames = os.path.join(root, match["video"]), match["frames"]  # absolute paths stay
    if frames is not None and not os.path.exists(video):
        whole = os.path.join(root, line[:match.start("label")].rstrip())
        if os.path.exists(whole):                        # a path that ends in a number
            video, frames = whole, None
    return VideoRecord(video, int(match["label"]), None if frames is None else int(frames))


def _drop_repeated_lines(list_file, lines, records):
    """Records of a list file with each video once. A video listed again with the same label is
    kept once, with a warning; with another label it is an error: one video has one class."""
    first, kept, repeats = {}, [], []
    for (n, line), record in zip(lines, records):
        key = os.path.normpath(record.path)
        if key not in first:
            first[key] = (n, record)
            kept.append(record)
        elif first[key][1].label != record.label:
            m, earlier = first[key]
            raise ValueError(f"{list_file}, lines {m} and {n}: {shown_path(record.path)} has label "
                             f"{earlier.label}, then {record.label}; a video has one class: "
                             f"remove the wrong line")
        else:
            repeats.append((first[key][0], n))
    if repeats:
        m, n = repeats[0]
        log.warning("%s: %d lines repeat a video listed before (e.g. line %d repeats line %d); "
                    "each video is counted once", list_file, len(repeats), n, m)
    return kept


def load_list(root, list_file, classnames_file):
    """A generic list file, 'path label' or 'path num_frames label' per line (paths relative to
    root unless absolute, and may hold spaces), with class names from a text file or an 'id,name'
    CSV (both paths relative to root unless absolute). A video listed twice counts once."""
    list_file = os.path.join(root, list_file)
    lines = _read_lines(list_file)
    records = [_parse_list_line(list_file, n, line, root) for n, line in lines]
    records = _drop_repeated_lines(list_file, lines, records)
    classnames = read_classnames(os.path.join(root, classnames_file))
    for r in records:
        if not 0 <= r.label < len(classnames):
            raise ValueError(f"{list_file}: label {r.label} of {shown_path(r.path)} is not a class "
                             f"of {classnames_file} ({len(classnames)} classes)")
    return DatasetSplit(records, classnames)


# Prepared forms and the one entry point -----------------------------------------------------------


def _prepared_rel(path, root, keep_ext=False):
    """Where a video's prepared form lives, relative to the prepared folder: its path below root
    without extension (a video outside root keeps its absolute path below the prepared folder).
    keep_ext: with it ('clip.avi'), for videos that share a stem with another ('clip.mp4')."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if rel.startswith(".."):
        rel = os.path.abspath(path).lstrip(os.sep)
    return rel if keep_ext else os.path.splitext(rel)[0]


def _use_prepared(split, root, prepared):
    """Point each record at its prepared frame folder or .mp4 when one exists (else the
    original). A video that shares its stem with another was prepared under its name with the
    extension: that form is looked for first."""
    _require(prepared, "prepared folder (written by `python video_data.py prepare`)")
    found = 0
    for r in split.records:
        whole = os.path.join(prepared, _prepared_rel(r.path, root, keep_ext=True))
        stem = os.path.join(prepared, _prepared_rel(r.path, root))
        for candidate, form in ((whole, "frames"), (whole + ".mp4", "video"), (stem, "frames"),
                                (stem + ".mp4", "video")):
            if os.path.isdir(candidate) if form == "frames" else os.path.isfile(candidate):
                r.path, r.num_frames, found = candidate, None, found + 1
                break
    if found < len(split.records):
        log.warning("%s: %d of %d videos have no prepared form; reading the originals",
                    shown_path(prepared), len(split.records) - found, len(split.records))
    return split


def _warn_empty_classes(dataset, split_name, split):
    """Say which classes of a split have no video: they would train or score nothing, silently."""
    present = set()
    for r in split.records:
        present.update(r.label if isinstance(r.label, list) else [r.label])
    empty = [name for i, name in enumerate(split.classnames) if i not in present]
    if empty:
        names = ", ".join(repr(name) for name in empty[:10]) + (" ..." if len(empty) > 10 else "")
        log.warning("%s %s: %d of %d classes have no videos (%s): check that their videos are "
                    "there (a link that cannot be followed? a copy not finished?)", dataset,
                    split_name, len(empty), len(split.classnames), names)


def load_split(dataset, root, split="train", fold=1, prepared=None, **kw):
    """The videos and class names of one split of a dataset, from its own annotation files.

    dataset: ucf101 | hmdb51 (fold 1-3) | kinetics400/600/700 (kw videos_dir) | charades (kw
    videos_dir) | list (kw list_file, classnames_file) | synthetic (root written by
    make_synthetic_dataset). prepared: folder written by `python video_data.py prepare` for the
    same dataset and root; records then read the prepared frames or videos.
    """
    _require(root, f"{dataset} root folder")
    if dataset == "ucf101":
        out = load_ucf101(root, split, fold)
    elif dataset == "hmdb51":
        out = load_hmdb51(root, split, fold)
    elif dataset in ("kinetics400", "kinetics600", "kinetics700"):
        out = load_kinetics(root, dataset, split, kw.get("videos_dir"))
    elif dataset == "charades":
        out = load_charades(root, split, kw.get("videos_dir"))
    elif dataset == "list":
        if not kw.get("list_file") or not kw.get("classnames_file"):
            raise ValueError("load_split('list', ...) needs list_file= and classnames_file= "
                             "(paths, relative to root)")
        out = load_list(root, kw["list_file"], kw["classnames_file"])
    elif dataset == "synthetic":
        out = load_list(root, f"{split}.txt", f"{split}_classnames.txt")
    else:
        raise ValueError(f"load_split: unknown dataset {dataset!r}; expected one of {DATASETS}")
    _warn_empty_classes(dataset, split, out)
    return _use_prepared(out, root, prepared) if prepared else out


# --- Synthetic action videos: coloured shapes that move (the demo and the tests) ------------------


COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("moving left", "moving right", "growing", "shrinking")
_RGB = {"red": (235, 45, 45), "green": (40, 210, 70), "blue": (60, 100, 255),
        "yellow": (240, 225, 40)}
_BACKGROUND = 16  # dark grey
_CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".avi": "mpeg4",
           ".webm": "libvpx-vp9"}


def synthetic_classname(colour, shape, motion):
    """('red', 'circle', 'moving left') -> 'red circle moving left'."""
    return f"{colour} {shape} {motion}"


def _open_writer(path, first, fps, codec, gop, bframes, options, container_options):
    """An output container and its video stream sized for the (h, w, 3) frame `first`."""
    h, w = first.shape[:2]
    if codec in ("libx264", "mpeg4", "libvpx-vp9") and (h % 2 or w % 2):
        raise ValueError(f"write_video({path}): {codec} with yuv420p needs even width and height, "
                         f"got {w}x{h}")
    container = av.open(path, "w", container_options=container_options or {})
    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    if gop is not None:
        stream.codec_context.gop_size = gop
    if bframes is not None:
        stream.codec_context.max_b_frames = bframes
    fast_vp9 = {"deadline": "realtime", "cpu-used": "8"} if codec == "libvpx-vp9" else {}
    stream.options = {**fast_vp9, **(options or {})}
    return container, stream


def write_video(path, frames, fps=30, codec=None, gop=None, bframes=None, options=None,
                container_options=None):
    """Encode uint8 frames (T, h, w, 3) (array, tensor or iterable of (h, w, 3)) to `path` with
    PyAV.

    codec defaults from the extension: .mp4/.mkv libx264, .avi mpeg4, .webm libvpx-vp9. gop:
    keyframe interval; bframes: max B-frames; options: encoder options (e.g. {'crf': '18'});
    container_options: muxer options (e.g. {'movflags': '+faststart'}). Returns path.
    """
    frames = iter(np.asarray(f, dtype=np.uint8) for f in frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"write_video({path}): no frames")
    codec = codec or _CODECS.get(os.path.splitext(path)[1].lower(), "libx264")
    container, stream = _open_writer(path, first, fps, codec, gop, bframes, options,
                                     container_options)
    try:
        for frame in itertools.chain([first], frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))  # flush delayed frames
    finally:
        container.close()
    return path


def _shape_mask(shape, size, cx, cy, r):
    """Boolean (size, size) mask of a circle, square or upward triangle of 'radius' r at
    (cx, cy)."""
    y, x = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if shape == "square":
        return (abs(x - cx) <= 0.85 * r) & (abs(y - cy) <= 0.85 * r)  # about the circle's area
    top = cy - r
    return (y >= top) & (y <= cy + r) & (abs(x - cx) <= (y - top) / 2)  # apex up, base 2r wide


def _trajectory(motion, rng, size, num_frames):
    """(cx, cy, r) per frame. The set of positions (or radii) is drawn the same way for both
    directions of a motion; direction only decides the order. So one frame, or the mean frame,
    cannot tell 'moving left' from 'moving right' (or growing from shrinking): a temporal model
    has to [Sec. 3.3]."""
    t = np.linspace(0, 1, num_frames)
    if motion in ("moving left", "moving right"):
        # 11-15 px across at size 32: smaller, the demo's tiny CLIP often took squares for circles
        r = rng.uniform(0.18, 0.24) * size
        # most of the free width: at about half of it, the demo's tiny CLIP, trained from scratch,
        # often never learned where the shape is in a frame, and so never left from right
        span = rng.uniform(0.8, 0.95) * (size - 2 * r)
        x0 = rng.uniform(r, size - r - span)
        cy = rng.uniform(r + 1, size - r - 1)
        xs = x0 + span * (t if motion == "moving right" else 1 - t)
        return [(x, cy, r) for x in xs]
    if motion in ("growing", "shrinking"):
        r0, r1 = rng.uniform(0.08, 0.12) * size, rng.uniform(0.24, 0.3) * size
        cx, cy = rng.uniform(r1, size - r1, size=2)
        rs = r0 + (r1 - r0) * (t if motion == "growing" else 1 - t)
        return [(cx, cy, r) for r in rs]
    raise ValueError(f"unknown motion {motion!r}; expected one of {MOTIONS}")


def render_action(colour, shape, motion, rng, num_frames=16, size=32):
    """uint8 (T, size, size, 3): one coloured shape doing `motion` on a dark background."""
    frames = np.full((num_frames, size, size, 3), _BACKGROUND, dtype=np.uint8)
    for frame, (cx, cy, r) in zip(frames, _trajectory(motion, rng, size, num_frames)):
        frame[_shape_mask(shape, size, cx, cy, r)] = _RGB[colour]
    return frames


def _check_classes(classes):
    for colour, shape, motion in classes:
        if colour not in COLOURS or shape not in SHAPES or motion not in MOTIONS:
            raise ValueError(f"synthetic class {(colour, shape, motion)} is not in COLOURS x "
                             f"SHAPES x MOTIONS ({COLOURS}, {SHAPES}, {MOTIONS})")


# Near-lossless H.264, on one thread, without x264's lookahead (mb-tree rate control): with it,
# x264 wrote about 1 file in 100 differently from the same frames, so a seed did not fix the videos.
SYNTHETIC_X264 = {"crf": "12", "threads": "1", "x264-params": "rc-lookahead=0:mbtree=0"}


def make_synthetic_dataset(root, classes, videos_per_class, num_frames=16, size=32, seed=0,
                           split="train"):
    """Write `videos_per_class` .mp4 videos (H.264, the real decoding path) of each (colour, shape,
    motion) class under root/videos/<split>/, the list file root/<split>.txt ('path label', label =
    position in `classes`) and root/<split>_classnames.txt. Read back with
    load_split('synthetic', root, split). Different splits (or seeds) draw different videos, so
    held-out combinations can form a zero-shot split. Returns the list file's path."""
    _check_classes(classes)
    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
    lines = []
    for label, (colour, shape, motion) in enumerate(classes):
        name = synthetic_classname(colour, shape, motion).replace(" ", "_")
        folder = f"videos/{split}/{label:03d}_{name}"
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for k in range(videos_per_class):
            rel = f"{folder}/{k:04d}.mp4"
            frames = render_action(colour, shape, motion, rng, num_frames, size)
            write_video(os.path.join(root, rel), frames, options=SYNTHETIC_X264)
            lines.append(f"{rel} {label}\n")
    with open(os.path.join(root, f"{split}_classnames.txt"), "w") as f:
        f.writelines(synthetic_classname(*c) + "\n" for c in classes)
    list_file = os.path.join(root, f"{split}.txt")
    with open(list_file, "w") as f:
        f.writelines(lines)
    return list_file


# --- Output locks: one writer per run folder or report at a time ---------------------------------


LOCK_NAME = ".lock"  # in a folder a command writes (train.py --out, prepare --out)


class OutputInUse(ValueError):
    """Another live process holds the lock of an output."""


class OutputLock:
    """Held for a command's life over what it writes: `path` is the lock file, `flag` and `target`
    the output it guards (e.g. "--out", "runs/k400"). The file holds the holder's host and pid. It
    is also flock'ed: the kernel drops that lock when the holder ends, even by SIGKILL, so a file
    left by a killed run is recognised as stale and taken over. Under torchrun only rank 0 takes
    it."""

    def __init__(self, path, flag, target):
        self.path, self.flag, self.target, self.fd, self.stale = path, flag, target, None, ""

    @classmethod
    def folder(cls, folder, flag):
        """The lock of a folder a command writes into, made if need be; an OSError (a read-only
        file system, no permission) becomes a ValueError of one line naming the flag."""
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"{flag} {folder} is a file; give a folder")
        try:
            os.makedirs(folder, exist_ok=True)
            return cls(os.path.join(folder, LOCK_NAME), flag, folder).acquire()
        except OSError as e:
            raise ValueError(f"{flag} {folder}: cannot write there ({e.strerror}): choose a "
                             f"writable folder") from None

    @classmethod
    def file(cls, path, flag):
        """The lock of one output file: `path`.lock beside it."""
        try:
            return cls(path + ".lock", flag, path).acquire()
        except OSError as e:
            raise ValueError(f"{flag} {path}: cannot write there ({e.strerror}): choose a "
                             f"writable folder") from None

    def acquire(self):
        """Take the lock, or raise OutputInUse naming the live holder."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "a process that is "\
                    "just starting"
                os.close(fd)
                raise OutputInUse(f"{self.flag} {self.target} is in use by {holder} (lock file "
                                  f"{self.path}): wait for it to end, or choose another "
                                  f"{self.flag}") from None
            # A holder that ended between our open and our flock removed the file we opened: retry
            # on the path's current file, or two processes would each hold a different one.
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
                break
            os.close(fd)
        self.fd, self.stale = fd, os.read(fd, 200).decode(errors="replace").strip()
        if self.stale:                                 # written by a holder that never released
            print(f"{self.flag} {self.target}: taking over the lock {self.path} left by "
                  f"{self.stale}, which is no longer running", file=sys.stderr, flush=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        return self

    def release(self):
        if self.fd is not None:
            os.unlink(self.path)                       # while held: see acquire's retry
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


# --- Prepare: convert a dataset once into a form that is cheap to sample --------------------------
# Decoding is the bottleneck: a 10 s clip with x264's default keyframe interval (250) must be
# decoded almost whole to reach 8 spread frames. Frame folders cost one small JPEG decode per
# sampled frame; re-encoded videos with a short keyframe interval and no B-frames cost a few frames
# per sample.

PREPARED_GOP = 8  # keyframe interval of prepared videos: <= 7 extra frames decoded a sampled frame
PREPARED_X264 = {"preset": "veryfast", "tune": "fastdecode", "crf": "23", "threads": "1"}


def _scaled_size(width, height, short_side):
    """(w, h) with the short side scaled to `short_side` (never up), both even."""
    scale = min(1.0, short_side / min(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _decoded_rgb(src, short_side, damage=None):
    """Every frame of `src`, in order, as uint8 (h, w, 3) with the short side at most short_side.
    `damage` (a list) gets an entry for each packet not decoded or decoded with errors."""
    container, stream = _open_video(src, threads=1)
    try:
        context, damage = stream.codec_context, [] if damage is None else damage
        width, height = _scaled_size(context.width, context.height, short_side)
        packets = (p for p in container.demux(stream) if p.size)  # frame i as read_frames has it
        for frame in _frames_in_order(packets, context, damage):  # upright: no flag on the copy
            yield _to_rgb(frame, width=width, height=height)
        if damage:
            log.warning("prepare: %s: %d packets could not be decoded or decoded with errors; "
                        "the copy holds the frames a player shows", src, len(damage))
    except av.FFmpegError as e:
        raise VideoReadError(src, f"cannot decode ({e})") from e
    finally:
        container.close()


def _write_frame_folder(src, tmp, short_side, quality, damage=None):
    os.makedirs(tmp)
    count = 0
    for count, rgb in enumerate(_decoded_rgb(src, short_side, damage), 1):
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its (libjpeg-turbo) codecs
            warnings.simplefilter("ignore", DeprecationWarning)
            chw = torch.from_numpy(rgb).permute(2, 0, 1)
            jpeg = torchvision.io.encode_jpeg(chw, quality=quality)
        with open(os.path.join(tmp, FRAME_NAME.format(count)), "wb") as f:
            f.write(jpeg.numpy().tobytes())
    if count == 0:
        raise VideoReadError(src, "has no decodable frames")


def _write_short_gop(src, tmp, short_side, gop, damage=None):
    container, stream = _open_video(src)
    rate = stream.guessed_rate or stream.average_rate  # PyAV 19: unset is a falsy AVRational
    rate = Fraction(rate.numerator, rate.denominator) if rate else Fraction(30)
    container.close()
    try:
        write_video(tmp, _decoded_rgb(src, short_side, damage), fps=rate,
                    codec="libx264", gop=gop, bframes=0, options=PREPARED_X264)
    except ValueError as e:  # no frames
        raise VideoReadError(src, str(e)) from e


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def _prepare_one(job):
    """Convert one video (job: src, dst, form, short_side, quality, gop); returns (src, error or
    None, damaged: True if some packets could not be decoded, the copy holding what a player shows).
    Writes to a temporary name and renames, so a killed run leaves no half output behind."""
    src, dst, form, short_side, quality, gop = job
    for stale in glob.glob(glob.escape(dst) + ".tmp*"):  # left by a killed run
        _remove(stale)
    tmp = f"{dst}.tmp{os.getpid()}" + (".mp4" if form == "video" else "")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    damage = []
    try:
        if form == "frames":
            _write_frame_folder(src, tmp, short_side, quality, damage)
        else:
            _write_short_gop(src, tmp, short_side, gop, damage)
        os.rename(tmp, dst)
        return src, None, bool(damage)
    except (VideoReadError, av.FFmpegError, OSError) as e:
        _remove(tmp)
        return src, str(e), False


class _Progress:
    """'done/total' progress on stderr: one rewritten line on a terminal, else a line every
    `every` s."""

    def __init__(self, total, label, every=30.0):
        self.total, self.label, self.every = total, label, every
        self.done = self.failed = 0
        self.start = self.last = time.time()
        self.tty = sys.stderr.isatty()

    def update(self, failed):
        self.done, self.failed = self.done + 1, self.failed + failed
        now = time.time()
        if self.done == self.total or now - self.last >= (0.2 if self.tty else self.every):
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            line = (f"{self.label}: {self.done}/{self.total} videos, {self.failed} failed, "
                    f"{rate:.1f}/s")
            end = "" if self.tty and self.done < self.total else "\n"
            print(("\r" + line) if self.tty else line, end=end, file=sys.stderr, flush=True)


def _dataset_videos(dataset, root, **kw):
    """Every video file of every split (and fold) of a dataset, sorted, each once."""
    paths, first_error = set(), None
    folds = (1, 2, 3) if dataset in ("ucf101", "hmdb51") else (1,)
    for split in ("train", "val", "test"):
        for fold in folds:
            try:
                paths.update(r.path for r in load_split(dataset, root, split, fold, **kw).records)
            except FileNotFoundError as e:
                first_error = first_error or e
                continue  # e.g. a Kinetics copy without test.csv
    if not paths:
        raise FileNotFoundError(f"prepare: no split of {dataset} could be read under {root} "
                                f"({first_error})")
    return sorted(p for p in paths if not os.path.isdir(p))  # frame folders are prepared already


def _worker_init():
    torch.set_num_threads(1)


def _run_jobs(jobs, workers):
    """(src, error, damaged) of each job as it finishes: in this process for one worker, else a
    process pool."""
    if workers <= 1:
        yield from map(_prepare_one, jobs)
        return
    with multiprocessing.Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap_unordered(_prepare_one, jobs, chunksize=4)


def _check_settings(form, short_side, quality, gop):
    if form not in ("frames", "video"):
        raise ValueError(f"prepare: --form must be 'frames' or 'video', got {form!r}")
    for flag, value, low, high in (("--short-side", short_side, 2, None),
                                   ("--quality", quality, 1, 100), ("--gop", gop, 1, None)):
        if not isinstance(value, int) or value < low or (high is not None and value > high):
            span = f"{low} to {high}" if high else f"{low} up"
            raise ValueError(f"prepare: {flag} must be a whole number from {span}, got {value!r}")


def _check_out(out, root, videos_dir):
    """`out` must be a folder of its own: not a file, not the dataset root or its video folder."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file; give a folder for the prepared copy")
    for flag, folder in (("--root", root), ("--videos-dir", videos_dir)):
        if folder and os.path.realpath(out) == os.path.realpath(folder):
            raise ValueError(f"--out {out} is the dataset's {flag} folder; the copies need a "
                             f"folder of their own, e.g. {os.path.normpath(out)}_prepared")


def _check_same_settings(out, settings):
    """`out` must hold no copy made with other settings: PREPARED.json would not describe it."""
    path = os.path.join(out, PREPARED_RECORD)
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                before = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path} is not a record `prepare` wrote ({e}); move it") from None
        changed = [f"{key} {before[key]!r} then, {value!r} now" for key, value in settings.items()
                   if key in before and before[key] != value]
        if changed:
            raise ValueError(f"--out {out} holds a copy prepared with other settings "
                             f"({'; '.join(changed)}; see {path}): rerun with that copy's settings "
                             f"to finish it, or give another --out")


def _write_json(path, payload):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
    os.replace(path + ".tmp", path)


def _prepared_paths(sources, root, out, form):
    """{source: where its prepared form goes}, one distinct place per source. Videos that share a
    stem in one folder ('clip.avi', 'clip.mp4') keep their extension ('clip.avi[.mp4]'); any other
    clash (a place taken twice, or inside another video's frame folder) is refused before a video
    is converted."""
    stems = collections.Counter(_prepared_rel(src, root) for src in sources)
    suffix = ".mp4" if form == "video" else ""
    by_place = {}
    for src in sources:
        rel = _prepared_rel(src, root)
        dst = os.path.join(out, _prepared_rel(src, root, keep_ext=stems[rel] > 1)) + suffix
        if dst in by_place:
            raise ValueError(f"prepare: {shown_path(by_place[dst])} and {shown_path(src)} would "
                             f"both be prepared as {shown_path(dst)}; rename one of them")
        by_place[dst] = src
    for dst, src in by_place.items() if form == "frames" else ():
        parent = os.path.dirname(dst)
        while parent not in by_place and len(parent) > len(out):
            parent = os.path.dirname(parent)
        if parent in by_place:                      # a frame folder holds frames, no other copy
            raise ValueError(f"prepare: {shown_path(src)} would be prepared inside the frame "
                             f"folder of {shown_path(by_place[parent])}; rename one of them, or "
                             f"use --form video")
    return {src: dst for dst, src in by_place.items()}


def prepare(dataset, root, out, form="frames", short_side=256, workers=1, quality=90,
            gop=PREPARED_GOP, **kw):
    """Convert every video of a dataset into frame folders (form='frames': img_00001.jpg ..., the
    official format) or short-keyframe-interval H.264 (form='video') with the short side scaled to
    `short_side` (never up), below `out` mirroring the layout below root. Resumable: finished
    outputs are skipped; a rerun with other settings is refused (out/PREPARED.json records them).
    Returns (converted, skipped, failed paths, damaged paths: converted as a player shows them).
    Read with load_split(..., prepared=out)."""
    _check_settings(form, short_side, quality, gop)
    _check_out(out, root, kw.get("videos_dir"))
    settings = {"dataset": dataset, "root": os.path.abspath(root), "form": form,
                "short_side": short_side}
    settings.update({"quality": quality} if form == "frames" else {"gop": gop})
    _check_same_settings(out, settings)
    sources = _dataset_videos(dataset, root, **kw)
    places = _prepared_paths(sources, root, out, form)  # distinct names, checked before any work
    with OutputLock.folder(out, "--out"):      # makes `out`; one prepare writes there at a time
        _write_json(os.path.join(out, PREPARED_RECORD), settings)  # first: walks skip `out`
        jobs, skipped = [], 0
        for src, dst in places.items():
            if os.path.exists(dst):
                skipped += 1
            else:
                jobs.append((src, dst, form, short_side, quality, gop))
        progress = _Progress(len(jobs), f"prepare {dataset} -> {shown_path(out)} ({skipped} done "
                                        f"before)")
        failed, damaged = [], []
        for src, error, is_damaged in _run_jobs(jobs, workers):
            progress.update(error is not None)
            if error:
                failed.append(src)
                log.warning("prepare: %s", error)
            if is_damaged:
                damaged.append(src)
        counts = {"converted": len(jobs) - len(failed), "skipped": skipped, "failed": failed,
                  "damaged": damaged}
        _write_json(os.path.join(out, PREPARED_RECORD), {**settings, **counts})
        return len(jobs) - len(failed), skipped, failed, damaged


# --- CLI ------------------------------------------------------------------------------------------


def _whole_number(low, high=None):
    """argparse type: an int from `low` (to `high`)."""
    def parse(text):
        value = int(text) if text.strip().lstrip("+-").isdigit() else None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected a whole number from {low}"
                                             f"{f' to {high}' if high else ' up'}, got {text!r}")
        return value
    return parse


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="convert a dataset once into frame folders or "
                                            "short-GOP videos")
    p.add_argument("--dataset", required=True, choices=DATASETS,
                   help="which annotation layout root holds")
    p.add_argument("--root", required=True, help="dataset root, as given to load_split")
    p.add_argument("--out", required=True,
                   help="folder for the prepared copy (mirrors root's layout)")
    p.add_argument("--form", choices=("frames", "video"), default="frames",
                   help="frames: JPEG folders img_00001.jpg (the official code's format); "
                        "video: H.264 with "
                        f"a keyframe every {PREPARED_GOP} frames and no B-frames")
    p.add_argument("--short-side", type=_whole_number(2), default=256,
                   help="scale the short side to this (never up); 256 as TSN")
    p.add_argument("--workers", type=_whole_number(0), default=os.cpu_count(),
                   help="parallel processes (default: all cores; 0 or 1: this process)")
    p.add_argument("--quality", type=_whole_number(1, 100), default=90,
                   help="JPEG quality (1-100) of --form frames")
    p.add_argument("--gop", type=_whole_number(1), default=PREPARED_GOP,
                   help="keyframe interval of --form video")
    p.add_argument("--list-file", help="--dataset list: the 'path label' list file")
    p.add_argument("--classnames-file", help="--dataset list: the class names file")
    p.add_argument("--videos-dir",
                   help="kinetics/charades: where the videos are, if not below root")
    args = parser.parse_args(argv)
    if args.dataset == "list" and not (args.list_file and args.classnames_file):
        p.error("--dataset list needs --list-file FILE and --classnames-file FILE (in --root)")
    return args


def main(argv=None):
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kw = {k: v for k, v in (("list_file", args.list_file),
                            ("classnames_file", args.classnames_file),
                            ("videos_dir", args.videos_dir)) if v}
    try:
        converted, skipped, failed, damaged = prepare(
            args.dataset, args.root, args.out, args.form, args.short_side, args.workers,
            args.quality, args.gop, **kw)
    except (OSError, ValueError) as e:  # a missing or unreadable root, annotation file or --out
        raise SystemExit(f"error: {e}") from None
    print(f"prepared {converted} videos into {shown_path(args.out)} ({skipped} were done "
          f"before); {unreadable_report(len(failed), converted + len(failed), len(damaged))}")
    return 1 if failed and not (converted or skipped) else 0  # fail only if none could be prepared


if __name__ == "__main__":
    sys.exit(main())
