"""The shapes world: synthetic images of coloured shapes and questions about them, with exact answers.

Every image and question is a pure function of a seed, so a training run, a held-out set and a test can all
name the data they use. The rules (sizes, colours, wording) are the ones `models/firebolt-shapes/README.md`
states; this file is their only implementation.

    python shapes_world.py eval --seed 7 --images 130 -o ../models/firebolt-shapes/eval
writes PNG images and `questions.jsonl` (one {"image", "question", "answer", "family"} object per line).
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLORS = {
    "red": (220, 30, 30),
    "green": (30, 180, 30),
    "blue": (30, 60, 220),
    "yellow": (230, 210, 30),
}
COUNT_WORDS = ("one", "two", "three", "four")
FAMILIES = ("count", "color", "shape", "exists", "where", "describe")

MIN_SIDE, MAX_SIDE = 128, 640
MIN_ASPECT, MAX_ASPECT = 0.5, 2.0
MIN_SIZE, MAX_SIZE = 0.12, 0.35       # a shape's extent, as a fraction of the image's shorter side
COLOR_JITTER = 30                     # each channel within +-30 of its colour's centre
WHERE_MARGIN = 0.10                   # "where" is asked only this far (fraction of the side) from both midlines


@dataclass(frozen=True)
class Shape:
    kind: str          # one of SHAPES
    color: str         # one of COLORS
    x0: int            # bounding box, pixels, inclusive-exclusive
    y0: int
    size: int
    rgb: tuple

    @property
    def cx(self) -> float:
        return self.x0 + self.size / 2

    @property
    def cy(self) -> float:
        return self.y0 + self.size / 2

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    background: tuple
    noise: float       # standard deviation of the per-pixel noise, 0 for a flat background
    shapes: tuple      # of Shape
    noise_seed: int


def sample_scene(rng: random.Random) -> Scene:
    """A scene drawn by the world's rules: size and aspect, a light background, 1-4 non-overlapping shapes."""
    while True:
        width = rng.randint(MIN_SIDE, MAX_SIDE)
        height = rng.randint(MIN_SIDE, MAX_SIDE)
        if MIN_ASPECT <= width / height <= MAX_ASPECT:
            break
    background = tuple(rng.randint(200, 255) for _ in range(3))
    noise = rng.uniform(1.0, 4.0) if rng.random() < 0.3 else 0.0
    count = rng.randint(1, 4)
    while True:  # retry the whole layout when shapes do not fit (rare for 4 large shapes on a small image)
        shapes = _place_shapes(rng, width, height, count)
        if shapes is not None:
            break
    return Scene(width, height, background, noise, tuple(shapes), rng.randrange(2**31))


def _place_shapes(rng: random.Random, width: int, height: int, count: int):
    short = min(width, height)
    gap = max(2, round(0.02 * short))
    kinds = rng.sample([(k, c) for k in SHAPES for c in COLORS], count)  # no two with the same shape and colour
    shapes: list[Shape] = []
    for kind, color in kinds:
        for _ in range(200):
            size = round(rng.uniform(MIN_SIZE, MAX_SIZE) * short)
            x0 = rng.randint(1, width - size - 1)
            y0 = rng.randint(1, height - size - 1)
            if all(x0 + size + gap <= s.x0 or s.x0 + s.size + gap <= x0 or
                   y0 + size + gap <= s.y0 or s.y0 + s.size + gap <= y0 for s in shapes):
                rgb = tuple(min(255, max(0, v + rng.randint(-COLOR_JITTER, COLOR_JITTER))) for v in COLORS[color])
                shapes.append(Shape(kind, color, x0, y0, size, rgb))
                break
        else:
            return None
    return shapes


def _draw(draw: ImageDraw.ImageDraw, s: Shape, fill) -> None:
    x1, y1 = s.x0 + s.size - 1, s.y0 + s.size - 1
    if s.kind == "circle":
        draw.ellipse([s.x0, s.y0, x1, y1], fill=fill)
    elif s.kind == "square":
        draw.rectangle([s.x0, s.y0, x1, y1], fill=fill)
    else:  # an upward triangle filling the box: base along the bottom edge, apex at the top centre
        draw.polygon([(s.x0, y1), (x1, y1), ((s.x0 + x1) / 2, s.y0)], fill=fill)


def label_map(scene: Scene, label) -> Image.Image:
    """An 8-bit image of the scene where each shape's pixels hold `label(shape)` (1-255) and the background 0."""
    image = Image.new("L", (scene.width, scene.height), 0)
    draw = ImageDraw.Draw(image)
    for s in scene.shapes:
        _draw(draw, s, label(s))
    return image


def render(scene: Scene) -> Image.Image:
    """The scene as an 8-bit RGB image."""
    image = Image.new("RGB", (scene.width, scene.height), scene.background)
    draw = ImageDraw.Draw(image)
    for s in scene.shapes:
        _draw(draw, s, s.rgb)
    if scene.noise > 0:
        import numpy as np
        noise_rng = np.random.default_rng(scene.noise_seed)
        pixels = np.asarray(image, dtype=np.float32)
        pixels += noise_rng.normal(0.0, scene.noise, pixels.shape).astype(np.float32)
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    return image


def describe(scene: Scene) -> str:
    names = [f"a {s.name}" for s in sorted(scene.shapes, key=lambda s: s.cx)]
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def quadrant(scene: Scene, s: Shape):
    """'top left' etc., or None when the centre is too close to a midline to say."""
    dx, dy = s.cx - scene.width / 2, s.cy - scene.height / 2
    if abs(dx) < WHERE_MARGIN * scene.width or abs(dy) < WHERE_MARGIN * scene.height:
        return None
    return ("top" if dy < 0 else "bottom") + " " + ("left" if dx < 0 else "right")


def questions(scene: Scene) -> dict:
    """Every question the world allows about a scene, by family: {family: [(question, answer), ...]}.
    `exists` holds every (colour, shape) pair, present or not."""
    by_kind = {k: [s for s in scene.shapes if s.kind == k] for k in SHAPES}
    by_color = {c: [s for s in scene.shapes if s.color == c] for c in COLORS}
    present = {(s.color, s.kind) for s in scene.shapes}
    out = {
        "count": [("How many shapes are there?", COUNT_WORDS[len(scene.shapes) - 1])],
        "color": [(f"What color is the {k}?", found[0].color) for k, found in by_kind.items() if len(found) == 1],
        "shape": [(f"What shape is the {c} one?", found[0].kind) for c, found in by_color.items() if len(found) == 1],
        "exists": [(f"Is there a {c} {k}?", "yes" if (c, k) in present else "no") for c in COLORS for k in SHAPES],
        "where": [(f"Where is the {s.name}?", q) for s in scene.shapes if (q := quadrant(scene, s)) is not None],
        "describe": [("What is in the picture?", describe(scene))],
    }
    return {family: qa for family, qa in out.items() if qa}


def pick_questions(scene: Scene, rng: random.Random, count: int):
    """`count` (family, question, answer) triples: families drawn uniformly among those this scene allows, then
    a question within the family; `exists` is answered yes and no equally often. Repeats are avoided while possible."""
    allowed = questions(scene)
    chosen, seen = [], set()
    for _ in range(count * 4):
        if len(chosen) == count:
            break
        family = rng.choice(list(allowed))
        options = allowed[family]
        if family == "exists":
            want = rng.choice(("yes", "no"))
            options = [qa for qa in options if qa[1] == want] or options
        q, a = rng.choice(options)
        if q in seen:
            continue
        seen.add(q)
        chosen.append((family, q, a))
    return chosen


def all_strings():
    """Every question and answer the world can produce (for training the tokenizer)."""
    qs = ["How many shapes are there?", "What is in the picture?"]
    qs += [f"What color is the {k}?" for k in SHAPES] + [f"What shape is the {c} one?" for c in COLORS]
    qs += [f"Is there a {c} {k}?" for c in COLORS for k in SHAPES]
    qs += [f"Where is the {c} {k}?" for c in COLORS for k in SHAPES]
    answers = list(COUNT_WORDS) + list(COLORS) + list(SHAPES) + ["yes", "no"]
    answers += [f"{v} {h}" for v in ("top", "bottom") for h in ("left", "right")]
    return qs, answers


def write_eval_set(seed: int, images: int, per_image: int, out: Path) -> None:
    """A held-out set: `images` scenes from `seed`, `per_image` questions each, balanced over families by
    drawing each image's families from a shuffled round-robin of those it allows."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    family_cycle = []
    for i in range(images):
        scene = sample_scene(rng)
        name = f"shapes-{seed}-{i:04d}.png"
        render(scene).save(out / name, optimize=True)
        allowed = questions(scene)
        used = set()
        for _ in range(per_image):
            if not family_cycle:
                family_cycle = list(FAMILIES)
                rng.shuffle(family_cycle)
            # the next family in the cycle that this image allows and has an unused question for
            for j, family in enumerate(family_cycle):
                options = [qa for qa in allowed.get(family, []) if qa[0] not in used]
                if family == "exists" and options:
                    want = rng.choice(("yes", "no"))
                    options = [qa for qa in options if qa[1] == want] or options
                if options:
                    family_cycle.pop(j)
                    q, a = rng.choice(options)
                    used.add(q)
                    lines.append({"image": name, "question": q, "answer": a, "family": family})
                    break
    with open(out / "questions.jsonl", "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    counts = {fam: sum(1 for l in lines if l["family"] == fam) for fam in FAMILIES}
    print(f"{len(lines)} questions on {images} images in {out}: {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="write a held-out question set")
    ev.add_argument("--seed", type=int, required=True)
    ev.add_argument("--images", type=int, default=130)
    ev.add_argument("--per-image", type=int, default=5)
    ev.add_argument("-o", "--out", type=Path, required=True)
    one = sub.add_parser("image", help="write one scene's image and print its questions")
    one.add_argument("--seed", type=int, required=True)
    one.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "eval":
        write_eval_set(args.seed, args.images, args.per_image, args.out)
    else:
        scene = sample_scene(random.Random(args.seed))
        render(scene).save(args.out, optimize=True)
        for family, qa in questions(scene).items():
            for q, a in qa:
                print(f"{family:9} {q} -> {a}")


if __name__ == "__main__":
    main()
