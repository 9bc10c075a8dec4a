"""The compiled loops' own rules (their results are checked through the tests of the code they serve):
compiled code is kept between processes only in a folder the user names and that can be written."""

from __future__ import annotations

from model.compiled import keeps_compiled_code


def test_compiled_code_is_kept_only_in_a_writable_folder_the_user_names(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert not keeps_compiled_code()  # the service's case: nothing written
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache" / "numba"))
    assert keeps_compiled_code() and (tmp_path / "cache" / "numba").is_dir()
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/proc/no-such-folder")  # cannot be made: compile as if not asked
    assert not keeps_compiled_code()
