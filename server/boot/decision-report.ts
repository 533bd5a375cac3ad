import type { Logger } from '../../common/log.js';
import type { Mac } from '../../common/mac.js';
import type { NewEvent } from '../events/event-log.js';
import type { BootDecision, BootFacts } from './booter.js';
import type { SessionInfo } from './sessions.js';

/** Where a decision's timeline event goes (Registry.event). */
export type RecordEvent = (mac: Mac, ev: NewEvent) => Promise<void>;

/** Log line and timeline event for a per-MAC script served to iPXE. */
export function reportIpxeDecision(log: Logger, record: RecordEvent, mac: Mac, d: BootDecision, facts: BootFacts, session?: SessionInfo): void {
  const data = { ...facts };
  if (d.kind === 'ramboot') {
    const sid = session?.id.slice(0, 8);
    log.info({ event: 'ipxe.ramboot', mac, image: d.image.name, mode: d.mode, session: sid, ...facts }, `${mac} boots image ${d.image.name}`);
    void record(mac, { event: 'ipxe.script', level: 'info', message: `served boot script for image ${d.image.name} (${d.mode})`, data: { ...data, session: sid } });
  } else if (d.kind === 'local') {
    log.info({ event: 'ipxe.local', mac, reason: d.reason, ...facts }, `${mac} ${d.reason}: boot local disk`);
    void record(mac, { event: 'ipxe.local', level: 'info', message: `told to boot the local disk (${d.reason})`, data });
  } else {
    const why = d.detail ?? d.reason;
    log.warn({ event: 'ipxe.refused', mac, reason: why, ...facts }, `${mac} not booted: ${why}`);
    void record(mac, { event: 'ipxe.refused', level: 'warning', message: why, data });
  }
}
