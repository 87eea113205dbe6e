// The tokenizer layer's one error type: every failure to read tokenizer files or to render a chat template is a
// TokenizerError whose message starts with the file (or option) at fault.

export class TokenizerError extends Error { override name = 'TokenizerError'; }
