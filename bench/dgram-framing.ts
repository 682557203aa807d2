/**
 * Framing for the node-dgram baseline. Every datagram starts with an 8-byte
 * header inside its payload: u32 LE message number, u16 LE chunk index, u16 LE
 * chunk count. A message larger than one datagram is split into chunks whose
 * lengths add up to exactly its size, so the bytes on the wire equal the
 * message size (plus UDP/IP headers) as for the other transports. An end
 * marker is a header alone with message number MARKER_SEQ, chunk index =
 * phase (1 ends the warm-up, 2 the measured stream) and chunk count 0.
 */

export const HEADER_BYTES = 8;
/** Largest UDP payload over IPv4 (65535 - 20 IP - 8 UDP); it fits loopback's 64 KiB MTU unfragmented. */
export const MAX_DATAGRAM = 65_507;
export const MARKER_SEQ = 0xffff_ffff;
/** Socket buffers asked for (the kernel caps them at net.core.{r,w}mem_max and doubles the value). */
export const SOCKET_BUFFER_BYTES = 4 << 20;

/** Sink -> harness over the IPC channel: the end marker of `phase` has arrived. */
export interface MarkerAck {
  readonly kind: 'marker';
  readonly phase: number;
}

export function isMarkerAck(value: unknown): value is MarkerAck {
  return typeof value === 'object' && value !== null && 'kind' in value && value.kind === 'marker' && 'phase' in value;
}

export function writeHeader(datagram: Buffer, seq: number, chunk: number, chunks: number): void {
  datagram.writeUInt32LE(seq, 0);
  datagram.writeUInt16LE(chunk, 4);
  datagram.writeUInt16LE(chunks, 6);
}

export function readHeader(datagram: Buffer): { seq: number; chunk: number; chunks: number } {
  return { seq: datagram.readUInt32LE(0), chunk: datagram.readUInt16LE(4), chunks: datagram.readUInt16LE(6) };
}

export function endMarker(phase: number): Buffer {
  const marker = Buffer.alloc(HEADER_BYTES);
  writeHeader(marker, MARKER_SEQ, phase, 0);
  return marker;
}

/** Datagrams a message of `size` bytes is sent as. */
export function chunkCount(size: number): number {
  return Math.ceil(size / MAX_DATAGRAM);
}

/** `message` cut into consecutive views of at most MAX_DATAGRAM bytes, each long enough for a header. */
export function chunkViews(message: Buffer): Buffer[] {
  if (message.length < HEADER_BYTES) throw new Error(`node-dgram needs messages of at least ${HEADER_BYTES} B (its header)`);
  const count = chunkCount(message.length);
  // Equal-ish chunks, so the last one is never shorter than a header.
  const base = Math.floor(message.length / count);
  const views: Buffer[] = [];
  for (let i = 0, offset = 0; i < count; i++) {
    const length = i < message.length % count ? base + 1 : base;
    views.push(message.subarray(offset, offset + length));
    offset += length;
  }
  return views;
}
