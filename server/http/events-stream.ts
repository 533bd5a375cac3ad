import { Router, type RequestHandler } from 'express';
import { tryParseMac } from '../../common/mac.js';
import type { BusEvent, EventBus } from '../events/event-bus.js';
import { HttpError } from './http-error.js';
import { queryString } from './params.js';

export interface EventStreamOptions {
  /** Comment line sent this often so proxies and clients see the stream alive (default 15 s). */
  heartbeatMs?: number;
}

/** One SSE message: id, then the event as JSON on one data line (JSON never holds a raw newline). */
function frame(e: BusEvent): string {
  return `id: ${e.id}\ndata: ${JSON.stringify(e)}\n\n`;
}

/**
 * GET /api/v1/events/stream: every timeline event as it is recorded (Server-Sent Events), optionally
 * for one MAC (?mac=). A client reconnecting with Last-Event-ID (or ?lastEventId=) first gets the
 * events it missed, or `event: reset` when they are no longer kept: it must then re-read timelines.
 */
export function eventStreamRouter(bus: EventBus, guard: RequestHandler, opts: EventStreamOptions = {}): Router {
  const heartbeatMs = opts.heartbeatMs ?? 15_000;
  const r = Router();
  r.get('/api/v1/events/stream', guard, (req, res) => {
    const macRaw = queryString(req.query, 'mac');
    const mac = macRaw === undefined ? undefined : tryParseMac(macRaw);
    if (macRaw !== undefined && !mac) throw new HttpError(400, 'mac: not a MAC address');
    const lastRaw = req.get('last-event-id') ?? queryString(req.query, 'lastEventId');
    if (lastRaw !== undefined && !/^\d{1,15}$/.test(lastRaw.trim())) throw new HttpError(400, 'Last-Event-ID must be a whole number');
    const wanted = (e: BusEvent) => mac === undefined || e.mac === mac;

    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.socket?.setNoDelay(true);
    // Subscribe before replaying so nothing recorded in between is lost; events arriving during the
    // replay are queued and sent after it, in id order.
    let replaying = true;
    const queued: BusEvent[] = [];
    let sentUpTo = 0;
    const send = (e: BusEvent) => {
      if (e.id <= sentUpTo) return;
      sentUpTo = e.id;
      if (wanted(e)) res.write(frame(e));
    };
    const unsubscribe = bus.subscribe((e) => (replaying ? queued.push(e) : send(e)));
    res.write(`retry: 2000\n: ramboot events, last id ${bus.lastId}\n\n`);
    if (lastRaw !== undefined) {
      const missed = bus.since(Number(lastRaw.trim()));
      if (missed === 'reset') {
        res.write(`id: ${bus.lastId}\nevent: reset\ndata: {"reason":"events after your Last-Event-ID are no longer kept; re-read the timelines"}\n\n`);
        sentUpTo = bus.lastId;
      } else for (const e of missed) send(e);
    } else sentUpTo = bus.lastId;
    for (const e of queued) send(e);
    replaying = false;

    const heartbeat = setInterval(() => res.write(': heartbeat\n\n'), heartbeatMs);
    const stop = () => {
      clearInterval(heartbeat);
      unsubscribe();
    };
    req.on('close', stop);
    res.on('error', stop);
  });
  return r;
}
