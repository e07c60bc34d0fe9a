"""`KerasMetaWarning`: the base class of every warning keras_meta issues.

One class lets users (and this repository's test configuration, which turns them into
errors) filter the library's own warnings apart from TensorFlow's and Keras's:
`warnings.filterwarnings("ignore", category=km.KerasMetaWarning)`.
"""


class KerasMetaWarning(UserWarning):
    """Base class of keras_meta's warnings (a `UserWarning`)."""
