"""shoal's gRPC API from Python, with stubs generated from proto/ (not from shoal's code).

Usage: grpc_client.py PROTO_DIR GRPC_ADDR [GRPC_ADDR...]

Generates the shoal.v1 stubs with grpc_tools.protoc into a temporary directory, then
drives a running cluster through them: the map, writes through one node read back through
the others (forwarded to the leader), compare-and-set and its error details, a
transaction, a batch, a streamed scan, and a deadline. Prints one line per check and exits
non-zero on the first failure. Needs `pip install grpcio-tools grpcio-status`.
"""

import importlib
import os
import sys
import tempfile

import grpc
from grpc_status import rpc_status
from grpc_tools import protoc
from google.rpc import error_details_pb2


def generate(proto_dir, out_dir):
    proto = os.path.join(proto_dir, "shoal", "v1", "shoal.proto")
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            proto,
        ]
    )
    if code != 0:
        sys.exit(f"protoc failed on {proto} ({code})")
    sys.path.insert(0, out_dir)
    return (
        importlib.import_module("shoal.v1.shoal_pb2"),
        importlib.import_module("shoal.v1.shoal_pb2_grpc"),
    )


def error_info(err):
    """The google.rpc.ErrorInfo a shoal error carries."""
    status = rpc_status.from_call(err)
    assert status is not None, f"no rich status in {err}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in {status}")


def check(what, condition):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def main():
    proto_dir, addrs = sys.argv[1], sys.argv[2:]
    with tempfile.TemporaryDirectory() as out:
        pb, rpc = generate(proto_dir, out)
        channels = [grpc.insecure_channel(a) for a in addrs]
        kvs = [rpc.KVStub(c) for c in channels]
        cluster = rpc.ClusterStub(channels[0])

        m = cluster.Map(pb.MapRequest(), timeout=10)
        check(f"the map lists {len(addrs)} nodes", len(m.nodes) == len(addrs))
        check("every node has a gRPC address", all(n.grpc_addr for n in m.nodes))
        slots = sum(r.end - r.start + 1 for s in m.shards for r in s.slots)
        check("the shards cover all 16384 slots", slots == 16384)

        # Written through the first node, read through every node.
        put = kvs[0].Put(pb.PutRequest(key=b"py:greeting", value=b"hello"), timeout=10)
        for i, kv in enumerate(kvs):
            got = kv.Get(pb.GetRequest(key=b"py:greeting"), timeout=10)
            check(f"node {i + 1} reads what node 1 wrote", got.value == b"hello")
            check(f"node {i + 1} reports the same version", got.version == put.version)

        try:
            kvs[1].Put(
                pb.PutRequest(key=b"py:greeting", value=b"x", if_version=put.version + 100),
                timeout=10,
            )
            check("a stale compare-and-set fails", False)
        except grpc.RpcError as err:
            info = error_info(err)
            check("a stale CAS is FAILED_PRECONDITION", err.code() == grpc.StatusCode.FAILED_PRECONDITION)
            check("its reason is version_mismatch", info.reason == "version_mismatch")
            check("it names the actual version", info.metadata["actual_version"] == str(put.version))
        try:
            kvs[2].Get(pb.GetRequest(key=b"py:absent"), timeout=10)
            check("an absent key is not found", False)
        except grpc.RpcError as err:
            check("an absent key is NOT_FOUND", err.code() == grpc.StatusCode.NOT_FOUND)
            check("its reason is not_found", error_info(err).reason == "not_found")

        txn = pb.TxnRequest(
            compare=[pb.Compare(key=b"{py}stock", version=0)],
            ops=[
                pb.Op(put=pb.PutRequest(key=b"{py}stock", value=b"10")),
                pb.Op(incr=pb.IncrRequest(key=b"{py}stock", by=-3)),
                pb.Op(get=pb.GetRequest(key=b"{py}stock")),
            ],
        )
        results = kvs[1].Txn(txn, timeout=10).results
        check("a transaction answers each op", results[1].incr_value == 7)
        check("its get sees the ops before it", results[2].get.value == b"7")

        ops = [pb.Op(put=pb.PutRequest(key=f"py:batch:{i}".encode(), value=b"v")) for i in range(40)]
        ops.append(pb.Op(incr=pb.IncrRequest(key=b"py:greeting")))
        batch = kvs[2].Batch(pb.BatchRequest(ops=ops), timeout=10).results
        check("a batch answers each op", len(batch) == 41)
        check("batch puts succeed", all(r.WhichOneof("result") == "put_version" for r in batch[:40]))
        check("a failing op fails alone", batch[40].error.code == "not_integer")

        keys = set()
        for page in kvs[0].ScanStream(pb.ScanRequest(prefix=b"py:batch:"), timeout=10):
            keys.update(e.key for e in page.entries)
        check("a streamed scan sees every key once", len(keys) == 40)

        try:
            kvs[0].Scan(pb.ScanRequest(limit=1_000_000), timeout=10)
            check("an oversized page is refused", False)
        except grpc.RpcError as err:
            check("an oversized page is INVALID_ARGUMENT", err.code() == grpc.StatusCode.INVALID_ARGUMENT)
    print("all checks passed")


if __name__ == "__main__":
    main()
