"""tf.data pipeline: image and mask stay aligned through every transform; deterministic."""
import json

import cv2
import numpy as np
import pytest

from edge_seg import labels
from edge_seg.train import datasets
from edge_seg.train.pipeline import CROP_ONLY, Augment, make_dataset

tf = pytest.importorskip("tensorflow")

GEOMETRY_ONLY = Augment(brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0))


@pytest.fixture(scope="module")
def colour_coded(tmp_path_factory):
    """Frames whose colour *is* the label: any misalignment shows up as disagreement."""
    root = tmp_path_factory.mktemp("coded")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        mask = np.zeros((96, 192), np.uint8)
        for _ in range(10):  # random blocks of categories 1..7, asymmetric so flips matter
            y, x = rng.integers(0, 80), rng.integers(0, 170)
            mask[y:y + rng.integers(12, 40), x:x + rng.integers(12, 60)] = rng.integers(1, 8)
        cv2.imwrite(str(root / "images" / f"{i}.png"), labels.colors_bgr()[mask])
        cv2.imwrite(str(root / "masks" / f"{i}.png"), mask)
    (root / "mapping.json").write_text(json.dumps({str(c.id): c.name for c in labels.CATEGORIES}))
    layout = datasets.scan(root)
    return layout.splits["train"] + layout.splits["val"]


def _decode_colours(x):
    rgb = x * 127.5 + 127.5
    dist = ((rgb[..., None, :] - labels.colors_rgb()[None, None, None].astype(np.float32)) ** 2).sum(-1)
    return dist.argmin(-1)


def test_augmentation_keeps_image_and_mask_aligned(colour_coded):
    ds = make_dataset(colour_coded, (128, 64), batch=4, training=True, seed=7, augment=GEOMETRY_ONLY)
    for x, y in ds.take(6):
        x, y = x.numpy(), y.numpy()
        scored = y != labels.IGNORE
        agree = (_decode_colours(x) == y)[scored].mean()
        assert agree > 0.97, agree  # only resampled block edges may blend


def test_crops_are_aligned_windows_at_the_model_scale(colour_coded):
    # scale pinned to 1: a crop is a plain window of the frame at model size
    whole = make_dataset(colour_coded, (128, 64), batch=1, training=True, seed=3, augment=CROP_ONLY)
    crops = make_dataset(colour_coded, (128, 64), batch=1, training=True, seed=3, augment=CROP_ONLY, crop=(64, 32))
    for (xw, yw), (xc, yc) in zip(whole.take(4), crops.take(4)):
        xw, yw, xc, yc = xw.numpy()[0], yw.numpy()[0], xc.numpy()[0], yc.numpy()[0]
        assert xc.shape == (32, 64, 3) and yc.shape == (32, 64)
        # image and mask are cut from the same window of the same model-size frame
        windows = [(t, l) for t in range(33) for l in range(65)
                   if np.array_equal(yw[t:t + 32, l:l + 64], yc) and np.allclose(xw[t:t + 32, l:l + 64], xc, atol=1e-4)]
        assert windows, "the crop is not a window of the model-size frame"


def test_augmented_masks_hold_only_known_values(colour_coded):
    ds = make_dataset(colour_coded, (128, 64), batch=4, training=True, seed=1)
    values = set()
    for _, y in ds.take(8):
        values |= set(np.unique(y.numpy()).tolist())
    assert values <= set(range(8)) | {labels.IGNORE}


def test_deterministic_under_seed(colour_coded):
    def first_batches(seed):
        ds = make_dataset(colour_coded, (128, 64), batch=2, training=True, seed=seed)
        return [x.numpy() for x, _ in ds.take(3)]
    a, b, c = first_batches(3), first_batches(3), first_batches(4)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))


def test_eval_stream_uses_runtime_preprocessing(colour_coded):
    from edge_seg.preprocess import normalize
    ds = make_dataset(colour_coded[:2], (128, 64), batch=2)
    x, y = next(iter(ds))
    image, mask = datasets.read_pair(colour_coded[0], (128, 64))
    assert np.allclose(x.numpy()[0], normalize(image)) and np.array_equal(y.numpy()[0], mask)
