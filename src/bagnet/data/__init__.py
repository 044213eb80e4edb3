"""Images and datasets, in one package with a module per job:

- :mod:`~bagnet.data.images`: tolerant decoding (size from the header first), sample photos;
- :mod:`~bagnet.data.folders`: ImageFolder data with :class:`Skipped` markers, batches, the skip log;
- :mod:`~bagnet.data.imagenet`: the ImageNet validation split in its three common layouts;
- :mod:`~bagnet.data.catalog`: names → datasets (``imagenette``, ``fashion-mnist``, ``imagenet:ROOT``, folders),
  ``$BAGNET_DATA`` and the user's cache, fetching Imagenette;
- :mod:`~bagnet.data.sampling`: the one seeded subset rule and batches of it (sharded under ``torchrun``).

Everything below is importable from ``bagnet.data`` as before the split.
"""

from .catalog import (FASHION_MNIST_CLASSES, FASHION_MNIST_DEBIAN, IMAGENETTE_DIR, IMAGENETTE_MD5, IMAGENETTE_TABLE,
                      IMAGENETTE_URL, SPLIT_NAMES, FashionMNISTDataset, ImagenetteClass, TrainingData,
                      default_data_root, evaluation_dataset, fashion_mnist, fetch_imagenette, imagenette,
                      imagenette_classes, training_data, user_data_dir)
from .folders import Batch, ImageFolderDataset, Skipped, SkipLog, collate, pin_for, read_sample
from .images import (IMAGE_EXTENSIONS, MAX_DATASET_ASPECT, MAX_IMAGE_PIXELS, SAMPLE_IMAGES, ImageReadError,
                     ImageTooLarge, PathLike, image_size, load_image, sample_image, to_rgb)
from .sampling import (batches, check_dataset, first_per_class, load_batch, sample_path, seeded_subset,
                       subset_indices, tracked_batches)

__all__ = [
    "FASHION_MNIST_CLASSES", "FASHION_MNIST_DEBIAN", "IMAGENETTE_DIR", "IMAGENETTE_MD5", "IMAGENETTE_TABLE",
    "IMAGENETTE_URL", "SPLIT_NAMES", "FashionMNISTDataset", "ImagenetteClass", "TrainingData", "default_data_root",
    "evaluation_dataset", "fashion_mnist", "fetch_imagenette", "imagenette", "imagenette_classes", "training_data",
    "user_data_dir", "Batch", "ImageFolderDataset", "Skipped", "SkipLog", "collate", "pin_for", "read_sample",
    "IMAGE_EXTENSIONS", "MAX_DATASET_ASPECT", "MAX_IMAGE_PIXELS", "SAMPLE_IMAGES", "ImageReadError", "ImageTooLarge",
    "PathLike", "image_size", "load_image", "sample_image", "to_rgb", "batches", "check_dataset", "first_per_class",
    "load_batch", "sample_path", "seeded_subset", "subset_indices", "tracked_batches",
]
