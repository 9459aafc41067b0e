// Package client calls paygate from Go with grpc-go, and is a test suite at the same time.
//
// Stubs are generated from ../../../proto by buf with proto/buf.gen.go.yaml into a GOPATH
// tree; the package imports them by their go_package path. Error details are decoded with
// status.FromError and errdetails. The service config next to the proto makes grpc-go itself
// retry UNAVAILABLE, honouring the gateway's grpc-retry-pushback-ms (grpc-go 1.33 retries
// only with GRPC_GO_RETRY=on). From the repository root:
//
//	bash examples/setup.sh go
//	npx --yes @bufbuild/buf generate --template proto/buf.gen.go.yaml
//	GO111MODULE=off GOPATH=$PWD/gen/go:/usr/share/gocode GRPC_GO_RETRY=on \
//	  PAYGATE_ADDR=127.0.0.1:50051 PAYGATE_SIM_URL=http://127.0.0.1:PORT go test -v ./examples/go/client
//
// PAYGATE_SIM_URL is the Antom simulator behind the gateway: the tests read its counters and
// ask it for faults. PAYGATE_PAYMENT_ID (USD, at least 20.00 left to refund) and
// PAYGATE_SUBSCRIPTION_ID default to the dev mode's demo data.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/ioutil"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang/protobuf/ptypes"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	paygatev1 "paygate.dev/gen/go/paygate/v1"
)

var (
	addr         = env("PAYGATE_ADDR", "127.0.0.1:50051")
	sim          = os.Getenv("PAYGATE_SIM_URL")
	payment      = env("PAYGATE_PAYMENT_ID", "PAY_DEMO_0001")
	subscription = env("PAYGATE_SUBSCRIPTION_ID", "SUB_DEMO_0001")
	// EUR, refunds answer PROCESSING until the provider settles them.
	asyncPayment = env("PAYGATE_ASYNC_PAYMENT_ID", "PAY_DEMO_ASYNC")
)

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// serviceConfig is the published service config, proto/paygate/v1/service-config.json.
func serviceConfig(t *testing.T) string {
	_, here, _, _ := runtime.Caller(0)
	b, err := ioutil.ReadFile(filepath.Join(filepath.Dir(here), "../../../proto/paygate/v1/service-config.json"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// retryingConn is the connection a service should use: the service config, retries on.
func retryingConn(t *testing.T) *grpc.ClientConn {
	conn, err := grpc.Dial(addr, grpc.WithInsecure(), grpc.WithDefaultServiceConfig(serviceConfig(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// plainConn has no retries, so a test sees the gateway's first answer.
func plainConn(t *testing.T) *grpc.ClientConn {
	conn, err := grpc.Dial(addr, grpc.WithInsecure(), grpc.WithDisableRetry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// details are the google.rpc details of a failed call, by type.
type details struct {
	info       *errdetails.ErrorInfo
	retry      *errdetails.RetryInfo
	badRequest *errdetails.BadRequest
}

func errorDetails(t *testing.T, err error) (*status.Status, details) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("not a gRPC status: %v", err)
	}
	var d details
	for _, detail := range st.Details() {
		switch v := detail.(type) {
		case *errdetails.ErrorInfo:
			if d.info != nil {
				t.Fatal("two ErrorInfo details")
			}
			d.info = v
		case *errdetails.RetryInfo:
			if d.retry != nil {
				t.Fatal("two RetryInfo details")
			}
			d.retry = v
		case *errdetails.BadRequest:
			d.badRequest = v
		case error:
			t.Fatalf("undecodable detail: %v", v)
		}
	}
	if d.info == nil {
		t.Fatalf("no ErrorInfo in %v", st.Proto())
	}
	return st, d
}

// simCall calls the simulator's control API.
func simCall(t *testing.T, method, path string, body interface{}) map[string]interface{} {
	t.Helper()
	var in io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		in = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, sim+path, in)
	req.Header.Set("content-type", "application/json")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := ioutil.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %s %s", method, path, resp.Status, b)
	}
	out := map[string]interface{}{}
	if len(bytes.TrimSpace(b)) > 0 && b[0] == '{' {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func refundsExecuted(t *testing.T) int {
	return int(simCall(t, "GET", "/sim/stats", nil)["refundsExecuted"].(float64))
}

func refundCalls(t *testing.T) int {
	calls := simCall(t, "GET", "/sim/stats", nil)["calls"].(map[string]interface{})
	n, _ := calls["refund"].(float64)
	return int(n)
}

func newID(prefix string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

func create(ctx context.Context, refunds paygatev1.RefundServiceClient, requestID string, value int64,
	paymentID, currency string) (*paygatev1.Refund, metadata.MD, error) {
	var header metadata.MD
	refund, err := refunds.Create(ctx, &paygatev1.CreateRefundRequest{
		RequestId: requestID,
		PaymentId: paymentID,
		Amount:    &paygatev1.Money{Currency: currency, Value: value},
		Reason:    "go client test",
	}, grpc.Header(&header))
	return refund, header, err
}

func timeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

func setUp(t *testing.T) {
	if sim == "" {
		t.Fatal("PAYGATE_SIM_URL is not set")
	}
	simCall(t, "DELETE", "/sim/faults", nil)
}

func replayed(md metadata.MD) bool {
	v := md.Get("idempotent-replayed")
	return len(v) == 1 && v[0] == "true"
}

func TestCreateReplayInquire(t *testing.T) {
	setUp(t)
	refunds := paygatev1.NewRefundServiceClient(plainConn(t))
	ctx, cancel := timeout()
	defer cancel()
	before := refundsExecuted(t)
	requestID := newID("go-refund")
	refund, md, err := create(ctx, refunds, requestID, 150, payment, "USD")
	if err != nil {
		t.Fatal(err)
	}
	if refund.Status != paygatev1.RefundStatus_REFUND_STATUS_SUCCEEDED || refund.RefundId == "" ||
		refund.Amount.GetValue() != 150 || replayed(md) {
		t.Fatalf("first call: %v, header %v", refund, md)
	}
	again, md, err := create(ctx, refunds, requestID, 150, payment, "USD")
	if err != nil {
		t.Fatal(err)
	}
	if again.RefundId != refund.RefundId || !replayed(md) {
		t.Fatalf("replay: %v, header %v", again, md)
	}
	if n := refundsExecuted(t); n != before+1 {
		t.Fatalf("refunds executed: %d, want %d", n, before+1)
	}
	found, err := refunds.Inquire(ctx, &paygatev1.InquireRefundRequest{RequestId: requestID})
	if err != nil {
		t.Fatal(err)
	}
	if found.RefundId != refund.RefundId || found.Status != paygatev1.RefundStatus_REFUND_STATUS_SUCCEEDED ||
		found.PaymentId != payment || found.Account != refund.Account {
		t.Fatalf("inquire: %v", found)
	}
}

func TestCancel(t *testing.T) {
	setUp(t)
	subscriptions := paygatev1.NewSubscriptionServiceClient(plainConn(t))
	ctx, cancel := timeout()
	defer cancel()
	answer, err := subscriptions.Cancel(ctx, &paygatev1.CancelSubscriptionRequest{
		RequestId:        newID("go-cancel"),
		SubscriptionId:   subscription,
		CancellationType: paygatev1.CancellationType_CANCELLATION_TYPE_CANCEL,
	})
	if err != nil {
		t.Fatal(err)
	}
	if answer.Status != paygatev1.CancellationStatus_CANCELLATION_STATUS_ACCEPTED ||
		answer.ProviderResult.GetCode() != "SUCCESS" {
		t.Fatalf("cancel: %v", answer)
	}
}

func TestInvalidRequestListsEveryField(t *testing.T) {
	setUp(t)
	refunds := paygatev1.NewRefundServiceClient(plainConn(t))
	ctx, cancel := timeout()
	defer cancel()
	calls := refundCalls(t)
	_, _, err := create(ctx, refunds, "", -5, payment, "usd")
	st, d := errorDetails(t, err)
	if st.Code() != codes.InvalidArgument || d.info.Reason != "INVALID_REQUEST" || d.info.Domain != "paygate" {
		t.Fatalf("%v %v", st.Code(), d.info)
	}
	if d.retry != nil {
		t.Fatal("RetryInfo on an invalid request")
	}
	if d.badRequest == nil {
		t.Fatal("no BadRequest")
	}
	fields := map[string]bool{}
	for _, v := range d.badRequest.FieldViolations {
		fields[v.Field] = true
	}
	for _, f := range []string{"request_id", "amount.currency", "amount.value"} {
		if !fields[f] {
			t.Fatalf("no violation of %s in %v", f, d.badRequest)
		}
	}
	if n := refundCalls(t); n != calls {
		t.Fatal("an invalid request reached the provider")
	}
}

func TestProviderRefusalAndKeyReuse(t *testing.T) {
	setUp(t)
	refunds := paygatev1.NewRefundServiceClient(plainConn(t))
	ctx, cancel := timeout()
	defer cancel()
	requestID := newID("go-over")
	_, _, err := create(ctx, refunds, requestID, 10000000, payment, "USD")
	st, d := errorDetails(t, err)
	if st.Code() != codes.FailedPrecondition || d.info.Reason != "REFUND_AMOUNT_EXCEED" ||
		d.info.Metadata["provider"] != "antom" || d.info.Metadata["requestId"] != requestID {
		t.Fatalf("%v %v", st.Code(), d.info)
	}
	if d.retry != nil {
		t.Fatal("RetryInfo on a refusal")
	}
	_, _, err = create(ctx, refunds, requestID, 100, payment, "USD")
	st, d = errorDetails(t, err)
	if st.Code() != codes.InvalidArgument || d.info.Reason != "IDEMPOTENCY_KEY_REUSED" {
		t.Fatalf("%v %v", st.Code(), d.info)
	}
}

func fault(t *testing.T, times int) {
	simCall(t, "POST", "/sim/faults", map[string]interface{}{
		"endpoint": "refund", "times": times,
		"kind": map[string]string{"type": "result", "code": "UNKNOWN_EXCEPTION", "status": "U"},
	})
}

func TestUnknownOutcomeCarriesRetryInfoAndTheRetryRefundsOnce(t *testing.T) {
	setUp(t)
	refunds := paygatev1.NewRefundServiceClient(plainConn(t))
	ctx, cancel := timeout()
	defer cancel()
	before := refundsExecuted(t)
	// Every attempt of one call (the first and three settling resends) answers U.
	fault(t, 4)
	requestID := newID("go-unknown")
	_, _, err := create(ctx, refunds, requestID, 120, payment, "USD")
	st, d := errorDetails(t, err)
	if st.Code() != codes.Unavailable || d.info.Reason != "OUTCOME_UNKNOWN" || d.retry == nil {
		t.Fatalf("%v %v %v", st.Code(), d.info, d.retry)
	}
	delay, err := ptypes.Duration(d.retry.RetryDelay)
	if err != nil || delay != time.Second {
		t.Fatalf("retry delay %v %v", delay, err)
	}
	if n := refundsExecuted(t); n != before {
		t.Fatal("a refund executed")
	}
	time.Sleep(delay)
	refund, _, err := create(ctx, refunds, requestID, 120, payment, "USD")
	if err != nil {
		t.Fatal(err)
	}
	if refund.Status != paygatev1.RefundStatus_REFUND_STATUS_SUCCEEDED || refundsExecuted(t) != before+1 {
		t.Fatalf("retry: %v", refund)
	}
}

func TestServiceConfigRetriesUnavailableHonouringPushback(t *testing.T) {
	setUp(t)
	if os.Getenv("GRPC_GO_RETRY") != "on" {
		t.Fatal("grpc-go 1.33 retries only with GRPC_GO_RETRY=on")
	}
	before, calls := refundsExecuted(t), refundCalls(t)
	// One call's four attempts answer U, and the first attempt of the next one too.
	fault(t, 5)
	refunds := paygatev1.NewRefundServiceClient(retryingConn(t))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	started := time.Now()
	// One call from the application; grpc-go sends it twice.
	refund, _, err := create(ctx, refunds, newID("go-retry"), 130, payment, "USD")
	elapsed := time.Since(started)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "  one application call, retried by grpc-go: %.2f s\n", elapsed.Seconds())
	if refund.Status != paygatev1.RefundStatus_REFUND_STATUS_SUCCEEDED {
		t.Fatalf("%v", refund)
	}
	if n := refundCalls(t) - calls; n != 6 {
		t.Fatalf("%d provider calls, want 4 in the first RPC and 2 in the retry", n)
	}
	if n := refundsExecuted(t); n != before+1 {
		t.Fatal("not exactly one refund")
	}
	// The service config's own backoff would retry within 0.2 s; the gateway's pushback is 1 s.
	if elapsed < time.Second {
		t.Fatalf("grpc-go did not wait for grpc-retry-pushback-ms: %v", elapsed)
	}
}

func TestWatchDeliversTheFinalStateAndResumesAfterItsCursor(t *testing.T) {
	setUp(t)
	conn := plainConn(t)
	refunds := paygatev1.NewRefundServiceClient(conn)
	ctx, cancel := timeout()
	defer cancel()
	requestID := newID("go-async")
	refund, _, err := create(ctx, refunds, requestID, 200, asyncPayment, "EUR")
	if err != nil {
		t.Fatal(err)
	}
	if refund.Status != paygatev1.RefundStatus_REFUND_STATUS_PROCESSING {
		t.Fatalf("%v", refund)
	}
	// The provider settles it and notifies the gateway (dev mode may have settled it already).
	refundID := ""
	var listed []map[string]interface{}
	req, _ := http.NewRequest("GET", sim+"/sim/refunds", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&listed)
	resp.Body.Close()
	for _, r := range listed {
		if r["refundRequestId"] == requestID {
			refundID = r["refundId"].(string)
		}
	}
	body, _ := json.Marshal(map[string]interface{}{"refundId": refundID, "success": true})
	resp, err = http.Post(sim+"/sim/settle", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode != 400 {
		t.Fatalf("settle: %s", resp.Status)
	}

	events := paygatev1.NewEventServiceClient(conn)
	stream, err := events.Watch(ctx, &paygatev1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var event *paygatev1.Event
	for {
		e, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		// Its events: PROCESSING (the Create's answer), then the final state (the notification).
		if r := e.GetRefund(); r != nil && r.RequestId == requestID && r.Status != paygatev1.RefundStatus_REFUND_STATUS_PROCESSING {
			event = e
			break
		}
	}
	if r := event.GetRefund(); r.Status != paygatev1.RefundStatus_REFUND_STATUS_SUCCEEDED || r.RefundId != refundID ||
		!strings.HasSuffix(event.EventId, "/refund/"+refundID+"/SUCCESS") {
		t.Fatalf("%v", event)
	}

	// A consumer that resumes after that cursor never sees the event again.
	later, cancelLater := context.WithTimeout(context.Background(), time.Second)
	defer cancelLater()
	resumed, err := events.Watch(later, &paygatev1.WatchEventsRequest{AfterCursor: event.Cursor})
	if err != nil {
		t.Fatal(err)
	}
	cursor, _ := strconv.ParseInt(event.Cursor, 10, 64)
	for {
		e, err := resumed.Recv()
		if err != nil {
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatal(err)
			}
			break
		}
		c, _ := strconv.ParseInt(e.Cursor, 10, 64)
		if e.EventId == event.EventId || c <= cursor {
			t.Fatalf("seen again after its cursor: %v", e)
		}
	}

	// And the Create's replay reports the final state.
	replay, md, err := create(ctx, refunds, requestID, 200, asyncPayment, "EUR")
	if err != nil {
		t.Fatal(err)
	}
	if !replayed(md) || replay.Status != paygatev1.RefundStatus_REFUND_STATUS_SUCCEEDED {
		t.Fatalf("replay: %v %v", replay, md)
	}
}
