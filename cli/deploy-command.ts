import type { Command } from 'commander';
import { MacError, parseMac } from '../common/mac.js';
import { IMAGE_NAME_RE } from '../common/manifest.js';
import { addClientOptions, clientFrom, CliError, runCli, type ApiClient, type ClientFlags } from './api-client.js';
import { formatBytes, formatDuration, ProgressBar } from './progress.js';

interface DeployFlags extends ClientFlags {
  artifact?: string;
  url?: string;
  sha256?: string;
  disk?: string;
  after?: string;
  grow?: boolean;
  json?: boolean;
  wait?: boolean;
  timeout?: string;
}

interface TimelineEvent {
  time: string;
  event: string;
  level: string;
  message: string;
  data?: Record<string, unknown>;
}

const AFTER = ['reboot', 'poweroff', 'stay'];

/**
 * --disk: "auto", a /dev/disk/by-id|by-path path, JSON ({"serial":"X"}) or key=value pairs
 * ("serial=X,model=Y,minSizeGiB=100"). The server validates the result; this only shapes it.
 */
export function parseDiskFlag(v: string): unknown {
  if (v === 'auto' || v.startsWith('/')) return v;
  if (v.startsWith('{')) {
    try {
      return JSON.parse(v) as unknown;
    } catch (e) {
      throw new CliError(`--disk: not valid JSON: ${(e as Error).message}`, 2);
    }
  }
  const out: Record<string, string | number> = {};
  for (const part of v.split(',')) {
    const m = /^(serial|model|minSizeGiB)=(.+)$/.exec(part.trim());
    if (!m?.[1] || m[2] === undefined) throw new CliError(`--disk: "${v}": use auto, /dev/disk/by-id/..., /dev/disk/by-path/..., or serial=X,model=Y,minSizeGiB=N`, 2);
    if (m[1] === 'minSizeGiB') {
      const n = Number(m[2]);
      if (!Number.isFinite(n) || n <= 0) throw new CliError(`--disk: minSizeGiB must be a positive number`, 2);
      out[m[1]] = n;
    } else out[m[1]] = m[2];
  }
  return out;
}

/** The deploy object of the PATCH, from the flags (exit 2 on a usage error, before any request). */
export function deployFromFlags(f: DeployFlags): Record<string, unknown> {
  const byArtifact = f.artifact !== undefined;
  const byUrl = f.url !== undefined || f.sha256 !== undefined;
  if (byArtifact === byUrl) throw new CliError('give either --artifact NAME or --url URL --sha256 HEX', 2);
  const d: Record<string, unknown> = {};
  if (byArtifact) {
    if (!IMAGE_NAME_RE.test(f.artifact ?? '')) throw new CliError(`--artifact "${f.artifact}" is not a valid artifact name`, 2);
    d['artifact'] = f.artifact;
  } else {
    if (!f.url || !f.sha256) throw new CliError('--url needs --sha256 (and --sha256 needs --url)', 2);
    d['url'] = f.url;
    d['sha256'] = f.sha256.toLowerCase();
  }
  if (f.disk !== undefined) d['disk'] = parseDiskFlag(f.disk);
  if (f.after !== undefined) {
    if (!AFTER.includes(f.after)) throw new CliError(`--after must be one of ${AFTER.join(', ')}`, 2);
    d['after'] = f.after;
  }
  if (f.grow) d['grow'] = true;
  return d;
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/**
 * Follow the machine's timeline (polled every second) from the moment the deploy was set until its
 * attempt succeeds (0) or fails (1). Progress events drive the bar; other events are printed.
 */
async function follow(client: ApiClient, mac: string, id: string, since: string, flags: { json: boolean; timeoutS: number }): Promise<number> {
  const bar = new ProgressBar();
  const seen = new Set<string>();
  const deadline = flags.timeoutS > 0 ? Date.now() + flags.timeoutS * 1000 : Infinity;
  let unreachableSince: number | undefined;
  for (;;) {
    let events: TimelineEvent[] = [];
    try {
      events = ((await client.request('GET', `/api/v1/machines/${mac}/events?limit=500`)).json as { events: TimelineEvent[] }).events;
      unreachableSince = undefined;
    } catch (e) {
      // a server restart or a network blip: keep following for a while
      if (!(e instanceof CliError) || e.status !== undefined) throw e;
      unreachableSince ??= Date.now();
      if (Date.now() - unreachableSince > 60_000) throw e;
    }
    for (const ev of events) {
      if (ev.time < since) continue;
      const key = `${ev.time}|${ev.event}|${ev.message}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const isDeploy = ev.event.startsWith('deploy.');
      // events of an earlier (or later) attempt on the same machine are not this deploy's
      if (isDeploy && ev.data?.['id'] !== id) continue;
      if (flags.json) process.stdout.write(`${JSON.stringify({ mac, ...ev })}\n`);
      const d = ev.data ?? {};
      if (ev.event === 'deploy.progress') {
        if (!flags.json) {
          const total = num(d['total']);
          const rate = num(d['rateBps']);
          const eta = num(d['etaSeconds']);
          bar.update({ label: `deploy ${String(d['stage'] ?? '')}`.trim(), bytes: num(d['bytes']) ?? 0, ...(total !== undefined ? { total } : {}), ...(rate !== undefined ? { rateBps: rate } : {}), ...(eta !== undefined ? { etaSeconds: eta } : {}) }, true);
        }
        continue;
      }
      if (!flags.json) {
        bar.done();
        process.stderr.write(`${ev.time.slice(11, 19)} ${ev.event.padEnd(22)} ${ev.message}\n`);
      }
      if (ev.event === 'deploy.succeeded') {
        if (!flags.json) {
          const bytes = num(d['bytes']);
          const secs = num(d['seconds']);
          process.stdout.write(`deployed ${mac}${bytes !== undefined ? `: ${formatBytes(bytes)}` : ''}${secs !== undefined ? ` in ${formatDuration(secs)}` : ''}${d['disk'] ? ` to ${String(d['disk'])}` : ''}\n`);
        }
        return 0;
      }
      if (ev.event === 'deploy.failed') {
        if (!flags.json) process.stderr.write(`ramboot deploy: deploy failed at ${String(d['stage'] ?? 'an unknown stage')}: ${ev.message}\n`);
        return 1;
      }
    }
    if (Date.now() > deadline) {
      bar.done();
      throw new CliError(`no result for deploy ${id} within ${flags.timeoutS} s (it may still be running: ramboot deploy does not stop it)`, 1);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

export function registerDeployCommand(program: Command): void {
  addClientOptions(
    program
      .command('deploy <mac>')
      .description("write a disk image to a machine's disk from the RAM OS: sets the machine's deploy, then follows it until it succeeds (exit 0) or fails (exit 1)")
      .option('--artifact <name>', 'an uploaded artifact (ramboot artifacts upload)')
      .option('--url <url>', 'an http(s) URL the machine downloads itself (with --sha256)')
      .option('--sha256 <hex>', 'sha256 of what --url serves')
      .option('--disk <disk>', 'auto | /dev/disk/by-id/... | /dev/disk/by-path/... | serial=X,model=Y,minSizeGiB=N (default auto)')
      .option('--after <action>', 'reboot | poweroff | stay (default reboot)')
      .option('--grow', 'grow the last partition and its filesystem to the disk')
      .option('--json', 'print each timeline event as one JSON object per line')
      .option('--no-wait', 'set the deploy and return')
      .option('--timeout <seconds>', 'give up following after this long (0: never)', '7200'),
  ).action(async (macArg: string, flags: DeployFlags) => {
    await runCli('deploy', async () => {
      let mac: string;
      try {
        mac = parseMac(macArg);
      } catch (e) {
        throw new CliError(e instanceof MacError ? e.message : `bad MAC "${macArg}"`, 2);
      }
      const deploy = deployFromFlags(flags);
      const timeoutS = Number(flags.timeout ?? '7200');
      if (!Number.isInteger(timeoutS) || timeoutS < 0) throw new CliError('--timeout must be a whole number of seconds', 2);
      const client = await clientFrom(flags);
      const before = await client.request('GET', `/api/v1/machines/${mac}`);
      const res = await client.request('PATCH', `/api/v1/machines/${mac}`, { body: { deploy } });
      const rec = res.json as { boot: string; deploy: { id: string; setAt?: string } };
      const id = rec.deploy.id;
      const since = rec.deploy.setAt ?? new Date().toISOString();
      if (!flags.json) {
        process.stderr.write(`deploy ${id} set on ${mac}; waiting for the machine to boot ramboot and report\n`);
        const boot = (before.json as { boot?: string }).boot;
        if (boot === 'local') process.stderr.write(`note: ${mac} is set to boot local: it will not netboot into ramboot to deploy (set boot to once)\n`);
      } else process.stdout.write(`${JSON.stringify({ mac, event: 'deploy.set', id, deploy: rec.deploy })}\n`);
      if (flags.wait === false) return 0;
      return follow(client, mac, id, since, { json: !!flags.json, timeoutS });
    });
  });
}
