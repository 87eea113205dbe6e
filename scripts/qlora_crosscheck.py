"""A QLoRA adapter that lowbit trained on an NF4 base, loaded in Python PEFT (issue 11), without bitsandbytes.

The GPU machine has no bitsandbytes, so the NF4 base is rebuilt in float32 from what lowbit exported: every linear's
4-bit codes and (double-quant decoded) block absmax, dequantized as bitsandbytes does (bf16(code_value · absmax), the
quant state's dtype), the other weights from the checkpoint. PeftModel.from_pretrained puts the adapter on top; the
logits on ids.json are compared with lowbit's (NF4 model + adapter, the exact prefill path).

Input folder (argv[1]): model/, nf4_parts.safetensors, qlora_adapter/, qlora_logits.safetensors, ids.json.
Run: python3 scripts/qlora_crosscheck.py .devdata
"""
import json
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

root = sys.argv[1]
torch.backends.cuda.matmul.allow_tf32 = False
dev = "cuda" if torch.cuda.is_available() else "cpu"
parts = load_file(f"{root}/nf4_parts.safetensors")
code = parts["nf4_code"]
m = AutoModelForCausalLM.from_pretrained(f"{root}/model", dtype=torch.float32)
mods = dict(m.named_modules())
n = 0
for key in parts:
    if not key.endswith(".codes"):
        continue
    name = key[: -len(".codes")]
    N, K = parts[f"{name}.shape"].tolist()
    packed = parts[key].to(torch.int64)
    codes = torch.stack([packed & 15, packed >> 4], dim=1).reshape(-1)
    absmax = parts[f"{name}.absmax"]
    blocksize = N * K // absmax.numel()
    w = (code[codes] * absmax.repeat_interleave(blocksize)).to(torch.bfloat16).float().reshape(N, K)
    mods[name].weight.data = w
    n += 1
m = PeftModel.from_pretrained(m.to(dev).eval(), f"{root}/qlora_adapter").eval()
ids = torch.tensor(json.load(open(f"{root}/ids.json")), device=dev)
with torch.no_grad():
    lg = m(ids).logits.float().cpu()
ref = load_file(f"{root}/qlora_logits.safetensors")["logits"]
err = ((lg - ref).abs().max() / ref.abs().max()).item()
print(json.dumps({"check": "lowbit's QLoRA adapter (NF4 base) in PEFT", "linears_dequantized": n, "max_rel_err": err}))
