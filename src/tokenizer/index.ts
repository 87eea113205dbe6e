// Tokenizers come from @huggingface/tokenizers and chat templates from @huggingface/jinja; this file only reads a
// model folder's tokenizer files the way transformers does and exposes the few things generation needs.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';

export class TokenizerError extends Error { override name = 'TokenizerError'; }

export interface ChatMessage { role: string; content: string }

export interface ChatTemplateOptions {
  addGenerationPrompt?: boolean;
  /** A template to use instead of (or in the absence of) the tokenizer's own. */
  chatTemplate?: string;
  /** Extra variables for the template (e.g. tools, date_string). */
  extra?: Record<string, unknown>;
}

type SpecialToken = string | { content: string } | null | undefined;

function tokenText(t: SpecialToken): string | null {
  if (t == null) return null;
  return typeof t === 'string' ? t : t.content ?? null;
}

function readJson(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new TokenizerError(`${path}: ${(e as Error).message}`);
  }
}

export class Tokenizer {
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly padToken: string | null;
  readonly unkToken: string | null;
  readonly chatTemplate: string | null;
  private readonly tok: HfTokenizer;

  constructor(tokenizerJson: Record<string, unknown>, config: Record<string, unknown> = {}, readonly source = 'tokenizer') {
    try {
      this.tok = new HfTokenizer(tokenizerJson, config);
    } catch (e) {
      throw new TokenizerError(`${source}: cannot build the tokenizer: ${(e as Error).message}`);
    }
    this.bosToken = tokenText(config.bos_token as SpecialToken);
    this.eosToken = tokenText(config.eos_token as SpecialToken);
    this.padToken = tokenText(config.pad_token as SpecialToken);
    this.unkToken = tokenText(config.unk_token as SpecialToken);
    const tpl = config.chat_template;
    // A list of named templates (newer tokenizer_config.json) → the "default" one.
    this.chatTemplate = typeof tpl === 'string' ? tpl
      : Array.isArray(tpl) ? ((tpl as { name: string; template: string }[]).find((t) => t.name === 'default')?.template ?? null) : null;
  }

  /** Read tokenizer.json + tokenizer_config.json (+ special_tokens_map.json, chat_template.jinja) from a folder. */
  static fromDir(dir: string): Tokenizer {
    const tj = join(dir, 'tokenizer.json');
    if (!existsSync(tj)) throw new TokenizerError(`${dir}: no tokenizer.json (only fast tokenizers are supported)`);
    const cfgPath = join(dir, 'tokenizer_config.json');
    const config: Record<string, unknown> = existsSync(cfgPath) ? readJson(cfgPath) : {};
    const mapPath = join(dir, 'special_tokens_map.json');
    if (existsSync(mapPath)) {
      const map = readJson(mapPath);
      for (const k of ['bos_token', 'eos_token', 'pad_token', 'unk_token']) if (config[k] == null && map[k] != null) config[k] = map[k];
    }
    const jinja = join(dir, 'chat_template.jinja');
    if (config.chat_template == null && existsSync(jinja)) config.chat_template = readFileSync(jinja, 'utf8');
    return new Tokenizer(legacyFreeLlama(readJson(tj), config), config, dir);
  }

  tokenId(token: string | null): number | null {
    if (token == null) return null;
    return this.tok.token_to_id(token) ?? null;
  }
  get bosTokenId(): number | null { return this.tokenId(this.bosToken); }
  get eosTokenId(): number | null { return this.tokenId(this.eosToken); }
  get padTokenId(): number | null { return this.tokenId(this.padToken); }
  get vocabSize(): number { return this.tok.get_vocab(true).size; }

  /** Text → ids; special tokens (BOS…) added by the tokenizer's post-processor unless addSpecialTokens is false. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  decode(ids: ArrayLike<number>, opts: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return '';   // tokenizers.js rejects an empty list; transformers returns ''
    return this.tok.decode(Array.from(ids), { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  idToToken(id: number): string | null { return this.tok.id_to_token(id) ?? null; }

  /** Render the chat template to text, like transformers' apply_chat_template(tokenize=False). */
  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
    const source = opts.chatTemplate ?? this.chatTemplate;
    if (!source) {
      throw new TokenizerError(`${this.source}: this tokenizer has no chat_template; pass one with chatTemplate (CLI: --chat-template FILE)`);
    }
    let tpl: Template;
    try {
      tpl = new Template(source);
    } catch (e) {
      throw new TokenizerError(`${this.source}: chat template does not parse: ${(e as Error).message}`);
    }
    return tpl.render({
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
      bos_token: this.bosToken ?? '',
      eos_token: this.eosToken ?? '',
      pad_token: this.padToken ?? '',
      unk_token: this.unkToken ?? '',
      ...opts.extra,
    });
  }

  /**
   * Render and tokenize. As in transformers, the template writes BOS itself, so the text is encoded without
   * special tokens (no second BOS).
   */
  encodeChat(messages: ChatMessage[], opts: ChatTemplateOptions = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, opts), { addSpecialTokens: false });
  }
}

/**
 * transformers ≥ 5 loads a SentencePiece-style Llama BPE whose config says `legacy: false` with a Metaspace
 * pre-tokenizer (▁ prepended only when the text does not already start with one) instead of the file's
 * Prepend+Replace normalizer, and without an unk token (unknown characters are dropped). Mirror that so ids match.
 */
function legacyFreeLlama(json: Record<string, unknown>, config: Record<string, unknown>): Record<string, unknown> {
  const cls = String(config.tokenizer_class ?? '');
  const norm = json.normalizer as { type?: string; normalizers?: { type: string; prepend?: string }[] } | null;
  const isPrependReplace = norm?.type === 'Sequence' && norm.normalizers?.length === 2 &&
    norm.normalizers[0].type === 'Prepend' && norm.normalizers[0].prepend === '\u2581' && norm.normalizers[1].type === 'Replace';
  if (!/^LlamaTokenizer(Fast)?$/.test(cls) || config.legacy !== false || !isPrependReplace || json.pre_tokenizer) return json;
  return {
    ...json,
    normalizer: null,
    pre_tokenizer: { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: false },
    model: { ...(json.model as object), unk_token: null },
  };
}
