// grpc.health.v1 Check against a running gRPC server, as a generic client of
// grpc-health-check's service definition.
import { type ChannelCredentials, makeGenericClientConstructor, type ServiceError } from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";

/** The status of `service` ("" = the server); rejects with the call's error. */
export function healthStatus(target: string, creds: ChannelCredentials, service = ""): Promise<string> {
  const Health = makeGenericClientConstructor(healthService as never, "Health");
  const client = new Health(target, creds) as unknown as {
    check(req: { service: string }, opts: { deadline: number }, cb: (e: ServiceError | null, r: { status: string }) => void): void;
    close(): void;
  };
  return new Promise<string>((resolve, reject) =>
    client.check({ service }, { deadline: Date.now() + 2000 }, (e, r) => {
      client.close();
      if (e) reject(e);
      else resolve(r.status);
    }),
  );
}
