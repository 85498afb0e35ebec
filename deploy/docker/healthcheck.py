"""Container health probe: exit 0 when `GET /v2/health/ready` answers 200, else 1.

Why a script: the slim base image has no curl/wget, and a Python one-liner in a Dockerfile
`HEALTHCHECK` is hard to quote and read. The port comes from `KERASSERVE_PORT`, the same variable
the server reads, so changing the port never breaks the health check. Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

READY_PATH = "/v2/health/ready"


def main() -> int:
    port = os.environ.get("KERASSERVE_PORT", "8000")
    url = f"http://127.0.0.1:{port}{READY_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 (fixed local URL)
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"not ready: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
