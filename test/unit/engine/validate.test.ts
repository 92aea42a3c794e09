import { describe, expect, it } from 'vitest';

import { InvalidArgumentError } from '../../../engine/errors.js';
import { checkDurationMs, checkEpochMs, checkName, MAX_NAME_LENGTH } from '../../../engine/validate.js';
import { thrown } from '../../helpers/builders.js';

describe('checkName', () => {
  it('returns a valid name unchanged', () => {
    expect(checkName('order-42', 'workflowId')).toBe('order-42');
    expect(checkName('é😀', 'workflowId')).toBe('é😀');
    expect(checkName('x'.repeat(MAX_NAME_LENGTH), 'workflowId')).toHaveLength(256);
  });

  it.each([
    ['a number', 42],
    ['null', null],
    ['undefined', undefined],
    ['an object', { id: 'x' }],
    ['empty', ''],
    ['over-long', 'x'.repeat(MAX_NAME_LENGTH + 1)],
    ['NUL-containing', 'a\0b'],
    ['a lone high surrogate', 'a\uD800'],
    ['a lone low surrogate', '\uDC00b'],
  ])('refuses %s with InvalidArgumentError naming the argument', (_label, value) => {
    const error = thrown(() => checkName(value, 'event name'));
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error.message).toContain('event name');
  });
});

describe('checkDurationMs and checkEpochMs', () => {
  it('show a number given as a string as the string it is, not as a number that would pass', () => {
    expect(thrown(() => checkDurationMs('10', 'retryAfter delay')).message).toBe(
      'retryAfter delay must be a finite number of milliseconds >= 0, got the string "10"',
    );
    expect(thrown(() => checkEpochMs('1700000000000', 'startAt')).message).toBe(
      'startAt must be a Date or a finite number of epoch milliseconds, got the string "1700000000000"',
    );
  });
});
