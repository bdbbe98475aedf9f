// Correctness check run on each server before it is timed: Set a key to a random value, Get it
// back, and compare the bytes. A canned-reply server cannot echo, so for it (`echo = false`) the
// check only requires a well-formed Get reply whose value has the configured size. Slow on purpose
// (one request at a time, allocating decoder from frames.ts); never used while timing.
import { decodeGetReply, keyName, mcGet, mcSet, replyLength, thriftGet, thriftSet, type Protocol } from "./frames.ts";

/** Exchange sends one request frame per call and resolves with the next complete reply frame. */
class Exchange {
  private buf = new Uint8Array(0);
  private waiter: ((frame: Uint8Array) => void) | null = null;
  private failed: ((err: Error) => void) | null = null;
  private constructor(private readonly socket: Bun.Socket<undefined>, private readonly protocol: Protocol) {}

  static async open(port: number, protocol: Protocol): Promise<Exchange> {
    let self: Exchange | null = null;
    const socket = await Bun.connect({
      hostname: "127.0.0.1", port,
      socket: {
        data: (_s, chunk) => self?.onData(chunk),
        close: () => self?.failed?.(new Error("server closed the connection")),
        error: (_s, err) => self?.failed?.(err),
      },
    });
    self = new Exchange(socket, protocol);
    return self;
  }

  private onData(chunk: Uint8Array): void {
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf);
    joined.set(chunk, this.buf.length);
    this.buf = joined;
    const len = replyLength(this.protocol, this.buf);
    if (len < 0 || this.buf.length < len || !this.waiter) return;
    const frame = this.buf.slice(0, len);
    this.buf = this.buf.slice(len);
    this.waiter(frame);
  }

  call(frame: Uint8Array, timeoutMs = 3000): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply within ${timeoutMs} ms`)), timeoutMs);
      this.waiter = (f) => { clearTimeout(timer); this.waiter = null; resolve(f); };
      this.failed = (e) => { clearTimeout(timer); reject(e); };
      this.socket.write(frame);
    });
  }

  close(): void { this.failed = null; this.socket.end(); }
}

/** checkServer throws unless the server at `port` stores and returns a value byte for byte. */
export async function checkServer(port: number, protocol: Protocol, valueSize: number, echo: boolean): Promise<void> {
  const ex = await Exchange.open(port, protocol);
  try {
    const key = keyName(999_999);
    const value = crypto.getRandomValues(new Uint8Array(valueSize));
    const setReply = await ex.call(protocol === "thrift" ? thriftSet("default", key, value, 7) : mcSet(key, value, 7));
    if (echo && protocol === "thrift" && (setReply[7] !== 2 || setReply[20] !== 0 || setReply[21] !== 0)) {
      throw new Error("Set did not succeed");
    }
    const got = decodeGetReply(protocol, await ex.call(protocol === "thrift" ? thriftGet("default", key, 8) : mcGet(key, 8)));
    if (typeof got === "string") throw new Error("bad Get reply: " + got);
    if (got.length !== valueSize) throw new Error(`Get returned ${got.length} bytes, expected ${valueSize}`);
    if (echo && !Buffer.from(got).equals(Buffer.from(value))) throw new Error("Get returned different bytes than Set stored");
  } finally {
    ex.close();
  }
}
