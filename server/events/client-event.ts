import { z } from 'zod';
import { CLIENT_EVENTS } from '../../common/event-names.js';
import type { NewEvent } from './event-log.js';

const MAX_DATA_KEYS = 32;
const MAX_TEXT = 500;
const KEY_RE = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;

/** A data value: a scalar, or a short list of scalars. Nothing nested deeper: the timeline is for reading. */
const scalar = z.union([z.string().max(MAX_TEXT), z.number().finite(), z.boolean(), z.null()]);
const dataValue = z.union([scalar, z.array(scalar).max(32)]);

/**
 * The body of POST /api/v1/machines/{mac}/events: an event the admin's client adds to a machine's
 * timeline (a transfer it runs against the machine). Names are limited to CLIENT_EVENTS, so a client
 * cannot forge boot, deploy or OS events.
 */
export const clientEventSchema = z
  .object({
    event: z.enum(CLIENT_EVENTS, { error: `event must be one of ${CLIENT_EVENTS.join(', ')}` }),
    message: z.string().min(1, 'message must not be empty').max(MAX_TEXT, `message is longer than ${MAX_TEXT} characters`),
    level: z.enum(['info', 'warning', 'error']).optional(),
    data: z
      .record(z.string(), dataValue)
      .superRefine((d, ctx) => {
        const keys = Object.keys(d);
        if (keys.length > MAX_DATA_KEYS) ctx.addIssue({ code: 'custom', message: `data has more than ${MAX_DATA_KEYS} keys` });
        const bad = keys.find((k) => !KEY_RE.test(k));
        if (bad !== undefined) ctx.addIssue({ code: 'custom', message: `data key ${JSON.stringify(bad.slice(0, 64))}: keys are identifiers of at most 64 characters` });
      })
      .optional(),
  })
  .strict();

export type ClientEvent = z.infer<typeof clientEventSchema>;

/** The timeline entry for a client event: failed ones are errors unless the client said otherwise. */
export function toNewEvent(e: ClientEvent): NewEvent {
  const level = e.level ?? (e.event === 'transfer.failed' ? 'error' : 'info');
  return { event: e.event, level, message: e.message, ...(e.data ? { data: e.data } : {}) };
}
