#!/usr/bin/env python3
"""Splits the benchmark keys "bench-key-%06d" (0..N) by the node leading each key's shard.

usage: leader_keys.py CLUSTER_URL N OUTDIR
Reads the cluster map from CLUSTER_URL (any node's /v1/cluster), computes each key's slot
(CRC16-XMODEM mod 16384, as shoal and Redis Cluster do; the keys carry no hash tag) and
writes OUTDIR/<node id>.keys (one key number per line). Prints one line per node:
"<node id> <http addr> <key count>".
"""
import json
import sys
import urllib.request


def crc16_xmodem(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def main() -> None:
    url, count, outdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    view = json.load(urllib.request.urlopen(url))
    leader_of_slot = [None] * 16384
    for shard in view["shards"]:
        if shard["leader"] is None:
            sys.exit(f"shard {shard['id']} has no leader; try again in a moment")
        for slot in range(shard["range"]["start"], shard["range"]["end"]):
            leader_of_slot[slot] = shard["leader"]
    keys = {node["id"]: [] for node in view["nodes"]}
    for i in range(count):
        slot = crc16_xmodem(b"bench-key-%06d" % i) % 16384
        keys[leader_of_slot[slot]].append(i)
    for node in view["nodes"]:
        with open(f"{outdir}/{node['id']}.keys", "w") as f:
            f.write("".join(f"{i}\n" for i in keys[node["id"]]))
        print(node["id"], node["http_addr"], len(keys[node["id"]]))


if __name__ == "__main__":
    main()
