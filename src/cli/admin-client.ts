// A client of the sidecar's AdminService and health service for the
// operator CLI: insecure on loopback or a Unix socket, TLS (mutual with a
// client certificate) as the gRPC server is configured.
import { readFileSync } from "node:fs";
import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import { type ChannelCredentials, type Client, credentials, makeGenericClientConstructor, type ServiceError } from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { AdminService } from "../gen/cpm/pf/v1/admin_pb.js";
import { grpcServiceDefinition } from "../grpc/service-definition.js";

export interface Connection {
  /** "host:port" or "unix:/path". */
  target: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  timeoutMs: number;
}

type Unary = (req: unknown, opts: { deadline: number }, cb: (err: ServiceError | null, res: unknown) => void) => void;

function channelCredentials(c: Connection): ChannelCredentials {
  if (!c.tlsCa) return credentials.createInsecure();
  return credentials.createSsl(readFileSync(c.tlsCa), c.tlsKey ? readFileSync(c.tlsKey) : null, c.tlsCert ? readFileSync(c.tlsCert) : null);
}

export class AdminClient {
  private readonly admin: Client & Record<string, Unary>;
  private readonly health: Client & Record<string, Unary>;

  constructor(private readonly conn: Connection) {
    const creds = channelCredentials(conn);
    const Admin = makeGenericClientConstructor(grpcServiceDefinition(AdminService), "AdminService");
    this.admin = new Admin(conn.target, creds) as unknown as Client & Record<string, Unary>;
    const Health = makeGenericClientConstructor(healthService as never, "Health");
    this.health = new Health(conn.target, creds) as unknown as Client & Record<string, Unary>;
  }

  call<I extends DescMessage, O>(method: string, schema: I, req: MessageInitShape<I>): Promise<O> {
    return this.unary(this.admin, method, create(schema, req) as MessageShape<I>);
  }

  /** grpc.health.v1 Check of the whole server (""). */
  async healthStatus(): Promise<string> {
    const r = await this.unary<{ status: string }>(this.health, "Check", { service: "" });
    return r.status;
  }

  close(): void {
    this.admin.close();
    this.health.close();
  }

  private unary<T>(client: Client & Record<string, Unary>, method: string, req: unknown): Promise<T> {
    return new Promise((resolve, reject) => {
      const fn = client[method] as Unary;
      fn.call(client, req, { deadline: Date.now() + this.conn.timeoutMs }, (err, res) => (err ? reject(err) : resolve(res as T)));
    });
  }
}
