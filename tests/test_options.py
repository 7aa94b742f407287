"""Every option's effect: values, parameters, pixels and per-video scores, not what a flag sets.

Each test here fails on a bug that tests/mutate.py plants (`python tests/mutate.py` checks that the
suite still catches them all). Where a tiny random model cannot tell two cases apart, the test uses
data or a reference that can: a first step whose loss is computed here by hand, splits whose lists
differ, hand-built logits, pixel patterns with a known crop.

Flag -> the test of its effect ("t_" = test_ in this file; tests in other files by file name).

train.py
  --arch                   test_train: random_initialisation_..., arch_takes_a_resnet_clip_file...
  --frames                 test_train: frames_sets_the_frames_per_video; t_first_step_loss_is_eq4...
  --visual-prompt          test_train: every_visual_prompt_trains_every_parameter
  --unimodal               t_first_step_loss_is_cross_entropy_by_hand, t_grad_accum_sums_...
  --init-vision/-text      test_train: random_initialisation_of_one_encoder (weights vs the file)
  --no-text-prompts        t_first_step_loss_is_eq4_by_hand (bare names); test_train: no_text_...
  --freeze-vision/-text    test_train: a_frozen_encoder_keeps_its_weights_...
  --finetune-from          test_train: finetune_from_an_actionclip_checkpoint (parameters)
  --dataset --root --fold --val-split --videos-dir --prepared --train-list --val-list
  --classnames             t_train_data_flags_pick_the_videos (which videos train and validate)
  --shots                  test_train: shots_draws_k_videos_per_class_with_a_fixed_seed
  --sample-by              test_data_input: sample_by_time_is_one_flag_in_train_evaluate_and_...
  --augment                t_augment_pixels (none: the whole frame; crop: no flip, no colour
                           change; official: flips and colour changes)
  --randaugment            t_randaugment_changes_pixels
  --in-memory              test_video_data: in_memory_cache_gives_the_same_items
  --workers                test_train: loader_workers_do_not_change_the_data
  --epochs --batch-size    t_eval_every_and_log_every (steps); t_first_step_loss_* (one batch)
  --lr --new-lr-mult --adam-eps --weight-decay   t_optimiser_flags_scale_the_first_step
  --warmup-epochs          t_warmup_makes_the_first_step_zero
  --grad-accum             t_grad_accum_sums_every_micro_batch
  --clip-grad              test_train: clip_grad_bounds_the_step
  --precision              t_bf16_changes_the_arithmetic; CUDA: t_cuda_fp16_with_loss_scaling,
                           t_cuda_auto_precision_is_bf16
  --grad-checkpointing     t_grad_checkpointing_recomputes_the_vit_blocks
  --compile                test_train: compile_compiles_what_the_forward_pass_calls
  --out --resume --stop-after-steps   test_train: resume_equals_an_uninterrupted_run
  --seed                   t_seed_sets_new_weights_and_data_order
  --eval-every --log-every t_eval_every_and_log_every
  --demo                   test_train: a_fast_demo_learns; test_demo (pictures, a rerun)
  (torchrun)               test_train: two_processes_... (gloo); CUDA: t_cuda_nccl_one_process_...
evaluate.py
  --checkpoint             t_official_release_scores_by_hand; test_evaluate (ours, unimodal)
  --dataset --root --fold --split --frames --no-templates --batch-size --workers
                           t_evaluate_flags_change_the_scores (paths, targets, scores by hand)
  --videos-dir --list-file --classnames-file --prepared   t_evaluate_data_flags (videos scored)
  --clips --crops          test_evaluate: checkpoint_on_ucf101_multi_view_equals_the_mean_of...
  --sample-by              test_data_input: sample_by_time_is_one_flag_in_train_evaluate_and_...
  --device --fp32          CUDA: t_cuda_evaluate_fp32_and_autocast
  --strict                 test_evaluate: unreadable_videos_are_counted_and_strict_stops
  --json --save-scores     every evaluate.main test
  --confusion              t_confusion_png_shows_row_normalised_rates (pixels of the image);
                           test_confusion_png (counts in cells, colour bar, title)
  (unimodal, metrics)      t_unimodal_scores_are_softmax_..., t_mean_class_top1_leaves_out_...
zeroshot.py
  --weights --checkpoint   test_zeroshot: hmdb51_splits_with_plain_clip_weights, video_labels_...
  --protocol splits        t_zeroshot_splits_read_their_own_lists
  --protocol half-classes --draws --seed   t_half_class_draws_follow_the_seed
  --protocol k600-novel --k600-splits      test_zeroshot: kinetics600_novel_class_subsets
  --protocol all-classes --split           t_zeroshot_all_classes_split
  --video --labels --labels-file --top --no-templates   t_zeroshot_video_flags_by_hand
  data and view flags      evaluate.py's (the same add_data_args, datasets and loaders)
video_data.py prepare
  --dataset --root --out --form --workers  test_video_data: prepare_then_read_..., prepare_cli_...
  --short-side --quality --gop --list-file --classnames-file --videos-dir
                           t_prepare_flags_shape_the_output
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn

import clip_model
import evaluate
import prompts
import train
import video_data
import zeroshot
from dataset_fixtures import make_charades, make_kinetics, make_ucf101
from test_evaluate import one_thread  # noqa: F401 (a fixture)
from test_evaluate import save_checkpoint
from test_train import data  # noqa: F401 (a fixture)
from test_train import CLASSES, TINY, clip_weights, flags, run, save_clip, saved_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (fp16 loss "
                          "scaling, CUDA autocast, NCCL): run the suite on a GPU machine")
UCF_NAMES = ["apply eye makeup", "basketball", "yo yo"]               # make_ucf101's classes


def logged_losses(out):
    records = map(json.loads, open(os.path.join(out, "metrics.jsonl")))
    return [r["loss"] for r in records if "loss" in r]


def clip_mean_std():
    return torch.tensor(clip_model.MEAN).view(3, 1, 1), torch.tensor(clip_model.STD).view(3, 1, 1)


def pixels(video):
    """A transform's output as uint8 pixels: CLIP normalisation undone where it was applied."""
    if isinstance(video, video_data.DeviceClip):                      # colour work done here
        video = video_data.colour_batch(video.pixels[None], video.colour[None])[0]
    if video.dtype == torch.uint8:
        return video
    mean, std = clip_mean_std()
    return ((video * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


def normalised(frames):
    """uint8 (T, H, W, 3) -> CLIP-normalised float (T, 3, H, W), by hand."""
    mean, std = clip_mean_std()
    return (frames.permute(0, 3, 1, 2).float() / 255 - mean) / std


def model_input(video):
    """A test transform's (T, 3, S, S) output as the model's float input (normalised, if uint8)."""
    return normalised(video.permute(0, 2, 3, 1)) if video.dtype == torch.uint8 else video


# --------------------------------------------------------------------------------------------------
# evaluate.py: scores and metrics


class PixelClassifier(nn.Module):
    """A 'VideoClassifier' whose logits are the first pixels of each video: logits set by hand."""

    def __init__(self, C=3):
        super().__init__()
        self.C = C

    def forward(self, video):                                         # (B, T, 3, S, S)
        return video[:, 0, 0, 0, :self.C]                             # (B, C)


def test_unimodal_scores_are_softmax_probabilities_averaged_over_views():
    from test_evaluate import ListDataset, views
    logits = [(2.0, 0.0, -1.0), (0.0, 3.0, 0.5)]                      # two views of one video
    loader = evaluate.eval_loader(ListDataset([views(*logits)], [0]), 1, 0)
    preds = evaluate.predict_videos(PixelClassifier(), loader, None, torch.device("cpu"),
                                    progress=None)
    expected = torch.stack([torch.tensor(v).softmax(0) for v in logits]).mean(0)
    assert torch.allclose(preds.scores[0], expected, atol=1e-6)


def test_mean_class_top1_leaves_out_classes_without_videos():
    scores = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.2, 0.8, 0.0, 0.0], [0.6, 0.4, 0.0, 0.0]])
    preds = evaluate.Predictions(scores, torch.tensor([0, 1, 1]), torch.ones(3, dtype=torch.bool))
    result = evaluate.summarize(preds, ["a", "b", "c", "d"])          # c and d have no videos
    assert result["mean_class_top1"] == pytest.approx((100 + 50) / 2)
    assert result["top1"] == pytest.approx(200 / 3)


def test_confusion_png_shows_row_normalised_rates(tmp_path):
    from matplotlib import image as image_io  # requirements-dev.txt: runs, never skips
    from matplotlib import colormaps
    path = str(tmp_path / "confusion.png")
    assert evaluate.save_confusion_png(torch.tensor([[3, 0], [2, 2]]), ["a", "b"], path)
    image = torch.from_numpy(image_io.imread(path)[..., :3])          # (H, W, 3) in [0, 1]

    def area(rate):                                                   # pixels in rate's colour
        colour = torch.tensor(colormaps["Blues"](rate)[:3], dtype=torch.float32)
        return int(((image - colour).abs().max(-1).values < 0.02).sum())
    full, half = area(1.0), area(0.5)                                 # rows (1, 0), (0.5, 0.5)
    assert full > 1000 and half > 1.5 * full                          # one cell at 1, two at 0.5


def test_official_release_scores_by_hand(ucf, tmp_path, one_thread):
    """An official-format release through evaluate.main: each video's scores are the official
    model's, computed here from the raw state dicts (official_transf_head in plain torch ops)."""
    from test_prompts import (TINY_2_HEADS, official_clip_state_dict, official_transf_fusion,
                              official_transf_head, save_official)
    clip_sd, fusion = official_clip_state_dict(TINY_2_HEADS), official_transf_fusion(128)
    path = str(tmp_path / "official_release.pt")
    save_official(path, clip_sd, fusion)
    _, saved = evaluated(tmp_path, ["--checkpoint", path, "--dataset", "ucf101", "--root",
                                    ucf["root"], "--workers", "0"], "official")
    reference = clip_model.build_model(dict(clip_sd))
    fusion = {"module." + k: v for k, v in fusion.items()}
    transform = video_data.test_transform(reference.input_resolution)
    templates = [[template.format(c) for c in UCF_NAMES] for template in prompts.TEMPLATES]
    with torch.no_grad():
        text = torch.stack([F.normalize(reference.encode_text(clip_model.tokenize(row)), dim=-1)
                            for row in templates])                    # (K, C, E)
        for i, (video_path, _) in enumerate(ucf["test"][1]):
            indices = video_data.sample_indices(video_data.count_frames(video_path), 8, "test")
            video = model_input(transform(video_data.read_frames(video_path, indices)))  # 8 frames
            frames = reference.encode_image(video).view(1, 8, -1)     # (1, T, E)
            feature = F.normalize(official_transf_head(frames, fusion, heads=2), dim=-1)
            logits = reference.logit_scale.exp() * torch.einsum("be,kce->bkc", feature, text)
            expected = logits.softmax(-1).mean(1)[0]                  # mean of template softmaxes
            assert torch.allclose(saved["scores"][i], expected, atol=1e-4), i
    assert saved["scores"].std() > 1e-3                               # the videos are told apart


# --------------------------------------------------------------------------------------------------
# train.py: the loss of the first step, by hand


def first_step_flags(data_, out, *extra):
    """One step over all 16 training videos with lr 0 (the model after the run is the model of the
    step); 8 frames of 8-frame videos, whole frames, bare names: the batch is known exactly."""
    return flags(data_, out, "--frames", "8", "--batch-size", "16", "--lr", "0", "--augment",
                 "none", "--no-text-prompts", *extra)


def hand_batch(data_):
    split = video_data.load_split("synthetic", data_["root"], "train")
    videos = [normalised(video_data.read_frames(r.path, range(8))) for r in split.records]
    return torch.stack(videos), torch.tensor([r.label for r in split.records]), split.classnames


def hand_kl_loss(logits, same):
    """Eq. 4 written out: ground-truth rows normalised to sum to 1, KL both ways, averaged."""
    def kl(target, rows):
        target, log_q = target / target.sum(1, keepdim=True), rows.log_softmax(1)
        terms = [(t[t > 0] * (t[t > 0].log() - q[t > 0])).sum() for t, q in zip(target, log_q)]
        return float(sum(terms)) / len(rows)
    return (kl(same, logits) + kl(same.t(), logits.t())) / 2


@pytest.fixture(scope="module")
def fp32_first_step(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp32_first_step")
    return train.train(train.parse_args(first_step_flags(data, out))), logged_losses(out)


def test_first_step_loss_is_eq4_by_hand(data, fp32_first_step):
    """Eq. 4 over the whole batch, every same-class pair a positive, texts the bare class names."""
    result, losses = fp32_first_step
    videos, labels, classnames = hand_batch(data)
    model = result.model
    with torch.no_grad():
        v = F.normalize(model.encode_video(videos), dim=-1)
        tokens = clip_model.tokenize([classnames[c] for c in labels], 24)
        t = F.normalize(model.encode_text(tokens), dim=-1)
        logits = model.logit_scale.exp() * v @ t.t()
    expected = hand_kl_loss(logits, (labels[:, None] == labels[None, :]).float())
    assert losses == [pytest.approx(expected, rel=1e-4)]


def test_first_step_loss_is_cross_entropy_by_hand(data, tmp_path):
    """--unimodal (Table 1): the cross-entropy of a linear classifier on the video features."""
    result = train.train(train.parse_args(first_step_flags(data, tmp_path, "--unimodal")))
    videos, labels, _ = hand_batch(data)
    with torch.no_grad():
        expected = F.cross_entropy(result.model(videos), labels).item()
    assert logged_losses(tmp_path) == [pytest.approx(expected, rel=1e-4)]


def test_bf16_changes_the_arithmetic(data, tmp_path, fp32_first_step):
    """--precision bf16: encoders under bf16 autocast; the loss moves off fp32's, a little."""
    train.train(train.parse_args(first_step_flags(data, tmp_path, "--precision", "bf16")))
    fp32, bf16 = fp32_first_step[1][0], logged_losses(tmp_path)[0]
    assert fp32 != bf16 and bf16 == pytest.approx(fp32, rel=0.05)


def test_kl_text_to_video_target_is_transposed_on_a_square_multi_hot_batch():
    """A square multi-hot batch (Charades): the text-to-video target is the transpose of the
    video-to-text one; the untransposed matrix has the same shape and another value."""
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.3, 1.2, 0.1], [-0.4, 0.8, 1.5]])
    multi_hot = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # video 0: 0, 1
    texts = torch.tensor([0, 1, 2])
    same = multi_hot[:, texts]                                        # video i vs text j
    assert not torch.equal(same, same.t())
    got = train.kl_video_text_loss(logits, multi_hot, texts).item()
    assert got == pytest.approx(hand_kl_loss(logits, same), rel=1e-6)


# --------------------------------------------------------------------------------------------------
# train.py: optimiser, schedule, accumulation, checkpointing


def sgd_like(*extra):
    return ("--adam-eps", "1", "--lr", "0.1", "--new-lr-mult", "1", "--weight-decay", "0",
            "--stop-after-steps", "1", *extra)


def test_grad_accum_sums_every_micro_batch(data, tmp_path):
    """Cross-entropy is a mean over videos: 2 micro-batches of 4 give the gradient of 1 of 8."""
    one = run(data, tmp_path / "one", "--unimodal", *sgd_like())
    two = run(data, tmp_path / "two", "--unimodal", *sgd_like("--grad-accum", "2"))
    a, b = one.model.state_dict(), two.model.state_dict()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=1e-7), key
    start = clip_weights(data["clip"])["clip.visual.conv1.weight"]
    assert (a["actionclip.clip.visual.conv1.weight"] - start).abs().max() > 1e-4  # a real step


def test_grad_checkpointing_recomputes_the_vit_blocks(data, tmp_path, monkeypatch):
    """Checkpointed blocks run again in the backward pass (the memory saving); the step is equal."""
    calls = []
    forward = clip_model.ResidualAttentionBlock.forward
    monkeypatch.setattr(clip_model.ResidualAttentionBlock, "forward",
                        lambda self, x: calls.append(self.causal) or forward(self, x))
    meanp = ("--visual-prompt", "meanP", "--stop-after-steps", "1")  # blocks: the ViT's, the text's
    plain = run(data, tmp_path / "plain", *meanp)
    counts = {"plain": calls.count(False)}                           # vision (text ones are causal)
    calls.clear()
    checkpointed = run(data, tmp_path / "ckpt", "--grad-checkpointing", *meanp)
    counts["checkpointed"] = calls.count(False)
    assert counts["checkpointed"] == 2 * counts["plain"] > 0
    for key, value in plain.model.state_dict().items():
        assert torch.allclose(value, checkpointed.model.state_dict()[key], rtol=0, atol=1e-6), key


def first_step_change(data_, out, *extra):
    """(parameter change of one step, parameters before it, names of the new parameters)."""
    result = run(data_, out, "--stop-after-steps", "1", *extra)
    fresh_args = train.parse_args(flags(data_, out / "x"))
    fresh = train.build_video_model(fresh_args, len(CLASSES))  # seed 0
    before = {**fresh.state_dict(), **clip_weights(data_["clip"])}    # the file's CLIP, new modules
    after, model = result.model.state_dict(), result.model
    new = {n for n, p in model.named_parameters() if any(p is q for q in model.new_parameters())}
    return {k: after[k] - before[k] for k in after}, before, new


def test_optimiser_flags_scale_the_first_step(data, tmp_path):
    """AdamW's first step is lr x g / (|g| + eps) with decoupled decay lr x wd x p on matrices only
    [Sec. 4.1]: --lr and --new-lr-mult scale it, --weight-decay adds -lr x wd x p (matrices, not
    biases, gains, embeddings), a large --adam-eps shrinks it."""
    base, before, new = first_step_change(data, tmp_path / "a", "--lr", "0.01", "--new-lr-mult",
                                          "1", "--weight-decay", "0")
    scaled, _, _ = first_step_change(data, tmp_path / "b", "--lr", "0.02", "--new-lr-mult", "3",
                                     "--weight-decay", "0.5")
    damped, _, _ = first_step_change(data, tmp_path / "c", "--lr", "0.01", "--new-lr-mult", "1",
                                     "--weight-decay", "0", "--adam-eps", "10")
    assert new and len(new) < len(base)
    for name, delta in base.items():
        mult = 3 if name in new else 1
        decayed = delta.ndim >= 2 and "embedding" not in name
        decay = 0.5 * 0.02 * mult * before[name] if decayed else 0
        torch.testing.assert_close(scaled[name], 2 * mult * delta - decay, rtol=1e-4, atol=1e-7,
                                   msg=name)
    largest = max(d.abs().max() for d in base.values())
    assert largest == pytest.approx(0.01, rel=1e-3)                  # eps 1e-8: lr x sign(g)
    for name, delta in damped.items():                                # eps 10: < lr x |g| / 10
        assert delta.abs().max() < 0.005 and (delta.abs() <= base[name].abs()).all(), name


def test_warmup_makes_the_first_step_zero(data, tmp_path):
    """Linear warm-up from 0 [Sec. 4.1]: step 1 has lr 0 and leaves every weight as it was."""
    change, _, _ = first_step_change(data, tmp_path, "--epochs", "4", "--warmup-epochs", "1")
    assert all(d.abs().max() == 0 for d in change.values())


def test_seed_sets_new_weights_and_data_order(data, tmp_path):
    def new_weights(seed):
        args = train.parse_args(flags(data, tmp_path, "--seed", str(seed)))
        new = train.build_video_model(args, 4).new_parameters()
        return torch.cat([p.detach().flatten() for p in new])
    zero = new_weights(0)
    assert torch.equal(zero, new_weights(0)) and not torch.equal(zero, new_weights(1))
    for seed in ("0", "1"):                                           # meanP: no new weights
        run(data, tmp_path / seed, "--seed", seed, "--stop-after-steps", "1", "--visual-prompt",
            "meanP")
    assert logged_losses(tmp_path / "0") != logged_losses(tmp_path / "1")  # other batch, crops


def test_eval_every_and_log_every(data, tmp_path):
    run(data, tmp_path, "--epochs", "3", "--batch-size", "16", "--eval-every", "2", "--log-every",
        "2", "--lr", "0")
    records = list(map(json.loads, open(tmp_path / "metrics.jsonl")))
    assert [r["epoch"] for r in records if "val" in r] == [2, 3]     # every 2nd epoch, and the last
    assert [r["step"] for r in records if "loss" in r] == [2]         # 3 steps, a line every 2


# --------------------------------------------------------------------------------------------------
# train.py: data and augmentation


def test_multi_label_text_names_each_positive_class(tmp_path):
    """A Charades video's text names one of its classes, drawn afresh: over epochs, each of them."""
    fixture = make_charades(tmp_path / "charades", videos_per_split=5)
    clip = save_clip(tmp_path / "clip.pt", dict(TINY, image_resolution=32))
    result = train.train(train.parse_args([
        "--arch", clip, "--dataset", "charades", "--root", fixture["root"], "--frames", "2",
        "--epochs", "1", "--batch-size", "4", "--workers", "0", "--augment", "crop", "--in-memory",
        "--eval-every", "0", "--no-text-prompts", "--out", str(tmp_path / "out")]))
    C = len(fixture["classnames"])
    named = {i: set() for i in range(len(result.items))}
    for epoch in range(12):
        for i in named:
            named[i].add(result.items[epoch, i][3])                   # the class its text names
    assert [sorted(named[i]) for i in named] == [labels for _, labels in fixture["train"] if labels]


def augmented(augment, clip, size, draws, *extra):
    args = train.parse_args(["--root", "x", "--dataset", "ucf101", "--augment", augment, *extra])
    transform = train.augmentation(args, size)
    torch.manual_seed(0)
    return [pixels(transform(clip)) for _ in range(draws)]


def test_augment_pixels():
    """--augment none: the whole frame, resized; crop: the frame's colours, never mirrored;
    official: colour jitter, grayscale and flips change some clips."""
    frame = torch.zeros(32, 32, 3, dtype=torch.uint8)
    frame[:, :16] = torch.tensor([200, 30, 30], dtype=torch.uint8)   # red left half, blue right
    frame[:, 16:] = torch.tensor([30, 30, 200], dtype=torch.uint8)
    clip = frame.expand(2, 32, 32, 3).contiguous()
    whole = TF.resize(frame.permute(2, 0, 1), [16, 16], antialias=True)
    assert all(torch.equal(out[0], whole) and torch.equal(out[1], whole)
               for out in augmented("none", clip, 16, 12))
    for out in augmented("crop", clip, 16, 12):
        left, right = out[0, :, :, :3].float().mean((1, 2)), out[0, :, :, -3:].float().mean((1, 2))
        assert left[0] > 150 and right[2] > 150                       # red stays left: no flip
        assert set(out[0, :, :, 0].unique().tolist()) <= set(range(25, 206))  # no jitter
    official = augmented("official", clip, 16, 20)
    flipped = [out[0, 2, 8, 0] > out[0, 0, 8, 0] for out in official]  # blue on the left
    red = torch.tensor([200, 30, 30], dtype=torch.uint8)
    unflipped = [out for out, f in zip(official, flipped) if not f]
    recoloured = [not torch.equal(out[0, :, 8, 0], red) for out in unflipped]
    assert any(flipped) and not all(flipped) and any(recoloured)


def test_randaugment_changes_pixels():
    generator = torch.Generator().manual_seed(0)
    clip = torch.randint(0, 256, (2, 40, 40, 3), dtype=torch.uint8, generator=generator)
    plain = augmented("official", clip, 32, 4)
    assert all(map(torch.equal, plain, augmented("official", clip, 32, 4, "--no-randaugment")))
    assert not all(map(torch.equal, plain, augmented("official", clip, 32, 4, "--randaugment")))


def listed(pairs, root):
    return "".join(f"{os.path.relpath(path, root)} {label}\n" for path, label in pairs)


def test_train_data_flags_pick_the_videos(ucf, tmp_path):
    videos = lambda split: [(r.path, r.label) for r in split.records]
    args = ["--dataset", "ucf101", "--root", ucf["root"], "--val-split", "test"]
    train_split, val_split = train.load_splits(train.parse_args(args + ["--fold", "2"]))
    assert videos(train_split) == ucf["train"][2] and videos(val_split) == ucf["test"][2]
    prepared = str(tmp_path / "prepared")
    video_data.prepare("ucf101", ucf["root"], prepared, "frames", short_side=16)
    train_split, _ = train.load_splits(train.parse_args(args + ["--prepared", prepared]))
    assert all(r.path.startswith(prepared) and os.path.isdir(r.path) for r in train_split.records)
    # --dataset list: a training and a validation list of the same videos, in another order
    (tmp_path / "a.txt").write_text(listed(ucf["train"][1], ucf["root"]))
    (tmp_path / "b.txt").write_text(listed(ucf["train"][1][::-1], ucf["root"]))
    (tmp_path / "names.txt").write_text("\n".join(ucf["classnames"]) + "\n")
    train_split, val_split = train.load_splits(train.parse_args([
        "--dataset", "list", "--root", ucf["root"], "--train-list", str(tmp_path / "a.txt"),
        "--val-list", str(tmp_path / "b.txt"), "--classnames", str(tmp_path / "names.txt")]))
    assert videos(train_split) == ucf["train"][1] and videos(val_split) == ucf["train"][1][::-1]
    assert train_split.classnames == ucf["classnames"]
    kinetics = make_kinetics(tmp_path / "k400", ("a", "b"), videos_per_class=1, layout="flat",
                             missing=0)
    moved, there = str(tmp_path / "elsewhere"), os.path.join(kinetics["root"], "videos")
    shutil.move(there, moved)
    train_split, val_split = train.load_splits(train.parse_args([
        "--dataset", "kinetics400", "--root", kinetics["root"], "--videos-dir", moved,
        "--val-split", "test"]))                                      # Kinetics: val is not test
    for split, name in ((train_split, "train"), (val_split, "test")):
        assert sorted(r.path for r in split.records) == sorted(
            path.replace(there, moved) for path, _ in kinetics[name])


# --------------------------------------------------------------------------------------------------
# evaluate.py flags, end to end


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    return make_ucf101(tmp_path_factory.mktemp("ucf"), videos_per_class=3)  # 3 test videos a fold


def evaluated(tmp_path, argv, name):
    """evaluate.main on the CPU: its JSON and its saved scores."""
    out, scores = str(tmp_path / f"{name}.json"), str(tmp_path / f"{name}.pt")
    evaluate.main(argv + ["--device", "cpu", "--json", out, "--save-scores", scores])
    return json.load(open(out)), torch.load(scores)


def hand_scores(model, paths, frames, templates):
    """One view: T segment centres, resize, centre crop, the template ensemble [Sec. 3.2, 4.1]."""
    transform = video_data.test_transform(model.clip.input_resolution)
    text = prompts.text_features(model, UCF_NAMES, templates)
    rows = []
    with torch.no_grad():
        for path in paths:
            indices = video_data.sample_indices(video_data.count_frames(path), frames, "test")
            video = model_input(transform(video_data.read_frames(path, indices)))  # (T, 3, S, S)
            feature = model.encode_video(video[None])
            rows.append(prompts.ensemble_scores(feature, text, model.logit_scale.exp())[0])
    return torch.stack(rows)


def test_evaluate_flags_change_the_scores(ucf, tmp_path, one_thread):
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt", num_frames=4)
    model = prompts.load_actionclip(checkpoint).eval()
    common = ["--checkpoint", checkpoint, "--dataset", "ucf101", "--root", ucf["root"]]
    cases = {("--fold", "2"): (ucf["test"][2], 4, prompts.TEMPLATES),
             ("--split", "train", "--batch-size", "2"): (ucf["train"][1], 4, prompts.TEMPLATES),
             ("--frames", "2", "--no-templates"): (ucf["test"][1], 2, prompts.LABEL_ONLY),
             ("--fold", "3", "--workers", "2", "--batch-size", "1"): (ucf["test"][3], 4,
                                                                      prompts.TEMPLATES)}
    for extra, (videos, frames, templates) in cases.items():
        workers = [] if "--workers" in extra else ["--workers", "0"]
        result, saved = evaluated(tmp_path, common + workers + list(extra), "x")
        assert saved["paths"] == [path for path, _ in videos], extra
        assert saved["targets"].tolist() == [label for _, label in videos], extra
        expected = hand_scores(model, saved["paths"], frames, templates)
        assert torch.allclose(saved["scores"], expected, atol=1e-5), extra
        top1 = evaluate.topk_accuracy(expected, saved["targets"])["top1"]
        assert result["top1"] == pytest.approx(top1), extra


def test_evaluate_data_flags(ucf, tmp_path, one_thread):
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt", num_frames=4)
    common = ["--checkpoint", checkpoint, "--workers", "0"]
    prepared = str(tmp_path / "prepared")
    video_data.prepare("ucf101", ucf["root"], prepared, "video", short_side=32)
    _, saved = evaluated(tmp_path, common + ["--dataset", "ucf101", "--root", ucf["root"],
                                             "--prepared", prepared], "prepared")
    assert len(saved["paths"]) == 3 and all(p.startswith(prepared) for p in saved["paths"])
    (tmp_path / "list.txt").write_text(listed(ucf["test"][2], ucf["root"]))
    (tmp_path / "names.txt").write_text("\n".join(ucf["classnames"]) + "\n")
    _, saved = evaluated(tmp_path, common + ["--dataset", "list", "--root", ucf["root"],
                                             "--list-file", str(tmp_path / "list.txt"),
                                             "--classnames-file", str(tmp_path / "names.txt")],
                         "list")
    assert saved["paths"] == [p for p, _ in ucf["test"][2]] and saved["classnames"] == UCF_NAMES
    kinetics = make_kinetics(tmp_path / "k400", classes=("abseiling", "zumba"), videos_per_class=1,
                             layout="flat", missing=0)
    moved = str(tmp_path / "elsewhere")
    shutil.move(os.path.join(kinetics["root"], "videos"), moved)
    _, saved = evaluated(tmp_path, common + ["--dataset", "kinetics400", "--root", kinetics["root"],
                                             "--videos-dir", moved], "kinetics")
    assert saved["ok"].all() and [os.path.dirname(p) for p in saved["paths"]] == [moved, moved]


def test_test_transform_crops_the_centre():
    """Short side to 256/224 of the crop (18 for 16), then the centre: rows 1-16, columns 7-22."""
    generator = torch.Generator().manual_seed(0)
    frame = torch.randint(0, 256, (1, 18, 30, 3), dtype=torch.uint8, generator=generator)
    out = pixels(video_data.test_transform(16)(frame))                # (1, 3, 16, 16)
    assert torch.equal(out[0], frame[0, 1:17, 7:23].permute(2, 0, 1))


@pytest.mark.parametrize("codec, ext", [("mpeg4", ".avi"), ("libx264", ".mkv")])
def test_read_frames_decodes_from_the_keyframe_before(tmp_path, monkeypatch, codec, ext):
    """Late frames are read by seeking to the keyframe at or before them: the frames decoded are
    those from that keyframe on (not all from frame 0, not a fallback that decodes in order)."""
    from test_video_data import frame_number, index_frame
    path = video_data.write_video(str(tmp_path / f"clip{ext}"), [index_frame(i) for i in range(60)],
                                  codec=codec, gop=12, bframes=2)
    decoded, in_order = [], []
    run_frames, read_in_order = video_data._run_frames, video_data._read_in_order

    def counting(*args):
        for frame in run_frames(*args):
            decoded.append(frame)
            yield frame
    monkeypatch.setattr(video_data, "_run_frames", counting)
    monkeypatch.setattr(video_data, "_read_in_order",
                        lambda *args: in_order.append(args) or read_in_order(*args))
    for wanted in ([50], [14, 40], [59, 3]):
        decoded.clear()
        assert [frame_number(f) for f in video_data.read_frames(path, wanted)] == wanted
        assert len(decoded) <= sum(w % 12 + 3 for w in wanted), (wanted, len(decoded))
    assert not in_order                                               # never from frame 0, counting


# --------------------------------------------------------------------------------------------------
# zeroshot.py flags


def zeroshot_json(tmp_path, argv):
    out = str(tmp_path / "zeroshot.json")
    zeroshot.main(argv + ["--workers", "0", "--device", "cpu", "--json", out])
    return json.load(open(out))


def test_zeroshot_splits_read_their_own_lists(ucf, tmp_path, one_thread):
    """Splits 2 and 3 leave out other classes' videos: each split's counts say which it read."""
    root = shutil.copytree(ucf["root"], tmp_path / "ucf101")          # 1 video a class and fold
    lists = root / "ucfTrainTestlist"
    for fold, dropped in ((2, ("ApplyEyeMakeup",)), (3, ("Basketball", "YoYo"))):
        path = lists / f"testlist0{fold}.txt"
        path.write_text("".join(line for line in open(path) if not line.startswith(dropped)))
    result = zeroshot_json(tmp_path, ["--checkpoint", save_checkpoint(tmp_path / "ckpt.pt"),
                                      "--dataset", "ucf101", "--root", str(root)])
    counts = [[row["videos"] for row in r["per_class"]] for r in result["runs"]]
    assert counts == [[1, 1, 1], [0, 1, 1], [1, 0, 0]]


def text4vis_half(num_classes, seed):
    np.random.seed(seed)
    return sorted(np.random.permutation(num_classes)[:num_classes // 2].tolist())


def test_half_class_draws_follow_the_seed(tmp_path, one_thread):
    for seed in (0, 7):
        draws = zeroshot.half_class_draws(11, draws=3, seed=seed)
        assert draws == [text4vis_half(11, seed + i) for i in range(3)]
    assert zeroshot.half_class_draws(11, 3, 7) != zeroshot.half_class_draws(11, 3, 0)
    kinetics = make_kinetics(tmp_path / "k400", classes=("a", "b", "c", "d", "e"),
                             videos_per_class=1, missing=0)
    result = zeroshot_json(tmp_path, ["--checkpoint", save_checkpoint(tmp_path / "ckpt.pt"),
                                      "--dataset", "kinetics400", "--root", kinetics["root"],
                                      "--protocol", "half-classes", "--draws", "2", "--seed", "5"])
    assert len(result["runs"]) == 2 and all(r["evaluated"] == 2 for r in result["runs"])
    for i, r in enumerate(result["runs"]):
        expected = [kinetics["classnames"][c] for c in text4vis_half(5, 5 + i)]
        assert [row["class"] for row in r["per_class"]] == expected


def test_zeroshot_all_classes_split(tmp_path, one_thread):
    kinetics = make_kinetics(tmp_path / "k400", classes=("a", "b"), videos_per_class=1, missing=0)
    result = zeroshot_json(tmp_path, ["--checkpoint", save_checkpoint(tmp_path / "ckpt.pt"),
                                      "--dataset", "kinetics400", "--root", kinetics["root"],
                                      "--split", "train"])
    assert result["protocol"] == "all-classes" and result["runs"][0]["name"] == "train"
    assert result["runs"][0]["evaluated"] == len(kinetics["train"]) == 2


def test_zeroshot_video_flags_by_hand(ucf, tmp_path, capsys, one_thread):
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt", num_frames=4)
    model = prompts.load_actionclip(checkpoint).eval()
    paths = [ucf["test"][1][0][0]]
    (tmp_path / "labels.txt").write_text("\n".join(UCF_NAMES) + "\n")
    probabilities, printed = {}, {}
    for name, extra in (("labels", ["--labels", *UCF_NAMES]),
                        ("file", ["--labels-file", str(tmp_path / "labels.txt")]),
                        ("bare", ["--labels", *UCF_NAMES, "--no-templates", "--top", "2"])):
        result = zeroshot_json(tmp_path, ["--checkpoint", checkpoint, "--video", *paths, *extra])
        probabilities[name] = [list(v["probabilities"].values()) for v in result["videos"]]
        printed[name] = [line for line in capsys.readouterr().out.splitlines() if "%" in line]
    for name, templates in (("labels", prompts.TEMPLATES), ("bare", prompts.LABEL_ONLY)):
        expected = hand_scores(model, paths, 4, templates)
        assert torch.allclose(torch.tensor(probabilities[name]), expected, atol=1e-5), name
    assert probabilities["file"] == probabilities["labels"]
    assert len(printed["labels"]) == 3 and len(printed["bare"]) == 2  # --top 2 of 3 labels


# --------------------------------------------------------------------------------------------------
# video_data.py prepare flags


def test_prepare_flags_shape_the_output(ucf, tmp_path):
    def prepare(out, *extra, dataset="ucf101", root=ucf["root"]):
        command = ["prepare", "--dataset", dataset, "--root", root, "--out", str(out), "--workers",
                   "1"]
        assert video_data.main(command + list(extra)) == 0
        return json.load(open(os.path.join(out, "PREPARED.json")))["converted"]

    def first_test_video(out):
        return sorted(r.path for r in video_data.load_split("ucf101", ucf["root"], "test",
                                                            prepared=str(out)).records)[0]

    prepare(tmp_path / "q20", "--quality", "20")
    prepare(tmp_path / "q95", "--quality", "95")
    rough, sharp = first_test_video(tmp_path / "q20"), first_test_video(tmp_path / "q95")
    size = lambda folder: sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    original = video_data.read_frames(ucf["test"][1][0][0], [3]).float()
    error = lambda folder: (video_data.read_frames(folder, [3]).float() - original).abs().mean()
    assert size(sharp) > 1.2 * size(rough) and error(sharp) < error(rough)
    prepare(tmp_path / "gop", "--form", "video", "--gop", "4", "--short-side", "16")
    video = first_test_video(tmp_path / "gop")
    assert video_data.read_frames(video, [0]).shape == (1, 16, 16, 3)  # 32 x 32 -> short side 16
    assert video_data._build_index(video).keyframes == (0, 4, 8, 12)
    (tmp_path / "list.txt").write_text(listed(ucf["test"][1], ucf["root"]))
    (tmp_path / "names.txt").write_text("\n".join(ucf["classnames"]) + "\n")
    assert prepare(tmp_path / "listed", "--list-file", str(tmp_path / "list.txt"),
                   "--classnames-file", str(tmp_path / "names.txt"), dataset="list") == 3  # listed
    kinetics = make_kinetics(tmp_path / "k400", classes=("a",), videos_per_class=1, layout="flat",
                             missing=0)
    moved = str(tmp_path / "elsewhere")
    shutil.move(os.path.join(kinetics["root"], "videos"), moved)
    assert prepare(tmp_path / "k", "--videos-dir", moved, "--form", "video", dataset="kinetics400",
                   root=kinetics["root"]) == 3                        # train, val, test videos


# --------------------------------------------------------------------------------------------------
# GPU-only paths: run where CUDA exists


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@CUDA
def test_cuda_fp16_with_loss_scaling(data, tmp_path):
    fp16 = train.train(train.parse_args(first_step_flags(data, tmp_path / "fp16", "--precision",
                                                         "fp16")))
    assert fp16.dtype == torch.float16 and fp16.scaler.is_enabled() and fp16.scaler.get_scale() > 1
    train.train(train.parse_args(first_step_flags(data, tmp_path / "fp32", "--precision", "fp32")))
    half, full = logged_losses(tmp_path / "fp16")[0], logged_losses(tmp_path / "fp32")[0]
    assert half != full and half == pytest.approx(full, rel=0.05)
    stepped = run(data, tmp_path / "step", "--precision", "fp16", *sgd_like())
    moved = stepped.model.clip.visual.conv1.weight.detach().cpu() - \
        clip_weights(data["clip"])["clip.visual.conv1.weight"]
    assert 1e-4 < moved.abs().max() < 0.1                             # a step, unscaled before it


@CUDA
def test_cuda_auto_precision_is_bf16(data, tmp_path):
    auto = train.train(train.parse_args(first_step_flags(data, tmp_path / "auto")))
    train.train(train.parse_args(first_step_flags(data, tmp_path / "fp32", "--precision", "fp32")))
    assert auto.dtype == torch.bfloat16 and not auto.scaler.is_enabled()  # A100, H100, H200
    half, full = logged_losses(tmp_path / "auto")[0], logged_losses(tmp_path / "fp32")[0]
    assert half != full and half == pytest.approx(full, rel=0.05)


@CUDA
def test_cuda_evaluate_fp32_and_autocast(ucf, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt", num_frames=4)
    common = ["--checkpoint", checkpoint, "--dataset", "ucf101", "--root", ucf["root"], "--workers",
              "0"]
    scores = {}
    for name, extra in (("cpu", ["--device", "cpu"]), ("gpu32", ["--device", "cuda", "--fp32"]),
                        ("gpu16", ["--device", "cuda"])):
        evaluate.main(common + extra + ["--save-scores", str(tmp_path / f"{name}.pt")])
        scores[name] = torch.load(tmp_path / f"{name}.pt")["scores"]
    assert torch.allclose(scores["gpu32"], scores["cpu"], atol=2e-3)    # TF32 convolutions
    assert not torch.equal(scores["gpu16"], scores["gpu32"])
    assert torch.allclose(scores["gpu16"], scores["cpu"], atol=5e-2)


@CUDA
def test_cuda_nccl_one_process_equals_plain_python(data, tmp_path):
    one_step = sgd_like("--precision", "fp32")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1",
               f"--master_port={free_port()}", "train.py",
               *flags(data, tmp_path / "nccl", *one_step)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run(data, tmp_path / "plain", *one_step)
    a, b = saved_model(tmp_path / "nccl"), saved_model(tmp_path / "plain")
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=0, atol=1e-5), key
