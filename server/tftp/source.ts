/**
 * Where DATA payloads come from. Octet transfers read the file in chunks with positional reads (no
 * whole-file buffering, first DATA leaves at once even for big files); netascii transfers convert the
 * whole file in memory first (it changes offsets).
 */
import { readSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

export interface BlockSource {
  readonly size: number;
  /** Bytes [offset, offset+length) clipped to the size. Throws if the file shrank underneath us. */
  slice(offset: number, length: number): Buffer;
  close(): void;
}

export class BufferSource implements BlockSource {
  readonly size: number;
  constructor(private readonly data: Buffer) {
    this.size = data.length;
  }
  slice(offset: number, length: number): Buffer {
    return this.data.subarray(offset, Math.min(offset + length, this.size));
  }
  close(): void {}
}

const CHUNK_BYTES = 1024 * 1024;

export class FileSource implements BlockSource {
  private chunk: Buffer = Buffer.alloc(0);
  private chunkStart = 0;
  private readonly chunkBytes: number;

  /** `span` = the most bytes one window asks for (windowsize * blksize). */
  constructor(private readonly handle: FileHandle, readonly size: number, span: number) {
    this.chunkBytes = Math.max(CHUNK_BYTES, span);
  }

  slice(offset: number, length: number): Buffer {
    const end = Math.min(offset + length, this.size);
    if (offset < this.chunkStart || end > this.chunkStart + this.chunk.length) this.load(offset);
    return this.chunk.subarray(offset - this.chunkStart, end - this.chunkStart);
  }

  private load(offset: number): void {
    const want = Math.min(this.chunkBytes, this.size - offset);
    // A fresh buffer each time: queued UDP sends may still reference the previous chunk.
    const buf = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const n = readSync(this.handle.fd, buf, got, want - got, offset + got);
      if (n === 0) throw new Error('file shrank during transfer');
      got += n;
    }
    this.chunk = buf;
    this.chunkStart = offset;
  }

  close(): void {
    void this.handle.close().catch(() => undefined);
  }
}
