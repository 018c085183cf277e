"""`python -m bench.profile` (README, Performance) runs on the current core: every stage, both hooks."""

from __future__ import annotations

import gc

import pytest

from bench import profile


def test_profile_times_every_stage_of_both_hooks(capsys: pytest.CaptureFixture[str]) -> None:
    assert profile.main(["--resources", "20", "--trials", "4", "--repeat", "1", "--calls", "1"]) == 0
    printed = capsys.readouterr().out
    for stage in (
        "parse_hook_request",
        "gather_patient_data",
        "build_facts",
        "Engine.evaluate",
        "whole patient-view call",
        "whole order-select call",
    ):
        assert stage in printed
    assert "Profile at" in printed or "Recorded:" in printed
    assert gc.isenabled() and gc.get_freeze_count() == 0  # the worker GC policy is undone on return
