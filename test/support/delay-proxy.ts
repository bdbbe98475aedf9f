/**
 * delayingProxy listens on `listenPort` and passes each connection through to `targetPort`,
 * holding back, on each connection, every chunk from the first one that contains `needle` on,
 * by `delayMs` each (in order): a call that the network delays, and what follows it.
 */
import type { Socket } from "bun";

interface Pipe {
  up: Socket<undefined> | null;
  early: Uint8Array[];
  delayed: boolean;
  chain: Promise<void>;
}

export function delayingProxy(listenPort: number, targetPort: number, needle: string, delayMs: number): { close(): Promise<void> } {
  const pattern = Buffer.from(needle);
  const server = Bun.listen<Pipe>({
    hostname: "127.0.0.1",
    port: listenPort,
    socket: {
      async open(down) {
        const pipe: Pipe = { up: null, early: [], delayed: false, chain: Promise.resolve() };
        down.data = pipe;
        pipe.up = await Bun.connect({
          hostname: "127.0.0.1",
          port: targetPort,
          socket: { data: (_, d) => void down.write(d), close: () => void down.end(), error: () => void down.end() },
        });
        for (const chunk of pipe.early.splice(0)) pipe.up.write(chunk);
      },
      data(down, d) {
        const pipe = down.data;
        const chunk = new Uint8Array(d);
        if (!pipe.delayed && Buffer.from(chunk).includes(pattern)) pipe.delayed = true;
        const send = (): void => {
          if (pipe.up === null) pipe.early.push(chunk);
          else pipe.up.write(chunk);
        };
        if (!pipe.delayed) return send();
        pipe.chain = pipe.chain.then(() => Bun.sleep(delayMs)).then(send);
      },
      close(down) {
        down.data?.up?.end();
      },
      error() {},
    },
  });
  return { close: async () => void server.stop(true) };
}
