"""evaluate.py --confusion: an image that reads at a glance, at 4 classes as at UCF101's 101.

A reader must see which run and split it shows (the title), what a colour means (a colour bar, and
rows that sum to 1) and, where digits fit in a cell, how many videos it holds. Checked on the figure
save_confusion_png saves (its texts, where they land once drawn) and on the PNG's pixels.
"""

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from matplotlib import image as image_io
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import evaluate
from test_evaluate import one_thread, run_main, save_checkpoint, ucf101  # noqa: F401 (fixtures)


@pytest.fixture
def saved(monkeypatch):
    """The figures that get saved, kept for a look at what they drew."""
    figures, savefig = [], Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return savefig(self, *args, **kwargs)
    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def draw(figure):
    """Draw a saved (and closed) figure again: a renderer to measure texts with."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def drawn_cells(figure):
    """{(true, predicted): (text, its extent on the canvas, its colour)} of the matrix's cells."""
    renderer = draw(figure)
    return {(round(t.get_position()[1]), round(t.get_position()[0])):
            (t.get_text(), t.get_window_extent(renderer), t.get_color())
            for t in figure.axes[0].texts}


def cell_extent(axes, i, j):
    """(x0, y0, x1, y1) of cell (i, j) on the canvas."""
    (x0, y0), (x1, y1) = axes.transData.transform([(j - 0.5, i + 0.5), (j + 0.5, i - 0.5)])
    return x0, y0, x1, y1


def assert_inside(box, cell):
    x0, y0, x1, y1 = cell
    assert x0 <= box.x0 and box.x1 <= x1 and y0 <= box.y0 and box.y1 <= y1, (box, cell)


def luminance(colour):
    r, g, b = colour[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def confusions(C, per_class, seed=0):
    """(C, C) counts of a plausible classifier: most videos right, a few spread over other
    classes."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.arange(C).repeat_interleave(per_class)
    scores = 3 * torch.eye(C)[targets] + torch.randn(len(targets), C, generator=generator)
    return evaluate.confusion_matrix(scores, targets, C)


def test_a_small_matrix_shows_count_and_row_share_in_each_non_empty_cell(tmp_path, saved):
    matrix = torch.tensor([[5, 1, 0, 0], [0, 6, 0, 0], [2, 0, 4, 0], [0, 0, 0, 3]])
    path = str(tmp_path / "confusion.png")
    assert evaluate.save_confusion_png(matrix, ["a", "b", "c", "d"], path)
    figure = saved[-1]
    cells = drawn_cells(figure)
    assert {cell: text for cell, (text, _, _) in cells.items()} == {
        (0, 0): "5\n83%", (0, 1): "1\n17%", (1, 1): "6\n100%", (2, 0): "2\n33%",
        (2, 2): "4\n67%", (3, 3): "3\n100%"}                          # empty cells stay blank
    for (i, j), (_, box, colour) in cells.items():
        assert_inside(box, cell_extent(figure.axes[0], i, j))
        background = colormaps["Blues"](float(matrix[i, j] / matrix[i].sum()))
        ink = np.array(colour if isinstance(colour, tuple) else
                       {"white": (1, 1, 1), "black": (0, 0, 0)}[colour])
        assert abs(luminance(ink) - luminance(background)) > 0.4, (i, j)   # digits stand out
    image = image_io.imread(path)[..., :3]                            # (H, W, 3) in [0, 1]
    shades = [len(np.unique(column.round(3), axis=0)) for column in image.transpose(1, 0, 2)]
    assert max(shades) > 150                                          # a colour bar: a gradient
    assert "each row sums to 1" in figure.axes[1].get_ylabel()


def test_at_101_classes_each_non_empty_cell_shows_its_count_within_the_cell(tmp_path, saved):
    matrix = confusions(101, 37)                                      # UCF101's test split 1
    names = [f"class {c:03d}" for c in range(101)]
    assert evaluate.save_confusion_png(matrix, names, str(tmp_path / "confusion.png"))
    figure, axes = saved[-1], saved[-1].axes[0]
    cells = drawn_cells(figure)
    non_empty = {(int(i), int(j)) for i, j in torch.nonzero(matrix).tolist()}
    assert set(cells) == non_empty and len(non_empty) > 2 * 101       # mistakes too
    for (i, j), (text, box, _) in cells.items():
        assert text == str(int(matrix[i, j]))
        assert_inside(box, cell_extent(axes, i, j))                   # digits fit in their cell
        assert box.height >= 5 * figure.dpi / 72 * 0.7                # at least 5 pt tall
    renderer = figure.canvas.get_renderer()                           # drawn by drawn_cells
    rows = [label for label in axes.get_yticklabels() if label.get_text()]
    assert [label.get_text() for label in rows] == [f"{name} (37)" for name in names]
    boxes = [label.get_window_extent(renderer) for label in rows]
    assert all(not a.overlaps(b) for a, b in zip(boxes, boxes[1:]))  # one per row, apart
    assert "numbers: videos" in figure.get_suptitle()


def test_beyond_the_count_limit_cells_are_colour_only_and_the_title_says_so(tmp_path, saved):
    C = evaluate.CONFUSION_COUNT_UP_TO + 1
    matrix = confusions(C, 2)
    assert evaluate.save_confusion_png(matrix, [f"c{c}" for c in range(C)],
                                       str(tmp_path / "confusion.png"))
    assert not saved[-1].axes[0].texts
    assert f"no numbers at {C} classes" in saved[-1].get_suptitle()


def test_the_title_names_the_run_the_split_and_its_scores(  # noqa: F811 (fixtures)
        ucf101, tmp_path, saved, one_thread):
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    png = tmp_path / "confusion.png"
    result, _ = run_main(["--checkpoint", checkpoint, "--dataset", "ucf101", "--root",
                          ucf101["root"], "--confusion", str(png)], tmp_path)
    title = saved[-1].get_suptitle()
    assert png.stat().st_size > 0 and checkpoint in title
    lines = " ".join(title.split())                                   # as if unwrapped
    assert "ucf101 split 1 test" in lines and f"top-1 {result['top1']:6.2f}" in title
    assert f"({result['evaluated']} videos;" in lines
