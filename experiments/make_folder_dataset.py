"""Write a tiny ImageNet-style folder (DIR/train/<class>/*.png, DIR/val/<class>/*.png) of random images, for
smoke-testing `dgconv train --dataset imagefolder` where torchvision is installed.

    python experiments/make_folder_dataset.py DIR
"""

import pathlib
import sys

import numpy as np
from PIL import Image

root = pathlib.Path(sys.argv[1])
rng = np.random.default_rng(0)
for split, n in (("train", 24), ("val", 8)):
    for c in ("a", "b"):
        d = root / split / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(d / f"{i}.png")
print(f"wrote {root}")
