"""The reference architectures of the meta-learning literature, as plain Keras 3 models."""

import keras


def sinusoid_mlp(hidden=(40, 40)):
    """The MAML paper's regression network: 1 -> 40 -> 40 -> 1 with ReLU.

    Args:
        hidden: Widths of the hidden layers.

    Returns:
        A built `keras.Sequential`.
    """
    layers = [keras.Input((1,))]
    layers += [keras.layers.Dense(width, activation="relu") for width in hidden]
    return keras.Sequential(layers + [keras.layers.Dense(1)])


def conv4(ways, input_shape=(28, 28, 1), filters=64, downsample="max_pool"):
    """The 4-block convolutional network of MAML/Reptile/Meta-SGD for few-shot images.

    Each block is Conv2D(filters, 3x3) -> BatchNormalization -> ReLU followed by 2x2
    max-pooling (`downsample="max_pool"`), or with the convolution strided by 2 instead
    (`downsample="strided"`, MAML's Omniglot variant); then Flatten -> Dense(ways) logits.

    Args:
        ways: Number of classes per episode (output logits).
        input_shape: Image shape `(H, W, C)`.
        filters: Channels of every convolution (64 in the papers).
        downsample: "max_pool" or "strided".

    Returns:
        A built `keras.Sequential`.

    Raises:
        ValueError: For an unknown `downsample`.
    """
    if downsample not in ("max_pool", "strided"):
        raise ValueError(
            "Expected `downsample` to be 'max_pool' or 'strided'. "
            f"Received: downsample={downsample!r}"
        )
    layers = [keras.Input(input_shape)]
    for _ in range(4):
        strides = 2 if downsample == "strided" else 1
        layers += [keras.layers.Conv2D(filters, 3, strides=strides, padding="same"),
                   keras.layers.BatchNormalization(), keras.layers.ReLU()]
        if downsample == "max_pool":
            layers.append(keras.layers.MaxPooling2D(2, padding="same"))
    return keras.Sequential(layers + [keras.layers.Flatten(), keras.layers.Dense(ways)])
