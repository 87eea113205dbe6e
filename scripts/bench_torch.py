#!/usr/bin/env python3
"""PyTorch eager on the shapes `lowbit bench --device cuda` measures: the peer in the same call (scripts/cuda-check.sh).

transformers' LlamaForCausalLM built from the same config.json fields (src/models/random.ts SHAPES), random bf16
weights on the GPU, eager attention. Decode: greedy steps with the model's own KV cache after a prompt of
--prompt-len tokens, timed with CUDA events around --decode-len steps (3 warm-up steps first), batch 1 and 16.
Prefill: one forward of --prefill-len tokens. Prints one line per row and writes JSON to --out.

  python3 scripts/bench_torch.py --shape llama-3-8b --batch 1,16 --out torch.json
"""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "tinyllama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5,
                           rope_theta=10000.0, tie_word_embeddings=False),
    "llama-3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rms_norm_eps=1e-5,
                       rope_theta=500000.0, tie_word_embeddings=False),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, vocab_size=128256, max_position_embeddings=131072,
                         rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
                         rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                           original_max_position_embeddings=8192)),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llama-3-8b", choices=sorted(SHAPES))
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--decode-len", type=int, default=64)
    ap.add_argument("--prefill-len", type=int, default=512)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    cfg = LlamaConfig(**SHAPES[a.shape], attn_implementation="eager")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    rows = []
    ev = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731
    with torch.inference_mode():
        for B in [int(b) for b in a.batch.split(",")]:
            ids = torch.randint(0, cfg.vocab_size, (B, a.prompt_len), device="cuda")
            out = model(ids, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            for _ in range(3):
                out = model(nxt, past_key_values=past, use_cache=True)
                past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            steps = a.decode_len - 3
            e0, e1 = ev(), ev()
            e0.record()
            for _ in range(steps):
                out = model(nxt, past_key_values=past, use_cache=True)
                past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
                nxt.cpu()  # the chosen ids come down each step, as lowbit's do
            e1.record()
            torch.cuda.synchronize()
            ms = e0.elapsed_time(e1)
            rows.append({"phase": "decode", "batch": B, "tokensPerSecond": B * steps / (ms / 1e3)})
            del past, out
        if a.prefill_len > 0:
            ids = torch.randint(0, cfg.vocab_size, (1, a.prefill_len), device="cuda")
            model(ids, logits_to_keep=1)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(3):
                model(ids, logits_to_keep=1)
            torch.cuda.synchronize()
            s = (time.perf_counter() - t0) / 3
            rows.append({"phase": "prefill", "batch": 1, "tokensPerSecond": a.prefill_len / s})
    print(f"PyTorch {torch.__version__} eager bf16, {a.shape} on {torch.cuda.get_device_name(0)}")
    for r in rows:
        print(f"torch {r['phase']:8s} batch {r['batch']:3d}: {r['tokensPerSecond']:10.1f} tok/s")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"shape": a.shape, "torch": torch.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
