// Tokenizers come from @huggingface/tokenizers and chat templates from @huggingface/jinja; this file only reads a
// model folder's tokenizer files the way transformers does and exposes the few things generation needs.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { readTextFile } from '../util/fs.js';
import { asObject, llamaClassRewrite, readJsonObject, readSettings, SPECIAL_KEYS, specialToken, TokenizerSettings } from './config.js';
import { TokenizerError } from './errors.js';
import { ChatTemplateSource, describe, parseChatTemplate, renderChatTemplate, TemplateBudget } from './template.js';

export { TokenizerError } from './errors.js';
export {
  chatTemplateFromConfig, ChatTemplateSource, DEFAULT_TEMPLATE_BUDGET, MAX_RANGE, readChatTemplateFile, TemplateBudget,
} from './template.js';

export interface ChatMessage { role: string; content: string }

/**
 * transformers' clean_up_tokenization (" ." → ".", " n't" → "n't", …), the same replacements in the same order as
 * Python's str.replace and tokenizers.js. Each pattern starts with a space and spans at most 4 characters, so text
 * can be cleaned piece by piece at cuts no pattern spans (IncrementalDecoder relies on that).
 */
export function cleanUpTokenizationSpaces(text: string): string {
  return text.replace(/ \./g, '.').replace(/ \?/g, '?').replace(/ !/g, '!').replace(/ ,/g, ',').replace(/ ' /g, "'")
    .replace(/ n't/g, "n't").replace(/ 'm/g, "'m").replace(/ 's/g, "'s").replace(/ 've/g, "'ve").replace(/ 're/g, "'re");
}

export interface ChatTemplateOptions {
  addGenerationPrompt?: boolean;
  /** A template to use instead of (or in the absence of) the tokenizer's own: its text, or what
   *  readChatTemplateFile returned (errors then name that file). */
  chatTemplate?: string | ChatTemplateSource;
  /** Extra variables for the template (e.g. tools, date_string). */
  extra?: Record<string, unknown>;
  /** Raise or lower the render limits (DEFAULT_TEMPLATE_BUDGET). */
  budget?: Partial<TemplateBudget>;
}

/** Where the tokenizer's parts came from, for error messages (fromDir fills these in). */
export interface TokenizerFiles { tokenizerJson?: string; config?: string; chatTemplate?: string }

export class Tokenizer {
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly padToken: string | null;
  readonly unkToken: string | null;
  readonly chatTemplate: string | null;
  /** The file (or description) the chat template came from, named in template errors. */
  readonly chatTemplatePath: string;
  private readonly settings: TokenizerSettings;
  private readonly isBpe: boolean;
  private readonly tok: HfTokenizer;
  /** Token strings that skipSpecialTokens drops (as tokenizers.js decides: added special tokens and the config's additional ones). */
  private readonly specialTokens: Set<string>;
  private vocabSizeCache: number | null = null;
  /** tokenizers.js trims the text of a BPE model with an end-of-word suffix ("</w>") when it skips special tokens. */
  private readonly trimOnSkip: boolean;

  /**
   * Build from a parsed tokenizer.json and tokenizer_config.json. Wrong shapes or types are TokenizerErrors that
   * name `files` (or `source`) and the key.
   */
  constructor(tokenizerJson: Record<string, unknown>, config: Record<string, unknown> = {}, readonly source = 'tokenizer', files: TokenizerFiles = {}) {
    const jsonWhere = files.tokenizerJson ?? `${source} (tokenizer.json)`;
    const cfgWhere = files.config ?? `${source} (tokenizer config)`;
    const raw = asObject(tokenizerJson, jsonWhere);
    const s = this.settings = readSettings(asObject(config, cfgWhere), cfgWhere);
    const json = llamaClassRewrite(raw, s, jsonWhere);
    this.isBpe = (json.model as { type?: unknown } | null)?.type === 'BPE';
    this.trimOnSkip = this.isBpe && json.decoder != null && !!(json.model as { end_of_word_suffix?: unknown }).end_of_word_suffix;
    // Only the keys tokenizers.js reads, already checked; clean-up is decided per decode call (see decode).
    const hfConfig = {
      bos_token: s.bosToken ?? undefined, eos_token: s.eosToken ?? undefined, pad_token: s.padToken ?? undefined,
      unk_token: s.unkToken ?? undefined, additional_special_tokens: s.additionalSpecialTokens,
      remove_space: s.removeSpace, do_lowercase_and_remove_accent: s.doLowercaseAndRemoveAccent,
      clean_up_tokenization_spaces: false,
    };
    try {
      this.tok = new HfTokenizer(json, hfConfig);
    } catch (e) {
      throw new TokenizerError(`${jsonWhere}: cannot build the tokenizer: ${(e as Error)?.message ?? String(e)}`);
    }
    this.bosToken = s.bosToken ?? null;
    this.eosToken = s.eosToken ?? null;
    this.padToken = s.padToken ?? null;
    this.unkToken = s.unkToken ?? null;
    this.chatTemplate = s.chatTemplate;
    this.chatTemplatePath = files.chatTemplate ?? cfgWhere;
    this.specialTokens = new Set([...this.tok.get_added_tokens_decoder().values()].filter((t) => t.special).map((t) => t.content));
    for (const t of s.additionalSpecialTokens) this.specialTokens.add(t);
  }

  /** Read tokenizer.json + tokenizer_config.json (+ special_tokens_map.json, chat_template.jinja) from a folder. */
  static fromDir(dir: string): Tokenizer {
    const tj = join(dir, 'tokenizer.json');
    if (!existsSync(tj)) throw new TokenizerError(`${dir}: no tokenizer.json (only fast tokenizers are supported)`);
    const cfgPath = join(dir, 'tokenizer_config.json');
    const config: Record<string, unknown> = existsSync(cfgPath) ? readJsonObject(cfgPath) : {};
    const files: TokenizerFiles = { tokenizerJson: tj, config: cfgPath };
    // transformers 5 lets special_tokens_map.json override tokenizer_config.json's special tokens, and
    // chat_template.jinja override its chat_template (goldens: test/fixtures/tokenizers/hf_tokenizers_files.json).
    const mapPath = join(dir, 'special_tokens_map.json');
    if (existsSync(mapPath)) {
      const map = readJsonObject(mapPath);
      for (const k of SPECIAL_KEYS) {
        if (map[k] != null) config[k] = specialToken(map[k], mapPath, k);
      }
      const extra = map.additional_special_tokens;
      if (extra != null) {
        if (!Array.isArray(extra)) throw new TokenizerError(`${mapPath}: additional_special_tokens must be a list, got ${describe(extra)}`);
        config.additional_special_tokens = extra.map((t, i) => specialToken(t, mapPath, `additional_special_tokens[${i}]`));
      }
    }
    const jinja = join(dir, 'chat_template.jinja');
    if (existsSync(jinja)) {
      // Refuses a FIFO (which would block forever), a folder or a symlink loop before opening.
      config.chat_template = readTextFile(jinja, (msg) => new TokenizerError(msg));
      files.chatTemplate = jinja;
    }
    return new Tokenizer(readJsonObject(tj), config, dir, files);
  }

  tokenId(token: string | null): number | null {
    if (token == null) return null;
    return this.tok.token_to_id(token) ?? null;
  }
  get bosTokenId(): number | null { return this.tokenId(this.bosToken); }
  get eosTokenId(): number | null { return this.tokenId(this.eosToken); }
  get padTokenId(): number | null { return this.tokenId(this.padToken); }
  /** Tokens in the vocabulary, added tokens included (counted once: get_vocab builds a map of every token). */
  get vocabSize(): number { return (this.vocabSizeCache ??= this.tok.get_vocab(true).size); }

  /** Whether decode cleans up spaces by default (clean_up_tokenization_spaces, never for BPE unless forced; see decode). */
  get cleansUpSpaces(): boolean { return this.settings.cleanUpTokenizationSpaces && (!this.isBpe || this.settings.cleanUpForBpe); }

  /** Text → ids; special tokens (BOS…) added by the tokenizer's post-processor unless addSpecialTokens is false. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  /**
   * Ids → text. Clean-up (" ." → ".", " n't" → "n't") follows clean_up_tokenization_spaces (default false) or the
   * call's option, and, as in transformers 5 (tokenization_utils_tokenizers.py, _decode), is never applied to a BPE
   * model, whose spaces before punctuation are real, unless the config sets
   * clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output.
   */
  decode(ids: ArrayLike<number>, opts: { skipSpecialTokens?: boolean; cleanUpTokenizationSpaces?: boolean } = {}): string {
    // As the Rust tokenizers library does, ids that name no token are dropped (tokenizers.js would hand the decoder
    // a null and throw a TypeError); an id that is not a non-negative integer is the caller's error. Special tokens
    // are dropped here through a set (tokenizers.js searches its list of them for every id); clean-up is ours too.
    // The work is proportional to the ids given: streaming decodes a few ids per token (IncrementalDecoder).
    const skip = opts.skipSpecialTokens ?? false;
    const known: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0) throw new TokenizerError(`${this.source}: cannot decode token id ${id} (at ${i}): ids are non-negative integers`);
      const token = this.tok.id_to_token(id);
      if (token != null && !(skip && this.specialTokens.has(token))) known.push(id);
    }
    if (known.length === 0) return '';   // tokenizers.js rejects an empty list; transformers returns ''
    let text = this.tok.decode(known, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    if (skip && this.trimOnSkip) text = text.trim();
    const cleanUp = opts.cleanUpTokenizationSpaces === undefined ? this.cleansUpSpaces
      : opts.cleanUpTokenizationSpaces && (!this.isBpe || this.settings.cleanUpForBpe);
    return cleanUp ? cleanUpTokenizationSpaces(text) : text;
  }

  idToToken(id: number): string | null { return this.tok.id_to_token(id) ?? null; }

  /** tokenizer.json's added tokens (special tokens, chat-turn markers), in id order. */
  addedTokens(): { id: number; content: string; special: boolean }[] {
    return [...this.tok.get_added_tokens_decoder()].map(([id, t]) => ({ id, content: t.content, special: t.special })).sort((a, b) => a.id - b.id);
  }

  /**
   * Render the chat template to text, like transformers' apply_chat_template(tokenize=False). Rendering runs under
   * a budget (DEFAULT_TEMPLATE_BUDGET); a template that exceeds it, raises, or does not parse is a TokenizerError
   * naming the template's file (or "the chatTemplate option").
   */
  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
    const given = opts.chatTemplate;
    const source = given == null ? this.chatTemplate : typeof given === 'string' ? given : given.template;
    const where = given == null ? this.chatTemplatePath : typeof given === 'string' ? 'the chatTemplate option' : given.path;
    if (!source) {
      throw new TokenizerError(`${this.source}: this tokenizer has no chat_template; pass one with chatTemplate (CLI: --chat-template FILE)`);
    }
    return renderChatTemplate(parseChatTemplate(source, where), {
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
      bos_token: this.bosToken ?? '',
      eos_token: this.eosToken ?? '',
      pad_token: this.padToken ?? '',
      unk_token: this.unkToken ?? '',
      ...opts.extra,
    }, where, opts.budget);
  }

  /**
   * Render and tokenize. As in transformers, the template writes BOS itself, so the text is encoded without
   * special tokens (no second BOS).
   */
  encodeChat(messages: ChatMessage[], opts: ChatTemplateOptions = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, opts), { addSpecialTokens: false });
  }
}
