"""Peak memory of one test view (video_data.TestTransform) against scaling the whole frame first.

    python benchmarks/view_memory.py [--frames 8] [--size 224]

Each measurement runs in a fresh process: the peak resident set size (ru_maxrss) while one clip of
T frames is turned into a centre-crop view, less the peak before (Python, torch and the clip
itself). The reference is what TestTransform did for every frame before issue #23: resize the
short side to 256, then crop.
"""

import argparse
import json
import os
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = [(360, 640), (1080, 1920), (16, 4000), (4000, 16), (64, 8000)]  # (h, w)


def measure(kind, h, w, frames, size):
    """Peak MiB above the baseline for one view of a (frames, h, w, 3) clip (in this process)."""
    sys.path.insert(0, ROOT)
    import torch
    from torchvision.transforms.v2 import functional as TF

    import video_data
    torch.set_num_threads(1)
    clip = torch.randint(0, 256, (frames, h, w, 3), dtype=torch.uint8)
    transform = video_data.test_transform(size, on_device=True)
    small = torch.randint(0, 256, (frames, 20, 20, 3), dtype=torch.uint8)
    transform(small)                                     # first-call allocations, both kinds
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if kind == "ours":
        view = transform(clip)
    else:
        video = TF.resize(clip.permute(0, 3, 1, 2), [transform.scale_size], antialias=True)
        view = TF.center_crop(video, [size, size])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert view.shape == (frames, 3, size, size)
    return (after - before) / 1024                       # ru_maxrss is in KiB on Linux


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--one", nargs=3, metavar=("KIND", "H", "W"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, h, w = args.one[0], int(args.one[1]), int(args.one[2])
        print(json.dumps(measure(kind, h, w, args.frames, args.size)))
        return
    print(f"| frame (w x h) | {args.frames}-frame view, scaled whole first (MiB) | ours (MiB) | "
          f"ours / whole |")
    print("| --- | --- | --- | --- |")
    for h, w in SHAPES:
        peaks = {}
        for kind in ("whole", "ours"):
            out = subprocess.run([sys.executable, __file__, "--frames", str(args.frames), "--size",
                                  str(args.size), "--one", kind, str(h), str(w)],
                                 capture_output=True, text=True, check=True)
            peaks[kind] = json.loads(out.stdout)
        ratio = peaks["ours"] / peaks["whole"] if peaks["whole"] > 0.5 else float("nan")
        print(f"| {w} x {h} | {peaks['whole']:.1f} | {peaks['ours']:.1f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
