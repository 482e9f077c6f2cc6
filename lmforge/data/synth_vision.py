"""`lmforge data synth --images N`: small synthetic pictures with questions whose answers are visible
only in the picture, so a test can show that a vision LLM learned to look.

Three kinds of question, each asked with one fixed text whatever the answer (so the text alone
never gives it away): the colour of a shape, the kind of shape, and how many squares there are.
Every image is drawn with its own random size and placement; the held-out rows' images are drawn
from a separate random stream and are never reused in training. Rows are canonical vision rows
(`messages` with an `<image>` placeholder + `images`, paths relative to the JSONL's folder).

Preference rows (vision_pref_train / vision_pref_test.jsonl, LLaMA-Factory's sharegpt preference
format with `images`) ask the same questions about new pictures: chosen is the answer the picture
shows, rejected another answer of the same kind. No held-out picture equals a training one.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

IMAGE_SIZE = 56  # the tiny vision model's smallest image: 4 image tokens
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 210, 20)}
SHAPES = ("square", "circle", "triangle")
COUNTS = {1: "one", 2: "two", 3: "three"}
QUESTIONS = {
    "colour": "What colour is the shape?",
    "shape": "What shape is in the picture?",
    "count": "How many squares are there?",
}
ANSWERS = {"colour": tuple(sorted(COLOURS)), "shape": SHAPES, "count": tuple(COUNTS.values())}
# colour questions are half of the rows: the easiest to learn on a tiny model, so tests see it early
_KINDS = ("colour", "colour", "shape", "count")


def _background(rng: random.Random) -> tuple[int, int, int]:
    g = rng.randint(200, 255)
    return (g, g, g)


def _draw_shape(draw, rng: random.Random, shape: str, colour: tuple[int, int, int]) -> None:
    size = rng.randint(22, 40)
    x, y = rng.randint(0, IMAGE_SIZE - size), rng.randint(0, IMAGE_SIZE - size)
    box = (x, y, x + size - 1, y + size - 1)
    if shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "circle":
        draw.ellipse(box, fill=colour)
    else:
        draw.polygon([(x + size // 2, y), (x, y + size - 1), (x + size - 1, y + size - 1)], fill=colour)


def _draw_squares(draw, rng: random.Random, n: int, colour: tuple[int, int, int]) -> None:
    """`n` non-overlapping squares of 9-12 px (placed on a 3x3 grid of cells, jittered)."""
    cell = IMAGE_SIZE // 3
    for c in rng.sample(range(9), n):
        side = rng.randint(9, 12)
        x = (c % 3) * cell + rng.randint(0, cell - side)
        y = (c // 3) * cell + rng.randint(0, cell - side)
        draw.rectangle((x, y, x + side - 1, y + side - 1), fill=colour)


def draw_example(rng: random.Random, kind: str):
    """(PIL image, answer) for one question of `kind`."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), _background(rng))
    draw = ImageDraw.Draw(image)
    colour_name = rng.choice(sorted(COLOURS))
    if kind == "colour":
        _draw_shape(draw, rng, rng.choice(SHAPES), COLOURS[colour_name])
        return image, colour_name
    if kind == "shape":
        shape = rng.choice(SHAPES)
        _draw_shape(draw, rng, shape, COLOURS[colour_name])
        return image, shape
    n = rng.choice(sorted(COUNTS))
    _draw_squares(draw, rng, n, COLOURS[colour_name])
    return image, COUNTS[n]


def _rows(out_dir: Path, split: str, n: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(n):
        kind = _KINDS[i % len(_KINDS)]
        image, answer = draw_example(rng, kind)
        rel = f"images/{split}_{i:05d}.png"
        image.save(out_dir / rel)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"<image>{QUESTIONS[kind]}"},
                    {"role": "assistant", "content": answer},
                ],
                "images": [rel],
            }
        )
    return rows


def _pref_rows(out_dir: Path, split: str, n: int, rng: random.Random, seen: set[str]) -> list[dict]:
    """`n` preference rows on new pictures; a picture whose pixels are in `seen` is drawn again."""
    rows = []
    for i in range(n):
        kind = _KINDS[i % len(_KINDS)]
        image, answer = draw_example(rng, kind)
        while (digest := hashlib.sha1(image.tobytes()).hexdigest()) in seen:
            image, answer = draw_example(rng, kind)
        seen.add(digest)
        rel = f"images/pref_{split}_{i:05d}.png"
        image.save(out_dir / rel)
        wrong = rng.choice([a for a in ANSWERS[kind] if a != answer])
        rows.append(
            {
                "conversations": [{"from": "human", "value": f"<image>{QUESTIONS[kind]}"}],
                "chosen": {"from": "gpt", "value": answer},
                "rejected": {"from": "gpt", "value": wrong},
                "images": [rel],
            }
        )
    return rows


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def synth_images(out_dir: str, n: int, *, seed: int = 0) -> dict[str, str]:
    """Write `n` chat rows and `n` preference rows on their own pictures (a fifth of each held out):
    vision_train / vision_test.jsonl and vision_pref_train / vision_pref_test.jsonl."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    n_test = max(1, n // 5)
    files, seen = {}, set()
    for split, count, stream in (("train", n - n_test, 0), ("test", n_test, 1)):
        rows = _rows(out, split, count, random.Random(f"{seed}-{stream}"))
        files[f"vision_{split}"] = _write(out / f"vision_{split}.jsonl", rows)
    for split, count, stream in (("train", n - n_test, 2), ("test", n_test, 3)):
        rows = _pref_rows(out, split, count, random.Random(f"{seed}-{stream}"), seen)
        files[f"vision_pref_{split}"] = _write(out / f"vision_pref_{split}.jsonl", rows)
    return files
