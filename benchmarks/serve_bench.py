"""Serving figures on this machine: latency at 1 client, throughput at 32, memory, torch vs onnxruntime.

    .venv/bin/python benchmarks/serve_bench.py RUN_DIR [--seconds 20] [--out FILE.jsonl --label NAME]

For each backend, starts `cifar10cnn serve RUN_DIR` on a free loopback port, runs
`cifar10cnn loadtest` with 1 client and with 32 clients (one PNG per request), prints the rows
and stops the server. Server and load generator share this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--backends", nargs="+", default=["torch", "onnx"])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--images-per-request", type=int, default=1)
    ap.add_argument("--out", type=Path, help="append the rows to this JSON-lines file, with their provenance")
    ap.add_argument("--label", default="", help="a name for this sitting's rows (e.g. before / after)")
    args = ap.parse_args()
    rows = []
    for backend in args.backends:
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "cifar10cnn.cli", "serve", str(args.run_dir), "--port",
                                   str(port), "--backend", backend], stdout=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.2)
            for clients in args.clients:
                out = subprocess.run([sys.executable, "-m", "cifar10cnn.cli", "loadtest", url, "--clients",
                                      str(clients), "--seconds", str(args.seconds), "--images-per-request",
                                      str(args.images_per_request), "--json"],
                                     capture_output=True, text=True, check=True).stdout
                r = json.loads(out)
                rows.append({"backend": backend, "clients": clients, **r})
                if args.out:
                    from cifar10cnn.provenance import provenance

                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    with open(args.out, "a") as f:
                        f.write(json.dumps({"label": args.label, "command": " ".join(sys.argv),
                                            "provenance": provenance(), **rows[-1]}) + "\n")
                print(f"{backend:6} {clients:3} clients: {r['images_per_s']:8,.0f} images/s  "
                      f"p50 {r['p50_ms']:6.2f} ms  p95 {r['p95_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                      f"errors {r['errors']}  "
                      f"forward passes {r['forward_passes']:,} for {r['requests']:,} requests  "
                      f"server RSS {r['server_rss_mb_start']} → {r['server_rss_mb_end']} MB", flush=True)
                samples = r["server_rss_mb_samples"]
                if samples:
                    print(f"       server RSS every 2 s (MB): {', '.join(f'{m:.0f}' for m in samples)}", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
