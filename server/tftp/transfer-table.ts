/**
 * The transfers in flight, keyed by the client's TID ("address|port"), and the limits on them: at most
 * `maxTransfers` in total and `maxTransfersPerClient` per client IP address, so that one address
 * (a flood, or a spoofed victim's address) cannot take the pool from everyone else. A slot is taken
 * when a request is admitted, before its file is opened, and freed when the entry is removed.
 */
export type LimitReached = 'per-client limit' | 'server limit';

export interface TransferLimits {
  maxTransfers: number;
  maxTransfersPerClient: number;
}

export class TransferTable<T> {
  /** `transfer` is null while the request is being prepared (file opened, socket bound). */
  private readonly entries = new Map<string, { address: string; transfer: T | null }>();
  private readonly perAddress = new Map<string, number>();

  constructor(private readonly limits: TransferLimits) {}

  static key(client: { address: string; port: number }): string {
    return `${client.address}|${client.port}`;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Transfers (and placeholders) held by `address`. */
  countFor(address: string): number {
    return this.perAddress.get(address) ?? 0;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** The transfer, null for a placeholder, undefined when `key` holds no slot. */
  get(key: string): T | null | undefined {
    return this.entries.get(key)?.transfer;
  }

  /** Takes a slot for `key` (a placeholder until `attach`), or says which limit stands in the way. */
  reserve(key: string, address: string): LimitReached | null {
    if (this.entries.has(key)) throw new Error(`tftp: ${key} already holds a slot`);
    if (this.countFor(address) >= this.limits.maxTransfersPerClient) return 'per-client limit';
    if (this.entries.size >= this.limits.maxTransfers) return 'server limit';
    this.entries.set(key, { address, transfer: null });
    this.perAddress.set(address, this.countFor(address) + 1);
    return null;
  }

  attach(key: string, transfer: T): void {
    const e = this.entries.get(key);
    if (!e) throw new Error(`tftp: ${key} holds no slot`);
    e.transfer = transfer;
  }

  /** Frees `key`'s slot; does nothing when it holds none. */
  remove(key: string): void {
    const e = this.entries.get(key);
    if (!e) return;
    this.entries.delete(key);
    const n = this.countFor(e.address) - 1;
    if (n > 0) this.perAddress.set(e.address, n);
    else this.perAddress.delete(e.address);
  }

  /** Every attached transfer (placeholders left out). */
  transfers(): T[] {
    const out: T[] = [];
    for (const e of this.entries.values()) if (e.transfer !== null) out.push(e.transfer);
    return out;
  }
}
