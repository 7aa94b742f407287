"""prompts.py: the textual and visual prompts, the ActionCLIP model, and both kinds of checkpoint.

Every visual prompt runs on a tiny random CLIP (built by clip_model.build_model) for T = 1, 8, 16, is
(or, for meanP, is not) sensitive to frame order, and trains. Exact properties: conv1d starts as a
temporal shift; shift is the official block wrapper, and with fraction 0 it is CLIP per frame; joint
with one frame is CLIP's image encoder.
An official ActionCLIP checkpoint, written in the release's layout with random weights, must load with
every key used and give the video features of the official Transf head, written out here step by step.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import clip_model
from prompts import (LABEL_ONLY, TEMPLATES, VISUAL_PROMPTS, ActionCLIP, Shift, VideoClassifier, checkpoint_payload,
                     class_prompts, ensemble_scores, load_actionclip, random_prompt, temporal_shift, text_features)

TINY = dict(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
            context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=1)
# For the official checkpoint: text width 128 gives the temporal transformer 2 heads, as ViT-B's gets 8.
TINY_2_HEADS = dict(TINY, embed_dim=128, transformer_width=128, transformer_heads=2)
PROMPTS = list(VISUAL_PROMPTS)
CLASSNAMES = ["jumping jacks", "swimming", "playing cello", "tai chi"]


def tiny_clip(cfg=TINY, seed=0):
    torch.manual_seed(seed)
    return clip_model.build_model(clip_model.CLIP(**cfg).state_dict())


@pytest.fixture(scope="module")
def clip():
    return tiny_clip()


def video(B=2, T=8, seed=1):
    return torch.randn(B, T, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def perturb(module, std=0.02, seed=3):
    """Move every parameter away from its initialisation, so that loading can be told from building."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


# --------------------------------------------------------------------------------------------------
# Textual prompts


def test_templates_are_the_official_sixteen():
    assert len(TEMPLATES) == 16
    assert TEMPLATES[0] == "a photo of action {}" and TEMPLATES[7] == "{}" and TEMPLATES[-1] == "The woman is {}"
    assert all(t.count("{}") == 1 for t in TEMPLATES)
    assert LABEL_ONLY == ["{}"]


def test_class_prompts_are_template_major():
    prompts = class_prompts(["run", "swim"], ["a {}", "{} now"])
    assert prompts == ["a run", "a swim", "run now", "swim now"]  # row k*C + c


def test_random_prompt_draws_every_template():
    g = torch.Generator().manual_seed(0)
    drawn = {random_prompt("surfing", g) for _ in range(400)}
    assert drawn == {t.format("surfing") for t in TEMPLATES}
    assert random_prompt("surfing", templates=LABEL_ONLY) == "surfing"


def test_text_features_match_encode_text(clip):
    model = ActionCLIP(clip, "meanP")
    feats = text_features(model, CLASSNAMES, batch_size=7)  # 64 prompts in uneven batches
    assert feats.shape == (16, 4, 64)
    for k, c in [(0, 0), (5, 3), (15, 2)]:
        tokens = clip_model.tokenize(TEMPLATES[k].format(CLASSNAMES[c]))
        expected = F.normalize(clip.encode_text(tokens), dim=-1)[0]
        torch.testing.assert_close(feats[k, c], expected, rtol=1e-5, atol=1e-6)
    label_only = text_features(model, CLASSNAMES, LABEL_ONLY)  # Table 3's ablation: the bare names
    bare = F.normalize(clip.encode_text(clip_model.tokenize(CLASSNAMES)), dim=-1)
    torch.testing.assert_close(label_only, bare[None], rtol=1e-5, atol=1e-6)


def test_text_features_name_a_label_too_long(clip):
    with pytest.raises(ValueError, match="'extremely .* long'"):
        text_features(ActionCLIP(clip, "meanP"), ["run", "extremely " + "very " * 80 + "long"])


def test_ensemble_scores_equal_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    B, K, C, E = 3, 4, 5, 8
    video_feats, text_feats, scale = torch.randn(B, E, generator=g), torch.randn(K, C, E, generator=g), 7.0
    scores = ensemble_scores(video_feats, text_feats, scale)
    for b in range(B):
        v = video_feats[b].tolist()
        for c in range(C):
            total = 0.0
            for k in range(K):  # softmax over classes for template k, then the mean over templates
                cos = [cosine(v, text_feats[k, j].tolist()) for j in range(C)]
                total += math.exp(scale * cos[c]) / sum(math.exp(scale * s) for s in cos)
            assert scores[b, c].item() == pytest.approx(total / K, rel=1e-5)
    assert torch.allclose(scores.sum(1), torch.ones(B))


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


# --------------------------------------------------------------------------------------------------
# Visual prompts


@pytest.mark.parametrize("name", PROMPTS)
@pytest.mark.parametrize("T", [1, 8, 16])
def test_output_shapes(clip, name, T):
    model = ActionCLIP(clip, name, num_frames=T).eval()
    with torch.no_grad():
        assert model.encode_video(video(2, T)).shape == (2, 64)
        assert model(video(2, T), clip_model.tokenize(CLASSNAMES)).shape == (2, 4)


@pytest.mark.parametrize("name", PROMPTS)
def test_frame_order(clip, name):
    model = ActionCLIP(clip, name, num_frames=8).eval()
    if name == "joint":  # its time embedding starts at zero, which is blind to order until it trains
        nn.init.normal_(model.visual_prompt.time_embedding, std=0.02)
    x = video(2, 8)
    with torch.no_grad():
        a, b = model.encode_video(x), model.encode_video(x.flip(1))
    if name == "meanP":
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    else:
        assert rel_err(a, b) > 1e-5, "the output should change when the frames are reversed"


def test_forward_is_scaled_cosine(clip):
    model = ActionCLIP(clip, "transf").eval()
    x, tokens = video(2, 8), clip_model.tokenize(CLASSNAMES)
    with torch.no_grad():
        v, t = model.encode_video(x), model.encode_text(tokens)
        expected = clip.logit_scale.exp() * F.cosine_similarity(v[:, None], t[None], dim=-1)  # [Eq. 2-3]
        torch.testing.assert_close(model(x, tokens), expected, rtol=1e-5, atol=1e-5)


def test_conv1d_starts_as_a_temporal_shift(clip):
    prompt = VISUAL_PROMPTS["conv1d"](clip, 8)
    x = torch.randn(2, 8, 64)
    q = 64 // 4
    shifted = torch.zeros_like(x)
    shifted[:, 1:, :q] = x[:, :-1, :q]                  # a quarter looks back: frame t gets frame t-1
    shifted[:, :, q:3 * q] = x[:, :, q:3 * q]           # half stays
    shifted[:, :-1, 3 * q:] = x[:, 1:, 3 * q:]          # a quarter looks ahead
    torch.testing.assert_close(prompt(x), (x + shifted).mean(1), rtol=0, atol=1e-6)


def test_temporal_shift_by_hand():
    x = torch.arange(2 * 3 * 1 * 16, dtype=torch.float32).view(2 * 3, 1, 16)  # B=2, T=3, L=1, D=16
    out = temporal_shift(x, 3, 1 / 8).view(2, 3, 1, 16)
    x = x.view(2, 3, 1, 16)
    assert torch.equal(out[:, :2, :, :2], x[:, 1:, :, :2]) and (out[:, 2, :, :2] == 0).all()
    assert torch.equal(out[:, 1:, :, 2:4], x[:, :2, :, 2:4]) and (out[:, 0, :, 2:4] == 0).all()
    assert torch.equal(out[..., 4:], x[..., 4:])


def test_shift_with_zero_fraction_is_clip_per_frame(clip):
    x = video(2, 8)
    with torch.no_grad():
        shifted = Shift(clip, 8, fraction=0)(clip.visual, x)
        per_frame = clip.encode_image(x.flatten(0, 1)).view(2, 8, -1).mean(1)
    torch.testing.assert_close(shifted, per_frame, rtol=1e-6, atol=1e-6)


def test_shift_is_the_official_block_wrapper(clip):
    """The official TemporalShift_VIT, step by step in its sequence-first layout: before every block,
    the patch tokens (not the class token) of the (L, B*T, D) stream take channels [0, D/8) from
    frame t+1 and [D/8, 2D/8) from frame t-1, zeros past the ends; then the whole block runs."""
    B, T = 2, 4
    x = video(B, T)
    visual = clip.visual
    with torch.no_grad():
        ours = Shift(clip, T)(visual, x)
        stream = visual.ln_pre(visual.tokens(x.flatten(0, 1))).permute(1, 0, 2)   # (L, B*T, D)
        for block in visual.transformer.resblocks:
            cls, patches = stream[:1], stream[1:]                                 # (1, BT, D), (HW, BT, D)
            hw, bt, d = patches.shape
            p = patches.permute(1, 2, 0).reshape(B, T, d, hw)
            fold, out = d // 8, torch.zeros(B, T, d, hw)
            out[:, :-1, :fold] = p[:, 1:, :fold]
            out[:, 1:, fold:2 * fold] = p[:, :-1, fold:2 * fold]
            out[:, :, 2 * fold:] = p[:, :, 2 * fold:]
            stream = torch.cat([cls, out.reshape(bt, d, hw).permute(2, 0, 1)])
            stream = block(stream.permute(1, 0, 2)).permute(1, 0, 2)
        official = visual.head(stream[0]).view(B, T, -1).mean(1)
    torch.testing.assert_close(ours, official, rtol=1e-6, atol=1e-6)


def test_shift_with_gradient_checkpointing(clip):
    model = ActionCLIP(tiny_clip(), "shift")
    x = video(2, 4)
    plain = model.encode_video(x)
    plain.sum().backward()
    grads = [p.grad.clone() for p in model.clip.visual.parameters()]
    model.zero_grad()
    model.clip.visual.transformer.grad_checkpointing = True
    checkpointed = model.encode_video(x)
    checkpointed.sum().backward()
    torch.testing.assert_close(checkpointed, plain)
    for g, p in zip(grads, model.clip.visual.parameters()):
        torch.testing.assert_close(p.grad, g)


def test_joint_with_one_frame_is_clip_image_encoder(clip):
    model = ActionCLIP(clip, "joint", num_frames=1).eval()
    x = video(3, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(x), clip.encode_image(x[:, 0]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["joint", "shift"])
def test_token_prompts_need_a_vit(name):
    resnet = clip_model.CLIP(**dict(TINY, vision_layers=(1, 1, 1, 1), vision_width=16, vision_patch_size=None))
    with pytest.raises(ValueError, match="ModifiedResNet"):
        ActionCLIP(resnet, name)


def test_more_frames_than_positions_is_an_error(clip):
    model = ActionCLIP(clip, "transf", num_frames=4)
    with pytest.raises(ValueError, match="num_frames >= 8"):
        model.encode_video(video(1, 8))


def test_unknown_prompt_is_an_error(clip):
    with pytest.raises(ValueError, match="'tsm'.*meanP"):
        ActionCLIP(clip, "tsm")


@pytest.mark.parametrize("name", PROMPTS)
def test_every_prompt_trains(name):
    model = ActionCLIP(tiny_clip(), name, num_frames=4).train()
    x, tokens, labels = video(4, 4), clip_model.tokenize(CLASSNAMES), torch.arange(4)
    new = model.new_parameters()
    assert {id(p) for p in new}.isdisjoint(id(p) for p in model.clip.parameters())
    assert len(new) == len(list(model.visual_prompt.parameters()))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss = F.cross_entropy(model(x, tokens), labels)
        optimizer.zero_grad()
        loss.backward()
        for p in new:  # the prompt's own weights learn
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_video_classifier_is_the_same_encoder_with_a_linear_head(clip):
    model = VideoClassifier(ActionCLIP(clip, "transf", 8), num_classes=5).eval()
    x = video(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.fc(model.actionclip.encode_video(x)))
    assert model(x).shape == (2, 5)
    assert {id(p) for p in model.new_parameters()} == {id(p) for p in model.actionclip.visual_prompt.parameters()} | {
        id(model.fc.weight), id(model.fc.bias)}


# --------------------------------------------------------------------------------------------------
# This project's checkpoints


@pytest.mark.parametrize("name", PROMPTS)
def test_own_checkpoint_round_trip(tmp_path, name):
    model = ActionCLIP(tiny_clip(), name, num_frames=8).eval()
    perturb(model)
    torch.save({**checkpoint_payload(model), "epoch": 3}, tmp_path / "ckpt.pt")
    loaded = load_actionclip(str(tmp_path / "ckpt.pt"))
    assert loaded.config == {"visual_prompt": name, "num_frames": 8, "text_heads": 1}
    assert not loaded.training
    x, tokens = video(2, 8), clip_model.tokenize(CLASSNAMES)
    with torch.no_grad():
        assert torch.equal(loaded(x, tokens), model(x, tokens))


def test_own_checkpoint_text_heads(tmp_path):
    """The weights' shapes cannot tell the text transformer's heads: a checkpoint records them, so
    a CLIP whose heads are not width // 64 (--arch tiny: 4 heads of 16) loads as trained."""
    torch.manual_seed(0)
    model = ActionCLIP(clip_model.CLIP(**dict(TINY, transformer_heads=4)), "transf", 8).eval()
    perturb(model)
    torch.save(checkpoint_payload(model), tmp_path / "ckpt.pt")
    loaded = load_actionclip(str(tmp_path / "ckpt.pt"))
    assert loaded.clip.transformer.heads == 4
    tokens = clip_model.tokenize(CLASSNAMES)
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(tokens), model.encode_text(tokens))


def test_own_checkpoint_frame_count(tmp_path):
    model = ActionCLIP(tiny_clip(), "transf_cls", num_frames=8).eval()
    perturb(model)
    path = str(tmp_path / "ckpt.pt")
    torch.save(checkpoint_payload(model), path)
    fewer = load_actionclip(path, num_frames=4)  # keeps the first positions
    assert fewer.config["num_frames"] == 4
    with torch.no_grad():
        torch.testing.assert_close(fewer.encode_video(video(2, 4)), model.encode_video(video(2, 4)))
    with pytest.raises(ValueError, match="covers 8 frames.*num_frames <= 8"):
        load_actionclip(path, num_frames=16)


def test_video_classifier_checkpoint_round_trip(tmp_path):
    model = VideoClassifier(ActionCLIP(tiny_clip(), "conv1d", 8), num_classes=5).eval()
    perturb(model)
    torch.save(checkpoint_payload(model), tmp_path / "ckpt.pt")
    loaded = load_actionclip(str(tmp_path / "ckpt.pt"))
    assert isinstance(loaded, VideoClassifier) and loaded.config == {**model.actionclip.config, "num_classes": 5}
    with torch.no_grad():
        assert torch.equal(loaded(video(2, 8)), model(video(2, 8)))


# --------------------------------------------------------------------------------------------------
# Official ActionCLIP checkpoints


def official_clip_state_dict(cfg):
    """CLIP weights as the official files hold them: mostly fp16, some fp32, the three integer entries."""
    model = tiny_clip(cfg, seed=5)
    perturb(model)
    state_dict = {k: v if k in ("logit_scale", "positional_embedding", "visual.positional_embedding") else v.half()
                  for k, v in model.state_dict().items()}
    state_dict.update(input_resolution=torch.tensor(cfg["image_resolution"]),
                      context_length=torch.tensor(cfg["context_length"]), vocab_size=torch.tensor(cfg["vocab_size"]))
    return state_dict


def official_transf_fusion(E, layers=6, rows=77):
    """The official Transf head's fusion_model_state_dict, key by key, with random values."""
    g = torch.Generator().manual_seed(7)
    r = lambda *shape, std=0.02: torch.randn(*shape, generator=g) * std
    fusion = {"frame_position_embeddings.weight": r(rows, E, std=0.01)}
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        fusion.update({
            p + "attn.in_proj_weight": r(3 * E, E, std=E ** -0.5), p + "attn.in_proj_bias": r(3 * E, std=0.1),
            p + "attn.out_proj.weight": r(E, E, std=E ** -0.5), p + "attn.out_proj.bias": r(E, std=0.1),
            p + "ln_1.weight": 1 + r(E, std=0.1), p + "ln_1.bias": r(E, std=0.1),
            p + "mlp.c_fc.weight": r(4 * E, E, std=E ** -0.5), p + "mlp.c_fc.bias": r(4 * E, std=0.1),
            p + "mlp.c_proj.weight": r(E, 4 * E, std=(4 * E) ** -0.5), p + "mlp.c_proj.bias": r(E, std=0.1),
            p + "ln_2.weight": 1 + r(E, std=0.1), p + "ln_2.bias": r(E, std=0.1)})
    return fusion


def official_transf_head(x, fusion, heads, layers=6):
    """The official visual_prompt.forward for "Transf", in plain torch ops (LND layout, as it runs there)."""
    T, B, E = x.shape[1], x.shape[0], x.shape[2]
    w = lambda name: fusion["module." + name]
    original = x
    x = x + w("frame_position_embeddings.weight")[torch.arange(T)]
    x = x.permute(1, 0, 2)                                             # (T, B, E)
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (E,), w(p + "ln_1.weight"), w(p + "ln_1.bias"), eps=1e-12)
        q, k, v = (h @ w(p + "attn.in_proj_weight").t() + w(p + "attn.in_proj_bias")).chunk(3, dim=-1)
        split = lambda t: t.reshape(T, B * heads, E // heads).transpose(0, 1)  # (B*H, T, E/H), as nn.MultiheadAttention
        attn = torch.softmax(split(q) / math.sqrt(E // heads) @ split(k).transpose(1, 2), dim=-1)
        a = (attn @ split(v)).transpose(0, 1).reshape(T, B, E)
        x = x + a @ w(p + "attn.out_proj.weight").t() + w(p + "attn.out_proj.bias")
        h = F.layer_norm(x, (E,), w(p + "ln_2.weight"), w(p + "ln_2.bias"), eps=1e-12)
        h = h @ w(p + "mlp.c_fc.weight").t() + w(p + "mlp.c_fc.bias")
        h = h * torch.sigmoid(1.702 * h)                               # QuickGELU
        x = x + h @ w(p + "mlp.c_proj.weight").t() + w(p + "mlp.c_proj.bias")
    x = x.permute(1, 0, 2)                                             # (B, T, E)
    return (x + original).mean(dim=1)


def save_official(path, clip_state_dict, fusion):
    torch.save({"epoch": 49, "model_state_dict": clip_state_dict,
                "fusion_model_state_dict": {"module." + k: v for k, v in fusion.items()},
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 5e-6, "params": [0, 1]}]}}, path)


def test_official_transf_checkpoint(tmp_path):
    clip_state_dict, fusion = official_clip_state_dict(TINY_2_HEADS), official_transf_fusion(128)
    # frame features of std ~0.01, as small as the positions: LayerNorm's eps 1e-12 (not 1e-5) then matters
    clip_state_dict["visual.proj"] = clip_state_dict["visual.proj"] * 0.01
    path = str(tmp_path / "official.pt")
    save_official(path, clip_state_dict, fusion)
    model = load_actionclip(path, num_frames=8)
    assert model.config == {"visual_prompt": "transf", "num_frames": 8, "text_heads": 2}
    assert set(model.visual_prompt.state_dict()) == set(fusion)  # every key used, none missing
    assert len(model.visual_prompt.transformer.resblocks[0].attn.out_proj.weight) == 128

    reference_clip = clip_model.build_model(dict(clip_state_dict))
    fusion = {"module." + k: v for k, v in fusion.items()}
    x = video(2, 8)
    with torch.no_grad():
        frames = reference_clip.encode_image(x.flatten(0, 1)).view(2, 8, -1)
        expected = official_transf_head(frames, fusion, heads=2)
        assert rel_err(model.encode_video(x), expected) < 1e-5
        assert rel_err(model.encode_text(clip_model.tokenize(CLASSNAMES)),
                       reference_clip.encode_text(clip_model.tokenize(CLASSNAMES))) < 1e-5


def official_fusion(name, E):
    """The fusion_model_state_dict of the official Conv_1D, LSTM and meanP heads (the first two also carry
    the official frame_position_embeddings that only Transf uses), and of our transf_cls."""
    g = torch.Generator().manual_seed(8)
    table = {"frame_position_embeddings.weight": torch.randn(77, E, generator=g)}
    if name == "meanP":
        return {}
    if name == "conv1d":
        return {**table, "shift.weight": torch.randn(E, 1, 3, generator=g)}
    if name == "lstm":
        return {**table, **{f"lstm_visual.{kind}_l0": torch.randn(4 * E, *size, generator=g) * 0.1
                            for kind, size in [("weight_ih", (E,)), ("weight_hh", (E,)), ("bias_ih", ()),
                                               ("bias_hh", ())]}}
    head = VISUAL_PROMPTS["transf_cls"](tiny_clip(), 76)
    perturb(head)
    return head.state_dict()


@pytest.mark.parametrize("name", ["meanP", "conv1d", "lstm", "transf_cls"])
def test_official_checkpoint_other_heads(tmp_path, name):
    fusion = official_fusion(name, 64)
    path = str(tmp_path / "official.pt")
    save_official(path, official_clip_state_dict(TINY), fusion)
    model = load_actionclip(path)
    assert model.config == {"visual_prompt": name, "num_frames": 8, "text_heads": 1}
    for key, value in model.visual_prompt.state_dict().items():
        assert torch.equal(value, fusion[key][:len(value)])
    if name == "conv1d":  # applied along time, where the official code's view() scrambles
        x = torch.randn(2, 8, 64)
        y = F.conv1d(x.transpose(1, 2), fusion["shift.weight"], padding=1, groups=64).transpose(1, 2)
        torch.testing.assert_close(model.visual_prompt(x), (x + y).mean(1))


def test_official_checkpoint_with_bad_keys(tmp_path):
    fusion = official_transf_fusion(64)
    del fusion["transformer.resblocks.5.ln_2.bias"]
    fusion["transformer.resblocks.6.ln_1.weight"] = torch.ones(64)
    save_official(tmp_path / "bad.pt", official_clip_state_dict(TINY), fusion)
    with pytest.raises(ValueError) as error:
        load_actionclip(str(tmp_path / "bad.pt"))
    message = str(error.value)
    assert "missing keys (1): transformer.resblocks.5.ln_2.bias" in message
    assert "unexpected keys (1): transformer.resblocks.6.ln_1.weight" in message

    save_official(tmp_path / "unknown.pt", official_clip_state_dict(TINY), {"temporal.weight": torch.ones(3)})
    with pytest.raises(ValueError, match="cannot tell which visual prompt.*temporal.weight"):
        load_actionclip(str(tmp_path / "unknown.pt"))

    clip_state_dict = official_clip_state_dict(TINY)
    clip_state_dict["visual.time_embedding"] = torch.zeros(8, 64)
    save_official(tmp_path / "clip.pt", clip_state_dict, {})
    with pytest.raises(ValueError, match="unexpected keys.*visual.time_embedding"):
        load_actionclip(str(tmp_path / "clip.pt"))


def test_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an ActionCLIP checkpoint.*weights"):
        load_actionclip(str(tmp_path / "other.pt"))
    with pytest.raises(FileNotFoundError):
        load_actionclip(str(tmp_path / "missing.pt"))


# --------------------------------------------------------------------------------------------------
# Visual prompts against hand computations on their own weights (issue #24)


def test_lstm_prompt_is_the_mean_of_frames_plus_lstm_outputs_by_hand(clip):
    """One LSTM layer over the frames, written out with nn.LSTM's own weights (gates i, f, g, o),
    then the residual: the mean over frames of x_t + h_t [Sec. 3.3]."""
    prompt = VISUAL_PROMPTS["lstm"](clip, 8)
    perturb(prompt, std=0.2)                                           # gates away from 0.5
    lstm = prompt.lstm_visual
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(4))
    w_ih, w_hh, b = lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0
    expected = []
    for video_frames in x:                                             # (T, E)
        h, c, outputs = torch.zeros(64), torch.zeros(64), []
        for frame in video_frames:
            i, f, g, o = (w_ih @ frame + w_hh @ h + b).chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(frame + h)                                  # the residual
        expected.append(torch.stack(outputs).mean(0))
    with torch.no_grad():
        torch.testing.assert_close(prompt(x), torch.stack(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["transf", "transf_cls"])
def test_temporal_transformer_heads_follow_the_text_width_not_the_embed_dim(name):
    """RN50's CLIP has embed dim 1024 and text width 512: the official code's temporal transformer
    has 512 / 64 = 8 heads, not 16. Here embed dim 128, text width 64: one head of width 128. The
    head computed by hand with one head gives the same features; with two it would not."""
    clip = tiny_clip(dict(TINY, embed_dim=128))                        # text width 64
    prompt = VISUAL_PROMPTS[name](clip, 8)
    perturb(prompt, std=0.2)
    x = torch.randn(2, 8, 128, generator=torch.Generator().manual_seed(6))
    weights = {"module." + k: v for k, v in prompt.state_dict().items()}
    with torch.no_grad():
        if name == "transf":
            expected = official_transf_head(x, weights, heads=1)
            other = official_transf_head(x, weights, heads=2)
        else:                                                          # the class token first
            token = prompt.cls_token.expand(2, 1, -1)
            pooled = lambda heads: transf_cls_by_hand(torch.cat([token, x], 1), weights, heads)
            expected, other = pooled(1), pooled(2)
        assert rel_err(expected, other) > 1e-3                         # the heads matter here
        assert rel_err(prompt(x), expected) < 1e-5


def transf_cls_by_hand(x, weights, heads):
    """transf_cls on (B, 1 + T, E), the class token first: positions, official_transf_head's
    blocks, the output at the class token."""
    x = x + weights["module.frame_position_embeddings.weight"][:x.shape[1]]
    return transformer_blocks_by_hand(x, weights, heads)[:, 0]


def transformer_blocks_by_hand(x, weights, heads, layers=6):
    """official_transf_head's pre-LN blocks alone (no positions, residual or mean): (B, L, E)."""
    B, L, E = x.shape
    w = lambda name: weights["module." + name]
    x = x.permute(1, 0, 2)                                             # (L, B, E)
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (E,), w(p + "ln_1.weight"), w(p + "ln_1.bias"), eps=1e-12)
        qkv = h @ w(p + "attn.in_proj_weight").t() + w(p + "attn.in_proj_bias")
        q, k, v = qkv.chunk(3, dim=-1)
        split = lambda t: t.reshape(L, B * heads, E // heads).transpose(0, 1)
        attn = torch.softmax(split(q) / math.sqrt(E // heads) @ split(k).transpose(1, 2), dim=-1)
        a = (attn @ split(v)).transpose(0, 1).reshape(L, B, E)
        x = x + a @ w(p + "attn.out_proj.weight").t() + w(p + "attn.out_proj.bias")
        h = F.layer_norm(x, (E,), w(p + "ln_2.weight"), w(p + "ln_2.bias"), eps=1e-12)
        h = h @ w(p + "mlp.c_fc.weight").t() + w(p + "mlp.c_fc.bias")
        h = h * torch.sigmoid(1.702 * h)                               # QuickGELU
        x = x + h @ w(p + "mlp.c_proj.weight").t() + w(p + "mlp.c_proj.bias")
    return x.permute(1, 0, 2)
