import subprocess
import sys


def test_imagery_does_not_import_torch():
    code = (
        "import sys, urbangeo.imagery.stages, urbangeo.imagery.panorama, urbangeo_cli.imagery; "
        "print(sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
