// log.ts — the agent's structured logs: one JSON object per line on stderr.
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type Logger = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => void;

const rank: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** A logger writing `{"ts","level","node","msg",...fields}` lines; levels below `min` are dropped. */
export function jsonLogger(node: number, min: LogLevel = 'info', out: NodeJS.WritableStream = process.stderr): Logger {
  return (level, msg, fields) => {
    if (rank[level] < rank[min]) return;
    out.write(JSON.stringify({ ts: new Date().toISOString(), level, node, msg, ...fields }) + '\n');
  };
}

export const silentLogger: Logger = () => {};
