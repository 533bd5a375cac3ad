import type { ImageStore, LoadedImage } from '../images/image-store.js';
import type { MachineRecord } from '../machines/model.js';

/** What iPXE told us about the machine (query of GET /ipxe). */
export interface BootFacts {
  platform?: string;
  buildarch?: string;
  memsizeMiB?: number;
  uuid?: string;
  serial?: string;
}

export type BootDecision =
  | { kind: 'ramboot'; mode: 'ramboot' | 'once'; image: LoadedImage }
  | { kind: 'local'; reason: string }
  | { kind: 'refuse'; reason: string; /** For logs and the admin's timeline, not the booting machine. */ detail?: string };

export interface UnknownMachinePolicy {
  boot: 'local' | 'ramboot';
  image: string;
}

/**
 * The one seam between the protocol servers and the boot decision (pixiecore's Booter idea):
 * given a machine (or none) and what its firmware reported, decide what it boots.
 */
export class Booter {
  constructor(
    private readonly images: ImageStore,
    private readonly unknown: UnknownMachinePolicy,
  ) {}

  async decide(machine: MachineRecord | undefined, facts: BootFacts): Promise<BootDecision> {
    const discovered = !machine || machine.discovered;
    const mode = discovered ? this.unknown.boot : machine.boot;
    const imageName = discovered ? this.unknown.image : machine.image;
    if (mode === 'local') {
      return { kind: 'local', reason: discovered ? 'is not registered with ramboot' : 'is set to boot from its local disk' };
    }
    if (facts.buildarch && !['x86_64', 'i386'].includes(facts.buildarch)) {
      return { kind: 'refuse', reason: `ramboot images are x86_64; this machine runs ${facts.buildarch} firmware` };
    }
    const found = await this.images.lookup(imageName);
    if (!found.ok) return { kind: 'refuse', reason: `image ${imageName} is not available on the ramboot server`, detail: found.reason };
    const need = found.image.manifest.minRamMiB;
    if (facts.memsizeMiB !== undefined && facts.memsizeMiB < need) {
      return {
        kind: 'refuse',
        reason: `this machine has ${facts.memsizeMiB} MiB of RAM but image ${imageName} needs ${need} MiB`,
      };
    }
    return { kind: 'ramboot', mode, image: found.image };
  }
}
