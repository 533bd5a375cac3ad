/**
 * Every name a machine's timeline can hold: the one list emitters, the API docs and the tests use.
 * Extend it; do not rename (admins' scripts follow these). Events the booted OS reports are
 * `os.<name>` (see osEventName).
 */
export const TIMELINE_EVENTS = {
  'api.registered': 'an admin registered the machine',
  'api.replaced': 'an admin replaced the machine record',
  'api.updated': 'an admin changed some fields',
  'machine.discovered': 'an unknown MAC asked to boot and was recorded',
  'dhcp.offer': 'ramboot\'s proxyDHCP answered the firmware with a boot file',
  'dhcp.ignored': 'ramboot\'s proxyDHCP did not answer (reason given)',
  'tftp.transfer': 'a TFTP transfer to the machine ended (ok, error, or a size probe)',
  'ipxe.script': 'iPXE got a script that boots the ramboot image',
  'ipxe.local': 'iPXE was told to boot the local disk',
  'ipxe.refused': 'iPXE was told why the machine cannot boot ramboot',
  'image.fetch': 'the machine fetched a file of its image',
  'cloud-init.user-data': 'the booted OS fetched its NoCloud user-data',
  'host-keys.reported': 'the booted OS reported its SSH host keys as soon as sshd ran (known_hosts is served from then on)',
  'phone-home.ready': 'the booted OS reported its host keys and readiness',
  'phone-home.duplicate': 'a second phone-home for a used boot session was refused',
  'deploy.started': 'the deploy agent in the RAM OS started writing the assigned image to disk',
  'deploy.progress': 'the deploy agent reported progress (bytes, rate, ETA; at most one per ~2 s)',
  'deploy.succeeded': 'the image was written and verified; once is switched to local',
  'deploy.failed': 'the deploy failed at a stage (reason given); the machine stays in the RAM OS',
  'artifact.fetch': 'the machine fetched (part of) a deploy artifact',
  'transfer.planned': 'ramboot transfer read the source and the target and planned the target disk',
  'transfer.started': 'ramboot transfer started changing the target (partition, format, copy)',
  'transfer.step': 'ramboot transfer moved on to a step (partition, format, copy, fix, bootloader...)',
  'transfer.progress': 'ramboot transfer copy progress (bytes, files, rate, ETA; at most one per ~3 s)',
  'transfer.succeeded': 'the source was copied onto the target and made bootable; the target is set to local',
  'transfer.failed': 'ramboot transfer failed at a stage (reason given); the target is not set to local',
} as const;

/**
 * Events an admin's client (the ramboot CLI) may add to a machine's timeline through
 * POST /api/v1/machines/{mac}/events: what it does to the machine from outside (a transfer).
 */
export const CLIENT_EVENTS = ['transfer.planned', 'transfer.started', 'transfer.step', 'transfer.progress', 'transfer.succeeded', 'transfer.failed'] as const satisfies readonly FixedEventName[];
export type ClientEventName = (typeof CLIENT_EVENTS)[number];

export type FixedEventName = keyof typeof TIMELINE_EVENTS;
/** Progress events the booted OS sends, stored under "os.". */
export type OsEventName = `os.${string}`;
export type EventName = FixedEventName | OsEventName;

/** What the OS may send as an event name (before the "os." prefix). */
export const OS_EVENT_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** The timeline name of an event the OS reported ("sshd.ready" -> "os.sshd.ready"; "os.x" stays). */
export function osEventName(reported: string): OsEventName {
  return (reported.startsWith('os.') ? reported : `os.${reported}`) as OsEventName;
}

export function isEventName(name: string): name is EventName {
  return name in TIMELINE_EVENTS || (name.startsWith('os.') && OS_EVENT_RE.test(name.slice(3)));
}
