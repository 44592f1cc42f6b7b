/**
 * COLO's wire messages (qapi COLOMessage; migration/colo.c): a bare be32 holding the message's
 * index, primary → secondary on the migration stream and back on its return path; vmstate-size
 * is followed by a be64.
 *
 *   primary                                  secondary
 *                                    ◄──     checkpoint-ready            (once)
 *   checkpoint-request               ──►     stops its guest
 *                                    ◄──     checkpoint-reply
 *   stops its guest
 *   vmstate-send, RAM END section, EOF ──►   RAM goes to the cache only
 *     (10.0: SWITCHOVER_START before the RAM section, as the migration's send-switchover-start says)
 *   vmstate-size N, N bytes of device state ──►
 *                                    ◄──     vmstate-received
 *                                            cache → RAM, device state, guest runs
 *                                    ◄──     vmstate-loaded
 *   guest runs
 *
 * The same in 7.2 and 10.0.13, as recorded between two real QEMUs of each (and the return path
 * carries nothing else).
 */
import type { StreamReader } from '../stream/reader.js';

export const ColoMessage = {
  CHECKPOINT_READY: 0,
  CHECKPOINT_REQUEST: 1,
  CHECKPOINT_REPLY: 2,
  VMSTATE_SEND: 3,
  VMSTATE_SIZE: 4,
  VMSTATE_RECEIVED: 5,
  VMSTATE_LOADED: 6,
} as const;
const COUNT = 7;

/** A failed COLO exchange, in QEMU's words. */
export class ColoError extends Error {}

export function encodeMessage(msg: number, value?: number): Buffer {
  const b = Buffer.alloc(value === undefined ? 4 : 12);
  b.writeUInt32BE(msg, 0);
  if (value !== undefined) b.writeBigUInt64BE(BigInt(value), 4);
  return b;
}

/** colo_receive_check_message(): the next message must be `expect`. */
export async function receiveMessage(r: StreamReader, expect: number): Promise<void> {
  try {
    await r.need(4);
  } catch {
    throw new ColoError("Can't receive COLO message");
  }
  const got = r.be32();
  if (got >= COUNT) throw new ColoError('colo_receive_message: Invalid message');
  if (got !== expect) throw new ColoError(`Unexpected COLO message ${got}, expected ${expect}`);
}

/** colo_receive_message_value(): `expect`, then its be64. */
export async function receiveValue(r: StreamReader, expect: number): Promise<number> {
  await receiveMessage(r, expect);
  try {
    await r.need(8);
  } catch {
    throw new ColoError('Failed to get value for COLO message: vmstate-size');
  }
  return r.be64();
}
