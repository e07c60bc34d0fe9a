"""Image datasets for few-shot classification, as `ImageDataset` values.

- `from_arrays`: any labeled image array or `.npz` file.
- `omniglot`: a local copy of Omniglot in its standard directory layout.
- `glyphs`: the embedded procedural Omniglot-like dataset, built offline from the
  Hershey stroke fonts and cached on disk.
- `CacheWarning`: a cache could not be written; the data was returned uncached.
"""

from keras_meta.datasets._base import ImageDataset, from_arrays
from keras_meta.datasets._glyphs import glyphs
from keras_meta.datasets._io import CacheWarning
from keras_meta.datasets._omniglot import omniglot

__all__ = ["CacheWarning", "ImageDataset", "from_arrays", "glyphs", "omniglot"]
