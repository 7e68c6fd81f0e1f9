"""Asset code versions follow the code (assets/_metadata.py code_version): Dagster marks an asset stale when its
module or a models package it imports changes, and only then."""

from assets._metadata import code_version


def test_code_version_changes_with_the_imported_models_packages_only(tmp_path):
    models = tmp_path / "models"
    for name, text in {"rl/policy.py": "A = 1\n", "rl/deep/inner.py": "B = 1\n", "eval/metrics.py": "C = 1\n",
                       "artifacts.py": "D = 1\n"}.items():
        (models / name).parent.mkdir(parents=True, exist_ok=True)
        (models / name).write_text(text)
    asset = tmp_path / "rl_assets.py"
    asset.write_text("from models.rl.policy import A\nfrom models.artifacts import D\n\n\ndef f():\n    return A\n")

    def version() -> str:
        return code_version(str(asset), models)

    first = version()
    assert len(first) == 12 and version() == first  # deterministic
    (models / "eval" / "metrics.py").write_text("C = 2\n")  # a package the module does not import
    assert version() == first
    (models / "rl" / "deep" / "inner.py").write_text("B = 2\n")  # anywhere inside an imported package
    second = version()
    assert second != first
    (models / "artifacts.py").write_text("D = 2\n")  # an imported top-level module
    third = version()
    assert third not in (first, second)
    asset.write_text(asset.read_text() + "# a comment is a change too\n")
    assert version() not in (first, second, third)


def test_every_asset_module_has_a_computed_code_version():
    import assets.rl
    import assets.training

    for module in (assets.rl, assets.training):
        assert module.CODE_VERSION == code_version(module.__file__) and len(module.CODE_VERSION) == 12
