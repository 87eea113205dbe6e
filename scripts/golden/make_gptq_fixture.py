#!/usr/bin/env python3
"""Golden fixture for lowbit's GPTQ (src/quant/gptq.ts): AutoGPTQ's Quantizer, GPTQ.add_batch and
GPTQ.fasterquant transliterated line by line into numpy float32 (../shared/spec/FORMATS.md §4.1-4.3; AutoGPTQ
auto_gptq/quantization/gptq.py and quantizer.py). torch is not needed: every step is the same float32 arithmetic
(torch.round and np.round both round half to even; cholesky_inverse(L) = L⁻ᵀL⁻¹).

Usage:  python3 scripts/golden/make_gptq_fixture.py OUT.safetensors

OUT holds W [20, 72] (one all-zero row, one row with no negative value), X [6·30, 72] (six calibration sequences of 30
tokens, column 5 all zero: a dead column), H (add_batch over the six sequences), and for each configuration c<i>
(listed with its options in the metadata key "configs") the fasterquant outputs: intWeight (U8 [20, 72]), scales
(F32 [groups, 20]), zeros (U8 [groups, 20]), gIdx (I32 [72]) and Q (F32 [20, 72], the dequantized weight); the metadata
key "losses" lists each configuration's Σ Losses.
"""

import json
import struct
import sys

import numpy as np

f32 = np.float32


class Quantizer:
    def configure(self, bits, sym):
        self.maxq = f32(2**bits - 1)
        self.sym = sym

    def find_params(self, x):
        x = x.reshape(x.shape[0], -1)
        tmp = np.zeros(x.shape[0], dtype=f32)
        xmin = np.minimum(x.min(1), tmp)
        xmax = np.maximum(x.max(1), tmp)
        if self.sym:
            xmax = np.maximum(np.abs(xmin), xmax)
            t = xmin < 0
            if np.any(t):
                xmin[t] = -xmax[t]
        t = (xmin == 0) & (xmax == 0)
        xmin[t] = -1
        xmax[t] = +1
        self.scale = ((xmax - xmin) / self.maxq).astype(f32)
        if self.sym:
            self.zero = np.full_like(self.scale, (self.maxq + 1) / 2)
        else:
            self.zero = np.round(-xmin / self.scale).astype(f32)
        self.scale = self.scale.reshape(-1, 1)
        self.zero = self.zero.reshape(-1, 1)

    def codes(self, x):
        return np.clip(np.round(x / self.scale) + self.zero, 0, self.maxq).astype(f32)

    def quantize(self, x):
        return (self.scale * (self.codes(x) - self.zero)).astype(f32)


def add_batch(H, nsamples, inp):
    # inp [1, T, K] → tmp = 1 sequence; H *= n/(n+tmp); inp = sqrt(2/n)·inpᵀ; H += inp·inpᵀ
    tmp = 1
    inp = inp.reshape(-1, inp.shape[-1]).T.astype(f32)
    H = (H * f32(nsamples / (nsamples + tmp))).astype(f32)
    nsamples += tmp
    inp = (f32(np.sqrt(2 / nsamples)) * inp).astype(f32)
    H = (H + inp @ inp.T).astype(f32)
    return H, nsamples


def chol(A):
    return np.linalg.cholesky(A.astype(f32)).astype(f32)


def fasterquant(W, H, bits, groupsize, sym, actorder, static_groups, blocksize, percdamp=0.01):
    W = W.copy().astype(f32)
    H = H.copy().astype(f32)
    columns = W.shape[1]
    quantizer = Quantizer()
    quantizer.configure(bits, sym)
    quantizer.find_params(W)
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    g_idx, scale, zero = [], [], []
    now_idx = 1
    if static_groups:
        groups = []
        for i in range(0, columns, groupsize):
            q = Quantizer()
            q.configure(bits, sym)
            q.find_params(W[:, i:(i + groupsize)])
            scale.append(q.scale)
            zero.append(q.zero)
            groups.append(q)
    if actorder:
        perm = np.argsort(-np.diag(H), kind="stable")
        W = W[:, perm]
        H = H[perm][:, perm]
        invperm = np.argsort(perm)
    Losses = np.zeros_like(W)
    Q = np.zeros_like(W)
    C = np.zeros(W.shape, dtype=np.uint8)
    damp = f32(percdamp) * f32(np.mean(np.diag(H), dtype=f32))
    d_ = np.arange(columns)
    H[d_, d_] += damp
    L = chol(H)
    Linv = np.linalg.inv(L).astype(f32)
    Hinv = (Linv.T @ Linv).astype(f32)            # torch.cholesky_inverse(L)
    Hinv = chol(Hinv).T.copy()                     # torch.linalg.cholesky(H, upper=True)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].copy()
        Q1 = np.zeros_like(W1)
        Err1 = np.zeros_like(W1)
        Losses1 = np.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize != -1:
                if not static_groups:
                    if (i1 + i) % groupsize == 0:
                        quantizer.find_params(W[:, (i1 + i):(i1 + i + groupsize)])
                    if ((i1 + i) // groupsize) - now_idx == -1:
                        scale.append(quantizer.scale)
                        zero.append(quantizer.zero)
                        now_idx += 1
                else:
                    idx = i1 + i
                    if actorder:
                        idx = perm[idx]
                    quantizer = groups[idx // groupsize]
            q = quantizer.quantize(w.reshape(-1, 1)).flatten()
            C[:, i1 + i] = quantizer.codes(w.reshape(-1, 1)).flatten().astype(np.uint8)
            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d**2
            err1 = ((w - q) / d).astype(f32)
            W1[:, i:] -= np.outer(err1, Hinv1[i, i:]).astype(f32)
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        Losses[:, i1:i2] = Losses1 / 2
        W[:, i2:] -= (Err1 @ Hinv[i1:i2, i2:]).astype(f32)
    loss = float(np.sum(Losses, dtype=np.float64))
    group_size = groupsize if groupsize != -1 else columns
    if static_groups and actorder:
        g_idx = [perm[i] // group_size for i in range(columns)]
    else:
        g_idx = [i // group_size for i in range(columns)]
    g_idx = np.array(g_idx, dtype=np.int32)
    if actorder:
        Q = Q[:, invperm]
        C = C[:, invperm]
        g_idx = g_idx[invperm]
    if scale == []:
        scale.append(quantizer.scale)
        zero.append(quantizer.zero)
    scale = np.concatenate(scale, axis=1).T.copy()   # [groups, N]
    zero = np.concatenate(zero, axis=1).T.copy()
    return C, scale.astype(f32), zero.astype(np.uint8), g_idx, Q, loss


CONFIGS = [
    dict(bits=4, groupSize=16, sym=False, descAct=False, staticGroups=False, blockSize=32),
    dict(bits=4, groupSize=-1, sym=True, descAct=False, staticGroups=False, blockSize=32),
    dict(bits=3, groupSize=24, sym=False, descAct=True, staticGroups=False, blockSize=32),
    dict(bits=2, groupSize=32, sym=True, descAct=False, staticGroups=True, blockSize=32),
    dict(bits=8, groupSize=16, sym=False, descAct=True, staticGroups=True, blockSize=32),
    dict(bits=4, groupSize=40, sym=False, descAct=True, staticGroups=False, blockSize=32),
    dict(bits=3, groupSize=-1, sym=False, descAct=True, staticGroups=False, blockSize=128),
    dict(bits=4, groupSize=32, sym=True, descAct=True, staticGroups=False, blockSize=128),
]


def save_safetensors(path, tensors, metadata):
    codes = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.uint8): "U8", np.dtype(np.int32): "I32"}
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": codes[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    rng = np.random.default_rng(20260101)
    N, K, S, T = 20, 72, 6, 30
    W = (rng.standard_normal((N, K)) * 0.05).astype(f32)
    W[3] = 0                           # an all-zero row
    W[7] = np.abs(W[7]) + 0.01         # a row with no negative value (the sym quirk)
    X = rng.standard_normal((S * T, K)).astype(f32)
    for k in range(1, K):
        X[:, k] += f32(0.6) * X[:, k - 1]
    X *= (1 + 3 * (np.arange(K) % 5 == 0)).astype(f32)
    X[:, 5] = 0                        # a dead column
    H = np.zeros((K, K), dtype=f32)
    n = 0
    for s in range(S):
        H, n = add_batch(H, n, X[s * T:(s + 1) * T][None])
    tensors = {"W": W, "X": X, "H": H}
    losses = []
    for i, c in enumerate(CONFIGS):
        C, scale, zero, g_idx, Q, loss = fasterquant(W, H, c["bits"], c["groupSize"], c["sym"], c["descAct"], c["staticGroups"], c["blockSize"])
        tensors.update({f"c{i}.intWeight": C, f"c{i}.scales": scale, f"c{i}.zeros": zero, f"c{i}.gIdx": g_idx, f"c{i}.Q": Q})
        losses.append(loss)
    save_safetensors(sys.argv[1], tensors, {"configs": json.dumps(CONFIGS), "losses": json.dumps(losses), "numpy": np.__version__,
                                            "sequences": str(S), "tokens": str(T)})


if __name__ == "__main__":
    main()
