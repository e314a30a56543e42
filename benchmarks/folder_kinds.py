"""Image folders of different kinds, built here without a download, for `bench_folder.py`.

* ``pen-digits``: handwritten-looking digits, 28x28 grayscale, drawn as pen strokes (several styles per digit) with a
  random pen width, slant, rotation, aspect and a smooth random warp of every stroke, then boxed into 20x20 and
  centred by mass in 28x28 as MNIST was. Nobody tuned the trainer for them: they stand in for real handwriting
  (a small CNN should reach ~98 %).
* ``pen-digits-rgb``: the same digits saved as RGB PNGs (three equal channels), as many exports of MNIST are.
* ``sk-digits``: scikit-learn's 1,797 8x8 digits upscaled to 28x28 and jittered (the folder benchmark of 0.2; blurry
  and easy).
* ``cifar32``: CIFAR-10 images written as 32x32 PNGs (needs the pickle copy in ``../shared/data``).
* ``shapes96``: 96x96 colour images of 8 shapes (circle, square, triangle, ...) of random size, colour, position and
  rotation on textured backgrounds with clutter -- large images, read by the ImageNet-style crop policy.

Each split has distinct random draws (distinct source images for sk-digits and cifar32).

    python benchmarks/folder_kinds.py pen-digits /tmp/pen   # writes /tmp/pen/{train,val}/<class>/<i>.png
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

KINDS = ("pen-digits", "pen-digits-rgb", "sk-digits", "cifar32", "shapes96")


# ------------------------------------------------------------------------------------------------ pen digits
def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 24) -> list[tuple[float, float]]:
    t = np.radians(np.linspace(a0, a1, n))
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


def _styles() -> dict[int, list[list[list[tuple[float, float]]]]]:
    """Per digit, styles; a style is a list of strokes; a stroke a polyline in the unit square (y down)."""
    return {
        0: [[_arc(.5, .5, .3, .45, -90, 270)], [_arc(.5, .5, .25, .45, -80, 290)]],
        1: [[[(.5, .05), (.5, .95)]], [[(.32, .22), (.52, .05), (.52, .95)]],
            [[(.32, .22), (.52, .05), (.52, .95)], [(.32, .95), (.72, .95)]]],
        2: [[_arc(.5, .3, .27, .25, 190, 380) + [(.2, .95), (.82, .95)]],
            [_arc(.5, .3, .27, .25, 180, 370) + _arc(.45, .95, .35, .45, -30, -95)[1:] + [(.85, .95)]]],
        3: [[_arc(.5, .28, .24, .22, 200, 450), _arc(.5, .7, .27, .25, -90, 160)],
            [[(.2, .05), (.8, .05), (.45, .42)] + _arc(.5, .7, .28, .27, -100, 160)]],
        4: [[[(.65, .95), (.65, .05), (.15, .65), (.88, .65)]],
            [[(.25, .05), (.2, .55), (.85, .55)], [(.68, .2), (.66, .95)]]],
        5: [[[(.78, .05), (.32, .05), (.28, .45)] + _arc(.48, .68, .3, .27, -120, 150)],
            [[(.32, .05), (.28, .45)] + _arc(.48, .68, .3, .27, -120, 150), [(.32, .05), (.8, .06)]]],
        6: [[[(.72, .05), (.4, .35), (.25, .68)] + _arc(.5, .7, .26, .25, 180, 540)],
            [_arc(.9, .65, .65, .6, 240, 180) + _arc(.5, .72, .25, .23, 180, 520)]],
        7: [[[(.15, .05), (.85, .05), (.4, .95)]], [[(.15, .05), (.85, .05), (.4, .95)], [(.35, .5), (.75, .5)]],
            [[(.15, .2), (.2, .05), (.85, .05), (.5, .95)]]],
        8: [[_arc(.5, .27, .21, .21, 0, 360), _arc(.5, .71, .26, .24, 0, 360)],
            [_arc(.5, .27, .2, .22, 90, 450) + [(.22, .62)] + _arc(.5, .72, .27, .23, 180, 360) + [(.5, .5)]]],
        9: [[_arc(.5, .3, .25, .24, 0, 360), [(.75, .3), (.7, .95)]],
            [_arc(.48, .3, .25, .24, 0, 360), [(.73, .33), (.6, .65), (.4, .95)]]],
    }


def pen_digit(digit: int, rng: np.random.Generator, styles: dict | None = None) -> np.ndarray:
    """One 28x28 uint8 handwritten-looking digit (white on black)."""
    from PIL import Image, ImageDraw

    styles = styles or _styles()
    strokes = styles[digit][int(rng.integers(len(styles[digit])))]
    big = 112
    shear, rot = rng.uniform(-0.45, 0.45), math.radians(rng.uniform(-18, 18))
    sx, sy = rng.uniform(0.6, 1.2), rng.uniform(0.85, 1.15)
    freq = rng.uniform(1.5, 5.0, size=(2, 2))
    phase = rng.uniform(0, 2 * math.pi, size=(2, 2))
    amp = rng.uniform(0.0, 0.12, size=2)

    def warp(x: float, y: float) -> tuple[float, float]:
        x += amp[0] * math.sin(freq[0, 0] * y * 2 + phase[0, 0]) * math.cos(freq[0, 1] * x + phase[0, 1])
        y += amp[1] * math.sin(freq[1, 0] * x * 2 + phase[1, 0]) * math.cos(freq[1, 1] * y + phase[1, 1])
        x, y = (x - 0.5) * sx, (y - 0.5) * sy
        x = x - shear * y
        x, y = x * math.cos(rot) - y * math.sin(rot), x * math.sin(rot) + y * math.cos(rot)
        return (0.5 + 0.6 * x) * big, (0.5 + 0.6 * y) * big

    img = Image.new("L", (big, big))
    draw = ImageDraw.Draw(img)
    width = int(rng.integers(4, 15))
    for stroke in strokes:
        jitter = rng.normal(0, 0.015, size=(len(stroke), 2))
        pts = [warp(x + jx, y + jy) for (x, y), (jx, jy) in zip(stroke, jitter)]
        draw.line(pts, fill=255, width=width, joint="curve")
        for p in (pts[0], pts[-1]):
            draw.ellipse([p[0] - width / 2, p[1] - width / 2, p[0] + width / 2, p[1] + width / 2], fill=255)
    box = img.getbbox()
    img = img.crop(box)
    w, h = img.size
    s = 20 / max(w, h)
    img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
    a = np.asarray(img, dtype=np.float64)
    ys, xs = np.indices(a.shape)
    cy, cx = (ys * a).sum() / a.sum(), (xs * a).sum() / a.sum()
    canvas = Image.new("L", (28, 28))
    canvas.paste(img, (int(round(14 - cx)), int(round(14 - cy))))
    return np.asarray(canvas)


def build_pen_digits(root: Path, n_train: int = 4000, n_val: int = 1000, seed: int = 0, mode: str = "L") -> None:
    from PIL import Image

    styles = _styles()
    for split, n, s in (("train", n_train, seed), ("val", n_val, seed + 10_000)):
        rng = np.random.default_rng(s)
        for i in range(n):
            d = i % 10
            _save(Image.fromarray(pen_digit(d, rng, styles)).convert(mode), root / split / str(d) / f"{i}.png")


# ------------------------------------------------------------------------------------------------ others
def _save(img, path: Path) -> None:  # type: ignore[no-untyped-def]
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def build_sk_digits(root: Path, n_train: int = 4000, n_val: int = 1000, seed: int = 0) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(d.images))
    cut = int(0.8 * len(order))
    for split, idx, n in (("train", order[:cut], n_train), ("val", order[cut:], n_val)):
        for i in range(n):
            j = idx[i % len(idx)]
            img = Image.fromarray((d.images[j] * 255 / 16).astype(np.uint8)).resize((20, 20), Image.BILINEAR)
            img = img.rotate(rng.uniform(-10, 10), resample=Image.BILINEAR)
            s = int(round(20 * rng.uniform(0.9, 1.1)))
            img = img.resize((s, s), Image.BILINEAR)
            canvas = Image.new("L", (28, 28))
            off = 14 - s // 2
            canvas.paste(img, (off + int(rng.integers(-2, 3)), off + int(rng.integers(-2, 3))))
            _save(canvas, root / split / str(d.target[j]) / f"{i}.png")


def build_cifar32(root: Path, n_train: int = 4000, n_val: int = 1000, seed: int = 0,
                  source: Path = Path(__file__).resolve().parents[2] / "shared" / "data") -> None:
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from dgconv.train.data.cifar import load_cifar

    ds = load_cifar("cifar10", str(source))
    for split, x, y, n in (("train", ds.train_x, ds.train_y, n_train), ("val", ds.test_x, ds.test_y, n_val)):
        for i in range(n):
            _save(Image.fromarray(x[i].permute(1, 2, 0).numpy()), root / split / str(int(y[i])) / f"{i}.png")


SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon")


def _polygon(kind: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    if kind == "star":
        pts = [(r if k % 2 == 0 else r * 0.45, k * math.pi / 5) for k in range(10)]
    else:
        n = {"square": 4, "triangle": 3, "diamond": 4, "hexagon": 6}[kind]
        rot += math.pi / 4 if kind == "diamond" else 0
        pts = [(r, k * 2 * math.pi / n) for k in range(n)]
    return [(cx + q * math.cos(a + rot), cy + q * math.sin(a + rot)) for q, a in pts]


def build_shapes96(root: Path, n_train: int = 4000, n_val: int = 1000, seed: int = 0, size: int = 96) -> None:
    from PIL import Image, ImageDraw, ImageFilter

    for split, n, s in (("train", n_train, seed), ("val", n_val, seed + 10_000)):
        rng = np.random.default_rng(s)
        for i in range(n):
            kind = SHAPES[i % len(SHAPES)]
            bg = rng.integers(0, 256, size=(size // 8, size // 8, 3), dtype=np.uint8)
            img = Image.fromarray(bg).resize((size, size), Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
            draw = ImageDraw.Draw(img)
            for _ in range(int(rng.integers(2, 6))):  # clutter: small lines and dots
                p = rng.uniform(0, size, 4)
                draw.line(list(p), fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(1, 4)))
            r = rng.uniform(0.15, 0.35) * size
            cx, cy = rng.uniform(r, size - r, 2)
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            rot = rng.uniform(0, 2 * math.pi)
            if kind in ("circle", "ring"):
                box = [cx - r, cy - r, cx + r, cy + r]
                if kind == "circle":
                    draw.ellipse(box, fill=colour, outline=(0, 0, 0), width=2)
                else:
                    draw.ellipse(box, outline=colour, width=max(3, int(r / 4)))
            elif kind == "cross":
                w = r / 3
                for a in (rot, rot + math.pi / 2):
                    dx, dy = r * math.cos(a), r * math.sin(a)
                    draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=colour, width=int(w))
            else:
                draw.polygon(_polygon(kind, cx, cy, r, rot), fill=colour, outline=(0, 0, 0))
            _save(img, root / split / kind / f"{i}.png")


BUILDERS: dict[str, Callable[..., None]] = {
    "pen-digits": build_pen_digits, "pen-digits-rgb": lambda *a, **k: build_pen_digits(*a, **k, mode="RGB"),
    "sk-digits": build_sk_digits, "cifar32": build_cifar32, "shapes96": build_shapes96,
}


def build(kind: str, root: Path, n_train: int = 4000, n_val: int = 1000) -> Path:
    """Write a folder of ``kind`` under ``root`` (unless it is there) and return it."""
    if not (root / "val").is_dir():
        BUILDERS[kind](root, n_train, n_val)
    return root


if __name__ == "__main__":
    build(sys.argv[1], Path(sys.argv[2]))
