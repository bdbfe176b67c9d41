"""ego3s as an installed package: the wheel carries the shipped configs (package data, built from
the one configs/ folder), and `ego3s demo --help`, `ego3s info` and the packaged demo config work
from a venv outside the source tree."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import REPO as ROOT


def test_packaged_configs_are_the_repository_configs():
    """src/ego3s/configs is a link to configs/, so the two cannot drift."""
    link = ROOT / "src" / "ego3s" / "configs"
    assert link.is_symlink() and link.resolve() == (ROOT / "configs").resolve()
    from ego3s.cli import _packaged_config

    assert _packaged_config("demo.yaml").read_bytes() == (ROOT / "configs" / "demo.yaml").read_bytes()


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path):
    src = tmp_path / "src"
    top = {".git", ".venv", "runs", "build", "dist", "tests", "data", "experiments", "docs", "benchmarks", "examples"}

    def ignore(folder, names):  # the checkout's own folders, not ego3s/data (a package of the same name)
        return {
            n for n in names if n == "__pycache__" or n.endswith(".egg-info") or (Path(folder) == ROOT and n in top)
        }

    shutil.copytree(ROOT, src, symlinks=True, ignore=ignore)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
        check=True,
        cwd=tmp_path,
    )
    (whl,) = wheels.glob("ego3s-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    shipped = {p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert {f"ego3s/configs/{n}" for n in shipped} <= names

    # a venv whose own site-packages holds the wheel; the test venv's packages (torch, ...) are
    # reached through a .pth file listing its site-packages (appended after the venv's own, and a
    # .pth inside them, like an editable ego3s's, is not processed)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # not the checkout
    env["HF_HUB_OFFLINE"] = "1"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(whl)], check=True, env=env)
    Path(purelib, "test_venv.pth").write_text("\n".join(site.getsitepackages()) + "\n")  # after: pip would
    # otherwise see the test venv's ego3s as already installed

    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args):
        r = subprocess.run(list(args), cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    out = run(
        str(venv / "bin" / "python"),
        "-c",
        "import ego3s, ego3s.cli as c; print(ego3s.__file__); print(c._packaged_config('demo.yaml'))",
    )
    module, cfg = out.split()
    assert module.startswith(purelib) and cfg.startswith(purelib)  # the installed copy, not the checkout
    assert Path(cfg).read_bytes() == (ROOT / "configs" / "demo.yaml").read_bytes()
    assert "--from" in run(str(venv / "bin" / "ego3s"), "demo", "--help")
    info = run(str(venv / "bin" / "ego3s"), "info")
    assert "ego3s" in info and "transformers" in info and "optional parts" in info
