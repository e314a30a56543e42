"""How many epochs of a sweep fit in the time left, from a one-epoch calibration sweep run the same way.

    python experiments/sweep_epochs.py CALIBRATION_SWEEP_DIR IMAGES_PER_CALIBRATION_EPOCH SECONDS_LEFT

Phase 1 (seven runs at once) and phase 2 (two runs) each take as long as their slowest run; their measured epoch
times, scaled to 50,000 images, give the wall time of one full epoch of the sweep. Prints the epoch count
(1..40) on stdout and the calibration on stderr.
"""

import json
import math
import pathlib
import sys

sweep, images, left = pathlib.Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])


def epoch_time(name: str) -> float:
    return json.loads((sweep / name / "metrics.jsonl").read_text().splitlines()[0])["time"]


phase1 = max(epoch_time(n) for n in ("resnext-g32", "g-b32", "g-b64", "g-b96", "g-b128", "g-b32-s1", "g-b32-s2"))
phase2 = max(epoch_time(n) for n in ("star-b32", "star-b96"))
per_epoch = (phase1 + phase2) * 50000 / images
budget = left - 60  # two rounds of process start-up, the final evaluation, rendering
print(max(1, min(40, math.floor(budget / per_epoch))))
print(f"calibration: phase 1 {phase1:.1f}s, phase 2 {phase2:.1f}s per {images}-image epoch; "
      f"{per_epoch:.0f}s per full epoch; {left:.0f}s left", file=sys.stderr)
