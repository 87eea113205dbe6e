// Text deltas for streaming. Each push decodes the row's whole output (so byte fallback and SentencePiece spaces
// come out right) and emits only text that later tokens cannot change:
// - a trailing U+FFFD is an unfinished UTF-8 sequence: held until the next token completes it;
// - in space-separated text the last word and the space before it are held, because tokenizers' clean-up rewrites
//   them (" ." → ".", " n't" → "n't"); text without spaces (CJK) is emitted as it comes.
// The row's final text is always the full decode; `flush` emits whatever was held.
import type { Tokenizer } from '../tokenizer/index.js';

/** The last word may still change if it is made of ASCII letters/punctuation (what clean-up rules touch). */
const UNSETTLED_TAIL = /\s[\x21-\x7e]*$/;

export class IncrementalDecoder {
  private ids: number[] = [];
  private emitted = '';
  private full = '';
  constructor(private readonly tokenizer: Tokenizer, private readonly skipSpecialTokens = true) {}

  /** Add one token; returns the text that is now settled (possibly ''). */
  push(id: number): string {
    this.ids.push(id);
    this.full = this.tokenizer.decode(this.ids, { skipSpecialTokens: this.skipSpecialTokens });
    if (this.full.endsWith('\uFFFD')) return '';
    const m = UNSETTLED_TAIL.exec(this.full);
    return this.emit(m ? this.full.slice(0, m.index) : this.full);
  }

  /** Everything not yet emitted (an incomplete character comes out as U+FFFD, as decode gives it). */
  flush(): string { return this.emit(this.full); }

  /** The full decode so far (what stop strings are matched against). */
  get text(): string { return this.full; }

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
