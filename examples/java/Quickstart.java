import com.paygate.v1.CreateRefundRequest;
import com.paygate.v1.Money;
import com.paygate.v1.Refund;
import com.paygate.v1.RefundServiceGrpc;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import java.util.concurrent.TimeUnit;

public class Quickstart {
  public static void main(String[] args) {
    String addr = System.getenv().getOrDefault("PAYGATE_ADDR", "127.0.0.1:50051");
    ManagedChannel channel = ManagedChannelBuilder.forTarget(addr).usePlaintext().build();
    Refund refund = RefundServiceGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS)
        .create(CreateRefundRequest.newBuilder().setRequestId("order-1234-refund-1").setPaymentId("PAY_DEMO_0001")
            .setAmount(Money.newBuilder().setCurrency("USD").setValue(500)).build());
    System.out.println(refund.getRefundId() + " " + refund.getStatus());
    channel.shutdownNow();
  }
}
