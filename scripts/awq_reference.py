"""AWQ in PyTorch on eval-llama-16m under P5's protocol (issue 10), to tell lowbit's AWQ from the algorithm.

Runs, at 4 and 3 bits, group 128, AWQ's zero-point grid (FORMATS.md 5.3, scales rounded to float16 as AutoAWQ's fp16
tensors hold them):
  - RTN on that grid;
  - the scale search (grid 20, s = x_mean^a, or AutoAWQ's duo scaling, normalised), with the loss on the scaled
    linears' own outputs ("linears", the issue's simplified AWQ) or on module2inspect's output ("module": the attention
    block for q/k/v, the MLP for gate/up; AutoAWQ), with or without AutoAWQ's clip search, on 16 or 128 calibration
    windows.
Each decoder layer runs unmodified in float32 on its inputs first (the next layer's inputs are its float outputs),
then every group is searched on the original weights, the scales are folded, the clip search runs, and the layer's
linears are replaced by their pseudo-quantized weights, as AutoAWQ does. Perplexity: WikiText-2, the first 200
windows of 256 tokens (the GPTQ protocol).

Input folder (argv[1]): model/ (eval-llama-16m as in ../shared/data/models) and tokens.json ({"calib": 128 windows of
256 token ids, "wiki": 51200 token ids}), written by lowbit's own tokenizer and calibration code (bench/p5-protocol.ts),
so both sides see the same tokens. Output: one JSON line per run, and a summary table.
Run on the GPU machine: python3 scripts/awq_reference.py .devdata > out.jsonl
"""
import json
import math
import sys
import time

import torch
from transformers import AutoModelForCausalLM

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = "cuda" if torch.cuda.is_available() else "cpu"
root = sys.argv[1]
toks = json.load(open(f"{root}/tokens.json"))
calib_all = torch.tensor(toks["calib"], device=dev)
wiki = torch.tensor(toks["wiki"], device=dev).view(200, 256)
G = 128


def load():
    m = AutoModelForCausalLM.from_pretrained(f"{root}/model", dtype=torch.float32, attn_implementation="sdpa")
    return m.to(dev).eval()


@torch.no_grad()
def ppl(m):
    nll, n = 0.0, 0
    for i in range(0, 200, 50):
        ids = wiki[i:i + 50]
        logits = m(ids).logits.float()
        nll += torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum").item()
        n += ids[:, 1:].numel()
    return math.exp(nll / n)


def pq(w, bits):
    """AWQ's zero-point pseudo-quantizer over groups of G inputs; the scale rounded to float16."""
    N, K = w.shape
    x = w.reshape(-1, G)
    qmax = 2 ** bits - 1
    mx, mn = x.amax(1, keepdim=True), x.amin(1, keepdim=True)
    scale = ((mx - mn).clamp(min=1e-5) / qmax).half().float()
    zero = (-torch.round(mn / scale)).clamp(0, qmax)
    q = (torch.round(x / scale) + zero).clamp(0, qmax)
    return ((q - zero) * scale).reshape(N, K)


@torch.no_grad()
def quantize(m, bits, method, nsamples=16, loss="linears", duo=False, clip=False):
    layers, rot = m.model.layers, m.model.rotary_emb
    h = m.model.embed_tokens(calib_all[:nsamples])
    S, T, _ = h.shape
    pos = torch.arange(T, device=dev)[None].expand(S, -1)
    alphas = []
    for layer in layers:
        pe = rot(h, pos)
        lin = {n: mod for n, mod in layer.named_modules() if isinstance(mod, torch.nn.Linear)}
        rec = {}
        hooks = [mod.register_forward_hook(lambda mod, inp, out, n=n: rec.__setitem__(n, inp[0].detach()))
                 for n, mod in lin.items()]
        out = layer(h, attention_mask=None, position_ids=pos, position_embeddings=pe)
        out = out[0] if isinstance(out, tuple) else out
        for hk in hooks:
            hk.remove()
        if method == "awq":
            a = layer.self_attn
            groups = [
                (layer.input_layernorm, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                 lambda x: a(hidden_states=x, position_embeddings=pe, attention_mask=None)[0]),
                (layer.post_attention_layernorm, ["mlp.gate_proj", "mlp.up_proj"], lambda x: layer.mlp(x)),
                (lin["mlp.up_proj"], ["mlp.down_proj"], None),
            ]
            if lin["self_attn.v_proj"].weight.shape == lin["self_attn.o_proj"].weight.shape:
                groups.insert(1, (lin["self_attn.v_proj"], ["self_attn.o_proj"], None))
            found = []
            for prev, names, module in groups:
                x = rec[names[0]]
                K = x.shape[-1]
                W = [lin[n].weight.data.clone() for n in names]
                xm = x.abs().reshape(-1, K).float().mean(0)
                if duo:
                    wc = torch.cat(W, 0)
                    ws = wc.abs().view(-1, G)
                    wm = (ws / (ws.amax(1, keepdim=True) + 1e-6)).view(wc.shape).mean(0)

                def outputs(ws_):
                    if module is None or loss == "linears":
                        return torch.cat([x @ w_.T for w_ in ws_], -1)
                    for n, w_ in zip(names, ws_):
                        lin[n].weight.data = w_
                    try:
                        return module(x)
                    finally:
                        for n, w_ in zip(names, W):
                            lin[n].weight.data = w_

                ref = outputs(W)
                best = (math.inf, None, None)
                for k in range(20):
                    al = k / 20
                    s = (xm.pow(al) / (wm.pow(1 - al) + 1e-4)).clamp(min=1e-4) if duo else xm.pow(al).clamp(min=1e-4)
                    s = s / (s.max() * s.min()).sqrt()
                    err = (ref - outputs([pq(w_ * s, bits) / s for w_ in W])).float().pow(2).mean().item()
                    if err < best[0]:
                        best = (err, s, al)
                found.append((prev, names, best[1]))
                alphas.append(best[2])
            for prev, names, s in found:
                if isinstance(prev, torch.nn.Linear):
                    prev.weight.data[-s.numel():] /= s[:, None]
                    if prev.bias is not None:
                        prev.bias.data[-s.numel():] /= s
                else:
                    prev.weight.data /= s
                for n in names:
                    lin[n].weight.data *= s[None]
                    rec[n] = rec[n] / s
        for n, mod in lin.items():
            w = mod.weight.data
            if method == "awq" and clip and not any(t in n for t in ("q_", "k_")):
                x = rec[n].reshape(-1, w.shape[1])
                x = x[::max(1, x.shape[0] // 512)]
                xg = x.view(x.shape[0], -1, G)                       # [t, g, G]
                wg = w.view(w.shape[0], -1, G)                       # [n, g, G]
                org = torch.einsum("tgk,ngk->ngt", xg, wg)
                amax = wg.abs().amax(-1, keepdim=True)
                best_err = torch.full(amax.shape, 1e9, device=dev)
                best_max = amax.clone()
                for i in range(10):
                    mv = amax * (1 - i / 20)
                    qw = pq(torch.max(torch.min(wg, mv), -mv).reshape(w.shape), bits).view_as(wg)
                    err = (torch.einsum("tgk,ngk->ngt", xg, qw) - org).pow(2).mean(-1, keepdim=True)
                    better = err < best_err
                    best_err[better] = err[better]
                    best_max[better] = mv[better]
                w = torch.max(torch.min(wg, best_max), -best_max).reshape(w.shape)
            mod.weight.data = pq(w, bits)
        h = out
    return alphas


runs = [("bf16", None, {})]
for bits in (4, 3):
    runs.append(("rtn", bits, {}))
    for ns in (16, 128):
        for loss in ("linears", "module"):
            for duo in (False, True):
                for clip in (False, True):
                    runs.append(("awq", bits, dict(nsamples=ns, loss=loss, duo=duo, clip=clip)))
base = None
rtn = {}
for method, bits, kw in runs:
    t = time.time()
    m = load()
    alphas = quantize(m, bits, method, **kw) if bits else []
    p = ppl(m)
    if method == "bf16":
        base = p
    if method == "rtn":
        rtn[bits] = p
    ratio = (p - base) / (rtn[bits] - base) if bits else None
    print(json.dumps(dict(method=method, bits=bits, **kw, ppl=round(p, 3), ratio=None if ratio is None else round(ratio, 3),
                          alphas=alphas, seconds=round(time.time() - t, 1))), flush=True)
