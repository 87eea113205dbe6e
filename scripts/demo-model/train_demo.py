#!/usr/bin/env python3
"""Train lowbit's embedded demo model: a small Llama on the King James Bible, with a Llama-3-style chat template.

Usage: python3 train_demo.py KJV_TEXT OUT_DIR [--seconds 60]
KJV_TEXT comes from scripts/demo-model/get_text.sh (Debian's bible-kjv). Writes an HF folder (config.json,
model.safetensors in bf16, tokenizer.json, tokenizer_config.json with chat_template, generation_config.json).
The chat data teaches one skill: asked for a verse by reference ("Recite John 3:16"), answer with its text.
Plain passages teach the language. Run on the GPU machine: 60 s of training on one H100 (longer overfits: 240 s gave train loss 0.28 but held-out perplexity 983; 60 s gives 0.87 and 79).
"""
import argparse
import json
import math
import os
import random
import re
import time

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|pad|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
ASKS = ["Recite {ref}.", "What does {ref} say?", "Quote {ref}.", "Say {ref}.", "Read me {ref}.", "{ref}"]


def parse_kjv(path):
    """bible(1) output: 'Book N' headings, verses starting '  V text', continuation lines."""
    verses, book, chap = [], None, None
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        m = re.match(r"^(\S.*?) (\d+)$", line)
        if m and not line.startswith(" "):
            book, chap = m.group(1), int(m.group(2))
            continue
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m:
            verses.append([book, chap, int(m.group(1)), m.group(2).strip()])
        elif line.strip() and verses:
            verses[-1][3] += " " + line.strip()
    return verses


def chat(user, assistant):
    return (f"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>"
            f"<|start_header_id|>assistant<|end_header_id|>\n\n{assistant}<|eot_id|>")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("text")
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--vocab", type=int, default=4096)
    args = ap.parse_args()
    random.seed(0)
    torch.manual_seed(0)
    verses = parse_kjv(args.text)
    print(f"{len(verses)} verses", flush=True)
    held_out = set(range(0, len(verses), 50))  # every 50th verse is kept out of the passages for evaluation

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    tok.train_from_iterator((v[3] for v in verses), trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])
    eos, eot, pad = (tok.token_to_id(t) for t in ("<|end_of_text|>", "<|eot_id|>", "<|pad|>"))

    # Documents: passages of consecutive verses (with their references) and verse-recitation chats.
    docs = []
    for i in range(0, len(verses), 8):
        chunk = [v for j, v in enumerate(verses[i:i + 8]) if i + j not in held_out]
        if chunk:
            b, c = chunk[0][0], chunk[0][1]
            docs.append(f"<|begin_of_text|>{b} {c}\n" + "\n".join(f"{v[2]} {v[3]}" for v in chunk) + "<|end_of_text|>")
    for i, (b, c, v, t) in enumerate(verses):
        if i in held_out:
            continue
        docs.append(chat(random.choice(ASKS).format(ref=f"{b} {c}:{v}"), t))
    random.shuffle(docs)
    ids = []
    for d in docs:
        ids.extend(tok.encode(d, add_special_tokens=False).ids)
    data = torch.tensor(ids, dtype=torch.long)
    print(f"{len(docs)} documents, {len(ids)} tokens", flush=True)

    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=256, intermediate_size=688, num_hidden_layers=6,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512, rms_norm_eps=1e-5,
                         rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=bos, eos_token_id=[eos, eot],
                         pad_token_id=pad)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = LlamaForCausalLM(config).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
    seq, batch = 256, 64
    t0, step = time.time(), 0
    model.train()
    while time.time() - t0 < args.seconds:
        frac = (time.time() - t0) / args.seconds
        for g in opt.param_groups:
            g["lr"] = 2e-3 * min(1.0, step / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        starts = torch.randint(0, len(data) - seq - 1, (batch,))
        x = torch.stack([data[s:s + seq] for s in starts]).to(dev)
        with torch.autocast(device_type=dev, dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 200 == 0:
            print(f"step {step} loss {loss.item():.3f} t {time.time() - t0:.0f}s", flush=True)
        step += 1
    print(f"trained {step} steps in {time.time() - t0:.0f}s, final loss {loss.item():.3f}", flush=True)

    model.eval()
    model = model.to(torch.bfloat16)
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
                   "eos_token": "<|eot_id|>", "pad_token": "<|pad|>", "model_max_length": 512,
                   "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATE}, f, indent=2)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": [eos, eot], "pad_token_id": pad, "max_new_tokens": 64}, f, indent=2)

    # Held-out verses as one stream: the perplexity the demo reports, for comparison.
    held_text = "\n".join(verses[i][3] for i in sorted(held_out))
    with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write(held_text + "\n")  # lowbit demo measures perplexity on these verses
    held = "<|begin_of_text|>" + held_text
    hid = torch.tensor(tok.encode(held, add_special_tokens=False).ids)
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(hid) - 1, seq):
            x = hid[s:s + seq + 1].unsqueeze(0).to(dev)
            if x.shape[1] < 2:
                break
            out = model(input_ids=x[:, :-1]).logits.float()
            nll += torch.nn.functional.cross_entropy(out[0], x[0, 1:], reduction="sum").item()
            n += x.shape[1] - 1
    print(f"held-out perplexity (bf16) {math.exp(nll / n):.3f} over {n} tokens", flush=True)
    for q in ["Recite John 3:16.", "What does Genesis 1:3 say?", "Quote Psalms 23:1."]:
        text = chat(q, "")
        prompt = text[: text.rindex("<|start_header_id|>assistant")] + "<|start_header_id|>assistant<|end_header_id|>\n\n"
        p = torch.tensor([tok.encode(prompt, add_special_tokens=False).ids]).to(dev)
        g = model.generate(p, max_new_tokens=48, do_sample=False, eos_token_id=[eos, eot], pad_token_id=pad)
        print(q, "→", tok.decode(g[0, p.shape[1]:].tolist()), flush=True)
    with open(os.path.join(args.out, "TRAINING.json"), "w") as f:
        json.dump({"source": "Debian bible-kjv (King James Version, public domain)", "verses": len(verses),
                   "train_tokens": len(ids), "steps": step, "seconds": round(time.time() - t0),
                   "params": n_params, "final_loss": round(loss.item(), 4),
                   "heldout_ppl_bf16": round(math.exp(nll / n), 3), "torch": torch.__version__}, f, indent=2)


if __name__ == "__main__":
    main()
