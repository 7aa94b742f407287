"""CLIP, written out by hand: the pre-trained model of ActionCLIP's "pre-train, prompt, fine-tune".

ActionCLIP [Sec. 3.4] starts from OpenAI's CLIP (Radford et al., 2021) and fine-tunes it end to end.
This file is that CLIP, small enough to read in one sitting, and loading the official weights
exactly. It reads as OpenAI's model.py does, the model small to large, then what feeds and loads it:

    building blocks QuickGELU, Attention, ResidualAttentionBlock, Transformer
    image encoder   VisionTransformer (ViT-B/32, B/16, L/14) or ModifiedResNet (RN50, ...)
    text encoder    causal Transformer, features taken at the end-of-text token
    CLIP            both encoders, cosine similarity times a learned inverse temperature
    tokenizer       byte-level BPE, identical to OpenAI's (ftfy + regex, lower-cased)
    build_model     every size read from the state dict's tensor shapes: no config object
    load            official name -> cached download (SHA256-checked) -> CLIP, or any local file

Submodule names are the official checkpoint keys, so `load_state_dict(strict=True)` needs no
renaming. Parameters stay fp32; mixed precision comes from `torch.autocast`. Attention runs through
`F.scaled_dot_product_attention` (flash / memory-efficient kernels on a GPU) with a fused QKV
projection. Tensors are batch-first everywhere: (*, L, D), where OpenAI's code permutes to
(L, *, D).

Shapes: I images (any batch the image encoder sees), M texts (any batch the text encoder sees),
and * for either (the transformer blocks serve both encoders, and prompts.py's temporal ones);
L tokens (sequence length), D transformer width, E joint embedding dimension, H heads, S image
side in pixels, G grid side (S / patch size; S / 32 for the ResNet).

    model = load("ViT-B/16")                        # ~/.cache/clip/ViT-B-16.pt, as OpenAI's package
    logits_per_image, logits_per_text = model(images, tokenize(["a video of action {}"]))

The tokenizer's merges file (assets/bpe_simple_vocab_16e6.txt.gz) is OpenAI's, under the MIT licence
(assets/CLIP_LICENSE).
"""

import gzip
import hashlib
import html
import io
import os
import pickle
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections import OrderedDict
from functools import lru_cache

import ftfy
import numpy as np
import regex
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# CLIP's image normalisation (OpenAI's preprocessing), needed by every data pipeline that feeds it.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

# --------------------------------------------------------------------------------------------------
# Building blocks


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that CLIP was trained with."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names, batch-first.

    * in the shape comments, n in the code: a batch of images, of texts, or (prompts.py) of videos.
    """

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))  # fused Q, K, V
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)  # as nn.MultiheadAttention, which CLIP used
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x, causal=False):                               # (*, L, D)
        n, L, D = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)      # (*, L, 3D)
        q, k, v = qkv.view(n, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # q, k, v, x: (*, H, L, D/H)
        return self.out_proj(x.transpose(1, 2).reshape(n, L, D))      # (*, L, D)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width, heads, causal=False, ln_eps=1e-5):
        super().__init__()
        self.causal = causal
        self.ln_1 = nn.LayerNorm(width, eps=ln_eps)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=ln_eps)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(width * 4, width)),
        ]))

    def forward(self, x):                                              # (*, L, D)
        x = x + self.attn(self.ln_1(x), causal=self.causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual attention blocks, optionally gradient-checkpointed to save memory."""

    def __init__(self, width, layers, heads, causal=False, ln_eps=1e-5):
        super().__init__()
        self.width, self.heads = width, heads
        self.grad_checkpointing = False
        self.resblocks = nn.Sequential(
            *[ResidualAttentionBlock(width, heads, causal, ln_eps) for _ in range(layers)])

    def forward(self, x):                                              # (*, L, D)
        for block in self.resblocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


# --------------------------------------------------------------------------------------------------
# Image encoders


class VisionTransformer(nn.Module):
    """ViT: patches + class token + positions -> ln_pre -> transformer -> ln_post(class token)
    @ proj."""

    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim):
        super().__init__()
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(
            scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def tokens(self, x):                                               # (I, 3, S, S)
        """Image -> class token and patch tokens with positions added, before ln_pre."""
        x = self.conv1(x).flatten(2).transpose(1, 2)                   # (I, G*G, D)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)                                 # (I, 1 + G*G, D)
        return x + self.positional_embedding.to(x.dtype)

    def head(self, cls_token):                                         # (I, D)
        return self.ln_post(cls_token) @ self.proj                     # (I, E)

    def forward(self, x):                                              # (I, 3, S, S)
        x = self.ln_pre(self.tokens(x))                                # (I, L, D), L = 1 + G*G
        x = self.transformer(x)
        return self.head(x[:, 0])                                      # (I, E)


class Bottleneck(nn.Module):
    """ResNet bottleneck with CLIP's change: anti-aliased strides (avgpool before the strided
    path)."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP's ResNet head: the mean feature attends over the spatial features (separate q, k, v)."""

    def __init__(self, spacial_dim, embed_dim, num_heads, output_dim):
        super().__init__()
        self.positional_embedding = nn.Parameter(
            torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x):                                              # (I, channels, G, G)
        x = x.flatten(2).transpose(1, 2)                               # (I, G*G, channels)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)         # (I, 1 + G*G, channels)
        x = x + self.positional_embedding.to(x.dtype)
        n, L, channels = x.shape
        # (I, tokens, channels) -> (I, H, tokens, channels/H)
        split = lambda t: t.view(n, -1, self.num_heads, channels // self.num_heads).transpose(1, 2)
        q = split(self.q_proj(x[:, :1]))                               # (I, H, 1, channels/H)
        out = F.scaled_dot_product_attention(q, split(self.k_proj(x)), split(self.v_proj(x)))
        return self.c_proj(out.transpose(1, 2).reshape(n, channels))   # (I, E)


class ModifiedResNet(nn.Module):
    """CLIP's ResNet: a 3-conv stem, anti-aliased strided blocks, attention pooling instead of
    avgpool."""

    def __init__(self, layers, output_dim, heads, input_resolution=224, width=64):
        super().__init__()
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

    def _make_layer(self, planes, blocks, stride=1):
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):                                              # (I, 3, S, S)
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.avgpool(self.relu3(self.bn3(self.conv3(x))))          # (I, width, S/4, S/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))      # (I, 32 width, S/32, S/32)
        return self.attnpool(x)                                        # (I, E)


# --------------------------------------------------------------------------------------------------
# CLIP


class CLIP(nn.Module):
    """Image encoder + text encoder in one embedding space; logits = exp(t) * cosine similarity."""

    def __init__(self, embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
                 context_length, vocab_size, transformer_width, transformer_heads,
                 transformer_layers):
        super().__init__()
        if isinstance(vision_layers, (tuple, list)):
            self.visual = ModifiedResNet(vision_layers, embed_dim, vision_width * 32 // 64,
                                         image_resolution, vision_width)
        else:
            self.visual = VisionTransformer(image_resolution, vision_patch_size, vision_width,
                                            vision_layers, vision_width // 64, embed_dim)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads,
                                       causal=True)
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = nn.LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        # log(1 / tau), tau = 0.07: CLIP's initial temperature
        self.logit_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
        self.initialize_parameters()

    def initialize_parameters(self):
        """OpenAI's initialisation, used when training from scratch (the demo, Table 2's random
        init)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            for proj in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(proj.weight, std=pool.c_proj.in_features ** -0.5)
            for name, param in self.visual.named_parameters():
                if name.endswith("bn3.weight"):  # each residual branch starts as the identity
                    nn.init.zeros_(param)
        init_transformer(self.transformer)  # OpenAI leaves the ViT's blocks at PyTorch's defaults
        nn.init.normal_(self.text_projection, std=self.transformer.width ** -0.5)

    @property
    def input_resolution(self):
        return self.visual.input_resolution

    @property
    def embed_dim(self):
        return self.text_projection.shape[1]

    def encode_image(self, images):                                    # (I, 3, S, S)
        return self.visual(images)                                     # (I, E)

    def encode_text(self, tokens):                                     # (M, L), L <= context_length
        # Rows may stop short of the context length (see trim_padding): attention is causal, so
        # nothing after the end-of-text token can change the features read there.
        x = self.token_embedding(tokens) + self.positional_embedding[:tokens.shape[1]]  # (M, L, D)
        x = self.ln_final(self.transformer(x))
        eot = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # EOT: largest id
        return eot @ self.text_projection                              # (M, E)

    def forward(self, images, tokens):                                 # (I, 3, S, S), (M, L)
        image_features = F.normalize(self.encode_image(images), dim=-1)  # (I, E), unit length
        text_features = F.normalize(self.encode_text(tokens), dim=-1)    # (M, E), unit length
        # cosine similarity [Eq. 2] times exp(logit_scale) = 1/tau, tau the temperature of
        # ActionCLIP's Eq. 3 (CLIP learns log(1/tau))
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()  # (I, M)
        return logits_per_image, logits_per_image.t()


def init_transformer(transformer):
    """OpenAI's transformer initialisation (std shrinking with depth on the residual
    projections)."""
    width, layers = transformer.width, len(transformer.resblocks)
    proj_std = width ** -0.5 * (2 * layers) ** -0.5
    for block in transformer.resblocks:
        nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
        nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
        nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
        nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


# --------------------------------------------------------------------------------------------------
# Tokenizer: OpenAI's byte-level BPE

BPE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "assets", "bpe_simple_vocab_16e6.txt.gz")
SOT, EOT = "<|startoftext|>", "<|endoftext|>"


@lru_cache()
def bytes_to_unicode():
    """Map every byte to a printable unicode character, so BPE runs on strings without whitespace
    or control codes."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def clean_text(text):
    """OpenAI's clean-up: fix mojibake, unescape HTML twice, collapse whitespace, lower-case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class SimpleTokenizer:
    """OpenAI's BPE tokenizer: 48,894 merges, a vocabulary of 49,408 (256 bytes x 2, the merges,
    SOT, EOT)."""

    def __init__(self, bpe_path=BPE_PATH):
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
        # OpenAI's slice (simple_tokenizer.py: `merges[1:49152-256-2+1]`): line 0 is a version
        # header, then the first 49152 - 256 - 2 = 48,894 of the file's 262,145 merges, so that 256
        # byte tokens + the merges + 2 special tokens make 49,152 (plus the 256 bytes ending a word)
        merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.bpe_ranks = {merge: i for i, merge in enumerate(merges)}
        self.cache = {SOT: SOT, EOT: EOT}
        self.pat = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"""
            r"""|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE)
        self.sot_token, self.eot_token = self.encoder[SOT], self.encoder[EOT]

    def bpe(self, token):
        """Merge the characters of one word, lowest-ranked pair first, until no known pair is
        left."""
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = set(zip(word[:-1], word[1:]))
            first, second = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if (first, second) not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        self.cache[token] = " ".join(word)
        return self.cache[token]

    def encode(self, text):
        ids = []
        for token in regex.findall(self.pat, clean_text(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(token).split(" "))
        return ids

    def decode(self, ids):
        text = "".join(self.decoder[i] for i in ids)
        text = bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace")
        return text.replace("</w>", " ")


@lru_cache()
def _tokenizer():
    return SimpleTokenizer()


def tokenize(texts, context_length=77, truncate=False):
    """Texts -> LongTensor (M, context_length): SOT, BPE ids, EOT, zero padding.

    A text that does not fit raises ValueError, unless truncate=True, which keeps the first tokens
    and ends the row with EOT (the text encoder reads its features at the EOT position).
    """
    if isinstance(texts, str):
        texts = [texts]
    tokenizer = _tokenizer()
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [tokenizer.sot_token] + tokenizer.encode(text) + [tokenizer.eot_token]
        if len(ids) > context_length:
            if not truncate:
                raise ValueError(f"text {i} is {len(ids)} tokens, longer than the context length "
                                 f"{context_length}: {text[:60]!r}"
                                 f"{'...' if len(text) > 60 else ''}; "
                                 f"shorten it or pass truncate=True")
            ids = ids[:context_length - 1] + [tokenizer.eot_token]
        result[i, :len(ids)] = torch.tensor(ids)
    return result


def trim_padding(tokens):                                              # (M, L) -> (M, L')
    """Drop the padding columns after the longest text's EOT: same features, far less work
    (L 77 -> ~15). Call it on the CPU tensor, before .to(device)."""
    return tokens[:, :int(tokens.argmax(dim=-1).max()) + 1]


# --------------------------------------------------------------------------------------------------
# Building CLIP from a state dict

# The official files carry these three integer entries besides the weights; they are not parameters.
METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")


def build_model(state_dict, text_heads=None):
    """A CLIP with every size read from `state_dict`'s shapes, its weights loaded, in fp32 and eval
    mode. The shapes cannot tell the text transformer's heads: text_heads, or None for width // 64,
    as in every OpenAI CLIP (this project's checkpoints record theirs)."""
    state_dict = {k: v for k, v in state_dict.items() if k not in METADATA_KEYS}
    config = clip_config(state_dict)
    config["transformer_heads"] = text_heads or config["transformer_heads"]
    model = CLIP(**config)
    load_checked(model, state_dict)
    return model.eval()


def clip_config(state_dict):
    """Read every constructor argument of CLIP from tensor shapes, as OpenAI's build_model does."""
    try:
        if "visual.proj" in state_dict:  # ViT
            vision_width, _, vision_patch_size, _ = state_dict["visual.conv1.weight"].shape
            vision_layers = _count(state_dict, "visual.transformer.resblocks.", 3)
            grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
            image_resolution = vision_patch_size * grid
        else:  # modified ResNet
            vision_layers = tuple(_count(state_dict, f"visual.layer{b}.", 2) for b in (1, 2, 3, 4))
            vision_width = state_dict["visual.layer1.0.conv1.weight"].shape[0]
            vision_patch_size = None
            grid = round((state_dict["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
            image_resolution = 32 * grid
        transformer_width = state_dict["ln_final.weight"].shape[0]
        return dict(
            embed_dim=state_dict["text_projection"].shape[1], image_resolution=image_resolution,
            vision_layers=vision_layers, vision_width=vision_width,
            vision_patch_size=vision_patch_size,
            context_length=state_dict["positional_embedding"].shape[0],
            vocab_size=state_dict["token_embedding.weight"].shape[0],
            transformer_width=transformer_width, transformer_heads=transformer_width // 64,
            transformer_layers=_count(state_dict, "transformer.resblocks.", 2))
    except KeyError as e:
        raise ValueError(f"not a CLIP state dict: it has no {e.args[0]!r} entry "
                         f"(it has {len(state_dict)} entries, e.g. {list(state_dict)[:5]})"
                         ) from None


def _count(state_dict, prefix, part):
    """Number of distinct indices at dot-position `part` among keys starting with `prefix`."""
    return len({k.split(".")[part] for k in state_dict if k.startswith(prefix)})


def load_checked(module, state_dict, source="the state dict"):
    """load_state_dict(strict=True), or one ValueError naming every missing key, unexpected key and
    bad shape."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k}: checkpoint {tuple(state_dict[k].shape)}, model {tuple(v.shape)}"
             for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    problems = [f"{title} ({len(keys)}): {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}"
                for title, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                    ("wrong shapes", wrong)) if keys]
    if problems:
        raise ValueError(f"{source} does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state_dict, strict=True)  # copies official fp16 tensors into fp32 ones


# --------------------------------------------------------------------------------------------------
# Reading checkpoint files: official TorchScript archives (as data, no code) or torch.save'd dicts


class _ScriptObject:
    """Stands in for a TorchScript module class while unpickling: keeps the attributes, runs
    nothing."""

    def __setstate__(self, state):
        self.state = state


class _TensorsOnlyUnpickler(pickle.Unpickler):
    """Reads a TorchScript archive's data.pkl: tensors and attribute trees, no code, no other
    classes."""

    STORAGE_DTYPES = {"HalfStorage": torch.float16, "FloatStorage": torch.float32,
                      "DoubleStorage": torch.float64, "BFloat16Storage": torch.bfloat16,
                      "LongStorage": torch.int64, "IntStorage": torch.int32,
                      "ShortStorage": torch.int16, "CharStorage": torch.int8,
                      "ByteStorage": torch.uint8, "BoolStorage": torch.bool}

    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if module.startswith("__torch__"):
            return _ScriptObject
        if module == "torch" and name in self.STORAGE_DTYPES:
            return self.STORAGE_DTYPES[name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return (lambda storage, offset, size, stride, *_:
                    storage.as_strided(size, stride, offset))
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a TorchScript archive")

    def persistent_load(self, pid):  # ('storage', dtype, key, location, numel)
        _, dtype, key, _, numel = pid
        data = bytearray(self.archive.read(f"{self.prefix}/data/{key}"))
        return (torch.frombuffer(data, dtype=dtype, count=numel) if numel
                else torch.empty(0, dtype=dtype))


def _collect_tensors(obj, prefix=""):
    """Flatten a tree of unpickled TorchScript modules into {'a.b.c': tensor}."""
    out = {}
    state = obj.state if isinstance(obj, _ScriptObject) else obj
    if isinstance(state, dict):
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value
            elif isinstance(value, (_ScriptObject, dict)):
                out.update(_collect_tensors(value, f"{prefix}{name}."))
    return out


def read_torchscript_state_dict(path):
    """The weights of an official TorchScript CLIP archive, read as data (torch.jit is
    deprecated)."""
    with zipfile.ZipFile(path) as archive:
        prefix = next(n[:-len("/data.pkl")] for n in archive.namelist()
                      if n.count("/") == 1 and n.endswith("/data.pkl"))
        with archive.open(f"{prefix}/data.pkl") as f:
            root = _TensorsOnlyUnpickler(io.BytesIO(f.read()), archive, prefix).load()
    # keep what a state dict holds: attributes such as OpenAI's `attn_mask` are constants, not
    # weights
    return {k: v for k, v in _collect_tensors(root).items() if not k.endswith("attn_mask")}


def read_state_dict(path):
    """A CLIP state dict from a file: an official TorchScript archive or a plain torch.save'd
    dict."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a CLIP checkpoint: it is not a zip archive (the format "
                         f"of both torch.save and the official TorchScript files); it may be "
                         f"truncated or another file type")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any("/code/" in n for n in names):  # TorchScript archives hold code; torch.save's do not
            try:
                return read_torchscript_state_dict(path)
            except (pickle.UnpicklingError, StopIteration, KeyError):
                # an unusual archive: let TorchScript read it
                return {k: v for k, v in
                        torch.jit.load(path, map_location="cpu").state_dict().items()}
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError, OSError) as e:
        raise ValueError(f"{path} could not be read as a CLIP checkpoint "
                         f"({type(e).__name__}: {e}); the file may be truncated: delete it and "
                         f"download it again") from None
    if (isinstance(state_dict, dict) and "state_dict" in state_dict
            and isinstance(state_dict["state_dict"], dict)):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a state dict of CLIP "
                         f"weights")
    return state_dict


# --------------------------------------------------------------------------------------------------
# Official checkpoints: download (SHA256-checked) and load

_MODELS = {
    "RN50": "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
    "ViT-B/32": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px":
        "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}
URL_ROOT = "https://openaipublic.azureedge.net/clip/models/"  # each file's SHA256 is in its path


def available_models():
    return list(_MODELS)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(name, root):
    """Path of the official checkpoint `name` in `root`, downloaded (SHA256-checked) if not
    there."""
    url = URL_ROOT + _MODELS[name]
    expected_sha256 = _MODELS[name].split("/")[0]
    target = os.path.join(root, os.path.basename(url))
    if os.path.isfile(target):
        if _sha256(target) == expected_sha256:
            return target
        print(f"{target} does not match its SHA256 checksum; downloading it again", file=sys.stderr)
    os.makedirs(root, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, suffix=".part")  # renamed only when whole and checked
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            total, done = int(response.headers.get("Content-Length", 0)), 0
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                done += len(chunk)
                print(f"\rdownloading {name}: {done >> 20} / {total >> 20} MiB", end="",
                      file=sys.stderr)
        print(file=sys.stderr)
        if _sha256(tmp) != expected_sha256:
            raise RuntimeError(f"the download of {url} does not match its SHA256 checksum; "
                               f"try again")
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as e:
        raise RuntimeError(f"could not download CLIP {name} from {url} ({e}). Without internet "
                           f"access, fetch that URL on another machine and place the file at "
                           f"{target}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def load(name_or_path, device="cpu", download_root=None):
    """CLIP in eval mode, fp32, on `device`, from an official name (see available_models()) or a
    file."""
    if name_or_path in _MODELS:
        root = download_root or os.path.expanduser("~/.cache/clip")  # OpenAI's package's cache too
        path = download(name_or_path, root)
    elif os.path.isfile(name_or_path):
        path = name_or_path
    else:
        raise FileNotFoundError(f"{name_or_path!r} is neither an official CLIP model name "
                                f"(one of {', '.join(available_models())}) nor an existing "
                                f"checkpoint file")
    return build_model(read_state_dict(path)).to(device)
