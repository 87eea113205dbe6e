// Reading tokenizer files the way transformers 5 does: tokenizer_config.json keys checked for type (a wrong type
// is a TokenizerError naming the file and key, never a TypeError later), and the tokenizer rewrites that
// transformers applies on load.
import { readTextFile } from '../util/fs.js';
import { describe } from '../util/text.js';
import { warnOnce } from '../util/warn.js';
import { TokenizerError } from './errors.js';
import { chatTemplateFromConfig } from './template.js';

/** The tokenizer_config.json keys lowbit uses, checked. `undefined`: the key is absent; `null`: it says none. */
export interface TokenizerSettings {
  bosToken?: string | null;
  eosToken?: string | null;
  padToken?: string | null;
  unkToken?: string | null;
  chatTemplate: string | null;
  tokenizerClass: string | null;
  legacy: boolean | null;
  addPrefixSpace: boolean | null;
  cleanUpTokenizationSpaces: boolean;
  /** transformers' escape hatch that re-enables clean-up for BPE models. */
  cleanUpForBpe: boolean;
  additionalSpecialTokens: string[];
  removeSpace: boolean;
  doLowercaseAndRemoveAccent: boolean;
}

export const SPECIAL_KEYS = ['bos_token', 'eos_token', 'pad_token', 'unk_token'] as const;

/** Read a JSON file that must hold an object (tokenizer.json, tokenizer_config.json, special_tokens_map.json). */
export function readJsonObject(path: string): Record<string, unknown> {
  // Refuses a FIFO (reading one would block forever), a folder, a dangling link or a loop, naming the problem.
  const text = readTextFile(path, (m) => new TokenizerError(m));
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new TokenizerError(`${path}: ${(e as Error).message}`);
  }
  return asObject(v, path);
}

export function asObject(v: unknown, where: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new TokenizerError(`${where}: expected a JSON object, got ${describe(v)}`);
  return v as Record<string, unknown>;
}

/** A special token as transformers writes it: a string or an AddedToken dict ({content, …}); null means none. */
export function specialToken(v: unknown, where: string, key: string): string | null | undefined {
  if (v === undefined || v === null) return v;
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && !Array.isArray(v) && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  throw new TokenizerError(`${where}: ${key} must be a string or {"content": string}, got ${describe(v)}`);
}

function optBool(cfg: Record<string, unknown>, key: string, where: string): boolean | null {
  const v = cfg[key];
  if (v == null) return null;
  if (typeof v !== 'boolean') throw new TokenizerError(`${where}: ${key} must be true or false, got ${describe(v)}`);
  return v;
}

function optString(cfg: Record<string, unknown>, key: string, where: string): string | null {
  const v = cfg[key];
  if (v == null) return null;
  if (typeof v !== 'string') throw new TokenizerError(`${where}: ${key} must be a string, got ${describe(v)}`);
  return v;
}

/** Check and normalise a tokenizer_config.json object; `where` names it in errors. */
export function readSettings(cfg: Record<string, unknown>, where: string): TokenizerSettings {
  const s: TokenizerSettings = {
    chatTemplate: chatTemplateFromConfig(cfg, where),
    tokenizerClass: optString(cfg, 'tokenizer_class', where),
    legacy: optBool(cfg, 'legacy', where),
    addPrefixSpace: optBool(cfg, 'add_prefix_space', where),
    cleanUpTokenizationSpaces: optBool(cfg, 'clean_up_tokenization_spaces', where) ?? false,   // transformers 5 default
    cleanUpForBpe: optBool(cfg, 'clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output', where) ?? false,
    additionalSpecialTokens: [],
    removeSpace: optBool(cfg, 'remove_space', where) ?? false,
    doLowercaseAndRemoveAccent: optBool(cfg, 'do_lowercase_and_remove_accent', where) ?? false,
  };
  s.bosToken = specialToken(cfg.bos_token, where, 'bos_token');
  s.eosToken = specialToken(cfg.eos_token, where, 'eos_token');
  s.padToken = specialToken(cfg.pad_token, where, 'pad_token');
  s.unkToken = specialToken(cfg.unk_token, where, 'unk_token');
  const extra = cfg.additional_special_tokens;
  if (extra != null) {
    if (!Array.isArray(extra)) throw new TokenizerError(`${where}: additional_special_tokens must be a list, got ${describe(extra)}`);
    s.additionalSpecialTokens = extra.map((t, i) => specialToken(t, where, `additional_special_tokens[${i}]`) ?? '').filter((t) => t !== '');
  }
  if (isLlamaClass(s)) {
    // LlamaTokenizer's own defaults (models/llama/tokenization_llama.py) for keys the file leaves out.
    if (s.bosToken === undefined) s.bosToken = '<s>';
    if (s.eosToken === undefined) s.eosToken = '</s>';
    if (s.unkToken === undefined) s.unkToken = '<unk>';
  }
  return s;
}

const isLlamaClass = (s: TokenizerSettings) => /^LlamaTokenizer(Fast)?$/.test(s.tokenizerClass ?? '');

/**
 * transformers 5's LlamaTokenizer (LlamaTokenizerFast is an alias) keeps only the vocab, merges, added tokens and
 * post-processor of tokenizer.json and builds the rest itself: no normalizer; a Metaspace pre-tokenizer that
 * prepends ▁ to the text's first section unless it already starts with one ("always" to every section after a
 * special token when `legacy: true`, never when `add_prefix_space: false`); a BPE with byte fallback and no unk token
 * (a character with neither a token nor byte tokens is dropped); and a decoder that strips the prepended space.
 * Files converted from SentencePiece instead say Prepend("▁") + Replace(" ", "▁"), which prepends to every section
 * and to text already starting with spaces: runs of leading spaces and text after a literal "<s>" tokenize
 * differently. Mirrored here so ids match (goldens: test/fixtures/tokenizers/hf_tokenizers_extra.json).
 */
export function llamaClassRewrite(json: Record<string, unknown>, s: TokenizerSettings, where: string): Record<string, unknown> {
  if (!isLlamaClass(s)) return json;
  const model = json.model as Record<string, unknown> | null;
  if (model?.type !== 'BPE') {
    warnOnce(`${where}: tokenizer_class ${s.tokenizerClass} with a ${String(model?.type)} model: the tokenizer is used as tokenizer.json describes it, which may differ from transformers`);
    return json;
  }
  const addPrefix = s.addPrefixSpace ?? true;
  const scheme = !addPrefix ? 'never' : s.legacy === true ? 'always' : 'first';
  return {
    ...json,
    normalizer: null,
    pre_tokenizer: { type: 'Metaspace', replacement: '\u2581', prepend_scheme: scheme, split: false },
    model: { ...model, dropout: null, unk_token: null, fuse_unk: true, byte_fallback: true, ignore_merges: false },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        ...(addPrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
      ],
    },
  };
}
