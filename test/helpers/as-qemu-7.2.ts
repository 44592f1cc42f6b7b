/**
 * Imported first by in-process tests written against QEMU 7.2: this process becomes 7.2, as the
 * daemons test/helpers/daemon.ts starts are unless a test names another release.
 */
import { setActiveProfile } from '../../src/profiles/index.js';

setActiveProfile('7.2');
