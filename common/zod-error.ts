import type { z } from 'zod';

/** Human-readable summary of a zod error: "field: message; field: message". */
export function describeZodError(err: z.ZodError): string {
  return err.issues
    .map((i) => {
      const path = i.path.map(String).join('.');
      const msg = i.code === 'unrecognized_keys' ? `unknown field(s) ${i.keys.map((k) => `"${k}"`).join(', ')}` : i.message;
      return path ? `${path}: ${msg}` : msg;
    })
    .join('; ');
}
