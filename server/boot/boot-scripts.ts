import type { Mac } from '../../common/mac.js';
import { etagOf } from '../machines/registry.js';
import type { BootDecision, BootFacts } from './booter.js';
import { cmdlineProblem, machineScript, TOKEN_PLACEHOLDER } from './ipxe-scripts.js';
import type { RenderCache } from './render-cache.js';
import type { SessionInfo, SessionMinter } from './sessions.js';

export interface BootScriptsDeps {
  cache: RenderCache;
  sessions: SessionMinter;
  /** Changes whenever any image changes (ImageStore.version). */
  imagesVersion: () => number;
  publicUrl: () => string;
}

export interface RenderedScript {
  /** The decision the script carries out: a ramboot decision whose command line cannot fit becomes a refusal. */
  decision: BootDecision;
  script: string;
  /** The boot session minted for a ramboot/once script. */
  session?: SessionInfo;
}

/**
 * Turns a boot decision into the per-MAC iPXE script: rendered once per machine version, image
 * generation and firmware facts (cached with the session token as a placeholder), then a fresh boot
 * session is minted into every ramboot/once script.
 */
export class BootScripts {
  constructor(private readonly d: BootScriptsDeps) {}

  render(mac: Mac, wanted: BootDecision, facts: BootFacts): RenderedScript {
    const machine = wanted.machine;
    const publicUrl = this.d.publicUrl();
    const decision = this.fitCmdline(mac, wanted, publicUrl);
    const key = `ipxe|${machine ? etagOf(machine) : ''}|${decision.kind}|${this.d.imagesVersion()}|${facts.platform ?? ''}|${facts.buildarch ?? ''}|${facts.memsizeMiB ?? ''}|${publicUrl}`;
    let script = this.d.cache.get(mac, key);
    if (script === undefined) {
      script = machineScript(decision, { mac, hostname: machine?.hostname, publicUrl, platform: facts.platform, kernelArgs: machine?.kernelArgs ?? '' }, TOKEN_PLACEHOLDER);
      this.d.cache.set(mac, key, script);
    }
    if (decision.kind !== 'ramboot') return { decision, script };
    const { token, session } = this.d.sessions.mint(mac);
    return { decision, script: script.replaceAll(TOKEN_PLACEHOLDER, token), session };
  }

  /** Checked again at render time: the image or the public URL may have changed since the PUT. */
  private fitCmdline(mac: Mac, d: BootDecision, publicUrl: string): BootDecision {
    if (d.kind !== 'ramboot') return d;
    const problem = cmdlineProblem(d.image, { mac, publicUrl, kernelArgs: d.machine.kernelArgs });
    if (!problem) return d;
    return { kind: 'refuse', reason: 'the kernel command line would be too long (see the server log)', detail: problem, machine: d.machine };
  }
}
