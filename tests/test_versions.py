"""Manifests record the versions they ran with."""

import platform

from unlearnops import __version__
from unlearnops.versions import library_versions


def test_library_versions_names_each_package_and_marks_missing_ones():
    import torch

    found = library_versions("torch", "surely-not-an-installed-package")
    assert found["unlearnops"] == __version__ and found["python"] == platform.python_version()
    assert torch.__version__.startswith(found["torch"].split("+")[0])
    assert found["surely-not-an-installed-package"] == "not installed"
