"""The JAX side of the HLO comparison in ``docs/notes/benchmarks/maml_sinusoid_speed.txt``: counts the dot
FLOPs and fusions of a jitted second-order MAML meta-step on the sinusoid workload (MLP 1-40-40-1
ReLU, 25 tasks x (10 support + 10 query), one inner SGD step at 0.01, optax Adam 1e-3, tasks drawn
inside the jit), written here independently of the peer script, for the same workload.

    PEER_PYTHON benchmarks/jax_hlo_reference.py      # an interpreter with jax and optax

Prints ``jax_dot_flops``, ``jax_dot_ops``, ``jax_cost_analysis_flops``, ``jax_fusions`` and
``jax_while_loops`` of the optimised HLO (compare ``flops_per_meta_step`` and
``dot_ops_per_meta_step`` of ``benchmarks/maml_sinusoid.py``).
"""
import math
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from _hlo import dot_flops  # noqa: E402

TASKS, K, LR = 25, 10, 0.01


def layers(key):
    out = []
    for fan_in, fan_out in ((1, 40), (40, 40), (40, 1)):
        key, sub = jax.random.split(key)
        out.append((jax.random.normal(sub, (fan_in, fan_out)) * 0.1, jnp.zeros(fan_out)))
    return out


def predict(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def mse(params, x, y):
    return jnp.mean((predict(params, x) - y) ** 2)


def adapted_query_loss(params, sx, sy, qx, qy):
    grads = jax.grad(mse)(params, sx, sy)
    return mse(jax.tree.map(lambda p, g: p - LR * g, params, grads), qx, qy)


optimizer = optax.adam(1e-3)


def meta_step(params, opt_state, key):
    key, ka, kp, kx = jax.random.split(key, 4)
    amp = jax.random.uniform(ka, (TASKS, 1, 1), minval=0.1, maxval=5.0)
    phase = jax.random.uniform(kp, (TASKS, 1, 1), maxval=math.pi)
    x = jax.random.uniform(kx, (TASKS, 2 * K, 1), minval=-5.0, maxval=5.0)
    y = amp * jnp.sin(x - phase)
    batch = (x[:, :K], y[:, :K], x[:, K:], y[:, K:])
    loss, grads = jax.value_and_grad(
        lambda p: jax.vmap(adapted_query_loss, (None, 0, 0, 0, 0))(p, *batch).mean())(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, key, loss


def main():
    params = layers(jax.random.PRNGKey(0))
    compiled = jax.jit(meta_step).lower(params, optimizer.init(params),
                                        jax.random.PRNGKey(1)).compile()
    hlo = compiled.as_text()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops, dots = dot_flops(hlo)
    print(f"jax_dot_flops={flops}")
    print(f"jax_dot_ops={dots}")
    print(f"jax_cost_analysis_flops={cost.get('flops')}")
    print(f"jax_fusions={hlo.count(' fusion(')}")
    print(f"jax_while_loops={hlo.count(' while(')}")


if __name__ == "__main__":
    main()
