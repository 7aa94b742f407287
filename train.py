"""Fine-tune CLIP into ActionCLIP: "fine-tune" of "pre-train, prompt, fine-tune" [Sec. 3.4].

A video and the text of its class should have the highest cosine similarity in a batch [Eq. 2].
Training minimises the symmetric KL divergence between the softmaxed video-to-text / text-to-video
similarities [Eq. 3] and the ground truth where every same-class pair is a positive [Sec. 3.1,
Eq. 4], over the global batch (all GPUs), with the paper's optimiser and schedule [Sec. 4.1].
Every ablation of the paper is a flag.

    python train.py --demo        # no data or weights: a tiny CLIP from scratch, CPU, ~4 min

    # one GPU (or the CPU: fp32, slow)
    python train.py --dataset ucf101 --root data/ucf101 --arch ViT-B/16 --frames 8
    # one node, 4 GPUs (the global batch, --batch-size, is split over them)
    torchrun --standalone --nproc_per_node=4 train.py --dataset kinetics400 --root data/k400 \\
        --arch ViT-B/16 --frames 8
    # two nodes of 8 GPUs: the same command on each, node_rank 0 and 1, master_addr = node 0's
    # address (--out on a filesystem both nodes share: every process reads last.pt on --resume)
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=10.0.0.1 \\
        --master_port=29500 train.py --dataset kinetics400 --root /data/k400 --arch ViT-B/16 \\
        --frames 8
    # Ctrl-C or SIGTERM (preemption): the step in flight finishes, last.pt is written, exit
    # 130/143; the run continues exactly where it stopped (its configuration comes from the
    # checkpoint)
    python train.py --resume --out runs/kinetics400_ViT-B-16_f8
    # UCF101 / HMDB51 start from a Kinetics-400 ActionCLIP [Sec. 4.3]
    python train.py --dataset ucf101 --root data/ucf101 \\
        --finetune-from runs/kinetics400_ViT-B-16_f8/best.pt

The paper's tables, re-run by flags: Table 1 --unimodal; Table 2 --init-text/--init-vision random;
Table 3 --no-text-prompts; Table 4 --visual-prompt; Table 5 --freeze-text/--freeze-vision; Table 6
--arch and --frames; Fig. 3 --shots K.

Outputs in --out: last.pt and best.pt (written atomically at each epoch's end, and last.pt every
--save-every steps; load them with prompts.load_actionclip, evaluate.py or zeroshot.py),
metrics.jsonl (one JSON object per log line and per validation), and .lock while the run is on
(its host and pid: a second run into the same --out is refused).
best.pt is chosen on --val-split; for UCF101/HMDB51 that is the test list (they have no validation
split, as in the official code), so report last.pt's figures there, or say that best.pt was chosen
on test.

Read from the top: the loss [Eq. 2-4], one training step, the epoch loop and train(); then the
machinery (data, model and optimiser, the run, checkpoints, signals, the flags), the demo, main().

Shapes: B videos in a batch (per process), N = B x world size (the global batch), T frames per
video, S image side in pixels, L tokens, K templates, C classes, E joint embedding dimension.
"""

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import shlex
import shutil
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, DistributedSampler

import clip_model
import prompts
import video_data
import evaluate

# A CLIP small enough to train from scratch on a CPU in minutes: `--arch tiny` (the demo, tests).
# 4 text heads (of width 16): with one, the text's last token had to gather colour, shape and
# motion through a single attention, and the demo learned them about twice as slowly.
TINY_CLIP = dict(embed_dim=64, image_resolution=32, vision_layers=3, vision_width=96,
                 vision_patch_size=8, context_length=24, vocab_size=49408, transformer_width=64,
                 transformer_heads=4, transformer_layers=2)
ADAMW_BETAS = (0.9, 0.98)  # [Sec. 4.1], as CLIP's training


# --------------------------------------------------------------------------------------------------
# The loss [Sec. 3.1, Eq. 2-4], over the global batch


def kl_video_text_loss(logits, video_labels, text_labels):
    """Symmetric KL divergence between the softmaxed similarities and the ground truth [Sec. 3.1,
    Eq. 4].

    logits (N, N): video i vs text j, already scaled by the learned temperature. video_labels (N,)
    class ids, or (N, C) multi-hot (Charades); text_labels (N,) the class each text names. Every
    pair of the same class is a positive: a batch may hold several videos of one class, and CLIP's
    one-hot cross-entropy would call all but one of them negatives. Each row of the ground truth is
    normalised to sum to 1; a row with no positive (possible only for a multi-label video)
    contributes nothing.
    official: the target is softmax(10 * ground_truth), which leaves e^-10 of mass on each negative.
    """
    if video_labels.ndim == 2:
        same = video_labels[:, text_labels] > 0                       # (N, N): the text names one
    else:                                                             # of the video's classes
        same = video_labels[:, None] == text_labels[None, :]          # (N, N)
    same = same.float()
    v2t = same / same.sum(1, keepdim=True).clamp(min=1)               # rows: videos
    t2v = same.t() / same.t().sum(1, keepdim=True).clamp(min=1)       # rows: texts
    # p = log_softmax over a row: p^{x2y} (rows: videos) and p^{y2x} (rows: texts) [Eq. 3].
    # F.kl_div(log p, q) computes sum q * (log q - log p) = KL(q || p), the ground truth q first:
    # the cross-entropy of p under q, less q's (constant) entropy. The paper writes KL(p, q)
    # [Eq. 4]; what is computed is KL(q || p), as in the official code (KLLoss: KLDivLoss of
    # log_softmax(logits) and the target). batchmean: summed over a row, averaged over rows.
    video_to_text = F.kl_div(F.log_softmax(logits, dim=1), v2t, reduction="batchmean")
    text_to_video = F.kl_div(F.log_softmax(logits.t(), dim=1), t2v, reduction="batchmean")
    return (video_to_text + text_to_video) / 2                        # the 1/2 of Eq. 4


def classifier_loss(logits, target):
    """Table 1's unimodal baseline: cross-entropy of a linear classifier's logits (B, C); binary
    cross-entropy per class for multi-hot targets (B, C)."""
    if target.ndim == 2:
        return F.binary_cross_entropy_with_logits(logits.float(), target)
    return F.cross_entropy(logits.float(), target)


class VideoTextEncoder(nn.Module):
    """What DDP wraps: both normalised embeddings and the temperature from one forward, so that the
    loss can pair them across the global batch outside the module."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, video, tokens):                                 # (B, T, 3, S, S), (B, L)
        video_features = F.normalize(self.model.encode_video(video).float(), dim=-1)  # (B, E), fp32
        text_features = F.normalize(self.model.encode_text(tokens).float(), dim=-1)   # (B, E), fp32
        return video_features, text_features, self.model.logit_scale.exp()          # exp: 1/tau


class GatherWithGradients(torch.autograd.Function):
    """all_gather whose backward pass gives each rank the sum, over ranks, of the gradient of its
    slice."""

    @staticmethod
    def forward(ctx, x):                                              # (B, ...)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)                                       # (N, ...), rank order

    @staticmethod
    def backward(ctx, grad):                                          # (N, ...)
        grad = grad.contiguous()
        dist.all_reduce(grad)                                         # summed over ranks
        return grad.chunk(dist.get_world_size())[dist.get_rank()]     # (B, ...): this rank's slice


def gather(x):
    """Every rank's x, concatenated in rank order: (B, ...) -> (N, ...), N = B x world size.

    The backward pass sums, over ranks, the gradients of this rank's slice and sends each rank its
    own. Every rank computes the same global loss, so that sum is world x the 1-process gradient of
    the local embeddings, and DDP's average over ranks brings it back to exactly the 1-process
    gradient (tests/test_train.py checks this against a 1-process run). A per-GPU loss would instead
    shrink the contrastive batch to B (the official code got the global batch from DataParallel).
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    return GatherWithGradients.apply(x)


def contrastive_loss(video_features, text_features, scale, video_labels, text_labels):
    """Eq. 4 on the global batch: (N, N) logits from every rank's videos and texts, in fp32 even
    under autocast (in bf16, logits of 100 x cosine, ~30, would round to steps of 1/8)."""
    with torch.autocast(video_features.device.type, enabled=False):
        video_features = gather(video_features.float())              # (N, E)
        text_features = gather(text_features.float())                # (N, E)
        logits = scale.float() * video_features @ text_features.t()  # (N, N): s(x, y) / tau [Eq. 2]
        return kl_video_text_loss(logits, gather(video_labels), gather(text_labels))


# --------------------------------------------------------------------------------------------------
# One training step: the batch to the device, forward, loss [Eq. 2-4], backward, AdamW [Sec. 4.1]


def train_step(run, batches):
    """One optimiser step on --grad-accum micro-batches from `batches`, each (video, labels,
    templates, text_classes) of B videos; returns the loss, averaged over them and all ranks."""
    args, device = run.args, run.ddp.device
    set_lr(run.optimizer, lr_at(run.step / run.steps_per_epoch, args))  # per step [Sec. 4.1]
    # The global RNG as a function of (seed, rank, step): a resumed run draws what an
    # uninterrupted one would. Nothing in the step draws from it today (there is no dropout; the
    # data's draws come from (seed, epoch, video) in TrainItems): this keeps resume exact should
    # a random operation (a dropout, say) enter the forward pass.
    torch.manual_seed(mix_seed(args.seed, run.ddp.rank, run.step))
    total = torch.zeros((), device=device)
    for i in range(args.grad_accum):
        video, labels, templates, text_classes = next(batches)
        video = video_data.finish_batch(video, device)            # (B, T, 3, S, S), normalised
        labels = labels.to(device, non_blocking=True)             # (B,), or (B, C) multi-hot
        templates = templates.to(device, non_blocking=True)       # (B,) [Sec. 3.2]
        text_classes = text_classes.to(device, non_blocking=True)  # (B,): the class each names
        last = i == args.grad_accum - 1
        # DDP averages the gradients over ranks once per step, in the last micro-batch's backward
        with nullcontext() if last or run.ddp.world == 1 else run.model_ddp.no_sync():
            with run.autocast:
                if args.unimodal:                                 # Table 1: no text
                    loss = classifier_loss(run.model_ddp(video), labels)  # logits (B, C)
                else:
                    tokens = run.tokens[templates, text_classes]  # (B, L): each video's text
                    video_features, text_features, scale = run.model_ddp(video, tokens)
                    loss = contrastive_loss(video_features, text_features, scale, labels,
                                            text_classes)
                loss = loss / args.grad_accum
            run.scaler.scale(loss).backward()
        total += loss.detach()
    if args.clip_grad:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), args.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ddp.world > 1:
        dist.all_reduce(total)                       # the same everywhere: all ranks stop together
        total /= run.ddp.world
    loss = total.item()
    stop_on_non_finite(run, loss)
    run.step += 1
    return loss


def stop_on_non_finite(run, loss):
    if not math.isfinite(loss):
        last = checkpoint_path(run.args)
        raise SystemExit(f"step {run.step}: the loss is {loss}; stopping. {last} (the last good "
                         f"checkpoint) is intact: --resume repeats its settings; to change them, "
                         f"start a new run from its weights with --finetune-from {last} and a "
                         f"lower --lr, --clip-grad or --precision fp32")


# --------------------------------------------------------------------------------------------------
# The epoch loop and the run: log, validate, checkpoint, stop


def train_epoch(run, epoch, batches):
    """Train `epoch`, or what is left of it, or until --stop-after-steps or a signal (returned)."""
    args = run.args
    first = run.step - epoch * run.steps_per_epoch
    losses, since = [], time.time()
    for _ in range(first, run.steps_per_epoch):
        losses.append(train_step(run, batches))
        if run.step % args.log_every == 0:
            log_step(run, losses, since)
            losses, since = [], time.time()
        signum = run.stop.requested()                      # every rank stops after the same step
        if signum or stopping(run):
            return signum
        maybe_save(run)
    return None


def log_step(run, losses, since):
    """A log line and a metrics.jsonl record: epoch, step, loss, learning rates, videos/s, ETA. The
    line shows the rate over the run so far; the record keeps this interval's too (videos_per_s)."""
    args, now = run.args, time.time()
    seconds_per_step = run.pace.seconds_per_step(run.step, now)
    total_steps = args.epochs * run.steps_per_epoch
    lr = lr_at((run.step - 1) / run.steps_per_epoch, args)
    record = dict(step=run.step, epoch=round(run.step / run.steps_per_epoch, 4),
                  loss=sum(losses) / len(losses), lr=lr, lr_new=lr * args.new_lr_mult,
                  videos_per_s=args.batch_size * len(losses) / (now - since),
                  videos_per_s_run=args.batch_size / seconds_per_step,
                  eta_s=round(seconds_per_step * (total_steps - run.step), 1))
    text = (f"epoch {math.ceil(record['epoch'])}/{args.epochs} step {run.step}/{total_steps} "
            f"loss {record['loss']:.4f} "
            f"lr {lr:.2e} (new {record['lr_new']:.2e}) {record['videos_per_s_run']:.1f} videos/s "
            f"eta {evaluate.clock(record['eta_s'])}")
    log_line(args.out, record, run.ddp.master, text)


class Pace:
    """Seconds per step over the run so far (this process's part of it, validation included).

    The ETA extrapolates this, not the last interval: an interval can be a burst of prefetched
    batches or an epoch's start; extrapolating it made the ETA swing from 1:29:30 to 00:31.
    """

    def __init__(self, step, now):
        self.start_step, self.start = step, now

    def seconds_per_step(self, step, now):
        return (now - self.start) / max(step - self.start_step, 1)


def stopping(run):
    return run.args.stop_after_steps is not None and run.step >= run.args.stop_after_steps


def maybe_save(run):
    """--save-every N: last.pt every N steps inside an epoch (its end writes one anyway)."""
    every = run.args.save_every
    if every and run.step % every == 0 and run.step % run.steps_per_epoch:
        save_checkpoint(run, ["last.pt"])


def predict(run, dataset, classnames):
    """evaluate.py's test (template ensemble, one view) of every video of `dataset`:
    evaluate.Predictions."""
    args, ddp = run.args, run.ddp
    loader = run.val_loader
    if dataset is not run.val:
        loader = evaluate.eval_loader(dataset, run.micro_batch, args.workers,
                                      distributed=ddp.world > 1)
    text = None
    if not args.unimodal:
        with run.autocast:                                            # (K, C, E)
            text = prompts.text_features(run.model, classnames, run.templates, device=ddp.device)
    progress = "validate" if ddp.master else None
    predictions = evaluate.predict_videos(run.model, loader, text, ddp.device, run.dtype,
                                          progress=progress)
    train_mode(run.model, args)
    return predictions


def validate(run):
    """Metrics on --val-split: top-1/top-5 (mAP for multi-label data), unreadable videos counted."""
    predictions = predict(run, run.val, run.classnames)
    return evaluate.summarize(predictions, run.classnames, run.val.multilabel)


def end_of_epoch(run, epoch):
    """Validate (every --eval-every epochs and after the last), then write last.pt, and best.pt if
    it is the best so far. The epoch's last.pt is written before validating too: a validation that
    fails (out of memory, a crash) loses no training, and --resume validates first."""
    args, names = run.args, ["last.pt"]
    if args.eval_every and ((epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs):
        if not run.epoch_end_pending:                  # else last.pt holds this state already
            run.epoch_end_pending = True
            save_checkpoint(run, ["last.pt"])
        try:
            with run.stop.interruptible():                 # no step in flight: a signal stops now
                metrics = validate(run)
        except torch.OutOfMemoryError:
            raise SystemExit(f"error: epoch {epoch + 1}: validation ran out of memory on "
                             f"{run.ddp.device}; {checkpoint_path(args)} holds the epoch (step "
                             f"{run.step}) and --resume validates it first: free memory there, "
                             f"then continue with: {resume_command(args.out)}") from None
        score = metrics["mAP"] if "mAP" in metrics else metrics["top1"]
        if score is not None and score > run.best:
            run.best = score
            names.append("best.pt")
        summary = {k: v for k, v in metrics.items() if k != "per_class"}
        log_line(args.out, dict(step=run.step, epoch=epoch + 1, val=summary), run.ddp.master,
                 f"epoch {epoch + 1}/{args.epochs} {args.val_split}: "
                 f"{evaluate.headline(metrics)} (best {run.best:.2f})")
    run.epoch_end_pending = False
    save_checkpoint(run, names)


def train_loop(run, batches):
    """Epochs to the end of the schedule or --stop-after-steps; the signal that stopped them."""
    total_steps = run.args.epochs * run.steps_per_epoch
    if run.epoch_end_pending:                              # put off by a signal: done first
        end_of_epoch(run, run.step // run.steps_per_epoch - 1)
    while run.step < total_steps and not stopping(run):
        epoch = run.step // run.steps_per_epoch
        signum = train_epoch(run, epoch, batches)
        if signum:
            return signum
        if run.step % run.steps_per_epoch == 0:
            end_of_epoch(run, epoch)
        elif stopping(run):
            save_checkpoint(run, ["last.pt"])         # mid-epoch: resume picks up from here
    return None


def train(args):
    """One training run as configured by `args`; returns the Run (the demo evaluates its model
    further). SIGINT or SIGTERM ends it early, last.pt written, with a non-zero status."""
    check_paths(args)
    ddp = Dist.from_environment(args.device)
    with claim_out(args.out, ddp):
        return train_in_out(args, ddp)


def claim_out(out, ddp):
    """The lock of --out, held for the run's life (rank 0's: the others write nothing there): a
    second run into the same folder ends with one line naming the first one's host and pid."""
    if not ddp.master:
        return nullcontext()
    try:
        return video_data.OutputLock.folder(out, "--out")
    except ValueError as e:                            # in use, or not writable
        raise SystemExit(f"error: {e}") from None


def train_in_out(args, ddp):
    """train(), once --out is this run's."""
    prepare_out(args, ddp)
    with StopRequest(ddp) as stop:
        run = start_run(args, ddp, stop)
        torch.manual_seed(mix_seed(args.seed, ddp.rank))             # seeds offset by rank
        batches, run.pace = training_batches(run), Pace(run.step, time.time())
        try:
            signum = train_loop(run, batches)
        except Interrupted as e:                           # in validation: this rank alone
            stop_on_signal(run, e.signum, together=False)
        if signum:
            stop_on_signal(run, signum, together=True)
    if run.step < args.epochs * run.steps_per_epoch:
        text = (f"stopped after step {run.step} (--stop-after-steps); continue with: "
                f"{resume_command(args.out)}" if os.path.isfile(checkpoint_path(args)) else
                "stopped before the first step (--stop-after-steps 0): nothing trained, no "
                "checkpoint written")
        log_line(args.out, dict(step=run.step, stopped=True), ddp.master, text)
    del batches                                                       # its workers end here
    if dist.is_initialized():
        dist.destroy_process_group()
    return run


# --------------------------------------------------------------------------------------------------
# Machinery below. Data: the training items [Sec. 3.2, 4.1], their order, the validation videos


class TrainItems(Dataset):
    """Training videos, each as (video, label, template, text_class): its text is template k around
    class c, the tokens run.tokens[k, c]. text_class is the label, or for a multi-label video one of
    its classes, drawn.

    Items are indexed by (epoch, index). All the randomness of an item (frames, crop, flip, colour,
    template) is drawn from (seed, epoch, index): the same batches whatever the number of GPUs or
    loader workers, and after --resume. The video is a video_data.DeviceClip (uint8 pixels and the
    colour draws) or, with --decode-on-device, a JpegClip; video_data.finish_batch ends the work
    on the model's device.
    """

    def __init__(self, videos, num_templates, seed):
        self.videos, self.num_templates, self.seed = videos, num_templates, seed

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, epoch_and_index):
        epoch, i = epoch_and_index
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(mix_seed(self.seed, epoch, i))  # see mix_seed
            video, target, *_ = self.videos[i]                        # DeviceClip or JpegClip
            template = int(torch.randint(self.num_templates, ()))     # one random template per
            if target.ndim:                                           # video [Sec. 3.2]
                positives = target.nonzero().flatten()                # multi-hot: its text names
                text_class = int(positives[torch.randint(len(positives), ())])  # one of them
            else:
                text_class = int(target)
        return video, target, template, text_class


def mix_seed(*numbers):
    """A 63-bit seed from a few integers, e.g. (seed, epoch, video index): randomness as a pure
    function. TrainItems seeds the CPU generator alone with it: torch.manual_seed would also queue
    a seed, with a formatted stack, for each GPU backend not yet started, some 85 us a video."""
    digest = hashlib.blake2b(repr(numbers).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class RunOrder:
    """This process's micro-batches of (epoch, index), from optimiser step `first_step` to the end
    of the run: epoch e is the DistributedSampler's order for e, cut into micro-batches (a resumed
    epoch starts at its step). One sequence for the whole run: one DataLoader serves every epoch."""

    def __init__(self, sampler, micro_batch, per_step, steps_per_epoch, first_step, total_steps):
        self.sampler, self.micro_batch, self.per_step = sampler, micro_batch, per_step
        self.epoch_steps, self.first_step, self.end = steps_per_epoch, first_step, total_steps

    def __iter__(self):
        for epoch in range(self.first_step // self.epoch_steps, self.end // self.epoch_steps):
            self.sampler.set_epoch(epoch)
            first = max(self.first_step - epoch * self.epoch_steps, 0)
            order = list(self.sampler)[first * self.per_step:self.epoch_steps * self.per_step]
            for start in range(0, len(order), self.micro_batch):
                yield [(epoch, i) for i in order[start:start + self.micro_batch]]


def training_batches(run):
    """Micro-batches from run.step to the end of the run, from one DataLoader whose workers live as
    long as the run: no restart at epoch boundaries or after validation, and the next epoch's first
    batches are decoded while this one ends (each worker keeps 2 ready). Pinned, for non-blocking
    copies."""
    args = run.args
    order = RunOrder(run.sampler, run.micro_batch, run.micro_batch * args.grad_accum,
                     run.steps_per_epoch, run.step, args.epochs * run.steps_per_epoch)
    return iter(DataLoader(run.items, batch_sampler=order, num_workers=args.workers,
                           collate_fn=video_data.collate, pin_memory=run.ddp.device.type == "cuda",
                           worker_init_fn=video_data.ignore_stop_signals))


def build_data(args, ddp, train_split, val_split, size):
    """Training items and the sampler that orders them, and the validation videos, at `size`
    pixels."""
    videos = video_data.VideoDataset(train_split, args.frames, "train", augmentation(args, size),
                                     in_memory=args.in_memory, seed=args.seed,
                                     jpeg_bytes=jpeg_on_device(args, ddp, train_split),
                                     sample_by=args.sample_by)
    views = video_data.test_transform(size, on_device=True)           # uint8: normalised on device
    val = video_data.VideoDataset(val_split, args.frames, "test", views, in_memory=args.in_memory,
                                  sample_by=args.sample_by)
    if args.in_memory:
        warm_cache(videos, "decoding training videos", ddp.master)
        warm_cache(val, "decoding validation videos", ddp.master)
    num_templates = len(prompts.LABEL_ONLY if args.no_text_prompts else prompts.TEMPLATES)
    items = TrainItems(videos, num_templates, args.seed)
    # The order of an epoch is a pure function of (seed, epoch): exact resume, and global batch i is
    # the same videos for any number of GPUs (DistributedSampler hands rank r every world-th index).
    sampler = DistributedSampler(items, num_replicas=ddp.world, rank=ddp.rank, shuffle=True,
                                 seed=args.seed, drop_last=True)
    return items, sampler, val


def load_splits(args):
    """The training split (--shots applied) and the validation split, which must share its
    classes."""
    train_split = split_from_flags(args, "train")
    val_split = split_from_flags(args, args.val_split)
    if args.eval_every and not val_split.records:      # found now, not after the first epoch
        listed = f"--val-list-file {os.path.join(args.root, args.val_list)}" \
            if args.dataset == "list" else f"the {args.dataset} {args.val_split} split"
        raise SystemExit(f"error: {evaluate.no_videos(val_split, listed)}: validation needs at "
                         f"least one; fix it, or pass --eval-every 0 to train without validating")
    if train_split.classnames != val_split.classnames:
        raise SystemExit(f"--val-split {args.val_split} has other classes than the training split "
                         f"({len(val_split.classnames)} vs {len(train_split.classnames)}); "
                         f"validation needs the same")
    if train_split.multilabel:           # Charades: a video without an action has no text to match
        labelled = [r for r in train_split.records if r.label]                  # it trains nothing
        train_split = video_data.DatasetSplit(labelled, train_split.classnames, multilabel=True)
    if args.shots:
        train_split = few_shot(train_split, args.shots, args.seed)
    return train_split, val_split


def split_from_flags(args, split):
    """A DatasetSplit of --dataset (video_data.load_split), with the flags that locate its files."""
    kw = {}
    if args.videos_dir:
        kw["videos_dir"] = args.videos_dir
    if args.dataset == "list":
        kw = dict(list_file=args.train_list if split == "train" else args.val_list,
                  classnames_file=args.classnames)
    try:
        return video_data.load_split(args.dataset, args.root, split, fold=args.fold,
                                     prepared=args.prepared, **kw)
    except (FileNotFoundError, ValueError) as e:       # a missing or malformed annotation file
        raise SystemExit(f"error: {args.dataset} {split} split: {e}") from None


def few_shot(split, shots, seed):
    """K videos of every class, drawn with `seed`, in their original order (Fig. 3). Multi-label
    videos count for their first class; a class with fewer than K videos keeps them all."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(split.records), generator=generator).tolist()
    taken, picked = {}, []
    for i in order:
        label = split.records[i].label
        label = label[0] if isinstance(label, list) else label
        if taken.get(label, 0) < shots:
            taken[label] = taken.get(label, 0) + 1
            picked.append(i)
    master = int(os.environ.get("RANK", 0)) == 0               # said once, before training
    for label, name in enumerate(split.classnames):
        if master and taken.get(label, 0) < shots:
            print(f"--shots {shots}: class {name!r} has {taken.get(label, 0)} training videos; "
                  f"it trains on those", file=sys.stderr)
    records = [split.records[i] for i in sorted(picked)]
    return video_data.DatasetSplit(records, split.classnames, split.multilabel)


def augmentation(args, size):
    """--augment: the official augmentation, its crop alone, or none (the whole frame at `size`)."""
    if args.augment == "official":
        return video_data.train_transform(size, randaugment=args.randaugment, on_device=True)
    scales = video_data.MSC_SCALES if args.augment == "crop" else (1,)
    return video_data.train_transform(size, flip=False, color_jitter=False, grayscale=False,
                                      scales=scales, on_device=True)


def warm_cache(dataset, label, master):
    """Decode every video once (--in-memory), in this process, so DataLoader workers inherit the
    frames."""
    progress = evaluate.Progress(len(dataset), label) if master else None
    with torch.random.fork_rng(devices=[]):
        for i in range(len(dataset)):
            dataset[i]
            if progress:
                progress.update(1)


def jpeg_on_device(args, ddp, split):
    """--decode-on-device: whether workers hand the device the JPEG files of frame folders."""
    mode = getattr(args, "decode_on_device", "auto")       # runs saved before the flag: auto
    if mode == "off":
        return False
    reason = ("--randaugment needs decoded pixels in the workers" if args.randaugment else
              "--in-memory keeps decoded frames already" if args.in_memory else
              "the training videos are not all frame folders (video_data.py prepare --form frames)"
              if not all(os.path.isdir(r.path) for r in split.records) else None)
    if mode == "on" and reason:
        raise SystemExit(f"--decode-on-device on: {reason}; use auto or off")
    return reason is None and (mode == "on" or ddp.device.type == "cuda")


# --------------------------------------------------------------------------------------------------
# Model and optimiser [Sec. 3.4, 4.1]


def build_video_model(args, num_classes, classnames=None):
    """The model to fine-tune [Sec. 3.4]: ActionCLIP (or Table 1's VideoClassifier), its frozen
    parts marked requires_grad=False. Its new modules (the visual prompt, the classifier) train at
    --new-lr-mult x the lr of CLIP's weights (build_optimizer)."""
    torch.manual_seed(args.seed)                               # the same new weights on every rank
    if args.finetune_from:
        try:
            model = prompts.load_actionclip(args.finetune_from, num_frames=args.frames)
        except prompts.TooFewFrames as e:
            raise SystemExit(f"error: --frames {args.frames}: --finetune-from "
                             f"{evaluate.frames_beyond_training(args.finetune_from, e)}; pass "
                             f"--frames {e.covered} or fewer") from None
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"error: --finetune-from: {e}") from None
        model = getattr(model, "actionclip", model)    # a unimodal checkpoint: keep its encoder
        args.visual_prompt = model.config["visual_prompt"]             # logged and saved as it is
    else:
        model = prompts.ActionCLIP(load_clip(args), args.visual_prompt, args.frames)
    if args.grad_checkpointing:
        if not isinstance(model.clip.visual, clip_model.VisionTransformer):
            raise SystemExit("--grad-checkpointing checkpoints the ViT's blocks; this CLIP's image "
                             "encoder is a ResNet")
        model.clip.visual.transformer.grad_checkpointing = True
    frozen = {"vision": args.freeze_vision, "text": args.freeze_text or args.unimodal,
              None: args.unimodal}
    for name, param in model.clip.named_parameters():        # --unimodal has no use for text
        param.requires_grad_(not frozen[encoder_of(name)])
    if args.unimodal:
        model = prompts.VideoClassifier(model, num_classes, classnames)
    train_mode(model, args)
    return model


def encoder_of(name):
    """Which of CLIP's encoders a CLIP parameter belongs to: 'vision', 'text', or None (the
    temperature)."""
    if name.startswith("visual."):
        return "vision"
    return None if name == "logit_scale" else "text"


def reinitialise(clip, encoder):
    """Table 2: put one encoder back to CLIP's random initialisation; the other keeps its
    weights."""
    fresh = clip_model.CLIP(**clip_model.clip_config(clip.state_dict())).state_dict()
    state = {name: fresh[name] if encoder_of(name) == encoder else value
             for name, value in clip.state_dict().items()}
    clip.load_state_dict(state)


def load_clip(args):
    """The pre-trained CLIP of --arch (or the tiny one, from scratch), with --init-* random
    encoders."""
    try:
        clip = clip_model.CLIP(**TINY_CLIP) if args.arch == "tiny" else clip_model.load(args.arch)
    except ValueError as e:                                # a truncated or foreign file
        raise SystemExit(f"error: --arch {args.arch}: {e}") from None
    for encoder in ("vision", "text"):
        if getattr(args, f"init_{encoder}") == "random":
            reinitialise(clip, encoder)
    return clip


def train_mode(model, args):
    """Training mode, except a frozen vision encoder, whose BatchNorm statistics (RN50) must not
    move."""
    model.train()
    if args.freeze_vision:
        getattr(model, "actionclip", model).clip.visual.eval()


def build_optimizer(model, args):
    """AdamW [Sec. 4.1] with four groups: CLIP's weights (lr) or new ones (lr x --new-lr-mult), each
    with or without weight decay. Decay applies to weight matrices; biases, LayerNorm gains,
    embedding tables and the temperature are not decayed (the usual choice for transformers: decay
    there pulls normalisation gains and positions toward zero for no regularising benefit).
    official: weight decay 0.2 on every parameter, the temperature included.
    """
    new = {id(p) for p in model.new_parameters()}
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:                          # frozen: no optimiser state at all
            continue
        is_new, decay = id(param) in new, param.ndim >= 2 and "embedding" not in name
        group = groups.setdefault((is_new, decay), {
            "params": [], "name": f"{'new' if is_new else 'clip'}{'' if decay else ' no-decay'}",
            "lr_mult": args.new_lr_mult if is_new else 1.0,
            "weight_decay": args.weight_decay if decay else 0.0})
        group["params"].append(param)
    fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters())  # 1 kernel a step
    return torch.optim.AdamW(list(groups.values()), lr=args.lr, betas=ADAMW_BETAS,
                             eps=args.adam_eps, fused=fused or None)


def lr_at(epoch, args):
    """The learning rate at a fractional epoch: linear warm-up from 0, then cosine to 0
    [Sec. 4.1]."""
    if epoch < args.warmup_epochs:
        return args.lr * epoch / args.warmup_epochs
    progress = min((epoch - args.warmup_epochs) / max(args.epochs - args.warmup_epochs, 1e-9), 1.0)
    return args.lr * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer, lr):
    """The learning rate of each group: new modules at --new-lr-mult (paper: 10) x lr
    [Sec. 3.4]."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]


# --------------------------------------------------------------------------------------------------
# The run: processes, precision, and what one run holds


@dataclass
class Dist:
    """This process's place among the processes of the run."""
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_environment(cls, device=None):
        """DDP from torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE); plain `python` is one
        process. The process group (NCCL on GPUs, gloo on the CPU) is evaluate.setup_distributed's,
        so both scripts start alike."""
        rank, world, device = evaluate.setup_distributed(device)
        return cls(rank, int(os.environ.get("LOCAL_RANK", 0)), world, device)

    @property
    def master(self):
        return self.rank == 0  # logs and writes checkpoints


@dataclass
class Run:
    """Everything one training run holds; the functions above read and update it."""
    args: argparse.Namespace
    ddp: Dist
    model: nn.Module             # ActionCLIP or VideoClassifier: what checkpoints hold
    model_ddp: nn.Module         # what the forward pass calls: model's VideoTextEncoder
                                 # (--unimodal: model), maybe compiled, in DDP with 2+ processes
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: object             # one autocast context, reused everywhere
    dtype: torch.dtype           # of autocast; None: fp32, no autocast
    items: TrainItems
    sampler: DistributedSampler
    val: video_data.VideoDataset
    classnames: list
    templates: list
    tokens: torch.Tensor         # (K, C, L): every template around every class name
    micro_batch: int             # videos per process per forward pass
    steps_per_epoch: int
    step: int = 0                # optimiser steps done
    best: float = -1.0           # best validation score (top-1, or mAP for multi-label data)
    val_loader: DataLoader = None  # built once: its workers persist from one validation to the next
    pace: object = None          # Pace: videos/s and ETA over the run so far
    epoch_end_pending: bool = False  # at the end of an epoch whose validation a signal put off
    stop: "StopRequest" = None   # SIGINT / SIGTERM, asked after every step


def build_run(args, ddp):
    """Data, model, optimiser, precision and the DDP wrapper of one run."""
    train_split, val_split = load_splits(args)
    model = build_video_model(args, len(train_split.classnames), train_split.classnames)
    model = model.to(ddp.device)
    clip = getattr(model, "actionclip", model).clip
    items, sampler, val = build_data(args, ddp, train_split, val_split, clip.input_resolution)
    micro_batch, steps_per_epoch = batch_sizes(args, ddp, len(sampler) * ddp.world)
    templates = prompts.LABEL_ONLY if args.no_text_prompts else prompts.TEMPLATES
    tokens = prompts.tokenize_prompts(train_split.classnames, templates, clip.context_length)
    tokens = clip_model.trim_padding(tokens)      # cut after the longest prompt: the same features,
    tokens = tokens.view(len(templates), len(train_split.classnames), -1)  # less work; (K, C, L)
    dtype = evaluate.autocast_dtype(ddp.device, args.precision)
    autocast = nullcontext() if dtype is None else torch.autocast(ddp.device.type, dtype=dtype)
    model_ddp = model if args.unimodal else VideoTextEncoder(model)
    if args.compile:
        model_ddp = torch.compile(model_ddp)
    if ddp.world > 1:
        device_ids = [ddp.local_rank] if ddp.device.type == "cuda" else None
        model_ddp = DDP(model_ddp, device_ids=device_ids)
    val_loader = evaluate.eval_loader(val, micro_batch, args.workers, distributed=ddp.world > 1,
                                      persistent=True)
    scaler = torch.amp.GradScaler(ddp.device.type, enabled=dtype == torch.float16)
    return Run(args, ddp, model, model_ddp, build_optimizer(model, args), scaler, autocast, dtype,
               items, sampler, val, train_split.classnames, templates, tokens.to(ddp.device),
               micro_batch, steps_per_epoch, val_loader=val_loader)


def batch_sizes(args, ddp, num_videos):
    """Videos per process per micro-batch, and optimiser steps per epoch, for the global
    --batch-size."""
    per_pass = ddp.world * args.grad_accum
    if args.batch_size % per_pass:
        raise SystemExit(f"--batch-size {args.batch_size} (global) must be divisible by processes "
                         f"x --grad-accum = {ddp.world} x {args.grad_accum}")
    steps = num_videos // args.batch_size
    if steps == 0:
        raise SystemExit(f"the training split has {num_videos} videos, fewer than one global batch "
                         f"(--batch-size {args.batch_size}): lower --batch-size")
    return args.batch_size // per_pass, steps


def start_run(args, ddp, stop):
    """build_run, and restore last.pt with --resume. A signal meanwhile ends the command at once:
    no step has been taken, so there is nothing to save."""
    try:
        with stop.interruptible():
            run = build_run(args, ddp)
            if args.resume:
                restore_checkpoint(run)
            describe_run(run)
    except Interrupted as e:
        kept = (f"{checkpoint_path(args)} is unchanged: {resume_command(args.out)} continues "
                f"from it" if args.resume else "run the same command again to start over")
        if ddp.master:
            print(f"{e}: stopped before the first step, nothing written; {kept}", flush=True)
        raise SystemExit(128 + e.signum) from None
    run.stop = stop
    return run


def describe_run(run):
    """The opening lines of the log: what is trained on what, and how."""
    args, ddp = run.args, run.ddp
    trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in run.model.parameters() if not p.requires_grad)
    precision = str(run.dtype or torch.float32).replace("torch.", "")
    lines = [f"{args.dataset}: {len(run.items)} training videos, {len(run.val)} {args.val_split} "
             f"videos, {len(run.classnames)} classes",
             f"model: {args.arch if not args.finetune_from else args.finetune_from} "
             f"{args.visual_prompt} {args.frames} frames{' unimodal' if args.unimodal else ''}; "
             f"{trainable / 1e6:.2f}M trainable, {frozen / 1e6:.2f}M frozen parameters",
             f"{ddp.world} process(es) on {ddp.device.type}, {precision}; global batch "
             f"{args.batch_size} = {ddp.world} x {args.grad_accum} x {run.micro_batch}; "
             f"{run.steps_per_epoch} steps per epoch, {args.epochs} epochs; output {args.out}"]
    if args.resume:
        lines.append(f"resumed from {checkpoint_path(args)} at step {run.step}")
    log_line(args.out, dict(config=vars(args)), ddp.master, "\n".join(lines))


def log_line(out, record, master, text=None):
    """Print `text` (if any) and append `record` to out/metrics.jsonl, on the master process
    only."""
    if not master:
        return
    if text:
        print(text, flush=True)
    if out:
        with open(os.path.join(out, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------------------------------
# Checkpoints and --resume


def checkpoint_path(args, name="last.pt"):
    return os.path.join(args.out, name)


# What a run writes besides its checkpoints: a folder that holds nothing else saved no checkpoint
# (killed in its first epoch, --stop-after-steps 0, no readable video), and is started again.
RUN_LEFTOVERS = {"metrics.jsonl", "metrics.jsonl.tmp", "last.pt.tmp", "best.pt.tmp"}


def run_files(out):
    """The files of the run folder `out`, without the lock of the run writing there."""
    return sorted(set(os.listdir(out)) - {video_data.LOCK_NAME})


def saved_nothing(out):
    """True if `out` is a folder holding only RUN_LEFTOVERS (or nothing)."""
    return os.path.isdir(out) and set(run_files(out)) <= RUN_LEFTOVERS


def prepare_out(args, ddp):
    """Never overwrite a run by accident: an existing, non-empty --out needs --resume, unless the
    run there saved nothing; then its leftovers are removed and the run starts afresh."""
    leftovers = run_files(args.out) if saved_nothing(args.out) else []
    if not args.resume and os.path.isdir(args.out) and run_files(args.out) and not leftovers:
        found = ", ".join(run_files(args.out)[:4])
        raise SystemExit(f"{args.out} already holds a run ({found}): pass --resume to continue it, "
                         f"or choose another --out")
    if ddp.world > 1:
        dist.barrier()                                # every rank has looked before it is created
    if ddp.master:
        if leftovers and not args.resume:
            for name in leftovers:
                os.remove(os.path.join(args.out, name))
            print(f"{args.out} holds no checkpoint, only {', '.join(leftovers)} of a run that "
                  f"stopped before its first one: starting the run afresh there", flush=True)
        os.makedirs(args.out, exist_ok=True)


def save_checkpoint(run, names):
    """Write out/<name> for each name, atomically (a temporary file, then a rename): a crash
    mid-write leaves the previous checkpoint intact. The model part is what prompts.load_actionclip
    reads."""
    if not run.ddp.master:
        return
    payload = prompts.checkpoint_payload(run.model)
    payload.update(optimizer=run.optimizer.state_dict(), scaler=run.scaler.state_dict(),
                   step=run.step, epoch=run.step / run.steps_per_epoch,
                   steps_per_epoch=run.steps_per_epoch, best=run.best,
                   epoch_end_pending=run.epoch_end_pending, args=vars(run.args))
    for name in names:
        path = checkpoint_path(run.args, name)
        try:
            write_checkpoint(payload, path)
        except OSError as e:                           # a full disk, a quota, an I/O error
            raise SystemExit(failed_save(run, path, e)) from None


class WriteErrors:
    """A file that keeps the OSError its write raised: torch.save turns it into a RuntimeError
    ("unexpected pos ...") that no longer says why."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data):
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self):
        self.file.flush()


def write_checkpoint(payload, path):
    """torch.save to path.tmp, on disk, then renamed to path. A failed write raises its OSError,
    path.tmp removed and path untouched."""
    try:
        with open(path + ".tmp", "wb") as f:
            file = WriteErrors(f)
            try:
                torch.save(payload, file)
            except RuntimeError:
                if file.error is None:
                    raise
                raise file.error from None
            f.flush()
            os.fsync(f.fileno())                      # on disk before it replaces the old one
    except BaseException:
        if os.path.exists(path + ".tmp"):
            os.remove(path + ".tmp")
        raise
    os.replace(path + ".tmp", path)


def failed_save(run, path, error):
    """The line a failed checkpoint write ends the run with: why, what is intact, how to go on."""
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 2 ** 20
    try:
        kept = prompts.read_checkpoint(path, mmap=True)
        intact = f"{path} is intact (step {kept['step']}, epoch {kept['epoch']:g})"
    except (FileNotFoundError, ValueError, KeyError):
        intact = f"no {os.path.basename(path)} was written before"
    why = error.strerror or error
    return (f"error: step {run.step}: writing {path} failed ({why}; {free:.0f} MiB "
            f"free there); its temporary file is removed and {intact}. Free some space, then "
            f"continue with: {resume_command(run.args.out)}")


def restore_checkpoint(run):
    """--resume: model, optimiser, loss scaler, step and best score from out/last.pt (every process
    reads it, so a multi-node run needs --out on a shared filesystem)."""
    checkpoint = torch.load(checkpoint_path(run.args), map_location="cpu", weights_only=True)
    if checkpoint["steps_per_epoch"] != run.steps_per_epoch:
        raise SystemExit(f"--resume: the checkpoint has {checkpoint['steps_per_epoch']} steps per "
                         f"epoch, this run {run.steps_per_epoch}: the training data or "
                         f"--batch-size changed")
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    if checkpoint["scaler"]:                           # {} from a run without loss scaling
        run.scaler.load_state_dict(checkpoint["scaler"])
    run.step, run.best = checkpoint["step"], checkpoint["best"]
    run.epoch_end_pending = checkpoint.get("epoch_end_pending", False)
    if run.ddp.master:
        forget_metrics_after(run.args.out, run.step)


def forget_metrics_after(out, step):
    """--resume: drop the metrics.jsonl records of steps after `step` (those steps run again), and a
    line a crash cut short, so that every step is logged once."""
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.isfile(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)


# What --resume needs of last.pt; prompts.load_actionclip needs only model and model_config.
RESUME_KEYS = {"model", "model_config", "optimizer", "scaler", "step", "steps_per_epoch", "best",
               "args"}


def read_resume_checkpoint(out):
    """out/last.pt's tensors mapped, not read (cheap); None if there is none. A damaged one ends the
    command with one line, naming an intact best.pt beside it if there is one."""
    path = os.path.join(out, "last.pt")
    if not os.path.isfile(path):
        return None
    try:
        checkpoint = prompts.read_checkpoint(path, mmap=True)
        if not RESUME_KEYS <= set(checkpoint):
            raise ValueError(f"{path} is not a checkpoint of train.py: it has no "
                             f"{', '.join(sorted(RESUME_KEYS - set(checkpoint)))}")
    except ValueError as e:
        raise SystemExit(f"--resume: {e}{intact_best(out)}") from None
    return checkpoint


def intact_best(out):
    """A sentence on out/best.pt if it is readable (a run to continue from), else ''."""
    best, last = os.path.join(out, "best.pt"), os.path.join(out, "last.pt")
    try:
        checkpoint = prompts.read_checkpoint(best, mmap=True)
        step, epoch = checkpoint["step"], checkpoint["epoch"]
    except (FileNotFoundError, ValueError, KeyError):
        return ""
    return (f". {best} is intact (step {step}, epoch {epoch:g}); to continue from it: "
            f"cp {shlex.quote(best)} {shlex.quote(last)}, then --resume again")


def read_metrics(out):
    """The records of out/metrics.jsonl ([] if there is none), without a line a crash cut short."""
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def logged_config(out):
    """The configuration a run recorded in out/metrics.jsonl when it started, or None."""
    return next((r["config"] for r in read_metrics(out) if "config" in r), None)


def run_is_complete(checkpoint, args):
    """Every step of the schedule done, and the last epoch's validation too."""
    done = checkpoint["step"] >= args.epochs * checkpoint["steps_per_epoch"]
    return done and not checkpoint.get("epoch_end_pending", False)


def complete_run_report(args, checkpoint):
    """What --resume of a finished run says: nothing is left to do; the run's final figures."""
    val = [r for r in read_metrics(args.out) if "val" in r]
    final = (f"Its last validation ({args.val_split}, epoch {val[-1]['epoch']}): "
             f"{evaluate.headline(val[-1]['val'])}" if val else
             "It was never validated (--eval-every 0)")
    best = f"; best.pt scored {checkpoint['best']:.2f}" if checkpoint["best"] >= 0 else ""
    return (f"--resume: {args.out} is complete, nothing is left to do: all {args.epochs} epochs "
            f"({checkpoint['step']} steps) are trained. {final}{best}")


# --------------------------------------------------------------------------------------------------
# Stopping on a signal: Ctrl-C (SIGINT) or a scheduler's SIGTERM (preemption) loses no finished step


class Interrupted(BaseException):
    """A signal that came while no step was in flight (setup, validation): the run stops at once.
    A BaseException, as KeyboardInterrupt: no `except Exception` takes it for a bad video."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    """SIGINT and SIGTERM while training: the step in flight finishes, every rank stops after the
    same step (requested() is an all_reduce, called after each one), last.pt is written, and the
    process exits with 128 + the signal's number (130, 143: the statuses schedulers requeue on).
    Inside interruptible() (setup, validation) there is no step to finish: a signal raises
    Interrupted at once.

    A repeated signal changes nothing: under torchrun one Ctrl-C can reach a process twice (from
    the terminal and from torchrun). DataLoader workers outlive a SIGINT or SIGTERM sent to every
    process of the job (video_data.ignore_stop_signals), so the step in flight gets its batches.
    """

    def __init__(self, ddp):
        self.ddp, self.pid, self.previous = ddp, os.getpid(), {}
        self.signum, self.raising = None, False

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def handle(self, signum, frame):
        if os.getpid() != self.pid or self.signum:          # a loader worker, or a repeat
            return
        self.signum = signum
        if self.raising:
            raise Interrupted(signum)
        if self.ddp.master:                                  # os.write: safe inside a handler
            note = f"\n{signal.Signals(signum).name}: stopping after the step in flight\n"
            os.write(2, note.encode())

    @contextmanager
    def interruptible(self):
        """A signal inside raises Interrupted at once (one that came just before, on entry)."""
        if self.signum:
            raise Interrupted(self.signum)
        self.raising = True
        try:
            yield
        finally:
            self.raising = False

    def requested(self):
        """The signal any rank has received, or None: the same on every rank (call it on all)."""
        flag = torch.tensor(self.signum or 0, device=self.ddp.device)
        if self.ddp.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag) or None


def resume_command(out):
    """The command that continues the run in `out`, for the line a stopped run ends with."""
    script = sys.argv[0] if sys.argv[0].endswith("train.py") else "train.py"
    tail = f"{script} --resume --out {shlex.quote(out)}"
    world, local = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if world == 1:
        return f"python {tail}"
    if world == local:
        return f"torchrun --standalone --nproc_per_node={world} {tail}"
    return f"torchrun with this run's options on each of its {world // local} nodes, {tail}"


def stop_on_signal(run, signum, together):
    """Write last.pt (the step in flight is done), say how to continue, exit with 128 + signum.
    together: every rank stopped after the same step (not so for a signal in validation)."""
    run.epoch_end_pending = run.step % run.steps_per_epoch == 0  # its validation: on --resume
    save_checkpoint(run, ["last.pt"])
    name, total = signal.Signals(signum).name, run.args.epochs * run.steps_per_epoch
    log_line(run.args.out, dict(step=run.step, stopped=name), run.ddp.master,
             f"{name}: stopped after step {run.step}/{total} and wrote "
             f"{checkpoint_path(run.args)}; continue with: {resume_command(run.args.out)}")
    if together and run.ddp.world > 1:
        dist.barrier()                                       # rank 0 has written before any exits
        dist.destroy_process_group()
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------------------------------
# Configuration: every flag acts, and its help says what the paper used


# argparse types shared with evaluate.py and zeroshot.py: a bad value ends the command at once
positive_int, count_int = evaluate.positive_int, evaluate.count_int
positive_float, nonnegative_float = evaluate.positive_float, evaluate.nonnegative_float

# Flags that may change when a run is resumed; everything else comes from the checkpoint.
RESUME_OVERRIDES = ("resume", "out", "workers", "log_every", "save_every", "stop_after_steps",
                    "compile", "decode_on_device", "device")


def add_model_args(p):
    m = p.add_argument_group("model (Tables 1-6)")
    m.add_argument("--arch", default="ViT-B/16",
                   help="CLIP to start from: an official name (RN50, ViT-B/32, ViT-B/16, ... "
                   "Table 6; paper's main model: ViT-B/16), a CLIP checkpoint file, or 'tiny' (a "
                   "small CLIP built from scratch, for --demo and the tests)")
    m.add_argument("--frames", type=positive_int, default=8,
                   help="frames per video, one from each of T equal segments [Sec. 4.1]; paper: "
                   "8, 16 or 32 (Table 6)")
    m.add_argument("--visual-prompt", default="transf", choices=list(prompts.VISUAL_PROMPTS),
                   help="how frame features become a video feature (Table 4); paper's choice: "
                   "transf")
    m.add_argument("--unimodal", action="store_true",
                   help="Table 1's baseline: the same video encoder, a linear classifier and "
                   "cross-entropy, no text; paper: multimodal (off)")
    m.add_argument("--init-vision", default="clip", choices=["clip", "random"],
                   help="vision encoder weights: CLIP's, or CLIP's random initialisation (Table "
                   "2); paper: clip")
    m.add_argument("--init-text", default="clip", choices=["clip", "random"],
                   help="text encoder weights: CLIP's, or CLIP's random initialisation (Table 2); "
                   "paper: clip")
    m.add_argument("--no-text-prompts", action="store_true",
                   help="texts are the bare class names, in training and validation (Table 3); "
                   "paper: the 16 templates of prompts.TEMPLATES (on)")
    m.add_argument("--freeze-vision", action="store_true",
                   help="keep the vision encoder fixed (Table 5); paper: off")
    m.add_argument("--freeze-text", action="store_true",
                   help="keep the text encoder fixed (Table 5); paper: off")
    m.add_argument("--finetune-from", metavar="PATH",
                   help="start from an ActionCLIP checkpoint (ours or an official release), as "
                   "the paper's UCF101/HMDB51 runs start from Kinetics-400 [Sec. 4.3]; its CLIP "
                   "and visual prompt replace --arch and --visual-prompt")


def add_training_data_args(p):
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="kinetics400", choices=list(video_data.DATASETS),
                   help="what --root holds")
    d.add_argument("--root", help="dataset folder (see video_data.load_split for each layout)")
    d.add_argument("--fold", type=int, default=1, choices=(1, 2, 3),
                   help="UCF101/HMDB51 split 1-3; paper: 1")
    d.add_argument("--videos-dir",
                   help="Kinetics/Charades: where the videos are, if not under --root")
    d.add_argument("--prepared",
                   help="folder written by `python video_data.py prepare` for this dataset")
    d.add_argument("--list-file", dest="train_list", default="train.txt", metavar="FILE",
                   help="--dataset list: the training list ('path label' lines) in --root")
    d.add_argument("--val-list-file", dest="val_list", default="val.txt", metavar="FILE",
                   help="--dataset list: the validation list")
    d.add_argument("--classnames-file", dest="classnames", default="classnames.txt", metavar="FILE",
                   help="--dataset list: class names, one per line or an 'id,name' CSV, in --root")
    for old in ("--train-list", "--val-list", "--classnames"):   # earlier spellings, still accepted
        d.add_argument(old, dest=old[2:].replace("-", "_"), default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    d.add_argument("--val-split", default="val",
                   help="split validated every epoch and used to pick best.pt "
                   "(UCF101/HMDB51/Charades: val is their test list)")
    d.add_argument("--shots", type=positive_int, metavar="K", help="few-shot (Fig. 3): train on K "
                   "videos per class, drawn with --seed; paper: K = 2, 4, 8, 16")
    d.add_argument("--sample-by", choices=video_data.SAMPLE_BY, default="frame",
                   help="frame: T segments of equal frame count (default; the paper's TSN "
                   "sampling); time: of equal duration, by the file's timestamps (variable frame "
                   "rate video, e.g. from phones), in training and validation")
    d.add_argument("--augment", default="official", choices=["official", "crop", "none"],
                   help="official: TSN multi-scale crop, flip, colour jitter, grayscale [Sec. "
                   "4.1]; crop: the crop only (for data whose labels a flip or a colour change "
                   "would alter); none: the whole frame, resized")
    d.add_argument("--randaugment", action=argparse.BooleanOptionalAction, default=None,
                   help="RandAugment(N=2, M=9) with --augment official, one draw per video "
                   "(default: on for Kinetics, as the official K-400 config; off for the others, "
                   "as their official configs)")
    d.add_argument("--in-memory", action="store_true",
                   help="decode every video once, before training, and keep all its frames in "
                   "memory (small datasets; frames and crops are still drawn afresh each epoch)")
    d.add_argument("--workers", type=count_int, default=8, help="data loading processes per GPU "
                   "for training, and as many for validation; both sets live for the whole run")
    d.add_argument("--decode-on-device", default="auto", choices=["auto", "on", "off"],
                   help="prepared JPEG frame folders: workers only read the files, the model's "
                   "device decodes them in batches (torchvision.io.decode_jpeg: nvJPEG on CUDA), "
                   "then crops and augments them. auto: on with CUDA when every training video is "
                   "a frame folder and --randaugment and --in-memory are off (see BENCHMARKS.md)")


def add_optimisation_args(p):
    o = p.add_argument_group("optimisation [Sec. 4.1]")
    o.add_argument("--epochs", type=positive_int, default=50, help="paper: 50")
    o.add_argument("--batch-size", type=positive_int, default=128,
                   help="global batch: all GPUs and --grad-accum micro-batches together; official "
                   "configs: 128 (Kinetics-400), 32 (UCF101/HMDB51)")
    o.add_argument("--lr", type=nonnegative_float, default=5e-6,
                   help="AdamW learning rate of CLIP's pre-trained weights; paper: 5e-6")
    o.add_argument("--new-lr-mult", type=nonnegative_float, default=10.0,
                   help="learning rate multiplier of new modules (visual prompt, --unimodal's "
                   "classifier); paper: 10")
    o.add_argument("--adam-eps", type=positive_float, default=1e-8,
                   help="AdamW's epsilon; paper: 1e-8 (betas: 0.9, 0.98)")
    o.add_argument("--weight-decay", type=nonnegative_float, default=0.2,
                   help="AdamW weight decay of weight matrices (not of biases, norms, embeddings, "
                   "the temperature); paper: 0.2 (official: on every parameter)")
    o.add_argument("--warmup-epochs", type=nonnegative_float, default=5,
                   help="linear warm-up, then cosine to zero; shorter than --epochs (by default, "
                   "runs of 5 epochs or fewer warm up for 10%% of them); paper: 5 of 50 (10%%)")
    o.add_argument("--grad-accum", type=positive_int, default=1,
                   help="micro-batches per step; each micro-batch is its own contrastive batch "
                   "(batch-size / grad-accum videos); paper: 1")
    o.add_argument("--clip-grad", type=nonnegative_float, default=0.0,
                   help="clip the gradient norm to this (0: off); paper: off (the official "
                   "config's clip_gradient: 20 is never read)")
    o.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                   help="autocast dtype; auto: bf16 on GPUs that support it, else fp16 with loss "
                   "scaling; fp32 on the CPU. Parameters stay fp32 (official: fp16 weights, cast "
                   "back and forth around each optimiser step)")
    o.add_argument("--grad-checkpointing", action="store_true",
                   help="recompute the ViT blocks in the backward pass: less memory, ~30%% slower")
    o.add_argument("--compile", action="store_true", help="torch.compile the model")


def add_run_args(p):
    r = p.add_argument_group("run")
    r.add_argument("--out",
                   help="output folder (default: runs/<dataset>_<arch>_f<frames>); an existing "
                   "one needs --resume")
    r.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last.pt, exactly, with its saved "
                   "configuration (give only --out, or repeat the original command)")
    r.add_argument("--seed", type=int, default=0,
                   help="seeds the model's new weights, data order, augmentation, templates and "
                   "--shots")
    r.add_argument("--eval-every", type=count_int, default=1,
                   help="validate every N epochs and after the last (0: never); official: 1")
    r.add_argument("--log-every", type=positive_int, default=10,
                   help="print a log line every N steps")
    r.add_argument("--save-every", type=count_int, default=0, metavar="N",
                   help="also write last.pt every N optimiser steps, for long epochs (0: at the "
                   "end of each epoch only). SIGINT and SIGTERM always write it after the step in "
                   "flight")
    r.add_argument("--stop-after-steps", type=count_int, metavar="N",
                   help="stop cleanly after N steps with a checkpoint, as if interrupted (the "
                   "schedule still spans --epochs); continue with --resume")
    r.add_argument("--device", choices=["cuda", "cpu"],
                   help="where to train (default: cuda when a GPU is visible, else the CPU)")
    r.add_argument("--demo", action="store_true", help="generate synthetic videos, train a "
                   "tiny CLIP from scratch on the CPU with transf and meanP at once, print seen, "
                   "direction and zero-shot top-1, draw runs/demo/demo.png (~4 min, 2 idle "
                   "cores); an earlier demo in --out is deleted, after a line that says so")


def get_parser():
    parser = argparse.ArgumentParser(
        description="Fine-tune CLIP into ActionCLIP (Wang, Xing, Liu, 2021).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for add in (add_model_args, add_training_data_args, add_optimisation_args, add_run_args):
        add(parser)
    return evaluate.one_line_errors(parser)


def parse_args(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.resume:
        if not args.out:
            parser.error("--resume needs --out: the folder of the run to continue")
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            parser.error(f"--out {args.out} is a file; --resume needs the folder of the run")
        args = resumed_args(args, evaluate.given_flags(get_parser(), argv))
        evaluate.check_device(parser, args)                    # the check every script makes
        return args
    if not args.demo and not args.root:
        parser.error("--root is required (or --demo, or --resume with --out)")
    if args.finetune_from and "random" in (args.init_text, args.init_vision):
        parser.error("--finetune-from starts from trained weights; it cannot be combined with "
                     "--init-* random")
    if args.finetune_from and "visual_prompt" in evaluate.given_flags(get_parser(), argv):
        parser.error("--finetune-from takes the visual prompt from its checkpoint: drop "
                     "--visual-prompt")
    if args.randaugment is None:
        args.randaugment = args.dataset.startswith("kinetics")
    elif args.randaugment and args.augment != "official":
        parser.error(f"--randaugment is part of --augment official; --augment {args.augment} "
                     f"leaves it out")
    if args.out is None and not args.demo:
        arch = args.arch
        if os.path.isfile(arch):
            arch = os.path.splitext(os.path.basename(arch))[0]
        args.out = os.path.join("runs", f"{args.dataset}_{arch.replace('/', '-')}_f{args.frames}")
    if not args.demo:
        check_new_run(parser, args, evaluate.given_flags(get_parser(), argv))
    evaluate.check_device(parser, args)
    return args


def resumed_args(args, given):
    """--resume: the configuration saved in out/last.pt. Only RESUME_OVERRIDES may be given anew;
    repeating the original command with --resume added is fine, changing what shapes the run is not.
    A run that stopped before its first checkpoint starts again from step 0 with the configuration
    its metrics.jsonl recorded; a finished run says so and exits with status 0 (nothing to do)."""
    checkpoint = read_resume_checkpoint(args.out)
    saved = checkpoint["args"] if checkpoint else None
    if checkpoint is None and saved_nothing(args.out):
        saved = logged_config(args.out)                        # None: not even that, no run at all
    if saved is None:
        raise SystemExit(f"--resume: there is no {checkpoint_path(args)} to continue from "
                         f"(--out is the folder of the run){intact_best(args.out)}")
    changed = [f"--{k.replace('_', '-')} (the run has {saved.get(k)!r})" for k, v in given.items()
               if k not in RESUME_OVERRIDES and saved.get(k) != v]
    if changed:
        raise SystemExit(f"--resume continues {args.out} with its saved configuration; these "
                         f"flags differ from it: {', '.join(changed)}. Drop them, or start a new "
                         f"run in another --out")
    defaults = vars(get_parser().parse_args([]))               # flags newer than the checkpoint
    resumed = argparse.Namespace(**{**defaults, **saved, "resume": True, "out": args.out,
                                    "stop_after_steps": args.stop_after_steps,
                                    **{k: v for k, v in given.items() if k in RESUME_OVERRIDES}})
    resumed.resume = checkpoint is not None                    # none yet: start again, at step 0
    if "device" not in given:                                  # where it goes on: this machine's
        resumed.device = defaults["device"]
    if checkpoint and run_is_complete(checkpoint, resumed):
        if int(os.environ.get("RANK", 0)) == 0:
            print(complete_run_report(resumed, checkpoint))
        raise SystemExit(0)
    return resumed


def check_new_run(parser, args, given):
    """Flags that contradict each other, found before anything is read (files: check_paths).
    A warm-up as long as the run would leave the learning rate rising to the last step: asked
    for, it is an error; the default (5 epochs) shrinks to the paper's ratio, 10% of the run,
    and says so."""
    if args.warmup_epochs and args.warmup_epochs >= args.epochs:
        if "warmup_epochs" in given:
            parser.error(f"--warmup-epochs {args.warmup_epochs:g} is not shorter than --epochs "
                         f"{args.epochs}: the learning rate would rise until the last step and "
                         f"never decay. Pass a shorter warm-up, e.g. --warmup-epochs "
                         f"{args.epochs / 10:g} (the paper's 10%), or 0")
        args.warmup_epochs = args.epochs / 10
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"--warmup-epochs: the default, 5, is not shorter than --epochs {args.epochs}; "
                  f"warming up for {args.warmup_epochs:g} epochs instead (10%, as the paper's 5 "
                  f"of 50)")
    processes = int(os.environ.get("WORLD_SIZE", 1))
    if args.batch_size % (processes * args.grad_accum):
        parser.error(f"--batch-size {args.batch_size} (global) must be divisible by processes x "
                     f"--grad-accum = {processes} x {args.grad_accum}")


def check_paths(args):
    """The files and folders the flags name, checked before any data is read or model built."""
    for flag in ("root", "videos_dir", "prepared"):
        folder = getattr(args, flag)
        if folder and not os.path.isdir(folder):
            raise SystemExit(f"error: --{flag.replace('_', '-')} {folder}: no such folder")
    if args.finetune_from:
        try:
            prompts.read_actionclip_checkpoint(args.finetune_from, mmap=True)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"error: --finetune-from: {e}") from None
    elif args.arch != "tiny" and not os.path.isfile(args.arch) and \
            args.arch not in clip_model.available_models():
        raise SystemExit(f"error: --arch {args.arch}: neither an official CLIP name "
                         f"({', '.join(clip_model.available_models())}), 'tiny', nor a CLIP file")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise SystemExit(f"error: --out {args.out} is a file; --out is the folder the run writes: "
                         f"choose another")


# --------------------------------------------------------------------------------------------------
# The demo: synthetic action videos, a tiny CLIP from scratch, the CPU, minutes


# Zero-shot classes: for six colour-shape pairs, both directions of one motion never appear in
# training (no red circle moves left or right, though red shapes and circles do). Naming colour and
# shape leaves two candidates among the unseen classes; only the order of the frames tells them
# apart.
DEMO_DIRECTIONS, DEMO_SIZES = ("moving left", "moving right"), ("growing", "shrinking")
DEMO_HELD_OUT = [("red", "circle", DEMO_DIRECTIONS), ("green", "square", DEMO_SIZES),
                 ("blue", "triangle", DEMO_DIRECTIONS), ("yellow", "circle", DEMO_SIZES),
                 ("red", "square", DEMO_SIZES), ("green", "triangle", DEMO_DIRECTIONS)]
DEMO_VIDEOS = {"train": 48, "val": 6, "unseen": 10}  # videos per class of each split
DEMO_FRAMES = 3  # per video, of its 16
DEMO_EPOCHS, DEMO_WARMUP_EPOCHS = 48, 2.5
DEMO_EVAL_EVERY = 3  # epochs: the held-out top-1 of curves.png
DEMO_PROMPTS = ("transf", "meanP")
DEMO_MARKER = "DEMO"  # the demo only ever deletes inside a folder that holds this file
DEMO_DELETE_DELAY = 5  # seconds between saying an earlier demo will be deleted and deleting it
# demo.png: the first video of each of these classes: held-out videos of seen classes, unseen ones
DEMO_PICTURED = {
    "val": ["yellow square moving left", "yellow square moving right", "blue circle growing"],
    "unseen": ["red circle moving left", "red circle moving right", "green square shrinking"]}


def demo_classes():
    """(seen, unseen) (colour, shape, motion) classes of the demo."""
    unseen = [(colour, shape, motion) for colour, shape, motions in DEMO_HELD_OUT
              for motion in motions]
    seen = [(colour, shape, motion) for colour in video_data.COLOURS for shape in video_data.SHAPES
            for motion in video_data.MOTIONS if (colour, shape, motion) not in unseen]
    return seen, unseen


def earlier_demo_note(out, names):
    """The line said before an earlier demo's folders `names` in `out` are deleted: what goes (its
    checkpoints by name), and how to keep it."""
    checkpoints = sorted(os.path.join(name, f) for name in names if name in DEMO_PROMPTS
                         for f in os.listdir(os.path.join(out, name)) if f.endswith(".pt"))
    kept = f" (checkpoints {', '.join(checkpoints)})" if checkpoints else ""
    return (f"{out} holds an earlier demo: deleting its {', '.join(f'{n}/' for n in names)}"
            f"{kept} and overwriting its pictures and scores (to keep a demo, move its folder "
            f"away or give --out another one)")


def warn_before_deleting(out, names):
    """Say what of an earlier demo is about to go; on a terminal, wait DEMO_DELETE_DELAY seconds
    first, so that Ctrl-C can still keep it."""
    print(earlier_demo_note(out, names), flush=True)
    if not sys.stdout.isatty():
        return
    try:
        print(f"deleting in {DEMO_DELETE_DELAY} s: Ctrl-C keeps it", flush=True)
        time.sleep(DEMO_DELETE_DELAY)
    except KeyboardInterrupt:
        print(f"stopped: nothing deleted, {out} is as it was", file=sys.stderr)
        raise SystemExit(130) from None                              # 128 + SIGINT, as training


def claim_demo_folder(out):
    """The demo re-creates its own folder (runs/demo) on every run, saying so before it deletes an
    earlier demo there, and refuses any other non-empty one."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise SystemExit(f"--out {out} is a file, not a folder: choose another --out")
    if os.path.isdir(out) and set(os.listdir(out)) - {video_data.LOCK_NAME} and \
            not os.path.isfile(os.path.join(out, DEMO_MARKER)):
        raise SystemExit(f"{out} is not empty and was not written by --demo: choose another --out")
    earlier = [name for name in ("data", *DEMO_PROMPTS) if os.path.isdir(os.path.join(out, name))]
    if earlier:
        warn_before_deleting(out, earlier)
    for name in earlier:
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    try:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, DEMO_MARKER), "w") as f:
            f.write("written by `python train.py --demo`, which deletes and rewrites this folder "
                    "on each run\n")
    except OSError as e:
        raise SystemExit(f"--out {out}: cannot write there ({e.strerror}): choose another --out")


def demo_data(root):
    """Write the synthetic videos (H.264 .mp4, 16 frames of 32 x 32): seen classes' train and val,
    unseen."""
    seen, unseen = demo_classes()
    for split, classes in (("train", seen), ("val", seen), ("unseen", unseen)):
        video_data.make_synthetic_dataset(root, classes, DEMO_VIDEOS[split], split=split)
    print(f"demo data in {root}: {len(seen)} seen classes x {DEMO_VIDEOS['train']} training and "
          f"{DEMO_VIDEOS['val']} held-out videos, {len(unseen)} unseen classes x "
          f"{DEMO_VIDEOS['unseen']} videos")


def demo_flags(root, out, visual_prompt, seed):
    """The command line of one demo run. The CLIP is tiny and trained from scratch, so its lr is
    100x the paper's fine-tuning lr; new modules keep the paper's 10x (at 30x or 1x, held-out top-1
    after 60 epochs was lower on seeds 3 and 5). 3 frames, 48 epochs: each step a quarter cheaper
    than with 4 frames, so a third more steps in the same time; with 8 frames, the tiny temporal
    transformer needed several times more steps to tell left from right. The texts are the bare
    class names (--no-text-prompts, Table 3's ablation): a text encoder trained from scratch in
    minutes did not also learn to see past 16 templates. Whole frames, no crops (--augment none),
    and 48 videos a class: with crops, seed 0 never told left from right; without them and with 24
    videos, it learned the training videos' directions but not held-out ones. Weight decay 0.5,
    against memorising the training videos (seed 3's held-out direction top-1: 69.4 at 0.05, 79.6
    at 0.2, the official value, 92.6 at 0.5). The README's demo section has the trials. One log
    line per epoch."""
    batch_size = 48
    steps_per_epoch = len(demo_classes()[0]) * DEMO_VIDEOS["train"] // batch_size
    return ["--arch", "tiny", "--device", "cpu", "--dataset", "synthetic", "--root", root,
            "--frames", str(DEMO_FRAMES), "--no-text-prompts",
            "--visual-prompt", visual_prompt, "--epochs", str(DEMO_EPOCHS),
            "--batch-size", str(batch_size), "--lr", "5e-4", "--new-lr-mult", "10",
            "--warmup-epochs", str(DEMO_WARMUP_EPOCHS), "--weight-decay", "0.5",
            "--augment", "none", "--in-memory", "--workers", "0",
            "--eval-every", str(DEMO_EVAL_EVERY),
            "--log-every", str(max(steps_per_epoch, 1)), "--seed", str(seed), "--out", out]


def top1(predictions, keep=None):
    """Top-1 (%) of the videos where `keep` (bool per video) is True (all by default)."""
    keep = torch.ones_like(predictions.ok) if keep is None else keep
    scores, targets = predictions.scores[keep], predictions.targets[keep]
    return evaluate.topk_accuracy(scores, targets, (1,))["top1"]


def left_or_right(predictions, classnames, keep):
    """% of the videos where `keep` (moving left or right) that score their class above the same
    colour and shape moving the other way: the direction alone, two candidates, chance 50. A tie
    is a miss: both scores can be 0.0, when a third class takes all the probability."""
    index = {name: c for c, name in enumerate(classnames)}
    mirror = {"left": "right", "right": "left"}
    wins = []
    for scores, target in zip(predictions.scores[keep], predictions.targets[keep].tolist()):
        rest, direction = classnames[target].rsplit(" ", 1)          # "red circle moving", "left"
        wins.append(bool(scores[target] > scores[index[f"{rest} {mirror[direction]}"]]))
    return 100 * sum(wins) / len(wins)


def demo_scores(run, root):
    """Seen-class top-1 (held-out videos), the same on the direction classes and on their direction
    alone (left_or_right), zero-shot top-1 on unseen classes; and the predictions ({"val",
    "unseen"}: evaluate.Predictions), for demo.png."""
    seen = predict(run, run.val, run.classnames)
    direction = torch.tensor([run.classnames[int(t)].endswith(DEMO_DIRECTIONS)
                              for t in seen.targets])
    unseen_split = video_data.load_split("synthetic", root, "unseen")
    unseen_videos = video_data.VideoDataset(unseen_split, run.args.frames, "test",
                                            video_data.test_transform(
                                                run.model.clip.input_resolution), in_memory=True)
    unseen = predict(run, unseen_videos, unseen_split.classnames)
    scores = {"seen": top1(seen), "direction": top1(seen, direction),
              "left/right": left_or_right(seen, run.classnames, direction),
              "zero-shot": top1(unseen)}
    return scores, {"val": seen, "unseen": unseen}


class PrefixedLines:
    """A text stream that starts every line with `prefix`: two trainings share one terminal."""

    def __init__(self, stream, prefix):
        self.stream, self.prefix, self.line_start = stream, prefix, True

    def write(self, text):
        for part in text.splitlines(keepends=True):
            self.stream.write(self.prefix + part if self.line_start else part)
            self.line_start = part.endswith(("\n", "\r"))
        return len(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return False  # progress lines are printed whole, not redrawn in place


def demo_train(flags, root):
    """One demo training, in a process of its own on one thread: its scores and predictions."""
    torch.set_num_threads(1)
    visual_prompt = flags[flags.index("--visual-prompt") + 1]
    prefix = f"{visual_prompt:>6} | "
    sys.stdout, sys.stderr = PrefixedLines(sys.stdout, prefix), PrefixedLines(sys.stderr, prefix)
    print(f"$ python train.py {' '.join(flags)}", flush=True)
    try:
        return demo_scores(train(parse_args(flags)), root)
    except SystemExit as e:  # a Pool passes Exceptions back to the parent; SystemExit would hang it
        raise RuntimeError(f"the {visual_prompt} training stopped: {e}") from None


def demo_trainings(root, out, seed):
    """Train transf and meanP at once, each in a process of its own on one thread (on two cores,
    twice as fast as one after the other; their figures do not depend on the number of cores)."""
    runs = [(demo_flags(root, os.path.join(out, p), p, seed), root) for p in DEMO_PROMPTS]
    with multiprocessing.get_context("spawn").Pool(len(runs)) as pool:  # spawn: a fresh torch each
        results = pool.starmap(demo_train, runs)
    return dict(zip(DEMO_PROMPTS, results))


def demo_report(scores, seconds):
    """The table the demo ends with: top-1 of both prompts, and chance."""
    seen, unseen = demo_classes()
    directions = sum(motion in DEMO_DIRECTIONS for _, _, motion in seen)
    rows = [(f"{len(seen)} seen classes, held-out videos", "seen", 100 / len(seen)),
            (f"  of which the {directions} moving left or right", "direction", 100 / len(seen)),
            ("    left or right, of two candidates", "left/right", 50),
            (f"zero-shot: {len(unseen)} combinations never trained on", "zero-shot",
             100 / len(unseen))]
    lines = ["", f"ActionCLIP demo, top-1 % ({evaluate.clock(seconds)} in all): a tiny CLIP "
             f"trained from scratch on synthetic videos of colour x shape x motion",
             f"{'':46}{'transf':>8}{'meanP':>8}{'chance':>8}"]
    lines += [f"{label:46}{scores['transf'][key]:8.1f}{scores['meanP'][key]:8.1f}{chance:8.1f}"
              for label, key, chance in rows]
    print("\n".join(lines))


# demo.png, top to bottom: a legend, then each group of videos (held-out videos of seen classes,
# unseen classes) under its heading. A video's block: its true class; its frames in time order with
# an arrow between each two and the frame number under each; each prompt's top-3 beside the frames.
# Sizes in pixels.
PICTURE_SCALE = 3      # frames are drawn 3x (32 -> 96 px), nearest neighbour
PICTURE_GAP = 20       # between frames: room for the arrow of time
PICTURE_MARGIN = 12    # around everything, under each block, between the frames and the top-3s
PICTURE_LINE = 16      # text line height
PICTURE_TOP3 = 230     # width of a prompt's top-3: "100% yellow triangle moving right" fits
PICTURE_BACKGROUND, PICTURE_INK = (255, 255, 255), (20, 20, 20)
PICTURE_RIGHT, PICTURE_WRONG = (0, 130, 40), (200, 30, 30)  # a class that is (not) the true one
PICTURE_LEGEND = ("Each video: its true class, the frames both models see (segment centres) in "
                  "time order, and each prompt's top-3 classes.")


def picture_font():
    try:
        return ImageFont.load_default(size=13)                        # scalable, with FreeType
    except (TypeError, OSError):
        return ImageFont.load_default()


def picture_frames_width(num_frames, tile):
    return num_frames * tile + (num_frames - 1) * PICTURE_GAP


def picture_block_size(num_frames, frame_size, num_prompts):
    """(width, height) of a video's block: the true class over the frames and their numbers; the
    prompts' top-3s beside the frames; a margin under it all."""
    tile = frame_size * PICTURE_SCALE
    width = picture_frames_width(num_frames, tile) + num_prompts * (PICTURE_MARGIN + PICTURE_TOP3)
    return width, PICTURE_LINE + tile + PICTURE_LINE + PICTURE_MARGIN


def draw_frames(canvas, draw, font, x, y, video):
    """A video's frames at (x, y) in a row, an arrow from each to the next, numbers under them."""
    tile = video["frames"].shape[1] * PICTURE_SCALE
    for t, (frame, index) in enumerate(zip(video["frames"], video["indices"])):  # (H, W, 3) uint8
        left = x + t * (tile + PICTURE_GAP)
        canvas.paste(Image.fromarray(frame).resize((tile, tile), Image.NEAREST), (left, y))
        if t:                                                         # time: left to right
            middle, head = y + tile // 2, left - 4
            draw.line([(left - PICTURE_GAP + 4, middle), (head - 4, middle)], PICTURE_INK, 2)
            draw.polygon([(head, middle), (head - 6, middle - 4), (head - 6, middle + 4)],
                         PICTURE_INK)
        number = f"frame {index + 1} of {video['length']}"
        offset = (tile - draw.textlength(number, font=font)) // 2
        draw.text((left + offset, y + tile + 2), number, fill=PICTURE_INK, font=font)


def draw_video_block(canvas, draw, font, x, y, video):
    """One video at (x, y): 'true: <label>', its frames, each prompt's top-3 with probabilities."""
    draw.text((x, y), f"true: {video['label']}", fill=PICTURE_INK, font=font)
    y += PICTURE_LINE
    draw_frames(canvas, draw, font, x, y, video)
    left = x + picture_frames_width(len(video["frames"]), video["frames"].shape[1] * PICTURE_SCALE)
    for prompt, top3 in video["top3"].items():
        left += PICTURE_MARGIN
        draw.text((left, y), f"{prompt} top-3", fill=PICTURE_INK, font=font)
        for rank, (label, probability) in enumerate(top3, 1):
            colour = PICTURE_RIGHT if label == video["label"] else PICTURE_WRONG
            draw.text((left, y + PICTURE_LINE * rank), f"{probability:4.0%} {label}",
                      fill=colour, font=font)
        left += PICTURE_TOP3


def draw_legend(draw, font, x, y):
    """Two lines at (x, y): what a block shows; a swatch of each class colour and its meaning."""
    draw.text((x, y), PICTURE_LEGEND, fill=PICTURE_INK, font=font)
    y += PICTURE_LINE
    for colour, meaning in ((PICTURE_RIGHT, "the true class"), (PICTURE_WRONG, "another class")):
        draw.rectangle([x, y + 3, x + 9, y + 12], fill=colour)
        draw.text((x + 14, y), meaning, fill=colour, font=font)
        x += 14 + draw.textlength(meaning, font=font) + 2 * PICTURE_MARGIN


def write_demo_picture(path, groups):
    """demo.png. groups: [(heading, [video, ...]), ...], one under the other; a video: {"frames":
    uint8 (T, H, W, 3), "indices": their T frame numbers (from 0), "length": the video's frame
    count, "label": the true class, "top3": {prompt: [(class, probability)] x 3}}. All share T, H,
    W and the prompts. A group is a line for its heading, a margin above it, then its blocks."""
    first = groups[0][1][0]
    block_w, block_h = picture_block_size(len(first["frames"]), first["frames"].shape[1],
                                          len(first["top3"]))
    videos = sum(len(group) for _, group in groups)
    size = (block_w + 2 * PICTURE_MARGIN,
            PICTURE_MARGIN + 2 * PICTURE_LINE + len(groups) * (PICTURE_MARGIN + PICTURE_LINE)
            + videos * block_h)
    canvas = Image.new("RGB", size, PICTURE_BACKGROUND)
    draw, font = ImageDraw.Draw(canvas), picture_font()
    draw_legend(draw, font, PICTURE_MARGIN, PICTURE_MARGIN)
    y = PICTURE_MARGIN + 2 * PICTURE_LINE
    for heading, group in groups:
        y += PICTURE_MARGIN
        draw.text((PICTURE_MARGIN, y), heading, fill=PICTURE_INK, font=font)
        draw.line([(PICTURE_MARGIN, y + PICTURE_LINE - 1), (size[0] - PICTURE_MARGIN,
                                                             y + PICTURE_LINE - 1)], PICTURE_INK)
        y += PICTURE_LINE
        for video in group:
            draw_video_block(canvas, draw, font, PICTURE_MARGIN, y, video)
            y += block_h
    canvas.save(path)


def pictured_videos(root, split_name, classnames, predictions, num_frames):
    """The DEMO_PICTURED videos of a split: the frames the models were tested on (segment centres,
    no augmentation) and their top-3s."""
    split = video_data.load_split("synthetic", root, split_name)
    videos = []
    for name in DEMO_PICTURED[split_name]:
        i = next(i for i, r in enumerate(split.records) if split.classnames[r.label] == name)
        top3 = {}
        for prompt, prediction in predictions.items():
            probabilities, classes = prediction[split_name].scores[i].topk(3)
            top3[prompt] = [(classnames[int(c)], float(p)) for p, c in zip(probabilities, classes)]
        length = video_data.count_frames(split.records[i].path)
        indices = video_data.sample_indices(length, num_frames, "test")
        frames = video_data.read_frames(split.records[i].path, indices).numpy()
        videos.append({"frames": frames, "indices": indices, "length": length, "label": name,
                       "top3": top3})
    return videos


def demo_picture(path, root, predictions, num_frames=DEMO_FRAMES):
    """runs/demo/demo.png: a few held-out and unseen videos, each prompt's top-3 beside them."""
    groups = []
    headings = {"val": "held-out videos of seen classes", "unseen": "unseen classes (zero-shot)"}
    for split, heading in headings.items():
        names = video_data.load_split("synthetic", root, split).classnames
        groups.append((heading, pictured_videos(root, split, names, predictions, num_frames)))
    write_demo_picture(path, groups)


CURVES_CHANCE = "tab:gray"  # curves.png's chance line


def demo_curves(path, out):
    """runs/demo/curves.png from each prompt's metrics.jsonl: loss and held-out top-1 per epoch,
    the top-1 of a guess as a line, where matplotlib is installed (False otherwise)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (loss_axes, top1_axes) = plt.subplots(1, 2, figsize=(10, 3.6))
    for prompt in DEMO_PROMPTS:
        with open(os.path.join(out, prompt, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
        losses = [(r["epoch"], r["loss"]) for r in records if "loss" in r]
        top1s = [(r["epoch"], r["val"]["top1"]) for r in records if "val" in r]
        loss_axes.plot(*zip(*losses), label=prompt)
        top1_axes.plot(*zip(*top1s), marker="o", label=prompt)
    chance = 100 / len(demo_classes()[0])                             # a guess among the seen
    top1_axes.axhline(chance, color=CURVES_CHANCE, linestyle="--", label=f"chance ({chance:.1f})")
    loss_axes.set(xlabel="epoch", ylabel="training loss (Eq. 4)", yscale="log")
    top1_axes.set(xlabel="epoch", ylabel="held-out top-1 (%)", ylim=(0, 100))
    for axes in (loss_axes, top1_axes):
        axes.grid(alpha=0.3)
    loss_axes.legend()
    top1_axes.legend(loc="lower right", bbox_to_anchor=(1, 0.06))   # above the chance line
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def demo(args):
    """python train.py --demo: generate videos, train transf and meanP through train(), compare
    them, draw demo.png (and curves.png, with matplotlib). Returns {prompt: scores}."""
    start = time.time()
    out = args.out or os.path.join("runs", "demo")
    claim_demo_folder(out)
    root = os.path.join(out, "data")
    demo_data(root)
    print(f"\ntraining {' and '.join(DEMO_PROMPTS)} at once, one process each; their lines start "
          f"with their name", flush=True)
    results = demo_trainings(root, out, args.seed)
    scores = {prompt: figures for prompt, (figures, _) in results.items()}
    demo_report(scores, time.time() - start)
    with open(os.path.join(out, "scores.json"), "w") as f:
        json.dump(scores, f, indent=1)
    predictions = {prompt: predicted for prompt, (_, predicted) in results.items()}
    demo_picture(os.path.join(out, "demo.png"), root, predictions)
    wrote = [os.path.join(out, "demo.png")]
    if demo_curves(os.path.join(out, "curves.png"), out):
        wrote.append(os.path.join(out, "curves.png"))
    else:
        print("matplotlib is not installed: no curves.png (pip install matplotlib)")
    print(f"wrote {', '.join(wrote)}")
    return scores


def main(argv=None):
    args = parse_args(argv)
    if args.demo:
        with claim_out(args.out or os.path.join("runs", "demo"), Dist()):  # demo() rewrites it
            demo(args)
    else:
        train(args)

if __name__ == "__main__":
    main()
