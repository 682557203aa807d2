/** Length-prefixed framing for byte streams: u32 little-endian length, then payload. */
import type { Socket } from 'node:net';

const HEADER = 4;

/** Header + payload in one buffer (built once per trial by senders). */
export function encodeFrame(payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(HEADER + payload.byteLength);
  frame.writeUInt32LE(payload.byteLength, 0);
  frame.set(payload, HEADER);
  return frame;
}

/** Writes a frame without copying the payload (header and payload go out in one writev). */
export function writeFrame(socket: Socket, payload: Uint8Array): boolean {
  const header = Buffer.allocUnsafe(HEADER);
  header.writeUInt32LE(payload.byteLength, 0);
  socket.cork();
  socket.write(header);
  const ok = socket.write(payload);
  socket.uncork();
  return ok;
}

/** Reassembles frames from stream chunks; each payload is contiguous (copied only when it spans chunks). */
export class FrameDecoder {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private need = -1;

  constructor(private readonly onFrame: (payload: Buffer) => void) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    for (;;) {
      if (this.need < 0) {
        if (this.buffered < HEADER) return;
        this.need = this.take(HEADER).readUInt32LE(0);
      }
      if (this.buffered < this.need) return;
      const payload = this.take(this.need);
      this.need = -1;
      this.onFrame(payload);
    }
  }

  private take(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (first !== undefined && first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    for (let off = 0; off < n; ) {
      const chunk = this.chunks[0];
      const k = Math.min(chunk.length, n - off);
      chunk.copy(out, off, 0, k);
      off += k;
      if (k === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(k);
    }
    return out;
  }
}
