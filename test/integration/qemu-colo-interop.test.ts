/** COLO between qmigd and a real QEMU 7.2, each as primary and as secondary: see helpers/colo-interop.ts. */
import t from 'tap';
import { coloInteropTests } from '../helpers/colo-interop.js';

coloInteropTests(t, '7.2');
