"""The reference's graph with logits at stride 4: how much a default without the stride-2
decoder step would save, timed before anyone trains one.

The bundled reference is cut after ``dec4_a_pw_relu`` and given a new 1x1 head (untrained:
the graph's speed, not its accuracy, is what this measures) and the final x4 upsampling that
`edge-seg convert` strips, so the TFLite files end at stride 4 as the bundled ones end at 2:

    python tools/research/stride4_graph.py OUT/unet-mobilenetv2-stride4.keras
    edge-seg convert OUT/unet-mobilenetv2-stride4.keras --int8 --fp32 \\
        --calibration calibration/camvid-drive-train.json -o OUT
    python benchmarks/bench_reference.py --model OUT/unet-mobilenetv2-stride4-int8.tflite \\
        --model OUT/unet-mobilenetv2-stride4-fp32.tflite ...
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "models" / "unet-mobilenetv2-camvid-idd.keras"


def main(out: str) -> None:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tf_keras as keras

    from edge_seg.labels import NUM_CATEGORIES
    model = keras.models.load_model(REFERENCE, compile=False)
    x = model.get_layer("dec4_a_pw_relu").output
    logits = keras.layers.Conv2D(NUM_CATEGORIES, 1, name="head")(x)
    y = keras.layers.UpSampling2D(4, interpolation="bilinear", name="logits_up")(logits)
    keras.Model(model.input, y, name="stride4").save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: stride4_graph.py OUT.keras")
    main(sys.argv[1])
