"""CPU throughput of clip_model's encode_image against open_clip on the same weights, in one run.

    python benchmarks/clip_encode_image.py                  # ViT-B/32, batch 16, fp32, all cores
    python benchmarks/clip_encode_image.py --arch ViT-B/16 --batch 8 --repeats 5

Random weights of the official shape (no download). The two models are timed alternately, repeat by
repeat, so that a busy machine slows both alike; the median of each is reported and their ratio
(ours / open_clip, > 1 means faster).
"""

import argparse
import os
import statistics
import sys
import time

import torch
from open_clip.model import build_model_from_openai_state_dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clip_model  # noqa: E402

SHAPES = {
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32),
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16),
}
TEXT = dict(context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)


def seconds_per_call(fn, images):
    start = time.perf_counter()
    fn(images)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B/32", choices=list(SHAPES))
    parser.add_argument("--batch", type=int, default=16, help="images per encode_image call")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per model (after one warm-up)")
    args = parser.parse_args()

    torch.manual_seed(0)
    state_dict = {k: v.half() for k, v in clip_model.CLIP(**SHAPES[args.arch], **TEXT).state_dict().items()}
    ours = clip_model.build_model(state_dict)
    reference = build_model_from_openai_state_dict(dict(state_dict)).float().eval()
    images = torch.randn(args.batch, 3, 224, 224)

    with torch.inference_mode():
        error = (ours.encode_image(images) - reference.encode_image(images)).norm() / reference.encode_image(images).norm()
        times = {"ours": [], "open_clip": []}
        for _ in range(args.repeats):
            times["ours"].append(seconds_per_call(ours.encode_image, images))
            times["open_clip"].append(seconds_per_call(reference.encode_image, images))

    rate = {name: args.batch / statistics.median(t) for name, t in times.items()}
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.arch} encode_image, batch {args.batch}, fp32, median of {args.repeats}")
    print(f"relative error ours vs open_clip: {error:.2e}")
    print("| model | images/s |\n| --- | --- |")
    for name, r in rate.items():
        print(f"| {name} | {r:.1f} |")
    print(f"ratio ours / open_clip: {rate['ours'] / rate['open_clip']:.2f}")


if __name__ == "__main__":
    main()
