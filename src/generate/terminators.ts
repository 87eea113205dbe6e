// Chat terminators: the token ids that end an assistant turn. A chat model ends its reply with the end-of-turn
// token of its template (<|eot_id|>, <|im_end|>, <|end|>, </s>, <end_of_turn>, …), which is often not the
// eos_token_id of config.json or generation_config.json (../shared/spec/FORMATS.md §7.5: Llama-3 chat stops on
// [eos ids, <|eot_id|>]). The token is read off the template itself rather than from a list of known names.
import type { ModelConfig } from '../io/config.js';
import type { ChatTemplateSource, Tokenizer } from '../tokenizer/index.js';
import { TokenizerError } from '../tokenizer/index.js';
import type { GenerationConfig } from './config.js';

/** Content no template rewrites and no tokenizer merges with a following added token. */
const PROBE = 'LOWBITPROBE';

/**
 * Names used before terminators were derived from templates; now only for a tokenizer whose template is missing
 * or cannot render a probe conversation (a template that insists on tools, say), so chat still stops there.
 */
const FALLBACK_END_OF_TURN = ['<|eot_id|>', '<|im_end|>', '<|end|>'];

/**
 * The ids that end a chat reply: the eos list of the call (`base.eosTokenId`), else generation_config.json's, else
 * config.json's; then the tokenizer's eos token; then the end-of-turn tokens of the chat template (`chatTemplate`
 * when given, as for `--chat-template FILE`, else the tokenizer's own). Duplicates are dropped; order is kept.
 */
export function chatTerminators(
  m: { config: ModelConfig; tokenizer: Tokenizer | null; generationConfig: GenerationConfig },
  base: GenerationConfig = {},
  opts: { chatTemplate?: string | ChatTemplateSource } = {},
): number[] {
  const eos = base.eosTokenId ?? m.generationConfig.eosTokenId ?? m.config.eos_token_id;
  const out: number[] = [];
  const add = (id: number | null | undefined) => { if (id != null && !out.includes(id)) out.push(id); };
  for (const id of eos == null ? [] : Array.isArray(eos) ? eos : [eos]) add(id);
  const tok = m.tokenizer;
  if (!tok) return out;
  add(tok.eosTokenId);
  const derived = endOfTurnTokens(tok, opts.chatTemplate);
  if (derived === null) for (const t of FALLBACK_END_OF_TURN) add(tok.tokenId(t));
  else derived.forEach(add);
  return out;
}

/**
 * The added tokens a chat template writes right after a message's content (whitespace between allowed, as in
 * Llama-2's "… </s>"): rendered for an assistant reply after a user message, and for a lone user message (the
 * one-message conversation), since some templates close only one of the two. [] when the template closes turns
 * with plain text; null when there is no template or it fails on both probes.
 */
export function endOfTurnTokens(tok: Tokenizer, chatTemplate?: string | ChatTemplateSource): number[] | null {
  if (chatTemplate == null && tok.chatTemplate == null) return null;
  // Longest first, so "<|end|>" does not shadow "<|endoftext|>" and the like.
  const added = tok.addedTokens().filter((t) => t.content.trim() !== '').sort((a, b) => b.content.length - a.content.length);
  const probes = [
    [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: PROBE }],
    [{ role: 'user', content: PROBE }],
  ];
  const found: number[] = [];
  let rendered = false;
  for (const messages of probes) {
    let text: string;
    try {
      text = tok.applyChatTemplate(messages, { chatTemplate, addGenerationPrompt: false });
    } catch (e) {
      if (e instanceof TokenizerError) continue;      // this template rejects the probe conversation
      throw e;
    }
    rendered = true;
    const at = text.lastIndexOf(PROBE);
    if (at < 0) continue;
    const rest = text.slice(at + PROBE.length).replace(/^\s+/, '');
    const hit = added.find((t) => rest.startsWith(t.content));
    if (hit && !found.includes(hit.id)) found.push(hit.id);
  }
  return rendered ? found : null;
}
