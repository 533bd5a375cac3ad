import t from 'tap';
import { boundedBody, Timelines, type EventBody } from './events.js';

t.test('events go to every machine with its role and peer; failures to post only warn, once per machine', async (t) => {
  const posted: [string, EventBody][] = [];
  const warnings: string[] = [];
  const tl = new Timelines(async (mac, body) => {
    if (mac === 'bad') throw new Error('server answered 404');
    posted.push([mac, body]);
  }, [{ mac: 'src', role: 'source', peer: 'tgt' }, { mac: 'tgt', role: 'target', peer: 'src' }, { mac: 'bad', role: 'target', peer: 'src' }], (w) => warnings.push(w));
  await tl.step('copy', 'copying');
  await tl.emit('transfer.failed', 'x'.repeat(600), { stage: 'copy', reason: 'y'.repeat(700) });
  t.same(posted.map(([m, b]) => [m, b.event, b.data?.['role']]), [['src', 'transfer.step', 'source'], ['tgt', 'transfer.step', 'target'], ['src', 'transfer.failed', 'source'], ['tgt', 'transfer.failed', 'target']]);
  t.equal(posted[2]![1].message.length, 500, 'message cut to what the server takes');
  t.equal((posted[2]![1].data!['reason'] as string).length, 500);
  t.equal(warnings.length, 1);
});

t.test('progress is throttled to one per 3 s, the forced last one always goes', async (t) => {
  let now = 0;
  const posted: EventBody[] = [];
  const tl = new Timelines(async (_m, b) => void posted.push(b), [{ mac: 'tgt', role: 'target', peer: 'src' }], () => undefined, () => now);
  const p = { bytes: 1, totalBytes: 10, files: 1, rate: 5, etaSeconds: 2, percent: 10, mountpoint: '/' };
  for (now = 3000; now < 12000; now += 500) tl.progress(p);
  tl.progress({ ...p, percent: 100 }, true);
  await tl.flush();
  t.equal(posted.length, 4);
  t.same(posted.at(-1)!.data, { role: 'target', peer: 'src', bytes: 1, totalBytes: 10, files: 1, rate: 5, etaSeconds: 2, percent: 100, mountpoint: '/' });
});

t.test('boundedBody leaves short bodies alone', async (t) => {
  t.same(boundedBody({ event: 'transfer.step', message: 'ok', data: { step: 'copy', n: 1 } }), { event: 'transfer.step', message: 'ok', data: { step: 'copy', n: 1 } });
});
