// savePretrained: a model folder as transformers + bitsandbytes write it (FORMATS.md §2.4-2.5, §3), or as AutoGPTQ /
// optimum write a GPTQ model (§4.5-4.6: qweight/qzeros/scales/g_idx, float16 bias, quantization_config and
// quantize_config.json), or as AutoAWQ writes an AWQ model (§5.4-5.5: qweight/qzeros/scales in the GEMM or GEMV
// layout, float16 bias, quantization_config), so Python loads what lowbit quantized and lowbit loads it back by name. Tensors go through
// saveStateDict (atomic, sharded); the JSON files through writeFileAtomic.
import * as fs from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type { LoadedModel } from '../api.js';
import { AwqLinear, GptqLinear, Linear4bit, Linear8bitLt } from '../nn/quant.js';
import { awqToStateDict } from '../quant/awq-format.js';
import { bnb4ToStateDict } from '../quant/bnb4.js';
import { gptqToStateDict } from '../quant/gptq-format.js';
import { f32ToF16 } from '../tensor/dtype.js';
import { int8ToStateDict } from '../quant/int8.js';
import { Tensor } from '../tensor/tensor.js';
import { fsyncDir, probePath, readTextFile, TEMP_TAG_RE, tempTag, writeFileAtomic, writerIsGone } from '../util/fs.js';
import { pyJsonDumps, pyJsonParse } from '../util/pyjson.js';
import { saveStateDict, type SaveResult } from './checkpoint.js';
import { AWQ_CONFIG_NAME, GPTQ_CONFIG_NAME } from './config.js';

export class SavePretrainedError extends Error { override name = 'SavePretrainedError'; }

export interface SavePretrainedOptions {
  /** Replace the files of a non-empty `dir` (each one atomically). Default false: a non-empty folder is refused. */
  overwrite?: boolean;
  /** As saveStateDict (default "5GB"). */
  maxShardSize?: number | string;
}

/** Files beside the weights that a model folder carries and transformers copies on save, byte for byte. */
const SIDE_FILES = ['generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
  'tokenizer.model', 'added_tokens.json', 'vocab.json', 'merges.txt', 'chat_template.jinja', 'chat_template.json'];

/**
 * The state dict transformers would save for `m`: every checkpoint tensor as loaded, except that the weight of a
 * quantized layer is replaced by its bitsandbytes tensors (Linear4bit: weight, absmax, quant_map, nested_*,
 * quant_state; Linear8bitLt: weight, SCB, weight_format), its GPTQ tensors (GptqLinear: qweight, qzeros, scales,
 * g_idx, and the bias in float16 as AutoGPTQ's pack stores it) or its AWQ tensors (AwqLinear: qweight, qzeros,
 * scales, and the bias in float16 as AutoAWQ's from_linear stores it). Other biases and unquantized layers keep their
 * checkpoint dtype.
 */
export function quantizedStateDict(m: LoadedModel): Map<string, Tensor> {
  const quant = new Map<string, Map<string, Tensor>>(), gptq = new Set<string>();
  for (const [name, l] of m.model.linears()) {
    if (l instanceof Linear4bit) quant.set(name, bnb4ToStateDict(name, l.qweight.bnb4));
    else if (l instanceof Linear8bitLt) quant.set(name, int8ToStateDict(name, l.qweight.int8));
    else if (l instanceof GptqLinear || l instanceof AwqLinear) {
      const sd = l instanceof GptqLinear ? gptqToStateDict(name, l.qweight.gptq) : awqToStateDict(name, l.qweight.awq);
      // The layer's own bias, not the file's: AWQ divides a previous linear's bias by its scales (v_proj before
      // o_proj, OPT's fc1 before fc2). A float16 bias read from a file goes back to the same bits.
      if (l.bias) {
        const b = l.bias.device === 'cpu' ? l.bias.f32 : l.backend.download(l.bias).f32;  // a cuda model's bias comes down
        sd.set(`${name}.bias`, new Tensor('F16', [l.outFeatures], Uint16Array.from(b, f32ToF16)));
      }
      quant.set(name, sd);
      gptq.add(name);
    }
  }
  // A quantized layer's own names (float weight, or the side tensors of a pre-quantized file) give way to the
  // layer's state dict, written where its first name stood, so the file keeps the checkpoint's order.
  const owner = (k: string): string | undefined => {
    let p = /^(.*)\.(?:weight(?:\..*)?|weight_format|SCB)$/.exec(k)?.[1];
    if (p === undefined) p = /^(.*)\.(?:qweight|qzeros|scales|g_idx|bias)$/.exec(k)?.[1];
    return p !== undefined && quant.has(p) && (gptq.has(p) || !k.endsWith('.bias')) ? p : undefined;
  };
  const out = new Map<string, Tensor>();
  for (const [k, t] of m.tensors) {
    const p = owner(k);
    if (p === undefined) { out.set(k, t); continue; }
    for (const [qk, qt] of quant.get(p)!) out.set(qk, qt);
  }
  for (const sd of quant.values()) if (!out.has(sd.keys().next().value!)) for (const [qk, qt] of sd) out.set(qk, qt);
  return out;
}

/**
 * config.json as transformers writes it: the source's keys (floats kept as floats) with quantization_config. An AWQ
 * model says torch_dtype (or transformers 5's dtype) "float16", as AutoAWQ's saves do (it quantizes the float16
 * model): vLLM's AWQ kernel runs float16 activations only and takes its default dtype from this key.
 */
function configText(m: LoadedModel): string {
  const src = join(m.dir, 'config.json');
  const cfg = pyJsonParse(readTextFile(src, (msg) => new SavePretrainedError(msg))) as Map<string, unknown>;
  if (m.quantizationConfig) cfg.set('quantization_config', m.quantizationConfig);
  else cfg.delete('quantization_config');
  if (m.quantizationConfig?.get('quant_method') === 'awq') {
    if (cfg.has('dtype')) cfg.set('dtype', 'float16');
    if (cfg.has('torch_dtype') || !cfg.has('dtype')) cfg.set('torch_dtype', 'float16');
  }
  return pyJsonDumps(cfg, { indent: 2, sortKeys: true }) + '\n';
}

/**
 * quantize_config.json as AutoGPTQ's save_quantized writes it: `json.dump(indent=2)` of the config in insertion
 * order, no trailing newline, with model_file_base_name naming the weights' base name ("model": from_quantized then
 * finds model.safetensors). AutoGPTQ also records its save folder in model_name_or_path; lowbit leaves it null (a
 * path of this machine; from_quantized sets it from its argument).
 */
function quantizeConfigText(qc: Map<string, unknown>): string {
  const d = new Map(qc);
  if (d.has('model_file_base_name')) d.set('model_file_base_name', 'model');
  return pyJsonDumps(d, { indent: 2 });
}

export interface SavePretrainedResult extends SaveResult {
  dir: string;
  /** Side files copied from the source folder. */
  copied: string[];
}

/**
 * Writes `m` to `dir` as a transformers model folder: model.safetensors (or shards + index), config.json with
 * quantization_config (sorted keys, indent 2, as `save_pretrained`), for GPTQ AutoGPTQ's quantize_config.json too,
 * and generation_config.json and tokenizer files copied from the source folder.
 *
 * A new or empty `dir` appears whole or not at all: the files are written to a sibling staging folder, which one
 * rename makes `dir`. With `overwrite`, a non-empty `dir` has each file replaced atomically, the weights first (one
 * commit, by saveStateDict's protocol) and config.json last, so no file is ever half-written. Writing into the
 * folder the model was loaded from is refused: its tensors are views of the files there.
 */
export function savePretrained(m: LoadedModel, dir: string, opts: SavePretrainedOptions = {}): SavePretrainedResult {
  const target = resolve(dir);
  const p = probePath(target);
  if (p.kind === 'bad') throw new SavePretrainedError(`${dir}: ${p.problem}`);
  if (p.kind === 'file') throw new SavePretrainedError(`${dir}: is a file, not a folder`);
  const nonEmpty = p.kind === 'dir' && fs.readdirSync(target).length > 0;
  if (p.kind === 'dir' && fs.realpathSync(target) === fs.realpathSync(m.dir)) {
    throw new SavePretrainedError(`${dir}: is the folder the model was loaded from; save to another folder`);
  }
  if (nonEmpty && !opts.overwrite) throw new SavePretrainedError(`${dir}: folder is not empty (pass overwrite to replace its files)`);

  const tensors = quantizedStateDict(m);
  const config = configText(m);
  const gptqConfig = m.quantizationConfig?.get('quant_method') === 'gptq' ? quantizeConfigText(m.quantizationConfig) : null;
  const copied = SIDE_FILES.filter((f) => probePath(join(m.dir, f)).kind === 'file');
  const side = copied.map((f) => [f, fs.readFileSync(join(m.dir, f))] as const);
  const writeAll = (to: string): SaveResult => {
    const r = saveStateDict(to, tensors, { maxShardSize: opts.maxShardSize });
    for (const [f, bytes] of side) writeFileAtomic(join(to, f), bytes);
    // AutoGPTQ's own file; a GPTQ save's stale one would make the folder read as GPTQ (readConfig falls back to it).
    if (gptqConfig !== null) writeFileAtomic(join(to, GPTQ_CONFIG_NAME), gptqConfig);
    else fs.rmSync(join(to, GPTQ_CONFIG_NAME), { force: true });
    // AutoAWQ's deprecated quant_config.json likewise (config.json's quantization_config is the one lowbit writes).
    fs.rmSync(join(to, AWQ_CONFIG_NAME), { force: true });
    writeFileAtomic(join(to, 'config.json'), config);
    return r;
  };
  if (nonEmpty) return { ...writeAll(target), dir: target, copied };

  const parent = dirname(target);
  fs.mkdirSync(parent, { recursive: true });
  removeAbandonedStages(parent, basename(target));
  const stage = target + tempTag();
  fs.mkdirSync(stage);
  try {
    const r = writeAll(stage);
    // rename(2) replaces an empty folder, and fails (ENOTEMPTY/EEXIST) if something was written there meanwhile.
    fs.renameSync(stage, target);
    fsyncDir(parent);
    return { ...r, dir: target, copied };
  } catch (e) {
    fs.rmSync(stage, { recursive: true, force: true });
    throw e;
  }
}

/** Staging folders `<name>.tmp-<pid>-<hex>` of savePretrained calls whose process is gone. */
function removeAbandonedStages(parent: string, name: string): void {
  const re = new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}${TEMP_TAG_RE}$`);
  for (const f of fs.readdirSync(parent)) {
    const m = re.exec(f);
    if (m && writerIsGone(Number(m[1]))) fs.rmSync(join(parent, f), { recursive: true, force: true });
  }
}
