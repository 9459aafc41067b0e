// Calling paygate from Java with grpc-java, and a JUnit 4 suite at the same time.
//
// Stubs are generated from ../../proto by buf with proto/buf.gen.java.yaml and compiled with
// javac against Debian's jars, as is this file. Error details are decoded with
// StatusProto.fromThrowable. The service config next to the proto makes grpc-java itself
// retry UNAVAILABLE, honouring the gateway's grpc-retry-pushback-ms. From the repository root:
//
//   bash examples/setup.sh java
//   npx --yes @bufbuild/buf generate --template proto/buf.gen.java.yaml
//   javac -d gen/java/classes -cp "$(bash examples/java/classpath.sh)" \
//     $(find gen/java -name '*.java') examples/java/ClientTest.java
//   PAYGATE_ADDR=127.0.0.1:50051 PAYGATE_SIM_URL=http://127.0.0.1:PORT \
//     java -cp "$(bash examples/java/classpath.sh gen/java/classes)" org.junit.runner.JUnitCore ClientTest
//
// PAYGATE_SIM_URL is the Antom simulator behind the gateway: the tests read its counters and ask
// it for faults. PAYGATE_PAYMENT_ID (USD, at least 20.00 left to refund) and
// PAYGATE_SUBSCRIPTION_ID default to the dev mode's demo data.

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import com.google.gson.Gson;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import com.paygate.v1.CancelSubscriptionRequest;
import com.paygate.v1.CancelSubscriptionResponse;
import com.paygate.v1.CancellationStatus;
import com.paygate.v1.CancellationType;
import com.paygate.v1.CreateRefundRequest;
import com.paygate.v1.Event;
import com.paygate.v1.EventServiceGrpc;
import com.paygate.v1.InquireRefundRequest;
import com.paygate.v1.Money;
import com.paygate.v1.Refund;
import com.paygate.v1.RefundServiceGrpc;
import com.paygate.v1.RefundStatus;
import com.paygate.v1.SubscriptionServiceGrpc;
import com.paygate.v1.WatchEventsRequest;
import io.grpc.Context;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.MetadataUtils;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.After;
import org.junit.Before;
import org.junit.Test;

public class ClientTest {
  static final String ADDR = env("PAYGATE_ADDR", "127.0.0.1:50051");
  static final String SIM = env("PAYGATE_SIM_URL", "");
  static final String PAYMENT = env("PAYGATE_PAYMENT_ID", "PAY_DEMO_0001");
  static final String SUBSCRIPTION = env("PAYGATE_SUBSCRIPTION_ID", "SUB_DEMO_0001");
  // EUR, refunds answer PROCESSING until the provider settles them.
  static final String ASYNC_PAYMENT = env("PAYGATE_ASYNC_PAYMENT_ID", "PAY_DEMO_ASYNC");
  static final Path PROTO = Path.of(env("PAYGATE_PROTO_DIR", "proto"));
  static final Metadata.Key<String> REPLAYED =
      Metadata.Key.of("idempotent-replayed", Metadata.ASCII_STRING_MARSHALLER);
  static final HttpClient HTTP = HttpClient.newHttpClient();

  ManagedChannel channel;
  RefundServiceGrpc.RefundServiceBlockingStub refunds;

  static String env(String name, String fallback) {
    String v = System.getenv(name);
    return v == null || v.isEmpty() ? fallback : v;
  }

  /** The channel a service should use: the published service config, retries on. */
  static ManagedChannel retryingChannel() throws Exception {
    String json = Files.readString(PROTO.resolve("paygate/v1/service-config.json"));
    @SuppressWarnings("unchecked")
    Map<String, ?> config = new Gson().fromJson(json, Map.class);
    return ManagedChannelBuilder.forTarget(ADDR).usePlaintext().defaultServiceConfig(config).enableRetry().build();
  }

  /** No retries, so a test sees the gateway's first answer. */
  static ManagedChannel plainChannel() {
    return ManagedChannelBuilder.forTarget(ADDR).usePlaintext().disableRetry().build();
  }

  /** The google.rpc details of a failed call, by type. */
  static Map<Class<?>, Message> errorDetails(StatusRuntimeException e) throws InvalidProtocolBufferException {
    com.google.rpc.Status status = StatusProto.fromThrowable(e);
    assertNotNull("no grpc-status-details-bin trailer", status);
    assertEquals(e.getStatus().getCode().value(), status.getCode());
    Map<Class<?>, Message> found = new HashMap<>();
    for (Any any : status.getDetailsList()) {
      for (Class<? extends Message> kind : new Class[] {ErrorInfo.class, RetryInfo.class, BadRequest.class}) {
        if (any.is(kind)) {
          assertNull("one detail of each type", found.put(kind, any.unpack(kind)));
        }
      }
    }
    assertTrue("an ErrorInfo", found.containsKey(ErrorInfo.class));
    return found;
  }

  static StatusRuntimeException failure(Runnable call) {
    try {
      call.run();
    } catch (StatusRuntimeException e) {
      return e;
    }
    throw new AssertionError("the call succeeded");
  }

  /** The simulator's control API. */
  static JsonElement sim(String method, String path, Object body) throws Exception {
    HttpRequest.BodyPublisher publisher =
        body == null ? HttpRequest.BodyPublishers.noBody() : HttpRequest.BodyPublishers.ofString(new Gson().toJson(body));
    HttpRequest request = HttpRequest.newBuilder(URI.create(SIM + path))
        .timeout(Duration.ofSeconds(5))
        .header("content-type", "application/json")
        .method(method, publisher)
        .build();
    HttpResponse<String> response = HTTP.send(request, HttpResponse.BodyHandlers.ofString());
    if (response.statusCode() >= 300) {
      throw new SimError(response.statusCode(), response.body());
    }
    return response.body().isBlank() ? new JsonObject() : new Gson().fromJson(response.body(), JsonElement.class);
  }

  static class SimError extends Exception {
    final int status;

    SimError(int status, String body) {
      super(status + " " + body);
      this.status = status;
    }
  }

  static int refundsExecuted() throws Exception {
    return sim("GET", "/sim/stats", null).getAsJsonObject().get("refundsExecuted").getAsInt();
  }

  static int refundCalls() throws Exception {
    JsonElement n = sim("GET", "/sim/stats", null).getAsJsonObject().getAsJsonObject("calls").get("refund");
    return n == null ? 0 : n.getAsInt();
  }

  static void fault(int times) throws Exception {
    sim("POST", "/sim/faults", Map.of(
        "endpoint", "refund", "times", times,
        "kind", Map.of("type", "result", "code", "UNKNOWN_EXCEPTION", "status", "U")));
  }

  static String newId(String prefix) {
    return prefix + "-" + UUID.randomUUID().toString().replace("-", "").substring(0, 16);
  }

  static CreateRefundRequest createRequest(String requestId, long value, String paymentId, String currency) {
    return CreateRefundRequest.newBuilder()
        .setRequestId(requestId)
        .setPaymentId(paymentId)
        .setAmount(Money.newBuilder().setCurrency(currency).setValue(value))
        .setReason("java client test")
        .build();
  }

  /** A Create and the answer's headers. */
  static Refund create(RefundServiceGrpc.RefundServiceBlockingStub stub, CreateRefundRequest request,
      AtomicReference<Metadata> headers) {
    return stub.withInterceptors(MetadataUtils.newCaptureMetadataInterceptor(headers, new AtomicReference<>()))
        .withDeadlineAfter(10, TimeUnit.SECONDS)
        .create(request);
  }

  @Before
  public void setUp() throws Exception {
    assertFalse("PAYGATE_SIM_URL is not set", SIM.isEmpty());
    sim("DELETE", "/sim/faults", null);
    channel = plainChannel();
    refunds = RefundServiceGrpc.newBlockingStub(channel);
  }

  @After
  public void tearDown() {
    channel.shutdownNow();
  }

  @Test
  public void createReplayInquire() throws Exception {
    int before = refundsExecuted();
    String requestId = newId("java-refund");
    AtomicReference<Metadata> headers = new AtomicReference<>();
    Refund refund = create(refunds, createRequest(requestId, 150, PAYMENT, "USD"), headers);
    assertEquals(RefundStatus.REFUND_STATUS_SUCCEEDED, refund.getStatus());
    assertFalse(refund.getRefundId().isEmpty());
    assertEquals(150, refund.getAmount().getValue());
    assertNull(headers.get().get(REPLAYED));

    Refund again = create(refunds, createRequest(requestId, 150, PAYMENT, "USD"), headers);
    assertEquals(refund.getRefundId(), again.getRefundId());
    assertEquals("true", headers.get().get(REPLAYED));
    assertEquals(before + 1, refundsExecuted());

    Refund found = refunds.withDeadlineAfter(10, TimeUnit.SECONDS)
        .inquire(InquireRefundRequest.newBuilder().setRequestId(requestId).build());
    assertEquals(refund.getRefundId(), found.getRefundId());
    assertEquals(RefundStatus.REFUND_STATUS_SUCCEEDED, found.getStatus());
    assertEquals(PAYMENT, found.getPaymentId());
    assertEquals(refund.getAccount(), found.getAccount());
  }

  @Test
  public void cancel() {
    CancelSubscriptionResponse answer = SubscriptionServiceGrpc.newBlockingStub(channel)
        .withDeadlineAfter(10, TimeUnit.SECONDS)
        .cancel(CancelSubscriptionRequest.newBuilder()
            .setRequestId(newId("java-cancel"))
            .setSubscriptionId(SUBSCRIPTION)
            .setCancellationType(CancellationType.CANCELLATION_TYPE_CANCEL)
            .build());
    assertEquals(CancellationStatus.CANCELLATION_STATUS_ACCEPTED, answer.getStatus());
    assertEquals("SUCCESS", answer.getProviderResult().getCode());
  }

  @Test
  public void invalidRequestListsEveryField() throws Exception {
    int calls = refundCalls();
    StatusRuntimeException e = failure(() -> create(refunds, createRequest("", -5, PAYMENT, "usd"), new AtomicReference<>()));
    assertEquals(Status.Code.INVALID_ARGUMENT, e.getStatus().getCode());
    Map<Class<?>, Message> found = errorDetails(e);
    ErrorInfo info = (ErrorInfo) found.get(ErrorInfo.class);
    assertEquals("INVALID_REQUEST", info.getReason());
    assertEquals("paygate", info.getDomain());
    Set<String> fields = new HashSet<>();
    for (BadRequest.FieldViolation v : ((BadRequest) found.get(BadRequest.class)).getFieldViolationsList()) {
      fields.add(v.getField());
    }
    assertTrue(fields.toString(), fields.containsAll(Set.of("request_id", "amount.currency", "amount.value")));
    assertFalse(found.containsKey(RetryInfo.class));
    assertEquals("nothing reached the provider", calls, refundCalls());
  }

  @Test
  public void providerRefusalAndKeyReuse() throws Exception {
    String requestId = newId("java-over");
    StatusRuntimeException e =
        failure(() -> create(refunds, createRequest(requestId, 10_000_000, PAYMENT, "USD"), new AtomicReference<>()));
    assertEquals(Status.Code.FAILED_PRECONDITION, e.getStatus().getCode());
    Map<Class<?>, Message> found = errorDetails(e);
    ErrorInfo info = (ErrorInfo) found.get(ErrorInfo.class);
    assertEquals("REFUND_AMOUNT_EXCEED", info.getReason());
    assertEquals("antom", info.getMetadataOrThrow("provider"));
    assertEquals(requestId, info.getMetadataOrThrow("requestId"));
    assertFalse(found.containsKey(RetryInfo.class));

    e = failure(() -> create(refunds, createRequest(requestId, 100, PAYMENT, "USD"), new AtomicReference<>()));
    assertEquals(Status.Code.INVALID_ARGUMENT, e.getStatus().getCode());
    assertEquals("IDEMPOTENCY_KEY_REUSED", ((ErrorInfo) errorDetails(e).get(ErrorInfo.class)).getReason());
  }

  @Test
  public void unknownOutcomeCarriesRetryInfoAndTheRetryRefundsOnce() throws Exception {
    int before = refundsExecuted();
    // Every attempt of one call (the first and three settling resends) answers U.
    fault(4);
    String requestId = newId("java-unknown");
    StatusRuntimeException e =
        failure(() -> create(refunds, createRequest(requestId, 120, PAYMENT, "USD"), new AtomicReference<>()));
    assertEquals(Status.Code.UNAVAILABLE, e.getStatus().getCode());
    Map<Class<?>, Message> found = errorDetails(e);
    assertEquals("OUTCOME_UNKNOWN", ((ErrorInfo) found.get(ErrorInfo.class)).getReason());
    com.google.protobuf.Duration delay = ((RetryInfo) found.get(RetryInfo.class)).getRetryDelay();
    assertEquals(1, delay.getSeconds());
    assertEquals(0, delay.getNanos());
    assertEquals(before, refundsExecuted());

    Thread.sleep(delay.getSeconds() * 1000);
    Refund refund = create(refunds, createRequest(requestId, 120, PAYMENT, "USD"), new AtomicReference<>());
    assertEquals(RefundStatus.REFUND_STATUS_SUCCEEDED, refund.getStatus());
    assertEquals(before + 1, refundsExecuted());
  }

  @Test
  public void serviceConfigRetriesUnavailableHonouringPushback() throws Exception {
    int before = refundsExecuted();
    int calls = refundCalls();
    // One call's four attempts answer U, and the first attempt of the next one too.
    fault(5);
    ManagedChannel retrying = retryingChannel();
    try {
      long started = System.nanoTime();
      // One call from the application; grpc-java sends it twice.
      Refund refund = RefundServiceGrpc.newBlockingStub(retrying)
          .withDeadlineAfter(15, TimeUnit.SECONDS)
          .create(createRequest(newId("java-retry"), 130, PAYMENT, "USD"));
      double elapsed = (System.nanoTime() - started) / 1e9;
      System.err.printf("  one application call, retried by grpc-java: %.2f s%n", elapsed);
      assertEquals(RefundStatus.REFUND_STATUS_SUCCEEDED, refund.getStatus());
      assertEquals("4 attempts in the first RPC, 2 in the retry", 6, refundCalls() - calls);
      assertEquals("exactly one refund", before + 1, refundsExecuted());
      // The service config's own backoff would retry within 0.2 s; the gateway's pushback is 1 s.
      assertTrue("grpc-java waited for grpc-retry-pushback-ms", elapsed >= 1.0);
    } finally {
      retrying.shutdownNow();
    }
  }

  @Test
  public void watchDeliversTheFinalStateAndResumesAfterItsCursor() throws Exception {
    String requestId = newId("java-async");
    Refund refund = create(refunds, createRequest(requestId, 200, ASYNC_PAYMENT, "EUR"), new AtomicReference<>());
    assertEquals(RefundStatus.REFUND_STATUS_PROCESSING, refund.getStatus());
    // The provider settles it and notifies the gateway.
    String refundId = null;
    for (JsonElement r : (JsonArray) sim("GET", "/sim/refunds", null)) {
      if (requestId.equals(r.getAsJsonObject().get("refundRequestId").getAsString())) {
        refundId = r.getAsJsonObject().get("refundId").getAsString();
      }
    }
    assertNotNull(refundId);
    try {
      sim("POST", "/sim/settle", Map.of("refundId", refundId, "success", true));
    } catch (SimError e) {
      assertEquals(400, e.status); // dev mode settled it already
    }

    EventServiceGrpc.EventServiceBlockingStub events = EventServiceGrpc.newBlockingStub(channel);
    Event event;
    try (Context.CancellableContext watching = Context.current().withCancellation()) {
      event = watching.call(() -> {
        Iterator<Event> stream =
            events.withDeadlineAfter(10, TimeUnit.SECONDS).watch(WatchEventsRequest.getDefaultInstance());
        while (stream.hasNext()) {
          Event e = stream.next();
          // Its events: PROCESSING (the Create's answer), then the final state (the notification).
          if (e.hasRefund() && e.getRefund().getRequestId().equals(requestId)
              && e.getRefund().getStatus() != RefundStatus.REFUND_STATUS_PROCESSING) {
            return e;
          }
        }
        throw new AssertionError("the stream ended");
      });
    }
    assertEquals(RefundStatus.REFUND_STATUS_SUCCEEDED, event.getRefund().getStatus());
    assertEquals(refundId, event.getRefund().getRefundId());
    assertTrue(event.getEventId(), event.getEventId().endsWith("/refund/" + refundId + "/SUCCESS"));

    // A consumer that resumes after that cursor never sees the event again.
    long cursor = Long.parseLong(event.getCursor());
    Iterator<Event> later = events.withDeadlineAfter(1, TimeUnit.SECONDS)
        .watch(WatchEventsRequest.newBuilder().setAfterCursor(event.getCursor()).build());
    try {
      while (later.hasNext()) {
        Event e = later.next();
        assertNotEquals(event.getEventId(), e.getEventId());
        assertTrue(Long.parseLong(e.getCursor()) > cursor);
      }
      fail("the stream ended before its deadline");
    } catch (StatusRuntimeException e) {
      assertEquals(Status.Code.DEADLINE_EXCEEDED, e.getStatus().getCode());
    }

    // And the Create's replay reports the final state.
    AtomicReference<Metadata> headers = new AtomicReference<>();
    Refund replay = create(refunds, createRequest(requestId, 200, ASYNC_PAYMENT, "EUR"), headers);
    assertEquals("true", headers.get().get(REPLAYED));
    assertEquals(RefundStatus.REFUND_STATUS_SUCCEEDED, replay.getStatus());
  }
}
