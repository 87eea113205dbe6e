#!/usr/bin/env python3
"""Tokenizer, chat-template and real-model goldens from HF transformers, for lowbit's tests.

Usage: python3 make_tokenizer_goldens.py DATA_DIR OUT_DIR [--part base|extra|files|all]
  DATA_DIR is a copy of ../shared/data (tokenizers/ and models/; `extra` needs only the tokenizer files).
  base:  OUT_DIR/tokenizers.json and OUT_DIR/eval_llama_16m.json (ids, decoded text, rendered chat templates,
         last-position logits).
  extra: OUT_DIR/tokenizers_extra.json: SentencePiece-style Llama tokenizers (LlamaTokenizer class, byte fallback)
         on runs of spaces and literal special tokens, under several tokenizer_config.json variants; and
         clean_up_tokenization_spaces on decode, for the shared tokenizers and two tiny ones built here.
  files: OUT_DIR/tokenizers_files.json: what tokenizer_config.json keys beyond the class do on load (add_bos_token /
         add_eos_token rebuilding the post-processor) and which file wins when chat_template.jinja or
         special_tokens_map.json disagree with tokenizer_config.json.
Run on the GPU machine (it has torch + transformers); see scripts/golden/README.md.
"""
import json
import os
import shutil
import sys
import tempfile

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


def base(data, out):
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


# Runs of spaces, leading/trailing spaces, tabs/newlines, literal special tokens, byte-fallback characters.
SPM_TEXTS = [
    "Hello world", "a  b", "a   b", "a    b", "a     b", "a      b", "a       b", "a        b",
    " x", "  x", "   leading", "        eight", "trailing  ", "trailing        ", "  both  ", " ", "  ", "        ",
    "tab\tx", "\t\tx", "\n", "line\n  indented\n\n    more", " \n ", "a \t b",
    "Hello <s>.", "Hello<s>world", "<s>", "</s>", "<unk>", " <s> ", "<s> x", "<s>  two", "x </s> y", "x</s>",
    "a<unk>b", "<s><s></s>", "<s>\n</s>", "  <s>  ",
    "\U0001F600", "  \U0001F600  ", "\U0001F600<s>\u6771\u4eac", "\u6771\u4eac  <s>  \U0001F600",
    "<s>\U0001F600</s>", "\u65e5\u672c\u8a9e \u306e \u30c6\u30ad\u30b9\u30c8", "\u2581x", "\u2581\u2581 y",
    "mixed \U0001F600  \u6771\u4eac\t<unk>  end  ",
    "",
]

# tokenizer_config.json variants for the Llama-2 tokenizer folder (which ships none). "meta" is Meta's own
# Llama-2 file, less its AddedToken dicts.
LLAMA2_CONFIGS = {
    "none": None,
    "class": {"tokenizer_class": "LlamaTokenizer"},
    "meta": {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
             "clean_up_tokenization_spaces": False, "legacy": False, "pad_token": None, "padding_side": "right",
             "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer"},
    "fast_legacy": {"tokenizer_class": "LlamaTokenizerFast", "legacy": True},
    "no_prefix": {"tokenizer_class": "LlamaTokenizer", "add_prefix_space": False},
    "fast_class": {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
}

CLEANUP_TEXTS = [
    "owned ... it",
    "Hello , world ! Is it ? I 'm sure they 're here , it 's fine . don 't we 've",
    "x ' y",
]

TINY_WORDS = ["[UNK]", "owned", "...", "it", ".", ",", "!", "?", "'", "Hello", "world", "Is", "I", "'m", "sure",
              "they", "'re", "here", "'s", "fine", "don", "'t", "we", "'ve", "x", "y"]


def backend_json(tok):
    j = json.loads(tok.backend_tokenizer.to_str())
    j["model"].pop("vocab", None)
    j["model"].pop("merges", None)
    return j


def describe(tok):
    return {"class": type(tok).__name__, "bos_token": tok.bos_token, "eos_token": tok.eos_token,
            "unk_token": tok.unk_token, "pad_token": tok.pad_token, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "legacy": getattr(tok, "legacy", None),
            "add_prefix_space": getattr(tok, "add_prefix_space", None),
            "clean_up_tokenization_spaces": tok.clean_up_tokenization_spaces, "backend": backend_json(tok)}


def run_texts(tok, texts):
    rows = []
    for t in texts:
        ids = tok(t)["input_ids"]
        ns = tok(t, add_special_tokens=False)["input_ids"]
        rows.append({"text": t, "ids": ids, "ids_no_special": ns, "tokens": tok.convert_ids_to_tokens(ids),
                     "decode": tok.decode(ids), "decode_skip_special": tok.decode(ids, skip_special_tokens=True),
                     "decode_no_special": tok.decode(ns)})
    return rows


def cleanup_rows(tok):
    rows = []
    for t in CLEANUP_TEXTS:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        rows.append({"text": t, "ids": ids, "decode": tok.decode(ids),
                     "decode_true": tok.decode(ids, clean_up_tokenization_spaces=True),
                     "decode_false": tok.decode(ids, clean_up_tokenization_spaces=False)})
    return rows


def extra(data, out):
    from tokenizers import Tokenizer, models, pre_tokenizers
    import tokenizers
    from transformers import LlamaTokenizer
    result = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__, "spm_texts": SPM_TEXTS,
              "llama2": {}, "cleanup": {}}
    src = os.path.join(data, "tokenizers", "llama2")
    for name, cfg in LLAMA2_CONFIGS.items():
        d = tempfile.mkdtemp()
        for f in ("tokenizer.json", "tokenizer.model"):
            shutil.copy(os.path.join(src, f), d)
        if cfg is not None:
            with open(os.path.join(d, "tokenizer_config.json"), "w") as fh:
                json.dump(cfg, fh)
        try:
            tok = AutoTokenizer.from_pretrained(d)
            result["llama2"][name] = {"config": cfg, **describe(tok), "rows": run_texts(tok, SPM_TEXTS)}
        except Exception as e:  # record what transformers does, failure included
            result["llama2"][name] = {"config": cfg, "error": repr(e)}
        print("llama2", name, result["llama2"][name].get("class"), result["llama2"][name].get("error", ""), flush=True)
    # The class used directly, as a user of LlamaTokenizer.from_pretrained would.
    for name, kw in {"LlamaTokenizer": {}, "LlamaTokenizer_legacy": {"legacy": True}}.items():
        tok = LlamaTokenizer.from_pretrained(src, **kw)
        result["llama2"][name] = {"config": kw, **describe(tok), "rows": run_texts(tok, SPM_TEXTS)}
    ts = AutoTokenizer.from_pretrained(os.path.join(data, "models", "tinystories-656k"))
    result["tinystories-656k"] = {**describe(ts), "rows": run_texts(ts, SPM_TEXTS)}

    # clean_up_tokenization_spaces: the shared tokenizers as loaded, then two tiny ones (WordLevel, BPE) with the
    # flag absent, true and false.
    loaders = {
        "gpt2": lambda: AutoTokenizer.from_pretrained(os.path.join(data, "tokenizers", "gpt2")),
        "llama3": lambda: AutoTokenizer.from_pretrained(os.path.join(data, "tokenizers", "llama3")),
        "llama2": lambda: load(data, "llama2"),
        "llama2_LlamaTokenizer": lambda: LlamaTokenizer.from_pretrained(src),
        "tinystories-656k": lambda: ts,
        "eval-llama-16m": lambda: AutoTokenizer.from_pretrained(os.path.join(data, "models", "eval-llama-16m")),
    }
    for name, mk in loaders.items():
        tok = mk()
        result["cleanup"][name] = {"clean_up_tokenization_spaces": tok.clean_up_tokenization_spaces, "rows": cleanup_rows(tok)}
    vocab = {w: i for i, w in enumerate(TINY_WORDS)}
    tiny = {
        "wordlevel": lambda: Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")),
        "bpe": lambda: Tokenizer(models.BPE(vocab, [], unk_token="[UNK]", ignore_merges=True)),
    }
    for kind, mk in tiny.items():
        for flag in (None, True, False):
            t = mk()
            t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
            kw = {} if flag is None else {"clean_up_tokenization_spaces": flag}
            tok = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]", **kw)
            result["cleanup"][f"tiny_{kind}_{flag}"] = {"tokenizer_json": json.loads(t.to_str()), "flag": flag,
                                                        "clean_up_tokenization_spaces": tok.clean_up_tokenization_spaces,
                                                        "rows": cleanup_rows(tok)}
    for name, r in result["cleanup"].items():
        print("cleanup", name, r["clean_up_tokenization_spaces"], repr(r["rows"][0]["decode"]), flush=True)
    with open(os.path.join(out, "tokenizers_extra.json"), "w") as f:
        json.dump(result, f, ensure_ascii=False, indent=1)


FILES_TEXTS = ["Hello world", "", " x", "a <s> b </s>", "<|endoftext|> y"]

# (tokenizer folder, tokenizer_config.json to write: None keeps the folder's own, a dict is merged over it)
FILES_CASES = {
    "llama2_class_add_eos": ("tokenizers/llama2", {"tokenizer_class": "LlamaTokenizer", "add_eos_token": True}),
    "llama2_class_no_bos": ("tokenizers/llama2", {"tokenizer_class": "LlamaTokenizer", "add_bos_token": False}),
    "llama2_class_bos_null": ("tokenizers/llama2", {"tokenizer_class": "LlamaTokenizer", "add_bos_token": None}),
    "llama2_fast_both": ("tokenizers/llama2", {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True, "add_eos_token": True}),
    "llama2_fast_eos_only": ("tokenizers/llama2", {"bos_token": "<s>", "eos_token": "</s>", "add_eos_token": True}),
    "llama2_fast_no_bos_token": ("tokenizers/llama2", {"add_bos_token": True}),
    "gpt2_add_bos": ("tokenizers/gpt2", {"add_bos_token": True}),
    "gpt2_add_eos": ("tokenizers/gpt2", {"add_eos_token": True}),
    "llama3_add_eos": ("tokenizers/llama3", {"add_eos_token": True}),
    "llama3_no_bos": ("tokenizers/llama3", {"add_bos_token": False}),
}


def files(data, out):
    result = {"transformers": transformers.__version__, "texts": FILES_TEXTS, "cases": {}}
    for name, (sub, extra_cfg) in FILES_CASES.items():
        src = os.path.join(data, sub)
        d = tempfile.mkdtemp()
        for f in os.listdir(src):
            shutil.copy(os.path.join(src, f), d)
        cfg_path = os.path.join(d, "tokenizer_config.json")
        cfg = json.load(open(cfg_path)) if os.path.exists(cfg_path) else {}
        cfg.update(extra_cfg)
        with open(cfg_path, "w") as fh:
            json.dump(cfg, fh)
        try:
            tok = AutoTokenizer.from_pretrained(d)
            rows = [{"text": t, "ids": tok(t)["input_ids"], "ids_no_special": tok(t, add_special_tokens=False)["input_ids"]}
                    for t in FILES_TEXTS]
            post = json.loads(tok.backend_tokenizer.to_str()).get("post_processor")
            result["cases"][name] = {"dir": sub, "config": extra_cfg, "class": type(tok).__name__, "bos_token": tok.bos_token,
                                     "eos_token": tok.eos_token, "post_processor": post, "rows": rows}
        except Exception as e:
            result["cases"][name] = {"dir": sub, "config": extra_cfg, "error": repr(e)}
        print("files", name, result["cases"][name].get("class"), result["cases"][name].get("error", ""),
              result["cases"][name].get("rows", [{}])[0].get("ids"), flush=True)

    # Which file wins: chat_template.jinja against tokenizer_config.json's chat_template, special_tokens_map.json
    # against tokenizer_config.json's special tokens (tokenizer.json from eval-llama-16m).
    src = os.path.join(data, "models", "eval-llama-16m")
    precedence = {}
    for name, cfg_extra, jinja, stmap in [
        ("both_templates", {"chat_template": "CONFIG{{ messages[0]['content'] }}"}, "JINJA{{ messages[0]['content'] }}", None),
        ("map_vs_config", {"eos_token": "<|eot_id|>", "pad_token": None}, None, {"eos_token": "<|pad|>", "pad_token": "<|eot_id|>", "bos_token": "<|end_of_text|>"}),
        ("map_only", {"eos_token": None}, None, {"eos_token": "<|eot_id|>"}),
    ]:
        d = tempfile.mkdtemp()
        shutil.copy(os.path.join(src, "tokenizer.json"), d)
        cfg = json.load(open(os.path.join(src, "tokenizer_config.json")))
        cfg.update(cfg_extra)
        with open(os.path.join(d, "tokenizer_config.json"), "w") as fh:
            json.dump(cfg, fh)
        if jinja is not None:
            with open(os.path.join(d, "chat_template.jinja"), "w") as fh:
                fh.write(jinja)
        if stmap is not None:
            with open(os.path.join(d, "special_tokens_map.json"), "w") as fh:
                json.dump(stmap, fh)
        try:
            tok = AutoTokenizer.from_pretrained(d)
            entry = {"config": cfg_extra, "jinja": jinja, "special_tokens_map": stmap, "bos_token": tok.bos_token,
                     "eos_token": tok.eos_token, "pad_token": tok.pad_token}
            try:
                entry["rendered"] = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
            except Exception as e:
                entry["rendered_error"] = repr(e)
        except Exception as e:
            entry = {"config": cfg_extra, "error": repr(e)}
        precedence[name] = entry
        print("precedence", name, entry, flush=True)
    result["precedence"] = precedence
    with open(os.path.join(out, "tokenizers_files.json"), "w") as f:
        json.dump(result, f, ensure_ascii=False, indent=1)


def main():
    data, out = sys.argv[1], sys.argv[2]
    part = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--part" else "all"
    os.makedirs(out, exist_ok=True)
    if part in ("base", "all"):
        base(data, out)
    if part in ("extra", "all"):
        extra(data, out)
    if part in ("files", "all"):
        files(data, out)


if __name__ == "__main__":
    main()
