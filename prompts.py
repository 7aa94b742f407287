"""The "prompt" stage of ActionCLIP's "pre-train, prompt, fine-tune", and the model it assembles.

ActionCLIP [Wang, Xing, Liu, 2021] turns action recognition into video-text matching: a video and
the name of its class, wrapped in a sentence, should land close together in CLIP's embedding space.
The prompts adapt both sides to CLIP without changing its weights' shapes:

    textual prompt [Sec. 3.2, Fig. 2b]   a class name inside a template ("a video of {}"): one
                                         random template per video in training; every template at
                                         test time, a class scoring the mean over templates of its
                                         softmax over classes
    visual prompt  [Sec. 3.3, Fig. 2c-g] how the frames of a video become one feature:
        pre-network    joint       the patch tokens of all frames attend to each other in CLIP's ViT
        in-network     shift       channels shifted between neighbouring frames between ViT blocks
        post-network   meanP       mean of the per-frame CLIP features
                       conv1d      depthwise temporal convolution, residual, mean
                       lstm        one LSTM layer over the frames, residual, mean
                       transf      6 transformer blocks over the frames, residual, mean (the paper's
                                   choice)
                       transf_cls  6 transformer blocks over a class token and the frames, class
                                   token out
    ActionCLIP         CLIP + one visual prompt; logits = exp(t) * cos(video, text) [Eq. 2, Eq. 3]
    VideoClassifier    the unimodal baseline of Table 1: the same video encoder, a linear classifier
    text features      every (template, class) prompt through the text encoder, and the ensemble
    load_actionclip    this project's checkpoints, or the officially released ActionCLIP ones

Training, as train.py does it: the tokens of every (template, class) prompt are computed once, and
each video is paired with the prompt of its class under a template drawn at random for that video:

    clip = clip_model.load("ViT-B/16")
    model = ActionCLIP(clip, visual_prompt="transf", num_frames=8)
    tokens = tokenize_prompts(classnames, TEMPLATES, clip.context_length)  # (K*C, L), row k*C + c
    tokens = tokens.view(len(TEMPLATES), len(classnames), -1)              # (K, C, L)
    k = torch.randint(len(TEMPLATES), (B,))                                 # a template per video
    logits = model(video, tokens[k, labels])                                # training: (B, B)
    texts = text_features(model, classnames)                                # test: (K, C, E), once
    scores = ensemble_scores(model.encode_video(video), texts, model.logit_scale.exp())  # (B, C)

(train.py draws k in its dataset, from (seed, epoch, video), and compares the features of the
whole global batch; random_prompt(name) draws the text of one video as a string, for scripts and
tests.)

Shapes: B videos, T frames per video, L tokens, D transformer width, E joint embedding dimension,
K templates, C classes, M texts (any batch the text encoder sees), S image side in pixels, G grid
side (S / patch size).

Notes on the paper and the official code (github.com/sallymmx/ActionCLIP):
  - The paper counts K = 18 templates; the official release ships the 16 in TEMPLATES, which we use.
  - The official Conv_1D reshapes (B, T, E) features with `x.view(-1, E, T)` where a transpose was
    meant, so its "temporal" convolution mixes channels of different frames. Ours convolves along
    time. An official Conv_1D checkpoint loads, but its weights were learned under the scrambled
    layout.
  - The official `joint=True` option cannot be constructed; ours runs, and with one frame it is
    exactly CLIP's image encoder.
Departures from the official code are marked `# official: ...` where they happen.
"""

import os
import pickle
import zipfile

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from clip_model import CLIP, Transformer, VisionTransformer, build_model, load_checked, tokenize

# --------------------------------------------------------------------------------------------------
# Textual prompts [Sec. 3.2, Fig. 2b]

# The 16 templates of the official release (the paper says K = 18). "{}" is the class name.
TEMPLATES = [
    "a photo of action {}", "a picture of action {}", "Human action of {}", "{}, an action",
    "{} this is an action", "{}, a video of action", "Playing action of {}", "{}",
    "Playing a kind of action, {}", "Doing a kind of action, {}", "Look, the human is {}",
    "Can you recognize the action of {}?", "Video classification of {}", "A video of {}",
    "The man is {}", "The woman is {}",
]
LABEL_ONLY = ["{}"]  # the bare class name: Table 3's ablation without textual prompts


def class_prompts(classnames, templates=TEMPLATES):
    """The textual prompt [Sec. 3.2]: every template around every class name, template-major:
    row k*C + c is template k, class c."""
    return [template.format(name) for template in templates for name in classnames]


def tokenize_prompts(classnames, templates, context_length):
    """Token ids of class_prompts(classnames, templates): (K*C, L), row k*C + c.

    Training indexes it with a random template per video; testing encodes all of it.
    """
    rows = []
    for name in classnames:
        try:
            rows.append(tokenize([template.format(name) for template in templates],
                                 context_length))                     # (K, L)
        except ValueError:
            raise ValueError(f"the class name {name!r} makes a prompt longer than the text "
                             f"encoder's {context_length} tokens: shorten it in the class list"
                             ) from None
    return torch.stack(rows, dim=1).flatten(0, 1)                     # (K, C, L) -> (K*C, L)


def random_prompt(classname, generator=None, templates=TEMPLATES):
    """One template drawn at random around `classname`: the training-time text of a video
    [Sec. 3.2], as a string (train.py draws the template's index instead)."""
    k = torch.randint(len(templates), (1,), generator=generator).item()
    return templates[k].format(classname)


# --------------------------------------------------------------------------------------------------
# Visual prompts [Sec. 3.3, Fig. 2c-g]
#
# Every prompt is built as Prompt(clip, num_frames), reading its sizes from the CLIP it sits on.
# The post-network ones map CLIP's per-frame features (B, T, E) to one video feature (B, E); the
# pre- and in-network ones (encodes_frames = True) run CLIP's ViT themselves:
# forward(visual, video) -> (B, E).


class VisualPrompt(nn.Module):
    """What every visual prompt [Sec. 3.3] declares.

    encodes_frames: True for prompts that run CLIP's ViT themselves,
        forward(visual, video (B, T, 3, S, S)).
    frame_tables: state-dict names of tables with a row per frame (position embeddings); they cover
        num_frames frames, and loading a checkpoint that covers more keeps their first rows.
    """
    encodes_frames = False
    frame_tables = ()

    def __init__(self, num_frames):
        super().__init__()
        self.num_frames = num_frames

    def check_frames(self, T):
        if T > self.num_frames:
            raise ValueError(f"this {type(self).__name__} visual prompt has position embeddings "
                             f"for {self.num_frames} frames, the video has {T}: build it with "
                             f"num_frames >= {T}")


class MeanP(VisualPrompt):
    """Post-network prompt [Sec. 3.3]: the mean of the frame features. Blind to frame order."""

    def __init__(self, clip, num_frames):
        super().__init__(num_frames)

    def forward(self, x):                                             # (B, T, E)
        return x.mean(dim=1)                                          # (B, E)


class Conv1D(VisualPrompt):
    """Post-network prompt [Sec. 3.3]: depthwise temporal convolution (kernel 3), residual, mean.

    Initialised as a temporal shift: a quarter of the channels look back one frame, half stay, the
    rest look ahead one frame.
    """

    def __init__(self, clip, num_frames):
        super().__init__(num_frames)
        E = clip.embed_dim
        self.shift = nn.Conv1d(E, E, kernel_size=3, padding=1, groups=E,
                               bias=False)                            # the official name
        weight = torch.zeros(E, 1, 3)
        weight[:E // 4, 0, 0] = 1.0                                   # out[t] = in[t - 1]
        weight[E // 4:E // 4 + E // 2, 0, 1] = 1.0                    # out[t] = in[t]
        weight[E // 4 + E // 2:, 0, 2] = 1.0                          # out[t] = in[t + 1]
        with torch.no_grad():
            self.shift.weight.copy_(weight)

    def forward(self, x):                                             # (B, T, E)
        # official: x.view(-1, E, T), which scrambles frames with channels; a transpose is meant
        y = self.shift(x.transpose(1, 2)).transpose(1, 2)             # (B, E, T) -> (B, T, E)
        return (x + y).mean(dim=1)                                    # (B, E)


class LSTM(VisualPrompt):
    """Post-network prompt [Sec. 3.3]: one LSTM layer over the frames, residual, mean."""

    def __init__(self, clip, num_frames):
        super().__init__(num_frames)
        E = clip.embed_dim
        self.lstm_visual = nn.LSTM(input_size=E, hidden_size=E, num_layers=1,
                                   batch_first=True)                  # the official name

    def forward(self, x):                                             # (B, T, E)
        y, _ = self.lstm_visual(x)                                    # (B, T, E)
        return (x + y).mean(dim=1)                                    # (B, E)


class Transf(VisualPrompt):
    """Post-network prompt, the paper's choice [Sec. 3.3]: frame positions, Lt = 6 pre-LN
    transformer blocks over the frames, a residual around the stack, mean over frames.

    Width = embed dim, QuickGELU MLP of 4x width, LayerNorm eps 1e-12, submodules named as the
    official `fusion_model` keys. The new weights start small (std 0.02), so training starts close
    to 2x meanP (a scale that cosine similarity ignores).
    """
    frame_tables = ("frame_position_embeddings.weight",)

    def __init__(self, clip, num_frames, layers=6):
        super().__init__(num_frames)
        E = clip.embed_dim
        # official: 77 rows, the first T used
        self.frame_position_embeddings = nn.Embedding(num_frames, E)
        self.transformer = Transformer(E, layers, temporal_heads(clip), ln_eps=1e-12)
        self.apply(init_official)

    def forward(self, x):                                             # (B, T, E)
        self.check_frames(x.shape[1])
        frames = x
        x = x + self.frame_position_embeddings.weight[:x.shape[1]]    # (B, T, E)
        x = self.transformer(x)
        return (x + frames).mean(dim=1)                               # (B, E)


class TransfCls(VisualPrompt):
    """Post-network prompt [Sec. 3.3]: a class token before the frames, positions, 6 transformer
    blocks; the video feature is the output at the class token. Blocks as in Transf."""
    frame_tables = ("frame_position_embeddings.weight",)

    def __init__(self, clip, num_frames, layers=6):
        super().__init__(num_frames)
        E = clip.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(E))
        self.frame_position_embeddings = nn.Embedding(1 + num_frames, E)  # row 0: the class token's
        self.transformer = Transformer(E, layers, temporal_heads(clip), ln_eps=1e-12)
        self.apply(init_official)
        nn.init.normal_(self.cls_token, std=0.02)
        # official: a torch nn.TransformerEncoder (post-LN, ReLU, dropout) with separate names; we
        # reuse Transf's blocks so the two heads differ only in how they pool

    def forward(self, x):                                             # (B, T, E)
        B, T, _ = x.shape
        self.check_frames(T)
        x = torch.cat([self.cls_token.to(x.dtype).expand(B, 1, -1), x], dim=1)  # (B, 1 + T, E)
        x = x + self.frame_position_embeddings.weight[:1 + T]
        return self.transformer(x)[:, 0]                              # (B, E)


def init_official(module):
    """The official visual prompt's initialisation: normal(0, 0.02) weights, zero biases,
    LayerNorm 1/0.

    Attention's fused in_proj_weight keeps its xavier initialisation (nn.MultiheadAttention's), as
    there.
    """
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def temporal_heads(clip):
    """Heads of a temporal transformer: CLIP's text width / 64, as the official code reads them.

    That equals embed_dim / 64 for every official CLIP but RN50 (embed 1024, text width 512: 8
    heads).
    """
    return max(1, clip.transformer.width // 64)


class Joint(VisualPrompt):
    """Pre-network prompt [Sec. 3.3]: the patch tokens of all T frames attend jointly inside CLIP's
    ViT.

    One class token per video; a learnable temporal embedding is added to each frame's patch tokens.
    It starts at zero, so with T = 1 this is exactly CLIP's image encoder.
    official: `joint=True` fails in the constructor; the time embedding there is per frame too.
    """
    encodes_frames = True
    frame_tables = ("time_embedding",)

    def __init__(self, clip, num_frames):
        super().__init__(num_frames)
        require_vit(clip, "joint")
        self.time_embedding = nn.Parameter(torch.zeros(num_frames, clip.visual.transformer.width))

    def forward(self, visual, video):                                 # (B, T, 3, S, S)
        B, T = video.shape[:2]
        self.check_frames(T)
        x = visual.tokens(video.flatten(0, 1))                        # (B*T, 1 + G*G, D)
        x = x.view(B, T, *x.shape[1:])                                # (B, T, 1 + G*G, D)
        cls = x[:, 0, :1]                                             # (B, 1, D): same every frame
        patches = x[:, :, 1:] + self.time_embedding[:T, None].to(x.dtype)  # (B, T, G*G, D)
        x = torch.cat([cls, patches.flatten(1, 2)], dim=1)            # (B, 1 + T*G*G, D)
        x = visual.transformer(visual.ln_pre(x))
        return visual.head(x[:, 0])                                   # (B, E)


def require_vit(clip, prompt):
    if not isinstance(clip.visual, VisionTransformer):
        raise ValueError(f"the {prompt} visual prompt works on the tokens of a ViT; this CLIP's "
                         f"image encoder is a {type(clip.visual).__name__}: choose a ViT model or "
                         f"another visual prompt")


class Shift(VisualPrompt):
    """In-network prompt [Sec. 3.3]: TSM's parameter-free temporal shift inside CLIP's ViT.

    Each frame runs through the ViT as an image, but before every block the patch tokens of the
    residual stream have 1/8 of their channels taken from the next frame and 1/8 from the previous
    one; the class token is not shifted. This is the official code's TemporalShift_VIT, which wraps
    each block (TSM's "in-place" shift, applied to the whole block input). CLIP's weights are reused
    unchanged; the video feature is the mean of the frames' features.
    """
    encodes_frames = True

    def __init__(self, clip, num_frames, fraction=1 / 8):
        super().__init__(num_frames)
        require_vit(clip, "shift")
        self.fraction = fraction

    def block(self, block, x, num_frames):                            # (B*T, 1 + G*G, D)
        """One of CLIP's ResidualAttentionBlocks, on a stream whose patch tokens were shifted in
        time."""
        x = torch.cat([x[:, :1], temporal_shift(x[:, 1:], num_frames, self.fraction)], dim=1)
        return block(x)

    def forward(self, visual, video):                                 # (B, T, 3, S, S)
        B, T = video.shape[:2]
        x = visual.ln_pre(visual.tokens(video.flatten(0, 1)))         # (B*T, L, D)
        for block in visual.transformer.resblocks:
            if visual.transformer.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(self.block, block, x, T, use_reentrant=False)
            else:
                x = self.block(block, x, T)
        return visual.head(x[:, 0]).view(B, T, -1).mean(dim=1)        # (B, E)


def temporal_shift(x, num_frames, fraction):                          # (B*T, L, D)
    """TSM's shift [Lin et al., 2019]: `fraction` of the channels from the next frame, as many from
    the previous one, zeros past the ends. Parameter-free; fraction=0 is the identity."""
    fold = int(x.shape[-1] * fraction)
    x = x.view(-1, num_frames, *x.shape[1:])                          # (B, T, L, D)
    out = torch.zeros_like(x)
    out[:, :-1, :, :fold] = x[:, 1:, :, :fold]                        # frame t sees frame t + 1
    out[:, 1:, :, fold:2 * fold] = x[:, :-1, :, fold:2 * fold]        # frame t sees frame t - 1
    out[:, :, :, 2 * fold:] = x[:, :, :, 2 * fold:]                   # the rest stays
    return out.flatten(0, 1)                                          # (B*T, L, D)


VISUAL_PROMPTS = {
    "meanP": MeanP, "conv1d": Conv1D, "lstm": LSTM, "transf": Transf, "transf_cls": TransfCls,
    "joint": Joint, "shift": Shift,
}


# --------------------------------------------------------------------------------------------------
# The model


class ActionCLIP(nn.Module):
    """CLIP's encoders with a visual prompt: video and text features, logits = exp(t) * cosine
    [Eq. 2, Eq. 3].

    num_frames is the most frames a video may have for prompts with per-frame positions (transf,
    transf_cls, joint); shorter videos use the first positions, as the official code does.
    """

    def __init__(self, clip: CLIP, visual_prompt="transf", num_frames=8):
        super().__init__()
        if visual_prompt not in VISUAL_PROMPTS:
            raise ValueError(f"unknown visual prompt {visual_prompt!r}: choose one of "
                             f"{', '.join(VISUAL_PROMPTS)}")
        self.clip = clip
        self.visual_prompt = VISUAL_PROMPTS[visual_prompt](clip, num_frames)
        self.config = {"visual_prompt": visual_prompt, "num_frames": num_frames,
                       "text_heads": clip.transformer.heads}  # for load_ours: not in the weights

    @property
    def logit_scale(self):
        return self.clip.logit_scale                                  # log(1/tau), as in CLIP

    def encode_video(self, video):                                    # (B, T, 3, S, S)
        if self.visual_prompt.encodes_frames:
            return self.visual_prompt(self.clip.visual, video)        # (B, E)
        B, T = video.shape[:2]
        frames = self.clip.encode_image(video.flatten(0, 1))          # (B*T, E): frames are images
        return self.visual_prompt(frames.view(B, T, -1))              # (B, E)

    def encode_text(self, tokens):                                    # (M, L)
        return self.clip.encode_text(tokens)                          # (M, E)

    def forward(self, video, tokens):                                 # (B, T, 3, S, S), (M, L)
        video_features = F.normalize(self.encode_video(video), dim=-1)    # (B, E)
        text_features = F.normalize(self.encode_text(tokens), dim=-1)     # (M, E)
        # cosine similarity s(x, y) [Eq. 2], divided by the temperature tau (exp(logit_scale) is
        # 1/tau): the logits that Eq. 3 softmaxes, over texts and over videos
        return self.logit_scale.exp() * video_features @ text_features.t()  # (B, M)

    def new_parameters(self):
        """The parameters CLIP did not pre-train (the visual prompt's): train.py gives them 10x the
        lr."""
        return list(self.visual_prompt.parameters())


class VideoClassifier(nn.Module):
    """The unimodal baseline of Table 1: ActionCLIP's video encoder and a linear classifier, no
    text."""

    def __init__(self, actionclip: ActionCLIP, num_classes, classnames=None):
        super().__init__()
        self.actionclip = actionclip
        self.fc = nn.Linear(actionclip.clip.embed_dim, num_classes)
        self.config = {**actionclip.config, "num_classes": num_classes}
        if classnames is not None:                                    # what each output means
            self.config["classnames"] = list(classnames)

    def forward(self, video):                                         # (B, T, 3, S, S)
        return self.fc(self.actionclip.encode_video(video))           # (B, C)

    def new_parameters(self):
        return self.actionclip.new_parameters() + list(self.fc.parameters())


# --------------------------------------------------------------------------------------------------
# Text features and the prompt ensemble at test time [Sec. 3.2]


@torch.no_grad()
def text_features(model, classnames, templates=TEMPLATES, batch_size=256, device=None):
    """L2-normalised features of every template around every class name: (K, C, E), the prompt
    ensemble of the test [Sec. 3.2].

    templates=LABEL_ONLY gives the bare class names. Computed once per evaluation, in batches.
    """
    model = getattr(model, "module", model)                          # unwrap DDP
    device = device or next(model.parameters()).device
    tokens = tokenize_prompts(classnames, templates, model.clip.context_length)  # (K*C, L)
    features = torch.cat([model.encode_text(chunk.to(device))
                          for chunk in tokens.split(batch_size)])     # (K*C, E)
    return F.normalize(features.float(), dim=-1).view(len(templates), len(classnames),
                                                      -1)             # (K, C, E)


def ensemble_scores(video_features, text_features, logit_scale):
    """Class scores (B, C): for each template a softmax over the classes [Eq. 3], then the mean over
    templates. The predicted class is their argmax [Eq. 1] (evaluate.py).

    What the official test does. logit_scale is the multiplier 1/tau, model.logit_scale.exp() (the
    official test uses a fixed 100, the value CLIP was trained to).
    """
    v = F.normalize(video_features.float(), dim=-1)                   # (B, E)
    t = F.normalize(text_features.float(), dim=-1)                    # (K, C, E)
    logits = logit_scale * torch.einsum("be,kce->bkc", v, t)          # (B, K, C): cosine [Eq. 2]
    return logits.softmax(dim=-1).mean(dim=1)                         # (B, C)


# --------------------------------------------------------------------------------------------------
# Checkpoints: this project's, and the official ActionCLIP releases

# The official files do not record T (releases use 8, 16, 32): pass num_frames to match.
OFFICIAL_NUM_FRAMES = 8


def checkpoint_payload(model):
    """What a checkpoint needs to rebuild `model` (train.py adds the optimizer, epoch, args,
    ...)."""
    model = getattr(model, "module", model)                          # unwrap DDP
    return {"model": model.state_dict(), "model_config": dict(model.config)}


def load_actionclip(path, device="cpu", num_frames=None):
    """An ActionCLIP (a VideoClassifier for a unimodal checkpoint) in eval mode, from either kind of
    file.

    num_frames: the most frames per video. None keeps a checkpoint's own T; for the official files,
    which do not record it, None means 8. A smaller T keeps the first rows of the position tables.
    """
    checkpoint = read_actionclip_checkpoint(path)
    try:
        if "model_config" in checkpoint:
            model = load_ours(checkpoint, num_frames, path)
        else:
            model = load_official(checkpoint, num_frames, path)
    except (KeyError, TypeError, AttributeError) as e:   # a dict of the right kind, damaged
        raise ValueError(f"{path} is a damaged ActionCLIP checkpoint ({type(e).__name__}: {e}): "
                         f"copy it again, or use another checkpoint") from None
    return model.to(device).eval()


def read_actionclip_checkpoint(path, mmap=False):
    """read_checkpoint; a ValueError unless the dict is an ActionCLIP checkpoint (either kind)."""
    checkpoint = read_checkpoint(path, mmap)
    ours = {"model", "model_config"} <= set(checkpoint)
    if not ours and "fusion_model_state_dict" not in checkpoint:
        raise ValueError(f"{path} is not an ActionCLIP checkpoint: expected 'model' and "
                         f"'model_config' (this project's) or 'model_state_dict' and "
                         f"'fusion_model_state_dict' (the official release); it has "
                         f"{describe(map(str, checkpoint))}")
    return checkpoint


def load_ours(checkpoint, num_frames, path):
    """This project's checkpoint: checkpoint_payload's state dict and config."""
    config, state_dict = checkpoint["model_config"], dict(checkpoint["model"])
    inner = "actionclip." if "num_classes" in config else ""  # a VideoClassifier wraps ActionCLIP
    clip = build_model(strip_prefix(state_dict, inner + "clip."), config.get("text_heads"))
    model = ActionCLIP(clip, config["visual_prompt"], num_frames or config["num_frames"])
    prompt_state = fit_frame_tables(model.visual_prompt,
                                    strip_prefix(state_dict, inner + "visual_prompt."), path)
    load_checked(model.visual_prompt, prompt_state, f"{path}: the visual prompt")
    if "num_classes" in config:
        model = VideoClassifier(model, config["num_classes"], config.get("classnames"))
        load_checked(model.fc, strip_prefix(state_dict, "fc."), f"{path}: the classifier")
    if state_dict:
        raise ValueError(f"{path}: unexpected keys in the model state dict: {describe(state_dict)}")
    return model


def load_official(checkpoint, num_frames, path):
    """An official release: OpenAI CLIP keys in model_state_dict, the head in
    fusion_model_state_dict."""
    if "model_state_dict" not in checkpoint:
        raise ValueError(f"{path} has a fusion_model_state_dict but no model_state_dict (the CLIP "
                         f"weights)")
    clip = build_model(checkpoint["model_state_dict"])  # fp16/fp32 mix -> fp32; sizes from shapes
    source = f"{path}: fusion_model_state_dict"
    fusion = {k.removeprefix("module."): v                            # saved from DataParallel
              for k, v in checkpoint["fusion_model_state_dict"].items()}
    name = official_visual_prompt(fusion, source)
    if name in ("conv1d", "lstm"):
        # official: built for these heads, never used
        fusion.pop("frame_position_embeddings.weight", None)
    model = ActionCLIP(clip, name, num_frames or OFFICIAL_NUM_FRAMES)
    load_checked(model.visual_prompt, fit_frame_tables(model.visual_prompt, fusion, source), source)
    return model


def official_visual_prompt(fusion, source):
    """Which of the official heads a `fusion_model_state_dict` (without `module.`) holds, from its
    keys."""
    if not fusion:
        return "meanP"                                                # meanP has no parameters
    if any(k.startswith("shift.") for k in fusion):
        return "conv1d"                                               # official Conv_1D: `shift`
    if any(k.startswith("lstm_visual.") for k in fusion):
        return "lstm"
    if any("cls_token" in k for k in fusion):
        return "transf_cls"
    if ("frame_position_embeddings.weight" in fusion
            and any(k.startswith("transformer.resblocks.") for k in fusion)):
        return "transf"
    raise ValueError(f"{source}: cannot tell which visual prompt it holds from its keys "
                     f"({describe(fusion)}); expected Transf (frame_position_embeddings, "
                     f"transformer.resblocks.*), Conv_1D (shift.weight), "
                     f"LSTM (lstm_visual.*), Transf_cls (a cls_token) or meanP (no keys)")


class TooFewFrames(ValueError):
    """A checkpoint's per-frame tables cover fewer frames than asked for (`covered` of them)."""

    def __init__(self, message, covered):
        super().__init__(message)
        self.covered = covered


def fit_frame_tables(prompt, state_dict, source):
    """Keep the first rows of the per-frame tables: a checkpoint may cover more frames than asked
    for."""
    state_dict = dict(state_dict)
    for key in prompt.frame_tables:
        if key not in state_dict:
            continue                                                  # load_checked names it
        rows = prompt.state_dict()[key].shape[0]
        # transf_cls has a class token row
        covered = state_dict[key].shape[0] - (rows - prompt.num_frames)
        if covered < prompt.num_frames:
            raise TooFewFrames(f"{source}: {key} covers {covered} frames, fewer than the "
                               f"{prompt.num_frames} asked for: pass num_frames <= {covered}",
                               covered)
        state_dict[key] = state_dict[key][:rows]
    return state_dict


def strip_prefix(state_dict, prefix):
    """Remove the entries under `prefix` from state_dict and return them without it."""
    keys = [k for k in state_dict if k.startswith(prefix)]
    return {k[len(prefix):]: state_dict.pop(k) for k in keys}


def describe(keys):
    keys = sorted(keys)
    return ", ".join(keys[:20]) + (f" ... ({len(keys)} in all)" if len(keys) > 20 else "")


def read_checkpoint(path, mmap=False):
    """The dict that torch.save wrote to `path`, read as data (no code runs). Anything else, an
    empty, truncated or foreign file included, is a ValueError of one line naming the file.
    mmap: map the tensors instead of reading them, a cheap check of a large file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    archive = zipfile.is_zipfile(path)                 # torch.save's format since torch 1.6
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and archive)
    except pickle.UnpicklingError as e:
        if archive:
            lines = str(e).splitlines()                 # the line naming the object, if any
            why = next((line for line in lines if "WeightsUnpickler error" in line), lines[-1])
            raise ValueError(f"{path} holds objects other than tensors and plain containers, which "
                             f"are not loaded for safety ({why.strip()})") from None
        raise ValueError(unreadable_checkpoint(path, archive)) from None
    except (RuntimeError, EOFError, KeyError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(unreadable_checkpoint(path, archive, e)) from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not an ActionCLIP "
                         f"checkpoint dict")
    return checkpoint


def unreadable_checkpoint(path, archive, error=None):
    """Why `path` could not be read, in one line, and what to do."""
    if os.path.getsize(path) == 0:
        reason = "it is empty (0 bytes)"
    elif not archive:
        reason = "it is not a zip archive, the format torch.save writes"
    else:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    return (f"{path} could not be read as a checkpoint: {reason}. It may be truncated (a copy, "
            f"download or save cut short) or another kind of file: copy it again, or use another "
            f"checkpoint")
