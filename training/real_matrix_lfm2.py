"""An LFM2 made of real trained matrices, for comparing quantization error with llama.cpp on the same weights.

    python real_matrix_lfm2.py MATRICES.safetensors TOKENIZER_DIR OUT_DIR

MATRICES is Tests/Fixtures/real-weights/minilm-l6-matrices.safetensors (MiniLM-L6's attention and feed-forward
matrices and 4,096 word embeddings); TOKENIZER_DIR a folder with an LFM2 config.json and tokenizer (the
`fbconvert synth --preset lfm2-350m` output), whose vocabulary size the embedding is tiled to. The result: hidden
384, 4 layers (conv, attention, conv, attention), 6 heads of 64 with 2 key/value heads, feed-forward 1536, tied
embedding. Norm weights are ones except the final norm's, 8, which makes next-token distributions sharp enough for
their differences to show; the short-convolution taps (not in MiniLM) are drawn from a fixed seed.
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def main() -> None:
    src, tok_dir, out = sys.argv[1:4]
    m = load_file(src)

    def real(layer: int, name: str) -> torch.Tensor:
        return m[f"encoder.layer.{layer}.{name}.weight"].clone()

    rng = np.random.default_rng(7)
    vocab = 65536
    words = m["embeddings.word_embeddings.weight[:4096]"]
    t = {"model.embed_tokens.weight": words.repeat(vocab // words.shape[0], 1).contiguous(),
         "model.embedding_norm.weight": torch.full((384,), 8.0)}
    types = ["conv", "full_attention", "conv", "full_attention"]
    ffn = [0, 3, 5, 3]                 # MiniLM layer whose feed-forward each layer takes
    other = {0: 5, 3: 0, 5: 3}         # and the layer whose up-projection serves as w3
    for i, kind in enumerate(types):
        p = f"model.layers.{i}."
        t[p + "operator_norm.weight"] = torch.ones(384)
        t[p + "ffn_norm.weight"] = torch.ones(384)
        t[p + "feed_forward.w1.weight"] = real(ffn[i], "intermediate.dense")
        t[p + "feed_forward.w3.weight"] = real(other[ffn[i]], "intermediate.dense")
        t[p + "feed_forward.w2.weight"] = real(ffn[i], "output.dense")
        if kind == "conv":
            t[p + "conv.in_proj.weight"] = torch.cat([real(3, "attention.self.query"), real(3, "attention.self.value"),
                                                      real(5, "attention.self.query")]).contiguous()
            t[p + "conv.out_proj.weight"] = real(5, "attention.self.value")
            t[p + "conv.conv.weight"] = torch.tensor(rng.normal(0, 0.5, (384, 1, 3)), dtype=torch.float32)
        else:
            t[p + "self_attn.q_proj.weight"] = real(0, "attention.self.query")
            t[p + "self_attn.k_proj.weight"] = real(3, "attention.self.query")[:128].contiguous()
            t[p + "self_attn.v_proj.weight"] = real(0, "attention.self.value")[:128].contiguous()
            t[p + "self_attn.out_proj.weight"] = real(5, "attention.self.value")
            t[p + "self_attn.q_layernorm.weight"] = torch.ones(64)
            t[p + "self_attn.k_layernorm.weight"] = torch.ones(64)
    os.makedirs(out, exist_ok=True)
    save_file(t, f"{out}/model.safetensors", metadata={"format": "pt"})
    config = json.load(open(f"{tok_dir}/config.json"))
    config.update(hidden_size=384, intermediate_size=1536, layer_types=types, num_hidden_layers=4,
                  num_attention_heads=6, num_key_value_heads=2, vocab_size=vocab)
    with open(f"{out}/config.json", "w") as f:
        json.dump(config, f, indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{tok_dir}/{name}", f"{out}/{name}")


if __name__ == "__main__":
    main()
