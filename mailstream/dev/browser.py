"""Headless Chromium for the browser tests: Debian's `chromium` and `chromium-driver`.

`ensure_chromium()` installs them with apt-get when they are missing and this process is root
(CI and the project's machines run as root); anyone else is told the one command to run.
`make test` runs it (`python -m mailstream.dev.browser`) before the tests, and the `browser`
fixture (tests/browser.py) again, so a browser test fails rather than skips without one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mailstream.errors import ErrorKind, MailstreamError

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")
INSTALL_COMMAND = f"sudo apt-get update && sudo apt-get install -y {' '.join(PACKAGES)}"


class BrowserError(MailstreamError, RuntimeError):
    """Headless Chromium is missing and could not be installed here."""

    default_kind = ErrorKind.BROWSER_MISSING


@dataclass(frozen=True)
class Chromium:
    binary: Path
    driver: Path


def ensure_chromium() -> Chromium:
    """Chromium and its driver, installed first when missing; BrowserError naming the one
    command to run when this process cannot install them."""
    chromium = Chromium(CHROMIUM, CHROMEDRIVER)
    if _installed(chromium):
        return chromium
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BrowserError(f"the browser tests need headless Chromium: run `{INSTALL_COMMAND}`")
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    # a fresh machine's package lists may be empty or stale: update once, then try again
    if _apt(install) != 0 and (_apt(["apt-get", "update"]) != 0 or _apt(install) != 0):
        raise BrowserError(f"apt-get could not install {' and '.join(PACKAGES)} (see above)")
    if not _installed(chromium):
        raise BrowserError(
            f"{' and '.join(PACKAGES)} installed without {CHROMIUM} or {CHROMEDRIVER}"
        )
    return chromium


def _installed(chromium: Chromium) -> bool:
    return all(os.access(path, os.X_OK) for path in (chromium.binary, chromium.driver))


def _apt(command: list[str]) -> int:
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(command, env=env, check=False).returncode


def main() -> int:
    try:
        chromium = ensure_chromium()
    except BrowserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"headless Chromium: {chromium.binary}, {chromium.driver}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
