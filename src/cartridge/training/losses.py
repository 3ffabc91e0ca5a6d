"""The AlphaZero training loss, shared by the trainer, its seen/unseen check and the
training benchmark."""

import torch.nn.functional as F


def alphazero_loss(logits, values, target_policy, target_value, value_weight: float):
    """Cross-entropy against the visit distribution plus squared value error.

    Weight decay, the third AlphaZero term, is applied by the optimizer.
    """
    policy_loss = -(target_policy * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
    value_loss = F.mse_loss(values.float(), target_value)
    return policy_loss + value_weight * value_loss, policy_loss, value_loss
