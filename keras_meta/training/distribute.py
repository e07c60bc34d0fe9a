"""Writing learner state from a replica context of a `tf.distribute` strategy."""

import tensorflow as tf


def replicas_in_sync():
    return tf.distribute.get_replica_context().num_replicas_in_sync


def assign_everywhere(variable, value, average=True):
    """`variable.assign(value)`, also from a replica context of a distribution strategy.

    Under several replicas the value is first averaged across them (unless it is known
    to be identical everywhere), then written to every copy of the variable.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        variable.assign(value)
        return
    if average and value.dtype.is_floating:
        value = context.all_reduce(tf.distribute.ReduceOp.MEAN, value)

    def update(strategy, target, new_value):
        strategy.extended.update(target, lambda v, x: v.assign(x), args=(new_value,),
                                 group=False)

    context.merge_call(update, args=(variable.value, value))
