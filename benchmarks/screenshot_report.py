"""Render a report.html in headless Chromium to a PNG, to check it the way a reader sees it.

Needs Debian's chromium package (``apt-get install chromium``); it is not a dependency of neurodiff.

    python benchmarks/screenshot_report.py demo-output/report.html --png demo-output/report.png

Chromium runs with a fresh profile and without background networking (this machine has no network
beyond the package registries, and Chromium's background requests would only be refused).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--force-device-scale-factor=1"]


def screenshot(report: Path, png: Path, width: int = 1280, height: int = 6000, chromium: str | None = None) -> Path:
    browser = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("Chromium is not installed: apt-get install chromium (Debian), then run this again")
    if not report.is_file():
        raise SystemExit(f"{report} does not exist; run `neurodiff demo --out DIR` first")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="neurodiff-chromium-") as profile:
        command = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                   f"--screenshot={png.absolute()}", report.absolute().as_uri()]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not png.exists():
        raise SystemExit(f"Chromium failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    return png


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the report.html to render")
    parser.add_argument("--png", type=Path, default=None, help="output PNG (default: beside the report)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=6000, help="page height to capture, in pixels")
    args = parser.parse_args(argv)
    png = screenshot(args.report, args.png or args.report.with_suffix(".png"), args.width, args.height)
    print(f"Wrote {png}")


if __name__ == "__main__":
    sys.exit(main())
