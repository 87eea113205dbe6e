// Text for messages (values shown short, the nearest known name for a misspelt one), and the public error classes:
// every error lowbit throws can be caught by type from the package's entry point.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describe, editDistance, nearest, show } from '../src/util/text.js';

test('show: JSON cut short, numbers as themselves, values JSON cannot write described', () => {
  assert.equal(show(5), '5');
  assert.equal(show(NaN), 'NaN');
  assert.equal(show(-Infinity), '-Infinity');
  assert.equal(show('a'), '"a"');
  assert.equal(show(undefined), 'nothing');
  assert.equal(show(null), 'null');
  assert.equal(show([1, 'x']), '[1,"x"]');
  assert.equal(show(() => 1), 'function');
  assert.equal(show(5n), 'bigint');
  const long = show('x'.repeat(1000));
  assert.equal(long.length, 80);
  assert.ok(long.endsWith('...'));
  assert.equal(show('x'.repeat(1000), 20).length, 20);
  assert.equal(show(JSON.parse(`${'['.repeat(100_000)}${']'.repeat(100_000)}`)), 'a deeply nested list');
});

test('describe: the type, with the value for scalars', () => {
  assert.equal(describe(null), 'null');
  assert.equal(describe(undefined), 'undefined');
  assert.equal(describe([1]), 'an array');
  assert.equal(describe({}), 'an object');
  assert.equal(describe(5), 'a number (5)');
  assert.equal(describe(true), 'a boolean (true)');
  assert.equal(describe('y'.repeat(100)), `a string ("${'y'.repeat(36)}...)`);
});

test('nearest: spelling variants first, then prefixes and small edit distances; nothing for far or huge names', () => {
  const options = ['max-new-tokens', 'temperature', 'top-p', 'top-k', 'seed'];
  assert.equal(nearest('max_new_tokens', options), 'max-new-tokens');
  assert.equal(nearest('maxNewTokens', options), 'max-new-tokens');
  assert.equal(nearest('max-new-tokns', options), 'max-new-tokens');
  assert.equal(nearest('max', options), 'max-new-tokens');       // a prefix
  assert.equal(nearest('temprature', options), 'temperature');
  assert.equal(nearest('top-z', options), 'top-p');              // the first of equals
  assert.equal(nearest('xyzzy', options), null);
  assert.equal(nearest('s', options), null);
  assert.equal(nearest('k'.repeat(100_000), options), null);
  assert.equal(nearest('seed', []), null);
  assert.equal(editDistance('kitten', 'sitting'), 3);
  assert.equal(editDistance('', 'abc'), 3);
});

test('the package exports every error class, so callers can catch each by type', async () => {
  const lowbit = await import('../src/index.js');
  const names = ['ShapeError', 'SafetensorsError', 'TruncatedFileError', 'HeaderTooLargeError', 'InvalidHeaderError',
    'InvalidOffsetsError', 'SizeMismatchError', 'DuplicateTensorError', 'UnknownDtypeError', 'UnsupportedDtypeError',
    'TensorNotFoundError', 'FileAccessError', 'SafetensorsWriteError', 'CheckpointError', 'ConfigError', 'UnsupportedModelError',
    'GenerationConfigError', 'TokenizerError', 'ModelNotFoundError', 'HubError', 'MissingTensorError', 'TokenIdError'];
  for (const n of names) {
    const cls = (lowbit as Record<string, unknown>)[n];
    assert.equal(typeof cls, 'function', `${n} is not exported`);
    assert.ok((cls as { prototype: unknown }).prototype instanceof Error, n);
  }
  assert.ok(new lowbit.UnsupportedDtypeError('f', 'x') instanceof lowbit.SafetensorsError);
});
