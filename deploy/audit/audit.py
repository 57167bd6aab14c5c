"""`make audit`: pip-audit over the locked dependencies (uv.lock), never hanging offline.

    python deploy/audit/audit.py                 # what `make audit` runs
    python deploy/audit/audit.py --service osv   # OSV instead of PyPI's advisory data

Steps: reach the advisory service first (one HTTPS request, `--timeout` seconds), then
export the lock (`uv export --frozen --all-packages --all-extras --no-hashes
--no-emit-workspace`) and audit it (`pip-audit -r FILE --no-deps --disable-pip`), the whole
audit bounded by `--limit` seconds.

Exit codes:
    0  no known vulnerability in the locked dependencies
    1  known vulnerabilities (pip-audit's table says which)
    2  the audit itself failed (uv export or pip-audit did not run)
    3  the advisory service could not be reached: nothing was audited
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

EXIT_OK, EXIT_VULNERABLE, EXIT_FAILED, EXIT_UNREACHABLE = 0, 1, 2, 3
# What each service answers for one known release, as pip-audit asks for it: a mirror that
# serves package pages but not this per-release JSON (with its `vulnerabilities`) cannot be
# audited against, however reachable it is.
PROBES = {
    "pypi": "https://pypi.org/pypi/pip/24.0/json",
    "osv": "https://api.osv.dev/v1/vulns/PYSEC-2021-1",
}
_SKIPPED = "could not be audited"
# What pip-audit (requests, urllib3) says when the service goes away mid-audit.
_NETWORK_WORDS = ("ConnectionError", "Max retries exceeded", "timed out", "Name or service")
REPO = Path(__file__).resolve().parents[2]


def unreachable(url: str, timeout_s: float) -> str | None:
    """Why `url` gives no advisory JSON within `timeout_s`, or None when it does."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - https
            json.loads(resp.read())
            return None
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return f"{type(reason).__name__}: {reason}"


def _say(text: str) -> None:
    print(f"audit: {text}", file=sys.stderr)  # noqa: T201


def _export(path: Path) -> None:
    subprocess.run(
        [
            "uv",
            "export",
            "--frozen",
            "--all-packages",
            "--all-extras",
            "--no-hashes",
            "--no-emit-workspace",
            "--no-header",
            "--output-file",
            str(path),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--service", choices=sorted(PROBES), default="pypi")
    ap.add_argument("--probe-url", help="URL checked first (default: the service's own)")
    ap.add_argument("--timeout", type=int, default=10, help="per request, seconds")
    ap.add_argument("--limit", type=float, default=600.0, help="the whole audit, seconds")
    args = ap.parse_args(argv)
    url = args.probe_url or PROBES[args.service]
    why = unreachable(url, args.timeout)
    if why is not None:
        _say(f"advisory service unreachable ({url}: {why}); nothing audited (exit 3)")
        return EXIT_UNREACHABLE
    with tempfile.TemporaryDirectory() as tmp:
        reqs = Path(tmp) / "requirements.txt"
        try:
            _export(reqs)
        except (OSError, subprocess.CalledProcessError) as err:
            _say(f"uv export failed: {err}")
            return EXIT_FAILED
        reqs_lines = reqs.read_text().splitlines()
        cmd = [sys.executable, "-m", "pip_audit", "-r", str(reqs), "--no-deps", "--disable-pip"]
        cmd += ["-s", args.service, "--timeout", str(args.timeout), "--progress-spinner", "off"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.limit)
        except subprocess.TimeoutExpired:
            _say(f"advisory service too slow: no answer within {args.limit:.0f} s (exit 3)")
            return EXIT_UNREACHABLE
    sys.stdout.write(done.stdout)
    skipped = done.stdout.count(_SKIPPED)
    listed = sum(1 for ln in reqs_lines if ln and not ln.startswith(("#", " ", "-")))
    if listed and skipped >= listed:
        _say(f"the advisory service knew none of the {listed} packages: nothing audited (exit 3)")
        return EXIT_UNREACHABLE
    if skipped:
        _say(f"{skipped} of {listed} packages could not be audited (listed above)")
    if done.returncode == 0:
        return EXIT_OK
    if any(w in done.stderr for w in _NETWORK_WORDS):
        last = done.stderr.strip().splitlines()[-1:] or [""]
        _say(f"advisory service unreachable mid-audit ({last[0][:200]}) (exit 3)")
        return EXIT_UNREACHABLE
    if done.stdout.strip():
        return EXIT_VULNERABLE
    sys.stderr.write(done.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
