#!/usr/bin/env python3
"""Writes fuzz/seeds/decode/*.bin: inventory-heavy ConfigChange records in the Confluent wire
format (schema id 1), to start the decode fuzz target from. Run from the repository root:
python3 fuzz/seeds/make_seeds.py"""
import os
import struct


def zz(n):
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def s(text):
    b = text.encode("utf-8")
    return zz(len(b)) + b


def arr(items):
    return (zz(len(items)) + b"".join(s(i) for i in items) if items else b"") + zz(0)


def record(groups, tags, hostname="h", os_family="windows", os_version="10.0.19045", tenant="t1", settings=b""):
    body = s("e1") + s(tenant) + s("d1") + zz(1_793_491_200_000) + zz(1) + zz(0) + zz(0)
    host = zz(0) if hostname is None else zz(1) + s(hostname)
    body += zz(1) + s(os_family) + s(os_version) + host + arr(groups) + arr(tags)
    # settings: one boolean fw = true (union index 1), then the end of the array
    body += settings or (zz(1) + s("fw") + zz(1) + b"\x01" + zz(0))
    return b"\x00" + struct.pack(">I", 1) + body


seeds = {
    "groups_1000": record([f"g{i}" for i in range(1000)], []),
    "tags_1000": record(["g1"], [f"t{i}" for i in range(1000)]),
    "groups_at_limit": record([f"g{i:02}" for i in range(64)], [f"t{i:02}" for i in range(64)]),
    "groups_repeated": record(["g1"] * 64, ["x"] * 64),
    "long_names": record(["g" * 300], ["t" * 300], hostname="h" * 300, os_version="1." * 200),
    "bad_group_names": record(["", "_overflow", "fin ance ", "a\nb", "g1"], []),
    "reserved_tenant": record(["g1"], [], tenant="_overflow"),
    "no_hostname": record(["g1", "g2"], ["a"], hostname=None, os_family="linux"),
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "decode")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name + ".bin"), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {out}")
