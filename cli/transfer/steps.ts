import { RemoteError, shJoin, tail, type Remote } from './ssh.js';

/**
 * A batch of commands run on a machine in one SSH round trip: each step is an argument vector
 * (quoted by shJoin) with optional stdin text (sent with printf, quoted too). The first failing step
 * stops the batch; its description and the stderr tail make the error.
 */
export interface Step {
  /** What it does, in words ("make the ext4 filesystem on /dev/vda2"). */
  what: string;
  argv: string[];
  /** Text piped into the command. */
  input?: string;
  /** A failure is ignored (cleanup of what may not be there). */
  mayFail?: boolean;
}

const PRELUDE = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH; LC_ALL=C; export LC_ALL\n';

/** The shell text of a batch: step markers on stdout, the commands' own output on stderr. */
export function renderSteps(steps: readonly Step[]): string {
  const lines = [PRELUDE];
  steps.forEach((s, i) => {
    const cmd = s.input !== undefined ? `${shJoin(['printf', '%s', s.input])} | ${shJoin(s.argv)}` : shJoin(s.argv);
    lines.push(`echo '@@step ${i}'`);
    lines.push(s.mayFail ? `{ ${cmd}; } >&2 || true` : `{ ${cmd}; } >&2 || { rc=$?; echo "@@failed ${i} $rc"; exit 1; }`);
  });
  lines.push("echo '@@done'");
  return `${lines.join('\n')}\n`;
}

/** Runs the steps; throws RemoteError naming the failed step. `onStep` sees each step as it starts. */
export async function runSteps(remote: Remote, steps: readonly Step[], onStep?: (s: Step) => void, timeoutMs = 30 * 60_000): Promise<void> {
  if (steps.length === 0) return;
  const r = await remote.exec(['sh', '-s'], {
    stdin: renderSteps(steps),
    timeoutMs,
    onStdoutLine: (l) => {
      const m = /^@@step (\d+)$/.exec(l);
      if (m) onStep?.(steps[Number(m[1])]!);
    },
  });
  const failed = /^@@failed (\d+) (\d+)$/m.exec(r.stdout);
  if (failed) {
    const s = steps[Number(failed[1])]!;
    throw new RemoteError(`${s.what} failed on the ${remote.label} (exit ${failed[2]}): ${tail(r.stderr) || '(no message)'}`, Number(failed[2]), r.stderr);
  }
  if (r.code !== 0 || !/^@@done$/m.test(r.stdout)) {
    throw new RemoteError(`commands on the ${remote.label} stopped (exit ${r.code}${r.code === 255 ? ': ssh could not connect or was cut' : ''}): ${tail(r.stderr) || '(no message)'}`, r.code, r.stderr);
  }
}
