/** COLO between qmigd and a real QEMU 10.0, each as primary and as secondary: see helpers/colo-interop.ts. */
import t from 'tap';
import { coloInteropTests } from '../helpers/colo-interop.js';

coloInteropTests(t, '10.0');
