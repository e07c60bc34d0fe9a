"""A simulated preemption shared by the resume tests."""

import keras


class Interrupt(keras.callbacks.Callback):
    """Raises after global batch `at`, as a crash or preemption would."""

    def __init__(self, at):
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            raise KeyboardInterrupt("simulated preemption")
