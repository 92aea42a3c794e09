import { describe, expect, it } from 'vitest';

import { JsonCodec } from '../../../engine/codec.js';
import { ErrorCode, InvalidArgumentError, PayloadTooLargeError } from '../../../engine/errors.js';
import { thrown } from '../../helpers/builders.js';

describe('JsonCodec.encode', () => {
  const codec = new JsonCodec(1024 * 1024);

  it('encodes JSON values and leaves undefined as no value', () => {
    expect(codec.encode({ a: [1, 'x', null, true], b: { c: 1.5 } }, 'input')).toBe(
      '{"a":[1,"x",null,true],"b":{"c":1.5}}',
    );
    expect(codec.encode(0, 'input')).toBe('0');
    expect(codec.encode('', 'input')).toBe('""');
    expect(codec.encode(null, 'input')).toBe('null');
    expect(codec.encode(undefined, 'input')).toBeUndefined();
    // As in JSON: undefined properties are left out, Dates become strings.
    expect(codec.encode({ a: undefined, d: new Date(0) }, 'input')).toBe('{"d":"1970-01-01T00:00:00.000Z"}');
  });

  it('treats a value whose toJSON() returns undefined as no value', () => {
    expect(codec.encode({ toJSON: () => undefined }, 'input')).toBeUndefined();
  });

  it('round-trips through decode', () => {
    const value = { s: 'é€😀', n: [1, 2, { x: null }] };
    expect(codec.decode(codec.encode(value, 'input'))).toEqual(value);
    expect(codec.decode(null)).toBeUndefined();
    expect(codec.decode(undefined)).toBeUndefined();
  });

  it.each([
    ['a bigint', 10n, 'bigint'],
    ['a function', () => 1, 'function'],
    ['a symbol', Symbol('s'), 'symbol'],
    ['a nested bigint', { outer: { amount: 10n } }, '"amount"'],
    ['a function in an array', [1, () => 1], '"1"'],
    ['a symbol property value', { tag: Symbol('t') }, '"tag"'],
  ])('refuses %s with InvalidArgumentError naming what and where', (_label, value, where) => {
    const error = thrown(() => codec.encode(value, 'input of activity "charge"'));
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect((error as InvalidArgumentError).code).toBe(ErrorCode.InvalidArgument);
    expect(error.message).toContain('input of activity "charge"');
    expect(error.message).toContain(where);
    expect(error.cause).toBeInstanceOf(TypeError);
  });

  it('refuses a cycle with InvalidArgumentError', () => {
    const a: Record<string, unknown> = { name: 'a' };
    a.next = { back: a };
    const error = thrown(() => codec.encode(a, 'workflow result'));
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error.message).toContain('workflow result');
  });
});

describe('JsonCodec payload limit', () => {
  it('accepts a payload of exactly the limit and refuses one byte more', () => {
    const codec = new JsonCodec(10);
    // '"abcdefgh"' is 10 bytes of JSON.
    expect(codec.encode('abcdefgh', 'input')).toBe('"abcdefgh"');
    const error = thrown(() => codec.encode('abcdefghi', 'event "x"'));
    expect(error).toBeInstanceOf(PayloadTooLargeError);
    expect(error).toMatchObject({ code: ErrorCode.PayloadTooLarge, bytes: 11, limit: 10 });
    expect(error.message).toContain('event "x"');
  });

  it('counts UTF-8 bytes, not UTF-16 units', () => {
    // '"€€€"' is 5 units but 11 bytes; '"😀😀"' is 6 units but 10 bytes.
    const codec = new JsonCodec(10);
    expect(thrown(() => codec.encode('€€€', 'input'))).toMatchObject({ bytes: 11, limit: 10 });
    expect(codec.encode('😀😀', 'input')).toBe('"😀😀"');
    expect(thrown(() => codec.encode('😀😀a', 'input'))).toMatchObject({ bytes: 11 });
  });

  it('skips the exact count when even three bytes per unit fit', () => {
    const codec = new JsonCodec(1024);
    expect(codec.encode('x'.repeat(300), 'input')).toHaveLength(302);
    expect(thrown(() => codec.encode('x'.repeat(1023), 'input'))).toBeInstanceOf(PayloadTooLargeError);
  });
});

describe('JsonCodec.activityOptions', () => {
  const codec = new JsonCodec(1024);

  it('stores the checked options as JSON', () => {
    expect(codec.activityOptions({})).toBe('{}');
    const options = { retry: { maxAttempts: 3, nonRetryable: ['E'] }, startToCloseTimeoutMs: 500 };
    expect(JSON.parse(codec.activityOptions(options))).toEqual(options);
  });

  it('stores an unlimited maxAttempts as the largest safe integer, since JSON has no Infinity', () => {
    expect(JSON.parse(codec.activityOptions({ retry: { maxAttempts: Infinity, initialIntervalMs: 5 } }))).toEqual({
      retry: { maxAttempts: Number.MAX_SAFE_INTEGER, initialIntervalMs: 5 },
    });
  });

  it('refuses fields it does not know, also inside the retry policy, naming them', () => {
    const unknown = thrown(() => codec.activityOptions({ taskQueue: 'q' }));
    expect(unknown).toBeInstanceOf(InvalidArgumentError);
    expect((unknown as Error).message).toBe('activity options has no option "taskQueue"; the options are retry, startToCloseTimeoutMs');
    const inRetry = thrown(() => codec.activityOptions({ retry: { maxAttempts: 2, extra: 10n } }));
    expect(inRetry).toBeInstanceOf(InvalidArgumentError);
    expect((inRetry as Error).message).toMatch(/^activity options\.retry has no option "extra"; the options are maxAttempts, /);
  });

  it('refuses an array as the retry policy', () => {
    expect(thrown(() => codec.activityOptions({ retry: [] }))).toBeInstanceOf(InvalidArgumentError);
  });

  it.each([null, undefined, 'x', 5])('refuses %j as options', (options) => {
    expect(thrown(() => codec.activityOptions(options))).toBeInstanceOf(InvalidArgumentError);
  });

  it.each([0, -5, Infinity, Number.NaN, '100', 2 ** 31])('refuses startToCloseTimeoutMs = %j, naming it', (value) => {
    const error = thrown(() => codec.activityOptions({ startToCloseTimeoutMs: value }));
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error.message).toContain('startToCloseTimeoutMs');
  });

  it('turns a bad retry policy into InvalidArgumentError naming the field', () => {
    const error = thrown(() => codec.activityOptions({ retry: { backoffCoefficient: 0 } }));
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error.message).toContain('activity options.retry.backoffCoefficient');
    expect(error.cause).toBeInstanceOf(RangeError);
    expect(thrown(() => codec.activityOptions({ retry: 'fast' }))).toBeInstanceOf(InvalidArgumentError);
  });
});
