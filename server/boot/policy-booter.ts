import type { ImageLookup } from '../images/image-store.js';
import type { MachineRecord } from '../machines/model.js';
import type { Registry } from '../machines/registry.js';
import type { BootDecision, Booter, BootRequest } from './booter.js';

export interface UnknownMachinePolicy {
  boot: 'local' | 'ramboot';
  image: string;
}

/** Architectures ramboot images are built for, as iPXE names them (${buildarch}). */
const SUPPORTED_ARCHES = ['x86_64', 'i386'];

export interface PolicyBooterDeps {
  machines: Pick<Registry, 'get' | 'discover' | 'brokenFor'>;
  images: { lookup(name: string): Promise<ImageLookup> };
  unknown: UnknownMachinePolicy;
}

/**
 * The Booter ramboot runs: a registered machine boots what its record says; an unknown MAC is
 * recorded as discovered (up to the cap) and boots what the unknown-machine policy says. Checks, in
 * order: local, architecture, image present, RAM.
 */
export class PolicyBooter implements Booter {
  constructor(private readonly d: PolicyBooterDeps) {}

  async decide(req: BootRequest): Promise<BootDecision> {
    const { mac, facts } = req;
    let machine: MachineRecord | undefined = this.d.machines.get(mac);
    if (!machine) {
      const broken = this.d.machines.brokenFor(mac);
      if (broken) return { kind: 'refuse', reason: 'its record on the ramboot server is damaged; an admin must fix it', detail: `machine file ${broken.file} is invalid: ${broken.reason}` };
      machine = await this.d.machines.discover(mac, { ...facts });
    }
    const policy = !machine || machine.discovered ? this.d.unknown : { boot: machine.boot, image: machine.image };
    const discovered = policy === this.d.unknown;
    const mode = policy.boot;
    const imageName = policy.image;
    if (mode === 'local') {
      return { kind: 'local', reason: discovered ? 'is not registered with ramboot' : 'is set to boot from its local disk', machine };
    }
    if (!machine) {
      // over the discovery cap: without a record there is no NoCloud data to serve
      return { kind: 'refuse', reason: 'ramboot has too many unregistered machines; register this one' };
    }
    if (facts.buildarch && !SUPPORTED_ARCHES.includes(facts.buildarch)) {
      return { kind: 'refuse', reason: `ramboot images are x86_64; this machine runs ${facts.buildarch} firmware`, machine };
    }
    const found = await this.d.images.lookup(imageName);
    if (!found.ok) return { kind: 'refuse', reason: `image ${imageName} is not available on the ramboot server`, detail: found.reason, machine };
    const need = found.image.manifest.minRamMiB;
    if (facts.memsizeMiB !== undefined && facts.memsizeMiB < need) {
      return { kind: 'refuse', reason: `this machine has ${facts.memsizeMiB} MiB of RAM but image ${imageName} needs ${need} MiB`, machine };
    }
    return { kind: 'ramboot', mode, image: found.image, machine };
  }
}
