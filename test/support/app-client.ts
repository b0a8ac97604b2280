import { connect } from 'node:net';

/** Sends one line to the demo app at "host:port" and resolves with its one-line answer. */
export function askApp(address: string, line: string, timeoutMs = 2000): Promise<string> {
  const [host, port] = address.split(':');
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port: Number(port) });
    let buffered = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer to ${line} from ${address}`));
    }, timeoutMs);
    socket.on('connect', () => socket.write(`${line}\n`));
    socket.on('data', (chunk) => {
      buffered += chunk.toString();
      const newline = buffered.indexOf('\n');
      if (newline >= 0) {
        clearTimeout(timer);
        socket.destroy();
        resolve(buffered.slice(0, newline));
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

export async function appStatus(address: string): Promise<{ loaded: string; resets: number; failing: boolean }> {
  return JSON.parse(await askApp(address, 'STATUS')) as { loaded: string; resets: number; failing: boolean };
}
