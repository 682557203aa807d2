// kv.js — a key-value service for `dvs serve` (README "dvs serve"): its state
// is a Map, carried across migrations by snapshot()/restore().
//
//   dvs agent --node 1 --listen 127.0.0.1:7001 &
//   dvs serve examples/kv.js --dc 1 --ep 10 --node 1
//
// Requests are JSON objects; a call gets a JSON reply, a one-way message is
// applied the same way without one:
//   {op:'put', key, value}   → {ok: true, size}      (value: any JSON value)
//   {op:'get', key}          → {found, value}        (value null when not found)
//   {op:'del', key}          → {deleted}
//   {op:'size'}              → {size}
//   {op:'stats'}             → {size, notifications, senders}   (see below)
//   {op:'fill', bytes}       → {size}  a key '#fill' holding about `bytes` bytes (state-size benchmarks)
// Anything else is an error reply {"error":{"code":"EKVOP"|..., "message"}}.
//
// Order checking: every message (call or one-way, any op, even one-way
// payloads that are not JSON requests) is counted per sender, and one that
// carries a numeric `seq` is checked against the previous seq of the same
// sender and kind: `stats` answers senders["<node>:<ep>"] = {calls, sends},
// each {count, last, dup, gap}: dup counts seqs not above the last one
// (duplicated or reordered), gap the seqs skipped (lost or reordered). A
// client whose seqs go 0, 1, 2... sees dup = gap = 0 exactly when nothing was
// lost, duplicated or reordered.

const data = new Map();
/** "node:ep" → { calls: Track, sends: Track } */
const senders = new Map();
let notifications = 0;

const track = () => ({ count: 0, last: null, dup: 0, gap: 0 });

function see(msg, req) {
  const key = `${msg.srcNode}:${msg.src}`;
  let s = senders.get(key);
  if (!s) senders.set(key, (s = { calls: track(), sends: track() }));
  const t = msg.kind === 'call' ? s.calls : s.sends;
  t.count++;
  const seq = req && typeof req === 'object' ? req.seq : undefined;
  if (typeof seq !== 'number' || !Number.isInteger(seq)) return;
  if (t.last !== null) {
    if (seq <= t.last) t.dup++;
    else t.gap += seq - t.last - 1;
  }
  if (t.last === null || seq > t.last) t.last = seq;
}

function fail(code, message) {
  const e = new Error(message);
  e.code = code;
  return e;
}

function apply(req) {
  if (req === null || typeof req !== 'object') throw fail('EKVOP', 'a request is a JSON object {op, key, value}');
  const key = req.key;
  const needKey = () => {
    if (typeof key !== 'string') throw fail('EKVKEY', `${req.op} needs a string key`);
  };
  switch (req.op) {
    case 'put':
      needKey();
      data.set(key, req.value === undefined ? null : req.value);
      return { ok: true, size: data.size };
    case 'get':
      needKey();
      return data.has(key) ? { found: true, value: data.get(key) } : { found: false, value: null };
    case 'del':
      needKey();
      return { deleted: data.delete(key) };
    case 'size':
      return { size: data.size };
    case 'stats':
      return { size: data.size, notifications, senders: Object.fromEntries(senders) };
    case 'fill': {
      const n = req.bytes;
      if (!Number.isInteger(n) || n < 0 || n > 1 << 30) throw fail('EKVOP', 'fill needs bytes: an integer in [0, 2^30]');
      data.set('#fill', 'x'.repeat(n));
      return { size: data.size };
    }
    default:
      throw fail('EKVOP', `unknown op ${JSON.stringify(req.op)}`);
  }
}

export function handle(msg) {
  if (msg.kind === 'notify') {
    notifications++;
    return undefined;
  }
  let req;
  try {
    req = msg.json();
  } catch (e) {
    see(msg, null);
    if (msg.kind === 'call') throw fail('EKVJSON', `the request is not JSON: ${e.message}`);
    return undefined;  // a one-way message that is not a request: counted only
  }
  see(msg, req);
  if (msg.kind === 'send' && (req === null || typeof req !== 'object' || req.op === undefined)) return undefined;
  return apply(req);
}

export function snapshot() {
  return Buffer.from(JSON.stringify({ v: 1, data: [...data], senders: [...senders], notifications }));
}

export function restore(bytes) {
  const s = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  if (!s || s.v !== 1 || !Array.isArray(s.data) || !Array.isArray(s.senders)) throw fail('EKVSTATE', 'not a kv.js snapshot (version 1)');
  data.clear();
  for (const [k, v] of s.data) data.set(k, v);
  senders.clear();
  for (const [k, v] of s.senders) senders.set(k, v);
  notifications = s.notifications ?? 0;
}
