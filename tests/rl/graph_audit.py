"""What a traced TensorFlow function would run: its op types, host callbacks, GPU kernels.

Shared by the tests of in-graph environments and of the compiled meta-iteration: a graph
is GPU-ready when it calls no Python (`py_function`/`numpy_function`) and every op type
in it, function bodies included, has a kernel registered for GPU in this TensorFlow build.
This is checked from TF's kernel registry, so it runs on a machine without a GPU.
"""

from tensorflow.python.framework import kernels

# The op types tf.py_function / tf.numpy_function / tf.compat.v1.py_func trace to.
HOST_CALLBACKS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})

# A kernel registered for DEVICE_DEFAULT serves every device type, GPU included: TF
# registers its functional control flow (While, StatelessWhile, PartitionedCall, ...) and
# Placeholder that way rather than once per device.
GPU_DEVICE_TYPES = frozenset({"GPU", "DEFAULT"})


def op_types(concrete_function):
    """The op types of a concrete function's graph and of every function in its library."""
    graph_def = concrete_function.graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types |= {node.op for node in function.node_def}
    return types


def without_gpu_kernel(types):
    """The op types among `types` with no kernel registered for a GPU (sorted)."""
    return sorted(t for t in types
                  if not any(k.device_type in GPU_DEVICE_TYPES for k in kernels.get_registered_kernels_for_op(t).kernel))
