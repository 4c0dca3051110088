#!/usr/bin/python3
"""A small CRI ImageService client for tests and benchmarks.

It shares no code with stowage: it talks gRPC through Python's grpcio with
stubs generated from the CRI proto by Debian's python3-grpc-tools (see
gen_stubs.sh). It drives any CRI image endpoint: `stowage serve` or
containerd's CRI plugin.

    client.py --socket PATH --stubs DIR COMMAND [ARGS]

Commands (each prints one JSON document on stdout and exits 0, also when
the call failed: {"ok": false, "code": "NOT_FOUND", "details": "..."}):

    pull IMAGE [--username U --password P | --auth B64 | --identity-token T | --registry-token T] [--timeout S]
    pull-many IMAGE N          N concurrent PullImage calls; a list of results
    list [--filter IMAGE]
    status IMAGE [--verbose]
    remove IMAGE
    fsinfo
    wait                       until the endpoint answers ListImages (or --timeout)

Run with Debian's /usr/bin/python3: it has grpcio and protobuf.
"""

import argparse
import json
import os
import sys
import threading
import time


def load_stubs(stubs):
    sys.path.insert(0, stubs)
    import api_pb2  # noqa: E402
    import api_pb2_grpc  # noqa: E402

    return api_pb2, api_pb2_grpc


def to_dict(msg):
    from google.protobuf import json_format

    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def call(fn, timeout):
    import grpc

    started = time.monotonic()
    try:
        resp = fn(timeout)
        return {"ok": True, "result": to_dict(resp), "seconds": time.monotonic() - started}
    except grpc.RpcError as e:
        return {
            "ok": False,
            "code": e.code().name,
            "details": e.details(),
            "seconds": time.monotonic() - started,
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", required=True, help="unix socket path of the image endpoint")
    ap.add_argument("--stubs", required=True, help="directory with api_pb2.py and api_pb2_grpc.py")
    ap.add_argument("--timeout", type=float, default=120.0, help="per-call deadline in seconds")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pull")
    p.add_argument("image")
    p.add_argument("--username", default="")
    p.add_argument("--password", default="")
    p.add_argument("--auth", default="")
    p.add_argument("--identity-token", default="")
    p.add_argument("--registry-token", default="")
    p = sub.add_parser("pull-many")
    p.add_argument("image")
    p.add_argument("n", type=int)
    p = sub.add_parser("list")
    p.add_argument("--filter", default="")
    p = sub.add_parser("status")
    p.add_argument("image")
    p.add_argument("--verbose", action="store_true")
    p = sub.add_parser("remove")
    p.add_argument("image")
    sub.add_parser("fsinfo")
    sub.add_parser("wait")
    args = ap.parse_args()

    pb, pb_grpc = load_stubs(args.stubs)
    import grpc

    channel = grpc.insecure_channel("unix://" + os.path.abspath(args.socket))
    stub = pb_grpc.ImageServiceStub(channel)
    spec = lambda image: pb.ImageSpec(image=image)  # noqa: E731

    if args.cmd == "pull":
        auth = None
        if args.username or args.password or args.auth or args.identity_token or args.registry_token:
            auth = pb.AuthConfig(
                username=args.username,
                password=args.password,
                auth=args.auth,
                identity_token=args.identity_token,
                registry_token=args.registry_token,
            )
        req = pb.PullImageRequest(image=spec(args.image), auth=auth)
        out = call(lambda t: stub.PullImage(req, timeout=t), args.timeout)
    elif args.cmd == "pull-many":
        results = [None] * args.n
        start = threading.Barrier(args.n)

        def one(i):
            start.wait()
            req = pb.PullImageRequest(image=spec(args.image))
            results[i] = call(lambda t: stub.PullImage(req, timeout=t), args.timeout)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(args.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out = {"ok": all(r["ok"] for r in results), "results": results}
    elif args.cmd == "list":
        flt = pb.ImageFilter(image=spec(args.filter)) if args.filter else None
        req = pb.ListImagesRequest(filter=flt)
        out = call(lambda t: stub.ListImages(req, timeout=t), args.timeout)
    elif args.cmd == "status":
        req = pb.ImageStatusRequest(image=spec(args.image), verbose=args.verbose)
        out = call(lambda t: stub.ImageStatus(req, timeout=t), args.timeout)
        if out["ok"] and args.verbose:
            # The info values are JSON documents; decode them for the reader.
            info = out["result"].get("info", {})
            out["info"] = {k: json.loads(v) for k, v in info.items()}
    elif args.cmd == "remove":
        req = pb.RemoveImageRequest(image=spec(args.image))
        out = call(lambda t: stub.RemoveImage(req, timeout=t), args.timeout)
    elif args.cmd == "fsinfo":
        out = call(lambda t: stub.ImageFsInfo(pb.ImageFsInfoRequest(), timeout=t), args.timeout)
    elif args.cmd == "wait":
        deadline = time.monotonic() + args.timeout
        while True:
            out = call(lambda t: stub.ListImages(pb.ListImagesRequest(), timeout=t), 2.0)
            if out["ok"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    channel.close()


if __name__ == "__main__":
    main()
