"""Checks this PyTorch Firebolt-VL against the goldens made by the authors' own code.

    python check_reference.py ../Tests/Fixtures/firebolt-tiny

loads the fixture's released-layout checkpoint into `firebolt.FireboltVL` and compares the vision grid, the S4
kernel, the CMM output and the logits (with and without the image) with golden/*.npy. Exits 1 on a mismatch.
The bounds are float32 rounding of the same arithmetic in another order (observed ~1e-6 relative); the S4 kernel
is computed here by the state-space recurrence from C recovered out of C-tilde, the goldens by the authors'
frequency-domain route, which agree to ~5e-5 of the largest tap.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from firebolt import FireboltVL, TextConfig, VisionConfig


def configs_from(config: dict):
    t, v = config["text_config"], config["vision_config"]
    text = TextConfig(vocab_size=t["vocab_size"], hidden_size=t["hidden_size"],
                      intermediate_size=t["intermediate_size"], layer_types=t["layer_types"],
                      num_attention_heads=t["num_attention_heads"], num_key_value_heads=t["num_key_value_heads"],
                      conv_L_cache=t["conv_L_cache"], norm_eps=t["norm_eps"],
                      rope_theta=t["rope_parameters"]["rope_theta"])
    vision = VisionConfig(hidden_size=v["hidden_size"], intermediate_size=v["intermediate_size"],
                          num_hidden_layers=v["num_hidden_layers"], num_attention_heads=v["num_attention_heads"],
                          image_size=v["image_size"], patch_size=v["patch_size"], layer_norm_eps=v["layer_norm_eps"])
    return text, vision


def main() -> int:
    folder = Path(sys.argv[1])
    golden = folder / "golden"
    g = lambda name: torch.from_numpy(np.load(golden / f"{name}.npy"))
    text_cfg, vision_cfg = configs_from(json.loads((folder / "config.json").read_text()))
    model = FireboltVL(text_cfg, vision_cfg).eval()
    model.load_released(load_file(folder / "model.safetensors"))

    failures = 0

    def compare(name, got, want, bound):
        nonlocal failures
        err = float((got - want).abs().max() / want.abs().max())
        ok = err <= bound
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name:18} max |diff| / max |golden| = {err:.2e} (bound {bound:.0e})")

    with torch.no_grad():
        grid = model.vision_grid(g("pixel_values"))
        compare("vision_grid", grid, g("vision_grid"), 1e-5)
        taps = model.cmm.s4.layer.kernel(512)
        compare("s4_kernel", taps, g("s4_kernel")[0], 2e-4)
        embeds = model.base_lm.model.embed_tokens(g("input_ids"))
        compare("text_embeds", embeds, g("text_embeds"), 0)
        cmm = model.cmm(embeds, g("vision_grid"))
        compare("cmm_out", cmm, g("cmm_out"), 1e-4)
        compare("logits", model(g("input_ids"), g("vision_grid")), g("logits"), 1e-4)
        compare("text_only_logits", model(g("text_only_input_ids")), g("text_only_logits"), 1e-5)
        # The reverse: storing C-tilde again must give back the file's C-tilde.
        released = model.state_dict_released()
        name = FireboltVL.CMM_PREFIX + "s4.layer.kernel.C"
        stored = load_file(folder / "model.safetensors")[name]
        compare("s4 C-tilde again", released[name], stored, 1e-4)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
