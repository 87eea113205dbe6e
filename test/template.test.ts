// Chat templates: the render budget (hostile templates end in a TokenizerError, fast, in this process), typed errors
// that name the template's file, identical output for real templates, template files for --chat-template, and chat
// terminators derived from the template.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { chatTerminators } from '../src/generate/terminators.js';
import { readConfig } from '../src/io/config.js';
import type { ModelConfig } from '../src/io/config.js';
import { readGenerationConfig } from '../src/generate/config.js';
import { readChatTemplateFile, Tokenizer, TokenizerError } from '../src/tokenizer/index.js';
import { JINJA_HOOKS_PRESENT } from '../src/tokenizer/template.js';
import { NO_DATA, sharedData } from './helpers.js';

const data = sharedData();
const tmp = mkdtempSync(join(tmpdir(), 'lowbit-template-'));

/** A word-level tokenizer.json with chat markers as added tokens (enough to render and to look tokens up). */
function tinyJson(words = ['hi', 'there'], added = ['<s>', '</s>', '<|im_start|>', '<|im_end|>', '<|end|>']): Record<string, unknown> {
  const vocab: Record<string, number> = { '[UNK]': 0 };
  for (const w of words) vocab[w] = Object.keys(vocab).length;
  const addedTokens = added.map((content, i) => ({
    id: Object.keys(vocab).length + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  for (const t of addedTokens) vocab[t.content] = t.id;
  return {
    version: '1.0', truncation: null, padding: null, added_tokens: addedTokens, normalizer: null,
    pre_tokenizer: { type: 'WhitespaceSplit' }, post_processor: null, decoder: null,
    model: { type: 'WordLevel', vocab, unk_token: '[UNK]' },
  };
}

/** A model folder with tokenizer files only; returns its path. */
function folder(name: string, files: Record<string, unknown>): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tinyJson()));
  for (const [f, v] of Object.entries(files)) writeFileSync(join(dir, f), typeof v === 'string' ? v : JSON.stringify(v));
  return dir;
}

const CHATML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

// Real templates (as published in their tokenizer_config.json files), rendered with many messages.
const REAL: Record<string, string> = {
  chatml: CHATML,
  llama3: "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
  mistral: "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
  qwen2: "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
  phi3: "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}",
  llama2: "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
};

const conversation = (n: number) => Array.from({ length: n }, (_, i) => ({
  role: i % 2 ? 'assistant' : 'user', content: `  message ${i}: ünïcode, {{ not a tag }}, "quotes" and\nnewlines  `,
}));

test('jinja still routes blocks and arguments through the methods the budget meters', () => {
  assert.equal(JINJA_HOOKS_PRESENT, true);
});

test('real templates render exactly as @huggingface/jinja renders them, with 200 messages', () => {
  const tok = new Tokenizer(tinyJson(), { bos_token: '<s>', eos_token: '</s>' });
  const messages = conversation(200);
  for (const [name, src] of Object.entries(REAL)) {
    for (const addGenerationPrompt of [false, true]) {
      const want = new Template(src).render({ messages, add_generation_prompt: addGenerationPrompt, bos_token: '<s>', eos_token: '</s>', pad_token: '', unk_token: '' });
      assert.equal(tok.applyChatTemplate(messages, { chatTemplate: src, addGenerationPrompt }), want, name);
    }
  }
});

test('the default budget fits a 10,000-message conversation', () => {
  const tok = new Tokenizer(tinyJson(), {});
  const out = tok.applyChatTemplate(conversation(10_000), { chatTemplate: REAL.qwen2 });
  assert.ok(out.length > 10_000 * 60);
});

// Each of these hung, grew without bound or killed the process before (range(10**9): V8 heap abort, exit 133).
const HOSTILE: [string, string, RegExp][] = [
  ['range(10**9)', '{% for i in range(10**9) %}x{% endfor %}', /range\(\) of 1000000000 items/],
  ['nested range(1e5)', '{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}', /range\(\) items over|loop iterations/],
  ['nested loops over messages', '{% for a in messages %}{% for b in messages %}{% for c in messages %}{{ c.content }}{% endfor %}{% endfor %}{% endfor %}', /loop iterations/],
  ['empty nested loops', '{% for i in range(1000) %}{% for j in range(100) %}{% endfor %}{% endfor %}', /range\(\) items over|loop iterations/],
  ['infinite macro recursion', '{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}', /nesting deeper/],
  ['exponential macro recursion', '{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}', /loop iterations and macro calls|evaluation steps/],
  ['string doubling', "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}", /a string longer than/],
  ['list doubling', '{% set ns = namespace(a=[1, 2]) %}{% for i in range(64) %}{% set ns.a = ns.a + ns.a %}{% endfor %}{{ ns.a|length }}', /more than 1000000 entries/],
  ['huge indent', "{{ 'a\\nb'|indent(500000000) }}", /an indent of 500000000/],
  ['huge tojson indent', '{{ messages|tojson(indent=500000000) }}', /an indent of 500000000/],
  ['big string, many passes', "{% set ns = namespace(s='ab') %}{% for i in range(21) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{% for i in range(5000) %}{{ (ns.s|upper)|length }}{% endfor %}", /characters and entries processed/],
  ['membership scans of a big list', '{% set ns = namespace(a=[1, 2]) %}{% for i in range(18) %}{% set ns.a = ns.a + ns.a %}{% endfor %}{% for i in range(5000) %}{% if 3 in ns.a %}{% endif %}{% endfor %}', /characters and entries processed/],
];

for (const [name, src, detail] of HOSTILE) {
  test(`hostile template (${name}) is a TokenizerError naming the file, within seconds, in this process`, () => {
    const dir = folder(`hostile-${name.replace(/\W+/g, '-')}`, { 'tokenizer_config.json': { chat_template: src } });
    const tok = Tokenizer.fromDir(dir);
    const t0 = performance.now();
    assert.throws(() => tok.applyChatTemplate(conversation(60)), (e: Error) => {
      assert.ok(e instanceof TokenizerError, `${e.name}: ${e.message}`);
      assert.ok(e.message.startsWith(join(dir, 'tokenizer_config.json') + ': chat template'), e.message);
      assert.match(e.message, detail);
      return true;
    });
    const ms = performance.now() - t0;
    // About a second on an idle core; the bound leaves room for a loaded CI machine.
    assert.ok(ms < 5000, `${name} took ${ms.toFixed(0)} ms`);
  });
}

test("a string repetition jinja does not support ('a' * 10**9) is a typed error, not an allocation", () => {
  const tok = new Tokenizer(tinyJson(), {});
  assert.throws(() => tok.applyChatTemplate([], { chatTemplate: "{{ 'a' * 10**9 }}" }),
    (e: Error) => e instanceof TokenizerError && /^the chatTemplate option: chat template failed to render: /.test(e.message));
});

test('strftime_now is jinja\'s own (Llama-3.1 templates print the date with it)', () => {
  const tok = new Tokenizer(tinyJson(), {});
  assert.equal(tok.applyChatTemplate([], { chatTemplate: "{{ strftime_now('%Y') }}" }), String(new Date().getFullYear()));
});

test('a caller variable named range cannot lift the budget; a smaller budget applies when asked', () => {
  const tok = new Tokenizer(tinyJson(), {});
  assert.throws(() => tok.applyChatTemplate([], { chatTemplate: '{% for i in range(10**9) %}{% endfor %}', extra: { range: () => [] } }),
    (e: Error) => e instanceof TokenizerError && /render budget/.test(e.message));
  const small = '{% for m in messages %}{{ m.content }}{% endfor %}';
  assert.equal(tok.applyChatTemplate(conversation(3), { chatTemplate: small }).length > 0, true);
  assert.throws(() => tok.applyChatTemplate(conversation(3), { chatTemplate: small, budget: { blocks: 2 } }),
    (e: Error) => e instanceof TokenizerError && /more than 2 loop iterations/.test(e.message));
});

test('raise_exception and syntax errors are TokenizerErrors naming the file and keeping the message', () => {
  const raising = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}";
  const cfg = folder('raise', { 'tokenizer_config.json': { chat_template: raising } });
  assert.throws(() => Tokenizer.fromDir(cfg).applyChatTemplate([{ role: 'assistant', content: 'x' }]), (e: Error) =>
    e instanceof TokenizerError &&
    e.message === `${join(cfg, 'tokenizer_config.json')}: chat template raised an error: Conversation roles must alternate user/assistant/user/assistant/...`);

  const jinjaDir = folder('syntax', { 'tokenizer_config.json': {}, 'chat_template.jinja': '{% for m in messages %}{{ m.content }' });
  assert.throws(() => Tokenizer.fromDir(jinjaDir).applyChatTemplate([{ role: 'user', content: 'x' }]), (e: Error) =>
    e instanceof TokenizerError && e.message.startsWith(`${join(jinjaDir, 'chat_template.jinja')}: chat template does not parse: `));

  const tok = new Tokenizer(tinyJson(), {});
  assert.throws(() => tok.applyChatTemplate([], { chatTemplate: '{% endfor %}' }),
    (e: Error) => e instanceof TokenizerError && e.message.startsWith('the chatTemplate option: chat template does not parse: '));
  assert.throws(() => tok.applyChatTemplate([], { chatTemplate: '{{ messages|frobnicate }}' }),
    (e: Error) => e instanceof TokenizerError && /^the chatTemplate option: chat template failed to render: .*frobnicate/.test(e.message));
});

test('readChatTemplateFile reads .jinja files and tokenizer_config.json-like JSON, with errors naming the file', () => {
  const dir = join(tmp, 'templates');
  mkdirSync(dir, { recursive: true });
  const w = (name: string, text: string) => { const p = join(dir, name); writeFileSync(p, text); return p; };
  const tok = new Tokenizer(tinyJson(), {});
  const jinja = w('chatml.jinja', CHATML);
  assert.deepEqual(readChatTemplateFile(jinja), { template: CHATML, path: jinja });
  assert.equal(tok.applyChatTemplate([{ role: 'user', content: 'hi' }], { chatTemplate: readChatTemplateFile(jinja) }), '<|im_start|>user\nhi<|im_end|>\n');
  const cfg = w('tokenizer_config.json', JSON.stringify({ chat_template: CHATML, eos_token: '</s>' }));
  assert.equal(readChatTemplateFile(cfg).template, CHATML);
  const list = w('named.json', JSON.stringify({ chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: 'D' }] }));
  assert.equal(readChatTemplateFile(list).template, 'D');
  // A template file that starts with a Jinja tag is not JSON, whatever its first character.
  assert.equal(readChatTemplateFile(w('tag.txt', '{%- for m in messages %}{{ m.content }}{% endfor %}')).template.startsWith('{%-'), true);

  const bad: [string, RegExp][] = [
    [w('broken.json', '{"chat_template": '), /not valid JSON/],
    [w('none.json', '{"eos_token": "</s>"}'), /no chat_template in this file/],
    [w('null.json', 'null'), /expected a JSON object, got null/],
    [w('number.json', '{"chat_template": 5}'), /chat_template must be a string or a list/],
    [w('two.json', JSON.stringify({ chat_template: [{ name: 'rag', template: 'A' }, { name: 'tool_use', template: 'B' }] })), /lists no template named "default" \(it has "rag", "tool_use"\)/],
    [w('entry.json', JSON.stringify({ chat_template: [{ name: 'default' }] })), /chat_template\[0\] must be/],
    [w('empty.jinja', '  \n'), /empty/],
    [join(dir, 'missing.jinja'), /cannot read the chat template/],
    [dir, /cannot read the chat template: is a folder/],
  ];
  for (const [path, re] of bad) {
    assert.throws(() => readChatTemplateFile(path), (e: Error) => e instanceof TokenizerError && e.message.startsWith(`${path}: `) && re.test(e.message), path);
  }
});

// --- chat terminators -------------------------------------------------------------------------------------------

const noConfig = (eos: number | number[] | null) => ({ eos_token_id: eos }) as unknown as ModelConfig;

test('chatTerminators: eos list from the call, else generation_config, else config.json, then the tokenizer eos, then the template end-of-turn token', () => {
  const tok = new Tokenizer(tinyJson(), { eos_token: '</s>', chat_template: CHATML });
  const [eos, imEnd] = [tok.tokenId('</s>')!, tok.tokenId('<|im_end|>')!];
  assert.deepEqual(chatTerminators({ config: noConfig(null), tokenizer: tok, generationConfig: {} }), [eos, imEnd]);
  assert.deepEqual(chatTerminators({ config: noConfig(9), tokenizer: tok, generationConfig: {} }), [9, eos, imEnd]);
  assert.deepEqual(chatTerminators({ config: noConfig(9), tokenizer: tok, generationConfig: { eosTokenId: [7, 8] } }), [7, 8, eos, imEnd]);
  assert.deepEqual(chatTerminators({ config: noConfig(9), tokenizer: tok, generationConfig: { eosTokenId: 8 } }, { eosTokenId: [eos, 60] }), [eos, 60, imEnd]);
  assert.deepEqual(chatTerminators({ config: noConfig([3, 4]), tokenizer: null, generationConfig: {} }), [3, 4]);
});

test('chatTerminators derives the token from the template, not from a list of names', () => {
  // A made-up end-of-turn token that no list knows, written after the content by the template.
  const json = tinyJson(['hi'], ['</s>', '<|turn_over|>', '<|im_end|>']);
  const tpl = '{% for m in messages %}<{{ m.role }}> {{ m.content }} <|turn_over|>\n{% endfor %}';
  const tok = new Tokenizer(json, { eos_token: '</s>', chat_template: tpl });
  assert.deepEqual(chatTerminators({ config: noConfig(null), tokenizer: tok, generationConfig: {} }), [tok.tokenId('</s>'), tok.tokenId('<|turn_over|>')]);
  // A template that closes turns with plain text adds nothing (and <|im_end|>, present in the vocab, is not guessed).
  const plain = new Tokenizer(json, { eos_token: '</s>', chat_template: '{% for m in messages %}{{ m.role }}: {{ m.content }}\n\n{% endfor %}' });
  assert.deepEqual(chatTerminators({ config: noConfig(null), tokenizer: plain, generationConfig: {} }), [plain.tokenId('</s>')]);
  // A template given by the caller (--chat-template FILE) is the one probed.
  assert.deepEqual(chatTerminators({ config: noConfig(null), tokenizer: plain, generationConfig: {} }, {}, { chatTemplate: CHATML }), [plain.tokenId('</s>'), plain.tokenId('<|im_end|>')]);
  // Llama-2 writes a space, then eos, after the reply.
  const llama2 = new Tokenizer(json, { eos_token: '</s>', chat_template: REAL.llama2, bos_token: '<s>' });
  assert.deepEqual(chatTerminators({ config: noConfig(99), tokenizer: llama2, generationConfig: {} }), [99, llama2.tokenId('</s>')]);
});

test('chatTerminators falls back to the known end-of-turn names when the template cannot render a probe', () => {
  const json = tinyJson(['hi'], ['</s>', '<|im_end|>', '<|eot_id|>']);
  const tok = new Tokenizer(json, { eos_token: '</s>', chat_template: "{{ raise_exception('tools required') }}" });
  assert.deepEqual(chatTerminators({ config: noConfig(null), tokenizer: tok, generationConfig: {} }),
    [tok.tokenId('</s>'), tok.tokenId('<|eot_id|>'), tok.tokenId('<|im_end|>')]);
  const none = new Tokenizer(json, { eos_token: '</s>' });
  assert.deepEqual(chatTerminators({ config: noConfig(null), tokenizer: none, generationConfig: {} }),
    [none.tokenId('</s>'), none.tokenId('<|eot_id|>'), none.tokenId('<|im_end|>')]);
});

test('chatTerminators on the Llama-3 tokenizer and the eval-llama-16m model folder', { skip: data ? false : NO_DATA }, () => {
  const llama3 = Tokenizer.fromDir(join(data!, 'tokenizers', 'llama3'));
  assert.deepEqual(chatTerminators({ config: noConfig(128001), tokenizer: llama3, generationConfig: {} }), [128001, 128009]);
  const dir = join(data!, 'models', 'eval-llama-16m');
  const m = { config: readConfig(join(dir, 'config.json')), tokenizer: Tokenizer.fromDir(dir), generationConfig: readGenerationConfig(dir) };
  assert.equal(m.tokenizer.idToToken(4), '<|eot_id|>');
  assert.deepEqual(chatTerminators(m), [1, 4]);
});
