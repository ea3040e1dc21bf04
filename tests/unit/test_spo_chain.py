"""SPO's margins are the earlier objectives' own rewards R_j, recovered from the policy chain whatever loss each
earlier stage trained with (hand-computed at K = 3; summing the raw implicit rewards counts R_1 twice)."""

import numpy as np
import pytest

from rcs_ray.config import TrainConfig
from rcs_ray.train.margins import implicit_margins, stage_mix

pytestmark = pytest.mark.unit

# log pi_0 .. pi_2 of (y_w, y_l) for one pair; stage 1 beta 0.1, stage 2 beta 0.2.
CHOSEN = [np.array([-10.0]), np.array([-8.0]), np.array([-7.0])]
REJECTED = [np.array([-9.0]), np.array([-9.5]), np.array([-11.0])]
BETAS = [0.1, 0.2]


def test_an_spo_stage_2_keeps_r1_in_its_implicit_reward_and_stage_3_takes_it_out():
    mix = stage_mix([TrainConfig(loss="dpo"), TrainConfig(loss="spo", spo_alphas=[1.0])], ["harmless", "helpful"])
    assert mix == [(1.0, ()), (1.0, (1.0,))]
    chosen, rejected = implicit_margins(CHOSEN, REJECTED, BETAS, mix)
    # R1 = 0.1 * (-8 - -10) = 0.2;  stage 2's implicit reward 0.2 * (-7 - -8) = 0.2 = R2 + 1 * R1 -> R2 = 0.0
    # y_l: R1 = 0.1 * (-9.5 - -9) = -0.05;  0.2 * (-11 - -9.5) = -0.3 = R2 + R1 -> R2 = -0.25
    assert chosen[0].tolist() == pytest.approx([0.2, 0.0]) and rejected[0].tolist() == pytest.approx([-0.05, -0.25])
    raw_c, _ = implicit_margins(CHOSEN, REJECTED, BETAS)  # the old reading: R2 = 0.2, R1 counted twice
    assert raw_c[0].tolist() == pytest.approx([0.2, 0.2])


def test_a_modpo_stage_2_is_divided_by_its_target_weight_after_its_margins():
    trains = [TrainConfig(loss="dpo"), TrainConfig(loss="modpo", modpo_weights=[0.25, 0.75])]
    mix = stage_mix(trains, ["harmless", "helpful"], ["harmless", "helpful"])
    assert mix == [(1.0, ()), (0.75, (0.25,))]  # helpful is the target: w0 = 0.75
    chosen, _ = implicit_margins(CHOSEN, REJECTED, BETAS, mix)
    # 0.2 = 0.75 R2 + 0.25 R1 = 0.75 R2 + 0.05 -> R2 = 0.2
    assert chosen[0].tolist() == pytest.approx([0.2, 0.2])
    default = stage_mix([TrainConfig(loss="dpo"), TrainConfig(loss="modpo")], ["harmless", "helpful"])
    assert default[1] == (0.5, (0.5,))  # equal weights over target + earlier
