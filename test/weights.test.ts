// A weight whose dtype is not a float type (an integer or boolean tensor at a weight's name) is refused when the
// model is built, as an UnsupportedDtypeError that names the folder, the tensor as the checkpoint spells it, and
// its dtype.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { refBackend } from '../src/backend/ref/index.js';
import { readConfig } from '../src/io/config.js';
import { loadStateDict } from '../src/io/checkpoint.js';
import { SafetensorsError, UnsupportedDtypeError } from '../src/io/safetensors.js';
import { MissingTensorError, Weights } from '../src/models/model.js';
import { randomLlama } from '../src/models/random.js';
import { buildModel } from '../src/models/registry.js';
import { Tensor } from '../src/tensor/tensor.js';
import { GOLDEN_DIR } from './helpers.js';

const TINY = {
  model_type: 'llama', hidden_size: 32, intermediate_size: 48, num_hidden_layers: 1, num_attention_heads: 4,
  num_key_value_heads: 2, vocab_size: 64, max_position_embeddings: 32,
};

function refusesDtype(build: () => unknown, source: string, tensor: string, dtype: string): void {
  assert.throws(build, (e: unknown) => {
    assert.ok(e instanceof UnsupportedDtypeError && e instanceof SafetensorsError && !(e instanceof MissingTensorError), String(e));
    assert.equal(e.message, `${source}: tensor "${tensor}": has dtype ${dtype}; model weights must be F32, BF16 or F16`);
    assert.equal(e.tensor, tensor);
    return true;
  });
}

test('an integer weight matrix is an UnsupportedDtypeError naming the tensor and its dtype', () => {
  const { config, tensors } = randomLlama(TINY, 'F32', 3);
  const name = 'model.layers.0.mlp.up_proj.weight';
  tensors.set(name, Tensor.zeros('I32', tensors.get(name)!.shape));
  refusesDtype(() => buildModel(config, new Weights(tensors, '/models/tiny'), refBackend), '/models/tiny', name, 'I32');
  // Vectors (norm weights) go through the same check.
  const norm = 'model.layers.0.input_layernorm.weight';
  tensors.set(name, randomLlama(TINY, 'F32', 3).tensors.get(name)!);
  tensors.set(norm, Tensor.zeros('U8', tensors.get(norm)!.shape));
  refusesDtype(() => buildModel(config, new Weights(tensors, '/models/tiny'), refBackend), '/models/tiny', norm, 'U8');
});

test('in a checkpoint saved without the "model." prefix (OPTModel), the message uses the checkpoint\'s own name', () => {
  const dir = join(GOLDEN_DIR, 'opt_125m_like');
  const config = readConfig(join(dir, 'config.json'));
  const bare = new Map([...loadStateDict(dir, { mmap: false }).tensors].map(([k, t]) => [k.replace(/^model\./, ''), t]));
  const name = 'decoder.layers.1.fc1.weight';
  bare.set(name, Tensor.zeros('I64', bare.get(name)!.shape));
  refusesDtype(() => buildModel(config, new Weights(bare, dir), refBackend), dir, name, 'I64');
});
