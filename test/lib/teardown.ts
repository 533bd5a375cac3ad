/**
 * The part of a tap Test that helpers use to tie what they start to the test: stopped at teardown,
 * with diagnostics printed when the test failed.
 */
export interface Teardown {
  teardown(fn: () => unknown): void;
  comment(...args: unknown[]): void;
  passing(): boolean;
}
