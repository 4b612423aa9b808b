"""Our own batch normalisation layer, a drop-in for ``keras.layers.BatchNormalization``.

It exists so the project owns the one layer every ResNet depends on: the maths is written out here (batch
moments in training, moving averages at inference), it aggregates moments across replicas when asked, and its
inference path is the ``x * scale + offset`` form that the TFLite converter folds into the preceding
convolution.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

# Moments of half-precision activations lose too much to rounding, so statistics are always kept in float32.
_LOW_PRECISION = ("float16", "bfloat16")


@keras.saving.register_keras_serializable(package="yolol_tf")
class BatchNormalization(keras.layers.Layer):
    """Batch normalisation (Ioffe and Szegedy, 2015), numerically equal to Keras' layer.

    In training (``training=True`` and the layer trainable) it normalises with the batch's mean and
    variance and moves the moving averages towards them:
    ``moving = moving * momentum + batch * (1 - momentum)``. At inference, or when the layer is frozen
    (``trainable=False``, as for a frozen backbone), it uses the moving averages. Either way the output is
    ``x * scale + offset`` with per-channel ``scale = gamma * rsqrt(variance + epsilon)`` and
    ``offset = beta - mean * scale``, so a converter sees one multiply and one add to fold into the
    convolution before it.

    Under mixed precision the variables stay float32, the moments and the normalisation are computed in
    float32 (half precision would overflow or cancel), and the output has the layer's compute dtype.

    Training steps on channels-last images use TensorFlow's fused batch-norm kernel (same result, one op
    forward and one backward instead of a dozen element-wise passes: about 2.5x faster on CPU); other
    shapes, and synchronized moments across replicas, use ``tf.nn.moments`` and the formula above.

    Args:
        axis: the features axis (``-1`` for channels-last images, ``1`` for channels-first).
        momentum: momentum of the moving averages.
        epsilon: added to the variance to avoid dividing by zero.
        center: whether to add a learned offset ``beta``.
        scale: whether to multiply by a learned ``gamma``.
        beta_initializer: initializer of ``beta``.
        gamma_initializer: initializer of ``gamma``.
        moving_mean_initializer: initializer of the moving mean.
        moving_variance_initializer: initializer of the moving variance.
        beta_regularizer: optional regularizer of ``beta``.
        gamma_regularizer: optional regularizer of ``gamma``.
        beta_constraint: optional constraint of ``beta``.
        gamma_constraint: optional constraint of ``gamma``.
        synchronized: under a ``tf.distribute`` strategy with several replicas, compute the moments over the
            global batch (all-reduced across replicas) rather than each replica's own share of it.
        **kwargs: base layer arguments (``name``, ``dtype``, ``trainable``).
    """

    def __init__(
        self,
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        moving_mean_initializer: Any = "zeros",
        moving_variance_initializer: Any = "ones",
        beta_regularizer: Any = None,
        gamma_regularizer: Any = None,
        beta_constraint: Any = None,
        gamma_constraint: Any = None,
        synchronized: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.moving_mean_initializer = keras.initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = keras.initializers.get(moving_variance_initializer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.beta_constraint = keras.constraints.get(beta_constraint)
        self.gamma_constraint = keras.constraints.get(gamma_constraint)
        self.synchronized = bool(synchronized)
        self.supports_masking = True
        self.gamma = None
        self.beta = None

    def build(self, input_shape: tuple) -> None:
        ndim = len(input_shape)
        if not -ndim <= self.axis < ndim:
            raise ValueError(f"axis {self.axis} is out of range for input shape {tuple(input_shape)}")
        self._channel_axis = self.axis % ndim
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(f"The features axis must be known. Received: input_shape={tuple(input_shape)}")
        self._reduction_axes = [i for i in range(ndim) if i != self._channel_axis]
        # Per-channel vectors broadcast against the input without a reshape when channels come last.
        self._broadcast_shape = (
            None
            if self._channel_axis == ndim - 1
            else [channels if i == self._channel_axis else 1 for i in range(ndim)]
        )
        shape = (channels,)
        if self.scale:
            self.gamma = self._add_vector(
                "gamma", shape, self.gamma_initializer, self.gamma_regularizer, self.gamma_constraint
            )
        if self.center:
            self.beta = self._add_vector(
                "beta", shape, self.beta_initializer, self.beta_regularizer, self.beta_constraint
            )
        # "mean" aggregation lets replicas assign the moving statistics inside a replica context.
        self.moving_mean = self._add_vector(
            "moving_mean", shape, self.moving_mean_initializer, trainable=False, aggregation="mean"
        )
        self.moving_variance = self._add_vector(
            "moving_variance", shape, self.moving_variance_initializer, trainable=False, aggregation="mean"
        )
        self.input_spec = keras.layers.InputSpec(ndim=ndim, axes={self._channel_axis: channels})

    def _add_vector(
        self,
        name: str,
        shape: tuple,
        initializer: Any,
        regularizer: Any = None,
        constraint: Any = None,
        *,
        trainable: bool = True,
        aggregation: str = "none",
    ) -> Any:
        """A per-channel float32 variable, never cast to the compute dtype under mixed precision."""
        return self.add_weight(
            shape=shape, name=name, initializer=initializer, regularizer=regularizer, constraint=constraint,
            trainable=trainable, autocast=False, aggregation=aggregation,
        )  # fmt: skip

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if training and self.trainable and self._can_fuse(inputs):
            outputs, mean, variance = self._fused_training(inputs)
            self._update_moving_statistics(mean, variance)
            return ops.cast(outputs, self.compute_dtype)
        x = inputs
        if keras.backend.standardize_dtype(x.dtype) in _LOW_PRECISION:
            x = ops.cast(x, "float32")
        dtype = x.dtype
        if training and self.trainable:
            mean, variance = self._moments(x)
            self._update_moving_statistics(mean, variance)
        else:
            mean = ops.cast(self.moving_mean, dtype)
            variance = ops.cast(self.moving_variance, dtype)
        # The same arithmetic as tf.nn.batch_normalization, in the form converters fold into a conv.
        multiplier = ops.rsqrt(variance + ops.cast(self.epsilon, dtype))
        if self.scale:
            multiplier = multiplier * ops.cast(self.gamma, dtype)
        offset = -mean * multiplier
        if self.center:
            offset = ops.cast(self.beta, dtype) + offset
        if self._broadcast_shape is not None:
            multiplier = ops.reshape(multiplier, self._broadcast_shape)
            offset = ops.reshape(offset, self._broadcast_shape)
        outputs = x * multiplier + offset
        return ops.cast(outputs, self.compute_dtype)

    def _update_moving_statistics(self, mean: Any, variance: Any) -> None:
        # Python-float momentum, as in Keras' layer, so the moving statistics match it bit for bit.
        mean, variance = ops.cast(mean, "float32"), ops.cast(variance, "float32")
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))

    def _can_fuse(self, inputs: Any) -> bool:
        """Whether the training step can use TensorFlow's fused kernel (one op forward, one backward).

        It handles channels-last 4-D float inputs (half precision included, computing in float32) and an
        epsilon of at least 1.001e-5 (its floor); moments across replicas need the all-reduce path instead.
        """
        if len(inputs.shape) != 4 or self._channel_axis != 3 or self.epsilon < 1.001e-5:
            return False
        if keras.backend.standardize_dtype(inputs.dtype) not in ("float32", *_LOW_PRECISION):
            return False
        if self.synchronized:
            context = tf.distribute.get_replica_context()
            return context is None or context.num_replicas_in_sync == 1
        return True

    def _fused_training(self, x: Any) -> tuple[Any, Any, Any]:
        """Normalises a batch with the fused kernel; returns the output, batch mean and biased variance."""
        channels = x.shape[-1]
        gamma = self.gamma if self.scale else tf.ones((channels,), "float32")
        beta = self.beta if self.center else tf.zeros((channels,), "float32")
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta), epsilon=self.epsilon, is_training=True
        )
        # The kernel reports the Bessel-corrected variance; Keras' moving statistics use the biased one.
        count = tf.cast(tf.size(x, out_type=tf.int64) // channels, "float32")
        variance = tf.where(count > 1.0, variance * ((count - 1.0) / tf.maximum(count, 1.0)), 0.0)
        return outputs, mean, variance

    def _moments(self, x: Any) -> tuple[Any, Any]:
        """Returns the batch mean and (biased) variance per channel, over all replicas if synchronized."""
        context = tf.distribute.get_replica_context() if self.synchronized else None
        if context is None or context.num_replicas_in_sync == 1:
            return tf.nn.moments(x, self._reduction_axes)
        # Two passes (global mean, then squared deviations from it) so the variance does not suffer the
        # cancellation of E[x^2] - E[x]^2; each pass is a single all-reduce.
        local_sum = tf.reduce_sum(x, axis=self._reduction_axes)
        local_count = tf.cast(tf.size(x) // tf.shape(x)[self._channel_axis], x.dtype)
        totals = context.all_reduce(
            tf.distribute.ReduceOp.SUM, tf.concat([local_sum, local_count[None]], axis=0)
        )
        count = totals[-1]
        mean = tf.math.divide_no_nan(totals[:-1], count)
        centred = x - (mean if self._broadcast_shape is None else tf.reshape(mean, self._broadcast_shape))
        local_squares = tf.reduce_sum(tf.square(centred), axis=self._reduction_axes)
        variance = tf.math.divide_no_nan(context.all_reduce(tf.distribute.ReduceOp.SUM, local_squares), count)
        return mean, variance

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        serialize = keras.saving.serialize_keras_object
        return {
            **super().get_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": serialize(self.beta_initializer),
            "gamma_initializer": serialize(self.gamma_initializer),
            "moving_mean_initializer": serialize(self.moving_mean_initializer),
            "moving_variance_initializer": serialize(self.moving_variance_initializer),
            "beta_regularizer": serialize(self.beta_regularizer),
            "gamma_regularizer": serialize(self.gamma_regularizer),
            "beta_constraint": serialize(self.beta_constraint),
            "gamma_constraint": serialize(self.gamma_constraint),
            "synchronized": self.synchronized,
        }
