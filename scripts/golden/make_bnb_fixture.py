#!/usr/bin/env python3
"""Golden fixtures for lowbit's bitsandbytes reference code (src/quant/bnb4.ts, src/quant/int8.ts).

Usage:  python3 scripts/golden/make_bnb_fixture.py OUTDIR

Needs torch, safetensors, transformers and an importable bitsandbytes with its CUDA library. The device machine
has no bitsandbytes and no package index, so the committed fixture was made by building bitsandbytes from its
public source there (see docs/p4-progress.md for the exact commands and the commit):

    cmake -DCOMPUTE_BACKEND=cuda -DCOMPUTE_CAPABILITY=90 -S SRC -B build && cmake --build build -j16
    # plus a minimal bitsandbytes-<version>.dist-info so that transformers' is_bitsandbytes_available() is true

OUTDIR receives:
  bnb_golden.safetensors  W (bf16 [172, 65]: 11180 values = 174 blocks of 64 + 44, one all-zero block),
                          4-bit results of bitsandbytes.functional.quantize_4bit on CUDA and on CPU, stored under
                          '<dev>.<type>.b<blocksize>[.dq].weight' with the QuantState.as_dict(packed=True) tensors
                          beside it (exactly the Linear4bit state-dict layout), a few dequantize_4bit outputs,
                          create_dynamic_map(), and LLM.int8 weights / activation quantization / forward outputs.
  bnb_golden.json         versions, the CPU capability, and create_dynamic_map() bits under each
                          ATEN_CPU_CAPABILITY (the map comes from torch.linspace, whose rounding could depend on it).
  hf_llama_bf16/          a 1-layer random Llama saved by transformers (bf16),
  hf_llama_nf4dq/         the same loaded with BitsAndBytesConfig(nf4, double quant, bf16 compute), save_pretrained,
  hf_llama_int8/          the same loaded with BitsAndBytesConfig(load_in_8bit=True) in fp16, save_pretrained.
  cuda_rcp_h200.txt       how far --use_fast_math `1.0f/x` (bitsandbytes' block scale; one MUFU.RCP) is from IEEE
                          for every float32 mantissa a float16/bfloat16 value can have (RCP_CU below, built by nvcc).
"""

import json
import os
import subprocess
import sys
import tempfile

import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
g = {}
meta = {
    "torch": torch.__version__,
    "bitsandbytes": bnb.__version__,
    "transformers": transformers.__version__,
    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    "gpu": torch.cuda.get_device_name(0),
    "errors": {},
}

# ---- 4-bit ------------------------------------------------------------------------------------------------
W = torch.randn(172, 65) * 0.05
W.view(-1)[192:256] = 0  # block 3 is all zeros: CUDA gives absmax 0 and NaN scales there
W = W.to(torch.bfloat16)
g["W"] = W

VARIANTS = [("nf4", 64, False), ("nf4", 64, True), ("fp4", 64, False), ("fp4", 64, True),
            ("nf4", 32, True), ("fp4", 128, False), ("nf4", 4096, True)]
DEQUANT_KEPT = {("cuda", "nf4", 64, True), ("cuda", "fp4", 64, True), ("cuda", "nf4", 32, True)}

for dev in ("cuda", "cpu"):
    for qt, bs, dq in VARIANTS:
        pre = f"{dev}.{qt}.b{bs}{'.dq' if dq else ''}.weight"
        try:
            q, st = F.quantize_4bit(W.to(dev), blocksize=bs, quant_type=qt, compress_statistics=dq)
            g[pre] = q.cpu().contiguous()
            for k, v in st.as_dict(packed=True).items():
                g[f"{pre}.{k}"] = v.cpu().contiguous()
            if (dev, qt, bs, dq) in DEQUANT_KEPT:
                g[f"{pre}.dequant"] = F.dequantize_4bit(q, st).cpu().contiguous()
        except Exception as e:  # record and go on: one backend's gap must not cost the rest of the run
            meta["errors"][pre] = repr(e)

g["dynamic_map"] = F.create_dynamic_map().float().contiguous()
meta["dynamic_map_by_capability"] = {}
probe = ("import torch, bitsandbytes.functional as F; print(torch.backends.cpu.get_cpu_capability()); "
         "print(F.create_dynamic_map().float().view(torch.int32).tolist())")
for cap in ("default", "avx2", "avx512"):
    r = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "ATEN_CPU_CAPABILITY": cap},
                       capture_output=True, text=True)
    lines = r.stdout.strip().splitlines()
    meta["dynamic_map_by_capability"][cap] = {
        "reported": lines[0] if lines else None,
        "bits": json.loads(lines[-1]) if len(lines) >= 2 else None,
        "stderr_tail": r.stderr[-400:],
    }

# ---- LLM.int8 ---------------------------------------------------------------------------------------------
bias = (torch.randn(172) * 0.1).to(torch.float16)
lin = bnb.nn.Linear8bitLt(65, 172, bias=True, has_fp16_weights=False, threshold=6.0)
lin.weight = bnb.nn.Int8Params(W.to(torch.float16), requires_grad=False, has_fp16_weights=False)
lin.bias = torch.nn.Parameter(bias, requires_grad=False)
lin = lin.cuda()
for k, v in lin.state_dict().items():
    g[f"int8.{k}"] = v.cpu().contiguous()
X = (torch.randn(5, 65) * 2).to(torch.float16)
X[1, 7] = 9.5    # an outlier column
X[3, 40] = -6.0  # exactly at the threshold: |x| >= 6 counts
X[0, 12] = 5.99  # just under: stays in the int8 part
g["int8.X"] = X
with torch.no_grad():
    g["int8.Y"] = lin(X.cuda()).cpu().contiguous()
    g["int8.Y_row2"] = lin(X[2:3].cuda()).cpu().contiguous()
CA, SCA, cols = F.int8_vectorwise_quant(X.cuda(), threshold=6.0)
g["int8.CA"], g["int8.SCA"] = CA.cpu().contiguous(), SCA.cpu().contiguous()
g["int8.outlier_cols"] = cols.cpu().to(torch.int64).contiguous()
CBc, SCBc, _ = F.int8_vectorwise_quant(W.to(torch.float16))  # CPU / default-backend weight quantization
g["int8.cpu.CB"], g["int8.cpu.SCB"] = CBc.contiguous(), SCBc.contiguous()

save_file(g, os.path.join(out, "bnb_golden.safetensors"), metadata={"format": "pt"})

# ---- transformers checkpoints -----------------------------------------------------------------------------
torch.manual_seed(1)
cfg = LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=1, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=128, max_position_embeddings=64, tie_word_embeddings=False)
model = LlamaForCausalLM(cfg)
with torch.no_grad():
    for p in model.parameters():
        if p.dim() == 2:
            p.normal_(0, 0.05)
model.to(torch.bfloat16).save_pretrained(os.path.join(out, "hf_llama_bf16"))
for name, qc, dtype in [
    ("hf_llama_nf4dq", BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16),
     torch.bfloat16),
    ("hf_llama_int8", BitsAndBytesConfig(load_in_8bit=True), torch.float16),
]:
    try:
        q = AutoModelForCausalLM.from_pretrained(os.path.join(out, "hf_llama_bf16"), quantization_config=qc,
                                                 device_map="cuda", dtype=dtype)
        q.save_pretrained(os.path.join(out, name))
    except Exception as e:
        meta["errors"][name] = repr(e)

# ---- the GPU's block-scale reciprocal ---------------------------------------------------------------------
RCP_CU = r"""
// For the 1024 float32 mantissas whose low 13 bits are zero (every float16 / bfloat16 value has one), the ulp
// deviation of --use_fast_math 1.0f/x from IEEE, whether it is the same in every binade tried, and whether
// __fdividef(127.0f, x) equals fl32(127 * (1.0f/x)).
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <cmath>
__global__ void k(const float* x, float* r, float* d, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) { r[i] = 1.0f / x[i]; d[i] = __fdividef(127.0f, x[i]); }
}
static uint32_t bits(float v) { uint32_t b; memcpy(&b, &v, 4); return b; }
int main() {
  const int E0 = -30, NE = 61, M = 1024, n = M * NE;
  float *x = new float[n], *r = new float[n], *d = new float[n], *gx, *gr, *gd;
  if (cudaMalloc(&gx, n * 4) || cudaMalloc(&gr, n * 4) || cudaMalloc(&gd, n * 4)) { printf("cudaMalloc failed\n"); return 1; }
  for (int e = 0; e < NE; e++) for (int m = 0; m < M; m++) x[e * M + m] = ldexpf(1.0f + m / 1024.0f, E0 + e);
  cudaMemcpy(gx, x, n * 4, cudaMemcpyHostToDevice);
  k<<<(n + 255) / 256, 256>>>(gx, gr, gd, n);
  if (cudaDeviceSynchronize() != cudaSuccess || cudaMemcpy(r, gr, n * 4, cudaMemcpyDeviceToHost) != cudaSuccess ||
      cudaMemcpy(d, gd, n * 4, cudaMemcpyDeviceToHost) != cudaSuccess) { printf("cuda failed\n"); return 1; }
  int binade_mismatch = 0, fdiv_mismatch = 0, nonzero = 0;
  printf("DEV ");
  for (int m = 0; m < M; m++) {
    long dev0 = 0;
    for (int e = 0; e < NE; e++) {
      int i = e * M + m;
      float ieee = (float)(1.0 / (double)x[i]);
      long dv = (long)bits(r[i]) - (long)bits(ieee);
      if (e == 0) dev0 = dv; else if (dv != dev0) binade_mismatch++;
      if (bits(d[i]) != bits((float)(127.0f * r[i]))) fdiv_mismatch++;
    }
    if (dev0) nonzero++;
    printf("%c", dev0 == 0 ? '0' : dev0 == 1 ? '+' : dev0 == -1 ? '-' : '?');
  }
  printf("\nmantissas with a deviation: %d of %d; binade mismatches: %d; fdividef != 127*rcp: %d of %d\n",
         nonzero, M, binade_mismatch, fdiv_mismatch, n);
  return 0;
}
"""
with tempfile.TemporaryDirectory() as tmp:
    src, exe = os.path.join(tmp, "rcp_table.cu"), os.path.join(tmp, "rcp_table")
    with open(src, "w") as f:
        f.write(RCP_CU)
    subprocess.run(["nvcc", "--use_fast_math", "-gencode=arch=compute_90,code=sm_90", "-o", exe, src], check=True)
    with open(os.path.join(out, "cuda_rcp_h200.txt"), "w") as f:
        f.write(subprocess.run([exe], check=True, capture_output=True, text=True).stdout)

with open(os.path.join(out, "bnb_golden.json"), "w") as f:
    json.dump(meta, f, indent=1)
print(json.dumps({k: v for k, v in meta.items() if k != "dynamic_map_by_capability"}, indent=1))
for cap, v in meta["dynamic_map_by_capability"].items():
    print(cap, v["reported"], "same as default map" if v["bits"] == g["dynamic_map"].view(torch.int32).tolist()
          else "DIFFERENT", v["stderr_tail"][-200:])
