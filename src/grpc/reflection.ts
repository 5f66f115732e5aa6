// gRPC server reflection (grpc.reflection.v1 and v1alpha, @grpc/reflection):
// lets grpcurl and other tools list and call the PF's services without the
// .proto files. The PF service's descriptors come from the generated code
// (protoc-gen-es), the health service's from grpc-health-check.
import type { DescFile } from "@bufbuild/protobuf";
import { toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { Server } from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { service as healthService } from "grpc-health-check";
import { file_cpm_pf_v1_admin } from "../gen/cpm/pf/v1/admin_pb.js";
import { file_cpm_pf_v1_pf } from "../gen/cpm/pf/v1/pf_pb.js";

/** The file and every file it imports, each once, as serialized FileDescriptorProtos. */
function descriptorSet(file: DescFile, out = new Map<string, Buffer>()): Map<string, Buffer> {
  if (out.has(file.proto.name)) return out;
  for (const dep of file.dependencies) descriptorSet(dep, out);
  out.set(file.proto.name, Buffer.from(toBinary(FileDescriptorProtoSchema, file.proto)));
  return out;
}

export function addReflection(server: Server): void {
  const health = (healthService.Check?.requestType as { fileDescriptorProtos?: Buffer[] } | undefined)?.fileDescriptorProtos ?? [];
  // @grpc/reflection reads `fileDescriptorProtos` from each entry of a proto-loader package definition
  const pkg = {
    "cpm.pf.v1": { fileDescriptorProtos: [...descriptorSet(file_cpm_pf_v1_admin, descriptorSet(file_cpm_pf_v1_pf)).values()] },
    "grpc.health.v1": { fileDescriptorProtos: health },
  };
  new ReflectionService(pkg as unknown as ConstructorParameters<typeof ReflectionService>[0]).addToServer(server);
}
