"""The README's two comparison pictures, cropped from `make demo`'s output.

    python experiments/readme_pictures.py --demo_workdir=demo_workdir --output_dir=docs/img

Each `demo_workdir/heldout/<photo>_<family>.png` is four panels side by side
(blurry | quickstart | shipped | sharp, each the photograph's width); this cuts
the same 250x200 window out of every panel and puts the four crops side by side.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

# (photo_family, top, left): windows on the face (chelsea) and the cup (coffee).
CROPS = (("coffee_defocus", 100, 200), ("chelsea_gaussian", 40, 100))
SIZE = (200, 250)  # height, width of each crop


def crop_panels(grid: np.ndarray, panels: int, top: int, left: int) -> np.ndarray:
  width = grid.shape[1] // panels
  h, w = SIZE
  return np.concatenate([grid[top:top + h, i * width + left:i * width + left + w]
                         for i in range(panels)], axis=1)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--demo_workdir", default="demo_workdir")
  p.add_argument("--output_dir", default="docs/img")
  args = p.parse_args(argv)
  os.makedirs(args.output_dir, exist_ok=True)
  for name, top, left in CROPS:
    src = os.path.join(args.demo_workdir, "heldout", f"{name}.png")
    if not os.path.isfile(src):
      print(f"error: {src} not found; run `make demo` first", file=sys.stderr)
      return 2
    grid = np.asarray(Image.open(src).convert("RGB"))
    out = os.path.join(args.output_dir, f"{name}.png")
    Image.fromarray(crop_panels(grid, 4, top, left)).save(out)
    print(out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
