/** "128M" → bytes: a plain number is bytes; K, M, G, T are binary multiples (QEMU's suffixes). */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)i?B?$/i.exec(text.trim());
  if (!m) throw new Error(`'${text}' is not a size (bytes, or a number with K, M, G or T)`);
  const shift = { '': 0, K: 10, M: 20, G: 30, T: 40 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  const bytes = Number(m[1]) * 2 ** shift;
  if (!Number.isSafeInteger(bytes)) throw new Error(`'${text}' is not a whole number of bytes`);
  return bytes;
}
