"""Makes Tests/Fixtures/lfm2-vl-tiny with transformers (CPU, float32): a tiny random LFM2-VL of the released
structure, its processor files, three images, and what transformers computes for them. See README.md.

    python3 -m venv /tmp/venv-lfm2vl
    /tmp/venv-lfm2vl/bin/pip install -r Tests/Fixtures/lfm2-vl-tiny/requirements.txt
    /tmp/venv-lfm2vl/bin/python Tests/Fixtures/lfm2-vl-tiny/make_fixture.py
"""

import json
import os
from pathlib import Path

import numpy as np
import torch

# PyPI's torchvision wheel is built for the CUDA torch: with the CPU torch its C++ ops (nms, roi_align, ...) cannot
# load, and torchvision 0.28 then fails at import on its two unguarded registrations, nms's and qnms's. Declaring
# those ops' schemas first lets it import; the processor uses only resize and normalize, which are plain torch.
TORCHVISION_OPS = torch.library.Library("torchvision", "DEF")   # kept: the definitions live as long as the object
TORCHVISION_OPS.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
TORCHVISION_OPS.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

from PIL import Image, ImageDraw  # noqa: E402
from tokenizers import AddedToken, Tokenizer  # noqa: E402
from transformers import (Lfm2VlConfig, Lfm2VlForConditionalGeneration, Lfm2VlImageProcessor, Lfm2VlProcessor,
                          PreTrainedTokenizerFast)  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
MODEL, GOLDEN = HERE / "model", HERE / "golden"
# LFM2-VL's chat template (an image item is `<image>`, nothing between it and the text), as the shapes model has it.
CHAT_TEMPLATE = json.loads((ROOT / "models/firebolt-shapes/tokenizer_config.json").read_text())["chat_template"]
QUESTION = "What is in the picture?"


def tokenizer():
    """The shapes model's byte-level BPE (LFM2's special tokens) plus LFM2-VL's image markers."""
    tok = Tokenizer.from_file(str(ROOT / "models/firebolt-shapes/tokenizer.json"))
    markers = ["<|image_start|>", "<|image_end|>", "<|img_thumbnail|>"]
    markers += [f"<|img_row_{r}_col_{c}|>" for r in range(1, 11) for c in range(1, 11)]
    tok.add_special_tokens([AddedToken(m, special=True, normalized=False) for m in markers])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|im_end|>",
                                   pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def images():
    """Three images: small (scaled up to the minimum token count), wide (one image, scaled down), large (tiles)."""
    out = []
    for i, (w, h) in enumerate([(37, 23), (150, 41), (300, 190)]):
        y, x = np.mgrid[0:h, 0:w]
        rgb = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256], -1)
        image = Image.fromarray(rgb.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        draw.ellipse([w // 5, h // 4, w // 2, 3 * h // 4], fill=(220, 30, 30))
        draw.rectangle([3 * w // 5, h // 5, 4 * w // 5, h // 2], fill=(30, 60, 220))
        image.save(HERE / f"image-{i}.png")
        out.append(Image.open(HERE / f"image-{i}.png").convert("RGB"))
    return out


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    MODEL.mkdir(parents=True, exist_ok=True)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    tok = tokenizer()
    image_processor = Lfm2VlImageProcessor(encoder_patch_size=8, tile_size=64, min_image_tokens=4, max_image_tokens=16,
                                           downsample_factor=2, min_tiles=2, max_tiles=10, use_thumbnail=True)
    processor = Lfm2VlProcessor(image_processor=image_processor, tokenizer=tok, chat_template=CHAT_TEMPLATE)
    config = Lfm2VlConfig(
        vision_config={"model_type": "siglip2_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "num_channels": 3, "patch_size": 8,
                       "num_patches": 64, "layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh",
                       "vision_use_head": False},
        text_config={"model_type": "lfm2", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "layer_types": ["conv", "full_attention", "conv", "full_attention"], "max_position_embeddings": 4096,
                     "norm_eps": 1e-5, "conv_L_cache": 3, "block_auto_adjust_ff_dim": False,
                     "bos_token_id": 1, "eos_token_id": 4, "pad_token_id": 0, "tie_word_embeddings": True},
        image_token_id=tok.convert_tokens_to_ids("<image>"), projector_hidden_size=96, downsample_factor=2,
        projector_hidden_act="gelu", projector_bias=True, projector_use_layernorm=True, tie_word_embeddings=True)
    model = Lfm2VlForConditionalGeneration(config).eval()
    with torch.no_grad():   # random but not tiny: make every part matter in the logits
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.5 / p.shape[-1] ** 0.5 * 2)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0, 0.05)
    model.save_pretrained(MODEL, safe_serialization=True)
    processor.save_pretrained(MODEL)

    meta = {"question": QUESTION, "images": []}
    for i, image in enumerate(images()):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(images=[[image]], text=[prompt], return_tensors="pt")
        layout = image_processor(images=[[image]], return_row_col_info=True)
        n = inputs["pixel_values"].shape[0]
        shapes = inputs["spatial_shapes"].tolist()
        with torch.no_grad():
            vision = model.model.vision_tower(pixel_values=inputs["pixel_values"], spatial_shapes=inputs["spatial_shapes"],
                                              pixel_attention_mask=inputs["pixel_attention_mask"]).last_hidden_state
            features = model.model.get_image_features(pixel_values=inputs["pixel_values"],
                                                      spatial_shapes=inputs["spatial_shapes"],
                                                      pixel_attention_mask=inputs["pixel_attention_mask"]).pooler_output
            logits = model(**inputs).logits[0]
            generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:]
        # Pixel values back to the 8-bit values they were made from ((x - 127.5) / 127.5 exactly): lossless, small.
        pixels = []
        for k in range(n):
            count = shapes[k][0] * shapes[k][1]
            values = inputs["pixel_values"][k, :count].numpy()
            u8 = np.rint(values * 127.5 + 127.5)
            assert np.array_equal((u8.astype(np.float32) - 127.5) / 127.5, values)
            pixels.append(u8.astype(np.int32))
        np.save(GOLDEN / f"image-{i}-pixels.npy", np.concatenate(pixels))
        np.save(GOLDEN / f"image-{i}-vision.npy",
                np.concatenate([vision[k, :shapes[k][0] * shapes[k][1]].numpy() for k in range(n)]).astype(np.float32))
        np.save(GOLDEN / f"image-{i}-features.npy", torch.cat(list(features)).numpy().astype(np.float32))
        np.save(GOLDEN / f"image-{i}-logits.npy", logits.numpy().astype(np.float32))
        np.save(GOLDEN / f"image-{i}-input-ids.npy", inputs["input_ids"][0].numpy().astype(np.int64))
        meta["images"].append({
            "file": f"image-{i}.png", "width": image.width, "height": image.height, "spatial_shapes": shapes,
            "rows": layout["image_rows"][0], "cols": layout["image_cols"][0], "resized": layout["image_sizes"][0],
            "prompt": prompt, "greedy_ids": generated.tolist()})
    (GOLDEN / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")

    # The layout at the released processor settings for many image sizes (integers only): split or not, the tile
    # grid, the resized (or thumbnail) size, and the placeholder text's token count.
    released = Lfm2VlImageProcessor()
    rows = []
    sizes = [(w, h) for w in (1, 15, 31, 32, 48, 100, 256, 300, 367, 511, 512, 513, 640, 700, 727, 1000, 1024, 1080, 1500,
                              1920, 2048, 4000) for h in (1, 16, 33, 64, 100, 257, 480, 512, 600, 720, 1000, 1080, 1600)]
    sizes += [(1088, 512), (512, 1088), (17 * 40, 8 * 40), (2000, 1000), (1000, 2000), (3000, 1000)]
    for w, h in sizes:
        split, grid_rows, grid_cols, new_h, new_w = released._get_split_layout(
            h, w, downsample_factor=2, min_tiles=2, max_tiles=10, min_image_tokens=64, max_image_tokens=256,
            encoder_patch_size=16, tile_size=512, max_pixels_tolerance=2.0)
        per_tile, for_image = processor._get_image_num_tokens(
            [new_h, new_w], tile_size=512, downsample_factor=2, encoder_patch_size=16)
        rows.append({"width": w, "height": h, "split": bool(split), "rows": grid_rows, "cols": grid_cols,
                     "resized_height": new_h, "resized_width": new_w, "tokens_per_tile": per_tile,
                     "tokens_for_image": for_image})
    (GOLDEN / "layouts-released.json").write_text(json.dumps(rows) + "\n")
    print("versions:", {m.__name__: m.__version__ for m in (torch, np) if hasattr(m, "__version__")},
          "transformers", __import__("transformers").__version__)


if __name__ == "__main__":
    main()
