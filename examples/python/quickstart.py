import os, grpc
from paygate.v1 import common_pb2, refund_service_pb2 as pb, refund_service_pb2_grpc

channel = grpc.insecure_channel(os.environ.get("PAYGATE_ADDR", "127.0.0.1:50051"))
refunds = refund_service_pb2_grpc.RefundServiceStub(channel)
refund = refunds.Create(pb.CreateRefundRequest(
    request_id="order-1234-refund-1", payment_id="PAY_DEMO_0001",
    amount=common_pb2.Money(currency="USD", value=500)), timeout=10)
print(refund.refund_id, pb.RefundStatus.Name(refund.status))
