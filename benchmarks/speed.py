"""Videos per second: our ActionCLIP against open_clip plus an equivalent temporal head, in one run.

    python benchmarks/speed.py                           # GPU: ViT-B/32 and ViT-B/16, 8 frames, bf16
    python benchmarks/speed.py --small                   # CPU-sized shapes (what the test suite runs)

For each architecture, on random weights of the official shape, it times
  - inference: encode 8-frame videos (CLIP on every frame, the `transf` prompt [Sec. 3.3]);
  - a training step: videos and one label text each -> logits -> KL loss [Eq. 4] -> backward -> AdamW;
for ours (clip_model + prompts, SDPA attention with fused QKV, optionally torch.compile, fused AdamW,
label texts trimmed to their longest EOT) and for the reference (open_clip's CLIP + a 6-layer
nn.TransformerEncoder head of the same shape, 77-token texts, torch AdamW), both under the same
autocast. It prints videos/s, the ratio ours / reference, the share of the bf16 matmul peak
measured in the same run (FLOPs: the video forward counted by torch's FlopCounterMode; a training
step counts 3x), peak memory, the largest 8-frame ViT-B/16 training batch that fits with and without
gradient checkpointing, and the DataLoader's videos/s on this machine's cores (synthetic videos).
"""

import argparse
import json
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from open_clip.model import build_model_from_openai_state_dict
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clip_model  # noqa: E402
import prompts  # noqa: E402
import video_data  # noqa: E402
from train import kl_video_text_loss  # noqa: E402

TEXT = dict(context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)
ARCHS = {
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32, **TEXT),
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16, **TEXT),
    # CPU-sized stand-ins with the same structure, for the test suite
    "tiny-p8": dict(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                    context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=1),
}
ARCH_BATCH = {"ViT-B/32": 64, "ViT-B/16": 32, "tiny-p8": 4}  # videos per step, as in the reference table
LABELS = ["a video of action abseiling", "Playing action of playing cello", "riding or walking with horse",
          "Look, the human is brushing hair", "The man is doing a cartwheel", "Human action of tai chi"]


# ----------------------------------------------------------------------------------------------------
# The two models, on the same weights


class ReferenceVideoCLIP(nn.Module):
    """What a user builds without us: open_clip's CLIP per frame + a 6-layer pre-LN transformer head."""

    def __init__(self, state_dict, num_frames):
        super().__init__()
        self.clip = build_model_from_openai_state_dict(dict(state_dict)).float()
        width = state_dict["text_projection"].shape[1]
        self.frame_position = nn.Parameter(torch.zeros(num_frames, width))
        layer = nn.TransformerEncoderLayer(width, width // 64, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.head = nn.TransformerEncoder(layer, 6, enable_nested_tensor=False)

    def encode_video(self, video):                                     # (B, T, 3, H, W)
        B, T = video.shape[:2]
        frames = self.clip.encode_image(video.flatten(0, 1)).view(B, T, -1)
        return (frames + self.head(frames + self.frame_position)).mean(1)

    def encode_text(self, tokens):
        return self.clip.encode_text(tokens)

    @property
    def logit_scale(self):
        return self.clip.logit_scale


def official_shape_state_dict(arch):
    torch.manual_seed(0)
    return {k: v.half() for k, v in clip_model.CLIP(**ARCHS[arch]).state_dict().items()}


def build_ours(state_dict, num_frames, device):
    return prompts.ActionCLIP(clip_model.build_model(state_dict), "transf", num_frames).to(device).train()


def compile_in_place(model, mode=None):
    """The image encoder, the text transformer and the head each become one compiled graph (same keys).
    mode: torch.compile's mode (None = default; "reduce-overhead" adds CUDA graphs)."""
    for module in (model.clip.visual, model.clip.transformer, model.visual_prompt):
        module.compile(mode=mode)


# ----------------------------------------------------------------------------------------------------
# Timing


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def videos_per_second(step, batch, device, warmup, steps):
    """Median-free, steady-state rate: `warmup` untimed calls, then `steps` timed back to back."""
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return batch * steps / (time.perf_counter() - start)


def inference_step(model, video, autocast):
    @torch.no_grad()
    def step():
        with autocast:
            model.encode_video(video)
    return step


def training_step(model, optimizer, video, tokens, labels, autocast):
    def step():
        with autocast:
            v = F.normalize(model.encode_video(video), dim=-1)
            t = F.normalize(model.encode_text(tokens), dim=-1)
            loss = kl_video_text_loss(model.logit_scale.exp() * v @ t.t(), labels, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def batch_inputs(arch, batch, num_frames, device, trim):
    size = ARCHS[arch]["image_resolution"]
    video = torch.randn(batch, num_frames, 3, size, size, device=device)
    tokens = clip_model.tokenize([LABELS[i % len(LABELS)] for i in range(batch)])
    tokens = (clip_model.trim_padding(tokens) if trim else tokens).to(device)
    labels = torch.arange(batch, device=device) % len(LABELS)
    return video, tokens, labels


def video_gflop(model, arch, num_frames, device):
    """Forward FLOPs of one video's encode_video, counted by torch (matmuls, convolutions, attention)."""
    video = batch_inputs(arch, 1, num_frames, device, trim=True)[0]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.encode_video(video)
    return counter.get_total_flops() / 1e9


@torch.no_grad()
def relative_error_fp32(ours, reference, arch, device):
    """encode_image of ours vs open_clip on the same weights, fp32 on this device: the two do the same work."""
    frames = batch_inputs(arch, 2, 2, device, trim=True)[0].flatten(0, 1)
    a, b = ours.clip.encode_image(frames), reference.clip.encode_image(frames)
    return ((a - b).norm() / b.norm()).item()


def matmul_tflops(device, dtype, n):
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    rate = videos_per_second(lambda: a @ b, 1, device, warmup=3, steps=10)
    return rate * 2 * n ** 3 / 1e12


def peak_memory_gib(device, fn):
    if device.type != "cuda":
        return float("nan")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated() / 2 ** 30


# ----------------------------------------------------------------------------------------------------
# One architecture, both models


def measure_arch(args, arch, batch, device, autocast, peak):
    state_dict = official_shape_state_dict(arch)
    ours = build_ours(state_dict, args.frames, device)
    reference = ReferenceVideoCLIP(state_dict, args.frames).to(device).train()
    gflop = video_gflop(ours, arch, args.frames, device)  # eager, before compiling: no batch-1 graph
    parity = relative_error_fp32(ours, reference, arch, device)
    if args.compile:
        compile_in_place(ours, args.compile_mode)
    rows = []
    for name, model, trim, optimizer_kw in (("ours", ours, True, {"fused": device.type == "cuda"}),
                                            ("open_clip", reference, False, {})):
        video, tokens, labels = batch_inputs(arch, batch, args.frames, device, trim)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.2,
                                      **optimizer_kw)
        infer = inference_step(model, video, autocast)
        train = training_step(model, optimizer, video, tokens, labels, autocast)
        row = {"arch": arch, "model": name, "batch": batch, "video_gflop": round(gflop, 1), "fp32_rel_err": parity}
        row["infer_videos_s"] = videos_per_second(infer, batch, device, args.warmup, args.steps)
        row["train_videos_s"] = videos_per_second(train, batch, device, args.warmup, args.steps)
        row["train_peak_gib"] = peak_memory_gib(device, train)
        row["infer_peak_share"] = row["infer_videos_s"] * gflop / 1e3 / peak
        row["train_peak_share"] = row["train_videos_s"] * 3 * gflop / 1e3 / peak
        rows.append(row)
        del optimizer, infer, train, video
    for key in ("infer_videos_s", "train_videos_s"):
        rows[0][key.replace("videos_s", "ratio")] = rows[0][key] / rows[1][key]
    return rows


def fits(model, optimizer, arch, batch, device, autocast):
    """Does one eager training step of `batch` videos fit in GPU memory?"""
    try:
        video, tokens, labels = batch_inputs(arch, batch, model.config["num_frames"], device, trim=True)
        training_step(model, optimizer, video, tokens, labels, autocast)()
        synchronize(device)
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def largest_batch(arch, num_frames, device, autocast, checkpointing, start=32):
    """Double until a step runs out of memory, then bisect (to within 1/16 of the answer). Eager mode."""
    model = build_ours(official_shape_state_dict(arch), num_frames, device)
    model.clip.visual.transformer.grad_checkpointing = checkpointing
    optimizer = torch.optim.AdamW(model.parameters(), fused=device.type == "cuda")
    low, high = 0, start
    while fits(model, optimizer, arch, high, device, autocast):
        low, high = high, high * 2
    while high - low > max(1, low // 16):
        mid = (low + high) // 2
        low, high = (mid, high) if fits(model, optimizer, arch, mid, device, autocast) else (low, mid)
    return low


def dataloader_rate(num_frames, workers, videos=64, size=256):
    """Videos/s of the training DataLoader (decode + train transforms at 224 px) on synthetic clips."""
    with tempfile.TemporaryDirectory() as root:
        classes = [(c, s, m) for c in video_data.COLOURS[:2] for s in video_data.SHAPES[:2] for m in video_data.MOTIONS[:2]]
        video_data.make_synthetic_dataset(root, classes, max(1, videos // len(classes)), num_frames=60, size=size)
        split = video_data.load_split("synthetic", root, "train")
        dataset = video_data.VideoDataset(split, num_frames, "train", video_data.train_transform(224))
        loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True, num_workers=workers,
                                             persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())
        for _ in loader:  # warm-up epoch: workers started, files in the page cache
            pass
        start, count = time.perf_counter(), 0
        for _ in range(3):
            for batch in loader:
                count += len(batch[0])
        return count / (time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------------


def print_table(rows, device_name, peak, extra):
    print(f"\ndevice: {device_name}; measured matmul peak {peak:.3g} TFLOP/s (bf16; fp32 on the CPU)")
    print("| arch | model | batch | inference videos/s | x ref | % peak | train videos/s | x ref | % peak | train peak GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['arch']} | {r['model']} | {r['batch']} | {r['infer_videos_s']:.1f} | {r.get('infer_ratio', 1):.2f} | "
              f"{100 * r['infer_peak_share']:.1f} | {r['train_videos_s']:.1f} | {r.get('train_ratio', 1):.2f} | "
              f"{100 * r['train_peak_share']:.1f} | {r['train_peak_gib']:.2f} |")
    for r in rows[::2]:
        print(f"{r['arch']}: encode_image ours vs open_clip, fp32 on this device, relative error {r['fp32_rel_err']:.1e}")
    for key, value in extra.items():
        print(f"{key}: {value}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="CPU-sized shapes (tiny-p8, batch 4), fp32")
    parser.add_argument("--frames", type=int, default=8, help="frames per video (the paper's 8)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile our model (default: on for CUDA)")
    parser.add_argument("--compile-mode", choices=["reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                        help="torch.compile mode (default: torch's default mode)")
    parser.add_argument("--max-batch", action=argparse.BooleanOptionalAction, default=None,
                        help="search the largest ViT-B/16 training batch (default: on for CUDA)")
    parser.add_argument("--loader-workers", type=int, default=None, help="DataLoader workers (default: all cores)")
    parser.add_argument("--archs", nargs="+", choices=list(ARCH_BATCH), help="default: ViT-B/32 ViT-B/16 (GPU)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() and not args.small else "cpu")
    cuda = device.type == "cuda"
    args.compile = cuda if args.compile is None else args.compile
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    peak = matmul_tflops(device, torch.bfloat16 if cuda else torch.float32, 8192 if cuda else 512)
    plan = [(arch, ARCH_BATCH[arch]) for arch in (args.archs or (["ViT-B/32", "ViT-B/16"] if cuda else ["tiny-p8"]))]
    name = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)"
    figures = {"device": name, "torch": torch.__version__, "peak_tflops": peak, "rows": [],
               "compile": args.compile and (args.compile_mode or "default")}
    save = (lambda: json.dump(figures, open(args.json, "w"), indent=1)) if args.json else (lambda: None)

    for arch, batch in plan:  # figures are saved after every stage: a run cut short keeps what it measured
        figures["rows"] += measure_arch(args, arch, batch, device, autocast, peak)
        print_table(figures["rows"][-2:], name, peak, {})
        save()
    if cuda if args.max_batch is None else args.max_batch:
        arch = "ViT-B/16" if cuda else "tiny-p8"
        for checkpointing in (False, True):
            figures[f"largest {arch} {args.frames}-frame training batch, checkpointing={checkpointing}"] = \
                largest_batch(arch, args.frames, device, autocast, checkpointing, start=32 if cuda else 2)
            save()
    workers = args.loader_workers if args.loader_workers is not None else os.cpu_count()
    figures[f"DataLoader videos/s ({workers} workers, synthetic 256 px clips, decode + train transforms)"] = \
        round(dataloader_rate(args.frames, workers, videos=384 if cuda else 8), 1)  # 384: every worker busy
    save()
    print_table(figures["rows"], name, peak, {k: v for k, v in figures.items() if k not in ("device", "torch", "peak_tflops", "rows")})


if __name__ == "__main__":
    main()
