"""tf.data pipelines: the built-in `shapes`, TFDS datasets, image folders, Frey faces.

    from keras_vae import data
    ds, info = data.load("celeb_a", "train", batch_size=64)   # float32 NHWC in [0, 1]
    ds, info = data.load("folder:/data/img_align_celeba", "train", batch_size=64)

`data.shapes` also exposes the dSprites renderer and factor sizes used by the
disentanglement metrics.
"""

from keras_vae.data import shapes
from keras_vae.data.loading import DATASETS, SPLITS, condition_labels, load, load_for_config
from keras_vae.data.pipeline import DatasetInfo, DatasetNotFoundError

__all__ = [
    "DATASETS",
    "SPLITS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "condition_labels",
    "load",
    "load_for_config",
    "shapes",
]
