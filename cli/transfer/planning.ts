import { INSPECT_SCRIPT, parseInspection } from './inspect.js';
import { plan } from './plan.js';
import { formatPlan, formatRefusal } from './plan-format.js';
import { StageError } from './stage-error.js';
import { tail, type Remote } from './ssh.js';
import { isRefusal, type InspectMode, type Inventory, type Plan, type PlanRefusal } from './types.js';

/** The transfer-plan helper's inspect / plan / plan-format, as the command calls them. */

/** Reads a machine over SSH (one round trip: the inspection script on stdin). */
export async function inspectMachine(remote: Remote, mode: InspectMode): Promise<Inventory> {
  const r = await remote.script(INSPECT_SCRIPT, [mode], { timeoutMs: 10 * 60_000 });
  if (r.code !== 0) throw new StageError('inspect', `reading the ${remote.label} failed (exit ${r.code}${r.code === 255 ? ': ssh could not connect' : ''}): ${tail(r.stderr) || '(no message)'}`);
  try {
    return parseInspection(r.stdout);
  } catch (e) {
    throw new StageError('inspect', `the ${remote.label}'s inspection could not be read: ${(e as Error).message}`);
  }
}

export function makePlan(source: Inventory, target: Inventory, o: { disk: string }): Plan | PlanRefusal {
  return plan(source, target, { disk: o.disk });
}

export function planText(p: Plan | PlanRefusal): string {
  const s = isRefusal(p) ? formatRefusal(p) : formatPlan(p);
  return s.endsWith('\n') ? s : `${s}\n`;
}
