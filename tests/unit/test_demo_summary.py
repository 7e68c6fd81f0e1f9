"""The `make demo` summary names each asset check's outcome: a failed warning-level check (the run went on, e.g.
RL did not beat SFT and the SFT model is served) reads WARN with its reason, not FAIL."""

from dagster import AssetCheckEvaluation, AssetCheckSeverity, AssetKey

from orchestration.demo import check_line


def evaluation(passed: bool, severity=AssetCheckSeverity.ERROR, description=None) -> AssetCheckEvaluation:
    return AssetCheckEvaluation(asset_key=AssetKey("serving_candidate"), check_name="serving_candidate_is_rl",
                                passed=passed, severity=severity, description=description)


def test_check_lines_say_pass_warn_or_fail_with_the_reason():
    assert check_line(evaluation(True, description="fine")).endswith(" PASS")
    warn = check_line(evaluation(False, AssetCheckSeverity.WARN, "RL did not clear the gate, serving the SFT model"))
    assert warn.endswith(" WARN: RL did not clear the gate, serving the SFT model")
    assert check_line(evaluation(False)).endswith(" FAIL")
