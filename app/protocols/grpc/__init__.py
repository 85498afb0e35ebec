"""The gRPC front end: TF Serving's PredictionService/ModelService, KServe v2's
GRPCInferenceService, grpc.health.v1 and reflection, on the same data plane as HTTP.

Adapters only: protobuf messages in, `app.dataplane.DataPlane` calls, protobuf messages out.
The message classes are the generated modules of maintained packages (tensorflow-serving-api,
tritonclient[grpc], grpcio-health-checking, grpcio-reflection), never hand-written. Nothing here
is imported until the server starts (`app.protocols.grpc.server`): the TF Serving modules import
TensorFlow's own protobuf package, which takes seconds.
"""
