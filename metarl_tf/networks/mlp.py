"""Multi-layer perceptrons."""
from __future__ import annotations

from typing import Sequence

import keras

_INITS = ("maml", "glorot_uniform", "he_normal")


def check_mlp_args(input_dim, output_dim, hidden, activation, init) -> None:
    """Validates ``mlp`` arguments without building anything (no TensorFlow op runs)."""
    if int(input_dim) < 1 or int(output_dim) < 1:
        raise ValueError(f"`input_dim` and `output_dim` must be >= 1, got {input_dim}, {output_dim}")
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"`hidden` widths must all be integers >= 1, got {tuple(hidden)}")
    if init not in _INITS:
        raise ValueError(f"`init` must be one of {_INITS}, got {init!r}")
    try:
        keras.activations.get(activation)
    except ValueError:
        raise ValueError(f"`activation` must be a Keras activation name, got {activation!r}") from None


def mlp(input_dim: int, output_dim: int, hidden: Sequence[int] = (40, 40), activation: str = "relu",
        init: str = "maml", seed: int = 0, name: str = "mlp") -> keras.Sequential:
    """A fully connected network ``input_dim -> hidden... -> output_dim`` (linear output).

    Args:
      input_dim, output_dim: feature sizes.
      hidden: hidden layer widths; the MAML sinusoid network is ``(40, 40)``.
      activation: hidden activation (any Keras activation name).
      init: ``"maml"`` = truncated normal weights with std 0.01 and zero biases, as in cbfinn/maml
        ``construct_fc_weights``; or a Keras initializer name for the kernels (zero biases).
      seed: initializer seed.
    """
    check_mlp_args(input_dim, output_dim, hidden, activation, init)
    layers = [keras.Input((int(input_dim),))]
    widths = list(hidden) + [int(output_dim)]
    for i, width in enumerate(widths):
        if init == "maml":
            kernel_init = keras.initializers.TruncatedNormal(stddev=0.01, seed=seed + i)
        else:
            kernel_init = keras.initializers.get({"class_name": init, "config": {"seed": seed + i}})
        layers.append(keras.layers.Dense(
            int(width), activation=activation if i < len(widths) - 1 else None,
            kernel_initializer=kernel_init, bias_initializer="zeros", name=f"dense_{i}"))
    return keras.Sequential(layers, name=name)
