package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	paygatev1 "paygate.dev/gen/go/paygate/v1"
)

func main() {
	addr := os.Getenv("PAYGATE_ADDR")
	if addr == "" {
		addr = "127.0.0.1:50051"
	}
	conn, err := grpc.Dial(addr, grpc.WithInsecure())
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	refund, err := paygatev1.NewRefundServiceClient(conn).Create(ctx, &paygatev1.CreateRefundRequest{
		RequestId: "order-1234-refund-1", PaymentId: "PAY_DEMO_0001",
		Amount: &paygatev1.Money{Currency: "USD", Value: 500},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(refund.RefundId, refund.Status)
}
