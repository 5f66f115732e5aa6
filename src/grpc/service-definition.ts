// Bridges a @bufbuild/protobuf service descriptor (protoc-gen-es output) to
// the ServiceDefinition @grpc/grpc-js serves, so the wire codec is the
// generated one and nothing is declared twice.
import { type DescMessage, type DescService, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";
import { CpmError } from "../errors/catalogue.js";

function codec<D extends DescMessage>(schema: D) {
  return {
    serialize: (msg: MessageShape<D>) => Buffer.from(toBinary(schema, msg)),
    deserialize: (bytes: Buffer): MessageShape<D> => {
      try {
        return fromBinary(schema, bytes);
      } catch (err) {
        // Reaches the handler wrapper as INVALID_ARGUMENT, never a crash.
        throw new CpmError("CPM_ERR_BAD_REQUEST", `undecodable ${schema.typeName}`, { cause: err });
      }
    },
  };
}

export function grpcServiceDefinition(service: DescService): ServiceDefinition {
  const def: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    if (method.methodKind !== "unary" && method.methodKind !== "bidi_streaming") {
      throw new Error(`only unary and bidi-streaming methods are bridged: ${method.name}`);
    }
    const streaming = method.methodKind === "bidi_streaming";
    const req = codec(method.input);
    const res = codec(method.output);
    def[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: streaming,
      responseStream: streaming,
      requestSerialize: req.serialize as (v: unknown) => Buffer,
      requestDeserialize: req.deserialize,
      responseSerialize: res.serialize as (v: unknown) => Buffer,
      responseDeserialize: res.deserialize,
    };
  }
  return def as ServiceDefinition;
}
