"""Each loss weighting's rule, on hand-computed cases, and its defining property.

The weightings are driven directly, as the training engine drives them:
`weights(losses, state, training)` on the values of the state a method
declares for tasks ["a", "b"], with no model involved; the test applies the
new state each hook returns. Backend-neutral: the references are numpy.
"""

import keras
import numpy as np
import pytest
from conftest import ALL_WEIGHTINGS, make_method, toy_losses
from support.state_values import gradient, state_values

import keras_mtl
from keras_mtl.weightings import scalarization_grid

TASKS = ["a", "b"]


def _state(method, tasks=TASKS):
    """The values `method` starts from, a dict the helpers below update as the engine would assign."""
    return state_values(method, tasks)


def _tensor(values):
    return keras.ops.convert_to_tensor(np.asarray(values, "float32"))


def _numpy(value):
    return keras.ops.convert_to_numpy(value)


def _weights(method, state, losses, training=True):
    """The weights for `losses` (numpy); the method's new state goes into `state`."""
    weights, new_state = method.weights(_tensor(losses), state, training=training)
    if not training:
        assert new_state == {}, f"{type(method).__name__} changed its state outside training: {sorted(new_state)}"
    state.update(new_state)
    return _numpy(weights)


def _apply(state, new_state):
    """Applies the new state a hook returned, as the engine assigns it."""
    state.update(new_state)


def _differentiable_total(method, state, losses):
    """`Σ_k w_k L_k + R` as a tensor, differentiable in the method's trainable state."""
    weights, _ = method.weights(_tensor(losses), state, training=False)
    return keras.ops.sum(weights * _tensor(losses)) + method.regularization(state)


def _total(method, state, losses):
    return float(_numpy(_differentiable_total(method, state, losses)))


def _state_gradient(method, state, name, losses):
    """The gradient of the total with respect to the trainable state value `name` (numpy)."""
    return _numpy(gradient(lambda value: _differentiable_total(method, {**state, name: value}, losses), state[name]))


# --- EW and scalarization -------------------------------------------------


def test_equal_weighting_is_the_plain_sum():
    method = make_method("ew")
    state = _state(method)
    np.testing.assert_array_equal(_weights(method, state, [2.0, 3.0]), [1.0, 1.0])
    assert _total(method, state, [2.0, 3.0]) == pytest.approx(5.0)


def test_scalarization_uses_the_fixed_weights_in_output_order():
    # weights {"b": 0.7, "a": 0.3}: w = [0.3, 0.7]; total = 0.3·2 + 0.7·3 = 2.7.
    method = keras_mtl.Scalarization(toy_losses(), weights={"b": 0.7, "a": 0.3})
    state = _state(method)
    np.testing.assert_allclose(_weights(method, state, [2.0, 3.0]), [0.3, 0.7], rtol=1e-6)
    assert _total(method, state, [2.0, 3.0]) == pytest.approx(2.7, rel=1e-6)
    listed = keras_mtl.Scalarization(toy_losses(), weights=[0.25, 0.75])
    np.testing.assert_allclose(_weights(listed, _state(listed), [2.0, 3.0]), [0.25, 0.75])


def test_scalarization_grid_sizes_and_points():
    two, three = scalarization_grid(2), scalarization_grid(3)
    assert len(two) == 9 and len(three) == 36
    assert two[0] == (0.1, 0.9) and two[-1] == (0.9, 0.1)
    for point in two + three:
        assert sum(point) == pytest.approx(1.0) and min(point) >= 0.1 - 1e-12
    assert len(set(three)) == 36


# --- UW ---------------------------------------------------------------------


def test_uncertainty_weighting_regression_form():
    # s = −0.5 (default init): w = ½·exp(0.5) = 0.824361; R = ½·Σs = −0.5.
    # Losses [2, 3]: total = 0.824361·5 − 0.5 = 3.621803.
    method = make_method("uw")
    state = _state(method)
    np.testing.assert_allclose(_numpy(state["log_variances"]), [-0.5, -0.5])
    np.testing.assert_allclose(_weights(method, state, [2.0, 3.0]), [0.824361, 0.824361], rtol=1e-5)
    assert _total(method, state, [2.0, 3.0]) == pytest.approx(3.621803, rel=1e-5)
    layer = keras_mtl.MultiTaskState()
    method.build_state(layer, TASKS)
    assert layer["log_variances"].trainable


def test_uncertainty_weighting_classification_form():
    # Classification drops the ½ on the loss term: w = exp(0.5) = 1.648721; total = 1.648721·5 − 0.5 = 7.743606.
    method = make_method("uw", form="classification")
    state = _state(method)
    np.testing.assert_allclose(_weights(method, state, [2.0, 3.0]), [1.648721, 1.648721], rtol=1e-5)
    assert _total(method, state, [2.0, 3.0]) == pytest.approx(7.743606, rel=1e-5)


@pytest.mark.parametrize(
    "form, optimum", [("regression", lambda L: np.log(L)), ("classification", lambda L: np.log(2 * L))]
)
def test_uncertainty_weighting_optimum(form, optimum):
    # d/ds [c·exp(−s)·L + s/2] = 0 at exp(s) = 2cL: s = log L (c = ½) or log 2L (c = 1).
    losses = np.array([0.3, 4.0], "float32")
    method = make_method("uw", form=form)
    state = _state(method)
    for values, expect_zero in ((optimum(losses), True), (optimum(losses) + 0.5, False)):
        state["log_variances"] = _tensor(values)
        slope = _state_gradient(method, state, "log_variances", losses)
        if expect_zero:
            np.testing.assert_allclose(slope, 0.0, atol=1e-6)
        else:
            assert np.all(np.abs(slope) > 1e-2)


# --- UW-O, UW-SO ------------------------------------------------------------


def test_uw_o_makes_every_weighted_loss_one():
    # L = [2, 0.5]: w = 1/L = [0.5, 2]; w·L = [1, 1].
    method = make_method("uw_o")
    state = _state(method)
    np.testing.assert_allclose(_weights(method, state, [2.0, 0.5]), [0.5, 2.0], rtol=1e-6)
    for losses in ([2.0, 0.5], [1e-2, 250.0], [7.0, 7.0]):  # ε = 1e-8 is negligible here
        np.testing.assert_allclose(_weights(method, state, losses) * np.array(losses), [1.0, 1.0], rtol=1e-5)


def test_uw_so_hand_computed():
    # L = [1, 0.5] → 1/L = [1, 2]. T = 1: softmax([1, 2]) = [0.268941, 0.731059].
    # T = 2: softmax([0.5, 1]) = [0.377541, 0.622459].
    # (The wrong copy softmax(−L) would give [0.377541, 0.622459] at T = 1.)
    losses = [1.0, 0.5]
    one = make_method("uw_so")
    np.testing.assert_allclose(_weights(one, _state(one), losses), [0.268941, 0.731059], rtol=1e-5)
    two = make_method("uw_so", temperature=2.0)
    np.testing.assert_allclose(_weights(two, _state(two), losses), [0.377541, 0.622459], rtol=1e-5)


def test_uw_so_sums_to_one_and_temperature_limits():
    losses = [0.8, 0.2, 3.0]
    tasks = ["a", "b", "c"]
    for temperature in (0.01, 1.0, 7.0, 1e5):
        method = keras_mtl.SoftmaxUncertaintyWeighting("mse", temperature=temperature)
        weights = _weights(method, _state(method, tasks), losses)
        assert weights.sum() == pytest.approx(1.0, abs=1e-6)
        assert np.argmax(weights) == 1  # the smallest loss gets the largest weight
    hot = keras_mtl.SoftmaxUncertaintyWeighting("mse", temperature=1e5)
    np.testing.assert_allclose(_weights(hot, _state(hot, tasks), losses), [1 / 3] * 3, atol=1e-4)
    cold = keras_mtl.SoftmaxUncertaintyWeighting("mse", temperature=0.01)
    np.testing.assert_allclose(_weights(cold, _state(cold, tasks), losses), [0.0, 1.0, 0.0], atol=1e-6)


# --- GLS ----------------------------------------------------------------------


def test_gls_total_is_the_geometric_mean():
    # L = [1, 4]: GM = 2; w = GM/(K·L) = [1, 0.25]; Σ w·L = 2.
    method = make_method("gls")
    state = _state(method)
    np.testing.assert_allclose(_weights(method, state, [1.0, 4.0]), [1.0, 0.25], rtol=1e-6)
    assert _total(method, state, [1.0, 4.0]) == pytest.approx(2.0, rel=1e-6)


def test_gls_gradient_is_the_scaled_uw_o_direction():
    # Losses L_k(θ) of one parameter vector; the GLS gradient must equal that of
    # (Π L_k)^{1/K} and that of UW-O times GM/K.
    theta = np.array([0.7, -1.3, 0.4])
    targets = np.array([[1.0, 0.0, 2.0], [-1.0, 3.0, 0.5], [0.0, 0.0, 0.0]])

    def losses(theta):
        return keras.ops.sum(keras.ops.square(theta[None, :] - _tensor(targets)), axis=1)  # (3,) positive

    gls, uw_o = keras_mtl.GeometricLossStrategy("mse"), keras_mtl.AnalyticUncertaintyWeighting("mse")
    tasks = ["a", "b", "c"]
    gradients = {}
    for name, method in (("gls", gls), ("uw_o", uw_o)):
        state = _state(method, tasks)

        def total(theta, method=method, state=state):
            values = losses(theta)
            weights, _ = method.weights(keras.ops.stop_gradient(values), state, True)
            return keras.ops.sum(weights * values)

        gradients[name] = _numpy(gradient(total, _tensor(theta)))
    # Float64 reference: ∇ GM = Σ_k GM/(K·L_k)·∇L_k with ∇L_k = 2(θ − t_k).
    values = np.sum((theta - targets) ** 2, axis=1)
    geometric_mean = np.prod(values) ** (1.0 / 3.0)
    exact = (geometric_mean / (3.0 * values)) @ (2.0 * (theta - targets))
    np.testing.assert_allclose(gradients["gls"], exact, rtol=1e-5)
    np.testing.assert_allclose(gradients["gls"], gradients["uw_o"] * geometric_mean / 3.0, rtol=1e-5)


# --- IMTL-L -----------------------------------------------------------------


def test_imtl_l_hand_computed_and_optimum():
    # s = 0: w = [1, 1], R = 0, total = Σ L = 5. d/ds [exp(s)·L − s] = exp(s)·L − 1: zero at exp(s)·L = 1.
    method = make_method("imtl_l")
    state = _state(method)
    np.testing.assert_allclose(_weights(method, state, [2.0, 3.0]), [1.0, 1.0])
    assert _total(method, state, [2.0, 3.0]) == pytest.approx(5.0)
    losses = np.array([2.0, 0.25], "float32")
    state["loss_scales"] = _tensor(-np.log(losses))
    np.testing.assert_allclose(_state_gradient(method, state, "loss_scales", losses), 0.0, atol=1e-6)
    np.testing.assert_allclose(_weights(method, state, losses) * losses, [1.0, 1.0], rtol=1e-6)
    # Descending the total drives exp(s)·L to 1 from the initial s = 0.
    state["loss_scales"] = _tensor([0.0, 0.0])
    for _ in range(300):
        state["loss_scales"] = state["loss_scales"] - 0.2 * _state_gradient(method, state, "loss_scales", losses)
    np.testing.assert_allclose(np.exp(_numpy(state["loss_scales"])) * losses, [1.0, 1.0], rtol=1e-3)


# --- DWA ----------------------------------------------------------------------


def test_dwa_driven_by_hand():
    # Epoch 0: batches [2, 4], [4, 8] → means [3, 6]. Epoch 1: [1.5, 6] → means [1.5, 6].
    # Epoch 2: r = [1.5/3, 6/6] = [0.5, 1]; T = 2: softmax([0.25, 0.5]) · 2 = [0.875647, 1.124353].
    method = make_method("dwa")
    state = _state(method)
    for batch in ([2.0, 4.0], [4.0, 8.0]):
        np.testing.assert_array_equal(_weights(method, state, batch), [1.0, 1.0])
    _apply(state, method.end_epoch(state))
    np.testing.assert_allclose(_numpy(state["last_epoch_mean"]), [3.0, 6.0])
    np.testing.assert_array_equal(_weights(method, state, [1.5, 6.0]), [1.0, 1.0])
    _apply(state, method.end_epoch(state))
    expected = [0.875647, 1.124353]
    np.testing.assert_allclose(_weights(method, state, [9.0, 9.0]), expected, rtol=1e-5)
    # Evaluation-time calls neither use nor change the running sums.
    np.testing.assert_allclose(_weights(method, state, [100.0, 0.1], training=False), expected, rtol=1e-5)
    np.testing.assert_allclose(_numpy(state["epoch_loss_sum"]), [9.0, 9.0])
    assert _weights(method, state, [1.0, 1.0]).sum() == pytest.approx(2.0)


# --- RLW ----------------------------------------------------------------------


def _softmax(z):
    e = np.exp(np.asarray(z, np.float64) - np.max(z))
    return e / e.sum()


def test_rlw_draws_sum_to_one_repeat_and_change():
    def draws(seed, steps=5):
        method = keras_mtl.RandomLossWeighting("mse", seed=seed)
        state = _state(method, ["a", "b", "c"])
        return np.stack([_weights(method, state, [1.0, 2.0, 3.0]) for _ in range(steps)])

    first, again, other = draws(11), draws(11), draws(12)
    np.testing.assert_allclose(first.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(first > 0)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert not np.allclose(first[0], first[1])
    # The rule: w = softmax(z), z ~ N(0, I), the successive draws of a SeedGenerator(seed).
    generator = keras.random.SeedGenerator(11)
    for step in range(2):
        z = _numpy(keras.random.normal((3,), seed=generator))
        np.testing.assert_allclose(first[step], _softmax(z), rtol=1e-5)


def test_rlw_resumes_from_its_saved_state():
    # A fresh method object on the state values after 3 steps draws the 4th weights of an uninterrupted run.
    method = keras_mtl.RandomLossWeighting("mse", seed=5)
    state = _state(method)
    run = [_weights(method, state, [1.0, 2.0]) for _ in range(4)]
    resumed = keras_mtl.RandomLossWeighting("mse", seed=5)
    resumed_state = _state(resumed)
    for _ in range(3):
        _weights(method, resumed_state, [1.0, 2.0])
    np.testing.assert_array_equal(_weights(resumed, resumed_state, [1.0, 2.0]), run[3])


def test_rlw_evaluation_uses_expected_weights_and_draws_nothing():
    method = keras_mtl.RandomLossWeighting("mse", seed=0)
    state = _state(method)
    before = {name: _numpy(value) for name, value in state.items()}
    np.testing.assert_allclose(_weights(method, state, [1.0, 2.0], training=False), [0.5, 0.5])
    for name, value in before.items():
        np.testing.assert_array_equal(_numpy(state[name]), value)


# --- SLAW ---------------------------------------------------------------------


def test_slaw_plain_average_during_warmup():
    # Step 1: L = [1, 2]: every spread is 0 → w = [1, 1].
    # Step 2: L = [3, 4]: a = [2, 3], b = [5, 10], s = [1, 1] → w = [1, 1].
    # Step 3: L = [2, 6]: a = [2, 4], b = [14/3, 56/3], s² = [2/3, 8/3] → 1/s ∝ [2, 1] → w = [4/3, 2/3].
    method = make_method("slaw")
    state = _state(method)
    np.testing.assert_array_equal(_weights(method, state, [1.0, 2.0]), [1.0, 1.0])
    np.testing.assert_allclose(_weights(method, state, [3.0, 4.0]), [1.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(_weights(method, state, [2.0, 6.0]), [4 / 3, 2 / 3], rtol=1e-5)
    np.testing.assert_allclose(_numpy(state["loss_mean"]), [2.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(_numpy(state["loss_variance"]), [14 / 3 - 4, 56 / 3 - 16], rtol=1e-6)  # b − a²


def test_slaw_switches_to_ema_after_warmup():
    # warmup 2, β = 0.5. After steps [1, 2], [3, 4]: a = [2, 3], b = [5, 10].
    # Step 3 (EMA, rate 0.5), L = [2, 6]: a = [2, 4.5], b = [4.5, 23], s = [0.707107, 1.658312]
    # → w = 2·(1/s)/Σ(1/s) = [1.402130, 0.597870].
    method = make_method("slaw", warmup_steps=2, beta=0.5)
    state = _state(method)
    for losses in ([1.0, 2.0], [3.0, 4.0]):
        _weights(method, state, losses)
    weights = _weights(method, state, [2.0, 6.0])
    np.testing.assert_allclose(_numpy(state["loss_mean"]), [2.0, 4.5], rtol=1e-6)
    np.testing.assert_allclose(_numpy(state["loss_variance"]), [4.5 - 4.0, 23.0 - 4.5**2], rtol=1e-6)  # b − a²
    np.testing.assert_allclose(weights, [1.402130, 0.597870], rtol=1e-5)
    assert weights.sum() == pytest.approx(2.0)
    # Evaluation leaves the moments alone.
    _weights(method, state, [50.0, 50.0], training=False)
    np.testing.assert_allclose(_numpy(state["loss_mean"]), [2.0, 4.5], rtol=1e-6)
    assert float(_numpy(state["steps"])) == 3.0


def test_slaw_weights_sum_to_k_on_random_losses():
    method = keras_mtl.SLAW("mse", warmup_steps=5)
    state = _state(method, ["a", "b", "c"])
    rng = np.random.default_rng(0)
    for _ in range(12):
        weights = _weights(method, state, rng.uniform(0.1, 5.0, size=3).astype("float32"))
        assert weights.sum() == pytest.approx(3.0, rel=1e-5)


# --- FAMO ---------------------------------------------------------------------


def _famo_reference(logits, losses_before, losses_after, m, v, step, lr=0.025, decay=1e-3, min_losses=0.0):
    """numpy re-implementation of the reference FAMO update (PyTorch Adam with L2 weight decay)."""
    z = np.exp(logits) / np.exp(logits).sum()
    delta = np.log(losses_before - min_losses + 1e-8) - np.log(losses_after - min_losses + 1e-8)
    jacobian = np.diag(z) - np.outer(z, z)  # ∂z/∂ξ
    gradient = jacobian.T @ delta + decay * logits
    m = 0.9 * m + 0.1 * gradient
    v = 0.999 * v + 0.001 * gradient**2
    m_hat, v_hat = m / (1 - 0.9**step), v / (1 - 0.999**step)
    return logits - lr * m_hat / (np.sqrt(v_hat) + 1e-8), m, v


def test_famo_hand_computed_first_step():
    # ξ = 0 → z = [½, ½]; L = [1, 4]: z/D = [0.5, 0.125] → w = [0.8, 0.2].
    # After the step L = [0.5, 4]: δ = [log 2, 0]; (∂z/∂ξ)ᵀδ = z·(δ − z·δ) = [0.173287, −0.173287];
    # Adam's first step moves by lr·sign: ξ = [−0.025, 0.025].
    method = make_method("famo")
    state = _state(method)
    np.testing.assert_allclose(_weights(method, state, [1.0, 4.0]), [0.8, 0.2], rtol=1e-6)
    _apply(state, method.after_update(state, _tensor([1.0, 4.0]), _tensor([0.5, 4.0])))
    np.testing.assert_allclose(_numpy(state["logits"]), [-0.025, 0.025], rtol=1e-5)
    np.testing.assert_allclose(_numpy(state["logits_adam_m"]), [0.0173287, -0.0173287], rtol=1e-4)


def test_famo_matches_numpy_reference_over_many_steps():
    tasks = ["a", "b", "c"]
    min_losses = np.array([0.1, 0.0, 0.2])
    method = keras_mtl.FAMO("mse", min_losses=list(min_losses), logits_learning_rate=0.05, logits_weight_decay=0.01)
    state = _state(method, tasks)
    rng = np.random.default_rng(0)
    logits, m, v = np.zeros(3), np.zeros(3), np.zeros(3)
    for step in range(1, 16):
        before = rng.uniform(0.5, 3.0, size=3)
        after = before * rng.uniform(0.6, 1.1, size=3)
        # Weights: w = (z/D) / Σ z/D with D = L − m + 1e-8.
        z = np.exp(logits) / np.exp(logits).sum()
        ratio = z / (before - min_losses + 1e-8)
        np.testing.assert_allclose(_weights(method, state, before), ratio / ratio.sum(), rtol=1e-5)
        _apply(state, method.after_update(state, _tensor(before), _tensor(after)))
        logits, m, v = _famo_reference(logits, before, after, m, v, step, lr=0.05, decay=0.01, min_losses=min_losses)
        np.testing.assert_allclose(_numpy(state["logits"]), logits, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(_numpy(state["logits_adam_m"]), m, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(_numpy(state["logits_adam_v"]), v, rtol=1e-4, atol=1e-9)
    assert float(_numpy(state["logits_adam_steps"])) == 15.0


def test_famo_declares_its_lower_bounds_and_needs_the_losses_after_the_update():
    # The engine checks the losses against these bounds (FAMO's log D needs L > m − ε) and recomputes them after the step.
    assert make_method("famo").loss_lower_bounds(2) == [0.0, 0.0]
    assert make_method("famo", min_losses=[0.5, -1.0]).loss_lower_bounds(2) == [0.5, -1.0]
    assert make_method("famo").needs_losses_after_update and not make_method("dwa").needs_losses_after_update


def test_famo_weights_give_the_gradient_of_its_objective():
    # ∇ Σ w_k L_k (w from sg[L]) equals ∇ [Σ z_k log D_k / sg[Σ z_k/D_k]].
    theta = _tensor([0.3, -0.8])
    method = make_method("famo")
    state = _state(method)
    state["logits"] = _tensor([0.4, -0.2])
    z = keras.ops.softmax(state["logits"])

    def losses(theta):
        return keras.ops.stack(
            [keras.ops.sum(keras.ops.square(theta - 1.0)), keras.ops.sum(keras.ops.square(theta + 2.0))]
        )

    def weighted(theta):
        values = losses(theta)
        weights, _ = method.weights(keras.ops.stop_gradient(values), state, True)
        return keras.ops.sum(weights * values)

    def objective(theta):
        gap = losses(theta) + 1e-8
        return keras.ops.sum(z * keras.ops.log(gap)) / keras.ops.stop_gradient(keras.ops.sum(z / gap))

    np.testing.assert_allclose(_numpy(gradient(weighted, theta)), _numpy(gradient(objective, theta)), rtol=1e-5)


# --- configs and the registry ---------------------------------------------------

NON_DEFAULT = {
    "scalarization": {"weights": {"a": 0.2, "b": 0.8}},
    "uw": {"form": "classification", "initial_log_variance": 0.3},
    "uw_so": {"temperature": 5.0},
    "dwa": {"temperature": 3.0},
    "rlw": {"seed": 42},
    "slaw": {"beta": 0.9, "warmup_steps": 7},
    "famo": {"min_losses": [0.1, 0.2], "logits_learning_rate": 0.01, "logits_weight_decay": 0.0},
}


@pytest.mark.parametrize("method_id", ALL_WEIGHTINGS)
def test_config_round_trip(method_id):
    losses = {"a": "mse", "b": keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="xent")}
    method = make_method(method_id, losses=losses, **NON_DEFAULT.get(method_id, {}))
    config = method.get_config()
    for key, value in NON_DEFAULT.get(method_id, {}).items():
        assert config[key] == value
    clone = type(method).from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(method)
    again = keras_mtl.get(serialized)
    assert type(again) is type(method) and again.get_config() == config
    assert isinstance(again.losses["b"], keras.losses.SparseCategoricalCrossentropy)
    assert again.losses["b"].get_config()["from_logits"] is True


def test_registry_get():
    assert set(ALL_WEIGHTINGS) <= set(keras_mtl.available())
    method = keras_mtl.get("uw_so", {"a": "mse", "b": "mae"})
    assert isinstance(method, keras_mtl.SoftmaxUncertaintyWeighting) and method.losses == {"a": "mse", "b": "mae"}
    assert keras_mtl.get(method) is method
    shared = keras_mtl.get("gls", "mse")
    resolved = shared.task_losses(["a", "b"])
    assert len(resolved) == 2 and all(isinstance(loss, keras.losses.Loss) for loss in resolved)
    assert float(resolved[0](np.zeros((2, 1)), np.full((2, 1), 3.0))) == pytest.approx(9.0)
    with pytest.raises(ValueError, match="Unknown multi-task method 'nope'.*uw_so"):
        keras_mtl.get("nope", "mse")
    with pytest.raises(ValueError, match="cannot be given with a method instance"):
        keras_mtl.get(method, "mse")
    with pytest.raises(ValueError, match="does not describe a keras_mtl method"):
        keras_mtl.get(keras.saving.serialize_keras_object(keras.losses.MeanSquaredError()))
    with pytest.raises(TypeError):
        keras_mtl.get(3)


def _explicit_moments(losses, warmup_steps, beta):
    """Float64 mean and variance of the losses under SLAW's sample weights, two-pass.

    After n steps the weights are 1/n in the warm-up; past it, the warm-up's
    average decays as β^(n−W) and step t > W weighs (1−β)β^(n−t).
    """
    losses = np.asarray(losses, np.float64)
    n = len(losses)
    if n <= warmup_steps:
        weights = np.full(n, 1.0 / n)
    else:
        steps = np.arange(1, n + 1)
        weights = np.where(
            steps <= warmup_steps, beta ** (n - warmup_steps) / warmup_steps, (1 - beta) * beta ** (n - steps)
        )
    mean = weights @ losses
    return mean, weights @ (losses - mean) ** 2


@pytest.mark.parametrize("relative_spread", [1e-2, 1e-3, 3e-4, 1e-4, 1e-5, 1e-6])
def test_slaw_spread_is_accurate_when_a_loss_barely_varies(relative_spread):
    # Losses 3·(1 + ε·z): the float32 spread sqrt(b − a²) cancelled (2× off
    # at ε = 3e-4). The reference uses the same float32 losses; the running
    # mean's float32 rounding leaves an error of a fraction of an ulp of the
    # loss (1.2e-7) relative to its spread ε, hence the tolerance.
    warmup_steps, beta, steps = 10, 0.9, 40
    z = np.random.default_rng(0).normal(size=(steps, 2))
    losses = (3.0 * (1.0 + relative_spread * z)).astype(np.float32)
    method = make_method("slaw", warmup_steps=warmup_steps, beta=beta)
    state = _state(method)
    for row in losses:
        _weights(method, state, row)
    for k in range(2):
        mean, variance = _explicit_moments(losses[:, k], warmup_steps, beta)
        tolerance = 1e-5 + 0.5 * float(np.finfo(np.float32).eps) / relative_spread
        assert float(_numpy(state["loss_mean"])[k]) == pytest.approx(mean, rel=1e-6)
        assert np.sqrt(_numpy(state["loss_variance"])[k]) == pytest.approx(np.sqrt(variance), rel=tolerance)
