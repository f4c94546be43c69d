"""The benchmark header names a model by the hash its sidecar and the docs use."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INT8 = ROOT / "models" / "unet-mobilenetv2-camvid-idd-int8.tflite"


@pytest.mark.skipif(not INT8.is_file(), reason="the bundled int8 model is not in this checkout")
def test_header_hash_is_the_sidecars_model_hash_not_the_files():
    from benchmarks.machine import machine
    from edge_seg.backends.metadata import file_sha256, read_meta

    recorded = read_meta(INT8)["model_sha256"]
    assert file_sha256(INT8) != recorded  # the file carries embedded metadata
    assert machine(1, (512, 256), INT8)["model_sha256"] == recorded[:12]
