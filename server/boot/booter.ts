import type { Mac } from '../../common/mac.js';
import type { LoadedImage } from '../images/image-store.js';
import type { MachineRecord } from '../machines/model.js';

/** What the firmware told us about the machine (iPXE's query of GET /ipxe, or DHCP options). */
export interface BootFacts {
  platform?: string;
  buildarch?: string;
  memsizeMiB?: number;
  uuid?: string;
  serial?: string;
  /** Address the request came from (for the timeline; never trusted for identity). */
  ip?: string;
}

export interface BootRequest {
  mac: Mac;
  facts: BootFacts;
}

export type BootDecision =
  | { kind: 'ramboot'; mode: 'ramboot' | 'once'; image: LoadedImage; machine: MachineRecord }
  | { kind: 'local'; reason: string; machine?: MachineRecord }
  | {
      kind: 'refuse';
      /** Shown on the booting machine's console. */
      reason: string;
      /** For logs and the admin's timeline, not the booting machine. */
      detail?: string;
      machine?: MachineRecord;
    };

/**
 * The one seam between the protocol servers (HTTP now, DHCP too) and the boot decision, as in
 * pixiecore's Booter: given a MAC and what its firmware reported, decide what it boots. The whole
 * decision lives behind it: unknown-machine policy, discovery and its cap, architecture, missing
 * image, RAM. Protocol handlers turn a request into a BootRequest and a BootDecision into a reply.
 */
export interface Booter {
  decide(req: BootRequest): Promise<BootDecision>;
}
