"""Escapes through folder descriptors (``dir_fd``, ``fchdir``) are refused by every layer.

The audit hook's ``open`` event does not carry ``os.open``'s ``dir_fd``: a hook that resolved
relative paths against the working folder was fooled by a descriptor of another folder. Each
attack runs with every layer, without the audit hook (Landlock alone must hold) and with the
audit hook alone (what is left off Linux). The folders are open to all, so that when the
sandbox runs as a fresh uid, file permissions do not stop the attack before the layer does.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import textwrap
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mstudy.sandbox import SandboxLimits, run_python

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox needs POSIX")

FAST = SandboxLimits(timeout=5.0, memory_mb=256)
LAYERS = {
    "all": {},
    "kernel-only": {"audit": False},
    "audit-only": {"landlock": False, "namespaces": False},
}
layered = pytest.mark.parametrize("layers", list(LAYERS.values()), ids=list(LAYERS))
SECRET = f"secret-{uuid.uuid4().hex}"

ATTEMPT = """
import json, os
results = {}
def attempt(name, action):
    try:
        results[name] = action()
    except OSError as exc:
        results[name] = "refused: " + type(exc).__name__
"""


@pytest.fixture(scope="module")
def guards() -> tuple[str, ...]:
    result = run_python("print('ready')", limits=FAST)
    assert result.ok, result.stderr
    return result.guards


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder open to every uid, outside the sandbox: ``ro`` (readable by the program, and
    writable as far as file permissions go), ``secret.txt`` and ``ro/link`` to it."""
    folder = Path(tempfile.mkdtemp(prefix="mstudy-dirfd-test-"))
    try:
        folder.chmod(0o777)
        (folder / "ro").mkdir()
        (folder / "ro").chmod(0o777)
        (folder / "ro" / "note.txt").write_text("public")
        (folder / "secret.txt").write_text(SECRET)
        (folder / "ro" / "link").symlink_to(folder / "secret.txt")
        for path in (folder / "ro" / "note.txt", folder / "secret.txt"):
            path.chmod(0o644)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(code: str, layers: dict[str, bool], read_paths: Sequence[str] = ()) -> dict[str, Any]:
    program = textwrap.dedent(ATTEMPT) + textwrap.dedent(code)
    result = run_python(program, limits=FAST, read_paths=read_paths, **layers)
    assert result.ok, result.stderr
    outcome: dict[str, Any] = json.loads(result.last_line)
    return outcome


def skip_unless_contained(layers: dict[str, bool], guards: tuple[str, ...]) -> None:
    if layers.get("audit") is False and "landlock-fs" not in guards:
        pytest.skip("without the audit hook, only Landlock confines files; this machine lacks it")


@layered
def test_dir_fd_does_not_read_a_refused_file(
    layers: dict[str, bool], base: Path, guards: tuple[str, ...]
) -> None:
    skip_unless_contained(layers, guards)
    ro, secret = str(base / "ro"), str(base / "secret.txt")
    outcome = run(
        f"""
        attempt("absolute", lambda: open({secret!r}).read())
        attempt("through the link", lambda: open({ro!r} + "/link").read())
        def by_dir_fd():
            folder = os.open({ro!r}, os.O_RDONLY)
            return os.read(os.open("link", os.O_RDONLY, dir_fd=folder), 100).decode()
        attempt("dir_fd", by_dir_fd)
        def by_fchdir():
            os.fchdir(os.open({ro!r}, os.O_RDONLY))
            return open("link").read()
        attempt("fchdir", by_fchdir)
        attempt("public", lambda: open({ro!r} + "/note.txt").read())
        print(json.dumps(results))
        """,
        layers,
        read_paths=[ro],
    )
    assert SECRET not in json.dumps(outcome)
    assert outcome["public"] == "public"
    for name in ("absolute", "through the link", "dir_fd", "fchdir"):
        assert outcome[name].startswith("refused"), name


@layered
def test_dir_fd_does_not_write_into_a_read_only_folder(
    layers: dict[str, bool], base: Path, guards: tuple[str, ...]
) -> None:
    skip_unless_contained(layers, guards)
    ro = str(base / "ro")
    outcome = run(
        f"""
        def folder():
            return os.open({ro!r}, os.O_RDONLY)
        attempt("absolute", lambda: open({ro!r} + "/absolute.txt", "w").write("x"))
        attempt("os.open", lambda: os.close(
            os.open("opened.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=folder())))
        attempt("mkdir", lambda: os.mkdir("made", dir_fd=folder()))
        attempt("symlink", lambda: os.symlink("main.py", "linked", dir_fd=folder()))
        attempt("rename", lambda: os.rename("main.py", "moved.py", dst_dir_fd=folder()))
        def by_fchdir():
            os.fchdir(folder())
            return open("fchdir.txt", "w").write("x")
        attempt("fchdir", by_fchdir)
        print(json.dumps(results))
        """,
        layers,
        read_paths=[ro],
    )
    assert sorted(os.listdir(base / "ro")) == ["link", "note.txt"]
    for name, verdict in outcome.items():
        assert verdict.startswith("refused"), name


@pytest.fixture
def deep_work(base: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Sandbox folders made in ``base/t``, so that a parent of the working folder is ours."""
    (base / "t").mkdir()
    (base / "t").chmod(0o777)
    monkeypatch.setattr(tempfile, "tempdir", str(base / "t"))
    return base / "t"


@layered
def test_a_folder_descriptor_inside_the_folder_does_not_climb_out(
    layers: dict[str, bool], base: Path, deep_work: Path, guards: tuple[str, ...]
) -> None:
    skip_unless_contained(layers, guards)
    # relative to the working folder ``t/<work>``, ../../pub is the readable folder base/pub;
    # relative to its subfolder ``sub`` it is t/pub, which the program may not read
    (base / "pub").mkdir(mode=0o755)
    (deep_work / "pub").mkdir(mode=0o755)
    (deep_work / "pub" / "secret.txt").write_text(SECRET)
    (deep_work / "pub" / "secret.txt").chmod(0o644)
    outcome = run(
        """
        os.mkdir("sub")
        def climb():
            folder = os.open("sub", os.O_RDONLY)
            return os.read(os.open("../../pub/secret.txt", os.O_RDONLY, dir_fd=folder), 99).decode()
        attempt("climb", climb)
        print(json.dumps(results))
        """,
        layers,
        read_paths=[str(base / "pub")],
    )
    assert SECRET not in json.dumps(outcome)
    assert outcome["climb"].startswith("refused")


@layered
def test_a_link_through_a_link_does_not_lead_out(
    layers: dict[str, bool], deep_work: Path, guards: tuple[str, ...]
) -> None:
    skip_unless_contained(layers, guards)
    # s/a -> the working folder itself; s/l -> a/../x, which is <work>/x seen from the working
    # folder but <work>/../x (outside) seen from s, where the link lives
    name = f"escaped-{uuid.uuid4().hex}"
    outcome = run(
        f"""
        os.mkdir("s")
        def plant():
            os.symlink(os.getcwd(), "s/a")
            os.symlink("a/../{name}", "s/l")
            return "planted"
        attempt("plant", plant)
        def write():
            folder = os.open("s", os.O_RDONLY)
            return os.write(os.open("l", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=folder), b"x")
        attempt("write", write)
        print(json.dumps(results))
        """,
        layers,
    )
    assert not (deep_work / name).exists()
    # the hook refuses the link; Landlock (without the hook) the write through it
    assert outcome["plant"] != "planted" or str(outcome["write"]).startswith("refused")


@pytest.mark.parametrize("layers", [LAYERS["audit-only"]], ids=["audit-only"])
def test_folder_descriptors_still_work_inside_the_folder(layers: dict[str, bool]) -> None:
    outcome = run(
        """
        import shutil
        os.makedirs("tree/a/b")
        open("tree/a/b/f.txt", "w").write("x")
        def walk():
            return sorted(name for _, _, files, _ in os.fwalk("tree") for name in files)
        attempt("fwalk", walk)
        def relative():
            folder = os.open("tree/a", os.O_RDONLY)
            os.mkdir("c", dir_fd=folder)
            os.close(os.open("c/g.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=folder))
            os.rename("c/g.txt", "c/h.txt", src_dir_fd=folder, dst_dir_fd=folder)
            return sorted(os.listdir("tree/a/c"))
        attempt("dir_fd", relative)
        start = os.getcwd()
        def chdir():
            os.chdir("tree/a/b")
            text = open("f.txt").read()
            os.chdir(start)
            return text
        attempt("chdir", chdir)
        attempt("rmtree", lambda: shutil.rmtree("tree") or os.path.exists("tree"))
        print(json.dumps(results))
        """,
        layers,
    )
    assert outcome == {"fwalk": ["f.txt"], "dir_fd": ["h.txt"], "chdir": "x", "rmtree": False}
