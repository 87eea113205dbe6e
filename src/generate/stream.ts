// Text deltas for streaming, decoded incrementally with a prefix offset and a read offset as vLLM's detokenizer does:
// a push decodes only a window, the ids since the last emitted boundary (the read offset) plus the ids before it
// back to the previous boundary (the prefix offset), and the new text is the window's decode minus the prefix's. A
// push costs a few ids whatever the output's length, so n tokens cost O(n) decoding, not O(n²).
// - The prefix ids are decoded ahead of the new ones so that what depends on a neighbour comes out right:
//   SentencePiece strips the first "▁" of a decode, byte-level and byte-fallback tokens split characters.
// - A trailing U+FFFD is an unfinished UTF-8 sequence: nothing moves until a later token completes it.
// - Clean-up (" ." → ".", " n't" → "n't"), where the tokenizer applies it, runs on the raw text piece by piece, cut
//   only where no clean-up pattern can reach across the cut, so the pieces add up to the cleaned whole.
// The output is decoded after a few prompt tokens and the prompt's own text is cut off, as transformers' pipeline
// does (return_full_text=False): decoded alone, a continuation loses its leading space (SentencePiece strips the
// first "▁"), so "The little dog" + " and his dog" would come back as "and his dog".
// The row's final text (`text`) is one full decode; `flush` emits whatever was held.
import { cleanUpTokenizationSpaces, type Tokenizer } from '../tokenizer/index.js';

/**
 * Prompt tokens decoded ahead of the output. Only the boundary matters (the first token's stripped space, a
 * character split over byte tokens, clean-up of " ." and " n't"), and none of those reaches back further than this.
 */
export const PROMPT_CONTEXT_TOKENS = 8;

/** A UTF-8 character spans at most 4 bytes, so at most 4 tokens: a U+FFFD older than this stays one. */
const MAX_CHAR_TOKENS = 4;
/** How far the prefix window reaches back when the tokens before the boundary decode to nothing (special tokens). */
const MAX_PREFIX_TOKENS = 16;
/** How far back from the end a clean-up cut is looked for (the last word, normally). */
const MAX_CUT_SEARCH = 64;
/** With clean-up, the output is cut together with the prompt's text until a cut past it (normally the first word). */
const MAX_START_TOKENS = 64;

export interface IncrementalDecoderOptions {
  /** Default true, as generated text is shown. */
  skipSpecialTokens?: boolean;
  /** The prompt (only its last PROMPT_CONTEXT_TOKENS tokens are used): decoded ahead of the output, never emitted. */
  context?: ArrayLike<number>;
}

export class IncrementalDecoder {
  /** The context ids, then the output's. */
  private readonly ids: number[];
  private readonly contextLength: number;
  private readonly skipSpecialTokens: boolean;
  private readonly cleanUp: boolean;
  /** decode(context): cut from the front of the full decode. */
  private readonly contextText: string;
  private readonly contextRawLength: number;
  /** ids[prefix, read) decode to prefixText; ids[read, …) have not been taken into the text yet. */
  private prefix = 0;
  private read: number;
  private prefixText: string;
  /** Raw text of ids[read, …): empty, or an unfinished character waiting for its next byte. */
  private pending = '';
  /**
   * With clean-up: raw text before `read` that is not emitted yet (no safe cut after it so far); until the first cut
   * past the prompt (`atStart`), the prompt's raw text and the output's together.
   */
  private unemitted = '';
  private atStart: boolean;
  /** With clean-up: the last raw characters emitted, which decide whether a cut is safe. */
  private rawTail = '';
  private emitted = '';
  /** The full decode, kept for the id count it was made at (flush and then `text` need it once each). */
  private full: { n: number; text: string } | null = null;

  constructor(private readonly tokenizer: Tokenizer, opts: IncrementalDecoderOptions = {}) {
    this.skipSpecialTokens = opts.skipSpecialTokens ?? true;
    this.cleanUp = tokenizer.cleansUpSpaces;
    this.ids = Array.from(opts.context ?? []).slice(-PROMPT_CONTEXT_TOKENS);
    this.contextLength = this.read = this.ids.length;
    this.contextText = this.ids.length ? this.tokenizer.decode(this.ids, { skipSpecialTokens: this.skipSpecialTokens }) : '';
    this.prefixText = this.ids.length ? this.decodeRaw(0, this.ids.length) : '';
    this.contextRawLength = this.prefixText.length;
    this.atStart = this.cleanUp && this.contextLength > 0;
    if (this.atStart) this.unemitted = this.prefixText;
  }

  /** Add one token; returns the text that is now settled (possibly ''). */
  push(id: number): string {
    this.ids.push(id);
    const n = this.ids.length;
    const pending = this.newText(this.decodeRaw(this.prefix, n));
    if (!pending.endsWith('\uFFFD')) {
      this.pending = '';
      return this.commit(n, pending);
    }
    if (n - this.read <= 2 * MAX_CHAR_TOKENS) { this.pending = pending; return ''; }
    // Still unfinished after this many tokens: the U+FFFD before the last few is for good (an invalid sequence).
    const k = n - MAX_CHAR_TOKENS;
    const delta = this.commit(k, this.newText(this.decodeRaw(this.prefix, k)));
    this.pending = this.newText(this.decodeRaw(this.prefix, n));
    return delta;
  }

  /** Everything not yet emitted (an incomplete character comes out as U+FFFD, as decode gives it). */
  flush(): string {
    const full = this.text;
    this.pending = this.unemitted = '';
    // Settled text only grows; if a decoder ever rewrote emitted text, the difference shows in the final text only.
    if (full.length <= this.emitted.length || !full.startsWith(this.emitted)) return '';
    const delta = full.slice(this.emitted.length);
    this.emitted = full;
    return delta;
  }

  /** The text decoded but not yet emitted (it may still change): with the emitted text, the output so far. */
  get pendingText(): string {
    const raw = this.unemitted + this.pending;
    if (!this.cleanUp) return raw;
    const text = cleanUpTokenizationSpaces(raw);
    return this.atStart ? this.afterContext(text, this.contextText) : text;
  }

  /** The full decode of the output (one decode of every id: for the end of a row, not for every step). */
  get text(): string {
    if (this.full?.n !== this.ids.length) {
      const all = this.tokenizer.decode(this.ids, { skipSpecialTokens: this.skipSpecialTokens });
      this.full = { n: this.ids.length, text: this.afterContext(all, this.contextText) };
    }
    return this.full.text;
  }

  /** Raw (clean-up off) decode of ids[from, to). */
  private decodeRaw(from: number, to: number): string {
    return this.tokenizer.decode(this.ids.slice(from, to), { skipSpecialTokens: this.skipSpecialTokens, cleanUpTokenizationSpaces: false });
  }

  /** The window's text after the prefix's. */
  private newText(window: string): string { return this.afterContext(window, this.prefixText); }

  private afterContext(all: string, pre: string): string {
    if (all.startsWith(pre)) return all.slice(pre.length);
    // The new ids changed the prefix's own text: they completed a character the prefix had begun (U+FFFD became
    // the character). What differs belongs to the new text.
    let i = 0;
    while (i < pre.length && i < all.length && pre.charCodeAt(i) === all.charCodeAt(i)) i++;
    return all.slice(i);
  }

  /** ids[read, k) decoded to `text`: take it in, move the window, emit what is safe. */
  private commit(k: number, text: string): string {
    // The next window starts at the old boundary, or further back if the ids there decode to nothing (special
    // tokens skipped): a prefix that decodes to '' would let SentencePiece strip the next token's space.
    let p = this.read;
    let pt = this.decodeRaw(p, k);
    if (pt === '' && p > 0 && k - p < MAX_PREFIX_TOKENS) {
      p = Math.max(0, k - MAX_PREFIX_TOKENS);
      pt = this.decodeRaw(p, k);
    }
    this.prefix = p;
    this.read = k;
    this.prefixText = pt;
    if (!this.cleanUp) return this.emit(text);
    if (this.atStart) {
      // A clean-up pattern may join the prompt's text and the output's ("… do" + " n't"): until a cut past the
      // prompt, cut and clean them together and take off the prompt's text as the full decode does (`text`).
      const all = this.decodeRaw(0, k);
      const cut = this.safeCut(all);
      if (cut < this.contextRawLength && k - this.contextLength < MAX_START_TOKENS) {
        this.unemitted = all;
        return '';
      }
      this.atStart = false;
      this.unemitted = all.slice(cut);
      this.rawTail = all.slice(Math.max(0, cut - 3), cut);
      return this.emit(this.afterContext(cleanUpTokenizationSpaces(all.slice(0, cut)), this.contextText));
    }
    const raw = this.unemitted + text;
    const cut = this.safeCut(raw);
    const done = raw.slice(0, cut);
    this.unemitted = raw.slice(cut);
    this.rawTail = (this.rawTail + done).slice(-3);
    return this.emit(cleanUpTokenizationSpaces(done));
  }

  private emit(delta: string): string {
    this.emitted += delta;
    return delta;
  }

  /**
   * The last position in `raw` (what follows the emitted text) where the text can be cut for clean-up: no pattern
   * (each starts with a space and spans at most 4 characters; " ' " → "'" can make " n't" and " 's") reaches across
   * it, whatever comes later. Either no space among the 3 characters before the cut, or whitespace right after it
   * and before it a character that is neither whitespace, "'" nor "n". 0 when there is none near the end.
   */
  private safeCut(raw: string): number {
    const s = this.rawTail + raw;
    const o = this.rawTail.length;
    for (let k = s.length; k > o && k >= s.length - MAX_CUT_SEARCH; k--) {
      const before = s.slice(Math.max(0, k - 3), k);
      if (!before.includes(' ')) return k - o;
      if (k < s.length && /\s/.test(s[k]) && !/[\s'n]/.test(s[k - 1])) return k - o;
    }
    return 0;
  }
}

/**
 * Stop strings over streamed text: each check looks only at the text a new occurrence can touch (the last
 * longest-stop − 1 emitted characters, the new delta and the text not yet emitted), not the whole output.
 */
export class StopStringMatcher {
  private tail = '';
  private readonly keep: number;

  constructor(private readonly stops: readonly string[]) {
    this.keep = Math.max(0, ...stops.map((s) => s.length - 1));
  }

  /** `delta`: text just emitted; `pending`: decoded text not emitted yet. True when a stop string has appeared. */
  check(delta: string, pending: string): boolean {
    const recent = this.tail + delta;
    const window = recent + pending;
    this.tail = this.keep > 0 ? recent.slice(-this.keep) : '';
    return this.stops.some((s) => window.includes(s));
  }
}

/** Prints streamed text as it arrives (transformers' TextStreamer). */
export class TextStreamer {
  constructor(private readonly out: { write(s: string): unknown } = process.stdout) {}
  put(text: string): void { if (text) this.out.write(text); }
  end(): void { this.out.write('\n'); }
}
