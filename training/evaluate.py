"""Answers a question file with the PyTorch model, greedily, as `fbrun eval` does with a converted file.

    python evaluate.py ../models/firebolt-shapes ../models/firebolt-shapes/eval/questions.jsonl [--answers out.jsonl]

prints exact-match accuracy overall and per family. `--answers` writes each answer, so the runtime's answers can
be compared with these one by one (the float32 runtime should give the same text for every question).
"""

import argparse
import json
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file
from tokenizers import Tokenizer

from check_reference import configs_from
from firebolt import FireboltVL
from train import EOS, pixels_of, prompt_text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("questions", type=Path)
    p.add_argument("--answers", type=Path)
    p.add_argument("--max-tokens", type=int, default=48)
    args = p.parse_args()
    torch.set_num_threads(2)

    text_cfg, vision_cfg = configs_from(json.loads((args.checkpoint / "config.json").read_text()))
    model = FireboltVL(text_cfg, vision_cfg).eval()
    model.load_released(load_file(args.checkpoint / "model.safetensors"))
    tok = Tokenizer.from_file(str(args.checkpoint / "tokenizer.json"))

    lines = [json.loads(l) for l in args.questions.read_text().splitlines() if l.strip()]
    right, total, answers, grid_of = {}, {}, [], {}
    with torch.no_grad():
        for line in lines:
            image = str(args.questions.parent / line["image"])
            if image not in grid_of:
                grid_of = {image: model.vision_grid(torch.from_numpy(pixels_of(Image.open(image).convert("RGB")))[None])}
            ids = tok.encode(prompt_text(line["question"]), add_special_tokens=False).ids
            generated = []
            for _ in range(args.max_tokens):
                nxt = int(model(torch.tensor([ids + generated]), grid_of[image])[0, -1].argmax())
                if nxt == EOS:
                    break
                generated.append(nxt)
            answer = tok.decode(generated, skip_special_tokens=True).strip()
            answers.append({**line, "predicted": answer})
            fam = line.get("family", "all")
            right[fam] = right.get(fam, 0) + (answer == line["answer"])
            total[fam] = total.get(fam, 0) + 1
    for fam in sorted(total):
        print(f"{fam:10} {total[fam]:5} {100 * right[fam] / total[fam]:6.1f}%")
    print(f"{'overall':10} {sum(total.values()):5} {100 * sum(right.values()) / sum(total.values()):6.1f}%")
    if args.answers:
        args.answers.write_text("".join(json.dumps(a) + "\n" for a in answers))


if __name__ == "__main__":
    main()
