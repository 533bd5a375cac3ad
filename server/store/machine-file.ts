import { jsonTextDepth, MAX_JSON_DEPTH } from '../../common/json-limits.js';
import { tryParseMac, type Mac } from '../../common/mac.js';
import { describeZodError } from '../../common/zod-error.js';
import { machineRecordSchema, type MachineRecord } from '../machines/model.js';

/** aa-bb-cc-dd-ee-ff.json: the one name a machine file may have. */
export const MACHINE_FILE_RE = /^([0-9a-f]{2}(?:-[0-9a-f]{2}){5})\.json$/;
/** What writeFileAtomic leaves when the process dies between create and rename. */
export const TEMP_FILE_RE = /^\.[0-9a-f]{2}(?:-[0-9a-f]{2}){5}\.json\.[0-9a-f]+\.tmp$/;
/** Far above any record the API accepts (256 KiB bodies); a bigger file is damaged or hostile. */
export const MAX_MACHINE_FILE_BYTES = 1024 * 1024;

export type ParsedFile = { ok: true; record: MachineRecord } | { ok: false; reason: string };

export function macOfFile(name: string): Mac | undefined {
  const m = MACHINE_FILE_RE.exec(name);
  return m ? tryParseMac(m[1]) : undefined;
}

/**
 * Validates one machine file's text. Never throws: a file nested deep enough to overflow the
 * stack, or any other surprise, is a reason, not a crash.
 */
export function parseMachineFile(name: string, text: string): ParsedFile {
  const mac = macOfFile(name);
  if (!mac) return { ok: false, reason: 'file name is not <mac>.json' };
  if (text.length > MAX_MACHINE_FILE_BYTES) return { ok: false, reason: `larger than ${MAX_MACHINE_FILE_BYTES} bytes` };
  if (jsonTextDepth(text) > MAX_JSON_DEPTH + 2) return { ok: false, reason: `nested deeper than ${MAX_JSON_DEPTH + 2} levels` };
  try {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      return { ok: false, reason: `not valid JSON: ${(e as Error).message}` };
    }
    const res = machineRecordSchema.safeParse(json);
    if (!res.success) return { ok: false, reason: describeZodError(res.error) };
    if (tryParseMac(res.data.mac) !== mac) {
      return { ok: false, reason: `"mac" field (${String(res.data.mac).slice(0, 40)}) does not match the file name (${mac})` };
    }
    return { ok: true, record: { ...res.data, mac } };
  } catch (e) {
    return { ok: false, reason: `cannot be read as a machine record: ${(e as Error).message}` };
  }
}
