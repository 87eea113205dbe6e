"""PEFT files both ways on eval-llama-16m (issue 11), on the GPU machine (torch, transformers, peft), in float32.

1. An adapter that lowbit trained (`lowbit finetune`, float base), loaded with PeftModel.from_pretrained over the same
   base: its logits against the ones lowbit computed for the same ids.
2. An adapter that PEFT trains here (get_peft_model, seed 002's LoraConfig, 10 AdamW steps) is saved with
   save_pretrained, with its logits: lowbit loads both (test/peft-python.test.ts) and compares.

Input folder (argv[1]): model/ (eval-llama-16m), ids.json (token rows), lowbit_adapter/, lowbit_logits.safetensors
(logits and base logits from lowbit), tokens.json (training windows). Output folder (argv[2]): peft_adapter/ and
peft_logits.safetensors. Prints one JSON line per check.
Run: python3 scripts/peft_crosscheck.py .devdata $OUT
"""
import json
import sys

import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

root, out = sys.argv[1], sys.argv[2]
torch.backends.cuda.matmul.allow_tf32 = False
dev = "cuda" if torch.cuda.is_available() else "cpu"
ids = torch.tensor(json.load(open(f"{root}/ids.json")), device=dev)


def base():
    return AutoModelForCausalLM.from_pretrained(f"{root}/model", dtype=torch.float32).to(dev).eval()


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}))
ref = load_file(f"{root}/lowbit_logits.safetensors")
with torch.no_grad():
    bl = base()(ids).logits.float().cpu().contiguous()
    lg = PeftModel.from_pretrained(base(), f"{root}/lowbit_adapter").eval()(ids).logits.float().cpu()
print(json.dumps({"check": "lowbit's adapter in PEFT: logits vs lowbit's", "max_rel_err": rel(lg, ref["logits"]),
                  "base_max_rel_err": rel(bl, ref["base"]), "adapter_effect": rel(lg, bl)}))

torch.manual_seed(0)
m = get_peft_model(base(), LoraConfig(r=8, lora_alpha=32, target_modules=["k_proj", "o_proj", "q_proj", "v_proj"],
                                      lora_dropout=0.05, bias="none", task_type="CAUSAL_LM"))
m.print_trainable_parameters()
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
toks = torch.tensor(json.load(open(f"{root}/tokens.json"))["calib"][:10], device=dev)[:, :64]
m.train()
for step in range(10):
    x = toks[step:step + 1]
    loss = m(x, labels=x).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
m.eval()
m.save_pretrained(f"{out}/peft_adapter")
with torch.no_grad():
    pl = m(ids).logits.float().cpu().contiguous()
save_file({"logits": pl, "base": bl}, f"{out}/peft_logits.safetensors")
print(json.dumps({"check": "PEFT-trained adapter saved", "last_loss": loss.item(), "adapter_effect": rel(pl, bl)}))
