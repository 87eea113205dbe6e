// Text deltas for streaming. Each push decodes the row's whole output (so byte fallback and SentencePiece spaces
// come out right) and emits only text that later tokens cannot change:
// - a trailing U+FFFD is an unfinished UTF-8 sequence: held until the next token completes it;
// - in space-separated text the last word and the space before it are held, because tokenizers' clean-up rewrites
//   them (" ." → ".", " n't" → "n't"); text without spaces (CJK) is emitted as it comes.
// The output is decoded after a few prompt tokens and the prompt's own text is cut off, as transformers' pipeline
// does (return_full_text=False): decoded alone, a continuation loses its leading space (SentencePiece strips the
// first "▁"), so "The little dog" + " and his dog" would come back as "and his dog".
// The row's final text is always the full decode; `flush` emits whatever was held.
import type { Tokenizer } from '../tokenizer/index.js';

/** The last word may still change if it is made of ASCII letters/punctuation (what clean-up rules touch). */
const UNSETTLED_TAIL = /\s[\x21-\x7e]*$/;

/**
 * Prompt tokens decoded ahead of the output. Only the boundary matters (the first token's stripped space, a
 * character split over byte tokens, clean-up of " ." and " n't"), and none of those reaches back further than this.
 */
export const PROMPT_CONTEXT_TOKENS = 8;

export interface IncrementalDecoderOptions {
  /** Default true, as generated text is shown. */
  skipSpecialTokens?: boolean;
  /** The prompt (only its last PROMPT_CONTEXT_TOKENS tokens are used): decoded ahead of the output, never emitted. */
  context?: ArrayLike<number>;
}

export class IncrementalDecoder {
  private ids: number[] = [];
  private emitted = '';
  private full = '';
  private readonly skipSpecialTokens: boolean;
  private readonly context: number[];
  /** decode(context): cut from the front of every decode. */
  private readonly contextText: string;

  constructor(private readonly tokenizer: Tokenizer, opts: IncrementalDecoderOptions = {}) {
    this.skipSpecialTokens = opts.skipSpecialTokens ?? true;
    this.context = Array.from(opts.context ?? []).slice(-PROMPT_CONTEXT_TOKENS);
    this.contextText = this.context.length ? this.decode(this.context) : '';
  }

  /** Add one token; returns the text that is now settled (possibly ''). */
  push(id: number): string {
    this.ids.push(id);
    this.full = this.newText();
    if (this.full.endsWith('\uFFFD')) return '';
    const m = UNSETTLED_TAIL.exec(this.full);
    return this.emit(m ? this.full.slice(0, m.index) : this.full);
  }

  /** Everything not yet emitted (an incomplete character comes out as U+FFFD, as decode gives it). */
  flush(): string { return this.emit(this.full); }

  /** The full decode of the output so far (what stop strings are matched against). */
  get text(): string { return this.full; }

  private decode(ids: number[]): string {
    return this.tokenizer.decode(ids, { skipSpecialTokens: this.skipSpecialTokens });
  }

  private newText(): string {
    if (!this.context.length) return this.decode(this.ids);
    const all = this.decode([...this.context, ...this.ids]);
    const pre = this.contextText;
    if (all.startsWith(pre)) return all.slice(pre.length);
    // The output changed the context's own text: it completed a character the prompt had begun (U+FFFD became
    // the character) or clean-up joined across the boundary. What differs belongs to the output.
    let i = 0;
    while (i < pre.length && i < all.length && pre.charCodeAt(i) === all.charCodeAt(i)) i++;
    return all.slice(i);
  }

  private emit(settled: string): string {
    // Settled text only grows; if clean-up ever rewrote emitted text, the difference shows in the final text only.
    if (settled.length <= this.emitted.length || !settled.startsWith(this.emitted)) return '';
    const delta = settled.slice(this.emitted.length);
    this.emitted = settled;
    return delta;
  }
}

/** Prints streamed text as it arrives (transformers' TextStreamer). */
export class TextStreamer {
  constructor(private readonly out: { write(s: string): unknown } = process.stdout) {}
  put(text: string): void { if (text) this.out.write(text); }
  end(): void { this.out.write('\n'); }
}
