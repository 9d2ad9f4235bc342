"""Datasets, splits and samplers.

* :mod:`.registry` — the dataset registry (name → loader, default location, splits) and
  the source specs (``fashion-mnist:test``, an image folder) that the index and the app use;
* :mod:`.dataset` — :class:`ImageDataset`, what every loader returns;
* :mod:`.fashion_mnist`, :mod:`.folder`, :mod:`.paper` — the loaders (Fashion-MNIST from
  its IDX files via :mod:`.idx`; any ``root/class_name/*.jpg`` folder; CUB-200, CARS-196
  and In-Shop in their standard layouts);
* :mod:`.splits` — train/test protocols, members' parts, stratified slices;
* :mod:`.samplers` — P classes × M images batches.

Every loader yields float tensors ``[C, H, W]`` with pixels in ``[0, 1]``; any
normalisation lives inside the networks, so attacks can work in pixel space.
"""

from .dataset import DatasetNotFoundError, ImageDataset, torchvision_cache_dir
from .fashion_mnist import (
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    find_fashion_mnist,
    load_fashion_mnist,
    load_fashion_mnist_arrays,
)
from .folder import IMAGE_EXTENSIONS, load_image_folder, scan_image_folder
from .idx import IDXFormatError, read_idx
from .paper import CUB_URL, load_cars196, load_cub200, load_inshop
from .registry import (
    PARTS,
    DataRequest,
    DatasetEntry,
    SourceSpec,
    checkpoint_data,
    dataset_entry,
    dataset_names,
    load_dataset,
    load_part,
    parse_source_spec,
    register,
    source_spec_help,
)
from .samplers import ClassBalancedBatchSampler, PairBatchSampler
from .splits import (
    SPLIT_KINDS,
    balanced_rows,
    class_disjoint_parts,
    class_disjoint_split,
    stratified_slice,
    stratified_split,
)

__all__ = [
    "CUB_URL",
    "DEBIAN_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "IMAGE_EXTENSIONS",
    "PARTS",
    "SPLIT_KINDS",
    "ClassBalancedBatchSampler",
    "PairBatchSampler",
    "DataRequest",
    "DatasetEntry",
    "DatasetNotFoundError",
    "IDXFormatError",
    "ImageDataset",
    "SourceSpec",
    "balanced_rows",
    "checkpoint_data",
    "class_disjoint_parts",
    "class_disjoint_split",
    "dataset_entry",
    "dataset_names",
    "find_fashion_mnist",
    "load_cars196",
    "load_cub200",
    "load_dataset",
    "load_fashion_mnist",
    "load_fashion_mnist_arrays",
    "load_image_folder",
    "load_inshop",
    "load_part",
    "parse_source_spec",
    "read_idx",
    "register",
    "scan_image_folder",
    "source_spec_help",
    "stratified_slice",
    "stratified_split",
    "torchvision_cache_dir",
]
