"""Consumes paygate's events from NATS JetStream: every refund and subscription change, as a
CloudEvent whose body is the paygate.v1.Event in the protobuf JSON mapping.

    python3 examples/python/nats_consumer.py --url nats://127.0.0.1:4222

It reads the stream PAYGATE_EVENTS through a durable consumer (its position survives restarts),
prints one line per event and acknowledges it after handling it. Delivery is at least once:
an event can arrive again (after a consumer or gateway crash, or past JetStream's duplicate
window), with the same ce-id; a real consumer records the ids it handled, in the same
transaction as its own effect, and skips those.
"""

import argparse
import asyncio
import json

import nats
from nats.errors import TimeoutError as NatsTimeout


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--stream", default="PAYGATE_EVENTS")
    parser.add_argument("--subject", default="paygate.events.>")
    parser.add_argument("--durable", default="accounting")
    parser.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    parser.add_argument("--idle", type=float, default=0, help="stop after this many idle seconds (0: never)")
    args = parser.parse_args()

    nc = await nats.connect(args.url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(args.subject, durable=args.durable, stream=args.stream)
    handled: set[str] = set()  # in a real consumer: a table, written with the effect
    seen = 0
    idle = 0.0
    while args.count == 0 or seen < args.count:
        try:
            messages = await sub.fetch(batch=100, timeout=1)
        except NatsTimeout:
            idle += 1
            if args.idle and idle >= args.idle:
                break
            continue
        idle = 0.0
        for m in messages:
            headers = m.headers or {}
            event_id = headers.get("ce-id", "")
            if event_id not in handled:
                event = json.loads(m.data)
                if "refund" in event:
                    what = f"refund {event['refund'].get('requestId', '')} {event['refund'].get('status', '')}"
                elif "subscription" in event:
                    s = event["subscription"]
                    what = f"subscription {s.get('subscriptionId', '')} {s.get('cancellationStatus', '')}"
                else:
                    what = f"subscription_payment {event['subscriptionPayment'].get('paymentId', '')}"
                print(f"{headers.get('ce-type', '')} {event_id} {event.get('account', '')} {what}", flush=True)
                handled.add(event_id)
            await m.ack()
            seen += 1
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
