#!/usr/bin/env python3
"""Tokenizer, chat-template and real-model goldens from HF transformers, for lowbit's tests.

Usage: python3 make_tokenizer_goldens.py DATA_DIR OUT_DIR
  DATA_DIR is a copy of ../shared/data (tokenizers/ and models/). Writes OUT_DIR/tokenizers.json and
  OUT_DIR/eval_llama_16m.json (small: ids, decoded text, rendered chat templates, last-position logits).
Run on the GPU machine (it has torch + transformers); see scripts/golden/README.md.
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

TEXTS = [
    "Hello world",
    "Once upon a time, there was a little",
    "  leading spaces and trailing  ",
    "digits 0123456789 and 3.14159, 1,000,000",
    "unicode: café, naïve, Zürich, 東京, 😀🚀, ñ",
    "tabs\tand\nnewlines\n\nend",
    "The quick brown fox jumps over the lazy dog. THE END!!!",
    "<|begin_of_text|>special tokens inline<|eot_id|> <s> </s> <|endoftext|>",
    "don't won't it's I'm we'll",
    "",
]

CHATS = [
    [{"role": "user", "content": "Who are you?"}],
    [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "  Hi there!  "},
     {"role": "assistant", "content": "Arr."}, {"role": "user", "content": "Tell me more."}],
]


def load(data, name):
    if name == "llama2":
        # Only tokenizer.json ships; the special tokens are those of Meta's Llama-2 tokenizer_config.
        return PreTrainedTokenizerFast(tokenizer_file=os.path.join(data, "tokenizers/llama2/tokenizer.json"),
                                       bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    path = os.path.join(data, "tokenizers", name) if name in ("llama3", "gpt2") else os.path.join(data, "models", name)
    return AutoTokenizer.from_pretrained(path)


def main():
    data, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    result = {"transformers": transformers.__version__, "texts": TEXTS, "tokenizers": {}}
    for name in ["llama2", "llama3", "gpt2", "tinystories-656k", "eval-llama-16m"]:
        tok = load(data, name)
        entry = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
                 "encode": [], "encode_no_special": [], "decode": [], "decode_skip_special": []}
        for t in TEXTS:
            ids = tok(t)["input_ids"]
            entry["encode"].append(ids)
            entry["encode_no_special"].append(tok(t, add_special_tokens=False)["input_ids"])
            entry["decode"].append(tok.decode(ids))
            entry["decode_skip_special"].append(tok.decode(ids, skip_special_tokens=True))
        if tok.chat_template:
            entry["chat"] = []
            for msgs in CHATS:
                for agp in (False, True):
                    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=agp)
                    ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=agp)
                    if isinstance(ids, dict) or hasattr(ids, "keys"):
                        ids = ids["input_ids"]
                    entry["chat"].append({"messages": msgs, "add_generation_prompt": agp, "text": text, "ids": list(ids)})
        result["tokenizers"][name] = entry
        print(name, "ok", entry["encode"][1], flush=True)
    with open(os.path.join(out, "tokenizers.json"), "w") as f:
        json.dump(result, f, ensure_ascii=False, indent=1)

    # eval-llama-16m: bf16 weights upcast to fp32 (lowbit keeps bf16 weights and computes in fp32, so this is the
    # like-for-like reference), last-position logits and 24 greedy tokens.
    path = os.path.join(data, "models", "eval-llama-16m")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="eager").float().eval()
    prompt = "The history of the"
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits[0, -1].tolist()
        gen = model.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
    res = {"prompt": prompt, "prompt_ids": ids[0].tolist(), "logits_last": logits, "greedy_ids": gen[0, ids.shape[1]:].tolist(),
           "greedy_text": tok.decode(gen[0, ids.shape[1]:])}
    print("eval-llama-16m", res["greedy_text"], flush=True)
    with open(os.path.join(out, "eval_llama_16m.json"), "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main()
