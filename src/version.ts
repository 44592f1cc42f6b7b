import { readFileSync } from 'node:fs';

/** qmigd's own version, from package.json (reported as the QMP greeting's "package"). */
export const VERSION: string = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
