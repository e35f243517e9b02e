"""Label-free criteria (tlframe.engine.label_free): a collapsed or uniform predictor must score
worse than a trained one under every criterion that selection and the searches offer, and
each criterion computes what its paper defines."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tlframe.engine.label_free import (
    LabelFreeCriteria,
    deep_embedded_validation,
    information_maximization,
    prediction_entropy,
    snd_among_trained,
    soft_neighborhood_density,
)
from tlframe.engine.selection import LABEL_FREE

CLASSES, WIDTH = 10, 32


def clustered(n: int, centers: torch.Tensor, shift: float, seed: int):
    """Features around one center per class (balanced classes), and their labels."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    features = centers[labels] + shift + torch.randn(n, WIDTH, generator=generator)
    return features, labels


def predictors(labels: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """Logits of a trained model (right on 90% of the examples, confident), of a collapsed
    one (every example confidently in class 0) and of a uniform one."""
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    guess = torch.where(torch.rand(n, generator=generator) < 0.9, labels, (labels + 1) % CLASSES)
    trained = 6.0 * F.one_hot(guess, CLASSES).float() + torch.randn(n, CLASSES, generator=generator)
    collapsed = torch.zeros(n, CLASSES)
    collapsed[:, 0] = 8.0
    collapsed += 0.1 * torch.randn(n, CLASSES, generator=generator)
    uniform = 0.01 * torch.randn(n, CLASSES, generator=generator)
    return {"trained": trained, "collapsed": collapsed, "uniform": uniform}


def criteria_of_every_model(seed: int = 0) -> dict[str, dict[str, float]]:
    """The values the module logs, computed as it computes them (LabelFreeCriteria over a
    source and a target validation pass), for each of the three models."""
    centers = 3.0 * torch.randn(CLASSES, WIDTH, generator=torch.Generator().manual_seed(99))
    source_x, source_y = clustered(400, centers, 0.0, seed)
    target_x, target_y = clustered(300, centers, 0.7, seed + 1)
    on_source, on_target = predictors(source_y, seed), predictors(target_y, seed + 2)
    values = {}
    for model in on_source:
        criteria = LabelFreeCriteria()
        criteria.update_source(on_source[model], source_y, source_x)
        criteria.update_target(on_target[model], target_x)
        values[model] = criteria.compute(with_dev=True)
    return values


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", sorted(LABEL_FREE))
def test_every_offered_criterion_ranks_a_trained_model_above_degenerate_ones(name, seed):
    metric, mode = LABEL_FREE[name]
    key = metric.split("/")[-1]
    values = criteria_of_every_model(seed)
    better = max if mode == "max" else min
    for degenerate in ("collapsed", "uniform"):
        pair = [values["trained"][key], values[degenerate][key]]
        assert better(pair) == values["trained"][key] != values[degenerate][key], (
            name,
            degenerate,
            pair,
        )


def test_the_papers_snd_and_the_entropy_are_fooled_by_collapse_so_they_are_not_offered():
    values = criteria_of_every_model()
    assert values["collapsed"]["snd_raw"] > values["trained"]["snd_raw"]
    assert values["uniform"]["snd_raw"] > values["trained"]["snd_raw"]
    assert values["collapsed"]["entropy"] < values["trained"]["entropy"]  # "more confident"
    assert not {"snd_raw", "entropy"} & {m.split("/")[-1] for m, _ in LABEL_FREE.values()}


def test_information_maximization_is_zero_for_degenerate_and_ln_c_for_perfect_predictions():
    one_hot = F.one_hot(torch.arange(40) % 4, 4).float()
    assert information_maximization(one_hot) == pytest.approx(math.log(4), abs=1e-5)
    assert information_maximization(torch.full((40, 4), 0.25)) == pytest.approx(0.0, abs=1e-6)
    assert information_maximization(F.one_hot(torch.zeros(40).long(), 4).float()) == (
        pytest.approx(0.0, abs=1e-6)
    )
    probs = torch.tensor([[0.7, 0.3], [0.2, 0.8]])  # by hand: H([.45, .55]) - mean H(rows)
    by_hand = -(0.45 * math.log(0.45) + 0.55 * math.log(0.55)) - 0.5 * (
        -(0.7 * math.log(0.7) + 0.3 * math.log(0.3)) - (0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    )
    assert information_maximization(probs) == pytest.approx(by_hand, abs=1e-6)


def test_snd_is_the_entropy_of_the_neighbour_softmax():
    """Ten copies of each of four one-hot predictions: every point's nine equal neighbours
    take all the softmax mass (the others are 1/0.05 = 20 nats apart), so SND = ln 9."""
    sharp = torch.eye(4).repeat(10, 1)
    assert soft_neighborhood_density(sharp) == pytest.approx(math.log(9), abs=1e-3)
    assert snd_among_trained(sharp) == pytest.approx(math.log(9), abs=1e-3)
    flat = torch.full((40, 4), 0.25)
    assert soft_neighborhood_density(flat) == pytest.approx(math.log(39), abs=1e-4)
    assert snd_among_trained(flat) < 0 < snd_among_trained(sharp)


def test_dev_is_the_plain_source_loss_when_the_domains_do_not_differ():
    """Target features from the source's own distribution: the domain classifier cannot tell
    them apart, the weights are about 1 and DEV is about the mean source loss."""
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(600, 8, generator=generator)
    target = torch.randn(600, 8, generator=generator)
    losses = torch.rand(600, generator=generator) * 2
    assert deep_embedded_validation(source, losses, target) == pytest.approx(
        float(losses.mean()), abs=0.05
    )


def test_dev_weights_the_source_examples_that_look_like_the_target():
    """Half the source lies where the target is and has loss 0, the other half far away with
    loss 1: DEV must be far below the unweighted mean 0.5."""
    generator = torch.Generator().manual_seed(0)
    near = torch.randn(300, 4, generator=generator)
    far = torch.randn(300, 4, generator=generator) + 4.0
    target = torch.randn(400, 4, generator=generator)
    losses = torch.cat([torch.zeros(300), torch.ones(300)])
    assert deep_embedded_validation(torch.cat([near, far]), losses, target) < 0.1


def test_entropy_is_lower_for_confident_predictions():
    sharp = torch.eye(4).repeat(10, 1) * 0.97 + 0.0075
    flat = torch.full((40, 4), 0.25)
    assert prediction_entropy(sharp) < 0.2 < math.log(4) == pytest.approx(prediction_entropy(flat))
