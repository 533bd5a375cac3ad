import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { z } from 'zod';
import { MacError, parseMac, type Mac } from '../common/mac.js';
import { addClientOptions, clientFrom, CliError, runCli, usageExitCodes, type ApiClient, type ClientFlags } from './api-client.js';
import { readSse } from './sse.js';
import { table } from './table.js';

interface GlobalFlags extends ClientFlags {
  json?: boolean;
}

/** A machine as the API shows it; fields this CLI does not know are kept (newer servers). */
const machineSchema = z.looseObject({
  mac: z.string(),
  hostname: z.string().optional(),
  sshKeys: z.array(z.string()),
  boot: z.string(),
  image: z.string(),
  kernelArgs: z.string().optional(),
  discovered: z.boolean(),
  createdAt: z.string(),
  updatedAt: z.string(),
  revision: z.number(),
  status: z.looseObject({
    state: z.string(),
    readyAt: z.string().optional(),
    ip: z.string().optional(),
    reportedHostname: z.string().optional(),
    hostKeys: z.array(z.string()).default([]),
    bootSessionsCompleted: z.number().optional(),
  }),
});
type Machine = z.infer<typeof machineSchema>;

const eventSchema = z.looseObject({ time: z.string(), event: z.string(), level: z.string(), message: z.string(), data: z.record(z.string(), z.unknown()).optional() });
type TimelineEvent = z.infer<typeof eventSchema>;

/** Parse what the server sent; a body that does not fit is a server (or version) problem: exit 1. */
function fromServer<T>(schema: z.ZodType<T>, v: unknown, what: string): T {
  const r = schema.safeParse(v);
  if (!r.success) throw new CliError(`unexpected answer from the server for ${what}: ${r.error.issues[0]?.message ?? 'bad shape'}`, 1);
  return r.data;
}

function mac(raw: string): Mac {
  try {
    return parseMac(raw);
  } catch (e) {
    throw new CliError(e instanceof MacError ? e.message : 'bad MAC', 2);
  }
}

const path = (m: Mac, rest = '') => `/api/v1/machines/${encodeURIComponent(m)}${rest}`;

function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** Public keys from a file: one per line; blank lines and # comments skipped. */
async function readKeys(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read key file ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`, 2);
  }
  const keys = text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  if (keys.length === 0) throw new CliError(`key file ${file} holds no public key`, 2);
  return keys;
}

function showMachine(m: Machine): string {
  const rows: [string, string][] = [
    ['mac', m.mac],
    ['hostname', m.hostname ?? '-'],
    ['boot', m.boot],
    ['image', m.image],
    ['state', m.status.state],
    ['discovered', String(m.discovered)],
    ['ip', m.status.ip ?? '-'],
    ['reported hostname', m.status.reportedHostname ?? '-'],
    ['ready at', m.status.readyAt ?? '-'],
    ['kernel args', m.kernelArgs ?? '-'],
    ['ssh keys', m.sshKeys.length === 0 ? '-' : m.sshKeys.map((k) => k.split(' ').slice(0, 1).concat(k.split(' ').slice(2)).join(' ')).join(', ')],
    ['host keys', String(m.status.hostKeys.length)],
    ['created', m.createdAt],
    ['updated', `${m.updatedAt} (revision ${m.revision})`],
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}

function eventLine(e: TimelineEvent): string {
  return `${e.time}  ${e.level.padEnd(7)}  ${e.event.padEnd(22)}  ${e.message}`;
}

async function getMachine(c: ApiClient, m: Mac): Promise<{ machine: Machine; etag: string | null } | undefined> {
  const r = await c.request('GET', path(m), { allow: [404] });
  if (r.status === 404) return undefined;
  return { machine: fromServer(machineSchema, r.json, 'the machine'), etag: r.headers.get('etag') };
}

/** Settable fields of `machines set` and how their text becomes a PATCH value ("" removes the optional ones). */
const SETTABLE: Record<string, (v: string) => Promise<unknown>> = {
  hostname: async (v) => (v === '' ? null : v),
  boot: async (v) => {
    if (!['ramboot', 'once', 'local'].includes(v)) throw new CliError(`boot=${v}: must be ramboot, once or local`, 2);
    return v;
  },
  image: async (v) => {
    if (v === '') throw new CliError('image= needs a name', 2);
    return v;
  },
  kernelArgs: async (v) => (v === '' ? null : v),
  userData: async (v) => {
    if (v === '') return null;
    try {
      return JSON.parse(v) as unknown;
    } catch {
      throw new CliError('userData= takes a JSON object, e.g. userData=\'{"packages":["htop"]}\'', 2);
    }
  },
  sshKeys: async (v) => {
    if (!v.startsWith('@')) throw new CliError('sshKeys= takes @FILE (one public key per line)', 2);
    return readKeys(v.slice(1));
  },
};

export async function parseAssignments(pairs: readonly string[]): Promise<Record<string, unknown>> {
  const patch: Record<string, unknown> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new CliError(`"${p}" is not field=value (fields: ${Object.keys(SETTABLE).join(', ')})`, 2);
    const field = p.slice(0, eq);
    const conv = Object.hasOwn(SETTABLE, field) ? SETTABLE[field] : undefined;
    if (!conv) throw new CliError(`unknown field "${field}" (fields: ${Object.keys(SETTABLE).join(', ')})`, 2);
    patch[field] = await conv(p.slice(eq + 1));
  }
  return patch;
}

/** `ramboot machines ...`: the registry from the command line, through the admin API. */
export function registerMachinesCommand(program: Command): void {
  const machines = program.command('machines').description('list, register, change and follow machines through the admin API');
  usageExitCodes(machines);
  addClientOptions(machines).option('--json', 'machine-readable output (JSON)');
  const flags = (cmd: Command) => cmd.optsWithGlobals<GlobalFlags>();
  const run = (cmd: Command, body: (c: ApiClient, json: boolean) => Promise<void>) =>
    runCli(`machines ${cmd.name()}`, async () => {
      const f = flags(cmd);
      await body(await clientFrom(f), f.json === true);
    });

  machines
    .command('ls')
    .description('list machines')
    .action(async (_o: unknown, cmd: Command) =>
      run(cmd, async (c, json) => {
        const r = await c.request('GET', '/api/v1/machines');
        const list = fromServer(z.object({ machines: z.array(machineSchema) }), r.json, 'the machine list').machines;
        if (json) return out(JSON.stringify(list, null, 2));
        if (list.length === 0) return out('no machines');
        out(
          table(
            ['MAC', 'HOSTNAME', 'BOOT', 'IMAGE', 'STATE', 'IP', 'UPDATED'],
            list.map((m) => [m.mac, m.hostname ?? m.status.reportedHostname ?? '-', m.boot, m.image, m.status.state, m.status.ip ?? '-', m.updatedAt]),
          ),
        );
      }),
    );

  machines
    .command('show')
    .argument('<mac>')
    .description('one machine in full')
    .action(async (raw: string, _o: unknown, cmd: Command) =>
      run(cmd, async (c, json) => {
        const m = mac(raw);
        const got = await getMachine(c, m);
        if (!got) throw new CliError(`machine ${m} is not registered`, 1, 404);
        out(json ? JSON.stringify(got.machine, null, 2) : showMachine(got.machine));
      }),
    );

  machines
    .command('add')
    .argument('<mac>')
    .description('register a machine (or adopt a discovered one)')
    .requiredOption('--key <file>', 'file of SSH public keys allowed to log in (one per line; repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--hostname <name>', 'host name')
    .addOption(new Option('--boot <mode>', 'what it boots').choices(['ramboot', 'once', 'local']).default('ramboot'))
    .option('--image <name>', 'image name')
    .action(async (raw: string, o: { key: string[]; hostname?: string; boot: string; image?: string }, cmd: Command) =>
      run(cmd, async (c, json) => {
        const m = mac(raw);
        const sshKeys = (await Promise.all(o.key.map(readKeys))).flat();
        const existing = await getMachine(c, m);
        if (existing && !existing.machine.discovered) throw new CliError(`machine ${m} is already registered (change it with: ramboot machines set ${m} field=value)`, 1, 409);
        const body: Record<string, unknown> = { sshKeys, boot: o.boot };
        if (o.hostname !== undefined) body['hostname'] = o.hostname;
        if (o.image !== undefined) body['image'] = o.image;
        // adopting: only if it is still the discovered record we saw
        const r = await c.request('PUT', path(m), { body, ...(existing?.etag ? { headers: { 'if-match': existing.etag } } : {}) });
        const rec = fromServer(machineSchema, r.json, 'the new machine');
        out(json ? JSON.stringify(rec, null, 2) : `${existing ? 'adopted' : 'registered'} ${rec.mac} (boot: ${rec.boot}, image: ${rec.image})`);
      }),
    );

  machines
    .command('set')
    .argument('<mac>')
    .argument('<field=value...>', `fields: ${Object.keys(SETTABLE).join(', ')} ("" removes hostname, kernelArgs, userData; sshKeys=@FILE)`)
    .description('change some fields of a machine')
    .action(async (raw: string, pairs: string[], _o: unknown, cmd: Command) =>
      run(cmd, async (c, json) => {
        const m = mac(raw);
        const patch = await parseAssignments(pairs);
        const r = await c.request('PATCH', path(m), { body: patch });
        const rec = fromServer(machineSchema, r.json, 'the machine');
        out(json ? JSON.stringify(rec, null, 2) : `updated ${rec.mac}: ${Object.keys(patch).join(', ')} (revision ${rec.revision})`);
      }),
    );

  machines
    .command('rm')
    .argument('<mac>')
    .description('remove a machine and its timeline')
    .action(async (raw: string, _o: unknown, cmd: Command) =>
      run(cmd, async (c, json) => {
        const m = mac(raw);
        await c.request('DELETE', path(m));
        out(json ? JSON.stringify({ removed: m }) : `removed ${m}`);
      }),
    );

  machines
    .command('known-hosts')
    .argument('<mac>')
    .description("the machine's SSH host keys as known_hosts lines (after it phoned home)")
    .action(async (raw: string, _o: unknown, cmd: Command) =>
      run(cmd, async (c, json) => {
        const m = mac(raw);
        const r = await c.request('GET', path(m, '/known_hosts'), { headers: { accept: 'text/plain' } });
        const lines = r.text.split('\n').filter((l) => l !== '');
        if (json) return out(JSON.stringify({ mac: m, knownHosts: lines }, null, 2));
        if (lines.length === 0) throw new CliError(`machine ${m} has reported no host keys yet (it has not phoned home)`, 1);
        out(lines.join('\n'));
      }),
    );

  machines
    .command('events')
    .argument('<mac>')
    .description("a machine's boot timeline, oldest first")
    .option('-f, --follow', 'keep printing new events as they happen (live event stream)')
    .option('--limit <n>', 'at most the newest N events', '100')
    .action(async (raw: string, o: { follow?: boolean; limit: string }, cmd: Command) =>
      run(cmd, async (c, json) => {
        const m = mac(raw);
        if (!/^\d{1,4}$/.test(o.limit)) throw new CliError('--limit must be a number 0-9999', 2);
        await printEvents(c, m, Number(o.limit), o.follow === true, json);
      }),
    );
}

async function readTimeline(c: ApiClient, m: Mac, limit: number): Promise<TimelineEvent[]> {
  const r = await c.request('GET', path(m, `/events?limit=${limit}`));
  return fromServer(z.object({ events: z.array(eventSchema) }), r.json, 'the timeline').events;
}

const eventKey = (e: TimelineEvent) => `${e.time}|${e.event}|${e.message}`;

/**
 * The timeline, then (--follow) live events. The stream is opened first and the timeline read
 * after, so nothing recorded in between is lost; events already printed from the timeline are
 * skipped when the stream repeats them.
 */
async function printEvents(c: ApiClient, m: Mac, limit: number, follow: boolean, json: boolean): Promise<void> {
  const print = (e: TimelineEvent) => out(json ? JSON.stringify(e) : eventLine(e));
  if (!follow) {
    const events = await readTimeline(c, m, limit);
    if (json) return out(JSON.stringify({ mac: m, events }, null, 2));
    if (events.length === 0) return out(`no events for ${m}`);
    for (const e of events) print(e);
    return;
  }
  const abort = new AbortController();
  const stopOn = () => abort.abort();
  process.once('SIGINT', stopOn);
  process.once('SIGTERM', stopOn);
  try {
    const res = await c.raw('GET', `/api/v1/events/stream?mac=${encodeURIComponent(m)}`, { headers: { accept: 'text/event-stream' }, signal: abort.signal });
    if (!res.ok) {
      const text = await res.text();
      let j: unknown;
      try {
        j = JSON.parse(text);
      } catch {
        j = undefined;
      }
      throw c.httpError({ status: res.status, text, json: j });
    }
    const seen = new Set<string>();
    for (const e of await readTimeline(c, m, limit)) {
      seen.add(eventKey(e));
      print(e);
    }
    for await (const msg of readSse(res.body!)) {
      if (msg.event === 'reset') {
        process.stderr.write('ramboot machines events: some events were missed; re-reading the timeline\n');
        for (const e of await readTimeline(c, m, limit)) if (!seen.has(eventKey(e))) print(e);
        continue;
      }
      if (msg.event !== 'message') continue;
      const e = eventSchema.safeParse(JSON.parse(msg.data));
      if (!e.success || seen.has(eventKey(e.data))) continue;
      print(e.data);
    }
    throw new CliError(`ramboot at ${c.server} closed the event stream`, 1);
  } catch (e) {
    if (abort.signal.aborted) return; // stopped by the user: not an error
    throw e;
  } finally {
    process.off('SIGINT', stopOn);
    process.off('SIGTERM', stopOn);
  }
}
