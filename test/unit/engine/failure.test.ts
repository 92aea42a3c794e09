import { describe, expect, it } from 'vitest';

import type { SerializedFailure } from '../../../actors/history.js';
import { NonRetryableError } from '../../../engine/errors.js';
import { coerceError, fromFailure, toFailure } from '../../../engine/failure.js';

describe('coerceError', () => {
  it('returns an Error as is', () => {
    const error = new TypeError('t');
    expect(coerceError(error)).toBe(error);
  });

  it('makes a thrown string the message', () => {
    const error = coerceError('plain');
    expect(error).toBeInstanceOf(Error);
    expect(error.message).toBe('plain');
  });

  it('keeps message and name of an error-like object', () => {
    const error = coerceError({ name: 'RemoteError', message: 'from afar' });
    expect(error).toMatchObject({ name: 'RemoteError', message: 'from afar' });
    expect(coerceError({ message: 42 })).toMatchObject({ name: 'Error', message: '42' });
  });

  it('describes other thrown values, even ones that cannot be printed', () => {
    expect(coerceError(42).message).toBe('non-error thrown: 42');
    expect(coerceError(null).message).toBe('non-error thrown: null');
    expect(coerceError(undefined).message).toBe('non-error thrown: undefined');
    expect(coerceError(Object.create(null)).message).toBe('non-error thrown: object');
  });

  it('describes a value that throws when asked what it is: a revoked proxy, a proxy whose traps throw', () => {
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    const trapped = new Proxy(
      {},
      {
        getPrototypeOf() {
          throw new Error('no prototype for you');
        },
      },
    );
    expect(coerceError(proxy)).toMatchObject({ name: 'Error', message: 'non-error thrown: object' });
    expect(coerceError(trapped)).toMatchObject({ name: 'Error', message: 'non-error thrown: [object Object]' });
    expect(toFailure(proxy)).toMatchObject({ name: 'Error', message: 'non-error thrown: object' });
  });
});

describe('toFailure / fromFailure', () => {
  it('keeps name, message, stack, code, nonRetryable, details and the cause chain', () => {
    const root = Object.assign(new RangeError('root cause'), { code: 'E_ROOT' });
    const middle = new NonRetryableError('middle', { cause: root, details: { orderId: 7 } });
    const top = new Error('top', { cause: middle });
    const failure = toFailure(top);
    expect(failure).toEqual<SerializedFailure>({
      name: 'Error',
      message: 'top',
      stack: top.stack!,
      cause: {
        name: 'NonRetryableError',
        message: 'middle',
        stack: middle.stack!,
        code: 'DURAFLOW_NON_RETRYABLE',
        nonRetryable: true,
        details: { orderId: 7 },
        cause: { name: 'RangeError', message: 'root cause', stack: root.stack!, code: 'E_ROOT' },
      },
    });
    // The plain form survives JSON, which is how it crosses threads and reaches the database.
    const back = fromFailure(JSON.parse(JSON.stringify(failure)) as SerializedFailure);
    expect(toFailure(back)).toEqual(failure);
    expect(back).toBeInstanceOf(Error);
    expect(back.cause).toMatchObject({ name: 'NonRetryableError', code: 'DURAFLOW_NON_RETRYABLE', nonRetryable: true });
    expect((back.cause as Error).cause).toMatchObject({ name: 'RangeError', message: 'root cause', code: 'E_ROOT' });
  });

  it('rebuilds a minimal failure without inventing fields', () => {
    const error = fromFailure({ name: 'Boom', message: 'm' });
    expect(error).toMatchObject({ name: 'Boom', message: 'm' });
    expect('code' in error).toBe(false);
    expect('nonRetryable' in error).toBe(false);
    expect('details' in error).toBe(false);
    expect(error.cause).toBeUndefined();
  });

  it('drops a non-string code, a non-true nonRetryable and non-JSON details', () => {
    const error = Object.assign(new Error('x'), { code: 5, nonRetryable: 'yes', details: { n: 1n } });
    const failure = toFailure(error);
    expect(failure).not.toHaveProperty('code');
    expect(failure).not.toHaveProperty('nonRetryable');
    expect(failure).not.toHaveProperty('details');
  });

  it('names an error without a name Error and wraps non-Error causes', () => {
    const error = new Error('x', { cause: 'just a string' });
    error.name = '';
    const failure = toFailure(error);
    expect(failure.name).toBe('Error');
    expect(failure.cause).toMatchObject({ name: 'Error', message: 'just a string' });
  });

  it('serialises thrown non-errors', () => {
    expect(toFailure('oops')).toMatchObject({ name: 'Error', message: 'oops' });
  });

  it('stops a cyclic cause chain after a bounded depth', () => {
    const a = new Error('a');
    const b = new Error('b', { cause: a });
    (a as { cause?: unknown }).cause = b;
    let depth = 0;
    for (let f: SerializedFailure | undefined = toFailure(a); f; f = f.cause) depth++;
    expect(depth).toBe(9);
  });
});
