"""Where along the model does "is the red circle in the top or the bottom half" get lost? Linear probes.

    python probe_position.py ../models/firebolt-shapes [--scenes 2400]

draws scenes (seed 3, never the held-out seed) holding a red circle that `Where is the red circle?` may be asked
about, runs the model on that question, and fits one logistic regression per feature below on the first 75% of the
scenes, scoring the rest, for top/bottom and for left/right of the red circle:

- pooled        the whole image's pooled vector (X_v[0])
- v_whole       that vector through the modulator's v_proj (what the modulator can mix into a token)
- context_shape the modulator's context c at the token `circle` (views weighted by that token's attention)
- fused_shape   the modulator's output at `circle`, then at `?`, then at the last prompt token
- decoder_last  the decoder's final hidden state at the last prompt token (what the first answer token is read from)

A fixed pair keeps the probe linear: reading one pair's position out of a vector that holds every pair's is a
linear map, while answering for whichever pair was asked is not. Chance is ~0.5 (quadrants are balanced).
"""

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer

import shapes_world as world
from check_reference import configs_from
from firebolt import CMM_HEAD_DIM, CMM_HEADS, CMM_TOPK, FireboltVL
from train import pixels_of, prompt_text, side_of_centre

QUESTION = "Where is the red circle?"


def context(cmm, text, grid):
    """The modulator's context c per token (as CrossModalModulator.forward computes it)."""
    b, t, _ = text.shape
    q = cmm.q_proj(text).view(b, t, CMM_HEADS, CMM_HEAD_DIM)
    k = cmm.k_proj(grid).view(b, grid.shape[1], CMM_HEADS, CMM_HEAD_DIM)
    scores = torch.einsum("bthd,bghd->bhtg", q, k) / CMM_HEAD_DIM ** 0.5
    kth = scores.topk(CMM_TOPK, dim=-1).values[..., -1:]
    weights = scores.masked_fill(scores < kth, float("-inf")).softmax(-1).mean(1)
    return weights @ cmm.v_proj(grid)


def probe(features: np.ndarray, labels: np.ndarray) -> float:
    """Held-out accuracy of an L2-regularised logistic regression trained on the first 75%."""
    x = torch.tensor(features, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.float32)
    cut = len(x) * 3 // 4
    x = (x - x[:cut].mean(0)) / (x[:cut].std(0) + 1e-6)
    lin = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=300)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(lin(x[:cut])[:, 0], y[:cut]) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return ((lin(x[cut:])[:, 0] > 0).float() == y[cut:]).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--scenes", type=int, default=2400)
    args = p.parse_args()
    torch.set_num_threads(2)
    text_cfg, vision_cfg = configs_from(json.loads((args.checkpoint / "config.json").read_text()))
    model = FireboltVL(text_cfg, vision_cfg).eval()
    model.load_released(load_file(args.checkpoint / "model.safetensors"))
    tok = Tokenizer.from_file(str(args.checkpoint / "tokenizer.json"))
    ids = torch.tensor([tok.encode(prompt_text(QUESTION), add_special_tokens=False).ids])
    tokens = tok.encode(prompt_text(QUESTION), add_special_tokens=False).tokens
    at_shape, at_mark = tokens.index("Ġcircle"), tokens.index("?")

    captured = {}
    model.cmm.register_forward_hook(lambda m, i, out: captured.__setitem__("fused", out[0]))
    model.base_lm.model.register_forward_hook(lambda m, i, out: captured.__setitem__("decoder", out[0]))
    features = {k: [] for k in ("pooled", "v_whole", "context_shape", "fused_shape", "fused_mark", "fused_last",
                                "decoder_last")}
    sides, rng = [], random.Random(3)
    with torch.no_grad():
        while len(sides) < args.scenes:
            scene = world.sample_scene(rng)
            if QUESTION not in [q for q, _ in world.questions(scene).get("where", [])]:
                continue
            shape = next(s for s in scene.shapes if (s.color, s.kind) == ("red", "circle"))
            grid = model.vision_grid(torch.from_numpy(pixels_of(world.render(scene)))[None])
            model(ids, grid)
            text = model.base_lm.model.embed_tokens(ids)
            features["pooled"].append(grid[0, 0].numpy())
            features["v_whole"].append(model.cmm.v_proj(grid)[0, 0].numpy())
            features["context_shape"].append(context(model.cmm, text, grid)[0, at_shape].numpy())
            features["fused_shape"].append(captured["fused"][at_shape].numpy())
            features["fused_mark"].append(captured["fused"][at_mark].numpy())
            features["fused_last"].append(captured["fused"][-1].numpy())
            features["decoder_last"].append(captured["decoder"][-1].numpy())
            sides.append(side_of_centre(scene, shape))
    sides = np.array(sides)
    print(f"{args.scenes} scenes; held-out accuracy of a linear probe for the red circle's position")
    print(f"{'feature':14} {'top/bottom':>10} {'left/right':>10}")
    for name, rows in features.items():
        x = np.stack(rows)
        print(f"{name:14} {probe(x, sides >= 2):10.3f} {probe(x, sides % 2):10.3f}")


if __name__ == "__main__":
    main()
