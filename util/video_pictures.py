"""Pictures of an index's answers, drawn with PIL: a contact sheet of search hits, a timeline of
labels. Each drawing returns where it put what (pixel boxes), so tests can look at those pixels."""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

THUMB = 96          # px: the height of a frame in a contact sheet
FRAMES_SHOWN = 4    # frames of each hit, spread over its window
CAPTION = 300       # px: the width of a hit's caption (rank, score, time range, path)
GAP = 4             # px between frames and rows
BACKGROUND, INK = (255, 255, 255), (0, 0, 0)


def font():
    return ImageFont.load_default()


def shown_indices(frame_indices, count=FRAMES_SHOWN):
    """`count` of a window's sampled frames, spread over it (all of them if there are fewer)."""
    frame_indices = list(frame_indices)
    if len(frame_indices) <= count:
        return frame_indices
    picks = np.linspace(0, len(frame_indices) - 1, count).round().astype(int)
    return [frame_indices[i] for i in picks]


def thumbnail(frame):
    """uint8 (h, w, 3) -> PIL image THUMB px high, aspect kept (bilinear)."""
    h, w = frame.shape[:2]
    return Image.fromarray(np.asarray(frame)).resize((max(1, round(w * THUMB / h)), THUMB),
                                                     Image.BILINEAR)


def contact_sheet(hits, read):
    """A PIL image: one row per hit, its caption then a few of its frames; and the boxes
    [[(x0, y0, x1, y1) of each frame]] per hit. hits: [{"rank", "score", "path", "start_s",
    "end_s", "frame_indices"}]; read(path, indices) -> uint8 (n, h, w, 3)."""
    rows = []
    for hit in hits:
        indices = shown_indices(hit["frame_indices"])
        try:
            thumbs = [thumbnail(f) for f in read(hit["path"], indices)]
        except Exception as e:  # noqa: BLE001 (a file gone or changed since indexing)
            thumbs, hit = [], dict(hit, error=str(e))
        rows.append((hit, thumbs))
    width = CAPTION + max([sum(t.width + GAP for t in thumbs) for _, thumbs in rows] + [THUMB])
    sheet = Image.new("RGB", (width, GAP + len(rows) * (THUMB + GAP)), BACKGROUND)
    draw, boxes = ImageDraw.Draw(sheet), []
    for r, (hit, thumbs) in enumerate(rows):
        y = GAP + r * (THUMB + GAP)
        draw.multiline_text((GAP, y), caption(hit), fill=INK, font=font(), spacing=4)
        x, row_boxes = CAPTION, []
        for t in thumbs:
            sheet.paste(t, (x, y))
            row_boxes.append((x, y, x + t.width, y + THUMB))
            x += t.width + GAP
        boxes.append(row_boxes)
    return sheet, boxes


def caption(hit):
    path = hit["path"]
    shown = path if len(path) <= 44 else "..." + path[-41:]
    lines = [f"{hit['rank']}.  score {hit['score']:.3f}",
             f"{hit['start_s']:.1f}-{hit['end_s']:.1f} s", shown]
    if "error" in hit:
        lines.append(f"cannot show: {hit['error'][:40]}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Timeline: time on x, labels on y, each window's probability of each label as a shade


LABEL_WIDTH = 220   # px for the label names
ROW = 16            # px per label
PLOT_WIDTH = 800    # px for the time axis
AXIS = 30           # px below the plot for the time ticks


def timeline_picture(starts, ends, probabilities, labels, duration):
    """A PIL image of every window's label probabilities (probabilities (W, C)); the most probable
    label of each window drawn dark, others shaded by probability. Returns (image, cell boxes
    [w][c])."""
    W, C = probabilities.shape
    image = Image.new("RGB", (LABEL_WIDTH + PLOT_WIDTH + GAP, C * ROW + AXIS + GAP), BACKGROUND)
    draw = ImageDraw.Draw(image)
    x_of = lambda t: LABEL_WIDTH + round(t / max(duration, 1e-9) * PLOT_WIDTH)
    for c, label in enumerate(labels):
        draw.text((GAP, c * ROW + 2), label[:34], fill=INK, font=font())
    top = probabilities.argmax(1)
    boxes = []
    for w in range(W):
        row = []
        until = starts[w + 1] if w + 1 < W else ends[w]   # overlapping windows: each to the next
        for c in range(C):
            box = (x_of(starts[w]), c * ROW + 1, max(x_of(until), x_of(starts[w]) + 1) - 1,
                   (c + 1) * ROW - 1)
            shade = 0 if c == top[w] else round(255 * (1 - 0.6 * float(probabilities[w, c])))
            draw.rectangle(box, fill=(shade, shade, 255) if c != top[w] else (20, 40, 160))
            row.append(box)
        boxes.append(row)
    for t in time_ticks(duration):
        draw.line((x_of(t), C * ROW, x_of(t), C * ROW + 5), fill=INK)
        draw.text((x_of(t) - 10, C * ROW + 8), f"{t:g} s", fill=INK, font=font())
    return image, boxes


def time_ticks(duration, most=10):
    """Round tick positions (1, 2, 5 x 10^k s apart), at most `most` of them."""
    step = 10 ** np.floor(np.log10(max(duration, 1e-3) / most))
    for factor in (1, 2, 5, 10):
        if duration / (step * factor) <= most:
            step *= factor
            break
    return [round(k * step, 6) for k in range(int(duration / step) + 1)]
