import { shJoin, spawnLines, type ExecOptions, type ExecResult, type Remote } from '../../../cli/transfer/ssh.js';

/**
 * A Remote that is this machine (the same remote-shell string `sh -c` runs locally): tests run the
 * real commands a stage builds without SSH, and can record or rewrite them.
 */
export class LocalRemote implements Remote {
  readonly calls: { argv: string[]; stdin?: string }[] = [];
  constructor(
    readonly label = 'local',
    /** Answer instead of running (return undefined to run it). */
    private readonly fake?: (argv: readonly string[], stdin: string | undefined) => ExecResult | undefined,
  ) {}

  async exec(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.calls.push({ argv: [...argv], ...(opts.stdin !== undefined ? { stdin: opts.stdin } : {}) });
    const faked = this.fake?.(argv, opts.stdin);
    if (faked) return faked;
    return spawnLines('sh', ['-c', shJoin(argv)], opts);
  }

  script(body: string, args: readonly string[], opts: Omit<ExecOptions, 'stdin'> = {}): Promise<ExecResult> {
    return this.exec(['sh', '-s', '--', ...args], { ...opts, stdin: body });
  }
}
