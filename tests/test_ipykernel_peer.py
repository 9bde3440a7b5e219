"""The runner of ipykernel's own tests (tests/ipykernel_peer/run.py), not those tests:
its selection parses and names real tests of the sdist, it refuses a kernelspec that
starts another kernel than the one under test, and a failing test fails its group.

The first test downloads the sdist into the repo's cache when it is not there yet.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from ipykernel_peer import run


def test_the_selection_parses_and_each_exclusion_has_a_reason_and_names_a_test_of_the_sdist(
) -> None:
    selection = run.load_selection()
    sdist = run.sdist_dir(run.installed_ipykernel_version())

    assert selection.group_files(run.MUST_PASS) == ["test_debugger.py", "test_message_spec.py",
                                                    "test_subshells.py"]
    assert selection.group_files(run.ALLOWED_TO_FAIL) == []
    for name in selection.files:
        assert (sdist / "tests" / name).is_file(), name
    assert selection.exclusions
    for exclusion in selection.exclusions:
        assert len(exclusion.reason) > 40, exclusion
    assert run.missing_tests(sdist, selection.exclusions) == []


def test_an_exclusion_naming_a_test_the_sdist_does_not_have_is_found(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_message_spec.py").write_text(
        "def test_kept():\n    pass\n\nasync def test_async_kept():\n    pass\n")
    exclusions = [run.Exclusion("tests/test_message_spec.py::test_kept", "a reason"),
                  run.Exclusion("tests/test_message_spec.py::test_async_kept[a-b]", "a reason"),
                  run.Exclusion("tests/test_message_spec.py::test_renamed", "a reason"),
                  run.Exclusion("tests/test_gone.py::test_kept", "a reason")]

    assert run.missing_tests(tmp_path, exclusions) == [
        "tests/test_message_spec.py::test_renamed", "tests/test_gone.py::test_kept"]


@pytest.mark.parametrize(("text", "complaint"), [
    ('[files]\n"test_a.py" = "optional"\n', "a group is one of"),
    ("[files]\n", "a [files] table"),
    ('[files]\n"test_a.py" = "must-pass"\n[[excluded]]\ntest = "tests/test_a.py::test_x"\n',
     "has no reason"),
    ('[files]\n"test_a.py" = "must-pass"\n[[excluded]]\ntest = "tests/test_a.py::test_x"\n'
     'reason = "  "\n', "has no reason"),
    ('[files]\n"test_a.py" = "must-pass"\n[[excluded]]\ntest = "test_x"\nreason = "r"\n',
     "is not of the form"),
    ('[files]\n"test_a.py" = "must-pass"\n[[excluded]]\ntest = "tests/test_b.py::test_x"\n'
     'reason = "r"\n', "in no file of [files]"),
    ('[files]\n"test_a.py" = "must-pass"\n'
     + '[[excluded]]\ntest = "tests/test_a.py::test_x"\nreason = "r"\n' * 2, "listed twice"),
    ('excluded = ["tests/test_a.py::test_x"]\n[files]\n"test_a.py" = "must-pass"\n',
     "is not a table"),
    ('[files\n', "Expected"),
], ids=["unknown group", "no files", "no reason", "blank reason", "bad id", "file not listed",
        "listed twice", "not a table", "not TOML"])
def test_a_selection_the_runner_cannot_follow_is_refused(tmp_path: Path, text: str,
                                                           complaint: str) -> None:
    path = tmp_path / "selection.toml"
    path.write_text(text)

    with pytest.raises(run.SelectionError, match=re.escape(complaint)):
        run.load_selection(path)


def test_the_identity_check_refuses_a_python3_kernelspec_that_starts_ipykernel(
        tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    run.install_kernelspec("ipykernel", prefix)
    env = run.peer_env(tmp_path, prefix)

    with pytest.raises(run.IdentityError, match="implementation is 'ipython', not 'wrapperkernel'"):
        run.check_identity("wrapperkernel", env, tmp_path / "kernel.log")
    assert run.check_identity("ipykernel", env, tmp_path / "kernel.log") == "ipython"


def test_the_identity_check_accepts_this_checkouts_wrapperkernel(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    folder = run.install_kernelspec("wrapperkernel", prefix)

    spec = json.loads((folder / "kernel.json").read_text())
    assert spec["env"]["PYTHONPATH"] == str(run.REPO)
    assert run.check_identity("wrapperkernel", run.peer_env(tmp_path, prefix),
                              tmp_path / "kernel.log") == "wrapperkernel"


def fake_sdist(root: Path) -> Path:
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_fake.py").write_text(textwrap.dedent("""\
        def test_passes():
            pass

        def test_fails():
            assert False
        """))
    return root


def test_a_failing_test_fails_its_group_unless_deselected(tmp_path: Path) -> None:
    sdist = fake_sdist(tmp_path / "sdist")
    env = run.peer_env(tmp_path, tmp_path / "prefix")

    failed = run.run_group(run.MUST_PASS, ["test_fake.py"], [], sdist, env)
    deselected = run.run_group(run.MUST_PASS, ["test_fake.py"],
                               ["tests/test_fake.py::test_fails"], sdist, env)

    assert failed.exit_code == 1
    assert failed.summary.startswith("1 failed, 1 passed in ")
    assert deselected.exit_code == 0
    assert deselected.summary.startswith("1 passed, 1 deselected in ")


def test_only_a_must_pass_group_that_failed_fails_the_run() -> None:
    def result(group: str, exit_code: int) -> run.GroupResult:
        return run.GroupResult(group, ("test_x.py",), exit_code, "summary")

    assert run.exit_status([result(run.MUST_PASS, 0), result(run.ALLOWED_TO_FAIL, 1)]) == 0
    assert run.exit_status([result(run.MUST_PASS, 1), result(run.ALLOWED_TO_FAIL, 0)]) == 1
    assert run.exit_status([result(run.MUST_PASS, 5)]) == 1  # pytest ran no test
    assert "-> failed (allowed)" in run.report("wrapperkernel", "7.4.0",
                                               [result(run.ALLOWED_TO_FAIL, 1)])


def test_the_summary_line_is_pytests_last_one() -> None:
    lines = ["=================== FAILURES ===================\n",
             "============= 1 failed, 30 passed, 2 deselected in 20.01s =============\n"]

    assert run.summary_line(lines) == "1 failed, 30 passed, 2 deselected in 20.01s"
    assert run.summary_line(["no summary here\n"]) == ""
