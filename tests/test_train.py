"""train.py: the loss, the global batch under DDP, exact resume, and every ablation flag.

The specifications: Eq. 4 against a hand computation and its properties; a 2-process torchrun (gloo,
CPU) run ends with the parameters of a 1-process run on the same global batch; a run stopped halfway
and resumed ends with the parameters of an uninterrupted one; every flag of the paper's tables runs a
step and has its effect; a fast --demo learns. Tiny CLIPs, 16 x 16 synthetic videos, a few steps.
"""

import copy
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import clip_model
import evaluate
import prompts
import train
import video_data
from dataset_fixtures import make_charades
from test_demo import assert_pictured_frames_are_the_test_frames

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A CLIP small enough for a step in well under a second; heads = width / 64, as clip_config reads them.
TINY = dict(embed_dim=32, image_resolution=16, vision_layers=1, vision_width=64, vision_patch_size=8,
            context_length=24, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=1)
TINY_RESNET = dict(TINY, image_resolution=32, vision_layers=(1, 1, 1, 1), vision_width=8, vision_patch_size=None)
CLASSES = [("red", "circle", "moving left"), ("red", "circle", "moving right"),
           ("blue", "square", "growing"), ("blue", "square", "shrinking")]


def save_clip(path, config, seed=1234):  # not --seed 0: re-initialising must change weights
    torch.manual_seed(seed)
    torch.save(clip_model.CLIP(**config).state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny 'pre-trained' CLIP file (ViT and ResNet) and synthetic videos: 4 classes, 16 train, 8 val."""
    root = tmp_path_factory.mktemp("data")
    video_data.make_synthetic_dataset(str(root), CLASSES, 4, num_frames=8, size=16, split="train")
    video_data.make_synthetic_dataset(str(root), CLASSES, 2, num_frames=8, size=16, split="val")
    return dict(root=str(root), clip=save_clip(root / "clip.pt", TINY), resnet=save_clip(root / "rn.pt", TINY_RESNET))


def flags(data, out, *extra):
    """A run of 1 epoch = 2 steps of 8 videos (4 frames) on the tiny CLIP; `extra` flags come last and win."""
    return ["--arch", data["clip"], "--dataset", "synthetic", "--root", data["root"], "--frames", "4",
            "--epochs", "1", "--batch-size", "8", "--lr", "1e-3", "--warmup-epochs", "0", "--workers", "0",
            "--eval-every", "0", "--log-every", "1", "--augment", "crop", "--in-memory", "--out", str(out), *extra]


def run(data, out, *extra):
    return train.train(train.parse_args(flags(data, out, *extra)))


def saved_model(out, name="last.pt"):
    return torch.load(os.path.join(out, name), map_location="cpu", weights_only=True)["model"]


def assert_same_parameters(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=0, atol=atol), key


def clip_weights(path):
    return {f"clip.{k}": v for k, v in clip_model.read_state_dict(path).items()}


# --------------------------------------------------------------------------------------------------
# The loss [Sec. 3.1, Eq. 4]


def kl(p, q):
    """KL(p || q) of two distributions given as lists, 0 log 0 = 0."""
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def softmax(row):
    exps = [math.exp(x) for x in row]
    return [e / sum(exps) for e in exps]


def test_loss_matches_a_hand_computation():
    logits = [[2.0, 0.5, -1.0], [0.3, 1.2, 0.1], [-0.4, 0.8, 1.5]]
    labels = [0, 0, 1]                                       # videos 0 and 1 share a class
    same = [[1.0 if a == b else 0.0 for b in labels] for a in labels]
    target = [[x / sum(row) for x in row] for row in same]   # rows normalised: [.5, .5, 0], [.5, .5, 0], [0, 0, 1]
    columns = [list(col) for col in zip(*logits)]
    v2t = sum(kl(t, softmax(row)) for t, row in zip(target, logits)) / 3
    t2v = sum(kl(t, softmax(col)) for t, col in zip(target, columns)) / 3  # target is symmetric here
    expected = (v2t + t2v) / 2
    got = train.kl_video_text_loss(torch.tensor(logits), torch.tensor(labels), torch.tensor(labels))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_loss_is_zero_when_predictions_equal_the_targets():
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    same = (labels[:, None] == labels[None, :]).float()
    logits = 100 * same                                       # softmax = the normalised ground truth, both ways
    assert train.kl_video_text_loss(logits, labels, labels).item() == pytest.approx(0, abs=1e-6)
    assert train.kl_video_text_loss(torch.zeros(6, 6), labels, labels).item() > 0.3


def test_several_positives_per_row_are_all_positives():
    labels = torch.tensor([0, 0, 1])
    split = torch.tensor([[5.0, 5.0, 0.0], [5.0, 5.0, 0.0], [0.0, 0.0, 5.0]])   # mass spread over both positives
    one_hot = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])  # CLIP's one-hot target
    loss = lambda logits: train.kl_video_text_loss(logits, labels, labels).item()
    assert loss(split) < loss(one_hot)
    assert loss(one_hot) > math.log(2) / 2 - 0.05             # each of 4 rows misses half of its target


def test_loss_is_symmetric():
    torch.manual_seed(0)
    logits = torch.randn(5, 7)
    videos, texts = torch.tensor([0, 1, 1, 2, 3]), torch.tensor([1, 0, 2, 3, 1, 1, 2])
    forward = train.kl_video_text_loss(logits, videos, texts)
    assert torch.allclose(forward, train.kl_video_text_loss(logits.t(), texts, videos))


def test_multi_hot_videos_match_every_text_of_their_classes():
    logits = torch.randn(3, 3)
    multi_hot = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # video 0: classes 0 and 1
    texts = torch.tensor([0, 1, 2])
    single = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert not torch.allclose(train.kl_video_text_loss(logits, multi_hot, texts),
                              train.kl_video_text_loss(logits, single, texts))
    assert torch.allclose(train.kl_video_text_loss(logits, single, texts),
                          train.kl_video_text_loss(logits, texts, texts))


# --------------------------------------------------------------------------------------------------
# Optimiser and schedule [Sec. 4.1]


def test_the_loss_is_fp32_under_bf16_autocast():
    """Under autocast, a bf16 matmul would round logits of 100 x cosine to steps of 1/8 and the
    gradients by about 10%: the loss, and its gradient, must equal the fp32 computation."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 10

    def loss_and_grad(autocast):
        video = torch.randn(64, 128, generator=torch.Generator().manual_seed(1), requires_grad=True)
        text = torch.nn.functional.normalize(torch.randn(64, 128, generator=g.manual_seed(2)), dim=-1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = train.contrastive_loss(torch.nn.functional.normalize(video, dim=-1), text, torch.tensor(100.0),
                                          labels, labels)
        loss.backward()
        return loss, video.grad

    exact, mixed = loss_and_grad(False), loss_and_grad(True)
    assert mixed[0].dtype == torch.float32
    torch.testing.assert_close(mixed[0], exact[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mixed[1], exact[1], rtol=1e-5, atol=1e-7)


def test_schedule_warms_up_linearly_then_cosine_to_zero():
    args = train.parse_args(["--root", "x", "--epochs", "50", "--warmup-epochs", "5", "--lr", "5e-6"])
    assert train.lr_at(0, args) == 0
    assert train.lr_at(2.5, args) == pytest.approx(2.5e-6)
    assert train.lr_at(5, args) == pytest.approx(5e-6)
    assert train.lr_at(27.5, args) == pytest.approx(2.5e-6)  # halfway through the cosine
    assert train.lr_at(50, args) == pytest.approx(0, abs=1e-20)


def test_new_modules_get_ten_times_the_lr_and_matrices_alone_are_decayed(data):
    args = train.parse_args(["--arch", data["clip"], "--root", "x"])
    model = train.build_video_model(args, num_classes=4)
    optimizer = train.build_optimizer(model, args)
    names = {id(p): n for n, p in model.named_parameters()}
    new = {id(p) for p in model.new_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert group["lr_mult"] == (10.0 if id(p) in new else 1.0)
            decayed = p.ndim >= 2 and "embedding" not in names[id(p)]
            assert group["weight_decay"] == (0.2 if decayed else 0.0), names[id(p)]
    assert optimizer.defaults["betas"] == (0.9, 0.98) and optimizer.defaults["eps"] == 1e-8


# --------------------------------------------------------------------------------------------------
# The global batch under DDP


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process_on_the_same_global_batch(data, tmp_path):
    """torchrun --nproc_per_node=2 (gloo): the contrastive batch is the global one and gradients are synced.

    With eps 1e-8, AdamW's first steps are lr x sign(gradient): a gradient that is zero in exact arithmetic
    (attention's key bias: a constant added to every key cancels in the softmax) becomes a full-size step
    whose sign is float rounding, different in any two runs that sum in a different order. --adam-eps 1
    makes every step proportional to its gradient, so equal parameters mean equal gradients.
    """
    two, one = tmp_path / "two", tmp_path / "one"
    sgd_like = ("--epochs", "2", "--adam-eps", "1", "--lr", "0.1", "--new-lr-mult", "1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               "train.py", *flags(data, two, *sgd_like)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    run(data, one, *sgd_like)
    assert_same_parameters(saved_model(two), saved_model(one), atol=1e-5)
    losses = [[r["loss"] for r in map(json.loads, open(d / "metrics.jsonl")) if "loss" in r]
              for d in (two, one)]                            # the log: Eq. 4 on the global batch
    assert len(losses[1]) == 4 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    moved = (saved_model(one)["clip.visual.conv1.weight"] - clip_weights(data["clip"])["clip.visual.conv1.weight"])
    assert moved.abs().max() > 1e-3                          # the steps are far larger than the tolerance


def test_each_process_sees_its_share_of_every_global_batch(data, tmp_path):
    ranks = [train.build_data(train.parse_args(flags(data, tmp_path)), train.Dist(rank, 0, 2),
                              *train.load_splits(train.parse_args(flags(data, tmp_path))), 16)[1] for rank in (0, 1)]
    single = train.build_data(train.parse_args(flags(data, tmp_path)), train.Dist(),
                              *train.load_splits(train.parse_args(flags(data, tmp_path))), 16)[1]
    for sampler in ranks + [single]:
        sampler.set_epoch(3)
    shards, whole = [list(s) for s in ranks], list(single)
    for step in range(2):                                    # global batch of 8 = 2 processes x 4
        assert sorted(shards[0][4 * step:4 * step + 4] + shards[1][4 * step:4 * step + 4]) == \
            sorted(whole[8 * step:8 * step + 8])


# --------------------------------------------------------------------------------------------------
# Runs that survive


@pytest.mark.parametrize("stop", [3, 2], ids=["mid-epoch", "epoch-boundary"])
def test_resume_equals_an_uninterrupted_run(data, tmp_path, stop):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(data, straight, "--epochs", "3", "--eval-every", "1")
    run(data, resumed, "--epochs", "3", "--eval-every", "1", "--stop-after-steps", str(stop))
    assert torch.load(resumed / "last.pt", weights_only=True)["step"] == stop
    with open(resumed / "metrics.jsonl", "a") as f:                   # a step logged after the checkpoint, and
        f.write(json.dumps({"step": stop + 1, "loss": 9.9}) + '\n{"step": ')   # a line a crash cut short
    finished = train.train(train.parse_args(["--resume", "--out", str(resumed)]))
    assert finished.step == 6
    steps = [r["step"] for r in map(json.loads, open(resumed / "metrics.jsonl")) if "loss" in r]
    assert steps == list(range(1, 7))                                 # every step logged once, in order
    assert_same_parameters(saved_model(straight), saved_model(resumed))
    a, b = (torch.load(d / "last.pt", weights_only=True) for d in (straight, resumed))
    assert a["best"] == b["best"] and a["step"] == b["step"]
    for key in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][key]["exp_avg_sq"], b["optimizer"]["state"][key]["exp_avg_sq"])


def test_an_existing_output_folder_is_never_overwritten(data, tmp_path):
    run(data, tmp_path, "--stop-after-steps", "1")
    with pytest.raises(SystemExit, match="--resume"):
        run(data, tmp_path)
    with pytest.raises(SystemExit, match="no .*last.pt"):
        train.train(train.parse_args(["--resume", "--out", str(tmp_path / "nothing")]))


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(data, tmp_path, monkeypatch):
    contrastive_loss, calls = train.contrastive_loss, iter(range(100))

    def explode_at_step_3(*inputs):                       # one call per step (no --grad-accum)
        loss = contrastive_loss(*inputs)
        return loss * float("nan") if next(calls) == 2 else loss
    monkeypatch.setattr(train, "contrastive_loss", explode_at_step_3)
    with pytest.raises(SystemExit, match=r"step 2: the loss is nan.*last.pt.*--finetune-from"):
        run(data, tmp_path, "--epochs", "2")
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    assert checkpoint["step"] == 2 and not os.path.exists(tmp_path / "last.pt.tmp")
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())


def test_checkpoints_load_as_actionclip_with_config_and_validation_covers_every_video(data, tmp_path):
    result = run(data, tmp_path, "--eval-every", "1")
    checkpoint = torch.load(tmp_path / "best.pt", weights_only=True)
    assert {"model", "model_config", "optimizer", "scaler", "epoch", "step", "best", "args"} <= set(checkpoint)
    assert checkpoint["args"]["frames"] == 4 and checkpoint["model_config"]["num_frames"] == 4
    model = prompts.load_actionclip(str(tmp_path / "best.pt"))
    assert_same_parameters(model.state_dict(), result.model.state_dict())
    records = list(map(json.loads, open(tmp_path / "metrics.jsonl")))
    val = [r["val"] for r in records if "val" in r]
    assert val[0]["total"] == 8 and val[0]["evaluated"] == 8   # every held-out video, none dropped
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert {"epoch", "loss", "lr", "lr_new", "videos_per_s"} <= set(steps[0])


def test_resume_takes_the_saved_configuration_and_refuses_changes(data, tmp_path):
    run(data, tmp_path, "--stop-after-steps", "1")
    args = train.parse_args(flags(data, tmp_path, "--resume", "--workers", "2"))   # the same command, resumed
    assert args.resume and args.workers == 2 and args.stop_after_steps is None and args.lr == 1e-3
    with pytest.raises(SystemExit, match=r"--lr \(the run has 0.001\)"):
        train.parse_args(flags(data, tmp_path, "--resume", "--lr", "0.5"))


def test_loader_workers_do_not_change_the_data(data, tmp_path):
    run(data, tmp_path / "none", "--workers", "0")
    run(data, tmp_path / "two", "--workers", "2")
    assert_same_parameters(saved_model(tmp_path / "none"), saved_model(tmp_path / "two"))


def per_epoch_reference(args, items, sampler, epochs, per_step, steps_per_epoch):
    """What the per-epoch loaders drew, step by step: the sampler's order of each epoch, each video
    drawn from mix_seed(seed, epoch, index) through the CPU transform, then its template."""
    videos = copy.copy(items.videos)
    videos.transform = video_data.train_transform(16, randaugment=True)   # today's float path
    steps = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        order = list(sampler)[:steps_per_epoch * per_step]
        for start in range(0, len(order), per_step):
            step = []
            for i in order[start:start + per_step]:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(train.mix_seed(args.seed, epoch, i))
                    video = videos[i][0]
                    template = int(torch.randint(items.num_templates, ()))
                step.append((i, video, template, int(videos[i][1])))
            steps.append(step)
    return steps


def test_one_loader_for_the_run_draws_what_the_per_epoch_loaders_drew(data, tmp_path):
    """Indices, crops, flips, RandAugment, colour and templates of every step are unchanged by the
    one DataLoader of the whole run (workers and a resume mid-epoch included)."""
    extra = ("--augment", "official", "--randaugment", "--epochs", "3")
    args = train.parse_args(flags(data, tmp_path, *extra))
    items, sampler, _ = train.build_data(args, train.Dist(), *train.load_splits(args), 16)
    reference = per_epoch_reference(args, items, sampler, 3, 8, 2)
    for first_step, workers in ((0, 0), (3, 1)):  # from the start; resumed mid-epoch 1, in a worker
        order = train.RunOrder(sampler, 8, 8, 2, first_step, 6)
        loader = torch.utils.data.DataLoader(items, batch_sampler=order, num_workers=workers)
        steps = list(zip(order, loader))
        assert len(steps) == 6 - first_step
        for expected, (pairs, (video, target, templates, text_classes)) in zip(
                reference[first_step:], steps):
            assert [i for _, i in pairs] == [i for i, _, _, _ in expected]
            assert video.pixels.dtype == torch.uint8
            torch.testing.assert_close(video_data.finish_batch(video, torch.device("cpu")),
                                       torch.stack([v for _, v, _, _ in expected]),
                                       rtol=0, atol=2e-6)
            assert templates.tolist() == [k for _, _, k, _ in expected]
            assert text_classes.tolist() == [c for _, _, _, c in expected]


def test_decode_on_device_trains_exactly_as_decoding_in_the_workers(data, tmp_path):
    """Prepared JPEG frames: workers read the files and the device decodes them (here the CPU, with
    the same torchvision.io.decode_jpeg call as CUDA): the same steps, to the bit."""
    frames = tmp_path / "frames"
    video_data.prepare("synthetic", data["root"], str(frames), "frames", short_side=16)
    extra = ("--prepared", str(frames), "--augment", "official", "--workers", "1")
    base = [f for f in flags(data, tmp_path, *extra) if f != "--in-memory"]
    outs = {mode: tmp_path / mode for mode in ("on", "off")}
    runs = {mode: train.train(train.parse_args(base + ["--out", str(out),
                                                       "--decode-on-device", mode]))
            for mode, out in outs.items()}
    assert runs["on"].items.videos.read.jpeg_bytes and not runs["off"].items.videos.read.jpeg_bytes
    assert_same_parameters(saved_model(outs["on"]), saved_model(outs["off"]))
    with pytest.raises(SystemExit, match="--decode-on-device on: --randaugment"):
        train.train(train.parse_args(base + ["--out", str(tmp_path / "ra"),
                                             "--decode-on-device", "on", "--randaugment"]))


def test_the_eta_follows_the_run_so_far_and_the_record_keeps_each_interval(tmp_path, monkeypatch,
                                                                           capsys):
    args = train.parse_args(["--root", "x", "--epochs", "10", "--batch-size", "8",
                             "--out", str(tmp_path)])
    run_ = types.SimpleNamespace(args=args, steps_per_epoch=10, step=0, ddp=train.Dist(),
                                 pace=train.Pace(0, 0.0))
    times = iter([100.0, 200.0, 200.1])    # 10 steps in 100 s, 10 in 100 s, 10 prefetched in 0.1 s
    monkeypatch.setattr(train.time, "time", lambda: next(times))
    since = 0.0
    for step in (10, 20, 30):
        run_.step = step
        train.log_step(run_, [1.0] * 10, since)
        since = {10: 100.0, 20: 200.0}.get(step)
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    etas = [r["eta_s"] for r in records]
    assert etas == [900.0, 800.0, round(200.1 / 30 * 70, 1)]       # not 0.7 s at the burst
    assert records[2]["videos_per_s"] == pytest.approx(800)          # the burst itself is kept
    assert records[2]["videos_per_s_run"] == pytest.approx(8 * 30 / 200.1)
    assert "eta 07:46" in capsys.readouterr().out.splitlines()[-1]


def test_help_explains_every_flag_with_the_papers_value():
    result = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0
    for action in train.get_parser()._actions:
        assert action.help, action.dest
    for flag in ("--unimodal", "--init-text", "--no-text-prompts", "--visual-prompt", "--freeze-text", "--arch",
                 "--frames", "--shots", "--lr", "--weight-decay", "--warmup-epochs", "--epochs"):
        help_text = next(a.help for a in train.get_parser()._actions if flag in a.option_strings)
        assert "paper" in help_text or "Table" in help_text, flag


# --------------------------------------------------------------------------------------------------
# Every ablation is a flag, and acts


def test_unimodal_trains_a_linear_classifier_with_cross_entropy(data, tmp_path):   # Table 1
    result = run(data, tmp_path, "--unimodal", "--eval-every", "1")
    assert isinstance(result.model, prompts.VideoClassifier) and result.model.fc.out_features == 4
    after, before = saved_model(tmp_path), clip_weights(data["clip"])
    for name, value in before.items():
        if train.encoder_of(name[len("clip."):]) != "vision":      # text encoder and temperature: untouched
            assert torch.equal(after["actionclip." + name], value), name
    assert not torch.equal(after["actionclip.clip.visual.conv1.weight"], before["clip.visual.conv1.weight"])
    assert isinstance(prompts.load_actionclip(str(tmp_path / "last.pt")), prompts.VideoClassifier)


@pytest.mark.parametrize("encoder", ["vision", "text"])
def test_random_initialisation_of_one_encoder(data, encoder):   # Table 2
    args = train.parse_args(["--arch", data["clip"], "--root", "x", f"--init-{encoder}", "random"])
    model = train.build_video_model(args, 4)
    for name, value in clip_weights(data["clip"]).items():
        mine = model.state_dict()[name]
        part = train.encoder_of(name[len("clip."):])
        if part == encoder and value.numel() > 1 and value.std() > 0:
            assert not torch.equal(mine, value), name
        elif part != encoder:
            assert torch.equal(mine, value), name


def test_no_text_prompts_trains_and_tests_on_bare_class_names(data, tmp_path):   # Table 3
    result = run(data, tmp_path, "--no-text-prompts", "--stop-after-steps", "1")
    assert result.templates == prompts.LABEL_ONLY and result.tokens.shape[:2] == (1, len(CLASSES))
    full = clip_model.tokenize(video_data.synthetic_classname(*CLASSES[2]), 24)   # (1, 24)
    width = result.tokens.shape[2]                    # trimmed after the longest text's EOT
    assert full[:, :width].equal(result.tokens[0, 2:3].cpu()) and not full[:, width:].any()
    assert {result.items[0, i][2] for i in range(len(result.items))} == {0}       # the one template
    assert {result.items[0, i][3] for i in range(len(result.items))} == set(range(len(CLASSES)))
    with_prompts = run(data, tmp_path / "templates", "--stop-after-steps", "1")
    assert with_prompts.tokens.shape[:2] == (16, len(CLASSES))
    templates = {with_prompts.items[0, i][2] for i in range(16)}
    assert len(templates) > 1                                         # several templates drawn


@pytest.mark.parametrize("name", list(prompts.VISUAL_PROMPTS))
def test_every_visual_prompt_trains_every_parameter(data, tmp_path, name):   # Table 4
    result = run(data, tmp_path, "--visual-prompt", name, "--stop-after-steps", "1")
    assert type(result.model.visual_prompt) is prompts.VISUAL_PROMPTS[name]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["model_config"]["visual_prompt"] == name
    # one step gives every trainable parameter a gradient: none unused (DDP needs that) and none left out
    trained = set(torch.load(tmp_path / "last.pt", weights_only=True)["optimizer"]["state"])
    assert len(trained) == sum(1 for p in result.model.parameters() if p.requires_grad)


@pytest.mark.parametrize("encoder", ["vision", "text"])
def test_a_frozen_encoder_keeps_its_weights_and_has_no_optimiser_state(data, tmp_path, encoder):   # Table 5
    result = run(data, tmp_path, f"--freeze-{encoder}")
    after, before = saved_model(tmp_path), clip_weights(data["clip"])
    for name, value in before.items():
        part = train.encoder_of(name[len("clip."):])
        if part == encoder:
            assert torch.equal(after[name], value), name
    other = "text" if encoder == "vision" else "vision"
    assert any(not torch.equal(after[n], v) for n, v in before.items() if train.encoder_of(n[5:]) == other)
    in_optimizer = {id(p) for group in result.optimizer.param_groups for p in group["params"]}
    frozen = [p for n, p in result.model.clip.named_parameters() if train.encoder_of(n) == encoder]
    assert frozen and not any(id(p) in in_optimizer or p in result.optimizer.state for p in frozen)


def test_arch_takes_a_resnet_clip_file_and_the_tiny_clip(data, tmp_path):   # Table 6
    result = run(data, tmp_path, "--arch", data["resnet"], "--visual-prompt", "meanP", "--stop-after-steps", "1")
    assert isinstance(result.model.clip.visual, clip_model.ModifiedResNet)
    tiny = train.build_video_model(train.parse_args(["--arch", "tiny", "--root", "x"]), 4)
    assert tiny.clip.input_resolution == train.TINY_CLIP["image_resolution"]
    with pytest.raises(FileNotFoundError, match="neither an official CLIP model name"):
        train.build_video_model(train.parse_args(["--arch", "ViT-Q/99", "--root", "x"]), 4)


@pytest.mark.parametrize("frames", [2, 6])
def test_frames_sets_the_frames_per_video(data, tmp_path, frames):   # Table 6
    result = run(data, tmp_path, "--frames", str(frames), "--stop-after-steps", "1")
    assert result.items[0, 0][0].pixels.shape[0] == frames and result.val[0][0].shape[1] == frames
    assert result.model.config["num_frames"] == frames


def test_shots_draws_k_videos_per_class_with_a_fixed_seed(data, tmp_path):   # Fig. 3
    result = run(data, tmp_path, "--shots", "2", "--batch-size", "4", "--stop-after-steps", "1")
    labels = [int(result.items[0, i][1]) for i in range(len(result.items))]
    assert sorted(labels) == [0, 0, 1, 1, 2, 2, 3, 3]
    split = train.load_splits(train.parse_args(flags(data, tmp_path)))[0]
    draw = lambda seed: [r.path for r in train.few_shot(split, 2, seed).records]
    assert draw(0) == draw(0) and draw(0) != draw(1)
    assert [r.path for r in result.items.videos.records] == draw(0)


def test_finetune_from_an_actionclip_checkpoint(data, tmp_path):   # UCF101/HMDB51 from Kinetics [Sec. 4.3]
    run(data, tmp_path / "kinetics", "--visual-prompt", "lstm")
    start_args = train.parse_args(["--root", "x", "--frames", "4", "--finetune-from",
                                   str(tmp_path / "kinetics" / "last.pt")])
    start = train.build_video_model(start_args, 4)
    assert isinstance(start.visual_prompt, prompts.LSTM)
    assert_same_parameters(start.state_dict(), saved_model(tmp_path / "kinetics"))
    result = run(data, tmp_path / "ucf", "--finetune-from", str(tmp_path / "kinetics" / "last.pt"),
                 "--stop-after-steps", "1")
    assert isinstance(result.model.visual_prompt, prompts.LSTM)
    saved = torch.load(tmp_path / "ucf" / "last.pt", map_location="cpu", weights_only=True)
    assert saved["args"]["visual_prompt"] == "lstm"                  # what the run is, not the flag's default
    with pytest.raises(SystemExit):                                   # the prompt comes with the checkpoint
        train.parse_args(["--root", "x", "--finetune-from", str(tmp_path / "kinetics" / "last.pt"),
                          "--visual-prompt", "transf"])


# --------------------------------------------------------------------------------------------------
# Memory and speed options


def test_grad_checkpointing_gives_the_same_step(data, tmp_path):
    plain = run(data, tmp_path / "plain", "--stop-after-steps", "1")
    checkpointed = run(data, tmp_path / "ckpt", "--grad-checkpointing", "--stop-after-steps", "1")
    assert checkpointed.model.clip.visual.transformer.grad_checkpointing
    assert_same_parameters(plain.model.state_dict(), checkpointed.model.state_dict(), atol=1e-6)


def test_randaugment_follows_the_official_configs():
    """RandAugment(2, 9) is on for Kinetics (the official K-400 config), off for the others, and a flag
    either way; it belongs to --augment official."""
    def transform(*extra):
        return train.augmentation(train.parse_args(["--root", "x", *extra]), 32)

    assert isinstance(transform("--dataset", "kinetics400").randaugment, v2.RandAugment)
    assert transform("--dataset", "ucf101").randaugment is None
    assert isinstance(transform("--dataset", "ucf101", "--randaugment").randaugment, v2.RandAugment)
    assert transform("--dataset", "kinetics400", "--no-randaugment").randaugment is None
    with pytest.raises(SystemExit):
        train.parse_args(["--root", "x", "--augment", "crop", "--randaugment"])


def test_grad_accum_splits_the_global_batch_into_micro_batches(data, tmp_path):
    result = run(data, tmp_path, "--grad-accum", "2")
    assert result.micro_batch == 4 and result.step == 2 and result.steps_per_epoch == 2


def test_clip_grad_bounds_the_step(data, tmp_path):
    sgd_like = ("--adam-eps", "1", "--lr", "0.1", "--new-lr-mult", "1", "--weight-decay", "0",   # step ~ gradient
                "--stop-after-steps", "1")
    before = clip_weights(data["clip"])["clip.visual.conv1.weight"]
    free = run(data, tmp_path / "free", *sgd_like).model.clip.visual.conv1.weight.detach()
    clipped = run(data, tmp_path / "clipped", *sgd_like, "--clip-grad", "1e-6").model.clip.visual.conv1.weight.detach()
    assert (free - before).abs().max() > 1e-4 and (clipped - before).abs().max() < 1e-6


def test_compile_compiles_what_the_forward_pass_calls(data, tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or module)
    result = run(data, tmp_path, "--compile", "--stop-after-steps", "1")
    assert compiled == [result.model_ddp] and isinstance(result.model_ddp, train.VideoTextEncoder)


def test_multi_label_charades_trains_on_labelled_videos_and_reports_map(tmp_path):
    fixture = make_charades(tmp_path / "charades", videos_per_split=5)
    clip = save_clip(tmp_path / "clip.pt", dict(TINY, image_resolution=32))
    result = train.train(train.parse_args(["--arch", clip, "--dataset", "charades", "--root", fixture["root"],
                                           "--frames", "2", "--epochs", "1", "--batch-size", "4", "--workers", "0",
                                           "--augment", "crop", "--out", str(tmp_path / "out")]))
    assert len(result.items) == 4                            # the video without an action is left out
    val = [record["val"] for record in map(json.loads, open(tmp_path / "out" / "metrics.jsonl")) if "val" in record]
    assert "mAP" in val[0] and val[0]["total"] == 5


def test_bf16_autocast_runs_on_the_cpu(data, tmp_path):
    result = run(data, tmp_path, "--precision", "bf16", "--stop-after-steps", "1")
    assert result.dtype == torch.bfloat16 and not result.scaler.is_enabled()


# --------------------------------------------------------------------------------------------------
# The demo


def test_a_fast_demo_learns(tmp_path, monkeypatch, capsys):
    """The whole demo cut down (fewer videos and epochs): both trainings, run at once in two
    processes, learn; the report, demo.png and curves.png are written; --seed reaches both."""
    monkeypatch.setattr(train, "DEMO_VIDEOS", {"train": 8, "val": 2, "unseen": 2})
    monkeypatch.setattr(train, "DEMO_EPOCHS", 12)
    monkeypatch.setattr(train, "DEMO_EVAL_EVERY", 6)
    results = train.demo(train.parse_args(["--demo", "--seed", "3", "--out", str(tmp_path)]))
    seen, unseen = train.demo_classes()
    for visual_prompt in ("transf", "meanP"):
        records = list(map(json.loads, open(tmp_path / visual_prompt / "metrics.jsonl")))
        losses = [record["loss"] for record in records if "loss" in record]
        assert len(losses) == 12 and losses[-1] < losses[0] - 0.2, losses   # one log line per epoch
        assert [record["epoch"] for record in records if "val" in record] == [6, 12]
        assert records[0]["config"]["seed"] == 3
        assert results[visual_prompt]["seen"] > 100 / len(seen)      # above chance after 72 steps
    printed = capsys.readouterr().out
    assert "zero-shot" in printed
    picture = np.asarray(Image.open(tmp_path / "demo.png").convert("RGB"))
    assert_pictured_frames_are_the_test_frames(picture, str(tmp_path / "data"))  # every frame
    if importlib.util.find_spec("matplotlib"):
        assert Image.open(tmp_path / "curves.png").size[0] > 0
    else:
        assert "no curves.png" in printed
    with pytest.raises(SystemExit, match="not written by --demo"):
        train.demo(train.parse_args(["--demo", "--out", str(tmp_path / "transf")]))
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        train.demo(train.parse_args(["--demo", "--out", str(tmp_path / "demo.png")]))


def test_demo_left_right_weighs_a_video_s_class_against_its_mirror():
    """The demo's left/right figure: a video moving left counts where its class outscores the same
    colour and shape moving right, whatever else scores higher (top-1 counts only the top class)."""
    classnames = ["red circle moving left", "red circle moving right", "red square moving left",
                  "red square moving right", "red square growing"]
    scores = torch.tensor([[0.3, 0.1, 0.6, 0.0, 0.0],     # moving left, over its mirror: counts
                           [0.2, 0.4, 0.0, 0.0, 0.4],     # moving left, under its mirror
                           [0.0, 0.0, 0.1, 0.2, 0.7],     # moving right, over its mirror: counts
                           [0.0, 0.0, 0.0, 0.0, 1.0]])    # growing: not a direction video
    targets = torch.tensor([0, 0, 3, 4])
    predictions = evaluate.Predictions(scores, targets, torch.ones(4, dtype=torch.bool))
    moving = torch.tensor([True, True, True, False])
    assert train.left_or_right(predictions, classnames, moving) == pytest.approx(200 / 3)
    assert train.top1(predictions, moving) == 0


# --------------------------------------------------------------------------------------------------
# What the log shows and what the weights do (issue #24)


def logged(out, key="loss"):
    """The metrics.jsonl records of `out` that hold `key`."""
    return [r for r in map(json.loads, open(os.path.join(out, "metrics.jsonl"))) if key in r]


def schedule_by_hand(epoch, lr, warmup, epochs):
    """Sec. 4.1's schedule, written out: linear warm-up from 0, then a half cosine to 0."""
    if epoch < warmup:
        return lr * epoch / warmup
    return lr * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup))) / 2


def test_the_lr_changes_every_step_and_the_log_shows_the_lr_each_step_used(data, tmp_path,
                                                                          monkeypatch):
    """2 steps an epoch, 1 epoch of warm-up in 2: the step starting at fractional epoch e runs at
    schedule(e) (steps at e = 0, 0.5, 1, 1.5; not at the whole epoch), read from the optimiser as
    it steps, and the log line of that step shows that lr (not the next step's)."""
    used, build_optimizer = [], train.build_optimizer

    def recording(model, args):
        optimizer = build_optimizer(model, args)
        optimizer.register_step_pre_hook(
            lambda opt, *_: used.append({g["name"]: g["lr"] for g in opt.param_groups}))
        return optimizer
    monkeypatch.setattr(train, "build_optimizer", recording)
    run(data, tmp_path, "--epochs", "2", "--warmup-epochs", "1", "--lr", "0.01")
    records = logged(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4] and len(used) == 4
    for record, groups in zip(records, used):
        start = record["epoch"] - 1 / 2                                # the epoch the step began at
        expected = schedule_by_hand(start, 0.01, 1, 2)
        assert groups["clip"] == pytest.approx(expected, abs=1e-12), record
        assert groups["new"] == pytest.approx(10 * expected, abs=1e-12), record  # --new-lr-mult
        assert record["lr"] == pytest.approx(groups["clip"], abs=1e-12), record
        assert record["lr_new"] == pytest.approx(groups["new"], abs=1e-12), record
    assert [round(g["clip"], 6) for g in used] == [0, 0.005, 0.01, 0.005]


def test_clip_grad_clips_the_unscaled_gradient_under_fp16_loss_scaling(data, tmp_path):
    """--precision fp16 on the CPU: autocast in fp16 and a GradScaler whose scale (65536) the
    gradients carry until unscaled. With --adam-eps 1 a first step is lr x the gradient: clipped to
    norm c, the parameters move by lr x c in all (fp32's step); clipping the scaled gradient would
    move them 65536 times less."""
    sgd_like = ("--adam-eps", "1", "--lr", "0.1", "--new-lr-mult", "1", "--weight-decay", "0",
                "--stop-after-steps", "1", "--clip-grad", "0.05",
                "--device", "cpu")                 # on CUDA, an overflow may skip fp16's first step
    before = clip_weights(data["clip"])

    def step(out, *extra):
        result = run(data, tmp_path / out, *sgd_like, *extra)
        after = result.model.state_dict()
        return result, torch.cat([(after[k] - v).flatten() for k, v in before.items()
                                  if v.is_floating_point()])
    fp16, half = step("fp16", "--precision", "fp16")
    _, full = step("fp32", "--precision", "fp32")
    assert fp16.scaler.is_enabled() and fp16.scaler.get_scale() == 65536  # scaled, not skipped
    assert half.norm() == pytest.approx(0.1 * 0.05, rel=0.01)          # lr x c
    assert torch.nn.functional.cosine_similarity(half, full, dim=0) > 0.99


def test_the_eta_after_resume_counts_only_the_steps_this_process_ran(data, tmp_path):
    """Resumed at step 3 of 100, the first log line's ETA extrapolates the one step run since (the
    interval rate of that line, videos_per_s), not 4 steps' worth of work in that time."""
    run(data, tmp_path, "--epochs", "50", "--stop-after-steps", "3")
    train.train(train.parse_args(["--resume", "--out", str(tmp_path), "--stop-after-steps", "4"]))
    (first,) = [r for r in logged(tmp_path) if r["step"] == 4]
    seconds_per_step = 8 / first["videos_per_s"]                       # --batch-size 8, one step
    assert first["eta_s"] == pytest.approx(seconds_per_step * 96, rel=0.5)  # 96 steps left


def test_freeze_text_leaves_the_temperature_training(data, tmp_path):   # Table 5
    """The temperature is neither encoder's: --freeze-text fixes the text encoder's weights (named
    here by hand), and the learned temperature still moves."""
    run(data, tmp_path, "--freeze-text", "--stop-after-steps", "1")
    after, before = saved_model(tmp_path), clip_weights(data["clip"])
    text = [n for n in before if not n.startswith(("clip.visual.", "clip.logit_scale"))]
    assert "clip.token_embedding.weight" in text and "clip.text_projection" in text
    assert all(torch.equal(after[n], before[n]) for n in text)
    assert not torch.equal(after["clip.logit_scale"], before["clip.logit_scale"])


def test_freeze_vision_keeps_a_resnet_s_batchnorm_statistics(data, tmp_path):   # Table 5
    """RN50-style CLIPs normalise with BatchNorm: a frozen vision encoder keeps its running means
    and variances too (in training mode they move without a gradient), which an unfrozen one
    updates."""
    before = clip_weights(data["resnet"])
    statistics = [n for n in before if "running_" in n or "num_batches_tracked" in n]
    assert statistics
    for out, extra in (("frozen", ("--freeze-vision",)), ("trained", ())):
        run(data, tmp_path / out, "--arch", data["resnet"], "--visual-prompt", "meanP",
            "--stop-after-steps", "1", *extra)
        after = saved_model(tmp_path / out)
        moved = {n for n in statistics if not torch.equal(after[n], before[n])}
        counters = {n for n in statistics if n.endswith("num_batches_tracked")}
        if extra:
            assert not moved, sorted(moved)
        else:                                                          # every BatchNorm counted
            assert counters < moved                                    # a batch, statistics moved


def test_the_validation_workers_live_through_the_run(data, tmp_path, monkeypatch):
    """One validation loader per run: the worker that decodes epoch 1's validation videos decodes
    epoch 2's too (a worker started for each validation costs its start-up every epoch)."""
    pids, getitem = tmp_path / "pids", video_data.VideoDataset.__getitem__

    def noting_the_worker(self, i):
        if self.mode == "test" and torch.utils.data.get_worker_info() is not None:
            with open(pids, "a") as f:                                 # from the worker process
                f.write(f"{os.getpid()}\n")
        return getitem(self, i)
    monkeypatch.setattr(video_data.VideoDataset, "__getitem__", noting_the_worker)
    run(data, tmp_path / "out", "--epochs", "2", "--eval-every", "1", "--workers", "1")
    seen = pids.read_text().split()
    assert len(seen) == 2 * 8 and seen[:8] == seen[8:] and len(set(seen)) == 1
