// Text deltas for streaming. Decoding the whole generated run each time and emitting the new suffix keeps
// tokenizer decoders (byte fallback, SentencePiece spaces) right; a trailing U+FFFD means an unfinished UTF-8
// sequence, so that part is held back until the next token completes it.
import type { Tokenizer } from '../tokenizer/index.js';

export class IncrementalDecoder {
  private ids: number[] = [];
  private emitted = '';
  constructor(private readonly tokenizer: Tokenizer, private readonly skipSpecialTokens = true) {}

  /** Add one token; returns the text that is now final (possibly ''). */
  push(id: number): string {
    this.ids.push(id);
    const text = this.tokenizer.decode(this.ids, { skipSpecialTokens: this.skipSpecialTokens });
    if (text.endsWith('\uFFFD')) return '';
    const delta = text.startsWith(this.emitted) ? text.slice(this.emitted.length) : '';
    this.emitted = text;
    return delta;
  }

  /** Whatever remains at the end (an incomplete character is emitted as U+FFFD, as decode would). */
  flush(): string {
    const text = this.tokenizer.decode(this.ids, { skipSpecialTokens: this.skipSpecialTokens });
    const delta = text.startsWith(this.emitted) ? text.slice(this.emitted.length) : '';
    this.emitted = text;
    return delta;
  }

  get text(): string { return this.emitted; }
}

/** Prints streamed text as it arrives (transformers' TextStreamer). */
export class TextStreamer {
  constructor(private readonly out: { write(s: string): unknown } = process.stdout) {}
  put(text: string): void { if (text) this.out.write(text); }
  end(): void { this.out.write('\n'); }
}
