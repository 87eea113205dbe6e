// LoRA and PEFT files (src/peft): a fresh adapter is the identity on every family; the adapter's forward is
// base + scaling·B·A; merge and unmerge round trip; saving writes PEFT's file layout and loading it back gives the same
// logits; several named adapters switch; PEFT's trainable-parameter line; a quantized base merges with a warning; bad
// files and options are refused with the file or option named.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { LoraConfig, PeftError } from '../src/peft/config.js';
import { getPeftModel, LoraLinear, PeftModel, prepareModelForKbitTraining } from '../src/peft/lora.js';
import type { DecoderLM } from '../src/models/model.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { GOLDEN_DIR, maxRelErr, relErr } from './helpers.js';

const FAMILIES = ['llama_gqa', 'qwen2', 'mistral_sliding', 'opt_125m_like'];
const IDS = [[1, 5, 9, 2, 7, 3]];
const tmp = mkdtempSync(join(tmpdir(), 'lowbit-peft-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Puts random values in every B (and perturbs A), so the adapter changes the logits. */
function randomize(p: PeftModel, name = p.activeAdapter, seed = 1): void {
  let s = seed;
  const next = () => { s = (s * 1103515245 + 12345) % 2 ** 31; return s / 2 ** 31 - 0.5; };
  for (const l of p.loras.values()) {
    const a = l.adapters.get(name);
    if (!a) continue;
    for (let i = 0; i < a.B.length; i++) a.B[i] = 0.2 * next();
    for (let i = 0; i < a.A.length; i++) a.A[i] += 0.05 * next();
  }
}

describe('LoRA on every family', () => {
  for (const fam of FAMILIES) {
    it(`${fam}: identity at init; merge = adapter forward; unmerge = base; save → load gives the same logits`, async () => {
      const dir = join(GOLDEN_DIR, fam);
      const { model } = await fromPretrained(dir);
      const base = model.forward(IDS).f32.slice();
      const p = PeftModel.wrap(model, { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'out_proj'], loraDropout: 0.05, taskType: 'CAUSAL_LM' });
      assert.ok(p.loras.size > 0);
      for (const l of p.loras.values()) assert.ok(l instanceof LoraLinear && model.linears().get(l.name) === l);
      assert.deepEqual(model.forward(IDS).f32, base, 'B = 0 at init: the adapter adds exactly nothing');
      randomize(p);
      const withLora = model.forward(IDS).f32.slice();
      assert.ok(maxRelErr(withLora, base) > 1e-3, 'the randomized adapter changes the logits');
      p.merge();
      assert.ok(maxRelErr(model.forward(IDS).f32, withLora) < 1e-5, 'merged = base + adapter');
      p.unmerge();
      assert.ok(maxRelErr(model.forward(IDS).f32, withLora) < 1e-5, 'unmerged: the base again, the adapter added in forward');
      p.withAdaptersDisabled(() => assert.ok(maxRelErr(model.forward(IDS).f32, base) < 1e-5, 'unmerged, adapters off = base'));
      const out = join(tmp, fam);
      p.saveAdapter(out);
      const again = await fromPretrained(dir);
      const q = PeftModel.fromPretrained(again.model, out);
      assert.ok(maxRelErr(again.model.forward(IDS).f32, withLora) < 1e-6, 'the saved adapter reloads to the same logits');
      q.withAdaptersDisabled(() => assert.ok(maxRelErr(again.model.forward(IDS).f32, base) < 1e-6));
      const merged = q.mergeAndUnload();
      assert.ok(maxRelErr(merged.forward(IDS).f32, withLora) < 1e-5, 'merge_and_unload');
      assert.ok(![...merged.linears().values()].some((l) => l instanceof LoraLinear));
    });
  }
});

describe('PEFT files and options', () => {
  it('adapter_config.json: PEFT\'s keys, sorted, indent 2, no trailing newline; weights named and shaped as PEFT\'s', async () => {
    const { model } = await fromPretrained(join(GOLDEN_DIR, 'llama_gqa'));
    const cfg = new LoraConfig({ r: 8, loraAlpha: 32, targetModules: ['k_proj', 'o_proj', 'q_proj', 'v_proj'], loraDropout: 0.05, bias: 'none', taskType: 'CAUSAL_LM' });
    const p = PeftModel.wrap(model, cfg);
    const out = p.saveAdapter(join(tmp, 'files'));
    const text = readFileSync(join(out, 'adapter_config.json'), 'utf8');
    assert.ok(!text.endsWith('\n'));
    const j = JSON.parse(text);
    assert.deepEqual(Object.keys(j), Object.keys(j).sort());
    assert.equal(j.peft_type, 'LORA');
    assert.equal(j.r, 8);
    assert.equal(j.lora_alpha, 32);
    assert.equal(j.inference_mode, true);
    assert.equal(j.task_type, 'CAUSAL_LM');
    assert.deepEqual(j.target_modules, ['k_proj', 'o_proj', 'q_proj', 'v_proj']);
    assert.match(text, /"lora_dropout": 0\.05,/);
    assert.match(text, /^\{\n {2}"alpha_pattern": \{\},\n/);
    const f = readSafetensors(join(out, 'adapter_model.safetensors'));
    assert.deepEqual(f.metadata, { format: 'pt' });
    const a = f.entries.get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')!;
    const b = f.entries.get('base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight')!;
    const c = model.config;
    assert.deepEqual(a.shape, [8, c.hidden_size]);
    assert.equal(a.dtype, 'F32');
    assert.deepEqual(b.shape, [(c as { num_key_value_heads: number }).num_key_value_heads * (c as { head_dim: number }).head_dim, 8]);
    assert.equal(f.names().length, 2 * 4 * c.num_hidden_layers);
  });

  it('seed 002\'s calls: prepareModelForKbitTraining turns gradient checkpointing on; getPeftModel wraps', async () => {
    const { model } = await fromPretrained(join(GOLDEN_DIR, 'llama_gqa'), { quantizationConfig: { loadIn4bit: true, bnb4bitQuantType: 'nf4' } as never });
    assert.equal((model as DecoderLM).gradientCheckpointing, false);
    const m = prepareModelForKbitTraining(model);
    assert.equal((m as DecoderLM).gradientCheckpointing, true);
    const p = getPeftModel(m, new LoraConfig({ r: 8, lora_alpha: 32, target_modules: ['k_proj', 'o_proj', 'q_proj', 'v_proj'], lora_dropout: 0.05, bias: 'none', task_type: 'CAUSAL_LM' }));
    assert.equal(p.loras.size, 4 * model.config.num_hidden_layers);
  });

  it('bias "all" and modules_to_save: trained base tensors saved under PEFT\'s keys and loaded back', async () => {
    const dir = join(GOLDEN_DIR, 'opt_125m_like');
    const { model } = await fromPretrained(dir);
    const p = PeftModel.wrap(model, { r: 2, targetModules: ['q_proj', 'v_proj'], bias: 'all', modulesToSave: ['lm_head'] });
    const keys = [...p.trainableBase.keys()];
    for (const k of ['base_model.model.model.decoder.layers.0.self_attn.q_proj.base_layer.bias', 'base_model.model.model.decoder.layers.0.fc1.bias',
      'base_model.model.model.decoder.layers.0.self_attn_layer_norm.bias', 'base_model.model.lm_head.weight']) assert.ok(keys.includes(k), k);
    let s = 3;
    for (const t of p.trainableBase.values()) for (let i = 0; i < t.values.length; i++) { s = (s * 48271) % 2147483647; t.values[i] += 0.01 * (s / 2147483647 - 0.5); }
    randomize(p);
    const want = model.forward(IDS).f32.slice();
    const out = p.saveAdapter(join(tmp, 'bias-all'));
    const f = readSafetensors(join(out, 'adapter_model.safetensors'));
    assert.ok(f.has('base_model.model.lm_head.weight') && f.has('base_model.model.model.decoder.final_layer_norm.bias'));
    const fresh = (await fromPretrained(dir)).model;
    PeftModel.fromPretrained(fresh, out);
    assert.ok(maxRelErr(fresh.forward(IDS).f32, want) < 1e-6, 'reloaded with the trained biases and lm_head');
    assert.throws(() => p.addAdapter('second', { targetModules: ['k_proj'], bias: 'all' }), /only the first adapter of a model may do here/);
    const other = (await fromPretrained(dir)).model;
    assert.throws(() => PeftModel.wrap(other, { targetModules: ['q_proj'], modulesToSave: ['q_proj'] }), /modules_to_save: .*q_proj is also a LoRA target/);
  });

  it('printTrainableParameters: PEFT\'s line and numbers', async () => {
    const { model } = await fromPretrained(join(GOLDEN_DIR, 'llama_gqa'));
    const c = model.config as unknown as Record<string, number>;
    const H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, L = c.num_hidden_layers, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
    const base = V * H + L * (2 * H + H * q + 2 * H * kv + q * H + 3 * H * I) + H + (c.tie_word_embeddings ? 0 : V * H);
    const p = PeftModel.wrap(model, { r: 2, loraAlpha: 4 });                        // default targets: q_proj, v_proj
    const trainable = L * (2 * (H + q) + 2 * (H + kv));
    const lines: string[] = [];
    const s = p.printTrainableParameters((x) => lines.push(x));
    assert.equal(s, `trainable params: ${trainable.toLocaleString('en-US')} || all params: ${(base + trainable).toLocaleString('en-US')} || trainable%: ${(100 * trainable / (base + trainable)).toFixed(4)}`);
    assert.deepEqual(lines, [s]);
  });

  it('named adapters switch; an older adapter_config.json (no newer fields, unknown ones) loads', async () => {
    const dir = join(GOLDEN_DIR, 'llama_gqa');
    const { model } = await fromPretrained(dir);
    const base = model.forward(IDS).f32.slice();
    const p = PeftModel.wrap(model, { r: 4, targetModules: ['q_proj'] });
    randomize(p, 'default', 1);
    const one = model.forward(IDS).f32.slice();
    p.addAdapter('two', { r: 2, targetModules: ['v_proj'] });
    randomize(p, 'two', 2);
    const two = model.forward(IDS).f32.slice();
    assert.ok(maxRelErr(two, one) > 1e-3 && maxRelErr(two, base) > 1e-3);
    p.setAdapter('default');
    assert.deepEqual(model.forward(IDS).f32, one);
    const out = p.saveAdapter(join(tmp, 'named'), 'two');
    assert.equal(out, join(tmp, 'named', 'two'));
    // An adapter_config.json as PEFT 0.4 wrote it: fewer fields, plus one lowbit does not know.
    writeFileSync(join(out, 'adapter_config.json'), JSON.stringify({ base_model_name_or_path: 'x', bias: 'none', fan_in_fan_out: false, inference_mode: true, init_lora_weights: true, lora_alpha: 8, lora_dropout: 0.0, modules_to_save: null, peft_type: 'LORA', r: 2, revision: null, target_modules: ['v_proj'], task_type: 'CAUSAL_LM', some_future_field: 3 }));
    const fresh = await fromPretrained(dir);
    PeftModel.fromPretrained(fresh.model, out);
    assert.deepEqual(fresh.model.forward(IDS).f32, two);
  });

  it('refuses what it cannot honour, naming the option or the file', async () => {
    const dir = join(GOLDEN_DIR, 'llama_gqa');
    assert.throws(() => new LoraConfig({ r: 0 }), /r must be a positive integer/);
    assert.throws(() => new LoraConfig({ rank: 8 } as never), /unknown option "rank"/);
    assert.throws(() => new LoraConfig({ loraDropout: 1.5 }), /lora_dropout must be in \[0, 1\)/);
    assert.throws(() => new LoraConfig({ useDora: true }), /DoRA/);
    const { model } = await fromPretrained(dir);
    assert.throws(() => PeftModel.wrap(model, { targetModules: ['c_attn'] }), (e: Error) => e instanceof PeftError && /match no linear layer/.test(e.message));
    const p = PeftModel.wrap(model, { targetModules: ['q_proj'] });
    const out = p.saveAdapter(join(tmp, 'bad'));
    const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    writeFileSync(join(out, 'adapter_config.json'), JSON.stringify({ ...cfg, target_modules: ['k_proj'] }));
    const fresh = await fromPretrained(dir);
    assert.throws(() => PeftModel.fromPretrained(fresh.model, out), /adapter_model\.safetensors: "base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight" names module .* do not put a LoRA layer on/);
    writeFileSync(join(out, 'adapter_config.json'), JSON.stringify({ ...cfg, peft_type: 'PREFIX_TUNING' }));
    const fresh2 = (await fromPretrained(dir)).model;
    assert.throws(() => PeftModel.fromPretrained(fresh2, out), /adapter_config\.json: peft_type "PREFIX_TUNING" is not supported/);
    assert.throws(() => PeftModel.fromPretrained(fresh2, join(tmp, 'nothing-here')), /no adapter_config\.json/);
  });

  it('an NF4 base merges by dequantize + add + requantize, with a warning', async () => {
    const dir = join(GOLDEN_DIR, 'llama_gqa');
    const { model } = await fromPretrained(dir, { quantizationConfig: { loadIn4bit: true, bnb4bitQuantType: 'nf4' } as never });
    // What one NF4 quantization of these tiny random weights costs: the yardstick for quantizing once more.
    const nf4Err = relErr(model.forward(IDS).f32, (await fromPretrained(dir)).model.forward(IDS).f32);
    const p = PeftModel.wrap(model, { r: 4, targetModules: ['q_proj', 'v_proj'] });
    randomize(p);
    const withLora = model.forward(IDS).f32.slice();
    const warnings: string[] = [];
    const onWarn = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarn);
    try {
      p.merge();
      await new Promise((r) => setImmediate(r));
    } finally { process.off('warning', onWarn); }
    assert.ok(warnings.some((w) => /dequantizes, adds and quantizes again/.test(w)), warnings.join('; '));
    const merged = model.forward(IDS).f32, e = relErr(merged, withLora);
    assert.ok(e > 0 && e < 1.5 * nf4Err, `merged vs adapter forward ${e}; one NF4 quantization ${nf4Err}`);
  });
});
