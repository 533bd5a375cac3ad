/**
 * What can go wrong in a registry operation, in the registry's own words. The HTTP layer maps
 * each kind to a status code in one place (server/http/error-handler.ts); other callers (the CLI
 * through the API, DHCP, tests) never see HTTP.
 */
export type RegistryErrorKind =
  /** The machine is not registered. */
  | 'not-found'
  /** The write's precondition (If-Match / If-None-Match) does not hold. */
  | 'precondition-failed'
  /** The request names something that does not exist or cannot be used (an image, say). */
  | 'invalid'
  /** The machine's file on disk is invalid: it must be fixed or replaced first. */
  | 'broken';

export class RegistryError extends Error {
  override name = 'RegistryError';
  constructor(
    readonly kind: RegistryErrorKind,
    message: string,
  ) {
    super(message);
  }
}

export const notRegistered = (mac: string) => new RegistryError('not-found', `machine ${mac} is not registered`);
