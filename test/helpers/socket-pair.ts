/** Two ends of a loopback TCP connection, the accepted one paused as a daemon's listener leaves it. */
import net from 'node:net';

export async function acceptedPair(): Promise<{ accepted: net.Socket; client: net.Socket; close: () => void }> {
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const acceptedP = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect(port, '127.0.0.1');
  const accepted = await acceptedP;
  return { accepted, client, close: () => server.close() };
}
