"""A video shorter than a visual prompt's frame tables uses their first rows (ActionCLIP's
docstring): a prompt built for 8 frames scores a 4-frame video as the same prompt built for 4
frames with those rows. Found by mutmut (benchmarks/mutation.py): the prompt tests build each model
for exactly the video's frames, so transf_cls reading one position too many passed.
"""

import pytest
import torch

from prompts import ActionCLIP
from test_prompts import perturb, tiny_clip, video


@pytest.mark.parametrize("name", ["transf", "transf_cls", "joint"])
def test_a_short_video_uses_the_first_rows_of_the_frame_tables(name):
    clip = tiny_clip()
    long = ActionCLIP(clip, name, num_frames=8).eval()
    perturb(long)                                    # tables and blocks away from their init
    short = ActionCLIP(clip, name, num_frames=4).eval()
    state = long.state_dict()
    for table in long.visual_prompt.frame_tables:
        key = f"visual_prompt.{table}"
        state[key] = state[key][:short.state_dict()[key].shape[0]]     # the first rows
    short.load_state_dict(state)
    with torch.no_grad():
        assert torch.allclose(long.encode_video(video(2, 4)), short.encode_video(video(2, 4)),
                              atol=1e-6)
