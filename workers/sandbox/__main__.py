"""Run the sandbox API server: `python -m workers.sandbox --port 6443 [--crd-dir DIR] [--ready-delay 5]`."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from workers.sandbox.server import Sandbox
from workers.sandbox.validation import default_crd_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--crd-dir", type=Path, default=None, help="CRD schemas (default: PORTAL_CRD_DIR or ../shared/crds)"
    )
    parser.add_argument("--ready-delay", type=float, default=3.0, help="seconds until an InferenceService is Ready")
    parser.add_argument("--kubeconfig-out", type=Path, help="write a kubeconfig for the sandbox to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sandbox = Sandbox(
        crd_dir=args.crd_dir or default_crd_dir(), host=args.host, port=args.port, ready_delay=args.ready_delay
    )
    sandbox.start()
    if args.kubeconfig_out:
        args.kubeconfig_out.write_text(sandbox.kubeconfig())
    print(
        f"sandbox Kubernetes API on {sandbox.url} (CRD validation {'on' if sandbox.validating else 'off'})", flush=True
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    sandbox.stop()


if __name__ == "__main__":
    main()
