// FirstCalls: the calls a ClientConnection sends on each new socket before any other, and their
// replies. With an auth token, Auth carrying it; with a `sender` (a node's clients of its peers),
// a PeerPing naming our member, so the node knows which member the connection is. Each goes
// ahead of everything queued, with a reserved seqid (AUTH_SEQID, INTRO_SEQID: pending seqids are
// always > 0), so its reply needs no pending slot; a bit per call (`firstCalls`) says which are
// still unanswered, and a reply to one that was not sent, or a second reply, is a protocol fault.
// A node that refuses the connection answers the first of them: the refusal goes back to the
// connection (`onReply`), which fails its calls with it and backs off (firstCallFailed,
// refusals.ts).

import { BinaryWriter } from "../protocol/binary-writer.ts";
import { CallWriter } from "../protocol/call-writer.ts";
import { CacheError, ERROR_CODE, protocolError } from "../protocol/errors.ts";
import { REPLY_CACHE_ERROR, REPLY_OK, type ReplyReader } from "../protocol/reply-reader.ts";
import { INTRO_SEQID, METHOD_AUTH, METHOD_PEER_PING } from "../protocol/request.ts";
import { TYPE_STRING } from "../protocol/wire.ts";
import type { CallSocket, ClientConnection } from "./client-connection.ts";
import type { Endpoint } from "./client-options.ts";
import { CONN_OPEN } from "./dialer.ts";
import { replyError } from "./results.ts";

/** AUTH_SEQID marks the Auth call sent when a connection opens (pending seqids are always > 0). */
const AUTH_SEQID = -1;
/** FIRST_AUTH and FIRST_INTRO mark the Auth and intro PeerPing sent on a connection and not yet answered. */
const FIRST_AUTH = 1;
const FIRST_INTRO = 2;

/** isFirstCall tells whether `seqid` is the reserved seqid of a first call (Auth or the intro PeerPing). */
export function isFirstCall(seqid: number): boolean {
  return seqid === AUTH_SEQID || seqid === INTRO_SEQID;
}

export class FirstCalls {
  /** firstCalls: FIRST_AUTH and FIRST_INTRO, of this connection's first calls waiting for their replies. */
  private firstCalls = 0;

  constructor(
    private readonly conn: ClientConnection,
    private readonly endpoint: Endpoint,
  ) {}

  /** send writes the first calls on `socket`, just attached: Auth, then the intro PeerPing (as configured). */
  send(socket: CallSocket): void {
    this.firstCalls = 0;
    if (this.endpoint.authToken !== undefined) this.sendAuth(socket, this.endpoint.authToken);
    if (this.endpoint.sender !== undefined && this.conn.state === CONN_OPEN) this.sendFirst(socket, METHOD_PEER_PING, INTRO_SEQID, this.endpoint.sender, "could not send our member id");
  }

  /**
   * sendAuth writes the Auth call ahead of everything queued, with the reserved AUTH_SEQID so its
   * reply needs no pending slot. A refusal closes the connection (the server closes it too).
   */
  private sendAuth(socket: CallSocket, token: string): void {
    this.sendFirst(socket, METHOD_AUTH, AUTH_SEQID, token, "could not send the auth token");
  }

  /**
   * sendFirst writes a call of one string field (id 1: Auth's token, PeerPing's sender) ahead of
   * everything queued, with a reserved seqid so its reply needs no pending slot. A fresh socket
   * takes a few dozen bytes at once; if it ever does not, the connection is dropped (`failure`)
   * rather than sending calls behind half a frame.
   */
  private sendFirst(socket: CallSocket, method: number, seqid: number, text: string, failure: string): void {
    this.firstCalls |= seqid === AUTH_SEQID ? FIRST_AUTH : FIRST_INTRO;
    const call = new CallWriter(new BinaryWriter(64 + text.length * 3));
    call.begin(method, seqid);
    call.out.fieldBegin(TYPE_STRING, 1);
    call.out.utf8(text);
    call.end();
    if (socket.write(call.out.buffer, 0, call.out.length) !== call.out.length) this.conn.drop(failure);
  }

  /**
   * onReply reads the reply in `r` (begun, its seqid a first call's: isFirstCall): null when the
   * node took the call, else the CacheError it answered the Auth with (UNAUTHORIZED for a token
   * it refused), or the intro PeerPing with: the node's refusal of the connection. Throws
   * ProtocolError.
   */
  onReply(r: ReplyReader): CacheError | null {
    // The first call on the connection (Auth, else the PeerPing naming our member): a node at
    // its connection limit answers it with OVERLOADED and closes, as it would answer a call.
    const auth = r.seqid === AUTH_SEQID;
    const bit = auth ? FIRST_AUTH : FIRST_INTRO;
    // Only once, and only if sent: else a server could fail every call with an error of its choosing.
    if ((this.firstCalls & bit) === 0) throw protocolError(`reply to seqid ${r.seqid}, which is not in flight`);
    this.firstCalls &= ~bit;
    r.readResult(auth ? METHOD_AUTH : METHOD_PEER_PING);
    if (r.outcome === REPLY_OK && (!auth || r.success)) return null;
    if (!auth && r.outcome !== REPLY_CACHE_ERROR) return null; // (what the node makes of our name is its own)
    if (r.outcome === REPLY_CACHE_ERROR) {
      return r.errorCode === ERROR_CODE.UNAUTHORIZED
        ? new CacheError(ERROR_CODE.UNAUTHORIZED, "the node refused our auth token")
        : replyError(auth ? METHOD_AUTH : METHOD_PEER_PING, r);
    }
    throw protocolError(`the peer answered our ${auth ? "Auth" : "PeerPing"} with neither success nor an error`);
  }
}
