"""Generated tasks: a class-conditional GAN whose latent class codes are new classes.

`ConditionalGAN` learns, on labelled images (e.g. the background classes of
`km.datasets.glyphs()`), a generator `G(noise, code)` with one learned code per class
(adversarially, with a projection discriminator). `GeneratedClasses` is a
`TaskDistribution` of few-shot episodes whose classes are random codes drawn around the
learned ones, and whose examples are `G(noise, code)` for fresh noise; `MixedTasks`
mixes it into a real family's meta-batches.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_meta._validation import check_positive_int, check_seed
from keras_meta.tasks.base import TaskBatch, TaskDistribution


class ConditionalGAN:
    """A small class-conditional DCGAN for 28x28 (or any multiple-of-4) images in [0, 1].

    Generator: `[noise, code] -> Dense -> 2 transposed convolutions -> sigmoid image`.
    Discriminator: 2 strided convolutions to features `h`, logit `w.h + <V h, code>`
    (a projection discriminator, Miyato & Koyama 2018). Non-saturating GAN losses, Adam.

    Args:
        num_classes: Number of real classes (labels in `[0, num_classes)`).
        image_shape: `(height, width, channels)`, height and width multiples of 4.
        noise_dim, code_dim: Sizes of the noise and of a class code.
        filters: Width of the convolutions.
        seed: Seed of the initial weights.

    Raises:
        ValueError, TypeError: On a bad argument.
    """

    def __init__(self, num_classes, image_shape=(28, 28, 1), noise_dim=32, code_dim=16, filters=32, seed=0):
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.noise_dim = check_positive_int(noise_dim, "noise_dim")
        self.code_dim = check_positive_int(code_dim, "code_dim")
        filters = check_positive_int(filters, "filters")
        shape = tuple(int(d) for d in image_shape)
        if len(shape) != 3 or shape[0] % 4 or shape[1] % 4 or min(shape) < 1:
            raise ValueError("Expected `image_shape` to be (height, width, channels) with height and width "
                             f"multiples of 4. Received: image_shape={image_shape!r}")
        self.image_shape = shape
        seed = check_seed(seed) % 2**31
        counter = iter(range(seed, seed + 100))
        # Seeded initializers (not keras.utils.set_random_seed, a global side effect).
        init = lambda: dict(kernel_initializer=keras.initializers.GlorotUniform(seed=next(counter)))
        h, w, c = shape
        noise, code = keras.Input((noise_dim,)), keras.Input((code_dim,))
        x = keras.layers.Dense((h // 4) * (w // 4) * 2 * filters, activation="relu", **init())(
            keras.layers.Concatenate()([noise, code]))
        x = keras.layers.Reshape((h // 4, w // 4, 2 * filters))(x)
        x = keras.layers.Conv2DTranspose(filters, 4, 2, padding="same", activation="relu", **init())(x)
        x = keras.layers.Conv2DTranspose(c, 4, 2, padding="same", activation="sigmoid", **init())(x)
        self.generator = keras.Model([noise, code], x, name="generator")
        image, d_code = keras.Input(shape), keras.Input((code_dim,))
        f = keras.layers.Conv2D(filters, 4, 2, padding="same", activation="leaky_relu", **init())(image)
        f = keras.layers.Conv2D(2 * filters, 4, 2, padding="same", activation="leaky_relu", **init())(f)
        f = keras.layers.Flatten()(f)
        projection = keras.layers.Dot(axes=1)([keras.layers.Dense(code_dim, **init())(f), d_code])
        logit = keras.layers.Add()([keras.layers.Dense(1, **init())(f), projection])
        self.discriminator = keras.Model([image, d_code], logit, name="discriminator")
        self.codes = keras.Variable(keras.random.normal((num_classes, code_dim), seed=seed), name="class_codes")
        self._g_opt = keras.optimizers.Adam(2e-4, beta_1=0.5)
        self._d_opt = keras.optimizers.Adam(2e-4, beta_1=0.5)
        self._step = None

    def _train_step(self, images, labels, noise):
        g_vars = self.generator.trainable_variables + [self.codes]
        d_vars = self.discriminator.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            # Read inside the tape: the class codes learn with the generator.
            codes = tf.gather(self.codes, labels)
            fake = self.generator([noise, codes], training=True)
            real_logit = self.discriminator([images, codes], training=True)
            fake_logit = self.discriminator([fake, codes], training=True)
            d_loss = tf.reduce_mean(tf.nn.softplus(-real_logit) + tf.nn.softplus(fake_logit))
            g_loss = tf.reduce_mean(tf.nn.softplus(-fake_logit))
        self._d_opt.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars))
        self._g_opt.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars))
        return d_loss, g_loss

    def fit(self, images, labels, steps=1000, batch_size=64, seed=0):
        """Trains adversarially on `images` (uint8 `[n, h, w]` or `[n, h, w, c]`) with class ids `labels`.

        Returns:
            `{"d_loss": [...], "g_loss": [...]}` per step.
        """
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        labels = np.asarray(labels)
        if images.shape[1:] != self.image_shape or labels.shape != images.shape[:1]:
            raise ValueError(f"Expected images of shape [n, {self.image_shape}] and labels [n]. Received: "
                             f"images.shape={images.shape}, labels.shape={labels.shape}")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"Expected labels in [0, {self.num_classes}). Received: labels in "
                             f"[{labels.min()}, {labels.max()}]")
        steps, batch_size = check_positive_int(steps, "steps"), check_positive_int(batch_size, "batch_size")
        rng = np.random.default_rng(check_seed(seed))
        data = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
        if self._step is None:
            self._step = tf.function(self._train_step)
        history = {"d_loss": [], "g_loss": []}
        for _ in range(steps):
            idx = rng.integers(0, len(data), batch_size)
            noise = rng.normal(size=(batch_size, self.noise_dim)).astype(np.float32)
            d_loss, g_loss = self._step(tf.constant(data[idx]), tf.constant(labels[idx].astype(np.int32)),
                                        tf.constant(noise))
            history["d_loss"].append(float(d_loss))
            history["g_loss"].append(float(g_loss))
        return history

    def generate(self, noise, codes):
        """Images `[n, h, w, c]` in [0, 1] for noise `[n, noise_dim]` and codes `[n, code_dim]`."""
        return self.generator([tf.constant(noise, tf.float32), tf.constant(codes, tf.float32)],
                              training=False).numpy()


class GeneratedClasses(TaskDistribution):
    """Few-shot episodes of generated classes: each class is a new latent code.

    A class code is a random convex mix of two learned class codes plus Gaussian noise of
    `code_noise` times the learned codes' standard deviation, so new classes lie near, not
    on, the real ones; its examples are `G(noise, code)` for independent noise. Episodes
    have the layout of `FewShotClassification` (float32 images in [0, 1], int32 labels
    0..ways-1, shuffled support and query), so they mix with real glyph episodes.

    Args:
        gan: A trained `ConditionalGAN`.
        ways, shots, queries: Episode layout.
        code_noise: Noise added to a class code, relative to the codes' spread.

    Raises:
        ValueError, TypeError: On a bad argument.
    """

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    metrics = ("accuracy",)

    def __init__(self, gan, ways=5, shots=1, queries=15, code_noise=0.5):
        if not isinstance(gan, ConditionalGAN):
            raise TypeError(f"Expected `gan` to be a ConditionalGAN. Received: gan of type {type(gan).__name__}")
        self.gan = gan
        self.ways = check_positive_int(ways, "ways")
        self.shots = check_positive_int(shots, "shots")
        self.queries = check_positive_int(queries, "queries")
        if isinstance(code_noise, bool) or not isinstance(code_noise, (int, float)) or not code_noise >= 0:
            raise ValueError(f"Expected `code_noise` to be a non-negative number. Received: code_noise={code_noise!r}")
        self.code_noise = float(code_noise)

    def sample(self, meta_batch_size, seed):
        b = check_positive_int(meta_batch_size, "meta_batch_size")
        rng = np.random.default_rng(check_seed(seed))
        learned = self.gan.codes.numpy()
        pairs = rng.integers(0, len(learned), (b, self.ways, 2))
        mix = rng.uniform(size=(b, self.ways, 1))
        codes = mix * learned[pairs[..., 0]] + (1 - mix) * learned[pairs[..., 1]]
        codes += self.code_noise * learned.std(0) * rng.normal(size=codes.shape)
        n = self.shots + self.queries
        noise = rng.normal(size=(b * self.ways * n, self.gan.noise_dim))
        images = self.gan.generate(noise, np.repeat(codes.reshape(-1, codes.shape[-1]), n, axis=0))
        images = images.reshape((b, self.ways, n) + images.shape[1:])
        labels = np.broadcast_to(np.arange(self.ways, dtype=np.int32)[None, :, None], (b, self.ways, n))

        def part(start, stop):
            x = images[:, :, start:stop].reshape((b, -1) + images.shape[3:])
            y = labels[:, :, start:stop].reshape(b, -1)
            order = np.stack([rng.permutation(y.shape[1]) for _ in range(b)])
            return (np.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), 1),
                    np.take_along_axis(y, order, 1))

        return TaskBatch(*part(0, self.shots), *part(self.shots, n))


class MixedTasks(TaskDistribution):
    """Each task of a meta-batch drawn from `generated` with probability `fraction`, else from `real`.

    Args:
        real, generated: `TaskDistribution`s with the same episode layout.
        fraction: Probability of a generated task, in [0, 1].

    Raises:
        ValueError, TypeError: On a bad argument.
    """

    def __init__(self, real, generated, fraction=0.5):
        for name, tasks in (("real", real), ("generated", generated)):
            if not isinstance(tasks, TaskDistribution):
                raise TypeError(f"Expected `{name}` to be a TaskDistribution. Received: {name} of type "
                                f"{type(tasks).__name__}")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"Expected `fraction` to be a number in [0, 1]. Received: fraction={fraction!r}")
        self.real, self.generated, self.fraction = real, generated, float(fraction)
        self.loss, self.metrics = real.loss, real.metrics

    def sample(self, meta_batch_size, seed):
        seed = check_seed(seed)
        rng = np.random.default_rng(seed)
        pick = rng.uniform(size=check_positive_int(meta_batch_size, "meta_batch_size")) < self.fraction
        real = self.real.sample(meta_batch_size, seed)
        if not pick.any():
            return TaskBatch(*(np.asarray(v) for v in real))
        generated = self.generated.sample(meta_batch_size, (seed + 1) % 2**64)
        mask = lambda a: pick.reshape((-1,) + (1,) * (np.ndim(a) - 1))
        return TaskBatch(*(np.where(mask(r), np.asarray(g, np.asarray(r).dtype), r)
                           for r, g in zip(real, generated)))
