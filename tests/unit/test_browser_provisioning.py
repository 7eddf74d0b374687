"""ensure_chromium: installs Debian's packages as root, and tells anyone else what to run."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstream.dev import browser
from mailstream.dev.browser import BrowserError, ensure_chromium


@pytest.fixture
def missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """Chromium absent (its paths in an empty folder); the apt-get calls are recorded."""
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "chromium")
    monkeypatch.setattr(browser, "CHROMEDRIVER", tmp_path / "chromedriver")
    calls: list[list[str]] = []

    def apt(command: list[str]) -> int:
        calls.append(command)
        if command[1] == "install" and ["apt-get", "update"] in calls:
            for path in (tmp_path / "chromium", tmp_path / "chromedriver"):
                path.touch(mode=0o755)
            return 0
        return 0 if command[1] == "update" else 100

    monkeypatch.setattr(browser, "_apt", apt)
    monkeypatch.setattr(browser.shutil, "which", lambda name: f"/usr/bin/{name}")
    return calls


def test_anyone_but_root_is_told_the_one_command(
    missing: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(browser.os, "geteuid", lambda: 1000)
    with pytest.raises(BrowserError) as refused:
        ensure_chromium()
    assert browser.INSTALL_COMMAND in str(refused.value)
    assert "apt-get install -y chromium chromium-driver" in browser.INSTALL_COMMAND
    assert missing == []


def test_root_installs_after_updating_the_package_lists_when_needed(
    missing: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(browser.os, "geteuid", lambda: 0)
    chromium = ensure_chromium()
    assert chromium.binary == browser.CHROMIUM and chromium.driver == browser.CHROMEDRIVER
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]
    assert missing == [install, ["apt-get", "update"], install]
