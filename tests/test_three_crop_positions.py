"""The 3-crop test views [Sec. 4.1] at exact pixel positions, not only in brightness order.

Frames whose pixels hold their own coordinates (red = column, green = row) already at the test
scale, so the resize leaves them as they are: the first pixel of each crop is its (left, top).
Found by mutmut (benchmarks/mutation.py): an ordering test passes with crops moved by a few pixels.
"""

import pytest
import torch

import video_data


def coordinate_clip(width, height, frames=2):
    """uint8 (T, H, W, 3): red = column, green = row, blue = 0."""
    x = torch.arange(width).view(1, width).expand(height, width)
    y = torch.arange(height).view(height, 1).expand(height, width)
    frame = torch.stack([x, y, torch.zeros_like(x)], dim=-1).to(torch.uint8)   # (H, W, 3)
    return frame.expand(frames, height, width, 3).contiguous()


def crop_corners(width, height, size=64):
    """(left, top) of each of the 3 crops, read from their top-left pixels."""
    transform = video_data.test_transform(size, num_crops=3, on_device=True)  # uint8 out
    assert transform.scale_size == round(size * 256 / 224) == min(width, height)
    views = transform(coordinate_clip(width, height))                          # (3, T, 3, S, S)
    assert views.shape == (3, 2, 3, size, size)
    for view in views:                          # each crop is a whole window of the frame
        left, top = int(view[0, 0, 0, 0]), int(view[0, 1, 0, 0])
        assert torch.equal(view[:, 0], (torch.arange(left, left + size).view(1, 1, size)
                                        .expand(2, size, size)).to(torch.uint8))
        assert torch.equal(view[:, 1], (torch.arange(top, top + size).view(1, size, 1)
                                        .expand(2, size, size)).to(torch.uint8))
    return [(int(v[0, 0, 0, 0]), int(v[0, 1, 0, 0])) for v in views]


@pytest.mark.parametrize("width, height, corners", [
    # landscape 120 x 73, crop 64: left, centre, right at x = 0, (120 - 64) // 2, 120 - 64;
    # centred vertically at (73 - 64) // 2
    (120, 73, [(0, 4), (28, 4), (56, 4)]),
    # portrait: top, middle, bottom, centred horizontally
    (73, 120, [(4, 0), (4, 28), (4, 56)]),
    # square: along the width, as TSN's GroupFullResSample does when w >= h
    (73, 73, [(0, 4), (4, 4), (9, 4)]),
])
def test_three_crops_sit_at_the_ends_and_the_centre_of_the_long_side(width, height, corners):
    assert crop_corners(width, height) == corners
