// Calling paygate from Node.js with @grpc/grpc-js, and a test suite at the same time.
//
// Stubs are loaded from ../../proto with @grpc/proto-loader; error details are decoded from the
// `grpc-status-details-bin` trailer with the google.rpc protos from google-proto-files.
//
//   npm ci
//   PAYGATE_ADDR=127.0.0.1:50051 PAYGATE_SIM_URL=http://127.0.0.1:PORT node --test client.test.js
//
// PAYGATE_SIM_URL is the Antom simulator behind the gateway: the tests read its counters and ask
// it for faults. PAYGATE_PAYMENT_ID (USD, at least 20.00 left to refund) and
// PAYGATE_SUBSCRIPTION_ID default to the dev mode's demo data.
"use strict";

const { test, beforeEach } = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");
const crypto = require("node:crypto");
const fs = require("node:fs");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");
const googleProtos = require("google-proto-files");

const PROTO = path.resolve(__dirname, "../../proto");
const ADDR = process.env.PAYGATE_ADDR || "127.0.0.1:50051";
const SIM = process.env.PAYGATE_SIM_URL;
const PAYMENT = process.env.PAYGATE_PAYMENT_ID || "PAY_DEMO_0001";
const SUBSCRIPTION = process.env.PAYGATE_SUBSCRIPTION_ID || "SUB_DEMO_0001";
// EUR, refunds answer PROCESSING until the provider settles them.
const ASYNC_PAYMENT = process.env.PAYGATE_ASYNC_PAYMENT_ID || "PAY_DEMO_ASYNC";
const SERVICE_CONFIG = fs.readFileSync(path.join(PROTO, "paygate/v1/service-config.json"), "utf8");

const definition = loader.loadSync(
  ["paygate/v1/refund_service.proto", "paygate/v1/subscription_service.proto", "paygate/v1/event_service.proto"],
  { includeDirs: [PROTO], keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true },
);
const { RefundService, SubscriptionService, EventService } = grpc.loadPackageDefinition(definition).paygate.v1;

// google.rpc.Status and its detail messages, for `grpc-status-details-bin`.
const rpc = protobuf.loadSync([
  googleProtos.getProtoPath("rpc", "status.proto"),
  googleProtos.getProtoPath("rpc", "error_details.proto"),
]);
const Status = rpc.lookupType("google.rpc.Status");

/** The google.rpc details of a failed call, by type name (ErrorInfo, RetryInfo, BadRequest...). */
function errorDetails(err) {
  const [bin] = err.metadata.get("grpc-status-details-bin");
  assert.ok(bin, "no grpc-status-details-bin trailer");
  const status = Status.decode(bin);
  assert.equal(status.code, err.code);
  const found = {};
  for (const any of status.details) {
    const name = any.type_url.split("/").pop();
    assert.ok(!(name in found), "one detail of each type");
    found[name.replace("google.rpc.", "")] = rpc.lookupType(name).toObject(
      rpc.lookupType(name).decode(any.value),
      { longs: Number },
    );
  }
  return found;
}

/** A unary call as a promise of { res, headers } (headers carry `idempotent-replayed`). */
function unary(client, method, request, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    let headers = new grpc.Metadata();
    const call = client[method](request, { deadline: Date.now() + timeoutMs }, (err, res) =>
      err ? reject(err) : resolve({ res, headers }),
    );
    call.on("metadata", (md) => (headers = md));
  });
}

async function sim(method, pathname, body) {
  const r = await fetch(SIM + pathname, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(r.ok, `${method} ${pathname}: ${r.status}`);
  return r.json();
}
const stats = () => sim("GET", "/sim/stats");
const newId = (prefix) => `${prefix}-${crypto.randomBytes(8).toString("hex")}`;
const refundRequest = (request_id, value, currency = "USD") => ({
  request_id,
  payment_id: PAYMENT,
  amount: { currency, value },
  reason: "node client test",
});
const unknownStreak = (times) => ({
  endpoint: "refund",
  times,
  kind: { type: "result", code: "UNKNOWN_EXCEPTION", status: "U" },
});

// No retries: each test sees the gateway's first answer.
const plain = { "grpc.enable_retries": 0 };
const refunds = new RefundService(ADDR, grpc.credentials.createInsecure(), plain);
const subscriptions = new SubscriptionService(ADDR, grpc.credentials.createInsecure(), plain);

beforeEach(async () => {
  assert.ok(SIM, "PAYGATE_SIM_URL is not set");
  await sim("DELETE", "/sim/faults");
});

test("create, replay, inquire", async () => {
  const before = (await stats()).refundsExecuted;
  const id = newId("node-refund");
  const first = await unary(refunds, "Create", refundRequest(id, 150));
  assert.equal(first.res.status, "REFUND_STATUS_SUCCEEDED");
  assert.ok(first.res.refund_id);
  assert.deepEqual(first.headers.get("idempotent-replayed"), []);

  const again = await unary(refunds, "Create", refundRequest(id, 150));
  assert.equal(again.res.refund_id, first.res.refund_id);
  assert.deepEqual(again.headers.get("idempotent-replayed"), ["true"]);
  assert.equal((await stats()).refundsExecuted, before + 1);

  const found = await unary(refunds, "Inquire", { request_id: id });
  assert.equal(found.res.refund_id, first.res.refund_id);
  assert.equal(found.res.status, "REFUND_STATUS_SUCCEEDED");
});

test("cancel", async () => {
  const { res } = await unary(subscriptions, "Cancel", {
    request_id: newId("node-cancel"),
    subscription_id: SUBSCRIPTION,
    cancellation_type: "CANCELLATION_TYPE_CANCEL",
  });
  assert.equal(res.status, "CANCELLATION_STATUS_ACCEPTED");
  assert.equal(res.provider_result.code, "SUCCESS");
});

test("an invalid request lists every field and sends nothing", async () => {
  const calls = (await stats()).calls.refund || 0;
  const err = await unary(refunds, "Create", refundRequest("", -5, "usd")).then(
    () => assert.fail("accepted"),
    (e) => e,
  );
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  const found = errorDetails(err);
  assert.equal(found.ErrorInfo.reason, "INVALID_REQUEST");
  assert.equal(found.ErrorInfo.domain, "paygate");
  const fields = found.BadRequest.fieldViolations.map((v) => v.field);
  for (const f of ["request_id", "amount.currency", "amount.value"]) assert.ok(fields.includes(f), fields);
  assert.equal(found.RetryInfo, undefined);
  assert.equal((await stats()).calls.refund || 0, calls);
});

test("a provider refusal, then the key reused", async () => {
  const id = newId("node-over");
  let err = await unary(refunds, "Create", refundRequest(id, 10000000)).then(
    () => assert.fail("accepted"),
    (e) => e,
  );
  assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
  const info = errorDetails(err).ErrorInfo;
  assert.equal(info.reason, "REFUND_AMOUNT_EXCEED");
  assert.equal(info.metadata.provider, "antom");
  assert.equal(info.metadata.requestId, id);

  err = await unary(refunds, "Create", refundRequest(id, 100)).then(
    () => assert.fail("accepted"),
    (e) => e,
  );
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  assert.equal(errorDetails(err).ErrorInfo.reason, "IDEMPOTENCY_KEY_REUSED");
});

test("an unknown outcome carries RetryInfo, and the retry refunds once", async () => {
  const before = (await stats()).refundsExecuted;
  await sim("POST", "/sim/faults", unknownStreak(4));
  const id = newId("node-unknown");
  const err = await unary(refunds, "Create", refundRequest(id, 120)).then(
    () => assert.fail("accepted"),
    (e) => e,
  );
  assert.equal(err.code, grpc.status.UNAVAILABLE);
  const found = errorDetails(err);
  assert.equal(found.ErrorInfo.reason, "OUTCOME_UNKNOWN");
  const delayMs = (found.RetryInfo.retryDelay.seconds || 0) * 1000 + (found.RetryInfo.retryDelay.nanos || 0) / 1e6;
  assert.equal(delayMs, 1000);
  assert.equal((await stats()).refundsExecuted, before);

  await new Promise((r) => setTimeout(r, delayMs));
  const { res } = await unary(refunds, "Create", refundRequest(id, 120));
  assert.equal(res.status, "REFUND_STATUS_SUCCEEDED");
  assert.equal((await stats()).refundsExecuted, before + 1);
});

test("the service config makes grpc-js retry UNAVAILABLE, honouring the pushback", async () => {
  const before = await stats();
  await sim("POST", "/sim/faults", unknownStreak(5));
  const client = new RefundService(ADDR, grpc.credentials.createInsecure(), {
    "grpc.service_config": SERVICE_CONFIG,
    "grpc.enable_retries": 1,
  });
  const started = Date.now();
  const { res } = await unary(client, "Create", refundRequest(newId("node-retry"), 130), 15000);
  const elapsed = Date.now() - started;
  client.close();
  const after = await stats();
  assert.equal(res.status, "REFUND_STATUS_SUCCEEDED");
  assert.equal(after.calls.refund - before.calls.refund, 6, "4 attempts in the first RPC, 2 in the retry");
  assert.equal(after.refundsExecuted, before.refundsExecuted + 1, "exactly one refund");
  assert.ok(elapsed >= 1000, `grpc-js waited for grpc-retry-pushback-ms (${elapsed} ms)`);
});

test("Watch streams the final state of a PROCESSING refund", async () => {
  const id = newId("node-async");
  const request = { ...refundRequest(id, 200, "EUR"), payment_id: ASYNC_PAYMENT };
  const { res } = await unary(refunds, "Create", request);
  assert.equal(res.status, "REFUND_STATUS_PROCESSING");
  const simRefund = (await sim("GET", "/sim/refunds")).find((r) => r.refundRequestId === id);
  await fetch(SIM + "/sim/settle", {
    method: "POST",
    body: JSON.stringify({ refundId: simRefund.refundId, success: true }),
  });

  const events = new EventService(ADDR, grpc.credentials.createInsecure());
  const event = await new Promise((resolve, reject) => {
    const call = events.Watch({ after_cursor: "" }, { deadline: Date.now() + 10000 });
    call.on("data", (e) => {
      // Its events: PROCESSING (the Create's answer), then the final state (the notification).
      if (e.payload === "refund" && e.refund.request_id === id && e.refund.status !== "REFUND_STATUS_PROCESSING") {
        call.cancel();
        resolve(e);
      }
    });
    call.on("error", (err) => err.code !== grpc.status.CANCELLED && reject(err));
  });
  events.close();
  assert.equal(event.refund.status, "REFUND_STATUS_SUCCEEDED");
  assert.equal(event.refund.refund_id, simRefund.refundId);
  assert.ok(Number(event.cursor) > 0);

  const replay = await unary(refunds, "Create", request);
  assert.deepEqual(replay.headers.get("idempotent-replayed"), ["true"]);
  assert.equal(replay.res.status, "REFUND_STATUS_SUCCEEDED");
});

test.after(() => {
  refunds.close();
  subscriptions.close();
});
