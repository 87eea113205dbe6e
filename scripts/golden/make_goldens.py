#!/usr/bin/env python3
"""Generate golden test fixtures for lowbit from HF transformers.

Usage:  python3 scripts/golden/make_goldens.py OUTDIR [case ...]

For every case a tiny random causal-LM is built from a config dict, its weights
are re-initialised (non-degenerate, O(1) logits), and OUTDIR/<case>/ receives:
  config.json, model.safetensors (via save_pretrained), generation_config.json
  (if written), golden.safetensors (inputs + reference outputs, see README.md).

Everything runs on CPU in float32 with eager attention, seeded per case.
"""

import inspect
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, OPTConfig, Qwen2Config

TF_MAJOR = int(transformers.__version__.split(".")[0])


def rope_kwargs(theta, scaling=None):
    """Rope settings in the form the installed transformers expects.

    transformers >= 5 uses `rope_parameters` (with rope_theta inside); v4 uses
    `rope_theta` + `rope_scaling`.
    """
    if TF_MAJOR >= 5:
        params = {"rope_type": "default", "rope_theta": float(theta)}
        if scaling is not None:
            params.update(scaling)
            params["rope_theta"] = float(theta)
        return {"rope_parameters": params}
    kw = {"rope_theta": float(theta)}
    if scaling is not None:
        kw["rope_scaling"] = dict(scaling)
    return kw


LLAMA_BASE = dict(
    hidden_size=64,
    intermediate_size=172,  # odd on purpose
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=256,
    tie_word_embeddings=False,
    rms_norm_eps=1e-6,
    max_position_embeddings=128,
    bos_token_id=1,
    eos_token_id=2,
)

OPT_BASE = dict(
    hidden_size=64,
    ffn_dim=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    vocab_size=256,
    max_position_embeddings=64,
    word_embed_proj_dim=64,
    do_layer_norm_before=True,
    pad_token_id=1,
    bos_token_id=2,
    eos_token_id=2,
    tie_word_embeddings=True,
)


def cases():
    return [
        ("llama_gqa", LlamaConfig, dict(LLAMA_BASE, **rope_kwargs(10000.0)), 0),
        (
            "llama_tied",
            LlamaConfig,
            dict(
                LLAMA_BASE,
                intermediate_size=128,
                num_key_value_heads=4,
                tie_word_embeddings=True,
                **rope_kwargs(10000.0),
            ),
            0,
        ),
        (
            "llama3_rope",
            LlamaConfig,
            dict(
                LLAMA_BASE,
                intermediate_size=96,
                num_attention_heads=4,
                num_key_value_heads=1,
                head_dim=32,
                **rope_kwargs(
                    500000.0,
                    {
                        "rope_type": "llama3",
                        "factor": 8.0,
                        "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 16,
                    },
                ),
            ),
            0,
        ),
        (
            "llama_linear_rope",
            LlamaConfig,
            dict(LLAMA_BASE, **rope_kwargs(10000.0, {"rope_type": "linear", "factor": 4.0})),
            0,
        ),
        (
            "qwen2",
            Qwen2Config,
            dict(
                LLAMA_BASE,
                use_sliding_window=False,
                max_window_layers=2,
                **rope_kwargs(10000.0),
            ),
            0,
        ),
        (
            "mistral",
            MistralConfig,
            dict(
                LLAMA_BASE,
                intermediate_size=128,
                sliding_window=None,
                **rope_kwargs(10000.0),
            ),
            0,
        ),
        ("opt_125m_like", OPTConfig, dict(OPT_BASE), 1),
        (
            "opt_350m_like",
            OPTConfig,
            dict(OPT_BASE, word_embed_proj_dim=32, do_layer_norm_before=False),
            1,
        ),
        # Added later; appended so that the seeds (1000 + index) of the cases above are unchanged.
        (
            "llama_dynamic_rope",
            LlamaConfig,
            dict(LLAMA_BASE, max_position_embeddings=8, **rope_kwargs(10000.0, {"rope_type": "dynamic", "factor": 2.0})),
            0,
        ),
        (
            "mistral_sliding",
            MistralConfig,
            dict(LLAMA_BASE, intermediate_size=128, sliding_window=4, **rope_kwargs(10000.0)),
            0,
        ),
        (
            "qwen2_sliding",
            Qwen2Config,
            dict(LLAMA_BASE, use_sliding_window=True, sliding_window=5, max_window_layers=1, **rope_kwargs(10000.0)),
            0,
        ),
    ]


def reinit_(model):
    """Non-degenerate weights: matrices N(0, 0.1), biases 0.1*randn, norm weights 1 + 0.1*randn."""
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied params appear once
            leaf = name.split(".")[-1]
            is_norm = "norm" in name.lower() and p.dim() == 1
            if leaf == "bias":
                p.copy_(torch.randn_like(p) * 0.1)
            elif is_norm:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * 0.1)


def save_model(model, d):
    kw = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kw["safe_serialization"] = True
    model.save_pretrained(d, **kw)


def generate(model, ids, mask, pad, max_new, **extra):
    out = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=max_new,
        do_sample=False,
        num_beams=1,
        pad_token_id=pad,
        eos_token_id=None,
        **extra,
    )
    assert out.shape == (ids.shape[0], ids.shape[1] + max_new), (out.shape, ids.shape, max_new)
    return out.to(torch.int64).contiguous()


def run_case(idx, name, cfg_cls, cfg_kw, pad, outdir):
    print(f"\n===== case {name} ({cfg_cls.__name__}) =====", flush=True)
    torch.manual_seed(1000 + idx)
    config = cfg_cls(**cfg_kw)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model = model.to(torch.float32)
    reinit_(model)
    model.eval()
    # never stop early on EOS
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = pad

    print("config:", json.dumps(config.to_diff_dict(), sort_keys=True, default=str))
    for n, p in model.named_parameters():
        print(f"  param {n} {tuple(p.shape)}")

    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    save_model(model, d)
    from safetensors import safe_open

    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        keys = sorted(f.keys())
        print("  saved keys:", [(k, tuple(f.get_slice(k).get_shape())) for k in keys])
    print("  files:", sorted(os.listdir(d)))

    V = config.vocab_size
    T = 12
    g = {}
    with torch.no_grad():
        input_ids = torch.randint(3, V, (2, T), dtype=torch.int64)
        logits = model(input_ids).logits.float()
        g["input_ids"] = input_ids
        g["logits"] = logits.contiguous()
        print(f"  logits {tuple(logits.shape)} max|logit|={logits.abs().max().item():.4f} "
              f"std={logits.std().item():.4f}")

        # padded batch: row 0 unpadded, row 1 left-padded with 4 pad tokens
        pad_ids = input_ids.clone()
        pad_ids[1, 4:] = input_ids[1, :8]
        pad_ids[1, :4] = pad
        mask = torch.ones(2, T, dtype=torch.int64)
        mask[1, :4] = 0
        pos = mask.cumsum(-1) - 1
        pos = pos.masked_fill(mask == 0, 1)
        if config.model_type == "opt":
            pad_logits = model(pad_ids, attention_mask=mask).logits.float()
        else:
            pad_logits = model(pad_ids, attention_mask=mask, position_ids=pos).logits.float()
        g["pad_input_ids"] = pad_ids
        g["pad_attention_mask"] = mask
        g["pad_position_ids"] = pos
        g["pad_logits"] = pad_logits.contiguous()
        # sanity: unpadded row must match the plain forward
        d0 = (pad_logits[0] - logits[0]).abs().max().item()
        # and the real tokens of row 1 must match an unpadded forward of them
        ref1 = model(input_ids[1:2, :8]).logits.float()[0]
        d1 = (pad_logits[1, 4:] - ref1).abs().max().item()
        print(f"  pad check: row0 diff {d0:.3e}, row1 (real part vs unpadded) diff {d1:.3e}")

        prompt = input_ids[0:1, :8].contiguous()
        pmask = torch.ones_like(prompt)
        g["gen_greedy"] = generate(model, prompt, pmask, pad, 16)
        g["gen_ngram2"] = generate(model, prompt, pmask, pad, 16, no_repeat_ngram_size=2)
        g["gen_rep13"] = generate(model, prompt, pmask, pad, 16, repetition_penalty=1.3)
        for k in ("gen_greedy", "gen_ngram2", "gen_rep13"):
            print(f"  {k}: {g[k][0].tolist()}")

        bids = torch.empty(2, 8, dtype=torch.int64)
        bids[0] = input_ids[0, :8]
        bids[1, :3] = pad
        bids[1, 3:] = input_ids[1, :5]
        bmask = torch.ones(2, 8, dtype=torch.int64)
        bmask[1, :3] = 0
        g["gen_batch_ids"] = bids
        g["gen_batch_mask"] = bmask
        g["gen_batch_out"] = generate(model, bids, bmask, pad, 12)
        print(f"  gen_batch_out: {g['gen_batch_out'].tolist()}")
        # sanity: batched row 0 should equal first 12 tokens of single greedy
        same = g["gen_batch_out"][0].tolist() == g["gen_greedy"][0, :20].tolist()
        print(f"  batch row0 == greedy[:20]: {same}")

    meta = {
        "case": name,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "model_type": config.model_type,
        "pad_token_id": str(pad),
        "seed": str(1000 + idx),
    }
    save_file({k: v.contiguous() for k, v in g.items()}, os.path.join(d, "golden.safetensors"), metadata=meta)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    outdir = sys.argv[1]
    only = set(sys.argv[2:])
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print(f"torch {torch.__version__} transformers {transformers.__version__} python {sys.version.split()[0]}")
    failed = []
    for idx, (name, cls, kw, pad) in enumerate(cases()):
        if only and name not in only:
            continue
        try:
            run_case(idx, name, cls, kw, pad, outdir)
        except Exception as e:  # keep going; report at the end
            import traceback

            traceback.print_exc()
            failed.append((name, repr(e)))
    with open(os.path.join(outdir, "VERSIONS.json"), "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
                   "python": sys.version.split()[0], "failed": failed}, f, indent=1)
    print("\nFAILED:", failed if failed else "none")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
