import t from 'tap';
import { readSse, type SseMessage } from '../cli/sse.js';
import type { Mac } from '../common/mac.js';
import { EventBus } from '../server/events/event-bus.js';
import { startTestServer, writeFakeImage, type TestServer } from './lib/in-process-server.js';
import { simulateBoot } from './lib/simulated-boot.js';
import { makeKeyPair } from './lib/ssh-keys.js';
import type { Teardown } from './lib/teardown.js';

const admin = makeKeyPair().pub;
const A = '52:54:00:44:00:01';
const B = '52:54:00:44:00:02';

interface Streamed {
  id: number;
  mac: string;
  event: string;
  time: string;
}

/** An open stream and its messages, read as they come; `until` waits for a condition on them. */
class Stream {
  readonly messages: SseMessage[] = [];
  private waiters: (() => void)[] = [];
  readonly done: Promise<void>;
  constructor(
    readonly res: Response,
    private readonly abort: AbortController,
  ) {
    this.done = (async () => {
      try {
        for await (const m of readSse(res.body!)) {
          this.messages.push(m);
          for (const w of this.waiters) w();
        }
      } catch {
        // aborted
      }
    })();
  }
  get events(): Streamed[] {
    return this.messages.filter((m) => m.event === 'message').map((m) => JSON.parse(m.data) as Streamed);
  }
  async until(pred: (s: Stream) => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!pred(this)) {
      if (Date.now() > deadline) throw new Error(`stream: timed out waiting for ${what}; got ${JSON.stringify(this.messages)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 10_000);
        this.waiters.push(() => (clearTimeout(timer), resolve()));
      });
      this.waiters = [];
    }
  }
  close(): void {
    this.abort.abort();
  }
}

async function open(t: Pick<Teardown, 'teardown'>, s: TestServer, query = '', headers: Record<string, string> = {}): Promise<Stream> {
  const abort = new AbortController();
  const res = await fetch(`${s.url}/api/v1/events/stream${query}`, { headers: { authorization: `Bearer ${s.token}`, ...headers }, signal: abort.signal });
  const st = new Stream(res, abort);
  t.teardown(() => st.close());
  return st;
}

t.test('every timeline event, in order, with increasing ids; ?mac= filters', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  const all = await open(t, s);
  t.equal(all.res.status, 200);
  t.match(all.res.headers.get('content-type'), /^text\/event-stream/);
  const onlyA = await open(t, s, `?mac=${A.replace(/:/g, '-').toUpperCase()}`);
  await s.api('PUT', `/api/v1/machines/${A}`, { sshKeys: [admin], boot: 'once' });
  await s.api('PUT', `/api/v1/machines/${B}`, { sshKeys: [admin] });
  await simulateBoot(s.url, A, { registry: s.rb.registry });
  await all.until((x) => x.events.some((e) => e.event === 'phone-home.ready'), 'phone-home.ready');
  await onlyA.until((x) => x.events.some((e) => e.event === 'phone-home.ready'), 'phone-home.ready (filtered)');

  const stored = ((await s.api('GET', `/api/v1/machines/${A}/events`)).json as { events: { event: string; time: string }[] }).events;
  const streamedA = all.events.filter((e) => e.mac === A);
  t.same(streamedA.map((e) => [e.event, e.time]), stored.map((e) => [e.event, e.time]), 'same events, same order, same times as the stored timeline');
  t.same(all.events.map((e) => e.mac).filter((m) => m === B).length, 1, 'B registered');
  const ids = all.events.map((e) => e.id);
  t.same(ids, [...ids].sort((a, b) => a - b), 'ids increase');
  t.equal(new Set(ids).size, ids.length, 'ids unique');
  t.same(all.messages.filter((m) => m.event === 'message').map((m) => Number(m.id)), ids, 'SSE id: lines match');
  t.same(onlyA.events.map((e) => e.id), streamedA.map((e) => e.id), 'the filtered stream has exactly A\'s events');

  const bad = await s.api('GET', '/api/v1/events/stream?mac=nope');
  t.equal(bad.status, 400);
  t.equal((await fetch(`${s.url}/api/v1/events/stream`)).status, 401, 'token required');
  t.equal((await s.api('GET', '/api/v1/events/stream', undefined, { 'last-event-id': 'x' })).status, 400);
});

t.test('reconnecting with Last-Event-ID misses nothing', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  await s.api('PUT', `/api/v1/machines/${A}`, { sshKeys: [admin], boot: 'ramboot' });
  const first = await open(t, s);
  await simulateBoot(s.url, A, { until: 'script' });
  await first.until((x) => x.events.length >= 1, 'first event');
  const last = first.events.at(-1)!.id;
  first.close();
  await first.done;
  // events recorded while no client is connected
  await simulateBoot(s.url, A, { registry: s.rb.registry });
  await s.api('PATCH', `/api/v1/machines/${A}`, { hostname: 'after' });
  const again = await open(t, s, '', { 'last-event-id': String(last) });
  await again.until((x) => x.events.some((e) => e.event === 'api.updated'), 'api.updated');
  const stored = ((await s.api('GET', `/api/v1/machines/${A}/events`)).json as { events: { event: string; time: string }[] }).events;
  const after = stored.slice(stored.findIndex((e) => e.event === 'ipxe.script') + 1);
  t.same(again.events.map((e) => e.event), after.map((e) => e.event), 'exactly the events after the last one seen');
  t.equal(again.events[0]!.id, last + 1);
  // live ones keep coming on the resumed stream
  await s.api('PATCH', `/api/v1/machines/${A}`, { hostname: 'later' });
  await again.until((x) => x.events.filter((e) => e.event === 'api.updated').length === 2, 'second api.updated');
  t.equal(new Set(again.events.map((e) => e.id)).size, again.events.length, 'no duplicates');
});

t.test('a Last-Event-ID older than the ring gets event: reset', async (t) => {
  const s = await startTestServer(t);
  await s.api('PUT', `/api/v1/machines/${A}`, { sshKeys: [admin] });
  const future = await open(t, s, '?lastEventId=999999');
  await future.until((x) => x.messages.some((m) => m.event === 'reset'), 'reset');
  t.pass('an id from the future (another server run) resets');

  // the ring itself: bounded, and tells when it cannot replay
  const bus = new EventBus(3);
  const ev = { time: new Date().toISOString(), event: 'api.updated', level: 'info' as const, message: 'x' };
  for (let i = 0; i < 5; i++) bus.publish(A as Mac, ev);
  t.same((bus.since(2) as { id: number }[]).map((e) => e.id), [3, 4, 5]);
  t.equal(bus.since(1), 'reset', 'event 2 is gone');
  t.same(bus.since(5), []);
  t.equal(bus.since(6), 'reset');
});

t.test('heartbeat comments keep an idle stream alive', async (t) => {
  // the server's period is 15 s; the router is checked with a short one
  const { default: express } = await import('express');
  const { eventStreamRouter } = await import('../server/http/events-stream.js');
  const bus = new EventBus();
  const app = express();
  app.use(eventStreamRouter(bus, (_req, _res, next) => next(), { heartbeatMs: 50 }));
  const { createServer } = await import('node:http');
  const srv = createServer(app);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => (srv.closeAllConnections(), srv.close(() => r()))));
  const port = (srv.address() as { port: number }).port;
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const res = await fetch(`http://127.0.0.1:${port}/api/v1/events/stream`, { signal: abort.signal });
  const reader = res.body!.getReader();
  let text = '';
  while ((text.match(/: heartbeat/g) ?? []).length < 2) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  t.equal((text.match(/: heartbeat/g) ?? []).length, 2, 'heartbeats arrive');
});
