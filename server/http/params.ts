import type { Request } from 'express';

/** One string value of a query parameter (repeated or nested parameters are not strings). */
export function queryString(query: Request['query'], name: string): string | undefined {
  const v = query[name];
  return typeof v === 'string' ? v : undefined;
}

/** One string value of a path parameter. */
export function pathParam(req: Request, name: string): string {
  const v = req.params[name];
  return typeof v === 'string' ? v : '';
}
