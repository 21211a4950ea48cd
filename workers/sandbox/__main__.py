"""Run the sandbox API server, and optionally its gateway data plane:

    python -m workers.sandbox --port 6443 [--crd-dir DIR] [--ready-delay 5]
        [--gateway-port 8080 --usage-endpoint http://127.0.0.1:8000/otlp/v1/logs]

The gateway ships its access log (when the portal configured an OpenTelemetry sink) to --usage-endpoint with the
bearer token in the environment variable SANDBOX_USAGE_TOKEN (kept off the command line, where `ps` shows it).
The API accepts the bearer token in SANDBOX_API_TOKEN (default "sandbox-token"), as a cluster's would.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

from workers.sandbox.gateway import SandboxGateway
from workers.sandbox.server import DEFAULT_GATEWAY, DEFAULT_TOKEN, Sandbox
from workers.sandbox.validation import default_crd_dir

USAGE_TOKEN_VARIABLE = "SANDBOX_USAGE_TOKEN"
API_TOKEN_VARIABLE = "SANDBOX_API_TOKEN"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--crd-dir", type=Path, default=None, help="CRD schemas (default: PORTAL_CRD_DIR or ../shared/crds)"
    )
    parser.add_argument("--ready-delay", type=float, default=3.0, help="seconds until an InferenceService is Ready")
    parser.add_argument("--kubeconfig-out", type=Path, help="write a kubeconfig for the sandbox to this file")
    parser.add_argument("--gateway-port", type=int, default=None, help="serve the gateway data plane on this port")
    parser.add_argument("--usage-endpoint", default=None, help="OTLP/HTTP logs endpoint the gateway ships usage to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sandbox = Sandbox(
        crd_dir=args.crd_dir or default_crd_dir(),
        host=args.host,
        port=args.port,
        ready_delay=args.ready_delay,
        token=os.environ.get(API_TOKEN_VARIABLE) or DEFAULT_TOKEN,
    )
    sandbox.start()
    if args.kubeconfig_out:
        args.kubeconfig_out.write_text(sandbox.kubeconfig())
    print(
        f"sandbox Kubernetes API on {sandbox.url} (CRD validation {'on' if sandbox.validating else 'off'})", flush=True
    )
    gateway = None
    if args.gateway_port is not None:
        gateway = SandboxGateway(
            sandbox.store,
            host=args.host,
            port=args.gateway_port,
            gateway=DEFAULT_GATEWAY,
            usage_endpoint=args.usage_endpoint,
            usage_token=os.environ.get(USAGE_TOKEN_VARIABLE) or None,
        ).start()
        print(f"sandbox gateway on {gateway.url} (usage to {args.usage_endpoint or 'nowhere'})", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    if gateway is not None:
        gateway.flush(5.0)
        gateway.stop()
    sandbox.stop()


if __name__ == "__main__":
    main()
