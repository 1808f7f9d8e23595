#!/usr/bin/env python3
"""Independent client for orelink's interoperability tests.

Uses confluent-kafka (librdkafka + the Confluent schema-registry client and
AvroSerializer/AvroDeserializer), not orelink code, so the Rust side is checked
against the reference implementation of the wire format. Every command prints
JSON on stdout; the Rust tests drive it and compare.
"""
import argparse
import datetime as dt
import json
import os
import pathlib
import sys

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "schemas"


def plain(value):
    """JSON-friendly: timestamps back to epoch millis, bytes to lists."""
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, bytes):
        return list(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def kafka_conf(bootstrap, **extra):
    """Client settings; SASL/SCRAM when the test passes the stack's credentials."""
    conf = {"bootstrap.servers": bootstrap, **extra}
    if os.environ.get("INTEROP_SASL_USERNAME"):
        conf.update({
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": os.environ["INTEROP_SASL_MECHANISM"],
            "sasl.username": os.environ["INTEROP_SASL_USERNAME"],
            "sasl.password": os.environ["INTEROP_SASL_PASSWORD"],
        })
    return conf


def registry_conf(url):
    """The registry client's settings; it logs in as the same Kafka user."""
    conf = {"url": url}
    if os.environ.get("INTEROP_SASL_USERNAME"):
        conf["basic.auth.user.info"] = os.environ["INTEROP_SASL_USERNAME"] + ":" + os.environ["INTEROP_SASL_PASSWORD"]
    return conf


def produce_order(a):
    registry = SchemaRegistryClient(registry_conf(a.registry))
    schema = (SCHEMAS / "OrderEvent.avsc").read_text()
    serializer = AvroSerializer(registry, schema, conf={"auto.register.schemas": True})
    order = json.loads(a.order)
    # fastavro takes datetimes for timestamp-millis; send them the way a Python ERP would.
    for field in ("event_time", "deliver_by"):
        order[field] = dt.datetime.fromtimestamp(order[field] / 1000, tz=dt.timezone.utc)
    value = serializer(order, SerializationContext(a.topic, MessageField.VALUE))
    producer = Producer(kafka_conf(a.bootstrap, **{"enable.idempotence": True}))
    producer.produce(a.topic, key=a.key.encode(), value=value)
    if producer.flush(30) != 0:
        sys.exit("order not delivered")
    print(json.dumps({"schema_id": int.from_bytes(value[1:5], "big")}))


def consume(a):
    registry = SchemaRegistryClient(registry_conf(a.registry))
    deserializer = AvroDeserializer(registry)
    consumer = Consumer(kafka_conf(a.bootstrap, **{
        "group.id": a.group,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    }))
    consumer.subscribe([a.topic])
    got = 0
    deadline = dt.datetime.now() + dt.timedelta(seconds=a.timeout)
    while got < a.count and dt.datetime.now() < deadline:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        value = deserializer(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
        print(json.dumps({"key": msg.key().decode() if msg.key() else None,
                          "schema_id": int.from_bytes(msg.value()[1:5], "big"),
                          "value": plain(value)}))
        got += 1
    consumer.close()
    if got < a.count:
        sys.exit(f"only {got} of {a.count} records within {a.timeout}s")


def register(a):
    registry = SchemaRegistryClient(registry_conf(a.registry))
    schema_id = registry.register_schema(a.subject, Schema(pathlib.Path(a.schema_file).read_text(), "AVRO"))
    print(json.dumps({"id": schema_id}))


def latest(a):
    registry = SchemaRegistryClient(registry_conf(a.registry))
    v = registry.get_latest_version(a.subject)
    print(json.dumps({"id": v.schema_id, "version": v.version, "subject": v.subject,
                      "schema": json.loads(v.schema.schema_str)}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    po = sub.add_parser("produce-order")
    po.add_argument("--bootstrap", required=True)
    po.add_argument("--registry", required=True)
    po.add_argument("--topic", required=True)
    po.add_argument("--key", required=True)
    po.add_argument("--order", required=True, help="the OrderEvent as JSON, times in epoch millis")
    po.set_defaults(fn=produce_order)
    c = sub.add_parser("consume")
    c.add_argument("--bootstrap", required=True)
    c.add_argument("--registry", required=True)
    c.add_argument("--topic", required=True)
    c.add_argument("--group", required=True)
    c.add_argument("--count", type=int, default=1)
    c.add_argument("--timeout", type=float, default=30)
    c.set_defaults(fn=consume)
    r = sub.add_parser("register")
    r.add_argument("--registry", required=True)
    r.add_argument("--subject", required=True)
    r.add_argument("--schema-file", required=True)
    r.set_defaults(fn=register)
    lt = sub.add_parser("latest")
    lt.add_argument("--registry", required=True)
    lt.add_argument("--subject", required=True)
    lt.set_defaults(fn=latest)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
