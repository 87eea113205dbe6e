// GPTQ / AWQ linears that read the same x (q/k/v, gate/up) run as one joined native call (nn/quant.ts forwardShared,
// cpu backend matmulQMany): the logits are bit for bit those of one call per layer, in decode and prefill, with
// GQA and OPT's biases. Any other layer (float, bitsandbytes, a LoRA wrapper) runs alone.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { cpuBackend } from '../src/backend/cpu/index.js';
import { parseGptqConfig } from '../src/io/gptqconfig.js';
import { loadAddon } from '../src/native/addon.js';
import { quantizeLoadedGptq } from '../src/quant/gptq-run.js';
import { GOLDEN_DIR } from './helpers.js';

describe('joined GPTQ projections', { skip: loadAddon() ? false : 'the native addon is not built' }, () => {
  for (const fam of ['llama3_rope', 'mistral', 'opt_125m_like']) {
    it(`${fam}: one call for q/k/v (and gate/up) = one call per layer, bit for bit`, async () => {
      const m = await fromPretrained(join(GOLDEN_DIR, fam));
      const spec = parseGptqConfig({ quant_method: 'gptq', bits: 4, group_size: 32, sym: true, desc_act: false }, 'test', { strict: true })!;
      quantizeLoadedGptq({ ...m, quantizationConfig: null }, spec, { method: 'rtn' });
      const prompts = [[3, 9, 4, 1, 5], [7, 2, 6, 8, 4]];
      const joinedPrefill = m.model.forward(prompts).f32.slice(), joinedDecode = m.model.forward([[5]]).f32.slice();
      const many = cpuBackend.matmulQMany;
      delete (cpuBackend as { matmulQMany?: unknown }).matmulQMany;
      try {
        assert.deepEqual(m.model.forward(prompts).f32, joinedPrefill);
        assert.deepEqual(m.model.forward([[5]]).f32, joinedDecode);
      } finally { (cpuBackend as { matmulQMany?: unknown }).matmulQMany = many; }
    });
  }
});
