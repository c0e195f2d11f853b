"""What the Debian package ships for readers, checked without building or installing it.

- ``packaging/deb/build.sh`` copies ``docs/`` into the package's source tree and
  ``debian/angos.docs`` installs it beside the README (tests/packaging checks the
  installed files when the package is built).
- Every example argon2id hash in the shipped config, the README and docs/ has the
  parameters ``angos argon`` prints, so a reader comparing them sees the same thing.
"""

from __future__ import annotations

import re
import subprocess

from ..conftest import ANGOS, ROOT

PARAMS = re.compile(r"\$argon2id\$v=(\d+)\$m=(\d+),t=(\d+),p=(\d+)\$")


def test_the_package_installs_docs_beside_the_readme():
    build = (ROOT / "packaging" / "deb" / "build.sh").read_text()
    tar = re.search(r"-cf - (.*?)\|", build, re.S).group(1).split()
    assert "README.md" in tar and "docs" in tar
    listed = (ROOT / "packaging" / "deb" / "debian" / "angos.docs").read_text().split()
    assert listed == ["README.md", "docs"]
    shipped = (ROOT / "packaging" / "deb" / "config.toml").read_text()
    assert "/usr/share/doc/angos/docs/" in shipped


def test_example_hashes_have_the_parameters_angos_argon_prints():
    res = subprocess.run(ANGOS + ["argon"], input="example-password\n", capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    printed = PARAMS.match(res.stdout.strip())
    assert printed, res.stdout
    documents = [ROOT / "packaging" / "deb" / "config.toml", ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    seen = {}
    for path in documents:
        for m in PARAMS.finditer(path.read_text()):
            seen.setdefault(path.name, []).append(m.groups())
    assert "config.toml" in seen  # the shipped config's commented example is still there
    assert {name: set(found) for name, found in seen.items()} == {name: {printed.groups()} for name in seen}
