// Tokenizers come from @huggingface/tokenizers and chat templates from @huggingface/jinja; this file only reads a
// model folder's tokenizer files the way transformers does and exposes the few things generation needs.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { asObject, llamaClassRewrite, readJsonObject, readSettings, SPECIAL_KEYS, specialToken, TokenizerSettings } from './config.js';
import { TokenizerError } from './errors.js';
import { ChatTemplateSource, describe, parseChatTemplate, renderChatTemplate, TemplateBudget } from './template.js';

export { TokenizerError } from './errors.js';
export {
  chatTemplateFromConfig, ChatTemplateSource, DEFAULT_TEMPLATE_BUDGET, MAX_RANGE, readChatTemplateFile, TemplateBudget,
} from './template.js';

export interface ChatMessage { role: string; content: string }

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
      try {
        config.chat_template = readFileSync(jinja, 'utf8');
      } catch (e) {
        throw new TokenizerError(`${jinja}: ${(e as Error).message}`);
      }
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
  get vocabSize(): number { return this.tok.get_vocab(true).size; }

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
    // a null and throw a TypeError); an id that is not a non-negative integer is the caller's error.
    const known: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0) throw new TokenizerError(`${this.source}: cannot decode token id ${id} (at ${i}): ids are non-negative integers`);
      if (this.tok.id_to_token(id) != null) known.push(id);
    }
    if (known.length === 0) return '';   // tokenizers.js rejects an empty list; transformers returns ''
    const cleanUp = (opts.cleanUpTokenizationSpaces ?? this.settings.cleanUpTokenizationSpaces) && (!this.isBpe || this.settings.cleanUpForBpe);
    return this.tok.decode(known, { skip_special_tokens: opts.skipSpecialTokens ?? false, clean_up_tokenization_spaces: cleanUp });
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
