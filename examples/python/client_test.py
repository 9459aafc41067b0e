"""Calling paygate from Python with grpcio, and a test suite at the same time.

Stubs are generated from ../../proto at start-up with grpcio-tools. Errors are decoded from the
`grpc-status-details-bin` trailer with grpcio-status. The service config next to the proto
makes grpcio itself retry UNAVAILABLE, honouring the gateway's `grpc-retry-pushback-ms`.

    pip install -r requirements.txt
    PAYGATE_ADDR=127.0.0.1:50051 PAYGATE_SIM_URL=http://127.0.0.1:PORT python client_test.py

PAYGATE_SIM_URL is the Antom simulator behind the gateway: the tests read its counters and
ask it for faults. PAYGATE_PAYMENT_ID (USD, at least 20.00 left to refund) and
PAYGATE_SUBSCRIPTION_ID default to the dev mode's demo data.
"""

import json
import os
import pathlib
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
import uuid

PROTO = pathlib.Path(__file__).resolve().parents[2] / "proto"


def generate_stubs():
    """Runs protoc (from grpcio-tools) on proto/paygate/v1 into a temporary import path."""
    import grpc_tools
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="paygate-stubs-")
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p) for p in (PROTO / "paygate" / "v1").glob("*.proto"))
    args = ["protoc", f"-I{PROTO}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + files) != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, out)


generate_stubs()

import grpc  # noqa: E402
from google.protobuf import descriptor_pool  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # noqa: E402
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status  # noqa: E402
from paygate.v1 import common_pb2  # noqa: E402
from paygate.v1 import event_service_pb2, event_service_pb2_grpc  # noqa: E402
from paygate.v1 import refund_service_pb2 as refund_pb  # noqa: E402
from paygate.v1 import refund_service_pb2_grpc  # noqa: E402
from paygate.v1 import subscription_service_pb2 as sub_pb  # noqa: E402
from paygate.v1 import subscription_service_pb2_grpc  # noqa: E402

ADDR = os.environ.get("PAYGATE_ADDR", "127.0.0.1:50051")
SIM = os.environ.get("PAYGATE_SIM_URL", "")
PAYMENT = os.environ.get("PAYGATE_PAYMENT_ID", "PAY_DEMO_0001")
SUBSCRIPTION = os.environ.get("PAYGATE_SUBSCRIPTION_ID", "SUB_DEMO_0001")
# EUR, refunds answer PROCESSING until the provider settles them.
ASYNC_PAYMENT = os.environ.get("PAYGATE_ASYNC_PAYMENT_ID", "PAY_DEMO_ASYNC")
SERVICE_CONFIG = (PROTO / "paygate" / "v1" / "service-config.json").read_text()


def retrying_channel():
    """The channel a service should use: the published service config, retries on."""
    return grpc.insecure_channel(
        ADDR,
        options=[("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1)],
    )


def plain_channel():
    """No retries, so a test sees the gateway's first answer."""
    return grpc.insecure_channel(ADDR, options=[("grpc.enable_retries", 0)])


def error_details(err):
    """The google.rpc details of a failed call, by type name."""
    status = rpc_status.from_call(err)
    assert status is not None, "no grpc-status-details-bin trailer"
    found = {}
    for any_ in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.QuotaFailure,
        ):
            if any_.Is(kind.DESCRIPTOR):
                msg = kind()
                any_.Unpack(msg)
                assert kind.DESCRIPTOR.name not in found, "one detail of each type"
                found[kind.DESCRIPTOR.name] = msg
    return found


def sim(method, path, body=None):
    """The simulator's control API."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(SIM + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read() or b"{}")


def refunds_executed():
    return sim("GET", "/sim/stats")["refundsExecuted"]


def refund_calls():
    return sim("GET", "/sim/stats")["calls"].get("refund", 0)


def new_id(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def create(stub, request_id, value, payment_id=PAYMENT, currency="USD", timeout=10):
    req = refund_pb.CreateRefundRequest(
        request_id=request_id,
        payment_id=payment_id,
        amount=common_pb2.Money(currency=currency, value=value),
        reason="python client test",
    )
    return stub.Create.with_call(req, timeout=timeout)


class PaygateFromPython(unittest.TestCase):
    def setUp(self):
        if not SIM:
            self.skipTest("PAYGATE_SIM_URL is not set")
        sim("DELETE", "/sim/faults")
        self.channel = plain_channel()
        self.refunds = refund_service_pb2_grpc.RefundServiceStub(self.channel)
        self.subscriptions = subscription_service_pb2_grpc.SubscriptionServiceStub(self.channel)

    def tearDown(self):
        self.channel.close()

    def test_create_replay_inquire(self):
        before = refunds_executed()
        request_id = new_id("py-refund")
        refund, call = create(self.refunds, request_id, 150)
        self.assertEqual(refund.status, refund_pb.REFUND_STATUS_SUCCEEDED)
        self.assertTrue(refund.refund_id)
        self.assertEqual(refund.amount.value, 150)
        self.assertNotIn(("idempotent-replayed", "true"), call.initial_metadata())

        again, call = create(self.refunds, request_id, 150)
        self.assertEqual(again.refund_id, refund.refund_id)
        self.assertIn(("idempotent-replayed", "true"), call.initial_metadata())
        self.assertEqual(refunds_executed(), before + 1)

        found = self.refunds.Inquire(refund_pb.InquireRefundRequest(request_id=request_id), timeout=10)
        self.assertEqual(found.refund_id, refund.refund_id)
        self.assertEqual(found.status, refund_pb.REFUND_STATUS_SUCCEEDED)

    def test_cancel(self):
        answer = self.subscriptions.Cancel(
            sub_pb.CancelSubscriptionRequest(
                request_id=new_id("py-cancel"),
                subscription_id=SUBSCRIPTION,
                cancellation_type=sub_pb.CANCELLATION_TYPE_CANCEL,
            ),
            timeout=10,
        )
        self.assertEqual(answer.status, sub_pb.CANCELLATION_STATUS_ACCEPTED)
        self.assertEqual(answer.provider_result.code, "SUCCESS")

    def test_invalid_request_lists_every_field(self):
        calls = refund_calls()
        with self.assertRaises(grpc.RpcError) as caught:
            create(self.refunds, "", -5, currency="usd")
        err = caught.exception
        self.assertEqual(err.code(), grpc.StatusCode.INVALID_ARGUMENT)
        found = error_details(err)
        self.assertEqual(found["ErrorInfo"].reason, "INVALID_REQUEST")
        self.assertEqual(found["ErrorInfo"].domain, "paygate")
        fields = {v.field for v in found["BadRequest"].field_violations}
        self.assertTrue({"request_id", "amount.currency", "amount.value"} <= fields, fields)
        self.assertNotIn("RetryInfo", found)
        self.assertEqual(refund_calls(), calls, "nothing reached the provider")

    def test_provider_refusal_and_key_reuse(self):
        request_id = new_id("py-over")
        with self.assertRaises(grpc.RpcError) as caught:
            create(self.refunds, request_id, 10_000_000)
        err = caught.exception
        self.assertEqual(err.code(), grpc.StatusCode.FAILED_PRECONDITION)
        info = error_details(err)["ErrorInfo"]
        self.assertEqual(info.reason, "REFUND_AMOUNT_EXCEED")
        self.assertEqual(info.metadata["provider"], "antom")
        self.assertEqual(info.metadata["requestId"], request_id)
        self.assertNotIn("RetryInfo", error_details(err))

        with self.assertRaises(grpc.RpcError) as caught:
            create(self.refunds, request_id, 100)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(error_details(caught.exception)["ErrorInfo"].reason, "IDEMPOTENCY_KEY_REUSED")

    def test_unknown_outcome_carries_retry_info_and_the_retry_refunds_once(self):
        before = refunds_executed()
        # Every attempt of one call (the first and three settling resends) answers U.
        sim("POST", "/sim/faults", {"endpoint": "refund", "times": 4,
                                    "kind": {"type": "result", "code": "UNKNOWN_EXCEPTION", "status": "U"}})
        request_id = new_id("py-unknown")
        with self.assertRaises(grpc.RpcError) as caught:
            create(self.refunds, request_id, 120)
        err = caught.exception
        self.assertEqual(err.code(), grpc.StatusCode.UNAVAILABLE)
        found = error_details(err)
        self.assertEqual(found["ErrorInfo"].reason, "OUTCOME_UNKNOWN")
        delay = found["RetryInfo"].retry_delay
        self.assertEqual(delay.seconds + delay.nanos / 1e9, 1.0)
        self.assertEqual(refunds_executed(), before)

        time.sleep(delay.seconds + delay.nanos / 1e9)
        refund, _ = create(self.refunds, request_id, 120)
        self.assertEqual(refund.status, refund_pb.REFUND_STATUS_SUCCEEDED)
        self.assertEqual(refunds_executed(), before + 1)

    def test_service_config_retries_unavailable_honouring_pushback(self):
        before, calls = refunds_executed(), refund_calls()
        # One call's four attempts answer U, and the first attempt of the next one too.
        sim("POST", "/sim/faults", {"endpoint": "refund", "times": 5,
                                    "kind": {"type": "result", "code": "UNKNOWN_EXCEPTION", "status": "U"}})
        channel = retrying_channel()
        stub = refund_service_pb2_grpc.RefundServiceStub(channel)
        started = time.monotonic()
        # One call from the application; grpcio sends it twice.
        refund, _ = create(stub, new_id("py-retry"), 130, timeout=15)
        elapsed = time.monotonic() - started
        channel.close()
        print(f"\n  one application call, retried by grpcio: {elapsed:.2f} s", file=sys.stderr)
        self.assertEqual(refund.status, refund_pb.REFUND_STATUS_SUCCEEDED)
        self.assertEqual(refund_calls() - calls, 6, "4 attempts in the first RPC, 2 in the retry")
        self.assertEqual(refunds_executed(), before + 1, "exactly one refund")
        # The service config's own backoff would retry within 0.2 s; the gateway's pushback is 1 s.
        self.assertGreaterEqual(elapsed, 1.0, "grpcio waited for grpc-retry-pushback-ms")

    def test_watch_delivers_the_final_state_and_resumes_after_its_cursor(self):
        request_id = new_id("py-async")
        refund, _ = create(self.refunds, request_id, 200, payment_id=ASYNC_PAYMENT, currency="EUR")
        self.assertEqual(refund.status, refund_pb.REFUND_STATUS_PROCESSING)
        # The provider settles it and notifies the gateway.
        refund_id = next(r["refundId"] for r in sim("GET", "/sim/refunds") if r["refundRequestId"] == request_id)
        try:
            sim("POST", "/sim/settle", {"refundId": refund_id, "success": True})
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 400)  # dev mode settled it already

        events = event_service_pb2_grpc.EventServiceStub(self.channel)
        stream = events.Watch(event_service_pb2.WatchEventsRequest(), timeout=10)
        # Its events: PROCESSING (the Create's answer), then the final state (the notification).
        for event in stream:
            if (event.WhichOneof("payload") == "refund" and event.refund.request_id == request_id
                    and event.refund.status != refund_pb.REFUND_STATUS_PROCESSING):
                break
        stream.cancel()
        self.assertEqual(event.refund.status, refund_pb.REFUND_STATUS_SUCCEEDED)
        self.assertEqual(event.refund.refund_id, refund_id)
        self.assertTrue(event.event_id.endswith(f"/refund/{refund_id}/SUCCESS"))

        # A consumer that resumes after that cursor never sees the event again.
        later = []
        try:
            for e in events.Watch(event_service_pb2.WatchEventsRequest(after_cursor=event.cursor), timeout=1):
                later.append(e)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertNotIn(event.event_id, [e.event_id for e in later])
        self.assertTrue(all(int(e.cursor) > int(event.cursor) for e in later))

        # And the Create's replay reports the final state.
        replay, call = create(self.refunds, request_id, 200, payment_id=ASYNC_PAYMENT, currency="EUR")
        self.assertIn(("idempotent-replayed", "true"), call.initial_metadata())
        self.assertEqual(replay.status, refund_pb.REFUND_STATUS_SUCCEEDED)

    def test_reflection_serves_full_descriptors(self):
        db = ProtoReflectionDescriptorDatabase(self.channel)
        services = set(db.get_services())
        for name in (
            "paygate.v1.RefundService",
            "paygate.v1.SubscriptionService",
            "paygate.v1.EventService",
            "grpc.health.v1.Health",
        ):
            self.assertIn(name, services)
        pool = descriptor_pool.DescriptorPool(db)
        seen = set()

        def walk(message):
            if message.full_name in seen:
                return
            seen.add(message.full_name)
            for field in message.fields:
                if field.message_type is not None:
                    walk(field.message_type)

        for name in ("paygate.v1.RefundService", "paygate.v1.SubscriptionService", "paygate.v1.EventService"):
            for method in pool.FindServiceByName(name).methods:
                walk(method.input_type)
                walk(method.output_type)
        self.assertIn("google.protobuf.Timestamp", seen)
        for detail in ("ErrorInfo", "RetryInfo", "BadRequest", "QuotaFailure"):
            self.assertEqual(pool.FindMessageTypeByName(f"google.rpc.{detail}").name, detail)


if __name__ == "__main__":
    unittest.main(verbosity=2)
