// Fuzz: random tokenizer_config.json / special_tokens_map.json values (types, nesting, sizes) fed to the Tokenizer
// with a small real SentencePiece-style tokenizer.json built here, and random chat templates from a grammar of Jinja
// fragments. Whatever the input, the only error allowed is a TokenizerError, and no call may hang (CALL_MS).
// Seeded: a failure prints the seed of its case; LOWBIT_FUZZ_SEED and LOWBIT_FUZZ_SECONDS change the run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chatTerminators } from '../src/generate/terminators.js';
import type { ModelConfig } from '../src/io/config.js';
import { Tokenizer, TokenizerError } from '../src/tokenizer/index.js';
import { DEFAULT_TEMPLATE_BUDGET } from '../src/tokenizer/template.js';
import { Rand } from './helpers.js';

const SEED = Number(process.env.LOWBIT_FUZZ_SEED ?? 20240601);
const SECONDS = Number(process.env.LOWBIT_FUZZ_SECONDS ?? 9);   // per part; two parts
/**
 * A call slower than this (5 s) counts as a hang. A template that hits a count of its budget stops within about a
 * second on an idle core; this leaves room for a loaded two-core CI machine and stays below the budget's wall-clock
 * backstop, which would otherwise hide a count that no longer stops anything.
 */
const CALL_MS = DEFAULT_TEMPLATE_BUDGET.timeMs / 2;
/** LOWBIT_FUZZ_CASE=<seed>: run that one case (as printed by a failure), to reproduce it. */
const ONLY = process.env.LOWBIT_FUZZ_CASE === undefined ? null : Number(process.env.LOWBIT_FUZZ_CASE);


// --- a small real tokenizer.json: Llama-2 style BPE with byte fallback and chat markers ----------------------------

const SPECIALS = ['<unk>', '<s>', '</s>', '<|im_start|>', '<|im_end|>', '<|eot_id|>'];
function miniLlamaJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  const add = (t: string) => { if (!(t in vocab)) vocab[t] = Object.keys(vocab).length; };
  SPECIALS.slice(0, 3).forEach(add);
  for (let b = 0; b < 256; b++) add(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  for (const c of '\u2581abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?\'"<>|/_-') add(c);
  const merges = [['\u2581', 't'], ['h', 'e'], ['\u2581t', 'he'], ['\u2581', 'a'], ['i', 'n'], ['\u2581', '\u2581'], ['\u2581\u2581', '\u2581\u2581']];
  for (const [a, b] of merges) add(a + b);
  const added = SPECIALS.map((content) => {
    add(content);
    return { id: vocab[content], content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
  });
  return {
    version: '1.0', truncation: null, padding: null, added_tokens: added,
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges: merges.map((m) => m.join(' ')) },
  };
}
const TOKENIZER_JSON = JSON.stringify(miniLlamaJson());

// --- random JSON ---------------------------------------------------------------------------------------------------

const STRINGS = ['', ' ', '<s>', '</s>', '<unk>', '<|im_end|>', '<|eot_id|>', 'LlamaTokenizer', 'LlamaTokenizerFast',
  'PreTrainedTokenizerFast', 'GPT2Tokenizer', 'default', 'true', 'null', '\u2581', 'caf\u00e9 \u6771\u4eac \ud83d\ude00', '\ud800',
  '{{ messages }}', '{% for %}', '__proto__', 'constructor', 'x'.repeat(5000)];

function randomValue(r: Rand, depth = 0): unknown {
  switch (r.int(depth > 3 ? 6 : 9)) {
    case 0: return null;
    case 1: return r.chance(0.5);
    case 2: return r.pick([0, 1, -1, 2, 0.5, 1e308, -1e-308, 2 ** 53, 32000, 128009]);
    case 3: case 4: return r.pick(STRINGS);
    case 5: return String.fromCharCode(...Array.from({ length: r.int(12) }, () => r.int(0x3000)));
    case 6: return Array.from({ length: r.int(5) }, () => randomValue(r, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = r.int(5); i > 0; i--) o[r.chance(0.5) ? r.pick(KEYS) : r.pick(STRINGS).slice(0, 20)] = randomValue(r, depth + 1);
      return o;
    }
  }
}

const KEYS = ['bos_token', 'eos_token', 'pad_token', 'unk_token', 'chat_template', 'tokenizer_class', 'legacy', 'add_prefix_space',
  'clean_up_tokenization_spaces', 'clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output',
  'additional_special_tokens', 'remove_space', 'do_lowercase_and_remove_accent', 'add_bos_token', 'add_eos_token',
  'model_max_length', 'added_tokens_decoder', 'target_lang', 'content'];

/** A value for a known key: plausible most of the time, anything otherwise. */
function valueFor(r: Rand, key: string): unknown {
  if (r.chance(0.35)) return randomValue(r);
  switch (key) {
    case 'bos_token': case 'eos_token': case 'pad_token': case 'unk_token': {
      const t = r.pick(SPECIALS.concat(['nope', '']));
      return r.chance(0.3) ? { content: t, lstrip: r.chance(0.5), special: true } : t;
    }
    case 'chat_template':
      return r.chance(0.8) ? template(r) : [{ name: r.pick(['default', 'tool_use']), template: template(r) }, { name: 'rag', template: template(r) }];
    case 'tokenizer_class': return r.pick(['LlamaTokenizer', 'LlamaTokenizerFast', 'PreTrainedTokenizerFast', 'GPT2Tokenizer']);
    case 'additional_special_tokens': return Array.from({ length: r.int(3) }, () => r.chance(0.5) ? r.pick(SPECIALS) : { content: r.pick(SPECIALS) });
    default: return r.chance(0.5);
  }
}

function randomConfig(r: Rand): unknown {
  if (r.chance(0.12)) return randomValue(r);
  const cfg: Record<string, unknown> = {};
  for (let i = 1 + r.int(7); i > 0; i--) { const k = r.pick(KEYS); cfg[k] = valueFor(r, k); }
  return cfg;
}

// --- random templates from Jinja fragments ---------------------------------------------------------------------------

const FILTERS = ['length', 'upper', 'lower', 'trim', 'tojson', 'tojson(indent=2)', 'tojson(indent=100000000)', 'indent(4)',
  'indent(300000000)', 'join', "join(', ')", 'list', 'first', 'last', 'string', 'int', 'float', 'reverse', 'sort', 'unique',
  "selectattr('role', 'equalto', 'user')", "map(attribute='content')", "replace('a', 'bb')", "default('x')", 'abs',
  'capitalize', 'title', 'items', 'dictsort', 'safe', 'frobnicate', 'wordcount', 'count', 'lstrip'];
const NUMBERS = ['0', '1', '2', '7', '-1', '1000', '100000', '1e5', '10**9', '2**20', '0.5'];

function expr(r: Rand, d: number): string {
  if (d > 3) return r.pick(['messages', "'x'", '1', 'bos_token', 'ns.v', 'm', 'none', 'loop.index']);
  const e = () => expr(r, d + 1);
  switch (r.int(22)) {
    case 0: return 'messages';
    case 1: return `messages[${r.pick(['0', '-1', '1', 'loop.index0', '99'])}]`;
    case 2: return `m[${r.pick(["'content'", "'role'", '0'])}]`;
    case 3: return r.pick(['m.content', 'm.role', 'bos_token', 'eos_token', 'add_generation_prompt', 'tools', 'undefined_name', 'loop.last']);
    case 4: return `'${r.pick(['a', '<s>', '<|im_end|>', '\\n', 'caf\u00e9', ''])}'`;
    case 5: return r.pick(NUMBERS);
    case 6: return `range(${r.pick(NUMBERS)})`;
    case 7: return `range(${r.pick(NUMBERS)}, ${r.pick(NUMBERS)}, ${r.pick(['1', '-1', '0', '3'])})`;
    case 8: return `(${e()} ${r.pick(['+', '~', '*', '-', '/', '//', '%', '**', '==', '!=', '<', 'and', 'or', 'in', 'not in'])} ${e()})`;
    case 9: return `${e()}|${r.pick(FILTERS)}`;
    case 10: return `not ${e()}`;
    case 11: return `(${e()} if ${e()} else ${e()})`;
    case 12: return `[${e()}, ${e()}]`;
    case 13: return `{'k': ${e()}, 'content': ${e()}}`;
    case 14: return `f(${e()})`;
    case 15: return `raise_exception(${r.pick(["'boom'", e()])})`;
    case 16: return 'ns.v';
    case 17: return `${e()} is ${r.pick(['defined', 'none', 'string', 'iterable', 'mapping', 'odd', 'divisibleby(3)'])}`;
    case 18: return `${e()}[${r.pick(['1:', ':2', '::-1', '0'])}]`;
    case 19: return `${e()}.${r.pick(['strip()', 'split()', 'upper()', 'startswith("a")', 'items()', 'get("k")', 'count("a")', 'title()'])}`;
    case 20: return `strftime_now(${r.pick(["'%Y-%m-%d'", '5'])})`;
    default: return `namespace(v=${e()})`;
  }
}

function block(r: Rand, d: number): string {
  const n = d > 2 ? r.int(2) : 1 + r.int(3);
  let out = '';
  for (let i = 0; i < n; i++) out += stmt(r, d);
  return out;
}

function stmt(r: Rand, d: number): string {
  const e = () => expr(r, 0);
  const dash = () => (r.chance(0.2) ? '-' : '');
  if (d > 3) return r.chance(0.5) ? 'text ' : `{{ ${e()} }}`;
  switch (r.int(14)) {
    case 0: case 1: return r.pick(['<|im_start|>', 'hello ', '\n', '  ', '<s>', '{', '}', '%']);
    case 2: case 3: return `{{${dash()} ${e()} ${dash()}}}`;
    case 4: return `{%${dash()} for ${r.pick(['m', 'i', 'k, v'])} in ${r.pick(['messages', e()])} ${r.chance(0.2) ? `if ${e()} ` : ''}%}${block(r, d + 1)}${r.chance(0.2) ? '{% else %}empty' : ''}{% endfor %}`;
    case 5: return `{% if ${e()} %}${block(r, d + 1)}${r.chance(0.4) ? `{% elif ${e()} %}${block(r, d + 1)}` : ''}${r.chance(0.5) ? `{% else %}${block(r, d + 1)}` : ''}{% endif %}`;
    case 6: return `{% set ${r.pick(['x', 'm', 'messages'])} = ${e()} %}`;
    case 7: return `{% set ns = namespace(v=${e()}) %}`;
    case 8: return `{% set ns.v = ns.v ${r.pick(['+', '~'])} ${r.pick(['ns.v', e()])} %}`;
    case 9: return `{% macro f(n${r.chance(0.5) ? '=1' : ''}) %}${r.chance(0.5) ? '{{ f(n) }}' : ''}${block(r, d + 1)}{% endmacro %}`;
    case 10: return r.pick(['{% break %}', '{% continue %}', '{# a comment #}', '{%- generation -%}', '{% endgeneration %}']);
    case 11: return `{% filter ${r.pick(['upper', 'trim', 'indent(2)'])} %}${block(r, d + 1)}{% endfilter %}`;
    case 12: return `{% call f(${e()}) %}${block(r, d + 1)}{% endcall %}`;
    default: return `{% set x %}${block(r, d + 1)}{% endset %}{{ x }}`;
  }
}

function template(r: Rand): string {
  let t = block(r, 0);
  if (r.chance(0.15)) {                                             // break it: cut, duplicate or inject
    const at = r.int(t.length + 1);
    t = r.pick([t.slice(0, at), t.slice(at), t + t.slice(0, at), t.slice(0, at) + r.pick(['{%', '}}', '{{', '%}', '{% endfor %}', '"', "'"]) + t.slice(at)]);
  }
  return t;
}

function randomMessages(r: Rand): unknown[] {
  const n = r.pick([0, 1, 2, 5, 40]);
  return Array.from({ length: n }, (_, i) => r.chance(0.9)
    ? { role: r.pick(['user', 'assistant', 'system', 'tool']), content: r.chance(0.85) ? `msg ${i} ${r.pick(STRINGS).slice(0, 50)}` : randomValue(r) }
    : randomValue(r));
}

// --- the checks ------------------------------------------------------------------------------------------------------

let slowest = { ms: 0, seed: 0, what: '' };

/** Run `f`: anything thrown must be a TokenizerError, and no call may take a second. */
function typed(seed: number, what: string, f: () => unknown): unknown {
  const t0 = performance.now();
  let out: unknown;
  try {
    out = f();
  } catch (e) {
    if (!(e instanceof TokenizerError)) assert.fail(`seed ${seed}: ${what} threw ${(e as Error)?.name}: ${(e as Error)?.message}\n${(e as Error)?.stack}`);
    out = e;
  }
  const ms = performance.now() - t0;
  if (ms > slowest.ms) slowest = { ms, seed, what: what.slice(0, 60) };
  assert.ok(ms < CALL_MS, `seed ${seed}: ${what} took ${ms.toFixed(0)} ms`);
  return out;
}

/** Use a tokenizer every way the library does. */
function exercise(tok: Tokenizer, r: Rand, seed: number): void {
  const text = r.pick(STRINGS) + ' ' + r.pick(['hello  world', '<s> x </s>', '\t\n', '\ud83d\ude00 \u6771\u4eac', '']);
  const ids = typed(seed, 'encode', () => tok.encode(text)) as number[];
  typed(seed, 'encode without special tokens', () => tok.encode(text, { addSpecialTokens: false }));
  if (Array.isArray(ids)) {
    typed(seed, 'decode', () => tok.decode(ids, { skipSpecialTokens: r.chance(0.5), cleanUpTokenizationSpaces: r.pick([undefined, true, false]) }));
  }
  typed(seed, 'decode of arbitrary ids', () => tok.decode([r.int(400), r.pick([0, 1, 99999, 2 ** 31, -1, 0.5])]));
  typed(seed, 'special token ids', () => [tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.vocabSize]);
  const messages = randomMessages(r) as { role: string; content: string }[];
  const text2 = typed(seed, 'applyChatTemplate', () => tok.applyChatTemplate(messages, { addGenerationPrompt: r.chance(0.5) }));
  // Tokenizing is linear in the text but slow in tokenizers.js for SentencePiece-style input (~1 s per 300 kB):
  // long renders ({{ range(100000) }} prints 600 kB) are rendered, not tokenized.
  if (typeof text2 !== 'string' || text2.length < 20_000) {
    typed(seed, 'encodeChat', () => tok.encodeChat(messages, { extra: r.chance(0.3) ? { tools: randomValue(r) } : {} }));
  }
  typed(seed, 'chatTerminators', () => chatTerminators({
    config: { eos_token_id: r.pick([null, 2, [2, 7]]) } as unknown as ModelConfig, tokenizer: tok, generationConfig: {},
  }));
}

test('fuzz: random tokenizer_config.json and special_tokens_map.json give a working tokenizer or a TokenizerError', { timeout: 120_000 }, (t) => {
  slowest = { ms: 0, seed: 0, what: '' };
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-fuzz-tok-'));
  const end = performance.now() + SECONDS * 1000;
  let cases = 0, built = 0;
  try {
    for (let i = 0; ONLY === null ? performance.now() < end : i < 1; i++, cases++) {
      const seed = ONLY ?? SEED + i;
      const r = new Rand(seed);
      const config = randomConfig(r);
      let tok: unknown;
      if (r.chance(0.7)) {
        tok = typed(seed, 'new Tokenizer', () => new Tokenizer(JSON.parse(TOKENIZER_JSON), config as Record<string, unknown>, 'fuzz'));
      } else {
        // Through files: the config, maybe a special_tokens_map.json and a chat_template.jinja, sometimes not JSON.
        const d = join(dir, String(i));
        mkdirSync(d);
        writeFileSync(join(d, 'tokenizer.json'), r.chance(0.05) ? JSON.stringify(randomValue(r)) : TOKENIZER_JSON);
        writeFileSync(join(d, 'tokenizer_config.json'), r.chance(0.05) ? r.pick(['', '{', '\u0000', 'NaN', '{"a": 1,}']) : JSON.stringify(config) ?? 'null');
        if (r.chance(0.5)) writeFileSync(join(d, 'special_tokens_map.json'), JSON.stringify(r.chance(0.5) ? randomConfig(r) : randomValue(r)) ?? 'null');
        if (r.chance(0.2)) writeFileSync(join(d, 'chat_template.jinja'), template(r));
        tok = typed(seed, 'Tokenizer.fromDir', () => Tokenizer.fromDir(d));
        rmSync(d, { recursive: true });
      }
      if (tok instanceof Tokenizer) { built++; exercise(tok, r, seed); }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  t.diagnostic(`${cases} cases (seeds ${SEED}…), ${built} tokenizers built, slowest call ${slowest.ms.toFixed(0)} ms (seed ${slowest.seed}, ${slowest.what})`);
  assert.ok(ONLY !== null || cases > 50 && built > 10, `only ${cases} cases, ${built} tokenizers built`);
});

test('fuzz: random chat templates render or fail with a TokenizerError, none hanging', { timeout: 120_000 }, (t) => {
  slowest = { ms: 0, seed: 0, what: '' };
  const tok = new Tokenizer(JSON.parse(TOKENIZER_JSON), { bos_token: '<s>', eos_token: '</s>', tokenizer_class: 'LlamaTokenizer' }, 'fuzz');
  const end = performance.now() + SECONDS * 1000;
  let cases = 0, rendered = 0;
  for (let i = 0; ONLY === null ? performance.now() < end : i < 1; i++, cases++) {
    const seed = ONLY ?? SEED + 1_000_000 + i;
    const r = new Rand(seed);
    const chatTemplate = template(r);
    const out = typed(seed, `template ${JSON.stringify(chatTemplate)}`, () => tok.applyChatTemplate(randomMessages(r) as { role: string; content: string }[], {
      chatTemplate, addGenerationPrompt: r.chance(0.5), extra: r.chance(0.3) ? { tools: randomValue(r) } : {},
    }));
    if (typeof out === 'string') rendered++;
  }
  t.diagnostic(`${cases} templates (seeds ${SEED + 1_000_000}…), ${rendered} rendered, slowest call ${slowest.ms.toFixed(0)} ms (seed ${slowest.seed}, ${slowest.what})`);
  assert.ok(ONLY !== null || cases > 100 && rendered > 10, `only ${cases} cases, ${rendered} rendered`);
});
