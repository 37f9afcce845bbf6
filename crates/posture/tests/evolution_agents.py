"""Agents of mixed versions on one topic, written by an independent Avro client.

Used by crates/posture/tests/evolution.rs. Reads a fleet's events (JSON lines, as
`posture simulate` writes them) and produces each into Kafka in the Confluent wire
format, encoded by fastavro (not by posture) with the writer schema of its device's
agent version:

* version 1 (`config_change.avsc`, schema id --v1-id) for most devices;
* version 2 (`config_change.v2.avsc`, --v2-id) for another cohort, and for an upgrading
  cohort from the middle of its events on: an agent version, a serial number, each
  setting's collection time, no tags, and the new source symbol EDR for agent events;
* a broken build (--bad, --bad-id: a schema posture cannot read) for a small cohort.

For every record of versions 1 and 2 it writes the version-1 equivalent that fastavro's
own schema resolution reads back with the version-1 reader schema (--expected, JSON
lines for `posture evaluate`), and a summary of what it produced (--summary, JSON).

Producing uses confluent-kafka, one record in flight, so every device's records keep
their order.
"""

import argparse
import datetime
import io
import json
import sys
import zlib

import fastavro
from confluent_kafka import Producer

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def load_schema(path):
    with open(path) as f:
        return fastavro.parse_schema(json.load(f))


def wire(schema_id, schema, record):
    buf = io.BytesIO()
    buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def cohort(ev):
    """The agent version of a device: v1, v2, upgrading (v1 then v2) or bad."""
    h = zlib.crc32(("%s/%s" % (ev["tenant_id"], ev["device_id"])).encode()) % 20
    if h == 0:
        return "bad"
    if h <= 8:
        return "v2"
    if h <= 11:
        return "upgrading"
    return "v1"


def as_v1(ev):
    """An event of the JSON form as a version-1 Avro record."""
    d = ev.get("device")
    return {
        "event_id": ev["event_id"],
        "tenant_id": ev["tenant_id"],
        "device_id": ev["device_id"],
        "observed_at": ev["observed_at"],
        "sequence": ev["sequence"],
        "source": ev["source"],
        "kind": ev["kind"],
        "device": None
        if d is None
        else {
            "os_family": d["os_family"],
            "os_version": d["os_version"],
            "hostname": d.get("hostname"),
            "groups": d.get("groups", []),
            "tags": d.get("tags", []),
        },
        "settings": [{"key": s["key"], "value": s.get("value")} for s in ev.get("settings", [])],
    }


def as_v2(ev):
    """The same event as a version-2 agent writes it."""
    r = as_v1(ev)
    r["agent_version"] = "7.2.%d" % (ev["sequence"] % 5)
    if r["source"] == "AGENT" and ev["sequence"] % 2 == 0:
        r["source"] = "EDR"
    if r["device"] is not None:
        del r["device"]["tags"]
        r["device"]["serial_number"] = "SN-" + ev["device_id"]
    for i, s in enumerate(r["settings"]):
        s["collected_at"] = ev["observed_at"] - 1000 * i if i % 3 == 0 else None
    return r


def to_json_event(rec):
    """A record fastavro read back (version-1 reader) in posture's JSON event form."""
    out = dict(rec)
    at = out["observed_at"]
    if isinstance(at, datetime.datetime):
        out["observed_at"] = (at - EPOCH) // datetime.timedelta(milliseconds=1)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--events", required=True, help="the fleet's events, JSON lines")
    p.add_argument("--v1", required=True, help="config_change.avsc")
    p.add_argument("--v2", required=True, help="config_change.v2.avsc")
    p.add_argument("--bad", required=True, help="a writer schema posture cannot read")
    p.add_argument("--v1-id", type=int, required=True)
    p.add_argument("--v2-id", type=int, required=True)
    p.add_argument("--bad-id", type=int, required=True)
    p.add_argument("--expected", required=True, help="out: the version-1 equivalents, JSON lines")
    p.add_argument("--summary", required=True, help="out: what was produced, JSON")
    a = p.parse_args()

    v1, v2, bad = load_schema(a.v1), load_schema(a.v2), load_schema(a.bad)
    events = [json.loads(line) for line in open(a.events) if line.strip()]
    per_device = {}
    for ev in events:
        k = (ev["tenant_id"], ev["device_id"])
        per_device[k] = per_device.get(k, 0) + 1
    seen = {}

    producer = Producer(
        {
            "bootstrap.servers": a.brokers,
            "max.in.flight.requests.per.connection": 1,
            "acks": "all",
            "linger.ms": 5,
        }
    )
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(str(err))

    summary = {
        "records": 0,
        "by_schema_id": {str(a.v1_id): 0, str(a.v2_id): 0, str(a.bad_id): 0},
        "bad_keys": [],
        "edr": 0,
        "upgraded_devices": 0,
    }
    with open(a.expected, "w") as expected:
        for ev in events:
            k = (ev["tenant_id"], ev["device_id"])
            seen[k] = seen.get(k, 0) + 1
            c = cohort(ev)
            if c == "upgrading":
                c = "v1" if seen[k] <= per_device[k] // 2 else "v2"
                if c == "v2" and seen[k] == per_device[k] // 2 + 1:
                    summary["upgraded_devices"] += 1
            if c == "bad":
                value = wire(a.bad_id, bad, as_v1(ev))
                summary["bad_keys"].append(ev["device_id"])
                sid = a.bad_id
            else:
                schema, sid = (v1, a.v1_id) if c == "v1" else (v2, a.v2_id)
                rec = as_v1(ev) if c == "v1" else as_v2(ev)
                summary["edr"] += rec["source"] == "EDR"
                value = wire(sid, schema, rec)
                # fastavro's own resolution: what a version-1 reader makes of the record.
                back = fastavro.schemaless_reader(io.BytesIO(value[5:]), schema, v1)
                expected.write(json.dumps(to_json_event(back), sort_keys=True) + "\n")
            summary["by_schema_id"][str(sid)] += 1
            summary["records"] += 1
            producer.produce(a.topic, key=ev["device_id"].encode(), value=value, on_delivery=delivered)
            producer.poll(0)
    left = producer.flush(60)
    if left or failures:
        sys.exit("evolution_agents.py: %d records not delivered; errors: %s" % (left, failures[:5]))
    json.dump(summary, open(a.summary, "w"), indent=1)


if __name__ == "__main__":
    main()
