#!/usr/bin/env python3
"""Write docs/images/degrade.jpg: one generated office view (never a real photo of the evaluation data) under each
``--degrade`` preset (reloc_ros/core/degrade.py), and the night one as the low-light mode gives it to the extractor
(reloc_ros/core/lowlight.py), labelled, for docs/robustness.md.

Usage: python tools/degrade_examples.py [--out docs/images/degrade.jpg]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reloc_ros.core.degrade import PRESETS, degrade  # noqa: E402
from reloc_ros.core.lowlight import enhance  # noqa: E402
from reloc_ros.datasets import load_dataset  # noqa: E402
from reloc_ros.datasets.base import load_image  # noqa: E402
from reloc_ros.datasets.synthetic import generate  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "degrade.jpg")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate("office", Path(tmp) / "s", n_map=4, n_query=2, seed=0, stride=40, workers=1, progress=False)
        q = load_dataset(Path(tmp) / "s", "7scenes").split(None)[1][0]
        img = load_image(q)
    tiles = [("clean", img)] + [(p, degrade(img, (p,), 0, q.name)) for p in PRESETS]
    grey = enhance(dict(tiles)["night"])  # what the extractor sees of the night image with low_light_brightness
    tiles.append(("night, low-light mode", cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)))
    cells = []
    for label, t in tiles:
        t = cv2.resize(cv2.cvtColor(t, cv2.COLOR_RGB2BGR), (320, 240), interpolation=cv2.INTER_AREA)
        cv2.putText(t, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(t, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
        cells.append(t)
    cells += [np.zeros_like(cells[0])] * (-len(cells) % 4)
    grid = np.vstack([np.hstack(cells[i:i + 4]) for i in range(0, len(cells), 4)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), grid, [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
