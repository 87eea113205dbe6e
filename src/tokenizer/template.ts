// Chat templates: parsed and interpreted by @huggingface/jinja, run here under a budget so that a hostile or broken
// template (a tokenizer_config.json is data from the Hub) cannot hang or kill the host process. transformers renders
// templates in jinja2's ImmutableSandboxedEnvironment, which refuses range() over 100,000 items but has no other
// limit; a library that a server embeds needs one on work and memory as well.
import { Environment, Interpreter, Template } from '@huggingface/jinja';
import { readTextFile } from '../util/fs.js';
import { describe } from '../util/text.js';
import { TokenizerError } from './errors.js';

export { describe };

/** Limits for one render. Each is far above what a real chat template needs for thousands of messages. */
export interface TemplateBudget {
  /** Expression and statement evaluations. */
  steps: number;
  /** Loop iterations (charged when the loop starts, from its iterable's length: jinja prepares a scope for every
   *  item before running the first) and macro calls. @huggingface/jinja spends 10–35 µs on each, far more than on
   *  a step, and an empty loop body evaluates no step at all, so these are counted apart. */
  blocks: number;
  /** Items that range() may produce, summed over the render. */
  rangeItems: number;
  /** Characters of every string and entries of every list/mapping that an evaluation yields, summed: the work of
   *  string and list operations, which a step count alone does not see. */
  volume: number;
  /** Characters in any one string, the output included. */
  maxString: number;
  /** Entries in any one list or mapping. */
  maxItems: number;
  /** Nested evaluations (macro recursion). */
  depth: number;
  /** Wall-clock milliseconds: the backstop for single operations slower than the counts above assume. */
  timeMs: number;
}

/**
 * Defaults. Per message, the Llama-3, ChatML, Mistral and Qwen2 templates spend under 30 steps, 1 block (their loop
 * iteration) and a volume of ~7 × the message's length (plus the number of messages, for templates that index
 * `messages` in their loop), so these allow conversations of ~15,000 messages and tens of MB; a template that hits
 * a count stops within about a second on an idle core (blocks: 25,000 × up to 35 µs).
 */
export const DEFAULT_TEMPLATE_BUDGET: Readonly<TemplateBudget> = Object.freeze({
  steps: 500_000,
  blocks: 25_000,
  rangeItems: 100_000,
  volume: 256 * 2 ** 20,
  maxString: 16 * 2 ** 20,
  maxItems: 1_000_000,
  depth: 400,
  timeMs: 10_000,
});

/** jinja2.sandbox.MAX_RANGE: transformers refuses a longer range() in one call, so lowbit does too. */
export const MAX_RANGE = 100_000;

/** A template to render and the file (or option) it came from, which errors name. */
export interface ChatTemplateSource { template: string; path: string }

class BudgetExceeded extends Error {}
class TemplateRaised extends Error {}

/** The few AST fields read here. */
interface Node { type?: string; iterable?: { lhs?: unknown } }

interface Meter { steps: number; blocks: number; range: number; volume: number; deadline: number }

// @huggingface/jinja's .d.ts files import their siblings without extensions, which NodeNext resolution does not
// follow, so Interpreter and Environment arrive untyped: the little used here is typed by hand.
interface RuntimeValue { type: string; value: unknown }
interface JinjaInterpreter {
  evaluate(statement: unknown, environment: unknown): RuntimeValue;
  run(program: unknown): RuntimeValue;
}
const JinjaInterpreterClass = Interpreter as new (env: unknown) => JinjaInterpreter;

/**
 * jinja's Interpreter with a meter on every evaluation (all its recursion goes through evaluate()) and on every
 * block (evaluateBlock, which jinja's .d.ts calls private; checked below so that a jinja update that renames it
 * fails a test instead of silently dropping the count).
 */
class MeteredInterpreter extends JinjaInterpreterClass {
  private depth = 0;
  /** True while jinja evaluates the arguments of an indent()/tojson() filter (see evaluateArguments). */
  private sizingFilter = false;
  /** List/mapping entries yielded by the direct children of the node under evaluation. */
  private childItems = 0;
  /** The node under evaluation (the parent of the one evaluate() is called for). */
  private current: Node | undefined;
  constructor(env: unknown, private readonly budget: TemplateBudget, private readonly meter: Meter) { super(env); }

  override evaluate(statement: unknown, environment: unknown): RuntimeValue {
    const b = this.budget, m = this.meter;
    if (++m.steps > b.steps) throw new BudgetExceeded(`more than ${b.steps} evaluation steps`);
    if ((m.steps & 1023) === 0 && performance.now() > m.deadline) throw new BudgetExceeded(`more than ${b.timeMs} ms`);
    if (++this.depth > b.depth) throw new BudgetExceeded(`nesting deeper than ${b.depth} (runaway macro recursion?)`);
    const outer = this.sizingFilter, outerItems = this.childItems, parent = this.current;
    this.sizingFilter = isSizingFilter(statement);
    this.childItems = 0;
    this.current = statement as Node;
    let items = 0;
    try {
      const v = super.evaluate(statement, environment);
      const raw: unknown = v.value;
      const chars = typeof raw === 'string' ? raw.length : 0;
      items = Array.isArray(raw) ? raw.length : raw instanceof Map ? raw.size : 0;
      if (chars > b.maxString) throw new BudgetExceeded(`a string longer than ${b.maxString} characters`);
      if (items > b.maxItems) throw new BudgetExceeded(`a list or mapping of more than ${b.maxItems} entries`);
      // A membership test or a filter walks its list operands entry by entry through a callback, ~16 × the cost of
      // a character; other nodes either yield what they walked (counted as it is yielded) or only index into it.
      const scans = this.childItems > 0 && scansOperands(statement) ? SCAN_WEIGHT * this.childItems : 0;
      if ((m.volume += chars + items + scans) > b.volume) throw new BudgetExceeded(`more than ${b.volume} characters and entries processed`);
      // A loop's iterations are charged as soon as its iterable is known: jinja prepares a scope for every item
      // before running the first, so counting only the bodies would come too late.
      if (items > 0 && parent?.type === 'For' && (parent.iterable === statement || parent.iterable?.lhs === statement)) {
        if ((m.blocks += items) > b.blocks) throw new BudgetExceeded(`more than ${b.blocks} loop iterations and macro calls`);
      }
      return v;
    } finally {
      this.depth--;
      this.sizingFilter = outer;
      this.childItems = outerItems + items;
      this.current = parent;
    }
  }

  /** indent(width) and tojson(indent=n) allocate " " × n before any result can be measured: cap n first. */
  evaluateArguments(args: unknown, environment: unknown): [RuntimeValue[], Map<string, RuntimeValue>] {
    const r = (JinjaInterpreterClass.prototype as unknown as { evaluateArguments: (a: unknown, e: unknown) => [RuntimeValue[], Map<string, RuntimeValue>] })
      .evaluateArguments.call(this, args, environment);
    if (this.sizingFilter) {
      for (const v of [...r[0], ...r[1].values()]) {
        if (typeof v.value === 'number' && v.value > MAX_INDENT) throw new BudgetExceeded(`an indent of ${v.value} (at most ${MAX_INDENT})`);
      }
    }
    return r;
  }

  evaluateBlock(statements: unknown, environment: unknown): RuntimeValue {
    const b = this.budget, m = this.meter, t = this.current?.type;
    // A loop body was charged with its loop; an if branch builds no scope and is paid for in steps.
    if (t !== 'For' && t !== 'If') {
      if (++m.blocks > b.blocks) throw new BudgetExceeded(`more than ${b.blocks} loop iterations and macro calls`);
      if ((m.blocks & 255) === 0 && performance.now() > m.deadline) throw new BudgetExceeded(`more than ${b.timeMs} ms`);
    }
    return (JinjaInterpreterClass.prototype as unknown as { evaluateBlock: (s: unknown, e: unknown) => RuntimeValue }).evaluateBlock.call(this, statements, environment);
  }
}

const MAX_INDENT = 1000;
const SCAN_WEIGHT = 16;

/** `x in list` and filters other than the O(1) length/first/last walk their operands. */
function scansOperands(node: unknown): boolean {
  const n = node as { type?: string; operator?: { value?: string }; filter?: { type?: string; value?: string; callee?: { value?: string } } };
  if (n.type === 'BinaryExpression') return n.operator?.value === 'in' || n.operator?.value === 'not in';
  if (n.type !== 'FilterExpression') return false;
  const name = n.filter?.type === 'Identifier' ? n.filter.value : n.filter?.callee?.value;
  return name !== 'length' && name !== 'first' && name !== 'last' && name !== 'count';
}

function isSizingFilter(node: unknown): boolean {
  const n = node as { type?: string; filter?: { type?: string; callee?: { type?: string; value?: unknown } } } | null;
  return n?.type === 'FilterExpression' && n.filter?.type === 'CallExpression' && n.filter.callee?.type === 'Identifier' &&
    (n.filter.callee.value === 'indent' || n.filter.callee.value === 'tojson');
}

/** True while @huggingface/jinja still routes blocks and arguments through the methods overridden above (a test
 *  asserts it, so that an update renaming them cannot silently drop those counts). */
export const JINJA_HOOKS_PRESENT = ['evaluateBlock', 'evaluateArguments']
  .every((k) => typeof (JinjaInterpreterClass.prototype as unknown as Record<string, unknown>)[k] === 'function');

/** jinja's range(), counted: the length is known before anything is allocated. */
function meteredRange(budget: TemplateBudget, meter: Meter) {
  return (...args: unknown[]): number[] => {
    const nums = args.filter((a) => !(a instanceof Map));          // jinja passes keyword arguments as a Map
    if (nums.length < 1 || nums.length > 3 || nums.some((a) => typeof a !== 'number' || !Number.isFinite(a))) {
      throw new Error(`range() takes 1 to 3 finite numbers, got (${args.map((a) => typeof a).join(', ')})`);
    }
    let [start, stop, step] = nums as number[];
    if (nums.length === 1) { stop = start; start = 0; }
    step ??= 1;
    if (step === 0) throw new Error('range() step must not be zero');
    const n = Math.max(0, Math.ceil((stop - start) / step));
    if (n > MAX_RANGE) throw new BudgetExceeded(`range() of ${n} items (the jinja2 sandbox that transformers uses allows ${MAX_RANGE})`);
    if ((meter.range += n) > budget.rangeItems) throw new BudgetExceeded(`range() items over ${budget.rangeItems} in total`);
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push(start + i * step);
    return out;
  };
}

/** jinja's own strftime_now (not exported on its own), reached through a one-line template. */
const STRFTIME = new Template('{{ strftime_now(f) }}');
const strftimeNow = (f: unknown): string => STRFTIME.render({ f: String(f) });

/** Parse a template; a syntax error is a TokenizerError naming `where`. */
export function parseChatTemplate(source: string, where: string): Template {
  try {
    return new Template(source);
  } catch (e) {
    throw new TokenizerError(`${where}: chat template does not parse: ${(e as Error).message}`);
  }
}

/**
 * Render under a budget. The globals are those @huggingface/jinja's Template.render installs, with range() and
 * raise_exception() replaced by metered / typed versions; `items` (messages, bos_token, …) may shadow the others,
 * as keyword arguments do in transformers. Every failure is a TokenizerError naming `where`.
 */
export function renderChatTemplate(
  tpl: Template, items: Record<string, unknown>, where: string, budget: Partial<TemplateBudget> = {},
): string {
  const b: TemplateBudget = { ...DEFAULT_TEMPLATE_BUDGET, ...budget };
  const meter: Meter = { steps: 0, blocks: 0, range: 0, volume: 0, deadline: performance.now() + b.timeMs };
  try {
    // One scope, filled in order: jinja's constants, the caller's items (which may shadow them, as keyword
    // arguments do in transformers), then range() and raise_exception(), which no item may replace.
    const env: { set(name: string, value: unknown): unknown } = new Environment();
    const vars: Record<string, unknown> = {
      false: false, true: true, none: null, False: false, True: true, None: null, strftime_now: strftimeNow,
      ...items,
      range: meteredRange(b, meter),
      raise_exception: (msg: unknown) => { throw new TemplateRaised(String(msg)); },
    };
    for (const [k, v] of Object.entries(vars)) env.set(k, v);
    const out = new MeteredInterpreter(env, b, meter).run(tpl.parsed).value;
    return String(out);
  } catch (e) {
    if (e instanceof TokenizerError) throw e;
    if (e instanceof BudgetExceeded) throw new TokenizerError(`${where}: chat template exceeds its render budget: ${e.message}`);
    if (e instanceof TemplateRaised) throw new TokenizerError(`${where}: chat template raised an error: ${e.message}`);
    // V8's "Maximum call stack size exceeded" and "Invalid string length" are RangeErrors: still this template.
    throw new TokenizerError(`${where}: chat template failed to render: ${(e as Error)?.message ?? String(e)}`);
  }
}

/**
 * Read a chat template from a file, for `--chat-template FILE`: a Jinja file as is, or a JSON file shaped like
 * tokenizer_config.json whose `chat_template` is a string or a list of {name, template} (the one named "default").
 * Errors are TokenizerErrors naming the file.
 */
export function readChatTemplateFile(path: string): ChatTemplateSource {
  // Refuses a FIFO (reading one would block forever), a folder, a dangling link or a loop, naming the problem.
  const text = readTextFile(path, (_m, detail) => new TokenizerError(`${path}: cannot read the chat template: ${detail}`));
  const looksJson = /\.json$/i.test(path) || /^\s*\{/.test(text) && !/^\s*\{[{%#]/.test(text);
  if (!looksJson) {
    if (text.trim() === '') throw new TokenizerError(`${path}: the chat template file is empty`);
    return { template: text, path };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new TokenizerError(`${path}: not valid JSON: ${(e as Error).message}`);
  }
  const template = chatTemplateFromConfig(json, path);
  if (template == null) {
    const list = (json as { chat_template?: unknown }).chat_template;
    throw new TokenizerError(Array.isArray(list)
      ? `${path}: chat_template lists no template named "default" (it has ${list.map((t) => JSON.stringify((t as { name: string }).name)).join(', ')})`
      : `${path}: no chat_template in this file`);
  }
  return { template, path };
}

/**
 * The `chat_template` of a tokenizer_config.json-like object: a string, or the "default" entry of a list of named
 * templates, or null when absent. A value of another shape is a TokenizerError.
 */
export function chatTemplateFromConfig(json: unknown, path: string): string | null {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new TokenizerError(`${path}: expected a JSON object, got ${describe(json)}`);
  }
  const tpl = (json as Record<string, unknown>).chat_template;
  if (tpl == null || typeof tpl === 'string') return tpl ?? null;
  if (!Array.isArray(tpl)) throw new TokenizerError(`${path}: chat_template must be a string or a list of {name, template}, got ${describe(tpl)}`);
  const named: { name: string; template: string }[] = tpl.map((t, i) => {
    const o = t as Record<string, unknown> | null;
    if (o === null || typeof o !== 'object' || typeof o.name !== 'string' || typeof o.template !== 'string') {
      throw new TokenizerError(`${path}: chat_template[${i}] must be {name: string, template: string}, got ${describe(t)}`);
    }
    return { name: o.name, template: o.template };
  });
  // As transformers' get_chat_template: the one named "default" ("tool_use" only when tools are passed).
  return named.find((t) => t.name === 'default')?.template ?? null;
}
