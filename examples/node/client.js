// A Node.js client of launch-gateway: one sync, one streaming and one async call.
//
// It loads the contract (protos/launch_gateway/v1/endpoint_service.proto) at runtime with
// @grpc/proto-loader, so there is no code generation step. The endpoints it calls (echo, count,
// echo-async) are the local Launch server's built-in examples.
//
// Run it from the repository's root:
//
//   npm ci --prefix examples/node
//   .venv/bin/launch-gateway local-launch --port 5005 &
//   .venv/bin/launch-gateway serve --upstream http://127.0.0.1:5005 --port 50051 &
//   node examples/node/client.js localhost:50051
//
// With LAUNCH_GATEWAY_API_KEY set, every call sends the metadata `authorization: Bearer <key>`
// (the gateway forwards it to Launch when it runs with --upstream-auth forward).
// Every call has a 10 s deadline; any RPC error ends the program with exit code 1.

'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTOS = path.join(__dirname, '..', '..', 'protos');
const DEADLINE_MS = 10_000;

function loadService() {
  const definition = protoLoader.loadSync('launch_gateway/v1/endpoint_service.proto', {
    includeDirs: [PROTOS], // google/protobuf/*.proto come with proto-loader
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).launch_gateway.v1.EndpointService;
}

// toJsonStruct turns a plain JSON object into a google.protobuf.Struct as proto-loader expects it:
// {fields: {n: {numberValue: 3}, text: {stringValue: "..."}}}.
function toJsonStruct(object) {
  const fields = {};
  for (const [key, value] of Object.entries(object)) {
    fields[key] = toJsonValue(value);
  }
  return { fields };
}

function toJsonValue(value) {
  if (value === null) return { nullValue: 'NULL_VALUE' };
  if (Array.isArray(value)) return { listValue: { values: value.map(toJsonValue) } };
  switch (typeof value) {
    case 'number':
      return { numberValue: value };
    case 'string':
      return { stringValue: value };
    case 'boolean':
      return { boolValue: value };
    case 'object':
      return { structValue: toJsonStruct(value) };
    default:
      throw new TypeError(`not a JSON value: ${value}`);
  }
}

function callMetadata() {
  const metadata = new grpc.Metadata();
  const key = process.env.LAUNCH_GATEWAY_API_KEY;
  if (key) metadata.set('authorization', `Bearer ${key}`);
  return metadata;
}

function callOptions() {
  return { deadline: Date.now() + DEADLINE_MS };
}

// unary calls one unary RPC and resolves with its response.
function unary(client, rpc, request) {
  return new Promise((resolve, reject) => {
    client[rpc](request, callMetadata(), callOptions(), (error, response) => {
      if (error) reject(error);
      else resolve(response);
    });
  });
}

async function predict(client) {
  const { response } = await unary(client, 'Predict', {
    endpoint_name: 'echo',
    request: { args: toJsonStruct({ text: 'hello from node', n: 3 }) },
  });
  console.log(`sync: ${response.status} ${response.result}`);
}

function streamPredict(client) {
  return new Promise((resolve, reject) => {
    const call = client.StreamPredict(
      { endpoint_name: 'count', request: { args: toJsonStruct({ n: 4, interval: 0.05 }) } },
      callMetadata(),
      callOptions(),
    );
    // grpc-js ends a failed stream too: 'error' comes first, then 'end'.
    let failed = false;
    call.on('data', ({ response }) => console.log(`stream event: ${response.result}`));
    call.on('error', (error) => {
      failed = true;
      reject(error);
    });
    call.on('end', () => {
      if (failed) return;
      console.log('stream end');
      resolve();
    });
  });
}

async function submitAndWait(client) {
  const { task_id } = await unary(client, 'SubmitAsync', {
    endpoint_name: 'echo-async',
    request: { args: toJsonStruct({ delay: 0.1, x: 1 }) },
  });
  // WaitAsyncTask returns when the task ends, or with the last status seen when the timeout passes.
  const { response } = await unary(client, 'WaitAsyncTask', { task_id, timeout: { seconds: 10 } });
  console.log(`async: ${task_id} ${response.status} ${response.result}`);
}

async function main() {
  const address = process.argv[2];
  if (!address) {
    console.error('usage: node client.js HOST:PORT');
    process.exit(2);
  }
  const EndpointService = loadService();
  const client = new EndpointService(address, grpc.credentials.createInsecure());
  try {
    await predict(client);
    await streamPredict(client);
    await submitAndWait(client);
  } finally {
    client.close();
  }
}

main().catch((error) => {
  const code = error.code !== undefined ? `${grpc.status[error.code]}: ` : '';
  console.error(`error: ${code}${error.details || error.message}`);
  process.exit(1);
});
