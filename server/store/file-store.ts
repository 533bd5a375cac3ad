import { readdirSync, readFileSync, statSync, unlinkSync, type Stats } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from '../../common/log.js';
import { macToFileStem, type Mac } from '../../common/mac.js';
import { machineRecordSchema, type MachineRecord } from '../machines/model.js';
import { writeFileAtomic } from './atomic-write.js';
import { macOfFile, parseMachineFile, TEMP_FILE_RE } from './machine-file.js';
import { RecordIndex } from './record-index.js';
import type { MachineStore } from './store.js';

export interface FileStoreOptions {
  dir: string;
  logger: Logger;
  /** Watch the directory for hand edits (default true). */
  watch?: boolean;
  /** How often the directory is compared with memory, to catch what the watcher missed (default 10 s). */
  rescanMs?: number;
}

/** What a file looked like when it was last read: a rescan rereads only files that changed. */
interface Seen {
  size: number;
  mtimeMs: number;
  ino: number;
}

const seenOf = (st: Stats): Seen => ({ size: st.size, mtimeMs: st.mtimeMs, ino: st.ino });
const sameSeen = (a: Seen | undefined, b: Seen) => !!a && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino;
const isEnoent = (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT';

/**
 * One JSON file per machine: <dir>/aa-bb-cc-dd-ee-ff.json, written atomically. Hand edits are
 * validated and picked up live. An invalid file is never served and never overwritten silently:
 * it is listed as broken with its reason (a write over it keeps a copy in <dir>/quarantine/);
 * while a last good version exists, that one keeps serving. Memory follows the disk: every watcher
 * event rereads the file it names, and a periodic rescan catches what the watcher missed (a file
 * gone within milliseconds, a folder removed and made again). What a write stored is served at
 * once, not when the watcher notices it.
 */
export class FileStore extends RecordIndex implements MachineStore {
  private serialized = new Map<string, string>();
  private seen = new Map<string, Seen>();
  private watcher: FSWatcher | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private rescanning: Promise<void> | undefined;
  private dirIno: number | undefined;
  private dirMissing = false;

  private constructor(private readonly opts: FileStoreOptions) {
    super();
  }

  static async open(opts: FileStoreOptions): Promise<FileStore> {
    const store = new FileStore(opts);
    await mkdir(opts.dir, { recursive: true, mode: 0o700 });
    store.removeCrashLeftovers();
    // Synchronous reads at start: thousands of small files load ~30x faster than through the thread pool.
    for (const name of readdirSync(opts.dir)) {
      const mac = macOfFile(name);
      if (!mac) continue;
      const path = join(opts.dir, name);
      try {
        const st = statSync(path);
        store.apply(mac, path, readFileSync(path, 'utf8'), seenOf(st));
      } catch (e) {
        if (!isEnoent(e)) store.markBroken(mac, path, `cannot be read: ${(e as Error).message}`);
      }
    }
    store.dirIno = statSync(opts.dir).ino;
    if (opts.watch !== false) {
      await store.startWatching();
      store.rescanTimer = setInterval(() => void store.rescan(), opts.rescanMs ?? 10_000);
      store.rescanTimer.unref();
    }
    return store;
  }

  private fileFor(mac: Mac): string {
    return join(this.opts.dir, `${macToFileStem(mac)}.json`);
  }

  /** Temp files of writes a crash interrupted (they may hold whole records with user-data). */
  private removeCrashLeftovers(): void {
    for (const name of readdirSync(this.opts.dir)) {
      if (!TEMP_FILE_RE.test(name)) continue;
      try {
        unlinkSync(join(this.opts.dir, name));
        this.opts.logger.warn({ event: 'store.temp-removed', file: name }, `removed ${name}, left by a write that a crash interrupted`);
      } catch (e) {
        if (!isEnoent(e)) this.opts.logger.error({ event: 'store.temp-remove-failed', file: name, err: e }, `cannot remove ${name}`);
      }
    }
  }

  private markBroken(mac: Mac, file: string, reason: string): void {
    const prev = this.brokenFiles.get(mac);
    if (prev?.reason === reason) return;
    this.brokenFiles.set(mac, { mac, file, reason, since: new Date().toISOString() });
    const keeps = this.records.has(mac) ? 'the last good version keeps serving' : 'the machine is not served until the file is fixed';
    this.opts.logger.error({ event: 'store.invalid-file', mac, file, reason }, `machine file ${file} is invalid: ${reason}; ${keeps}`);
  }

  /** Takes a file's text into memory (or marks it broken). Returns true when what is served changed. */
  private apply(mac: Mac, path: string, text: string, seen: Seen): boolean {
    this.seen.set(mac, seen);
    const parsed = parseMachineFile(path.split('/').pop() ?? '', text);
    if (!parsed.ok) {
      this.markBroken(mac, path, parsed.reason);
      return false;
    }
    this.brokenFiles.delete(mac);
    const ser = JSON.stringify(parsed.record);
    if (this.serialized.get(mac) === ser) return false;
    this.records.set(mac, parsed.record);
    this.serialized.set(mac, ser);
    return true;
  }

  /** The file is gone: so is the machine. Returns true when something was served or listed. */
  private forget(mac: Mac): boolean {
    this.seen.delete(mac);
    const had = this.brokenFiles.delete(mac);
    this.serialized.delete(mac);
    return this.records.delete(mac) || had;
  }

  /** Rereads one machine's file and makes memory match it (caller holds the MAC's lock). */
  private async reconcile(mac: Mac, why: string): Promise<void> {
    const path = this.fileFor(mac);
    let text: string;
    let st: Stats;
    try {
      st = await stat(path);
      if (sameSeen(this.seen.get(mac), seenOf(st))) return;
      text = await readFile(path, 'utf8');
    } catch (e) {
      if (!isEnoent(e)) {
        this.markBroken(mac, path, `cannot be read: ${(e as Error).message}`);
        return;
      }
      if (this.forget(mac)) {
        this.opts.logger.info({ event: 'store.removed', mac, file: path, why }, `machine file ${path} was removed`);
        this.emit(mac);
      }
      return;
    }
    if (this.apply(mac, path, text, seenOf(st))) {
      this.opts.logger.info({ event: 'store.reloaded', mac, file: path, why }, `picked up hand edit of ${path}`);
      this.emit(mac);
    }
  }

  private reconcileLocked(mac: Mac, why: string): Promise<void> {
    return this.mutex.run(mac, () => this.reconcile(mac, why)).catch((e: unknown) => {
      this.opts.logger.error({ event: 'store.reload-failed', mac, err: e }, 'reload failed');
    });
  }

  private async startWatching(): Promise<void> {
    const w = watch(this.opts.dir, {
      ignoreInitial: true,
      depth: 0,
      ignored: (p: string) => p.split('/').pop()?.startsWith('.') ?? false,
    });
    const onEvent = (path: string) => {
      const mac = macOfFile(path.split('/').pop() ?? '');
      if (mac) void this.reconcileLocked(mac, 'watch');
    };
    w.on('add', onEvent);
    w.on('change', onEvent);
    w.on('unlink', onEvent);
    w.on('unlinkDir', () => void this.rescan());
    w.on('error', (e: unknown) => {
      this.opts.logger.error({ event: 'store.watch-error', err: e }, 'watching machines dir failed; rescanning');
      void this.rescan();
    });
    await new Promise<void>((resolve) => w.once('ready', () => resolve()));
    this.watcher = w;
  }

  /**
   * Compares the directory with memory and rereads whatever differs. Runs periodically, after
   * watcher errors and when the folder goes away; a folder made again gets a new watcher.
   */
  rescan(): Promise<void> {
    this.rescanning ??= this.doRescan().finally(() => {
      this.rescanning = undefined;
    });
    return this.rescanning;
  }

  private async doRescan(): Promise<void> {
    let names: string[];
    let ino: number;
    try {
      ino = (await stat(this.opts.dir)).ino;
      names = await readdir(this.opts.dir);
    } catch (e) {
      if (!isEnoent(e)) throw e;
      if (!this.dirMissing) {
        this.dirMissing = true;
        this.opts.logger.error({ event: 'store.dir-missing', dir: this.opts.dir }, `machines folder ${this.opts.dir} is gone; serving from memory, writes recreate it`);
      }
      return;
    }
    if (this.dirMissing || ino !== this.dirIno) {
      this.dirMissing = false;
      this.dirIno = ino;
      this.opts.logger.warn({ event: 'store.dir-replaced', dir: this.opts.dir }, 'machines folder was made again; watching the new one');
      if (this.watcher) {
        await this.watcher.close();
        await this.startWatching();
      }
    }
    const onDisk = new Set<Mac>();
    for (const n of names) {
      const mac = macOfFile(n);
      if (mac) onDisk.add(mac);
    }
    const known = new Set<Mac>([...this.records.keys(), ...this.brokenFiles.keys()] as Mac[]);
    for (const mac of new Set([...onDisk, ...known])) await this.reconcileLocked(mac, 'rescan');
  }

  /**
   * Before a write, take in a hand edit the watcher has not delivered yet, so an API write never
   * silently overwrites it.
   */
  update(mac: Mac, fn: (c: MachineRecord | undefined) => MachineRecord | null | undefined): Promise<MachineRecord | undefined> {
    return this.mutex.run(mac, async () => {
      await this.reconcile(mac, 'before-write');
      const next = fn(this.get(mac));
      if (next === undefined) return this.get(mac);
      const path = this.fileFor(mac);
      await this.quarantineBroken(mac);
      if (next === null) {
        await unlink(path).catch((e: unknown) => {
          if (!isEnoent(e)) throw e;
        });
        this.forget(mac);
      } else {
        const rec = machineRecordSchema.parse({ ...next, mac });
        await mkdir(this.opts.dir, { recursive: true, mode: 0o700 }); // the folder may have been removed by hand
        await writeFileAtomic(path, `${JSON.stringify(rec, null, 2)}\n`, 0o600); // userData may hold secrets
        this.records.set(mac, rec);
        this.serialized.set(mac, JSON.stringify(rec));
        this.seen.set(mac, seenOf(await stat(path)));
      }
      this.emit(mac);
      return next === null ? undefined : this.get(mac);
    });
  }

  /** A broken file about to be replaced or deleted is kept in <dir>/quarantine/ first. */
  private async quarantineBroken(mac: Mac): Promise<void> {
    const b = this.brokenFiles.get(mac);
    if (!b) return;
    const qdir = join(this.opts.dir, 'quarantine');
    await mkdir(qdir, { recursive: true, mode: 0o700 });
    const kept = join(qdir, `${macToFileStem(mac)}.${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    await copyFile(b.file, kept).catch((e: unknown) => {
      if (!isEnoent(e)) throw e;
    });
    this.opts.logger.warn({ event: 'store.quarantined', mac, file: b.file, kept, reason: b.reason }, `kept the invalid ${b.file} as ${kept} before replacing it`);
    this.brokenFiles.delete(mac);
  }

  async close(): Promise<void> {
    this.clearListeners();
    clearInterval(this.rescanTimer);
    await this.rescanning?.catch(() => undefined);
    await this.watcher?.close();
  }
}
