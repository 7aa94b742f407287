"""clip_model.py against the reference: open_clip on the same weights, OpenAI's tokenizer, and bad input.

Random weights are saved in the official formats (fp16 tensors plus three integer entries, as a
TorchScript archive and as a plain state dict) and loaded through `clip_model.load`; every encoder
output must agree with open_clip's `build_model_from_openai_state_dict` to relative error < 1e-5.
"""

import hashlib
import os
import urllib.error
import warnings

import pytest
import torch
from open_clip.model import build_model_from_openai_state_dict
from open_clip.tokenizer import SimpleTokenizer as ReferenceTokenizer
from torch import nn

import clip_model

# Three architectures of different shapes (the acceptance list).
ARCHS = {
    # a ViT with patch 14 at a non-224 resolution
    "vit-p14-84px": dict(embed_dim=64, image_resolution=84, vision_layers=2, vision_width=128, vision_patch_size=14,
                         context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2,
                         transformer_layers=2),
    # a small modified ResNet (every stage present, attention pooling over a 2x2 grid)
    "rn-tiny": dict(embed_dim=64, image_resolution=64, vision_layers=(1, 2, 1, 1), vision_width=16,
                    vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=64,
                    transformer_heads=1, transformer_layers=1),
    # the full ViT-B/32 shape
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                     context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                     transformer_layers=12),
}
INTEGER_KEYS = ("input_resolution", "context_length", "vocab_size")


def random_official_state_dict(cfg, seed=0):
    """Random CLIP weights as the official files hold them: fp16 tensors plus the three integer entries."""
    torch.manual_seed(seed)
    model = clip_model.CLIP(**cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():  # well away from the initialisation, biases included
            p.add_(torch.randn_like(p) * 0.02)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    state_dict = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    state_dict.update(input_resolution=torch.tensor(cfg["image_resolution"]),
                      context_length=torch.tensor(cfg["context_length"]), vocab_size=torch.tensor(cfg["vocab_size"]))
    return state_dict


class OfficialArchive(nn.Module):
    """The module tree of OpenAI's TorchScript files: CLIP's submodules plus three integer buffers."""

    def __init__(self, model, state_dict):
        super().__init__()
        for name, child in model.named_children():
            setattr(self, name, child)
        for name, param in model.named_parameters(recurse=False):
            setattr(self, name, param)
        for key in INTEGER_KEYS:
            self.register_buffer(key, state_dict[key].clone())

    def forward(self, images, tokens):
        return self.visual(images), self.transformer(self.token_embedding(tokens) + self.positional_embedding)


def save_torchscript(state_dict, path):
    model = clip_model.CLIP(**clip_model.clip_config(state_dict))
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in INTEGER_KEYS})
    archive = OfficialArchive(model, state_dict).eval()
    size = model.input_resolution
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(archive, (torch.randn(1, 3, size, size), clip_model.tokenize("a")))
    torch.jit.save(traced.half(), path)


def relative_error(ours, ref):
    return ((ours - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("fmt", ["torchscript", "state_dict"])
def test_matches_open_clip_on_the_same_weights(arch, fmt, tmp_path):
    cfg = ARCHS[arch]
    state_dict = random_official_state_dict(cfg)
    path = str(tmp_path / "weights.pt")
    if fmt == "torchscript":
        save_torchscript(state_dict, path)
    else:
        torch.save(state_dict, path)
    ours = clip_model.load(path)
    reference = build_model_from_openai_state_dict(dict(state_dict)).float().eval()

    assert ours.training is False and all(p.dtype == torch.float32 for p in ours.parameters())
    assert ours.input_resolution == cfg["image_resolution"]
    size = cfg["image_resolution"]
    images = torch.randn(3, 3, size, size)
    tokens = clip_model.tokenize(["a video of action brush hair", "ApplyEyeMakeup", "riding or walking with horse"])
    with torch.no_grad():
        assert relative_error(ours.encode_image(images), reference.encode_image(images)) < 1e-5
        assert relative_error(ours.encode_text(tokens), reference.encode_text(tokens)) < 1e-5
        logits_image, logits_text = ours(images, tokens)
        ref_features = reference(images, tokens)  # open_clip returns normalised features and the scale
        ref_logits = ref_features[2] * ref_features[0] @ ref_features[1].t()
        assert relative_error(logits_image, ref_logits) < 1e-5
        assert torch.equal(logits_text, logits_image.t())


def test_torchscript_reader_equals_torch_jit(tmp_path):
    """The archive is read as data, without running TorchScript; it must give what torch.jit.load gives."""
    state_dict = random_official_state_dict(ARCHS["rn-tiny"])
    path = str(tmp_path / "RN.pt")
    save_torchscript(state_dict, path)
    ours = clip_model.read_torchscript_state_dict(path)
    reference = torch.jit.load(path).state_dict()
    assert set(ours) == set(reference)
    for key, value in reference.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key


def test_build_model_reads_every_size_from_shapes():
    for cfg in ARCHS.values():
        assert clip_model.clip_config(random_official_state_dict(cfg)) == cfg


def test_trimmed_padding_gives_the_same_text_features():
    torch.manual_seed(0)
    model = clip_model.CLIP(**ARCHS["vit-p14-84px"]).eval()
    tokens = clip_model.tokenize(["a video of action high jump", "cartwheel", ""])
    trimmed = clip_model.trim_padding(tokens)
    assert trimmed.shape == (3, 8) and torch.equal(trimmed, tokens[:, :8])  # SOT, 6 words, EOT
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(trimmed), model.encode_text(tokens), rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = clip_model.CLIP(**ARCHS["vit-p14-84px"])
    images = torch.randn(2, 3, 84, 84)
    grads = []
    for flag in (False, True):
        model.zero_grad()
        model.visual.transformer.grad_checkpointing = flag
        model.encode_image(images).square().sum().backward()
        grads.append(model.visual.conv1.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


# ----------------------------------------------------------------------------------------------------
# Tokenizer

CORPUS = [
    # action names in the three datasets' naming styles
    "ApplyEyeMakeup", "brush_hair", "riding or walking with horse", "Yo Yo", "playing cello", "sword_exercise",
    "a video of action {}".format("high jump"), "Can you recognize the action of cartwheel?",
    # accents, emoji, CJK, full-width characters, HTML entities, numbers and punctuation, whitespace
    "Café crème brûlée naïve façade", "Ångström Øresund Žižka", "dancing 💃🕺 with friends 🎉",
    "打太极拳", "スケートボード", "태권도", "ＦＵＬＬ－ＷＩＤＴＨ　ｔｅｘｔ", "Tom &amp; Jerry &lt;3 &#39;quoted&#39;",
    "&amp;amp; twice-escaped", "1,234.56 m/s -- 42% (approx.)!?", "don't won't it's we're they've I'm you'll he'd",
    "  multiple\t\tspaces\n\nnewlines  ", "UPPER lower MiXeD", "e-mail: someone@example.com #hashtag $100",
    "ﬁ ligature and ½ fraction", "",
]


@pytest.fixture(scope="module")
def reference_tokenizer():
    return ReferenceTokenizer()


def test_tokenizer_matches_open_clip_on_a_varied_corpus(reference_tokenizer):
    ours = clip_model.tokenize(CORPUS)
    reference = reference_tokenizer(CORPUS, context_length=77)
    for text, a, b in zip(CORPUS, ours, reference):
        assert torch.equal(a, b), text


def test_tokenizer_layout_and_decode():
    tokens = clip_model.tokenize("hello world")[0]
    tokenizer = clip_model.SimpleTokenizer()
    n = int((tokens != 0).sum())
    assert tokens[0] == tokenizer.sot_token == 49406 and tokens[n - 1] == tokenizer.eot_token == 49407
    assert tokenizer.decode(tokens[1:n - 1].tolist()).strip() == "hello world"
    assert clip_model.tokenize("").tolist()[0][:3] == [49406, 49407, 0]


def test_too_long_text_raises_unless_truncated(reference_tokenizer):
    text = "kinetics " * 80
    with pytest.raises(ValueError, match="longer than the context length 77.*'kinetics kinetics"):
        clip_model.tokenize(["short", text])
    truncated = clip_model.tokenize(text, truncate=True)
    assert truncated[0, -1] == 49407
    assert torch.equal(truncated, reference_tokenizer([text], context_length=77))
    assert clip_model.tokenize("a b c", context_length=5).shape == (1, 5)


# ----------------------------------------------------------------------------------------------------
# Bad input: each error names the problem


def test_missing_path():
    with pytest.raises(FileNotFoundError, match="no/such/file.pt.*neither an official CLIP model name"):
        clip_model.load("no/such/file.pt")


def test_unknown_model_name():
    with pytest.raises(FileNotFoundError, match="'ViT-B/99'.*ViT-B/16"):
        clip_model.load("ViT-B/99")


def test_random_bytes_file(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match="random.pt is not a CLIP checkpoint"):
        clip_model.load(str(path))


def test_truncated_file(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(random_official_state_dict(ARCHS["rn-tiny"]), path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pt .*(truncated|not a zip)"):
        clip_model.load(str(cut))


def test_missing_key_is_listed(tmp_path):
    state_dict = random_official_state_dict(ARCHS["vit-p14-84px"])
    del state_dict["visual.ln_post.weight"]
    torch.save(state_dict, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"missing keys \(1\): visual.ln_post.weight"):
        clip_model.load(str(tmp_path / "missing.pt"))


def test_unexpected_key_is_listed():
    state_dict = random_official_state_dict(ARCHS["vit-p14-84px"])
    state_dict["visual.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): visual.extra_head.weight"):
        clip_model.build_model(state_dict)


def test_wrong_shape_is_listed(tmp_path):
    state_dict = random_official_state_dict(ARCHS["vit-p14-84px"])
    state_dict["visual.ln_pre.bias"] = torch.zeros(100)
    torch.save(state_dict, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match=r"wrong shapes.*visual.ln_pre.bias: checkpoint \(100,\), model \(128,\)"):
        clip_model.load(str(tmp_path / "shape.pt"))


def test_not_a_clip_state_dict():
    with pytest.raises(ValueError, match="not a CLIP state dict: it has no 'visual.conv1.weight' entry .*fc.weight"):
        clip_model.build_model({"fc.weight": torch.zeros(2, 2), "visual.proj": torch.zeros(2, 2)})


# ----------------------------------------------------------------------------------------------------
# Download: official names resolve to a cached, SHA256-checked file


@pytest.fixture
def fake_release(tmp_path, monkeypatch):
    """A one-model 'release' served from a file:// URL, laid out like the official one (sha256/name.pt)."""
    state_dict = random_official_state_dict(ARCHS["rn-tiny"])
    payload = tmp_path / "server" / "Tiny.pt"
    payload.parent.mkdir()
    torch.save(state_dict, payload)
    sha = hashlib.sha256(payload.read_bytes()).hexdigest()
    (tmp_path / "server" / sha).mkdir()
    os.replace(payload, tmp_path / "server" / sha / "Tiny.pt")
    monkeypatch.setattr(clip_model, "_MODELS", {"Tiny": f"{sha}/Tiny.pt"})
    monkeypatch.setattr(clip_model, "URL_ROOT", (tmp_path / "server").as_uri() + "/")
    return tmp_path / "cache", sha


def test_download_caches_and_checks(fake_release, monkeypatch):
    cache, sha = fake_release
    model = clip_model.load("Tiny", download_root=str(cache))
    assert isinstance(model, clip_model.CLIP)
    assert os.listdir(cache) == ["Tiny.pt"]  # no temporary file left behind

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(clip_model.urllib.request, "urlopen", offline)
    clip_model.load("Tiny", download_root=str(cache))  # served from the cache, no network needed


def test_offline_error_says_what_to_fetch_and_where(fake_release, monkeypatch):
    cache, sha = fake_release

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(clip_model.urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError, match=f"{sha}/Tiny.pt.*place the file at {cache}/Tiny.pt"):
        clip_model.load("Tiny", download_root=str(cache))
    assert not cache.exists() or os.listdir(cache) == []


def test_checksum_mismatch_leaves_no_cache_entry(fake_release, monkeypatch):
    cache, sha = fake_release
    server = cache.parent / "server"
    (server / ("0" * 64)).mkdir()  # the same file published under a checksum it does not have
    os.link(server / sha / "Tiny.pt", server / ("0" * 64) / "Tiny.pt")
    monkeypatch.setattr(clip_model, "_MODELS", {"Tiny": f"{'0' * 64}/Tiny.pt"})
    with pytest.raises(RuntimeError, match="does not match its SHA256"):
        clip_model.download("Tiny", str(cache))
    assert os.listdir(cache) == []
