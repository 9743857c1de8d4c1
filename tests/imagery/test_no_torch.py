from tests.helpers import modules_loaded_by


def test_imagery_does_not_import_torch():
    code = "import urbangeo.imagery.stages, urbangeo.imagery.panorama, urbangeo_cli.imagery"
    assert modules_loaded_by(code) == []
