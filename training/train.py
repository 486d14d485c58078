"""Trains a small Firebolt-VL on the shapes world and saves it in the released checkpoint layout.

    python train.py --seed 1 --out ../models/firebolt-shapes

does everything from a seed: trains the tokenizer on the world's text, trains the model on freshly drawn
images (never the held-out seed), and writes model.safetensors, config.json, tokenizer.json,
tokenizer_config.json, special_tokens_map.json and preprocessor_config.json into --out. A run is a pure function
of its seed and step count on one machine (fixed thread count, deterministic CPU kernels). Progress goes to
stdout; a resumable state (`train-state.pt`) is kept in --work.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

import shapes_world as world
from firebolt import FireboltVL, TextConfig, VisionConfig

SPECIAL_TOKENS = ["<|pad|>", "<|startoftext|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
PAD, BOS, EOS, IMAGE = 0, 1, 4, 5
# LFM2's pre-tokenizer split rule (contractions, letters with one leading non-letter, up to 3 digits, ...).
LFM2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = (
    "{{- bos_token -}}{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{%- for item in message['content'] -%}{%- if item['type'] == 'image' -%}{{- '<image>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\n' -}}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}"
    "{%- endif -%}")
IMAGE_SIZE = 256


def prompt_text(question: str) -> str:
    """The released chat format, one user turn with the image, generation prompt on."""
    return f"<|startoftext|><|im_start|>user\n<image>\n{question}<|im_end|>\n<|im_start|>assistant\n"


# ---------------------------------------------------------------------------------------------- tokenizer


def train_tokenizer(seed: int, vocab_size: int) -> Tokenizer:
    """Byte-level BPE with LFM2's split rule and special tokens, trained on the world's prompts and answers."""
    rng = random.Random(seed)
    questions, answers = world.all_strings()
    corpus = [prompt_text(q) + a + "<|im_end|>" for q in questions for a in answers[:4]]
    corpus += [world.describe(world.sample_scene(rng)) for _ in range(2000)]
    corpus += answers * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LFM2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A", pair="<|startoftext|> $A <|startoftext|> $B",
        special_tokens=[("<|startoftext|>", BOS)])
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    return tok


class Encoder:
    """Prompt and answer ids, cached (the world has few distinct strings)."""

    def __init__(self, tok: Tokenizer):
        self.tok, self.cache = tok, {}

    def __call__(self, question: str, answer: str):
        key = (question, answer)
        if key not in self.cache:
            prompt = self.tok.encode(prompt_text(question), add_special_tokens=False).ids
            full = self.tok.encode(prompt_text(question) + answer + "<|im_end|>", add_special_tokens=False).ids
            assert full[:len(prompt)] == prompt and full[-1] == EOS, (question, answer)
            self.cache[key] = (prompt, full[len(prompt):])
        return self.cache[key]


# ------------------------------------------------------------------------------------------------- data


def pixels_of(image: Image.Image) -> np.ndarray:
    """The SigLIP processor: resize to 256x256 (bilinear, Pillow), x/255, (x - 0.5)/0.5, channels first."""
    resized = np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR), dtype=np.float32)
    return ((resized * np.float32(1 / 255) - 0.5) / 0.5).transpose(2, 0, 1)


PAIRS = [(c, k) for c in world.COLORS for k in world.SHAPES]
VIEW_BOXES = [(0, 0, IMAGE_SIZE)] + [(y, x, 128) for y in (0, 126) for x in (0, 126)]   # (top, left, side)


def view_targets(scene: world.Scene) -> np.ndarray:
    """Training-only targets for each of the five views (whole image, four tiles): which (colour, shape) pairs have
    their centre inside the view, and how many objects do. They teach the vision tower to keep colour and shape
    bound together per region; the head that reads them is not part of the saved model."""
    out = np.zeros((len(VIEW_BOXES), len(PAIRS) + 1), dtype=np.float32)
    for s in scene.shapes:
        y, x = s.cy * IMAGE_SIZE / scene.height, s.cx * IMAGE_SIZE / scene.width
        for v, (top, left, side) in enumerate(VIEW_BOXES):
            if top <= y < top + side and left <= x < left + side:
                out[v, PAIRS.index((s.color, s.kind))] = 1
                out[v, -1] += 1
    return out


PATCH_CENTRES = np.arange(8, IMAGE_SIZE, 16)           # 16-pixel patches of the 256x256 image
TILE_CENTRES = np.arange(8, 128, 16)                    # and of a 128x128 tile
MAX_OBJECTS = 4


def side_of_centre(scene: world.Scene, s: world.Shape) -> int:
    """0 top left, 1 top right, 2 bottom left, 3 bottom right: the shape's centre against the image centre."""
    return 2 * (s.cy >= scene.height / 2) + (s.cx >= scene.width / 2)


def left_to_right(scene: world.Scene) -> list:
    return sorted(scene.shapes, key=lambda s: s.cx)


def top_to_bottom(scene: world.Scene) -> list:
    return sorted(scene.shapes, key=lambda s: s.cy)


def whole_targets(scene: world.Scene) -> np.ndarray:
    """Training-only targets for the whole-image view's vector, the only view that knows where things are (the
    tiles share one position table and the modulator does not know which view is which): for every (colour,
    shape) pair, 0 if absent else 1 + side_of_centre; then for each place in the left-to-right order, and then in
    the top-to-bottom order, 0 if empty else 1 + the pair's index. They are what `where` and `describe` need read
    out of one pooled vector."""
    sides = np.zeros(len(PAIRS), dtype=np.int64)
    for s in scene.shapes:
        sides[PAIRS.index((s.color, s.kind))] = 1 + side_of_centre(scene, s)
    orders = np.zeros((2, MAX_OBJECTS), dtype=np.int64)
    for row, ordered in enumerate((left_to_right(scene), top_to_bottom(scene))):
        for place, s in enumerate(ordered):
            orders[row, place] = 1 + PAIRS.index((s.color, s.kind))
    return np.concatenate([sides, orders.reshape(-1)])


def patch_targets(scene: world.Scene) -> np.ndarray:
    """Training-only dense targets, a per-region signal the pooled answer loss alone provides very slowly. For each
    of the whole image's 256 patches: which pair covers its centre, with the side of the image that object's
    centre is on (1 + 4 * pair + side, 0 for the background), and its object's place in the left-to-right and in
    the top-to-bottom order (1 + place, 0 for the background); for each of the four tiles' 64 patches, which pair
    (1 + pair, 0 for the background). [3 * 256 + 4 * 64] labels."""
    def sampled(label) -> np.ndarray:
        labels = np.asarray(world.label_map(scene, label).resize((IMAGE_SIZE, IMAGE_SIZE), Image.NEAREST))
        return labels
    places = {id(s): i for i, s in enumerate(left_to_right(scene))}
    rows = {id(s): i for i, s in enumerate(top_to_bottom(scene))}
    pair_side = sampled(lambda s: 1 + 4 * PAIRS.index((s.color, s.kind)) + side_of_centre(scene, s))
    place = sampled(lambda s: 1 + places[id(s)])
    row = sampled(lambda s: 1 + rows[id(s)])
    pair = sampled(lambda s: 1 + PAIRS.index((s.color, s.kind)))
    out = [pair_side[np.ix_(PATCH_CENTRES, PATCH_CENTRES)].reshape(-1),
           place[np.ix_(PATCH_CENTRES, PATCH_CENTRES)].reshape(-1),
           row[np.ix_(PATCH_CENTRES, PATCH_CENTRES)].reshape(-1)]
    for top, left, _ in VIEW_BOXES[1:]:
        out.append(pair[np.ix_(top + TILE_CENTRES, left + TILE_CENTRES)].reshape(-1))
    return np.concatenate(out).astype(np.int64)


def make_batch(rng: random.Random, encode: Encoder, images: int, per_image: int):
    pixels, owners, seqs, families, views, wholes, patches = [], [], [], [], [], [], []
    for i in range(images):
        scene = world.sample_scene(rng)
        pixels.append(pixels_of(world.render(scene)))
        views.append(view_targets(scene))
        wholes.append(whole_targets(scene))
        patches.append(patch_targets(scene))
        for family, q, a in world.pick_questions(scene, rng, per_image):
            owners.append(i)
            seqs.append(encode(q, a))
            families.append(family)
    return collate(pixels, owners, seqs, families) + (torch.from_numpy(np.stack(views)),
                                                      torch.from_numpy(np.stack(wholes)),
                                                      torch.from_numpy(np.stack(patches)))


def collate(pixels, owners, seqs, families):
    length = max(len(p) + len(a) for p, a in seqs) - 1
    inputs = torch.full((len(seqs), length), PAD, dtype=torch.long)
    targets = torch.full((len(seqs), length), -100, dtype=torch.long)   # loss on the answer and its <|im_end|>
    for row, (prompt, answer) in enumerate(seqs):
        full = prompt + answer
        inputs[row, :len(full) - 1] = torch.tensor(full[:-1])
        targets[row, len(prompt) - 1:len(full) - 1] = torch.tensor(answer)
    return torch.from_numpy(np.stack(pixels)), torch.tensor(owners), inputs, targets, families


def validation_set(seed: int, encode: Encoder, images: int):
    rng = random.Random(seed)
    batches = []
    for _ in range(0, images, 16):
        batches.append(make_batch(rng, encode, 16, 6))
    return batches


@torch.no_grad()
def exact_match(model, batches):
    """Per family, the share of answers whose every token is the argmax given the ones before: exactly the
    answers greedy decoding would produce (the target ends with <|im_end|>, which stops generation)."""
    model.eval()
    right, total = {}, {}
    for pixels, owners, inputs, targets, families, *_ in batches:
        grid = model.vision_grid(pixels)[owners]
        predicted = model(inputs, grid).argmax(-1)
        ok = ((predicted == targets) | (targets == -100)).all(dim=1)
        for fam, good in zip(families, ok.tolist()):
            right[fam] = right.get(fam, 0) + good
            total[fam] = total.get(fam, 0) + 1
    model.train()
    return {fam: right[fam] / total[fam] for fam in total}, sum(right.values()) / sum(total.values())


# ---------------------------------------------------------------------------------------------- export


def export(model: FireboltVL, tok: Tokenizer, out: Path) -> None:
    """The released checkpoint layout, as a user of a real Firebolt-VL release holds it."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = model.state_dict_released()
    save_file({k: v.float().contiguous() if v.is_floating_point() else v for k, v in tensors.items()},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    t, v = model.text_config, model.vision_config
    text_config = {
        "model_type": "lfm2", "architectures": ["Lfm2ForCausalLM"], "vocab_size": t.vocab_size,
        "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
        "num_hidden_layers": len(t.layer_types), "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads, "max_position_embeddings": 128000,
        "norm_eps": t.norm_eps, "conv_L_cache": t.conv_L_cache, "conv_bias": False,
        "block_auto_adjust_ff_dim": False, "layer_types": t.layer_types, "tie_word_embeddings": True,
        "rope_parameters": {"rope_theta": t.rope_theta, "rope_type": "default"},
        "pad_token_id": PAD, "bos_token_id": BOS, "eos_token_id": EOS,
    }
    vision_config = {
        "model_type": "siglip_vision_model", "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
        "num_hidden_layers": v.num_hidden_layers, "num_attention_heads": v.num_attention_heads, "num_channels": 3,
        "image_size": v.image_size, "patch_size": v.patch_size, "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": v.layer_norm_eps, "attention_dropout": 0.0, "vision_use_head": True,
    }
    config = {
        "architectures": ["FireboltLMForCausalLM"], "model_type": "fireboltlm", "fuse_strategy": "cossm",
        "fuser_type": "multimodal_fusing", "dtype": "float32", "vision_hidden_size": v.hidden_size,
        "vision_output_tokens": 256, "vocab_size": t.vocab_size, "tie_word_embeddings": True,
        "bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD, "image_token_id": IMAGE,
        "text_config": text_config, "vision_config": vision_config,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>",
        "clean_up_tokenization_spaces": False, "model_max_length": 32768,
        "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": True, "chat_template": CHAT_TEMPLATE,
    }, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>"}, indent=2) + "\n")
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "SiglipImageProcessor", "do_resize": True,
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "resample": 2, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True}, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=9000)
    p.add_argument("--images-per-step", type=int, default=12)
    p.add_argument("--questions-per-image", type=int, default=5)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--decay-steps", type=int, default=8000,
                   help="length of the cosine decay; the rate stays at its floor after it (0: --steps)")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--vocab-size", type=int, default=400)
    p.add_argument("--view-loss", type=float, default=0.5, help="weight of the per-view and whole-image auxiliary losses")
    p.add_argument("--patch-loss", type=float, default=0.5, help="weight of the per-patch auxiliary loss")
    p.add_argument("--background-weight", type=float, default=0.1,
                   help="weight of the background class in the whole image's per-patch losses")
    p.add_argument("--vertical-order", action=argparse.BooleanOptionalAction, default=True,
                   help="also ask the whole image's vector and patches for the top-to-bottom order (without it the "
                        "tower learns left and right well but top and bottom barely: `where` was right about the "
                        "side in 107 of 109 held-out answers, about top or bottom in 52)")
    p.add_argument("--fused-position", action=argparse.BooleanOptionalAction, default=True,
                   help="also ask the modulator's output at the last prompt token for every pair's side of the centre "
                        "(without it the S4 block's GELU drops top/bottom: probe_position.py)")
    p.add_argument("--out", type=Path, required=True, help="folder for the released-layout checkpoint")
    p.add_argument("--work", type=Path, default=Path("work"), help="folder for the resumable training state")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    tok = train_tokenizer(args.seed, args.vocab_size)
    encode = Encoder(tok)
    text = TextConfig(vocab_size=tok.get_vocab_size(), hidden_size=128, intermediate_size=384,
                      layer_types=["conv", "full_attention", "conv", "full_attention", "conv", "full_attention"],
                      num_attention_heads=4, num_key_value_heads=2)
    vision = VisionConfig(hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=3)
    model = FireboltVL(text, vision)
    params = sum(p.numel() for p in model.parameters())
    print(f"tokenizer: {tok.get_vocab_size()} tokens; model: {params / 1e6:.2f} M parameters "
          f"(text {asdict(text)}, vision {asdict(vision)})", flush=True)

    # Training-only heads (not saved): linear read-outs of the vision tower for the auxiliary targets above.
    pairs = len(PAIRS)
    orders = 2 if args.vertical_order else 1   # left to right, and top to bottom
    aux = torch.nn.ModuleDict({
        "view": torch.nn.Linear(vision.hidden_size, pairs + 5),                        # view_targets, every view
        "whole": torch.nn.Linear(vision.hidden_size, pairs * 5 + orders * MAX_OBJECTS * (pairs + 1)),  # whole_targets
        "whole_patch_side": torch.nn.Linear(vision.hidden_size, 4 * pairs + 1),       # patch_targets ...
        "whole_patch_place": torch.nn.Linear(vision.hidden_size, MAX_OBJECTS + 1),
        "tile_patch": torch.nn.Linear(vision.hidden_size, pairs + 1),
    })
    if args.fused_position:
        aux["fused_side"] = torch.nn.Linear(text.hidden_size, pairs * 5)
    if args.vertical_order:
        aux["whole_patch_row"] = torch.nn.Linear(vision.hidden_size, MAX_OBJECTS + 1)
    named = list(model.named_parameters()) + [("aux." + n, p) for n, p in aux.named_parameters()]
    decay = [p for n, p in named if p.dim() >= 2 and "kernel" not in n]
    rest = [p for n, p in named if not (p.dim() >= 2 and "kernel" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    decay_steps = args.decay_steps or args.steps   # cosine down to 10% over these steps, then flat
    schedule = lambda step: min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(
        math.pi * min(1.0, step / decay_steps))))
    state_path = args.work / f"train-state-{args.seed}.pt"
    step = 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"]); aux.load_state_dict(state["aux"])
        opt.load_state_dict(state["opt"]); step = state["step"]
        random_state = state["rng"]
        print(f"resumed at step {step}", flush=True)
    else:
        random_state = random.Random(args.seed * 1000 + 17).getstate()
    rng = random.Random()
    rng.setstate(random_state)
    validation = validation_set(args.seed * 1000 + 99, encode, 64)

    # Most of the whole image's patches are background: weigh that class down so the objects' patches, the ones
    # that carry where things are, drive the per-patch position losses.
    side_weights = torch.ones(4 * pairs + 1); side_weights[0] = args.background_weight
    place_weights = torch.ones(MAX_OBJECTS + 1); place_weights[0] = args.background_weight
    start, losses, side_ok, top_ok, order_ok, fused_top_ok = time.time(), [], [], [], [], []
    while step < args.steps:
        for group in opt.param_groups:
            group["lr"] = args.lr * schedule(step)
        pixels, owners, inputs, targets, _, views, wholes, patch_labels = make_batch(
            rng, encode, args.images_per_step, args.questions_per_image)
        grid, whole_patches, tile_patches = model.vision_grid(pixels, with_patches=True)
        fused = model.cmm(model.base_lm.model.embed_tokens(inputs), grid[owners])   # = model(inputs, grid), in two
        logits = model.base_lm.logits(fused)                                       # steps to read the CMM output
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        view_logits = aux["view"](grid)
        view_loss = (F.binary_cross_entropy_with_logits(view_logits[..., :pairs], views[..., :pairs]) +
                     F.cross_entropy(view_logits[..., pairs:].flatten(0, 1), views[..., -1].long().flatten()))
        whole_logits = aux["whole"](grid[:, 0])
        side_logits = whole_logits[:, :pairs * 5].reshape(-1, pairs, 5)
        order_logits = whole_logits[:, pairs * 5:].reshape(-1, orders, MAX_OBJECTS, pairs + 1)
        order_targets = wholes[:, pairs:].reshape(-1, 2, MAX_OBJECTS)[:, :orders]
        whole_loss = (F.cross_entropy(side_logits.flatten(0, 1), wholes[:, :pairs].flatten()) +
                      F.cross_entropy(order_logits.flatten(0, 2), order_targets.flatten()))
        n = whole_patches.shape[1]
        patch_loss = (F.cross_entropy(aux["whole_patch_side"](whole_patches).flatten(0, 1),
                                      patch_labels[:, :n].flatten(), weight=side_weights) +
                      F.cross_entropy(aux["whole_patch_place"](whole_patches).flatten(0, 1),
                                      patch_labels[:, n:2 * n].flatten(), weight=place_weights) +
                      F.cross_entropy(aux["tile_patch"](tile_patches.flatten(1, 2)).flatten(0, 1),
                                      patch_labels[:, 3 * n:].flatten()))
        if args.vertical_order:
            patch_loss = patch_loss + F.cross_entropy(aux["whole_patch_row"](whole_patches).flatten(0, 1),
                                                      patch_labels[:, 2 * n:3 * n].flatten(), weight=place_weights)
        loss = loss + args.view_loss * (view_loss + whole_loss) + args.patch_loss * patch_loss
        if args.fused_position:   # at the last prompt token, where the first answer token is read
            last = (targets != -100).int().argmax(dim=1)
            fused_logits = aux["fused_side"](fused[torch.arange(len(last)), last]).reshape(-1, pairs, 5)
            loss = loss + args.view_loss * F.cross_entropy(fused_logits.flatten(0, 1), wholes[owners, :pairs].flatten())
        with torch.no_grad():   # how well the whole-image vector holds positions (printed with the loss)
            present = wholes[:, :pairs] > 0
            guess, truth = side_logits.argmax(-1), wholes[:, :pairs]
            side_ok.append((guess == truth)[present].float().mean().item())
            top_ok.append(((guess - 1) // 2 == (truth - 1) // 2)[present].float().mean().item())
            order_ok.append((order_logits.argmax(-1) == order_targets).all(-1).float().mean(0).tolist())
            if args.fused_position:
                f_guess, f_truth = fused_logits.argmax(-1), wholes[owners, :pairs]
                f_present = f_truth > 0
                fused_top_ok.append(((f_guess - 1) // 2 == (f_truth - 1) // 2)[f_present].float().mean().item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        if step % 50 == 0:
            print(f"step {step} loss {np.mean(losses[-50:]):.4f} side {np.mean(side_ok[-50:]):.2f} "
                  f"top/bottom {np.mean(top_ok[-50:]):.2f} "
                  f"order {' '.join(f'{v:.2f}' for v in np.mean(order_ok[-50:], axis=0))} "
                  f"fused top/bottom {np.mean(fused_top_ok[-50:]) if fused_top_ok else float('nan'):.2f} lr {opt.param_groups[0]['lr']:.2e} "
                  f"{(time.time() - start) / 60:.1f} min", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            per_family, overall = exact_match(model, validation)
            print(f"  validation exact match {overall:.3f} " +
                  " ".join(f"{f} {v:.2f}" for f, v in sorted(per_family.items())), flush=True)
            args.work.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "aux": aux.state_dict(), "opt": opt.state_dict(), "step": step,
                        "rng": rng.getstate()}, state_path)
            export(model.eval(), tok, args.out)
            model.train()
    print(f"done: {step} steps in {(time.time() - start) / 60:.1f} min; checkpoint in {args.out}", flush=True)


if __name__ == "__main__":
    main()
