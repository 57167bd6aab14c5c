"""`make audit` (deploy/audit/audit.py) offline: an advisory service that cannot be reached,
or that answers without advisory data, is said in one line with exit 3, within its timeout;
nothing here leaves loopback."""

from __future__ import annotations

import http.server
import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "audit" / "audit.py"


@pytest.fixture(scope="module")
def audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Answer(http.server.BaseHTTPRequestHandler):
    """/json answers advisory JSON; anything else 404, as a mirror without it does."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b'{"info": {}, "vulnerabilities": []}' if self.path == "/json" else b"nope"
        self.send_response(200 if self.path == "/json" else 404)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def local_service() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_unreachable_service_is_exit_3_in_one_line_within_the_timeout(
    audit: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = time.monotonic()
    # the discard port on loopback: refused at once, never the network
    code = audit.main(["--probe-url", "http://127.0.0.1:9/", "--timeout", "2"])
    took = time.monotonic() - t0
    err = capsys.readouterr().err.strip()
    assert code == audit.EXIT_UNREACHABLE == 3
    assert len(err.splitlines()) == 1 and "advisory service unreachable" in err, err
    assert "nothing audited" in err and took < 2.5


def test_a_service_without_advisory_data_counts_as_unreachable(
    audit: ModuleType, local_service: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert audit.unreachable(f"{local_service}/json", 2.0) is None
    assert audit.unreachable(f"{local_service}/pypi/pip/24.0/json", 2.0) == "HTTP 404"
    code = audit.main(["--probe-url", f"{local_service}/mirror-page", "--timeout", "2"])
    assert code == 3 and "HTTP 404" in capsys.readouterr().err
