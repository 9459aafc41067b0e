const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");
const def = loader.loadSync("paygate/v1/refund_service.proto", { includeDirs: [`${__dirname}/../../proto`], keepCase: true, enums: String });
const { RefundService } = grpc.loadPackageDefinition(def).paygate.v1;
const refunds = new RefundService(process.env.PAYGATE_ADDR || "127.0.0.1:50051", grpc.credentials.createInsecure());
const request = { request_id: "order-1234-refund-1", payment_id: "PAY_DEMO_0001", amount: { currency: "USD", value: 500 } };
refunds.Create(request, { deadline: Date.now() + 10000 }, (err, refund) => {
  if (err) throw err;
  console.log(refund.refund_id, refund.status);
});
